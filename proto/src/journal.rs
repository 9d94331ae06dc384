//! The router's journal: facts about durable state, in the order they
//! happened (ADR 0013). The router commits each batch's facts through Raft
//! before it answers the requests that caused them; replaying the facts
//! (or loading a [`DurableImage`] and the facts after it) rebuilds what a
//! restart must not lose. Transient sessions never appear here.
//!
//! The wire form is `proto/herald/v1/journal.proto`; [`encode`] and
//! [`decode`] convert.

use crate::Message;
use crate::seam::{
    FanoutEntry, Idempotency, MessageStatus, PushDelta, PushReport, QueuedMessage, Subscription, Will,
};
use herald_core::directory::DeviceEntry;
use herald_core::{AppId, Epoch, MessageId, NodeId, QoS, SessionKey, TopicFilter, UnixMillis};
use std::sync::Arc;

pub use crate::grpc::journal::{decode, decode_image, encode, encode_image};

/// One fact about durable state.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// The retained message of its topic; an empty payload clears the topic.
    Retained(Arc<Message>),
    /// A persistent session's durable record, replacing any earlier one.
    SessionPut(Box<DurableSession>),
    /// A persistent session's record, replacing the earlier one's fields
    /// but its inbox (the `queue` here is empty and ignored).
    SessionMeta(Box<DurableSession>),
    /// A persistent session ended (or became transient).
    SessionRemoved(SessionKey),
    /// A message appended to the queues of offline persistent sessions,
    /// written once however many sessions it reaches.
    Queued {
        /// The message.
        message: Arc<Message>,
        /// The sessions, each with its effective QoS and subscription ids.
        targets: Vec<QueueTarget>,
    },
    /// A shared group's waiting messages, replacing any earlier ones.
    GroupQueue(GroupQueue),
    /// The oldest `count` messages of a session's queue were dropped to
    /// make room (overflow policy "drop oldest").
    QueueDropped {
        /// The session.
        session: SessionKey,
        /// How many, from the front.
        count: u32,
    },
    /// A gateway linked for the first time: a router that takes over
    /// waits for it to link again before it routes publishes.
    GatewayLinked(NodeId),
    /// A gateway's lease ended without it coming back.
    GatewayGone(NodeId),
    /// A device's directory entry, replacing any earlier one.
    DevicePut(Box<DirectoryDevice>),
    /// A device left its app's directory.
    DeviceRemoved(SessionKey),
    /// A tag or broadcast message appended to its app's fan-out log.
    Fanout(FanoutEntry),
    /// A send with an idempotency key, and its answer.
    Idempotent(Box<IdempotentSend>),
    /// Idempotency keys kept until before this time are forgotten.
    IdempotencyExpired(UnixMillis),
    /// A push-API message's record, made when it was sent.
    MessageRecorded(Box<MessageRecord>),
    /// A gateway's report of deliveries and acknowledgements (counted once
    /// per `(gateway, origin, batch)`).
    MessageReport {
        /// The reporting gateway.
        gateway: NodeId,
        /// Its process.
        origin: u64,
        /// The report's number.
        batch: u64,
        /// What happened per message.
        deltas: Vec<PushDelta>,
    },
    /// Message records whose time is over before this are forgotten.
    MessagesForgotten(UnixMillis),
    /// Undelivered copies of a message taken back.
    MessageRetracted {
        /// The message's app.
        app: AppId,
        /// The message.
        message: MessageId,
        /// Copies cancelled.
        cancelled: u64,
        /// Copies replaced by a newer message with its collapse key.
        replaced: u64,
    },
    /// An entry left its app's fan-out log (cancelled or replaced).
    FanoutRemoved {
        /// The app.
        app: AppId,
        /// The entry.
        seq: u64,
    },
    /// An app's fan-out log entries up to `through` expired.
    FanoutTrimmed {
        /// The app.
        app: AppId,
        /// The last sequence number trimmed.
        through: u64,
    },
    /// An API key made at run time (its digest), replacing any earlier one
    /// with its id.
    ApiKeyPut(Box<crate::seam::ApiKeyRecord>),
    /// An API key revoked.
    ApiKeyRevoked {
        /// The key's app.
        app: AppId,
        /// The key's id.
        id: String,
    },
    /// A device user set (created, or its password replaced).
    DeviceUserPut(Box<crate::users::DeviceUser>),
    /// A device user removed.
    DeviceUserRemoved {
        /// The user's app.
        app: AppId,
        /// The user name.
        username: String,
    },
    /// Messages a persistent session's client acknowledged: they leave
    /// its inbox.
    Acked(crate::seam::SessionAcks),
}

/// A send made with an idempotency key: a repeat within its time gets
/// `answer` again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentSend {
    /// The app (keys are per app).
    pub app: AppId,
    /// The key and the request it came with.
    pub idempotency: Idempotency,
    /// The message the first send made.
    pub message_id: MessageId,
    /// What the first send was answered.
    pub answer: PushReport,
    /// When the key is forgotten.
    pub expires_at: UnixMillis,
}

/// What the router keeps of a push-API message for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The message's app.
    pub app: AppId,
    /// The counts as sent and reported.
    pub status: MessageStatus,
    /// When the record is forgotten.
    pub forget_at: UnixMillis,
}

/// The last report batch counted of one gateway process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportMark {
    /// The gateway.
    pub gateway: NodeId,
    /// Its process.
    pub origin: u64,
    /// The last batch counted.
    pub batch: u64,
}

/// One app's fan-out log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutLog {
    /// The app.
    pub app: AppId,
    /// The sequence number of the next entry (kept when the log is empty,
    /// so that sessions' cursors stay meaningful).
    pub next_seq: u64,
    /// The entries, oldest first.
    pub entries: Vec<FanoutEntry>,
}

/// One device of an app's directory (keyed like its session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryDevice {
    /// The app and the device's client id.
    pub device: SessionKey,
    /// Its alias and tags.
    pub entry: DeviceEntry,
}

/// One session a queued message is appended for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTarget {
    /// The session.
    pub session: SessionKey,
    /// The QoS it gets the message at.
    pub qos: QoS,
    /// The identifiers of its matching subscriptions.
    pub subscription_ids: Vec<u32>,
}

impl QueueTarget {
    /// Returns the message as this target's queue holds it.
    pub fn queued(&self, message: &Arc<Message>) -> QueuedMessage {
        QueuedMessage {
            message: message.clone(),
            qos: self.qos,
            subscription_ids: self.subscription_ids.clone(),
            progress: crate::seam::Progress::Unsent,
            shared: None,
        }
    }
}

/// What survives of a persistent session.
#[derive(Debug, Clone, PartialEq)]
pub struct DurableSession {
    /// The session.
    pub session: SessionKey,
    /// Session expiry interval, seconds.
    pub expiry_seconds: u32,
    /// Its subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// Messages waiting for it, oldest first.
    pub queue: Vec<QueuedMessage>,
    /// Its will, while one is pending.
    pub will: Option<Box<Will>>,
    /// When the pending will fires.
    pub will_at: Option<UnixMillis>,
    /// When the session expires, while offline.
    pub expires_at: Option<UnixMillis>,
    /// Whether a connection held it when this was written.
    pub online: bool,
    /// The ownership epoch of its last claim (`None` in older records).
    pub epoch: Option<Epoch>,
    /// The first entry of its app's fan-out log it has not had.
    pub fanout_cursor: Option<u64>,
}

/// The messages waiting in one shared group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupQueue {
    /// The group's app.
    pub app: AppId,
    /// The group's `$share/{group}/{filter}` filter.
    pub filter: TopicFilter,
    /// Waiting messages, oldest first.
    pub messages: Vec<Arc<Message>>,
}

/// Everything the journal describes at one point: what a Raft snapshot holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurableImage {
    /// Retained messages.
    pub retained: Vec<Arc<Message>>,
    /// Persistent sessions.
    pub sessions: Vec<DurableSession>,
    /// Shared groups with waiting messages.
    pub groups: Vec<GroupQueue>,
    /// Gateways linked and not gone.
    pub gateways: Vec<NodeId>,
    /// Every app's device directory.
    pub devices: Vec<DirectoryDevice>,
    /// Every app's fan-out log.
    pub fanout: Vec<FanoutLog>,
    /// Idempotency keys within their time.
    pub idempotent: Vec<IdempotentSend>,
    /// Push-API message records.
    pub messages: Vec<MessageRecord>,
    /// The last report batch counted per gateway process.
    pub report_marks: Vec<ReportMark>,
    /// API keys made at run time.
    pub api_keys: Vec<crate::seam::ApiKeyRecord>,
    /// Device users.
    pub device_users: Vec<crate::users::DeviceUser>,
}
