// Build step of beacon/build.sh: names the wasm and its wasm2js build by content hash, minifies the JS, writes
// the dist directory and measures what a page downloads (brotli, as the collector serves it).
// Usage: node pack.mjs <optimised.wasm> <wasm2js-output.js> <out-dir> <inputs-hash>
// (the wasm is wasm-bindgen's output, optimised; the fallback is wasm2js of that same module)
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants } from "node:zlib";
import { minify } from "terser";

/** web-vitals 6.2.3's attribution build, brotli (measured from the npm package): the budget. */
export const BUDGET = 4978;

const [wasmPath, fallbackPath, outDir, inputs] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const hash = (b) => createHash("sha256").update(b).digest("hex").slice(0, 16);
// Same settings as the collector's compressor (collector/src/routes/beacon_files.rs).
const brotli = (b) =>
  brotliCompressSync(b, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_LGWIN]: 22 },
  }).length;

const terse = { ecma: 2020, compress: { passes: 3, unsafe_arrows: true }, mangle: true, format: { comments: false } };

const wasm = readFileSync(wasmPath);
const wasmName = `fv-${hash(wasm)}.wasm`;
// wasm2js writes an ES module; keep it one (beacon.js loads it with import()), minified.
// Only the core's functions are used: memory, the linker's globals and wasm-bindgen's abort-state globals
// (`__abort_handler`, `__instance_terminated`, which only its own glue reads) need not be exported.
const wasm2js = readFileSync(fallbackPath, "utf8").replace(
  /^export var (memory|__data_end|__heap_base|__abort_handler|__instance_terminated) = .*$/gm,
  "",
);
const fallback = (await minify(wasm2js, { ...terse, module: true })).code;
const fallbackName = `fv-${hash(fallback)}.js`;
const source = readFileSync(join(here, "beacon.js"), "utf8")
  .replaceAll("__FV_WASM__", wasmName)
  .replaceAll("__FV_JS__", fallbackName);
const beacon = (await minify(source, terse)).code;

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, wasmName), wasm);
writeFileSync(join(outDir, fallbackName), fallback);
writeFileSync(join(outDir, "beacon.js"), beacon);

const sizes = {
  "beacon.js": { raw: Buffer.byteLength(beacon), brotli: brotli(beacon) },
  [wasmName]: { raw: wasm.length, brotli: brotli(wasm) },
  [fallbackName]: { raw: Buffer.byteLength(fallback), brotli: brotli(fallback) },
};
const withWasm = sizes["beacon.js"].brotli + sizes[wasmName].brotli;
const withFallback = sizes["beacon.js"].brotli + sizes[fallbackName].brotli;
const manifest = {
  inputs,
  wasm: wasmName,
  fallback: fallbackName,
  sizes,
  total_brotli: { "beacon.js+wasm": withWasm, "beacon.js+fallback": withFallback },
  budget_brotli: BUDGET,
};
writeFileSync(join(outDir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
for (const [name, s] of Object.entries(sizes)) console.log(`${name.padEnd(32)} ${String(s.raw).padStart(6)} B raw ${String(s.brotli).padStart(6)} B brotli`);
console.log(`beacon.js + wasm     ${withWasm} B brotli (budget ${BUDGET})`);
console.log(`beacon.js + fallback ${withFallback} B brotli (budget ${BUDGET})`);
if (withWasm > BUDGET || withFallback > BUDGET) {
  console.error(`over the size budget of ${BUDGET} B brotli`);
  process.exit(1);
}
