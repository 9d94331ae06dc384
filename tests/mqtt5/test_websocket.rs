//! Item 16: MQTT over WebSocket, with paho's websocket transport (path `/mqtt`, subprotocol
//! `mqtt`), at both protocol levels, meeting TCP clients on the other endpoint.

use crate::paho::Clients;
use crate::topology::Topology;

/// Item 16: v5 and v3.1.1 clients over WebSocket publish to and receive from TCP clients on
/// the other endpoint, and a WebSocket connection takes over a TCP one's client identifier.
pub(crate) fn item_16_mqtt_over_websocket(topology: &Topology) {
    let mut clients = Clients::start();
    let ws = |index: usize| topology.websocket(index);

    clients.connect("ws-v5", ws(0), &["transport=ws"]);
    clients.connect("ws-v311", ws(0), &["transport=ws", "version=311"]);
    clients.connect("tcp", topology.second(), &[]);
    assert_eq!(clients.subscribe("ws-v5", "item16/to-ws", &["qos=1"]), 1);
    assert_eq!(clients.subscribe("ws-v311", "item16/to-ws", &["qos=1"]), 1);
    assert_eq!(clients.subscribe("tcp", "item16/to-tcp", &["qos=1"]), 1);

    clients.publish("tcp", "item16/to-ws", "from-tcp", &["qos=1", "user_property=k:v"]);
    let v5 = clients.expect_message("ws-v5");
    assert_eq!((v5.payload(), v5.field("qos"), v5.get("user_property")), ("from-tcp", "1", Some("k:v")));
    assert_eq!(clients.expect_message("ws-v311").payload(), "from-tcp");

    clients.publish("ws-v5", "item16/to-tcp", "from-ws-v5", &["qos=1"]);
    clients.publish("ws-v311", "item16/to-tcp", "from-ws-v311", &["qos=1"]);
    let got: Vec<String> = clients.expect_messages("tcp", 2).iter().map(|r| r.payload().to_owned()).collect();
    assert_eq!(got, ["from-ws-v5", "from-ws-v311"]);

    // The same session code: a WebSocket CONNECT with a TCP client's identifier takes over.
    clients.connect("twin-tcp", topology.first(), &["id=item16-twin"]);
    clients.connect("twin-ws", ws(1), &["id=item16-twin", "transport=ws"]);
    let closed = clients.expect_closed("twin-tcp");
    assert_eq!(closed.field("reason"), "142", "session taken over: {closed:?}");
}
