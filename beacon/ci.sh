#!/usr/bin/env bash
# The beacon's CI (called by .ci/run): installs what it needs (idempotently), checks that the committed
# beacon/dist is built from the current sources and within the size budget, runs the core's host tests and
# the browser tests (real Chromium, the real collector, web-vitals 6.2.3 as the reference).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== beacon: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "system packages"
missing=()
for p in rustc-web cargo-web rust-web-src lld-22 binaryen chromium xvfb; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  sudo=""
  [[ "$(id -u)" != 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

step "dist is fresh and within budget (build.sh --check)"
beacon/build.sh --check

step "core: format, clippy, host tests"
(cd beacon && cargo fmt --check && cargo clippy --quiet --all-targets -- -D warnings && cargo test --quiet)

step "collector binary"
cargo build --quiet -p collector

step "browser tests"
(cd tests/browser && npm ci --no-audit --no-fund --silent && npm test)
