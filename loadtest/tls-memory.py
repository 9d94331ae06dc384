"""Measures what an idle MQTT connection costs a broker, over TLS or not:
opens N connections (a v3.1.1 CONNECT each, CONNACK awaited), holds them,
and reports the broker's resident memory before and after. Loopback only.

Usage: tls-memory.py PID PORT N tcp|tls [CA_FILE]
"""

import socket
import ssl
import sys
import time


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")


pid, port, n, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
context = ssl.create_default_context(cafile=sys.argv[5]) if mode == "tls" else None
connect = bytes([0x10, 0x0C, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0])
time.sleep(0.5)
before = rss(pid)
held = []
for _ in range(n):
    sock = socket.create_connection(("127.0.0.1", port))
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.sendall(connect)
    sock.recv(4)
    held.append(sock)
time.sleep(1.0)
after = rss(pid)
print(f"{mode} connections={n} rss_before={before} rss_after={after} per_connection={(after - before) / n:.0f}")
