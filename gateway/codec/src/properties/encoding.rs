//! How property lists go on and off the wire (§2.2.2): the property length,
//! each identifier and value, and on decode the checks of table 2-4, of
//! repetition and of each property's value range.

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::topic::validate_topic_name;

use super::{Properties, Property, PropertyId};
use crate::error::{DecodeError, EncodeError};
use crate::wire;

impl Property {
    /// Returns the encoded length, identifier byte included.
    fn encoded_len(&self) -> usize {
        use Property as P;
        let value = match self {
            P::PayloadFormatIndicator(_)
            | P::RequestProblemInformation(_)
            | P::RequestResponseInformation(_)
            | P::MaximumQos(_)
            | P::RetainAvailable(_)
            | P::WildcardSubscriptionAvailable(_)
            | P::SubscriptionIdentifierAvailable(_)
            | P::SharedSubscriptionAvailable(_) => 1,
            P::ServerKeepAlive(_) | P::ReceiveMaximum(_) | P::TopicAliasMaximum(_) | P::TopicAlias(_) => 2,
            P::MessageExpiryInterval(_)
            | P::SessionExpiryInterval(_)
            | P::WillDelayInterval(_)
            | P::MaximumPacketSize(_) => 4,
            P::ContentType(s)
            | P::ResponseTopic(s)
            | P::AssignedClientIdentifier(s)
            | P::AuthenticationMethod(s)
            | P::ResponseInformation(s)
            | P::ServerReference(s)
            | P::ReasonString(s) => wire::field_len(s.as_bytes()),
            P::CorrelationData(b) | P::AuthenticationData(b) => wire::field_len(b),
            P::SubscriptionIdentifier(v) => wire::variable_integer_len(*v as usize),
            P::UserProperty(name, value) => {
                wire::field_len(name.as_bytes()) + wire::field_len(value.as_bytes())
            }
        };
        1 + value
    }

    fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        use Property as P;
        dst.put_u8(self.id().as_u8());
        match self {
            P::PayloadFormatIndicator(v)
            | P::RequestProblemInformation(v)
            | P::RequestResponseInformation(v)
            | P::MaximumQos(v)
            | P::RetainAvailable(v)
            | P::WildcardSubscriptionAvailable(v)
            | P::SubscriptionIdentifierAvailable(v)
            | P::SharedSubscriptionAvailable(v) => dst.put_u8(*v),
            P::ServerKeepAlive(v) | P::ReceiveMaximum(v) | P::TopicAliasMaximum(v) | P::TopicAlias(v) => {
                dst.put_u16(*v)
            }
            P::MessageExpiryInterval(v)
            | P::SessionExpiryInterval(v)
            | P::WillDelayInterval(v)
            | P::MaximumPacketSize(v) => dst.put_u32(*v),
            P::ContentType(s)
            | P::ResponseTopic(s)
            | P::AssignedClientIdentifier(s)
            | P::AuthenticationMethod(s)
            | P::ResponseInformation(s)
            | P::ServerReference(s)
            | P::ReasonString(s) => wire::write_string(dst, s)?,
            P::CorrelationData(b) | P::AuthenticationData(b) => wire::write_binary(dst, b)?,
            P::SubscriptionIdentifier(v) => wire::write_variable_integer(dst, *v)?,
            P::UserProperty(name, value) => {
                wire::write_string(dst, name)?;
                wire::write_string(dst, value)?;
            }
        }
        Ok(())
    }

    /// Reads the value of property `id` and checks the range its definition
    /// in §3 allows.
    fn decode_value(id: PropertyId, buf: &mut Bytes) -> Result<Property, DecodeError> {
        use Property as P;
        use PropertyId as I;
        let flag = |buf: &mut Bytes| {
            let value = wire::read_u8(buf)?;
            if value > 1 {
                return Err(DecodeError::InvalidPropertyValue { id, value: value.into() });
            }
            Ok(value)
        };
        let non_zero = |value: u32| {
            if value == 0 {
                return Err(DecodeError::InvalidPropertyValue { id, value });
            }
            Ok(value)
        };
        Ok(match id {
            I::PayloadFormatIndicator => P::PayloadFormatIndicator(flag(buf)?),
            I::MessageExpiryInterval => P::MessageExpiryInterval(wire::read_u32(buf)?),
            I::ContentType => P::ContentType(wire::read_string(buf)?),
            I::ResponseTopic => {
                let topic = wire::read_string(buf)?;
                validate_topic_name(&topic).map_err(DecodeError::InvalidResponseTopic)?;
                P::ResponseTopic(topic)
            }
            I::CorrelationData => P::CorrelationData(wire::read_binary(buf)?),
            I::SubscriptionIdentifier => {
                P::SubscriptionIdentifier(non_zero(wire::read_variable_integer(buf)?)?)
            }
            I::SessionExpiryInterval => P::SessionExpiryInterval(wire::read_u32(buf)?),
            I::AssignedClientIdentifier => P::AssignedClientIdentifier(wire::read_string(buf)?),
            I::ServerKeepAlive => P::ServerKeepAlive(wire::read_u16(buf)?),
            I::AuthenticationMethod => P::AuthenticationMethod(wire::read_string(buf)?),
            I::AuthenticationData => P::AuthenticationData(wire::read_binary(buf)?),
            I::RequestProblemInformation => P::RequestProblemInformation(flag(buf)?),
            I::WillDelayInterval => P::WillDelayInterval(wire::read_u32(buf)?),
            I::RequestResponseInformation => P::RequestResponseInformation(flag(buf)?),
            I::ResponseInformation => P::ResponseInformation(wire::read_string(buf)?),
            I::ServerReference => P::ServerReference(wire::read_string(buf)?),
            I::ReasonString => P::ReasonString(wire::read_string(buf)?),
            I::ReceiveMaximum => {
                let value = wire::read_u16(buf)?;
                non_zero(value.into())?;
                P::ReceiveMaximum(value)
            }
            I::TopicAliasMaximum => P::TopicAliasMaximum(wire::read_u16(buf)?),
            I::TopicAlias => {
                // Alias 0 gets its own error: 0x94 is the code the spec gives
                // for a topic alias the receiver cannot accept.
                let value = wire::read_u16(buf)?;
                if value == 0 {
                    return Err(DecodeError::TopicAliasZero);
                }
                P::TopicAlias(value)
            }
            I::MaximumQos => P::MaximumQos(flag(buf)?),
            I::RetainAvailable => P::RetainAvailable(flag(buf)?),
            I::UserProperty => P::UserProperty(wire::read_string(buf)?, wire::read_string(buf)?),
            I::MaximumPacketSize => P::MaximumPacketSize(non_zero(wire::read_u32(buf)?)?),
            I::WildcardSubscriptionAvailable => P::WildcardSubscriptionAvailable(flag(buf)?),
            I::SubscriptionIdentifierAvailable => P::SubscriptionIdentifierAvailable(flag(buf)?),
            I::SharedSubscriptionAvailable => P::SharedSubscriptionAvailable(flag(buf)?),
        })
    }
}

/// Where a property list sits; decides which identifiers are allowed
/// (table 2-4) and which may repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropertyContext {
    Connect,
    /// The will properties in the CONNECT payload, a set of their own.
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyContext {
    fn name(self) -> &'static str {
        use PropertyContext as C;
        match self {
            C::Connect => "CONNECT",
            C::Will => "will properties",
            C::ConnAck => "CONNACK",
            C::Publish => "PUBLISH",
            C::PubAck => "PUBACK",
            C::PubRec => "PUBREC",
            C::PubRel => "PUBREL",
            C::PubComp => "PUBCOMP",
            C::Subscribe => "SUBSCRIBE",
            C::SubAck => "SUBACK",
            C::Unsubscribe => "UNSUBSCRIBE",
            C::UnsubAck => "UNSUBACK",
            C::Disconnect => "DISCONNECT",
            C::Auth => "AUTH",
        }
    }

    /// Table 2-4, read row by row.
    fn allows(self, id: PropertyId) -> bool {
        use PropertyContext as C;
        use PropertyId as I;
        match id {
            I::PayloadFormatIndicator
            | I::MessageExpiryInterval
            | I::ContentType
            | I::ResponseTopic
            | I::CorrelationData => matches!(self, C::Publish | C::Will),
            I::SubscriptionIdentifier => matches!(self, C::Publish | C::Subscribe),
            I::SessionExpiryInterval => matches!(self, C::Connect | C::ConnAck | C::Disconnect),
            I::AssignedClientIdentifier
            | I::ServerKeepAlive
            | I::ResponseInformation
            | I::MaximumQos
            | I::RetainAvailable
            | I::WildcardSubscriptionAvailable
            | I::SubscriptionIdentifierAvailable
            | I::SharedSubscriptionAvailable => self == C::ConnAck,
            I::AuthenticationMethod | I::AuthenticationData => {
                matches!(self, C::Connect | C::ConnAck | C::Auth)
            }
            I::RequestProblemInformation | I::RequestResponseInformation => self == C::Connect,
            I::WillDelayInterval => self == C::Will,
            I::ServerReference => matches!(self, C::ConnAck | C::Disconnect),
            I::ReasonString => {
                !matches!(self, C::Connect | C::Will | C::Publish | C::Subscribe | C::Unsubscribe)
            }
            I::ReceiveMaximum | I::TopicAliasMaximum | I::MaximumPacketSize => {
                matches!(self, C::Connect | C::ConnAck)
            }
            I::TopicAlias => self == C::Publish,
            I::UserProperty => true,
        }
    }

    /// User Property may always repeat; a server→client PUBLISH carries one
    /// Subscription Identifier per matching subscription (§3.3.2.3.8). Every
    /// other property "more than once" is a Protocol Error.
    fn repeatable(self, id: PropertyId) -> bool {
        id == PropertyId::UserProperty
            || (id == PropertyId::SubscriptionIdentifier && self == PropertyContext::Publish)
    }
}

impl Properties {
    /// Returns the length of the properties themselves, without the
    /// property-length prefix.
    fn body_len(&self) -> usize {
        self.0.iter().map(Property::encoded_len).sum()
    }

    /// Returns the encoded length including the property-length prefix.
    pub(crate) fn encoded_len(&self) -> usize {
        let body = self.body_len();
        wire::variable_integer_len(body) + body
    }

    /// Writes the property length and the properties.
    pub(crate) fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let body = self.body_len();
        let length = u32::try_from(body)
            .ok()
            .filter(|&len| len <= wire::MAX_VARIABLE_INTEGER)
            .ok_or(EncodeError::PacketTooLarge { remaining: body })?;
        wire::write_variable_integer(dst, length)?;
        for property in &self.0 {
            property.encode(dst)?;
        }
        Ok(())
    }

    /// Reads a property length and the properties it covers, checking each
    /// against table 2-4 for `context` and against repetition.
    pub(crate) fn decode(buf: &mut Bytes, context: PropertyContext) -> Result<Properties, DecodeError> {
        let len = wire::read_variable_integer(buf)? as usize;
        if len > buf.len() {
            return Err(DecodeError::PropertyLengthExceedsPacket);
        }
        let mut list = buf.split_to(len);
        let mut properties = Vec::new();
        // Identifiers are all below 64, so one bit each records what was seen.
        let mut seen = 0u64;
        while !list.is_empty() {
            // Identifiers are variable byte integers, but every defined one is
            // below 128: a byte with the top bit set starts an identifier of
            // 128 or more (unknown) or a padded one (not minimal), both
            // malformed.
            let byte = wire::read_u8(&mut list)?;
            let id = PropertyId::from_u8(byte).ok_or(DecodeError::UnknownProperty { id: byte })?;
            if !context.allows(id) {
                return Err(DecodeError::PropertyNotAllowed { id, packet: context.name() });
            }
            let bit = 1u64 << id.as_u8();
            if seen & bit != 0 && !context.repeatable(id) {
                return Err(DecodeError::DuplicateProperty { id });
            }
            seen |= bit;
            properties.push(Property::decode_value(id, &mut list)?);
        }
        Ok(Properties(properties))
    }
}
