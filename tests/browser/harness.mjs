// Shared set-up for the browser tests: the REAL collector binary (serving the committed beacon/dist and storing
// beacons), a local page server (test pages, web-vitals 6.2.3 as the reference, a noisy hero image, reports of
// web-vitals' values), and Debian's Chromium driven by playwright-core.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { createServer as netServer } from "node:net";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "..", "..");

/** A Chrome desktop user agent: the collector drops headless ones as bots. */
export const USER_AGENT =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";

const freePort = () =>
  new Promise((ok, fail) => {
    const s = netServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts `$CARGO_TARGET_DIR/debug/collector` (or `$COLLECTOR_BIN`) on free loopback ports with a fresh data dir. */
export async function startCollector() {
  const bin =
    process.env.COLLECTOR_BIN || join(process.env.CARGO_TARGET_DIR || join(root, "target"), "debug", "collector");
  if (!existsSync(bin)) throw new Error(`${bin} not found: run 'cargo build -p collector' first (or set COLLECTOR_BIN)`);
  const dataDir = mkdtempSync(join(tmpdir(), "fv-browser-"));
  const port = await freePort();
  const admin = await freePort();
  const child = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--admin-listen", `127.0.0.1:${admin}`, "--data-dir", dataDir], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const origin = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode != null) throw new Error(`collector exited: ${log}`);
    try {
      if ((await fetch(origin + "/healthz")).ok) break;
    } catch {}
    if (i > 200) throw new Error(`collector did not start: ${log}`);
    await sleep(50);
  }
  return {
    origin,
    log: () => log,
    /** Beacons that reached the ingest handler (accepted, rejected or shed), from the admin `/metrics`. */
    async beaconCount() {
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      let n = 0;
      for (const line of text.split("\n")) if (/^fieldvitals_beacons_(accepted|rejected|shed)_total/.test(line)) n += +line.split(" ").pop();
      return n;
    },
    async recent(site) {
      const r = await fetch(`${origin}/v1/recent?site=${site}&limit=1000`);
      if (!r.ok) throw new Error(`/v1/recent: ${r.status} ${await r.text()}`);
      return (await r.json()).samples;
    },
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode != null ? r() : child.on("exit", r)));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// A PNG of random pixels: Chromium ignores low-entropy images as LCP candidates.
function noisyPng(w, h) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b) => {
    let c = 0xffffffff;
    for (const x of b) c = crcTable[(c ^ x) & 255] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, body) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    const tb = Buffer.concat([Buffer.from(type), body]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(tb));
    return Buffer.concat([len, tb, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((w * 3 + 1) * h);
  let seed = 12345;
  for (let i = 0; i < raw.length; i++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    raw[i] = i % (w * 3 + 1) == 0 ? 0 : seed >> 16;
  }
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

const webVitals = readFileSync(join(here, "node_modules", "web-vitals", "dist", "web-vitals.attribution.iife.js"));

/**
 * The page server. `GET /page/<name>?site=..&...` renders pages/<name>.html with the reference (web-vitals 6.2.3,
 * reporting every change to `POST /wv?site=`) and the beacon tag; query parameters tune it:
 * `beacon=0` leaves the beacon out, `rate=` sets data-sample-rate, `csp=1` sends a CSP without 'wasm-unsafe-eval',
 * `nowasm=1` deletes WebAssembly before the beacon runs, `delay=` delays the HTML (TTFB), `endpoint=1` sets
 * data-endpoint to this server's `POST /endpoint` (recorded in `endpointBodies`).
 */
export async function startPages(collectorOrigin) {
  const png = noisyPng(600, 400);
  const reports = new Map(); // site -> [web-vitals reports]
  const endpointBodies = []; // beacons sent to this server's /endpoint (data-endpoint)
  let origin;
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const q = url.searchParams;
    if (req.method == "POST" && url.pathname == "/wv") {
      let body = "";
      for await (const c of req) body += c;
      const site = q.get("site");
      if (!reports.has(site)) reports.set(site, []);
      reports.get(site).push(JSON.parse(body));
      res.writeHead(204).end();
      return;
    }
    if (req.method == "POST" && url.pathname == "/endpoint") {
      let body = "";
      for await (const c of req) body += c;
      endpointBodies.push({ type: req.headers["content-type"], body: JSON.parse(body) });
      res.writeHead(204, { "access-control-allow-origin": "*" }).end();
      return;
    }
    if (url.pathname == "/web-vitals.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(webVitals);
      return;
    }
    if (url.pathname == "/hero.png") {
      await sleep(+(q.get("delay") || 0));
      res.writeHead(200, { "content-type": "image/png", "cache-control": "no-store" }).end(png);
      return;
    }
    const m = url.pathname.match(/^\/page\/([a-z-]+)$/);
    if (!m || !existsSync(join(here, "pages", m[1] + ".html"))) {
      res.writeHead(404).end();
      return;
    }
    await sleep(+(q.get("delay") || 0));
    const site = q.get("site");
    const beacon =
      q.get("beacon") == "0"
        ? ""
        : `<script async src="${collectorOrigin}/beacon.js" data-site="${site}" data-release="test.1"` +
          (q.has("rate") ? ` data-sample-rate="${q.get("rate")}"` : "") +
          (q.has("endpoint") ? ` data-endpoint="${origin}/endpoint"` : "") +
          "></script>";
    const head = `<meta charset="utf-8"><title>${m[1]}</title>
<script>
  window.__longTasks = [];
  try { new PerformanceObserver((l) => window.__longTasks.push(...l.getEntries().map((e) => e.duration))).observe({ type: "longtask", buffered: true }); } catch (e) {}
  ${q.get("nowasm") == "1" ? "delete window.WebAssembly;" : ""}
</script>
<script src="/web-vitals.js"></script>
<script>
  const send = (m) => { const a = m.attribution || {}; navigator.sendBeacon("/wv?site=${site}", JSON.stringify({ name: m.name, value: m.value, nav: m.navigationType, target: a.target || a.interactionTarget || a.largestShiftTarget })); };
  for (const f of ["onLCP", "onINP", "onCLS", "onFCP", "onTTFB"]) webVitals[f](send, { reportAllChanges: true });
</script>
${beacon}`;
    const html = readFileSync(join(here, "pages", m[1] + ".html"), "utf8").replace("<!--head-->", head).replaceAll("__SITE__", site);
    const headers = { "content-type": "text/html; charset=utf-8" };
    if (q.get("csp") == "1")
      headers["content-security-policy"] = `script-src 'self' 'unsafe-inline' ${collectorOrigin}`;
    res.writeHead(200, headers).end(html);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    endpointBodies,
    /** web-vitals' last report of each metric and navigation type: { "LCP/navigate": value, ... } */
    reference(site) {
      const out = {};
      for (const r of reports.get(site) || []) out[`${r.name}/${r.nav}`] = r.value;
      return out;
    },
    /** The attribution target (selector) of web-vitals' last report of a metric. */
    referenceTarget(site, metric) {
      return (reports.get(site) || []).filter((r) => r.name == metric).pop()?.target;
    },
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Debian's Chromium; `bfcache` keeps the back/forward cache Playwright disables by default. */
export async function launch({ bfcache = false } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // The UA flag as well as the context's: beacons sent while a page unloads go out with the browser's own UA.
    args: ["--no-sandbox", "--disable-dev-shm-usage", `--user-agent=${USER_AGENT}`],
    ignoreDefaultArgs: bfcache ? ["--disable-back-forward-cache"] : [],
  });
}

let siteCounter = 0;
/** A fresh site id per scenario, so /v1/recent and the reference reports of one scenario are its own. */
export const newSite = (name) => `t${process.pid}-${++siteCounter}-${name}`.slice(0, 64);

/** Waits until the collector shows at least `n` samples for the site (beacons are asynchronous). */
export async function samples(collector, site, n, timeoutMs = 10000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const s = await collector.recent(site);
    if (s.length >= n || Date.now() > until) return s;
    await sleep(100);
  }
}

/** The beacon's stored values: { "LCP/navigate": value, ... } and the full samples. */
export function byMetric(recentSamples) {
  const out = {};
  for (const s of recentSamples) out[`${s.metric}/${s.nav}`] = s.value;
  return out;
}
