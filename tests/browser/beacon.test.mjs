// The beacon in real Chromium against web-vitals 6.2.3 on the same page loads, read back from the REAL collector
// (/v1/recent). Run: `cargo build -p collector && cd tests/browser && npm ci && npm test` (beacon/ci.sh does it all).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startCollector, startPages, launch, newSite, samples, byMetric, sleep, USER_AGENT, root } from "./harness.mjs";

let collector, pages, browser, bfBrowser;

before(async () => {
  collector = await startCollector();
  pages = await startPages(collector.origin);
  browser = await launch();
  bfBrowser = await launch({ bfcache: true });
});

after(async () => {
  await browser?.close();
  await bfBrowser?.close();
  await pages?.close();
  await collector?.stop();
});

/** A fresh page with a normal desktop user agent; `requests` records every URL it asks for. */
async function open(b = browser) {
  const context = await b.newContext({ userAgent: USER_AGENT, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push([r.method(), r.url()]));
  return { context, page, requests };
}

const url = (name, site, extra = "") => `${pages.origin}/page/${name}?site=${site}${extra}`;

/** Waits until the beacon has loaded its core (its observers exist) and the page's paints are done. */
async function settle(page, ms = 1200) {
  await page.waitForLoadState("load");
  await sleep(ms);
}

/**
 * Leaves the page (hidden + pagehide: the beacon sends), then compares the collector's samples with web-vitals'
 * final reports: LCP, FCP, TTFB and INP to the millisecond, CLS within 0.0001, and the same set of metrics.
 */
async function leaveAndCompare(page, site, expectMetrics, { restoreTolerance = 0 } = {}) {
  await page.goto("about:blank");
  const got = await samples(collector, site, expectMetrics);
  await sleep(300); // a duplicate beacon would arrive now
  const all = await collector.recent(site);
  const beacon = byMetric(all);
  const reference = pages.reference(site);
  assert.equal(all.length, Object.keys(beacon).length, `one sample per metric and page view: ${JSON.stringify(all)}`);
  assert.deepEqual(Object.keys(beacon).sort(), Object.keys(reference).sort(), `metrics sent vs web-vitals: ${JSON.stringify({ beacon, reference })}`);
  for (const [k, want] of Object.entries(reference)) {
    const tol = k.startsWith("CLS") ? 1e-4 : /^(LCP|FCP)\/back-forward-cache$/.test(k) ? restoreTolerance : 0;
    assert.ok(Math.abs(beacon[k] - want) <= tol + 1e-9, `${k}: beacon ${beacon[k]}, web-vitals ${want}`);
  }
  assert.equal(got.length >= expectMetrics, true);
  return all;
}

/** How many beacons reached the collector during `f` (after its page views were left). */
async function beaconsDuring(f) {
  const before = await collector.beaconCount();
  const out = await f();
  return [(await collector.beaconCount()) - before, out];
}

const sample = (all, metric) => all.find((s) => s.metric == metric);

test("budget: beacon.js + wasm and beacon.js + fallback, brotli as served, within 4,978 B", async () => {
  const manifest = JSON.parse(readFileSync(join(root, "beacon", "dist", "manifest.json"), "utf8"));
  const served = (name) =>
    new Promise((ok, fail) => {
      const r = request(`${collector.origin}/${name}`, { headers: { "accept-encoding": "br" } }, (res) => {
        let n = 0;
        res.on("data", (d) => (n += d.length));
        res.on("end", () => ok({ n, res }));
      });
      r.on("error", fail);
      r.end();
    });
  const js = await served("beacon.js");
  const wasm = await served(manifest.wasm);
  const fallback = await served(manifest.fallback);
  assert.equal(js.res.headers["content-encoding"], "br");
  assert.equal(wasm.res.headers["content-type"], "application/wasm");
  assert.match(wasm.res.headers["cache-control"], /immutable/);
  assert.equal(js.res.headers["access-control-allow-origin"], "*");
  console.log(`served brotli: beacon.js ${js.n} B, wasm ${wasm.n} B, fallback ${fallback.n} B`);
  assert.ok(js.n + wasm.n <= 4978, `beacon.js + wasm = ${js.n + wasm.n} B`);
  assert.ok(js.n + fallback.n <= 4978, `beacon.js + fallback = ${js.n + fallback.n} B`);
});

test("LCP image, FCP, TTFB: equal to web-vitals, with attribution, device class, no long task", async () => {
  const site = newSite("lcp");
  const { context, page, requests } = await open();
  await page.goto(url("lcp", site, "&delay=150"));
  await settle(page, 1500);
  const longTasks = await page.evaluate(() => window.__longTasks);
  assert.deepEqual(longTasks.filter((d) => d > 50), [], "no long task on the page");
  const [beacons, all] = await beaconsDuring(() => leaveAndCompare(page, site, 4));
  assert.equal(beacons, 1, "one beacon for the page view");
  assert.ok(requests.some(([, u]) => /\/fv-[0-9a-f]+\.wasm$/.test(u)), "loaded the wasm core");
  assert.ok(!requests.some(([, u]) => /\/fv-[0-9a-f]+\.js$/.test(u)), "did not need the fallback");
  const lcp = sample(all, "LCP");
  assert.ok(lcp.value > 400, `LCP waits for the delayed hero: ${lcp.value}`);
  assert.ok(sample(all, "TTFB").value >= 150, "TTFB includes the server delay");
  assert.equal(new Set(all.map((s) => s.id)).size, 1, "one id for the page view");
  assert.match(all[0].id, /^v1-\d{13}-[0-9a-z]+$/);
  for (const s of all) {
    assert.equal(s.device, "desktop");
    assert.equal(s.nav, "navigate");
    assert.equal(s.release, "test.1");
    assert.equal(s.path, "/page/lcp");
  }
  const a = lcp.attribution;
  assert.equal(a.target, "#hero");
  assert.equal(a.target, pages.referenceTarget(site, "LCP"));
  assert.equal(a.url, `${pages.origin}/hero.png`, "resource URL without its query string");
  const parts = a.ttfb + a.loadDelay + a.loadTime + a.renderDelay;
  assert.ok(Math.abs(parts - lcp.value) < 0.01, `subparts add up to LCP: ${JSON.stringify(a)} vs ${lcp.value}`);
  assert.ok(a.loadTime >= 350, `the hero took 400 ms to load: ${a.loadTime}`);
  await context.close();
});

test("INP: a click with a slow handler, equal to web-vitals, with attribution", async () => {
  const site = newSite("inp");
  const { context, page } = await open();
  await page.goto(url("inp", site));
  await settle(page);
  await page.click("#slow");
  await sleep(500);
  const all = await leaveAndCompare(page, site, 5);
  const inp = sample(all, "INP");
  assert.ok(inp.value >= 180, `INP includes the 180 ms handler: ${inp.value}`);
  const a = inp.attribution;
  assert.equal(a.target, "#slow");
  assert.equal(a.target, pages.referenceTarget(site, "INP"));
  assert.match(a.type, /^(pointerdown|pointerup|click|mousedown|mouseup)$/);
  assert.ok(a.processing >= 170 || a.presentation >= 170, JSON.stringify(a));
  assert.ok(Math.abs(a.inputDelay + a.processing + a.presentation - inp.value) < 8.01, JSON.stringify(a));
  await context.close();
});

test("INP: one worst interaction skipped per 50 interactions, like web-vitals", async () => {
  const site = newSite("inp-many");
  const { context, page } = await open();
  await page.goto(url("inp", site));
  await settle(page);
  await page.click("#slower");
  await page.click("#slow");
  for (let i = 0; i < 55; i++) await page.click(".cheap");
  const count = await page.evaluate(() => performance.interactionCount);
  assert.ok(count >= 50, `interactionCount ${count}`);
  await sleep(500);
  const all = await leaveAndCompare(page, site, 5);
  const inp = sample(all, "INP");
  assert.equal(inp.attribution.target, "#slow", "the 280 ms interaction is skipped; the 180 ms one is INP");
  assert.ok(inp.value >= 180 && inp.value < 280, `${inp.value}`);
  await context.close();
});

test("CLS: late banners count, shifts after input do not; equal to web-vitals within 0.0001", async () => {
  const site = newSite("cls");
  const { context, page } = await open();
  await page.goto(url("cls", site));
  await settle(page, 1500);
  await page.click("#grow");
  await sleep(500);
  const all = await leaveAndCompare(page, site, 4);
  const cls = sample(all, "CLS");
  assert.ok(cls.value > 0.01, `CLS ${cls.value}`);
  assert.ok(cls.attribution.target, JSON.stringify(cls.attribution));
  assert.equal(cls.attribution.target, pages.referenceTarget(site, "CLS"), "largest shift's source, as web-vitals");
  assert.ok(cls.attribution.time > 0 && cls.attribution.value > 0, JSON.stringify(cls.attribution));
  await context.close();
});

test("navigation types: navigate, reload, back-forward (no bfcache)", async () => {
  const site = newSite("nav");
  const { context, page } = await open();
  await page.goto(url("plain", site));
  await settle(page, 800);
  await page.reload();
  await settle(page, 800);
  await page.click("#next");
  await page.waitForURL(/\/page\/other/);
  await page.goBack();
  await settle(page, 800);
  const all = await leaveAndCompare(page, site, 12);
  const navs = new Set(all.map((s) => s.nav));
  assert.deepEqual([...navs].sort(), ["back-forward", "navigate", "reload"]);
  await context.close();
});

test("bfcache restore: a new page view, back-forward-cache, TTFB 0, LCP/FCP to the second frame", async () => {
  const site = newSite("bfcache");
  const { context, page } = await open(bfBrowser);
  const [beacons, all] = await beaconsDuring(async () => {
    await page.goto(url("plain", site));
    await settle(page, 800);
    // Leave without an interaction: a click's first-input entry may only be delivered after the restore, when
    // web-vitals reports it for the old view and the beacon has already sent that view.
    await page.goto(`${pages.origin}/page/other`);
    await page.goBack({ waitUntil: "commit" });
    await sleep(800);
    // FCP and LCP of a restored view are performance.now() in a second-frame callback: web-vitals' own FCP and
    // LCP callbacks (and ours) run one after another in that frame, so they differ by the callbacks' run time.
    return leaveAndCompare(page, site, 8, { restoreTolerance: 20 });
  });
  const restored = all.filter((s) => s.nav == "back-forward-cache");
  assert.deepEqual(restored.map((s) => s.metric).sort(), ["CLS", "FCP", "LCP", "TTFB"]);
  assert.equal(sample(restored, "TTFB").value, 0);
  assert.equal(beacons, 2, "one beacon per page view: the first load and the restored view");
  await context.close();
});

for (const [name, extra] of [
  ["WebAssembly missing", "&nowasm=1"],
  ["CSP without wasm-unsafe-eval", "&csp=1"],
]) {
  test(`fallback (${name}): the wasm2js build gives web-vitals' values`, async () => {
    const site = newSite(extra.includes("csp") ? "csp" : "nowasm");
    const { context, page, requests } = await open();
    await page.goto(url("lcp", site, extra));
    await settle(page, 1500);
    await page.click("body", { position: { x: 5, y: 5 } });
    await sleep(300);
    await leaveAndCompare(page, site, 4);
    assert.ok(requests.some(([, u]) => /\/fv-[0-9a-f]+\.js$/.test(u)), "loaded the JS fallback");
    await context.close();
  });
}

test("data-sample-rate=0 sends nothing; the page view is not counted", async () => {
  const site = newSite("rate0");
  const { context, page, requests } = await open();
  await page.goto(url("lcp", site, "&rate=0"));
  await settle(page, 1000);
  await page.goto("about:blank");
  await sleep(1000);
  assert.equal(requests.filter(([, u]) => u.startsWith(collector.origin) && !u.endsWith("/beacon.js")).length, 0, "nothing loaded or sent");
  assert.deepEqual(await collector.recent(site), []);
  assert.ok(Object.keys(pages.reference(site)).length >= 3, "web-vitals did measure the page");
  await context.close();
});

test("a page loaded hidden (background tab, simulated): no LCP, FCP or CLS; TTFB is sent at once", async () => {
  // Headless Chromium under Playwright keeps every page visible (no background tabs), so the page reports
  // `hidden` from its first script on, as a background tab does; both web-vitals and the beacon read it.
  const site = newSite("background");
  const { context, page } = await open();
  await page.addInitScript(() => Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" }));
  const [beacons, all] = await beaconsDuring(async () => {
    await page.goto(url("lcp", site));
    await samples(collector, site, 1); // sent when the core arrives: the page is already hidden
    return leaveAndCompare(page, site, 1);
  });
  assert.deepEqual(all.map((s) => s.metric), ["TTFB"]);
  assert.equal(beacons, 1);
  await context.close();
});

test("data-endpoint: beacons go there (text/plain, wire v1) instead of the script's origin", async () => {
  const site = newSite("endpoint");
  const { context, page } = await open();
  await page.goto(url("plain", site, "&endpoint=1"));
  await settle(page, 800);
  await page.goto("about:blank");
  for (let i = 0; i < 50 && !pages.endpointBodies.some((b) => b.body.site == site); i++) await sleep(100);
  const got = pages.endpointBodies.filter((b) => b.body.site == site);
  assert.equal(got.length, 1);
  assert.match(got[0].type, /^text\/plain/);
  assert.equal(got[0].body.v, 1);
  assert.equal(got[0].body.release, "test.1");
  assert.equal(got[0].body.url, `${pages.origin}/page/plain`, "no query string on the wire");
  assert.deepEqual(got[0].body.metrics.map((m) => m.name).sort(), ["CLS", "FCP", "LCP", "TTFB"]);
  assert.deepEqual(await collector.recent(site), []);
  await context.close();
});

test("the beacon does not delay the host page's LCP", async () => {
  // Interleaved loads of the hero page with and without the beacon; web-vitals measures the host page's LCP.
  // The machine is shared (load average ~10 on 2 cores while others build), so the hero's arrival varies by
  // hundreds of ms; what the beacon could delay is the render after it arrives: LCP - the hero's responseEnd.
  // The best of 6 loads of each must agree within 50 ms.
  const runs = { with: [], without: [] };
  for (let i = 0; i < 6; i++) {
    for (const variant of ["without", "with"]) {
      const site = newSite("lcp-delay");
      const { context, page } = await open();
      await page.goto(url("lcp", site, variant == "without" ? "&beacon=0" : ""));
      await settle(page, 1000);
      const heroEnd = await page.evaluate(() => performance.getEntriesByType("resource").find((e) => e.name.includes("/hero.png")).responseEnd);
      await page.goto("about:blank");
      await sleep(200);
      const lcp = pages.reference(site)["LCP/navigate"];
      runs[variant].push({ lcp, render: Math.round(lcp - heroEnd) });
      await context.close();
    }
  }
  const best = (v, k) => Math.min(...runs[v].map((r) => r[k]));
  console.log(
    `host page (web-vitals) LCP / render delay after the hero arrived: without beacon ${runs.without.map((r) => `${r.lcp}/${r.render}`)}, ` +
      `with beacon ${runs.with.map((r) => `${r.lcp}/${r.render}`)}`,
  );
  assert.ok(best("with", "render") <= best("without", "render") + 50, JSON.stringify(runs));
});

test("no long animation frame runs beacon code", async () => {
  const site = newSite("loaf");
  const { context, page } = await open();
  await page.addInitScript(() => {
    window.__loaf = [];
    new PerformanceObserver((l) =>
      window.__loaf.push(...l.getEntries().map((e) => ({ d: e.duration, s: e.scripts.map((s) => ({ u: s.sourceURL, d: s.duration })) }))),
    ).observe({ type: "long-animation-frame", buffered: true });
  });
  await page.goto(url("inp", site));
  await settle(page, 1000);
  await page.click("#slow"); // a long frame of the page's own, to show the observer sees them
  await sleep(500);
  const loaf = await page.evaluate(() => window.__loaf);
  assert.ok(loaf.some((f) => f.d >= 180), `the page's own slow click is seen: ${JSON.stringify(loaf)}`);
  // A long frame may hold the beacon's script next to the page's own (on a busy machine, web-vitals.js and
  // beacon.js evaluated in one frame took 60 ms together): what the beacon must never do is take 50 ms itself.
  const beaconTime = (f) => f.s.filter((x) => x.u.startsWith(collector.origin)).reduce((a, x) => a + x.d, 0);
  const beaconLong = loaf.filter((f) => beaconTime(f) > 50);
  assert.deepEqual(beaconLong, [], "frames where the beacon's own scripts ran over 50 ms");
  await context.close();
});

test("hidden, shown, hidden again: each metric is sent once per page view, never twice", async () => {
  const site = newSite("twice");
  const { context, page } = await open();
  await page.goto(url("inp", site));
  await settle(page, 1500);
  // Headless Chromium keeps pages visible: flip document.visibilityState and fire the event the browser would.
  const setVisibility = (state) =>
    page.evaluate((state) => {
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
      document.dispatchEvent(new Event("visibilitychange"));
    }, state);
  const [first] = await beaconsDuring(async () => {
    await setVisibility("hidden");
    await samples(collector, site, 4);
  });
  assert.equal(first, 1);
  assert.deepEqual((await collector.recent(site)).map((s) => s.metric).sort(), ["CLS", "FCP", "LCP", "TTFB"]);
  await setVisibility("visible");
  await page.click("#slow");
  await sleep(500);
  const [second, all] = await beaconsDuring(async () => {
    await setVisibility("hidden");
    await samples(collector, site, 5);
    await setVisibility("visible");
    await setVisibility("hidden"); // nothing new: nothing sent
    return leaveAndCompare(page, site, 5);
  });
  assert.equal(second, 1, "only the second hide had something new (INP)");
  assert.deepEqual(all.map((s) => s.metric).sort(), ["CLS", "FCP", "INP", "LCP", "TTFB"]);
  await context.close();
});
