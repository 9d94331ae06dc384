//! The push API's items on the seam: sends, and requests on an app's
//! device directory (aliases and tags). Re-exported by [`crate::seam`].

use crate::Message;
use crate::seam::RequestId;
use herald_core::directory::{Alias, DeviceEntry, Tag, TagExpr};
use herald_core::{AppId, ClientId, MessageId, NodeId, UnixMillis};
use std::sync::Arc;

/// The MQTT 5 user property a push-API message carries its collapse key
/// in: a newer message with the same key replaces an older undelivered one.
pub const COLLAPSE_PROPERTY: &str = "collapse-key";

/// Returns a push-API message's collapse key, if it has one.
pub fn collapse_key(message: &Message) -> Option<&str> {
    let properties = message.properties.as_deref()?;
    properties.user_properties.iter().find(|(k, _)| &**k == COLLAPSE_PROPERTY).map(|(_, v)| &**v)
}

/// Whom a send reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// These devices (client ids of the message's app), each once.
    Devices(Vec<ClientId>),
    /// The devices these aliases name, each alias once.
    Aliases(Vec<Alias>),
    /// The devices of the app's directory a tag expression selects.
    Tags(TagExpr),
    /// Every device of the app.
    All,
}

/// Whom a fan-out log entry is for, frozen at send time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutAudience {
    /// Every session of the app that was offline when it was sent.
    All,
    /// These devices (what a tag expression selected), if offline then.
    Devices(Arc<std::collections::HashSet<ClientId>>),
}

impl FanoutAudience {
    /// Whether `device` is in the audience.
    pub fn includes(&self, device: &ClientId) -> bool {
        match self {
            FanoutAudience::All => true,
            FanoutAudience::Devices(devices) => devices.contains(device),
        }
    }
}

/// A tag or broadcast message in its app's fan-out log: stored once, read
/// by every offline session of its audience when it comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutEntry {
    /// Its place in the app's log.
    pub seq: u64,
    /// The message (its app is the log's; topic `$push`).
    pub message: Arc<Message>,
    /// Whom it is for.
    pub audience: FanoutAudience,
}

/// A push-API send. The router finds each device through the session
/// registry (no route entry) and gives it its own copy on its per-device
/// topic (`$push/{client id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Correlates the `Pushed` reply.
    pub request: RequestId,
    /// The message; each device's copy gets its per-device topic.
    pub message: Arc<Message>,
    /// Whom it reaches.
    pub audience: Audience,
    /// Queue it for offline persistent sessions (false: ttl 0, online only).
    pub store_offline: bool,
    /// The caller's idempotency key, if it gave one.
    pub idempotency: Option<Idempotency>,
}

/// An `Idempotency-Key` and the request it came with: the same key with
/// the same body gets the first answer again; with another body, a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key (at most 64 printable ASCII characters), per app.
    pub key: String,
    /// SHA-256 of the request body.
    pub body_hash: [u8; 32],
}

/// What a push did for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The device is online: its copy went to the gateway holding it.
    Online,
    /// The device is offline with a persistent session subscribed to its
    /// per-device topic: its copy is queued (and durable).
    Stored,
    /// Neither: no session, a session not subscribed, a full queue, or an
    /// online-only message for an offline device.
    Unreachable,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Each device reached for, with what happened (device and alias
    /// audiences; tag and broadcast audiences report totals only).
    pub devices: Vec<(ClientId, PushOutcome)>,
    /// Aliases of the audience that name no device.
    pub unknown_aliases: Vec<Alias>,
    /// Devices online: their copies went to the gateways holding them.
    pub online: u64,
    /// Devices offline with a persistent session subscribed to their
    /// topic: they get it when they come back, within the ttl.
    pub stored: u64,
    /// Set when this is the stored answer of an earlier send with the same
    /// idempotency key: that send's message id (nothing was sent again).
    pub replay_of: Option<herald_core::MessageId>,
}

/// A change to a device's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    /// Add these tags.
    Add(Vec<Tag>),
    /// Remove these tags.
    Remove(Vec<Tag>),
}

/// A request on an app's device directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryOp {
    /// Sets a device's whole entry, creating the device.
    Put {
        /// The device.
        device: ClientId,
        /// Its alias and tags.
        entry: DeviceEntry,
    },
    /// Changes part of an existing device's entry.
    Patch {
        /// The device.
        device: ClientId,
        /// `Some(None)` clears the alias, `Some(Some(a))` sets it.
        alias: Option<Option<Alias>>,
        /// Tags to add and to remove, in order.
        tags: Vec<TagChange>,
    },
    /// Reads a device.
    Get {
        /// The device.
        device: ClientId,
    },
    /// Removes a device from the directory.
    Delete {
        /// The device.
        device: ClientId,
    },
    /// Lists the devices an alias names.
    Alias {
        /// The alias.
        alias: Alias,
    },
    /// Adds devices to a tag (creating their entries) and removes others
    /// from it, each separately.
    Tag {
        /// The tag.
        tag: Tag,
        /// Devices that get the tag.
        add: Vec<ClientId>,
        /// Devices that lose it.
        remove: Vec<ClientId>,
    },
    /// Counts the devices a tag expression selects now.
    Count {
        /// The expression.
        expr: TagExpr,
    },
    /// Reads a message's delivery status.
    Status {
        /// The message.
        message: MessageId,
    },
    /// Takes back what of a message has not been delivered; answers its
    /// status after.
    Cancel {
        /// The message.
        message: MessageId,
    },
    /// Counts the app's devices.
    Stats,
    /// Manages the app's API keys made at run time.
    Keys(KeyOp),
    /// Manages device users (ADR 0026).
    Users(crate::users::UserOp),
}

/// A request on an app's API keys made at run time (the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOp {
    /// Keeps a new key (its digest; the key itself never leaves the
    /// gateway that made it).
    Create(ApiKeyRecord),
    /// Revokes a key by its id.
    Revoke {
        /// The key's id.
        id: String,
    },
    /// Lists the app's keys.
    List,
}

/// API keys made at run time per app at most; past it a new one is refused
/// (policy: refuse newest).
pub const MAX_API_KEYS_PER_APP: usize = 100;

/// An API key made at run time, as the router keeps it: a SHA-256 digest
/// of the key, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's app.
    pub app: AppId,
    /// Its id (public: names it in lists and to revoke it).
    pub id: String,
    /// What the app calls it.
    pub name: String,
    /// What it may do (a bit set: the gateway's `Scopes`).
    pub scopes: u8,
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    /// When it was made.
    pub created_at: UnixMillis,
}

/// One device as the directory and the registry know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// The device.
    pub device: ClientId,
    /// Its alias and tags.
    pub entry: DeviceEntry,
    /// The gateway holding its session, if it is connected.
    pub online: Option<NodeId>,
    /// Since when it is online (or offline), if it has a session.
    pub since: Option<UnixMillis>,
}

/// An app's device counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Devices connected now.
    pub online: u64,
    /// Devices offline with a persistent session (they get what is stored).
    pub offline_persistent: u64,
    /// Devices in the app's directory.
    pub directory_devices: u64,
}

/// The answer to a directory request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryAnswer {
    /// The device after the request (`Put`, `Patch`, `Get`).
    Device(DeviceView),
    /// Done (`Delete`).
    Done,
    /// The devices (`Alias`), in id order, each with whether it is connected.
    Devices(Vec<DeviceView>),
    /// Per device of a `Tag` request, in request order (adds, then
    /// removes): whether it changed (false: it was already so).
    Changed(Vec<bool>),
    /// How many devices (`Count`).
    Count(u64),
    /// A message's delivery status (`Status`).
    Status(MessageStatus),
    /// The app's device counts (`Stats`).
    Stats(AppStats),
    /// The app's API keys (`Keys`: the one made, or all of them).
    Keys(Vec<ApiKeyRecord>),
    /// Device users (`Users`: the one set, read or found, or a page).
    Users(Vec<crate::users::DeviceUser>),
}

/// What gateways saw happen to one push-API message since their last
/// report: deliveries written to devices (each device once: a resend with
/// DUP is not a new delivery) and acknowledgements (PUBACK, PUBCOMP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDelta {
    /// The message's app.
    pub app: AppId,
    /// The message.
    pub message: MessageId,
    /// Written to devices that were online when it was sent.
    pub delivered_online: u64,
    /// Written to devices that got it from their offline queue.
    pub delivered_from_offline: u64,
    /// Acknowledged by devices (QoS 1 and 2 only).
    pub acknowledged: u64,
    /// Copies a cancel took back from gateways before they were written
    /// (waiting behind a full window).
    pub cancelled: u64,
    /// Copies replaced on gateways by a newer message with their collapse
    /// key before they were written.
    pub replaced: u64,
}

/// A message's delivery funnel. Every targeted device is in exactly one
/// of: `pending` (routed or stored, not delivered yet), `delivered` (not
/// acknowledged: QoS 0, or no acknowledgement yet), `acknowledged`,
/// `unreachable` (known at send time), `cancelled`, `replaced`, `expired` (the ttl
/// passed before delivery). Once `final` (the ttl passed), `pending` is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageStatus {
    /// The message.
    pub message: MessageId,
    /// When it was sent.
    pub created_at: UnixMillis,
    /// When its ttl ends (`None`: online only, final soon after sending).
    pub expires_at: Option<UnixMillis>,
    /// The QoS it was sent with.
    pub qos: u8,
    /// Devices it was meant for.
    pub targeted: u64,
    /// Of those, online when sent (handed to their gateways).
    pub online: u64,
    /// Of those, offline and stored for later.
    pub stored: u64,
    /// Of those, neither (no session, not subscribed, a full queue).
    pub unreachable: u64,
    /// Written to devices online when sent.
    pub delivered_online: u64,
    /// Written to devices from their offline queue.
    pub delivered_from_offline: u64,
    /// Acknowledged by devices.
    pub acknowledged: u64,
    /// Stored copies removed by a cancel.
    pub cancelled: u64,
    /// Stored copies replaced by a newer message with the same collapse key.
    pub replaced: u64,
    /// Not delivered when the ttl passed (0 until `final`).
    pub expired: u64,
    /// Routed or stored and not delivered yet (0 once `final`).
    pub pending: u64,
    /// When these counts were read.
    pub as_of: UnixMillis,
    /// Whether the counts can no longer change.
    pub is_final: bool,
}
