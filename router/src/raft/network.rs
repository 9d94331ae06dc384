//! The network between router nodes, as openraft sees it: one gRPC
//! `RaftPeer` client per peer, openraft's messages as JSON in a protobuf
//! envelope that names the cluster (`proto/herald/v1/raft.proto`).
//!
//! Every call is bounded by openraft's time-to-live for it and by the
//! connection timeout: a peer that does not answer in time is reported
//! unreachable (openraft then backs off), so a half-open connection never
//! wedges replication. Calls are cancel-safe: dropping one drops its
//! request.

use super::TypeConfig;
use herald_proto::grpc::pb::raft_peer_client::RaftPeerClient;
use herald_proto::grpc::pb::{RaftReply, RaftRequest};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tonic::transport::Channel;

type NodeId = u64;

/// How long opening a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Makes clients of the peers of one cluster.
#[derive(Debug, Clone)]
pub(super) struct GrpcPeers {
    cluster_id: String,
    source_ip: Option<std::net::IpAddr>,
}

impl GrpcPeers {
    pub(super) fn new(cluster_id: String, source_ip: Option<std::net::IpAddr>) -> GrpcPeers {
        GrpcPeers { cluster_id, source_ip }
    }
}

/// A client of one peer; its connection opens on first use and reopens
/// after a failure.
#[derive(Debug)]
pub(super) struct GrpcPeer {
    target: NodeId,
    cluster_id: String,
    client: Result<RaftPeerClient<Channel>, String>,
}

impl RaftNetworkFactory<TypeConfig> for GrpcPeers {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcPeer {
        let client = herald_proto::grpc::tls::endpoint(&node.addr)
            .map(|endpoint| {
                let endpoint = endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true);
                let channel = endpoint.local_address(self.source_ip).connect_lazy();
                RaftPeerClient::new(channel)
                    .max_decoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
            })
            .map_err(|e| format!("router {target} has an invalid address {:?}: {e}", node.addr));
        GrpcPeer { target, cluster_id: self.cluster_id.clone(), client }
    }
}

/// Which RPC a call is.
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl GrpcPeer {
    /// Sends `request` as `rpc`; returns openraft's answer from the peer.
    async fn call<Req: Serialize, Resp: DeserializeOwned, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |reason: String| RPCError::Unreachable(Unreachable::from(AnyError::error(reason)));
        let client = self.client.as_mut().map_err(|reason| unreachable(reason.clone()))?;
        let payload = serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = RaftRequest { cluster_id: self.cluster_id.clone(), payload: payload.into() };
        let call = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply: RaftReply = match tokio::time::timeout(ttl, call).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                // Another cluster: never retry into it quickly.
                return Err(unreachable(format!("router {}: {}", self.target, status.message())));
            }
            Ok(Err(status)) => return Err(unreachable(format!("router {}: {status}", self.target))),
            Err(_) => {
                return Err(unreachable(format!("router {} did not answer within {ttl:?}", self.target)));
            }
        };
        let answer: Result<Resp, E> =
            serde_json::from_slice(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, option.soft_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option.soft_ttl()).await
    }
}
