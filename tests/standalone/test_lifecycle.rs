//! Start-up and shutdown of the broker process.

use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Broker, RawConnection, Version, subscriber};

/// Stops a broker that has a connected client with `signal`, and checks that it exits with
/// status 0 within 5 s and stops listening.
fn stops_cleanly_on(signal: &str) {
    let mut broker = Broker::start();
    let _connected = subscriber(&broker, Version::V5).topic("lifecycle/#").qos(1).start();
    let address = broker.addr();
    let status = broker.stop(signal, Duration::from_secs(5));
    let Some(status) = status else {
        panic!("herald still running 5 s after SIG{signal}; log:\n{}", broker.log());
    };
    assert!(status.success(), "herald exited with {status} on SIG{signal}; log:\n{}", broker.log());
    assert!(TcpStream::connect(address).is_err(), "the MQTT port still accepts connections");
}

#[test]
fn sigterm_stops_the_broker_cleanly() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_stops_the_broker_cleanly() {
    stops_cleanly_on("INT");
}

/// v5 CONNECT, client id "leaving-5", clean start, keep-alive 60 s, no properties.
const CONNECT_V5: &[u8] = &[
    0x10, 0x16, // CONNECT, remaining length 22
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x05, // protocol level 5
    0x02, // connect flags: clean start
    0x00, 0x3C, // keep-alive 60 s
    0x00, // properties: none
    0x00, 0x09, b'l', b'e', b'a', b'v', b'i', b'n', b'g', b'-', b'5', // client id
];

#[test]
fn shutdown_tells_v5_clients_why() {
    let mut broker = Broker::start();
    let mut connection = RawConnection::open(&broker);
    connection.send(CONNECT_V5);
    let connack = connection.expect_packet();
    assert_eq!((connack.first_byte, connack.body.get(1)), (0x20, Some(&0x00)), "CONNACK {connack:?}");

    let status = broker.stop("TERM", Duration::from_secs(5));
    assert!(status.is_some_and(|status| status.success()), "exit on SIGTERM: {status:?}");
    let packets = connection.expect_closed();
    let [disconnect] = packets.as_slice() else {
        panic!("expected one DISCONNECT before the close, got {packets:?}");
    };
    assert_eq!(disconnect.first_byte, 0xE0, "DISCONNECT expected, got {disconnect:?}");
    assert_eq!(disconnect.body.first(), Some(&0x8B), "reason: server shutting down");
}
