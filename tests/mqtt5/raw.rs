//! Raw MQTT 5 over TCP, for what paho 1.6.1 cannot send or show: acknowledgement reason codes,
//! a DISCONNECT without properties, topic aliases on the wire, packets beyond a limit, a client
//! that withholds its acknowledgements.
//!
//! Packets are written by hand from the byte layout of the specification (§2, §3), and read
//! back by the small decoder below, so that these tests share no code with Herald's codec: a
//! mistake both sides agreed on would go unseen.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Upper bound for one packet to arrive on loopback.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// First bytes (packet type and flags, §2.1.2).
pub(crate) const CONNECT: u8 = 0x10;
pub(crate) const CONNACK: u8 = 0x20;
pub(crate) const PUBLISH: u8 = 0x30;
pub(crate) const PUBACK: u8 = 0x40;
pub(crate) const PUBREC: u8 = 0x50;
/// PUBREL carries the fixed flags 0b0010.
pub(crate) const PUBREL: u8 = 0x62;
pub(crate) const PUBCOMP: u8 = 0x70;
/// SUBSCRIBE carries the fixed flags 0b0010.
pub(crate) const SUBSCRIBE: u8 = 0x82;
pub(crate) const SUBACK: u8 = 0x90;
/// UNSUBSCRIBE carries the fixed flags 0b0010.
pub(crate) const UNSUBSCRIBE: u8 = 0xA2;
pub(crate) const UNSUBACK: u8 = 0xB0;
pub(crate) const DISCONNECT: u8 = 0xE0;
pub(crate) const AUTH: u8 = 0xF0;

/// PUBLISH flags: QoS 1, QoS 2, RETAIN (§3.3.1).
pub(crate) const QOS1: u8 = 0x02;
pub(crate) const QOS2: u8 = 0x04;
pub(crate) const RETAIN: u8 = 0x01;

/// Property identifiers (§2.2.2.2).
pub(crate) mod property {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Returns `value` as a Variable Byte Integer (§1.5.5).
pub(crate) fn variable(mut value: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}

/// Returns `text` as a UTF-8 Encoded String: two-byte length, then the bytes (§1.5.4).
pub(crate) fn utf8(text: &str) -> Vec<u8> {
    let length = u16::try_from(text.len()).expect("short string");
    [&length.to_be_bytes()[..], text.as_bytes()].concat()
}

/// Returns a property block: its length as a Variable Byte Integer, then `properties`
/// (§2.2.2.1).
pub(crate) fn properties(properties: &[u8]) -> Vec<u8> {
    let length = u32::try_from(properties.len()).expect("short property block");
    [variable(length), properties.to_vec()].concat()
}

/// Returns a string property: identifier, then the UTF-8 Encoded String.
pub(crate) fn text_property(id: u8, text: &str) -> Vec<u8> {
    [vec![id], utf8(text)].concat()
}

/// Returns a binary property: identifier, then the Binary Data (§1.5.6).
pub(crate) fn binary_property(id: u8, data: &[u8]) -> Vec<u8> {
    let length = u16::try_from(data.len()).expect("short data");
    [&[id][..], &length.to_be_bytes(), data].concat()
}

/// Returns an AUTH with `reason_code` and the property bytes `auth_properties` (§3.15).
pub(crate) fn auth(reason_code: u8, auth_properties: &[u8]) -> Vec<u8> {
    packet(AUTH, &[vec![reason_code], properties(auth_properties)].concat())
}

/// Returns a whole packet: `first_byte`, the Remaining Length, then `body` (§2.1).
pub(crate) fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(body.len()).expect("body fits a packet");
    [vec![first_byte], variable(length), body.to_vec()].concat()
}

/// Returns a v5 CONNECT with clean start for `client_id`, keep-alive `keep_alive` seconds and
/// the property bytes `connect_properties` (§3.1).
pub(crate) fn connect(client_id: &str, keep_alive: u16, connect_properties: &[u8]) -> Vec<u8> {
    connect_with_flags(0x02, client_id, keep_alive, connect_properties)
}

/// Returns a v5 CONNECT that resumes the session of `client_id` (no clean start).
pub(crate) fn resume(client_id: &str, keep_alive: u16, connect_properties: &[u8]) -> Vec<u8> {
    connect_with_flags(0x00, client_id, keep_alive, connect_properties)
}

fn connect_with_flags(flags: u8, client_id: &str, keep_alive: u16, connect_properties: &[u8]) -> Vec<u8> {
    let body = [
        utf8("MQTT"),                      // protocol name
        vec![0x05],                        // protocol level 5
        vec![flags],                       // connect flags: clean start or not, no will, no credentials
        keep_alive.to_be_bytes().to_vec(), // keep alive
        properties(connect_properties),    // CONNECT properties
        utf8(client_id),                   // payload: client identifier
    ]
    .concat();
    packet(CONNECT, &body)
}

/// Returns a v5 CONNECT with clean start for `client_id`, with a will to `will_topic` (QoS 0,
/// no properties) and the credentials `user`, where given (§3.1.2.3, §3.1.3).
pub(crate) fn connect_with(client_id: &str, will_topic: Option<&str>, user: Option<(&str, &str)>) -> Vec<u8> {
    let mut flags = 0x02;
    let mut payload = utf8(client_id);
    if let Some(topic) = will_topic {
        flags |= 0x04;
        payload.extend(properties(&[])); // will properties
        payload.extend(utf8(topic));
        payload.extend(utf8("will")); // will payload (binary data, length-prefixed)
    }
    if let Some((name, password)) = user {
        flags |= 0xC0;
        payload.extend(utf8(name));
        payload.extend(utf8(password));
    }
    let body =
        [utf8("MQTT"), vec![0x05, flags], 60u16.to_be_bytes().to_vec(), properties(&[]), payload].concat();
    packet(CONNECT, &body)
}

/// Returns a PUBLISH to `topic` with `flags` (QoS, RETAIN), `packet_id` (QoS 1/2 only), the
/// property bytes `publish_properties` and `payload` (§3.3).
pub(crate) fn publish(
    flags: u8,
    topic: &str,
    packet_id: u16,
    publish_properties: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let packet_id = if flags & (QOS1 | QOS2) != 0 { packet_id.to_be_bytes().to_vec() } else { Vec::new() };
    let body = [
        utf8(topic),                    // topic name (empty with a topic alias)
        packet_id,                      // packet identifier, QoS 1/2 only
        properties(publish_properties), // PUBLISH properties
        payload.to_vec(),               // payload
    ]
    .concat();
    packet(PUBLISH | flags, &body)
}

/// Returns a PUBACK, PUBREC, PUBREL or PUBCOMP for `packet_id` with reason code Success and no
/// properties, in the short form §3.4.2.1 allows.
pub(crate) fn ack(first_byte: u8, packet_id: u16) -> Vec<u8> {
    packet(first_byte, &packet_id.to_be_bytes())
}

/// Returns a SUBSCRIBE with `packet_id`, the property bytes `subscribe_properties` and one
/// filter per `(filter, options byte)` (§3.8).
pub(crate) fn subscribe(packet_id: u16, subscribe_properties: &[u8], filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = [packet_id.to_be_bytes().to_vec(), properties(subscribe_properties)].concat();
    for (filter, options) in filters {
        body.extend(utf8(filter)); // topic filter
        body.push(*options); // subscription options: QoS, no local, retain as published, handling
    }
    packet(SUBSCRIBE, &body)
}

/// Returns an UNSUBSCRIBE with `packet_id`, no properties, and `filters` (§3.10).
pub(crate) fn unsubscribe(packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = [packet_id.to_be_bytes().to_vec(), properties(&[])].concat();
    for filter in filters {
        body.extend(utf8(filter));
    }
    packet(UNSUBSCRIBE, &body)
}

/// A property value, by the data type of its identifier (§2.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// Byte, Two Byte Integer, Four Byte Integer or Variable Byte Integer.
    Number(u32),
    /// UTF-8 Encoded String.
    Text(String),
    /// Binary Data.
    Binary(Vec<u8>),
    /// UTF-8 String Pair (a user property).
    Pair(String, String),
}

/// The properties of a received packet, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Properties(pub(crate) Vec<(u8, Value)>);

impl Properties {
    /// Returns the first value of number property `id`.
    pub(crate) fn number(&self, id: u8) -> Option<u32> {
        self.0.iter().find_map(|(key, value)| match value {
            Value::Number(number) if *key == id => Some(*number),
            _ => None,
        })
    }

    /// Returns the first value of string property `id`.
    pub(crate) fn text(&self, id: u8) -> Option<&str> {
        self.0.iter().find_map(|(key, value)| match value {
            Value::Text(text) if *key == id => Some(text.as_str()),
            _ => None,
        })
    }

    /// Returns the first value of binary property `id`.
    pub(crate) fn binary(&self, id: u8) -> Option<&[u8]> {
        self.0.iter().find_map(|(key, value)| match value {
            Value::Binary(data) if *key == id => Some(data.as_slice()),
            _ => None,
        })
    }

    /// Returns the value of the first user property named `name`.
    pub(crate) fn user(&self, name: &str) -> Option<&str> {
        self.0.iter().find_map(|(_, value)| match value {
            Value::Pair(key, value) if key == name => Some(value.as_str()),
            _ => None,
        })
    }

    /// Returns whether property `id` is present.
    pub(crate) fn has(&self, id: u8) -> bool {
        self.0.iter().any(|(key, _)| *key == id)
    }
}

/// Reads a property block at the front of `bytes`; returns it and the bytes after it.
fn read_properties(bytes: &[u8]) -> (Properties, &[u8]) {
    let (length, used) = read_variable(bytes);
    let (mut block, rest) = bytes[used..].split_at(length as usize);
    let mut properties = Vec::new();
    while let Some((&id, tail)) = block.split_first() {
        let (value, after) = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                (Value::Number(u32::from(tail[0])), &tail[1..])
            }
            0x13 | 0x21 | 0x22 | 0x23 => {
                (Value::Number(u32::from(u16::from_be_bytes([tail[0], tail[1]]))), &tail[2..])
            }
            0x02 | 0x11 | 0x18 | 0x27 => {
                (Value::Number(u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]])), &tail[4..])
            }
            0x0B => {
                let (number, used) = read_variable(tail);
                (Value::Number(number), &tail[used..])
            }
            0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                let (text, after) = read_string(tail);
                (Value::Text(text), after)
            }
            0x09 | 0x16 => {
                let length = usize::from(u16::from_be_bytes([tail[0], tail[1]]));
                (Value::Binary(tail[2..2 + length].to_vec()), &tail[2 + length..])
            }
            0x26 => {
                let (key, after) = read_string(tail);
                let (value, after) = read_string(after);
                (Value::Pair(key, value), after)
            }
            other => panic!("unknown property identifier {other:#04x} in {bytes:02x?}"),
        };
        properties.push((id, value));
        block = after;
    }
    (Properties(properties), rest)
}

fn read_variable(bytes: &[u8]) -> (u32, usize) {
    let mut value = 0_u32;
    for (index, byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            return (value, index + 1);
        }
    }
    panic!("bad variable byte integer in {bytes:02x?}");
}

fn read_string(bytes: &[u8]) -> (String, &[u8]) {
    let length = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    let text = String::from_utf8(bytes[2..2 + length].to_vec()).expect("UTF-8 string");
    (text, &bytes[2 + length..])
}

/// One packet read off the connection.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    /// Packet type and flags.
    pub(crate) first_byte: u8,
    /// Everything after the Remaining Length.
    pub(crate) body: Vec<u8>,
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Packet({:#04x}, {:02x?})", self.first_byte, self.body)
    }
}

impl Packet {
    /// Returns the packet type (the first byte's high nibble, as a first byte).
    pub(crate) fn kind(&self) -> u8 {
        self.first_byte & 0xF0
    }

    /// Returns the size on the wire: fixed header included.
    pub(crate) fn wire_size(&self) -> usize {
        1 + variable(u32::try_from(self.body.len()).expect("small")).len() + self.body.len()
    }

    /// Returns the reason code of a CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT or AUTH;
    /// the short forms without one mean Success (§3.4.2.1, §3.14.2.1).
    pub(crate) fn reason_code(&self) -> u8 {
        match self.kind() {
            CONNACK => self.body[1],
            DISCONNECT | AUTH => self.body.first().copied().unwrap_or(0x00),
            _ => self.body.get(2).copied().unwrap_or(0x00),
        }
    }

    /// Returns the Session Present flag of a CONNACK.
    pub(crate) fn session_present(&self) -> bool {
        self.body[0] & 0x01 != 0
    }

    /// Returns the packet identifier of an acknowledgement, SUBACK or UNSUBACK.
    pub(crate) fn packet_id(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// Returns the properties of a CONNACK, acknowledgement, SUBACK, UNSUBACK, DISCONNECT or
    /// AUTH.
    pub(crate) fn properties(&self) -> Properties {
        let start = match self.kind() {
            CONNACK | SUBACK | UNSUBACK => 2,
            DISCONNECT | AUTH => 1,
            _ => 3,
        };
        if self.body.len() <= start {
            return Properties::default();
        }
        read_properties(&self.body[start..]).0
    }

    /// Returns the reason codes of a SUBACK or UNSUBACK, one per filter.
    pub(crate) fn reason_codes(&self) -> Vec<u8> {
        read_properties(&self.body[2..]).1.to_vec()
    }

    /// Decodes a PUBLISH.
    pub(crate) fn publish(&self) -> Publication {
        assert_eq!(self.kind(), PUBLISH, "not a PUBLISH: {self:?}");
        let qos = (self.first_byte >> 1) & 0x03;
        let (topic, rest) = read_string(&self.body);
        let (packet_id, rest) =
            if qos > 0 { (u16::from_be_bytes([rest[0], rest[1]]), &rest[2..]) } else { (0, rest) };
        let (properties, payload) = read_properties(rest);
        Publication {
            topic,
            qos,
            retain: self.first_byte & RETAIN != 0,
            packet_id,
            properties,
            payload: payload.to_vec(),
        }
    }
}

/// A decoded PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publication {
    /// The topic name; empty when a topic alias stands for it.
    pub(crate) topic: String,
    /// QoS 0, 1 or 2.
    pub(crate) qos: u8,
    /// The RETAIN flag.
    pub(crate) retain: bool,
    /// The packet identifier (0 at QoS 0).
    pub(crate) packet_id: u16,
    /// The properties, in wire order.
    pub(crate) properties: Properties,
    /// The payload.
    pub(crate) payload: Vec<u8>,
}

/// What the connection read next.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A whole packet.
    Packet(Packet),
    /// The server closed the connection (end of stream or reset).
    Closed,
    /// Nothing arrived in time.
    Silent,
}

/// A TCP connection that sends hand-written bytes and reads packets back.
pub(crate) struct Raw {
    stream: TcpStream,
}

impl Raw {
    /// Opens a connection to `endpoint`.
    pub(crate) fn open(endpoint: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&endpoint, STEP_TIMEOUT).expect("connect to herald");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Raw { stream }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK, which must accept it.
    pub(crate) fn connected(endpoint: SocketAddr, connect: &[u8]) -> (Raw, Packet) {
        let mut raw = Raw::open(endpoint);
        raw.send(connect);
        let connack = raw.expect(CONNACK);
        assert_eq!(connack.reason_code(), 0x00, "CONNACK refused: {connack:?}");
        (raw, connack)
    }

    /// Writes `bytes` in one call.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to herald");
    }

    /// Reads the next packet, waiting at most `timeout` for it to start.
    pub(crate) fn receive(&mut self, timeout: Duration) -> Incoming {
        self.stream.set_read_timeout(Some(timeout)).expect("set read timeout");
        let mut first = [0_u8; 1];
        match self.stream.read(&mut first) {
            Ok(0) => return Incoming::Closed,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Incoming::Silent;
            }
            Err(_) => return Incoming::Closed,
        }
        self.stream.set_read_timeout(Some(STEP_TIMEOUT)).expect("set read timeout");
        let mut length = 0_usize;
        for index in 0..4 {
            let mut byte = [0_u8; 1];
            if self.stream.read_exact(&mut byte).is_err() {
                return Incoming::Closed;
            }
            length |= usize::from(byte[0] & 0x7F) << (7 * index);
            if byte[0] & 0x80 == 0 {
                let mut body = vec![0_u8; length];
                if self.stream.read_exact(&mut body).is_err() {
                    return Incoming::Closed;
                }
                return Incoming::Packet(Packet { first_byte: first[0], body });
            }
        }
        panic!("herald sent a Remaining Length longer than 4 bytes");
    }

    /// Reads the next packet, which must be of type `kind` (a first byte without flags).
    pub(crate) fn expect(&mut self, kind: u8) -> Packet {
        match self.receive(STEP_TIMEOUT) {
            Incoming::Packet(packet) if packet.kind() == kind & 0xF0 => packet,
            other => panic!("expected packet type {kind:#04x}, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives within `window`.
    pub(crate) fn expect_silence(&mut self, window: Duration) {
        match self.receive(window) {
            Incoming::Silent => {}
            other => panic!("expected nothing within {window:?}, got {other:?}"),
        }
    }

    /// Reads until the server closes the connection; returns the packets before the close.
    pub(crate) fn expect_closed(&mut self) -> Vec<Packet> {
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

    /// Reads until the server closes the connection and returns the DISCONNECT it sent last.
    pub(crate) fn expect_disconnect(&mut self) -> Packet {
        let packets = self.expect_closed();
        match packets.last() {
            Some(packet) if packet.kind() == DISCONNECT => packet.clone(),
            _ => panic!("expected a DISCONNECT before the close, got {packets:?}"),
        }
    }
}
