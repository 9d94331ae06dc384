//! The router's gRPC face: one `Seam.Link` stream per gateway, bridged to
//! the same port the in-process standalone mode uses.
//!
//! ```text
//!   gateway ──UplinkBatch──▶ uplink bridge ──Uplink──▶ RouterPort ──▶ Router
//!   gateway ◀─DownlinkBatch── downlink bridge ◀─Downlink── RouterPort ◀──┘
//! ```
//!
//! A stream opens with the gateway's `Hello` (contract version, cluster id,
//! gateway id) and the router's `Welcome`. Another contract version or
//! another cluster is refused with `FailedPrecondition`; a malformed item
//! ends the stream with `InvalidArgument`. Both are counted. When the
//! stream ends, the router treats the gateway as gone.

use crate::Router;
use crate::raft::RaftPeerService;
use herald_core::NodeId;
use herald_proto::grpc::pb::seam_server::{Seam, SeamServer};
use herald_proto::grpc::pb::{self, downlink, uplink};
use herald_proto::grpc::{
    ALREADY_LINKED, CONTRACT_VERSION, MAX_MESSAGE_BYTES, NOT_LEADER, downlink_to_pb, split_by_size,
    uplink_from_pb,
};
use herald_proto::seam::{self, GatewayLink};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

/// Items a single uplink batch may carry; a larger one is refused.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Items drained from the router per downlink batch.
const DOWNLINK_BATCH: usize = 256;
/// Downlink batches buffered towards the transport (whose HTTP/2 flow
/// control then pushes back).
const DOWNLINK_BUFFER: usize = 16;

/// Counters of refused streams and items.
#[derive(Debug, Default)]
pub struct SeamCounters {
    /// Streams refused for another contract version.
    pub refused_version: AtomicU64,
    /// Streams refused for another cluster.
    pub refused_cluster: AtomicU64,
    /// Streams ended for a malformed or oversize batch.
    pub refused_malformed: AtomicU64,
    /// Streams refused because their gateway id was linked already.
    pub refused_duplicate: AtomicU64,
    /// Gateway streams accepted.
    pub links_opened: AtomicU64,
    /// Streams refused because this node does not lead.
    pub refused_not_leader: AtomicU64,
}

/// The `Seam` gRPC service of a router.
pub struct SeamService {
    /// The router serving gateways: set while this node leads.
    current: watch::Receiver<Option<Router>>,
    /// Keeps `current` alive for a service built around one router.
    _fixed: Option<watch::Sender<Option<Router>>>,
    node: NodeId,
    cluster_id: String,
    capacity: usize,
    counters: Arc<SeamCounters>,
    raft: Option<RaftPeerService>,
    registry: Option<crate::registry_link::RegistryService>,
}

impl SeamService {
    /// Returns the service for `router`, identified as `node` of
    /// `cluster_id`; each gateway's seam queues hold `capacity` items.
    pub fn new(router: Router, node: NodeId, cluster_id: String, capacity: usize) -> SeamService {
        let (fixed, current) = watch::channel(Some(router));
        SeamService {
            current,
            _fixed: Some(fixed),
            node,
            cluster_id,
            capacity,
            counters: Arc::default(),
            raft: None,
            registry: None,
        }
    }

    /// Returns the service of a node of a replicated cluster: it links
    /// gateways to whichever router `current` holds (while this node leads)
    /// and refuses them otherwise; it also serves Raft to its peers.
    pub fn following(
        current: watch::Receiver<Option<Router>>,
        raft: RaftPeerService,
        node: NodeId,
        cluster_id: String,
        capacity: usize,
    ) -> SeamService {
        SeamService {
            current,
            _fixed: None,
            node,
            cluster_id,
            capacity,
            counters: Arc::default(),
            raft: Some(raft),
            registry: None,
        }
    }

    /// Serves the registry link (ADR 0033) alongside.
    pub fn with_registry(mut self, registry: crate::registry_link::RegistryService) -> SeamService {
        self.registry = Some(registry);
        self
    }

    /// Returns the counters.
    pub fn counters(&self) -> Arc<SeamCounters> {
        self.counters.clone()
    }

    /// Serves the seam on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let raft = self.raft.clone().map(RaftPeerService::into_server);
        let registry = self.registry.clone().map(crate::registry_link::RegistryService::into_server);
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = herald_proto::grpc::tls::server_config() {
            server = server.tls_config(tls)?;
        }
        server
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)))
            .add_service(
                SeamServer::new(self)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_optional_service(raft)
            .add_optional_service(registry)
            .serve_with_incoming_shutdown(accepted_without_delay(listener), shutdown)
            .await
    }

    fn refuse(&self, counter: &AtomicU64, status: Status) -> Status {
        counter.fetch_add(1, Ordering::Relaxed);
        warn!(message = status.message(), "gateway link refused");
        status
    }
}

/// The sockets `listener` accepts, with TCP_NODELAY set. The builder's
/// `tcp_nodelay` applies only to listeners it binds itself; without it
/// Nagle's algorithm holds a small reply (a Raft append's answer, a
/// delivery) until the peer's delayed ACK, up to 40 ms on Linux: that cost
/// three routers three quarters of their durable write rate.
fn accepted_without_delay(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[tonic::async_trait]
impl Seam for SeamService {
    type LinkStream = ReceiverStream<Result<pb::DownlinkBatch, Status>>;

    async fn link(
        &self,
        request: Request<Streaming<pb::UplinkBatch>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("empty uplink"))?;
        let mut items = first.items.into_iter();
        let hello = match items.next().and_then(|item| item.item) {
            Some(uplink::Item::Hello(hello)) => hello,
            _ => {
                let status = Status::invalid_argument("the first uplink item must be hello");
                return Err(self.refuse(&self.counters.refused_malformed, status));
            }
        };
        if hello.contract_version != CONTRACT_VERSION {
            let status = Status::failed_precondition(format!(
                "seam contract version {} is not supported (this router speaks {CONTRACT_VERSION})",
                hello.contract_version
            ));
            return Err(self.refuse(&self.counters.refused_version, status));
        }
        if !hello.cluster_id.is_empty() && hello.cluster_id != self.cluster_id {
            let status = Status::failed_precondition(format!(
                "gateway expects cluster {}, this router belongs to {}",
                hello.cluster_id, self.cluster_id
            ));
            return Err(self.refuse(&self.counters.refused_cluster, status));
        }
        let gateway = NodeId(hello.gateway);
        let Some(router) = self.current.borrow().clone() else {
            let status = Status::unavailable(format!("router {} is not the leader: {NOT_LEADER}", self.node));
            return Err(self.refuse(&self.counters.refused_not_leader, status));
        };
        let (gateway_end, port) = seam::link(gateway, self.capacity);
        if router.attach(port, hello.incarnation, hello.acks).is_none() {
            let status =
                Status::already_exists(format!("gateway id {gateway} is already linked: {ALREADY_LINKED}"));
            return Err(self.refuse(&self.counters.refused_duplicate, status));
        }
        self.counters.links_opened.fetch_add(1, Ordering::Relaxed);
        info!(%gateway, "gateway linked");

        let (tx, rx) = mpsc::channel(DOWNLINK_BUFFER);
        let welcome = pb::Downlink {
            item: Some(downlink::Item::Welcome(pb::Welcome {
                contract_version: CONTRACT_VERSION,
                cluster_id: self.cluster_id.clone(),
                router: self.node.0,
            })),
        };
        tx.send(Ok(pb::DownlinkBatch { items: vec![welcome] }))
            .await
            .map_err(|_| Status::cancelled("gateway went away"))?;
        let GatewayLink { uplink, mut downlink, .. } = gateway_end;
        let counters = self.counters.clone();
        let errors = tx.clone();
        tokio::spawn(async move {
            let rest = pb::UplinkBatch { items: items.collect() };
            let mut next: Option<Result<pb::UplinkBatch, Status>> = Some(Ok(rest));
            while let Some(batch) = next.take() {
                let refusal = match batch {
                    Ok(batch) if batch.items.len() > MAX_BATCH_ITEMS => {
                        Some(Status::invalid_argument(format!("batch of {} items", batch.items.len())))
                    }
                    Ok(batch) => forward(batch, &uplink).await.err(),
                    Err(status) => {
                        // A transport error, or a stream message over the
                        // size limit: the link ends and is counted.
                        counters.refused_malformed.fetch_add(1, Ordering::Relaxed);
                        warn!(%gateway, message = status.message(), "gateway link failed");
                        break;
                    }
                };
                if let Some(status) = refusal {
                    counters.refused_malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(%gateway, message = status.message(), "gateway link ended: bad input");
                    let _ = errors.send(Err(status)).await;
                    break;
                }
                next = inbound.message().await.transpose();
            }
            info!(%gateway, "gateway link closed");
            // Dropping `uplink` ends the router's port task, which treats
            // the gateway as gone.
        });
        tokio::spawn(async move {
            let mut items = Vec::with_capacity(DOWNLINK_BATCH);
            'link: while downlink.recv_many(&mut items, DOWNLINK_BATCH).await > 0 {
                let converted = items.drain(..).map(|item| downlink_to_pb(&item)).collect();
                for chunk in split_by_size(converted) {
                    if tx.send(Ok(pb::DownlinkBatch { items: chunk })).await.is_err() {
                        break 'link;
                    }
                }
            }
            // The router let go of the gateway (it stepped down, or stopped
            // serving): end the stream, whatever the uplink still does.
            let _ = tx
                .send(Err(Status::unavailable(format!("router link closed by the router: {NOT_LEADER}"))))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Converts and forwards one batch in order; a malformed item refuses the
/// rest of the stream.
async fn forward(batch: pb::UplinkBatch, uplink: &mpsc::Sender<seam::Uplink>) -> Result<(), Status> {
    for item in batch.items {
        let item = uplink_from_pb(item).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if uplink.send(item).await.is_err() {
            return Err(Status::unavailable("router stopped"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_sockets_send_small_writes_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut incoming = accepted_without_delay(listener);
        let _client = tokio::net::TcpStream::connect(address).await.expect("connect");
        let accepted = incoming.next().await.expect("a connection").expect("accepted");
        assert!(accepted.nodelay().expect("TCP_NODELAY readable"), "Nagle's algorithm is off");
    }
}
