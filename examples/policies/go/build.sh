#!/bin/bash
# Builds the Go egress allow-list into a component: target/policies/egress_allowlist_go.wasm
#   1. the machine's Go (1.26+) builds a wasip1 reactor whose //go:wasmexport functions are
#      the canonical-ABI exports of the egress-policy world (abi.go);
#   2. wasm-tools embeds the world's WIT and makes a component, with preview1/adapter.wat
#      standing in for wasi_snapshot_preview1 (see the comment at its top for why).
# The TOML reader, github.com/BurntSushi/toml, comes from the Go module proxy (go.sum pins it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
export PATH="$PATH:/usr/local/go/bin:$HOME/.cargo/bin"
command -v go >/dev/null || { echo "build: the go command is missing (Go 1.26+)" >&2; exit 1; }
command -v wasm-tools >/dev/null || { echo "build: wasm-tools is missing: run scripts/setup.sh" >&2; exit 1; }
# GO_TAGS and OUT build variants (the test fixture in fixture_panic.go).
OUT=${OUT:-$ROOT/target/policies/egress_allowlist_go.wasm}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT")" "$WORK/wit/deps/natgw-policy"
(cd "$HERE" && GOFLAGS=-mod=readonly GOTOOLCHAIN=local GOOS=wasip1 GOARCH=wasm \
  go build -buildmode=c-shared -trimpath -ldflags="-s -w" -tags "${GO_TAGS:-}" -o "$WORK/policy.core.wasm" .)
cp "$HERE/preview1/adapter.wit" "$WORK/wit/"
cp "$ROOT/wit/natgw-policy-0.2.0/policy.wit" "$WORK/wit/deps/natgw-policy/"
wasm-tools parse "$HERE/preview1/adapter.wat" -o "$WORK/adapter.core.wasm"
wasm-tools component embed "$WORK/wit" --world adapter "$WORK/adapter.core.wasm" -o "$WORK/adapter.wasm"
wasm-tools component embed "$ROOT/wit/natgw-policy-0.2.0" --world egress-policy \
  "$WORK/policy.core.wasm" -o "$WORK/policy.embedded.wasm"
wasm-tools component new "$WORK/policy.embedded.wasm" --adapt "wasi_snapshot_preview1=$WORK/adapter.wasm" -o "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "build: $OUT ($(stat -c %s "$OUT") bytes, $(go version | awk '{print $3}'))"
