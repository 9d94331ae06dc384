"""Two clients connect with an empty client identifier, then each publishes to itself.

Usage: assigned_id.py HOST PORT VERSION

Records, per client (`client=0` and `client=1`): `connack client=C reason=R assigned=ID` (ID is
`-` when the CONNACK carries no Assigned Client Identifier, always the case for v3.1.1), then
`received client=C topic=T qos=Q retain=R payload=P` for the message it sent itself.
"""

import sys

from common import Peer, emit, emit_messages, pump

host, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]

peers = [Peer(version, "") for _ in range(2)]
for index, peer in enumerate(peers):
    connack = peer.connect(host, port)
    emit("connack", client=index, reason=connack["reason"], assigned=connack["assigned"] or "-")
for index, peer in enumerate(peers):
    topic = "assigned/%d" % index
    peer.subscribe(topic, 1)
    peer.publish(topic, "hello-%d" % index, 1)
pump(peers, lambda: all(peer.messages for peer in peers), "each client's own message")
for index, peer in enumerate(peers):
    emit_messages(peer, client=index)
    peer.disconnect()
