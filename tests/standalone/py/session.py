"""One connection of a client whose session may outlive it.

Usage: session.py HOST PORT VERSION CLIENT_ID [--clean 0|1] [--expiry SECONDS]
                  [--subscribe FILTER --qos Q] [--expect N] [--settle SECONDS] [--transport tcp|ws]

Connects (v3.1.1: clean session flag; v5: clean start flag and, with --expiry, a Session Expiry
Interval), optionally subscribes, waits for N messages, listens --settle more seconds so that
extra or duplicate deliveries show, then sends a normal DISCONNECT.

Records: `connack reason=R session_present=0|1`, `granted qos=Q` when subscribing, then one
`received topic=T qos=Q retain=R payload=P` per delivery in arrival order.
"""

import argparse

from common import Peer, emit, emit_messages, pump, settle

parser = argparse.ArgumentParser()
parser.add_argument("host")
parser.add_argument("port", type=int)
parser.add_argument("version", choices=["311", "5"])
parser.add_argument("client_id")
parser.add_argument("--clean", type=int, choices=[0, 1], default=1)
parser.add_argument("--expiry", type=int)
parser.add_argument("--subscribe")
parser.add_argument("--qos", type=int, default=1)
parser.add_argument("--expect", type=int, default=0)
parser.add_argument("--settle", type=float, default=0.2)
parser.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
arguments = parser.parse_args()

peer = Peer(arguments.version, arguments.client_id, clean=bool(arguments.clean), transport=arguments.transport)
connack = peer.connect(arguments.host, arguments.port, session_expiry=arguments.expiry)
emit("connack", reason=connack["reason"], session_present=connack["session_present"])
if arguments.subscribe:
    emit("granted", qos=peer.subscribe(arguments.subscribe, arguments.qos))
pump([peer], lambda: len(peer.messages) >= arguments.expect, "%d messages" % arguments.expect)
settle([peer], arguments.settle)
emit_messages(peer)
peer.disconnect()
