#!/bin/bash
# Every test: unit tests and the simulated network (cargo test), end-to-end tests in network
# namespaces with real programs (tests/e2e/run.sh), and a short run of each fuzz target.
# Needs root (namespaces, packet sockets). Installs what it needs via scripts/setup.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
"$ROOT/scripts/setup.sh"
export PATH="$HOME/.cargo/bin:$PATH"
echo "== style: rustfmt and clippy (warnings are errors)"
cargo fmt --check
cargo clippy --all-targets --locked -q -- -D warnings
echo "== cargo test (unit tests beside the code, simulated network)"
cargo test --locked
echo "== end-to-end tests (namespaces, real programs)"
tests/e2e/run.sh
echo "== fuzz smoke (each target, 20000 runs; scripts/fuzz.sh 1000000 for the long run)"
scripts/fuzz.sh 20000
echo "== all tests passed"
