// Hot path: every application message is decoded here once and encoded here
// once per subscriber it fans out to. Keep it free of allocation and copying:
// the topic and payload stay slices of the read buffer, and encoding writes
// straight into the caller's buffer after a single `reserve`.

//! PUBLISH (§3.3): an application message.

use std::mem;
use std::num::NonZeroU16;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use herald_core::QoS;
use herald_core::topic::{TopicError, validate_topic_name};

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::wire;

const DUP: u8 = 0b1000;
const QOS_SHIFT: u8 = 1;
const RETAIN: u8 = 0b0001;

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Whether this may be a re-delivery; only meaningful for QoS > 0.
    pub dup: bool,
    /// The delivery guarantee.
    pub qos: QoS,
    /// Whether the server keeps this as the topic's retained message.
    pub retain: bool,
    /// The topic name; empty only in 5.0 when a Topic Alias stands for it.
    pub topic: ByteString,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<NonZeroU16>,
    /// The application payload: the rest of the packet.
    pub payload: Bytes,
    /// PUBLISH properties (5.0).
    pub properties: Properties,
}

/// Checks the PUBLISH flags of the fixed header.
pub(super) fn check_flags(flags: u8) -> Result<(), DecodeError> {
    let qos = (flags >> QOS_SHIFT) & 0b11;
    if qos == 3 {
        return Err(DecodeError::PublishQosThree);
    }
    if qos == 0 && flags & DUP != 0 {
        return Err(DecodeError::DupWithQos0);
    }
    Ok(())
}

impl Publish {
    /// Returns a QoS 0, non-retained message with no properties.
    pub fn new(topic: impl Into<ByteString>, payload: impl Into<Bytes>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            payload: payload.into(),
            properties: Properties::new(),
        }
    }

    /// Returns the lower four bits of the fixed header.
    pub(super) fn flags(&self) -> u8 {
        let mut flags = self.qos.as_u8() << QOS_SHIFT;
        if self.dup {
            flags |= DUP;
        }
        if self.retain {
            flags |= RETAIN;
        }
        flags
    }

    /// Decodes a PUBLISH whose fixed-header `flags` passed [`check_flags`].
    pub(crate) fn decode(
        flags: u8,
        body: &mut Bytes,
        version: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
        let qos = QoS::from_u8((flags >> QOS_SHIFT) & 0b11).ok_or(DecodeError::PublishQosThree)?;
        let topic = wire::read_string(body)?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(wire::read_packet_id(body)?),
        };
        let properties = match version {
            ProtocolVersion::V311 => Properties::new(),
            ProtocolVersion::V5 => Properties::decode(body, PropertyContext::Publish)?,
        };
        if topic.is_empty() {
            // 5.0 lets a Topic Alias stand in for the name (§3.3.2.3.4);
            // 3.1.1 has no aliases, so an empty name is just invalid.
            match version {
                ProtocolVersion::V311 => return Err(DecodeError::InvalidTopicName(TopicError::Empty)),
                ProtocolVersion::V5 if properties.topic_alias().is_none() => {
                    return Err(DecodeError::EmptyTopicWithoutAlias);
                }
                ProtocolVersion::V5 => {}
            }
        } else {
            validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
        }
        Ok(Publish {
            dup: flags & DUP != 0,
            qos,
            retain: flags & RETAIN != 0,
            topic,
            packet_id,
            // The payload is whatever the packet has left.
            payload: mem::take(body),
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut len = wire::field_len(self.topic.as_bytes()) + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            len += 2;
        }
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
        wire::write_string(dst, &self.topic)?;
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, None) if self.dup => return Err(EncodeError::DupWithQos0),
            (QoS::AtMostOnce, None) => {}
            (QoS::AtMostOnce, Some(_)) => return Err(EncodeError::UnexpectedPacketId),
            (qos, None) => return Err(EncodeError::MissingPacketId { qos: qos.as_u8() }),
            (_, Some(packet_id)) => super::write_packet_id(dst, packet_id),
        }
        if version == ProtocolVersion::V5 {
            self.properties.encode(dst)?;
        }
        dst.put_slice(&self.payload);
        Ok(())
    }
}
