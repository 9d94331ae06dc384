"""Publishes QoS 1 at a steady rate and reports the longest wait for a PUBACK (the write gap)
around an event the caller causes, such as stopping the router that leads.

Usage: write-gap.py HOST PORT SECONDS RATE   (Debian's python3-paho-mqtt)
Prints: sent=N acked=N max_ack_ms=MS p50_ms=MS p99_ms=MS
"""
import sys, time
import paho.mqtt.client as mqtt
host, port, seconds, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sent, acked = {}, {}
c = mqtt.Client(client_id="gap-probe", protocol=mqtt.MQTTv5)
c.on_publish = lambda cl, u, mid, *a: acked.setdefault(mid, time.monotonic())
c.connect(host, port, 30)
c.loop_start()
end = time.monotonic() + seconds
nxt = time.monotonic()
while time.monotonic() < end:
    now = time.monotonic()
    if now >= nxt:
        info = c.publish("gap/t", "x", 1)
        sent[info.mid] = now
        nxt += 1.0 / rate
    time.sleep(0.0005)
time.sleep(5)
c.loop_stop()
lat = sorted((acked[m] - sent[m]) for m in sent if m in acked)
print("sent=%d acked=%d max_ack_ms=%.0f p50_ms=%.1f p99_ms=%.1f" % (len(sent), len(acked), lat[-1]*1000, lat[len(lat)//2]*1000, lat[int(len(lat)*0.99)]*1000))
