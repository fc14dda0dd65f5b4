#!/bin/bash
# Builds the Python egress allow-list into a component with componentize-py (installed by
# scripts/setup.sh into /var/cache/natgw/tools): target/policies/egress_allowlist_py.wasm
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
TOOL=${COMPONENTIZE_PY:-/var/cache/natgw/tools/componentize-py-0.25.1/bin/componentize-py}
[ -x "$TOOL" ] || { echo "build: $TOOL is missing: run scripts/setup.sh" >&2; exit 1; }
# SRC, WIT and OUT build variants (the test fixture in examples/policies/python/fixture_sleepy,
# a 0.1.0 policy).
SRC=${SRC:-$HERE}
WIT=${WIT:-$ROOT/wit/natgw-policy-0.2.0}
OUT=${OUT:-$ROOT/target/policies/egress_allowlist_py.wasm}
mkdir -p "$(dirname "$OUT")"
"$TOOL" -d "$WIT" -w egress-policy componentize -p "$SRC" app -o "$OUT.tmp" >/dev/null
mv "$OUT.tmp" "$OUT"
echo "build: $OUT ($(stat -c %s "$OUT") bytes, componentize-py $("$TOOL" --version | awk '{print $2}'))"
