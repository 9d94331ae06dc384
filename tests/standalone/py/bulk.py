"""Two publishers, one at QoS 1 and one at QoS 2, each send COUNT numbered messages to a QoS 2
subscriber at the same time.

Usage: bulk.py HOST PORT VERSION COUNT

Records: `granted qos=Q`, one `received topic=bulk/P qos=Q retain=R payload=N` per delivery in
arrival order (P is the publisher's QoS, N counts from 0), then `done acked_qos1=N acked_qos2=N`.
The subscriber keeps listening a little after the last expected message so that duplicates show.
"""

import sys

from common import STEP_TIMEOUT, Peer, emit, emit_messages, pump, settle

host, port, version, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

subscriber = Peer(version, "bulk-subscriber")
subscriber.connect(host, port)
emit("granted", qos=subscriber.subscribe("bulk/+", 2))

publishers = {qos: Peer(version, "bulk-publisher-%d" % qos) for qos in (1, 2)}
for peer in publishers.values():
    peer.connect(host, port)

# paho keeps at most 20 messages in flight per client and queues the rest itself.
mids = {qos: [] for qos in publishers}
for number in range(count):
    for qos, peer in publishers.items():
        mids[qos].append(peer.publish("bulk/%d" % qos, str(number), qos))

peers = [subscriber, *publishers.values()]
pump(
    peers,
    lambda: len(subscriber.messages) >= 2 * count
    and all(set(mids[qos]) <= peer.completed for qos, peer in publishers.items()),
    "%d deliveries and every acknowledgement" % (2 * count),
    timeout=3 * STEP_TIMEOUT,
)
settle(peers, 0.3)

emit_messages(subscriber)
emit(
    "done",
    acked_qos1=len(set(mids[1]) & publishers[1].completed),
    acked_qos2=len(set(mids[2]) & publishers[2].completed),
)
for peer in peers:
    peer.disconnect()
