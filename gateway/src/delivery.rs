//! The delivery task: applies the router's downlink to local connections.
//!
//! Hot path: one `Deliver` per message per gateway; the local index is
//! read-locked once per batch item and each matching connection gets the
//! shared `Arc<Message>` (no payload copy).

use crate::Shared;
use crate::registry::ConnId;
use crate::registry::{ConnHandle, GatewayCounters, Inbound};
use crate::session::LocalSubscription;
use herald_core::TopicFilter;
use herald_proto::Message;
use herald_proto::seam::{ClaimGrant, Downlink, Progress, QueuedMessage, Uplink};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Items taken from the downlink per wake-up.
const BATCH: usize = 256;

pub(crate) async fn run(shared: Arc<Shared>, mut downlink: mpsc::Receiver<Downlink>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut targets = Vec::new();
    while downlink.recv_many(&mut batch, BATCH).await > 0 {
        // What still waits behind this batch: past a quarter of the
        // downlink, clients' new requests wait (end-to-end credit).
        shared.admission.set_backlog(downlink.len(), downlink.max_capacity());
        for item in batch.drain(..) {
            match item {
                Downlink::Deliver(message) => {
                    let mut traced = Traced::start(&message);
                    let limits = (shared.config.max_inbox, shared.config.max_inbox_bytes);
                    hand_to_matches(
                        &shared.index,
                        &shared.connections,
                        &message,
                        limits,
                        &mut targets,
                        |handed| count(&shared, &mut traced, handed),
                    );
                }
                Downlink::DeliverShared { filter, message } => deliver_shared(&shared, filter, message).await,
                Downlink::DeliverPush { message, devices } => deliver_push(&shared, &message, devices),
                Downlink::Revoked { session, epoch } => shared.connections.revoke(&session, epoch),
                Downlink::ApiKeys { app, keys } => shared.api_keys.replace(app, keys),
                Downlink::Retract { app, message } => {
                    // The devices of the app that receive pushes here.
                    let members = shared.index.read().unwrap_or_else(|p| p.into_inner()).push_members(&app);
                    for (conn, _) in members {
                        if let Some(handle) = shared.connections.get(conn) {
                            handle.push(Inbound::Retract(message), usize::MAX);
                        }
                    }
                }
                Downlink::Handover { session, epoch, pending } => {
                    let count = pending.len() as u64;
                    if !shared.connections.hand_over(&session, epoch, pending) {
                        // The new connection closed before the handover
                        // arrived; its own release returns what it held.
                        GatewayCounters::add(&shared.counters.dropped_connection_backlog, count);
                    }
                }
                reply => {
                    // Every item the router sends unasked is matched above.
                    let Some(request) = reply.request() else { continue };
                    if crate::admission::counted_reply(&reply) {
                        shared.admission.done(1);
                    }
                    if request >> crate::registry::REQUEST_SEQ_BITS == crate::push_api::API_CONNECTION {
                        shared.api.answer(request, reply);
                    } else if let Some(handle) = shared.connections.by_request(request) {
                        if let Downlink::Claimed { result: Ok(grant), .. } = &reply {
                            claimed(&shared, &handle, grant).await;
                        }
                        handle.push(Inbound::Reply(reply), usize::MAX);
                    }
                }
            }
        }
    }
}

/// The local subscriptions a message matches: connection, subscription,
/// granted QoS, subscription identifiers.
pub(crate) type Targets = Vec<(ConnId, LocalSubscription, herald_core::QoS, Vec<u32>)>;

/// Hands `message` to each local connection with a subscription it
/// matches (except its own publisher's no-local ones), within each inbox's
/// `(items, payload bytes)` limits; `handed` learns of each copy whether
/// the inbox took it. The index is locked only while matching.
pub(crate) fn hand_to_matches(
    index: &std::sync::RwLock<crate::registry::LocalIndex>,
    connections: &crate::registry::Connections,
    message: &Arc<Message>,
    (capacity, byte_capacity): (usize, usize),
    targets: &mut Targets,
    mut handed: impl FnMut(bool),
) {
    targets.clear();
    index.read().unwrap_or_else(|p| p.into_inner()).matches(message, targets);
    for (conn, sub, qos, subscription_ids) in targets.drain(..) {
        let Some(handle) = connections.get(conn) else { continue };
        if sub.no_local && message.origin.as_ref() == Some(&handle.key.client) {
            continue;
        }
        let queued = QueuedMessage {
            message: message.clone(),
            qos,
            subscription_ids,
            progress: herald_proto::seam::Progress::Unsent,
            shared: None,
        };
        handed(handle.push_within(Inbound::Deliver(queued), capacity, byte_capacity));
    }
}

/// Gives a tag or broadcast message to local devices, each a copy on its
/// own topic `$push/{client id}` (the payload is shared): the listed
/// devices, or every device of the app subscribed to its topic here.
fn deliver_push(shared: &Shared, message: &Arc<Message>, devices: Option<Vec<herald_core::ClientId>>) {
    let mut traced = Traced::start(message);
    let targets: Vec<(ConnId, LocalSubscription)> = {
        let index = shared.index.read().unwrap_or_else(|p| p.into_inner());
        match devices {
            None => index.push_members(&message.app),
            Some(devices) => devices
                .into_iter()
                .flat_map(|d| {
                    shared.connections.of_session(&herald_core::SessionKey::new(message.app.clone(), d))
                })
                .filter_map(|handle| index.push_member(&message.app, handle.id).map(|sub| (handle.id, sub)))
                .collect(),
        }
    };
    for (conn, sub) in targets {
        let Some(handle) = shared.connections.get(conn) else { continue };
        let topic = herald_core::Topic::push(&handle.key.client);
        let copy = Arc::new(Message { topic, ..Message::clone(message) });
        let queued = QueuedMessage {
            message: copy,
            qos: sub.qos.min(message.qos),
            subscription_ids: sub.identifier.into_iter().collect(),
            progress: Progress::Unsent,
            shared: None,
        };
        hand(shared, &handle, queued, &mut traced);
    }
}

/// Hands `queued` to a connection's inbox, or drops it past the inbox's
/// bounds; counted either way.
fn hand(shared: &Shared, handle: &ConnHandle, queued: QueuedMessage, traced: &mut Traced) {
    let inbox = Inbound::Deliver(queued);
    let handed = handle.push_within(inbox, shared.config.max_inbox, shared.config.max_inbox_bytes);
    count(shared, traced, handed);
}

/// Counts a copy an inbox took (`handed`) or refused.
fn count(shared: &Shared, traced: &mut Traced, handed: bool) {
    let counter =
        if handed { &shared.counters.deliveries } else { &shared.counters.dropped_connection_backlog };
    GatewayCounters::add(counter, 1);
    traced.count(handed);
}

/// The span of a traced message's hand-over to the connections here (for
/// a push, the last of its trace), with how many took it and how many were
/// dropped; nothing for an untraced message.
struct Traced {
    span: Option<tracing::Span>,
    handed: u64,
    dropped: u64,
}

impl Traced {
    fn start(message: &Message) -> Traced {
        let span = message.trace.map(|parent| {
            let span = tracing::info_span!(
                "push.deliver",
                app = %message.app,
                message_id = %message.id,
                devices = tracing::field::Empty,
                dropped = tracing::field::Empty
            );
            herald_proto::trace::set_parent(&span, &parent);
            span
        });
        Traced { span, handed: 0, dropped: 0 }
    }

    fn count(&mut self, handed: bool) {
        if handed {
            self.handed += 1;
        } else {
            self.dropped += 1;
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(span) = &self.span {
            span.record("devices", self.handed).record("dropped", self.dropped);
        }
    }
}

/// Gives a shared group's message to one local member: the one the
/// configured strategy picks if it has room in its receive window, else the
/// next member after it that has (the pull model: busy members are
/// skipped), else the one picked. Members are looked at one by one from the
/// pick, so a message costs one look when members have room, not one per
/// member. With no member left here (they just left), the message goes back
/// to the router for another gateway.
async fn deliver_shared(shared: &Shared, filter: TopicFilter, message: Arc<Message>) {
    let strategy = shared.config.limits.shared_strategy;
    let chosen = {
        let mut index = shared.index.write().unwrap_or_else(|p| p.into_inner());
        index.shared_group(&message.app, &filter).and_then(|group| {
            let (members, topic) = (&group.members, message.topic.as_str());
            let publisher = message.origin.as_ref().map(|c| c.as_str());
            let at =
                group.dispatcher.pick_index(strategy, members.len(), |i| members[i].0, publisher, topic)?;
            let mut first = None;
            for offset in 0..members.len() {
                let (conn, sub) = members[(at + offset) % members.len()];
                let Some(handle) = shared.connections.get(conn) else { continue };
                if handle.free_window() > 0 {
                    return Some((handle, sub));
                }
                first.get_or_insert((handle, sub));
            }
            // With every member busy, the one picked takes it.
            first
        })
    };
    if let Some((handle, sub)) = chosen {
        let queued = QueuedMessage {
            qos: sub.qos.min(message.qos),
            subscription_ids: sub.identifier.into_iter().collect(),
            message: message.clone(),
            progress: Progress::Unsent,
            shared: Some(filter.clone()),
        };
        if handle.push_within(
            Inbound::Deliver(queued),
            shared.config.max_inbox,
            shared.config.max_inbox_bytes,
        ) {
            GatewayCounters::add(&shared.counters.deliveries, 1);
            return;
        }
    }
    if message.qos == herald_core::QoS::AtMostOnce {
        GatewayCounters::add(&shared.counters.dropped_connection_backlog, 1);
        return;
    }
    let _ = shared.uplink.send(Uplink::Redispatch { filter, messages: vec![message] }).await;
}

/// Applies a claim grant where downlink order is kept: the connection holds
/// its epoch before any later `Revoked` or `Handover` is handled, and a
/// resumed session's subscriptions are in the local index before any later
/// `Deliver` is matched (the router routes them to this gateway from the
/// claim on). The session's own `AddLocal`s then find them there.
async fn claimed(shared: &Shared, handle: &ConnHandle, grant: &ClaimGrant) {
    handle.set_epoch(grant.epoch);
    if grant.subscriptions.is_empty() {
        return;
    }
    let app = handle.key.app.clone();
    shared
        .change_index(|index, changes| {
            for s in &grant.subscriptions {
                index.add(&app, &s.filter, handle.id, LocalSubscription::from(s), changes);
            }
        })
        .await;
}
