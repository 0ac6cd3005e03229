#!/usr/bin/env bash
# Builds the beacon into beacon/dist/ (committed; the collector embeds it with include_bytes!):
#   Rust core (beacon/src, sharing vitals/) -> wasm32 -> wasm-bindgen -> wasm-opt -Oz -> fv-<hash>.wasm
#                                                                    -> wasm2js -Oz -> terser -> fv-<hash>.js (fallback)
#   beacon/js/beacon.js (names of both patched in) -> terser -> beacon.js
# and records a hash of every input next to them (dist/manifest.json "inputs") with the measured sizes.
#
#   beacon/build.sh           rebuild dist/
#   beacon/build.sh --check   rebuild into a temp dir; fail if dist/ is stale (inputs changed since it was built)
#                             or anything is over the size budget
#
# Toolchain: Debian's rustc-web (+ rust-web-src, lld) if installed, else rustup's toolchain with the wasm32 target
# and rust-src; both build std for wasm32 themselves (-Zbuild-std, through RUSTC_BOOTSTRAP) so that panics abort
# without formatting code and the module uses only MVP features (wasm2js refuses reference types).
# Also needs: binaryen (wasm-opt, wasm2js), node + npm (terser, from beacon/package-lock.json), and the wasm-bindgen
# CLI of exactly the version beacon/Cargo.toml pins (installed with `cargo install` when missing or different).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
check=0
[[ "${1:-}" == "--check" ]] && check=1

# Every input of the build, hashed in a fixed order: beacon sources and build files, vitals sources, lockfiles.
inputs_hash() {
  (cd "$root" && find beacon/build.sh beacon/Cargo.toml beacon/Cargo.lock beacon/package.json beacon/package-lock.json \
      beacon/src beacon/js vitals/Cargo.toml vitals/src -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-64
}

target_dir="${CARGO_TARGET_DIR:-$here/target}"
# A small stack (the core has no recursion or buffers): one 64 KiB memory page instead of 17, which the wasm2js
# fallback would otherwise allocate as a 1.1 MB ArrayBuffer.
flags="-C target-cpu=mvp -Zunstable-options -Cpanic=immediate-abort -C link-arg=-zstack-size=16384"
if [[ -x /usr/bin/rustc && -d /usr/lib/rustlib/src/rust/library ]] && /usr/bin/rustc --version | grep -q .; then
  # Debian rustc-web; its rust-lld is the linker (lld-22).
  cargo_bin=/usr/bin/cargo
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/bin/rust-lld
elif command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown \
    && rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  cargo_bin=cargo
else
  echo "build.sh: no wasm toolchain: install Debian's rustc-web rust-web-src lld, or 'rustup target add wasm32-unknown-unknown' and 'rustup component add rust-src'" >&2
  exit 1
fi
for tool in wasm-opt wasm2js node npm; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (binaryen, nodejs, npm)" >&2; exit 1; }
done
[[ -d "$here/node_modules/terser" ]] || (cd "$here" && npm ci --no-audit --no-fund >/dev/null)
# The wasm-bindgen CLI must match the crate exactly (it reads the schema the crate embeds in the module).
bindgen_version="$(sed -n 's/^wasm-bindgen = .*version = "=\([^"]*\)".*/\1/p' "$here/Cargo.toml")"
[[ -n "$bindgen_version" ]] || { echo "build.sh: no exact wasm-bindgen version (=x.y.z) in beacon/Cargo.toml" >&2; exit 1; }
bindgen=wasm-bindgen
cargo_home_bin="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-bindgen"
if [[ "$("$bindgen" --version 2>/dev/null)" != "wasm-bindgen $bindgen_version" ]]; then
  bindgen="$cargo_home_bin"
  if [[ "$("$bindgen" --version 2>/dev/null)" != "wasm-bindgen $bindgen_version" ]]; then
    echo "build.sh: installing wasm-bindgen-cli $bindgen_version" >&2
    "$cargo_bin" install --quiet wasm-bindgen-cli --version "$bindgen_version"
  fi
fi

echo "build.sh: $("${RUSTC:-rustc}" --version) for wasm32-unknown-unknown, $("$bindgen" --version), $(wasm-opt --version)" >&2
hash="$(inputs_hash)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$here" && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir" RUSTFLAGS="$flags" \
  "$cargo_bin" build --quiet --locked --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort)
# Numbers only: the generated glue (core.js, unused) is a few wrappers; beacon.js instantiates core_bg.wasm itself.
"$bindgen" --target web --no-typescript --out-dir "$work" --out-name core "$target_dir/wasm32-unknown-unknown/release/fv_beacon.wasm"
wasm-opt -Oz --strip-debug --strip-producers "$work/core_bg.wasm" -o "$work/core.wasm"
wasm2js -Oz "$work/core.wasm" -o "$work/core.js"

out="$here/dist"
[[ $check == 1 ]] && out="$work/dist"
if [[ $check == 0 ]]; then rm -rf "$out"; fi
node "$here/js/pack.mjs" "$work/core.wasm" "$work/core.js" "$out" "$hash"

if [[ $check == 1 ]]; then
  committed="$(node -e 'try{console.log(require(process.argv[1]).inputs)}catch{console.log("none")}' "$here/dist/manifest.json")"
  if [[ "$committed" != "$hash" ]]; then
    echo "build.sh --check: beacon/dist is stale (built from inputs $committed, sources are now $hash): run beacon/build.sh and commit beacon/dist" >&2
    exit 1
  fi
  # The committed files must be the ones the committed beacon.js loads, and within budget too.
  for f in $(node -e 'const m=require(process.argv[1]);console.log(m.wasm,m.fallback)' "$here/dist/manifest.json"); do
    [[ -f "$here/dist/$f" ]] && grep -q "$f" "$here/dist/beacon.js" || { echo "build.sh --check: dist/$f missing or not referenced by dist/beacon.js" >&2; exit 1; }
  done
  node -e 'const m=require(process.argv[1]);const t=m.total_brotli;for(const k in t)if(t[k]>m.budget_brotli){console.error(`committed ${k} is ${t[k]} B brotli, over ${m.budget_brotli}`);process.exit(1)}' "$here/dist/manifest.json"
  echo "beacon/dist is up to date (inputs $hash) and within budget"
fi
