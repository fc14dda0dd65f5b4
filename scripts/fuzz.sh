#!/bin/bash
# Runs natgw's fuzz targets with cargo-fuzz (libFuzzer + AddressSanitizer).
# The machine's stable Rust works: cargo-fuzz passes -Z flags, which RUSTC_BOOTSTRAP=1
# allows on a stable toolchain (rustup cannot install nightly here).
# usage: scripts/fuzz.sh [RUNS per target, default 1000000] [targets...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-1000000}; shift || true
TARGETS=${*:-parse translate dns dns_stream}
export PATH="$HOME/.cargo/bin:$PATH" RUSTC_BOOTSTRAP=1
cargo fuzz --version >/dev/null 2>&1 || { echo "fuzz: cargo-fuzz is missing (scripts/setup-tests.sh installs it)" >&2; exit 1; }
cd "$ROOT/fuzz"
for t in $TARGETS; do
  mkdir -p "corpus/$t"
  python3 seeds.py "corpus/$t"
  cargo fuzz build -O "$t" >/dev/null 2>&1 || cargo fuzz build -O "$t"
  echo "fuzz: $t, $RUNS runs"
  log=$(mktemp)
  if ! cargo fuzz run -O "$t" "corpus/$t" -- -runs="$RUNS" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t FAILED (crash input saved under fuzz/artifacts/$t)" >&2
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$log"
  rm -f "$log"
done
