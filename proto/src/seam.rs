//! The gateway↔router seam: two bounded streams per gateway.
//!
//! ```text
//!   gateway                                    router
//!   connections ──Uplink──▶ [bounded queue] ──▶ apply in order, per gateway
//!   local fan-out ◀──Downlink── [bounded queue] ◀── replies, deliveries, revocations
//! ```
//!
//! Rules both ends rely on:
//! - Items of one gateway's uplink are applied in the order sent. A
//!   `Routes` change sent before a `Subscribe` is in force before that
//!   subscribe's reply, so a SUBACK never precedes its route.
//! - Every item that carries a [`RequestId`] gets exactly one reply on the
//!   downlink, in any order relative to other requests.
//! - Each hop drains its queue in batches (`recv_many`), so a busy link
//!   costs one wake-up per batch, not per item; over gRPC a batch is one
//!   stream message. Credit is the queue capacity: a sender waits when the
//!   receiver is that far behind (in-process), or when it has no credit
//!   left (gRPC).
//! - Overflow policy of the downlink: the router hands every item to a gateway's bounded downlink while its state
//!   is still locked, never waiting, so each gateway sees items in the order
//!   they were applied. A delivery that finds the downlink more than half full
//!   is dropped and counted (`dropped_gateway_backlog`), keeping the other half
//!   for replies: a gateway lets at most an eighth of the capacity of its
//!   clients' requests wait for replies (its connections wait past that). Any
//!   other item (reply, revocation, handover) finding it full means the
//!   gateway stopped draining: it is disconnected and counted
//!   (`gateways_overloaded`), and its sessions end as for any gateway gone.

use crate::Message;
use herald_core::{AppId, Epoch, ErrorCode, MessageId, NodeId, QoS, SessionKey, TopicFilter};

pub use crate::push::{
    ApiKeyRecord, AppStats, Audience, COLLAPSE_PROPERTY, DeviceView, DirectoryAnswer, DirectoryOp,
    FanoutAudience, FanoutEntry, Idempotency, KeyOp, MAX_API_KEYS_PER_APP, MessageStatus, Push, PushDelta,
    PushOutcome, PushReport, TagChange, collapse_key,
};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Correlates a request on the uplink with its reply on the downlink;
/// unique per gateway link.
pub type RequestId = u64;

/// What the router does with a session's retained-message lookup on
/// subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedLookup {
    /// Send the retained messages matching the filter.
    Send,
    /// Send none.
    Skip,
}

/// One subscription of a session, as the router records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The filter as subscribed (possibly `$share/…`).
    pub filter: TopicFilter,
    /// The maximum QoS granted.
    pub qos: QoS,
    /// Do not deliver the session's own publishes back to it.
    pub no_local: bool,
    /// Keep the publisher's retain flag on delivery.
    pub retain_as_published: bool,
    /// The v5 retain handling option (0, 1 or 2), kept for resumption.
    pub retain_handling: u8,
    /// The v5 subscription identifier.
    pub identifier: Option<u32>,
}

/// A will message registered with a session claim, so the router can publish
/// it even if the gateway holding the session dies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The message to publish.
    pub message: Arc<Message>,
    /// Seconds to wait after the connection ends (v5 will delay interval);
    /// a resumption within the delay cancels the will.
    pub delay_seconds: u32,
    /// The will's message expiry interval, counted from when it is published.
    pub expiry_seconds: Option<u32>,
}

/// A session claim: a connection asks to own `(app, client id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Correlates the reply.
    pub request: RequestId,
    /// The session asked for.
    pub session: SessionKey,
    /// Discard any existing session state (v5 clean start, v3.1.1 clean session).
    pub clean_start: bool,
    /// Session expiry interval in seconds after the connection ends; 0 ends
    /// the session with the connection.
    pub expiry_seconds: u32,
    /// The will to publish if the connection ends abnormally.
    pub will: Option<Box<Will>>,
    /// The epoch the owner of the session's registry shard granted (ADR
    /// 0033); the router takes the claim with it, unless the session has
    /// a later one. `None`: the router grants the epoch.
    pub granted: Option<Epoch>,
}

/// What the router grants a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimGrant {
    /// The session's new ownership epoch; every later item for the session
    /// carries it, and the router refuses older ones.
    pub epoch: Epoch,
    /// Whether an existing session was resumed (CONNACK session present).
    pub session_present: bool,
    /// The resumed session's subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// Messages queued while the session was offline, oldest first; the
    /// leading ones may have been sent before (see [`Progress`]).
    pub queued: Vec<QueuedMessage>,
}

/// A message waiting in a session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// The message.
    pub message: Arc<Message>,
    /// The QoS granted by the matching subscription.
    pub qos: QoS,
    /// Subscription identifiers of the matching subscriptions.
    pub subscription_ids: Vec<u32>,
    /// How far it got towards the client on an earlier connection.
    pub progress: Progress,
    /// The shared subscription (`$share/…`) it was dispatched through: a
    /// member that cannot take it any more hands it back to the group, not
    /// to its own session.
    pub shared: Option<TopicFilter>,
}

/// How far a queued message got towards its client before the connection
/// ended. A resumed session resends unacknowledged PUBLISH and PUBREL
/// packets with their original packet identifiers [MQTT-4.4.0-1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Not sent yet.
    #[default]
    Unsent,
    /// Sent with this packet id and not acknowledged: resend with DUP.
    Sent(u16),
    /// QoS 2 message the client has (PUBREC came back); PUBREL with this
    /// packet id was sent and not completed: resend the PUBREL only.
    Released(u16),
    /// Perhaps sent, through a connection that ended without handing it
    /// back (its gateway was lost, or it was taken over): resend with DUP
    /// under a new packet id.
    MaybeSent,
}

/// Messages one persistent session's client acknowledged, and how far the
/// QoS 2 messages it has not acknowledged yet got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAcks {
    /// The session.
    pub session: SessionKey,
    /// The acknowledged messages.
    pub messages: Vec<MessageId>,
    /// QoS 2 messages sent (`Progress::Sent`) or whose PUBREC came back
    /// (`Progress::Released`), with their packet ids: after the gateway's
    /// loss the next connection resends them under the same ids, so a
    /// client that has one does not take it twice. Never journaled.
    pub progress: Vec<(MessageId, Progress)>,
}

/// The end of a session's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Correlates the `Released` reply.
    pub request: RequestId,
    /// The session.
    pub session: SessionKey,
    /// The epoch the connection held.
    pub epoch: Epoch,
    /// The session expiry interval in force at the end (a v5 DISCONNECT may
    /// change it).
    pub expiry_seconds: u32,
    /// Publish the registered will (abnormal end, or v5 DISCONNECT 0x04).
    pub publish_will: bool,
    /// Messages sent but not acknowledged, or accepted but not yet sent, for
    /// a session that outlives its connection; queued ahead of new ones.
    pub pending: Vec<QueuedMessage>,
}

/// A session a gateway still holds when its link to the router is opened
/// again (a new leader, or the same router after the stream broke): the
/// router gives it back to the gateway with the epoch it already holds, so
/// the client sees nothing, unless a newer claim took it meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reattach {
    /// The session.
    pub session: SessionKey,
    /// The epoch the connection holds.
    pub epoch: Epoch,
    /// The session expiry interval in force.
    pub expiry_seconds: u32,
    /// The will registered at CONNECT.
    pub will: Option<Box<Will>>,
}

/// A publish entering the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Correlates the reply; `None` for QoS 0, which gets no reply.
    pub request: Option<RequestId>,
    /// The publishing session and the epoch it holds; a stale epoch is refused.
    pub from: Option<(SessionKey, Epoch)>,
    /// The message.
    pub message: Arc<Message>,
}

/// An item on a gateway's uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// Claim a session.
    Claim(Claim),
    /// A session's connection ended.
    Release(Release),
    /// The gateway's route set changed: filters it now has local
    /// subscribers for, and filters it has none for any more. Idempotent.
    Routes {
        /// `(app, filter)` pairs that gained their first local subscriber.
        add: Vec<(AppId, TopicFilter)>,
        /// `(app, filter)` pairs that lost their last local subscriber.
        remove: Vec<(AppId, TopicFilter)>,
    },
    /// A session subscribed: recorded for persistent sessions; the reply
    /// carries the retained messages asked for.
    Subscribe {
        /// Correlates the reply.
        request: RequestId,
        /// The session and its epoch.
        session: SessionKey,
        /// The epoch the connection holds.
        epoch: Epoch,
        /// The subscriptions with their retained lookup.
        subscriptions: Vec<(Subscription, RetainedLookup)>,
    },
    /// A session unsubscribed.
    Unsubscribe {
        /// Correlates the reply.
        request: RequestId,
        /// The session.
        session: SessionKey,
        /// The epoch the connection holds.
        epoch: Epoch,
        /// The filters removed.
        filters: Vec<TopicFilter>,
    },
    /// A message to route.
    Publish(Publish),
    /// Messages of a shared subscription group that a member could not
    /// take (it left, or the gateway had no member left): dispatched again
    /// to the group.
    Redispatch {
        /// The shared filter (`$share/{group}/{filter}`).
        filter: TopicFilter,
        /// The messages, in order (each carries its app).
        messages: Vec<Arc<Message>>,
    },
    /// Sessions the gateway holds, sent first on a link opened again. The
    /// router keeps each (or revokes it when a newer claim won); `last`
    /// closes the list: sessions the gateway held before and did not list
    /// by then end as if their connections had dropped.
    Reattach {
        /// The sessions.
        sessions: Vec<Reattach>,
        /// Whether this is the end of the list.
        last: bool,
    },
    /// A push-API send.
    Push(Push),
    /// What the gateway's devices did with push-API messages since its
    /// last report. Asked again on a new link until answered; the router
    /// counts each `(origin, batch)` once.
    Report {
        /// Correlates the `Reported` reply.
        request: RequestId,
        /// The gateway process (its incarnation).
        origin: u64,
        /// This report's number, increasing per origin.
        batch: u64,
        /// Per message, what happened.
        deltas: Vec<PushDelta>,
    },
    /// A push-API request on an app's device directory.
    Directory {
        /// Correlates the `DirectoryDone` reply.
        request: RequestId,
        /// The app.
        app: AppId,
        /// What to do.
        op: DirectoryOp,
        /// The app's directory limits (the gateway knows the app's
        /// configuration; the router keeps the limits it is given).
        limits: herald_core::directory::DirectoryLimits,
    },
    /// Deliveries to persistent sessions that their clients acknowledged
    /// (PUBACK, PUBCOMP), gathered for a few tens of milliseconds: they
    /// leave the sessions' inboxes. Idempotent; no reply.
    Acked(Vec<SessionAcks>),
    /// Deliveries that reached a connection after it sent its `Release`
    /// but before the `Released` reply: routed while the session was
    /// online, so the router did not queue them. They join the session's
    /// queue right after the released ones (or go to its new owner).
    Requeue {
        /// The session.
        session: SessionKey,
        /// The epoch the released connection held.
        epoch: Epoch,
        /// The deliveries, in order.
        messages: Vec<QueuedMessage>,
    },
}

impl Uplink {
    /// Returns the request this item expects a reply to, if any.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            Uplink::Claim(Claim { request, .. })
            | Uplink::Release(Release { request, .. })
            | Uplink::Subscribe { request, .. }
            | Uplink::Unsubscribe { request, .. } => Some(*request),
            Uplink::Publish(publish) => publish.request,
            Uplink::Push(push) => Some(push.request),
            Uplink::Directory { request, .. } | Uplink::Report { request, .. } => Some(*request),
            Uplink::Routes { .. }
            | Uplink::Reattach { .. }
            | Uplink::Redispatch { .. }
            | Uplink::Acked(_)
            | Uplink::Requeue { .. } => None,
        }
    }
}

/// An item on a gateway's downlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downlink {
    /// The reply to a claim.
    Claimed {
        /// The claim's request.
        request: RequestId,
        /// The grant, or why the claim was refused.
        result: Result<ClaimGrant, ErrorCode>,
    },
    /// A newer claim took the session over; the connection holding `epoch`
    /// (or an older one) must end (v5: DISCONNECT 0x8E).
    Revoked {
        /// The session.
        session: SessionKey,
        /// The epoch that lost ownership.
        epoch: Epoch,
    },
    /// The reply to a subscribe.
    Subscribed {
        /// The subscribe's request.
        request: RequestId,
        /// Per retained message: the index of the subscription it matched
        /// and the message; or why the subscribe was refused.
        result: Result<Vec<(usize, Arc<Message>)>, ErrorCode>,
    },
    /// The reply to an unsubscribe.
    Unsubscribed {
        /// The unsubscribe's request.
        request: RequestId,
        /// Done, or why it was refused.
        result: Result<(), ErrorCode>,
    },
    /// The reply to a publish with a request id.
    Published {
        /// The publish's request.
        request: RequestId,
        /// Whether any subscriber matched; or why it was refused.
        result: Result<bool, ErrorCode>,
    },
    /// The reply to a push: what happened per device; or why it was refused.
    Pushed {
        /// The push's request.
        request: RequestId,
        /// The report, or the refusal.
        result: Result<PushReport, ErrorCode>,
    },
    /// The reply to a report: counted (or counted before).
    Reported {
        /// The report's request.
        request: RequestId,
    },
    /// The reply to a directory request.
    DirectoryDone {
        /// The request.
        request: RequestId,
        /// The answer, or why it was refused.
        result: Result<DirectoryAnswer, ErrorCode>,
    },
    /// A message for the gateway's local subscribers: it matched at least
    /// one of the gateway's routes.
    Deliver(Arc<Message>),
    /// A push-API message for local devices, each on its own topic
    /// `$push/{client id}`: these devices, or (`None`) every device of the
    /// message's app connected to this gateway.
    DeliverPush {
        /// The message (topic `$push`).
        message: Arc<Message>,
        /// The devices, or all of the app's.
        devices: Option<Vec<herald_core::ClientId>>,
    },
    /// A message for one member of a shared subscription group on this
    /// gateway: the router picked this gateway; the gateway picks the member.
    DeliverShared {
        /// The shared filter (`$share/{group}/{filter}`).
        filter: TopicFilter,
        /// The message.
        message: Arc<Message>,
    },
    /// The reply to a release: everything the router routed to the
    /// connection before applying the release is ahead of it on the
    /// downlink.
    Released {
        /// The release's request.
        request: RequestId,
    },
    /// The API keys made at run time that the gateway must accept: every
    /// app's (`app: None`, sent when the gateway links), or one app's after
    /// a change, replacing what the gateway had.
    ApiKeys {
        /// The app whose keys these are; `None`: all keys of all apps.
        app: Option<AppId>,
        /// The keys.
        keys: Vec<crate::push::ApiKeyRecord>,
    },
    /// A push-API message was cancelled: copies of it waiting on the
    /// gateway, not yet written to a device, are dropped and reported as
    /// cancelled.
    Retract {
        /// The message's app.
        app: AppId,
        /// The message.
        message: herald_core::MessageId,
    },
    /// Messages a taken-over connection held unacknowledged, handed to the
    /// session's new connection (which holds `epoch`) to resend.
    Handover {
        /// The session.
        session: SessionKey,
        /// The epoch of the connection that takes them.
        epoch: Epoch,
        /// The messages, in order, with how far each got.
        pending: Vec<QueuedMessage>,
    },
}

impl Downlink {
    /// Returns the request this item replies to; `None` for items the
    /// router sends unasked.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            Downlink::Claimed { request, .. }
            | Downlink::Subscribed { request, .. }
            | Downlink::Unsubscribed { request, .. }
            | Downlink::Published { request, .. }
            | Downlink::Pushed { request, .. }
            | Downlink::DirectoryDone { request, .. }
            | Downlink::Reported { request }
            | Downlink::Released { request } => Some(*request),
            Downlink::Revoked { .. }
            | Downlink::ApiKeys { .. }
            | Downlink::Retract { .. }
            | Downlink::Deliver(_)
            | Downlink::DeliverShared { .. }
            | Downlink::DeliverPush { .. }
            | Downlink::Handover { .. } => None,
        }
    }
}

/// The gateway's ends of a link.
#[derive(Debug)]
pub struct GatewayLink {
    /// The gateway's identity on this link.
    pub gateway: NodeId,
    /// Where the gateway sends uplink items.
    pub uplink: mpsc::Sender<Uplink>,
    /// Where the gateway receives downlink items.
    pub downlink: mpsc::Receiver<Downlink>,
}

/// The router's ends of one gateway's link.
#[derive(Debug)]
pub struct RouterPort {
    /// The gateway on the other end.
    pub gateway: NodeId,
    /// Where the router receives the gateway's uplink.
    pub uplink: mpsc::Receiver<Uplink>,
    /// Where the router sends the gateway's downlink.
    pub downlink: mpsc::Sender<Downlink>,
}

/// Returns the two ends of an in-process link for `gateway`, each queue
/// bounded at `capacity` items.
pub fn link(gateway: NodeId, capacity: usize) -> (GatewayLink, RouterPort) {
    let (up_tx, up_rx) = mpsc::channel(capacity);
    let (down_tx, down_rx) = mpsc::channel(capacity);
    (
        GatewayLink { gateway, uplink: up_tx, downlink: down_rx },
        RouterPort { gateway, uplink: up_rx, downlink: down_tx },
    )
}
