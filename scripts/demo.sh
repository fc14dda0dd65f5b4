#!/bin/bash
# The demo: installs what is missing, builds natgw, builds the demo network in namespaces
# (examples/demo/topology.sh), shows real traffic through the gateway, then cleans up.
# Set KEEP=1 to leave the demo running (remove it with: examples/demo/topology.sh down).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh"
TOPO=$ROOT/examples/demo/topology.sh
NATGW=$ROOT/target/release/natgw
# The CLI finds the gateway by --socket, the admin.socket of --config, or $NATGW_SOCKET.
export NATGW_SOCKET=/run/natgw-demo/admin.sock
[ "${KEEP:-0}" = 1 ] || trap '"$TOPO" down; echo "demo: cleaned up (namespaces and processes removed)"' EXIT
"$TOPO" up
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$*"; "$@"; }

run ip netns exec natgw-cli1 curl -s http://203.0.113.80/ip
run ip netns exec natgw-cli2 curl -s http://203.0.113.80/ip
step "echo hello | ip netns exec natgw-cli1 socat -t 2 - UDP4:203.0.113.7:7"
echo "hello from cli1" | ip netns exec natgw-cli1 socat -t 2 - UDP4:203.0.113.7:7
run ip netns exec natgw-cli1 ping -c 3 -i 0.2 203.0.113.80
run ip netns exec natgw-cli1 tracepath -n -m 4 203.0.113.80
step "ip netns exec natgw-cli1 curl -o /dev/null http://203.0.113.80/10M.bin"
ip netns exec natgw-cli1 curl -s -o /dev/null -w "downloaded %{size_download} bytes at %{speed_download} bytes/s\n" http://203.0.113.80/10M.bin
step "unsolicited from the internet: ip netns exec natgw-inet ping -c 2 -W 1 10.10.1.10 (no route: never reaches a client)"
ip netns exec natgw-inet ping -c 2 -W 1 10.10.1.10 || true
step "Wasm policies: the egress allow-list refuses port 8080 (curl sees a RST at once)"
ip netns exec natgw-cli1 curl -s -m 3 http://203.0.113.80:8080/ || echo "curl: exit $? (connection refused by natgw's egress policy)"
step "each subnet leaves from its own pool (subnet-port-pools): pool-a 198.51.100.10, pool-b 198.51.100.11 ports 20000-39999"
echo "cli1 (10.10.1.0/24) seen as $(ip netns exec natgw-cli1 curl -s http://203.0.113.80/ip)"
echo "cli2 (10.10.2.0/24) seen as $(ip netns exec natgw-cli2 curl -s http://203.0.113.80/ip)"
run "$NATGW" policy list
step "hot swap: allow-list variant B (rejects 8081) replaces A on the running gateway"
"$NATGW" policy swap --hook egress "$ROOT/target/policies/egress_allowlist.wasm" \
  --config "$ROOT/examples/demo/policies/egress-allowlist-b.toml"
step "the same allow-list written in Go, C, JavaScript and Python (examples/policies/), each swapped in on the running gateway"
for lang in go c js py; do
  "$NATGW" policy swap --hook egress "$ROOT/target/policies/egress_allowlist_$lang.wasm" \
    --config "$ROOT/examples/demo/policies/egress-allowlist-b.toml"
  printf '  new connection to 8081 (B rejects it): '
  ip netns exec natgw-cli1 curl -s -m 3 http://203.0.113.80:8081/ >/dev/null && echo "answered" || echo "refused (curl exit $?)"
done
step "a policy that is not for this hook is refused, and the old one keeps serving"
"$NATGW" policy swap --hook egress "$ROOT/target/policies/flow_log_filter.wasm" || true
"$NATGW" policy swap --hook egress "$ROOT/target/policies/egress_allowlist.wasm" \
  --config "$ROOT/examples/demo/policies/egress-allowlist.toml" >/dev/null
step "natgw flows --follow: flow records as they are exported (a refused and a closed connection)"
"$NATGW" flows --follow > /run/natgw-demo/follow.jsonl &
follow=$!
sleep 0.3
ip netns exec natgw-cli1 curl -s -m 3 http://203.0.113.80:8080/ >/dev/null || true
ip netns exec natgw-cli2 curl -s -m 3 -o /dev/null http://203.0.113.80/ip
sleep 3.5
kill $follow 2>/dev/null || true
python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print("  %-6s %-8s %s %s:%s -> %s:%s via %s:%s bytes %s" % (r["natgw.flow.action"], r["natgw.flow.end_reason"], r["network.transport"],
          r.get("source.address"), r.get("source.port"), r["destination.address"], r["destination.port"],
          r.get("natgw.nat.source.address", "-"), r.get("natgw.nat.source.port", "-"), r.get("natgw.flow.bytes")))' /run/natgw-demo/follow.jsonl || true
step "the same records at the OpenTelemetry Collector (OTLP/gRPC), /run/natgw-demo/otel/logs.jsonl"
python3 -c 'import json,sys
n = 0
for l in open(sys.argv[1]):
    for rl in json.loads(l)["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            n += len(sl["logRecords"])
            last = sl["logRecords"][-1]
print("  %d flow records received; the last: %s" % (n, {a["key"]: list(a["value"].values())[0] for a in last["attributes"]}))' /run/natgw-demo/otel/logs.jsonl || echo "  (none yet)"
step "ip netns exec natgw-gw curl -s http://127.0.0.1:9108/metrics (Prometheus; loopback of the gateway namespace)"
ip netns exec natgw-gw curl -s http://127.0.0.1:9108/metrics | grep -E '^natgw_(ActiveConnectionCount|BytesOutToDestination_total|ConnectionEstablishedCount_total|OtlpRecordsSent_total|PacketsDropCount_total\{reason="policy-rejected"\}) '
run "$NATGW" flows
run "$NATGW" flows --src 10.10.2.0/24 --proto tcp
run "$NATGW" stats
run "$NATGW" status
if [ "${KEEP:-0}" = 1 ]; then
  step "the demo gateway keeps running; talk to it with"
  echo "  $NATGW status --config $ROOT/examples/demo/natgw.toml"
  echo "  (or: export NATGW_SOCKET=$NATGW_SOCKET; $NATGW flows --proto tcp)"
  step "the flow log so far (written as flows end): /run/natgw-demo/flows.jsonl"
  head -n 3 /run/natgw-demo/flows.jsonl 2>/dev/null || true
else
  step "the flow log (flow-log-filter: inside addresses redacted to /24) is written as flows end; stopping ends them all"
  "$TOPO" stop
  head -n 3 /run/natgw-demo/flows.jsonl
fi
