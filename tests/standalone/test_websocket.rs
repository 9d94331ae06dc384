//! MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`; chapter 6 of both specifications):
//! paho's websocket transport against TCP clients, and a hand-written WebSocket client for what
//! paho cannot be made to send (frames that split or join packets, text frames, refused upgrades).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{
    Broker, Incoming, Message, Packet, RawConnection, STEP_TIMEOUT, Version, assert_still_serving, paho,
    publisher, received, record, subscriber,
};

/// Runs `relay.py`: a publisher over `from` and a subscriber over `to` ("tcp" or "ws").
fn relay(
    broker: &Broker,
    version: Version,
    from: &str,
    to: &str,
    extra: &[&str],
) -> Vec<crate::support::Record> {
    let websocket_port = broker.websocket_addr().port().to_string();
    let mut arguments =
        vec![&websocket_port[..], version.paho_name(), "--publisher", from, "--subscriber", to];
    arguments.extend_from_slice(extra);
    paho(broker, "relay.py", &arguments)
}

#[test]
fn mqtt_over_websocket_round_trips_qos1() {
    let broker = Broker::start_with_websocket(&[]);
    for version in Version::ALL {
        let topic = format!("websocket/round-trip/{version}");
        let output = relay(&broker, version, "ws", "ws", &["--topic", &topic, "--qos", "1", "--count", "3"]);
        assert_eq!(record(&output, "granted").field("qos"), "1", "v{version}");
        assert_eq!(record(&output, "acknowledged").field("count"), "3", "v{version}: PUBACKs");
        let expected: Vec<_> =
            (0..3).map(|number| Message::new(&topic, &format!("message-{number}"), 1, false)).collect();
        assert_eq!(received(&output), expected, "v{version}");
    }
}

#[test]
fn websocket_and_tcp_clients_reach_each_other() {
    let broker = Broker::start_with_websocket(&[]);
    for version in Version::ALL {
        for (from, to) in [("tcp", "ws"), ("ws", "tcp")] {
            let topic = format!("websocket/{from}-to-{to}/{version}");
            let output =
                relay(&broker, version, from, to, &["--topic", &topic, "--qos", "1", "--count", "2"]);
            assert_eq!(record(&output, "acknowledged").field("count"), "2", "v{version} {from} → {to}");
            assert_eq!(
                received(&output),
                [Message::new(&topic, "message-0", 1, false), Message::new(&topic, "message-1", 1, false)],
                "v{version} {from} → {to}"
            );
        }
    }
}

#[test]
fn a_retained_message_reaches_a_websocket_subscriber() {
    let broker = Broker::start_with_websocket(&[]);
    for version in Version::ALL {
        let topic = format!("websocket/retained/{version}");
        let output = relay(&broker, version, "ws", "ws", &["--topic", &topic, "--qos", "1", "--retain"]);
        assert_eq!(record(&output, "acknowledged").field("count"), "1", "v{version}");
        assert_eq!(received(&output), [Message::new(&topic, "message-0", 1, true)], "v{version}");
    }
}

/// Asserts what a connection that was taken over saw before its close: nothing on v3.1.1, a
/// DISCONNECT with reason 0x8E (session taken over) on v5.
fn assert_taken_over(version: Version, before_close: &[Packet]) {
    match version {
        Version::V311 => assert_eq!(before_close, [], "v3.1.1 has no server DISCONNECT"),
        Version::V5 => {
            let [disconnect] = before_close else {
                panic!("v5: expected one DISCONNECT, got {before_close:?}");
            };
            assert_eq!(disconnect.first_byte, 0xE0, "DISCONNECT expected, got {disconnect:?}");
            assert_eq!(disconnect.body.first(), Some(&0x8E), "reason: session taken over");
        }
    }
}

#[test]
fn websocket_and_tcp_connections_take_over_each_other() {
    let broker = Broker::start_with_websocket(&[]);
    for version in Version::ALL {
        // A WebSocket connection taken over by a TCP one, which then gets the session's messages.
        let client_id = format!("ws-then-tcp-{version}");
        let mut first = RawWebSocket::open(&broker);
        first.send_binary(&connect(version, &client_id, 60));
        assert_accepted(&first.expect_packet());
        let topic = format!("websocket/takeover/{version}");
        let mut second = subscriber(&broker, version).client_id(&client_id).topic(&topic).qos(1).start();
        assert_taken_over(version, &first.expect_closed());
        publisher(&broker, version, &topic).qos(1).message("to the new owner").run();
        assert_eq!(second.expect_messages(1), [Message::new(&topic, "to the new owner", 1, false)]);

        // A TCP connection taken over by paho over WebSocket.
        let client_id = format!("tcp-then-ws-{version}");
        let mut first = RawConnection::open(&broker);
        first.send(&connect(version, &client_id, 60));
        assert_accepted(&first.expect_packet());
        let output = paho(
            &broker.websocket_addr(),
            "session.py",
            &[version.paho_name(), &client_id, "--transport", "ws"],
        );
        assert_eq!(record(&output, "connack").field("reason"), "0", "v{version} over WebSocket");
        assert_taken_over(version, &first.expect_closed());
    }
    assert_still_serving(&broker);
}

#[test]
fn upgrades_need_the_mqtt_path_and_subprotocol() {
    let broker = Broker::start_with_websocket(&[]);
    let address = broker.websocket_addr();
    let (_, wrong_path) = request_upgrade(address, "/", Some("mqtt"));
    assert_eq!(wrong_path.status, 404, "{wrong_path:?}");
    let (_, wrong_path) = request_upgrade(address, "/mqtt/x", Some("mqtt"));
    assert_eq!(wrong_path.status, 404, "{wrong_path:?}");
    // [MQTT-6.0.0-3]: the client must offer "mqtt".
    let (_, no_protocol) = request_upgrade(address, "/mqtt", None);
    assert_eq!(no_protocol.status, 400, "{no_protocol:?}");
    let (_, other_protocol) = request_upgrade(address, "/mqtt", Some("wamp"));
    assert_eq!(other_protocol.status, 400, "{other_protocol:?}");
    // [MQTT-6.0.0-4]: the server selects "mqtt" among what the client offers.
    let (_, accepted) = request_upgrade(address, "/mqtt", Some("wamp, mqtt"));
    assert_eq!(accepted.status, 101, "{accepted:?}");
    assert!(accepted.headers.contains("sec-websocket-protocol: mqtt\r\n"), "{accepted:?}");
    assert_still_serving(&broker);
}

#[test]
fn a_text_frame_closes_the_connection() {
    let broker = Broker::start_with_websocket(&[]);
    for version in Version::ALL {
        let mut connection = RawWebSocket::open(&broker);
        connection.send_binary(&connect(version, &format!("text-{version}"), 60));
        assert_accepted(&connection.expect_packet());
        // [MQTT-6.0.0-1]: a frame that is not binary closes the network connection.
        connection.send_frame(OPCODE_TEXT, b"hello");
        assert_eq!(connection.expect_closed(), [], "v{version}: no reply to a text frame");
        assert_eq!(connection.close_code, Some(1003), "v{version}: close code 1003 (unsupported data)");
    }
    assert_still_serving(&broker);
}

#[test]
fn an_mqtt_packet_may_span_websocket_frames() {
    let broker = Broker::start_with_websocket(&[]);
    for version in Version::ALL {
        let mut connection = RawWebSocket::open(&broker);
        let connect = connect(version, &format!("split-{version}"), 60);
        // [MQTT-6.0.0-2]: packets are not aligned on frame boundaries.
        connection.send_binary(&connect[..5]);
        connection.send_binary(&connect[5..]);
        assert_accepted(&connection.expect_packet());
        connection.send_binary(&PINGREQ[..1]);
        connection.send_binary(&PINGREQ[1..]);
        assert_eq!(connection.expect_packet().first_byte, 0xD0, "v{version}: PINGRESP");
    }
}

#[test]
fn a_websocket_frame_may_hold_several_mqtt_packets() {
    let broker = Broker::start_with_websocket(&[]);
    for version in Version::ALL {
        let mut connection = RawWebSocket::open(&broker);
        let mut frame = connect(version, &format!("joined-{version}"), 60);
        frame.extend_from_slice(&subscribe(version, "websocket/joined"));
        frame.extend_from_slice(&PINGREQ);
        connection.send_binary(&frame);
        assert_accepted(&connection.expect_packet());
        // The PINGRESP may overtake the SUBACK, which waits for the router.
        let mut replies = [connection.expect_packet(), connection.expect_packet()];
        replies.sort_by_key(|packet| packet.first_byte);
        let [suback, pingresp] = replies;
        assert_eq!((suback.first_byte, suback.body.last()), (0x90, Some(&0x01)), "v{version}: SUBACK, QoS 1");
        assert_eq!(pingresp.first_byte, 0xD0, "v{version}: PINGRESP");
    }
}

/// The same bytes in one TCP write: packets that arrive with the CONNECT are served at once, not
/// when the socket next has something to read.
#[test]
fn packets_sent_with_the_connect_are_served_over_tcp_too() {
    let broker = Broker::start();
    for version in Version::ALL {
        let mut connection = RawConnection::open(&broker);
        let mut bytes = connect(version, &format!("joined-tcp-{version}"), 60);
        bytes.extend_from_slice(&subscribe(version, "tcp/joined"));
        bytes.extend_from_slice(&PINGREQ);
        connection.send(&bytes);
        assert_accepted(&connection.expect_packet());
        let mut replies = [connection.expect_packet(), connection.expect_packet()];
        replies.sort_by_key(|packet| packet.first_byte);
        assert_eq!(replies.map(|packet| packet.first_byte), [0x90, 0xD0], "v{version}: SUBACK and PINGRESP");
    }
}

#[test]
fn a_websocket_message_over_the_maximum_packet_size_is_refused_with_0x95() {
    let broker = Broker::start_with_websocket(&[("HERALD_LIMITS_MAX_PACKET_SIZE", "1024")]);
    let mut connection = RawWebSocket::open(&broker);
    connection.send_binary(&connect(Version::V5, "too-large-5", 60));
    assert_accepted(&connection.expect_packet());
    connection.send_binary(&publish_v5("websocket/large", &[b'x'; 2000]));
    let packets = connection.expect_closed();
    let [disconnect] = packets.as_slice() else {
        panic!("expected one DISCONNECT before the close, got {packets:?}");
    };
    assert_eq!((disconnect.first_byte, disconnect.body.first()), (0xE0, Some(&0x95)), "packet too large");
    assert_eq!(connection.close_code, Some(1009), "close code 1009 (message too big)");
    assert_still_serving(&broker);
}

#[test]
fn the_connect_timeout_and_keep_alive_apply_to_websocket_connections() {
    let broker = Broker::start_with_websocket(&[("HERALD_CONNECT_TIMEOUT_SECS", "1")]);
    // A socket that never sends its upgrade request.
    let started = Instant::now();
    let mut silent = TcpStream::connect_timeout(&broker.websocket_addr(), STEP_TIMEOUT).expect("connect");
    silent.set_read_timeout(Some(STEP_TIMEOUT)).expect("set read timeout");
    let read = silent.read(&mut [0_u8; 64]);
    let timed_out =
        matches!(&read, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    assert!(!timed_out && (matches!(read, Ok(0)) || read.is_err()), "the silent socket got {read:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());

    // An upgraded connection that never sends CONNECT.
    let started = Instant::now();
    let mut upgraded = RawWebSocket::open(&broker);
    assert_eq!(upgraded.expect_closed(), [], "nothing is sent to a connection that never spoke");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());

    // Keep-alive 1 s, then silence: 1.5 times the keep-alive later, DISCONNECT 0x8D (v5).
    let mut idle = RawWebSocket::open(&broker);
    idle.send_binary(&connect(Version::V5, "keep-alive-5", 1));
    assert_accepted(&idle.expect_packet());
    let packets = idle.expect_closed();
    let [disconnect] = packets.as_slice() else {
        panic!("expected one DISCONNECT before the close, got {packets:?}");
    };
    assert_eq!((disconnect.first_byte, disconnect.body.first()), (0xE0, Some(&0x8D)), "keep alive timeout");
    assert_still_serving(&broker);
}

#[test]
fn the_connection_limit_counts_websocket_connections() {
    let broker = Broker::start_with_websocket(&[("HERALD_MAX_CONNECTIONS", "1")]);
    let mut holder = RawConnection::open(&broker);
    holder.send(&connect(Version::V5, "limit-holder", 60));
    assert_accepted(&holder.expect_packet());
    let mut refused = TcpStream::connect_timeout(&broker.websocket_addr(), STEP_TIMEOUT).expect("connect");
    refused.set_read_timeout(Some(STEP_TIMEOUT)).expect("set read timeout");
    // Written before the close is noticed, or refused with a reset: either way, no response.
    let _ = refused.write_all(upgrade_request("/mqtt", Some("mqtt")).as_bytes());
    let mut response = Vec::new();
    let _ = refused.read_to_end(&mut response);
    assert_eq!(String::from_utf8_lossy(&response), "", "a refused socket gets no HTTP response");
}

#[test]
fn shutdown_tells_websocket_v5_clients_why() {
    let mut broker = Broker::start_with_websocket(&[]);
    let mut connection = RawWebSocket::open(&broker);
    connection.send_binary(&connect(Version::V5, "leaving-ws-5", 60));
    assert_accepted(&connection.expect_packet());
    let status = broker.stop("TERM", Duration::from_secs(5));
    assert!(status.is_some_and(|status| status.success()), "exit on SIGTERM: {status:?}");
    let packets = connection.expect_closed();
    let [disconnect] = packets.as_slice() else {
        panic!("expected one DISCONNECT before the close, got {packets:?}");
    };
    assert_eq!((disconnect.first_byte, disconnect.body.first()), (0xE0, Some(&0x8B)), "server shutting down");
}

/// PINGREQ.
const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// Returns a CONNECT with clean start, no will, no credentials and no properties.
fn connect(version: Version, client_id: &str, keep_alive: u16) -> Vec<u8> {
    let level = match version {
        Version::V311 => 4,
        Version::V5 => 5,
    };
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if version == Version::V5 {
        body.push(0x00); // properties: none
    }
    body.extend_from_slice(&u16::try_from(client_id.len()).expect("short client id").to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    packet(0x10, &body)
}

/// Returns a SUBSCRIBE, packet id 1, to `filter` at QoS 1.
fn subscribe(version: Version, filter: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    if version == Version::V5 {
        body.push(0x00); // properties: none
    }
    body.extend_from_slice(&u16::try_from(filter.len()).expect("short filter").to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0x01);
    packet(0x82, &body)
}

/// Returns a v5 QoS 0 PUBLISH of `payload` to `topic`, without properties.
fn publish_v5(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = u16::try_from(topic.len()).expect("short topic").to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.push(0x00); // properties: none
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// Returns a packet: `first_byte`, the remaining length, `body`.
fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![first_byte];
    let mut length = body.len();
    loop {
        let byte = (length % 128) as u8;
        length /= 128;
        packet.push(if length > 0 { byte | 0x80 } else { byte });
        if length == 0 {
            break;
        }
    }
    packet.extend_from_slice(body);
    packet
}

/// Asserts that `packet` is a CONNACK accepting the connection.
fn assert_accepted(packet: &Packet) {
    assert_eq!((packet.first_byte, packet.body.get(1)), (0x20, Some(&0x00)), "CONNACK {packet:?}");
}

/// A response to an upgrade request: its status and its header lines, lowercased.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: String,
}

/// Returns an HTTP/1.1 WebSocket upgrade request for `path`, offering `protocols` if any.
fn upgrade_request(path: &str, protocols: Option<&str>) -> String {
    // The key is the example of RFC 6455 section 1.3; the server's answer to it is not checked.
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(protocols) = protocols {
        request.push_str(&format!("Sec-WebSocket-Protocol: {protocols}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Sends an upgrade request and reads the response head, byte by byte so that nothing after it
/// is consumed.
fn request_upgrade(address: SocketAddr, path: &str, protocols: Option<&str>) -> (TcpStream, Response) {
    let mut stream =
        TcpStream::connect_timeout(&address, STEP_TIMEOUT).expect("connect to the websocket port");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream.set_read_timeout(Some(STEP_TIMEOUT)).expect("set read timeout");
    stream.write_all(upgrade_request(path, protocols).as_bytes()).expect("send the upgrade request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => {
                panic!("the response head ended early ({other:?}): {:?}", String::from_utf8_lossy(&head))
            }
        }
    }
    let head = String::from_utf8(head).expect("an ASCII response head");
    let (status_line, headers) = head.split_once("\r\n").expect("a status line");
    let status = status_line.split(' ').nth(1).and_then(|code| code.parse().ok());
    let status = status.unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    (stream, Response { status, headers: headers.to_ascii_lowercase() })
}

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;

/// What reading one frame found.
enum Frame {
    /// A frame: its opcode and payload.
    Data(u8, Vec<u8>),
    /// The connection closed.
    Closed,
    /// Nothing arrived in time.
    Silent,
}

/// A WebSocket client written by hand: masked frames out, frames in, MQTT packets parsed out of
/// the binary frames.
struct RawWebSocket {
    stream: TcpStream,
    /// MQTT bytes from binary frames, not yet parsed into packets.
    received: Vec<u8>,
    /// The status code of the close frame the server sent, if it sent one.
    close_code: Option<u16>,
}

impl RawWebSocket {
    /// Upgrades a connection to the broker's `/mqtt` with the `mqtt` subprotocol.
    fn open(broker: &Broker) -> RawWebSocket {
        let (stream, response) = request_upgrade(broker.websocket_addr(), "/mqtt", Some("mqtt"));
        assert_eq!(response.status, 101, "upgrade refused: {response:?}");
        RawWebSocket { stream, received: Vec::new(), close_code: None }
    }

    /// Sends one frame with FIN set, masked as a client must.
    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            length @ 0..=125 => frame.push(0x80 | length as u8),
            length @ 126..=0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(length as u16).to_be_bytes());
            }
            length => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(length as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&MASK);
        frame.extend(payload.iter().enumerate().map(|(index, byte)| byte ^ MASK[index % 4]));
        self.stream.write_all(&frame).expect("write to herald");
    }

    /// Sends `bytes` in one binary frame.
    fn send_binary(&mut self, bytes: &[u8]) {
        self.send_frame(OPCODE_BINARY, bytes);
    }

    /// Reads one frame, waiting at most `timeout` for it to start.
    fn read_frame(&mut self, timeout: Duration) -> Frame {
        self.stream.set_read_timeout(Some(timeout)).expect("set read timeout");
        let mut head = [0_u8; 2];
        match self.stream.read(&mut head[..1]) {
            Ok(0) => return Frame::Closed,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Frame::Silent;
            }
            Err(error)
                if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) =>
            {
                return Frame::Closed;
            }
            Err(error) => panic!("read from herald: {error}"),
        }
        self.stream.set_read_timeout(Some(STEP_TIMEOUT)).expect("set read timeout");
        if self.stream.read_exact(&mut head[1..]).is_err() {
            return Frame::Closed;
        }
        assert_eq!(head[1] & 0x80, 0, "a server must not mask its frames");
        let length = match head[1] & 0x7F {
            126 => {
                let mut length = [0_u8; 2];
                self.stream.read_exact(&mut length).expect("read a frame length");
                u64::from(u16::from_be_bytes(length))
            }
            127 => {
                let mut length = [0_u8; 8];
                self.stream.read_exact(&mut length).expect("read a frame length");
                u64::from_be_bytes(length)
            }
            length => u64::from(length),
        };
        let mut payload = vec![0_u8; usize::try_from(length).expect("frame length fits")];
        if self.stream.read_exact(&mut payload).is_err() {
            return Frame::Closed;
        }
        Frame::Data(head[0] & 0x0F, payload)
    }

    /// Reads the next MQTT packet, waiting at most `timeout`.
    fn receive(&mut self, timeout: Duration) -> Incoming {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(packet) = take_packet(&mut self.received) {
                return Incoming::Packet(packet);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Incoming::Silent;
            }
            match self.read_frame(left) {
                Frame::Data(OPCODE_BINARY | OPCODE_CONTINUATION, payload) => self.received.extend(payload),
                Frame::Data(OPCODE_CLOSE, payload) => {
                    self.close_code = payload.get(..2).map(|code| u16::from_be_bytes([code[0], code[1]]));
                    return Incoming::Closed;
                }
                // [MQTT-6.0.0-1]: MQTT travels in binary frames only.
                Frame::Data(OPCODE_TEXT, payload) => panic!("herald sent a text frame: {payload:?}"),
                Frame::Data(..) => {}
                Frame::Closed => return Incoming::Closed,
                Frame::Silent => return Incoming::Silent,
            }
        }
    }

    /// Reads the next packet; panics if the connection closes or stays silent for [`STEP_TIMEOUT`].
    fn expect_packet(&mut self) -> Packet {
        match self.receive(STEP_TIMEOUT) {
            Incoming::Packet(packet) => packet,
            other => panic!("expected a packet from herald, got {other:?}"),
        }
    }

    /// Reads until the broker closes the connection (close frame or end of stream), at most
    /// [`STEP_TIMEOUT`]; returns the packets that came before the close.
    fn expect_closed(&mut self) -> Vec<Packet> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut packets = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "herald kept the connection open; it sent {packets:?}");
            match self.receive(left) {
                Incoming::Packet(packet) => packets.push(packet),
                Incoming::Closed => return packets,
                Incoming::Silent => {}
            }
        }
    }
}

/// Removes and returns the first whole MQTT packet of `bytes`, if there is one.
fn take_packet(bytes: &mut Vec<u8>) -> Option<Packet> {
    let mut length = 0_usize;
    for index in 1..=4 {
        let byte = *bytes.get(index)?;
        length |= usize::from(byte & 0x7F) << (7 * (index - 1));
        if byte & 0x80 == 0 {
            let end = index + 1 + length;
            if bytes.len() < end {
                return None;
            }
            let packet = Packet { first_byte: bytes[0], body: bytes[index + 1..end].to_vec() };
            bytes.drain(..end);
            return Some(packet);
        }
    }
    panic!("herald sent a remaining length longer than 4 bytes");
}
