#!/bin/bash
# Every test: unit tests and the simulated network (cargo test), end-to-end tests in network
# namespaces with real programs (cargo test -p natgw-e2e), and a short run of each fuzz target.
# Needs root (namespaces, packet sockets). Installs what it needs: scripts/setup.sh (what
# the demo needs) and scripts/setup-tests.sh (what only the tests need).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/setup-tests.sh"
export PATH="$HOME/.cargo/bin:$PATH:/usr/local/go/bin"
echo "== style: rustfmt and clippy (warnings are errors)"
cargo fmt --check
cargo fmt --check --manifest-path sdk/Cargo.toml
cargo fmt --check --all --manifest-path policies/Cargo.toml
cargo clippy --workspace --all-targets --locked -q -- -D warnings
for f in egress port-pool flow-log all; do
  cargo clippy --all-targets --locked -q --manifest-path sdk/Cargo.toml --features "$f" -- -D warnings
done
for p in egress-allowlist subnet-port-pools flow-log-filter misbehaving-egress blocking-egress stateful-egress v010-hooks; do
  cargo clippy --all-targets --locked -q --manifest-path policies/Cargo.toml -p "$p" -- -D warnings
done
echo "== cargo test (unit tests beside the code, simulated network, the Wasm policy runtime)"
cargo test --locked
echo "== policy SDK and built-in policies (native unit tests; one crate at a time: one world each)"
cargo test --locked -q --manifest-path sdk/Cargo.toml --features egress
for p in egress-allowlist subnet-port-pools flow-log-filter stateful-egress; do
  cargo test --locked -q --manifest-path policies/Cargo.toml -p "$p"
done
echo "== the Go policy's own unit tests (go test, native)"
(cd examples/policies/go && test -z "$(gofmt -l .)" && GOFLAGS=-mod=readonly GOTOOLCHAIN=local go test ./...)
echo "== one test-vector suite for the egress policy in every language (natgw policy test)"
for wasm in target/policies/egress_allowlist{,_py,_js,_c,_go}.wasm; do
  target/release/natgw policy test "$wasm" --vectors tests/vectors/egress.toml
done
# And its host rules (natgw:policy@0.2.0), in every language too.
for wasm in target/policies/egress_allowlist{,_py,_js,_c,_go}.wasm; do
  target/release/natgw policy test "$wasm" --vectors tests/vectors/egress-names.toml
done
echo "== end-to-end tests (namespaces, real programs; tests/e2e, one topology at a time)"
cargo test --locked -p natgw-e2e -- --test-threads=1
echo "== fuzz smoke (each target, 20000 runs; scripts/fuzz.sh 1000000 for the long run)"
scripts/fuzz.sh 20000
echo "== all tests passed"
