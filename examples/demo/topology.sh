#!/bin/bash
# The demo network, all in network namespaces on this machine:
#
#   natgw-cli1  c1 10.10.1.10/24 (default via 10.10.1.1)  --veth--  in1 ┐
#   natgw-cli2  c2 10.10.2.10/24 (default via 10.10.2.1)  --veth--  in2 ┤ natgw-gw (natgw; no kernel
#                                                                       │  addresses, ip_forward=0)
#   natgw-inet  i0 198.51.100.1/24  --veth--  out0 ┘ (natgw: 198.51.100.10, .11)
#               lo 203.0.113.80 (nginx :80), 203.0.113.7 (UDP echo :7)
#
# In natgw-gw, on its loopback: an OpenTelemetry Collector (scripts/collector.sh; OTLP on
# 127.0.0.1:4317 gRPC and :4318 HTTP, writing $NATGW_RUN/otel/{logs,metrics}.jsonl) and
# natgw's Prometheus endpoint (127.0.0.1:9108).
#
# natgw-inet is "the internet": it has no route to 10.10.0.0/16, so anything that reaches
# a server there was translated by natgw.
#
# usage: topology.sh up [--no-start]   build the namespaces, start servers and natgw
#        topology.sh start | stop       start / stop natgw only
#        topology.sh down               stop everything and delete the namespaces
# env:   NATGW_PREFIX (namespace prefix, default natgw), NATGW_BIN, NATGW_CONFIG,
#        NATGW_RUN (state directory, default /run/$NATGW_PREFIX-demo)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
P=${NATGW_PREFIX:-natgw}
RUN=${NATGW_RUN:-/run/$P-demo}
BIN=${NATGW_BIN:-$ROOT/target/release/natgw}
CONFIG=${NATGW_CONFIG:-$HERE/natgw.toml}
CLI1=$P-cli1 CLI2=$P-cli2 GW=$P-gw INET=$P-inet

die() { echo "topology.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"

quiet_ipv6() { ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; }

up() {
  down_quiet
  mkdir -p "$RUN"
  for n in $CLI1 $CLI2 $GW $INET; do ip netns add "$n"; ip -n "$n" link set lo up; quiet_ipv6 "$n"; done
  ip link add c1 netns "$CLI1" type veth peer name in1 netns "$GW"
  ip link add c2 netns "$CLI2" type veth peer name in2 netns "$GW"
  ip link add out0 netns "$GW" type veth peer name i0 netns "$INET"
  ip -n "$CLI1" addr add 10.10.1.10/24 dev c1; ip -n "$CLI1" link set c1 up
  ip -n "$CLI1" route add default via 10.10.1.1
  ip -n "$CLI2" addr add 10.10.2.10/24 dev c2; ip -n "$CLI2" link set c2 up
  ip -n "$CLI2" route add default via 10.10.2.1
  # natgw owns the gateway's addresses: the kernel there has none and forwards nothing.
  ip netns exec "$GW" sysctl -qw net.ipv4.ip_forward=0
  for d in in1 in2 out0; do ip -n "$GW" link set "$d" up; done
  ip -n "$INET" addr add 198.51.100.1/24 dev i0; ip -n "$INET" link set i0 up
  ip -n "$INET" addr add 203.0.113.80/32 dev lo
  ip -n "$INET" addr add 203.0.113.7/32 dev lo
  ip netns exec "$INET" sysctl -qw net.ipv4.ip_forward=1
  start_servers
  "$ROOT/scripts/collector.sh" start "$RUN/otel" "$GW"
  [ "${1:-}" = --no-start ] || start
}

start_servers() {
  cat > "$RUN/nginx.conf" <<EOF
worker_processes 1;
pid $RUN/nginx.pid;
error_log $RUN/nginx.err;
events { worker_connections 4096; }
http {
  access_log $RUN/nginx.access.log;
  client_max_body_size 64m;
  server {
    listen 203.0.113.80:80 backlog=4096 reuseport;
    location = /ip { return 200 "\$remote_addr:\$remote_port\n"; }
    location /upload { client_body_in_file_only off; client_body_buffer_size 64m; return 200 "got \$content_length\n"; }
    location / { root $RUN/www; }
  }
}
EOF
  mkdir -p "$RUN/www"
  [ -f "$RUN/www/10M.bin" ] || head -c 10485760 /dev/urandom > "$RUN/www/10M.bin"
  ip netns exec "$INET" nginx -c "$RUN/nginx.conf"
  ip netns exec "$INET" python3 "$HERE/udp_echo.py" 203.0.113.7 7 "$RUN/udp_echo.log" >/dev/null 2>&1 &
  echo $! > "$RUN/udp_echo.pid"
}

start() {
  [ -x "$BIN" ] || die "no natgw binary at $BIN (build it: cargo build --release)"
  ip netns exec "$GW" "$BIN" run --config "$CONFIG" > "$RUN/natgw.log" 2>&1 &
  echo $! > "$RUN/natgw.pid"
  local sock
  sock=$(awk -F'"' '/^socket/{print $2}' "$CONFIG")
  for _ in $(seq 50); do
    [ -S "$sock" ] && { sleep 0.3; return 0; }
    kill -0 "$(cat "$RUN/natgw.pid")" 2>/dev/null || { cat "$RUN/natgw.log" >&2; die "natgw exited"; }
    sleep 0.1
  done
  cat "$RUN/natgw.log" >&2; die "natgw did not open its admin socket"
}

stop() {
  if [ -f "$RUN/natgw.pid" ]; then
    local pid; pid=$(cat "$RUN/natgw.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/natgw.pid"
  fi
}

down_quiet() {
  stop
  "$ROOT/scripts/collector.sh" stop "$RUN/otel" >/dev/null 2>&1 || true
  [ -f "$RUN/nginx.pid" ] && kill "$(cat "$RUN/nginx.pid")" 2>/dev/null || true
  [ -f "$RUN/udp_echo.pid" ] && kill "$(cat "$RUN/udp_echo.pid")" 2>/dev/null || true
  for n in $CLI1 $CLI2 $GW $INET; do
    # Anything still running in a namespace (test helpers) goes with it.
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$RUN"
}

case "${1:-}" in
  up) up "${2:-}";;
  start) start;;
  stop) stop;;
  down) down_quiet;;
  *) sed -n 2,20p "$0"; exit 1;;
esac
