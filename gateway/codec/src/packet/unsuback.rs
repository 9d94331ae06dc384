//! UNSUBACK (§3.11). In 3.1.1 it is only a packet identifier; 5.0 adds
//! properties and one reason code per filter.

use std::num::NonZeroU16;

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::ReasonCode;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::wire;

/// The UNSUBACK reason codes of §3.11.3.
const ALLOWED: &[ReasonCode] = {
    use ReasonCode::*;
    &[
        Success,
        NoSubscriptionExisted,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicFilterInvalid,
        PacketIdentifierInUse,
    ]
};

/// The answer to an UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's packet identifier.
    pub packet_id: NonZeroU16,
    /// UNSUBACK properties (5.0): Reason String and User Properties.
    pub properties: Properties,
    /// One v5 reason code per filter, in UNSUBSCRIBE order; always empty in
    /// 3.1.1, which has no room for them.
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(body: &mut Bytes, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
        let packet_id = wire::read_packet_id(body)?;
        if version == ProtocolVersion::V311 {
            return Ok(UnsubAck { packet_id, properties: Properties::new(), reason_codes: Vec::new() });
        }
        let properties = Properties::decode(body, PropertyContext::UnsubAck)?;
        // One byte per code, so the packet bounds the length.
        let mut reason_codes = Vec::with_capacity(body.len());
        while !body.is_empty() {
            reason_codes.push(super::read_reason_code(body, "UNSUBACK", ALLOWED)?);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::NoReasonCodes { packet: "UNSUBACK" });
        }
        Ok(UnsubAck { packet_id, properties, reason_codes })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        match version {
            ProtocolVersion::V311 => 2,
            ProtocolVersion::V5 => 2 + self.properties.encoded_len() + self.reason_codes.len(),
        }
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if version == ProtocolVersion::V5 && self.reason_codes.is_empty() {
            return Err(EncodeError::EmptyPayload { packet: "UNSUBACK" });
        }
        super::write_packet_id(dst, self.packet_id);
        if version == ProtocolVersion::V5 {
            self.properties.encode(dst)?;
            for code in &self.reason_codes {
                dst.put_u8(code.as_u8());
            }
        }
        Ok(())
    }
}
