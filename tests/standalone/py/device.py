"""A push-API device: one paho client that subscribes to a per-device topic.

Usage: device.py HOST PORT VERSION CLIENT_ID --user NAME --password PW
                 [--subscribe FILTER] [--qos Q] [--clean 0|1] [--expiry SECONDS]
                 [--expect N] [--settle SECONDS]

Records: `connack reason=R session_present=0|1`, `granted code=C` after the SUBACK (the granted
QoS or a reason code such as 135, not authorized), `ready`, then one
`received topic=T qos=Q dup=D message_id=ID payload=P` per delivery in arrival order, where ID
is the v5 `message-id` user property (`-` when there is none), `disconnected reason=R` when
the server ended the connection, and `done`.
"""

import argparse

from common import Peer, emit, pump, settle

parser = argparse.ArgumentParser()
parser.add_argument("host")
parser.add_argument("port", type=int)
parser.add_argument("version", choices=["311", "5"])
parser.add_argument("client_id")
parser.add_argument("--user", required=True)
parser.add_argument("--password", required=True)
parser.add_argument("--subscribe")
parser.add_argument("--qos", type=int, default=1)
parser.add_argument("--clean", type=int, choices=[0, 1], default=1)
parser.add_argument("--expiry", type=int)
parser.add_argument("--expect", type=int, default=0)
parser.add_argument("--settle", type=float, default=0.2)
arguments = parser.parse_args()

peer = Peer(arguments.version, arguments.client_id, clean=bool(arguments.clean))
peer.client.username_pw_set(arguments.user, arguments.password)
received = []


def on_message(client, userdata, message):
    properties = getattr(message, "properties", None)
    pairs = getattr(properties, "UserProperty", None) or []
    ids = [value for key, value in pairs if key == "message-id"]
    traces = [value for key, value in pairs if key == "traceparent"]
    received.append((message.topic, message.qos, int(message.dup), ids[0] if ids else "-",
                     traces[0] if traces else "-", message.payload.decode("utf-8")))


peer.client.on_message = on_message
connack = peer.connect(arguments.host, arguments.port, session_expiry=arguments.expiry)
emit("connack", reason=connack["reason"], session_present=connack["session_present"])
if arguments.subscribe:
    emit("granted", code=peer.subscribe(arguments.subscribe, arguments.qos))
emit("ready")
pump([peer], lambda: len(received) >= arguments.expect, "%d messages" % arguments.expect)
settle([peer], arguments.settle)
for topic, qos, dup, message_id, trace, payload in received:
    emit("received", topic=topic, qos=qos, dup=dup, message_id=message_id, trace=trace, payload=payload)
if peer.disconnected is not None:
    emit("disconnected", reason=peer.disconnected)
peer.disconnect()
emit("done")
