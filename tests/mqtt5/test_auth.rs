//! Item 14: enhanced authentication with SCRAM-SHA-256, at CONNECT and again on a live
//! connection. Raw packets: paho 1.6.1 has no AUTH flow. The SCRAM client is
//! `herald_gateway::scram::Client`, itself checked against RFC 7677's example exchange.

use crate::raw::{self, AUTH, CONNACK, PUBACK, QOS1, Raw, SUBACK, property};
use crate::topology::{self, Topology};
use herald_gateway::scram;

const METHOD: &str = scram::METHOD;

/// CONNECT properties starting a SCRAM exchange with `client_first`.
fn scram_connect(client_id: &str, client_first: &str) -> Vec<u8> {
    let properties = [
        raw::text_property(property::AUTHENTICATION_METHOD, METHOD),
        raw::binary_property(property::AUTHENTICATION_DATA, client_first.as_bytes()),
    ]
    .concat();
    raw::connect(client_id, 60, &properties)
}

/// An AUTH with `reason_code`, the SCRAM method and `data`.
fn auth(reason_code: u8, data: &str) -> Vec<u8> {
    let properties = [
        raw::text_property(property::AUTHENTICATION_METHOD, METHOD),
        raw::binary_property(property::AUTHENTICATION_DATA, data.as_bytes()),
    ]
    .concat();
    raw::auth(reason_code, &properties)
}

/// Reads the server's AUTH 0x18 and returns its data (the server-first message).
fn server_first(connection: &mut Raw) -> Vec<u8> {
    let packet = connection.expect(AUTH);
    assert_eq!(packet.reason_code(), 0x18, "continue authentication: {packet:?}");
    let properties = packet.properties();
    assert_eq!(properties.text(property::AUTHENTICATION_METHOD), Some(METHOD), "{packet:?}");
    properties.binary(property::AUTHENTICATION_DATA).expect("server-first message").to_vec()
}

/// Connects as `user` with SCRAM; returns the connection, or the refusing CONNACK.
fn connect(
    endpoint: std::net::SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
) -> Result<Raw, raw::Packet> {
    let client = scram::Client::new(user, &scram::new_nonce());
    let mut connection = Raw::open(endpoint);
    connection.send(&scram_connect(client_id, &client.first()));
    let first = server_first(&mut connection);
    let (last, expected) = client.finish(&first, password.as_bytes()).expect("a valid server-first message");
    connection.send(&auth(0x18, &last));
    let connack = connection.expect(CONNACK);
    if connack.reason_code() != 0x00 {
        return Err(connack);
    }
    let properties = connack.properties();
    assert_eq!(properties.text(property::AUTHENTICATION_METHOD), Some(METHOD), "{connack:?}");
    let server_final = properties.binary(property::AUTHENTICATION_DATA);
    assert_eq!(server_final, Some(expected.as_bytes()), "the server must prove it knows the secret");
    Ok(connection)
}

/// Item 14: a SCRAM-SHA-256 exchange at CONNECT (a user with a plain password and one with a
/// stored SCRAM secret, each landing in their app), wrong passwords and unknown methods
/// refused, re-authentication on a live connection while other packets flow, and a failed
/// re-authentication ending the connection with 0x87.
pub(crate) fn item_14_enhanced_authentication(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let (alice, carol) = (topology::PLAIN_USER, topology::SCRAM_USER);

    // Both users belong to the same app: carol's publish reaches alice across endpoints.
    let mut subscriber = connect(first, "item14-alice", alice.0, alice.1).expect("alice authenticated");
    subscriber.send(&raw::subscribe(1, &[], &[("item14/news", 0x01)]));
    assert_eq!(subscriber.expect(SUBACK).reason_codes(), [0x01]);
    let mut publisher = connect(second, "item14-carol", carol.0, carol.1).expect("carol authenticated");
    publisher.send(&raw::publish(QOS1, "item14/news", 1, &[], b"hello"));
    assert_eq!(publisher.expect(PUBACK).reason_code(), 0x00, "alice subscribes in the same app");
    assert_eq!(subscriber.expect(raw::PUBLISH).publish().payload, b"hello");

    // An anonymous client lives in the default app: alice does not hear it.
    let (mut stranger, _) = Raw::connected(second, &raw::connect("item14-anonymous", 60, &[]));
    stranger.send(&raw::publish(QOS1, "item14/news", 1, &[], b"other app"));
    assert_eq!(stranger.expect(PUBACK).reason_code(), 0x10, "no subscriber in the default app");
    subscriber.expect_silence(crate::SILENCE);

    // Re-authentication: AUTH 0x19, 0x18 back and forth, AUTH 0x00 with the server's proof;
    // a PUBLISH sent in the middle of it is acknowledged as usual.
    let client = scram::Client::new(alice.0, &scram::new_nonce());
    subscriber.send(&auth(0x19, &client.first()));
    let server = server_first(&mut subscriber);
    subscriber.send(&raw::publish(QOS1, "item14/other", 2, &[], b"during"));
    assert_eq!(subscriber.expect(PUBACK).packet_id(), 2, "packets keep flowing during re-authentication");
    let (last, expected) = client.finish(&server, alice.1.as_bytes()).expect("valid server-first");
    subscriber.send(&auth(0x18, &last));
    let success = subscriber.expect(AUTH);
    assert_eq!(success.reason_code(), 0x00, "re-authenticated: {success:?}");
    assert_eq!(success.properties().binary(property::AUTHENTICATION_DATA), Some(expected.as_bytes()));
    publisher.send(&raw::publish(QOS1, "item14/news", 3, &[], b"still here"));
    assert_eq!(subscriber.expect(raw::PUBLISH).publish().payload, b"still here");

    // A failed re-authentication: DISCONNECT 0x87, then the connection closes.
    let client = scram::Client::new(alice.0, &scram::new_nonce());
    subscriber.send(&auth(0x19, &client.first()));
    let server = server_first(&mut subscriber);
    let (last, _) = client.finish(&server, b"not the password").expect("valid server-first");
    subscriber.send(&auth(0x18, &last));
    let disconnect = subscriber.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x87, "not authorized: {disconnect:?}");

    // A wrong password at CONNECT: CONNACK 0x87 with a reason string, and an unknown user
    // gets the very same answer.
    for user in [alice.0, "nobody"] {
        let refusal = connect(first, "item14-wrong", user, "not the password").err().expect("refused");
        assert_eq!(refusal.reason_code(), 0x87, "not authorized: {refusal:?}");
        let reason = refusal.properties().text(property::REASON_STRING).map(str::to_owned);
        assert_eq!(reason.as_deref(), Some("SCRAM authentication failed"), "{refusal:?}");
    }

    // A method the server does not offer: CONNACK 0x8C.
    let mut unknown = Raw::open(first);
    let properties = raw::text_property(property::AUTHENTICATION_METHOD, "KERBEROS");
    unknown.send(&raw::connect("item14-kerberos", 60, &properties));
    assert_eq!(unknown.expect(CONNACK).reason_code(), 0x8C, "bad authentication method");

    // AUTH on a connection whose CONNECT named no method: protocol error.
    stranger.send(&auth(0x19, &client.first()));
    assert_eq!(stranger.expect_disconnect().reason_code(), 0x82, "[MQTT-4.12.0-7]");
}
