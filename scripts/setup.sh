#!/bin/bash
# Installs everything natgw's demo, tests, fuzzing and benchmarks need on a fresh Debian 12
# machine (run as root). Idempotent: skips what is already there.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (apt-get, network namespaces)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)

APT_PACKAGES=(
  build-essential pkg-config clang
  iproute2 iputils-ping iputils-tracepath traceroute procps psmisc util-linux
  curl socat tcpdump python3 python3-venv nginx-light
  iperf3 nftables conntrack ethtool wrk netsniff-ng sockperf
  # The hostile-traffic tests: floods and forged segments (tests/e2e/tests/hostile.rs).
  hping3 python3-scapy
  # Wasm policies: Debian's rustc 1.96 with its std source builds them for
  # wasm32-unknown-unknown with -Zbuild-std where rustup cannot add that target.
  rustc-web cargo-web rust-web-src lld-16
  # C policies: clang for wasm32 with Debian's wasi-libc (examples/policies/c).
  clang-16 wasi-libc libclang-rt-16-dev-wasm32
  # A gateway pair: keepalived elects the active node (examples/ha, tests/e2e/tests/ha.rs).
  keepalived
  # natgw as a service: a real systemd booted in namespaces (tests/e2e/tests/restart.rs).
  systemd
  # Alarms and dashboards: promtool and a real Prometheus (examples/monitoring,
  # tests/e2e/tests/monitoring.rs); `natgw top` is tested under tmux.
  prometheus tmux
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx-light's package starts a system nginx on :80, prometheus's a Prometheus on :9090;
# the demo and the tests run their own, in namespaces.
systemctl disable --now nginx >/dev/null 2>&1 || true
systemctl disable --now prometheus >/dev/null 2>&1 || true

# Rust: the machine's rustup toolchain if present, else Debian's.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "setup.sh: no cargo found; installing Debian's rustc-web/cargo-web"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"

# cargo-fuzz (libFuzzer): runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (see scripts/fuzz.sh).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup.sh: installing cargo-fuzz"
  cargo install --locked cargo-fuzz@0.13.1 >/dev/null 2>&1
fi

# wasm-tools wraps a policy's core module into a component (scripts/build-policy.sh).
if ! wasm-tools --version 2>/dev/null | grep -q "^wasm-tools 1.263.0"; then
  echo "setup.sh: installing wasm-tools 1.263.0 (a few minutes)"
  cargo install --locked wasm-tools@1.263.0 >/dev/null 2>&1
fi

# Build the gateway, then the built-in policies and the test fixtures.
(cd "$ROOT" && cargo build --release --locked -q)
"$ROOT/scripts/build-policy.sh"

# Policies in other languages (examples/policies/<language>/build.sh). Their tools live
# in /var/cache/natgw/tools, pinned: componentize-py from PyPI for Python, componentize-js
# from npm for JavaScript, wit-bindgen-cli from crates.io for C (plus the clang above). Go
# policies build with the machine's Go (checked below) and wasm-tools.
TOOLS=/var/cache/natgw/tools
mkdir -p "$TOOLS"
if ! "$TOOLS/componentize-py-0.25.1/bin/componentize-py" --version >/dev/null 2>&1; then
  echo "setup.sh: installing componentize-py 0.25.1 (Python policies)"
  rm -rf "$TOOLS/componentize-py-0.25.1"
  python3 -m venv "$TOOLS/componentize-py-0.25.1"
  "$TOOLS/componentize-py-0.25.1/bin/pip" install -q componentize-py==0.25.1
fi
# Flow-log queries (examples/flow-log-queries): DuckDB from PyPI.
if ! "$TOOLS/duckdb-1.4.2/bin/python" -c 'import duckdb' >/dev/null 2>&1; then
  echo "setup.sh: installing DuckDB 1.4.2 (flow-log queries)"
  rm -rf "$TOOLS/duckdb-1.4.2"
  python3 -m venv "$TOOLS/duckdb-1.4.2"
  "$TOOLS/duckdb-1.4.2/bin/pip" install -q duckdb==1.4.2
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: installing Debian's nodejs and npm (JavaScript policies)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ ! -x "$TOOLS/componentize-js-0.23.0/node_modules/.bin/componentize-js" ]; then
  echo "setup.sh: installing componentize-js 0.23.0 (JavaScript policies)"
  rm -rf "$TOOLS/componentize-js-0.23.0"
  mkdir -p "$TOOLS/componentize-js-0.23.0"
  (cd "$TOOLS/componentize-js-0.23.0" &&
    npm install -s --no-audit --no-fund @bytecodealliance/componentize-js@0.23.0 >/dev/null)
fi
if ! "$TOOLS/wit-bindgen-cli-0.63.0/bin/wit-bindgen" --version >/dev/null 2>&1; then
  echo "setup.sh: installing wit-bindgen-cli 0.63.0 (C policies; about 7 minutes)"
  cargo install -q --locked --root "$TOOLS/wit-bindgen-cli-0.63.0" wit-bindgen-cli@0.63.0
fi
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "setup.sh: the go command is missing (Go 1.26+ builds Go policies and the OpenTelemetry Collector)" >&2; exit 1; }
# Rebuilt only when their sources or the WIT change (the Python and JavaScript builds take
# most of a minute each).
for lang in python:py javascript:js c:c go:go; do
  out="$ROOT/target/policies/egress_allowlist_${lang#*:}.wasm"
  lang=${lang%:*}
  sum=$(cd "$ROOT" && find "examples/policies/$lang" wit -type f -not -path '*/__pycache__/*' | sort |
    xargs sha256sum | sha256sum | cut -c1-16)
  stamp="$ROOT/target/policies/.$lang.$sum"
  if [ ! -e "$stamp" ] || [ ! -e "$out" ]; then
    "$ROOT/examples/policies/$lang/build.sh"
    rm -f "$ROOT/target/policies/.$lang".*
    touch "$stamp"
  fi
done
# Test fixtures (host/policy/tests/runtime.rs): the C policy built against a contract version the
# gateway does not have (0.1.0 renamed 0.2.0), and the Go policy with an init that panics.
if [ ! "$ROOT/target/policies/egress_wit_0_2_0.wasm" -nt "$ROOT/target/policies/egress_allowlist_c.wasm" ]; then
  wit020=$(mktemp -d)
  sed 's/^package natgw:policy@0\.1\.0;/package natgw:policy@0.2.0;/' "$ROOT/wit/natgw-policy-0.1.0/policy.wit" > "$wit020/policy.wit"
  WIT=$wit020 OUT="$ROOT/target/policies/egress_wit_0_2_0.wasm" "$ROOT/examples/policies/c/build.sh"
  rm -rf "$wit020"
fi
# And the Python policy that sleeps (host/policy/tests/runtime.rs, tests/e2e/tests/policies.rs).
sleepy="$ROOT/target/policies/sleepy_python.wasm"
[ "$sleepy" -nt "$ROOT/examples/policies/python/fixture_sleepy/app.py" ] && [ "$sleepy" -nt "$ROOT/target/policies/egress_allowlist_py.wasm" ] ||
  SRC="$ROOT/examples/policies/python/fixture_sleepy" OUT="$sleepy" "$ROOT/examples/policies/python/build.sh"
[ "$ROOT/target/policies/go_panics_at_start.wasm" -nt "$ROOT/target/policies/egress_allowlist_go.wasm" ] ||
  GO_TAGS=natgw_fixture_panic_at_start OUT="$ROOT/target/policies/go_panics_at_start.wasm" \
    "$ROOT/examples/policies/go/build.sh"

# The OpenTelemetry Collector the demo and the tests export to, built from the Go module
# proxy with the machine's Go (1.26 or newer; go.mod in collector/ says which modules).
collector=$("$ROOT/scripts/build-collector.sh")
echo "setup.sh: ready ($(cargo --version), natgw at $ROOT/target/release/natgw, policies in $ROOT/target/policies, collector $collector)"
