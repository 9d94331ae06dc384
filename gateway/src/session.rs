//! The per-connection session state machine, sans-IO.
//!
//! Inputs: packets from the client, replies and deliveries from the router,
//! and the current time. Outputs: [`Action`]s for the connection task to
//! carry out in order (send a packet, send an uplink item, change the local
//! subscription index, close). No sockets, no clock, no tokio.
//!
//! Hot path: `on_publish` and `deliver` run once per message.

use crate::handshake::Accepted;
use herald_core::{
    ByteString, ClientId, Epoch, MessageId, QoS, ReasonCode, SessionKey, Topic, TopicFilter, UnixMillis,
};
use herald_mqtt::{
    ConnAck, Disconnect, Packet, Property, PubAck, Publish, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use herald_mqtt::{Properties, ProtocolVersion, encoded_len};
use herald_proto::seam::{
    Downlink, Progress, QueuedMessage, Release, RequestId, RetainedLookup, Subscription, Uplink,
};
use herald_proto::{Message, MessageProperties};
use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::sync::Arc;

/// Gateway-wide limits every session applies.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Largest packet accepted from a client, in bytes.
    pub max_packet_size: u32,
    /// QoS 1/2 publishes a client may have unacknowledged towards us.
    pub receive_maximum: u16,
    /// Inbound topic aliases accepted per connection.
    pub topic_alias_maximum: u16,
    /// QoS 1/2 deliveries in flight to a v3.1.1 client (v5 clients state
    /// their own receive maximum).
    pub max_inflight_v311: u16,
    /// Deliveries waiting behind a full in-flight window; past it the
    /// newest is dropped and counted (`dropped_queue_full`).
    pub max_queued_messages: usize,
    /// Upper bound on session expiry intervals, in seconds.
    pub max_session_expiry_seconds: u32,
    /// Keep-alive the server imposes at most, in seconds (0: no cap).
    pub max_keep_alive: u16,
    /// Outbound topic aliases per connection at most (the client's own
    /// Topic Alias Maximum lowers it; 0 turns them off).
    pub max_outbound_aliases: u16,
    /// Returned as Response Information (prefix + client id) to a v5 client
    /// that requests it; `None` sends none, as the spec allows.
    pub response_information: Option<String>,
    /// The highest QoS clients may publish with (announced to v5 clients;
    /// a higher one is a 0x9B DISCONNECT).
    pub maximum_qos: QoS,
    /// Whether clients may publish retained messages (0x9A when not).
    pub retain_available: bool,
    /// Whether subscriptions may use `+` and `#` (0xA2 in SUBACK when not).
    pub wildcard_subscriptions: bool,
    /// Whether subscriptions may carry identifiers (0xA1 DISCONNECT when not).
    pub subscription_identifiers: bool,
    /// Subscriptions one session may hold; past it SUBACK says 0x97
    /// (quota exceeded) for each further filter.
    pub max_subscriptions: usize,
    /// Whether clients may join shared subscription groups (0x9E when not).
    pub shared_subscriptions: bool,
    /// How a gateway picks the member of a shared group.
    pub shared_strategy: herald_core::SharedStrategy,
    /// Where v5 clients are sent when this server shuts down: DISCONNECT
    /// 0x9C (use another server) with this Server Reference instead of 0x8B.
    pub server_reference: Option<String>,
    /// This server has moved for good to `server_reference`: every CONNECT
    /// gets CONNACK 0x9D (server moved) with it, and at shutdown v5 clients
    /// get DISCONNECT 0x9D instead of 0x9C.
    pub server_moved: bool,
    /// Who may publish and subscribe to what (docs/security.md).
    pub acl: Arc<crate::acl::Acl>,
    /// Give v5 subscribers a traced message's trace context as the user
    /// property `traceparent`.
    pub trace_user_property: bool,
    /// Publishes per second one client may send, with a burst of one
    /// second's worth; past it DISCONNECT 0x96 (0: no limit).
    pub max_publish_rate: u32,
    /// Payload bytes per second one client may publish, likewise (0: no
    /// limit).
    pub max_publish_bytes_rate: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_packet_size: 1024 * 1024,
            receive_maximum: 128,
            topic_alias_maximum: 64,
            max_inflight_v311: 32,
            max_queued_messages: 1000,
            max_session_expiry_seconds: 7 * 24 * 3600,
            max_keep_alive: 0,
            max_outbound_aliases: 32,
            response_information: None,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscriptions: true,
            subscription_identifiers: true,
            max_subscriptions: 1000,
            shared_subscriptions: true,
            shared_strategy: herald_core::SharedStrategy::RoundRobin,
            server_reference: None,
            server_moved: false,
            acl: Arc::new(crate::acl::Acl::default()),
            trace_user_property: false,
            max_publish_rate: 0,
            max_publish_bytes_rate: 0,
        }
    }
}

/// A client's publish budget: messages and bytes, each refilled at its
/// rate and holding at most one second's worth.
#[derive(Debug, Default)]
struct PublishBudget {
    messages: crate::push_api::rate::Bucket,
    bytes: crate::push_api::rate::Bucket,
}

impl PublishBudget {
    /// Takes one message of `size` bytes at `now`; whether the limits
    /// allow it.
    fn take(&mut self, limits: &SessionLimits, size: usize, now: UnixMillis) -> bool {
        let (rate, byte_rate) =
            (f64::from(limits.max_publish_rate), f64::from(limits.max_publish_bytes_rate));
        if rate == 0.0 && byte_rate == 0.0 {
            return true;
        }
        let (messages, bytes) = (self.messages.refill(rate, now.0), self.bytes.refill(byte_rate, now.0));
        let size = size as f64;
        let fits = (rate == 0.0 || messages >= 1.0) && (byte_rate == 0.0 || bytes >= size);
        if fits {
            self.messages.spend(1.0);
            self.bytes.spend(size);
        }
        fits
    }
}

/// What the connection task must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write a packet to the client.
    Send(Packet),
    /// Send an item to the router.
    Uplink(Uplink),
    /// Add or replace a subscription in the gateway's local index.
    AddLocal(TopicFilter, LocalSubscription),
    /// Remove a subscription from the gateway's local index.
    RemoveLocal(TopicFilter),
    /// End the connection.
    Close(Close),
    /// Something the push API's delivery status counts happened.
    Push(PushEvent),
    /// The access rules refused a publish or a subscription (counted).
    Denied(crate::acl::Access),
    /// The client published faster than its limit (counted; a `Close`
    /// follows).
    Throttled,
    /// The client acknowledged a delivery of its persistent session: the
    /// message leaves the session's inbox on the router.
    Acked(MessageId),
    /// A QoS 2 delivery of a persistent session was sent under a packet id,
    /// or its PUBREC came back: the router notes it in the inbox, so that
    /// after this gateway's loss it is resent under the same id.
    Progressed(MessageId, Progress),
}

/// What happened to a push-API message on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEvent {
    /// Written to the device for the first time (a resend with DUP is not
    /// a new delivery); `from_offline` when it came from the session's
    /// stored queue.
    Delivered {
        /// The message.
        message: herald_core::MessageId,
        /// Whether it came from the offline queue.
        from_offline: bool,
    },
    /// Acknowledged by the device (PUBACK, or PUBCOMP for QoS 2).
    Acknowledged {
        /// The message.
        message: herald_core::MessageId,
    },
    /// Taken back by a cancel before it was written to the device.
    Cancelled {
        /// The message.
        message: herald_core::MessageId,
    },
    /// Replaced, before it was written to the device, by a newer message
    /// with its collapse key.
    Replaced {
        /// The message.
        message: herald_core::MessageId,
    },
}

/// Counts the device's acknowledgement of a push-API message.
fn acknowledged(queued: &QueuedMessage, out: &mut Vec<Action>) {
    if is_push(queued) {
        out.push(Action::Push(PushEvent::Acknowledged { message: queued.message.id }));
    }
}

fn is_push(queued: &QueuedMessage) -> bool {
    queued.message.topic.as_str().starts_with(herald_core::topic::PUSH_PREFIX)
}

/// How a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The reason (v5 clients get it in a DISCONNECT when `notify` is set).
    pub reason: ReasonCode,
    /// A human-readable reason string for v5 clients.
    pub detail: &'static str,
    /// Send a DISCONNECT to a v5 client before closing.
    pub notify: bool,
    /// Publish the will (any end but a normal DISCONNECT).
    pub publish_will: bool,
}

impl Close {
    fn error(reason: ReasonCode, detail: &'static str) -> Close {
        Close { reason, detail, notify: true, publish_will: true }
    }
}

/// A subscription as the gateway's local index holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSubscription {
    /// Maximum QoS granted.
    pub qos: QoS,
    /// Don't deliver the subscriber's own messages.
    pub no_local: bool,
    /// Keep the publisher's retain flag.
    pub retain_as_published: bool,
    /// The v5 subscription identifier.
    pub identifier: Option<u32>,
}

impl From<&Subscription> for LocalSubscription {
    fn from(s: &Subscription) -> LocalSubscription {
        LocalSubscription {
            qos: s.qos,
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            identifier: s.identifier,
        }
    }
}

/// Whether a delivery is subject to the waiting queue's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Live traffic: past `max_queued_messages` the newest is dropped.
    Bounded,
    /// A resumed session's queue, bounded by the router already.
    Unbounded,
}

/// The outbound topic alias a PUBLISH uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alias {
    /// No alias: the topic in full.
    None,
    /// The topic has this entry of the table: empty topic plus its alias.
    Known(usize),
    /// The topic gets this alias now: topic in full plus the alias.
    New(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// PUBACK of a QoS 1 delivery.
    Ack,
    /// PUBREC of a QoS 2 delivery.
    Received,
    /// PUBCOMP after our PUBREL.
    Complete,
}

#[derive(Debug)]
struct Inflight {
    packet_id: u16,
    state: Awaiting,
    queued: QueuedMessage,
}

#[derive(Debug)]
enum PendingReply {
    Publish {
        packet_id: NonZeroU16,
        qos: QoS,
    },
    Subscribe {
        packet_id: NonZeroU16,
        codes: Vec<ReasonCode>,
        accepted: Vec<(usize, TopicFilter, LocalSubscription)>,
    },
    Unsubscribe {
        packet_id: NonZeroU16,
        codes: Vec<ReasonCode>,
    },
}

/// A request sent to the router, and its reply once it has come. Replies
/// are acted on in request order, so acknowledgements leave in the order
/// the client's packets arrived [MQTT-4.6.0-2] whatever order the router
/// answers in.
#[derive(Debug)]
struct Pending {
    request: RequestId,
    kind: PendingReply,
    reply: Option<Downlink>,
    /// When it was sent: past the router reply timeout it is given up.
    since: UnixMillis,
}

/// Counters a session reports when it ends (and the gateway aggregates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Deliveries dropped because the waiting queue was full.
    pub dropped_queue_full: u64,
    /// Deliveries dropped because they expired before being sent.
    pub dropped_expired: u64,
    /// Deliveries dropped because they exceed the client's maximum packet size.
    pub dropped_too_large: u64,
    /// Publishes refused (not authorized, invalid).
    pub publishes_refused: u64,
    /// Handed-over PUBRELs whose packet id was in use on the new connection.
    pub dropped_pubrel_collision: u64,
}

/// One client's session while its connection lives.
#[derive(Debug)]
pub struct Session {
    limits: Arc<SessionLimits>,
    key: Arc<SessionKey>,
    epoch: Epoch,
    version: ProtocolVersion,
    expiry_seconds: u32,
    problem_information: bool,
    client_receive_maximum: u16,
    client_max_packet: u32,
    request_base: u64,
    request_seq: u32,
    next_packet_id: u16,
    inflight: Vec<Inflight>,
    /// Deliveries behind the window, with whether they go out as retained.
    waiting: VecDeque<(QueuedMessage, bool)>,
    inbound_qos2: Vec<NonZeroU16>,
    awaiting_router: VecDeque<Pending>,
    /// Inbound topic aliases (at most `topic_alias_maximum`, so a short list).
    aliases: Vec<(u16, ByteString)>,
    /// Outbound topic aliases, least recently used first.
    outbound_aliases: Vec<(ByteString, u16)>,
    /// How many outbound aliases this client accepts (0: none).
    outbound_alias_limit: u16,
    subscriptions: Vec<(TopicFilter, LocalSubscription)>,
    /// The enhanced-authentication method of CONNECT and any
    /// re-authentication in progress (`None`: CONNECT named no method).
    auth: Option<Box<reauth::ReAuth>>,
    counters: SessionCounters,
    /// Push-API messages the session got from its offline queue, not yet
    /// written: their delivery counts as "from offline".
    stored_push: std::collections::HashSet<herald_core::MessageId>,
    /// The user name the client authenticated with (for `%u` in the access
    /// rules).
    username: Option<Box<str>>,
    /// What the client may still publish now (with a publish rate limit).
    budget: Option<Box<PublishBudget>>,
}

impl Session {
    /// Returns the session of an accepted connection. `request_base` makes
    /// this connection's request ids unique on the gateway (the low 24 bits
    /// are the session's sequence).
    pub fn new(accepted: &Accepted, limits: Arc<SessionLimits>, epoch: Epoch, request_base: u64) -> Session {
        Session {
            limits,
            key: accepted.key.clone(),
            epoch,
            version: accepted.version,
            expiry_seconds: accepted.expiry_seconds,
            problem_information: accepted.problem_information,
            client_receive_maximum: accepted.client_receive_maximum,
            client_max_packet: accepted.client_max_packet,
            request_base,
            request_seq: 0,
            next_packet_id: 1,
            inflight: Vec::new(),
            waiting: VecDeque::new(),
            inbound_qos2: Vec::new(),
            awaiting_router: VecDeque::new(),
            aliases: Vec::new(),
            outbound_aliases: Vec::new(),
            outbound_alias_limit: accepted.client_topic_alias_maximum,
            subscriptions: Vec::new(),
            auth: accepted.auth_method.clone().map(|method| Box::new(reauth::ReAuth::new(method))),
            counters: SessionCounters::default(),
            stored_push: std::collections::HashSet::new(),
            username: accepted.username.clone(),
            budget: None,
        }
    }

    /// Whether the access rules let this client publish to `topic` or
    /// subscribe to `filter`.
    fn allowed(&self, access: crate::acl::Access, topic: &str) -> bool {
        let who = crate::acl::Client {
            app: &self.key.app,
            client: self.key.client.as_str(),
            user: self.username.as_deref(),
        };
        self.limits.acl.is_open() || self.limits.acl.allows(who, access, topic)
    }

    /// Returns the session key.
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    /// Returns the ownership epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Returns the protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Returns the counters.
    pub fn counters(&self) -> &SessionCounters {
        &self.counters
    }

    /// Returns the local subscriptions.
    pub fn subscriptions(&self) -> &[(TopicFilter, LocalSubscription)] {
        &self.subscriptions
    }

    /// Returns the number of deliveries in flight and waiting.
    pub fn outbound_backlog(&self) -> usize {
        self.inflight.len() + self.waiting.len()
    }

    fn next_request(&mut self) -> RequestId {
        self.request_seq = (self.request_seq + 1) & 0x00FF_FFFF;
        self.request_base | u64::from(self.request_seq)
    }

    fn v5(&self) -> bool {
        self.version == ProtocolVersion::V5
    }

    /// The properties of a packet reporting `code`: for a v5 client that
    /// did not turn problem information off [MQTT-3.1.2-29], a reason
    /// string (`detail`, or the code's name) and, for errors, the stable
    /// error code as the `error` user property.
    fn reason_properties(&self, code: ReasonCode, detail: &str) -> Properties {
        let mut properties = Properties::default();
        if self.v5() && self.problem_information && code.is_error() {
            let detail = if detail.is_empty() { code.describe() } else { detail };
            properties.push(Property::ReasonString(ByteString::from(detail)));
            crate::handshake::error_property(code, &mut properties);
        }
        properties
    }

    /// The properties of an ack with one reason code per request (SUBACK,
    /// UNSUBACK): those of the first error, if any.
    fn first_error_properties(&self, codes: &[ReasonCode]) -> Properties {
        match codes.iter().find(|c| c.is_error()) {
            Some(code) => self.reason_properties(*code, ""),
            None => Properties::default(),
        }
    }

    /// Notes which of a resumed session's queued messages are push-API
    /// messages from its offline queue (for their delivery status).
    pub fn note_stored(&mut self, queued: &[QueuedMessage]) {
        self.stored_push.extend(queued.iter().filter(|q| is_push(q)).map(|q| q.message.id));
    }

    /// Restores a resumed session's subscriptions and queued messages.
    pub fn resume(
        &mut self,
        subscriptions: Vec<Subscription>,
        queued: Vec<QueuedMessage>,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        for s in subscriptions {
            let local = LocalSubscription::from(&s);
            out.push(Action::AddLocal(s.filter.clone(), local));
            self.subscriptions.push((s.filter, local));
        }
        // A handover on a link opened again lists the session's whole
        // inbox: what this connection holds already is not sent twice.
        let held = self.held_ids();
        for q in queued {
            if held.contains(&q.message.id) {
                continue;
            }
            match q.progress {
                // Already bounded by the router's offline queue, and already
                // acknowledged to their publishers: the waiting queue's
                // bound (for live traffic) does not apply to them. One its
                // lost connection may have sent goes with DUP.
                Progress::Unsent | Progress::MaybeSent => {
                    self.deliver_with_retain(q, false, Bound::Unbounded, now, out);
                }
                Progress::Sent(packet_id) => self.resend(q, packet_id, now, out),
                Progress::Released(packet_id) => {
                    let Some(id) = NonZeroU16::new(packet_id) else { continue };
                    if self.inflight.iter().any(|f| f.packet_id == packet_id) {
                        // The id is taken on this connection already (a
                        // handover after fresh deliveries): the client has
                        // the message; only its PUBREL is lost, counted.
                        self.counters.dropped_pubrel_collision += 1;
                        continue;
                    }
                    self.inflight.push(Inflight { packet_id, state: Awaiting::Complete, queued: q });
                    out.push(Action::Send(Packet::PubRel(PubAck::new(id))));
                }
            }
        }
    }

    /// Takes a delivery out of a persistent session's inbox on the router:
    /// the client acknowledged it (PUBACK, PUBCOMP), or it is given up for
    /// good (expired, refused with an error PUBREC, too large for the
    /// client), or every connection would meet it again. Deliveries dropped
    /// behind a full waiting queue stay in the inbox: the next connection
    /// gets them. Shared-subscription deliveries are their group's, and QoS
    /// 0 is never in an inbox.
    fn leave_inbox(&self, queued: &QueuedMessage, out: &mut Vec<Action>) {
        if self.is_persistent() && queued.shared.is_none() && queued.qos != QoS::AtMostOnce {
            out.push(Action::Acked(queued.message.id));
        }
    }

    /// Tells the router how far a QoS 2 delivery of the session's inbox got
    /// (QoS 1 resends are harmless under any id: not reported).
    fn note_progress(&self, queued: &QueuedMessage, progress: Progress, out: &mut Vec<Action>) {
        if self.is_persistent() && queued.shared.is_none() && queued.qos == QoS::ExactlyOnce {
            out.push(Action::Progressed(queued.message.id, progress));
        }
    }

    /// The messages in flight or waiting on this connection.
    fn held_ids(&self) -> std::collections::HashSet<MessageId> {
        let inflight = self.inflight.iter().map(|f| f.queued.message.id);
        inflight.chain(self.waiting.iter().map(|(q, _)| q.message.id)).collect()
    }

    /// Resends a delivery an earlier connection sent with `packet_id`, with
    /// DUP and the same id [MQTT-4.4.0-1]. It was inside the client's window
    /// then, so it is sent whatever the window holds now.
    fn resend(&mut self, queued: QueuedMessage, packet_id: u16, now: UnixMillis, out: &mut Vec<Action>) {
        if packet_id == 0 || self.inflight.iter().any(|f| f.packet_id == packet_id) {
            let fresh = QueuedMessage { progress: Progress::Unsent, ..queued };
            return self.deliver_with_retain(fresh, false, Bound::Unbounded, now, out);
        }
        self.send_publish(queued, Some(packet_id), false, now, out);
    }

    /// Handles one packet from the client.
    pub fn on_packet(
        &mut self,
        packet: Packet,
        now: UnixMillis,
        new_id: &mut dyn FnMut() -> MessageId,
        out: &mut Vec<Action>,
    ) {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish, now, new_id, out),
            Packet::PubAck(ack) => self.on_puback(ack, now, out),
            Packet::PubRec(ack) => self.on_pubrec(ack, now, out),
            Packet::PubRel(ack) => self.on_pubrel(ack, out),
            Packet::PubComp(ack) => self.on_pubcomp(ack, now, out),
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe, now, out),
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe, now, out),
            Packet::PingReq => out.push(Action::Send(Packet::PingResp)),
            Packet::Disconnect(disconnect) => self.on_disconnect(disconnect, out),
            Packet::Connect(_) => out.push(Action::Close(Close::error(
                ReasonCode::ProtocolError,
                "[MQTT-3.1.0-2] a second CONNECT is a protocol error",
            ))),
            // The connection passes AUTH to `on_auth`, with its authenticator.
            Packet::Auth(_) => out.push(Action::Close(Close::error(
                ReasonCode::ProtocolError,
                "[MQTT-4.12.0-7] AUTH without an authentication method in CONNECT",
            ))),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => out.push(
                Action::Close(Close::error(ReasonCode::ProtocolError, "packet type only a server may send")),
            ),
        }
    }

    fn on_publish(
        &mut self,
        mut publish: Publish,
        now: UnixMillis,
        new_id: &mut dyn FnMut() -> MessageId,
        out: &mut Vec<Action>,
    ) {
        if publish.qos > self.limits.maximum_qos {
            return out.push(Action::Close(Close::error(
                ReasonCode::QosNotSupported,
                "[MQTT-3.2.2-11] QoS above the server's maximum",
            )));
        }
        if publish.retain && !self.limits.retain_available {
            return out.push(Action::Close(Close::error(
                ReasonCode::RetainNotSupported,
                "[MQTT-3.2.2-14] retain is not available on this server",
            )));
        }
        if (self.limits.max_publish_rate > 0 || self.limits.max_publish_bytes_rate > 0)
            && !self.budget.get_or_insert_with(Box::default).take(&self.limits, publish.payload.len(), now)
        {
            out.push(Action::Throttled);
            return out.push(Action::Close(Close::error(
                ReasonCode::MessageRateTooHigh,
                "publishing faster than this server allows a client",
            )));
        }
        let packet_id = publish.packet_id;
        if publish.qos == QoS::ExactlyOnce {
            let id = packet_id.expect("the codec requires a packet id for QoS 2");
            if self.inbound_qos2.contains(&id) {
                // A resent QoS 2 publish already accepted: acknowledge again,
                // route nothing (exactly once).
                return out.push(Action::Send(Packet::PubRec(PubAck::new(id))));
            }
            if self
                .awaiting_router
                .iter()
                .any(|p| matches!(p.kind, PendingReply::Publish { packet_id, .. } if packet_id == id))
            {
                // Resent before the router answered: the PUBREC follows the
                // answer; routing it again would deliver it twice.
                return;
            }
        }
        if publish.qos != QoS::AtMostOnce {
            // Only publishes count against the receive maximum: those
            // awaiting the router, and QoS 2 ones awaiting PUBREL.
            let publishes =
                self.awaiting_router.iter().filter(|p| matches!(p.kind, PendingReply::Publish { .. }));
            let unacked = self.inbound_qos2.len() + publishes.count();
            if unacked >= usize::from(self.limits.receive_maximum) {
                return out.push(Action::Close(Close::error(
                    ReasonCode::ReceiveMaximumExceeded,
                    "[MQTT-3.3.4-9] more unacknowledged QoS 1/2 publishes than the receive maximum",
                )));
            }
        }
        if let Err(close) = self.resolve_alias(&mut publish) {
            return out.push(Action::Close(close));
        }
        let refusal = match Topic::new(publish.topic.clone()) {
            Ok(topic) if topic.is_system() => {
                Err((ReasonCode::TopicNameInvalid, "clients may not publish to $-topics"))
            }
            Ok(topic) => self.check_payload_format(&publish).map(|()| topic),
            Err(_) => Err((ReasonCode::TopicNameInvalid, "invalid topic name")),
        };
        let topic = match refusal {
            Ok(topic) if !self.allowed(crate::acl::Access::Publish, topic.as_str()) => {
                out.push(Action::Denied(crate::acl::Access::Publish));
                let detail = "the access rules do not let this client publish to this topic";
                return self.refuse_publish(packet_id, publish.qos, ReasonCode::NotAuthorized, detail, out);
            }
            Ok(topic) => topic,
            Err((code, detail)) => return self.refuse_publish(packet_id, publish.qos, code, detail, out),
        };
        let message = self.build_message(new_id(), topic, publish, now);
        match packet_id {
            Some(packet_id) => {
                let request = self.next_request();
                let qos = message.qos;
                self.awaiting(request, PendingReply::Publish { packet_id, qos }, now);
                out.push(Action::Uplink(Uplink::Publish(herald_proto::seam::Publish {
                    request: Some(request),
                    from: Some((SessionKey::clone(&self.key), self.epoch)),
                    message: Arc::new(message),
                })));
            }
            None => out.push(Action::Uplink(Uplink::Publish(herald_proto::seam::Publish {
                request: None,
                from: Some((SessionKey::clone(&self.key), self.epoch)),
                message: Arc::new(message),
            }))),
        }
    }

    fn check_payload_format(&self, publish: &Publish) -> Result<(), (ReasonCode, &'static str)> {
        if publish.properties.payload_format_indicator() == Some(1)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            return Err((
                ReasonCode::PayloadFormatInvalid,
                "payload format indicator is 1 but payload is not UTF-8",
            ));
        }
        Ok(())
    }

    fn refuse_publish(
        &mut self,
        packet_id: Option<NonZeroU16>,
        qos: QoS,
        code: ReasonCode,
        detail: &'static str,
        out: &mut Vec<Action>,
    ) {
        self.counters.publishes_refused += 1;
        if !self.v5() {
            // v3.1.1 has no way to refuse a publish but closing [MQTT-3.3.5-2].
            return out.push(Action::Close(Close::error(code, detail)));
        }
        let Some(id) = packet_id else { return };
        let ack =
            PubAck { packet_id: id, reason_code: code, properties: self.reason_properties(code, detail) };
        out.push(Action::Send(if qos == QoS::ExactlyOnce {
            Packet::PubRec(ack)
        } else {
            Packet::PubAck(ack)
        }));
    }

    /// Replaces an inbound topic alias by its topic, or records a new alias.
    fn resolve_alias(&mut self, publish: &mut Publish) -> Result<(), Close> {
        let Some(alias) = publish.properties.topic_alias() else {
            return Ok(());
        };
        let maximum = self.limits.topic_alias_maximum;
        if alias == 0 || alias > maximum {
            return Err(Close::error(
                ReasonCode::TopicAliasInvalid,
                "[MQTT-3.3.2-9] topic alias out of range",
            ));
        }
        let aliases = &mut self.aliases;
        if publish.topic.is_empty() {
            match aliases.iter().find(|(a, _)| *a == alias).map(|(_, t)| t) {
                Some(topic) => publish.topic = topic.clone(),
                None => {
                    return Err(Close::error(
                        ReasonCode::ProtocolError,
                        "[MQTT-3.3.4-?] unknown topic alias",
                    ));
                }
            }
        } else {
            // A copy: the alias outlives the read buffer the topic came in.
            let topic = ByteString::from(&*publish.topic);
            match aliases.iter_mut().find(|(a, _)| *a == alias) {
                Some(entry) => entry.1 = topic,
                None => aliases.push((alias, topic)),
            }
        }
        Ok(())
    }

    fn build_message(&self, id: MessageId, topic: Topic, publish: Publish, now: UnixMillis) -> Message {
        let p = &publish.properties;
        let properties = forwarded_properties(p);
        Message {
            id,
            app: self.key.app.clone(),
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            created_at: now,
            expires_at: p.message_expiry_interval().map(|s| now.plus_seconds(s)),
            origin: Some(self.key.client.clone()),
            properties: (!properties.is_empty()).then(|| Box::new(properties)),
            trace: None,
        }
    }

    fn on_puback(&mut self, ack: PubAck, now: UnixMillis, out: &mut Vec<Action>) {
        let id = ack.packet_id.get();
        if let Some(i) = self.inflight.iter().position(|f| f.packet_id == id && f.state == Awaiting::Ack) {
            // `remove`, not `swap_remove`: the window stays in send order, which
            // is the order a resumed session resends in [MQTT-4.6.0-1].
            let done = self.inflight.remove(i);
            acknowledged(&done.queued, out);
            self.leave_inbox(&done.queued, out);
            self.pump(now, out);
        }
    }

    fn on_pubrec(&mut self, ack: PubAck, now: UnixMillis, out: &mut Vec<Action>) {
        let id = ack.packet_id;
        match self.inflight.iter().position(|f| f.packet_id == id.get() && f.state != Awaiting::Ack) {
            Some(i) if ack.reason_code.is_error() => {
                // An error PUBREC ends the exchange [MQTT-4.3.3-?]; free the id.
                // `remove`, not `swap_remove`: the window stays in send order, which
                // is the order a resumed session resends in [MQTT-4.6.0-1].
                let refused = self.inflight.remove(i);
                self.leave_inbox(&refused.queued, out);
                self.pump(now, out);
            }
            Some(i) => {
                self.inflight[i].state = Awaiting::Complete;
                self.note_progress(&self.inflight[i].queued, Progress::Released(id.get()), out);
                out.push(Action::Send(Packet::PubRel(PubAck::new(id))));
            }
            None => {
                let mut rel = PubAck::new(id);
                if self.v5() {
                    rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                    rel.properties =
                        self.reason_properties(rel.reason_code, "PUBREC for a packet identifier not sent");
                }
                out.push(Action::Send(Packet::PubRel(rel)));
            }
        }
    }

    fn on_pubrel(&mut self, ack: PubAck, out: &mut Vec<Action>) {
        let mut comp = PubAck::new(ack.packet_id);
        match self.inbound_qos2.iter().position(|id| *id == ack.packet_id) {
            Some(i) => {
                self.inbound_qos2.swap_remove(i);
            }
            None if self.v5() => {
                comp.reason_code = ReasonCode::PacketIdentifierNotFound;
                comp.properties =
                    self.reason_properties(comp.reason_code, "PUBREL for a packet identifier not received");
            }
            None => {}
        }
        out.push(Action::Send(Packet::PubComp(comp)));
    }

    fn on_pubcomp(&mut self, ack: PubAck, now: UnixMillis, out: &mut Vec<Action>) {
        let id = ack.packet_id.get();
        if let Some(i) = self.inflight.iter().position(|f| f.packet_id == id && f.state == Awaiting::Complete)
        {
            // `remove`, not `swap_remove`: the window stays in send order, which
            // is the order a resumed session resends in [MQTT-4.6.0-1].
            let done = self.inflight.remove(i);
            acknowledged(&done.queued, out);
            self.leave_inbox(&done.queued, out);
            self.pump(now, out);
        }
    }

    fn on_subscribe(&mut self, subscribe: Subscribe, now: UnixMillis, out: &mut Vec<Action>) {
        let identifier = subscribe.properties.subscription_identifiers().next();
        if identifier.is_some() && !self.limits.subscription_identifiers {
            return out.push(Action::Close(Close::error(
                ReasonCode::SubscriptionIdentifiersNotSupported,
                "subscription identifiers are not available on this server",
            )));
        }
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut accepted = Vec::new();
        let mut requests = Vec::new();
        for (raw, options) in subscribe.filters {
            // A copy: subscriptions outlive the read buffer they arrived in.
            let filter = match TopicFilter::new(ByteString::from(&*raw)) {
                Ok(filter) if filter.share_group().is_some() && !self.limits.shared_subscriptions => {
                    codes.push(ReasonCode::SharedSubscriptionsNotSupported);
                    continue;
                }
                Ok(filter) if filter.has_wildcards() && !self.limits.wildcard_subscriptions => {
                    codes.push(ReasonCode::WildcardSubscriptionsNotSupported);
                    continue;
                }
                // The per-device topic is its own device's alone.
                Ok(filter) if filter.push_client().is_some_and(|c| c != self.key.client.as_str()) => {
                    codes.push(ReasonCode::NotAuthorized);
                    continue;
                }
                // The access rules (a device's own topic is always its own).
                Ok(filter)
                    if filter.push_client().is_none()
                        && !self.allowed(crate::acl::Access::Subscribe, filter.match_filter()) =>
                {
                    out.push(Action::Denied(crate::acl::Access::Subscribe));
                    codes.push(ReasonCode::NotAuthorized);
                    continue;
                }
                Ok(filter) => filter,
                Err(_) => {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            // A subscription asking for more than the maximum QoS is
            // granted the maximum (§3.9.3).
            let options = SubscriptionOptions { qos: options.qos.min(self.limits.maximum_qos), ..options };
            let local = LocalSubscription {
                qos: options.qos,
                no_local: options.no_local,
                retain_as_published: options.retain_as_published,
                identifier,
            };
            let existed = self.subscriptions.iter().any(|(f, _)| *f == filter);
            if !existed && self.subscriptions.len() >= self.limits.max_subscriptions {
                codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let lookup = match options.retain_handling {
                RetainHandling::SendAtSubscribe => RetainedLookup::Send,
                RetainHandling::SendAtSubscribeIfNew if !existed => RetainedLookup::Send,
                _ => RetainedLookup::Skip,
            };
            match self.subscriptions.iter_mut().find(|(f, _)| *f == filter) {
                Some(entry) => entry.1 = local,
                None => self.subscriptions.push((filter.clone(), local)),
            }
            out.push(Action::AddLocal(filter.clone(), local));
            accepted.push((codes.len(), filter.clone(), local));
            codes.push(granted(options.qos));
            let subscription = Subscription {
                filter,
                qos: options.qos,
                no_local: options.no_local,
                retain_as_published: options.retain_as_published,
                retain_handling: retain_handling_value(options.retain_handling),
                identifier,
            };
            requests.push((subscription, lookup));
        }
        let request = self.next_request();
        let packet_id = subscribe.packet_id;
        self.awaiting(request, PendingReply::Subscribe { packet_id, codes, accepted }, now);
        out.push(Action::Uplink(Uplink::Subscribe {
            request,
            session: SessionKey::clone(&self.key),
            epoch: self.epoch,
            subscriptions: requests,
        }));
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe, now: UnixMillis, out: &mut Vec<Action>) {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        let mut filters = Vec::new();
        for raw in unsubscribe.filters {
            let Ok(filter) = TopicFilter::new(raw) else {
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            };
            match self.subscriptions.iter().position(|(f, _)| *f == filter) {
                Some(i) => {
                    self.subscriptions.swap_remove(i);
                    out.push(Action::RemoveLocal(filter.clone()));
                    codes.push(ReasonCode::Success);
                }
                None => codes.push(ReasonCode::NoSubscriptionExisted),
            }
            filters.push(filter);
        }
        let request = self.next_request();
        let packet_id = unsubscribe.packet_id;
        self.awaiting(request, PendingReply::Unsubscribe { packet_id, codes }, now);
        out.push(Action::Uplink(Uplink::Unsubscribe {
            request,
            session: SessionKey::clone(&self.key),
            epoch: self.epoch,
            filters,
        }));
    }

    fn on_disconnect(&mut self, disconnect: Disconnect, out: &mut Vec<Action>) {
        if let Some(expiry) = disconnect.properties.session_expiry_interval() {
            if self.expiry_seconds == 0 && expiry != 0 {
                return out.push(Action::Close(Close::error(
                    ReasonCode::ProtocolError,
                    "[MQTT-3.14.2-2] session expiry cannot change from 0 at DISCONNECT",
                )));
            }
            self.expiry_seconds = expiry.min(self.limits.max_session_expiry_seconds);
        }
        out.push(Action::Close(Close {
            reason: disconnect.reason_code,
            detail: "",
            notify: false,
            publish_will: disconnect.reason_code == ReasonCode::DisconnectWithWill,
        }));
    }

    /// A push-API message was cancelled: its copies waiting behind the
    /// window (not written to the device yet) are dropped and counted.
    /// Copies written already are delivered and stay in flight.
    pub fn retract(&mut self, message: herald_core::MessageId, out: &mut Vec<Action>) {
        let before = self.waiting.len();
        self.waiting.retain(|(queued, _)| queued.message.id != message || !is_push(queued));
        for _ in self.waiting.len()..before {
            out.push(Action::Push(PushEvent::Cancelled { message }));
        }
    }

    /// Handles the router's reply to one of this session's requests.
    pub fn on_reply(&mut self, reply: Downlink, now: UnixMillis, out: &mut Vec<Action>) {
        let request = match &reply {
            Downlink::Published { request, .. }
            | Downlink::Subscribed { request, .. }
            | Downlink::Unsubscribed { request, .. }
            | Downlink::Claimed { request, .. } => *request,
            Downlink::Revoked { .. }
            | Downlink::ApiKeys { .. }
            | Downlink::Retract { .. }
            | Downlink::Deliver(_)
            | Downlink::DeliverShared { .. }
            | Downlink::Handover { .. }
            | Downlink::Pushed { .. }
            | Downlink::DirectoryDone { .. }
            | Downlink::DeliverPush { .. }
            | Downlink::Reported { .. }
            | Downlink::Released { .. } => return,
        };
        let Some(pending) = self.awaiting_router.iter_mut().find(|p| p.request == request) else { return };
        pending.reply = Some(reply);
        while self.awaiting_router.front().is_some_and(|p| p.reply.is_some()) {
            let Some(Pending { kind, reply: Some(reply), .. }) = self.awaiting_router.pop_front() else {
                break;
            };
            self.complete(kind, reply, now, out);
        }
    }

    fn awaiting(&mut self, request: RequestId, kind: PendingReply, now: UnixMillis) {
        self.awaiting_router.push_back(Pending { request, kind, reply: None, since: now });
    }

    /// When the oldest request still waiting for the router was sent.
    pub fn oldest_awaiting(&self) -> Option<UnixMillis> {
        self.awaiting_router.front().map(|p| p.since)
    }

    /// Answers the requests the router has not answered within `timeout_ms`
    /// of being sent: no router could take them (it lost its quorum, or a
    /// partition cut this gateway off). The client gets an explicit error
    /// (v5: PUBACK/PUBREC, SUBACK, UNSUBACK 0x80 with a reason string;
    /// 3.1.1 has no negative PUBACK or UNSUBACK, so its connection closes),
    /// never a silent wait. Returns the requests given up: they must not be
    /// sent to a router later.
    pub fn expire_requests(
        &mut self,
        now: UnixMillis,
        timeout_ms: u64,
        out: &mut Vec<Action>,
    ) -> Vec<RequestId> {
        let mut given_up = Vec::new();
        while let Some(front) = self.awaiting_router.front() {
            if front.reply.is_none() && now.0 < front.since.0.saturating_add(timeout_ms) {
                break;
            }
            let Some(Pending { request, kind, reply, .. }) = self.awaiting_router.pop_front() else { break };
            match reply {
                Some(reply) => self.complete(kind, reply, now, out),
                None => {
                    given_up.push(request);
                    self.give_up(kind, out);
                }
            }
        }
        given_up
    }

    /// Undoes the subscriptions a SUBACK will report as failed with `code`.
    fn undo_subscriptions(
        &mut self,
        accepted: &[(usize, TopicFilter, LocalSubscription)],
        code: ReasonCode,
        codes: &mut [ReasonCode],
        out: &mut Vec<Action>,
    ) {
        for (i, filter, _) in accepted {
            codes[*i] = code;
            self.subscriptions.retain(|(f, _)| f != filter);
            out.push(Action::RemoveLocal(filter.clone()));
        }
    }

    fn give_up(&mut self, kind: PendingReply, out: &mut Vec<Action>) {
        const DETAIL: &str = "no router took this in time (no quorum, or cut off from it); send it again";
        let failed = ReasonCode::UnspecifiedError;
        if !self.v5() && !matches!(kind, PendingReply::Subscribe { .. }) {
            return out.push(Action::Close(Close::error(ReasonCode::ServerUnavailable, DETAIL)));
        }
        match kind {
            PendingReply::Publish { packet_id, qos } => {
                let ack = PubAck {
                    packet_id,
                    reason_code: failed,
                    properties: self.reason_properties(failed, DETAIL),
                };
                out.push(Action::Send(if qos == QoS::ExactlyOnce {
                    Packet::PubRec(ack)
                } else {
                    Packet::PubAck(ack)
                }));
            }
            PendingReply::Subscribe { packet_id, mut codes, accepted } => {
                self.undo_subscriptions(&accepted, failed, &mut codes, out);
                let properties = self.reason_properties(failed, DETAIL);
                out.push(Action::Send(Packet::SubAck(SubAck { packet_id, properties, reason_codes: codes })));
            }
            PendingReply::Unsubscribe { packet_id, codes } => {
                let reason_codes = codes.iter().map(|_| failed).collect();
                let properties = self.reason_properties(failed, DETAIL);
                out.push(Action::Send(Packet::UnsubAck(UnsubAck { packet_id, properties, reason_codes })));
            }
        }
    }

    fn complete(&mut self, pending: PendingReply, reply: Downlink, now: UnixMillis, out: &mut Vec<Action>) {
        match (pending, reply) {
            (PendingReply::Publish { packet_id, qos }, Downlink::Published { result, .. }) => {
                self.on_published(packet_id, qos, result, out)
            }
            (
                PendingReply::Subscribe { packet_id, mut codes, accepted },
                Downlink::Subscribed { result, .. },
            ) => {
                let retained = match result {
                    Ok(retained) => retained,
                    Err(code) => {
                        self.undo_subscriptions(&accepted, code.reason_code(), &mut codes, out);
                        Vec::new()
                    }
                };
                let properties = self.first_error_properties(&codes);
                out.push(Action::Send(Packet::SubAck(SubAck { packet_id, properties, reason_codes: codes })));
                for (index, message) in retained {
                    let Some((_, _, local)) = accepted.get(index) else { continue };
                    let queued = QueuedMessage {
                        qos: message.qos.min(local.qos),
                        subscription_ids: local.identifier.into_iter().collect(),
                        message,
                        progress: Progress::Unsent,
                        shared: None,
                    };
                    self.deliver_with_retain(queued, true, Bound::Bounded, now, out);
                }
            }
            (PendingReply::Unsubscribe { packet_id, codes }, Downlink::Unsubscribed { .. }) => {
                let properties = self.first_error_properties(&codes);
                let reason_codes = if self.v5() { codes } else { Vec::new() };
                out.push(Action::Send(Packet::UnsubAck(UnsubAck { packet_id, properties, reason_codes })));
            }
            _ => {}
        }
    }

    fn on_published(
        &mut self,
        packet_id: NonZeroU16,
        qos: QoS,
        result: Result<bool, herald_core::ErrorCode>,
        out: &mut Vec<Action>,
    ) {
        let code = match result {
            Ok(true) => ReasonCode::Success,
            Ok(false) if self.v5() => ReasonCode::NoMatchingSubscribers,
            Ok(false) => ReasonCode::Success,
            Err(herald_core::ErrorCode::StaleEpoch) => {
                return out.push(Action::Close(Close {
                    publish_will: false,
                    ..Close::error(ReasonCode::SessionTakenOver, "session taken over")
                }));
            }
            Err(error) if !self.v5() => {
                return out.push(Action::Close(Close::error(error.reason_code(), "publish refused")));
            }
            Err(error) => error.reason_code(),
        };
        let ack = PubAck { packet_id, reason_code: code, properties: self.reason_properties(code, "") };
        if qos == QoS::ExactlyOnce {
            if !code.is_error() {
                self.inbound_qos2.push(packet_id);
            }
            out.push(Action::Send(Packet::PubRec(ack)));
        } else {
            out.push(Action::Send(Packet::PubAck(ack)));
        }
    }

    /// Delivers a message that matched one of this session's subscriptions.
    pub fn deliver(&mut self, queued: QueuedMessage, now: UnixMillis, out: &mut Vec<Action>) {
        self.deliver_with_retain(queued, false, Bound::Bounded, now, out);
    }

    fn deliver_with_retain(
        &mut self,
        queued: QueuedMessage,
        from_store: bool,
        bound: Bound,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        if queued.message.is_expired(now) {
            self.counters.dropped_expired += 1;
            return self.leave_inbox(&queued, out);
        }
        if queued.qos == QoS::AtMostOnce {
            return self.send_publish(queued, None, from_store, now, out);
        }
        if self.inflight.len() >= self.window() || !self.waiting.is_empty() {
            if bound == Bound::Bounded && self.waiting.len() >= self.limits.max_queued_messages {
                self.counters.dropped_queue_full += 1;
                return;
            }
            // A push with a collapse key replaces older waiting copies
            // with its key (or is replaced by a newer one waiting).
            if is_push(&queued)
                && let Some(key) = herald_proto::seam::collapse_key(&queued.message)
            {
                let same = |q: &QueuedMessage| {
                    is_push(q) && herald_proto::seam::collapse_key(&q.message) == Some(key)
                };
                let created = queued.message.created_at;
                if self.waiting.iter().any(|(q, _)| same(q) && q.message.created_at > created) {
                    return out.push(Action::Push(PushEvent::Replaced { message: queued.message.id }));
                }
                let mut replaced = Vec::new();
                self.waiting.retain(|(q, _)| {
                    let older = same(q);
                    if older {
                        replaced.push(q.message.id);
                    }
                    !older
                });
                out.extend(replaced.into_iter().map(|message| Action::Push(PushEvent::Replaced { message })));
            }
            return self.waiting.push_back((queued, from_store));
        }
        let packet_id = self.allocate_packet_id();
        self.send_publish(queued, Some(packet_id), from_store, now, out);
    }

    fn window(&self) -> usize {
        usize::from(self.client_receive_maximum)
    }

    fn allocate_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// Sends waiting deliveries while the in-flight window has room.
    fn pump(&mut self, now: UnixMillis, out: &mut Vec<Action>) {
        while self.inflight.len() < self.window() {
            let Some((queued, from_store)) = self.waiting.pop_front() else { return };
            if queued.message.is_expired(now) {
                self.counters.dropped_expired += 1;
                self.leave_inbox(&queued, out);
                continue;
            }
            let packet_id = self.allocate_packet_id();
            self.send_publish(queued, Some(packet_id), from_store, now, out);
        }
    }

    fn send_publish(
        &mut self,
        queued: QueuedMessage,
        packet_id: Option<u16>,
        from_store: bool,
        now: UnixMillis,
        out: &mut Vec<Action>,
    ) {
        let message = &queued.message;
        let retain = from_store || (message.retain && self.retain_as_published(&queued));
        let alias = self.choose_alias(message.topic.as_byte_string());
        let mut properties = self.publish_properties(&queued, now);
        let topic = match alias {
            Alias::None => message.topic.as_byte_string().clone(),
            Alias::Known(index) => {
                properties.push(Property::TopicAlias(self.outbound_aliases[index].1));
                ByteString::new()
            }
            Alias::New(alias) => {
                properties.push(Property::TopicAlias(alias));
                message.topic.as_byte_string().clone()
            }
        };
        let packet = Packet::Publish(Publish {
            dup: matches!(queued.progress, Progress::Sent(_) | Progress::MaybeSent) && packet_id.is_some(),
            qos: queued.qos,
            retain,
            topic,
            packet_id: packet_id.and_then(NonZeroU16::new),
            payload: message.payload.clone(),
            properties,
        });
        if encoded_len(&packet, self.version) > self.client_max_packet as usize {
            // [MQTT-3.1.2-25]: never send more than the client's maximum
            // packet size; the message is dropped for this client.
            self.counters.dropped_too_large += 1;
            self.leave_inbox(&queued, out);
            if packet_id.is_some() {
                self.pump(now, out);
            }
            return;
        }
        // The alias takes effect only once the packet carrying it is sent.
        self.commit_alias(alias, queued.message.topic.as_byte_string());
        if is_push(&queued) && queued.progress == Progress::Unsent {
            let message = queued.message.id;
            let from_offline = self.stored_push.remove(&message);
            out.push(Action::Push(PushEvent::Delivered { message, from_offline }));
        }
        if let Some(packet_id) = packet_id {
            let state = if queued.qos == QoS::ExactlyOnce { Awaiting::Received } else { Awaiting::Ack };
            if queued.progress != Progress::Sent(packet_id) {
                self.note_progress(&queued, Progress::Sent(packet_id), out);
            }
            self.inflight.push(Inflight { packet_id, state, queued });
        }
        out.push(Action::Send(packet));
    }

    /// Picks the outbound topic alias for `topic` (§3.3.2.3.4): the one it
    /// already has, else a free one, else the least recently used one,
    /// reassigned. v3.1.1 clients and clients without aliases get none.
    fn choose_alias(&self, topic: &ByteString) -> Alias {
        if self.outbound_alias_limit == 0 || !self.v5() {
            return Alias::None;
        }
        if let Some(index) = self.outbound_aliases.iter().position(|(t, _)| t == topic) {
            return Alias::Known(index);
        }
        let used = self.outbound_aliases.len();
        if used < usize::from(self.outbound_alias_limit) {
            Alias::New(u16::try_from(used + 1).unwrap_or(u16::MAX))
        } else {
            Alias::New(self.outbound_aliases[0].1)
        }
    }

    fn commit_alias(&mut self, alias: Alias, topic: &ByteString) {
        let entry = match alias {
            Alias::None => return,
            Alias::Known(index) => self.outbound_aliases.remove(index),
            Alias::New(alias) => {
                if let Some(index) = self.outbound_aliases.iter().position(|(_, a)| *a == alias) {
                    self.outbound_aliases.remove(index);
                }
                // A copy: the alias table outlives the message.
                (ByteString::from(&**topic), alias)
            }
        };
        self.outbound_aliases.push(entry);
    }

    fn retain_as_published(&self, queued: &QueuedMessage) -> bool {
        // Retain-as-published is per subscription; a message that matched a
        // subscription with it keeps the flag.
        self.subscriptions
            .iter()
            .any(|(filter, local)| local.retain_as_published && filter.matches(&queued.message.topic))
    }

    fn publish_properties(&self, queued: &QueuedMessage, now: UnixMillis) -> Properties {
        let mut properties = Properties::default();
        if !self.v5() {
            return properties;
        }
        let message = &queued.message;
        if let Some(p) = message.properties.as_deref() {
            if let Some(format) = p.payload_format {
                properties.push(Property::PayloadFormatIndicator(format));
            }
            if let Some(content_type) = &p.content_type {
                properties.push(Property::ContentType(content_type.clone()));
            }
            if let Some(topic) = &p.response_topic {
                properties.push(Property::ResponseTopic(topic.clone()));
            }
            if let Some(data) = &p.correlation_data {
                properties.push(Property::CorrelationData(data.clone()));
            }
            for (key, value) in &p.user_properties {
                properties.push(Property::UserProperty(key.clone(), value.clone()));
            }
        }
        if self.limits.trace_user_property
            && let Some(trace) = message.trace
        {
            properties.push(Property::UserProperty("traceparent".into(), trace.to_string().into()));
        }
        if let Some(expires_at) = message.expires_at {
            // The remaining lifetime, decremented by the time held [MQTT-3.3.2-6].
            properties.push(Property::MessageExpiryInterval(now.seconds_until(expires_at).max(1)));
        }
        for id in &queued.subscription_ids {
            properties.push(Property::SubscriptionIdentifier(*id));
        }
        properties
    }

    /// Returns whether a message from `origin` may be delivered under
    /// `subscription` (the no-local option).
    pub fn accepts_from(&self, subscription: &LocalSubscription, origin: Option<&ClientId>) -> bool {
        !(subscription.no_local && origin == Some(&self.key.client))
    }

    /// Returns how many more QoS 1/2 deliveries the client accepts right
    /// now: none while some wait behind its window.
    pub fn free_window(&self) -> u32 {
        if !self.waiting.is_empty() {
            return 0;
        }
        u32::try_from(self.window().saturating_sub(self.inflight.len())).unwrap_or(u32::MAX)
    }

    /// Takes the deliveries that came through shared subscriptions and are
    /// not acknowledged (in flight or waiting), in order: when the member
    /// leaves they go back to their group, to another member, without DUP
    /// (that member never saw them).
    pub fn take_shared(&mut self) -> Vec<(TopicFilter, Arc<Message>)> {
        let unacknowledged =
            |entry: &mut Inflight| entry.queued.shared.is_some() && entry.state != Awaiting::Complete;
        let mut taken: Vec<_> = self
            .inflight
            .extract_if(.., unacknowledged)
            .filter_map(|entry| Some((entry.queued.shared?, entry.queued.message)))
            .collect();
        for (queued, retained) in std::mem::take(&mut self.waiting) {
            match queued.shared {
                Some(filter) => taken.push((filter, queued.message)),
                None => self.waiting.push_back((queued, retained)),
            }
        }
        taken
    }

    /// Returns true when the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.expiry_seconds > 0
    }

    /// Ends the session's connection: returns the release for the router,
    /// carrying what was not acknowledged when the session outlives it.
    pub fn release(&mut self, publish_will: bool) -> Release {
        let mut pending = Vec::new();
        if self.expiry_seconds > 0 {
            for f in self.inflight.drain(..) {
                let progress = match f.state {
                    Awaiting::Ack | Awaiting::Received => Progress::Sent(f.packet_id),
                    // The client has it; only the PUBREL is outstanding.
                    Awaiting::Complete => Progress::Released(f.packet_id),
                };
                pending.push(QueuedMessage { progress, ..f.queued });
            }
            pending.extend(self.waiting.drain(..).map(|(queued, _)| queued));
        }
        Release {
            request: self.next_request(),
            session: SessionKey::clone(&self.key),
            epoch: self.epoch,
            expiry_seconds: self.expiry_seconds,
            publish_will,
            pending,
        }
    }

    /// Returns the packets to send when closing with `close`: a DISCONNECT
    /// for v5 clients when the server ends the connection.
    pub fn disconnect_packet(&self, close: &Close) -> Option<Packet> {
        (self.v5() && close.notify).then(|| {
            let mut reason_code = close.reason;
            let mut properties = self.reason_properties(close.reason, close.detail);
            if let (ReasonCode::ServerShuttingDown, Some(reference)) =
                (reason_code, &self.limits.server_reference)
            {
                // Shutting down with somewhere to go: send the client there,
                // for now (0x9C) or for good (0x9D).
                reason_code = if self.limits.server_moved {
                    ReasonCode::ServerMoved
                } else {
                    ReasonCode::UseAnotherServer
                };
                properties.push(Property::ServerReference(ByteString::from(reference.as_str())));
            }
            Packet::Disconnect(Disconnect { reason_code, properties })
        })
    }

    /// Builds the CONNACK for an accepted connection.
    pub fn connack(accepted: &Accepted, session_present: bool) -> Packet {
        Packet::ConnAck(ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties: accepted.connack_properties.clone(),
        })
    }
}

/// Returns the properties a PUBLISH (or a will) carries on to its
/// subscribers (§3.3.2.3), user properties in order.
pub(crate) fn forwarded_properties(p: &Properties) -> MessageProperties {
    MessageProperties {
        payload_format: p.payload_format_indicator(),
        content_type: p.content_type().map(ByteString::from),
        response_topic: p.response_topic().map(ByteString::from),
        correlation_data: p.correlation_data().cloned(),
        user_properties: p
            .user_properties()
            .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
            .collect(),
    }
}

fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQos1,
        QoS::ExactlyOnce => ReasonCode::GrantedQos2,
    }
}

fn retain_handling_value(handling: RetainHandling) -> u8 {
    match handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendAtSubscribeIfNew => 1,
        RetainHandling::DoNotSend => 2,
    }
}

#[path = "session_reauth.rs"]
mod reauth;

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
