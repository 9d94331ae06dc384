"""Paho MQTT 5 clients driven line by line, for the `mqtt5` integration tests.

Usage: clients.py (no arguments). Reads commands on stdin and prints records on stdout, one per
line, so that the Rust side decides the order of every step across clients and gateways.

A command is `NAME VERB key=value ...`; NAME names a client (and is its client identifier
unless `id=` says otherwise). Verbs and their keys:

  connect     host= port= [id=] [clean=0|1] [keepalive=S] [version=5|311] [transport=tcp|ws]
              [will_topic= will_payload= will_qos= will_retain=0|1] [PROPERTY=...]
              [will.PROPERTY=...]                                      reply: connack
              (transport=ws: MQTT over WebSocket at path /mqtt, subprotocol mqtt)
  subscribe   filter= [qos=] [no_local=1] [retain_as_published=1] [retain_handling=0|1|2]
              [PROPERTY=...]                                           reply: suback codes=C
  unsubscribe filter=                                                  reply: unsuback codes=C
  publish     topic= [payload=] [qos=] [retain=1] [PROPERTY=...]       reply: published mid=M
  disconnect  [reason=R] [PROPERTY=...]                                reply: disconnected
  drop        closes the socket without a DISCONNECT                   reply: dropped

PROPERTY is an MQTT 5 property by its specification name in snake case
(`session_expiry_interval`, `message_expiry_interval`, `user_property`, `correlation_data`, ...):
numbers in decimal, binary data in hex, user properties as `k:v,k:v`, in order.

Every command is answered by exactly one reply record once it has completed (a QoS 1/2
publication once acknowledged). Besides replies, a client prints at any time
`NAME received topic=T qos=Q retain=0|1 payload=P [PROPERTY=...]` per message, in arrival order,
and `NAME closed reason=R` when the server ends its connection. Record values never contain
spaces (a space in a reason string becomes `_`). A step that does not complete within
STEP_TIMEOUT prints `NAME error reason=...` and exits with status 2; end of input exits with 0.

Clients are driven from this single thread with `loop(timeout=0)`, not paho's network thread:
that thread reconnects on its own, which would hide the disconnections the tests look for.
"""

import os
import select
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

# Upper bound for one step (a CONNACK, a SUBACK, an acknowledgement) on loopback.
STEP_TIMEOUT = 10.0

# paho's property table, by snake-case name: (paho attribute, type name).
_TEMPLATE = Properties(PacketTypes.PUBLISH)
PROPERTY_TYPES = {
    name.lower().replace(" ", "_"): (
        name.replace(" ", ""),
        _TEMPLATE.types[_TEMPLATE.properties[identifier][0]],
    )
    for name, identifier in _TEMPLATE.names.items()
}


def emit(name, event, fields):
    """Prints one record: client name, event, then `key=value` pairs in order."""
    parts = [name, event] + ["%s=%s" % (key, value) for key, value in fields]
    print(" ".join(parts), flush=True)


def fail(name, reason):
    """Reports a step that did not happen and exits with status 2."""
    emit(name, "error", [("reason", reason.replace(" ", "_"))])
    print("clients.py: %s: %s" % (name, reason), file=sys.stderr, flush=True)
    sys.exit(2)


def render(value):
    """Returns a property value as a record value without spaces."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):
            return ",".join("%s:%s" % pair for pair in value)
        return ",".join(str(item) for item in value)
    return str(value).replace(" ", "_")


def property_fields(properties):
    """Returns the properties present as (snake-case name, rendered value) pairs."""
    if properties is None:
        return []
    fields = []
    for name, (attribute, _) in PROPERTY_TYPES.items():
        if hasattr(properties, attribute):
            fields.append((name, render(getattr(properties, attribute))))
    return fields


def set_property(properties, name, text):
    """Sets property `name` (snake case) from its command-line form."""
    attribute, kind = PROPERTY_TYPES[name]
    if kind == "UTF-8 String Pair":
        value = [tuple(pair.split(":", 1)) for pair in text.split(",")]
    elif kind == "Binary Data":
        value = bytes.fromhex(text)
    elif kind == "UTF-8 Encoded String":
        value = text
    else:
        value = int(text)
    setattr(properties, attribute, value)


def build_properties(packet_type, arguments, prefix=""):
    """Returns the properties among `arguments` (keys starting with `prefix`), or None."""
    properties = Properties(packet_type)
    found = False
    for key, text in arguments.items():
        if key.startswith(prefix) and key[len(prefix):] in PROPERTY_TYPES:
            set_property(properties, key[len(prefix):], text)
            found = True
    return properties if found else None


class Peer:
    """One paho client and what its callbacks have seen."""

    def __init__(self, name, client_id, version="5", transport="tcp", clean=True):
        self.name = name
        self.version = version
        paho_transport = {"tcp": "tcp", "ws": "websockets"}[transport]
        if version == "5":
            self.client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5, transport=paho_transport)
        else:
            self.client = mqtt.Client(
                client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean, transport=paho_transport
            )
        if transport == "ws":
            self.client.ws_set_options(path="/mqtt")
        self.connack = None
        self.closing = False
        self.closed = False
        self.acks = {}
        self.completed = set()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, properties=None):
        self.connack = [
            ("reason", getattr(reason, "value", reason)),
            ("session_present", int(flags.get("session present", 0))),
        ] + property_fields(properties)

    def _on_disconnect(self, client, userdata, reason, properties=None):
        self.closed = True
        if not self.closing:
            emit(self.name, "closed", [("reason", getattr(reason, "value", reason))] + property_fields(properties))

    def _on_subscribe(self, client, userdata, mid, codes, properties=None):
        self.acks[mid] = [getattr(code, "value", code) for code in codes]

    def _on_unsubscribe(self, client, userdata, mid, properties=None, codes=None):
        codes = codes if isinstance(codes, list) else [codes]
        self.acks[mid] = [getattr(code, "value", code) for code in codes]

    def _on_publish(self, client, userdata, mid):
        self.completed.add(mid)

    def _on_message(self, client, userdata, message):
        try:
            payload = message.payload.decode("utf-8")
            if any(character.isspace() for character in payload):
                payload = "hex:" + message.payload.hex()
        except UnicodeDecodeError:
            payload = "hex:" + message.payload.hex()
        fields = [
            ("topic", message.topic),
            ("qos", message.qos),
            ("retain", int(message.retain)),
            ("payload", payload),
        ]
        emit(self.name, "received", fields + property_fields(getattr(message, "properties", None)))


peers = {}


def pump(done, name, what):
    """Drives every client's network I/O until `done()` holds; fails after STEP_TIMEOUT."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while not done():
        if time.monotonic() > deadline:
            fail(name, "timeout waiting for %s" % what)
        step([], 0.005)


def step(extra, timeout):
    """Waits up to `timeout` for a client socket or a descriptor in `extra`; returns the
    readable ones of `extra` after giving every client a turn."""
    sockets = [peer.client.socket() for peer in peers.values()]
    sockets = [sock for sock in sockets if sock is not None]
    readable, _, _ = select.select(sockets + extra, [], [], timeout)
    for peer in list(peers.values()):
        if peer.client.socket() is not None:
            peer.client.loop(timeout=0)
    return [item for item in readable if item in extra]


def peer_of(name):
    peer = peers.get(name)
    if peer is None:
        fail(name, "no such client; connect it first")
    return peer


def connect(name, arguments):
    old = peers.pop(name, None)
    if old is not None and old.client.socket() is not None:
        old.closing = True
        old.client._sock_close()
    clean = arguments.get("clean", "1") == "1"
    version = arguments.get("version", "5")
    peer = Peer(name, arguments.get("id", name), version, arguments.get("transport", "tcp"), clean)
    peers[name] = peer
    will_topic = arguments.get("will_topic")
    if will_topic is not None:
        peer.client.will_set(
            will_topic,
            bytes.fromhex(arguments["will_payload_hex"])
            if "will_payload_hex" in arguments
            else arguments.get("will_payload", ""),
            int(arguments.get("will_qos", 0)),
            arguments.get("will_retain") == "1",
            properties=build_properties(PacketTypes.WILLMESSAGE, arguments, "will."),
        )
    keepalive = int(arguments.get("keepalive", 60))
    if version == "5":
        properties = build_properties(PacketTypes.CONNECT, arguments) or Properties(PacketTypes.CONNECT)
        peer.client.connect(
            arguments["host"], int(arguments["port"]), keepalive, clean_start=clean, properties=properties
        )
    else:
        peer.client.connect(arguments["host"], int(arguments["port"]), keepalive)
    pump(lambda: peer.connack is not None or peer.closed, name, "connack")
    if peer.connack is None:
        fail(name, "connection closed before connack")
    emit(name, "connack", peer.connack)


def subscribe(name, arguments):
    peer = peer_of(name)
    options = SubscribeOptions(
        qos=int(arguments.get("qos", 0)),
        noLocal=arguments.get("no_local") == "1",
        retainAsPublished=arguments.get("retain_as_published") == "1",
        retainHandling=int(arguments.get("retain_handling", 0)),
    )
    properties = build_properties(PacketTypes.SUBSCRIBE, arguments)
    if peer.version == "5":
        result, mid = peer.client.subscribe(arguments["filter"], options=options, properties=properties)
    else:
        result, mid = peer.client.subscribe(arguments["filter"], qos=options.QoS)
    if result != mqtt.MQTT_ERR_SUCCESS:
        fail(name, "subscribe could not be sent")
    pump(lambda: mid in peer.acks or peer.closed, name, "suback")
    if peer.closed:
        fail(name, "connection closed before suback")
    emit(name, "suback", [("codes", ",".join(str(code) for code in peer.acks[mid]))])


def unsubscribe(name, arguments):
    peer = peer_of(name)
    result, mid = peer.client.unsubscribe(arguments["filter"])
    if result != mqtt.MQTT_ERR_SUCCESS:
        fail(name, "unsubscribe could not be sent")
    pump(lambda: mid in peer.acks or peer.closed, name, "unsuback")
    if peer.closed:
        fail(name, "connection closed before unsuback")
    emit(name, "unsuback", [("codes", ",".join(str(code) for code in peer.acks[mid]))])


def publish(name, arguments):
    peer = peer_of(name)
    if "payload_hex" in arguments:
        payload = bytes.fromhex(arguments["payload_hex"])
    else:
        payload = arguments.get("payload", "").encode("utf-8")
    info = peer.client.publish(
        arguments["topic"],
        payload,
        int(arguments.get("qos", 0)),
        retain=arguments.get("retain") == "1",
        properties=build_properties(PacketTypes.PUBLISH, arguments),
    )
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        fail(name, "publish could not be queued (rc %s)" % info.rc)
    pump(lambda: info.mid in peer.completed or peer.closed, name, "publish completion")
    if peer.closed:
        fail(name, "connection closed before the publication completed")
    emit(name, "published", [("mid", info.mid)])


def disconnect(name, arguments):
    peer = peer_of(name)
    peer.closing = True
    reason = arguments.get("reason")
    peer.client.disconnect(
        reasoncode=None if reason is None else mqtt.ReasonCodes(PacketTypes.DISCONNECT, identifier=int(reason)),
        properties=build_properties(PacketTypes.DISCONNECT, arguments),
    )
    pump(lambda: peer.closed or peer.client.socket() is None, name, "disconnect")
    del peers[name]
    emit(name, "disconnected", [])


def drop(name, arguments):
    peer = peer_of(name)
    peer.closing = True
    peer.client._sock_close()
    del peers[name]
    emit(name, "dropped", [])


VERBS = {
    "connect": connect,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "publish": publish,
    "disconnect": disconnect,
    "drop": drop,
}


def run(line):
    words = line.split()
    if len(words) < 2 or words[1] not in VERBS:
        fail(words[0] if words else "-", "bad command %r" % line)
    arguments = dict(word.split("=", 1) for word in words[2:])
    VERBS[words[1]](words[0], arguments)


def main():
    pending = b""
    while True:
        if step([0], 0.005):
            chunk = os.read(0, 4096)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    run(line.decode("utf-8"))


main()
