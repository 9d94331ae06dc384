//! Push-API sends to devices by client id (ADR 0017).
//!
//! A device is found through the session registry, never through the
//! route table: its per-device topic `$push/{client id}` has no route
//! entry. Online, its copy goes to the gateway holding its session, whose
//! local index finds the connection subscribed to the topic; offline with a
//! persistent session subscribed to it, the copy joins the session's queue
//! (durable before the reply, like any queued message).

use super::{Effect, RouterState};
use herald_core::{SessionKey, Topic, UnixMillis};
use herald_proto::Message;
use herald_proto::seam::{Downlink, Push, PushOutcome};
use std::sync::Arc;

impl RouterState {
    /// Routes `push` at `now`: one outcome per device, in order.
    pub(super) fn push(&mut self, push: Push, now: UnixMillis, out: &mut Vec<Effect>) -> Vec<PushOutcome> {
        let Push { message, devices, store_offline, .. } = push;
        if message.is_expired(now) {
            self.counters.dropped_expired += 1;
            return vec![PushOutcome::Unreachable; devices.len()];
        }
        self.counters.messages_routed += 1;
        // Copies share the payload; only a stored one needs it compacted.
        let template = if store_offline { Arc::new(message.compacted()) } else { message };
        let mut outcomes = Vec::with_capacity(devices.len());
        for device in devices {
            let copy = Arc::new(Message { topic: Topic::push(&device), ..Message::clone(&template) });
            let key = SessionKey::new(copy.app.clone(), device);
            let outcome = match self.sessions.get(&key) {
                Some(record) => match record.owner {
                    Some(gateway) => {
                        out.push((gateway, Downlink::Deliver(copy)));
                        PushOutcome::Online
                    }
                    None if store_offline && record.is_persistent() => self.store(&key, copy),
                    None => PushOutcome::Unreachable,
                },
                None => PushOutcome::Unreachable,
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Queues `copy` for the offline session `key` if its subscriptions take
    /// it (only the device itself can subscribe to its topic).
    fn store(&mut self, key: &SessionKey, copy: Arc<Message>) -> PushOutcome {
        let id = copy.id;
        let kept = copy.clone();
        self.queue_for_offline_sessions(&copy, &mut || kept.clone());
        let queued =
            self.sessions.get(key).is_some_and(|r| r.queue().last().is_some_and(|q| q.message.id == id));
        if queued { PushOutcome::Stored } else { PushOutcome::Unreachable }
    }
}
