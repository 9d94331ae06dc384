//! Push-API sends to devices by client id (ADR 0017).
//!
//! A device is found through the session registry, never through the
//! route table: its per-device topic `$push/{client id}` has no route
//! entry. Online, its copy goes to the gateway holding its session, whose
//! local index finds the connection subscribed to the topic; offline with a
//! persistent session subscribed to it, the copy joins the session's queue
//! (durable before the reply, like any queued message).
//!
//! In a router cluster the registry shards' owners know where transient
//! sessions are (ADR 0033): the push comes with their answers
//! (`located`). A persistent session is found in this router's records,
//! which hold its inbox, whatever the owner said.

use super::{Effect, RouterState};
use crate::owner::{Located, Locations};
use herald_core::directory::Alias;
use herald_core::{AppId, ClientId, SessionKey, Topic, UnixMillis};
use herald_proto::Message;
use herald_proto::seam::{Audience, Downlink, Push, PushOutcome, PushReport};
use std::collections::HashSet;
use std::sync::Arc;

impl RouterState {
    /// Routes `push` at `now`: what happened per device, in audience order.
    pub(super) fn push(
        &mut self,
        push: Push,
        located: Option<&Locations>,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) -> PushReport {
        let Push { message, audience, store_offline, .. } = push;
        let mut report = PushReport::default();
        let devices = match audience {
            Audience::Devices(devices) => devices,
            Audience::Aliases(aliases) => self.alias_devices(&message.app, aliases, &mut report),
            Audience::Tags(_) | Audience::All if message.is_expired(now) => {
                self.counters.dropped_expired += 1;
                return report;
            }
            fanned @ (Audience::Tags(_) | Audience::All) => {
                self.counters.messages_routed += 1;
                return self.fan_out(message, fanned, store_offline, located, out);
            }
        };
        if message.is_expired(now) {
            self.counters.dropped_expired += 1;
            report.devices = devices.into_iter().map(|d| (d, PushOutcome::Unreachable)).collect();
            return report;
        }
        self.counters.messages_routed += 1;
        // Copies share the payload; only a stored one needs it compacted.
        let template = if store_offline { Arc::new(message.compacted()) } else { message };
        report.devices.reserve(devices.len());
        for device in devices {
            let copy = Arc::new(Message { topic: Topic::push(&device), ..Message::clone(&template) });
            let key = SessionKey::new(copy.app.clone(), device);
            let owner_says = self.owner_says(&key, located);
            let record = self.sessions.get(&key);
            let outcome = match (owner_says, record) {
                (Some(Located::Online { gateway, .. }), _) => {
                    out.push((*gateway, Downlink::Deliver(copy)));
                    PushOutcome::Online
                }
                (Some(_), _) => PushOutcome::Unreachable,
                (None, Some(record)) => match record.owner {
                    Some(gateway) if store_offline && record.is_persistent() => {
                        // Into its inbox too: kept until the device
                        // acknowledges it, whatever happens to its gateway.
                        self.keep_for_online(&key, &copy);
                        out.push((gateway, Downlink::Deliver(copy)));
                        PushOutcome::Online
                    }
                    Some(gateway) => {
                        out.push((gateway, Downlink::Deliver(copy)));
                        PushOutcome::Online
                    }
                    None if store_offline && record.is_persistent() => self.store(&key, copy),
                    None => PushOutcome::Unreachable,
                },
                (None, None) => PushOutcome::Unreachable,
            };
            match outcome {
                PushOutcome::Online => report.online += 1,
                PushOutcome::Stored => report.stored += 1,
                PushOutcome::Unreachable => {}
            }
            report.devices.push((key.client, outcome));
        }
        report
    }

    /// Returns the devices `aliases` name, each once, in alias order (then
    /// id order); aliases naming none go to `report`.
    fn alias_devices(&self, app: &AppId, aliases: Vec<Alias>, report: &mut PushReport) -> Vec<ClientId> {
        let mut seen = HashSet::new();
        let mut devices = Vec::new();
        for alias in aliases {
            let mut any = false;
            for device in self.directory_of(app).into_iter().flat_map(|d| d.alias(&alias)) {
                any = true;
                if seen.insert(device.clone()) {
                    devices.push(device.clone());
                }
            }
            if !any {
                report.unknown_aliases.push(alias);
            }
        }
        devices
    }

    /// Puts `copy` in the inbox of the online session `key` if its
    /// subscriptions take it. Older copies with its collapse key leave the
    /// inbox uncounted: the gateway counts what it replaces.
    fn keep_for_online(&mut self, key: &SessionKey, copy: &Arc<Message>) {
        if herald_proto::seam::collapse_key(copy).is_some() {
            self.remove_queued(key, |q| super::retract::replaced_by(q, copy));
        }
        let kept = copy.clone();
        self.queue_for_persistent_sessions(copy, &mut || kept.clone());
    }

    /// Queues `copy` for the offline session `key` if its subscriptions take
    /// it (only the device itself can subscribe to its topic).
    fn store(&mut self, key: &SessionKey, copy: Arc<Message>) -> PushOutcome {
        let id = copy.id;
        let kept = copy.clone();
        self.collapse_in_queue(key, &copy);
        self.queue_for_persistent_sessions(&copy, &mut || kept.clone());
        let queued =
            self.sessions.get(key).is_some_and(|r| r.queue().last().is_some_and(|q| q.message.id == id));
        if queued { PushOutcome::Stored } else { PushOutcome::Unreachable }
    }
}
