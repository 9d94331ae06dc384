"""Helpers shared by the paho scenarios of the `standalone` integration tests.

A scenario prints one record per line on stdout, `event key=value key=value`, with values that
never contain spaces, so the Rust side can assert on them without a JSON parser. A scenario that
does not reach a step before its deadline prints an `error` record, explains on stderr and exits
with status 2; it never waits unbounded.

Clients are driven by `pump` from the scenario's single thread instead of paho's network thread:
paho's thread reconnects on its own after a disconnect, which would hide exactly the
disconnections these scenarios look for.
"""

import select
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# Upper bound for one step (a CONNACK, a SUBACK, a batch of messages) on loopback.
STEP_TIMEOUT = 10.0

# Where Herald serves MQTT over WebSocket.
WEBSOCKET_PATH = "/mqtt"


def emit(event, **fields):
    """Prints one record: the event name, then `key=value` pairs in the given order."""
    parts = [event] + ["%s=%s" % (key, value) for key, value in fields.items()]
    print(" ".join(parts), flush=True)


def fail(reason):
    """Reports a step that did not happen and exits with status 2."""
    emit("error", reason=reason.replace(" ", "_"))
    print("scenario failed: %s" % reason, file=sys.stderr, flush=True)
    sys.exit(2)


def reason_value(code):
    """Returns the numeric value of a paho reason code, an int or a `ReasonCodes`."""
    return getattr(code, "value", code)


class Peer:
    """One paho client and what its callbacks have seen so far.

    `transport` is "tcp" or "ws" (MQTT over WebSocket at WEBSOCKET_PATH, subprotocol mqtt).
    """

    def __init__(self, version, client_id, clean=True, transport="tcp"):
        self.version = version
        self.clean = clean
        if transport not in ("tcp", "ws"):
            fail("unknown transport %s" % transport)
        paho_transport = "websockets" if transport == "ws" else "tcp"
        if version == "5":
            self.client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5, transport=paho_transport)
        elif version == "311":
            self.client = mqtt.Client(
                client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean, transport=paho_transport
            )
        else:
            fail("unknown protocol version %s" % version)
        if transport == "ws":
            self.client.ws_set_options(path=WEBSOCKET_PATH)
        self.connack = None
        self.disconnected = None
        self.granted = {}
        self.completed = set()
        self.messages = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, properties=None):
        assigned = getattr(properties, "AssignedClientIdentifier", None) if properties else None
        self.connack = {
            "reason": reason_value(reason),
            "session_present": int(flags.get("session present", 0)),
            "assigned": assigned,
        }

    def _on_disconnect(self, client, userdata, reason, properties=None):
        self.disconnected = reason_value(reason)

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        self.granted[mid] = [reason_value(code) for code in granted]

    def _on_publish(self, client, userdata, mid):
        self.completed.add(mid)

    def _on_message(self, client, userdata, message):
        self.messages.append(
            {
                "topic": message.topic,
                "qos": message.qos,
                "retain": int(message.retain),
                "payload": message.payload.decode("utf-8"),
            }
        )

    def connect(self, host, port, session_expiry=None, keepalive=30):
        """Connects and waits for the CONNACK; returns its fields."""
        if self.version == "5":
            properties = Properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                properties.SessionExpiryInterval = session_expiry
            self.client.connect(host, port, keepalive, clean_start=self.clean, properties=properties)
        else:
            self.client.connect(host, port, keepalive)
        pump([self], lambda: self.connack is not None or self.disconnected is not None, "connack")
        if self.connack is None:
            fail("connection closed before connack")
        return self.connack

    def subscribe(self, topic, qos):
        """Subscribes and waits for the SUBACK; returns the granted QoS (or reason code)."""
        result, mid = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            fail("subscribe to %s could not be sent" % topic)
        pump([self], lambda: mid in self.granted, "suback for %s" % topic)
        return self.granted[mid][0]

    def publish(self, topic, payload, qos, retain=False):
        """Queues one publication and returns its message id, without waiting for the ack."""
        info = self.client.publish(topic, payload, qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            fail("publish to %s could not be queued" % topic)
        return info.mid

    def disconnect(self):
        """Sends DISCONNECT and processes the close."""
        self.client.disconnect()
        settle([self], 0.1)


def pump(peers, done, what, timeout=STEP_TIMEOUT):
    """Drives the peers' network I/O until `done()` holds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            fail("timeout waiting for %s" % what)
        _step(peers)


def settle(peers, seconds):
    """Drives the peers' network I/O for a fixed time, to see what else arrives."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _step(peers)


def _step(peers):
    """Waits up to 5 ms for any peer's socket to become readable, then gives every peer a turn."""
    sockets = [peer.client.socket() for peer in peers]
    sockets = [sock for sock in sockets if sock is not None]
    if sockets:
        select.select(sockets, [], [], 0.005)
    else:
        time.sleep(0.005)
    for peer in peers:
        peer.client.loop(timeout=0)


def emit_messages(peer, **extra):
    """Prints one `received` record per message the peer got, in arrival order."""
    for message in peer.messages:
        emit("received", **extra, **message)
