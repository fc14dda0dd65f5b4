#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets: valid frames of every kind natgw translates,
in the record format of fuzz_targets/translate.rs ([ctl][len/4][frame, padded to len])."""
import os, struct, sys

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

def tcp(src, sp, dst, dp, flags):
    seg = bytearray(struct.pack("!HHIIBBHHH", sp, dp, 1000, 0, 0x50, flags, 65535, 0, 0))
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
    # Frames over 60 bytes must be a multiple of 4 long: natgw refuses Ethernet padding
    # beyond the minimum frame, and the record pads to 4.
    assert len(frame) <= 60 or len(frame) % 4 == 0, len(frame)
    n = (len(frame) + 3) // 4
    return bytes([ctl, n]) + frame + b"\0" * (n * 4 - len(frame))

C, S, E = [10, 10, 1, 10], [203, 0, 113, 80], [198, 51, 100, 10]
syn = tcp(C, 40000, S, 80, 0x02)
seeds = {
    "tcp_handshake": rec(0, syn) + rec(1, tcp(S, 80, E, 40000, 0x12)) + rec(0, tcp(C, 40000, S, 80, 0x10)) + rec(0, tcp(C, 40000, S, 80, 0x11)),
    "udp_echo": rec(0, udp(C, 5000, S, 7)) + rec(1, udp(S, 7, E, 5000)),
    "ping": rec(0, icmp(C, S, 8, 0, b"\x03\x09\0\1", b"abcdefgh")) + rec(1, icmp(S, E, 0, 0, b"\x03\x09\0\1", b"abcdefgh")),
    "frag_needed": rec(0, syn) + rec(1, icmp([198, 51, 100, 1], E, 3, 4, b"\0\0\x05\0", tcp(E, 40000, S, 80, 0x02)[14:44])),
    "ttl1": rec(0, icmp(C, S, 8, 0, b"\0\1\0\1", b"x", ttl=1)),
    "fragments": rec(0, ip(C, S, 17, udp(C, 5000, S, 7, b"A" * 40)[34:58], ident=7, frag=0x2000)) + rec(0, ip(C, S, 17, b"B" * 24, ident=7, frag=3)),
    "own_ping": rec(0, icmp(C, [10, 10, 1, 1], 8, 0, b"\0\1\0\1", b"x")),
    # An inside router reports an error about the server's reply: it must leave from the
    # flow's external address (the translate target's no-private-source invariant).
    # (The translate target's pool is ports 1024-1100: the SYN's mapping gets 1024.)
    "inside_router_error": rec(0, syn) + rec(1, tcp(S, 80, E, 1024, 0x12))
    + rec(0, icmp([10, 10, 1, 254], S, 11, 0, b"\0\0\0\0", tcp(S, 80, C, 40000, 0x12)[14:44])),
}
for d in sys.argv[1:]:
    target = os.path.basename(d.rstrip("/"))
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            # The translate target reads its first byte as options.
            f.write((b"\x00" + data) if target == "translate" else data[2:])
