//! Herald's shared vocabulary, used by every other crate.
//!
//! Owns: validated identifiers ([`AppId`], [`ClientId`], [`SessionKey`],
//! [`MessageId`], [`Epoch`], [`NodeId`]), registry shards ([`ShardId`]), topic names and filters with the
//! matching rule ([`topic`]) and a subscription index ([`TopicTree`]), the
//! MQTT reason codes ([`ReasonCode`]) and the error-code table that maps
//! every failure to an MQTT reason code, a gRPC code and an HTTP status
//! ([`ErrorCode`]), injected clocks ([`Clock`]), and the trace context a
//! message carries between processes ([`TraceParent`]).
//!
//! Must never depend on: any other workspace crate, tokio or any I/O. This is
//! what makes the pure cores built on it (codec, session state machine,
//! routing state) testable without sockets or time.
//!
//! Start here: `topic.rs` (rules of §4.7), `topic_tree.rs` (the index),
//! `ids.rs`, `error_code.rs`.

mod clock;
pub mod directory;
mod error_code;
mod ids;
mod qos;
mod reason;
mod shard;
mod shared;
pub mod topic;
mod topic_tree;
mod trace;

pub use bytestring::ByteString;
pub use clock::{Clock, ManualClock, SystemClock, UnixMillis, process_incarnation};
pub use error_code::ErrorCode;
pub use ids::{AppId, ClientId, Epoch, IdError, MessageId, MessageIdGenerator, NodeId, SessionKey};
pub use qos::QoS;
pub use reason::ReasonCode;
pub use shard::{REGISTRY_SHARDS, ShardGenerations, ShardId};
pub use shared::{Dispatcher, SharedStrategy};
pub use topic::{Topic, TopicError, TopicFilter};
pub use topic_tree::TopicTree;
pub use trace::TraceParent;
