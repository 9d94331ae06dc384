//! UNSUBSCRIBE (§3.10): topic filters to remove.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use herald_core::topic::validate_topic_filter;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::wire;

/// A request to remove subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Identifies this request in the UNSUBACK.
    pub packet_id: NonZeroU16,
    /// UNSUBSCRIBE properties (5.0): User Properties only.
    pub properties: Properties,
    /// At least one topic filter, exactly as subscribed.
    pub filters: Vec<ByteString>,
}

impl Unsubscribe {
    pub(crate) fn decode(body: &mut Bytes, version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
        let packet_id = wire::read_packet_id(body)?;
        let properties = match version {
            ProtocolVersion::V311 => Properties::new(),
            ProtocolVersion::V5 => Properties::decode(body, PropertyContext::Unsubscribe)?,
        };
        // Grows one entry per filter actually read: bounded by the packet.
        let mut filters = Vec::new();
        while !body.is_empty() {
            let filter = wire::read_string(body)?;
            validate_topic_filter(&filter).map_err(DecodeError::InvalidTopicFilter)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters { packet: "UNSUBSCRIBE" });
        }
        Ok(Unsubscribe { packet_id, properties, filters })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut len = 2;
        if version == ProtocolVersion::V5 {
            len += self.properties.encoded_len();
        }
        len + self.filters.iter().map(|filter| wire::field_len(filter.as_bytes())).sum::<usize>()
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyPayload { packet: "UNSUBSCRIBE" });
        }
        super::write_packet_id(dst, self.packet_id);
        if version == ProtocolVersion::V5 {
            self.properties.encode(dst)?;
        }
        for filter in &self.filters {
            wire::write_string(dst, filter)?;
        }
        Ok(())
    }
}
