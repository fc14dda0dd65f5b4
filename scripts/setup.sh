#!/bin/bash
# Installs and builds what natgw's demo shows on a fresh Debian 12 machine (run as root):
# the gateway, its policies in five languages and the OpenTelemetry Collector.
# Idempotent: skips what is already there. What only the tests, fuzzing and benchmarks
# need comes with scripts/setup-tests.sh (the test command runs both).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (apt-get, network namespaces)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)

APT_PACKAGES=(
  build-essential pkg-config clang
  iproute2 iputils-ping iputils-tracepath procps psmisc util-linux
  curl socat python3 python3-venv nginx-light
  # Wasm policies: Debian's rustc 1.96 with its std source builds them for
  # wasm32-unknown-unknown with -Zbuild-std where rustup cannot add that target.
  rustc-web cargo-web rust-web-src lld-16
  # C policies: clang for wasm32 with Debian's wasi-libc (examples/policies/c).
  clang-16 wasi-libc libclang-rt-16-dev-wasm32
)
"$ROOT/scripts/apt-install.sh" setup.sh "${APT_PACKAGES[@]}"
# nginx-light's package starts a system nginx on :80; the demo runs its own, in namespaces.
systemctl disable --now nginx >/dev/null 2>&1 || true

# Rust: the machine's rustup toolchain if present, else Debian's.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "setup.sh: no cargo found; installing Debian's rustc-web/cargo-web"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"

# wasm-tools wraps a policy's core module into a component (scripts/build-policy.sh).
if ! wasm-tools --version 2>/dev/null | grep -q "^wasm-tools 1.263.0"; then
  echo "setup.sh: installing wasm-tools 1.263.0 (a few minutes)"
  cargo install --locked wasm-tools@1.263.0 >/dev/null 2>&1
fi

# Build the gateway, then the built-in policies.
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
# The OpenTelemetry Collector the demo and the tests export to, built from the Go module
# proxy with the machine's Go (1.26 or newer; go.mod in collector/ says which modules).
collector=$("$ROOT/scripts/build-collector.sh")
echo "setup.sh: ready ($(cargo --version), natgw at $ROOT/target/release/natgw, policies in $ROOT/target/policies, collector $collector)"
