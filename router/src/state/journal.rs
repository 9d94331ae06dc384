//! The durable part of the state as facts (ADR 0013): recorded as the
//! state changes, taken by the shell after each batch and committed before
//! the batch's replies go out; and the way back, from a durable image to
//! a state, after a restart.

use super::RouterState;
use herald_core::directory::DeviceEntry;
use herald_core::{AppId, NodeId, SessionKey, Topic, TopicFilter, UnixMillis};
use herald_proto::Message;
use herald_proto::journal::{DirectoryDevice, DurableImage, DurableSession, Fact, FanoutLog, GroupQueue};
use herald_proto::seam::FanoutEntry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The durable state the journal describes, kept current by applying its
/// facts in order: what the Raft state machine holds and snapshots.
#[derive(Debug, Clone, Default)]
pub struct DurableState {
    retained: HashMap<(AppId, Topic), Arc<Message>>,
    sessions: HashMap<SessionKey, DurableSession>,
    groups: HashMap<(AppId, TopicFilter), Vec<Arc<Message>>>,
    gateways: BTreeSet<NodeId>,
    devices: HashMap<SessionKey, DeviceEntry>,
    fanout: HashMap<AppId, (u64, std::collections::VecDeque<FanoutEntry>)>,
    idempotency: super::idempotency::Keys,
    records: super::status::Records,
    api_keys: super::api_keys::ApiKeyTable,
    users: super::device_users::UserTable,
}

impl DurableState {
    /// Returns the state an image describes.
    pub fn from_image(image: DurableImage) -> DurableState {
        let mut state = DurableState::default();
        for message in image.retained {
            state.apply(Fact::Retained(message));
        }
        for session in image.sessions {
            state.apply(Fact::SessionPut(Box::new(session)));
        }
        for group in image.groups {
            state.apply(Fact::GroupQueue(group));
        }
        state.gateways.extend(image.gateways);
        for device in image.devices {
            state.apply(Fact::DevicePut(Box::new(device)));
        }
        for log in image.fanout {
            state.fanout.insert(log.app, (log.next_seq, log.entries.into()));
        }
        for send in image.idempotent {
            state.idempotency.keep(send);
        }
        state.records.restore(image.messages, image.report_marks);
        for key in image.api_keys {
            state.api_keys.put(key);
        }
        for user in image.device_users {
            state.users.put(user);
        }
        state
    }

    /// Applies one fact.
    pub fn apply(&mut self, fact: Fact) {
        match fact {
            Fact::Retained(message) if message.payload.is_empty() => {
                self.retained.remove(&(message.app.clone(), message.topic.clone()));
            }
            Fact::Retained(message) => {
                self.retained.insert((message.app.clone(), message.topic.clone()), message);
            }
            Fact::SessionPut(session) => {
                self.sessions.insert(session.session.clone(), *session);
            }
            Fact::SessionMeta(meta) => match self.sessions.get_mut(&meta.session) {
                Some(durable) => {
                    let queue = std::mem::take(&mut durable.queue);
                    *durable = *meta;
                    durable.queue = queue;
                }
                None => {
                    self.sessions.insert(meta.session.clone(), *meta);
                }
            },
            Fact::SessionRemoved(key) => {
                self.sessions.remove(&key);
            }
            Fact::Queued { message, targets } => {
                for target in targets {
                    if let Some(durable) = self.sessions.get_mut(&target.session) {
                        durable.queue.push(target.queued(&message));
                    }
                }
            }
            Fact::Acked(acks) => {
                if let Some(durable) = self.sessions.get_mut(&acks.session) {
                    let ids: std::collections::HashSet<_> = acks.messages.into_iter().collect();
                    durable.queue.retain(|q| !ids.contains(&q.message.id));
                }
            }
            Fact::QueueDropped { session, count } => {
                if let Some(durable) = self.sessions.get_mut(&session) {
                    let count = (count as usize).min(durable.queue.len());
                    durable.queue.drain(..count);
                }
            }
            Fact::GroupQueue(group) if group.messages.is_empty() => {
                self.groups.remove(&(group.app, group.filter));
            }
            Fact::GroupQueue(group) => {
                self.groups.insert((group.app, group.filter), group.messages);
            }
            Fact::GatewayLinked(gateway) => {
                self.gateways.insert(gateway);
            }
            Fact::GatewayGone(gateway) => {
                self.gateways.remove(&gateway);
            }
            Fact::DevicePut(device) => {
                self.devices.insert(device.device, device.entry);
            }
            Fact::DeviceRemoved(key) => {
                self.devices.remove(&key);
            }
            Fact::Fanout(entry) => {
                let (next_seq, entries) = self.fanout.entry(entry.message.app.clone()).or_default();
                super::fanout::Log::append(entries, next_seq, entry);
            }
            Fact::Idempotent(send) => self.idempotency.keep(*send),
            Fact::MessageRecorded(record) => self.records.keep(*record),
            Fact::MessageReport { gateway, origin, batch, deltas } => {
                self.records.report(gateway, origin, batch, &deltas);
            }
            Fact::MessagesForgotten(before) => {
                self.records.forget(before);
            }
            Fact::MessageRetracted { app, message, cancelled, replaced } => {
                self.records.retract(&app, message, cancelled, replaced);
            }
            Fact::FanoutRemoved { app, seq } => {
                if let Some((_, entries)) = self.fanout.get_mut(&app) {
                    entries.retain(|e| e.seq != seq);
                }
            }
            Fact::IdempotencyExpired(before) => {
                self.idempotency.expire(before);
            }
            Fact::FanoutTrimmed { app, through } => {
                if let Some((_, entries)) = self.fanout.get_mut(&app) {
                    while entries.front().is_some_and(|e| e.seq <= through) {
                        entries.pop_front();
                    }
                }
            }
            Fact::ApiKeyPut(key) => self.api_keys.put(*key),
            Fact::ApiKeyRevoked { app, id } => {
                self.api_keys.revoke(&app, &id);
            }
            Fact::DeviceUserPut(user) => self.users.put(*user),
            Fact::DeviceUserRemoved { app, username } => {
                self.users.remove(&app, &username);
            }
        }
    }

    /// Returns the state as an image.
    pub fn image(&self) -> DurableImage {
        let mut image = DurableImage {
            retained: self.retained.values().cloned().collect(),
            sessions: self.sessions.values().cloned().collect(),
            groups: self
                .groups
                .iter()
                .map(|((app, filter), messages)| GroupQueue {
                    app: app.clone(),
                    filter: filter.clone(),
                    messages: messages.clone(),
                })
                .collect(),
            gateways: self.gateways.iter().copied().collect(),
            devices: self
                .devices
                .iter()
                .map(|(device, entry)| DirectoryDevice { device: device.clone(), entry: entry.clone() })
                .collect(),
            fanout: self
                .fanout
                .iter()
                .map(|(app, (next_seq, entries))| FanoutLog {
                    app: app.clone(),
                    next_seq: *next_seq,
                    entries: entries.iter().cloned().collect(),
                })
                .collect(),
            idempotent: self.idempotency.all().cloned().collect(),
            api_keys: self.api_keys.all().cloned().collect(),
            device_users: self.users.all().cloned().collect(),
            ..DurableImage::default()
        };
        self.records.image(&mut image.messages, &mut image.report_marks);
        image
    }

    /// Whether it holds anything a client put there (retained messages,
    /// persistent sessions, shared groups' queues, device directories, API
    /// keys made at run time, device users).
    pub fn holds_data(&self) -> bool {
        !(self.retained.is_empty()
            && self.sessions.is_empty()
            && self.groups.is_empty()
            && self.devices.is_empty()
            && self.fanout.values().all(|(_, entries)| entries.is_empty())
            && self.api_keys.all().next().is_none()
            && self.users.is_empty())
    }

    /// Returns the number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Returns the number of persistent sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether persistent session `key` exists.
    pub fn has_session(&self, key: &SessionKey) -> bool {
        self.sessions.contains_key(key)
    }

    /// The persistent sessions `wanted` picks, each as offline (the
    /// registry shows one online once a gateway holds it), since it went
    /// offline, as far as its record tells.
    pub fn offline_sessions_where(&self, wanted: &dyn Fn(&SessionKey) -> bool) -> Vec<super::RegistryEntry> {
        self.sessions
            .values()
            .filter(|durable| wanted(&durable.session))
            .map(|durable| {
                let expiry_ms = u64::from(durable.expiry_seconds) * 1000;
                let since =
                    durable.expires_at.map_or(UnixMillis(0), |at| UnixMillis(at.0.saturating_sub(expiry_ms)));
                let held = super::Holder {
                    gateway: None,
                    epoch: durable.epoch.unwrap_or_default(),
                    since,
                    expiry_seconds: durable.expiry_seconds,
                };
                super::RegistryEntry { session: durable.session.clone(), held: Some(held) }
            })
            .collect()
    }

    /// The gateways linked and not gone.
    pub fn gateways(&self) -> &BTreeSet<NodeId> {
        &self.gateways
    }
}

impl RouterState {
    /// Notes that persistent session `key` changed: its whole record (or
    /// its removal) goes into the journal.
    pub(super) fn mark_session(&mut self, key: &SessionKey) {
        if !self.dirty_sessions.contains(key) {
            self.dirty_sessions.insert(key.clone());
        }
    }

    /// Notes that persistent session `key` changed but not its inbox: its
    /// record without the inbox goes into the journal.
    pub(super) fn mark_session_meta(&mut self, key: &SessionKey) {
        if !self.cluster_current() {
            // Routers of an earlier version know only whole records.
            return self.mark_session(key);
        }
        if !self.dirty_meta.contains(key) {
            self.dirty_meta.insert(key.clone());
        }
    }

    /// Notes that the queue of group `filter` changed.
    pub(super) fn mark_group(&mut self, app: &AppId, filter: &TopicFilter) {
        self.dirty_groups.insert((app.clone(), filter.clone()));
    }

    /// Takes the facts recorded since the last call: appends and retained
    /// changes in the order they happened, then the records of the
    /// sessions and groups that changed, as they are now.
    pub fn take_journal(&mut self) -> Vec<Fact> {
        let mut facts = std::mem::take(&mut self.journal);
        let whole = std::mem::take(&mut self.dirty_sessions);
        for key in std::mem::take(&mut self.dirty_meta) {
            if whole.contains(&key) {
                continue;
            }
            match self.sessions.get(&key).and_then(|record| record.durable_meta(&key)) {
                Some(session) => facts.push(Fact::SessionMeta(Box::new(session))),
                None => facts.push(Fact::SessionRemoved(key)),
            }
        }
        for key in whole {
            match self.sessions.get(&key).and_then(|record| record.durable(&key)) {
                Some(session) => facts.push(Fact::SessionPut(Box::new(session))),
                None => facts.push(Fact::SessionRemoved(key)),
            }
        }
        for (app, filter) in std::mem::take(&mut self.dirty_groups) {
            let messages = self.group_queue(&app, &filter);
            facts.push(Fact::GroupQueue(GroupQueue { app, filter, messages }));
        }
        facts
    }

    /// Returns the durable part of the state.
    pub fn durable_image(&self) -> DurableImage {
        let mut image = DurableImage::default();
        for store in self.retained.values() {
            store.for_each(|message| image.retained.push(message.clone()));
        }
        for (key, record) in &self.sessions {
            image.sessions.extend(record.durable(key));
        }
        self.image_devices(&mut image.devices);
        self.image_fanout(&mut image.fanout);
        image.idempotent.extend(self.idempotency.all().cloned());
        self.records.image(&mut image.messages, &mut image.report_marks);
        self.image_api_keys(&mut image.api_keys);
        self.image_users(&mut image.device_users);
        for (app, groups) in &self.shared {
            for filter in groups.filters() {
                let messages = self.group_queue(app, filter);
                if !messages.is_empty() {
                    image.groups.push(GroupQueue { app: app.clone(), filter: filter.clone(), messages });
                }
            }
        }
        image
    }

    /// Rebuilds the durable part of the state from `image` after a restart
    /// at `now`. Every session is offline; one that had a connection when
    /// the router stopped lost it then: it ends as if its gateway were gone
    /// (its will after its delay, expiry counted from now).
    pub fn restore(&mut self, image: DurableImage, now: UnixMillis) {
        for message in image.retained {
            self.retained.entry(message.app.clone()).or_default().store(&message);
        }
        // Logs first: a session's cursor points into its app's log.
        self.restore_fanout(image.fanout);
        self.restore_idempotency(image.idempotent);
        self.records.restore(image.messages, image.report_marks);
        for session in image.sessions {
            self.restore_session(session, now);
        }
        for group in image.groups {
            self.restore_group_queue(group);
        }
        self.restore_gateways(image.gateways, now);
        self.restore_devices(image.devices);
        self.restore_api_keys(image.api_keys);
        self.restore_users(image.device_users);
        // Nothing to journal: all of it is durable already.
        self.journal.clear();
        self.dirty_sessions.clear();
        self.dirty_meta.clear();
        self.dirty_groups.clear();
    }
}
