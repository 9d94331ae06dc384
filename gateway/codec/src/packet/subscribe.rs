//! SUBSCRIBE (§3.8): topic filters with their subscription options.

use std::num::NonZeroU16;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use herald_core::QoS;
use herald_core::topic::validate_topic_filter;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::wire;

const QOS_MASK: u8 = 0b0000_0011;
const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;
/// Bits 2-7 are reserved in 3.1.1 [MQTT-3-8.3-4].
const RESERVED_V311: u8 = 0b1111_1100;
/// Bits 6-7 are reserved in 5.0 [MQTT-3.8.3-5].
const RESERVED_V5: u8 = 0b1100_0000;

/// When the server sends retained messages for a new subscription (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe,
    /// 1: send them only if the subscription did not already exist.
    SendAtSubscribeIfNew,
    /// 2: do not send them.
    DoNotSend,
}

impl RetainHandling {
    fn from_u8(value: u8) -> Option<RetainHandling> {
        match value {
            0 => Some(RetainHandling::SendAtSubscribe),
            1 => Some(RetainHandling::SendAtSubscribeIfNew),
            2 => Some(RetainHandling::DoNotSend),
            _ => None,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            RetainHandling::SendAtSubscribe => 0,
            RetainHandling::SendAtSubscribeIfNew => 1,
            RetainHandling::DoNotSend => 2,
        }
    }
}

/// The options of one subscription. MQTT 3.1.1 carries only `qos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// The maximum QoS the server may deliver at.
    pub qos: QoS,
    /// Do not deliver the client's own publications back to it (5.0).
    pub no_local: bool,
    /// Keep the RETAIN flag messages were published with (5.0).
    pub retain_as_published: bool,
    /// When to send retained messages (5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Returns options with maximum QoS `qos` and every 5.0 option at its
    /// default.
    pub fn new(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions { qos, ..SubscriptionOptions::default() }
    }

    fn decode(byte: u8, filter: &str, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
        let reserved = match version {
            ProtocolVersion::V311 => RESERVED_V311,
            ProtocolVersion::V5 => RESERVED_V5,
        };
        if byte & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved { options: byte });
        }
        let qos = QoS::from_u8(byte & QOS_MASK).ok_or(DecodeError::SubscriptionQosThree)?;
        let retain_handling =
            RetainHandling::from_u8(byte >> RETAIN_HANDLING_SHIFT).ok_or(DecodeError::RetainHandlingThree)?;
        let no_local = byte & NO_LOCAL != 0;
        if no_local && filter.starts_with("$share/") {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        Ok(SubscriptionOptions {
            qos,
            no_local,
            retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    fn encode(&self, version: ProtocolVersion) -> u8 {
        let qos = self.qos.as_u8();
        match version {
            ProtocolVersion::V311 => qos,
            ProtocolVersion::V5 => {
                let mut byte = qos | (self.retain_handling.as_u8() << RETAIN_HANDLING_SHIFT);
                if self.no_local {
                    byte |= NO_LOCAL;
                }
                if self.retain_as_published {
                    byte |= RETAIN_AS_PUBLISHED;
                }
                byte
            }
        }
    }
}

/// A request to add subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Identifies this request in the SUBACK.
    pub packet_id: NonZeroU16,
    /// SUBSCRIBE properties (5.0): a Subscription Identifier and User
    /// Properties.
    pub properties: Properties,
    /// At least one topic filter with its options.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

impl Subscribe {
    pub(crate) fn decode(body: &mut Bytes, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
        let packet_id = wire::read_packet_id(body)?;
        let properties = match version {
            ProtocolVersion::V311 => Properties::new(),
            ProtocolVersion::V5 => Properties::decode(body, PropertyContext::Subscribe)?,
        };
        // Grows one entry per filter actually read, so its size is bounded
        // by the packet, never by a count from the wire.
        let mut filters = Vec::new();
        while !body.is_empty() {
            let filter = wire::read_string(body)?;
            validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
            let options = SubscriptionOptions::decode(wire::read_u8(body)?, &filter, version)?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters { packet: "SUBSCRIBE" });
        }
        Ok(Subscribe { packet_id, properties, filters })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut len = 2;
        if version == ProtocolVersion::V5 {
            len += self.properties.encoded_len();
        }
        let filters: usize =
            self.filters.iter().map(|(filter, _)| wire::field_len(filter.as_bytes()) + 1).sum();
        len + filters
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload { packet: "SUBSCRIBE" });
        }
        super::write_packet_id(dst, self.packet_id);
        if version == ProtocolVersion::V5 {
            self.properties.encode(dst)?;
        }
        for (filter, options) in &self.filters {
            wire::write_string(dst, filter)?;
            dst.put_u8(options.encode(version));
        }
        Ok(())
    }
}
