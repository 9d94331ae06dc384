//! The gateway's link to a router over gRPC: the same seam items the
//! standalone mode passes in-process, carried as batches on one
//! `Seam.Link` stream.
//!
//! ```text
//!   Gateway ──Uplink──▶ [bounded] ──▶ uplink bridge ──UplinkBatch──▶ router
//!   Gateway ◀─Downlink── [bounded] ◀── downlink bridge ◀─DownlinkBatch── router
//! ```
//!
//! Batching: each bridge drains its queue with `recv_many`, so a busy link
//! sends one stream message per batch, never one per item. Credit: the
//! bounded queues plus HTTP/2 flow control; a gateway that stops reading
//! makes the router's offers fail (counted there), never block it.

use herald_core::NodeId;
use herald_proto::grpc::pb::seam_client::SeamClient;
use herald_proto::grpc::pb::{self, downlink, uplink};
use herald_proto::grpc::{
    CONTRACT_VERSION, MAX_MESSAGE_BYTES, NOT_LEADER, downlink_from_pb, split_by_size, uplink_to_pb,
};
use herald_proto::seam::{self, GatewayLink, RouterPort};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::warn;

/// Items drained per uplink batch.
const UPLINK_BATCH: usize = 256;
/// Uplink batches buffered towards the transport.
const UPLINK_BUFFER: usize = 16;

/// Why a link to the router could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The address is not a valid endpoint.
    #[error("invalid router address {0:?}")]
    Address(String),
    /// The router could not be reached.
    #[error("router unreachable: {0}")]
    Unreachable(String),
    /// The router refused the link (another version or cluster, …).
    #[error("router refused the link: {0}")]
    Refused(String),
}

/// What the router said about itself when the link opened.
#[derive(Debug, Clone)]
pub struct RouterInfo {
    /// The router's node id.
    pub router: NodeId,
    /// The cluster it belongs to.
    pub cluster_id: String,
}

/// An open link: the gateway's ends, what the router said, and a signal
/// that resolves when the link is lost.
pub struct RouterLink {
    /// The ends to hand to [`crate::Gateway::bind`].
    pub link: GatewayLink,
    /// The router's identity.
    pub info: RouterInfo,
    /// Resolves with the reason when the stream to the router ends.
    pub lost: oneshot::Receiver<String>,
    /// Ends once everything the gateway sent has been handed to the stream
    /// (after the gateway dropped its uplink): await it before exiting.
    pub flushed: tokio::task::JoinHandle<()>,
}

/// Opens the seam to whichever of the routers at `addresses` serves
/// gateways (the leader of a replicated cluster), trying them in turn for
/// up to `patience`: a router that is unreachable or does not lead is
/// skipped; any other refusal (another cluster, another contract version,
/// a duplicate gateway id) ends the search at once.
pub async fn connect_any(
    addresses: &[String],
    gateway: NodeId,
    cluster_id: Option<&str>,
    capacity: usize,
    patience: Duration,
) -> Result<RouterLink, LinkError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = LinkError::Unreachable("no router address given".into());
    loop {
        for address in addresses {
            match connect(address, gateway, cluster_id, capacity).await {
                Ok(link) => return Ok(link),
                Err(LinkError::Refused(reason)) if !reason.contains(NOT_LEADER) => {
                    return Err(LinkError::Refused(reason));
                }
                Err(error) => last = error,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        // An election takes a few hundred milliseconds.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens the seam to the router at `address` (`http://host:port`) as
/// gateway `gateway`; `cluster_id`, when set, must match the router's.
pub async fn connect(
    address: &str,
    gateway: NodeId,
    cluster_id: Option<&str>,
    capacity: usize,
) -> Result<RouterLink, LinkError> {
    let endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(|_| LinkError::Address(address.to_owned()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| LinkError::Unreachable(e.to_string()))?;
    let mut client = SeamClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (batches, batch_rx) = mpsc::channel(UPLINK_BUFFER);
    let hello = pb::Uplink {
        item: Some(uplink::Item::Hello(pb::Hello {
            contract_version: CONTRACT_VERSION,
            cluster_id: cluster_id.unwrap_or_default().to_owned(),
            gateway: gateway.0,
        })),
    };
    batches
        .send(pb::UplinkBatch { items: vec![hello] })
        .await
        .map_err(|_| LinkError::Refused("closed".into()))?;
    let response = client
        .link(ReceiverStream::new(batch_rx))
        .await
        .map_err(|s| LinkError::Refused(s.message().to_owned()))?;
    let mut inbound = response.into_inner();
    let first = inbound
        .message()
        .await
        .map_err(|s| LinkError::Refused(s.message().to_owned()))?
        .ok_or_else(|| LinkError::Refused("stream closed before welcome".into()))?;
    let mut items = first.items.into_iter();
    let info = match items.next().and_then(|item| item.item) {
        Some(downlink::Item::Welcome(welcome)) if welcome.contract_version == CONTRACT_VERSION => {
            RouterInfo { router: NodeId(welcome.router), cluster_id: welcome.cluster_id }
        }
        Some(downlink::Item::Welcome(welcome)) => {
            return Err(LinkError::Refused(format!(
                "router speaks contract version {}",
                welcome.contract_version
            )));
        }
        _ => return Err(LinkError::Refused("the first downlink item must be welcome".into())),
    };

    let (link, port) = seam::link(gateway, capacity);
    let RouterPort { mut uplink, downlink, .. } = port;
    let (lost_tx, lost) = oneshot::channel();
    let flushed = tokio::spawn(async move {
        let mut buffer = Vec::with_capacity(UPLINK_BATCH);
        'link: while uplink.recv_many(&mut buffer, UPLINK_BATCH).await > 0 {
            let converted = buffer.drain(..).map(|item| uplink_to_pb(&item)).collect();
            for chunk in split_by_size(converted) {
                if batches.send(pb::UplinkBatch { items: chunk }).await.is_err() {
                    break 'link;
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut batch = items.collect();
        let reason = loop {
            match pass_down(batch, &downlink).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(reason) => break reason,
            }
            batch = match inbound.message().await {
                Ok(Some(next)) => next.items,
                Ok(None) => break "router closed the link".to_owned(),
                Err(status) => break format!("router link failed: {}", status.message()),
            };
        };
        warn!(reason, "router link lost");
        let _ = lost_tx.send(reason);
    });
    Ok(RouterLink { link, info, lost, flushed })
}

/// Converts and passes downlink items to the gateway in order. Returns
/// false when the gateway has stopped, and an error for an item it cannot
/// read: skipping it could leave a session waiting forever for its reply,
/// so the link ends instead.
async fn pass_down(
    items: Vec<pb::Downlink>,
    downlink: &mpsc::Sender<seam::Downlink>,
) -> Result<bool, String> {
    for item in items {
        let item = downlink_from_pb(item).map_err(|error| format!("malformed downlink item: {error}"))?;
        if downlink.send(item).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}
