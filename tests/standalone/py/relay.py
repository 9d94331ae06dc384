"""One client publishes, another receives, each over TCP or WebSocket.

Usage: relay.py HOST TCP_PORT WEBSOCKET_PORT VERSION --subscriber tcp|ws --publisher tcp|ws
                --topic TOPIC [--qos Q] [--count N] [--retain]

Without --retain, the subscriber subscribes first, then the publisher sends N messages
(`message-0`, `message-1`, ...) at QoS Q and waits for every acknowledgement, and the subscriber
waits for N messages. With --retain, the publisher sends one retained message and disconnects
first; the subscriber then subscribes and gets it from the retained store.

Records: `granted qos=Q`, `acknowledged count=N` (publications whose PUBACK/PUBCOMP arrived),
then one `received topic=T qos=Q retain=R payload=P` per delivery in arrival order. The
subscriber listens a little after the last expected message so that duplicates show.
"""

import argparse

from common import Peer, emit, emit_messages, pump, settle

parser = argparse.ArgumentParser()
parser.add_argument("host")
parser.add_argument("tcp_port", type=int)
parser.add_argument("websocket_port", type=int)
parser.add_argument("version", choices=["311", "5"])
parser.add_argument("--subscriber", choices=["tcp", "ws"], required=True)
parser.add_argument("--publisher", choices=["tcp", "ws"], required=True)
parser.add_argument("--topic", required=True)
parser.add_argument("--qos", type=int, default=1)
parser.add_argument("--count", type=int, default=1)
parser.add_argument("--retain", action="store_true")
arguments = parser.parse_args()

ports = {"tcp": arguments.tcp_port, "ws": arguments.websocket_port}
tag = "%s-%s-%s" % (arguments.version, arguments.publisher, arguments.subscriber)
subscriber = Peer(arguments.version, "relay-sub-" + tag, transport=arguments.subscriber)
publisher = Peer(arguments.version, "relay-pub-" + tag, transport=arguments.publisher)
payloads = ["message-%d" % number for number in range(arguments.count)]


def publish_all(peers, retain=False):
    """Publishes every payload and waits, driving `peers`, until each is acknowledged (at once
    for QoS 0)."""
    mids = [publisher.publish(arguments.topic, payload, arguments.qos, retain=retain) for payload in payloads]
    if arguments.qos > 0:
        pump(
            peers,
            lambda: all(mid in publisher.completed for mid in mids),
            "acknowledgements",
        )
    return sum(1 for mid in mids if mid in publisher.completed)


if arguments.retain:
    payloads = payloads[:1]
    publisher.connect(arguments.host, ports[arguments.publisher])
    emit("acknowledged", count=publish_all([publisher], retain=True))
    publisher.disconnect()
    subscriber.connect(arguments.host, ports[arguments.subscriber])
    emit("granted", qos=subscriber.subscribe(arguments.topic, arguments.qos))
else:
    subscriber.connect(arguments.host, ports[arguments.subscriber])
    emit("granted", qos=subscriber.subscribe(arguments.topic, arguments.qos))
    publisher.connect(arguments.host, ports[arguments.publisher])
    emit("acknowledged", count=publish_all([publisher, subscriber]))

pump([subscriber, publisher], lambda: len(subscriber.messages) >= len(payloads), "messages")
settle([subscriber, publisher], 0.3)
emit_messages(subscriber)
subscriber.disconnect()
if not arguments.retain:
    publisher.disconnect()
