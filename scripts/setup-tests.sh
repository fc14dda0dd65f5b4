#!/bin/bash
# Installs what only the tests, fuzzing and benchmarks need, on top of what
# scripts/setup.sh (the demo's) installs and builds (run as root; scripts/test.sh runs
# both). Idempotent: skips what is already there.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "setup-tests.sh: run as root (apt-get)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)

APT_PACKAGES=(
  traceroute tcpdump
  # Load, the kernel's NAT to compare with, and the benchmarks (scripts/bench.sh).
  iperf3 nftables conntrack ethtool wrk netsniff-ng sockperf
  # The hostile-traffic tests: floods and forged segments (tests/e2e/tests/hostile.rs).
  hping3 python3-scapy
  # A gateway pair: keepalived elects the active node (examples/ha, tests/e2e/tests/ha.rs).
  keepalived
  # natgw as a service: a real systemd booted in namespaces (tests/e2e/tests/restart.rs,
  # package.rs, which also reads the packaged man pages).
  systemd man-db
  # Alarms and dashboards: promtool and a real Prometheus (examples/monitoring,
  # tests/e2e/tests/monitoring.rs); `natgw top` is tested under tmux.
  prometheus tmux
  # A real DNS server for DNS name binding (tests/e2e/tests/names.rs): dnsmasq's binary
  # only, no service.
  dnsmasq-base
)
"$ROOT/scripts/apt-install.sh" setup-tests.sh "${APT_PACKAGES[@]}"
# prometheus's package starts a system Prometheus on :9090; the tests run their own.
systemctl disable --now prometheus >/dev/null 2>&1 || true
export PATH="$HOME/.cargo/bin:$PATH:/usr/local/go/bin"

# cargo-fuzz (libFuzzer): runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (see scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup-tests.sh: installing cargo-fuzz"
  cargo install --locked cargo-fuzz@0.13.1 >/dev/null 2>&1
fi

# Flow-log queries (examples/flow-log-queries): DuckDB from PyPI.
TOOLS=/var/cache/natgw/tools
mkdir -p "$TOOLS"
if ! "$TOOLS/duckdb-1.4.2/bin/python" -c 'import duckdb' >/dev/null 2>&1; then
  echo "setup-tests.sh: installing DuckDB 1.4.2 (flow-log queries)"
  rm -rf "$TOOLS/duckdb-1.4.2"
  python3 -m venv "$TOOLS/duckdb-1.4.2"
  "$TOOLS/duckdb-1.4.2/bin/pip" install -q duckdb==1.4.2
fi

# Test fixtures (host/policy/tests/runtime.rs): the C policy built against a contract version the
# gateway does not have (0.2.0 renamed 0.9.0), and the Go policy with an init that panics.
if [ ! "$ROOT/target/policies/egress_wit_0_9_0.wasm" -nt "$ROOT/target/policies/egress_allowlist_c.wasm" ]; then
  wit090=$(mktemp -d)
  sed 's/^package natgw:policy@0\.2\.0;/package natgw:policy@0.9.0;/' "$ROOT/wit/natgw-policy-0.2.0/policy.wit" > "$wit090/policy.wit"
  WIT=$wit090 OUT="$ROOT/target/policies/egress_wit_0_9_0.wasm" "$ROOT/examples/policies/c/build.sh"
  rm -rf "$wit090"
fi
# And the Python policy that sleeps (host/policy/tests/runtime.rs, tests/e2e/tests/policies.rs).
sleepy="$ROOT/target/policies/sleepy_python.wasm"
[ "$sleepy" -nt "$ROOT/examples/policies/python/fixture_sleepy/app.py" ] && [ "$sleepy" -nt "$ROOT/target/policies/egress_allowlist_py.wasm" ] ||
  SRC="$ROOT/examples/policies/python/fixture_sleepy" WIT="$ROOT/wit/natgw-policy-0.1.0" OUT="$sleepy" \
    "$ROOT/examples/policies/python/build.sh"
[ "$ROOT/target/policies/go_panics_at_start.wasm" -nt "$ROOT/target/policies/egress_allowlist_go.wasm" ] ||
  GO_TAGS=natgw_fixture_panic_at_start OUT="$ROOT/target/policies/go_panics_at_start.wasm" \
    "$ROOT/examples/policies/go/build.sh"

echo "setup-tests.sh: ready"
