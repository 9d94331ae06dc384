//! The MQTT control packets (§3), one file each, and the dispatch between
//! them by packet type.
//!
//! Each packet type has `decode` (from the body, the fixed header already
//! consumed), `body_len` (the remaining length it will encode to) and
//! `encode_body`. They take the protocol version and differ between 3.1.1
//! and 5.0 only where the wire format does.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod ping;
mod publish;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::ReasonCode;

pub use ack::PubAck;
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use publish::Publish;
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, SubscriptionOptions};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::wire;

use ack::AckKind;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// One MQTT control packet. Reason codes are always MQTT 5.0 codes; the codec
/// maps them for 3.1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client request to connect (§3.1). Boxed: it is large and rare.
    Connect(Box<Connect>),
    /// Connect acknowledgment (§3.2).
    ConnAck(ConnAck),
    /// Publish message (§3.3).
    Publish(Publish),
    /// Publish acknowledgment, QoS 1 (§3.4).
    PubAck(PubAck),
    /// Publish received, QoS 2 part 1 (§3.5).
    PubRec(PubAck),
    /// Publish release, QoS 2 part 2 (§3.6).
    PubRel(PubAck),
    /// Publish complete, QoS 2 part 3 (§3.7).
    PubComp(PubAck),
    /// Subscribe request (§3.8).
    Subscribe(Subscribe),
    /// Subscribe acknowledgment (§3.9).
    SubAck(SubAck),
    /// Unsubscribe request (§3.10).
    Unsubscribe(Unsubscribe),
    /// Unsubscribe acknowledgment (§3.11).
    UnsubAck(UnsubAck),
    /// Ping request (§3.12).
    PingReq,
    /// Ping response (§3.13).
    PingResp,
    /// Disconnect notification (§3.14).
    Disconnect(Disconnect),
    /// Authentication exchange, MQTT 5.0 only (§3.15).
    Auth(Auth),
}

impl Packet {
    /// Returns the packet's name as the spec writes it, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => AckKind::PubAck.name(),
            Packet::PubRec(_) => AckKind::PubRec.name(),
            Packet::PubRel(_) => AckKind::PubRel.name(),
            Packet::PubComp(_) => AckKind::PubComp.name(),
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }

    /// Returns the first byte of the fixed header: type and flags.
    pub(crate) fn first_byte(&self) -> u8 {
        let (packet_type, flags) = match self {
            Packet::Connect(_) => (CONNECT, 0),
            Packet::ConnAck(_) => (CONNACK, 0),
            Packet::Publish(publish) => (PUBLISH, publish.flags()),
            Packet::PubAck(_) => (PUBACK, 0),
            Packet::PubRec(_) => (PUBREC, 0),
            Packet::PubRel(_) => (PUBREL, 0b0010),
            Packet::PubComp(_) => (PUBCOMP, 0),
            Packet::Subscribe(_) => (SUBSCRIBE, 0b0010),
            Packet::SubAck(_) => (SUBACK, 0),
            Packet::Unsubscribe(_) => (UNSUBSCRIBE, 0b0010),
            Packet::UnsubAck(_) => (UNSUBACK, 0),
            Packet::PingReq => (PINGREQ, 0),
            Packet::PingResp => (PINGRESP, 0),
            Packet::Disconnect(_) => (DISCONNECT, 0),
            Packet::Auth(_) => (AUTH, 0),
        };
        (packet_type << 4) | flags
    }

    /// Returns the remaining length this packet encodes to at `version`.
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(connect) => connect.body_len(version),
            Packet::ConnAck(connack) => connack.body_len(version),
            Packet::Publish(publish) => publish.body_len(version),
            Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
                ack.body_len(version)
            }
            Packet::Subscribe(subscribe) => subscribe.body_len(version),
            Packet::SubAck(suback) => suback.body_len(version),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.body_len(version),
            Packet::UnsubAck(unsuback) => unsuback.body_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(disconnect) => disconnect.body_len(version),
            Packet::Auth(auth) => auth.body_len(version),
        }
    }

    /// Appends everything after the fixed header.
    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(connect) => connect.encode_body(version, dst),
            Packet::ConnAck(connack) => connack.encode_body(version, dst),
            Packet::Publish(publish) => publish.encode_body(version, dst),
            Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
                ack.encode_body(version, dst)
            }
            Packet::Subscribe(subscribe) => subscribe.encode_body(version, dst),
            Packet::SubAck(suback) => suback.encode_body(version, dst),
            Packet::Unsubscribe(unsubscribe) => unsubscribe.encode_body(version, dst),
            Packet::UnsubAck(unsuback) => unsuback.encode_body(version, dst),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(disconnect) => disconnect.encode_body(version, dst),
            Packet::Auth(auth) => auth.encode_body(version, dst),
        }
    }
}

/// Checks the first byte of a fixed header (§2.1.2, §2.1.3): a packet type
/// that exists at `version`, and the flags that type requires. PUBLISH flags
/// are checked here too, so a bad one fails before its body is buffered.
pub(crate) fn check_first_byte(byte: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let packet_type = byte >> 4;
    let flags = byte & 0x0F;
    let required = match packet_type {
        0 => return Err(DecodeError::ReservedPacketType { packet_type }),
        AUTH if version == ProtocolVersion::V311 => {
            return Err(DecodeError::ReservedPacketType { packet_type });
        }
        PUBLISH => return publish::check_flags(flags),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        _ => 0,
    };
    if flags != required {
        return Err(DecodeError::InvalidFixedHeaderFlags { packet_type, flags });
    }
    Ok(())
}

/// Decodes a packet body. `first_byte` has passed [`check_first_byte`] and
/// `body` holds exactly the remaining length.
pub(crate) fn decode(
    first_byte: u8,
    mut body: Bytes,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let body = &mut body;
    let packet = match first_byte >> 4 {
        CONNECT => Packet::Connect(Box::new(Connect::decode(body)?)),
        CONNACK => Packet::ConnAck(ConnAck::decode(body, version)?),
        PUBLISH => Packet::Publish(Publish::decode(first_byte & 0x0F, body, version)?),
        PUBACK => Packet::PubAck(PubAck::decode(AckKind::PubAck, body, version)?),
        PUBREC => Packet::PubRec(PubAck::decode(AckKind::PubRec, body, version)?),
        PUBREL => Packet::PubRel(PubAck::decode(AckKind::PubRel, body, version)?),
        PUBCOMP => Packet::PubComp(PubAck::decode(AckKind::PubComp, body, version)?),
        SUBSCRIBE => Packet::Subscribe(Subscribe::decode(body, version)?),
        SUBACK => Packet::SubAck(SubAck::decode(body, version)?),
        UNSUBSCRIBE => Packet::Unsubscribe(Unsubscribe::decode(body, version)?),
        UNSUBACK => Packet::UnsubAck(UnsubAck::decode(body, version)?),
        PINGREQ => ping::decode(body, Packet::PingReq)?,
        PINGRESP => ping::decode(body, Packet::PingResp)?,
        DISCONNECT => Packet::Disconnect(Disconnect::decode(body, version)?),
        AUTH => Packet::Auth(Auth::decode(body, version)?),
        packet_type => return Err(DecodeError::ReservedPacketType { packet_type }),
    };
    if !body.is_empty() {
        return Err(DecodeError::TrailingBytes { count: body.len() });
    }
    Ok(packet)
}

/// Reads a v5 reason code and checks it is one `packet` may carry (the
/// reason code table of its §3.x.2.1).
fn read_reason_code(
    buf: &mut Bytes,
    packet: &'static str,
    allowed: &[ReasonCode],
) -> Result<ReasonCode, DecodeError> {
    let code = wire::read_u8(buf)?;
    ReasonCode::from_u8(code)
        .filter(|reason| allowed.contains(reason))
        .ok_or(DecodeError::InvalidReasonCode { packet, code })
}

/// Writes a packet identifier; shared by every packet that has one.
fn write_packet_id(dst: &mut BytesMut, packet_id: std::num::NonZeroU16) {
    dst.put_u16(packet_id.get());
}
