#!/bin/bash
# Side-by-side benchmark: natgw against the kernel's own NAT (nftables masquerade), on one
# topology, in one run, modes interleaved per repetition so background load hits all alike.
#
#   ns nb-cli  c0 10.77.0.2/24, default via 10.77.0.1
#      | veth (default offloads: TSO/GSO/checksum offload on)
#   ns nb-gw   gi | go          kernel: gi 10.77.0.1/24, go 198.51.100.1/24, nft masquerade
#      | veth                   natgw:  no kernel addresses, ip_forward=0; natgw owns both
#   ns nb-srv  s0 198.51.100.2/24 (no route back to 10.77.0.0/24: only NAT gets replies home)
#
# Modes: kernel, natgw1 (1 worker), natgw2 (2 workers: one per core here), natgw1poll (1 worker
# spinning 200 µs after traffic before it sleeps: dataplane.busy_poll_us), natgw2pol (natgw2
# with all three Wasm policies: egress allow-list, subnet port pools, flow-log filter writing
# a flow log), natgw2log (natgw2 with flow records on: a file and OTLP/gRPC to an
# OpenTelemetry Collector in the gateway namespace, on the same two cores; natgw2 has them off),
# natgw2file (flow records on, written to a file only: natgw's own cost without a collector).
# Tests: tcp1 tcp4 (iperf3, Gbit/s), udp (trafgen 64-byte UDP, pps arriving at srv),
#        cps (wrk, Connection: close, nginx; connections/s), lat (sockperf ping-pong with
#        /dev/cpu_dma_latency=0 held so idle vCPUs poll; RTT p50/p99 µs),
#        swap (natgw2pol only: 50 egress policy swaps between two configs of one component;
#        median ms from the swap request to every worker serving the new generation:
#        compile (from cache) + validate + init per worker + publish + switch).
# After the table: the cost of one policy call (natgw policy bench) and the records/s the
# OTLP exporter delivers to a local collector (natgw otlp bench; OTLP=0 skips it).
# Before/after: NATGW_BASE=/path/to/another/natgw adds modes base1 and base2 (natgw1 and
# natgw2 run with that binary), and the table gets natgw1/base1 and natgw2/base2 columns:
# the cost of a change on every row, in one run.
# usage: scripts/bench.sh   env: REPS=3 DUR=10 MODES="kernel natgw1 natgw2" TESTS="tcp1 tcp4 udp cps lat"
#        OUT=bench-results.txt (raw lines, appended), then a table of medians and ratios.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}; DUR=${DUR:-10}
MODES=${MODES:-kernel natgw1 natgw2}
TESTS=${TESTS:-tcp1 tcp4 udp cps lat}
OUT=${OUT:-$ROOT/bench-results.txt}
NATGW=$ROOT/target/release/natgw
W=$(mktemp -d /tmp/natgw-bench.XXXXXX)
SRV=198.51.100.2
[ "$(id -u)" = 0 ] || { echo "bench: needs root"; exit 1; }
[ -x "$NATGW" ] || { echo "bench: build natgw first (scripts/setup.sh)"; exit 1; }
case " $MODES " in *" base"[12]" "*) [ -x "${NATGW_BASE:-}" ] || { echo "bench: modes base1/base2 need NATGW_BASE=/path/to/natgw"; exit 1; };; esac
for t in iperf3 wrk nginx sockperf trafgen nft; do command -v $t >/dev/null || { echo "bench: $t missing (scripts/setup.sh)"; exit 1; }; done

NPID=
down() {
  [ -n "$NPID" ] && { kill $NPID 2>/dev/null; wait $NPID 2>/dev/null; NPID=; }
  for n in nb-cli nb-gw nb-srv; do
    for p in $(ip netns pids $n 2>/dev/null); do kill -9 $p 2>/dev/null; done
    ip netns del $n 2>/dev/null
  done
}
trap 'down; rm -rf "$W"' EXIT

up() {
  down
  for n in nb-cli nb-gw nb-srv; do
    ip netns add $n; ip -n $n link set lo up
    ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip link add c0 netns nb-cli type veth peer name gi netns nb-gw
  ip link add go netns nb-gw type veth peer name s0 netns nb-srv
  ip -n nb-cli addr add 10.77.0.2/24 dev c0; ip -n nb-cli link set c0 up
  ip -n nb-gw link set gi up; ip -n nb-gw link set go up
  ip -n nb-srv addr add $SRV/24 dev s0; ip -n nb-srv link set s0 up
  ip -n nb-cli route add default via 10.77.0.1
  cat > "$W/natgw1.toml" <<EOF
[[inside]]
interface = "gi"
addresses = ["10.77.0.1/24"]
[outside]
interface = "go"
addresses = ["198.51.100.1"]
subnet = "198.51.100.0/24"
gateway = "$SRV"
[dataplane]
workers = 1
[admin]
socket = "$W/admin.sock"
EOF
  sed 's/^workers = 1/workers = 2/' "$W/natgw1.toml" > "$W/natgw2-base.toml"
  # Flow records off in the plain modes; natgw2log has them on, to a file and over OTLP to
  # a collector in the gateway namespace (sharing the same two cores).
  printf '[flow_log]\nenabled = false\n' | cat "$W/natgw2-base.toml" - > "$W/natgw2.toml"
  { cat "$W/natgw2-base.toml"; printf '[flow_log]\nenabled = true\nfile = "%s"\n[otlp]\nendpoint = "http://127.0.0.1:4317"\nmetrics_interval_ms = 5000\n' "$W/flows-log.jsonl"; } > "$W/natgw2log.toml"
  { cat "$W/natgw2-base.toml"; printf '[flow_log]\nenabled = true\nfile = "%s"\n' "$W/flows-file.jsonl"; } > "$W/natgw2file.toml"
  printf '[flow_log]\nenabled = false\n' | cat "$W/natgw1.toml" - > "$W/natgw1-off.toml" && mv "$W/natgw1-off.toml" "$W/natgw1.toml"
  sed 's/^workers = 1/workers = 1\nbusy_poll_us = 200/' "$W/natgw1.toml" > "$W/natgw1poll.toml"
  # natgw2 with every policy hook in use.
  cat > "$W/egress-a.toml" <<EOF
default = "reject"
[[rule]]
action = "allow"
dst = "$SRV"
[[rule]]
action = "allow"
protocol = "icmp"
EOF
  sed 's/^default = "reject"/default = "deny"/' "$W/egress-a.toml" > "$W/egress-b.toml"
  printf '[[subnet]]\ncidr = "10.77.0.0/24"\npool = "bench"\nport_budget = 60000\n' > "$W/pools.toml"
  printf 'redact_inside_prefix = 24\n[attributes]\nbench = "yes"\n' > "$W/flowlog.toml"
  { cat "$W/natgw2-base.toml"; cat <<EOF
[[pool]]
name = "bench"
addresses = ["198.51.100.1"]
[policy]
cache_dir = "$W/cache"
[policy.egress]
component = "$ROOT/target/policies/egress_allowlist.wasm"
config = "$W/egress-a.toml"
[policy.port_pool]
component = "$ROOT/target/policies/subnet_port_pools.wasm"
config = "$W/pools.toml"
[policy.flow_log]
component = "$ROOT/target/policies/flow_log_filter.wasm"
config = "$W/flowlog.toml"
[flow_log]
file = "$W/flows.jsonl"
EOF
  } > "$W/natgw2pol.toml"
}

setmode() {
  [ -n "$NPID" ] && { kill $NPID 2>/dev/null; wait $NPID 2>/dev/null; NPID=; }
  ip netns exec nb-gw nft flush ruleset 2>/dev/null
  ip -n nb-gw addr flush dev gi; ip -n nb-gw addr flush dev go
  ip netns exec nb-gw conntrack -F >/dev/null 2>&1
  ip -n nb-cli neigh flush dev c0; ip -n nb-srv neigh flush dev s0
  case $1 in
    kernel)
      ip -n nb-gw addr add 10.77.0.1/24 dev gi; ip -n nb-gw addr add 198.51.100.1/24 dev go
      ip netns exec nb-gw sysctl -qw net.ipv4.ip_forward=1
      ip netns exec nb-gw nft -f - <<'EOF'
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "go" masquerade
  }
}
EOF
      ;;
    natgw1|natgw2|natgw1poll|natgw2pol|natgw2log|natgw2file|base1|base2)
      ip netns exec nb-gw sysctl -qw net.ipv4.ip_forward=0
      local bin=$NATGW cfg=$1
      case $1 in base1) bin=$NATGW_BASE cfg=natgw1;; base2) bin=$NATGW_BASE cfg=natgw2;; esac
      if [ "$1" = natgw2log ]; then
        "$ROOT/scripts/collector.sh" stop "$W/otel"; rm -f "$W/otel/logs.jsonl" "$W/otel/metrics.jsonl"
        "$ROOT/scripts/collector.sh" start "$W/otel" nb-gw >/dev/null
      fi
      ip netns exec nb-gw "$bin" run --config "$W/$cfg.toml" > "$W/$1.log" 2>&1 &
      NPID=$!
      for _ in $(seq 50); do [ -S "$W/admin.sock" ] && break; sleep 0.1; done
      ;;
  esac
  sleep 1.5
  ip netns exec nb-cli ping -c 1 -W 2 $SRV >/dev/null || echo "bench: warning: $1 does not pass ping" >&2
}

servers_up() {
  ip netns exec nb-srv iperf3 -s -B $SRV -D -I "$W/iperf3.pid" >/dev/null
  cat > "$W/nginx.conf" <<EOF
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen $SRV:80 backlog=4096 reuseport; location / { return 200 "ok\n"; } } }
EOF
  ip netns exec nb-srv nginx -c "$W/nginx.conf"
  ip netns exec nb-srv sockperf sr -i $SRV -p 11111 >/dev/null 2>&1 &
  ip netns exec nb-cli sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
  ip netns exec nb-srv sysctl -qw net.core.somaxconn=4096
  sleep 1
}

waitload() {  # up to 30 s for a quiet machine
  for _ in $(seq 6); do awk '{exit !($1 < 0.8)}' /proc/loadavg && return; sleep 5; done
}

t_tcp() {
  ip netns exec nb-cli iperf3 -c $SRV -t $DUR -P $1 -J > "$W/tcp.json" 2>/dev/null
  python3 -c "import json;d=json.load(open('$W/tcp.json'));print('%.2f'%(d['end']['sum_received']['bits_per_second']/1e9))" 2>/dev/null || echo 0
}
t_udp() {
  local gimac c0mac
  gimac=$(ip -n nb-gw -br link show gi | awk '{print $3}'); c0mac=$(ip -n nb-cli -br link show c0 | awk '{print $3}')
  cat > "$W/udp.trafgen" <<EOF
{ eth(da=$gimac, sa=$c0mac, type=0x0800), ipv4(saddr=10.77.0.2, daddr=$SRV, ttl=64), udp(sport=4000, dport=9), fill(0x41, 64) }
EOF
  rxp() { ip netns exec nb-srv cat /sys/class/net/s0/statistics/rx_packets; }
  ip netns exec nb-cli timeout -s INT $((DUR + 3)) trafgen --dev c0 --conf "$W/udp.trafgen" --cpus 1 -q >/dev/null 2>&1 &
  local tg=$!; sleep 2
  local r0 r1; r0=$(rxp); sleep $DUR; r1=$(rxp)
  wait $tg 2>/dev/null
  echo $(( (r1 - r0) / DUR ))
}
t_cps() {
  ip netns exec nb-cli wrk -t1 -c32 -d${DUR}s -H 'Connection: close' http://$SRV/ > "$W/wrk.txt" 2>&1
  awk '/Requests\/sec/{print $2}' "$W/wrk.txt"
}
t_swap() {
  [ "$1" = natgw2pol ] || { echo "-"; return; }
  local i ms=()
  for i in $(seq 50); do
    local cfg=$W/egress-a.toml; [ $((i % 2)) = 1 ] && cfg=$W/egress-b.toml
    ms+=("$("$NATGW" policy swap --socket "$W/admin.sock" --hook egress "$ROOT/target/policies/egress_allowlist.wasm" \
      --config "$cfg" | sed -n 's/.*validated in \([0-9.]*\) ms; serving on every caller in \([0-9.]*\) ms.*/\1 \2/p' \
      | awk '{printf "%.2f", $1 + $2}')")
  done
  printf '%s\n' "${ms[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%s max=%s\n", a[int((NR+1)/2)], a[NR]}'
}
t_lat() {
  timeout $((DUR + 8)) python3 -c "import os,struct,time;f=os.open('/dev/cpu_dma_latency',os.O_WRONLY);os.write(f,struct.pack('i',0));time.sleep(1e6)" &
  local h=$!; sleep 0.5
  ip netns exec nb-cli sockperf pp -i $SRV -p 11111 -t $DUR -m 64 --full-rtt > "$W/lat.txt" 2>&1
  [ -n "${BENCH_DEBUG:-}" ] && tail -5 "$W/lat.txt" >&2
  kill $h 2>/dev/null; wait $h 2>/dev/null
  echo "$(awk '/percentile 50.000/{print $NF}' "$W/lat.txt") p99=$(awk '/percentile 99.000/{print $NF}' "$W/lat.txt")"
}

up
servers_up
echo "# natgw bench $(date -u +%FT%TZ) $(nproc) cpus, kernel $(uname -r), REPS=$REPS DUR=$DUR" | tee -a "$OUT"
RUNID=$(date +%s)
for t in $TESTS; do
  for r in $(seq $REPS); do
    for m in $MODES; do
      waitload
      setmode $m
      case $t in
        tcp1) v=$(t_tcp 1);; tcp4) v=$(t_tcp 4);; udp) v=$(t_udp);; cps) v=$(t_cps);; lat) v=$(t_lat);;
        swap) v=$(t_swap $m);;
      esac
      echo "$RUNID $m $t $r $v load1=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT"
    done
  done
done
[ -n "$NPID" ] && { kill $NPID; wait $NPID 2>/dev/null; NPID=; }

python3 - "$OUT" "$RUNID" <<'EOF'
import sys, statistics, collections
path, run = sys.argv[1], sys.argv[2]
vals = collections.defaultdict(list); p99 = collections.defaultdict(list)
for line in open(path):
    f = line.split()
    if len(f) < 5 or f[0] != run: continue
    try: v = float(f[4])
    except ValueError: continue
    vals[(f[2], f[1])].append(v)
    for x in f[5:]:
        if x.startswith("p99="): p99[(f[2], f[1])].append(float(x[4:]))
tests = ["tcp1", "tcp4", "udp", "cps", "lat", "swap"]
names = {"tcp1": "TCP 1 stream, Gbit/s", "tcp4": "TCP 4 streams, Gbit/s", "udp": "UDP 64 B, pps at server",
         "cps": "new TCP conn/s (wrk, nginx)", "lat": "RTT p50 µs (p99)",
         "swap": "policy swap to every worker, median ms"}
modes = [m for m in ["kernel", "base1", "base2", "natgw1", "natgw2", "natgw1poll", "natgw2pol", "natgw2file", "natgw2log"] if any(k[1] == m for k in vals)]
extra = [m for m in ("natgw2pol", "natgw2file", "natgw2log") if "natgw2" in modes and m in modes]
# Before/after pairs: (this build, the base build).
pairs = [(m, b) for m, b in (("natgw1", "base1"), ("natgw2", "base2")) if m in modes and b in modes]
print("\n| test | " + " | ".join(modes) + " | " + " | ".join(f"{m}/kernel" for m in modes if m != "kernel")
      + "".join(f" | {m}/natgw2" for m in extra) + "".join(f" | {m}/{b}" for m, b in pairs) + " |")
print("|---" * (1 + len(modes) + len(modes) - ("kernel" in modes) + len(extra) + len(pairs)) + "|")
for t in tests:
    if not any(k[0] == t for k in vals): continue
    med = {m: statistics.median(vals[(t, m)]) for m in modes if vals.get((t, m))}
    cells = []
    for m in modes:
        if m not in med: cells.append("-"); continue
        c = f"{med[m]:.2f}" if t in ("tcp1", "tcp4", "swap") else f"{med[m]:.1f}" if t == "lat" else f"{med[m]:.0f}"
        if t == "lat" and p99.get((t, m)): c += f" ({statistics.median(p99[(t, m)]):.0f})"
        cells.append(c)
    ratios = []
    for m in modes:
        if m == "kernel": continue
        if "kernel" not in med or m not in med: ratios.append("-"); continue
        ratios.append(f"{med[m] - med['kernel']:+.1f} µs" if t == "lat" else f"{med[m] / med['kernel']:.2f}x")
    for other in extra:
        if "natgw2" in med and other in med and t != "swap":
            ratios.append(f"{med[other] - med['natgw2']:+.1f} µs" if t == "lat" else f"{med[other] / med['natgw2']:.2f}x")
        else:
            ratios.append("-")
    for m, b in pairs:
        if m in med and b in med and t != "swap":
            ratios.append(f"{med[m] - med[b]:+.1f} µs" if t == "lat" else f"{med[m] / med[b]:.2f}x")
        else:
            ratios.append("-")
    print(f"| {names[t]} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
EOF
if [ -f "$ROOT/target/policies/egress_allowlist.wasm" ]; then
  echo
  echo "# cost of one policy call, through the worker's code path (natgw policy bench)"
  "$NATGW" policy bench --hook egress "$ROOT/target/policies/egress_allowlist.wasm" --config "$ROOT/examples/demo/policies/egress-allowlist.toml" | tee -a "$OUT"
  "$NATGW" policy bench --hook port-pool "$ROOT/target/policies/subnet_port_pools.wasm" --config "$ROOT/examples/demo/policies/subnet-port-pools.toml" | tee -a "$OUT"
fi
if [ "${OTLP:-1}" = 1 ]; then
  echo
  echo "# flow records/s the OTLP exporter delivers to a collector on this machine (natgw otlp bench)"
  "$ROOT/scripts/collector.sh" start "$W/otel-bench" >/dev/null
  for proto in "grpc http://127.0.0.1:4317" "http/protobuf http://127.0.0.1:4318"; do
    set -- $proto
    "$NATGW" otlp bench --protocol "$1" --endpoint "$2" --records 100000 | tee -a "$OUT"
  done
  "$ROOT/scripts/collector.sh" stop "$W/otel-bench"
fi
