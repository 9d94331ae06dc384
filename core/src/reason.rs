//! MQTT 5.0 reason codes (spec §2.4) and their MQTT 3.1.1 equivalents.
//!
//! Session code speaks v5 reason codes only; the codec maps them to the
//! v3.1.1 CONNACK return codes and SUBACK failure code when it encodes for a
//! v3.1.1 client, and back when it decodes.

/// One MQTT 5.0 reason code. Several names share a value (0x00 is success,
/// normal disconnection and granted QoS 0); they are associated constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00: success, normal disconnection, granted QoS 0.
    Success = 0x00,
    /// 0x01: granted QoS 1.
    GrantedQos1 = 0x01,
    /// 0x02: granted QoS 2.
    GrantedQos2 = 0x02,
    /// 0x04: disconnect with will message.
    DisconnectWithWill = 0x04,
    /// 0x10: no matching subscribers.
    NoMatchingSubscribers = 0x10,
    /// 0x11: no subscription existed.
    NoSubscriptionExisted = 0x11,
    /// 0x18: continue authentication.
    ContinueAuthentication = 0x18,
    /// 0x19: re-authenticate.
    ReAuthenticate = 0x19,
    /// 0x80: unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81: malformed packet.
    MalformedPacket = 0x81,
    /// 0x82: protocol error.
    ProtocolError = 0x82,
    /// 0x83: implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84: unsupported protocol version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85: client identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86: bad user name or password.
    BadUserNameOrPassword = 0x86,
    /// 0x87: not authorized.
    NotAuthorized = 0x87,
    /// 0x88: server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89: server busy.
    ServerBusy = 0x89,
    /// 0x8A: banned.
    Banned = 0x8A,
    /// 0x8B: server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C: bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D: keep alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E: session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F: topic filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90: topic name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91: packet identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92: packet identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93: receive maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94: topic alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95: packet too large.
    PacketTooLarge = 0x95,
    /// 0x96: message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97: quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98: administrative action.
    AdministrativeAction = 0x98,
    /// 0x99: payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A: retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B: QoS not supported.
    QosNotSupported = 0x9B,
    /// 0x9C: use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D: server moved.
    ServerMoved = 0x9D,
    /// 0x9E: shared subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F: connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0: maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1: subscription identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2: wildcard subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// 0x00 in DISCONNECT.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 in SUBACK.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// Returns the reason code with this value, or `None` for a value the
    /// spec does not define.
    pub fn from_u8(value: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        Some(match value {
            0x00 => Success,
            0x01 => GrantedQos1,
            0x02 => GrantedQos2,
            0x04 => DisconnectWithWill,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QosNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// Returns the wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Returns true for codes of 0x80 and above, which report a failure.
    pub fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// Returns the MQTT 3.1.1 CONNACK return code (§3.2.2.3) closest to this
    /// v5 CONNACK reason code.
    pub fn to_v3_connack(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0x00,
            UnsupportedProtocolVersion => 0x01,
            ClientIdentifierNotValid => 0x02,
            BadUserNameOrPassword => 0x04,
            NotAuthorized | Banned | BadAuthenticationMethod => 0x05,
            _ => 0x03,
        }
    }

    /// Returns the v5 reason code for an MQTT 3.1.1 CONNACK return code, or
    /// `None` for the reserved values 6..=255.
    pub fn from_v3_connack(code: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        Some(match code {
            0x00 => Success,
            0x01 => UnsupportedProtocolVersion,
            0x02 => ClientIdentifierNotValid,
            0x03 => ServerUnavailable,
            0x04 => BadUserNameOrPassword,
            0x05 => NotAuthorized,
            _ => return None,
        })
    }

    /// Returns the MQTT 3.1.1 SUBACK return code (§3.9.3): the granted QoS,
    /// or 0x80 for any failure.
    pub fn to_v3_suback(self) -> u8 {
        match self {
            ReasonCode::Success | ReasonCode::GrantedQos1 | ReasonCode::GrantedQos2 => self.as_u8(),
            _ => 0x80,
        }
    }

    /// Returns a short human-readable name, used for reason strings and logs.
    pub fn describe(self) -> &'static str {
        use ReasonCode::*;
        match self {
            Success => "success",
            GrantedQos1 => "granted qos 1",
            GrantedQos2 => "granted qos 2",
            DisconnectWithWill => "disconnect with will message",
            NoMatchingSubscribers => "no matching subscribers",
            NoSubscriptionExisted => "no subscription existed",
            ContinueAuthentication => "continue authentication",
            ReAuthenticate => "re-authenticate",
            UnspecifiedError => "unspecified error",
            MalformedPacket => "malformed packet",
            ProtocolError => "protocol error",
            ImplementationSpecificError => "implementation specific error",
            UnsupportedProtocolVersion => "unsupported protocol version",
            ClientIdentifierNotValid => "client identifier not valid",
            BadUserNameOrPassword => "bad user name or password",
            NotAuthorized => "not authorized",
            ServerUnavailable => "server unavailable",
            ServerBusy => "server busy",
            Banned => "banned",
            ServerShuttingDown => "server shutting down",
            BadAuthenticationMethod => "bad authentication method",
            KeepAliveTimeout => "keep alive timeout",
            SessionTakenOver => "session taken over",
            TopicFilterInvalid => "topic filter invalid",
            TopicNameInvalid => "topic name invalid",
            PacketIdentifierInUse => "packet identifier in use",
            PacketIdentifierNotFound => "packet identifier not found",
            ReceiveMaximumExceeded => "receive maximum exceeded",
            TopicAliasInvalid => "topic alias invalid",
            PacketTooLarge => "packet too large",
            MessageRateTooHigh => "message rate too high",
            QuotaExceeded => "quota exceeded",
            AdministrativeAction => "administrative action",
            PayloadFormatInvalid => "payload format invalid",
            RetainNotSupported => "retain not supported",
            QosNotSupported => "qos not supported",
            UseAnotherServer => "use another server",
            ServerMoved => "server moved",
            SharedSubscriptionsNotSupported => "shared subscriptions not supported",
            ConnectionRateExceeded => "connection rate exceeded",
            MaximumConnectTime => "maximum connect time",
            SubscriptionIdentifiersNotSupported => "subscription identifiers not supported",
            WildcardSubscriptionsNotSupported => "wildcard subscriptions not supported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_value_round_trips_and_undefined_ones_are_rejected() {
        let mut defined = 0;
        for value in 0..=255u8 {
            if let Some(code) = ReasonCode::from_u8(value) {
                assert_eq!(code.as_u8(), value);
                defined += 1;
            }
        }
        // §2.4 table 2-6 defines 43 distinct values.
        assert_eq!(defined, 43);
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xA3), None);
    }

    #[test]
    fn v3_connack_mapping_round_trips_for_the_six_return_codes() {
        for code in 0..=5u8 {
            let v5 = ReasonCode::from_v3_connack(code).expect("defined return code");
            assert_eq!(v5.to_v3_connack(), code);
        }
        assert_eq!(ReasonCode::from_v3_connack(6), None);
        assert_eq!(ReasonCode::QuotaExceeded.to_v3_connack(), 0x03);
    }

    #[test]
    fn v3_suback_failure_is_0x80() {
        assert_eq!(ReasonCode::GrantedQos2.to_v3_suback(), 2);
        assert_eq!(ReasonCode::NotAuthorized.to_v3_suback(), 0x80);
        assert_eq!(ReasonCode::TopicFilterInvalid.to_v3_suback(), 0x80);
    }
}
