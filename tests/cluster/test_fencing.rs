//! Fencing: a gateway that lost a session while it was stopped delivers
//! nothing for it and publishes no will for it when it resumes.

use crate::cluster::Cluster;
use crate::support::{RawConnection, Version, publisher, subscriber};
use std::time::Duration;

/// Builds a v5 CONNECT for `client` with session expiry 60 s, optionally
/// clean start and optionally a QoS 1 will on `wills/{client}`.
fn connect_v5(client: &str, clean_start: bool, will: bool) -> Vec<u8> {
    let utf8 = |s: &str| {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    };
    let flags = u8::from(clean_start) << 1 | if will { 0x04 | 0x08 } else { 0 };
    let mut body = utf8("MQTT");
    body.extend_from_slice(&[0x05, flags, 0x00, 0x3C]); // level 5, flags, keep alive 60 s
    body.extend_from_slice(&[0x05, 0x11, 0x00, 0x00, 0x00, 0x3C]); // properties: session expiry 60 s
    body.extend(utf8(client));
    if will {
        body.push(0x00); // will properties
        body.extend(utf8(&format!("wills/{client}")));
        body.extend(utf8("gone"));
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// SUBSCRIBE packet id 1, no properties, to `topic` at QoS 1 (v5).
fn subscribe_v5(topic: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, 0x00];
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.push(0x01);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend(body);
    packet
}

#[test]
fn a_stopped_gateway_that_lost_a_session_delivers_nothing_and_publishes_no_will() {
    let cluster = Cluster::start(2);
    let mut wills = subscriber(&cluster.gateway(1), Version::V5).topic("wills/#").qos(1).start();

    let mut old = RawConnection::open(&cluster.gateway(0));
    old.send(&connect_v5("roamer2", true, true));
    assert_eq!(old.expect_packet().first_byte, 0x20, "CONNACK");
    old.send(&subscribe_v5("stale/t"));
    assert_eq!(old.expect_packet().first_byte, 0x90, "SUBACK");

    cluster.signal_gateway(0, "STOP");
    let mut new = RawConnection::open(&cluster.gateway(1));
    new.send(&connect_v5("roamer2", false, false));
    let connack = new.expect_packet();
    assert_eq!((connack.first_byte, connack.body[0]), (0x20, 0x01), "CONNACK, session present");
    publisher(&cluster.gateway(1), Version::V5, "stale/t").qos(1).message("for the new owner").run();
    let delivered = new.expect_packet();
    assert_eq!(delivered.first_byte & 0xF0, 0x30, "the new connection gets the message");

    cluster.signal_gateway(0, "CONT");
    // The resumed gateway closes the old connection (telling it, perhaps,
    // that it was taken over) without delivering anything on it.
    let last_words = old.expect_closed();
    assert!(
        last_words.iter().all(|packet| packet.first_byte & 0xF0 != 0x30),
        "the stale connection delivered {last_words:?}"
    );
    // The resumed gateway serves again, and its publish reaches the new owner.
    publisher(&cluster.gateway(0), Version::V5, "stale/t").qos(1).message("after the resume").run();
    assert_eq!(new.expect_packet().first_byte & 0xF0, 0x30, "the new owner gets it");
    wills.expect_silence(Duration::from_millis(1_000));
}
