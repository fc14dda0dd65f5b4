#!/bin/bash
# End-to-end tests: real programs (curl, nginx, ping, tracepath, socat, python sockets,
# tcpdump) through natgw in network namespaces built by examples/demo/topology.sh with
# the prefix "ngt". Every test asserts what a user relies on; the summary line is
# "N passed, N failed". Needs root; the namespaces are removed at the end, pass or fail.
#
# usage: tests/e2e/run.sh [test-name ...]
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export NATGW_PREFIX=ngt NATGW_RUN=/run/ngt-e2e
export NATGW_BIN=${NATGW_BIN:-$ROOT/target/release/natgw}
TOPO=$ROOT/examples/demo/topology.sh
P=$NATGW_PREFIX; RUN=$NATGW_RUN
CLI1=$P-cli1 CLI2=$P-cli2 GW=$P-gw INET=$P-inet FAR=$P-far
SOCK=$RUN/admin.sock
WORK=$(mktemp -d /tmp/natgw-e2e.XXXXXX)
# Non-root checks run a copy of the binary and configs from here, wherever the clone lives.
chmod 755 "$WORK"
as_nobody() { install -m 755 "$NATGW_BIN" "$WORK/natgw-nobody"; setpriv --reuid=65534 --regid=65534 --clear-groups "$WORK/natgw-nobody" "$@"; }

[ "$(id -u)" = 0 ] || { echo "e2e: needs root (CI runs as root)"; exit 1; }
for tool in curl ping tracepath socat tcpdump python3 nginx ip; do
  command -v $tool >/dev/null || { echo "e2e: $tool missing: run scripts/setup.sh"; exit 1; }
done
[ -x "$NATGW_BIN" ] || { echo "e2e: $NATGW_BIN missing: cargo build --release"; exit 1; }

PASSED=0 FAILED=0 FAILED_NAMES=()
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
natgw() { "$NATGW_BIN" "$@" --socket "$SOCK"; }
counter() { natgw stats | awk -v n="$1" '$1 == n {print $2}'; }
# Each test runs in a subshell: fail ends it with the reason.
fail() { echo "    FAIL: $*"; exit 1; }

# A config like the demo's, with overrides: write_config FILE [extra toml]
write_config() {
  local f=$1; shift
  sed "s#/run/natgw-demo/admin.sock#$SOCK#" "$ROOT/examples/demo/natgw.toml" > "$f"
  [ $# -gt 0 ] && python3 - "$f" "$@" <<'EOF'
import sys
path, extra = sys.argv[1], sys.argv[2:]
lines = open(path).read().split("\n")
for kv in extra:            # "section.key=value": replace the key in [section], or add it
    sec, rest = kv.split(".", 1)
    key, val = rest.split("=", 1)
    start = lines.index("[%s]" % sec)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=")[0].strip() == key:
            lines[i] = "%s = %s" % (key, val)
            break
    else:
        lines.insert(start + 1, "%s = %s" % (key, val))
open(path, "w").write("\n".join(lines))
EOF
  return 0
}

restart_natgw() {  # restart_natgw CONFIG
  "$TOPO" stop
  NATGW_CONFIG=$1 "$TOPO" start
}

# ---------------------------------------------------------------- tests

t_curl_sees_external_address() {
  local a b
  a=$(nsx $CLI1 curl -s -m 5 http://203.0.113.80/ip) || fail "curl from cli1"
  b=$(nsx $CLI2 curl -s -m 5 http://203.0.113.80/ip) || fail "curl from cli2"
  echo "    server saw cli1 as $a, cli2 as $b"
  [[ $a =~ ^198\.51\.100\.1[01]:[0-9]+$ ]] || fail "cli1 seen as '$a'"
  [[ $b =~ ^198\.51\.100\.1[01]:[0-9]+$ ]] || fail "cli2 seen as '$b'"
  ! grep -q "^10\.10\." "$RUN/nginx.access.log" || fail "a private address reached the server log"
  local got
  got=$(nsx $CLI1 curl -s -m 20 -o /dev/null -w "%{http_code} %{size_download}" http://203.0.113.80/10M.bin)
  [ "$got" = "200 10485760" ] || fail "10 MB download: $got"
}

t_udp_echo() {
  local r
  r=$(echo "ping-from-cli1" | nsx $CLI1 socat -t 2 - UDP4:203.0.113.7:7) || fail "socat"
  [ "$r" = "ping-from-cli1" ] || fail "echo returned '$r'"
  grep -qE "^198\.51\.100\.1[01]:[0-9]+ " "$RUN/udp_echo.log" || fail "echo server did not see an external address"
  ! grep -q "^10\." "$RUN/udp_echo.log" || fail "echo server saw a private address"
}

t_ping() {
  nsx $CLI1 ping -c 3 -i 0.2 -W 2 203.0.113.80 >/dev/null || fail "ping through natgw"
  nsx $CLI1 ping -c 2 -i 0.2 -W 2 10.10.1.1 >/dev/null || fail "ping natgw's inside address"
  nsx $CLI2 ping -c 2 -i 0.2 -W 2 10.10.2.1 >/dev/null || fail "ping natgw's second inside address"
  nsx $INET ping -c 2 -i 0.2 -W 2 198.51.100.10 >/dev/null || fail "ping natgw's external address"
  nsx $INET ping -c 2 -i 0.2 -W 2 198.51.100.11 >/dev/null || fail "ping natgw's second external address"
}

t_traceroute_shows_gateway_hop() {
  local out
  out=$(nsx $CLI1 tracepath -n -m 5 203.0.113.80 2>&1)
  echo "$out" | sed 's/^/    /' | head -5
  echo "$out" | grep -qE "^ 1: +10\.10\.1\.1 " || fail "hop 1 is not natgw (10.10.1.1)"
  echo "$out" | grep -q "reached" || fail "destination not reached"
  out=$(nsx $CLI1 traceroute -n -q 1 -w 2 -m 4 203.0.113.80 2>&1)
  echo "$out" | grep -qE "^ 1 +10\.10\.1\.1 " || fail "traceroute hop 1: $out"
}

# Datagrams larger than the MTU are fragmented by the client and by the servers: every
# fragment must be translated (the first maps, the rest follow by IP ID), in both
# directions, whichever worker the kernel hands each fragment to.
t_fragments_pass_both_ways() {
  nsx $CLI1 ping -c 4 -i 0.2 -s 3000 -W 2 203.0.113.80 >/dev/null || fail "3000-byte ping through natgw"
  local r
  r=$(nsx $CLI1 python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b'f' * 6000, ('203.0.113.7', 7)); print(len(s.recv(65535)))")
  [ "$r" = 6000 ] || fail "6000-byte UDP echo came back as '$r'"
  grep -qE "^198\.51\.100\.1[01]:[0-9]+ 6000$" "$RUN/udp_echo.log" || fail "echo server did not get the whole datagram from an external address: $(cat "$RUN/udp_echo.log")"
  [ "$(counter 'PacketsDropCount{reason="fragment-unmatched"}')" = 0 ] || fail "fragments dropped as unmatched"
}

# A datagram without DF that is larger than natgw's outside link: natgw fragments it
# (RFC 791/1812), and the server gets it whole.
t_gateway_fragments_non_df_datagrams() {
  nsx $GW ip link set out0 mtu 1280; nsx $INET ip link set i0 mtu 1280
  sleep 1.5
  : > "$RUN/udp_echo.log"
  local r
  r=$(nsx $CLI1 python3 - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)   # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: DF clear
s.settimeout(3)
s.sendto(b"d" * 1400, ("203.0.113.7", 7))
print(len(s.recv(4096)))
EOF
)
  nsx $GW ip link set out0 mtu 1500; nsx $INET ip link set i0 mtu 1500
  sleep 1.5
  [ "$r" = 1400 ] || fail "1400-byte datagram without DF through a 1280-byte link: got '$r'"
  grep -qE "^198\.51\.100\.1[01]:[0-9]+ 1400$" "$RUN/udp_echo.log" || fail "server did not get the datagram whole"
}

# A router beyond natgw with a lower MTU: the client's upload must shrink after the router's
# ICMP fragmentation-needed, which reaches the client only if natgw translates it.
t_pmtu_upload_through_lower_mtu() {
  ip netns add $FAR 2>/dev/null; nsx $FAR ip link set lo up
  ip link add f0 netns $FAR type veth peer name i1 netns $INET
  # Only the router's side is small: the far host still advertises a 1460-byte MSS, so
  # the client's full-size segments meet the 1280-byte hop and the router's ICMP.
  nsx $INET ip addr add 203.0.113.129/25 dev i1; nsx $INET ip link set i1 mtu 1280 up
  nsx $FAR ip addr add 203.0.113.130/25 dev f0; nsx $FAR ip link set f0 up
  nsx $FAR ip route add default via 203.0.113.129
  head -c 3000000 /dev/urandom > "$WORK/up.bin"
  nsx $FAR socat -u TCP-LISTEN:9000,bind=203.0.113.130,reuseaddr "OPEN:$WORK/received.bin,creat,trunc" &
  local srv=$!; sleep 0.5
  local before; before=$(counter IcmpErrorsSent)
  timeout 30 ip netns exec $CLI1 socat -u "OPEN:$WORK/up.bin" TCP:203.0.113.130:9000 || fail "upload did not complete"
  wait $srv
  cmp -s "$WORK/up.bin" "$WORK/received.bin" || fail "upload corrupted or short ($(stat -c %s "$WORK/received.bin") bytes)"
  nsx $CLI1 ip route get 203.0.113.130 | grep -q "mtu 1280" || fail "client never learned the path MTU"
  echo "    client route: $(nsx $CLI1 ip route get 203.0.113.130 | tr -s ' ' | head -c 120)"
}

# The inside link is smaller than the client's MSS promises: natgw itself must send
# fragmentation-needed to the server, and the download still completes.
t_pmtu_download_via_gateway_icmp() {
  # natgw follows the change while running (it re-reads link MTUs every second).
  nsx $GW ip link set in1 mtu 1280
  sleep 1.5
  local got before after
  before=$(counter IcmpErrorsSent)
  got=$(nsx $CLI1 curl -s -m 30 -o /dev/null -w "%{http_code} %{size_download}" http://203.0.113.80/10M.bin)
  after=$(counter IcmpErrorsSent)
  nsx $GW ip link set in1 mtu 1500
  sleep 1.5
  [ "$got" = "200 10485760" ] || fail "download through a 1280-byte inside link: $got"
  [ "$after" -gt "$before" ] || fail "natgw sent no fragmentation-needed"
}

t_same_source_port_distinct_mappings() {
  : > "$RUN/udp_echo.log"
  local a b
  a=$(echo one | nsx $CLI1 socat -t 2 - UDP4:203.0.113.7:7,sourceport=5555) || fail "cli1"
  b=$(echo two | nsx $CLI2 socat -t 2 - UDP4:203.0.113.7:7,sourceport=5555) || fail "cli2"
  [ "$a" = one ] && [ "$b" = two ] || fail "replies '$a' '$b'"
  local seen; seen=$(awk '{print $1}' "$RUN/udp_echo.log" | sort -u)
  echo "    echo server saw: $(echo $seen)"
  [ "$(echo "$seen" | wc -l)" = 2 ] || fail "expected two distinct external endpoints"
}

t_udp_mapping_expires() {
  # Endpoint-independent filtering, so that after expiry "unsolicited" can only mean
  # "no mapping any more" (under the default filtering another port is refused anyway).
  write_config "$WORK/short.toml" "timeouts.udp=3" 'nat.filtering="endpoint-independent"'
  restart_natgw "$WORK/short.toml"
  echo hi | nsx $CLI1 socat -t 1 - UDP4:203.0.113.7:7,sourceport=6001 >/dev/null || fail "send"
  natgw flows | grep -q "10.10.1.10:6001" || fail "no flow after sending"
  sleep 5
  natgw flows | grep -q "10.10.1.10:6001" && fail "flow still there after its 3 s timeout"
  [ "$(counter IdleTimeoutCount)" -ge 1 ] || fail "IdleTimeoutCount did not move"
  # The expired mapping no longer admits the server.
  local before; before=$(counter 'PacketsDropCount{reason="unsolicited-inbound"}')
  nsx $INET python3 -c "import socket;s=socket.socket(2,2);s.bind(('203.0.113.7',17007));s.sendto(b'late',('198.51.100.11',6001));s.sendto(b'late',('198.51.100.10',6001))"
  sleep 0.3
  [ "$(counter 'PacketsDropCount{reason="unsolicited-inbound"}')" -gt "$before" ] || fail "late reply not counted as unsolicited"
  restart_natgw "$ROOT/examples/demo/natgw.toml.e2e"
}

t_unsolicited_inbound_never_reaches_clients() {
  # An existing flow, so that mappings exist to be probed.
  echo x | nsx $CLI1 socat -t 1 - UDP4:203.0.113.7:7,sourceport=7007 >/dev/null
  nsx $CLI1 tcpdump -n -i c1 -w "$WORK/c1.pcap" "not arp and src net 198.51.100.0/24 or src net 203.0.113.0/24" >/dev/null 2>&1 &
  local td1=$!
  nsx $CLI2 tcpdump -n -i c2 -w "$WORK/c2.pcap" "not arp and src net 198.51.100.0/24 or src net 203.0.113.0/24" >/dev/null 2>&1 &
  local td2=$!
  sleep 1
  local before_u before_p
  before_u=$(counter 'PacketsDropCount{reason="unsolicited-inbound"}')
  before_p=$(counter 'PacketsDropCount{reason="to-private-address"}')
  nsx $INET ip route add 10.10.0.0/16 via 198.51.100.10
  nsx $INET python3 - <<'EOF'
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in (7007, 5555, 22, 40000):
    for ext in ("198.51.100.10", "198.51.100.11"):
        u.sendto(b"unsolicited", (ext, port))
u.sendto(b"direct", ("10.10.1.10", 7007))        # straight at a private address
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2.bind(("203.0.113.7", 8)); u2.sendto(b"wrong-port", ("198.51.100.11", 7007))  # APDF: not port 7
for ext in ("198.51.100.10", "198.51.100.11"):
    t = socket.socket(); t.settimeout(0.5)
    try: t.connect((ext, 22))
    except OSError: pass
EOF
  nsx $INET ip route del 10.10.0.0/16 via 198.51.100.10
  sleep 1
  kill $td1 $td2; wait $td1 $td2 2>/dev/null
  local n1 n2
  n1=$(tcpdump -r "$WORK/c1.pcap" 2>/dev/null | wc -l); n2=$(tcpdump -r "$WORK/c2.pcap" 2>/dev/null | wc -l)
  [ "$n1" = 0 ] && [ "$n2" = 0 ] || fail "clients received $n1 + $n2 packets from outside"
  [ "$(counter 'PacketsDropCount{reason="unsolicited-inbound"}')" -ge $((before_u + 10)) ] || fail "unsolicited drops not counted"
  [ "$(counter 'PacketsDropCount{reason="to-private-address"}')" -gt "$before_p" ] || fail "to-private drops not counted"
}

t_thousand_parallel_flows() {
  nsx $CLI1 python3 - <<'EOF' || fail "parallel flows"
import socket, selectors, sys
sel = selectors.DefaultSelector()
N = 1000
socks = []
for i in range(N):
    s = socket.socket(); s.setblocking(False)
    s.connect_ex(("203.0.113.80", 80))
    sel.register(s, selectors.EVENT_WRITE, i)
    socks.append(s)
pending, replies = set(range(N)), {}
import time; deadline = time.time() + 30
while pending and time.time() < deadline:
    for key, ev in sel.select(timeout=1):
        s, i = key.fileobj, key.data
        if ev & selectors.EVENT_WRITE:
            s.send(b"GET /ip HTTP/1.1\r\nHost: x\r\n\r\n")
            sel.modify(s, selectors.EVENT_READ, i)
        else:
            d = s.recv(4096)
            if b"\r\n\r\n" in d:
                replies[i] = d.split(b"\r\n\r\n", 1)[1].strip()
                pending.discard(i); sel.unregister(s)
print(f"    {len(replies)}/{N} connections answered while all {N} were open")
sys.exit(0 if len(replies) == N and all(r.startswith(b"198.51.100.1") for r in replies.values()) else 1)
EOF
  local flows; flows=$(natgw flows | grep -c "203.0.113.80:80")
  echo "    natgw tracks $flows flows to the web server"
  [ "$flows" -ge 1000 ] || fail "expected >= 1000 tracked flows"
}

t_malformed_frames_are_counted_not_fatal() {
  local before; before=$(natgw stats | awk '/PacketsDropCount/{s+=$2} END{print s+0}')
  nsx $CLI1 python3 - <<'EOF' || fail "injecting frames"
import socket, struct
gw = open("/sys/class/net/c1/address").read()  # our own MAC; gateway MAC comes from ARP
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("c1", 0))
import subprocess
mac = subprocess.run(["ip", "neigh", "show", "10.10.1.1"], capture_output=True, text=True).stdout.split()
dst = bytes.fromhex(mac[mac.index("lladdr") + 1].replace(":", "")) if "lladdr" in mac else b"\xff" * 6
src = bytes.fromhex(gw.strip().replace(":", ""))
eth = dst + src + b"\x08\x00"
good = bytes.fromhex("4500002800014000400600000a0a010acb007150" "9c400050000003e8000000005002ffff00000000")
frames = [
    good[:10],                                   # truncated
    b"\x44" + good[1:],                          # IHL 4
    b"\x4f" + good[1:],                          # IHL 15
    good[:2] + b"\x05\xdc" + good[4:],           # total length 1500 > frame
    good[:9] + b"\x11" + good[10:20] + b"\x13\x88\x00\x07\x00\x00\x00\x00",  # UDP length 0
    good[:20] + good[20:32] + b"\x40" + good[33:],  # TCP data offset 4
    bytes(64),                                   # zeros
]
for f in frames * 50:
    s.send(eth + f)
s2 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s2.bind(("c1", 0))
s2.send(dst + src + b"\x86\xdd" + bytes(60))     # IPv6 EtherType
EOF
  sleep 0.5
  kill -0 "$(cat "$RUN/natgw.pid")" || fail "natgw died"
  local after; after=$(natgw stats | awk '/PacketsDropCount/{s+=$2} END{print s+0}')
  echo "    drop counters went from $before to $after"
  [ "$after" -ge $((before + 300)) ] || fail "malformed frames not counted as drops"
  nsx $CLI1 curl -s -m 5 http://203.0.113.80/ip >/dev/null || fail "traffic stopped after malformed input"
}

t_status_and_stats() {
  nsx $CLI1 curl -s -m 5 http://203.0.113.80/ip >/dev/null || fail "curl"
  local s; s=$(natgw status) || fail "status"
  echo "$s" | grep -q "^workers: " || fail "status has no workers line"
  echo "$s" | grep -q "^outside: out0 198.51.100.10,198.51.100.11" || fail "status outside line"
  local st; st=$(natgw stats)
  for m in ActiveConnectionCount ConnectionAttemptCount ConnectionEstablishedCount ErrorPortAllocation \
           IdleTimeoutCount BytesInFromSource BytesOutToDestination BytesInFromDestination BytesOutToSource \
           PacketsInFromSource PacketsOutToDestination PacketsInFromDestination PacketsOutToSource; do
    echo "$st" | grep -q "^$m [0-9]" || fail "stats lacks $m"
  done
  [ "$(counter BytesOutToDestination)" -gt 0 ] && [ "$(counter ConnectionEstablishedCount)" -gt 0 ] || fail "counters did not move"
  # The admin socket is root-only.
  local r; r=$(as_nobody status --socket "$SOCK" 2>&1) && fail "non-root got status: $r"
  return 0
}

t_bad_config_and_startup_errors() {
  local out
  write_config "$WORK/bad.toml" 'outside.gateway="198.51.100.300"'
  out=$("$NATGW_BIN" check-config "$WORK/bad.toml" 2>&1) && fail "bad config accepted"
  echo "$out" | grep -q "outside.gateway" && echo "$out" | grep -q "198.51.100.300" || fail "message lacks key/value: $out"
  "$NATGW_BIN" check-config "$ROOT/examples/demo/natgw.toml" >/dev/null || fail "demo config rejected"
  # Missing interface: clear error, non-zero exit, nothing left behind.
  sed -e 's/"out0"/"nosuch0"/' -e "s#$SOCK#$WORK/x.sock#" "$ROOT/examples/demo/natgw.toml.e2e" > "$WORK/noif.toml"
  out=$(nsx $GW "$NATGW_BIN" run --config "$WORK/noif.toml" 2>&1) && fail "started without its interface"
  echo "$out" | grep -q "nosuch0" || fail "missing-interface message: $out"
  [ -e "$WORK/x.sock" ] && fail "admin socket left behind"
  # An address the kernel already has.
  sed -e "s#$SOCK#$WORK/y.sock#" "$ROOT/examples/demo/natgw.toml.e2e" > "$WORK/dup.toml"
  nsx $GW ip addr add 198.51.100.10/24 dev out0
  out=$(nsx $GW "$NATGW_BIN" run --config "$WORK/dup.toml" 2>&1); local rc=$?
  nsx $GW ip addr del 198.51.100.10/24 dev out0
  [ $rc -ne 0 ] && echo "$out" | grep -q "198.51.100.10" || fail "address-in-use not refused: $out"
  # A second natgw on the same admin socket.
  out=$(nsx $GW "$NATGW_BIN" run --config "$ROOT/examples/demo/natgw.toml.e2e" 2>&1) && fail "second instance started"
  echo "$out" | grep -q "already running" || fail "second-instance message: $out"
  # Not root.
  chmod 644 "$WORK/dup.toml"
  out=$(as_nobody run --config "$WORK/dup.toml" 2>&1) && fail "ran as nobody"
  echo "$out" | grep -q "root" || fail "non-root message: $out"
  return 0
}

t_stop_leaves_nothing() {
  local pid; pid=$(cat "$RUN/natgw.pid")
  "$TOPO" stop
  kill -0 "$pid" 2>/dev/null && fail "natgw still running"
  [ -e "$SOCK" ] && fail "admin socket left behind"
  [ -d "/proc/$pid" ] && fail "natgw process $pid is left"
  ip netns pids $GW | grep -q . && fail "processes left nsx $GW: $(ip netns pids $GW)"
  NATGW_CONFIG="$ROOT/examples/demo/natgw.toml.e2e" "$TOPO" start
}

# ---------------------------------------------------------------- driver

ALL=(t_curl_sees_external_address t_udp_echo t_ping t_traceroute_shows_gateway_hop
     t_same_source_port_distinct_mappings t_fragments_pass_both_ways t_thousand_parallel_flows t_unsolicited_inbound_never_reaches_clients
     t_pmtu_upload_through_lower_mtu t_pmtu_download_via_gateway_icmp t_gateway_fragments_non_df_datagrams t_udp_mapping_expires
     t_malformed_frames_are_counted_not_fatal t_status_and_stats t_bad_config_and_startup_errors
     t_stop_leaves_nothing)
SELECTED=("$@"); [ ${#SELECTED[@]} -eq 0 ] && SELECTED=("${ALL[@]}")

cleanup() {
  "$TOPO" down >/dev/null 2>&1
  ip netns del $FAR 2>/dev/null
  rm -f "$ROOT/examples/demo/natgw.toml.e2e"
  rm -rf "$WORK"
}
trap cleanup EXIT

write_config "$ROOT/examples/demo/natgw.toml.e2e"
NATGW_CONFIG="$ROOT/examples/demo/natgw.toml.e2e" "$TOPO" up || { echo "e2e: topology failed"; exit 1; }
echo "e2e: natgw up in $GW ($(natgw status | grep workers))"
for t in "${SELECTED[@]}"; do
  echo "--- ${t#t_}"
  if ( $t; exit 0 ); then
    echo "ok   ${t#t_}"; PASSED=$((PASSED + 1))
  else
    echo "FAIL ${t#t_}"; FAILED=$((FAILED + 1)); FAILED_NAMES+=("${t#t_}")
    tail -n 5 "$RUN/natgw.log" 2>/dev/null | sed 's/^/    natgw.log: /'
  fi
done
# After everything: the namespaces and processes go away.
cleanup; trap - EXIT
left=$(ip netns list | grep -c "^$P-" || true)
if [ "$left" != 0 ]; then echo "FAIL teardown: $left namespaces left"; FAILED=$((FAILED + 1)); else PASSED=$((PASSED + 1)); echo "ok   teardown_removes_namespaces"; fi
[ ${#FAILED_NAMES[@]} -gt 0 ] && echo "failed: ${FAILED_NAMES[*]}"
echo "e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
