//! What the gateway shares between its tasks: live connections, the local
//! subscription index with its per-filter route counts, and counters.
//!
//! Locks here are held for a map operation, never across an await.

use crate::session::LocalSubscription;
use herald_core::{AppId, Dispatcher, Epoch, NodeId, QoS, SessionKey, TopicFilter, TopicTree};
use herald_proto::Message;
use herald_proto::seam::{Downlink, QueuedMessage, Reattach, Will};
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll, Waker};

/// A connection's identity on this gateway; the high bits of its request ids.
pub(crate) type ConnId = u64;

/// Bits of a request id that belong to the connection's own sequence.
pub(crate) const REQUEST_SEQ_BITS: u32 = 24;

const REVOKED: u8 = 1;
const KEEP_ALIVE_EXPIRED: u8 = 2;
const SHUTTING_DOWN: u8 = 4;
const INBOX_CLOSED: u8 = 8;
const CREDENTIALS_EXPIRED: u8 = 16;
const REPLY_OVERDUE: u8 = 32;

/// What other tasks hand a connection.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A delivery for the session.
    Deliver(QueuedMessage),
    /// A reply to one of the session's requests.
    Reply(Downlink),
    /// Unacknowledged messages of the connection this one took over.
    Handover(Vec<QueuedMessage>),
    /// A cancelled push-API message: drop its copies not written yet.
    Retract(herald_core::MessageId),
}

/// The part of a connection other tasks can reach: a bounded inbox, a
/// wake-up, liveness, and flags. No buffer or queue is allocated until
/// something is handed over, so an idle connection costs little.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) id: ConnId,
    pub(crate) key: Arc<SessionKey>,
    epoch: Mutex<Epoch>,
    inbox: Mutex<Option<VecDeque<Inbound>>>,
    /// Payload bytes of the deliveries in the inbox (changed under its lock).
    inbox_bytes: AtomicUsize,
    /// Set by whoever hands the connection something (inbox item or flag);
    /// cleared by the connection before it looks.
    news: AtomicBool,
    /// The connection task's waker, registered before it checks `news`.
    waker: Mutex<Option<Waker>>,
    last_seen_ms: AtomicU64,
    keep_alive_ms: AtomicU64,
    /// When the connection's credentials stop being valid (0: never).
    valid_until_ms: AtomicU64,
    /// Deliveries the client would accept right now (its receive window
    /// less what is in flight or waiting): how shared groups pick members.
    free_window: AtomicU32,
    /// When the session's oldest request still waiting for the router was
    /// sent (0: none waits).
    awaiting_since_ms: AtomicU64,
    flags: AtomicU8,
    /// The session's expiry and will as claimed: what a router link opened
    /// again needs to give the session back ([`ConnHandle::reattach`]).
    terms: std::sync::OnceLock<SessionTerms>,
}

/// What a session was claimed with.
#[derive(Debug)]
pub(crate) struct SessionTerms {
    pub(crate) expiry_seconds: u32,
    pub(crate) will: Option<Box<Will>>,
}

impl ConnHandle {
    pub(crate) fn new(id: ConnId, key: Arc<SessionKey>, now_ms: u64) -> ConnHandle {
        ConnHandle {
            id,
            key,
            epoch: Mutex::new(Epoch::default()),
            inbox: Mutex::new(None),
            inbox_bytes: AtomicUsize::new(0),
            news: AtomicBool::new(false),
            waker: Mutex::new(None),
            last_seen_ms: AtomicU64::new(now_ms),
            keep_alive_ms: AtomicU64::new(0),
            valid_until_ms: AtomicU64::new(0),
            free_window: AtomicU32::new(0),
            awaiting_since_ms: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            terms: std::sync::OnceLock::new(),
        }
    }

    /// Records what the session is claimed with (once, before the claim).
    pub(crate) fn set_terms(&self, expiry_seconds: u32, will: Option<Box<Will>>) {
        let _ = self.terms.set(SessionTerms { expiry_seconds, will });
    }

    /// Returns the session as a link opened again lists it: only once its
    /// claim was granted, and while it still owns the session.
    pub(crate) fn reattach(&self) -> Option<Reattach> {
        let (epoch, terms) = self.held()?;
        Some(Reattach {
            session: SessionKey::clone(&self.key),
            epoch,
            expiry_seconds: terms.expiry_seconds,
            will: terms.will.clone(),
        })
    }

    /// The session as a registry shard owner is listed it: what
    /// [`ConnHandle::reattach`] gives, a transient session's will only.
    pub(crate) fn listing(&self) -> Option<crate::registry_links::HeldSession> {
        let (epoch, terms) = self.held()?;
        let expiry_seconds = terms.expiry_seconds;
        let will = terms.will.clone().filter(|_| expiry_seconds == 0);
        Some(crate::registry_links::HeldSession { session: self.key.clone(), epoch, expiry_seconds, will })
    }

    /// Whether the session was claimed without an expiry.
    pub(crate) fn is_transient(&self) -> bool {
        self.terms.get().is_some_and(|terms| terms.expiry_seconds == 0)
    }

    /// The epoch and terms of the session while this connection holds it:
    /// its claim was granted and it was not revoked since.
    fn held(&self) -> Option<(Epoch, &SessionTerms)> {
        let epoch = self.epoch();
        let terms = self.terms.get()?;
        (epoch != Epoch::default() && !self.is_revoked()).then_some((epoch, terms))
    }

    /// Marks news for the connection and wakes its task.
    pub(crate) fn wake(&self) {
        self.news.store(true, Ordering::SeqCst);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }

    /// Waits until there is news (see [`ConnHandle::poll_news`]).
    pub(crate) async fn news(&self) {
        std::future::poll_fn(|cx| if self.poll_news(cx) { Poll::Ready(()) } else { Poll::Pending }).await;
    }

    /// Registers the connection task's waker, then returns (and clears)
    /// whether there is news. Register-then-check means a wake between the
    /// two is seen now, and one after is delivered to the waker.
    pub(crate) fn poll_news(&self, cx: &mut Context<'_>) -> bool {
        {
            let mut waker = lock(&self.waker);
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        self.news.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn set_epoch(&self, epoch: Epoch) {
        *lock(&self.epoch) = epoch;
    }

    pub(crate) fn epoch(&self) -> Epoch {
        *lock(&self.epoch)
    }

    pub(crate) fn set_keep_alive(&self, seconds: u16) {
        // [MQTT-3.1.2-24]: one and a half times the keep-alive.
        self.keep_alive_ms.store(u64::from(seconds) * 1500, Ordering::Relaxed);
    }

    pub(crate) fn set_free_window(&self, free: u32) {
        self.free_window.store(free, Ordering::Relaxed);
    }

    pub(crate) fn free_window(&self) -> u32 {
        self.free_window.load(Ordering::Relaxed)
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Sets when the connection's credentials stop being valid.
    pub(crate) fn set_valid_until(&self, at_ms: u64) {
        self.valid_until_ms.store(at_ms, Ordering::Relaxed);
    }

    /// Flags the connection if its keep-alive or its credentials have run
    /// out at `now_ms`.
    pub(crate) fn check_keep_alive(&self, now_ms: u64) {
        let limit = self.keep_alive_ms.load(Ordering::Relaxed);
        if limit > 0 && now_ms.saturating_sub(self.last_seen_ms.load(Ordering::Relaxed)) > limit {
            self.flags.fetch_or(KEEP_ALIVE_EXPIRED, Ordering::SeqCst);
            self.wake();
        }
        let valid_until = self.valid_until_ms.load(Ordering::Relaxed);
        if valid_until > 0 && now_ms >= valid_until {
            self.flags.fetch_or(CREDENTIALS_EXPIRED, Ordering::SeqCst);
            self.wake();
        }
    }

    /// Records when the session's oldest request waiting for the router was
    /// sent (`None`: none waits).
    pub(crate) fn set_awaiting_since(&self, since: Option<u64>) {
        self.awaiting_since_ms.store(since.unwrap_or(0), Ordering::Relaxed);
    }

    /// Flags the connection if a request of its session has waited for the
    /// router for `timeout_ms` at `now_ms`.
    pub(crate) fn check_overdue(&self, now_ms: u64, timeout_ms: u64) {
        let since = self.awaiting_since_ms.load(Ordering::Relaxed);
        if since > 0 && now_ms.saturating_sub(since) >= timeout_ms {
            self.flags.fetch_or(REPLY_OVERDUE, Ordering::SeqCst);
            self.wake();
        }
    }

    /// Whether a request waited too long; clears the flag.
    pub(crate) fn take_overdue(&self) -> bool {
        self.flags.fetch_and(!REPLY_OVERDUE, Ordering::SeqCst) & REPLY_OVERDUE != 0
    }

    pub(crate) fn credentials_expired(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & CREDENTIALS_EXPIRED != 0
    }

    pub(crate) fn revoke(&self) {
        self.flags.fetch_or(REVOKED, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn shut_down(&self) {
        self.flags.fetch_or(SHUTTING_DOWN, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & SHUTTING_DOWN != 0
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & REVOKED != 0
    }

    pub(crate) fn keep_alive_expired(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & KEEP_ALIVE_EXPIRED != 0
    }

    /// Hands an item over. Deliveries beyond `capacity` waiting items are
    /// refused (the caller counts the drop); replies always fit, since they
    /// are bounded by the connection's own requests.
    pub(crate) fn push(&self, item: Inbound, capacity: usize) -> bool {
        self.push_within(item, capacity, usize::MAX)
    }

    /// Like [`ConnHandle::push`], and a delivery is also refused when the
    /// inbox holds `byte_capacity` payload bytes: a connection that stops
    /// reading holds at most that much, however large its messages.
    pub(crate) fn push_within(&self, item: Inbound, capacity: usize, byte_capacity: usize) -> bool {
        {
            let mut inbox = lock(&self.inbox);
            // Checked under the inbox lock: nothing lands after the last
            // `close_inbox` drain.
            if self.flags.load(Ordering::SeqCst) & INBOX_CLOSED != 0 {
                return false;
            }
            let queue = inbox.get_or_insert_with(VecDeque::new);
            if let Inbound::Deliver(queued) = &item {
                let size = queued.message.payload.len();
                let bytes = self.inbox_bytes.load(Ordering::Relaxed);
                if queue.len() >= capacity || (bytes > 0 && bytes + size > byte_capacity) {
                    return false;
                }
                self.inbox_bytes.store(bytes + size, Ordering::Relaxed);
            }
            queue.push_back(item);
        }
        self.wake();
        true
    }

    /// Refuses every later hand-over and returns what is waiting: the
    /// connection's last look at its inbox.
    pub(crate) fn close_inbox(&self) -> Option<VecDeque<Inbound>> {
        let mut inbox = lock(&self.inbox);
        self.flags.fetch_or(INBOX_CLOSED, Ordering::SeqCst);
        self.inbox_bytes.store(0, Ordering::Relaxed);
        inbox.take()
    }

    /// Puts `items` back at the front of the inbox, ahead of anything that
    /// arrived since they were taken.
    pub(crate) fn put_back(&self, mut items: VecDeque<Inbound>) {
        if items.is_empty() {
            return;
        }
        {
            let mut inbox = lock(&self.inbox);
            let back: usize = items
                .iter()
                .map(|item| match item {
                    Inbound::Deliver(queued) => queued.message.payload.len(),
                    _ => 0,
                })
                .sum();
            self.inbox_bytes.fetch_add(back, Ordering::Relaxed);
            if let Some(newer) = inbox.take() {
                items.extend(newer);
            }
            *inbox = Some(items);
        }
        self.wake();
    }

    /// Takes everything waiting, releasing the queue's memory.
    pub(crate) fn take_inbox(&self) -> Option<VecDeque<Inbound>> {
        let mut inbox = lock(&self.inbox);
        self.inbox_bytes.store(0, Ordering::Relaxed);
        inbox.take()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Gateway counters, by named policy.
#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// Connections accepted.
    pub connections_opened: AtomicU64,
    /// Connections ended, by why.
    pub connections_closed: CloseReasons,
    /// Publishes taken from clients and sent on to be routed.
    pub messages_received: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
    /// Deliveries dropped because a connection's inbox was full.
    pub dropped_connection_backlog: AtomicU64,
    /// Messages delivered to local subscribers.
    pub deliveries: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshakes_failed: AtomicU64,
    /// CONNECTs refused because the client id was not the one the client
    /// certificate names.
    pub certificate_mismatches: AtomicU64,
    /// Publishes (and wills) the access rules refused.
    pub acl_denied_publish: AtomicU64,
    /// Subscriptions the access rules refused.
    pub acl_denied_subscribe: AtomicU64,
    /// Connections ended with 0x96 for publishing past their rate.
    pub publish_rate_exceeded: AtomicU64,
    /// CONNECTs refused with 0x9F: past the connect rate.
    pub connect_rate_exceeded: AtomicU64,
    /// Sockets closed on accept: too many not connected yet.
    pub pending_connects_refused: AtomicU64,
    /// CONNECTs refused with 0x89: past the memory high-water mark.
    pub connects_shed: AtomicU64,
    /// Publishes, subscribes and unsubscribes answered with an error
    /// because no router answered them within the reply timeout.
    pub requests_given_up: AtomicU64,
    /// Acknowledgements of persistent sessions' deliveries not passed on to
    /// the router because too many waited (policy: the message stays in
    /// the session's inbox and is resent with DUP on its next connection).
    pub acks_dropped: AtomicU64,
}

impl GatewayCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Connections ended, by the reason code they ended with, and those lost
/// without a word from either side (the socket closed or failed).
#[derive(Debug)]
pub struct CloseReasons {
    by_code: Box<[AtomicU64]>,
    lost: AtomicU64,
}

impl Default for CloseReasons {
    fn default() -> Self {
        CloseReasons { by_code: (0..=u8::MAX).map(|_| AtomicU64::new(0)).collect(), lost: AtomicU64::new(0) }
    }
}

impl CloseReasons {
    /// Counts a connection that ended with `close`.
    pub(crate) fn count(&self, close: &crate::session::Close) {
        let counter = if close.reason == herald_core::ReasonCode::UnspecifiedError && !close.notify {
            &self.lost
        } else {
            &self.by_code[usize::from(close.reason.as_u8())]
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every reason seen so far with its count, as metric labels:
    /// `normal` (a client's DISCONNECT), `lost`, or the reason code's name.
    pub fn counts(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .by_code
            .iter()
            .enumerate()
            .filter_map(|(code, count)| {
                let count = count.load(Ordering::Relaxed);
                let reason = herald_core::ReasonCode::from_u8(code as u8)?;
                let label = match reason {
                    herald_core::ReasonCode::Success => "normal".to_owned(),
                    other => other.describe().replace([' ', '-'], "_"),
                };
                (count > 0).then_some((label, count))
            })
            .collect();
        counts.push(("lost".to_owned(), self.lost.load(Ordering::Relaxed)));
        counts
    }
}

/// The local subscription index: which of this gateway's connections
/// subscribe to what, and how many local subscriptions each `(app, filter)`
/// route has (the router knows only the route).
#[derive(Debug, Default)]
pub(crate) struct LocalIndex {
    trees: HashMap<AppId, TopicTree<ConnId, LocalSubscription>>,
    route_counts: HashMap<(AppId, TopicFilter), usize>,
    /// Members of shared subscription groups: the router sends such a
    /// group's messages with `DeliverShared`, never through the trees.
    shared: HashMap<(AppId, TopicFilter), SharedMembers>,
    /// Per app, the connections subscribed to their own per-device topic:
    /// a tag or broadcast send (`DeliverPush`) reaches them without a match.
    push_members: HashMap<AppId, HashMap<ConnId, LocalSubscription>>,
}

/// This gateway's members of one shared subscription group.
#[derive(Debug, Default)]
pub(crate) struct SharedMembers {
    pub(crate) members: Vec<(ConnId, LocalSubscription)>,
    pub(crate) dispatcher: Dispatcher<ConnId>,
}

/// Route changes produced by index updates, for the router.
#[derive(Debug, Default)]
pub(crate) struct RouteChanges {
    pub(crate) add: Vec<(AppId, TopicFilter)>,
    pub(crate) remove: Vec<(AppId, TopicFilter)>,
}

impl LocalIndex {
    pub(crate) fn add(
        &mut self,
        app: &AppId,
        filter: &TopicFilter,
        conn: ConnId,
        sub: LocalSubscription,
        changes: &mut RouteChanges,
    ) {
        let added = if filter.share_group().is_some() {
            let group = self.shared.entry((app.clone(), filter.clone())).or_default();
            match group.members.iter_mut().find(|(c, _)| *c == conn) {
                Some(member) => {
                    member.1 = sub;
                    false
                }
                None => {
                    group.members.push((conn, sub));
                    true
                }
            }
        } else {
            let tree = self.trees.entry(app.clone()).or_default();
            tree.insert(filter.match_filter(), conn, sub).is_none()
        };
        // A per-device filter has no route: the router reaches the device
        // through the session registry.
        if filter.push_client().is_some_and(|client| !client.is_empty()) {
            self.push_members.entry(app.clone()).or_default().insert(conn, sub);
        }
        if added && filter.push_client().is_none() {
            let count = self.route_counts.entry((app.clone(), filter.clone())).or_default();
            *count += 1;
            if *count == 1 {
                changes.add.push((app.clone(), filter.clone()));
            }
        }
    }

    pub(crate) fn remove(
        &mut self,
        app: &AppId,
        filter: &TopicFilter,
        conn: ConnId,
        changes: &mut RouteChanges,
    ) {
        let key = (app.clone(), filter.clone());
        let removed = if filter.share_group().is_some() {
            let Some(group) = self.shared.get_mut(&key) else { return };
            let before = group.members.len();
            group.members.retain(|(c, _)| *c != conn);
            let removed = group.members.len() < before;
            if group.members.is_empty() {
                self.shared.remove(&key);
            }
            removed
        } else {
            let Some(tree) = self.trees.get_mut(app) else { return };
            tree.remove(filter.match_filter(), &conn).is_some()
        };
        if filter.push_client().is_some()
            && let Some(members) = self.push_members.get_mut(app)
        {
            members.remove(&conn);
            if members.is_empty() {
                self.push_members.remove(app);
            }
        }
        if !removed || filter.push_client().is_some() {
            return;
        }
        if let Some(count) = self.route_counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.route_counts.remove(&key);
                changes.remove.push(key);
            }
        }
    }

    /// Returns every `(app, filter)` this gateway has local subscribers for:
    /// its whole route set.
    pub(crate) fn routes(&self) -> Vec<(AppId, TopicFilter)> {
        self.route_counts.keys().cloned().collect()
    }

    /// Returns the connections of `app` subscribed to their per-device
    /// topic, with their subscriptions to it.
    pub(crate) fn push_members(&self, app: &AppId) -> Vec<(ConnId, LocalSubscription)> {
        self.push_members.get(app).map(|m| m.iter().map(|(c, s)| (*c, *s)).collect()).unwrap_or_default()
    }

    /// Returns `conn`'s subscription to its per-device topic in `app`.
    pub(crate) fn push_member(&self, app: &AppId, conn: ConnId) -> Option<LocalSubscription> {
        self.push_members.get(app).and_then(|m| m.get(&conn)).copied()
    }

    /// Returns the members of the shared group `filter` of `app`.
    pub(crate) fn shared_group(&mut self, app: &AppId, filter: &TopicFilter) -> Option<&mut SharedMembers> {
        self.shared.get_mut(&(app.clone(), filter.clone()))
    }

    /// Returns, per local connection, the delivery of `message`: the highest
    /// QoS of its matching subscriptions and all their identifiers (§3.3.4).
    pub(crate) fn matches(
        &self,
        message: &Message,
        out: &mut Vec<(ConnId, LocalSubscription, QoS, Vec<u32>)>,
    ) {
        let Some(tree) = self.trees.get(&message.app) else { return };
        tree.for_each_match(message.topic.as_str(), |conn, sub| {
            let qos = sub.qos.min(message.qos);
            match out.iter_mut().find(|(c, ..)| c == conn) {
                Some(entry) => {
                    entry.2 = entry.2.max(qos);
                    entry.3.extend(sub.identifier);
                }
                None => out.push((*conn, *sub, qos, sub.identifier.into_iter().collect())),
            }
        });
    }
}

/// Connections by id, in shards so that registration does not contend.
#[derive(Debug)]
pub(crate) struct Connections {
    shards: Vec<Mutex<HashMap<ConnId, Arc<ConnHandle>>>>,
    /// Connections by a hash of their session key (the handle holds the
    /// key itself, so it is not stored twice); the handle's key is checked
    /// on lookup, so a hash collision costs a comparison, not a mistake.
    sessions: Mutex<HashMap<u64, SessionConnections>>,
    hasher: RandomState,
}

const SHARDS: usize = 16;

impl Connections {
    pub(crate) fn new() -> Connections {
        Connections {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            sessions: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, id: ConnId) -> MutexGuard<'_, HashMap<ConnId, Arc<ConnHandle>>> {
        lock(&self.shards[(id as usize) % SHARDS])
    }

    pub(crate) fn insert(&self, handle: Arc<ConnHandle>) {
        let hash = self.hasher.hash_one(&*handle.key);
        match lock(&self.sessions).entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(SessionConnections::One(handle.id));
            }
            Entry::Occupied(mut slot) => slot.get_mut().push(handle.id),
        }
        self.shard(handle.id).insert(handle.id, handle);
    }

    pub(crate) fn remove(&self, handle: &ConnHandle) {
        self.shard(handle.id).remove(&handle.id);
        let hash = self.hasher.hash_one(&*handle.key);
        let mut sessions = lock(&self.sessions);
        if let Some(ids) = sessions.get_mut(&hash)
            && ids.remove(handle.id)
        {
            sessions.remove(&hash);
        }
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<Arc<ConnHandle>> {
        self.shard(id).get(&id).cloned()
    }

    /// Returns the connection that sent request `request`.
    pub(crate) fn by_request(&self, request: u64) -> Option<Arc<ConnHandle>> {
        self.get(request >> REQUEST_SEQ_BITS)
    }

    /// Returns the connections of `session` (more than one only during a
    /// takeover on this gateway).
    pub(crate) fn of_session(&self, session: &SessionKey) -> Vec<Arc<ConnHandle>> {
        let hash = self.hasher.hash_one(session);
        let ids = lock(&self.sessions).get(&hash).map(SessionConnections::to_vec).unwrap_or_default();
        ids.into_iter().filter_map(|id| self.get(id)).filter(|h| *h.key == *session).collect()
    }

    /// Hands `pending` to the connection of `session` holding `epoch`.
    /// Returns false when there is none (it closed meanwhile).
    pub(crate) fn hand_over(&self, session: &SessionKey, epoch: Epoch, pending: Vec<QueuedMessage>) -> bool {
        let hash = self.hasher.hash_one(session);
        let ids = lock(&self.sessions).get(&hash).map(SessionConnections::to_vec).unwrap_or_default();
        let target =
            ids.into_iter().filter_map(|id| self.get(id)).find(|h| *h.key == *session && h.epoch() == epoch);
        match target {
            Some(handle) => handle.push(Inbound::Handover(pending), usize::MAX),
            None => false,
        }
    }

    /// Flags every connection of `session` holding `epoch` or older. A
    /// connection still waiting for its own claim holds no epoch yet and is
    /// not the one revoked (its claim is what revoked the older one).
    pub(crate) fn revoke(&self, session: &SessionKey, epoch: Epoch) {
        self.revoke_where(session, epoch, |_| true);
    }

    /// [`Connections::revoke`], of the connections `which` picks.
    pub(crate) fn revoke_where(
        &self,
        session: &SessionKey,
        epoch: Epoch,
        which: impl Fn(&ConnHandle) -> bool,
    ) {
        let hash = self.hasher.hash_one(session);
        let ids = lock(&self.sessions).get(&hash).map(SessionConnections::to_vec).unwrap_or_default();
        for id in ids {
            if let Some(handle) = self.get(id)
                && *handle.key == *session
                && handle.epoch() != Epoch::default()
                && handle.epoch() <= epoch
                && which(&handle)
            {
                handle.revoke();
            }
        }
    }

    /// Calls `f` on every connection.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Arc<ConnHandle>)) {
        for shard in &self.shards {
            let handles: Vec<Arc<ConnHandle>> = lock(shard).values().cloned().collect();
            handles.iter().for_each(&mut f);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

/// The connections of one session key hash: almost always one; more during
/// a takeover on this gateway (or a hash collision).
#[derive(Debug)]
enum SessionConnections {
    One(ConnId),
    Many(Vec<ConnId>),
}

impl SessionConnections {
    fn push(&mut self, id: ConnId) {
        match self {
            SessionConnections::One(first) => *self = SessionConnections::Many(vec![*first, id]),
            SessionConnections::Many(ids) => ids.push(id),
        }
    }

    /// Removes `id`; returns true when none is left.
    fn remove(&mut self, id: ConnId) -> bool {
        match self {
            SessionConnections::One(only) => *only == id,
            SessionConnections::Many(ids) => {
                ids.retain(|other| *other != id);
                if let [last] = ids[..] {
                    *self = SessionConnections::One(last);
                }
                false
            }
        }
    }

    fn to_vec(&self) -> Vec<ConnId> {
        match self {
            SessionConnections::One(id) => vec![*id],
            SessionConnections::Many(ids) => ids.clone(),
        }
    }
}

/// The shared index, read by the delivery task, written on (un)subscribe.
pub(crate) type SharedIndex = RwLock<LocalIndex>;

/// Returns the next message id of this gateway.
pub(crate) fn message_id(node: NodeId, now_ms: u64, sequence: &AtomicU64) -> herald_core::MessageId {
    herald_core::MessageId::compose(now_ms, node, sequence.fetch_add(1, Ordering::Relaxed))
}
