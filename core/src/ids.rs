//! Identifiers shared by every layer, validated in their constructors.

use bytestring::ByteString;
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// An app id that is empty, too long or has characters outside `[a-z0-9_-]`.
    #[error("app id must be 1 to 64 characters of [a-z0-9_-]")]
    InvalidAppId,
    /// A client id that is empty, too long or holds `/`, `+`, `#` or a control character.
    #[error("client id must be 1 to {max} bytes without '/', '+', '#' or control characters", max = ClientId::MAX_LEN)]
    InvalidClientId,
}

/// A tenant. Every session, device and message belongs to exactly one app;
/// plain MQTT clients that name none land in [`AppId::default_app`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(ByteString);

impl AppId {
    /// The app that clients without an app-scoped identity belong to.
    pub const DEFAULT: &'static str = "default";

    /// Validates `id`: 1 to 64 characters of `[a-z0-9_-]`.
    pub fn new(id: impl Into<ByteString>) -> Result<AppId, IdError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(AppId(id)) } else { Err(IdError::InvalidAppId) }
    }

    /// Returns the default app.
    pub fn default_app() -> AppId {
        AppId(ByteString::from_static(AppId::DEFAULT))
    }

    /// Returns the id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An MQTT client identifier, unique within its app.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(ByteString);

impl ClientId {
    /// The longest client id accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates `id`: 1 to 256 bytes, no `/`, `+`, `#` (the id is a level of
    /// the per-device topic) and no control characters.
    pub fn new(id: impl Into<ByteString>) -> Result<ClientId, IdError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= ClientId::MAX_LEN
            && !id.chars().any(|c| c == '/' || c == '+' || c == '#' || c.is_control());
        if ok { Ok(ClientId(id)) } else { Err(IdError::InvalidClientId) }
    }

    /// Returns the id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the underlying shared string.
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What every session is keyed by, from day one: `(app, client id)`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// The tenant.
    pub app: AppId,
    /// The client id within the tenant.
    pub client: ClientId,
}

impl SessionKey {
    /// Returns the key of `client` in `app`.
    pub fn new(app: AppId, client: ClientId) -> SessionKey {
        SessionKey { app, client }
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.client)
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.client)
    }
}

/// A node of the deployment: a gateway or a router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A session-ownership fencing token: `(shard generation, counter)`,
/// compared lexicographically. The generation is committed whenever a
/// registry shard is created, moved or restarted, so epochs never go
/// backwards even though the counter itself is soft state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Epoch {
    /// The registry shard's generation.
    pub generation: u64,
    /// The claim counter within the generation.
    pub counter: u64,
}

impl Epoch {
    /// Returns the epoch `(generation, counter)`.
    pub fn new(generation: u64, counter: u64) -> Epoch {
        Epoch { generation, counter }
    }

    /// Returns the next epoch within the same generation.
    pub fn next(self) -> Epoch {
        Epoch { generation: self.generation, counter: self.counter + 1 }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.generation, self.counter)
    }
}

/// A message's 128-bit, time-ordered identity, assigned at ingress and
/// carried to the device: 48 bits of Unix milliseconds, 16 bits of the
/// assigning node, 64 bits of a per-node sequence.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub u128);

impl MessageId {
    /// Returns the id made of `unix_millis` (low 48 bits), `node` (low 16
    /// bits) and `sequence`.
    pub fn compose(unix_millis: u64, node: NodeId, sequence: u64) -> MessageId {
        let millis = u128::from(unix_millis & ((1 << 48) - 1));
        MessageId((millis << 80) | (u128::from(node.0 as u16) << 64) | u128::from(sequence))
    }

    /// Returns the creation time encoded in the id.
    pub fn unix_millis(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// Parses the 32-hex-digit form produced by `Display`.
    pub fn parse(text: &str) -> Option<MessageId> {
        if text.len() != 32 {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(MessageId)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Assigns strictly increasing [`MessageId`]s on one node. Pure: the caller
/// passes the current time in.
#[derive(Debug, Clone)]
pub struct MessageIdGenerator {
    node: u16,
    last_millis: u64,
    sequence: u64,
}

impl MessageIdGenerator {
    /// Returns a generator for `node` (its low 16 bits are used).
    pub fn new(node: NodeId) -> MessageIdGenerator {
        MessageIdGenerator { node: node.0 as u16, last_millis: 0, sequence: 0 }
    }

    /// Returns the next id. Ids from one generator increase strictly even if
    /// the clock steps back: time never goes below the last time used.
    pub fn next(&mut self, now_millis: u64) -> MessageId {
        self.last_millis = now_millis.max(self.last_millis);
        self.sequence = self.sequence.wrapping_add(1);
        MessageId::compose(self.last_millis, NodeId(u64::from(self.node)), self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_lowercase_slugs() {
        assert!(AppId::new("shop-1_eu").is_ok());
        assert_eq!(AppId::new("Shop"), Err(IdError::InvalidAppId));
        assert_eq!(AppId::new(""), Err(IdError::InvalidAppId));
        assert_eq!(AppId::new("a".repeat(65)), Err(IdError::InvalidAppId));
        assert_eq!(AppId::default_app().as_str(), "default");
    }

    #[test]
    fn client_ids_refuse_topic_separators_and_controls() {
        assert!(ClientId::new("mosq-Abc123").is_ok());
        for bad in ["", "a/b", "a+", "#", "a\u{1}b"] {
            assert_eq!(ClientId::new(bad), Err(IdError::InvalidClientId), "{bad:?}");
        }
        assert!(ClientId::new("x".repeat(256)).is_ok());
        assert!(ClientId::new("x".repeat(257)).is_err());
    }

    #[test]
    fn message_ids_increase_and_carry_time_even_when_the_clock_steps_back() {
        let mut ids = MessageIdGenerator::new(NodeId(7));
        let a = ids.next(1_000);
        let b = ids.next(1_000);
        let c = ids.next(900);
        assert!(a < b && b < c);
        assert_eq!(a.unix_millis(), 1_000);
        assert_eq!(c.unix_millis(), 1_000);
        assert_eq!(MessageId::parse(&a.to_string()), Some(a));
        assert_eq!(MessageId::parse("zz"), None);
    }

    #[test]
    fn epochs_order_by_generation_first() {
        assert!(Epoch::new(2, 0) > Epoch::new(1, 99));
        assert!(Epoch::new(1, 1).next() > Epoch::new(1, 1));
    }
}
