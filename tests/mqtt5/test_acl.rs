//! Access rules (`[acl]`): the first rule that applies decides, with `%c` standing for the
//! client id; denials answer with the reason codes of §3.4.2.1 and §3.9.3 (0x87 Not
//! authorized), and a will to a denied topic refuses the CONNECT. Raw packets: paho 1.6.1 does
//! not show PUBACK reason codes.

use crate::raw::{self, CONNACK, PUBACK, QOS1, Raw, SUBACK, property};
use crate::topology::{PLAIN_USER, Topology};

/// The rules every topology of this test starts with: devices own `devices/{id}/…`, anyone
/// may read `broadcast/…`, the user alice may do anything, nothing else is allowed.
pub(crate) fn rules() -> Vec<(String, String)> {
    let rules = "[\
        { permission = \"allow\", action = \"all\", topics = [\"devices/%c/#\"] },\
        { permission = \"allow\", action = \"subscribe\", topics = [\"broadcast/#\"] },\
        { permission = \"allow\", action = \"all\", users = [\"alice\"], topics = [\"#\"] },\
        { permission = \"deny\", action = \"all\", topics = [\"#\"] }]";
    vec![("HERALD_ACL_RULES".to_owned(), rules.to_owned())]
}

fn connected(endpoint: std::net::SocketAddr, connect: &[u8]) -> Raw {
    let mut client = Raw::open(endpoint);
    client.send(connect);
    let connack = client.expect(CONNACK);
    assert_eq!(connack.reason_code(), 0x00, "{connack:?}");
    client
}

fn puback(client: &mut Raw, topic: &str, packet_id: u16) -> raw::Packet {
    client.send(&raw::publish(QOS1, topic, packet_id, &[], b"x"));
    client.expect(PUBACK)
}

pub(crate) fn access_rules(topology: &Topology) {
    let mut device = connected(topology.first(), &raw::connect_with("dev-1", None, None));
    device.send(&raw::subscribe(
        1,
        &[],
        &[
            ("devices/dev-1/in", 1),
            ("broadcast/#", 1),
            ("devices/+/up", 1),
            ("secret/#", 1),
            ("$share/g/broadcast/x", 1),
        ],
    ));
    let suback = device.expect(SUBACK);
    assert_eq!(suback.reason_codes(), [0x01, 0x01, 0x87, 0x87, 0x01], "{suback:?}");

    assert_eq!(
        puback(&mut device, "devices/dev-1/up", 2).reason_code(),
        0x10,
        "its own topic; nobody subscribes"
    );
    for (topic, id) in [("broadcast/news", 3), ("devices/dev-2/up", 4)] {
        let refused = puback(&mut device, topic, id);
        assert_eq!(refused.reason_code(), 0x87, "{topic}: {refused:?}");
        let reason = refused.properties().text(property::REASON_STRING).map(str::to_owned);
        assert!(reason.is_some_and(|r| r.contains("access rules")), "{refused:?}");
    }

    // Another device may not read this one's topics.
    let mut other = connected(topology.second(), &raw::connect_with("dev-2", None, None));
    other.send(&raw::subscribe(1, &[], &[("devices/dev-1/#", 1), ("devices/dev-2/#", 1)]));
    assert_eq!(other.expect(SUBACK).reason_codes(), [0x87, 0x01]);

    // A user the rules name may do what they give it.
    let alice = Some(PLAIN_USER);
    let mut operator = connected(topology.second(), &raw::connect_with("ops-1", None, alice));
    assert_eq!(puback(&mut operator, "secret/x", 2).reason_code(), 0x10, "allowed; nobody subscribes");
    operator.send(&raw::subscribe(1, &[], &[("#", 1)]));
    assert_eq!(operator.expect(SUBACK).reason_codes(), [0x01]);

    // A will to a topic the client may not publish to refuses the CONNECT.
    let mut willing = Raw::open(topology.first());
    willing.send(&raw::connect_with("dev-3", Some("secret/will"), None));
    let connack = willing.expect(CONNACK);
    assert_eq!(connack.reason_code(), 0x87, "{connack:?}");
    connected(topology.first(), &raw::connect_with("dev-4", Some("devices/dev-4/gone"), None));
}
