#!/bin/bash
# Side-by-side benchmark: natgw against the kernel's own NAT (nftables masquerade), on one
# topology, in one run, modes interleaved per repetition so background load hits all alike.
#
#   ns nb-cli  c0 10.77.0.2/16, default via 10.77.0.1
#      | veth (default offloads: TSO/GSO/checksum offload on)
#   ns nb-gw   gi | go          kernel: gi 10.77.0.1/16, go 198.51.100.1/24, nft masquerade
#      | veth                   natgw:  no kernel addresses, ip_forward=0; natgw owns both
#   ns nb-srv  s0 198.51.100.2/24 (a route back to 10.77.0.0/16 only in mode fwd: otherwise
#              only NAT gets replies home)
#
# Modes: fwd (plain kernel forwarding, no NAT and no conntrack: the ceiling), kernel (nftables
# masquerade), natgw1 (1 worker), natgw2 (2 workers: one per core here), natgw1poll (1 worker
# spinning 200 µs after traffic before it sleeps: dataplane.busy_poll_us), natgw2poll (2
# workers spinning 50 µs), natgw2ring (natgw2 reading PACKET_MMAP receive rings:
# dataplane.receive = "ring"), natgw2pol (natgw2
# with all three Wasm policies: egress allow-list, subnet port pools, flow-log filter writing
# a flow log), natgw2log (natgw2 with flow records on: a file and OTLP/gRPC to an
# OpenTelemetry Collector in the gateway namespace, on the same two cores; natgw2 has them off),
# natgw2file (flow records on, written to a file only: natgw's own cost without a collector),
# natgw2egr (natgw2 with the egress allow-list allowing the server by address) and
# natgw2names (the same allow-list allowing it by name: [dns] on, dnsmasq in nb-srv
# answering srv.bench.example, resolved by the client through natgw before each test: the
# cost of DNS name binding on new connections), xsk1 (not natgw: the AF_XDP measurement
# prototype host/io/examples/xsk_forward.rs, one thread translating with natgw's Translator
# between AF_XDP sockets in copy mode; nb-cli and nb-srv turn transmit checksum offload off
# in this mode, since an AF_XDP frame cannot carry a partial checksum; no fill test).
# Any mode with -txoff appended (kernel-txoff, natgw1-txoff) runs with the peers' offloads
# off the same way: the control for xsk1's TCP rows.
# Tests: tcp1 tcp4 (iperf3, Gbit/s), udp (trafgen 64-byte UDP, one flow, pps arriving at srv),
#        udp100k (the same from 109 978 flows: 4 999 sources in 10.77.0.0/16 × 2 source ports
#        × 11 destination ports, each flow seen again every ~0.5 s), udpmax (the highest rate
#        of 64-byte UDP, one flow, paced evenly by tests/e2e's udp_pace, that arrives with at
#        most 0.1 % lost: a binary search of 3 s trials),
#        fill (989 934 new UDP flows from 14 999 sources, sent at full speed: new flows/s
#        over the first pass, and the memory per flow at the end: natgw's resident set, the
#        kernel's slab; both get a 1.2 M-flow table; not in mode fwd),
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
# usage: scripts/bench.sh   env: REPS=3 DUR=10 MODES="fwd kernel natgw1 natgw2"
#        TESTS="tcp1 tcp4 udp udp100k udpmax fill cps lat"
#        OUT=bench-results.txt (raw lines, appended), then a table of medians and ratios.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}; DUR=${DUR:-10}
MODES=${MODES:-fwd kernel natgw1 natgw2}
TESTS=${TESTS:-tcp1 tcp4 udp udp100k udpmax fill cps lat}
OUT=${OUT:-$ROOT/bench-results.txt}
NATGW=$ROOT/target/release/natgw
W=$(mktemp -d /tmp/natgw-bench.XXXXXX)
SRV=198.51.100.2
[ "$(id -u)" = 0 ] || { echo "bench: needs root"; exit 1; }
[ -x "$NATGW" ] || { echo "bench: build natgw first (scripts/setup.sh)"; exit 1; }
case " $MODES " in *" base"[12]" "*) [ -x "${NATGW_BASE:-}" ] || { echo "bench: modes base1/base2 need NATGW_BASE=/path/to/natgw"; exit 1; };; esac
for t in iperf3 wrk nginx sockperf trafgen nft; do command -v $t >/dev/null || { echo "bench: $t missing (scripts/setup-tests.sh)"; exit 1; }; done
UDP_PACE=$ROOT/target/release/udp_pace
[ -x "$UDP_PACE" ] || (cd "$ROOT" && cargo build --release --locked -q -p natgw-e2e --bin udp_pace) || exit 1
XSK_FORWARD=$ROOT/target/release/examples/xsk_forward
case " $MODES " in *" xsk1 "*)
  command -v ethtool >/dev/null || { echo "bench: ethtool missing"; exit 1; }
  (cd "$ROOT" && cargo build --release --locked -q -p natgw-io --example xsk_forward) || exit 1;;
esac

NPID= RUNBIN= CT_MAX= CT_HASH= XSK_OFFLOADS_OFF=
down() {
  [ -n "$NPID" ] && { kill $NPID 2>/dev/null; wait $NPID 2>/dev/null; NPID=; }
  for n in nb-cli nb-gw nb-srv; do
    for p in $(ip netns pids $n 2>/dev/null); do kill -9 $p 2>/dev/null; done
    ip netns del $n 2>/dev/null
  done
}
restore_conntrack() {
  [ -n "$CT_HASH" ] && echo "$CT_HASH" > /sys/module/nf_conntrack/parameters/hashsize
  [ -n "$CT_MAX" ] && echo "$CT_MAX" > /proc/sys/net/netfilter/nf_conntrack_max
}
trap 'down; restore_conntrack; rm -rf "$W" /etc/netns/nb-cli' EXIT

up() {
  down
  for n in nb-cli nb-gw nb-srv; do
    ip netns add $n; ip -n $n link set lo up
    ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip link add c0 netns nb-cli type veth peer name gi netns nb-gw
  ip link add go netns nb-gw type veth peer name s0 netns nb-srv
  ip -n nb-cli addr add 10.77.0.2/16 dev c0; ip -n nb-cli link set c0 up
  ip -n nb-gw link set gi up; ip -n nb-gw link set go up
  ip -n nb-srv addr add $SRV/24 dev s0; ip -n nb-srv link set s0 up
  ip -n nb-cli route add default via 10.77.0.1
  cat > "$W/natgw1.toml" <<EOF
[[inside]]
interface = "gi"
addresses = ["10.77.0.1/16"]
[outside]
interface = "go"
addresses = ["198.51.100.1"]
subnet = "198.51.100.0/24"
gateway = "$SRV"
[dataplane]
workers = 1
[nat]
max_flows = 1200000
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
  sed 's/^workers = 2/workers = 2\nbusy_poll_us = 50/' "$W/natgw2.toml" > "$W/natgw2poll.toml"
  sed 's/^workers = 2/workers = 2\nreceive = "ring"/' "$W/natgw2.toml" > "$W/natgw2ring.toml"
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
  printf '[[subnet]]\ncidr = "10.77.0.0/16"\npool = "bench"\nport_budget = 60000\n' > "$W/pools.toml"
  printf 'redact_inside_prefix = 24\n[attributes]\nbench = "yes"\n' > "$W/flowlog.toml"
  # The egress allow-list by address, and by name with DNS binding on.
  printf 'default = "reject"\n[[rule]]\naction = "allow"\ndst = "%s"\n' "$SRV" > "$W/egress-addr.toml"
  printf 'default = "reject"\n[[rule]]\naction = "allow"\ndst = "%s"\nports = "53"\n[[rule]]\naction = "allow"\nhost = "srv.bench.example"\n[[rule]]\naction = "allow"\nprotocol = "icmp"\n' "$SRV" > "$W/egress-names.toml"
  for m in egr names; do
    local ecfg=$W/egress-addr.toml dns=""
    [ $m = names ] && ecfg=$W/egress-names.toml dns=$(printf '[dns]\nresolvers = ["%s"]\n' "$SRV")
    printf '[policy.egress]\ncomponent = "%s"\nconfig = "%s"\n%s\n' "$ROOT/target/policies/egress_allowlist.wasm" "$ecfg" "$dns" \
      | cat "$W/natgw2.toml" - > "$W/natgw2$m.toml"
  done
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
  ip -n nb-srv route del 10.77.0.0/16 2>/dev/null
  # Mode NAME-txoff: mode NAME with the peers' transmit checksum offload off (and with it
  # TSO and scatter-gather), as mode xsk1 needs: the control for xsk1's TCP rows.
  local mode=${1%-txoff}
  if [ -n "$XSK_OFFLOADS_OFF" ]; then
    ip netns exec nb-cli ethtool -K c0 tx on >/dev/null; ip netns exec nb-srv ethtool -K s0 tx on >/dev/null
    ip -n nb-cli neigh del 10.77.0.1 dev c0 2>/dev/null; ip -n nb-srv neigh del 198.51.100.1 dev s0 2>/dev/null
    XSK_OFFLOADS_OFF=
  fi
  if [ "$mode" = xsk1 ] || [ "$mode" != "$1" ]; then
    ip netns exec nb-cli ethtool -K c0 tx off >/dev/null; ip netns exec nb-srv ethtool -K s0 tx off >/dev/null
    XSK_OFFLOADS_OFF=1
  fi
  case $mode in
    xsk1)
      ip netns exec nb-gw sysctl -qw net.ipv4.ip_forward=0
      local mac_c0 mac_s0 mac_gi mac_go
      mac_c0=$(ip -n nb-cli -br link show c0 | awk '{print $3}'); mac_s0=$(ip -n nb-srv -br link show s0 | awk '{print $3}')
      mac_gi=$(ip -n nb-gw -br link show gi | awk '{print $3}'); mac_go=$(ip -n nb-gw -br link show go | awk '{print $3}')
      # The prototype answers no ARP.
      ip -n nb-cli neigh replace 10.77.0.1 lladdr "$mac_gi" dev c0; ip -n nb-srv neigh replace 198.51.100.1 lladdr "$mac_go" dev s0
      ip netns exec nb-gw "$XSK_FORWARD" gi 10.77.0.1/16 "$mac_c0" go 198.51.100.1 $SRV "$mac_s0" > "$W/$1.log" 2>&1 &
      NPID=$! RUNBIN=
      ;;
    fwd)
      ip -n nb-gw addr add 10.77.0.1/16 dev gi; ip -n nb-gw addr add 198.51.100.1/24 dev go
      ip netns exec nb-gw sysctl -qw net.ipv4.ip_forward=1
      ip -n nb-srv route add 10.77.0.0/16 via 198.51.100.1
      ;;
    kernel)
      ip -n nb-gw addr add 10.77.0.1/16 dev gi; ip -n nb-gw addr add 198.51.100.1/24 dev go
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
    natgw1|natgw2|natgw1poll|natgw2poll|natgw2ring|natgw2pol|natgw2log|natgw2file|natgw2egr|natgw2names|base1|base2)
      ip netns exec nb-gw sysctl -qw net.ipv4.ip_forward=0
      local bin=$NATGW cfg=$mode
      case $mode in base1) bin=$NATGW_BASE cfg=natgw1;; base2) bin=$NATGW_BASE cfg=natgw2;; esac
      if [ "$mode" = natgw2log ]; then
        "$ROOT/scripts/collector.sh" stop "$W/otel"; rm -f "$W/otel/logs.jsonl" "$W/otel/metrics.jsonl"
        "$ROOT/scripts/collector.sh" start "$W/otel" nb-gw >/dev/null
      fi
      ip netns exec nb-gw "$bin" run --config "$W/$cfg.toml" > "$W/$1.log" 2>&1 &
      NPID=$! RUNBIN=$bin
      for _ in $(seq 50); do [ -S "$W/admin.sock" ] && break; sleep 0.1; done
      ;;
  esac
  sleep 1.5
  ip netns exec nb-cli ping -c 1 -W 2 $SRV >/dev/null || echo "bench: warning: $1 does not pass ping" >&2
  if [ "$mode" = natgw2names ]; then
    # The client resolves the server's name through natgw: its flows to the address may leave.
    ip netns exec nb-cli getent ahostsv4 srv.bench.example >/dev/null || echo "bench: warning: srv.bench.example does not resolve" >&2
    "$NATGW" stats --socket "$W/admin.sock" | awk '$1 == "DnsAnswersMatched" && $2 > 0 {ok = 1} END {exit !ok}' \
      || echo "bench: warning: natgw bound no name: natgw2names measures refusals" >&2
  fi
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
  case " $MODES " in *" natgw2names "*)
    command -v dnsmasq >/dev/null || { echo "bench: dnsmasq missing (scripts/setup-tests.sh)"; exit 1; }
    ip netns exec nb-srv dnsmasq --no-resolv --no-hosts --no-poll --pid-file="$W/dnsmasq.pid" --user=root --group=root \
      --bind-interfaces --listen-address=$SRV --host-record=srv.bench.example,$SRV,86400
    mkdir -p /etc/netns/nb-cli && printf 'nameserver %s\n' "$SRV" > /etc/netns/nb-cli/resolv.conf
  esac
  ip netns exec nb-cli sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
  ip netns exec nb-srv sysctl -qw net.core.somaxconn=4096
  # The fill test's million flows fit the kernel's table too, with as many hash buckets
  # (global settings: put back on exit).
  command -v modprobe >/dev/null && modprobe nf_conntrack
  CT_MAX=$(cat /proc/sys/net/netfilter/nf_conntrack_max) CT_HASH=$(cat /sys/module/nf_conntrack/parameters/hashsize)
  echo 1048576 > /sys/module/nf_conntrack/parameters/hashsize && echo 1200000 > /proc/sys/net/netfilter/nf_conntrack_max \
    || echo "bench: warning: the kernel's conntrack table stays at $CT_MAX entries" >&2
  sleep 1
}

waitload() {  # up to 30 s for a quiet machine
  for _ in $(seq 6); do awk '{exit !($1 < 0.8)}' /proc/loadavg && return; sleep 5; done
}

t_tcp() {
  ip netns exec nb-cli iperf3 -c $SRV -t $DUR -P $1 -J > "$W/tcp.json" 2>/dev/null
  python3 -c "import json;d=json.load(open('$W/tcp.json'));print('%.2f'%(d['end']['sum_received']['bits_per_second']/1e9))" 2>/dev/null || echo 0
}
# A trafgen config: 64-byte UDP to srv from $1 sources from 10.77.1.0 up, $2 source ports
# from 4000 up and $3 destination ports from 9 up, all stepping every packet: with the three
# pairwise coprime, $1 × $2 × $3 flows, each seen again after that many packets, from
# $1 × $2 inside endpoints (each needs an external port of its own: natgw's mappings are
# endpoint-independent, so keep $1 × $2 under the 64 512 ports of one external address).
udp_conf() {
  local gimac c0mac saddr=10.77.0.2 sport=4000 dport=9
  gimac=$(ip -n nb-gw -br link show gi | awk '{print $3}'); c0mac=$(ip -n nb-cli -br link show c0 | awk '{print $3}')
  [ "$1" -gt 1 ] && saddr="10.77.1.0, saddr=dinc($((0x0a4d0100)), $((0x0a4d0100 + $1 - 1)))"
  [ "$2" -gt 1 ] && sport="4000, sport=dinc(4000, $((4000 + $2 - 1)))"
  [ "$3" -gt 1 ] && dport="9, dport=dinc(9, $((9 + $3 - 1)))"
  echo "{ eth(da=$gimac, sa=$c0mac, type=0x0800), ipv4(saddr=$saddr, daddr=$SRV, ttl=64), udp(sport=$sport, dport=$dport), fill(0x41, 64) }"
}
rxp() { ip netns exec nb-srv cat /sys/class/net/s0/statistics/rx_packets; }
t_udp() {  # $1 sources × $2 source ports × $3 destination ports
  udp_conf "$1" "$2" "$3" > "$W/udp.trafgen"
  ip netns exec nb-cli timeout -s INT $((DUR + 3)) trafgen --dev c0 --conf "$W/udp.trafgen" --cpus 1 -q >/dev/null 2>&1 &
  local tg=$!; sleep 2
  local r0 r1; r0=$(rxp); sleep $DUR; r1=$(rxp)
  wait $tg 2>/dev/null
  echo $(( (r1 - r0) / DUR ))
}
# The highest rate (pps) of 64-byte UDP, one flow, paced evenly (tests/e2e's udp_pace from a
# UDP socket in nb-cli: trafgen's own rate limit sends bursts at full speed), that srv
# receives with at most 0.1 % lost: a binary search between 20 kpps and 1 Mpps in 3 s
# trials. The rate is the one the sender achieved, which tops out near 600 kpps here.
t_udpmax() {
  local lo=20000 hi=1000000 best=0 i rate n r0 r1 out achieved got
  for i in 1 2 3 4 5 6 7; do
    rate=$(( (lo + hi) / 2 )); n=$((rate * 3))
    r0=$(rxp)
    out=$(ip netns exec nb-cli "$UDP_PACE" $SRV:9 $rate $n 64)
    sleep 0.3; r1=$(rxp)
    achieved=$(echo "$out" | awk '{printf "%d", $2}'); got=$((r1 - r0))
    [ -n "${BENCH_DEBUG:-}" ] && echo "udpmax: asked $rate: $out; $got of $n arrived" >&2
    if [ $(( (n - got) * 1000 )) -le $n ]; then
      [ "$achieved" -gt $best ] && best=$achieved
      lo=$rate
    else
      hi=$rate
    fi
  done
  echo $best
}
gw_flows() {  # the gateway's flow count: natgw's (asked of the binary that runs), or conntrack's
  if [ -n "$NPID" ]; then
    "$RUNBIN" stats --socket "$W/admin.sock" 2>/dev/null | awk '$1 == "ActiveConnectionCount" {print $2; exit}'
  else
    ip netns exec nb-gw cat /proc/sys/net/netfilter/nf_conntrack_count
  fi
}
gw_mem_kb() {  # natgw's resident set, or the kernel's live slab objects (hash table not included)
  if [ -n "$NPID" ]; then awk '/^VmRSS/{print $2}' /proc/$NPID/status
  else awk 'NR > 2 {s += $2 * $4} END {printf "%d\n", s / 1024}' /proc/slabinfo; fi
}
# Waits until the flow count stops rising (two readings 0.1 s apart agree); prints the
# count and the time in ns of the last rise.
settled_flows() {
  local last c tl
  last=$(gw_flows); tl=$(date +%s%N)
  for _ in $(seq 100); do
    sleep 0.1; c=$(gw_flows)
    [ "$c" = "$last" ] && break
    last=$c; tl=$(date +%s%N)
  done
  echo "$last $tl"
}
# Fills the gateway with 989 934 unanswered UDP flows (14 999 sources × 2 source ports ×
# 33 destination ports) at full speed; prints new flows/s over the first pass (to the last
# rise of the count), then flows= and bytes= per flow at the end.
t_fill() {
  case $1 in fwd|xsk1) echo "-"; return;; esac
  local n=$((14999 * 2 * 33)) m0 f0 t0 f1 t1 f2 m1
  udp_conf 14999 2 33 > "$W/fill.trafgen"
  m0=$(gw_mem_kb); f0=$(gw_flows); t0=$(date +%s%N)
  ip netns exec nb-cli trafgen --dev c0 --conf "$W/fill.trafgen" --cpus 1 -q -n $n >/dev/null 2>&1
  read -r f1 t1 < <(settled_flows)
  # Frames that found the gateway's queues full are sent again: up to 4 more passes, until
  # 99 % of the flows are in.
  f2=$f1
  for _ in 1 2 3 4; do
    [ -n "$f2" ] && [ $(( (f2 - f0) * 100 )) -ge $((n * 99)) ] && break
    ip netns exec nb-cli trafgen --dev c0 --conf "$W/fill.trafgen" --cpus 1 -q -n $n >/dev/null 2>&1
    read -r f2 _ < <(settled_flows)
  done
  m1=$(gw_mem_kb)
  [ -n "${BENCH_DEBUG:-}" ] && echo "fill: $f0 -> $f1 -> $f2 flows, memory $m0 -> $m1 kB" >&2
  if [ -z "$f0" ] || [ -z "$f1" ] || [ -z "$f2" ] || [ -z "$m0" ] || [ -z "$m1" ] || [ "$f2" -le "$f0" ]; then
    echo "-"; return
  fi
  echo "$(( (f1 - f0) * 1000000000 / (t1 - t0) )) flows=$f2 bytes=$(( (m1 - m0) * 1024 / (f2 - f0) ))"
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
        tcp1) v=$(t_tcp 1);; tcp4) v=$(t_tcp 4);; udp) v=$(t_udp 1 1 1);; udp100k) v=$(t_udp 4999 2 11);;
        udpmax) v=$(t_udpmax);; fill) v=$(t_fill $m);; cps) v=$(t_cps);; lat) v=$(t_lat);;
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
# vals[(row, mode)]: the value of each repetition; a row is a test, or test:key for the
# key=value fields after the value (lat:p99, fill:bytes).
vals = collections.defaultdict(list)
for line in open(path):
    f = line.split()
    if len(f) < 5 or f[0] != run: continue
    try: vals[(f[2], f[1])].append(float(f[4]))
    except ValueError: continue
    for x in f[5:]:
        k, _, v = x.partition("=")
        if k in ("p99", "bytes"):
            try: vals[(f"{f[2]}:{k}", f[1])].append(float(v))
            except ValueError: pass
rows = ["tcp1", "tcp4", "udp", "udp100k", "udpmax", "fill", "fill:bytes", "cps", "lat", "lat:p99", "swap"]
names = {"tcp1": "TCP 1 stream, Gbit/s", "tcp4": "TCP 4 streams, Gbit/s", "udp": "UDP 64 B, 1 flow, pps at server",
         "udp100k": "UDP 64 B, 100 k flows, pps at server", "udpmax": "UDP 64 B, max pps at ≤ 0.1 % loss",
         "fill": "1 M-flow fill, new flows/s", "fill:bytes": "memory per flow at 1 M flows, bytes",
         "cps": "new TCP conn/s (wrk, nginx)", "lat": "RTT p50, µs", "lat:p99": "RTT p99, µs",
         "swap": "policy swap to every worker, median ms"}
# Rows where less is better get differences or ratios all the same; latency as a difference.
order = ["fwd", "kernel", "base1", "base2", "natgw1", "natgw2", "natgw1poll", "natgw2poll", "natgw2ring", "natgw2pol", "natgw2file", "natgw2log",
         "natgw2egr", "natgw2names", "xsk1"]
order = [v for m in order for v in (m, m + "-txoff")]
modes = [m for m in order if any(k[1] == m for k in vals)]
natgws = [m for m in modes if m not in ("fwd", "kernel", "kernel-txoff")]
extra = [m for m in ("natgw2pol", "natgw2file", "natgw2log") if "natgw2" in modes and m in modes]
pairs = [(m, b) for m, b in (("natgw1", "base1"), ("natgw2", "base2")) if m in modes and b in modes]
# Ratio columns: every natgw mode against the kernel's NAT; natgw1/natgw2 (and the kernel's
# NAT) against plain forwarding; the extras against natgw2; before/after pairs.
cols = [(m, "kernel") for m in natgws if "kernel" in modes]
cols += [(m, "fwd") for m in ("kernel", "natgw1", "natgw2") if "fwd" in modes and m in modes]
cols += [(m, "natgw2") for m in extra] + pairs
cols += [("xsk1", b) for b in ("natgw1", "natgw2ring", "kernel-txoff", "natgw1-txoff") if "xsk1" in modes and b in modes]
if "natgw2egr" in modes and "natgw2names" in modes:
    cols.append(("natgw2names", "natgw2egr"))
print("\n| test | " + " | ".join(modes) + " |" + "".join(f" {a}/{b} |" for a, b in cols))
print("|---" * (1 + len(modes) + len(cols)) + "|")
for t in rows:
    if not any(k[0] == t for k in vals): continue
    med = {m: statistics.median(vals[(t, m)]) for m in modes if vals.get((t, m))}
    def fmt(v):
        return f"{v:.2f}" if t in ("tcp1", "tcp4", "swap") else f"{v:.1f}" if t.startswith("lat") else f"{v:.0f}"
    cells = [fmt(med[m]) if m in med else "-" for m in modes]
    ratios = []
    for a, b in cols:
        if a not in med or b not in med or t == "swap" or med[b] == 0: ratios.append("-")
        elif t.startswith("lat"): ratios.append(f"{med[a] - med[b]:+.1f} µs")
        else: ratios.append(f"{med[a] / med[b]:.2f}x")
    print(f"| {names[t]} | " + " | ".join(cells) + " |" + "".join(f" {r} |" for r in ratios))
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
