"""Connects over TLS (MQTT, or MQTT over secure WebSocket), subscribes to a
topic, publishes to it at QoS 1 and waits for the message to come back.

Usage: tls_echo.py tcp|ws HOST PORT CA_FILE CLIENT_ID [CERT_FILE KEY_FILE]

Prints `connack reason=N`, then `echo payload=P` when the message is back.
"""

import ssl
import sys

from common import Peer, emit, pump

transport, host, port, ca, client_id = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
peer = Peer("5", client_id, transport=transport)
context = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 7:
    context.load_cert_chain(sys.argv[6], sys.argv[7])
peer.client.tls_set_context(context)
connack = peer.connect(host, port)
emit("connack", reason=connack["reason"])
if connack["reason"] != 0:
    sys.exit(0)
peer.subscribe("tls/echo", 1)
peer.client.publish("tls/echo", b"over-tls", qos=1)
pump([peer], lambda: peer.messages, "echo")
emit("echo", payload=peer.messages[0]["payload"])
