#!/usr/bin/env bash
# The PACKET_MMAP TX ring lever, measured (README, "The levers of issue 15"): one pinned
# thread sending 64-byte frames over a veth into a namespace, by an io_uring SEND per frame
# (natgw's worker) and by a TPACKET_V2 TX ring kicked once a batch (host/io/examples/tx_send.rs).
# Interleaved, REPS times each; the receiving stack runs on the sender's CPU, so frames a
# second are the whole cost of a sent frame. Root; builds its own namespaces and removes them.
#   sudo REPS=3 DUR=5 BATCHES="32" scripts/tx-send-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DUR=${DUR:-5}
BATCHES=${BATCHES:-32}
CPU=${CPU:-1}
cargo build --release -q -p natgw-io --example tx_send
bin=target/release/examples/tx_send
cleanup() { ip netns del ntx-a 2>/dev/null || true; ip netns del ntx-b 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add ntx-a
ip netns add ntx-b
ip link add ntxa netns ntx-a type veth peer name ntxb netns ntx-b
ip -n ntx-a addr add 10.99.0.1/24 dev ntxa
ip -n ntx-b addr add 10.99.0.2/24 dev ntxb
ip -n ntx-a link set ntxa up
ip -n ntx-b link set ntxb up
mac_b=$(ip netns exec ntx-b cat /sys/class/net/ntxb/address)
# A UDP socket on port 9 that never reads: frames go through the receiving stack to a full
# socket queue (counted as receive-buffer errors), as a busy receiver's would.
ip netns exec ntx-b python3 -c 'import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("10.99.0.2",9)); time.sleep(86400)' &
sink=$!
trap 'kill $sink 2>/dev/null || true; cleanup' EXIT
sleep 0.3
echo "# tx-send-bench $(date -u +%FT%TZ) $(nproc) cpus, kernel $(uname -r), REPS=$REPS DUR=$DUR CPU=$CPU"
for rep in $(seq "$REPS"); do
  for batch in $BATCHES; do
    for method in uring ring; do
      rx0=$(ip netns exec ntx-b cat /sys/class/net/ntxb/statistics/rx_packets)
      line=$(ip netns exec ntx-a taskset -c "$CPU" "$bin" ntxa "$mac_b" "$DUR" "$method" "$batch")
      rx1=$(ip netns exec ntx-b cat /sys/class/net/ntxb/statistics/rx_packets)
      echo "rep=$rep $line received_per_s=$(( (rx1 - rx0) / DUR ))"
    done
  done
done
