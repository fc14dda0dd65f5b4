#!/usr/bin/env python3
"""A UDP echo server (RFC 862) for the demo and tests: echoes every datagram to its sender
and logs the sender's address, so a test can see which address natgw translated to."""
import socket
import sys

addr, port = sys.argv[1], int(sys.argv[2])
log = open(sys.argv[3], "a", buffering=1) if len(sys.argv) > 3 else None
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((addr, port))
while True:
    data, peer = s.recvfrom(65535)
    # Log first: a test that got its echo back may read the log at once.
    if log:
        log.write(f"{peer[0]}:{peer[1]} {len(data)}\n")
    s.sendto(data, peer)
