//! Why a packet could not be decoded or encoded.
//!
//! Every [`DecodeError`] message cites the normative statement it enforces.
//! Where 3.1.1 and 5.0 number the same rule differently the 5.0 label comes
//! first and the 3.1.1 one follows, because a bare label means different
//! things in the two documents. Rules the specs state without a label cite
//! their section.
//!
//! The decoder sorts failures the way MQTT 5.0 §1.2 does: a packet that
//! "cannot be parsed" is a Malformed Packet (0x81); one that parses but holds
//! "data that is not allowed by the protocol" is a Protocol Error (0x82).
//! [`DecodeError::reason_code`] gives the code to send in CONNACK or
//! DISCONNECT before closing the connection.

use herald_core::ReasonCode;
use herald_core::topic::TopicError;

use crate::codec::ProtocolVersion;
use crate::properties::PropertyId;

/// Why the bytes received are not a valid MQTT packet. The connection must be
/// closed after any of these, after sending [`DecodeError::reason_code`] where
/// the protocol version allows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Packet type 0, or 15 (AUTH) on an MQTT 3.1.1 connection.
    #[error("[§2.1.2] control packet type {packet_type} is reserved")]
    ReservedPacketType {
        /// The upper four bits of the first byte.
        packet_type: u8,
    },
    /// The lower four bits of the first byte differ from the value the packet
    /// type requires.
    #[error(
        "[MQTT-2.1.3-1] (3.1.1: [MQTT-2.2.2-1]) reserved flags {flags:#06b} on packet type {packet_type}"
    )]
    InvalidFixedHeaderFlags {
        /// The upper four bits of the first byte.
        packet_type: u8,
        /// The lower four bits of the first byte.
        flags: u8,
    },
    /// A variable byte integer (the remaining length, a property length, a
    /// subscription identifier) continues past its fourth byte.
    #[error("[§1.5.5] variable byte integer longer than four bytes")]
    VariableIntegerTooLong,
    /// A variable byte integer uses more bytes than its value needs.
    #[error("[MQTT-1.5.5-1] variable byte integer not encoded in the minimum number of bytes")]
    NonMinimalVariableInteger,
    /// The fixed header announces a packet larger than the maximum packet
    /// size this side accepts.
    #[error("[MQTT-3.2.2-15] [MQTT-3.1.2-24] packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge {
        /// Total size announced by the fixed header, header included.
        size: usize,
        /// The limit in force.
        max: u32,
    },
    /// A field runs past the end of the packet given by the remaining length.
    #[error("[§2.1.4] a field runs past the end of the packet")]
    UnexpectedEnd,
    /// Bytes are left inside the packet after its last field.
    #[error("[§2.1.4] {count} bytes left over after the last field of the packet")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
    /// A UTF-8 encoded string is not well-formed UTF-8.
    #[error("[MQTT-1.5.4-1] (3.1.1: [MQTT-1.5.3-1]) string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A UTF-8 encoded string contains U+0000.
    #[error("[MQTT-1.5.4-2] (3.1.1: [MQTT-1.5.3-2]) string contains the null character U+0000")]
    NullCharacter,
    /// A packet identifier is zero.
    #[error("[MQTT-2.2.1-3] (3.1.1: [MQTT-2.3.1-1]) packet identifier is zero")]
    ZeroPacketId,

    /// Both QoS bits of a PUBLISH are set.
    #[error("[MQTT-3.3.1-4] qos bits set to 3")]
    PublishQosThree,
    /// DUP is set on a QoS 0 PUBLISH.
    #[error("[MQTT-3.3.1-2] dup flag set on a qos 0 publish")]
    DupWithQos0,
    /// A PUBLISH or will topic is not a valid topic name.
    #[error("topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A v5 PUBLISH has an empty topic and no Topic Alias to stand for it.
    #[error("[§3.3.2.3.4] empty topic name without a topic alias")]
    EmptyTopicWithoutAlias,
    /// A Topic Alias property has the value 0.
    #[error("[MQTT-3.3.2-8] topic alias 0")]
    TopicAliasZero,
    /// A Response Topic property is not a valid topic name.
    #[error("[MQTT-3.3.2-14] response topic: {0}")]
    InvalidResponseTopic(TopicError),

    /// The CONNECT protocol name is neither "MQTT" nor MQTT 3.1's "MQIsdp".
    #[error("[MQTT-3.1.2-1] protocol name is not \"MQTT\"")]
    InvalidProtocolName,
    /// The CONNECT protocol level is not 4 (3.1.1) or 5 (5.0). The server
    /// answers CONNACK 0x84 (v5) or 0x01 (v3.1.1) before closing.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {level}")]
    UnsupportedProtocolVersion {
        /// The level the client asked for (3 for MQTT 3.1).
        level: u8,
    },
    /// The reserved bit 0 of the CONNECT flags is set.
    #[error("[MQTT-3.1.2-3] reserved connect flag is set")]
    ConnectReservedFlag,
    /// Will QoS is non-zero while the will flag is 0.
    #[error("[MQTT-3.1.2-11] (3.1.1: [MQTT-3.1.2-13]) will qos set without a will")]
    WillQosWithoutWill,
    /// Will QoS is 3.
    #[error("[MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]) will qos set to 3")]
    WillQosThree,
    /// Will retain is set while the will flag is 0.
    #[error("[MQTT-3.1.2-13] (3.1.1: [MQTT-3.1.2-15]) will retain set without a will")]
    WillRetainWithoutWill,
    /// An MQTT 3.1.1 CONNECT sets the password flag without the user name flag.
    #[error("(3.1.1: [MQTT-3.1.2-22]) password flag set without the user name flag")]
    PasswordWithoutUsername,
    /// A CONNECT carries Authentication Data but no Authentication Method.
    #[error("[§3.1.2.11.10] authentication data without an authentication method")]
    AuthenticationDataWithoutMethod,

    /// Reserved bits 7-1 of the CONNACK acknowledge flags are set.
    #[error("[MQTT-3.2.2-1] reserved connack flags set: {flags:#04x}")]
    ConnAckReservedFlags {
        /// The whole acknowledge flags byte.
        flags: u8,
    },
    /// A refusing CONNACK claims a session is present.
    #[error("[MQTT-3.2.2-6] (3.1.1: [MQTT-3.2.2-4]) session present set on a refused connection")]
    SessionPresentWithError,
    /// A reason code is undefined, or defined but not valid in this packet.
    #[error("[§2.4] reason code {code:#04x} is not valid in {packet}")]
    InvalidReasonCode {
        /// The packet it appeared in.
        packet: &'static str,
        /// The byte on the wire.
        code: u8,
    },

    /// A SUBSCRIBE or UNSUBSCRIBE carries no topic filter.
    #[error("[MQTT-3.8.3-2] (3.1.1: [MQTT-3.8.3-3]) [MQTT-3.10.3-2] {packet} carries no topic filter")]
    NoTopicFilters {
        /// SUBSCRIBE or UNSUBSCRIBE.
        packet: &'static str,
    },
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter is not valid.
    #[error("topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// Reserved bits of a subscription options byte are set (bits 2-7 in
    /// 3.1.1, bits 6-7 in 5.0).
    #[error("[MQTT-3.8.3-5] (3.1.1: [MQTT-3-8.3-4]) reserved subscription option bits set: {options:#04x}")]
    SubscriptionOptionsReserved {
        /// The whole options byte.
        options: u8,
    },
    /// A subscription asks for QoS 3.
    #[error("[§3.8.3.1] (3.1.1: [MQTT-3-8.3-4]) maximum qos 3 in subscription options")]
    SubscriptionQosThree,
    /// A subscription's Retain Handling is 3.
    #[error("[§3.8.3.1] retain handling 3 in subscription options")]
    RetainHandlingThree,
    /// No Local is set on a `$share/` subscription.
    #[error("[MQTT-3.8.3-4] no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A SUBACK or v5 UNSUBACK answers no topic filter.
    #[error("[MQTT-3.9.3-1] [MQTT-3.11.3-1] {packet} carries no reason code")]
    NoReasonCodes {
        /// SUBACK or UNSUBACK.
        packet: &'static str,
    },

    /// A property identifier that MQTT 5.0 does not define.
    #[error("[§2.2.2.2] unknown property identifier {id:#04x}")]
    UnknownProperty {
        /// The identifier byte.
        id: u8,
    },
    /// A property that table 2-4 does not allow in this packet (or in will
    /// properties).
    #[error("[§2.2.2.2] property {id:?} is not valid in {packet}")]
    PropertyNotAllowed {
        /// The property.
        id: PropertyId,
        /// Where it appeared.
        packet: &'static str,
    },
    /// A property that may appear at most once appears again.
    #[error("[§3, per property] property {id:?} included more than once")]
    DuplicateProperty {
        /// The property.
        id: PropertyId,
    },
    /// A property value outside the range its definition allows (a 0/1 flag
    /// of 2 or more; a zero Receive Maximum, Maximum Packet Size or
    /// Subscription Identifier).
    #[error("[§3, per property] property {id:?} has the invalid value {value}")]
    InvalidPropertyValue {
        /// The property.
        id: PropertyId,
        /// The value received.
        value: u32,
    },
    /// The property length runs past the end of the packet.
    #[error("[§2.2.2.1] property length runs past the end of the packet")]
    PropertyLengthExceedsPacket,
}

impl DecodeError {
    /// Returns the MQTT 5.0 reason code to send in CONNACK (before CONNECT
    /// completed) or DISCONNECT before closing. For a v3.1.1 client only
    /// [`ReasonCode::UnsupportedProtocolVersion`] matters: it becomes CONNACK
    /// return code 0x01 through [`ReasonCode::to_v3_connack`].
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            InvalidProtocolName | UnsupportedProtocolVersion { .. } => ReasonCode::UnsupportedProtocolVersion,
            TopicAliasZero => ReasonCode::TopicAliasInvalid,
            ZeroPacketId
            | InvalidTopicName(_)
            | EmptyTopicWithoutAlias
            | InvalidResponseTopic(_)
            | AuthenticationDataWithoutMethod
            | SessionPresentWithError
            | NoTopicFilters { .. }
            | InvalidTopicFilter(_)
            | SubscriptionQosThree
            | RetainHandlingThree
            | NoLocalOnSharedSubscription
            | NoReasonCodes { .. }
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. } => ReasonCode::ProtocolError,
            ReservedPacketType { .. }
            | InvalidFixedHeaderFlags { .. }
            | VariableIntegerTooLong
            | NonMinimalVariableInteger
            | UnexpectedEnd
            | TrailingBytes { .. }
            | InvalidUtf8
            | NullCharacter
            | PublishQosThree
            | DupWithQos0
            | ConnectReservedFlag
            | WillQosWithoutWill
            | WillQosThree
            | WillRetainWithoutWill
            | PasswordWithoutUsername
            | ConnAckReservedFlags { .. }
            | InvalidReasonCode { .. }
            | SubscriptionOptionsReserved { .. }
            | UnknownProperty { .. }
            | PropertyNotAllowed { .. }
            | PropertyLengthExceedsPacket => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet cannot be put on the wire. Nothing is appended to the output
/// buffer when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A UTF-8 string longer than its two-byte length prefix can say.
    #[error("[§1.5.4] string of {len} bytes exceeds 65535")]
    StringTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Binary data longer than its two-byte length prefix can say.
    #[error("[§1.5.6] binary data of {len} bytes exceeds 65535")]
    BinaryTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The packet body is longer than a remaining length can say.
    #[error("[§2.1.4] remaining length {remaining} exceeds 268435455")]
    PacketTooLarge {
        /// The body length the packet would need.
        remaining: usize,
    },
    /// A Subscription Identifier above the variable byte integer maximum.
    #[error("[§1.5.5] {value} exceeds the variable byte integer maximum 268435455")]
    VariableIntegerTooLarge {
        /// The value.
        value: u32,
    },
    /// A QoS 1 or 2 PUBLISH without a packet identifier.
    #[error("[MQTT-2.2.1-3] qos {qos} publish without a packet identifier")]
    MissingPacketId {
        /// The PUBLISH QoS.
        qos: u8,
    },
    /// A QoS 0 PUBLISH with a packet identifier, which its wire form has no
    /// room for.
    #[error("[MQTT-2.2.1-2] qos 0 publish with a packet identifier")]
    UnexpectedPacketId,
    /// DUP on a QoS 0 PUBLISH.
    #[error("[MQTT-3.3.1-2] dup flag on a qos 0 publish")]
    DupWithQos0,
    /// A packet that does not exist at the codec's protocol version (AUTH in
    /// 3.1.1).
    #[error("{packet} does not exist in {version:?}")]
    UnsupportedInVersion {
        /// The packet.
        packet: &'static str,
        /// The codec's version.
        version: ProtocolVersion,
    },
    /// A CONNECT whose `protocol` differs from the codec's version.
    #[error("connect for {connect:?} given to a codec at {codec:?}")]
    ConnectVersionMismatch {
        /// `Connect::protocol`.
        connect: ProtocolVersion,
        /// `Codec::version()`.
        codec: ProtocolVersion,
    },
    /// An MQTT 3.1.1 CONNECT with a password but no user name.
    #[error("(3.1.1: [MQTT-3.1.2-22]) password without a user name")]
    PasswordWithoutUsername,
    /// A SUBSCRIBE or UNSUBSCRIBE without filters, or a SUBACK or v5 UNSUBACK
    /// without reason codes.
    #[error("[MQTT-3.8.3-2] [MQTT-3.10.3-2] [MQTT-3.9.3-1] {packet} needs at least one entry")]
    EmptyPayload {
        /// The packet.
        packet: &'static str,
    },
}
