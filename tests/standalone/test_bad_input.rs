//! Malformed and misbehaving clients, written byte by byte: the broker closes their connections
//! (telling v5 clients why) and keeps serving everyone else.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Broker, Incoming, Packet, RawConnection, STEP_TIMEOUT, assert_still_serving};

/// Asserts that none of `packets` is a CONNACK accepting the connection.
fn assert_not_accepted(packets: &[Packet]) {
    assert!(
        !packets.iter().any(|packet| packet.first_byte == 0x20 && packet.body.get(1) == Some(&0x00)),
        "the broker accepted the connection: {packets:?}"
    );
}

#[test]
fn first_packet_must_be_connect() {
    let broker = Broker::start();
    let mut connection = RawConnection::open(&broker);
    connection.send(&[
        0xC0, 0x00, // PINGREQ, remaining length 0
    ]);
    assert_not_accepted(&connection.expect_closed());
    assert_still_serving(&broker);
}

#[test]
fn remaining_length_longer_than_four_bytes_is_rejected() {
    let broker = Broker::start();
    let mut connection = RawConnection::open(&broker);
    connection.send(&[
        0x10, // CONNECT
        // Remaining length: the 4th byte still has its continuation bit set and asks for a 5th,
        // beyond the 4-byte maximum (3.1.1 section 2.2.3, 5.0 section 1.5.5).
        0xFF, 0xFF, 0xFF, 0xFF, 0x01,
    ]);
    assert_not_accepted(&connection.expect_closed());
    assert_still_serving(&broker);
}

/// v3.1.1 CONNECT, client id "bad-311", clean session, keep-alive 60 s.
const CONNECT_V311: &[u8] = &[
    0x10, 0x13, // CONNECT, remaining length 19
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04, // protocol level 4 (3.1.1)
    0x02, // connect flags: clean session
    0x00, 0x3C, // keep-alive 60 s
    0x00, 0x07, b'b', b'a', b'd', b'-', b'3', b'1', b'1', // client id
];

/// v5 CONNECT, client id "bad-5", clean start, keep-alive 60 s, no properties.
const CONNECT_V5: &[u8] = &[
    0x10, 0x12, // CONNECT, remaining length 18
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x05, // protocol level 5
    0x02, // connect flags: clean start
    0x00, 0x3C, // keep-alive 60 s
    0x00, // properties: none
    0x00, 0x05, b'b', b'a', b'd', b'-', b'5', // client id
];

/// v3.1.1 PUBLISH with both QoS bits set (QoS 3 does not exist [MQTT-3.3.1-4]) to "t", packet id
/// 1, payload "x".
const PUBLISH_QOS3_V311: &[u8] = &[
    0x36, 0x06, // PUBLISH, flags 0110: QoS 3; remaining length 6
    0x00, 0x01, b't', // topic name
    0x00, 0x01, // packet id 1
    b'x', // payload
];

/// v5 PUBLISH with QoS 3 to "t", packet id 1, no properties, payload "x".
const PUBLISH_QOS3_V5: &[u8] = &[
    0x36, 0x07, // PUBLISH, flags 0110: QoS 3; remaining length 7
    0x00, 0x01, b't', // topic name
    0x00, 0x01, // packet id 1
    0x00, // properties: none
    b'x', // payload
];

/// Opens a connection and completes the handshake with `connect`.
fn connected(broker: &Broker, connect: &[u8]) -> RawConnection {
    let mut connection = RawConnection::open(broker);
    connection.send(connect);
    let connack = connection.expect_packet();
    assert_eq!(connack.first_byte, 0x20, "CONNACK expected, got {connack:?}");
    assert_eq!(connack.body.get(1), Some(&0x00), "connection accepted, got {connack:?}");
    connection
}

/// Returns the Reason String property of a v5 DISCONNECT body, if any.
fn reason_string(body: &[u8]) -> Option<String> {
    let mut rest = body.get(1..)?;
    // Property length, a variable byte integer.
    let mut length = 0_usize;
    for (index, byte) in rest.iter().enumerate().take(4) {
        length |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            rest = &rest[index + 1..];
            break;
        }
    }
    let mut properties = rest.get(..length).expect("property length within the packet");
    let take_string = |bytes: &mut &[u8]| -> String {
        let size = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        let text = String::from_utf8(bytes[2..2 + size].to_vec()).expect("UTF-8 string property");
        *bytes = &bytes[2 + size..];
        text
    };
    let mut found = None;
    while let Some((&identifier, tail)) = properties.split_first() {
        properties = tail;
        match identifier {
            0x11 => properties = &properties[4..], // session expiry interval
            0x1F => found = Some(take_string(&mut properties)), // reason string
            0x1C => drop(take_string(&mut properties)), // server reference
            0x26 => drop((take_string(&mut properties), take_string(&mut properties))), // user property
            other => panic!("property 0x{other:02X} is not allowed in DISCONNECT"),
        }
    }
    found
}

#[test]
fn reason_string_reads_disconnect_properties() {
    let body = [
        0x81, // reason: malformed packet
        0x0C, // property length 12
        0x11, 0x00, 0x00, 0x00, 0x00, // session expiry interval 0
        0x1F, 0x00, 0x04, b'Q', b'o', b'S', b'3', // reason string "QoS3"
    ];
    assert_eq!(reason_string(&body).as_deref(), Some("QoS3"));
    assert_eq!(reason_string(&[0x81]), None);
    assert_eq!(reason_string(&[0x81, 0x00]), None);
}

#[test]
fn publish_with_qos_3_is_a_malformed_packet() {
    let broker = Broker::start();

    // v5: DISCONNECT with reason 0x81 (malformed packet) and a reason string, then the close.
    let mut connection = connected(&broker, CONNECT_V5);
    connection.send(PUBLISH_QOS3_V5);
    let packets = connection.expect_closed();
    let [disconnect] = packets.as_slice() else {
        panic!("v5: expected one DISCONNECT before the close, got {packets:?}");
    };
    assert_eq!(disconnect.first_byte, 0xE0, "DISCONNECT expected, got {disconnect:?}");
    assert_eq!(disconnect.body.first(), Some(&0x81), "reason: malformed packet");
    let reason = reason_string(&disconnect.body);
    assert!(reason.as_ref().is_some_and(|text| !text.is_empty()), "a reason string, got {reason:?}");

    // v3.1.1: no DISCONNECT from a server, the connection just closes.
    let mut connection = connected(&broker, CONNECT_V311);
    connection.send(PUBLISH_QOS3_V311);
    assert_eq!(connection.expect_closed(), [], "v3.1.1 closes without a packet");

    assert_still_serving(&broker);
}

/// v3.1.1 CONNECT, client id "sleepy", clean session, keep-alive 1 s.
const CONNECT_KEEP_ALIVE_1S: &[u8] = &[
    0x10, 0x12, // CONNECT, remaining length 18
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04, // protocol level 4 (3.1.1)
    0x02, // connect flags: clean session
    0x00, 0x01, // keep-alive 1 s
    0x00, 0x06, b's', b'l', b'e', b'e', b'p', b'y', // client id
];

/// The same with client id "chatty".
const CONNECT_KEEP_ALIVE_1S_CHATTY: &[u8] = &[
    0x10, 0x12, // CONNECT, remaining length 18
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04, // protocol level 4 (3.1.1)
    0x02, // connect flags: clean session
    0x00, 0x01, // keep-alive 1 s
    0x00, 0x06, b'c', b'h', b'a', b't', b't', b'y', // client id
];

#[test]
fn keep_alive_is_enforced_at_one_and_a_half_times() {
    let broker = Broker::start();

    // A client that stays silent is disconnected once 1.5 keep-alive periods pass [MQTT-3.1.2-24].
    let mut silent = connected(&broker, CONNECT_KEEP_ALIVE_1S);
    let connected_at = Instant::now();
    let silent_side = thread::spawn(move || {
        let packets = silent.expect_closed();
        (packets, connected_at.elapsed())
    });

    // A client that pings every half period stays connected meanwhile.
    let mut chatty = connected(&broker, CONNECT_KEEP_ALIVE_1S_CHATTY);
    let chatty_until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < chatty_until {
        thread::sleep(Duration::from_millis(500));
        chatty.send(&[
            0xC0, 0x00, // PINGREQ
        ]);
        match chatty.receive(STEP_TIMEOUT) {
            Incoming::Packet(Packet { first_byte: 0xD0, .. }) => {}
            other => panic!("PINGRESP expected, got {other:?}"),
        }
    }

    let (packets, lifetime) = silent_side.join().expect("silent client thread");
    assert_eq!(packets, [], "no packet to a client that timed out");
    assert!(lifetime >= Duration::from_millis(1000), "closed after {lifetime:?}, before the keep-alive");
    assert!(lifetime <= Duration::from_millis(4000), "closed only after {lifetime:?}");
}

#[test]
fn a_topic_with_thousands_of_levels_is_refused_and_the_broker_lives() {
    let broker = Broker::start();
    let mut raw = RawConnection::open(&broker);
    // v3.1.1 CONNECT, clean session, keep-alive 60 s, client id `deep`.
    raw.send(&[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x04, b'd', b'e', b'e',
        b'p',
    ]);
    assert_eq!(raw.expect_packet().body, [0x00, 0x00], "CONNACK");
    // SUBSCRIBE packet id 1 to "/" × 5,000 (5,001 levels) at QoS 0.
    let filter = vec![b'/'; 5_000];
    let mut body = vec![0x00, 0x01, 0x13, 0x88];
    body.extend_from_slice(&filter);
    body.push(0x00);
    let length = body.len(); // 5,005: two length bytes
    let mut packet = vec![0x82, (length % 128) as u8 | 0x80, (length / 128) as u8];
    packet.extend_from_slice(&body);
    raw.send(&packet);
    assert!(raw.expect_closed().is_empty(), "a v3.1.1 client is disconnected without a packet");
    crate::support::assert_still_serving(&broker);
}

#[test]
fn sockets_that_have_not_sent_connect_count_against_the_connection_limit() {
    // A connect timeout far beyond the test's wait: only the limit can close the fourth socket.
    let broker =
        Broker::start_with(&[], &[("HERALD_MAX_CONNECTIONS", "3"), ("HERALD_CONNECT_TIMEOUT_SECS", "60")]);
    let silent: Vec<RawConnection> = (0..3).map(|_| RawConnection::open(&broker)).collect();
    // Give the accept loop a moment to take all three.
    thread::sleep(Duration::from_millis(200));
    let mut fourth = RawConnection::open(&broker);
    assert!(fourth.expect_closed().is_empty(), "a fourth socket is closed at once, with nothing sent");
    drop(silent);
    thread::sleep(Duration::from_millis(200));
    assert_still_serving(&broker);
}

#[test]
fn five_thousand_silent_sockets_are_closed_at_the_connect_timeout_and_the_next_is_refused() {
    const SOCKETS: usize = 5000;
    let broker = Broker::start_with(
        &[],
        &[
            ("HERALD_MAX_CONNECTIONS", "5000"),
            ("HERALD_CONNECT_TIMEOUT_SECS", "20"),
            ("HERALD_OPS", "127.0.0.1:0"),
        ],
    );
    let baseline = broker.open_files();
    let opened = Instant::now();
    let silent: Vec<std::net::TcpStream> =
        (0..SOCKETS).map(|_| std::net::TcpStream::connect(broker.addr()).expect("connect")).collect();
    // Every socket is taken (or queued to be) before the limit is probed.
    // Under load the kernel's accept queue may overflow and connects retry: allow for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while broker.open_files() < baseline + SOCKETS && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let probed = Instant::now();
    let mut refused = RawConnection::open(&broker);
    assert!(refused.expect_closed().is_empty(), "past the limit a socket is closed, with nothing sent");
    assert!(probed.elapsed() < Duration::from_secs(5), "closed at once, not at the connect timeout");

    // All of them are closed at the connect timeout, with nothing sent.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut open: Vec<std::net::TcpStream> = silent;
    for socket in &open {
        socket.set_nonblocking(true).expect("nonblocking");
    }
    let mut first_closed = None;
    while !open.is_empty() && std::time::Instant::now() < deadline {
        let before = open.len();
        open.retain(|mut socket| {
            let mut byte = [0u8; 1];
            match std::io::Read::read(&mut socket, &mut byte) {
                Ok(0) => false,
                Ok(_) => panic!("the broker sent bytes to a socket that never spoke"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                Err(_) => false,
            }
        });
        if open.len() < before && first_closed.is_none() {
            first_closed = Some(opened.elapsed());
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(open.is_empty(), "{} sockets still open long after the connect timeout", open.len());
    let first_closed = first_closed.expect("sockets were closed");
    assert!(
        first_closed >= Duration::from_secs(19),
        "the first closed after {first_closed:?}, before the timeout"
    );
    // Nothing leaks: the broker's descriptors go back to where they were.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while broker.open_files() > baseline + 2 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(broker.open_files() <= baseline + 2, "{} descriptors, {baseline} before", broker.open_files());
    let (_, lines) = crate::ops_client::fetch(&crate::ops_client::ops_address(&broker.log()), "/metrics");
    let refused = crate::ops_client::samples(&lines).get("herald_connections_refused_total{}").copied();
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");
    assert_still_serving(&broker);
}

#[test]
fn past_its_memory_mark_a_broker_sheds_new_connections_with_0x89_and_is_not_ready() {
    // Any running broker holds more than 1 MiB: the mark is passed at once.
    let broker =
        Broker::start_with(&[], &[("HERALD_MEMORY_HIGH_WATER_MB", "1"), ("HERALD_OPS", "127.0.0.1:0")]);
    let ops = crate::ops_client::ops_address(&broker.log());
    let deadline = Instant::now() + STEP_TIMEOUT;
    while crate::ops_client::fetch(&ops, "/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "still ready past the memory mark");
        thread::sleep(Duration::from_millis(100));
    }
    let mut shed = RawConnection::open(&broker);
    shed.send(CONNECT_V5);
    let connack = shed.expect_packet();
    assert_eq!((connack.first_byte, connack.body.get(1)), (0x20, Some(&0x89)), "{connack:?}");
    let (_, lines) = crate::ops_client::fetch(&ops, "/metrics");
    let metrics = crate::ops_client::samples(&lines);
    assert_eq!(metrics.get("herald_memory_over_high_water{}"), Some(&1.0));
    assert!(metrics.get("herald_connects_shed_total{}").is_some_and(|n| *n >= 1.0), "{metrics:?}");
}

#[test]
fn past_its_connect_rate_a_broker_answers_0x9f_until_the_second_is_over() {
    // One a second, a burst of one: the CONNECT right after the first is one too many
    // (a gap of a whole second between them would take a very slow machine).
    let broker = Broker::start_with(&[], &[("HERALD_MAX_CONNECT_RATE", "1")]);
    let held = connected(&broker, CONNECT_V5);
    let mut second = RawConnection::open(&broker);
    second.send(CONNECT_V5);
    let connack = second.expect_packet();
    assert_eq!((connack.first_byte, connack.body.get(1)), (0x20, Some(&0x9F)), "{connack:?}");
    thread::sleep(Duration::from_millis(1100));
    drop(held);
    connected(&broker, CONNECT_V5);
}

/// Resident memory of process `pid`, in bytes.
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("kB") * 1024
}

#[test]
fn a_subscriber_that_stops_reading_under_a_flood_holds_up_no_one_and_costs_bounded_memory() {
    use crate::support::{Version, publisher, subscriber};
    const MESSAGES: usize = 2000;
    let broker =
        Broker::start_with(&[], &[("HERALD_OPS", "127.0.0.1:0"), ("HERALD_MAX_INBOX_BYTES", "4194304")]);
    // The stalled subscriber: subscribes, then never reads again.
    let mut stalled = RawConnection::open(&broker);
    stalled.send(CONNECT_V311);
    assert_eq!(stalled.expect_packet().first_byte, 0x20, "CONNACK");
    stalled.send(&[0x82, 12, 0x00, 0x01, 0x00, 0x07, b'f', b'l', b'o', b'o', b'd', b'/', b'#', 0x00]);
    assert_eq!(stalled.expect_packet().first_byte, 0x90, "SUBACK");
    let mut steady = subscriber(&broker, Version::V5).topic("flood/#").qos(0).start();
    let before = resident(broker.pid());

    // 2,000 messages of 20 KiB: 40 MB, more than the stalled socket's buffers and its
    // bounded inbox (4 MiB here; 1,000 deliveries would be 20 MB) hold. They go in batches the steady subscriber takes in turn:
    // it keeps up, the stalled one does not.
    let payload = "x".repeat(20 * 1024);
    let mut got = Vec::with_capacity(MESSAGES);
    for batch in 0..MESSAGES / 100 {
        let lines: Vec<String> =
            (batch * 100..(batch + 1) * 100).map(|n| format!("{n:05}{payload}")).collect();
        publisher(&broker, Version::V5, "flood/a").qos(1).lines(&lines).run();
        got.extend(steady.expect_messages(100));
    }
    let order: Vec<&str> = got.iter().map(|m| &m.payload[..5]).collect();
    let sent: Vec<String> = (0..MESSAGES).map(|n| format!("{n:05}")).collect();
    assert!(
        order == sent,
        "the steady subscriber gets every message, in order ({} of {MESSAGES})",
        order.len()
    );

    // The stalled one's deliveries past its bounded inbox are dropped and counted; memory
    // grows by at most that inbox, not by the flood.
    let (_, lines) = crate::ops_client::fetch(&crate::ops_client::ops_address(&broker.log()), "/metrics");
    let dropped = crate::ops_client::samples(&lines).get("herald_gateway_dropped_total{}").copied();
    assert!(dropped.is_some_and(|n| n >= 1.0), "{dropped:?}");
    let grown = resident(broker.pid()).saturating_sub(before);
    assert!(grown < 24 << 20, "resident memory grew by {} MiB under a 40 MB flood", grown >> 20);
    drop(stalled);
    assert_still_serving(&broker);
}

#[test]
fn sockets_that_have_not_connected_yet_are_bounded_apart_from_connected_clients() {
    let broker = Broker::start_with(
        &[],
        &[
            ("HERALD_MAX_PENDING_CONNECTS", "3"),
            ("HERALD_CONNECT_TIMEOUT_SECS", "60"),
            ("HERALD_OPS", "127.0.0.1:0"),
        ],
    );
    // A connected client does not count as pending.
    let held = connected(&broker, CONNECT_V5);
    let silent: Vec<RawConnection> = (0..3).map(|_| RawConnection::open(&broker)).collect();
    thread::sleep(Duration::from_millis(200));
    let probed = Instant::now();
    let mut fourth = RawConnection::open(&broker);
    assert!(fourth.expect_closed().is_empty(), "a fourth pending socket is closed, nothing sent");
    assert!(probed.elapsed() < Duration::from_secs(5), "at once, not at the connect timeout");
    let (_, lines) = crate::ops_client::fetch(&crate::ops_client::ops_address(&broker.log()), "/metrics");
    let refused = crate::ops_client::samples(&lines).get("herald_pending_connects_refused_total{}").copied();
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");
    // Once they are gone, clients connect again.
    drop(silent);
    thread::sleep(Duration::from_millis(200));
    drop(held);
    assert_still_serving(&broker);
}
