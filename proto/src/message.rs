//! The message: what a publisher or the push API hands in and a device
//! receives, with its identity and v5 properties.

use bytes::Bytes;
use herald_core::{AppId, ByteString, ClientId, MessageId, QoS, Topic, TraceParent, UnixMillis};

/// One published message. Shared as `Arc<Message>` by every delivery of a
/// fan-out, so the payload is never copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Assigned at ingress; travels to the device.
    pub id: MessageId,
    /// The tenant the message belongs to; it is never delivered outside it.
    pub app: AppId,
    /// The topic it was published to.
    pub topic: Topic,
    /// The application payload.
    pub payload: Bytes,
    /// The QoS it was published with; deliveries get the minimum of this and
    /// the subscription's.
    pub qos: QoS,
    /// The publisher's retain flag.
    pub retain: bool,
    /// When it entered the system.
    pub created_at: UnixMillis,
    /// When it expires (MQTT 5 message expiry interval, made absolute).
    pub expires_at: Option<UnixMillis>,
    /// The publishing client, for the no-local subscription option.
    pub origin: Option<ClientId>,
    /// v5 properties forwarded to subscribers; `None` when there are none, so
    /// plain messages carry one pointer of overhead.
    pub properties: Option<Box<MessageProperties>>,
    /// The trace it belongs to and the span that caused it, when traced.
    pub trace: Option<TraceParent>,
}

impl Message {
    /// Returns a copy whose topic, payload and properties own exact-size
    /// allocations. Decoded messages are slices of a connection's read
    /// buffer; anything kept for long (retained, queued offline) is
    /// compacted first so it does not pin that whole buffer.
    pub fn compacted(&self) -> Message {
        let copy = |s: &ByteString| ByteString::from(&**s);
        Message {
            topic: Topic::new(copy(self.topic.as_byte_string())).expect("a valid topic stays valid"),
            payload: Bytes::copy_from_slice(&self.payload),
            properties: self.properties.as_ref().map(|p| {
                Box::new(MessageProperties {
                    payload_format: p.payload_format,
                    content_type: p.content_type.as_ref().map(copy),
                    response_topic: p.response_topic.as_ref().map(copy),
                    correlation_data: p.correlation_data.as_ref().map(|d| Bytes::copy_from_slice(d)),
                    user_properties: p.user_properties.iter().map(|(k, v)| (copy(k), copy(v))).collect(),
                })
            }),
            ..self.clone()
        }
    }

    /// Returns true when the message has expired at `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The MQTT 5 properties a message carries from publisher to subscriber
/// (§3.3.2.3), in the order received where order matters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// Payload format indicator: `Some(1)` for UTF-8 text.
    pub payload_format: Option<u8>,
    /// Content type.
    pub content_type: Option<ByteString>,
    /// Response topic for request/response.
    pub response_topic: Option<ByteString>,
    /// Correlation data for request/response.
    pub correlation_data: Option<Bytes>,
    /// User properties, in order.
    pub user_properties: Vec<(ByteString, ByteString)>,
}

impl MessageProperties {
    /// Returns true when no property is set.
    pub fn is_empty(&self) -> bool {
        self.payload_format.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
    }
}
