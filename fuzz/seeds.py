#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets: valid frames of every kind natgw translates,
in the record format of fuzz_targets/translate.rs ([ctl][len, 2 bytes][frame]); and for
the dns target, DNS messages (a directory named dns gets only those)."""
import os
import struct, sys

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def ip(src, dst, proto, l4, ttl=64, ident=1, frag=0x4000):
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, ttl, proto, 0, bytes(src), bytes(dst)))
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x0a\x08\x00" + bytes(h) + l4

def l4sum(src, dst, proto, seg):
    return csum(bytes(src) + bytes(dst) + struct.pack("!BBH", 0, proto, len(seg)) + seg)

def tcp(src, sp, dst, dp, flags, seq=1000, ack=0, opts=b"", data=b"", win=65535):
    assert len(opts) % 4 == 0
    seg = bytearray(struct.pack("!HHIIBBHHH", sp, dp, seq, ack, (5 + len(opts) // 4) << 4, flags, win, 0, 0) + opts + data)
    seg[16:18] = struct.pack("!H", l4sum(src, dst, 6, bytes(seg)))
    return ip(src, dst, 6, bytes(seg))

def udp(src, sp, dst, dp, payload=b"hello"):
    seg = bytearray(struct.pack("!HHHH", sp, dp, 8 + len(payload), 0) + payload)
    seg[6:8] = struct.pack("!H", l4sum(src, dst, 17, bytes(seg)))
    return ip(src, dst, 17, bytes(seg), frag=0)

def icmp(src, dst, t, code, rest, body, ttl=64):
    m = bytearray(bytes([t, code, 0, 0]) + rest + body)
    m[2:4] = struct.pack("!H", csum(bytes(m)))
    return ip(src, dst, 1, bytes(m), ttl=ttl, frag=0)

def rec(ctl, frame):
    return bytes([ctl]) + struct.pack("!H", len(frame)) + frame

C, S, E = [10, 10, 1, 10], [203, 0, 113, 80], [198, 51, 100, 10]
syn = tcp(C, 40000, S, 80, 0x02)
# Linux's SYN options (MSS, SACK permitted, timestamps, window scale 7), and an ACK's
# NOP, NOP, SACK block.
SYN_OPTS = bytes([2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7])
SACK_OPTS = bytes([1, 1, 5, 10]) + struct.pack("!II", 2001, 3001)
seeds = {
    # A connection window tracking follows: handshake with options, data both ways, a
    # SACK, an old retransmission, an off-sequence reset (challenge-ACK case), FINs.
    "tcp_tracked": rec(0, tcp(C, 40000, S, 80, 0x02, 1000, 0, SYN_OPTS, win=64240))
    + rec(1, tcp(S, 80, E, 1024, 0x12, 5000, 1001, SYN_OPTS, win=65160))
    + rec(0, tcp(C, 40000, S, 80, 0x10, 1001, 5001, win=502))
    + rec(0, tcp(C, 40000, S, 80, 0x18, 1001, 5001, data=b"x" * 1000, win=502))
    + rec(1, tcp(S, 80, E, 1024, 0x10, 5001, 2001, SACK_OPTS, win=509))
    + rec(1, tcp(S, 80, E, 1024, 0x18, 5001, 2001, data=b"y" * 200, win=509))
    + rec(0, tcp(C, 40000, S, 80, 0x18, 1001, 5201, data=b"x" * 1000, win=502))
    + rec(1, tcp(S, 80, E, 1024, 0x04, 9000, 0))
    + rec(0, tcp(C, 40000, S, 80, 0x11, 2001, 5201, win=502))
    + rec(1, tcp(S, 80, E, 1024, 0x11, 5201, 2002, win=509)),
    "tcp_handshake": rec(0, syn) + rec(1, tcp(S, 80, E, 1024, 0x12, 5000, 1001)) + rec(0, tcp(C, 40000, S, 80, 0x10, 1001, 5001)) + rec(0, tcp(C, 40000, S, 80, 0x11, 1001, 5001)),
    "udp_echo": rec(0, udp(C, 5000, S, 7)) + rec(1, udp(S, 7, E, 5000)),
    # Flows handed over (control 0xff; its bytes are XOR-ed into the exported records),
    # then used from both sides.
    "handed_over": rec(0, syn) + rec(1, tcp(S, 80, E, 1024, 0x12, 5000, 1001)) + rec(0, udp(C, 5000, S, 7))
    + rec(0xff, b"") + rec(0, tcp(C, 40000, S, 80, 0x10, 1001, 5001)) + rec(1, udp(S, 7, E, 5000))
    + rec(0xff, bytes([0, 0, 0, 0, 0, 0, 0, 0, 10])) + rec(1, tcp(S, 80, E, 1024, 0x10, 5001, 1001)),
    # A connection and a UDP flow replicated, then a failover (0xfe) with and without
    # damage to the replicated events, and the flows carrying on at the standby.
    "failed_over": rec(0, syn) + rec(1, tcp(S, 80, E, 1024, 0x12, 5000, 1001)) + rec(0, udp(C, 5000, S, 7))
    + rec(0xfe, b"") + rec(0, tcp(C, 40000, S, 80, 0x10, 1001, 5001)) + rec(1, udp(S, 7, E, 5000))
    + rec(0xfe, bytes([0, 0, 0, 0, 0, 0, 0, 0, 10])) + rec(1, tcp(S, 80, E, 1024, 0x10, 5001, 1001)),
    # The same flows, then a restart from the journal (0xfd) with and without damage to
    # it, and the flows carrying on at the successor.
    "restarted": rec(0, syn) + rec(1, tcp(S, 80, E, 1024, 0x12, 5000, 1001)) + rec(0, udp(C, 5000, S, 7))
    + rec(0xfd, b"") + rec(0, tcp(C, 40000, S, 80, 0x10, 1001, 5001)) + rec(1, udp(S, 7, E, 5000))
    + rec(0xfd, bytes([0, 0, 0, 0, 0, 0, 0, 0, 10])) + rec(1, tcp(S, 80, E, 1024, 0x10, 5001, 1001)),
    # A pre-copy (0xfc), traffic meanwhile, then the cutover's delta (0xff).
    "precopied": rec(0, syn) + rec(1, tcp(S, 80, E, 1024, 0x12, 5000, 1001)) + rec(0, udp(C, 5000, S, 7))
    + rec(0xfc, b"") + rec(0, tcp(C, 40000, S, 80, 0x10, 1001, 5001)) + rec(0, udp(C, 5001, S, 7))
    + rec(0xff, b"") + rec(1, udp(S, 7, E, 5000)) + rec(1, tcp(S, 80, E, 1024, 0x10, 5001, 1001)),
    "ping": rec(0, icmp(C, S, 8, 0, b"\x03\x09\0\1", b"abcdefgh")) + rec(1, icmp(S, E, 0, 0, b"\x03\x09\0\1", b"abcdefgh")),
    "frag_needed": rec(0, syn) + rec(1, icmp([198, 51, 100, 1], E, 3, 4, b"\0\0\x05\0", tcp(E, 1024, S, 80, 0x02)[14:44])),
    "ttl1": rec(0, icmp(C, S, 8, 0, b"\0\1\0\1", b"x", ttl=1)),
    "fragments": rec(0, ip(C, S, 17, udp(C, 5000, S, 7, b"A" * 40)[34:58], ident=7, frag=0x2000)) + rec(0, ip(C, S, 17, b"B" * 24, ident=7, frag=3)),
    "own_ping": rec(0, icmp(C, [10, 10, 1, 1], 8, 0, b"\0\1\0\1", b"x")),
    # An inside router reports an error about the server's reply: it must leave from the
    # flow's external address (the translate target's no-private-source invariant).
    # (The translate target's pool is ports 1024-1100: the SYN's mapping gets 1024.)
    "inside_router_error": rec(0, syn) + rec(1, tcp(S, 80, E, 1024, 0x12))
    + rec(0, icmp([10, 10, 1, 254], S, 11, 0, b"\0\0\0\0", tcp(S, 80, C, 40000, 0x12)[14:44])),
}

def dname(text):
    return b"".join(bytes([len(l)]) + l.encode() for l in text.split(".") if l) + b"\0"

def rr(owner, rtype, rdata, ttl=300):
    # owner: wire bytes (a name, or a compression pointer such as b"\xc0\x0c").
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata

def dns(ident, flags, qname, qtype, answers=(), additional=(), ancount=None):
    an = len(answers) if ancount is None else ancount
    return (struct.pack("!HHHHHH", ident, flags, 1, an, 0, len(additional)) + dname(qname) + struct.pack("!HH", qtype, 1)
            + b"".join(answers) + b"".join(additional))

PTR = b"\xc0\x0c"  # the question's name
OPT = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
# "www.example.com" is at 12, so "example.com" at 16; the CNAME data below starts at 45.
dns_seeds = {
    "query_a": dns(0x1a2b, 0x0120, "github.com", 1, additional=[OPT]),
    "answer_a": dns(0x1a2b, 0x8180, "github.com", 1, [rr(PTR, 1, bytes([140, 82, 113, 4]), 60)], [OPT]),
    "answer_aaaa": dns(0x1234, 0x8180, "example.com", 28, [rr(PTR, 28, bytes.fromhex("20010db8000000000000000000000001"), 60)]),
    "cname_chain": dns(0xbeef, 0x8180, "www.example.com", 1,
                       [rr(PTR, 5, dname("example.net")), rr(b"\xc0\x2d", 1, bytes([192, 0, 2, 7]), 3600)]),
    "cname_compressed": dns(0xbeef, 0x8180, "www.Example.COM", 1,
                            [rr(PTR, 5, b"\x03cdn\xc0\x10"), rr(b"\xc0\x2d", 1, bytes([192, 0, 2, 8]))]),
    "nxdomain": dns(7, 0x8183, "nope.example", 1),
    "many": dns(9, 0x8180, "many.example", 1, [rr(PTR, 1, bytes([10, 0, 0, i])) for i in range(70)], ancount=1000),
    "mx_and_a": dns(3, 0x8180, "example.org", 15, [rr(PTR, 15, b"\x00\x0a\x04mail" + PTR), rr(b"\x04mail" + PTR, 1, bytes([10, 1, 2, 3]))]),
}

# The translate target binds names from answers of 203.0.113.80 (S): a lookup, its
# answer, and the SYN to the address it named.
seeds["dns_binding"] = (rec(0, udp(C, 5353, S, 53, dns_seeds["query_a"])) + rec(1, udp(S, 53, E, 1024, dns_seeds["answer_a"]))
                        + rec(0, tcp(C, 40001, [140, 82, 113, 4], 443, 0x02)))

def op(way, syn=False, fin=False, rst=False, delta=0, payload=b""):
    """A dns_stream op: way 0 (query) or 1 (answer), flags, sequence delta, payload
    (deltas from 64 on, or below 0, set the op's bit 7: taken whole, not modulo 64)."""
    flags = way | (2 if syn else 0) | (4 if fin else 0) | (8 if rst else 0) | (0 if 0 <= delta < 64 else 0x80)
    return bytes([flags]) + struct.pack(">IB", delta & 0xffffffff, len(payload)) + payload


def framed(*msgs):
    return b"".join(struct.pack(">H", len(m)) + m for m in msgs)


# The dns_stream target: a TCP lookup, its answer cut in the length prefix, a
# retransmission, a gap, and both FINs.
q, ans = framed(dns_seeds["query_a"]), framed(dns_seeds["answer_a"])
stream_seeds = {
    "lookup": op(0, syn=True) + op(1, syn=True, delta=100) + op(0, delta=1, payload=q)
              + op(1, delta=101, payload=ans[:1]) + op(1, delta=102, payload=ans[1:])
              + op(0, fin=True, delta=1 + len(q)) + op(1, fin=True, delta=101 + len(ans)),
    "retransmit_overlap": op(0, syn=True) + op(0, delta=1, payload=q[:10]) + op(0, delta=1, payload=q)
                          + op(0, delta=5, payload=q[4:]),
    "gap": op(0, syn=True) + op(0, delta=3, payload=q[2:]) + op(0, delta=1, payload=q),
    "wrapping": op(0, syn=True, delta=-3) + op(0, delta=-2, payload=q + q),
    "resets": op(0, syn=True) + op(1, syn=True, delta=100) + op(1, rst=True, delta=150)
              + op(1, delta=101, payload=ans) + op(1, rst=True, delta=101 + len(ans)),
    "new_syn": op(0, syn=True) + op(1, syn=True, delta=100) + op(0, syn=True, delta=500)
               + op(1, delta=101, payload=ans) + op(1, syn=True, delta=900) + op(1, delta=901, payload=ans),
}

for d in sys.argv[1:]:
    target = os.path.basename(d.rstrip("/"))
    os.makedirs(d, exist_ok=True)
    if target == "dns_stream":
        for name, data in stream_seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        continue
    if target == "dns":
        for name, data in dns_seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        continue
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            # The translate target reads its first byte as options.
            f.write((b"\x00" + data) if target == "translate" else data[3:])
