//! SUBACK (§3.9): one reason code per filter of the SUBSCRIBE it answers.

use std::num::NonZeroU16;

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::ReasonCode;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::wire;

/// The SUBACK reason codes of §3.9.3.
const ALLOWED: &[ReasonCode] = {
    use ReasonCode::*;
    &[
        Success,
        GrantedQos1,
        GrantedQos2,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicFilterInvalid,
        PacketIdentifierInUse,
        QuotaExceeded,
        SharedSubscriptionsNotSupported,
        SubscriptionIdentifiersNotSupported,
        WildcardSubscriptionsNotSupported,
    ]
};

/// The answer to a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: NonZeroU16,
    /// SUBACK properties (5.0): Reason String and User Properties.
    pub properties: Properties,
    /// One v5 reason code per filter, in SUBSCRIBE order. In 3.1.1 every
    /// failure goes out as 0x80 and comes back as
    /// [`ReasonCode::UnspecifiedError`].
    pub reason_codes: Vec<ReasonCode>,
}

/// Reads one 3.1.1 SUBACK return code: a granted QoS or 0x80; others are
/// reserved [MQTT-3.9.3-2].
fn read_v3_return_code(body: &mut Bytes) -> Result<ReasonCode, DecodeError> {
    match wire::read_u8(body)? {
        0x00 => Ok(ReasonCode::Success),
        0x01 => Ok(ReasonCode::GrantedQos1),
        0x02 => Ok(ReasonCode::GrantedQos2),
        0x80 => Ok(ReasonCode::UnspecifiedError),
        code => Err(DecodeError::InvalidReasonCode { packet: "SUBACK", code }),
    }
}

impl SubAck {
    pub(crate) fn decode(body: &mut Bytes, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
        let packet_id = wire::read_packet_id(body)?;
        let properties = match version {
            ProtocolVersion::V311 => Properties::new(),
            ProtocolVersion::V5 => Properties::decode(body, PropertyContext::SubAck)?,
        };
        // One byte per code, so the packet bounds the length.
        let mut reason_codes = Vec::with_capacity(body.len());
        while !body.is_empty() {
            reason_codes.push(match version {
                ProtocolVersion::V311 => read_v3_return_code(body)?,
                ProtocolVersion::V5 => super::read_reason_code(body, "SUBACK", ALLOWED)?,
            });
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::NoReasonCodes { packet: "SUBACK" });
        }
        Ok(SubAck { packet_id, properties, reason_codes })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut len = 2 + self.reason_codes.len();
        if version == ProtocolVersion::V5 {
            len += self.properties.encoded_len();
        }
        len
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.reason_codes.is_empty() {
            return Err(EncodeError::EmptyPayload { packet: "SUBACK" });
        }
        super::write_packet_id(dst, self.packet_id);
        match version {
            ProtocolVersion::V311 => {
                for code in &self.reason_codes {
                    dst.put_u8(code.to_v3_suback());
                }
            }
            ProtocolVersion::V5 => {
                self.properties.encode(dst)?;
                for code in &self.reason_codes {
                    dst.put_u8(code.as_u8());
                }
            }
        }
        Ok(())
    }
}
