#!/usr/bin/env bash
# Builds the OpenTelemetry Collector natgw's tests and demo run (collector/: the core OTLP
# receiver, batch processor, debug and file exporters, all at one collector release) from
# the Go module proxy, and prints the binary's path.
#
# The binary is cached by the hash of collector/{main.go,go.mod,go.sum} under
# $NATGW_CACHE (default /var/cache/natgw), so a clean clone on the same machine does not
# build it again; Go's module cache (GOMODCACHE) keeps the downloaded modules.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/collector"
cache="${NATGW_CACHE:-/var/cache/natgw}/collector"
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-collector: the go command is missing (scripts/setup.sh installs it)" >&2; exit 1; }
hash="$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-16)"
bin="$cache/$hash/otelcol-natgw"
if [ ! -x "$bin" ]; then
    mkdir -p "$cache/$hash"
    echo "build-collector: building the collector (first time: downloads a few hundred MB of Go modules)" >&2
    (cd "$src" && GOFLAGS=-mod=readonly GOTOOLCHAIN=local go build -trimpath -ldflags="-s -w" -o "$bin.tmp" .)
    mv "$bin.tmp" "$bin"
fi
mkdir -p "$root/target/otelcol"
ln -sf "$bin" "$root/target/otelcol/otelcol-natgw"
echo "$root/target/otelcol/otelcol-natgw"
