#!/bin/bash
# Builds the C egress allow-list into a component: target/policies/egress_allowlist_c.wasm
#   wit-bindgen c (installed by scripts/setup.sh into /var/cache/natgw/tools) writes the
#   bindings for the egress-policy world; clang-16 compiles them with egress_allowlist.c for
#   wasm32 against Debian's wasi-libc; wasm-tools makes the component. The policy uses no
#   stdio, so the component imports no WASI and needs no adapter.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
BINDGEN=${WIT_BINDGEN:-/var/cache/natgw/tools/wit-bindgen-cli-0.63.0/bin/wit-bindgen}
[ -x "$BINDGEN" ] || { echo "build: $BINDGEN is missing: run scripts/setup.sh" >&2; exit 1; }
command -v clang-16 >/dev/null || { echo "build: clang-16 is missing: run scripts/setup.sh" >&2; exit 1; }
# WIT and OUT build variants (a test fixture built against another contract version).
WIT=${WIT:-$ROOT/wit/natgw-policy-0.2.0}
OUT=${OUT:-$ROOT/target/policies/egress_allowlist_c.wasm}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT")"
if ! out=$("$BINDGEN" c "$WIT" --world egress-policy --out-dir "$WORK" 2>&1); then
  echo "$out" >&2
  exit 1
fi
clang-16 --target=wasm32-wasi -O2 -std=c11 -Wall -Wextra -Werror -mexec-model=reactor -I"$WORK" \
  -o "$WORK/policy.core.wasm" "$HERE/egress_allowlist.c" "$WORK/egress_policy.c" \
  "$WORK/egress_policy_component_type.o" -Wl,--strip-all
wasm-tools component new "$WORK/policy.core.wasm" -o "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "build: $OUT ($(stat -c %s "$OUT") bytes, $(clang-16 --version | head -1))"
