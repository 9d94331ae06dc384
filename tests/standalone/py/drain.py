"""A gateway drained under load: persistent subscribers move to another gateway, nothing is lost.

Usage: drain.py HOST_A PORT_A HOST_B:PORT_B PID_A SUBSCRIBERS MESSAGES

SUBSCRIBERS v5 clients with persistent sessions subscribe to `drain/#` at QoS 1 on gateway A. A
publisher on gateway B publishes MESSAGES QoS 1 messages, one every 5 ms; after a fifth of them
it sends SIGTERM to gateway A (PID_A). A subscriber told to leave records the DISCONNECT's
reason code and reconnects to gateway B with its session. At the end each subscriber reports what
it missed of the acknowledged messages.

Records: `published acked=N`, then per subscriber
`subscriber id=ID reason=CODE present=0|1 got=N missing=N`, then `drain spread_ms=MS` (time
from the first to the last DISCONNECT).
"""

import os
import signal
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common import Peer, emit, fail, pump, settle

host, port_a, pid_a = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
host_b, port_b = sys.argv[3].rsplit(":", 1)
port_b = int(port_b)
count, messages = int(sys.argv[5]), int(sys.argv[6])


class Mover(Peer):
    """A subscriber that notes when and why it was told to leave."""

    def __init__(self, client_id):
        super().__init__("5", client_id, clean=False)
        self.left_at = None
        self.moved = None

    def _on_disconnect(self, client, userdata, reason, properties=None):
        super()._on_disconnect(client, userdata, reason, properties)
        if self.left_at is None:
            self.left_at = time.monotonic()


def connect_properties():
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 300
    return properties


subscribers = [Mover("drained-%d" % n) for n in range(count)]
for peer in subscribers:
    peer.connect(host, port_a, session_expiry=300)
    peer.subscribe("drain/#", 1)

publisher = Peer("5", "drain-publisher")
publisher.connect(host_b, port_b)
payloads = {}
sent = 0
next_at = time.monotonic()
deadline = time.monotonic() + 60
everyone = subscribers + [publisher]
while sent < messages or len(publisher.completed) < sent:
    if time.monotonic() > deadline:
        fail("publishing took over 60 s")
    if sent < messages and time.monotonic() >= next_at:
        payloads[publisher.publish("drain/t", "m%d" % sent, 1)] = "m%d" % sent
        sent += 1
        next_at += 0.005
        if sent == messages // 5:
            os.kill(pid_a, signal.SIGTERM)
    for peer in subscribers:
        if peer.disconnected is not None and peer.moved is None:
            # Told to leave: take the session to gateway B.
            peer.moved = peer.disconnected
            peer.connack = None
            peer.client.connect(host_b, port_b, 30, clean_start=False, properties=connect_properties())
    settle(everyone, 0.001)

acked = {payloads[mid] for mid in publisher.completed}
emit("published", acked=len(acked))


def missing(peer):
    return acked - {m["payload"] for m in peer.messages}


pump(everyone, lambda: all(not missing(peer) for peer in subscribers), "every acknowledged message", 20)
for peer in subscribers:
    present = peer.connack["session_present"] if peer.connack else -1
    got = len({m["payload"] for m in peer.messages})
    reason = peer.moved if peer.moved is not None else -1
    emit("subscriber", id=peer.client._client_id.decode(), reason=reason, present=present, got=got,
         missing=len(missing(peer)))
left = [peer.left_at for peer in subscribers if peer.left_at is not None]
emit("drain", spread_ms=int((max(left) - min(left)) * 1000) if left else -1)
