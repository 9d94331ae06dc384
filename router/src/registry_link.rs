//! The router's side of the registry link (ADR 0033): one `Registry.Link`
//! stream per gateway, on every router, leader or not.
//!
//! ```text
//!   gateway ──RegistryHello──▶ router
//!   gateway ◀──ShardTable───── router   (now, and whenever its copy changes)
//!   gateway ──claim / release / list──▶ ShardOwner (the shards this router owns)
//!   gateway ◀──claimed / released / elsewhere── (answers)
//!   any gateway ◀──revoked── (a connection that lost its session)
//! ```
//!
//! The stream opens with the gateway's hello (contract version, cluster id,
//! gateway id); another version or cluster is refused with
//! `FailedPrecondition`. The table sent is this router's copy of the
//! replicated shard table, with the routers of the membership, so a gateway
//! learns every router and which one owns each shard; each is sent once the
//! owner has applied it (a gateway lists its sessions of the shards taken
//! as soon as it reads it). Claims, releases and
//! listings are applied to this router's [`ShardOwner`]; a session of a
//! shard owned elsewhere is answered with its owner.
//!
//! The wills of transient sessions are held here (a claim carries its will)
//! and published through the leader when their session ends: on this
//! router's own router while it leads, else sent to the leader's
//! `Registry.Wills`, again until it takes them (for [`WILL_PATIENCE`]).
//!
//! Queues: each gateway's downlink holds [`DOWNLINK`] items. Answers to a
//! gateway's own items wait for room (its stream is pushed back); a
//! revocation for another gateway whose downlink is full is not waited
//! for: it is dropped, with a warning, and that gateway gets no more
//! revocations until it links again (policy: the gateway learns what it
//! lost when it lists its sessions on a new link). Wills to publish wait
//! in a queue with no bound of its own: each is the will of a session this
//! router held, which the sessions' own admission bounds (a gateway lost
//! with all its sessions ends them at once). When the leader does not take
//! them for [`WILL_PATIENCE`], they are dropped, counted
//! (`herald_router_registry_wills_total{outcome="dropped"}`) and logged.

use crate::owner::{Granted, Located, OwnerEffect, Refused, ShardOwner};
use crate::raft::shards::TableView;
use crate::service::Router;
use herald_core::{Clock, Epoch, NodeId, SessionKey, ShardGenerations, ShardId, UnixMillis};
use herald_proto::grpc::pb::registry_client::RegistryClient;
use herald_proto::grpc::pb::registry_server::{Registry, RegistryServer};
use herald_proto::grpc::pb::{self, registry_claimed, registry_down, registry_up};
use herald_proto::grpc::{
    CONTRACT_VERSION, epoch_from_pb, epoch_to_pb, session_from_pb, session_to_pb, will_from_pb, will_to_pb,
};
use herald_proto::seam::{Claim, Reattach, Release, Will};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Items waiting on one gateway's downlink.
const DOWNLINK: usize = 1024;
/// How often gateway leases are checked.
const TICK: Duration = Duration::from_millis(250);
/// How long wills are sent again to the leader (one being elected, or cut
/// off) before they are dropped.
pub const WILL_PATIENCE: Duration = Duration::from_secs(30);
/// Wills sent to the leader in one call, at most, and bytes (about: a
/// single larger will goes alone).
const WILL_BATCH: usize = 256;
const WILL_BATCH_BYTES: usize = 16 << 20;
/// Batches of wills the leader remembers having published, to publish a
/// batch sent again once.
const TAKEN_BATCHES: usize = 4096;

type Downlink = mpsc::Sender<Result<pb::RegistryDown, Status>>;

/// Which of some keys the replicated state holds a persistent session of,
/// in their order (one read of the state for all of them).
pub type PersistentLookup = Arc<dyn Fn(&[SessionKey]) -> Vec<bool> + Send + Sync>;

/// The persistent sessions of the replicated state a filter picks, as
/// offline registry entries (`RaftNode::offline_sessions_where`).
pub type OfflineLookup =
    Arc<dyn Fn(&dyn Fn(&SessionKey) -> bool) -> Vec<crate::state::RegistryEntry> + Send + Sync>;

/// How often persistent sessions offline here are checked against the
/// replicated state (those it no longer holds expired, or a clean start
/// ended them).
const SWEEP: Duration = Duration::from_secs(5);

/// The Raft leader's node id, as this router knows it.
pub type LeaderLookup = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// What became of the wills this router's shards ended.
#[derive(Debug, Default)]
pub struct WillCounts {
    /// Published on this router, the leader.
    pub here: AtomicU64,
    /// Taken by the leader, another router.
    pub forwarded: AtomicU64,
    /// Dropped: no leader took them in time.
    pub dropped: AtomicU64,
}

/// The `Registry` gRPC service of a router.
#[derive(Clone)]
pub struct RegistryService {
    node: u64,
    cluster_id: String,
    table: watch::Receiver<TableView>,
    shared: Arc<Shared>,
}

struct Shared {
    owner: Mutex<ShardOwner>,
    /// The table the owner has applied: what the gateways are sent. A
    /// gateway lists its sessions of the shards a table gives this router,
    /// which the owner must own by then, or it would take the list for
    /// another router's and wait for a list that never comes.
    applied: watch::Sender<TableView>,
    gateways: Mutex<HashMap<NodeId, Downlink>>,
    persistent: PersistentLookup,
    clock: Arc<dyn Clock>,
    /// Gateways linked now.
    linked: AtomicU64,
    /// How many shards the table gives this router that it inherited from
    /// an earlier process and does not serve (its status tells the leader).
    inherited: Arc<AtomicU32>,
    /// Wills to publish through the leader, with when each was queued, and
    /// a wake-up for the task that sends them.
    wills: Mutex<std::collections::VecDeque<(tokio::time::Instant, Box<Will>)>>,
    wills_ready: tokio::sync::Notify,
    will_counts: WillCounts,
    /// Calls of other routers answered: locates, counts.
    answered: [AtomicU64; 2],
    /// This router's router while it leads; set once, when the task that
    /// sends the wills starts.
    serving: std::sync::OnceLock<watch::Receiver<Option<Router>>>,
    /// The batches of wills published for other routers (router,
    /// incarnation, batch), newest last.
    taken: Mutex<std::collections::VecDeque<(u64, u64, u64)>>,
    /// Where the changes of this router's shards go, when the registry is
    /// kept in Redis (set once).
    mirror: std::sync::OnceLock<Arc<crate::registry_redis::Mirror>>,
    /// Persistent sessions of this router's shards that only the replicated
    /// state knows (offline since before the shard came here), as last
    /// written whole to Redis: each leaves Redis when the replicated state
    /// no longer holds it, unless this router learned of it since.
    offline_written: Mutex<HashSet<SessionKey>>,
}

impl Shared {
    /// Those of `sessions` the replicated state holds no persistent
    /// session of.
    fn not_persistent(&self, sessions: Vec<SessionKey>) -> Vec<SessionKey> {
        if sessions.is_empty() {
            return sessions;
        }
        let persistent = (self.persistent)(&sessions);
        debug_assert_eq!(persistent.len(), sessions.len(), "one answer per session");
        sessions.into_iter().zip(persistent).filter(|(_, persistent)| !persistent).map(|(s, _)| s).collect()
    }

    fn owner(&self) -> std::sync::MutexGuard<'_, ShardOwner> {
        self.owner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn gateways(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Downlink>> {
        self.gateways.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends each revocation to its gateway, never waiting: a full or gone
    /// downlink is forgotten until the gateway links again. Wills go to the
    /// queue of wills to publish, and the sessions changed to Redis (offered
    /// with the owner locked, so in the order they changed): `owner` is the
    /// guard the effects were made under, let go once they are offered.
    fn deliver(&self, mut owner: std::sync::MutexGuard<'_, ShardOwner>, effects: Vec<OwnerEffect>) {
        if let Some(mirror) = self.mirror.get() {
            mirror.offer(owner.take_registry_changes());
        }
        drop(owner);
        for effect in effects {
            let (gateway, session, epoch) = match effect {
                OwnerEffect::Revoke { gateway, session, epoch } => (gateway, session, epoch),
                OwnerEffect::PublishWill { will, .. } => {
                    let queued = (tokio::time::Instant::now(), will);
                    self.wills.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push_back(queued);
                    self.wills_ready.notify_one();
                    continue;
                }
            };
            let down = pb::RegistryDown {
                item: Some(registry_down::Item::Revoked(pb::RegistryRevoked {
                    session: Some(session_to_pb(&session)),
                    epoch: Some(epoch_to_pb(epoch)),
                })),
            };
            let mut gateways = self.gateways();
            if let Some(downlink) = gateways.get(&gateway)
                && downlink.try_send(Ok(down)).is_err()
            {
                tracing::warn!(%gateway, "registry downlink full: revocations to it dropped until it links again");
                gateways.remove(&gateway);
            }
        }
    }
}

impl RegistryService {
    /// Refuses a call of another cluster or contract version (`what` names
    /// it in the refusal).
    fn same_contract(&self, what: &str, version: u32, cluster_id: &str) -> Result<(), Status> {
        if version == CONTRACT_VERSION && cluster_id == self.cluster_id {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "{what} of cluster {cluster_id} at contract version {version} (this router: {}, {CONTRACT_VERSION})",
            self.cluster_id
        )))
    }

    /// The service of router `node` in cluster `cluster_id`, sending
    /// `table` as it changes (kept by `RaftNode::watch_shard_table`) and
    /// owning the shards it names this router for, with gateway leases of
    /// `lease`. `persistent` tells whether the replicated state holds a
    /// persistent session. Spawns the task that follows the table and ends
    /// leases. Keeps `inherited` at the number of shards the table gives
    /// this router that it does not serve (`ShardOwner::inherited`).
    pub fn new(
        node: u64,
        cluster_id: String,
        table: watch::Receiver<TableView>,
        persistent: PersistentLookup,
        clock: Arc<dyn Clock>,
        lease: Duration,
        inherited: Arc<AtomicU32>,
    ) -> RegistryService {
        let mut table = table;
        // Applied here, once: `follow` applies the tables that come after.
        let view = table.borrow_and_update().clone();
        let shared = Arc::new(Shared {
            owner: Mutex::new(ShardOwner::new(node, lease.as_millis() as u64)),
            applied: watch::Sender::new(view.clone()),
            gateways: Mutex::default(),
            persistent,
            clock,
            linked: AtomicU64::new(0),
            inherited,
            wills: Mutex::default(),
            wills_ready: tokio::sync::Notify::new(),
            will_counts: WillCounts::default(),
            answered: Default::default(),
            serving: std::sync::OnceLock::new(),
            taken: Mutex::default(),
            mirror: std::sync::OnceLock::new(),
            offline_written: Mutex::default(),
        });
        set_table(&shared, &view, shared.clock.now());
        tokio::spawn(follow(Arc::downgrade(&shared), table.clone()));
        RegistryService { node, cluster_id, table, shared }
    }

    /// Publishes the wills of the sessions this router's shards end: on
    /// `serving`'s router while this router leads, else at the leader
    /// `leader` names (its address from the shard table's routers). Starts
    /// the task that does it; until then they wait in the queue. Once only.
    pub fn publish_wills_through(&self, serving: watch::Receiver<Option<Router>>, leader: LeaderLookup) {
        // Once: the first call sets `serving` and starts the task.
        if self.shared.serving.set(serving.clone()).is_err() {
            return;
        }
        let sender = WillSender {
            shared: Arc::downgrade(&self.shared),
            serving,
            leader,
            table: self.table.clone(),
            node: self.node,
            cluster_id: self.cluster_id.clone(),
            client: None,
            incarnation: herald_core::process_incarnation(),
            batch: 0,
        };
        tokio::spawn(sender.run());
    }

    /// Keeps the sessions of this router's shards in Redis from now on (ADR
    /// 0029, ADR 0033): each change after it is applied, and all of them
    /// at start, after any gap, and when shards are taken or restarted here
    /// (once their gateways listed them), with the persistent sessions
    /// `offline` finds in the replicated state that no gateway holds. The
    /// writer counts what it does in `stats`. Once only.
    pub fn keep_registry_in_redis(
        &self,
        config: crate::registry_redis::RedisRegistryConfig,
        stats: Arc<crate::registry_redis::RegistryStats>,
        offline: OfflineLookup,
    ) {
        self.shared.owner().track_registry();
        let snapshots = OwnerSnapshots { shared: Arc::downgrade(&self.shared), offline };
        let (mirror, writer) = crate::registry_redis::start(config, snapshots, stats);
        if self.shared.mirror.set(mirror).is_ok() {
            tokio::spawn(writer);
        }
    }

    /// Calls of other routers (the one serving the gateways) this router's
    /// shards answered: where sessions are (`Locate`), and how many online
    /// sessions of an app each gateway holds (`CountOnline`).
    pub fn answered(&self) -> [u64; 2] {
        self.shared.answered.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// What became of the wills this router's shards ended.
    pub fn wills(&self) -> [u64; 3] {
        let counts = &self.shared.will_counts;
        [&counts.here, &counts.forwarded, &counts.dropped].map(|c| c.load(Ordering::Relaxed))
    }

    /// How many gateways are linked now.
    pub fn linked(&self) -> u64 {
        self.shared.linked.load(Ordering::Relaxed)
    }

    /// Shards served, shards inherited and not served, sessions known.
    pub fn counts(&self) -> (u64, u64, u64) {
        let owner = self.shared.owner();
        (owner.owned() as u64, owner.inherited() as u64, owner.sessions() as u64)
    }

    /// Online sessions of this router's shards per gateway.
    pub fn online_per_gateway(&self) -> Vec<(u64, usize)> {
        self.shared.owner().online_per_gateway()
    }

    /// Where `session` is, as this router's shards say.
    pub fn locate(&self, session: &SessionKey) -> Located {
        self.shared.owner().locate(session)
    }

    /// How many online sessions of `app` each gateway holds in the shards
    /// served here.
    pub fn online_of_app(&self, app: &herald_core::AppId) -> crate::owner::AppOnline {
        self.shared.owner().online_of_app(app)
    }

    /// The tonic server for it.
    pub fn into_server(self) -> RegistryServer<RegistryService> {
        RegistryServer::new(self)
            .max_decoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
    }
}

/// Applies every table to the owner and ends leases as they run out,
/// until the service is gone.
async fn follow(shared: std::sync::Weak<Shared>, mut table: watch::Receiver<TableView>) {
    let mut tick = tokio::time::interval(TICK);
    let mut changed = false;
    let mut swept = tokio::time::Instant::now();
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let now = strong.clock.now();
        if changed {
            let view = table.borrow_and_update().clone();
            set_table(&strong, &view, now);
            strong.applied.send_replace(view);
        }
        {
            let (mut effects, mut owner) = (Vec::new(), strong.owner());
            owner.tick(now, &mut effects);
            strong.deliver(owner, effects);
        }
        if swept.elapsed() >= SWEEP {
            swept = tokio::time::Instant::now();
            sweep(&strong);
        }
        drop(strong);
        changed = tokio::select! {
            seen = table.changed() => if seen.is_err() { return } else { true },
            _ = tick.tick() => false,
        };
    }
}

/// Reads this router's shards for the Redis writer.
struct OwnerSnapshots {
    shared: std::sync::Weak<Shared>,
    offline: OfflineLookup,
}

impl crate::registry_redis::Snapshots for OwnerSnapshots {
    fn snapshot(
        &self,
        queued: &mut mpsc::Receiver<Vec<crate::state::RegistryEntry>>,
    ) -> crate::registry_redis::Snapshot {
        use crate::registry_redis::Snapshot;
        let Some(shared) = self.shared.upgrade() else { return Snapshot::Gone };
        let mut owner = shared.owner();
        let generations = owner.owned_generations();
        if owner.rebuilding() {
            return Snapshot::NotYet(generations);
        }
        // Offered with the owner locked: what is queued now is older than
        // the snapshot, and what comes after it is newer.
        while queued.try_recv().is_ok() {}
        let mut entries = owner.registry_snapshot();
        drop(owner);
        // The replicated state is read without the owner locked: a session
        // this router learns of meanwhile comes after, in the queue.
        let known: HashSet<SessionKey> = entries.iter().map(|e| e.session.clone()).collect();
        let mine =
            |session: &SessionKey| generations.get(ShardId::of(session)) > 0 && !known.contains(session);
        let offline = (self.offline)(&mine);
        *shared.offline_written.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            offline.iter().map(|e| e.session.clone()).collect();
        entries.extend(offline);
        Snapshot::Ready(generations, entries)
    }
}

/// Forgets the persistent sessions offline here that the replicated state
/// no longer holds, and takes those only it knew out of Redis.
/// The replicated state is read with no lock of the owner held.
fn sweep(shared: &Shared) {
    let before = UnixMillis(shared.clock.now().0.saturating_sub(SWEEP.as_millis() as u64));
    let offline = shared.owner().offline_sessions(before);
    let gone = shared.not_persistent(offline);
    if !gone.is_empty() {
        let mut owner = shared.owner();
        for session in &gone {
            // Unless it came back meanwhile.
            owner.forget_offline(session, before);
        }
        shared.deliver(owner, Vec::new());
    }
    let Some(mirror) = shared.mirror.get() else { return };
    let written: Vec<SessionKey> = shared
        .offline_written
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    let ended = shared.not_persistent(written);
    if ended.is_empty() {
        return;
    }
    // Offered with the owner locked: a claim of one of them comes after.
    let owner = shared.owner();
    let mut written = shared.offline_written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut deleted = Vec::new();
    for session in ended {
        // One learned of here since is the owner's to write.
        if written.remove(&session) && !owner.knows(&session) {
            deleted.push(crate::state::RegistryEntry { session, held: None });
        }
    }
    mirror.offer(deleted);
}

/// Sends the wills of the queue to the leader.
struct WillSender {
    shared: std::sync::Weak<Shared>,
    serving: watch::Receiver<Option<Router>>,
    leader: LeaderLookup,
    table: watch::Receiver<TableView>,
    node: u64,
    cluster_id: String,
    /// The leader last sent to, and the client for it.
    client: Option<(u64, RegistryClient<tonic::transport::Channel>)>,
    /// This process, and the number of the batch being sent.
    incarnation: u64,
    batch: u64,
}

impl WillSender {
    /// The next batch of the queue, once there is one; `None` once the
    /// service is gone.
    async fn next_batch(&self) -> Option<(tokio::time::Instant, Vec<Box<Will>>)> {
        loop {
            let shared = self.shared.upgrade()?;
            let ready = shared.wills_ready.notified();
            {
                let mut queue = shared.wills.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                // Wills queued longer than the patience (no leader took the
                // ones before them) go: the queue is in the order they came.
                let now = tokio::time::Instant::now();
                let mut expired = 0;
                while queue.front().is_some_and(|(queued, _)| now >= *queued + WILL_PATIENCE) {
                    queue.pop_front();
                    expired += 1;
                }
                if expired > 0 {
                    shared.will_counts.dropped.fetch_add(expired, Ordering::Relaxed);
                    tracing::warn!(wills = expired, "no leader took these wills in time: dropped");
                }
                let (mut batch, mut bytes, mut oldest) = (Vec::new(), 0, None);
                while let Some((queued, will)) = queue.front() {
                    let size = will.message.payload.len() + will.message.topic.as_str().len() + 64;
                    if !batch.is_empty() && (batch.len() == WILL_BATCH || bytes + size > WILL_BATCH_BYTES) {
                        break;
                    }
                    bytes += size;
                    oldest.get_or_insert(*queued);
                    batch.extend(queue.pop_front().map(|(_, will)| will));
                }
                if let Some(oldest) = oldest {
                    return Some((oldest, batch));
                }
            }
            // Woken by a will, or looks again now and then (the service may
            // be gone).
            let _ = tokio::time::timeout(Duration::from_secs(1), ready).await;
        }
    }

    async fn run(mut self) {
        while let Some((oldest, wills)) = self.next_batch().await {
            // The oldest will's patience is the batch's.
            let deadline = oldest + WILL_PATIENCE;
            let count = wills.len() as u64;
            self.batch += 1;
            let outcome = loop {
                match self.send(&wills).await {
                    Ok(here) => break Ok(here),
                    Err(reason) if tokio::time::Instant::now() >= deadline => break Err(reason),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let Some(shared) = self.shared.upgrade() else { return };
            let counts = &shared.will_counts;
            match outcome {
                Ok(true) => counts.here.fetch_add(count, Ordering::Relaxed),
                Ok(false) => counts.forwarded.fetch_add(count, Ordering::Relaxed),
                Err(reason) => {
                    tracing::warn!(wills = count, %reason, "no leader took these wills in time: dropped");
                    counts.dropped.fetch_add(count, Ordering::Relaxed)
                }
            };
        }
    }

    /// Publishes `wills` here while this router leads (true), else at the
    /// leader (false).
    async fn send(&mut self, wills: &[Box<Will>]) -> Result<bool, String> {
        let serving = self.serving.borrow().clone();
        if let Some(router) = serving {
            router.publish_wills(wills.to_vec()).await;
            return Ok(true);
        }
        let leader = (self.leader)().ok_or("no leader")?;
        if leader == self.node {
            return Err("leading, not serving yet".to_owned());
        }
        if self.client.as_ref().is_none_or(|(id, _)| *id != leader) {
            let address =
                self.table.borrow().routers.get(&leader).cloned().ok_or("the leader's address is unknown")?;
            self.client = Some((leader, registry_client(&address, Duration::from_secs(5))?));
        }
        let Some((_, client)) = self.client.as_mut() else { return Err("no client".to_owned()) };
        let request = pb::OwnerWills {
            contract_version: CONTRACT_VERSION,
            cluster_id: self.cluster_id.clone(),
            router: self.node,
            wills: wills.iter().map(|w| will_to_pb(w)).collect(),
            incarnation: self.incarnation,
            batch: self.batch,
        };
        match client.wills(request).await {
            Ok(_) => Ok(false),
            Err(status) => {
                self.client = None;
                Err(status.message().to_owned())
            }
        }
    }
}

fn set_table(shared: &Shared, view: &TableView, now: UnixMillis) {
    let Some(table) = &view.table else { return };
    let generations = ShardGenerations::from_table(table.generations.clone());
    let mut owner = shared.owner();
    let taken = owner.set_table(&table.owners, &generations, &view.gateways, now);
    // Shards taken or restarted here are written whole to Redis once their
    // sessions are listed again.
    if let Some(mirror) = shared.mirror.get().filter(|_| taken) {
        mirror.resync();
    }
    let inherited = owner.inherited() as u32;
    let before = shared.inherited.swap(inherited, Ordering::Relaxed);
    if inherited > 0 && before == 0 {
        tracing::info!(
            shards = inherited,
            "registry shards owned before this process saw the table: served once the leader restarts them"
        );
    } else if inherited == 0 && before > 0 {
        tracing::info!(shards = owner.owned(), "registry shards restarted: serving them");
    }
}

/// A client of the `Registry` service of the router at `address` (over the
/// cluster's TLS when it has one), connecting on first use; each call may
/// take `timeout`.
pub(crate) fn registry_client(
    address: &str,
    timeout: Duration,
) -> Result<RegistryClient<tonic::transport::Channel>, String> {
    let endpoint =
        herald_proto::grpc::tls::endpoint(address)?.connect_timeout(Duration::from_secs(1)).timeout(timeout);
    Ok(RegistryClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES))
}

/// `view` as the router `router` of `cluster_id` sends it.
pub fn table_to_pb(view: &TableView, router: u64, cluster_id: &str) -> pb::RegistryDown {
    let (owners, generations) =
        view.table.as_ref().map(|t| (t.owners.clone(), t.generations.clone())).unwrap_or_default();
    pb::RegistryDown {
        item: Some(registry_down::Item::Table(pb::ShardTable {
            router,
            cluster_id: cluster_id.to_owned(),
            owners,
            generations,
            routers: view.routers.iter().map(|(id, address)| format!("{id}={address}")).collect(),
            applied_index: view.applied_index,
        })),
    }
}

/// `field` of an item, as the session key it names.
fn session_of(session: Option<pb::SessionKey>, field: &'static str) -> Result<SessionKey, Status> {
    session_from_pb(session, field).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A malformed item.
fn invalid(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(error.to_string())
}

/// `field` of an item, as the epoch it holds.
fn epoch_of(epoch: Option<pb::Epoch>, field: &'static str) -> Result<Epoch, Status> {
    epoch_from_pb(epoch, field).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Applies one item of `gateway`'s; returns the answer to send it, if any.
fn apply(
    shared: &Shared,
    gateway: NodeId,
    item: registry_up::Item,
) -> Result<Option<pb::RegistryDown>, Status> {
    let mut effects = Vec::new();
    let (answer, owner) = match item {
        registry_up::Item::Hello(_) => return Err(Status::invalid_argument("a second hello")),
        registry_up::Item::Claim(claim) => {
            let session = session_of(claim.session, "claim.session")?;
            let persistent = shared.not_persistent(vec![session.clone()]).is_empty();
            let (request, stale_refusals, connection) =
                (claim.request, claim.stale_refusals, claim.connection);
            let claim = Claim {
                request,
                session,
                clean_start: claim.clean_start,
                expiry_seconds: claim.expiry_seconds,
                will: claim
                    .will
                    .map(|w| will_from_pb(w, "claim.will.message"))
                    .transpose()
                    .map_err(invalid)?,
                granted: None,
            };
            let now = shared.clock.now();
            let mut owner = shared.owner();
            owner.jump_counter(stale_refusals);
            let result = match owner.claim_of(gateway, connection, &claim, persistent, now, &mut effects) {
                Ok(Granted { epoch, persistent }) => registry_claimed::Result::Granted(pb::RegistryGrant {
                    epoch: Some(epoch_to_pb(epoch)),
                    persistent,
                    holds_will: true,
                }),
                Err(Refused::NotOwner { owner: other }) => registry_claimed::Result::NotOwner(other),
                Err(Refused::Stale) => return Err(Status::internal("a claim is never stale")),
            };
            (registry_down::Item::Claimed(pb::RegistryClaimed { request, result: Some(result) }), owner)
        }
        registry_up::Item::Release(release) => {
            let request = release.request;
            let release = Release {
                request,
                session: session_of(release.session, "release.session")?,
                epoch: epoch_of(release.epoch, "release.epoch")?,
                expiry_seconds: release.expiry_seconds,
                publish_will: release.publish_will,
                pending: Vec::new(),
            };
            let mut owner = shared.owner();
            let (stale, not_owner) = match owner.release(gateway, &release, shared.clock.now(), &mut effects)
            {
                Ok(()) => (false, None),
                Err(Refused::Stale) => (true, None),
                Err(Refused::NotOwner { owner: other }) => (false, Some(other)),
            };
            (registry_down::Item::Released(pb::RegistryReleased { request, stale, not_owner }), owner)
        }
        registry_up::Item::Accepted(settled) => {
            let session = session_of(settled.session, "accepted.session")?;
            let epoch = epoch_of(settled.epoch, "accepted.epoch")?;
            // Nothing to answer: a stale one changes nothing.
            let mut owner = shared.owner();
            let _ = owner.settled(gateway, &session, epoch, settled.accepted, &mut effects);
            shared.deliver(owner, effects);
            return Ok(None);
        }
        registry_up::Item::List(list) => {
            let sessions = list
                .sessions
                .into_iter()
                .map(|listed| {
                    Ok(Reattach {
                        session: session_of(listed.session, "list.session")?,
                        epoch: epoch_of(listed.epoch, "list.epoch")?,
                        expiry_seconds: listed.expiry_seconds,
                        will: listed
                            .will
                            .map(|w| will_from_pb(w, "list.will.message"))
                            .transpose()
                            .map_err(invalid)?,
                    })
                })
                .collect::<Result<Vec<_>, Status>>()?;
            let mut owner = shared.owner();
            let elsewhere = owner.relist(gateway, sessions, list.last, shared.clock.now(), &mut effects);
            shared.deliver(owner, effects);
            if elsewhere.is_empty() {
                return Ok(None);
            }
            let sessions = elsewhere
                .iter()
                .map(|(session, owner)| pb::SessionOwner {
                    session: Some(session_to_pb(session)),
                    owner: *owner,
                })
                .collect();
            return Ok(Some(pb::RegistryDown {
                item: Some(registry_down::Item::Elsewhere(pb::RegistryElsewhere { sessions })),
            }));
        }
    };
    shared.deliver(owner, effects);
    Ok(Some(pb::RegistryDown { item: Some(answer) }))
}

/// Counts a linked gateway, and unlinks it from the owner, when its
/// stream ends.
struct Linked {
    shared: Arc<Shared>,
    gateway: NodeId,
    downlink: Downlink,
}

impl Drop for Linked {
    fn drop(&mut self) {
        let mut gateways = self.shared.gateways();
        // A newer link of the same gateway stays.
        if gateways.get(&self.gateway).is_some_and(|d| d.same_channel(&self.downlink)) {
            gateways.remove(&self.gateway);
            drop(gateways);
            let now = self.shared.clock.now();
            self.shared.owner().gateway_unlinked(self.gateway, now);
        }
        // Counted last: once the count says it, the owner knows it too.
        self.shared.linked.fetch_sub(1, Ordering::Release);
    }
}

#[tonic::async_trait]
impl Registry for RegistryService {
    type LinkStream = ReceiverStream<Result<pb::RegistryDown, Status>>;

    async fn link(
        &self,
        request: Request<Streaming<pb::RegistryUp>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::RegistryUp { item: Some(registry_up::Item::Hello(hello)) }) => hello,
            _ => return Err(Status::invalid_argument("the first registry item must be hello")),
        };
        if hello.contract_version != CONTRACT_VERSION {
            return Err(Status::failed_precondition(format!(
                "contract version {} (this router speaks {CONTRACT_VERSION})",
                hello.contract_version
            )));
        }
        if !hello.cluster_id.is_empty() && hello.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster {} (this router belongs to {})",
                hello.cluster_id, self.cluster_id
            )));
        }
        let gateway = NodeId(hello.gateway);
        let (downlink, receiver) = mpsc::channel(DOWNLINK);
        self.shared.linked.fetch_add(1, Ordering::Relaxed);
        self.shared.gateways().insert(gateway, downlink.clone());
        self.shared.owner().gateway_linked(gateway);
        let linked = Linked { shared: self.shared.clone(), gateway, downlink: downlink.clone() };
        // Tables as the owner has applied them.
        let mut table = self.shared.applied.subscribe();
        let (node, cluster_id) = (self.node, self.cluster_id.clone());
        tokio::spawn(async move {
            let shared = linked.shared.clone();
            loop {
                let down = table_to_pb(&table.borrow_and_update(), node, &cluster_id);
                if downlink.send(Ok(down)).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        changed = table.changed() => if changed.is_err() { return } else { break },
                        item = inbound.message() => {
                            let Ok(Some(pb::RegistryUp { item: Some(item) })) = item else { return };
                            match apply(&shared, gateway, item) {
                                Ok(Some(answer)) => if downlink.send(Ok(answer)).await.is_err() { return },
                                Ok(None) => {}
                                Err(status) => {
                                    let _ = downlink.send(Err(status)).await;
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn wills(&self, request: Request<pb::OwnerWills>) -> Result<Response<pb::WillsTaken>, Status> {
        let request = request.into_inner();
        self.same_contract("wills", request.contract_version, &request.cluster_id)?;
        let router = self.shared.serving.get().and_then(|serving| serving.borrow().clone());
        let Some(router) = router else {
            return Err(Status::unavailable(format!("router {} does not lead", self.node)));
        };
        let wills = request
            .wills
            .into_iter()
            .map(|w| will_from_pb(w, "wills.message"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let batch = (request.router, request.incarnation, request.batch);
        {
            let mut taken = self.shared.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if taken.contains(&batch) {
                // Sent again: its answer was lost. Published already.
                return Ok(Response::new(pb::WillsTaken {}));
            }
            if taken.len() == TAKEN_BATCHES {
                taken.pop_front();
            }
            taken.push_back(batch);
        }
        tracing::debug!(from = request.router, wills = wills.len(), "publishing an owner's wills");
        // Published even if the caller stops waiting: the batch counts as
        // taken from now on.
        let published = tokio::spawn(async move { router.publish_wills(wills).await });
        published.await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::WillsTaken {}))
    }

    async fn locate(
        &self,
        request: Request<pb::LocateSessions>,
    ) -> Result<Response<pb::SessionsLocated>, Status> {
        let request = request.into_inner();
        self.same_contract("a locate", request.contract_version, &request.cluster_id)?;
        self.shared.answered[0].fetch_add(1, Ordering::Relaxed);
        if request.sessions.len() > crate::locate::LOCATE_CHUNK {
            return Err(Status::invalid_argument(format!(
                "{} sessions: at most {} per call",
                request.sessions.len(),
                crate::locate::LOCATE_CHUNK
            )));
        }
        let sessions = request
            .sessions
            .into_iter()
            .map(|s| session_of(Some(s), "sessions"))
            .collect::<Result<Vec<_>, _>>()?;
        let owner = self.shared.owner();
        let located =
            sessions.iter().map(|session| crate::locate::located_to_pb(owner.locate(session))).collect();
        Ok(Response::new(pb::SessionsLocated { located }))
    }

    async fn count_online(
        &self,
        request: Request<pb::CountOnlineQuery>,
    ) -> Result<Response<pb::OnlineCounted>, Status> {
        let request = request.into_inner();
        self.same_contract("a count", request.contract_version, &request.cluster_id)?;
        self.shared.answered[1].fetch_add(1, Ordering::Relaxed);
        let app = herald_core::AppId::new(request.app).map_err(invalid)?;
        Ok(Response::new(crate::locate::online_to_pb(self.online_of_app(&app))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::shards::ShardTable;
    use prost::Message;

    /// The registry link's wire form (contract version 1): a hello and a
    /// table, stored; a build that encodes them differently, or cannot read
    /// the stored bytes, fails here.
    #[test]
    fn the_registry_link_wire_format_matches_its_golden_file() {
        let mut table = ShardTable::new(3);
        table.assign(2, &[0, 5], 3).expect("in range");
        let view = TableView {
            table: Some(table),
            routers: [(1, "127.0.0.11:7401".to_owned()), (2, "127.0.0.12:7402".to_owned())].into(),
            gateways: Default::default(),
            applied_index: 42,
        };
        let down = table_to_pb(&view, 1, "prod");
        let up = pb::RegistryUp {
            item: Some(registry_up::Item::Hello(pb::RegistryHello {
                contract_version: CONTRACT_VERSION,
                cluster_id: "prod".to_owned(),
                gateway: 7,
            })),
        };
        let mut bytes = up.encode_length_delimited_to_vec();
        bytes.extend(down.encode_length_delimited_to_vec());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/registry/link-v1.bin");
        let stored = herald_testkit::golden::check(&path, &bytes);
        let mut rest = stored.as_slice();
        assert_eq!(pb::RegistryUp::decode_length_delimited(&mut rest).expect("hello decodes"), up);
        let decoded = pb::RegistryDown::decode_length_delimited(&mut rest).expect("table decodes");
        assert_eq!(decoded, down);
        let Some(registry_down::Item::Table(t)) = decoded.item else { panic!("a table") };
        assert_eq!((t.owners[0], t.owners[1], t.generations[5], t.generations[6]), (2, 0, 4, 3));
        assert_eq!(t.routers, ["1=127.0.0.11:7401", "2=127.0.0.12:7402"]);
    }
}

#[cfg(test)]
#[path = "registry_link_tests.rs"]
pub(crate) mod link_tests;
