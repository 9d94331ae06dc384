//! The router's pure state machine.
//!
//! Inputs: uplink items from a gateway and the current time. Outputs: the
//! downlink items to send, each addressed to a gateway. No I/O, no clock.

mod api_keys;
mod device_users;
mod directory;
mod expiring;
mod fanout;
mod idempotency;
mod journal;
mod leases;
mod located;
mod push;
mod registry;
mod retract;
mod routing;
mod sessions;
mod shared;
mod status;
mod takeover;

use herald_core::{
    AppId, ClientId, NodeId, SessionKey, ShardGenerations, ShardId, SharedStrategy, TopicFilter, TopicTree,
    UnixMillis,
};
use herald_proto::Message;
use herald_proto::journal::Fact;
use herald_proto::seam::{Downlink, Uplink};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

pub use api_keys::MAX_API_KEYS_PER_APP;
pub use fanout::MAX_FANOUT_ENTRIES;
pub use idempotency::{IDEMPOTENCY_TTL_MS, MAX_IDEMPOTENCY_KEYS};
pub use journal::DurableState;
pub use located::{ToLocate, may_locate};
pub use registry::{Changes, Holder, RegistryEntry};
pub use sessions::SessionRecord;

/// What a router holds now, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateGauges {
    /// Sessions known (online, and persistent offline).
    pub sessions: usize,
    /// Sessions with a live connection.
    pub online: usize,
    /// Sessions that outlive their connection.
    pub persistent: usize,
    /// Subscriptions recorded for persistent sessions.
    pub subscriptions: usize,
    /// Routes: (gateway, app, filter) triples the gateways listed.
    pub routes: usize,
    /// Messages queued for offline persistent sessions.
    pub inbox_messages: usize,
    /// Their payload bytes.
    pub inbox_bytes: usize,
}
pub use status::{MAX_RECORDS_PER_APP, ONLINE_ONLY_FINAL_MS, RECORD_KEEP_MS};

/// Limits of the router state.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Messages queued per offline persistent session (and per shared
    /// group); past it, `overflow` decides.
    pub max_queued_messages: usize,
    /// Payload bytes queued per offline persistent session (0: no limit);
    /// past it, `overflow` decides.
    pub max_queued_bytes: usize,
    /// What a full offline queue does with one more message.
    pub overflow: Overflow,
    /// Upper bound on any session expiry interval, in seconds, so that no
    /// session lives forever.
    pub max_session_expiry_seconds: u32,
    /// How shared subscription groups pick a gateway.
    pub shared_strategy: SharedStrategy,
    /// How long a gateway whose link dropped keeps its sessions (their
    /// wills wait, the gateway may take them back), in milliseconds.
    pub gateway_lease_ms: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            overflow: Overflow::RefuseNewest,
            max_session_expiry_seconds: 7 * 24 * 3600,
            shared_strategy: SharedStrategy::RoundRobin,
            gateway_lease_ms: 15_000,
        }
    }
}

/// The overflow policy of an offline session's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Keep what is queued; the new message is not queued for that session
    /// (`dropped_queue_full`).
    #[default]
    RefuseNewest,
    /// Make room by dropping the oldest queued messages
    /// (`dropped_queue_oldest`).
    DropOldest,
}

impl Overflow {
    /// Parses the configuration form (`refuse_newest`, `drop_oldest`).
    pub fn parse(name: &str) -> Option<Overflow> {
        match name {
            "refuse_newest" => Some(Overflow::RefuseNewest),
            "drop_oldest" => Some(Overflow::DropOldest),
            _ => None,
        }
    }
}

/// Counters of everything the router drops or refuses, by named policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterCounters {
    /// Items refused because they carried a stale ownership epoch.
    pub stale_epoch_refused: u64,
    /// QoS 0 messages not queued for offline sessions (policy: QoS 0 is
    /// never queued offline).
    pub dropped_offline_qos0: u64,
    /// Messages refused by a full offline queue (policy: refuse newest).
    pub dropped_queue_full: u64,
    /// Queued messages dropped to make room (policy: drop oldest).
    pub dropped_queue_oldest: u64,
    /// Messages dropped because they expired before delivery.
    pub dropped_expired: u64,
    /// Deliveries dropped because a gateway's downlink was full.
    pub dropped_gateway_backlog: u64,
    /// Will messages published.
    pub wills_published: u64,
    /// Persistent sessions ended by expiry.
    pub sessions_expired: u64,
    /// Messages routed.
    pub messages_routed: u64,
    /// Inbox messages their clients acknowledged (and so removed).
    pub inbox_acknowledged: u64,
    /// Messages for online persistent sessions that their full inboxes
    /// did not keep (by the overflow policy): still delivered through the
    /// gateway, but not kept against its loss.
    pub inbox_overflow_online: u64,
    /// Releases of taken-over connections whose unacknowledged messages
    /// were handed to the session's new owner.
    pub handed_over: u64,
    /// Gateways disconnected because their downlink was full of replies.
    pub gateways_overloaded: u64,
    /// QoS 0 messages for a shared subscription group with no member
    /// (policy: QoS 0 is never queued).
    pub dropped_shared_no_member: u64,
    /// Messages not queued again for a session whose queue already holds
    /// them (a gateway replayed a publish whose answer its old link lost).
    pub duplicates_ignored: u64,
    /// Publishes held by a router that took over until the gateways it
    /// knew had linked again (or their leases ended).
    pub publishes_held: u64,
    /// Fan-out log entries dropped to keep a log within its cap (policy:
    /// drop oldest).
    pub fanout_dropped: u64,
    /// Sessions that came back after entries meant for them were dropped
    /// from their app's fan-out log.
    pub fanout_gaps: u64,
}

/// Publishes a router that took over holds at most while its gateways
/// link again; past it, publishes are routed at once (policy: availability
/// over completeness of routes for the rest of the window).
const MAX_HELD: usize = 100_000;

/// What a router that took over holds until its gateways are back.
#[derive(Debug)]
enum Held {
    Publish(herald_proto::seam::Publish),
    /// With where its devices are, when their shards' owners were asked.
    Push(herald_proto::seam::Push, Option<Arc<crate::owner::Locations>>),
}

/// A downlink item addressed to a gateway.
pub type Effect = (NodeId, Downlink);

/// Everything the router owns, as plain data.
#[derive(Debug, Default)]
pub struct RouterState {
    config: RouterConfig,
    /// Each registry shard's generation: the first half of every epoch
    /// granted for its sessions. A restarted or moved shard gets a new
    /// generation so epochs never go backwards (ADR 0033).
    generations: ShardGenerations,
    /// Each shard's generation as the replicated table says now: shards
    /// move and restart while this router serves (ADR 0033). A grant of
    /// an older generation comes from an owner that has lost the shard.
    table: ShardGenerations,
    counter: u64,
    sessions: HashMap<SessionKey, SessionRecord>,
    /// Which gateways have local subscribers, per app and filter.
    /// Keyed by `(gateway, filter)`, for the same reason as `inboxes`.
    routes: HashMap<AppId, TopicTree<(NodeId, TopicFilter), ()>>,
    /// Each gateway's routes, to remove them when the gateway is gone.
    gateway_routes: HashMap<NodeId, HashSet<(AppId, TopicFilter)>>,
    /// Subscriptions of persistent sessions, online or not: what a
    /// message matches here goes into those sessions' inboxes.
    /// Keyed by `(client, filter)`: filters that differ only by a `$share/`
    /// prefix share a trie path but are separate subscriptions.
    inboxes: HashMap<AppId, TopicTree<(ClientId, TopicFilter), sessions::InboxEntry>>,
    retained: HashMap<AppId, routing::RetainedStore>,
    /// Shared subscription groups.
    shared: HashMap<AppId, shared::SharedGroups>,
    /// Each app's device directory (aliases and tags).
    directories: HashMap<AppId, herald_core::directory::Directory>,
    /// Each app's fan-out log (tag and broadcast sends).
    fanout: HashMap<AppId, fanout::Log>,
    /// Idempotency keys of sends, for 24 hours.
    idempotency: idempotency::Keys,
    /// Push-API messages' delivery records.
    records: status::Records,
    /// Scheduled wills and expiries: `(deadline, session)`.
    timers: BTreeSet<(UnixMillis, SessionKey)>,
    /// Gateways whose link dropped, with the sessions kept for them.
    leases: HashMap<NodeId, leases::Lease>,
    /// When each lease ends: `(deadline, gateway)`.
    lease_timers: BTreeSet<(UnixMillis, NodeId)>,
    /// Gateways linked and not gone (mirrors the durable set).
    known_gateways: HashSet<NodeId>,
    /// Linked gateways that report their clients' acknowledgements.
    ack_gateways: HashSet<NodeId>,
    /// Linked gateways of an earlier version, which do not: their online
    /// sessions get no inbox, and they are never sent `Progress::MaybeSent`.
    legacy_gateways: HashSet<NodeId>,
    /// API keys made at run time.
    api_keys: api_keys::ApiKeyTable,
    users: device_users::UserTable,
    /// Gateways a router that took over waits for before it routes
    /// publishes: their routes are not known yet.
    settling: HashSet<NodeId>,
    /// Publishes waiting for `settling` to empty, in arrival order.
    held: std::collections::VecDeque<(NodeId, Held)>,
    counters: RouterCounters,
    /// Facts about durable state since the last [`RouterState::take_journal`].
    journal: Vec<Fact>,
    /// Persistent sessions changed since then: journaled whole.
    dirty_sessions: HashSet<SessionKey>,
    /// Persistent sessions whose record changed but not their inbox: they
    /// are journaled without it (`Fact::SessionMeta`), so a reconnect or a
    /// subscription costs the same whatever the inbox holds.
    dirty_meta: HashSet<SessionKey>,
    /// Shared groups whose queue changed since then: journaled whole.
    dirty_groups: HashSet<(AppId, TopicFilter)>,
    /// Sessions whose ownership changed since the registry's external
    /// store last took them (`None`: no external store).
    registry_dirty: registry::Changes,
    /// Claims waiting for the live connection they take over to end.
    takeovers: HashMap<SessionKey, takeover::PendingClaim>,
}

impl RouterState {
    /// Returns an empty state with every registry shard at `generation`.
    pub fn new(config: RouterConfig, generation: u64) -> RouterState {
        RouterState::with_generations(config, ShardGenerations::uniform(generation))
    }

    /// Returns an empty state with each registry shard at its generation.
    pub fn with_generations(config: RouterConfig, generations: ShardGenerations) -> RouterState {
        RouterState { config, table: generations.clone(), generations, ..RouterState::default() }
    }

    /// Follows the replicated shard table: each shard's generation now.
    pub fn follow_shard_table(&mut self, table: ShardGenerations) {
        self.table = table;
    }

    /// The generation of the registry shard `session` belongs to, when this
    /// router started serving (what sessions given back are checked by).
    fn generation_of(&self, session: &SessionKey) -> u64 {
        self.generations.get(ShardId::of(session))
    }

    /// The generation of `session`'s shard as the table says now (never
    /// below the one this router started with).
    fn table_generation_of(&self, session: &SessionKey) -> u64 {
        let shard = ShardId::of(session);
        self.table.get(shard).max(self.generations.get(shard))
    }

    /// Returns the counters.
    pub fn counters(&self) -> &RouterCounters {
        &self.counters
    }

    /// Records a gateway disconnected for not draining its downlink.
    pub fn count_gateway_overloaded(&mut self) {
        self.counters.gateways_overloaded += 1;
    }

    /// Records deliveries dropped by a full gateway downlink.
    pub fn count_gateway_backlog_drop(&mut self) {
        self.counters.dropped_gateway_backlog += 1;
    }

    /// Returns the record of `session`, if any.
    pub fn session(&self, session: &SessionKey) -> Option<&SessionRecord> {
        self.sessions.get(session)
    }

    /// Returns each gateway holding sessions, with how many.
    pub fn online_per_gateway(&self) -> Vec<(NodeId, usize)> {
        let mut counts: HashMap<NodeId, usize> = HashMap::new();
        for record in self.sessions.values() {
            if let Some(owner) = record.owner {
                *counts.entry(owner).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }

    /// Returns the number of sessions known (online and persistent offline).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// What the router holds, for metrics (one pass over the sessions).
    pub fn gauges(&self) -> StateGauges {
        let mut gauges = StateGauges { sessions: self.sessions.len(), ..StateGauges::default() };
        for record in self.sessions.values() {
            gauges.online += usize::from(record.owner.is_some());
            gauges.persistent += usize::from(record.is_persistent());
            gauges.subscriptions += record.subscriptions().len();
            let (messages, bytes) = record.queued();
            gauges.inbox_messages += messages;
            gauges.inbox_bytes += bytes;
        }
        gauges.routes = self.gateway_routes.values().map(HashSet::len).sum();
        gauges
    }

    /// Returns the number of retained messages of `app`.
    pub fn retained_count(&self, app: &AppId) -> usize {
        self.retained.get(app).map_or(0, routing::RetainedStore::len)
    }

    /// Applies one uplink item from `gateway` at time `now`.
    pub fn apply(&mut self, gateway: NodeId, item: Uplink, now: UnixMillis, out: &mut Vec<Effect>) {
        match item {
            Uplink::Claim(claim) => self.claim(gateway, claim, now, out),
            Uplink::Release(release) => {
                let request = release.request;
                // A connection that ended while its gateway was unlinked:
                // the session is the gateway's to end.
                if self.sessions.get(&release.session).is_some_and(|r| r.owner.is_none()) {
                    self.take_back(gateway, &release.session, release.epoch, now);
                }
                self.release(release, now, out);
                // After every delivery routed before the release, on the
                // same ordered downlink.
                out.push((gateway, Downlink::Released { request }));
                // A claim waiting for this connection to end goes ahead.
                self.resume_takeovers(now, out);
            }
            Uplink::Reattach { sessions, last } => self.reattach(gateway, sessions, last, now, out),
            Uplink::Requeue { session, epoch, messages } => self.requeue(&session, epoch, messages, out),
            Uplink::Acked(acks) => self.acked(gateway, acks),
            Uplink::Routes { add, remove } => self.change_routes(gateway, add, remove, out),
            Uplink::Redispatch { filter, messages } => {
                for message in messages {
                    self.dispatch_to_group(&filter, message, out);
                }
            }
            Uplink::Subscribe { request, session, epoch, subscriptions } => {
                let result = self.subscribe(&session, epoch, subscriptions, now);
                out.push((gateway, Downlink::Subscribed { request, result }));
            }
            Uplink::Unsubscribe { request, session, epoch, filters } => {
                let result = self.unsubscribe(&session, epoch, &filters);
                out.push((gateway, Downlink::Unsubscribed { request, result }));
            }
            Uplink::Publish(publish) => {
                let checked = match &publish.from {
                    Some((session, epoch)) => self.check_epoch(session, *epoch),
                    None => Ok(()),
                };
                // Checked now, routed once every gateway's routes are back.
                if checked.is_ok() && self.holds() {
                    return self.hold(gateway, Held::Publish(publish));
                }
                let result = checked.map(|()| self.route(publish.message, now, out));
                if let Some(request) = publish.request {
                    out.push((gateway, Downlink::Published { request, result }));
                }
            }
            Uplink::Report { request, origin, batch, deltas } => {
                self.report(gateway, request, (origin, batch), deltas, out);
            }
            Uplink::Directory { request, app, op, limits } => {
                let result = self.directory(app, op, &limits, None, now, out);
                out.push((gateway, Downlink::DirectoryDone { request, result }));
            }
            Uplink::Push(push) => self.apply_push(gateway, push, None, now, out),
        }
    }

    /// Applies a push from `gateway`, with where its devices are when
    /// their shards' owners were asked (`located`, ADR 0033; else the
    /// devices are found in this router's records).
    pub fn apply_push(
        &mut self,
        gateway: NodeId,
        push: herald_proto::seam::Push,
        located: Option<Arc<crate::owner::Locations>>,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) {
        // Sessions are found in the registry: held, like publishes, until
        // every gateway has listed its sessions again.
        if self.holds() {
            return self.hold(gateway, Held::Push(push, located));
        }
        self.apply_held(gateway, Held::Push(push, located), now, out);
    }

    /// Fires every will and expiry due at `now`. Returns the next deadline.
    pub fn tick(&mut self, now: UnixMillis, out: &mut Vec<Effect>) -> Option<UnixMillis> {
        while let Some((deadline, _)) = self.timers.first() {
            if *deadline > now {
                break;
            }
            let Some((deadline, session)) = self.timers.pop_first() else { break };
            self.fire_timer(deadline, session, now, out);
        }
        let next_lease = self.expire_leases(now, out);
        let next_takeover = self.resume_takeovers(now, out);
        self.trim_fanout(now);
        self.expire_idempotency(now);
        self.forget_records(now);
        let next_timer = self.timers.first().map(|(deadline, _)| *deadline);
        next_timer.into_iter().chain(next_lease).chain(next_takeover).min()
    }

    /// Whether what is routed now must wait: gateways a restored router
    /// knew are linking again, and the held queue has room. Everything
    /// routed in that time (wills and pushes included) is held, in order.
    fn holds(&self) -> bool {
        !self.settling.is_empty() && self.held.len() < MAX_HELD
    }

    /// Holds `item` from `gateway` (see [`RouterState::holds`]).
    fn hold(&mut self, gateway: NodeId, item: Held) {
        self.counters.publishes_held += 1;
        self.held.push_back((gateway, item));
    }

    /// Routes a held (or not held) item and answers it.
    fn apply_held(&mut self, gateway: NodeId, item: Held, now: UnixMillis, out: &mut Vec<Effect>) {
        match item {
            Held::Publish(publish) => {
                let matched = self.route(publish.message, now, out);
                if let Some(request) = publish.request {
                    out.push((gateway, Downlink::Published { request, result: Ok(matched) }));
                }
            }
            Held::Push(push, located) => {
                let request = push.request;
                let result = self.push_once(push, located.as_deref(), now, out);
                out.push((gateway, Downlink::Pushed { request, result }));
            }
        }
    }

    fn route(&mut self, message: Arc<Message>, now: UnixMillis, out: &mut Vec<Effect>) -> bool {
        if message.is_expired(now) {
            self.counters.dropped_expired += 1;
            return false;
        }
        self.counters.messages_routed += 1;
        let mut compacted: Option<Arc<Message>> = None;
        let mut kept = || compacted.get_or_insert_with(|| Arc::new(message.compacted())).clone();
        if message.retain {
            let retained = if message.payload.is_empty() { message.clone() } else { kept() };
            self.retained.entry(message.app.clone()).or_default().store(&retained);
            self.journal.push(Fact::Retained(retained));
        }
        let mut matched = self.deliver_to_gateways(&message, out);
        matched |= self.dispatch_to_groups(&message, out);
        matched |= self.queue_for_persistent_sessions(&message, &mut kept);
        matched
    }
}

#[cfg(test)]
mod tests;
