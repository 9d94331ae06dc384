//! The server side of the router-to-router network: the `RaftPeer` gRPC
//! service, which hands openraft's messages to this node's Raft, and its
//! status for `herald ctl cluster status`.

use super::{Replicated, TypeConfig};
use herald_proto::grpc::pb::raft_peer_server::{RaftPeer, RaftPeerServer};
use herald_proto::grpc::pb::{RaftReply, RaftRequest, StatusReply, StatusRequest};
use openraft::Raft;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// The `RaftPeer` service of one router node.
#[derive(Clone)]
pub struct RaftPeerService {
    raft: Raft<TypeConfig>,
    cluster_id: String,
    state: Arc<Mutex<Replicated>>,
}

impl RaftPeerService {
    pub(super) fn new(
        raft: Raft<TypeConfig>,
        cluster_id: String,
        state: Arc<Mutex<Replicated>>,
    ) -> RaftPeerService {
        RaftPeerService { raft, cluster_id, state }
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
        let rpc = self.open(request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.open(request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let (retained, sessions) = {
            let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (state.durable.retained_count(), state.durable.session_count())
        };
        let membership = metrics.membership_config.membership();
        let voter_ids: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        for (id, node) in membership.nodes() {
            let entry = format!("{id}={}", node.addr);
            if voter_ids.contains(id) {
                voters.push(entry);
            } else {
                learners.push(entry);
            }
        }
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
            gateways: Vec::new(),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            retained_messages: retained as u64,
            persistent_sessions: sessions as u64,
        }))
    }
}
