//! The delivery task: applies the router's downlink to local connections.
//!
//! Hot path: one `Deliver` per message per gateway; the local index is
//! read-locked once per batch item and each matching connection gets the
//! shared `Arc<Message>` (no payload copy).

use crate::Shared;
use crate::registry::{GatewayCounters, Inbound};
use herald_proto::seam::{Downlink, QueuedMessage};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Items taken from the downlink per wake-up.
const BATCH: usize = 256;

pub(crate) async fn run(shared: Arc<Shared>, mut downlink: mpsc::Receiver<Downlink>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut targets = Vec::new();
    while downlink.recv_many(&mut batch, BATCH).await > 0 {
        for item in batch.drain(..) {
            match item {
                Downlink::Deliver(message) => {
                    targets.clear();
                    shared.index.read().unwrap_or_else(|p| p.into_inner()).matches(&message, &mut targets);
                    for (conn, sub, qos, subscription_ids) in targets.drain(..) {
                        let Some(handle) = shared.connections.get(conn) else { continue };
                        if sub.no_local && message.origin.as_ref() == Some(&handle.key.client) {
                            continue;
                        }
                        let queued = QueuedMessage {
                            message: message.clone(),
                            qos,
                            subscription_ids,
                            progress: herald_proto::seam::Progress::Unsent,
                        };
                        if handle.push(Inbound::Deliver(queued), shared.config.max_inbox) {
                            GatewayCounters::add(&shared.counters.deliveries, 1);
                        } else {
                            GatewayCounters::add(&shared.counters.dropped_connection_backlog, 1);
                        }
                    }
                }
                Downlink::Revoked { session, epoch } => shared.connections.revoke(&session, epoch),
                Downlink::Handover { session, epoch, pending } => {
                    let count = pending.len() as u64;
                    if !shared.connections.hand_over(&session, epoch, pending) {
                        // The new connection closed before the handover
                        // arrived; its own release returns what it held.
                        GatewayCounters::add(&shared.counters.dropped_connection_backlog, count);
                    }
                }
                reply @ (Downlink::Claimed { .. }
                | Downlink::Subscribed { .. }
                | Downlink::Unsubscribed { .. }
                | Downlink::Published { .. }
                | Downlink::Released { .. }) => {
                    let request = match &reply {
                        Downlink::Claimed { request, .. }
                        | Downlink::Subscribed { request, .. }
                        | Downlink::Unsubscribed { request, .. }
                        | Downlink::Published { request, .. }
                        | Downlink::Released { request } => *request,
                        _ => continue,
                    };
                    if let Some(handle) = shared.connections.by_request(request) {
                        handle.push(Inbound::Reply(reply), usize::MAX);
                    }
                }
            }
        }
    }
}
