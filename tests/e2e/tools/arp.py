#!/usr/bin/python3
"""ARP a test sends on a link it shares with the gateway.

usage: arp.py IFACE announce IP MAC COUNT INTERVAL_S
         gratuitous ARP as keepalived sends it after a failover: a broadcast request for
         IP from IP at MAC
       arp.py IFACE spoof IP MAC COUNT INTERVAL_S
         a spoofer claiming IP for MAC, alternating the two gratuitous forms (a request as
         above, and a broadcast reply "IP is at MAC")
       arp.py IFACE askers TARGET FIRST LAST
         "who has TARGET" from every address FIRST..LAST (last octet) of TARGET's /24, each
         from a MAC of its own
"""
import sys

from scapy.all import ARP, Ether, conf, sendp

conf.verb = 0
iface, mode = sys.argv[1], sys.argv[2]
if mode in ("announce", "spoof"):
    ip, mac, count, interval = sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
    bcast = "ff:ff:ff:ff:ff:ff"
    request = Ether(src=mac, dst=bcast) / ARP(op=1, hwsrc=mac, psrc=ip, hwdst=bcast, pdst=ip)
    reply = Ether(src=mac, dst=bcast) / ARP(op=2, hwsrc=mac, psrc=ip, hwdst=bcast, pdst=ip)
    forms = [request] if mode == "announce" else [request, reply]
    sendp([forms[i % len(forms)] for i in range(count)], iface=iface, inter=interval)
elif mode == "askers":
    target, first, last = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    net = target.rsplit(".", 1)[0]
    frames = []
    for i in range(first, last + 1):
        mac = "02:a5:00:00:%02x:%02x" % (i >> 8, i & 0xff)
        frames.append(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=f"{net}.{i}", pdst=target))
    sendp(frames, iface=iface)
else:
    sys.exit(f"arp.py: unknown mode {mode}")
