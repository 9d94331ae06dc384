//! The replicated core of the router: commands committed through openraft
//! to a log kept in the store's write-ahead log, applied to a state machine
//! every router node holds identically (ADR 0012).
//!
//! ```text
//!  RaftNode::propose(Command) ──▶ openraft ──▶ LogStore (WAL, fdatasync) ──▶ StateMachine::apply ──▶ Response
//! ```
//!
//! What is replicated: the registry shard table (each shard's owner and
//! generation, the first half of every ownership epoch), and the router's journal (ADR 0013): retained
//! messages, persistent sessions with their subscriptions and queues, and
//! shared groups' queues.

pub mod backup;
// openraft's storage traits fix the error type, `StorageError`, at 224 bytes.
#[allow(clippy::result_large_err)]
mod log_store;
mod network;
mod peer_service;
mod proposer;
pub mod shards;
#[allow(clippy::result_large_err)]
mod state_machine;
mod vote_gate;

pub use log_store::LogStore;
pub use peer_service::{GatewayCounts, RaftPeerService};
pub use state_machine::{Replicated, StateMachine};
pub use vote_gate::VoteGate;

use herald_core::ShardGenerations;
use herald_proto::journal::{self, DurableImage, Fact};
use herald_store::wal::WalOptions;
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

openraft::declare_raft_types!(
    /// Herald's Raft types: router commands in, their responses out.
    pub TypeConfig:
        D = Command,
        R = Response,
);

/// A change to the replicated state. Every variant is deterministic: it
/// carries whatever time or randomness it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Starts a new registry generation for every shard at once (a leader
    /// of a cluster with a router that does not apply shard events), so
    /// that epochs never go backwards.
    NextGeneration,
    /// A registry shard event (ADR 0033): `shards` are created, moved or
    /// restarted at `owner`, each at a new generation above all before.
    Shards {
        /// The router that owns them now.
        owner: u64,
        /// The shards, each below `herald_core::REGISTRY_SHARDS`.
        shards: Vec<u16>,
    },
    /// Facts about durable state, encoded by `herald_proto::journal::encode`
    /// (base64 when openraft's messages travel as JSON between routers).
    Journal(#[serde(with = "base64_bytes")] Vec<u8>),
    /// Replaces the durable state with a backup's (`herald ctl snapshot
    /// restore`, into a cluster that holds nothing yet): its image, and a
    /// generation at least the backup's so epochs keep growing.
    Restore {
        /// The backup's registry generation.
        generation: u64,
        /// The durable image, encoded by `herald_proto::journal::encode_image`.
        #[serde(with = "base64_bytes")]
        image: Vec<u8>,
    },
}

/// Bytes as a base64 string in serde's text formats.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Who a starting node forms a cluster with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// A cluster of this node alone, initialised on first start.
    Single,
    /// The voters of a new cluster, by id and `host:port`; the one with the
    /// lowest id initialises it on first start, the others wait for it.
    Voters(BTreeMap<u64, String>),
    /// A node that joins a running cluster: it waits to be added
    /// (`herald ctl cluster add`), and never forms a cluster itself.
    Join,
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied; nothing to report (also the answer to blank and membership entries).
    Done,
    /// The new registry generation.
    Generation(u64),
    /// Every shard's generation after a shard event.
    Shards(Vec<u64>),
}

/// Why the replicated core could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    /// The log or state machine could not be opened.
    #[error("raft storage: {0}")]
    Storage(String),
    /// Raft refused or failed the request.
    #[error("raft: {0}")]
    Raft(String),
    /// The node did not become leader in time.
    #[error("raft: no leader after {0:?}")]
    NoLeader(Duration),
}

/// Raft timing and log compaction of a router node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftSettings {
    /// Leader heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Election timeout range, milliseconds.
    pub election_min_ms: u64,
    /// Upper end of the election timeout range, milliseconds.
    pub election_max_ms: u64,
    /// A snapshot is taken every this many log entries.
    pub snapshot_entries: u64,
    /// Entries kept in the log behind the last snapshot.
    pub keep_entries: u64,
    /// Bytes per log segment file.
    pub segment_bytes: u64,
    /// How long a router may not answer a leader's status calls before
    /// the leader moves its registry shards, milliseconds (ADR 0033):
    /// connects of that router's share of the sessions stall for about as
    /// long when it is lost.
    pub registry_move_after_ms: u64,
    /// The address connections to peers leave from (the one this node
    /// listens on, when it is a specific one): peers, firewalls and fault
    /// proxies see which router is calling.
    pub source_ip: Option<std::net::IpAddr>,
}

impl Default for RaftSettings {
    fn default() -> Self {
        // Loopback and a LAN: a leader is replaced in about a second.
        RaftSettings {
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_entries: 5000,
            keep_entries: 1000,
            segment_bytes: 64 * 1024 * 1024,
            registry_move_after_ms: 3000,
            source_ip: None,
        }
    }
}

/// The log's options. `HERALD_FAULT_SLOW_SYNC_MS` makes every log sync
/// that much slower: a slow disk, which fault tests need and a real disk
/// here does not produce on demand. Never set it in production.
fn wal_options(segment_size: u64) -> WalOptions {
    let slow = std::env::var("HERALD_FAULT_SLOW_SYNC_MS").ok().and_then(|ms| ms.parse().ok()).unwrap_or(0);
    if slow > 0 {
        tracing::warn!(slow_sync_ms = slow, "fault injection: every raft log sync is slowed down");
    }
    WalOptions { segment_size, slow_sync: Duration::from_millis(slow) }
}

/// How long a starting single node waits to lead; a voter of a larger
/// cluster says, this often, that it still waits for a leader.
const LEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new leader waits for the other routers' status before it
/// spreads the registry over those that answered.
pub const TAKE_PATIENCE: Duration = Duration::from_millis(500);
/// How often a leader checks the registry's spread (and how long it waits
/// for each router's status then).
const SPREAD_CHECK: Duration = Duration::from_secs(1);

/// A node's Raft progress, for metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftGauges {
    /// The current term.
    pub term: u64,
    /// The known leader.
    pub leader: Option<u64>,
    /// The last log index (0: empty).
    pub last_log_index: u64,
    /// The last applied index.
    pub applied_index: u64,
    /// The last snapshot's index.
    pub snapshot_index: u64,
    /// Snapshots built since start.
    pub snapshots_built: u64,
    /// Snapshots installed since start.
    pub snapshots_installed: u64,
    /// Whether this node withholds its vote (no data, not caught up).
    pub vote_withheld: bool,
}

/// One router node's Raft.
pub struct RaftNode {
    id: u64,
    raft: Raft<TypeConfig>,
    state: Arc<Mutex<Replicated>>,
    cluster_id: String,
    /// How long a follower refuses votes after hearing from its leader
    /// (openraft 0.9: the maximum election timeout).
    lease: Duration,
    /// Snapshots built and installed since start.
    snapshots: Arc<state_machine::SnapshotCounts>,
    /// Told when a backup was restored: the serving router must be rebuilt.
    restored: Arc<tokio::sync::Notify>,
    /// Merges the journals of batches waiting for a commit (group commit).
    proposer: proposer::Proposer,
    /// Withholds this node's vote while it has no data and may have lost
    /// it (ADR 0032).
    votes: Arc<VoteGate>,
    /// How many registry shards the table gives this node that its
    /// registry does not serve (inherited from an earlier process).
    inherited: Arc<std::sync::atomic::AtomicU32>,
    /// How long a router may not answer before its registry shards move.
    move_after: Duration,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode").field("id", &self.id).finish_non_exhaustive()
    }
}

impl RaftNode {
    /// Starts node `id` with its log and snapshot in `dir`, as a cluster of
    /// one (initialised on first start), and waits until it leads.
    pub async fn start_single(dir: &Path, id: u64, address: &str) -> Result<RaftNode, RaftNodeError> {
        let node = RaftNode::open(dir, id, "", RaftSettings::default()).await?;
        node.join(address, Membership::Single).await?;
        Ok(node)
    }

    /// Opens node `id` of cluster `cluster_id` on its data in `dir`; it
    /// takes part in Raft as soon as its peers can reach it (serve
    /// [`RaftNode::peer_service`]), then [`RaftNode::join`].
    pub async fn open(
        dir: &Path,
        id: u64,
        cluster_id: &str,
        settings: RaftSettings,
    ) -> Result<RaftNode, RaftNodeError> {
        let storage = |e: &dyn std::fmt::Display| RaftNodeError::Storage(e.to_string());
        std::fs::create_dir_all(dir).map_err(|e| storage(&e))?;
        let log = LogStore::open(dir, wal_options(settings.segment_bytes)).map_err(refuse_damaged)?;
        let machine = StateMachine::open(dir).map_err(|e| storage(&e))?;
        log.check_intact(machine.snapshot_index()).map_err(refuse_damaged)?;
        let state = machine.state();
        let snapshots = machine.snapshot_counts();
        let config = openraft::Config {
            cluster_name: "herald".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_min_ms,
            election_timeout_max: settings.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_entries),
            max_in_snapshot_log_to_keep: settings.keep_entries,
            ..openraft::Config::default()
        };
        let config = Arc::new(config.validate().map_err(|e| RaftNodeError::Raft(e.to_string()))?);
        let network = network::GrpcPeers::new(cluster_id.to_owned(), settings.source_ip);
        let raft = Raft::new(id, config, network, log, machine)
            .await
            .map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        let lease = Duration::from_millis(settings.election_max_ms);
        // No data: a first start, or a router that lost its data. It votes
        // once `join` has told which (ADR 0032).
        let fresh = !raft.is_initialized().await.map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        let votes = VoteGate::new(fresh);
        let restored = Arc::new(tokio::sync::Notify::new());
        let proposer = proposer::Proposer::start(raft.clone());
        Ok(RaftNode {
            id,
            raft,
            state,
            cluster_id: cluster_id.to_owned(),
            lease,
            restored,
            snapshots,
            proposer,
            votes,
            inherited: Arc::default(),
            move_after: Duration::from_millis(settings.registry_move_after_ms),
        })
    }

    /// Initialises the cluster when this node is the one to (first start,
    /// lowest id among the voters) and waits until it has a leader.
    pub async fn join(&self, address: &str, membership: Membership) -> Result<(), RaftNodeError> {
        let members = match &membership {
            Membership::Single => BTreeMap::from([(self.id, address.to_owned())]),
            Membership::Voters(voters) => voters.clone(),
            Membership::Join => BTreeMap::new(),
        };
        let initialised = self.raft.is_initialized().await.map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        let peers: BTreeMap<u64, String> =
            members.iter().filter(|(id, _)| **id != self.id).map(|(id, a)| (*id, a.clone())).collect();
        // With no data it asks its peers once, for both questions: do they
        // form a cluster already, and has it ever run (ADR 0032)? Peers that
        // do not answer in time count as not formed yet: at first start
        // they come up together.
        let answers = if !initialised && matches!(membership, Membership::Voters(_)) {
            peer_statuses(&peers, &self.cluster_id, Duration::from_secs(3), &mut StatusClients::default())
                .await
        } else {
            Vec::new()
        };
        if self.votes.is_withheld() {
            let alone = membership == Membership::Single
                || (matches!(membership, Membership::Voters(_)) && peers.is_empty());
            if alone {
                // Alone (in process, or the only voter named): nobody asks
                // for its vote.
                self.votes.lift();
            } else {
                let first = answers.iter().map(vote_gate::PeerView::from).collect();
                let (raft, gate) = (self.raft.clone(), self.votes.clone());
                tokio::spawn(vote_gate::settle(raft, gate, self.id, self.cluster_id.clone(), peers, first));
            }
        }
        if let Some(voters) = answers.iter().find(|reply| !reply.voters.is_empty()).map(|reply| &reply.voters)
        {
            // No data, and the peers already form the cluster: this router
            // started after the one that formed it, or lost its data. Either
            // way it must not form a cluster of its own.
            let listed =
                voters.iter().any(|v| v.split_once('=').is_some_and(|(id, _)| id == self.id.to_string()));
            if !listed {
                tracing::warn!(
                    voters = %voters.join(","),
                    "this router has no data and its peers already form a cluster without it: waiting to be \
                     added (herald ctl cluster add --node {}={address})",
                    self.id
                );
                return Ok(());
            }
            tracing::info!(
                voters = %voters.join(","),
                "this router has no data and its peers' cluster lists it: following its leader (if it lost \
                 its data, remove it and add it back: docs/operations.md, \"Replacing a router\")"
            );
        } else if !initialised && members.keys().next() == Some(&self.id) {
            let members: BTreeMap<u64, BasicNode> =
                members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
            self.raft.initialize(members).await.map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        } else if initialised && membership == Membership::Single {
            // Alone, there is nobody to wait for: lead now rather than after
            // an election timeout, so a restart is quick.
            self.raft.trigger().elect().await.map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        }
        match membership {
            Membership::Single => {
                let wait = self.raft.wait(Some(LEAD_TIMEOUT));
                let led = wait.current_leader(self.id, "this node leads").await;
                led.map(drop).map_err(|_| RaftNodeError::NoLeader(LEAD_TIMEOUT))
            }
            Membership::Voters(_) => self.wait_for_a_leader().await,
            // Added whenever an operator gets to it.
            Membership::Join => Ok(()),
        }
    }

    /// Waits, however long it takes, until the cluster has a leader: a
    /// router that exited instead would be restarted with a growing back-off
    /// and might be the last to come back once a majority is up again.
    async fn wait_for_a_leader(&self) -> Result<(), RaftNodeError> {
        let started = std::time::Instant::now();
        loop {
            let wait = self.raft.wait(Some(LEAD_TIMEOUT));
            match wait.metrics(|m| m.current_leader.is_some(), "a leader").await {
                Ok(_) => return Ok(()),
                Err(openraft::metrics::WaitError::Timeout(..)) => tracing::warn!(
                    waited_s = started.elapsed().as_secs(),
                    term = self.raft.metrics().borrow().current_term,
                    "no leader yet: waiting until a majority of the voters is up and reachable"
                ),
                Err(e) => return Err(RaftNodeError::Raft(e.to_string())),
            }
        }
    }

    /// Resolves when a backup has been restored into this node's cluster
    /// while it leads: whatever it built from the state before is stale.
    pub async fn restored(&self) {
        self.restored.notified().await;
    }

    /// Returns the gRPC service its peers call.
    pub fn peer_service(&self) -> RaftPeerService {
        RaftPeerService::new(
            self.raft.clone(),
            self.cluster_id.clone(),
            self.state.clone(),
            self.restored.clone(),
            self.votes.clone(),
            self.inherited.clone(),
        )
    }

    /// The count of registry shards this node inherited and does not serve:
    /// kept by its registry service, read by its status and, when it leads,
    /// by [`RaftNode::keep_registry_spread`].
    pub fn inherited_shards(&self) -> Arc<std::sync::atomic::AtomicU32> {
        self.inherited.clone()
    }

    /// Keeps `table` current with this node's copy of the registry shard
    /// table and the routers of the membership, until `table` has no
    /// receiver left or Raft stops. Watches what is applied.
    pub async fn watch_shard_table(&self, table: tokio::sync::watch::Sender<shards::TableView>) {
        let mut metrics = self.raft.metrics();
        loop {
            {
                // Runs after every applied entry: compared in place, copied
                // only when the table, the routers or the gateways changed.
                let seen = metrics.borrow_and_update();
                let members = seen.membership_config.membership();
                let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                table.send_if_modified(|current| {
                    current.applied_index = seen.last_applied.map_or(0, |id| id.index);
                    let same_routers = current.routers.len() == members.nodes().count()
                        && members.nodes().all(|(id, node)| current.routers.get(id) == Some(&node.addr));
                    let changed = !same_routers
                        || current.table != state.shards
                        || current.gateways != *state.durable.gateways();
                    if changed {
                        current.table = state.shards.clone();
                        current.routers =
                            members.nodes().map(|(id, node)| (*id, node.addr.clone())).collect();
                        current.gateways = state.durable.gateways().clone();
                    }
                    changed
                });
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                () = table.closed() => return,
            }
        }
    }

    /// Which of `keys` this node's copy of the replicated state holds a
    /// persistent session of, in their order (one lock per 4,096 keys, so
    /// a long list does not hold up the state machine).
    pub fn has_persistent_sessions(&self, keys: &[herald_core::SessionKey]) -> Vec<bool> {
        let mut persistent = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(4096) {
            let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            persistent.extend(chunk.iter().map(|key| state.durable.has_session(key)));
        }
        persistent
    }

    /// The persistent sessions `wanted` picks, as offline registry entries
    /// (this node's copy of the replicated state).
    pub fn offline_sessions_where(
        &self,
        wanted: &dyn Fn(&herald_core::SessionKey) -> bool,
    ) -> Vec<crate::state::RegistryEntry> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .durable
            .offline_sessions_where(wanted)
    }

    /// Returns this node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Returns what operators watch: term, leader, log and apply progress.
    pub fn gauges(&self) -> RaftGauges {
        let metrics = self.raft.metrics().borrow().clone();
        RaftGauges {
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            snapshots_built: self.snapshots.built.load(std::sync::atomic::Ordering::Relaxed),
            snapshots_installed: self.snapshots.installed.load(std::sync::atomic::Ordering::Relaxed),
            vote_withheld: self.votes.is_withheld(),
        }
    }

    /// Keeps `caught_up` current, every second, for readiness: whether this
    /// node leads, or has applied all but at most `slack` of the entries
    /// its leader has applied (asked over gRPC, on a connection kept while
    /// the leader stays the same). A node that cannot tell has not caught
    /// up, so a rolling restart waits for it before stopping the next one.
    pub async fn watch_caught_up(&self, slack: u64, caught_up: Arc<std::sync::atomic::AtomicBool>) {
        let mut leader_client: Option<(String, AdminClient)> = None;
        loop {
            let now = self.caught_up(slack, &mut leader_client).await;
            caught_up.store(now, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn caught_up(&self, slack: u64, leader_client: &mut Option<(String, AdminClient)>) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader == Some(self.id) {
            return true;
        }
        let Some((_, address)) = leader_address(&metrics) else { return false };
        if leader_client.as_ref().is_none_or(|(kept, _)| *kept != address) {
            *leader_client = admin_client(&address, Duration::from_secs(2)).await.ok().map(|c| (address, c));
        }
        let Some((_, client)) = leader_client.as_mut() else { return false };
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        match client.status(herald_proto::grpc::pb::StatusRequest { brief: true }).await {
            Ok(reply) => applied + slack >= reply.into_inner().applied_index.unwrap_or(0),
            Err(_) => {
                *leader_client = None;
                false
            }
        }
    }

    /// Why Raft stopped on this node, if it did: a storage error (a full
    /// disk, a file past its size limit) stops it for good.
    pub fn stopped(&self) -> Option<String> {
        self.raft.metrics().borrow().running_state.as_ref().err().map(ToString::to_string)
    }

    /// Returns the current leader, if one is known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Waits until this node is the leader, or `timeout` passes.
    pub async fn wait_until_leader(&self, timeout: Duration) -> bool {
        let id = self.id;
        self.raft.wait(Some(timeout)).current_leader(id, "this node leads").await.is_ok()
    }

    /// Resolves once this node no longer leads, or leads without a quorum:
    /// when no majority of the voters has acknowledged it for twice the
    /// lease, another leader may have been elected on the other side of a
    /// partition, so it stops serving gateways (its writes could not commit
    /// anyway) and they find the leader that can. Returns why.
    pub async fn until_stepped_down(&self) -> &'static str {
        let mut metrics = self.raft.metrics();
        let cut_off = (self.lease * 2).as_millis() as u64;
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.current_leader != Some(self.id) || !m.state.is_leader() {
                    return "stepped down";
                }
                let alone = m.membership_config.membership().voter_ids().count() <= 1;
                if !alone && m.millis_since_quorum_ack.is_none_or(|ms| ms > cut_off) {
                    tracing::warn!(
                        since_ms = m.millis_since_quorum_ack,
                        "no quorum of voters acknowledges this leader: stopping serving gateways"
                    );
                    return "lost the quorum";
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return "stopped" },
                () = tokio::time::sleep(self.lease / 2) => {}
            }
        }
    }

    /// Commits `command` and returns what applying it produced.
    pub async fn propose(&self, command: Command) -> Result<Response, RaftNodeError> {
        let written =
            self.raft.client_write(command).await.map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        Ok(written.data)
    }

    /// Commits a new registry generation and returns it.
    pub async fn next_generation(&self) -> Result<u64, RaftNodeError> {
        match self.propose(Command::NextGeneration).await? {
            Response::Generation(generation) => Ok(generation),
            other => Err(RaftNodeError::Raft(format!("unexpected response {other:?}"))),
        }
    }

    /// Takes the registry as a new leader (ADR 0033): one shard event per
    /// router, spreading the 64 shards over the voters that answer now and
    /// restarting every shard (the leader's session registry starts empty
    /// and is rebuilt from the gateways); the shards of a voter that does
    /// not answer within [`TAKE_PATIENCE`] move at once. While some router
    /// may not apply shard events, a new generation for the whole registry
    /// instead. Returns each shard's generation.
    pub async fn take_registry(&self) -> Result<ShardGenerations, RaftNodeError> {
        let (voters, peers) = self.members_but_me();
        let answers =
            peer_statuses(&peers, &self.cluster_id, TAKE_PATIENCE, &mut StatusClients::default()).await;
        let (has_table, owners) = self.shard_owners();
        if !has_table && !shards::every_peer_applies_shard_events(&peers, &answers) {
            tracing::info!("a router may not apply registry shard events: one generation for every shard");
            return self.next_generation().await.map(ShardGenerations::uniform);
        }
        let mut live: BTreeSet<u64> =
            answers.iter().map(|a| a.node_id).filter(|id| voters.contains(id)).collect();
        live.insert(self.id);
        let mut generations = None;
        for (owner, shards) in shards::spread(&owners, &live, &BTreeSet::new(), true) {
            generations = Some(self.shard_event(owner, shards).await?);
        }
        Ok(generations.unwrap_or_else(|| self.shard_generations()))
    }

    /// Keeps the registry spread over the voters while this node leads
    /// (ADR 0033), checking every second: the shards of a voter that has
    /// not answered for `move_after` move to the others, a voter that joins
    /// or answers again takes its share back, and the shards of a router
    /// that restarted (it says it inherited shards it does not serve) are
    /// restarted. Returns when this node stops leading or cannot commit.
    /// `move_after` is [`RaftSettings::registry_move_after_ms`].
    pub async fn keep_registry_spread(&self) {
        let move_after = self.move_after;
        let start = tokio::time::Instant::now();
        let mut seen: BTreeMap<u64, tokio::time::Instant> = BTreeMap::new();
        let mut restarted_at: BTreeMap<u64, tokio::time::Instant> = BTreeMap::new();
        // Those that answered when this node took the registry own shards.
        let (_, owners) = self.shard_owners();
        for owner in owners.iter().filter(|&&o| o != 0 && o != self.id) {
            seen.insert(*owner, start);
        }
        // The first check comes soon: routers that just started (a new
        // cluster) wait for their shards to be restarted.
        let mut wait = SPREAD_CHECK / 5;
        let mut clients = StatusClients::default();
        loop {
            tokio::time::sleep(wait).await;
            wait = SPREAD_CHECK;
            if self.raft.metrics().borrow().current_leader != Some(self.id) {
                return;
            }
            let (voters, peers) = self.members_but_me();
            let peers: BTreeMap<u64, String> =
                peers.into_iter().filter(|(id, _)| voters.contains(id)).collect();
            let answers = peer_statuses(&peers, &self.cluster_id, SPREAD_CHECK, &mut clients).await;
            let now = tokio::time::Instant::now();
            let mut restarted = BTreeSet::new();
            for answer in &answers {
                seen.insert(answer.node_id, now);
                if answer.shards_inherited > 0 {
                    restarted.insert(answer.node_id);
                }
            }
            if self.inherited.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                restarted.insert(self.id);
            }
            // A restart waits for the last one to be applied there.
            restarted.retain(|id| restarted_at.get(id).is_none_or(|at| now - *at >= move_after));
            let mut live: BTreeSet<u64> = voters
                .iter()
                .copied()
                .filter(|id| seen.get(id).is_some_and(|at| now - *at < move_after))
                .collect();
            live.insert(self.id);
            let (_, owners) = self.shard_owners();
            for (owner, shards) in shards::spread(&owners, &live, &restarted, false) {
                let moved = shards.iter().filter(|s| owners.get(usize::from(**s)) != Some(&owner)).count();
                tracing::info!(owner, shards = shards.len(), moved, "registry shard event");
                if restarted.contains(&owner) {
                    restarted_at.insert(owner, now);
                }
                if let Err(error) = self.shard_event(owner, shards).await {
                    tracing::warn!(%error, "registry shard event not committed");
                    return;
                }
            }
        }
    }

    /// Commits one shard event; returns every shard's generation after it.
    async fn shard_event(&self, owner: u64, shards: Vec<u16>) -> Result<ShardGenerations, RaftNodeError> {
        match self.propose(Command::Shards { owner, shards }).await? {
            Response::Shards(generations) => Ok(ShardGenerations::from_table(generations)),
            other => Err(RaftNodeError::Raft(format!("unexpected response {other:?}"))),
        }
    }

    /// Whether the replicated state has a shard table, and each shard's
    /// owner (0: none).
    fn shard_owners(&self) -> (bool, Vec<u64>) {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &state.shards {
            Some(table) => (true, table.owners.clone()),
            None => (false, vec![0; usize::from(herald_core::REGISTRY_SHARDS)]),
        }
    }

    /// Each shard's generation in the replicated state.
    fn shard_generations(&self) -> ShardGenerations {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).shard_generations()
    }

    /// The voters, and every other member with its address.
    fn members_but_me(&self) -> (BTreeSet<u64>, BTreeMap<u64, String>) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().collect();
        let peers = membership
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        (voters, peers)
    }

    /// Returns the durable state as committed and applied so far (at start:
    /// everything the log and the last snapshot hold).
    pub fn durable_image(&self) -> DurableImage {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).durable.image()
    }

    /// Asks for a snapshot now (the log before it may then be purged).
    pub async fn snapshot(&self) -> Result<(), RaftNodeError> {
        self.raft.trigger().snapshot().await.map_err(|e| RaftNodeError::Raft(e.to_string()))
    }

    /// Stops Raft, handing leadership over first when this node leads a
    /// cluster of several voters (ADR 0016). openraft 0.9 has no transfer
    /// call, and followers refuse votes for a lease after the last
    /// heartbeat: so the leader stops (no more heartbeats), waits out the
    /// lease, and asks its most caught-up follower to stand for election at
    /// once instead of waiting for a random timeout. Returns the follower
    /// asked, if any.
    pub async fn step_down_and_shutdown(&self) -> Option<u64> {
        let metrics = self.raft.metrics().borrow().clone();
        let leading = metrics.current_leader == Some(self.id);
        let successor = leading
            .then(|| {
                let replication = metrics.replication.clone().unwrap_or_default();
                let membership = metrics.membership_config.membership();
                let voters: Vec<u64> = membership.voter_ids().filter(|id| *id != self.id).collect();
                voters
                    .into_iter()
                    .max_by_key(|id| replication.get(id).cloned().flatten().map(|log| log.index))
            })
            .flatten()
            .and_then(|id| Some((id, metrics.membership_config.membership().get_node(&id)?.addr.clone())));
        self.shutdown().await;
        let (id, address) = successor?;
        tokio::time::sleep(self.lease + Duration::from_millis(20)).await;
        let asked = async {
            let mut client = admin_client(&address, Duration::from_secs(2)).await?;
            let request = herald_proto::grpc::pb::ElectRequest { cluster_id: self.cluster_id.clone() };
            client.elect(request).await.map_err(|status| status.message().to_owned())
        };
        match asked.await {
            Ok(_) => tracing::info!(successor = id, "handed leadership over"),
            Err(error) => {
                tracing::warn!(successor = id, %error, "the successor did not stand: the others elect on their own")
            }
        }
        Some(id)
    }

    /// Stops Raft's tasks.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
    }
}

/// A client of the router at `address` (`host:port`), for operators' tools.
async fn admin_client(address: &str, timeout: Duration) -> Result<AdminClient, String> {
    let endpoint =
        herald_proto::grpc::tls::endpoint(address)?.connect_timeout(Duration::from_secs(3)).timeout(timeout);
    let channel = endpoint.connect().await.map_err(|e| format!("{address}: unreachable ({e})"))?;
    Ok(peer_client(channel))
}

/// A client of a router over `channel`, taking messages as large as the
/// cluster's.
fn peer_client(channel: tonic::transport::Channel) -> AdminClient {
    herald_proto::grpc::pb::raft_peer_client::RaftPeerClient::new(channel)
        .max_decoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
}

/// Takes a backup (the file form of [`backup::Backup`]) from the leader
/// among `routers` if one answers as leader, else from the first that
/// answers (a follower's state may lag the leader's by what it has not
/// applied yet).
pub async fn save_backup(routers: &[String], cluster_id: &str) -> Result<Vec<u8>, String> {
    let mut leader_first = Vec::new();
    for address in routers {
        match status(address, true).await {
            Ok(s) if s.leader == Some(s.node_id) => leader_first.insert(0, address.clone()),
            Ok(_) => leader_first.push(address.clone()),
            Err(_) => {}
        }
    }
    let address = leader_first.first().ok_or("no router answered")?;
    let mut client = admin_client(address, Duration::from_secs(60)).await?;
    let request = herald_proto::grpc::pb::BackupRequest { cluster_id: cluster_id.to_owned() };
    let reply = client.backup(request).await.map_err(|s| format!("{address}: {}", s.message()))?;
    Ok(reply.into_inner().backup.to_vec())
}

/// Restores a backup file into the cluster `cluster_id` that `routers`
/// form, through its leader; returns the registry generation after it.
pub async fn restore_backup(routers: &[String], cluster_id: &str, backup: &[u8]) -> Result<u64, String> {
    backup::Backup::decode(backup)?;
    let request = herald_proto::grpc::pb::RestoreRequest {
        cluster_id: cluster_id.to_owned(),
        backup: backup.to_vec().into(),
    };
    let not_leading = |status: &tonic::Status| status.message().contains("does not lead");
    let reply =
        through_leader(routers, "restored the backup", not_leading, async |client: &mut AdminClient| {
            client.restore(request.clone()).await
        })
        .await?;
    Ok(reply.generation)
}

/// An operator's client of one router.
type AdminClient = herald_proto::grpc::pb::raft_peer_client::RaftPeerClient<tonic::transport::Channel>;

/// Makes `call` on each of `routers` in turn until one answers: a router
/// that cannot be reached, or whose refusal `try_next` accepts (it does not
/// lead), passes the call on; any other refusal ends the search. `done`
/// names what succeeding does, for the error when no router did.
async fn through_leader<T>(
    routers: &[String],
    done: &str,
    try_next: impl Fn(&tonic::Status) -> bool,
    mut call: impl AsyncFnMut(&mut AdminClient) -> Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, String> {
    let mut refusals = Vec::new();
    for address in routers {
        let mut client = match admin_client(address, Duration::from_secs(60)).await {
            Ok(client) => client,
            Err(error) => {
                refusals.push(error);
                continue;
            }
        };
        match call(&mut client).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) if try_next(&status) => refusals.push(format!("{address}: {}", status.message())),
            Err(status) => return Err(format!("{address}: {}", status.message())),
        }
    }
    Err(format!("no router {done}: {}", refusals.join("; ")))
}

/// The leader `metrics` know of, with its address, if it is in the membership.
fn leader_address(metrics: &openraft::RaftMetrics<u64, BasicNode>) -> Option<(u64, String)> {
    let leader = metrics.current_leader?;
    let node = metrics.membership_config.membership().get_node(&leader)?;
    Some((leader, node.addr.clone()))
}

/// The brief status of each of `peers` that answered within `timeout` for
/// cluster `cluster_id`, asked one after the other.
async fn peer_statuses(
    peers: &BTreeMap<u64, String>,
    cluster_id: &str,
    timeout: Duration,
    clients: &mut StatusClients,
) -> Vec<herald_proto::grpc::pb::StatusReply> {
    clients.0.retain(|address, _| peers.values().any(|a| a == address));
    let mut asked = tokio::task::JoinSet::new();
    for address in peers.values() {
        let client = clients.client(address);
        let address = address.clone();
        asked.spawn(async move {
            let ask = async move {
                let reply = client?
                    .status(herald_proto::grpc::pb::StatusRequest { brief: true })
                    .await
                    .map_err(|status| format!("{address}: {}", status.message()))?;
                Ok::<_, String>(reply.into_inner())
            };
            tokio::time::timeout(timeout, ask).await
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = asked.join_next().await {
        if let Ok(Ok(Ok(reply))) = answer
            && reply.cluster_id == cluster_id
        {
            answers.push(reply);
        }
    }
    answers
}

/// Clients of the peers' status calls, kept from one call to the next (a
/// leader asks every voter each second): one connection per peer, opened
/// again when it fails, not one per call.
#[derive(Default)]
struct StatusClients(HashMap<String, AdminClient>);

impl StatusClients {
    fn client(&mut self, address: &str) -> Result<AdminClient, String> {
        if let Some(client) = self.0.get(address) {
            return Ok(client.clone());
        }
        let endpoint = herald_proto::grpc::tls::endpoint(address)?.connect_timeout(Duration::from_secs(3));
        let client = peer_client(endpoint.connect_lazy());
        self.0.insert(address.to_owned(), client.clone());
        Ok(client)
    }
}

/// Asks the router at `address` (`host:port`) for its view of the cluster
/// (`brief`: the Raft fields only).
pub async fn status(address: &str, brief: bool) -> Result<herald_proto::grpc::pb::StatusReply, String> {
    let mut client = admin_client(address, Duration::from_secs(3)).await?;
    let reply = client
        .status(herald_proto::grpc::pb::StatusRequest { brief })
        .await
        .map_err(|status| format!("{address}: {}", status.message()))?;
    Ok(reply.into_inner())
}

/// A membership change for [`change_membership`].
#[derive(Debug, Clone)]
pub enum MembershipChange {
    /// Add router `id` at `address` (`host:port`) as a voter, after it
    /// caught up as a learner.
    Add(u64, String),
    /// Remove router `id` from the voters.
    Remove(u64),
}

/// The error of a router whose data is damaged (or could not be read):
/// why, and what an operator does about it.
fn refuse_damaged(error: herald_store::StoreError) -> RaftNodeError {
    match error {
        herald_store::StoreError::Corrupt { .. } => RaftNodeError::Storage(format!(
            "{error}. This router refuses to start rather than serve or vote without data it \
             acknowledged: restore its data from a backup, or wipe its data directory and add it \
             back to the cluster (docs/operations.md, \"Replacing a router\")"
        )),
        other => RaftNodeError::Storage(other.to_string()),
    }
}

/// Applies `change` through whichever of `routers` leads cluster
/// `cluster_id`; returns the voters after it.
pub async fn change_membership(
    routers: &[String],
    cluster_id: &str,
    change: &MembershipChange,
) -> Result<Vec<String>, String> {
    use herald_proto::grpc::pb::{AddVoterRequest, RemoveVoterRequest};
    let refused = |status: &tonic::Status| status.code() == tonic::Code::FailedPrecondition;
    let reply = through_leader(routers, "made the change", refused, async |client: &mut AdminClient| {
        let cluster_id = cluster_id.to_owned();
        match change {
            MembershipChange::Add(node_id, address) => {
                let request = AddVoterRequest { cluster_id, node_id: *node_id, address: address.clone() };
                client.add_voter(request).await
            }
            MembershipChange::Remove(node_id) => {
                client.remove_voter(RemoveVoterRequest { cluster_id, node_id: *node_id }).await
            }
        }
    })
    .await?;
    Ok(reply.voters)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod shards_tests;

#[cfg(test)]
mod cluster_tests;

impl crate::Journal for RaftNode {
    fn submit<'a>(
        &'a self,
        facts: &'a [Fact],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<crate::Committing, String>> + Send + 'a>> {
        Box::pin(async move {
            let committed = self.proposer.propose(journal::encode(facts)).await?;
            let committing: crate::Committing = Box::pin(async move {
                committed.await.unwrap_or_else(|_| Err("raft stopped before the commit".to_owned()))
            });
            Ok(committing)
        })
    }
}
