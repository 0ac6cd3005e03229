// fieldvitals beacon: the thin JS layer around the Rust core (beacon/src/lib.rs, as wasm or its wasm2js build).
// It registers the PerformanceObservers and lifecycle listeners, hands each entry's numbers to the core, keeps the
// DOM-side attribution (selectors, URLs) and sends one JSON beacon (wire v1, vitals/src/wire.rs) with
// navigator.sendBeacon as text/plain when the page is hidden. No cookies, no storage.
// build.sh minifies this file and replaces __FV_WASM__ / __FV_JS__ with the content-hashed file names.
(() => {
  const doc = document;
  const script = doc.currentScript;
  const perf = performance;
  const on = addEventListener;
  const data = (name) => script.getAttribute("data-" + name);
  const rate = data("sample-rate");
  // Sampling is per page view, decided once, before anything is loaded.
  if (!data("site") || !(Math.random() < (rate == null ? 1 : +rate))) return;
  const src = script.src;
  const endpoint = data("endpoint") || new URL("/v1/beacon", src).href;
  const NAMES = ["LCP", "INP", "CLS", "FCP", "TTFB"];

  // web-vitals' navigation entry: only once the response has started.
  const navEntry = () => {
    const n = perf.getEntriesByType("navigation")[0];
    return n && n.responseStart > 0 && n.responseStart < perf.now() ? n : 0;
  };
  const activation = () => navEntry().activationStart || 0;

  // A short CSS selector: tag and sorted classes (or #id, where the walk stops), up to 100 characters.
  const selector = (node) => {
    let sel = "";
    try {
      for (; node && node.nodeType == 1; node = node.parentNode) {
        const part = node.id ? "#" + node.id : [node.localName, ...[...node.classList].sort()].join(".");
        if (sel.length + part.length > 99) return sel || part;
        sel = sel ? part + ">" + sel : part;
        if (node.id) break;
      }
    } catch (e) {}
    return sel;
  };

  const observe = (type, callback, options) => {
    try {
      const o = new PerformanceObserver((list) => callback(list.getEntries()));
      o.observe({ type, buffered: true, ...options });
      return o;
    } catch (e) {}
  };

  const start = (core) => {
    const count = () => perf.interactionCount || 0;
    let nav;
    let id; // random per page view (not per visitor): joins the beacons of one view
    let firstHidden;
    let restored;
    let lcp; // [entry, selector] of the current LCP
    let inp = new Map(); // interaction id -> its longest entry, for the ten kept by the core
    let seq = 0; // layout-shift sequence number
    let big; // [seq, entry]: the open session window's largest shift
    let cls; // [entry, attribution] of the CLS window's largest shift

    const timing = (metric, time, from, hidden) => core.t(metric, time, from, hidden);
    const lcpEntries = (entries) => {
      const e = entries[entries.length - 1];
      if (e && timing(0, e.startTime, activation(), firstHidden)) lcp = [e, e.element ? selector(e.element) : e.id && "#" + e.id];
    };
    const events = (entries) => {
      for (const e of entries) {
        const dropped = core.e(e.interactionId || 0, e.duration);
        if (dropped >= 0) inp.set(e.interactionId, e).delete(dropped);
      }
    };
    const layoutShifts = (entries) => {
      for (const e of entries) if (core.l(e.value, e.startTime, e.hadRecentInput, ++seq) == seq) big = [seq, e];
      // The open window just became (or still is) CLS: take its largest shift's source now, while it is in the DOM.
      if (big && core.c() == big[0] && (!cls || cls[0] != big[1])) {
        const e = big[1];
        const s = e.sources.find((s) => s.node && s.node.nodeType == 1) || e.sources[0];
        cls = [e, { target: s && selector(s.node), time: e.startTime, value: e.value }];
      }
    };
    const ttfb = () => {
      const n = navEntry();
      if (restored) timing(4, 0, 0, 1 / 0);
      else if (n) timing(4, n.responseStart, activation(), 1 / 0);
    };

    // A new page view: the first load, or a bfcache restore (web-vitals' initMetric / visibility watcher).
    const view = (restore) => {
      const n = navEntry();
      const hiddenEntry = !doc.prerendering && perf.getEntriesByType("visibility-state").find((e) => e.name == "hidden" && e.startTime >= activation());
      restored = restore;
      id = "v1-" + Date.now() + "-" + Math.random().toString(36).slice(2);
      firstHidden = !restore && hiddenEntry ? hiddenEntry.startTime : doc.visibilityState == "hidden" && !doc.prerendering ? 0 : 1 / 0;
      nav = restore ? "back-forward-cache" : !n ? "navigate" : doc.prerendering || activation() > 0 ? "prerender" : doc.wasDiscarded ? "restore" : n.type.replace(/_/g, "-");
      lcp = cls = big = 0;
      inp.clear();
      core.r(count(), restore);
      ttfb();
    };
    view(0);

    const lcpObserver = observe("largest-contentful-paint", lcpEntries);
    observe("paint", (entries) => {
      for (const e of entries) if (e.name == "first-contentful-paint") timing(3, e.startTime, activation(), firstHidden);
    });
    const eventObserver = observe("event", events, { durationThreshold: 40 });
    const firstInputObserver = observe("first-input", events);
    const shiftObserver = observe("layout-shift", layoutShifts);

    // LCP stops at the first trusted keydown or click (not scroll).
    const finalize = (e) => {
      if (e.isTrusted) core.f();
    };
    on("keydown", finalize, true);
    on("click", finalize, true);

    const send = () => {
      if (lcpObserver) lcpEntries(lcpObserver.takeRecords());
      core.f();
      for (const o of [eventObserver, firstInputObserver]) if (o) events(o.takeRecords());
      const interaction = inp.get(core.n(count()));
      if (shiftObserver) layoutShifts(shiftObserver.takeRecords());
      ttfb();
      const metrics = [];
      NAMES.forEach((name, m) => {
        const value = core.v(m);
        if (value < 0) return;
        let attribution;
        if (m == 0 && lcp) {
          const [e, target] = lcp;
          const n = navEntry();
          const from = activation();
          const first = Math.max(0, (n.responseStart || 0) - from);
          const r = e.url && perf.getEntriesByType("resource").findLast((r) => r.name == e.url && (r.requestStart || r.startTime) <= e.startTime);
          const request = Math.max(first, r ? (r.requestStart || r.startTime) - from : 0);
          const response = Math.min(value, Math.max(request, r ? r.responseEnd - from : 0));
          attribution = { target, url: e.url && e.url.split(/[?#]/)[0], ttfb: first, loadDelay: request - first, loadTime: response - request, renderDelay: value - response };
        }
        if (m == 1 && interaction) {
          const e = interaction;
          attribution = { target: selector(e.target), type: e.name, inputDelay: e.processingStart - e.startTime, processing: e.processingEnd - e.processingStart, presentation: Math.max(0, e.startTime + e.duration - e.processingEnd) };
        }
        if (m == 2 && cls) attribution = cls[1];
        metrics.push({ name, value, id, attribution });
      });
      if (metrics.length)
        navigator.sendBeacon(endpoint, JSON.stringify({ v: 1, site: data("site"), url: location.origin + location.pathname, release: data("release") || undefined, nav, metrics }));
    };
    on(
      "visibilitychange",
      (e) => {
        if (doc.visibilityState == "hidden") {
          if (firstHidden > e.timeStamp) firstHidden = e.timeStamp;
          send();
        }
      },
      true,
    );
    on("pagehide", send, true);
    if (doc.visibilityState == "hidden") send();

    on(
      "pageshow",
      (e) => {
        if (e.persisted) {
          view(1);
          // LCP and FCP of a restored view: to the second frame after pageshow, like web-vitals.
          requestAnimationFrame(() =>
            requestAnimationFrame(() => {
              timing(3, perf.now(), e.timeStamp, 1 / 0);
              timing(0, perf.now(), e.timeStamp, 1 / 0);
              core.f();
            }),
          );
        }
      },
      true,
    );
  };

  // The wasm core, or its JS build where WebAssembly is missing or forbidden (CSP without 'wasm-unsafe-eval').
  // The wasm is wasm-bindgen's output (--target web); it has numeric exports only and no imports, so its generated
  // glue would only wrap each export unchanged: it is instantiated directly and the glue is not shipped.
  // (async: a missing WebAssembly global rejects instead of throwing.)
  const load = async () => (await WebAssembly.instantiateStreaming(fetch(new URL("__FV_WASM__", src)))).instance.exports;
  let started;
  const go = () => started || (started = load().catch(() => import(new URL("__FV_JS__", src))).then(start));
  // Nothing competes with the host page's loading: the core is fetched after the load event (the observers are
  // buffered, so no entry is missed), or at once if the page is hidden first. Prerendered pages are measured from
  // activation.
  const afterLoad = () => (doc.readyState == "complete" ? setTimeout(go) : on("load", () => setTimeout(go), true));
  on("visibilitychange", () => doc.visibilityState == "hidden" && !doc.prerendering && go(), true);
  if (doc.prerendering) on("prerenderingchange", afterLoad, true);
  else afterLoad();
})();
