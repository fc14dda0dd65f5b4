#!/bin/bash
# A gateway pair on the demo network: the demo's namespaces (examples/demo/topology.sh)
# with a second gateway namespace beside the first, both on the same inside and outside
# segments (a bridge in each client namespace and in the internet namespace), joined by a
# dedicated sync link, natgw with an [ha] section in each, and keepalived (the shipped
# examples/ha/keepalived.conf) electing which one is active.
#
#   natgw-cli1 [br0: c1, c1b] ──in1── natgw-gw  (node A) ──out0── [br0: i0, i0b] natgw-inet
#                              └─in1── natgw-gwb (node B) ──out0──┘
#   (natgw-cli2 likewise on in2)   A sync0 10.99.0.1/24 ── B sync0 10.99.0.2/24
#
# usage: topology.sh up      build it, start both nodes and keepalived beside each
#        topology.sh status  each node's role (natgw status)
#        topology.sh down    stop everything and delete the namespaces
# Then try: kill -9 the active node's natgw (its pid is in $RUN/natgw-a.pid): keepalived
# promotes the other within about 100 ms and every connection carries on.
# env: NATGW_PREFIX (default natgw), NATGW_BIN, NATGW_RUN (default /run/$NATGW_PREFIX-ha)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
P=${NATGW_PREFIX:-natgw}
RUN=${NATGW_RUN:-/run/$P-ha}
BIN=${NATGW_BIN:-$ROOT/target/release/natgw}
CLI1=$P-cli1 CLI2=$P-cli2 GW=$P-gw GWB=$P-gwb INET=$P-inet
KEY=${NATGW_HA_KEY:-natgw-demo-pair-psk-change-me}
DEMO=(env NATGW_PREFIX="$P" NATGW_RUN="$RUN/demo" NATGW_BIN="$BIN" "$ROOT/examples/demo/topology.sh")

die() { echo "ha/topology.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
command -v keepalived >/dev/null || die "keepalived is not installed (scripts/setup-tests.sh installs it)"

# The demo config as node $1 (a or b): absolute policy paths, this node's admin socket and
# flow log, two workers (both nodes must agree), the [ha] section.
node_config() {
  local tag=$1 me=$2 peer=$3
  sed -e "s|\"\.\./\.\./target/|\"$ROOT/target/|" \
      -e "s|/run/natgw-demo/admin.sock|$RUN/admin-$tag.sock|" \
      -e "s|/run/natgw-demo/flows.jsonl|$RUN/flows-$tag.jsonl|" \
      -e "s|^config = \"policies/|config = \"$ROOT/examples/demo/policies/|" \
      -e "s|^workers = 0 .*|workers = 2|" "$ROOT/examples/demo/natgw.toml" |
    if [ "$tag" = b ]; then
      # Only node A's namespace runs the collector and a metrics port.
      awk '/^\[/{skip = ($0 ~ /^\[otlp/ || $0 == "[metrics]")} !skip'
    else cat; fi > "$RUN/natgw-$tag.toml"
  cat >> "$RUN/natgw-$tag.toml" <<CONF

[ha]
interface = "sync0"
address = "$me:7801"
peer = "$peer:7801"
key = "$KEY"
CONF
}

keepalived_config() {
  local tag=$1
  sed -e "s|/usr/sbin/natgw|$BIN|" \
      -e "s|/etc/natgw/natgw.toml|$RUN/natgw-$tag.toml|" \
      -e "s|/usr/lib/natgw/ha/notify|$HERE/notify|" \
      -e "s|/run/natgw/admin.sock|$RUN/admin-$tag.sock|" \
      -e "s|/run/natgw/ha-up|$RUN/ha-up-$tag|" "$HERE/keepalived.conf" |
    if [ "$tag" = b ]; then
      sed -e 's/unicast_src_ip 10.99.0.1/unicast_src_ip 10.99.0.X/' -e 's/^        10.99.0.2$/        10.99.0.1/' \
          -e 's/unicast_src_ip 10.99.0.X/unicast_src_ip 10.99.0.2/' -e 's/priority 150/priority 100/'
    else cat; fi > "$RUN/keepalived-$tag.conf"
}

start_node() {
  local tag=$1 ns=$2
  ip netns exec "$ns" "$BIN" run --config "$RUN/natgw-$tag.toml" > "$RUN/natgw-$tag.log" 2>&1 &
  echo $! > "$RUN/natgw-$tag.pid"
  for _ in $(seq 100); do
    [ -S "$RUN/admin-$tag.sock" ] && break
    kill -0 "$(cat "$RUN/natgw-$tag.pid")" 2>/dev/null || { cat "$RUN/natgw-$tag.log" >&2; die "natgw ($tag) exited"; }
    sleep 0.1
  done
  [ -S "$RUN/admin-$tag.sock" ] || die "natgw ($tag) did not open its admin socket"
  ip netns exec "$ns" "$BIN" ha watch --socket "$RUN/admin-$tag.sock" --track-file "$RUN/ha-up-$tag" \
    > "$RUN/watch-$tag.log" 2>&1 &
  echo $! > "$RUN/watch-$tag.pid"
  keepalived_config "$tag"
  ip netns exec "$ns" keepalived --dont-fork --log-console --vrrp --no-syslog -f "$RUN/keepalived-$tag.conf" \
    -p "$RUN/keepalived-$tag.pid" -r "$RUN/keepalived-$tag-vrrp.pid" > "$RUN/keepalived-$tag.log" 2>&1 &
  echo $! > "$RUN/keepalived-$tag.daemon"
}

up() {
  down_quiet
  mkdir -p "$RUN"
  "${DEMO[@]}" up --no-start
  ip netns add "$GWB"
  ip -n "$GWB" link set lo up
  ip netns exec "$GWB" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv4.ip_forward=0
  # Each segment becomes a bridge holding the link to A and a new one to B.
  for seg in "$CLI1 c1 c1b in1 10.10.1.10/24 10.10.1.1" "$CLI2 c2 c2b in2 10.10.2.10/24 10.10.2.1" \
             "$INET i0 i0b out0 198.51.100.1/24 -"; do
    read -r ns old new gwif addr via <<< "$seg"
    ip link add "$new" netns "$ns" type veth peer name "$gwif" netns "$GWB"
    ip -n "$ns" link add br0 type bridge
    ip -n "$ns" addr del "$addr" dev "$old"
    ip -n "$ns" link set "$old" master br0
    ip -n "$ns" link set "$new" master br0
    ip -n "$ns" addr add "$addr" dev br0
    ip -n "$ns" link set br0 up
    ip -n "$ns" link set "$new" up
    [ "$via" = - ] || ip -n "$ns" route replace default via "$via"
    ip -n "$GWB" link set "$gwif" up
  done
  ip link add sync0 netns "$GW" type veth peer name sync0 netns "$GWB"
  ip -n "$GW" addr add 10.99.0.1/24 dev sync0; ip -n "$GW" link set sync0 up
  ip -n "$GWB" addr add 10.99.0.2/24 dev sync0; ip -n "$GWB" link set sync0 up
  node_config a 10.99.0.1 10.99.0.2
  node_config b 10.99.0.2 10.99.0.1
  start_node a "$GW"
  start_node b "$GWB"
  for _ in $(seq 50); do
    role a | grep -q active && break
    sleep 0.1
  done
  status
}

role() { "$BIN" status --socket "$RUN/admin-$1.sock" 2>/dev/null | grep '^ha:' || echo "ha: not answering"; }

status() {
  echo "node A ($GW): $(role a)"
  echo "node B ($GWB): $(role b)"
}

down_quiet() {
  for f in "$RUN"/keepalived-?.daemon "$RUN"/watch-?.pid "$RUN"/natgw-?.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  sleep 0.3
  ip netns del "$GWB" 2>/dev/null || true
  "${DEMO[@]}" down >/dev/null 2>&1 || true
}

case "${1:-}" in
  up) up;;
  status) status;;
  down) down_quiet; echo "ha/topology.sh: down";;
  *) die "usage: topology.sh up | status | down";;
esac
