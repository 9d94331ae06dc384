//! The server side of the router-to-router network: the `RaftPeer` gRPC
//! service, which hands openraft's messages to this node's Raft, and its
//! status for `herald ctl cluster status`.

use super::{Replicated, TypeConfig, VoteGate};
use herald_proto::grpc::pb::raft_peer_server::{RaftPeer, RaftPeerServer};
use herald_proto::grpc::pb::{
    AddVoterRequest, BackupReply, BackupRequest, ElectReply, ElectRequest, MembershipReply, RaftReply,
    RaftRequest, RemoveVoterRequest, RestoreReply, RestoreRequest, StatusReply, StatusRequest,
};
use openraft::Raft;
use openraft::{BasicNode, ChangeMembers};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// The `RaftPeer` service of one router node.
#[derive(Clone)]
pub struct RaftPeerService {
    raft: Raft<TypeConfig>,
    cluster_id: String,
    state: Arc<Mutex<Replicated>>,
    gateways: GatewayCounts,
    registry: Option<GatewayCounts>,
    restored: Arc<tokio::sync::Notify>,
    votes: Arc<VoteGate>,
    inherited: Arc<std::sync::atomic::AtomicU32>,
}

/// Reports the gateways a node serves and their online sessions.
pub type GatewayCounts = Arc<dyn Fn() -> Vec<(u64, usize)> + Send + Sync>;

impl RaftPeerService {
    pub(super) fn new(
        raft: Raft<TypeConfig>,
        cluster_id: String,
        state: Arc<Mutex<Replicated>>,
        restored: Arc<tokio::sync::Notify>,
        votes: Arc<VoteGate>,
        inherited: Arc<std::sync::atomic::AtomicU32>,
    ) -> RaftPeerService {
        RaftPeerService {
            raft,
            cluster_id,
            state,
            gateways: Arc::new(Vec::new),
            registry: None,
            restored,
            votes,
            inherited,
        }
    }

    /// Reports, in `herald ctl cluster status`, the gateways `counts` lists
    /// with their online sessions.
    pub fn with_gateway_counts(mut self, counts: GatewayCounts) -> RaftPeerService {
        self.gateways = counts;
        self
    }

    /// Reports, in `herald ctl cluster status`, the online sessions of this
    /// node's registry shards per gateway, as `counts` lists them.
    pub fn with_registry_counts(mut self, counts: GatewayCounts) -> RaftPeerService {
        self.registry = Some(counts);
        self
    }

    /// Returns the tonic server for this service.
    pub fn into_server(self) -> RaftPeerServer<RaftPeerService> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
    }

    /// Checks the envelope and decodes openraft's request.
    fn open<T: DeserializeOwned>(&self, request: Request<RaftRequest>) -> Result<T, Status> {
        let request = request.into_inner();
        if request.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "raft peer of cluster {} called a node of cluster {}",
                request.cluster_id, self.cluster_id
            )));
        }
        serde_json::from_slice(&request.payload)
            .map_err(|e| Status::invalid_argument(format!("malformed raft message: {e}")))
    }
}

impl RaftPeerService {
    fn check_cluster(&self, cluster_id: &str) -> Result<(), Status> {
        if cluster_id == self.cluster_id {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "this router belongs to cluster {}, not {cluster_id}",
                self.cluster_id
            )))
        }
    }

    /// Refuses a membership change on a node that does not lead.
    fn check_leader(&self) -> Result<(), Status> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader == Some(metrics.id) {
            return Ok(());
        }
        let leader = metrics.current_leader.map_or_else(|| "unknown".to_owned(), |id| id.to_string());
        Err(Status::failed_precondition(format!(
            "router {} does not lead; the leader is {leader}",
            metrics.id
        )))
    }

    /// Returns the voters and the learners, as `id=address`.
    fn members(&self) -> (Vec<String>, Vec<String>) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<u64> = membership.voter_ids().collect();
        membership.nodes().map(|(id, node)| (voter_ids.contains(id), format!("{id}={}", node.addr))).fold(
            (Vec::new(), Vec::new()),
            |(mut voters, mut learners), (voter, entry)| {
                if voter {
                    voters.push(entry)
                } else {
                    learners.push(entry)
                }
                (voters, learners)
            },
        )
    }
}

fn reply<T: Serialize>(answer: &T) -> Result<Response<RaftReply>, Status> {
    let payload = serde_json::to_vec(answer).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { payload: payload.into() }))
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn append_entries(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.open(request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: openraft::raft::VoteRequest<u64> = self.open(request)?;
        if self.votes.is_withheld() {
            // No data, and not caught up (ADR 0032): a refusal that leaves
            // this node's vote as it is.
            let vote = self.raft.metrics().borrow().vote;
            tracing::info!(candidate = %rpc.vote, "vote withheld: this router has no data and has not caught up");
            let refused = openraft::raft::VoteResponse { vote, vote_granted: false, last_log_id: None };
            return reply(&Ok::<_, openraft::error::RaftError<u64>>(refused));
        }
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.open(request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn add_voter(
        &self,
        request: Request<AddVoterRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let request = request.into_inner();
        self.check_cluster(&request.cluster_id)?;
        self.check_leader()?;
        let node = BasicNode { addr: request.address };
        // A learner first: it catches up before it counts towards a majority.
        self.raft.add_learner(request.node_id, node, true).await.map_err(|e| {
            Status::unavailable(format!("adding router {} as a learner: {e}", request.node_id))
        })?;
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([request.node_id]));
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| Status::unavailable(format!("making router {} a voter: {e}", request.node_id)))?;
        Ok(Response::new(MembershipReply { voters: self.members().0 }))
    }

    async fn remove_voter(
        &self,
        request: Request<RemoveVoterRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let request = request.into_inner();
        self.check_cluster(&request.cluster_id)?;
        self.check_leader()?;
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([request.node_id]));
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| Status::unavailable(format!("removing router {}: {e}", request.node_id)))?;
        Ok(Response::new(MembershipReply { voters: self.members().0 }))
    }

    async fn backup(&self, request: Request<BackupRequest>) -> Result<Response<BackupReply>, Status> {
        self.check_cluster(&request.into_inner().cluster_id)?;
        let applied = self.raft.metrics().borrow().last_applied.map_or(0, |id| id.index);
        let (generation, image) = {
            let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (state.high_water(), herald_proto::journal::encode_image(&state.durable.image()))
        };
        let node = self.raft.metrics().borrow().id;
        let backup = super::backup::Backup::new(&self.cluster_id, node, applied, generation, image);
        Ok(Response::new(BackupReply { backup: backup.encode().into() }))
    }

    async fn restore(&self, request: Request<RestoreRequest>) -> Result<Response<RestoreReply>, Status> {
        let request = request.into_inner();
        self.check_cluster(&request.cluster_id)?;
        self.check_leader()?;
        let backup = super::backup::Backup::decode(&request.backup).map_err(Status::invalid_argument)?;
        herald_proto::journal::decode_image(&backup.image)
            .map_err(|e| Status::invalid_argument(format!("backup image: {e}")))?;
        {
            let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.durable.holds_data() {
                return Err(Status::failed_precondition(
                    "this cluster already holds retained messages, sessions or queues: \
                     restore into a new cluster (fresh data directories)",
                ));
            }
        }
        let command = super::Command::Restore { generation: backup.meta.generation, image: backup.image };
        self.raft.client_write(command).await.map_err(|e| Status::unavailable(format!("restoring: {e}")))?;
        let generation = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).high_water();
        tracing::warn!(
            from_cluster = %backup.meta.cluster_id,
            from_node = backup.meta.node_id,
            applied_index = backup.meta.applied_index,
            "restored a backup: rebuilding the router"
        );
        self.restored.notify_one();
        Ok(Response::new(RestoreReply { generation }))
    }

    async fn elect(&self, request: Request<ElectRequest>) -> Result<Response<ElectReply>, Status> {
        self.check_cluster(&request.into_inner().cluster_id)?;
        tracing::info!("standing for election: the leader is stepping down");
        self.raft.trigger().elect().await.map_err(|e| Status::unavailable(format!("election: {e}")))?;
        Ok(Response::new(ElectReply {}))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let brief = request.into_inner().brief;
        let metrics = self.raft.metrics().borrow().clone();
        let (retained, sessions, shards_owned) = if brief {
            (0, 0, None)
        } else {
            let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let owned = state.shards.as_ref().map(|table| table.owned_by(metrics.id) as u32);
            (state.durable.retained_count(), state.durable.session_count(), owned)
        };
        let (voters, learners) = self.members();
        Ok(Response::new(StatusReply {
            node_id: metrics.id,
            cluster_id: self.cluster_id.clone(),
            state: format!("{:?}", metrics.state),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|id| id.index),
            voters,
            learners,
            gateways: if brief {
                Vec::new()
            } else {
                (self.gateways)().into_iter().map(|(id, sessions)| format!("{id}={sessions}")).collect()
            },
            snapshot_index: metrics.snapshot.map(|id| id.index),
            retained_messages: retained as u64,
            persistent_sessions: sessions as u64,
            vote_withheld: self.votes.is_withheld(),
            raft_commands: super::shards::RAFT_COMMANDS,
            shards_owned,
            shards_inherited: self.inherited.load(std::sync::atomic::Ordering::Relaxed),
            registry_gateways: match &self.registry {
                Some(counts) if !brief => {
                    counts().into_iter().map(|(id, sessions)| format!("{id}={sessions}")).collect()
                }
                _ => Vec::new(),
            },
            registry_counted: self.registry.is_some() && !brief,
        }))
    }
}
