//! MQTT 5.0 properties (§2.2.2): the identifiers, the typed values and the
//! list a packet carries, with its accessors. `properties/encoding.rs` puts
//! lists on and off the wire and makes the decode checks of table 2-4.
//!
//! A [`Properties`] list keeps wire order, because the order of User
//! Properties is significant [MQTT-3.3.2-18], and an empty list allocates
//! nothing, which is what almost every packet carries. MQTT 3.1.1 has no
//! properties: its packets always decode with an empty list, and a list given
//! to the encoder at 3.1.1 is left out.

mod encoding;

use std::slice;

use bytes::Bytes;
use bytestring::ByteString;

pub(crate) use encoding::PropertyContext;

/// A property identifier (§2.2.2.2, table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PropertyId {
    /// 0x01, byte: 0 unspecified bytes, 1 UTF-8 payload.
    PayloadFormatIndicator = 0x01,
    /// 0x02, four-byte integer: seconds until the message expires.
    MessageExpiryInterval = 0x02,
    /// 0x03, string: the payload's content type.
    ContentType = 0x03,
    /// 0x08, string: the topic name for a response.
    ResponseTopic = 0x08,
    /// 0x09, binary: correlates a response with its request.
    CorrelationData = 0x09,
    /// 0x0B, variable byte integer: identifies the subscription.
    SubscriptionIdentifier = 0x0B,
    /// 0x11, four-byte integer: seconds the session outlives the connection.
    SessionExpiryInterval = 0x11,
    /// 0x12, string: the client identifier the server assigned.
    AssignedClientIdentifier = 0x12,
    /// 0x13, two-byte integer: the keep alive the server imposes.
    ServerKeepAlive = 0x13,
    /// 0x15, string: the extended authentication method.
    AuthenticationMethod = 0x15,
    /// 0x16, binary: extended authentication data.
    AuthenticationData = 0x16,
    /// 0x17, byte 0/1: whether reason strings and user properties may be sent
    /// on failures.
    RequestProblemInformation = 0x17,
    /// 0x18, four-byte integer: seconds to wait before publishing the will.
    WillDelayInterval = 0x18,
    /// 0x19, byte 0/1: whether the client wants Response Information.
    RequestResponseInformation = 0x19,
    /// 0x1A, string: the basis for response topics.
    ResponseInformation = 0x1A,
    /// 0x1C, string: another server to use.
    ServerReference = 0x1C,
    /// 0x1F, string: a human-readable diagnostic.
    ReasonString = 0x1F,
    /// 0x21, two-byte integer > 0: in-flight QoS 1 and 2 publications allowed.
    ReceiveMaximum = 0x21,
    /// 0x22, two-byte integer: highest topic alias accepted.
    TopicAliasMaximum = 0x22,
    /// 0x23, two-byte integer > 0: stands for the topic name.
    TopicAlias = 0x23,
    /// 0x24, byte 0/1: highest QoS the server supports.
    MaximumQos = 0x24,
    /// 0x25, byte 0/1: whether the server supports retained messages.
    RetainAvailable = 0x25,
    /// 0x26, string pair: application-defined name and value; may repeat.
    UserProperty = 0x26,
    /// 0x27, four-byte integer > 0: the largest packet accepted.
    MaximumPacketSize = 0x27,
    /// 0x28, byte 0/1: whether wildcard subscriptions are supported.
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29, byte 0/1: whether subscription identifiers are supported.
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A, byte 0/1: whether shared subscriptions are supported.
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// Every identifier MQTT 5.0 defines, in numeric order.
    pub const ALL: [PropertyId; 27] = {
        use PropertyId::*;
        [
            PayloadFormatIndicator,
            MessageExpiryInterval,
            ContentType,
            ResponseTopic,
            CorrelationData,
            SubscriptionIdentifier,
            SessionExpiryInterval,
            AssignedClientIdentifier,
            ServerKeepAlive,
            AuthenticationMethod,
            AuthenticationData,
            RequestProblemInformation,
            WillDelayInterval,
            RequestResponseInformation,
            ResponseInformation,
            ServerReference,
            ReasonString,
            ReceiveMaximum,
            TopicAliasMaximum,
            TopicAlias,
            MaximumQos,
            RetainAvailable,
            UserProperty,
            MaximumPacketSize,
            WildcardSubscriptionAvailable,
            SubscriptionIdentifierAvailable,
            SharedSubscriptionAvailable,
        ]
    };

    /// Returns the identifier with this value, or `None` for one MQTT 5.0
    /// does not define.
    pub fn from_u8(value: u8) -> Option<PropertyId> {
        PropertyId::ALL.into_iter().find(|id| id.as_u8() == value)
    }

    /// Returns the wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// One MQTT 5.0 property with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    /// 0x01: 0 unspecified bytes, 1 UTF-8 payload.
    PayloadFormatIndicator(u8),
    /// 0x02: seconds until the message expires.
    MessageExpiryInterval(u32),
    /// 0x03: the payload's content type.
    ContentType(ByteString),
    /// 0x08: the topic name for a response.
    ResponseTopic(ByteString),
    /// 0x09: correlates a response with its request.
    CorrelationData(Bytes),
    /// 0x0B: identifies the subscription, 1..=268,435,455.
    SubscriptionIdentifier(u32),
    /// 0x11: seconds the session outlives the connection.
    SessionExpiryInterval(u32),
    /// 0x12: the client identifier the server assigned.
    AssignedClientIdentifier(ByteString),
    /// 0x13: the keep alive the server imposes, in seconds.
    ServerKeepAlive(u16),
    /// 0x15: the extended authentication method.
    AuthenticationMethod(ByteString),
    /// 0x16: extended authentication data.
    AuthenticationData(Bytes),
    /// 0x17: 0/1, whether problem information may be sent on failures.
    RequestProblemInformation(u8),
    /// 0x18: seconds to wait before publishing the will.
    WillDelayInterval(u32),
    /// 0x19: 0/1, whether the client wants Response Information.
    RequestResponseInformation(u8),
    /// 0x1A: the basis for response topics.
    ResponseInformation(ByteString),
    /// 0x1C: another server to use.
    ServerReference(ByteString),
    /// 0x1F: a human-readable diagnostic.
    ReasonString(ByteString),
    /// 0x21: in-flight QoS 1 and 2 publications allowed, > 0.
    ReceiveMaximum(u16),
    /// 0x22: highest topic alias accepted.
    TopicAliasMaximum(u16),
    /// 0x23: stands for the topic name, > 0.
    TopicAlias(u16),
    /// 0x24: 0/1, highest QoS the server supports.
    MaximumQos(u8),
    /// 0x25: 0/1, whether retained messages are supported.
    RetainAvailable(u8),
    /// 0x26: application-defined name and value.
    UserProperty(ByteString, ByteString),
    /// 0x27: the largest packet accepted, > 0.
    MaximumPacketSize(u32),
    /// 0x28: 0/1, whether wildcard subscriptions are supported.
    WildcardSubscriptionAvailable(u8),
    /// 0x29: 0/1, whether subscription identifiers are supported.
    SubscriptionIdentifierAvailable(u8),
    /// 0x2A: 0/1, whether shared subscriptions are supported.
    SharedSubscriptionAvailable(u8),
}

impl Property {
    /// Returns this property's identifier.
    pub fn id(&self) -> PropertyId {
        use Property as P;
        use PropertyId as I;
        match self {
            P::PayloadFormatIndicator(_) => I::PayloadFormatIndicator,
            P::MessageExpiryInterval(_) => I::MessageExpiryInterval,
            P::ContentType(_) => I::ContentType,
            P::ResponseTopic(_) => I::ResponseTopic,
            P::CorrelationData(_) => I::CorrelationData,
            P::SubscriptionIdentifier(_) => I::SubscriptionIdentifier,
            P::SessionExpiryInterval(_) => I::SessionExpiryInterval,
            P::AssignedClientIdentifier(_) => I::AssignedClientIdentifier,
            P::ServerKeepAlive(_) => I::ServerKeepAlive,
            P::AuthenticationMethod(_) => I::AuthenticationMethod,
            P::AuthenticationData(_) => I::AuthenticationData,
            P::RequestProblemInformation(_) => I::RequestProblemInformation,
            P::WillDelayInterval(_) => I::WillDelayInterval,
            P::RequestResponseInformation(_) => I::RequestResponseInformation,
            P::ResponseInformation(_) => I::ResponseInformation,
            P::ServerReference(_) => I::ServerReference,
            P::ReasonString(_) => I::ReasonString,
            P::ReceiveMaximum(_) => I::ReceiveMaximum,
            P::TopicAliasMaximum(_) => I::TopicAliasMaximum,
            P::TopicAlias(_) => I::TopicAlias,
            P::MaximumQos(_) => I::MaximumQos,
            P::RetainAvailable(_) => I::RetainAvailable,
            P::UserProperty(_, _) => I::UserProperty,
            P::MaximumPacketSize(_) => I::MaximumPacketSize,
            P::WildcardSubscriptionAvailable(_) => I::WildcardSubscriptionAvailable,
            P::SubscriptionIdentifierAvailable(_) => I::SubscriptionIdentifierAvailable,
            P::SharedSubscriptionAvailable(_) => I::SharedSubscriptionAvailable,
        }
    }
}

/// The properties of one packet (or of a will), in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(Vec<Property>);

impl Properties {
    /// Returns an empty list; allocates nothing.
    pub fn new() -> Properties {
        Properties(Vec::new())
    }

    /// Returns true when there are no properties.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns the number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the properties in wire order.
    pub fn iter(&self) -> slice::Iter<'_, Property> {
        self.0.iter()
    }

    /// Appends a property. Use [`Properties::set`] for single-use properties
    /// that may already be present.
    pub fn push(&mut self, property: Property) {
        self.0.push(property);
    }

    /// Stores a single-use property: replaces the first property with the
    /// same identifier (dropping any others) or appends it.
    pub fn set(&mut self, property: Property) {
        let id = property.id();
        match self.0.iter().position(|p| p.id() == id) {
            Some(index) => {
                self.0[index] = property;
                let mut seen = 0;
                self.0.retain(|p| {
                    if p.id() != id {
                        return true;
                    }
                    seen += 1;
                    seen == 1
                });
            }
            None => self.0.push(property),
        }
    }

    /// Removes every property with identifier `id`.
    pub fn remove(&mut self, id: PropertyId) {
        self.0.retain(|p| p.id() != id);
    }

    /// Keeps only the properties for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&Property) -> bool) {
        self.0.retain(keep);
    }

    /// Returns the first property with identifier `id`.
    pub fn get(&self, id: PropertyId) -> Option<&Property> {
        self.0.iter().find(|p| p.id() == id)
    }

    fn find<'a, T>(&'a self, pick: impl Fn(&'a Property) -> Option<T>) -> Option<T> {
        self.0.iter().find_map(pick)
    }

    /// Returns the User Properties (0x26) as (name, value), in wire order.
    pub fn user_properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|p| match p {
            Property::UserProperty(name, value) => Some((&**name, &**value)),
            _ => None,
        })
    }

    /// Returns the Subscription Identifiers (0x0B), in wire order.
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Payload Format Indicator (0x01).
    pub fn payload_format_indicator(&self) -> Option<u8> {
        self.find(|p| match p {
            Property::PayloadFormatIndicator(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Message Expiry Interval (0x02) in seconds.
    pub fn message_expiry_interval(&self) -> Option<u32> {
        self.find(|p| match p {
            Property::MessageExpiryInterval(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Content Type (0x03).
    pub fn content_type(&self) -> Option<&str> {
        self.find(|p| match p {
            Property::ContentType(v) => Some(&**v),
            _ => None,
        })
    }

    /// Returns the Response Topic (0x08).
    pub fn response_topic(&self) -> Option<&str> {
        self.find(|p| match p {
            Property::ResponseTopic(v) => Some(&**v),
            _ => None,
        })
    }

    /// Returns the Correlation Data (0x09).
    pub fn correlation_data(&self) -> Option<&Bytes> {
        self.find(|p| match p {
            Property::CorrelationData(v) => Some(v),
            _ => None,
        })
    }

    /// Returns the Session Expiry Interval (0x11) in seconds.
    pub fn session_expiry_interval(&self) -> Option<u32> {
        self.find(|p| match p {
            Property::SessionExpiryInterval(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Assigned Client Identifier (0x12).
    pub fn assigned_client_identifier(&self) -> Option<&str> {
        self.find(|p| match p {
            Property::AssignedClientIdentifier(v) => Some(&**v),
            _ => None,
        })
    }

    /// Returns the Server Keep Alive (0x13) in seconds.
    pub fn server_keep_alive(&self) -> Option<u16> {
        self.find(|p| match p {
            Property::ServerKeepAlive(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Authentication Method (0x15).
    pub fn authentication_method(&self) -> Option<&str> {
        self.find(|p| match p {
            Property::AuthenticationMethod(v) => Some(&**v),
            _ => None,
        })
    }

    /// Returns the Authentication Data (0x16).
    pub fn authentication_data(&self) -> Option<&Bytes> {
        self.find(|p| match p {
            Property::AuthenticationData(v) => Some(v),
            _ => None,
        })
    }

    /// Returns Request Problem Information (0x17).
    pub fn request_problem_information(&self) -> Option<u8> {
        self.find(|p| match p {
            Property::RequestProblemInformation(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Will Delay Interval (0x18) in seconds.
    pub fn will_delay_interval(&self) -> Option<u32> {
        self.find(|p| match p {
            Property::WillDelayInterval(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns Request Response Information (0x19).
    pub fn request_response_information(&self) -> Option<u8> {
        self.find(|p| match p {
            Property::RequestResponseInformation(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Response Information (0x1A).
    pub fn response_information(&self) -> Option<&str> {
        self.find(|p| match p {
            Property::ResponseInformation(v) => Some(&**v),
            _ => None,
        })
    }

    /// Returns the Server Reference (0x1C).
    pub fn server_reference(&self) -> Option<&str> {
        self.find(|p| match p {
            Property::ServerReference(v) => Some(&**v),
            _ => None,
        })
    }

    /// Returns the Reason String (0x1F).
    pub fn reason_string(&self) -> Option<&str> {
        self.find(|p| match p {
            Property::ReasonString(v) => Some(&**v),
            _ => None,
        })
    }

    /// Returns the Receive Maximum (0x21).
    pub fn receive_maximum(&self) -> Option<u16> {
        self.find(|p| match p {
            Property::ReceiveMaximum(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Topic Alias Maximum (0x22).
    pub fn topic_alias_maximum(&self) -> Option<u16> {
        self.find(|p| match p {
            Property::TopicAliasMaximum(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Topic Alias (0x23).
    pub fn topic_alias(&self) -> Option<u16> {
        self.find(|p| match p {
            Property::TopicAlias(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Maximum QoS (0x24).
    pub fn maximum_qos(&self) -> Option<u8> {
        self.find(|p| match p {
            Property::MaximumQos(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns Retain Available (0x25).
    pub fn retain_available(&self) -> Option<u8> {
        self.find(|p| match p {
            Property::RetainAvailable(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns the Maximum Packet Size (0x27) in bytes.
    pub fn maximum_packet_size(&self) -> Option<u32> {
        self.find(|p| match p {
            Property::MaximumPacketSize(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns Wildcard Subscription Available (0x28).
    pub fn wildcard_subscription_available(&self) -> Option<u8> {
        self.find(|p| match p {
            Property::WildcardSubscriptionAvailable(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns Subscription Identifier Available (0x29).
    pub fn subscription_identifier_available(&self) -> Option<u8> {
        self.find(|p| match p {
            Property::SubscriptionIdentifierAvailable(v) => Some(*v),
            _ => None,
        })
    }

    /// Returns Shared Subscription Available (0x2A).
    pub fn shared_subscription_available(&self) -> Option<u8> {
        self.find(|p| match p {
            Property::SharedSubscriptionAvailable(v) => Some(*v),
            _ => None,
        })
    }
}

impl From<Vec<Property>> for Properties {
    fn from(list: Vec<Property>) -> Properties {
        Properties(list)
    }
}

impl FromIterator<Property> for Properties {
    fn from_iter<I: IntoIterator<Item = Property>>(iter: I) -> Properties {
        Properties(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = &'a Property;
    type IntoIter = slice::Iter<'a, Property>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_round_trip_and_unknown_ones_are_refused() {
        for id in PropertyId::ALL {
            assert_eq!(PropertyId::from_u8(id.as_u8()), Some(id));
        }
        let defined = (0..=255u8).filter(|&v| PropertyId::from_u8(v).is_some()).count();
        assert_eq!(defined, 27);
        assert_eq!(PropertyId::from_u8(0x04), None);
        assert_eq!(PropertyId::from_u8(0x2B), None);
    }

    #[test]
    fn set_replaces_a_single_use_value_in_place() {
        let mut props: Properties = vec![
            Property::UserProperty("a".into(), "1".into()),
            Property::TopicAlias(1),
            Property::UserProperty("b".into(), "2".into()),
            Property::TopicAlias(2),
        ]
        .into();
        props.set(Property::TopicAlias(7));
        assert_eq!(props.topic_alias(), Some(7));
        assert_eq!(props.iter().filter(|p| p.id() == PropertyId::TopicAlias).count(), 1);
        assert_eq!(props.iter().nth(1), Some(&Property::TopicAlias(7)));
        props.set(Property::MessageExpiryInterval(9));
        assert_eq!(props.message_expiry_interval(), Some(9));
        props.remove(PropertyId::UserProperty);
        assert_eq!(props.user_properties().count(), 0);
        assert_eq!(props.len(), 2);
    }

    #[test]
    fn an_empty_list_allocates_nothing() {
        assert_eq!(Properties::new().0.capacity(), 0);
        let mut buf = Bytes::from_static(&[0x00]);
        let props = Properties::decode(&mut buf, PropertyContext::Publish).expect("empty");
        assert_eq!(props.0.capacity(), 0);
    }
}
