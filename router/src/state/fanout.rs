//! Tag and broadcast sends (ADR 0018): one entry in the app's fan-out log,
//! never a copy per device.
//!
//! ```text
//!  send(tags | all) ─▶ online devices: one DeliverPush per gateway holding any
//!                  └─▶ fan-out log of the app: one entry (seq, message, audience)
//!  offline session ─▶ its cursor: the first entry it has not had
//!  comes back     ─▶ entries after its cursor, for it, not expired,
//!                    join its queue; cursor = head
//! ```
//!
//! A session's cursor moves to the head of its app's log whenever it goes
//! offline (what was sent before reached it online) and when it is created,
//! so the audience is frozen at send time: a session that was online then,
//! or did not exist, does not get the entry from the log.

use super::sessions::PersistentState;
use super::{Effect, Overflow, RouterConfig, RouterCounters, RouterState};
use crate::owner::{Located, Locations};
use herald_core::{AppId, ClientId, NodeId, QoS, SessionKey, Topic, UnixMillis};
use herald_proto::Message;
use herald_proto::journal::{Fact, FanoutLog};
use herald_proto::seam::{
    Audience, Downlink, FanoutAudience, FanoutEntry, Progress, PushReport, QueuedMessage,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Entries one app's fan-out log keeps at most; past it the oldest go
/// (policy: drop oldest, counted `fanout_dropped`), and a session that had
/// not read them yet misses them (counted `fanout_gaps`).
pub const MAX_FANOUT_ENTRIES: usize = 10_000;

/// One app's fan-out log.
#[derive(Debug, Default)]
pub(super) struct Log {
    next_seq: u64,
    entries: VecDeque<FanoutEntry>,
    /// The last entry dropped to keep the log within its cap, if any: a
    /// session whose cursor is not past it missed entries.
    dropped_through: Option<u64>,
}

impl Log {
    /// The sequence number the next entry gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends `entry` (its seq is the log's next), dropping the oldest past
    /// the cap; returns how many were dropped. Replicas apply the same rule.
    pub(super) fn append(
        entries: &mut VecDeque<FanoutEntry>,
        next_seq: &mut u64,
        entry: FanoutEntry,
    ) -> Option<(u64, u64)> {
        *next_seq = entry.seq.saturating_add(1);
        entries.push_back(entry);
        let mut dropped = None;
        while entries.len() > MAX_FANOUT_ENTRIES {
            if let Some(oldest) = entries.pop_front() {
                let count = dropped.map_or(0, |(n, _)| n);
                dropped = Some((count + 1, oldest.seq));
            }
        }
        dropped
    }
}

impl Log {
    /// The sequence number of the entry of message `id`, looked for among
    /// entries from `from` on, newest first.
    pub(super) fn seq_of(&self, id: herald_core::MessageId, from: u64) -> Option<u64> {
        self.entries.iter().rev().take_while(|e| e.seq >= from).find(|e| e.message.id == id).map(|e| e.seq)
    }
}

impl RouterState {
    /// The sequence number the next entry of `app`'s log gets: the cursor
    /// of a session that has had everything so far.
    pub(super) fn fanout_head(&self, app: &AppId) -> u64 {
        self.fanout.get(app).map_or(0, |log| log.next_seq)
    }

    /// Sends a tag or broadcast message: to online devices through their
    /// gateways, to offline ones through one log entry.
    pub(super) fn fan_out(
        &mut self,
        message: Arc<Message>,
        audience: Audience,
        store_offline: bool,
        located: Option<&Locations>,
        out: &mut Vec<Effect>,
    ) -> PushReport {
        let app = message.app.clone();
        let selected: Option<HashSet<ClientId>> = match &audience {
            Audience::Tags(expr) => Some(self.directory_of(&app).map(|d| d.select(expr)).unwrap_or_default()),
            _ => None,
        };
        // Online sessions to everyone, as the shards' owners counted them.
        let everyone = located.filter(|_| selected.is_none()).and_then(|located| located.everyone.get(&app));
        let mut report = PushReport::default();
        // Online devices, per gateway; offline ones that will read the log.
        let mut online: HashMap<NodeId, Vec<ClientId>> = HashMap::new();
        let push_topic = |client: &ClientId| Topic::push(client);
        let mut count = |key: &SessionKey, holder: Option<NodeId>, record: Option<&super::SessionRecord>| {
            match (holder, record) {
                (Some(gateway), _) => {
                    report.online += 1;
                    online.entry(gateway).or_default().push(key.client.clone());
                }
                (None, Some(record)) => {
                    // QoS 0 is never stored offline.
                    let topic = push_topic(&key.client);
                    let takes = |s: &herald_proto::seam::Subscription| {
                        s.filter.matches(&topic) && s.qos != QoS::AtMostOnce
                    };
                    if store_offline
                        && message.qos != QoS::AtMostOnce
                        && record.subscriptions().iter().any(takes)
                    {
                        report.stored += 1;
                    }
                }
                (None, None) => {}
            }
        };
        match &selected {
            Some(devices) => {
                for device in devices {
                    let key = SessionKey::new(app.clone(), device.clone());
                    let record = self.sessions.get(&key);
                    match self.owner_says(&key, located) {
                        Some(Located::Online { gateway, .. }) => count(&key, Some(*gateway), None),
                        Some(_) => {}
                        None => count(&key, record.and_then(|r| r.owner), record),
                    }
                }
            }
            None => {
                for (key, record) in self.sessions.iter().filter(|(key, _)| key.app == app) {
                    // Online ones are counted by their owners.
                    if everyone.is_none() || record.owner.is_none() {
                        count(key, record.owner, Some(record));
                    }
                }
            }
        }
        for (gateway, sessions) in everyone.into_iter().flatten().filter(|(_, sessions)| **sessions > 0) {
            report.online += sessions;
            online.entry(*gateway).or_default();
        }
        for (gateway, devices) in online {
            let devices = selected.is_some().then_some(devices);
            out.push((gateway, Downlink::DeliverPush { message: message.clone(), devices }));
        }
        if store_offline && message.qos != QoS::AtMostOnce {
            self.collapse_in_log(&message);
            let audience = match selected {
                Some(devices) => FanoutAudience::Devices(Arc::new(devices)),
                None => FanoutAudience::All,
            };
            let log = self.fanout.entry(app).or_default();
            let entry = FanoutEntry { seq: log.next_seq, message: Arc::new(message.compacted()), audience };
            self.journal.push(Fact::Fanout(entry.clone()));
            if let Some((count, last)) = Log::append(&mut log.entries, &mut log.next_seq, entry) {
                log.dropped_through = Some(last);
                self.counters.fanout_dropped += count;
            }
        }
        report
    }

    /// Removes `message`'s entry from `app`'s log (journaled); returns how
    /// many stored copies it held that no session had read yet: exactly the
    /// copies its removal takes back.
    pub(super) fn remove_fanout(&mut self, app: &AppId, message: herald_core::MessageId) -> Option<u64> {
        let log = self.fanout.get_mut(app)?;
        let at = log.entries.iter().position(|e| e.message.id == message)?;
        let entry = log.entries.remove(at)?;
        self.journal.push(Fact::FanoutRemoved { app: app.clone(), seq: entry.seq });
        Some(self.unread(app, &entry))
    }

    /// How many sessions would still read `entry` of `app`'s log: offline,
    /// their cursor not past it, in its audience, subscribed to their topic
    /// at QoS 1 or 2 (what [`catch_up`] would give it to). Sessions that
    /// read it already hold their copy in their queue, or had it.
    fn unread(&self, app: &AppId, entry: &FanoutEntry) -> u64 {
        let reads = |key: &SessionKey, record: &super::SessionRecord| {
            let topic = Topic::push(&key.client);
            record.owner.is_none()
                && record.fanout_cursor().is_some_and(|cursor| cursor <= entry.seq)
                && entry.audience.includes(&key.client)
                && record.subscriptions().iter().any(|s| s.filter.matches(&topic) && s.qos != QoS::AtMostOnce)
        };
        let count = match &entry.audience {
            FanoutAudience::Devices(devices) => devices
                .iter()
                .map(|device| SessionKey::new(app.clone(), device.clone()))
                .filter(|key| self.sessions.get(key).is_some_and(|record| reads(key, record)))
                .count(),
            FanoutAudience::All => {
                self.sessions.iter().filter(|(key, record)| key.app == *app && reads(key, record)).count()
            }
        };
        count as u64
    }

    /// Removes the entries `newer` replaces (same collapse key), counting
    /// their undelivered stored copies as replaced.
    fn collapse_in_log(&mut self, newer: &Message) {
        let Some(key) = super::retract::collapse_key(newer) else { return };
        let older: Vec<herald_core::MessageId> = self
            .fanout
            .get(&newer.app)
            .map(|log| {
                log.entries
                    .iter()
                    .filter(|e| super::retract::collapse_key(&e.message) == Some(key))
                    .map(|e| e.message.id)
                    .collect()
            })
            .unwrap_or_default();
        for id in older {
            // Copies already read into queues are replaced there, when the
            // newer entry is read after them.
            let unread = self.remove_fanout(&newer.app, id).unwrap_or(0);
            self.retracted(&newer.app, id, 0, unread);
        }
    }

    /// Drops entries whose messages expired at `now`, journaling each trim.
    pub(super) fn trim_fanout(&mut self, now: UnixMillis) {
        for (app, log) in &mut self.fanout {
            let mut through = None;
            while log.entries.front().is_some_and(|e| e.message.is_expired(now)) {
                through = log.entries.pop_front().map(|e| e.seq);
            }
            if let Some(through) = through {
                self.journal.push(Fact::FanoutTrimmed { app: app.clone(), through });
            }
        }
    }

    /// Rebuilds the logs from an image.
    pub(super) fn restore_fanout(&mut self, logs: Vec<FanoutLog>) {
        for FanoutLog { app, next_seq, entries } in logs {
            self.fanout.insert(app, Log { next_seq, entries: entries.into(), dropped_through: None });
        }
    }

    /// Adds every log to `out`.
    pub(super) fn image_fanout(&self, out: &mut Vec<FanoutLog>) {
        for (app, log) in &self.fanout {
            let entries = log.entries.iter().cloned().collect();
            out.push(FanoutLog { app: app.clone(), next_seq: log.next_seq, entries });
        }
    }
}

/// Moves what `client`'s app log holds for it since its cursor into its
/// queue (each entry on its topic, at the QoS of its subscription to it),
/// within the queue's limits; then its cursor is the log's head.
pub(super) fn catch_up(
    log: Option<&Log>,
    client: &ClientId,
    state: &mut PersistentState,
    now: UnixMillis,
    config: &RouterConfig,
    counters: &mut RouterCounters,
) -> Vec<herald_core::MessageId> {
    let mut replaced = Vec::new();
    let Some(log) = log else { return replaced };
    // Entries dropped by the cap (not ones that expired) that it had not read.
    if log.dropped_through.is_some_and(|last| state.fanout_cursor <= last) {
        counters.fanout_gaps += 1;
    }
    let topic = Topic::push(client);
    let matching: Vec<&herald_proto::seam::Subscription> =
        state.subscriptions.iter().filter(|s| s.filter.matches(&topic)).collect();
    if let Some(qos) = matching.iter().map(|s| s.qos).max() {
        let ids: Vec<u32> = matching.iter().filter_map(|s| s.identifier).collect();
        let cursor = state.fanout_cursor;
        for entry in log.entries.iter().filter(|e| e.seq >= cursor) {
            if !entry.audience.includes(client) {
                continue;
            }
            if entry.message.is_expired(now) {
                counters.dropped_expired += 1;
                continue;
            }
            let qos = qos.min(entry.message.qos);
            if qos == QoS::AtMostOnce {
                counters.dropped_offline_qos0 += 1;
                continue;
            }
            let size = entry.message.payload.len();
            let max_bytes = config.max_queued_bytes;
            let full = |state: &PersistentState| {
                state.queue.len() >= config.max_queued_messages
                    || (max_bytes > 0 && state.queue_bytes + size > max_bytes)
            };
            if full(state) {
                if config.overflow == Overflow::RefuseNewest || (max_bytes > 0 && size > max_bytes) {
                    counters.dropped_queue_full += 1;
                    continue;
                }
                while full(state) {
                    let Some(oldest) = state.queue.pop_front() else { break };
                    state.queue_bytes = state.queue_bytes.saturating_sub(oldest.message.payload.len());
                    counters.dropped_queue_oldest += 1;
                }
            }
            // A newer copy with its collapse key already waiting replaces it;
            // otherwise it replaces the older ones.
            let newer_waits = state.queue.iter().any(|q| {
                super::retract::replaced_by(q, &entry.message)
                    && q.message.created_at > entry.message.created_at
            });
            if newer_waits {
                replaced.push(entry.message.id);
                continue;
            }
            replaced.extend(state.remove_where(|q| super::retract::replaced_by(q, &entry.message)));
            let copy = Arc::new(Message { topic: topic.clone(), ..Message::clone(&entry.message) });
            let queued = QueuedMessage {
                message: copy,
                qos,
                subscription_ids: ids.clone(),
                progress: Progress::Unsent,
                shared: None,
            };
            state.queue.push_back(queued);
            state.queue_bytes += size;
        }
        state.count_bytes();
    }
    state.fanout_cursor = log.next_seq;
    replaced
}
