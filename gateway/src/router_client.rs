//! The gateway's link to the router cluster over gRPC: the same seam items
//! the standalone mode passes in-process, carried as batches on one
//! `Seam.Link` stream, kept open across router failures.
//!
//! ```text
//!   Gateway ──Uplink──▶ [bounded] ──▶ pump ──UplinkBatch──▶ router (the leader)
//!   Gateway ◀─Downlink── [bounded] ◀── pump ◀─DownlinkBatch── router
//!                                       │
//!             link lost ──▶ find a router that serves ──▶ resync ──▶ pump again
//! ```
//!
//! Batching: each direction drains its queue with `recv_many`, so a busy
//! link sends one stream message per batch, never one per item. Credit: the
//! bounded queues plus HTTP/2 flow control.
//!
//! **Keeping clients across a lost link.** When the stream ends (the leader
//! died or stepped down, the router restarted, the network broke), the
//! gateway keeps its connections and looks for a router that serves. While
//! it looks, nothing leaves the uplink queue: connections that need the
//! router wait (their clients see a delay). On the new link it sends, in
//! order: its whole route set; every session it holds with its epoch
//! (`Reattach`); every request sent on the old link that got no reply (each
//! carries an id; the router applies them again, so a QoS 1 publish may be
//! delivered twice, never lost); what queued meanwhile; then the end of the
//! list. Items without a reply that were on the wire when the link broke
//! (route changes, requeues, redispatches) may be lost with it: routes are
//! resent whole; the others are an open gap (`docs/cluster.md`).

use crate::Shared;
use herald_core::{AppId, NodeId, TopicFilter};
use herald_proto::grpc::pb::seam_client::SeamClient;
use herald_proto::grpc::pb::{self, downlink, uplink};
use herald_proto::grpc::{
    ALREADY_LINKED, CONTRACT_VERSION, MAX_MESSAGE_BYTES, NOT_LEADER, downlink_from_pb, split_by_size,
    uplink_to_pb,
};
use herald_proto::seam::{Reattach, RequestId, RouterPort, Uplink};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::{info, warn};

/// Items drained per uplink batch.
const UPLINK_BATCH: usize = 256;
/// Uplink batches buffered towards the transport.
const UPLINK_BUFFER: usize = 16;
/// Sessions per `Reattach` item.
const REATTACH_CHUNK: usize = 1000;
/// Pause between rounds over the router addresses: an election takes a few
/// hundred milliseconds.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How long opening a link may take, from TCP connect to the router's
/// welcome: a router that accepts sockets but does not answer (stopped,
/// overloaded, half dead) is passed over for the next one.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

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

impl LinkError {
    /// Whether another router, or the same one a little later, may accept.
    fn is_transient(&self) -> bool {
        match self {
            LinkError::Unreachable(_) => true,
            LinkError::Refused(reason) => reason.contains(NOT_LEADER) || reason.contains(ALREADY_LINKED),
            LinkError::Address(_) => false,
        }
    }
}

/// What the router said about itself when the link opened.
#[derive(Debug, Clone)]
pub struct RouterInfo {
    /// The router's node id.
    pub router: NodeId,
    /// The cluster it belongs to.
    pub cluster_id: String,
}

/// Who the gateway is to the routers, and where they are.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The routers' gRPC URLs (`http://host:port`).
    pub addresses: Vec<String>,
    /// The gateway's node id.
    pub gateway: NodeId,
    /// The cluster the routers must belong to, if set.
    pub cluster_id: Option<String>,
    /// Random per process (see the seam's `Hello`).
    pub incarnation: u64,
}

/// An open stream to a router that serves gateways.
pub struct OpenLink {
    /// The router's identity.
    pub info: RouterInfo,
    outbound: mpsc::Sender<pb::UplinkBatch>,
    inbound: Streaming<pb::DownlinkBatch>,
    /// Items that came with the welcome.
    first: Vec<pb::Downlink>,
}

/// Opens a stream to whichever of the routers serves gateways (the leader
/// of a replicated cluster), trying them in turn for up to `patience`: a
/// router that is unreachable, does not lead, or still holds this gateway
/// id for an older process is skipped; any other refusal (another cluster,
/// another contract version) ends the search at once.
pub async fn connect_any(settings: &LinkSettings, patience: Duration) -> Result<OpenLink, LinkError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = LinkError::Unreachable("no router address given".into());
    loop {
        for address in &settings.addresses {
            let opened = tokio::time::timeout(OPEN_TIMEOUT, connect(address, settings)).await;
            let opened = opened.unwrap_or_else(|_| {
                Err(LinkError::Unreachable(format!("{address}: no welcome within {OPEN_TIMEOUT:?}")))
            });
            match opened {
                Ok(link) => return Ok(link),
                Err(error) if error.is_transient() => last = error,
                Err(error) => return Err(error),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// `reason` with what a transport failure most likely means: the router
/// requires cluster TLS this gateway does not speak, or the handshake
/// failed on a certificate.
fn with_tls_hint(reason: &str) -> String {
    let transport =
        ["h2 protocol error", "transport error", "operation was canceled", "connection reset", "broken pipe"]
            .iter()
            .any(|sign| reason.contains(sign));
    match (transport, herald_proto::grpc::tls::enabled()) {
        (true, false) => format!("{reason} (does the router require cluster TLS? see [cluster_tls])"),
        (true, true) => format!(
            "{reason} (a cluster TLS handshake failed? check [cluster_tls]: the CA, this gateway's \
             certificate and server_name)"
        ),
        _ => reason.to_owned(),
    }
}

/// The gRPC endpoint of the router at `address`, as every link of the
/// gateway to a router opens it: cluster TLS when installed, no Nagle,
/// HTTP/2 keep-alives every 5 s.
pub(crate) fn router_endpoint(address: &str) -> Result<tonic::transport::Endpoint, String> {
    Ok(herald_proto::grpc::tls::endpoint(address)?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// Opens a stream to the router at `address`.
pub async fn connect(address: &str, settings: &LinkSettings) -> Result<OpenLink, LinkError> {
    let endpoint = router_endpoint(address).map_err(|_| LinkError::Address(address.to_owned()))?;
    let channel = endpoint.connect().await.map_err(|e| LinkError::Unreachable(e.to_string()))?;
    let mut client = SeamClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (outbound, batch_rx) = mpsc::channel(UPLINK_BUFFER);
    let hello = pb::Uplink {
        item: Some(uplink::Item::Hello(pb::Hello {
            contract_version: CONTRACT_VERSION,
            acks: true,
            cluster_id: settings.cluster_id.clone().unwrap_or_default(),
            gateway: settings.gateway.0,
            incarnation: settings.incarnation,
        })),
    };
    outbound
        .send(pb::UplinkBatch { items: vec![hello] })
        .await
        .map_err(|_| LinkError::Refused("closed".into()))?;
    let response = client
        .link(ReceiverStream::new(batch_rx))
        .await
        .map_err(|s| LinkError::Refused(with_tls_hint(s.message())))?;
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
    Ok(OpenLink { info, outbound, inbound, first: items.collect() })
}

/// A gateway's whole route set.
type Routes = Vec<(AppId, TopicFilter)>;

/// What the gateway holds, for a link opened again. Weak: the link must
/// not keep a stopped gateway alive.
#[derive(Clone)]
pub struct Resync(pub(crate) Weak<Shared>);

impl Resync {
    /// The gateway's routes and the sessions it holds; `None` once the
    /// gateway has stopped.
    ///
    /// Not under the route lock: a connection may hold it while it waits
    /// for room in the uplink, which only this link drains. Route changes
    /// are queued in the order they were made, and each is idempotent, so
    /// those sent after this snapshot (made before or after it) leave the
    /// router with the gateway's current route set.
    fn snapshot(&self) -> Option<(Routes, Vec<Reattach>)> {
        let shared = self.0.upgrade()?;
        let routes = shared.index.read().unwrap_or_else(|p| p.into_inner()).routes();
        let mut sessions = Vec::new();
        shared.connections.for_each(|handle| sessions.extend(handle.reattach()));
        Some((routes, sessions))
    }
}

/// How the link is doing, for operators and readiness.
#[derive(Debug, Default)]
pub struct LinkStatus {
    linked: AtomicBool,
    /// Links opened (the first one included).
    pub links_opened: AtomicU64,
    /// Links lost.
    pub links_lost: AtomicU64,
    /// Requests sent again on a new link because the old one lost them.
    pub requests_replayed: AtomicU64,
    /// Sessions listed to a new link.
    pub sessions_reattached: AtomicU64,
    /// How long publishes waited for the router's reply: from the link
    /// taking the request to its reply coming back (the gateway → router
    /// → gateway hop, the router's work and both streams' queues included).
    pub publish_round_trip: RoundTrips,
}

/// Upper bounds, in seconds, of [`RoundTrips`]' buckets.
pub const ROUND_TRIP_BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram, lock-free: counts per bucket (the last past every
/// bound) and the sum in microseconds.
#[derive(Debug, Default)]
pub struct RoundTrips {
    buckets: [AtomicU64; ROUND_TRIP_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl RoundTrips {
    fn record(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket =
            ROUND_TRIP_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(ROUND_TRIP_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts per bucket (not cumulative), and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; ROUND_TRIP_BUCKETS.len() + 1], f64) {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        (buckets, self.sum_us.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

impl LinkStatus {
    /// Whether a router that serves gateways is linked right now.
    pub fn is_linked(&self) -> bool {
        self.linked.load(Ordering::Relaxed)
    }
}

/// A running link: its status, and the task that ends once the gateway
/// has stopped and everything it sent was handed to the stream.
pub struct RouterLink {
    /// The router first linked.
    pub info: RouterInfo,
    /// How the link is doing.
    pub status: Arc<LinkStatus>,
    /// Ends after the gateway dropped its uplink and the rest was sent.
    pub done: tokio::task::JoinHandle<()>,
}

/// Requests sent on the current link and not answered yet, in send order.
#[derive(Default)]
struct Pending {
    next: u64,
    /// Each request with its place in the send order and when the link
    /// took it.
    items: HashMap<RequestId, (u64, Instant, Uplink)>,
}

impl Pending {
    fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
        pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The unanswered requests, oldest first.
    fn take_in_order(&mut self) -> Vec<Uplink> {
        let mut items: Vec<_> = self.items.drain().map(|(_, entry)| entry).collect();
        items.sort_unstable_by_key(|(seq, _, _)| *seq);
        items.into_iter().map(|(_, _, item)| item).collect()
    }
}

/// Serves the gateway's `port` over `open`, and over every link after it
/// when one is lost, until the gateway stops.
pub fn start(open: OpenLink, port: RouterPort, resync: Resync, settings: LinkSettings) -> RouterLink {
    let status = Arc::new(LinkStatus::default());
    let info = open.info.clone();
    let done = tokio::spawn(supervise(open, port, resync, settings, status.clone()));
    RouterLink { info, status, done }
}

/// How one link ended.
enum Ended {
    /// The gateway stopped: nothing more to send.
    GatewayStopped,
    /// The stream broke; why.
    Lost(String),
}

async fn supervise(
    mut open: OpenLink,
    mut port: RouterPort,
    resync: Resync,
    settings: LinkSettings,
    status: Arc<LinkStatus>,
) {
    let pending = Mutex::new(Pending::default());
    loop {
        status.links_opened.fetch_add(1, Ordering::Relaxed);
        status.linked.store(true, Ordering::Relaxed);
        let Some(opening) = opening_items(&resync, &mut port, &pending, &status) else { return };
        let ended = pump(&mut open, &mut port, &pending, opening, &status).await;
        status.linked.store(false, Ordering::Relaxed);
        let reason = match ended {
            Ended::GatewayStopped => return,
            Ended::Lost(reason) => reason,
        };
        status.links_lost.fetch_add(1, Ordering::Relaxed);
        warn!(reason, "router link lost: keeping clients, looking for a router");
        open = loop {
            if resync.0.strong_count() == 0 {
                return;
            }
            match connect_any(&settings, Duration::from_secs(10)).await {
                Ok(open) => break open,
                Err(error) => {
                    warn!(%error, "no router serves gateways yet");
                    // A refusal that is not transient (another contract
                    // version during an upgrade) returns at once.
                    tokio::time::sleep(RETRY_PAUSE * 5).await;
                }
            }
        };
        info!(router = %open.info.router, "router linked again");
    }
}

/// What a link sends before anything else: the whole route set, every
/// session held, the requests the last link left unanswered, what queued
/// meanwhile, and the end of the list (on a first link: only the end,
/// which tells the router this gateway process holds nothing of an older
/// one's).
fn opening_items(
    resync: &Resync,
    port: &mut RouterPort,
    pending: &Mutex<Pending>,
    status: &LinkStatus,
) -> Option<Vec<Uplink>> {
    // Requests of connections that are gone are not asked again (their
    // clients got no answer and were closed; a claim sent again would take
    // a session for nobody), except their releases: what a session held
    // must reach the router.
    let shared = resync.0.upgrade();
    let gone = |item: &Uplink| match item {
        Uplink::Release(_) => false,
        // A push-API request is asked again while its caller still waits.
        Uplink::Push(_) | Uplink::Directory { .. } | Uplink::Report { .. } => {
            let request = item.request().unwrap_or_default();
            shared.as_ref().is_none_or(|s| !s.api.is_waiting(request))
        }
        _ => {
            let connection = item.request().map(|request| request >> crate::registry::REQUEST_SEQ_BITS);
            connection.is_some_and(|id| shared.as_ref().is_some_and(|s| s.connections.get(id).is_none()))
        }
    };
    // Requests whose clients were told they failed are never applied late.
    let given_up =
        shared.as_ref().map(|s| std::mem::take(&mut *s.given_up.lock().unwrap_or_else(|p| p.into_inner())));
    let given_up = |item: &Uplink| {
        given_up.as_ref().is_some_and(|set| item.request().is_some_and(|request| set.contains(&request)))
    };
    let (replay, dropped): (Vec<Uplink>, Vec<Uplink>) =
        Pending::lock(pending).take_in_order().into_iter().partition(|item| !gone(item) && !given_up(item));
    let mut dropped = dropped.iter().filter(|item| crate::admission::counted_request(item)).count();
    let first = status.links_opened.load(Ordering::Relaxed) == 1;
    let mut items = Vec::new();
    if !first {
        let (routes, sessions) = resync.snapshot()?;
        status.sessions_reattached.fetch_add(sessions.len() as u64, Ordering::Relaxed);
        status.requests_replayed.fetch_add(replay.len() as u64, Ordering::Relaxed);
        let mut queued = Vec::new();
        while let Ok(item) = port.uplink.try_recv() {
            if !given_up(&item) {
                queued.push(item);
            } else if crate::admission::counted_request(&item) {
                dropped += 1;
            }
        }
        // What clients acknowledged meanwhile goes first: the sessions taken
        // back are handed their inboxes, which must not hold it any more.
        let (acked, queued): (Vec<Uplink>, Vec<Uplink>) =
            queued.into_iter().partition(|item| matches!(item, Uplink::Acked(_)));
        items.extend(acked);
        if let Some(gathered) = shared.as_ref().map(|shared| shared.acks.take()).filter(|a| !a.is_empty()) {
            items.push(Uplink::Acked(gathered));
        }
        items.push(Uplink::Routes { add: routes, remove: Vec::new() });
        let mut sessions = sessions.into_iter().peekable();
        while sessions.peek().is_some() {
            let chunk = sessions.by_ref().take(REATTACH_CHUNK).collect();
            items.push(Uplink::Reattach { sessions: chunk, last: false });
        }
        items.extend(replay);
        items.extend(queued);
    }
    items.push(Uplink::Reattach { sessions: Vec::new(), last: true });
    // Dropped requests get no reply: they wait for none.
    if let Some(shared) = &shared {
        shared.admission.done(dropped);
    }
    Some(items)
}

/// Carries both directions of one link until it breaks or the gateway
/// stops. A reply leaves the pending set only once the gateway has it: a
/// reply lost with the link is asked for again on the next one.
async fn pump(
    open: &mut OpenLink,
    port: &mut RouterPort,
    pending: &Mutex<Pending>,
    opening: Vec<Uplink>,
    status: &LinkStatus,
) -> Ended {
    let outbound = open.outbound.clone();
    let up = async {
        let mut buffer = opening;
        loop {
            if buffer.is_empty() && port.uplink.recv_many(&mut buffer, UPLINK_BATCH).await == 0 {
                return Ended::GatewayStopped;
            }
            let converted = {
                let now = Instant::now();
                let mut pending = Pending::lock(pending);
                buffer
                    .drain(..)
                    .map(|item| {
                        let converted = uplink_to_pb(&item);
                        if let Some(request) = item.request() {
                            let seq = pending.next;
                            pending.next += 1;
                            pending.items.insert(request, (seq, now, item));
                        }
                        converted
                    })
                    .collect()
            };
            for chunk in split_by_size(converted) {
                if outbound.send(pb::UplinkBatch { items: chunk }).await.is_err() {
                    return Ended::Lost("router stream closed".into());
                }
            }
        }
    };
    let inbound = &mut open.inbound;
    let mut batch = std::mem::take(&mut open.first);
    let downlink = &port.downlink;
    let down = async {
        loop {
            for item in batch.drain(..) {
                let item = match downlink_from_pb(item) {
                    Ok(item) => item,
                    // Skipping it could leave a session waiting forever for
                    // its reply: the link ends instead.
                    Err(error) => return Some(Ended::Lost(format!("malformed downlink item: {error}"))),
                };
                let request = item.request();
                if downlink.send(item).await.is_err() {
                    return None;
                }
                if let Some(request) = request {
                    let answered = Pending::lock(pending).items.remove(&request);
                    if let Some((_, sent, Uplink::Publish(_))) = answered {
                        status.publish_round_trip.record(sent.elapsed());
                    }
                }
            }
            batch = match inbound.message().await {
                Ok(Some(next)) => next.items,
                Ok(None) => return Some(Ended::Lost("router closed the link".into())),
                Err(status) => return Some(Ended::Lost(format!("router link failed: {}", status.message()))),
            };
        }
    };
    tokio::pin!(up);
    tokio::select! {
        ended = &mut up => ended,
        ended = down => match ended {
            Some(ended) => ended,
            // The gateway stopped reading: send what it still has to say.
            None => up.await,
        },
    }
}
