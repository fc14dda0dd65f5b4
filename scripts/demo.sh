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
run "$NATGW" flows --socket "$SOCK"
run "$NATGW" stats --socket "$SOCK"
run "$NATGW" status --socket "$SOCK"
