#!/usr/bin/env bash
# A short fuzz run of every target in fuzz/ (the decoders of untrusted bytes). A crash fails CI; its input is
# left in fuzz/artifacts/<target>/ and becomes a regression test in vitals.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-15}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
# cargo-fuzz needs nightly flags (-Zsanitizer); RUSTC_BOOTSTRAP lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  if [ -d "seeds/$target" ]; then cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true; fi
  echo "fuzzing $target for ${seconds}s"
  log="$(mktemp)"
  status=0
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|Done)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -60 "$log"
    echo "fuzz target $target failed (exit $status); the crashing input is in fuzz/artifacts/$target/" >&2
    exit "$status"
  fi
  rm -f "$log"
done
