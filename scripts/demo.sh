#!/bin/bash
# The demo: installs what is missing, builds natgw, builds the demo network in namespaces
# (examples/demo/topology.sh), shows real traffic through the gateway, then cleans up.
# Set KEEP=1 to leave the demo running (remove it with: examples/demo/topology.sh down).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh"
TOPO=$ROOT/examples/demo/topology.sh
NATGW=$ROOT/target/release/natgw
SOCK=/run/natgw-demo/admin.sock
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
run "$NATGW" policy list --socket "$SOCK"
step "hot swap: allow-list variant B (rejects 8081) replaces A on the running gateway"
"$NATGW" policy swap --socket "$SOCK" --hook egress "$ROOT/target/policies/egress_allowlist.wasm" \
  --config "$ROOT/examples/demo/policies/egress-allowlist-b.toml"
step "a policy that is not for this hook is refused, and the old one keeps serving"
"$NATGW" policy swap --socket "$SOCK" --hook egress "$ROOT/target/policies/flow_log_filter.wasm" || true
"$NATGW" policy swap --socket "$SOCK" --hook egress "$ROOT/target/policies/egress_allowlist.wasm" \
  --config "$ROOT/examples/demo/policies/egress-allowlist.toml" >/dev/null
run "$NATGW" flows --socket "$SOCK"
run "$NATGW" stats --socket "$SOCK"
run "$NATGW" status --socket "$SOCK"
if [ "${KEEP:-0}" = 1 ]; then
  step "the flow log so far (written as flows end): /run/natgw-demo/flows.jsonl"
  head -n 3 /run/natgw-demo/flows.jsonl 2>/dev/null || true
else
  step "the flow log (flow-log-filter: inside addresses redacted to /24) is written as flows end; stopping ends them all"
  "$TOPO" stop
  head -n 3 /run/natgw-demo/flows.jsonl
fi
