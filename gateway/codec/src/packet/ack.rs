//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4-§3.7): the QoS 1 and QoS 2
//! acknowledgements. They share one layout and differ only in packet type,
//! PUBREL's fixed-header flags, and which reason codes they may carry.

use std::num::NonZeroU16;

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::ReasonCode;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::wire;

/// The PUBACK and PUBREC reason codes (§3.4.2.1, §3.5.2.1).
const PUBLISH_RESULTS: &[ReasonCode] = {
    use ReasonCode::*;
    &[
        Success,
        NoMatchingSubscribers,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicNameInvalid,
        PacketIdentifierInUse,
        QuotaExceeded,
        PayloadFormatInvalid,
    ]
};

/// The PUBREL and PUBCOMP reason codes (§3.6.2.1, §3.7.2.1).
const RELEASE_RESULTS: &[ReasonCode] = &[ReasonCode::Success, ReasonCode::PacketIdentifierNotFound];

/// Which of the four acknowledgements a [`PubAck`] travels as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(clippy::enum_variant_names, reason = "the variants are the packet names")]
pub(super) enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

impl AckKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            AckKind::PubAck => "PUBACK",
            AckKind::PubRec => "PUBREC",
            AckKind::PubRel => "PUBREL",
            AckKind::PubComp => "PUBCOMP",
        }
    }

    fn allowed(self) -> &'static [ReasonCode] {
        match self {
            AckKind::PubAck | AckKind::PubRec => PUBLISH_RESULTS,
            AckKind::PubRel | AckKind::PubComp => RELEASE_RESULTS,
        }
    }

    fn context(self) -> PropertyContext {
        match self {
            AckKind::PubAck => PropertyContext::PubAck,
            AckKind::PubRec => PropertyContext::PubRec,
            AckKind::PubRel => PropertyContext::PubRel,
            AckKind::PubComp => PropertyContext::PubComp,
        }
    }
}

/// The body of PUBACK, PUBREC, PUBREL and PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    /// The identifier of the PUBLISH (or PUBREL) acknowledged.
    pub packet_id: NonZeroU16,
    /// The v5 reason code; MQTT 3.1.1 has no room for it.
    pub reason_code: ReasonCode,
    /// Properties (5.0): Reason String and User Properties.
    pub properties: Properties,
}

impl PubAck {
    /// Returns a successful acknowledgement of `packet_id`.
    pub fn new(packet_id: NonZeroU16) -> PubAck {
        PubAck { packet_id, reason_code: ReasonCode::Success, properties: Properties::new() }
    }

    /// Decodes any of the three 5.0 forms: remaining length 2 (success, no
    /// properties), 3 (reason code, no properties) or more.
    pub(super) fn decode(
        kind: AckKind,
        body: &mut Bytes,
        version: ProtocolVersion,
    ) -> Result<PubAck, DecodeError> {
        let packet_id = wire::read_packet_id(body)?;
        // In 3.1.1 anything after the identifier is left for the trailing
        // bytes check.
        if version == ProtocolVersion::V311 || body.is_empty() {
            return Ok(PubAck::new(packet_id));
        }
        let reason_code = super::read_reason_code(body, kind.name(), kind.allowed())?;
        let properties =
            if body.is_empty() { Properties::new() } else { Properties::decode(body, kind.context())? };
        Ok(PubAck { packet_id, reason_code, properties })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        match version {
            ProtocolVersion::V311 => 2,
            ProtocolVersion::V5 if self.properties.is_empty() => {
                if self.reason_code == ReasonCode::Success {
                    2
                } else {
                    3
                }
            }
            ProtocolVersion::V5 => 3 + self.properties.encoded_len(),
        }
    }

    /// Writes the shortest 5.0 form the content allows (§3.4.2.1: reason
    /// code and property length may be omitted).
    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        super::write_packet_id(dst, self.packet_id);
        if version == ProtocolVersion::V311 {
            return Ok(());
        }
        if self.properties.is_empty() {
            if self.reason_code != ReasonCode::Success {
                dst.put_u8(self.reason_code.as_u8());
            }
            return Ok(());
        }
        dst.put_u8(self.reason_code.as_u8());
        self.properties.encode(dst)
    }
}
