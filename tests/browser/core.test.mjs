// The committed wasm core and its wasm2js fallback are the same program: drive both with the same random entry
// streams and require identical answers from every export.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { root } from "./harness.mjs";

const dist = join(root, "beacon", "dist");
const manifest = JSON.parse(readFileSync(join(dist, "manifest.json"), "utf8"));

async function cores() {
  const { instance } = await WebAssembly.instantiate(readFileSync(join(dist, manifest.wasm)));
  const dir = mkdtempSync(join(tmpdir(), "fv-core-"));
  writeFileSync(join(dir, "fallback.mjs"), readFileSync(join(dist, manifest.fallback)));
  const fallback = await import(join(dir, "fallback.mjs"));
  return [instance.exports, fallback];
}

test("wasm and wasm2js fallback agree on random page views", async () => {
  const [a, b] = await cores();
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let view = 0; view < 200; view++) {
    const calls = [["r", rnd() * 10, view % 3 == 0 ? 1 : 0]];
    for (let k = 0; k < 60; k++) {
      const x = rnd();
      if (x < 0.4) calls.push(["e", 1 + Math.floor(rnd() * 30) * 7, 40 + Math.floor(rnd() * 60) * 8]);
      else if (x < 0.7) calls.push(["l", rnd() * 0.2, k * 300 * rnd(), rnd() < 0.1 ? 1 : 0, k], ["c"]);
      else if (x < 0.85) calls.push(["t", Math.floor(rnd() * 5), rnd() * 5000, rnd() * 100, rnd() < 0.2 ? rnd() * 3000 : Infinity]);
      else if (x < 0.9) calls.push(["f"]);
      else calls.push(["n", Math.floor(rnd() * 200)]);
    }
    for (let m = 0; m < 6; m++) calls.push(["v", m]);
    for (const [fn, ...args] of calls) {
      const ra = a[fn](...args);
      const rb = b[fn](...args);
      assert.ok(Object.is(ra, rb), `view ${view}: ${fn}(${args}) wasm ${ra} fallback ${rb}`);
    }
  }
});

test("the exported core follows web-vitals' INP rule end to end", async () => {
  for (const core of await cores()) {
    core.r(0, 0);
    for (let id = 1; id <= 12; id++) core.e(id, 40 + 8 * id);
    assert.equal(core.n(49), 12);
    assert.equal(core.n(120), 10, "two skipped for 100+ interactions");
    assert.equal(core.v(1), 40 + 8 * 10);
    assert.equal(core.v(1), -1, "never twice");
  }
});
