#!/usr/bin/env bash
# Runs the OpenTelemetry Collector (scripts/build-collector.sh) for the demo and the tests:
# OTLP over gRPC on 127.0.0.1:4317 and over HTTP on 127.0.0.1:4318, logs and metrics
# written as OTLP/JSON lines to DIR/logs.jsonl and DIR/metrics.jsonl.
#
# usage: scripts/collector.sh start DIR [NETNS]   (in network namespace NETNS if given)
#        scripts/collector.sh stop DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cmd=${1:?usage: collector.sh start|stop DIR [NETNS]}
dir=${2:?usage: collector.sh start|stop DIR [NETNS]}
ns=${3:-}
mkdir -p "$dir"
case $cmd in
start)
    bin=$("$root/scripts/build-collector.sh")
    cat > "$dir/otelcol.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
      http:
        endpoint: 127.0.0.1:4318
exporters:
  file/logs:
    path: $dir/logs.jsonl
    flush_interval: 100ms
  file/metrics:
    path: $dir/metrics.jsonl
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [file/logs]
    metrics:
      receivers: [otlp]
      exporters: [file/metrics]
YAML
    run=()
    [ -n "$ns" ] && run=(ip netns exec "$ns")
    "${run[@]}" "$bin" --config "$dir/otelcol.yaml" >>"$dir/otelcol.log" 2>&1 &
    echo $! > "$dir/otelcol.pid"
    for _ in $(seq 100); do
        grep -q "Everything is ready" "$dir/otelcol.log" 2>/dev/null && exit 0
        kill -0 "$(cat "$dir/otelcol.pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "collector.sh: the collector did not start; its log:" >&2
    tail -n 20 "$dir/otelcol.log" >&2
    exit 1
    ;;
stop)
    if [ -f "$dir/otelcol.pid" ]; then
        pid=$(cat "$dir/otelcol.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/otelcol.pid"
    fi
    ;;
*) echo "usage: collector.sh start|stop DIR [NETNS]" >&2; exit 2;;
esac
