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
for tool in curl ping tracepath socat tcpdump python3 nginx ip iperf3; do
  command -v $tool >/dev/null || { echo "e2e: $tool missing: run scripts/setup.sh"; exit 1; }
done
[ -x "$NATGW_BIN" ] || { echo "e2e: $NATGW_BIN missing: cargo build --release"; exit 1; }
POLICIES=$ROOT/target/policies DEMO_POLICIES=$ROOT/examples/demo/policies
for c in egress_allowlist subnet_port_pools flow_log_filter misbehaving_egress; do
  [ -f "$POLICIES/$c.wasm" ] || { echo "e2e: $POLICIES/$c.wasm missing: run scripts/build-policy.sh"; exit 1; }
done

PASSED=0 FAILED=0 FAILED_NAMES=()
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
natgw() { "$NATGW_BIN" "$@" --socket "$SOCK"; }
counter() { natgw stats | awk -v n="$1" '$1 == n {print $2}'; }
# Each test runs in a subshell: fail ends it with the reason.
fail() { echo "    FAIL: $*"; exit 1; }

# A config like the demo's, with overrides: write_config FILE [extra toml]
write_config() {
  local f=$1; shift
  # State under this run's directory; policy paths absolute, so a copy works anywhere.
  sed -e "s#/run/natgw-demo/#$RUN/#" -e "s#\"\.\./\.\./target/#\"$ROOT/target/#" \
      -e "s#^config = \"policies/#config = \"$ROOT/examples/demo/policies/#" "$ROOT/examples/demo/natgw.toml" > "$f"
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
  local got before after nf_before nf_after
  before=$(counter IcmpErrorsSent); nf_before=$(counter 'PacketsDropCount{reason="needs-fragmentation"}')
  got=$(nsx $CLI1 curl -s -m 30 -o /dev/null -w "%{http_code} %{size_download}" http://203.0.113.80/10M.bin)
  after=$(counter IcmpErrorsSent); nf_after=$(counter 'PacketsDropCount{reason="needs-fragmentation"}')
  nsx $GW ip link set in1 mtu 1500
  sleep 1.5
  [ "$got" = "200 10485760" ] || fail "download through a 1280-byte inside link: $got"
  [ "$after" -gt "$before" ] || fail "natgw sent no fragmentation-needed"
  [ "$nf_after" -gt "$nf_before" ] || fail "the too-big segments were not counted as needs-fragmentation drops"
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
  # The collector topology.sh runs there stays; nothing else may.
  left=$(ip netns pids $GW | grep -vx "$(cat "$RUN/otel/otelcol.pid")")
  [ -n "$left" ] && fail "processes left in $GW: $left"
  NATGW_CONFIG="$ROOT/examples/demo/natgw.toml.e2e" "$TOPO" start
}

# ---------------------------------------------------------------- driver


# ---------------------------------------------------------------- policies

# A TCP echo service on 203.0.113.80:8081: the allow-list's A variant allows it, B rejects it.
echo_8081() {
  pgrep -f "TCP-LISTEN:8081" >/dev/null && return 0
  nsx $INET socat TCP-LISTEN:8081,bind=203.0.113.80,fork,reuseaddr EXEC:cat >/dev/null 2>&1 &
  sleep 0.3
}
# Prints "open" when a new connection to 8081 is echoed, "refused" on a RST.
probe_8081() {
  nsx $CLI1 python3 -c "
import socket
try:
    s = socket.create_connection(('203.0.113.80', 8081), timeout=2); s.sendall(b'x')
    print('open' if s.recv(1) == b'x' else 'closed')
except ConnectionRefusedError: print('refused')
except OSError as e: print('error', e)"
}
# swap_egress a|b [extra args]: the demo allow-list A or B; EGRESS_WASM names the component
# (default: the Rust built-in; the other languages' builds take the same configs).
swap_egress() {
  local cfg=$DEMO_POLICIES/egress-allowlist.toml; [ "$1" = b ] && cfg=$DEMO_POLICIES/egress-allowlist-b.toml
  shift
  natgw policy swap --hook egress "$POLICIES/${EGRESS_WASM:-egress_allowlist.wasm}" --config "$cfg" "$@"
}

t_egress_allowlist_allows_and_rejects() {
  local code t0 t1
  code=$(nsx $CLI1 curl -s -m 5 -o /dev/null -w "%{http_code}" http://203.0.113.80/ip) || fail "port 80 not allowed"
  [ "$code" = 200 ] || fail "port 80: HTTP $code"
  local before; before=$(counter 'PacketsDropCount{reason="policy-rejected"}')
  t0=$(date +%s%N)
  nsx $CLI1 curl -s -m 5 http://203.0.113.80:8080/ >/dev/null; code=$?
  t1=$(date +%s%N)
  [ "$code" = 7 ] || fail "port 8080: curl exit $code, expected 7 (connection refused by a RST)"
  echo "    port 8080 refused in $(( (t1 - t0) / 1000000 )) ms"
  [ $(( (t1 - t0) / 1000000 )) -lt 1000 ] || fail "the refusal took a timeout, not a RST"
  local r; r=$(nsx $CLI1 python3 -c "
import socket; s = socket.socket(2, 2); s.settimeout(2); s.connect(('203.0.113.7', 9)); s.send(b'x')
try: s.recv(10); print('answered')
except OSError as e: print(e.errno)")
  [ "$r" = 113 ] || fail "UDP to port 9: '$r', expected EHOSTUNREACH (113) from ICMP administratively prohibited"
  [ "$(counter 'PacketsDropCount{reason="policy-rejected"}')" -ge $((before + 2)) ] || fail "rejections not counted"
  # Nothing reached the server for the rejected port.
  ! grep -q ":8080" "$RUN/nginx.access.log" || fail "a rejected flow reached the server"
}

t_subnets_leave_from_their_pools() {
  local a b
  a=$(nsx $CLI1 curl -s -m 5 http://203.0.113.80/ip) || fail "cli1"
  b=$(nsx $CLI2 curl -s -m 5 http://203.0.113.80/ip) || fail "cli2"
  echo "    10.10.1.0/24 left as $a, 10.10.2.0/24 as $b"
  [[ $a =~ ^198\.51\.100\.10:[0-9]+$ ]] || fail "cli1 (pool-a) seen as '$a'"
  [[ $b =~ ^198\.51\.100\.11:([0-9]+)$ ]] || fail "cli2 (pool-b) seen as '$b'"
  local port=${BASH_REMATCH[1]}
  [ "$port" -ge 20000 ] && [ "$port" -le 39999 ] || fail "cli2 port $port is outside pool-b's 20000-39999"
  # A per-source budget, across workers: 3 ports more than cli2 holds now (its earlier
  # connections linger in TIME_WAIT), so of 5 new concurrent connections 3 get through.
  local held; held=$(natgw flows | awk '$4 ~ /^10\.10\.2\.10:/ {print $4}' | sort -u | wc -l)
  printf '[[subnet]]\ncidr = "10.10.2.0/24"\npool = "pool-b"\nport_budget = %d\n' $((held + 3)) > "$WORK/budget.toml"
  natgw policy swap --hook port-pool "$POLICIES/subnet_port_pools.wasm" --config "$WORK/budget.toml" >/dev/null || fail "swap"
  local before; before=$(counter ErrorPortAllocation)
  local r; r=$(nsx $CLI2 python3 -c "
import socket
ok = 0
socks = []
for i in range(5):
    s = socket.socket(); s.settimeout(1)
    try: s.connect(('203.0.113.80', 80)); ok += 1; socks.append(s)
    except OSError: pass
print(ok)")
  [ "$r" = 3 ] || fail "$r of 5 connections got through a budget of 3"
  [ "$(counter ErrorPortAllocation)" -gt "$before" ] || fail "ErrorPortAllocation did not move"
  natgw policy swap --hook port-pool "$POLICIES/subnet_port_pools.wasm" --config "$DEMO_POLICIES/subnet-port-pools.toml" >/dev/null || fail "swap back"
}

t_bad_policies_are_refused_and_old_one_serves() {
  local out gen
  gen=$(natgw policy list | awk '$1 == "egress" {print $2}')
  printf 'not wasm\n' > "$WORK/junk.wasm"
  out=$(natgw policy swap --hook egress "$WORK/junk.wasm" 2>&1) && fail "junk accepted"
  echo "    $out"; echo "$out" | grep -q "junk.wasm.*magic number" || fail "no reason for junk: $out"
  out=$(natgw policy swap --hook egress "$POLICIES/flow_log_filter.wasm" 2>&1) && fail "wrong world accepted"
  echo "    $out"; echo "$out" | grep -q "flow_log_filter.wasm.*natgw:policy/egress@0.1.0" || fail "no reason for wrong world: $out"
  printf 'default = "sometimes"\n' > "$WORK/badinit.toml"
  out=$(natgw policy swap --hook egress "$POLICIES/egress_allowlist.wasm" --config "$WORK/badinit.toml" 2>&1) && fail "init error accepted"
  echo "    $out"; echo "$out" | grep -q 'init rejected its config: default = "sometimes"' || fail "no reason for init: $out"
  [ "$(natgw policy list | awk '$1 == "egress" {print $2}')" = "$gen" ] || fail "the serving generation changed"
  nsx $CLI1 curl -s -m 5 -o /dev/null http://203.0.113.80/ip || fail "traffic stopped"
  # The admin socket refuses non-root callers, for swaps too.
  out=$(as_nobody policy swap --hook egress "$POLICIES/egress_allowlist.wasm" --socket "$SOCK" 2>&1) && fail "non-root swapped: $out"
  return 0
}

t_misbehaving_policy_is_contained() {
  local out
  out=$(natgw policy swap --hook egress "$POLICIES/misbehaving_egress.wasm" --fail closed) || fail "swap: $out"
  local before; before=$(counter PolicyErrors)
  for port in 666 667 668; do   # trap, infinite loop, memory bomb
    nsx $CLI1 curl -s -m 1 http://203.0.113.80:$port/ >/dev/null && fail "port $port got through a failing policy (fail closed)"
    sleep 0.15
    nsx $CLI1 curl -s -m 5 -o /dev/null http://203.0.113.80/ip || fail "after port $port: traffic stopped"
  done
  local errs; errs=$(( $(counter PolicyErrors) - before ))
  echo "    PolicyErrors +$errs; $(natgw policy list | awk '$1 == "egress" {print "calls " $5 ", errors " $6 ", timeouts " $7}')"
  [ "$errs" -ge 3 ] || fail "PolicyErrors moved by $errs"
  grep -q "trap: unreachable" "$RUN/natgw.log" && grep -q "deadline" "$RUN/natgw.log" || fail "the log does not say why"
  kill -0 "$(cat "$RUN/natgw.pid")" || fail "natgw died"
  # Fail open lets flows through when the policy fails.
  natgw policy swap --hook egress "$POLICIES/misbehaving_egress.wasm" --fail open >/dev/null || fail "swap"
  nsx $CLI1 curl -s -m 2 http://203.0.113.80:666/ >/dev/null; [ $? = 7 ] || fail "fail open did not let port 666 reach the server"
  swap_egress a --fail closed >/dev/null || fail "swap back"
}

# A steady UDP echo stream, 100 datagrams a second from cli2: prints "sent lost".
udp_stream() {  # udp_stream SECONDS OUTFILE
  nsx $CLI2 python3 - "$1" > "$2" <<'PY' &
import socket, sys, threading, time
dur = float(sys.argv[1]); s = socket.socket(2, 2); s.connect(("203.0.113.7", 7)); s.settimeout(0.5)
got = set(); stop = False
def rx():
    while not stop:
        try: got.add(int(s.recv(64)))
        except (OSError, ValueError): pass
t = threading.Thread(target=rx); t.start()
n = int(dur * 100); start = time.time()
for i in range(n):
    s.send(b"%d" % i); time.sleep(max(0, start + (i + 1) / 100 - time.time()))
time.sleep(1); stop = True; t.join()
print(n, n - len(got))
PY
}

t_hot_swap_under_load() {
  echo_8081
  nsx $INET iperf3 -s -B 203.0.113.80 -p 5201 -D -I "$WORK/iperf3.pid" >/dev/null || fail "iperf3 server"
  sleep 0.3
  # Baseline: the UDP stream and ping (20/s from cli1) under the same TCP load, no swaps.
  nsx $CLI1 iperf3 -c 203.0.113.80 -p 5201 -t 12 -b 300M >/dev/null 2>&1 &
  local bpid=$!
  udp_stream 10 "$WORK/udp-base.txt"; local spid=$!
  nsx $CLI1 ping -q -i 0.05 -w 10 203.0.113.80 > "$WORK/ping-base.txt" 2>&1 &
  local ppid=$!
  wait $spid $ppid $bpid
  # Now with 100 swaps between two egress policies during a long TCP transfer.
  nsx $CLI1 iperf3 -c 203.0.113.80 -p 5201 -t 25 -b 300M -J > "$WORK/iperf.json" 2>&1 &
  local ipid=$!
  sleep 1
  udp_stream 20 "$WORK/udp-swap.txt"; spid=$!
  nsx $CLI1 ping -q -i 0.05 -w 20 203.0.113.80 > "$WORK/ping-swap.txt" 2>&1 &
  ppid=$!
  local i out ms max=0 wrong=0 v p
  for i in $(seq 1 100); do
    if [ $((i % 2)) = 1 ]; then v=b; else v=a; fi
    out=$(swap_egress $v) || fail "swap $i: $out"
    ms=$(echo "$out" | sed -n 's/.*serving on every caller in \([0-9.]*\) ms.*/\1/p')
    [ -n "$ms" ] || fail "swap $i did not reach every worker: $out"
    max=$(python3 -c "print(max($max, $ms))")
    # A connection opened now follows the generation just published.
    p=$(probe_8081)
    if [ $v = b ] && [ "$p" != refused ]; then wrong=$((wrong + 1)); echo "    swap $i (B): new connection $p"; fi
    if [ $v = a ] && [ "$p" != open ]; then wrong=$((wrong + 1)); echo "    swap $i (A): new connection $p"; fi
  done
  echo "    100 swaps done $(date +%s.%N | cut -c1-14); slowest reached every worker in $max ms"
  wait $ipid; local irc=$?
  wait $spid $ppid
  local bn bl sn sl
  read -r bn bl < "$WORK/udp-base.txt"; read -r sn sl < "$WORK/udp-swap.txt"
  local pl_base pl_swap
  pl_base=$(grep -o '[0-9.]*% packet loss' "$WORK/ping-base.txt" | cut -d% -f1)
  pl_swap=$(grep -o '[0-9.]*% packet loss' "$WORK/ping-swap.txt" | cut -d% -f1)
  echo "    UDP echo lost: $bl/$bn without swaps, $sl/$sn with swaps; ping loss: $pl_base% without, $pl_swap% with"
  python3 - "$WORK/iperf.json" <<'PY' || fail "the TCP transfer broke"
import json, sys
r = json.load(open(sys.argv[1]))
if "error" in r: sys.exit("iperf3: " + r["error"])
e = r["end"]["sum_received"]
print("    iperf3: %.1f s, %.0f Mbit/s received, completed without a reset" % (e["seconds"], e["bits_per_second"] / 1e6))
PY
  [ "$irc" = 0 ] || fail "iperf3 exited $irc"
  [ "$wrong" = 0 ] || fail "$wrong new connections did not follow the generation active when they started"
  # Same loss with and without swaps (one datagram of slack: the runs differ in length).
  [ "$sl" -le $((bl + 1)) ] || fail "UDP lost $sl with swaps against $bl without"
  python3 -c "import sys; sys.exit(0 if float('$pl_swap') <= float('$pl_base') + 0.5 else 1)" || fail "ping lost $pl_swap% with swaps, $pl_base% without"
  kill "$(cat "$WORK/iperf3.pid")" 2>/dev/null
  return 0
}

# A long TCP upload from cli1 to 203.0.113.80:5201 (allowed by both demo allow-lists) that
# runs until $WORK/stop-upload exists, then half-closes and prints "sent N received M" (M
# as counted by the server) or "error ..." when the connection broke (a reset included).
long_upload() {  # long_upload OUTFILE
  nsx $INET python3 - <<'PY' &
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("203.0.113.80", 5201)); srv.listen(1); srv.settimeout(10)
c, _ = srv.accept(); c.settimeout(30); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    n += len(b)
c.sendall(b"%d" % n); c.close()
PY
  sleep 0.3
  nsx $CLI1 python3 - "$WORK/stop-upload" > "$1" 2>&1 <<'PY' &
import os, socket, sys, time
chunk = b"x" * (1 << 17); sent = 0
try:
    s = socket.create_connection(("203.0.113.80", 5201), timeout=10)
    while not os.path.exists(sys.argv[1]):
        s.sendall(chunk); sent += len(chunk); time.sleep(0.01)   # about 100 Mbit/s
    s.shutdown(socket.SHUT_WR)
    print("sent", sent, "received", int(s.recv(64)))
except OSError as e:
    print("error after", sent, "bytes:", repr(e))
PY
}

t_hot_swap_across_languages() {
  # The same allow-list in five languages, swapped in turn while one TCP upload runs. Each
  # swap alternates the config: B refuses new connections to 8081, A lets them through.
  echo_8081
  rm -f "$WORK/stop-upload"
  long_upload "$WORK/upload.txt"; local upid=$!
  sleep 1
  local step lang file cfg out t0 t1 p want
  for step in rust:egress_allowlist.wasm:b python:egress_allowlist_py.wasm:a javascript:egress_allowlist_js.wasm:b \
              c:egress_allowlist_c.wasm:a go:egress_allowlist_go.wasm:b rust:egress_allowlist.wasm:a; do
    IFS=: read -r lang file cfg <<< "$step"
    [ -f "$POLICIES/$file" ] || fail "$POLICIES/$file is missing (scripts/setup.sh builds it)"
    t0=$(date +%s%N)
    out=$(EGRESS_WASM=$file swap_egress "$cfg") || fail "swap to $lang: $out"
    t1=$(date +%s%N)
    natgw policy list | grep -q "$file" || fail "policy list does not show $file after the swap"
    p=$(probe_8081)
    want=open; [ "$cfg" = b ] && want=refused
    echo "    $lang ($cfg): swap answered in $(( (t1 - t0) / 1000000 )) ms; new connection to 8081: $p"
    [ "$p" = "$want" ] || fail "$lang with config $cfg: a new connection to 8081 was $p, expected $want"
    [ -s "$WORK/upload.txt" ] && fail "the upload ended during the swap to $lang: $(cat "$WORK/upload.txt")"
  done
  touch "$WORK/stop-upload"
  wait $upid
  local sent recv
  read -r _ sent _ recv < "$WORK/upload.txt" || true
  echo "    upload: $(cat "$WORK/upload.txt")"
  [ -n "$recv" ] && [ "$recv" = "$sent" ] || fail "the upload across the swaps broke: $(cat "$WORK/upload.txt")"
  [ "$sent" -gt $((10 << 20)) ] || fail "the upload moved only $sent bytes"
  return 0
}

t_revalidate_closes_denied_flows() {
  echo_8081
  swap_egress a >/dev/null || fail "swap to A"
  # A long-lived connection to 8081, allowed by A; then B is swapped in with --revalidate.
  nsx $CLI1 python3 - > "$WORK/long.txt" 2>&1 <<'PY' &
import socket, time
s = socket.create_connection(("203.0.113.80", 8081), timeout=3)
for i in range(100):
    try:
        s.sendall(b"x"); assert s.recv(1) == b"x"
    except OSError as e:
        print("closed:", type(e).__name__); break
    time.sleep(0.1)
else:
    print("still open")
PY
  local cpid=$!
  sleep 1
  local out; out=$(swap_egress b --revalidate) || fail "swap: $out"
  echo "    $out"
  echo "$out" | grep -Eq "[1-9][0-9]* revoked" || fail "no flow revoked"
  wait $cpid
  grep -q "closed: ConnectionResetError" "$WORK/long.txt" || fail "the denied connection was not reset: $(cat "$WORK/long.txt")"
  [ "$(counter PolicyRevokedFlows)" -ge 1 ] || fail "PolicyRevokedFlows did not move"
  # An allowed connection (port 80) is untouched by a revalidation.
  nsx $CLI1 curl -s -m 5 -o /dev/null http://203.0.113.80/ip || fail "port 80 after revalidation"
  swap_egress a >/dev/null || fail "swap back"
}

t_sighup_reloads_policies() {
  echo_8081
  local cfg=$ROOT/examples/demo/natgw.toml.e2e i
  swap_egress a >/dev/null || fail "swap to A"
  [ "$(probe_8081)" = open ] || fail "8081 should be open under A"
  sed -i "s#policies/egress-allowlist.toml#policies/egress-allowlist-b.toml#" "$cfg"
  kill -HUP "$(cat "$RUN/natgw.pid")"
  for i in $(seq 50); do grep -q "SIGHUP: egress policy" "$RUN/natgw.log" && break; sleep 0.1; done
  grep "SIGHUP" "$RUN/natgw.log" | tail -1 | sed 's/^/    /'
  [ "$(probe_8081)" = refused ] || fail "8081 not refused after SIGHUP named variant B"
  # A config that names a broken policy config: the reload is refused, B keeps serving.
  printf 'default = "sometimes"\n' > "$WORK/badinit.toml"
  sed -i "s#$DEMO_POLICIES/egress-allowlist-b.toml#$WORK/badinit.toml#" "$cfg"
  kill -HUP "$(cat "$RUN/natgw.pid")"
  for i in $(seq 50); do grep -q "SIGHUP: egress not swapped" "$RUN/natgw.log" && break; sleep 0.1; done
  grep -q 'SIGHUP: egress not swapped.*sometimes' "$RUN/natgw.log" || fail "the refused reload was not explained"
  [ "$(probe_8081)" = refused ] || fail "B stopped serving after a refused reload"
  write_config "$cfg"
  kill -HUP "$(cat "$RUN/natgw.pid")"
  for i in $(seq 50); do [ "$(grep -c "SIGHUP: egress policy" "$RUN/natgw.log")" -ge 2 ] && break; sleep 0.1; done
  [ "$(probe_8081)" = open ] || fail "A not back after the reload"
}

t_flow_log_records_finished_flows() {
  # Fixed source ports pick this test's own flows out of those left by earlier tests.
  nsx $CLI1 curl -s -m 5 -o /dev/null --local-port 46201 http://203.0.113.80/ip || fail "curl"
  echo hi | nsx $CLI2 socat -t 1 - UDP4:203.0.113.7:7,sourceport=46202 >/dev/null || fail "udp"
  # A closed connection is recorded once it has been quiet for a second.
  sleep 2.5
  # Stopping ends every other flow; the flow-log thread writes them before natgw exits.
  "$TOPO" stop
  NATGW_CONFIG="$ROOT/examples/demo/natgw.toml.e2e" "$TOPO" start
  python3 - "$RUN/flows.jsonl" <<'PY' || fail "flow log"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert recs, "no records"
tcp = [r for r in recs if r["network.transport"] == "tcp" and r.get("source.port") == 46201]
udp = [r for r in recs if r["network.transport"] == "udp" and r.get("source.port") == 46202]
assert len(tcp) == 1 and len(udp) == 1, "want one record each for the curl and the UDP flow: %s %s" % (tcp, udp)
for r in recs:
    assert r["source.address"].endswith(".0"), "inside address not redacted: %s" % r
    assert r["gateway"] == "natgw-demo", r
    assert "natgw.flow.tcp_flags" not in r, "dropped field present: %s" % r
    assert r["natgw.flow.end"] >= r["natgw.flow.start"] >= r["natgw.flow.created"], r
    # Counts are per window: only a flow's first window must have seen a packet. A later
    # window may be empty (an idle flow's last record, written to say why and when it ended).
    if r["natgw.flow.start"] == r["natgw.flow.created"]:
        assert r["natgw.flow.packets"] >= 1, "a first window without packets: %s" % r
t = tcp[-1]
assert t["natgw.flow.packets"] >= 6 and t["natgw.flow.bytes.in"] > 0, "curl's packets and bytes: %s" % t
assert t["natgw.nat.source.address"] == "198.51.100.10" and t["natgw.nat.pool"] == "pool-a", t
assert t["network.interface.name"] == "in1" and t["natgw.flow.action"] == "ACCEPT", t
assert t["natgw.flow.end_reason"] == "closed", "curl closes its connection: %s" % t
u = udp[-1]
assert u["natgw.nat.source.address"] == "198.51.100.11" and u["natgw.nat.pool"] == "pool-b", u
assert u["natgw.flow.end_reason"] == "shutdown", u
assert u["natgw.flow.packets.out"] == 1 and u["natgw.flow.packets.in"] == 1, "one datagram and its echo: %s" % u
print("    %d records; e.g. %s" % (len(recs), json.dumps(t)[:240]))
PY
}

# ---------------------------------------------------------------- telemetry: OTLP to a real collector
# topology.sh runs the collector (scripts/collector.sh) in the gateway namespace on
# 127.0.0.1:4317 (gRPC) and :4318 (HTTP); it writes what it receives to $RUN/otel/.
COLLECTOR=$ROOT/scripts/collector.sh

# otel_wait SECONDS PYTHON-EXPRESSION: waits until the expression, over `recs` (every flow
# record the collector received: its attributes, plus _resource and _event), is true.
# Prints the matching records' count, or the last few records on failure.
otel_wait() {
  python3 - "$RUN/otel/logs.jsonl" "$1" "$2" <<'PY'
import json, sys, time
path, secs, expr = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def val(v):
    if "intValue" in v: return int(v["intValue"])
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v: return v[k]
def load():
    recs = []
    try: lines = open(path).read().splitlines()
    except FileNotFoundError: return recs
    for l in lines:
        try: d = json.loads(l)
        except ValueError: continue   # a line being written
        for rl in d.get("resourceLogs", []):
            res = {a["key"]: val(a["value"]) for a in rl.get("resource", {}).get("attributes", [])}
            for sl in rl.get("scopeLogs", []):
                for r in sl.get("logRecords", []):
                    a = {x["key"]: val(x["value"]) for x in r.get("attributes", [])}
                    a["_resource"], a["_event"] = res, r.get("eventName")
                    recs.append(a)
    return recs
end = time.time() + secs
while True:
    recs = load()
    try:
        ok = eval(expr)
    except Exception as e:
        ok = False
    if ok:
        sys.exit(0)
    if time.time() > end:
        print("    collector has %d records; last: %s" % (len(recs), [ {k: v for k, v in r.items() if k != "_resource"} for r in recs[-2:]]))
        sys.exit(1)
    time.sleep(0.2)
PY
}

# Restarts natgw with OTLP settings: otlp_restart KEY=VALUE...
otlp_restart() {
  write_config "$WORK/otlp.toml" "$@"
  restart_natgw "$WORK/otlp.toml"
}

t_otlp_grpc_record_has_the_connections_addresses_ports_and_bytes() {
  otlp_restart
  # Without a flow-log policy everything is exported as the gateway saw it.
  natgw policy remove --hook flow-log >/dev/null || fail "policy remove"
  nsx $CLI1 timeout 10 tcpdump -i c1 -nn -v -l 'tcp port 45123' > "$WORK/cap.txt" 2>/dev/null &
  sleep 1
  seen=$(nsx $CLI1 curl -s -m 5 --local-port 45123 http://203.0.113.80/ip) || fail "curl"
  sleep 1.5; pkill -f "tcpdump -i c1 -nn -v -l tcp port 45123"; sleep 0.3
  # What the client's own interface carried, by direction: packets and IP bytes.
  read -r pout bout pin bin < <(python3 - "$WORK/cap.txt" <<'PY'
import re, sys
po = bo = pi = bi = 0
text = open(sys.argv[1]).read()
for m in re.finditer(r"length (\d+)\)\s+(\S+) > (\S+):", text):
    n, src = int(m.group(1)), m.group(2)
    if src.startswith("10.10.1.10."): po += 1; bo += n
    else: pi += 1; bi += n
print(po, bo, pi, bi)
PY
)
  ext_port=${seen##*:}
  echo "    curl seen as $seen; capture: out $pout pkts/$bout B, in $pin pkts/$bin B"
  [ "${pout:-0}" -gt 0 ] || fail "capture saw nothing"
  otel_wait 15 "any(r.get('source.port') == 45123 for r in recs)" || fail "no record for the curl at the collector"
  otel_wait 1 "[r for r in recs if r.get('source.port') == 45123 and
     r['source.address'] == '10.10.1.10' and r['destination.address'] == '203.0.113.80' and r['destination.port'] == 80 and
     r['natgw.nat.source.address'] == '198.51.100.10' and r['natgw.nat.source.port'] == $ext_port and
     r['network.transport'] == 'tcp' and r['natgw.flow.action'] == 'ACCEPT' and r['natgw.flow.end_reason'] == 'closed' and
     r['natgw.flow.packets.out'] == $pout and r['natgw.flow.bytes.out'] == $bout and
     r['natgw.flow.packets.in'] == $pin and r['natgw.flow.bytes.in'] == $bin and
     r['natgw.policy.verdict'] == 'allow' and r['natgw.policy.generation'] >= 1 and
     r['_event'] == 'natgw.flow' and r['_resource']['service.name'] == 'natgw' and
     r['_resource']['service.instance.id'] == 'natgw-demo']" || fail "the record does not match the connection"
  [ "$(counter OtlpRecordsDropped)" = 0 ] || fail "drops"
  [ "$(counter FlowLogRecords)" -ge 1 ] && [ "$(counter OtlpRecordsSent)" -ge 1 ] || fail "FlowLogRecords/OtlpRecordsSent"
  # The counters reached the collector as OTLP metrics, and Prometheus serves them.
  # (The collector's files keep what earlier gateways sent: wait for this one's export.)
  for i in $(seq 60); do [ "$(counter OtlpMetricExports)" -ge 1 ] && break; sleep 0.2; done
  [ "$(counter OtlpMetricExports)" -ge 1 ] || fail "no metric export within 12 s"
  [ "$(counter OtlpMetricExportErrors)" = 0 ] || fail "metric export errors: $(counter OtlpMetricExportErrors)"
  grep -q '"name":"PacketsDropCount"' "$RUN/otel/metrics.jsonl" || fail "no OTLP metrics at the collector"
  prom=$(nsx $GW curl -s -m 3 http://127.0.0.1:9108/metrics) || fail "prometheus endpoint"
  sent=$(awk '$1 == "natgw_OtlpRecordsSent_total" {print $2}' <<< "$prom")
  [ "${sent:-0}" -ge 1 ] || fail "prometheus: OtlpRecordsSent $sent"
  grep -q '^natgw_PacketsDropCount_total{reason="policy-rejected"} ' <<< "$prom" || fail "prometheus: no drop reasons"
  nsx $INET curl -s -m 2 http://198.51.100.10:9108/metrics >/dev/null && fail "the metrics endpoint answers from outside"
  true
}

t_otlp_http_reject_record_and_follow() {
  otlp_restart 'otlp.endpoint="http://127.0.0.1:4318"' 'otlp.protocol="http/protobuf"' 'otlp.compression="none"'
  natgw flows --follow > "$WORK/follow.jsonl" 2>&1 &
  local fpid=$!
  sleep 0.5
  nsx $CLI2 curl -s -m 3 --local-port 45200 http://203.0.113.80:8080/ && fail "8080 is not allowed"
  nsx $CLI2 curl -s -m 3 --local-port 45201 -o /dev/null http://203.0.113.80/ip || fail "curl"
  otel_wait 15 "any(r.get('source.port') == 45200 and r['natgw.flow.action'] == 'REJECT' and
     r['natgw.flow.end_reason'] == 'refused' and r['natgw.policy.verdict'] == 'reject' and
     'natgw.nat.source.address' not in r for r in recs)" || fail "no REJECT record over HTTP"
  otel_wait 15 "any(r.get('source.port') == 45201 and r['natgw.flow.action'] == 'ACCEPT' and
     r['natgw.nat.source.address'] == '198.51.100.11' and r['natgw.nat.pool'] == 'pool-b' for r in recs)" \
    || fail "no ACCEPT record over HTTP"
  # flows --follow saw the same records, as they were emitted.
  for i in $(seq 25); do grep -q '"source.port":45201' "$WORK/follow.jsonl" && break; sleep 0.2; done
  kill $fpid 2>/dev/null
  python3 - "$WORK/follow.jsonl" <<'PY' || fail "flows --follow"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert any(r["natgw.flow.action"] == "REJECT" and r["source.port"] == 45200 for r in recs), recs
assert any(r["natgw.flow.action"] == "ACCEPT" and r["source.port"] == 45201 for r in recs), recs
PY
  grep -q "otlp: exporting flow records and metrics to http://127.0.0.1:4318 over HTTP/protobuf" "$RUN/natgw.log" \
    || fail "the log does not say where records go"
}

t_collector_outage_records_arrive_after_it_returns() {
  otlp_restart 'otlp.retry_max_ms=2000'
  "$COLLECTOR" stop "$RUN/otel"
  local t0=$SECONDS
  for i in $(seq 20); do
    nsx $CLI1 curl -s -m 3 --local-port $((46000 + i)) -o /dev/null http://203.0.113.80/ip || fail "curl $i while the collector is down"
  done
  # The gateway keeps forwarding; the exporter keeps failing and retrying.
  while [ $((SECONDS - t0)) -lt 30 ]; do sleep 1; done
  nsx $CLI1 curl -s -m 3 -o /dev/null http://203.0.113.80/ip || fail "forwarding stopped during the outage"
  retries=$(counter OtlpExportRetries); queued=$(counter OtlpRecordsQueued)
  echo "    after 30 s down: retries $retries, queued $queued"
  [ "$retries" -ge 3 ] || fail "retries $retries"
  [ "$queued" -ge 20 ] || fail "queued $queued: the outage's records are not held"
  grep -q "otlp: log export to http://127.0.0.1:4317 failed" "$RUN/natgw.log" || fail "no log line for the failure"
  "$COLLECTOR" start "$RUN/otel" "$GW" || fail "collector restart"
  otel_wait 20 "set(range(46001, 46021)) <= {r.get('source.port') for r in recs}" || fail "records of the outage did not arrive"
  [ "$(counter OtlpRecordsDropped)" = 0 ] || fail "dropped $(counter OtlpRecordsDropped) within the buffer"
  grep -q "accepts exports again" "$RUN/natgw.log" || fail "no log line for the recovery"
}

t_past_the_buffer_drops_are_counted() {
  otlp_restart 'otlp.buffer_records=5' 'otlp.batch=1'
  "$COLLECTOR" stop "$RUN/otel"
  for i in $(seq 12); do
    nsx $CLI1 curl -s -m 2 --local-port $((47000 + i)) http://203.0.113.80:8080/ && fail "8080 allowed"
  done
  # FlowLogExported counts a batch once every sink (the OTLP queue among them) has it.
  for i in $(seq 50); do [ "$(counter FlowLogExported)" -ge 12 ] && break; sleep 0.2; done
  dropped=$(counter OtlpRecordsDropped)
  "$COLLECTOR" start "$RUN/otel" "$GW" || fail "collector restart"
  otel_wait 20 "len({r['source.port'] for r in recs if 47000 < r.get('source.port', 0) <= 47012}) + $dropped == 12" \
    || fail "arrived + dropped ($dropped) is not the 12 records"
  echo "    12 records, buffer 5 + 1 in flight: $dropped dropped and counted, $((12 - dropped)) delivered"
  [ "$dropped" -ge 6 ] || fail "dropped $dropped"
}

t_bad_collectors_are_logged_counted_and_forwarding_goes_on() {
  # TLS to a plaintext collector.
  otlp_restart 'otlp.endpoint="https://127.0.0.1:4317"' 'otlp.retry_max_ms=500'
  nsx $CLI1 curl -s -m 3 -o /dev/null http://203.0.113.80/ip || fail "forwarding with a TLS failure"
  for i in $(seq 50); do [ "$(counter OtlpExportRetries)" -ge 2 ] && break; sleep 0.2; done
  [ "$(counter OtlpExportRetries)" -ge 2 ] || fail "TLS failures not counted"
  grep -q "otlp: log export to https://127.0.0.1:4317 failed" "$RUN/natgw.log" || fail "no log line for the TLS failure"
  # A "collector" that answers garbage.
  nsx $GW socat TCP-LISTEN:4319,reuseaddr,fork SYSTEM:'echo garbage; sleep 0.2' >/dev/null 2>&1 &
  local gpid=$!
  otlp_restart 'otlp.endpoint="http://127.0.0.1:4319"' 'otlp.protocol="http/protobuf"' 'otlp.retry_max_ms=500'
  nsx $CLI1 curl -s -m 3 -o /dev/null http://203.0.113.80/ip || fail "forwarding with a garbage collector"
  for i in $(seq 50); do [ "$(counter OtlpExportRetries)" -ge 2 ] && break; sleep 0.2; done
  kill $gpid 2>/dev/null; pkill -f "TCP-LISTEN:4319" 2>/dev/null
  [ "$(counter OtlpExportRetries)" -ge 2 ] || fail "garbage answers not counted"
  grep "otlp: log export to http://127.0.0.1:4319/v1/logs failed" "$RUN/natgw.log" | head -1 | sed 's/^/    /'
  grep -q "otlp: log export to http://127.0.0.1:4319/v1/logs failed" "$RUN/natgw.log" || fail "no log line for garbage"
  # A wrong endpoint in the config is refused at start, naming the key and the value.
  write_config "$WORK/bad-otlp.toml" 'otlp.endpoint="collector:4317"'
  out=$(ip netns exec $GW "$NATGW_BIN" run --config "$WORK/bad-otlp.toml" 2>&1) && fail "started with a bad endpoint"
  grep -q 'otlp.endpoint.*collector:4317' <<< "$out" || fail "unclear error: $out"
  restart_natgw "$ROOT/examples/demo/natgw.toml.e2e"
}

ALL=(t_curl_sees_external_address t_udp_echo t_ping t_traceroute_shows_gateway_hop
     t_same_source_port_distinct_mappings t_fragments_pass_both_ways t_thousand_parallel_flows t_unsolicited_inbound_never_reaches_clients
     t_pmtu_upload_through_lower_mtu t_pmtu_download_via_gateway_icmp t_gateway_fragments_non_df_datagrams t_udp_mapping_expires
     t_malformed_frames_are_counted_not_fatal t_status_and_stats t_bad_config_and_startup_errors
     t_egress_allowlist_allows_and_rejects t_subnets_leave_from_their_pools t_bad_policies_are_refused_and_old_one_serves
     t_misbehaving_policy_is_contained t_hot_swap_under_load t_hot_swap_across_languages t_revalidate_closes_denied_flows t_sighup_reloads_policies
     t_flow_log_records_finished_flows
     t_otlp_grpc_record_has_the_connections_addresses_ports_and_bytes t_otlp_http_reject_record_and_follow
     t_collector_outage_records_arrive_after_it_returns t_past_the_buffer_drops_are_counted
     t_bad_collectors_are_logged_counted_and_forwarding_goes_on
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
