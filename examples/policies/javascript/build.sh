#!/bin/bash
# Builds the JavaScript egress allow-list into a component with componentize-js (installed
# by scripts/setup.sh into /var/cache/natgw/tools): target/policies/egress_allowlist_js.wasm
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
TOOL=${COMPONENTIZE_JS:-/var/cache/natgw/tools/componentize-js-0.23.0/node_modules/.bin/componentize-js}
[ -x "$TOOL" ] || { echo "build: $TOOL is missing: run scripts/setup.sh" >&2; exit 1; }
OUT=$ROOT/target/policies/egress_allowlist_js.wasm
mkdir -p "$(dirname "$OUT")"
# -d: leave out the WASI features the policy does not use, so the component imports no WASI.
"$TOOL" --wit "$ROOT/wit/natgw-policy-0.2.0" --world-name egress-policy \
  -d stdio random clocks http fetch-event -o "$OUT.tmp" "$HERE/app.js" >/dev/null
mv "$OUT.tmp" "$OUT"
echo "build: $OUT ($(stat -c %s "$OUT") bytes, componentize-js 0.23.0)"
