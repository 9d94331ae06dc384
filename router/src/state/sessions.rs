//! The session registry: ownership with epochs, persistent sessions'
//! subscriptions and offline queues, wills and expiry.

use super::{Effect, Overflow, RouterState};
use herald_core::{Epoch, ErrorCode, MessageId, NodeId, QoS, SessionKey, TopicFilter, UnixMillis};
use herald_proto::Message;
use herald_proto::journal::{DurableSession, Fact, QueueTarget};
use herald_proto::seam::{
    Claim, ClaimGrant, Downlink, Progress, QueuedMessage, Reattach, Release, RetainedLookup, SessionAcks,
    Subscription, Will,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// What the router knows of one session. Every online session has one, so
/// what only persistent sessions need sits behind one pointer: a transient
/// session's record is a few words.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The gateway holding the session's connection, if it is online.
    pub owner: Option<NodeId>,
    /// The latest epoch granted.
    pub epoch: Epoch,
    /// Session expiry interval in seconds (0: ends with the connection).
    pub expiry_seconds: u32,
    /// Since when the session is online (or offline), for presence.
    pub since: UnixMillis,
    will: Option<Box<Will>>,
    persistent: Option<Box<PersistentState>>,
}

/// The part of a session record only persistent sessions have.
#[derive(Debug, Clone, Default)]
pub(super) struct PersistentState {
    pub(super) subscriptions: Vec<Subscription>,
    /// Messages waiting while offline, oldest first (bounded).
    pub(super) queue: VecDeque<QueuedMessage>,
    /// When the will fires, if one is scheduled.
    will_at: Option<UnixMillis>,
    /// When the session expires, while offline.
    expires_at: Option<UnixMillis>,
    /// Where deliveries that were in flight to the released connection
    /// (`Uplink::Requeue`) go: right after the messages it released.
    requeue_at: usize,
    /// Payload bytes in `queue` (kept by `count_bytes` after each change).
    pub(super) queue_bytes: usize,
    /// For a session restored from the durable state and not claimed
    /// since: the epoch of its last claim, the only one a gateway may take
    /// it back with (`None`: a record from before epochs were kept).
    restored_from: Option<Epoch>,
    /// The first entry of its app's fan-out log it has not had. Online,
    /// the head of the log when its connection began.
    pub(super) fanout_cursor: u64,
    /// Online: the last fan-out entry its client acknowledged (memory
    /// only: after a gateway's loss, catching up starts past it).
    fanout_acked: Option<u64>,
    /// The head of the log when its gateway's link was lost with its
    /// connection (memory only): a gateway that takes the session back had
    /// everything before it.
    lost_at: Option<u64>,
}

impl PersistentState {
    pub(super) fn count_bytes(&mut self) {
        self.queue_bytes = self.queue.iter().map(|q| q.message.payload.len()).sum();
    }

    /// The ids of the messages in the inbox.
    fn inbox_ids(&self) -> HashSet<MessageId> {
        self.queue.iter().map(|q| q.message.id).collect()
    }

    /// Marks what the inbox holds as perhaps sent: its connection ended
    /// without handing anything back (its gateway was lost, or it was taken
    /// over), so the next one resends with DUP.
    pub(super) fn maybe_sent(&mut self) {
        for queued in &mut self.queue {
            if queued.progress == Progress::Unsent {
                queued.progress = Progress::MaybeSent;
            }
        }
    }

    /// Takes how far each of `pending` (a released connection's
    /// unacknowledged deliveries) got, for the copies the inbox holds;
    /// returns the others, which the inbox never had.
    fn take_progress(&mut self, pending: Vec<QueuedMessage>) -> Vec<QueuedMessage> {
        if pending.is_empty() {
            return pending;
        }
        let held = self.inbox_ids();
        let (copies, others): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|p| held.contains(&p.message.id));
        let progress: Vec<_> = copies.iter().map(|p| (p.message.id, p.progress)).collect();
        self.note_progress(&progress);
        others
    }

    /// Notes how far the messages of `progress` got on the session's live
    /// connection (memory only: the journal's copy stays as it was).
    fn note_progress(&mut self, progress: &[(MessageId, Progress)]) {
        let at: HashMap<MessageId, Progress> = progress.iter().copied().collect();
        for queued in &mut self.queue {
            if let Some(progress) = at.get(&queued.message.id) {
                queued.progress = *progress;
            }
        }
    }

    /// Removes the acknowledged messages among `ids`; returns those it held.
    /// Clients acknowledge mostly in the order they were sent, which is the
    /// inbox's: the front goes first, and the rest is searched only for
    /// what is left.
    fn acknowledge(&mut self, ids: &[MessageId]) -> Vec<MessageId> {
        let mut ids: HashSet<MessageId> = ids.iter().copied().collect();
        let mut removed = Vec::new();
        let mut bytes = 0;
        while let Some(front) = self.queue.front()
            && ids.remove(&front.message.id)
        {
            removed.push(front.message.id);
            bytes += front.message.payload.len();
            self.queue.pop_front();
            self.requeue_at = self.requeue_at.saturating_sub(1);
        }
        self.queue_bytes = self.queue_bytes.saturating_sub(bytes);
        if !ids.is_empty() {
            removed.extend(self.remove_where(|q| ids.contains(&q.message.id)));
        }
        removed
    }

    /// Removes the messages `remove` picks, keeping the requeue point and
    /// the byte count; returns their ids.
    pub(super) fn remove_where(&mut self, mut remove: impl FnMut(&QueuedMessage) -> bool) -> Vec<MessageId> {
        let mut removed = Vec::new();
        let (requeue_at, mut index, mut removed_before, mut bytes) = (self.requeue_at, 0, 0, 0);
        self.queue.retain(|q| {
            let gone = remove(q);
            if gone {
                removed.push(q.message.id);
                bytes += q.message.payload.len();
                removed_before += usize::from(index < requeue_at);
            }
            index += 1;
            !gone
        });
        self.requeue_at = requeue_at - removed_before;
        self.queue_bytes = self.queue_bytes.saturating_sub(bytes);
        removed
    }
}

impl SessionRecord {
    /// Returns true when the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.expiry_seconds > 0
    }

    /// Returns the recorded subscriptions (persistent sessions only).
    pub fn subscriptions(&self) -> &[Subscription] {
        self.persistent.as_deref().map_or(&[], |p| &p.subscriptions)
    }

    /// The first entry of its app's fan-out log it has not read
    /// (persistent sessions only).
    pub(super) fn fanout_cursor(&self) -> Option<u64> {
        self.persistent.as_deref().map(|p| p.fanout_cursor)
    }

    /// Messages queued while offline, and their payload bytes.
    pub fn queued(&self) -> (usize, usize) {
        self.persistent.as_deref().map_or((0, 0), |p| (p.queue.len(), p.queue_bytes))
    }

    /// Returns the messages queued while offline, oldest first.
    pub fn queue(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.persistent.as_deref().into_iter().flat_map(|p| p.queue.iter())
    }

    /// The epoch of the last claim of a session restored and not claimed
    /// since.
    pub(super) fn restored_from(&self) -> Option<Epoch> {
        self.persistent.as_deref().and_then(|p| p.restored_from)
    }

    fn will_at(&self) -> Option<UnixMillis> {
        self.persistent.as_deref().and_then(|p| p.will_at)
    }

    fn expires_at(&self) -> Option<UnixMillis> {
        self.persistent.as_deref().and_then(|p| p.expires_at)
    }

    /// [`SessionRecord::durable`] without the inbox.
    pub(super) fn durable_meta(&self, key: &SessionKey) -> Option<DurableSession> {
        self.durable_with(key, false)
    }

    /// Returns what of this record must survive a restart, if anything.
    pub(super) fn durable(&self, key: &SessionKey) -> Option<DurableSession> {
        self.durable_with(key, true)
    }

    fn durable_with(&self, key: &SessionKey, with_inbox: bool) -> Option<DurableSession> {
        if !self.is_persistent() {
            return None;
        }
        let state = self.persistent.as_deref();
        Some(DurableSession {
            session: key.clone(),
            expiry_seconds: self.expiry_seconds,
            subscriptions: self.subscriptions().to_vec(),
            queue: if with_inbox { self.queue().cloned().collect() } else { Vec::new() },
            will: self.will.clone(),
            will_at: state.and_then(|p| p.will_at),
            expires_at: state.and_then(|p| p.expires_at),
            online: self.owner.is_some(),
            epoch: Some(state.and_then(|p| p.restored_from).unwrap_or(self.epoch)),
            // An online session's cursor is only meaningful once it goes
            // offline; restored online, it starts at the log's head.
            fanout_cursor: state.filter(|_| self.owner.is_none()).map(|p| p.fanout_cursor),
        })
    }
}

/// What tells whether a catch-up changed an inbox: its length and its
/// newest message (a catch-up only appends, and drops or replaces only to
/// append).
fn inbox_mark(state: &PersistentState) -> (usize, Option<MessageId>) {
    (state.queue.len(), state.queue.back().map(|q| q.message.id))
}

/// How far back a session's queue is checked for a message queued already
/// (a publish a gateway sends again after its link to the router broke).
const REPLAY_WINDOW: usize = 64;

/// What ending a connection does with the session's will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WillFate {
    /// Publish it (after its delay).
    Publish,
    /// Drop it (a normal disconnect).
    Drop,
    /// Keep it unscheduled: a gateway lease decides later.
    Keep,
}

/// One persistent session's subscription in the inbox index.
#[derive(Debug, Clone)]
pub(super) struct InboxEntry {
    qos: QoS,
    no_local: bool,
    identifier: Option<u32>,
}

impl RouterState {
    /// An epoch this router grants (claims of gateways that do not claim at
    /// the shard's owner first): of the shard's generation in the table now,
    /// or of the session's latest epoch's if higher, and above every epoch
    /// it took (ADR 0033).
    fn next_epoch(&mut self, session: &SessionKey) -> Epoch {
        self.counter += 1;
        let latest = self.sessions.get(session).map_or(0, |record| record.epoch.generation);
        Epoch::new(self.table_generation_of(session).max(latest), self.counter)
    }

    pub(super) fn check_epoch(&mut self, session: &SessionKey, epoch: Epoch) -> Result<(), ErrorCode> {
        match self.sessions.get(session) {
            Some(record) if record.epoch == epoch && record.owner.is_some() => Ok(()),
            _ => {
                self.counters.stale_epoch_refused += 1;
                Err(ErrorCode::StaleEpoch)
            }
        }
    }

    /// Grants `claim` now, taking the session over from any connection
    /// that still holds it (told so already if `revoked`).
    pub(super) fn claim_now(
        &mut self,
        gateway: NodeId,
        claim: Claim,
        revoked: bool,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) {
        // The epoch its shard's owner granted, or one of this router's. The
        // epochs it grants itself (a gateway of an earlier version, during
        // a rolling upgrade) stay above every granted one it took.
        let epoch = match claim.granted {
            Some(granted) => {
                self.counter = self.counter.max(granted.counter);
                granted
            }
            None => self.next_epoch(&claim.session),
        };
        let expiry_seconds = claim.expiry_seconds.min(self.config.max_session_expiry_seconds);
        let session = claim.session;
        let mut grant =
            ClaimGrant { epoch, session_present: false, subscriptions: Vec::new(), queued: Vec::new() };
        let mut inbox = VecDeque::new();
        let was_persistent = self.sessions.get(&session).is_some_and(SessionRecord::is_persistent);
        // Whether a resumed session's inbox is as the journal has it: then
        // only its record is journaled, not every message it holds.
        let mut inbox_as_journaled = false;
        if let Some(mut old) = self.sessions.remove(&session) {
            if let Some(owner) = old.owner.filter(|_| !revoked) {
                // Takeover: the old connection must end [MQTT-3.1.4-3].
                out.push((owner, Downlink::Revoked { session: session.clone(), epoch: old.epoch }));
            }
            self.forget_timers(&session, &old);
            self.unindex_subscriptions(&session, old.subscriptions());
            let resumable = old.is_persistent() && !claim.clean_start;
            if let Some(mut state) = old.persistent.take().filter(|_| resumable) {
                // A session taken over while online had everything sent so
                // far through its old connection; what its inbox holds may
                // have reached the client. If that connection was told to
                // end and did not release the session in time (its gateway
                // is frozen or cut off, ADR 0030), tag and broadcast entries
                // in flight on it are read again from the log, as for a lost
                // gateway: from past its client's last acknowledged one.
                if old.owner.is_some() {
                    if revoked {
                        if let Some(seq) = state.fanout_acked.take() {
                            state.fanout_cursor = state.fanout_cursor.max(seq.saturating_add(1));
                        }
                        state.lost_at.get_or_insert(self.fanout_head(&session.app));
                    } else {
                        state.fanout_cursor = self.fanout_head(&session.app);
                    }
                    state.maybe_sent();
                }
                // What tag and broadcast sends left for it while it was away
                // (after a lost gateway: since its client's last
                // acknowledgement, perhaps sent already).
                let lost = state.lost_at.take().is_some();
                let log = self.fanout.get(&session.app);
                let before = inbox_mark(&state);
                let replaced = super::fanout::catch_up(
                    log,
                    &session.client,
                    &mut state,
                    now,
                    &self.config,
                    &mut self.counters,
                );
                if lost {
                    state.maybe_sent();
                }
                inbox_as_journaled = replaced.is_empty() && inbox_mark(&state) == before;
                for older in replaced {
                    self.retracted(&session.app, older, 0, 1);
                }
                // A resumption within the will delay cancels the will [MQTT-3.1.3-9].
                let PersistentState { subscriptions, queue, .. } = *state;
                grant.session_present = true;
                grant.subscriptions = subscriptions;
                // The inbox keeps them until the client acknowledges them.
                let held = queue.len();
                inbox = queue.into_iter().filter(|q| !self.expired(&q.message, now)).collect();
                // What expired leaves the journal's copy too.
                inbox_as_journaled &= inbox.len() == held;
                grant.queued = inbox.iter().cloned().collect();
            } else if let Some(will) = old.will.take() {
                // The old session ends now (taken over without resuming, or
                // it had ended with its connection): its will fires now,
                // whether its connection was live or its will was delayed.
                self.publish_will(*will, now, out);
            }
        }
        let fanout_cursor = self.fanout_head(&session.app);
        let persistent = (expiry_seconds > 0).then(|| {
            let mut state = PersistentState {
                subscriptions: grant.subscriptions.clone(),
                queue: inbox,
                fanout_cursor,
                ..PersistentState::default()
            };
            state.count_bytes();
            Box::new(state)
        });
        if persistent.is_some() {
            self.index_subscriptions(&session, &grant.subscriptions);
        }
        let record = SessionRecord {
            owner: Some(gateway),
            epoch,
            expiry_seconds,
            since: now,
            will: claim.will,
            persistent,
        };
        // A resumed session's subscriptions are routed to its new gateway
        // from now on: a message published before the gateway's own route
        // change arrives must reach it, not fall between "offline" and
        // "online". (The gateway's later route changes are idempotent.)
        let routes: Vec<_> =
            grant.subscriptions.iter().map(|s| (session.app.clone(), s.filter.clone())).collect();
        if !routes.is_empty() {
            self.change_routes(gateway, routes, Vec::new(), out);
        }
        if inbox_as_journaled && expiry_seconds > 0 {
            self.mark_session_meta(&session);
        } else if expiry_seconds > 0 || was_persistent {
            self.mark_session(&session);
        }
        self.registry_changed(&session);
        self.sessions.insert(session, record);
        grant.queued = self.for_gateway(gateway, grant.queued);
        out.push((gateway, Downlink::Claimed { request: claim.request, result: Ok(grant) }));
    }

    fn expired(&mut self, message: &Message, now: UnixMillis) -> bool {
        let expired = message.is_expired(now);
        if expired {
            self.counters.dropped_expired += 1;
        }
        expired
    }

    pub(super) fn release(&mut self, release: Release, now: UnixMillis, out: &mut Vec<Effect>) {
        let fate = if release.publish_will { WillFate::Publish } else { WillFate::Drop };
        self.end_connection(release, fate, now, out);
    }

    /// Ends a session's connection: a transient session ends, a persistent
    /// one goes offline; its will is published (after its delay), dropped,
    /// or kept unscheduled for a gateway lease to decide.
    pub(super) fn end_connection(
        &mut self,
        release: Release,
        fate: WillFate,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) {
        let fanout_head = self.fanout_head(&release.session.app);
        let Some(record) = self.sessions.get_mut(&release.session) else {
            self.counters.stale_epoch_refused += 1;
            return;
        };
        if record.epoch != release.epoch || record.owner.is_none() {
            // A connection that lost ownership may not end the session or
            // publish a will: the check happens where the effect applies.
            // What it held unacknowledged still belongs to the session: it
            // goes to the new connection, or to the queue if none is left.
            if release.epoch < record.epoch
                && !release.pending.is_empty()
                && let Some(state) = record.persistent.as_deref_mut()
            {
                // What its inbox holds went to the new connection already.
                let mut release = release;
                let held = state.inbox_ids();
                release.pending.retain(|p| !held.contains(&p.message.id));
                if release.pending.is_empty() {
                    return;
                }
                match record.owner {
                    Some(owner) => {
                        let (session, epoch, pending) = (release.session, record.epoch, release.pending);
                        out.push((owner, Downlink::Handover { session, epoch, pending }));
                    }
                    None => {
                        for pending in release.pending.into_iter().rev() {
                            state.queue.push_front(pending);
                        }
                        state.count_bytes();
                        self.dirty_sessions.insert(release.session);
                    }
                }
                self.counters.handed_over += 1;
                return;
            }
            self.counters.stale_epoch_refused += 1;
            return;
        }
        record.owner = None;
        record.since = now;
        let was_persistent = record.is_persistent();
        let changed = release.session.clone();
        self.registry_changed(&changed);
        let Some(record) = self.sessions.get_mut(&release.session) else { return };
        record.expiry_seconds = release.expiry_seconds.min(self.config.max_session_expiry_seconds);
        if was_persistent || record.is_persistent() {
            self.dirty_sessions.insert(release.session.clone());
        }
        let will = match fate {
            WillFate::Publish => record.will.take(),
            WillFate::Drop => {
                record.will = None;
                None
            }
            WillFate::Keep => None,
        };
        let session = release.session;
        if record.expiry_seconds == 0 {
            if let Some(gone) = self.sessions.remove(&session) {
                self.unindex_subscriptions(&session, gone.subscriptions());
            }
            if let Some(will) = will {
                self.publish_will(*will, now, out);
            }
            return;
        }
        let expires_at = now.plus_seconds(record.expiry_seconds);
        let state = record.persistent.get_or_insert_with(Box::default);
        // What the log holds so far was sent while it was online; if its
        // gateway was lost, only what its client acknowledged is known to
        // have arrived (`connection_lost`).
        if fate != WillFate::Keep {
            state.fanout_cursor = fanout_head;
            state.fanout_acked = None;
        }
        state.expires_at = Some(expires_at);
        // What the inbox holds stays where it is, with how far it got;
        // the rest (never in the inbox) goes first.
        let pending = state.take_progress(release.pending);
        state.requeue_at = pending.len();
        for pending in pending.into_iter().rev() {
            state.queue.push_front(pending);
        }
        state.count_bytes();
        let subscriptions = state.subscriptions.clone();
        self.timers.insert((expires_at, session.clone()));
        // The session's own subscriptions are offline before its will is
        // routed, so a session subscribed to its will topic queues it.
        self.index_subscriptions(&session, &subscriptions);
        if let Some(will) = will {
            self.arm_will(&session, will, now, out);
        }
    }

    /// Publishes an offline session's will now, or schedules it after its
    /// delay (within the session's life).
    fn arm_will(&mut self, session: &SessionKey, will: Box<Will>, now: UnixMillis, out: &mut Vec<Effect>) {
        let Some(record) = self.sessions.get_mut(session) else { return };
        let expires_at = record.expires_at().unwrap_or(now);
        let fire_at = now.plus_seconds(will.delay_seconds).min(expires_at);
        if fire_at <= now {
            self.publish_will(*will, now, out);
        } else {
            record.will = Some(will);
            record.persistent.get_or_insert_with(Box::default).will_at = Some(fire_at);
            self.timers.insert((fire_at, session.clone()));
            self.mark_session_meta(session);
        }
    }

    /// Moves an offline session's expiry to `at` if it was sooner.
    pub(super) fn expire_no_sooner_than(&mut self, session: &SessionKey, at: UnixMillis) {
        let Some(record) = self.sessions.get_mut(session) else { return };
        let Some(state) = record.persistent.as_deref_mut() else { return };
        match state.expires_at {
            Some(expires_at) if expires_at < at => {
                self.timers.remove(&(expires_at, session.clone()));
                state.expires_at = Some(at);
                self.timers.insert((at, session.clone()));
                self.mark_session_meta(session);
            }
            _ => {}
        }
    }

    /// Arms the will an offline session kept through a gateway lease.
    pub(super) fn schedule_will(&mut self, session: &SessionKey, now: UnixMillis, out: &mut Vec<Effect>) {
        let Some(record) = self.sessions.get_mut(session) else { return };
        if record.will_at().is_some() {
            return;
        }
        if let Some(will) = record.will.take() {
            self.mark_session_meta(session);
            self.arm_will(session, will, now, out);
        }
    }

    /// Makes an offline persistent session `gateway`'s again at `epoch`,
    /// as it was before its connection's end: its subscriptions leave the
    /// offline index, its expiry and will timers stop. Its queue stays.
    pub(super) fn resume_offline(
        &mut self,
        gateway: NodeId,
        session: &SessionKey,
        epoch: Epoch,
        now: UnixMillis,
    ) {
        let Some(record) = self.sessions.get(session) else { return };
        for at in [record.will_at(), record.expires_at()].into_iter().flatten() {
            self.timers.remove(&(at, session.clone()));
        }
        self.registry_changed(session);
        let Some(record) = self.sessions.get_mut(session) else { return };
        record.owner = Some(gateway);
        record.epoch = epoch;
        record.since = now;
        let mut replaced = Vec::new();
        let mut inbox_as_journaled = true;
        if let Some(state) = record.persistent.as_deref_mut() {
            // Its connection lived on: what was sent before the link was
            // lost reached it (or waits in its inbox).
            if let Some(at) = state.lost_at.take() {
                state.fanout_cursor = at;
            }
            let log = self.fanout.get(&session.app);
            let before = inbox_mark(state);
            replaced =
                super::fanout::catch_up(log, &session.client, state, now, &self.config, &mut self.counters);
            inbox_as_journaled = replaced.is_empty() && inbox_mark(state) == before;
            state.will_at = None;
            state.expires_at = None;
            state.requeue_at = 0;
            state.restored_from = None;
        }
        for older in replaced {
            self.retracted(&session.app, older, 0, 1);
        }
        if inbox_as_journaled {
            self.mark_session_meta(session);
        } else {
            self.mark_session(session);
        }
    }

    /// Gives a session back to the gateway that still holds its connection
    /// (a link opened again): with the epoch, expiry and will the
    /// connection holds; what queued meanwhile is handed to it.
    pub(super) fn adopt(
        &mut self,
        gateway: NodeId,
        reattach: Reattach,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) {
        let Reattach { session, epoch, expiry_seconds, will } = reattach;
        let expiry_seconds = expiry_seconds.min(self.config.max_session_expiry_seconds);
        self.registry_changed(&session);
        let record = self.sessions.entry(session.clone()).or_insert_with(|| SessionRecord {
            owner: Some(gateway),
            epoch,
            expiry_seconds,
            since: now,
            will: None,
            persistent: None,
        });
        let was_persistent = record.persistent.is_some();
        let known = record.subscriptions().to_vec();
        record.owner = Some(gateway);
        record.epoch = epoch;
        record.expiry_seconds = expiry_seconds;
        record.will = will;
        let mut pending = Vec::new();
        let mut routes = Vec::new();
        if expiry_seconds > 0 {
            let fanout_cursor = self.fanout.get(&session.app).map_or(0, |log| log.next_seq());
            let state = record.persistent.get_or_insert_with(|| {
                Box::new(PersistentState { fanout_cursor, ..PersistentState::default() })
            });
            // The gateway skips what it holds already; the inbox keeps
            // all of it until the client acknowledges it.
            pending.extend(state.queue.iter().cloned());
            routes.extend(state.subscriptions.iter().map(|s| (session.app.clone(), s.filter.clone())));
        } else {
            record.persistent = None;
        }
        if expiry_seconds > 0 {
            self.index_subscriptions(&session, &known);
        } else {
            self.unindex_subscriptions(&session, &known);
        }
        // A record new to the journal (or that stops being persistent) goes
        // whole: facts for it later in the batch need it there.
        if was_persistent && expiry_seconds > 0 {
            self.mark_session_meta(&session);
        } else if was_persistent || expiry_seconds > 0 {
            self.mark_session(&session);
        }
        if !routes.is_empty() {
            self.change_routes(gateway, routes, Vec::new(), out);
        }
        if !pending.is_empty() {
            let pending = self.for_gateway(gateway, pending);
            out.push((gateway, Downlink::Handover { session, epoch, pending }));
        }
    }

    /// Queues deliveries that reached a released connection too late to be
    /// in its release: after the released messages, before anything routed
    /// since. If the session has a new connection already, they go to it.
    pub(super) fn requeue(
        &mut self,
        session: &SessionKey,
        epoch: Epoch,
        messages: Vec<QueuedMessage>,
        out: &mut Vec<Effect>,
    ) {
        let Some(record) = self.sessions.get_mut(session) else { return };
        let current = record.epoch;
        let Some(state) = record.persistent.as_deref_mut() else { return };
        let mut messages = messages;
        let held = state.inbox_ids();
        messages.retain(|m| !held.contains(&m.message.id));
        if messages.is_empty() {
            return;
        }
        match record.owner {
            Some(owner) if epoch < current => {
                let handover =
                    Downlink::Handover { session: session.clone(), epoch: current, pending: messages };
                out.push((owner, handover));
            }
            // Offline: they belong to the session whichever of its
            // connections held them (it may have come and gone again since).
            None if epoch <= current => {
                let at = state.requeue_at.min(state.queue.len());
                state.requeue_at = at + messages.len();
                for (offset, message) in messages.into_iter().enumerate() {
                    state.queue.insert(at + offset, message);
                }
                state.count_bytes();
                self.mark_session(session);
            }
            _ => self.counters.stale_epoch_refused += 1,
        }
    }

    pub(super) fn subscribe(
        &mut self,
        session: &SessionKey,
        epoch: Epoch,
        subscriptions: Vec<(Subscription, RetainedLookup)>,
        now: UnixMillis,
    ) -> Result<Vec<(usize, Arc<Message>)>, ErrorCode> {
        self.check_epoch(session, epoch)?;
        let mut retained = Vec::new();
        for (index, (subscription, lookup)) in subscriptions.into_iter().enumerate() {
            // Retained messages are not sent for shared subscriptions (§4.8.2).
            if lookup == RetainedLookup::Send
                && subscription.filter.share_group().is_none()
                && let Some(store) = self.retained.get(&session.app)
            {
                store.for_each_match(&subscription.filter, |m| {
                    if !m.is_expired(now) {
                        retained.push((index, m.clone()));
                    }
                });
            }
            if subscription.filter.share_group().is_some() {
                self.ensure_group(&session.app, &subscription.filter);
            }
            let Some(record) = self.sessions.get_mut(session) else { break };
            if let Some(state) = record.persistent.as_deref_mut() {
                state.subscriptions.retain(|s| s.filter != subscription.filter);
                state.subscriptions.push(subscription.clone());
                self.mark_session_meta(session);
                self.index_subscriptions(session, std::slice::from_ref(&subscription));
            }
        }
        Ok(retained)
    }

    pub(super) fn unsubscribe(
        &mut self,
        session: &SessionKey,
        epoch: Epoch,
        filters: &[TopicFilter],
    ) -> Result<(), ErrorCode> {
        self.check_epoch(session, epoch)?;
        if let Some(state) = self.sessions.get_mut(session).and_then(|r| r.persistent.as_deref_mut()) {
            let (gone, kept) = std::mem::take(&mut state.subscriptions)
                .into_iter()
                .partition::<Vec<_>, _>(|s| filters.contains(&s.filter));
            state.subscriptions = kept;
            self.mark_session_meta(session);
            self.unindex_subscriptions(session, &gone);
        }
        Ok(())
    }

    pub(super) fn fire_timer(
        &mut self,
        deadline: UnixMillis,
        session: SessionKey,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) {
        let Some(record) = self.sessions.get_mut(&session) else { return };
        if record.is_persistent() {
            self.mark_session_meta(&session);
        }
        let Some(record) = self.sessions.get_mut(&session) else { return };
        if record.will_at() == Some(deadline) {
            if let Some(state) = record.persistent.as_deref_mut() {
                state.will_at = None;
            }
            if let Some(will) = record.will.take() {
                self.publish_will(*will, now, out);
            }
        }
        let Some(record) = self.sessions.get(&session) else { return };
        if record.owner.is_none() && record.expires_at().is_some_and(|at| at <= now) {
            let record = self.sessions.remove(&session).expect("present: looked up above");
            self.registry_changed(&session);
            self.forget_timers(&session, &record);
            self.unindex_subscriptions(&session, record.subscriptions());
            self.counters.sessions_expired += 1;
            if let Some(will) = record.will {
                // The session ended before the will delay passed.
                self.publish_will(*will, now, out);
            }
        }
    }

    fn forget_timers(&mut self, session: &SessionKey, record: &SessionRecord) {
        for at in [record.will_at(), record.expires_at()].into_iter().flatten() {
            self.timers.remove(&(at, session.clone()));
        }
    }

    /// Publishes wills a registry shard owner sends: of transient sessions
    /// it ended (ADR 0033), as any will.
    pub fn publish_owner_wills(&mut self, wills: Vec<Box<Will>>, now: UnixMillis, out: &mut Vec<Effect>) {
        for will in wills {
            self.publish_will(*will, now, out);
        }
    }

    fn publish_will(&mut self, will: Will, now: UnixMillis, out: &mut Vec<Effect>) {
        let Will { message, expiry_seconds, .. } = will;
        self.counters.wills_published += 1;
        let mut message = Arc::unwrap_or_clone(message);
        message.created_at = now;
        message.expires_at = expiry_seconds.map(|s| now.plus_seconds(s));
        let message = Arc::new(message);
        if self.holds() {
            let held = herald_proto::seam::Publish { request: None, from: None, message };
            return self.hold(NodeId(0), super::Held::Publish(held));
        }
        self.route(message, now, out);
    }

    /// Removes the queued messages of `key` that `remove` picks; returns
    /// their ids. The session is journaled again if any went.
    pub(super) fn remove_queued(
        &mut self,
        key: &SessionKey,
        remove: impl FnMut(&QueuedMessage) -> bool,
    ) -> Vec<herald_core::MessageId> {
        let Some(state) = self.sessions.get_mut(key).and_then(|r| r.persistent.as_deref_mut()) else {
            return Vec::new();
        };
        let removed = state.remove_where(remove);
        if !removed.is_empty() {
            self.mark_session(key);
        }
        removed
    }

    /// `queued` as `gateway` understands it: a gateway of an earlier
    /// version knows no `Progress::MaybeSent` (it gets them as unsent).
    fn for_gateway(&self, gateway: NodeId, mut queued: Vec<QueuedMessage>) -> Vec<QueuedMessage> {
        if !self.reports_acks(gateway) {
            for q in &mut queued {
                if q.progress == Progress::MaybeSent {
                    q.progress = Progress::Unsent;
                }
            }
        }
        queued
    }

    /// Takes what clients acknowledged out of their sessions' inboxes,
    /// journaled as one fact per session (a gateway gathers them for a few
    /// tens of milliseconds: at most one write per session per batch).
    ///
    /// How far QoS 2 messages got on the connection (sent under a packet
    /// id, PUBREL sent) is noted in the inbox, in memory only, when it comes
    /// from the gateway holding the session: after that gateway's loss the
    /// next connection resends them under the same packet ids.
    pub(super) fn acked(&mut self, gateway: NodeId, acks: Vec<SessionAcks>) {
        for SessionAcks { session, messages, progress } in acks {
            let Some(record) = self.sessions.get_mut(&session) else { continue };
            let owned = record.owner == Some(gateway);
            let Some(state) = record.persistent.as_deref_mut() else { continue };
            if owned && !progress.is_empty() {
                state.note_progress(&progress);
            }
            let removed = state.acknowledge(&messages);
            if removed.len() < messages.len()
                && let Some(log) = self.fanout.get(&session.app)
            {
                // The rest may be tag or broadcast entries sent online.
                let from = state.fanout_cursor;
                let gone: HashSet<&MessageId> = removed.iter().collect();
                for id in messages.iter().filter(|id| !gone.contains(id)) {
                    if let Some(seq) = log.seq_of(*id, from) {
                        state.fanout_acked = state.fanout_acked.max(Some(seq));
                    }
                }
            }
            if !removed.is_empty() {
                self.counters.inbox_acknowledged += removed.len() as u64;
                self.journal.push(Fact::Acked(SessionAcks {
                    session,
                    messages: removed,
                    progress: Vec::new(),
                }));
            }
        }
    }

    /// A session's connection was lost with its gateway: what its inbox
    /// holds may have been sent, and is resent with DUP.
    /// Tag and broadcast entries it was sent while online are read again
    /// from the log, from past the last one its client acknowledged (or
    /// from when the connection began).
    pub(super) fn connection_lost(&mut self, session: &SessionKey) {
        let head = self.fanout_head(&session.app);
        if let Some(state) = self.sessions.get_mut(session).and_then(|r| r.persistent.as_deref_mut()) {
            state.maybe_sent();
            if let Some(seq) = state.fanout_acked.take() {
                state.fanout_cursor = state.fanout_cursor.max(seq.saturating_add(1));
            }
            state.lost_at = Some(head);
            // The MaybeSent marks are not journaled: a router restart marks
            // the inboxes of sessions that were online anyway.
            self.mark_session_meta(session);
        }
    }

    fn index_subscriptions(&mut self, session: &SessionKey, subscriptions: &[Subscription]) {
        let tree = self.inboxes.entry(session.app.clone()).or_default();
        // A shared subscription's messages wait in its group, not in the
        // queue of one member.
        for s in subscriptions.iter().filter(|s| s.filter.share_group().is_none()) {
            let entry = InboxEntry { qos: s.qos, no_local: s.no_local, identifier: s.identifier };
            tree.insert(s.filter.match_filter(), (session.client.clone(), s.filter.clone()), entry);
        }
    }

    fn unindex_subscriptions(&mut self, session: &SessionKey, subscriptions: &[Subscription]) {
        if let Some(tree) = self.inboxes.get_mut(&session.app) {
            for s in subscriptions {
                tree.remove(s.filter.match_filter(), &(session.client.clone(), s.filter.clone()));
            }
        }
    }

    /// Puts `message` in the inbox of every persistent session whose
    /// subscriptions match it, online or not: an online session's gateway
    /// delivers it too, and it stays until the client acknowledges it
    /// (`Uplink::Acked`). Returns whether any session matched.
    /// `kept` returns the compacted copy queues hold (made at most once).
    pub(super) fn queue_for_persistent_sessions(
        &mut self,
        message: &Arc<Message>,
        kept: &mut dyn FnMut() -> Arc<Message>,
    ) -> bool {
        let Some(tree) = self.inboxes.get(&message.app) else { return false };
        // One delivery per session: the highest QoS of its matching
        // subscriptions and all their identifiers (§3.3.4).
        let mut targets: Vec<(herald_core::ClientId, QoS, Vec<u32>)> = Vec::new();
        let mut at: HashMap<herald_core::ClientId, usize> = HashMap::new();
        tree.for_each_match(message.topic.as_str(), |(client, _filter), entry| {
            if entry.no_local && message.origin.as_ref() == Some(client) {
                return;
            }
            let qos = entry.qos.min(message.qos);
            match at.get(client) {
                Some(&index) => {
                    let target = &mut targets[index];
                    target.1 = target.1.max(qos);
                    target.2.extend(entry.identifier);
                }
                None => {
                    at.insert(client.clone(), targets.len());
                    targets.push((client.clone(), qos, entry.identifier.into_iter().collect()));
                }
            }
        });
        let matched = !targets.is_empty();
        let mut queued_for = Vec::new();
        for (client, qos, subscription_ids) in targets {
            let key = SessionKey::new(message.app.clone(), client);
            let Some(record) = self.sessions.get_mut(&key) else { continue };
            if qos == QoS::AtMostOnce {
                // Online, its gateway delivers it; offline, it is lost.
                if record.owner.is_none() {
                    self.counters.dropped_offline_qos0 += 1;
                }
                continue;
            }
            // Online, what the inbox cannot keep is still delivered through
            // the gateway, only not kept against the gateway's loss: counted
            // apart from what an offline session loses. A gateway of an
            // earlier version never reports acknowledgements: no inbox.
            let online = record.owner.is_some();
            if record.owner.is_some_and(|owner| self.legacy_gateways.contains(&owner)) {
                continue;
            }
            let Some(state) = record.persistent.as_deref_mut() else { continue };
            if state.queue.iter().rev().take(REPLAY_WINDOW).any(|q| q.message.id == message.id) {
                // A publish asked for again on a new router link after the
                // old one lost the answer: queued once already.
                self.counters.duplicates_ignored += 1;
                continue;
            }
            let (max_messages, max_bytes) = (self.config.max_queued_messages, self.config.max_queued_bytes);
            let size = message.payload.len();
            let full = |state: &PersistentState| {
                state.queue.len() >= max_messages || (max_bytes > 0 && state.queue_bytes + size > max_bytes)
            };
            if full(state) {
                if self.config.overflow == Overflow::RefuseNewest || (max_bytes > 0 && size > max_bytes) {
                    if online {
                        self.counters.inbox_overflow_online += 1;
                    } else {
                        self.counters.dropped_queue_full += 1;
                    }
                    continue;
                }
                // Drop oldest: make room from the front of the queue.
                let mut dropped = 0_u32;
                while full(state) {
                    let Some(oldest) = state.queue.pop_front() else { break };
                    state.queue_bytes -= oldest.message.payload.len();
                    state.requeue_at = state.requeue_at.saturating_sub(1);
                    dropped += 1;
                }
                if online {
                    self.counters.inbox_overflow_online += u64::from(dropped);
                } else {
                    self.counters.dropped_queue_oldest += u64::from(dropped);
                }
                self.journal.push(Fact::QueueDropped { session: key.clone(), count: dropped });
            }
            let target = QueueTarget { session: key, qos, subscription_ids };
            state.queue_bytes += size;
            state.queue.push_back(target.queued(&kept()));
            queued_for.push(target);
        }
        if !queued_for.is_empty() {
            self.journal.push(Fact::Queued { message: kept(), targets: queued_for });
        }
        matched
    }

    /// Rebuilds one persistent session after a restart at `now` (see
    /// [`RouterState::restore`]).
    pub(super) fn restore_session(&mut self, durable: DurableSession, now: UnixMillis) {
        let DurableSession {
            session,
            expiry_seconds,
            subscriptions,
            queue,
            will,
            mut will_at,
            mut expires_at,
            online,
            epoch: last_epoch,
            fanout_cursor,
        } = durable;
        if online || expires_at.is_none() {
            // Its connection may still be live on a gateway that links
            // again: the will waits for the gateway's lease first.
            let at = now.plus_seconds(expiry_seconds);
            expires_at = Some(at);
            let lease_end = UnixMillis(now.0 + self.config.gateway_lease_ms);
            will_at = will.as_ref().map(|w| lease_end.plus_seconds(w.delay_seconds).min(at));
        }
        // A zero counter marks it as restored and untouched: a gateway
        // holding it with an older epoch may take it back (`take_back`).
        let epoch = Epoch::new(self.generation_of(&session), 0);
        for at in [will_at, expires_at].into_iter().flatten() {
            self.timers.insert((at, session.clone()));
        }
        for s in subscriptions.iter().filter(|s| s.filter.share_group().is_some()) {
            self.ensure_group(&session.app, &s.filter);
        }
        self.index_subscriptions(&session, &subscriptions);
        let mut state = PersistentState {
            subscriptions,
            queue: queue.into(),
            will_at,
            expires_at,
            requeue_at: 0,
            queue_bytes: 0,
            restored_from: last_epoch,
            fanout_cursor: fanout_cursor.unwrap_or_else(|| self.fanout_head(&session.app)),
            fanout_acked: None,
            lost_at: None,
        };
        state.count_bytes();
        if online {
            // Its inbox was being sent when the router stopped.
            state.maybe_sent();
        }
        let record = SessionRecord {
            owner: None,
            epoch,
            expiry_seconds,
            since: now,
            will,
            persistent: Some(Box::new(state)),
        };
        self.sessions.insert(session, record);
    }
}
