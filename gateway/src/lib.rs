//! The gateway: Herald's stateless edge.
//!
//! Owns: MQTT listeners, one task per connection driving a sans-IO session
//! state machine, the local subscription index (which of this gateway's
//! connections want which topics), and local fan-out of deliveries. It
//! keeps nothing whose loss loses an acknowledged message: sessions are
//! claimed from, and released to, the router over the seam in
//! `herald-proto`.
//!
//! ```text
//!  TCP ──────────────▶ listener ─┐
//!  WebSocket (/mqtt) ─▶ upgrade ─┴▶ connection task (codec + Session) ─▶ uplink ─▶ router
//!                                 ▲
//!  router ─▶ downlink ─▶ delivery task ─▶ local index ─▶ ConnHandle inbox
//! ```
//!
//! Must never depend on: `herald-router`, `herald-store`, openraft or sled.
//! HTTP (axum, hyper) stays at this edge.
//!
//! Start here: `session.rs` (the state machine), `handshake.rs`,
//! `connection.rs` (its shell), `transport.rs` and `websocket.rs` (what it
//! reads and writes), `delivery.rs`, `registry.rs`.

mod acks;
pub mod acl;
mod admission;
pub mod auth;
#[doc(hidden)]
pub mod bench;
mod connection;
mod delivery;
mod der;
pub mod device_token;
pub mod device_users;
#[doc(hidden)]
pub mod fuzz;
pub mod handshake;
pub mod ops_http;
pub mod password;
pub mod push_api;
mod registry;
pub mod registry_links;
mod reports;
pub mod router_client;
pub mod scram;
pub mod session;
mod sse;
pub mod tls;
mod transport;
mod websocket;

pub use registry::GatewayCounters;
pub use session::SessionLimits;

use auth::Authenticator;
use herald_core::{Clock, NodeId};
use herald_proto::seam::{GatewayLink, Uplink};
use registry::{Connections, SharedIndex};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How a gateway listens and what it admits.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The MQTT/TCP listen address.
    pub mqtt: SocketAddr,
    /// The MQTT-over-WebSocket listen address (path `/mqtt`, subprotocol
    /// `mqtt`); `None`: no WebSocket listener.
    pub websocket: Option<SocketAddr>,
    /// Per-session limits.
    pub limits: Arc<SessionLimits>,
    /// How long a new socket may take to send CONNECT (a WebSocket: its
    /// upgrade request, then its CONNECT).
    pub connect_timeout: Duration,
    /// How long a session claim may wait for the router.
    pub claim_timeout: Duration,
    /// Connections held at most; further sockets are closed on accept and
    /// counted (`connections_refused`).
    pub max_connections: usize,
    /// Deliveries waiting in one connection's inbox at most; past it they
    /// are dropped and counted (`dropped_connection_backlog`).
    pub max_inbox: usize,
    /// Payload bytes waiting in one connection's inbox at most; past it
    /// deliveries are dropped and counted likewise.
    pub max_inbox_bytes: usize,
    /// How long shutdown waits for connections to close.
    pub drain_timeout: Duration,
    /// Connections told to leave per second at shutdown (0: all at once),
    /// so that their reconnects do not arrive elsewhere as one storm.
    pub drain_rate: u32,
    /// The push API (HTTP); `None`: not served.
    pub push_api: Option<push_api::PushApiConfig>,
    /// TLS listeners; `None`: none.
    pub tls: Option<TlsListeners>,
    /// CONNECTs accepted per second at most (a burst of one second's
    /// worth); past it CONNACK 0x9F (0: no limit).
    pub max_connect_rate: u32,
    /// Sockets accepted but not connected yet (before CONNECT, in a TLS or
    /// WebSocket handshake, waiting for the claim) at most; further
    /// sockets are closed on accept and counted.
    pub max_pending_connects: usize,
    /// Resident memory past which new connections are shed with CONNACK
    /// 0x89 and the gateway reports itself not ready; `None`: no mark.
    pub memory_high_water: Option<u64>,
    /// Where device users outside configuration are looked up.
    pub device_users: device_users::DeviceUsersConfig,
    /// How long a client's publish, subscribe or unsubscribe may wait for a
    /// router's answer; past it the client gets an explicit error (v5:
    /// 0x80; 3.1.1: the connection closes) and the request is never sent
    /// to a router later.
    pub router_reply_timeout: Duration,
}

/// The listeners that speak TLS, and the certificate they present.
#[derive(Debug, Clone)]
pub struct TlsListeners {
    /// Certificate, key, and the CA of client certificates (mutual TLS).
    pub config: tls::TlsConfig,
    /// MQTT over TLS (the usual port is 8883); `None`: none.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over secure WebSocket (`wss://…/mqtt`); `None`: none.
    pub websocket: Option<SocketAddr>,
    /// Whether the push API and SSE are served over HTTPS (on the push
    /// API's address) instead of plain HTTP.
    pub push_api: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            websocket: None,
            limits: Arc::new(SessionLimits::default()),
            connect_timeout: Duration::from_secs(10),
            claim_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_inbox: 1000,
            max_inbox_bytes: 16 * 1024 * 1024,
            drain_timeout: Duration::from_secs(5),
            drain_rate: 0,
            push_api: None,
            tls: None,
            max_connect_rate: 0,
            max_pending_connects: 10_000,
            memory_high_water: None,
            device_users: Default::default(),
            router_reply_timeout: Duration::from_secs(10),
        }
    }
}

/// State shared by the gateway's tasks.
pub(crate) struct Shared {
    node: NodeId,
    config: GatewayConfig,
    authenticator: Arc<dyn Authenticator>,
    clock: Arc<dyn Clock>,
    uplink: mpsc::Sender<Uplink>,
    connections: Connections,
    index: SharedIndex,
    /// Serialises index changes with the route changes they send.
    route_order: tokio::sync::Mutex<()>,
    next_connection: AtomicU64,
    message_sequence: AtomicU64,
    counters: GatewayCounters,
    /// Push-API sends waiting for the router.
    api: push_api::ApiRequests,
    /// The API keys made at run time, as the router sends them.
    api_keys: push_api::RuntimeKeys,
    /// Push-API requests, latency and refusals, for `/metrics`.
    api_metrics: push_api::metrics::ApiMetrics,
    /// Delivery counts of push-API messages, for the router.
    reports: reports::Reports,
    /// Acknowledgements of persistent sessions' deliveries, for the router.
    acks: acks::Acks,
    /// Sockets being served, from accept to close (before CONNECT, during a
    /// WebSocket upgrade, and connected): what `max_connections` bounds.
    sockets: std::sync::atomic::AtomicUsize,
    /// CONNECTs the connect rate still allows.
    connect_budget: std::sync::Mutex<push_api::rate::Bucket>,
    /// Whether resident memory is past the high-water mark (sampled).
    over_memory: std::sync::atomic::AtomicBool,
    /// Device users kept in the router or in Redis.
    users: device_users::DeviceUsers,
    /// Requests of connections given up after the router reply timeout:
    /// not sent again when a router link opens (then forgotten).
    given_up: std::sync::Mutex<std::collections::HashSet<herald_proto::seam::RequestId>>,
    /// Client requests waiting for the router's replies, bounded.
    admission: admission::Admission,
    /// The registry links of a gateway of a router cluster: claims go to
    /// the session's shard owner first (ADR 0033). Unset: standalone.
    registry_links: std::sync::OnceLock<Arc<registry_links::RegistryLinks>>,
}

impl Shared {
    /// Takes a place for a new socket while the gateway serves fewer than
    /// `max_connections`; whoever serves the socket gives it back with
    /// [`Shared::release_socket`]. A refusal is counted; the caller closes
    /// the socket.
    fn admits_connection(&self) -> bool {
        let sockets = self.sockets.fetch_add(1, Ordering::Relaxed);
        if sockets >= self.config.max_connections {
            self.release_socket();
            GatewayCounters::add(&self.counters.connections_refused, 1);
            return false;
        }
        // Sockets not connected yet (no CONNECT, a handshake, a claim in
        // progress): a flood of them is shed before it crowds out clients
        // that are connected.
        if sockets.saturating_sub(self.connections.len()) >= self.config.max_pending_connects {
            self.release_socket();
            GatewayCounters::add(&self.counters.pending_connects_refused, 1);
            return false;
        }
        true
    }

    /// Gives a socket's place back.
    fn release_socket(&self) {
        self.sockets.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether a CONNECT may be served now, or why not: the memory mark
    /// (0x89) or the connect rate (0x9F). A refusal is counted.
    fn admits_connect(&self) -> Result<(), herald_core::ReasonCode> {
        if self.over_memory.load(Ordering::Relaxed) {
            GatewayCounters::add(&self.counters.connects_shed, 1);
            return Err(herald_core::ReasonCode::ServerBusy);
        }
        let rate = f64::from(self.config.max_connect_rate);
        if rate == 0.0 {
            return Ok(());
        }
        let mut budget = self.connect_budget.lock().unwrap_or_else(|p| p.into_inner());
        if budget.refill(rate, self.clock.now().0) < 1.0 {
            GatewayCounters::add(&self.counters.connect_rate_exceeded, 1);
            return Err(herald_core::ReasonCode::ConnectionRateExceeded);
        }
        budget.spend(1.0);
        Ok(())
    }
}

/// Samples the process's resident memory twice a second against the
/// high-water mark (Linux: `/proc/self/statm`; elsewhere never over).
async fn watch_memory(shared: Arc<Shared>, mark: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let resident = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4096);
        let over = resident > mark;
        if shared.over_memory.swap(over, Ordering::Relaxed) != over {
            warn!(resident, mark, over, "memory high-water mark");
        }
    }
}

/// A bound gateway, ready to run.
pub struct Gateway {
    listener: TcpListener,
    websocket: Option<TcpListener>,
    http: Option<TcpListener>,
    mqtt_tls: Option<TcpListener>,
    websocket_tls: Option<TcpListener>,
    shared: Arc<Shared>,
    downlink: mpsc::Receiver<herald_proto::seam::Downlink>,
}

impl Gateway {
    /// Binds the MQTT listener (and the WebSocket one, if configured) and
    /// prepares the gateway on `link`.
    pub async fn bind(
        config: GatewayConfig,
        link: GatewayLink,
        authenticator: Arc<dyn Authenticator>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Gateway> {
        let listener = listen(config.mqtt)?;
        let websocket = match config.websocket {
            Some(address) => Some(listen(address)?),
            None => None,
        };
        let http = config.push_api.as_ref().map(push_api::bind).transpose()?;
        let tls = config.tls.as_ref();
        let mqtt_tls = tls.and_then(|t| t.mqtt).map(listen).transpose()?;
        let websocket_tls = tls.and_then(|t| t.websocket).map(listen).transpose()?;
        let users = device_users::DeviceUsers::new(config.device_users.clone());
        let shared = Shared {
            node: link.gateway,
            config,
            authenticator,
            clock,
            uplink: link.uplink,
            connections: Connections::new(),
            index: SharedIndex::default(),
            route_order: tokio::sync::Mutex::new(()),
            next_connection: AtomicU64::new(1),
            message_sequence: AtomicU64::new(1),
            counters: GatewayCounters::default(),
            api: push_api::ApiRequests::default(),
            api_keys: push_api::RuntimeKeys::default(),
            api_metrics: Default::default(),
            reports: reports::Reports::default(),
            acks: acks::Acks::default(),
            sockets: Default::default(),
            connect_budget: Default::default(),
            over_memory: Default::default(),
            users,
            given_up: Default::default(),
            admission: Default::default(),
            registry_links: std::sync::OnceLock::new(),
        };
        let shared = Arc::new(shared);
        Ok(Gateway { listener, websocket, http, mqtt_tls, websocket_tls, shared, downlink: link.downlink })
    }

    /// Returns the address the MQTT listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Returns the address the WebSocket listener is bound to, if there is one.
    pub fn websocket_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.websocket.as_ref().map(TcpListener::local_addr).transpose()
    }

    /// Returns the addresses of the MQTT/TLS and secure WebSocket
    /// listeners, where there are.
    pub fn tls_addrs(&self) -> std::io::Result<(Option<SocketAddr>, Option<SocketAddr>)> {
        let addr = |l: &Option<TcpListener>| l.as_ref().map(TcpListener::local_addr).transpose();
        Ok((addr(&self.mqtt_tls)?, addr(&self.websocket_tls)?))
    }

    /// Returns the address the push API listens on, if it is served.
    pub fn push_api_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.http.as_ref().map(TcpListener::local_addr).transpose()
    }

    /// Claims sessions at their registry shard's owner over `links` before
    /// the leader takes them with the owner's epoch (ADR 0033).
    /// It lists its sessions to the owners.
    pub fn claim_at_shard_owners(&self, links: Arc<registry_links::RegistryLinks>) {
        links.hold(Arc::new(Held(Arc::downgrade(&self.shared))));
        let _ = self.shared.registry_links.set(links);
    }

    /// Returns what a router link needs to give the gateway's sessions back
    /// to a router after it links again ([`router_client::start`]).
    pub fn resync(&self) -> router_client::Resync {
        router_client::Resync(Arc::downgrade(&self.shared))
    }

    /// Returns a handle to the gateway's counters.
    pub fn counters(&self) -> GatewayStats {
        GatewayStats { shared: self.shared.clone() }
    }

    /// Serves until `shutdown` resolves, then tells every connection the
    /// server is shutting down (v5: DISCONNECT 0x8B) and waits for them to
    /// release their sessions, up to the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Gateway { listener, websocket, http, mqtt_tls, websocket_tls, shared, downlink } = self;
        let delivery = tokio::spawn(delivery::run(shared.clone(), downlink));
        let sweeper = tokio::spawn(sweep_keep_alive(shared.clone()));
        let reporter = tokio::spawn(reports::run(shared.clone(), rand::random()));
        let acknowledger = tokio::spawn(acks::run(shared.clone()));
        let memory =
            shared.config.memory_high_water.map(|mark| tokio::spawn(watch_memory(shared.clone(), mark)));
        let websocket =
            websocket.map(|listener| tokio::spawn(websocket::listen(listener, shared.clone(), None)));
        let mut tls_listeners = Vec::new();
        if let Some(t) = &shared.config.tls {
            if let Some(l) = mqtt_tls {
                tls_listeners.push(tokio::spawn(tls::listen_mqtt(l, t.config.clone(), shared.clone())));
            }
            if let Some(l) = websocket_tls {
                tls_listeners.push(tokio::spawn(websocket::listen(
                    l,
                    shared.clone(),
                    Some(t.config.clone()),
                )));
            }
        }
        let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http = http.zip(shared.config.push_api.clone()).map(|(listener, config)| {
            let stopped = async move {
                let _ = http_stopped.await;
            };
            tokio::spawn(push_api::serve(listener, shared.clone(), config, stopped))
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                stream = accept_admitted(&listener, &shared, "MQTT") => {
                    tokio::spawn(connection::serve(stream, shared.clone()));
                }
            }
        }
        drop(listener);
        // Sends already taken are answered; no new ones are taken.
        let _ = stop_http.send(());
        // Aborting an accept loop drops its listener; connections are
        // their own tasks and drain below.
        websocket.iter().chain(&tls_listeners).for_each(tokio::task::JoinHandle::abort);
        let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
        drain(&shared, deadline).await;
        while shared.connections.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(remaining = shared.connections.len(), "gateway drained");
        if let Some(http) = http {
            let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
        }
        sweeper.abort();
        reporter.abort();
        acknowledger.abort();
        memory.iter().for_each(tokio::task::JoinHandle::abort);
        delivery.abort();
    }
}

/// Tells every connection to leave (v5: DISCONNECT 0x8B, or 0x9C with the
/// configured server reference), `drain_rate` per second; whatever is left
/// when `deadline` is one tick away is told at once. Each connection releases
/// its session to the router as it goes: persistent sessions keep their
/// unacknowledged messages.
async fn drain(shared: &Shared, deadline: tokio::time::Instant) {
    let mut handles = Vec::with_capacity(shared.connections.len());
    shared.connections.for_each(|handle| handles.push(handle.clone()));
    let rate = shared.config.drain_rate;
    info!(connections = handles.len(), rate, "draining");
    // Up to 100 ticks a second; each tells its share of the rate.
    let (tick, per_tick) = match rate {
        0 => (Duration::ZERO, handles.len().max(1)),
        rate => (Duration::from_secs(1) / rate.min(100), (rate as usize).div_ceil(100)),
    };
    let mut rest = handles.as_slice();
    while !rest.is_empty() {
        let last_call = tokio::time::Instant::now() + tick >= deadline;
        let (now, later) = rest.split_at(if last_call { rest.len() } else { per_tick.min(rest.len()) });
        now.iter().for_each(|handle| handle.shut_down());
        rest = later;
        if !rest.is_empty() {
            tokio::time::sleep(tick).await;
        }
    }
}

/// Accepts the next socket on `listener` that the connection limit admits
/// (others are closed and counted), with no delay; backs off on accept
/// errors (out of file descriptors and the like) instead of spinning.
/// Cancel-safe.
pub(crate) async fn accept_admitted(listener: &TcpListener, shared: &Shared, what: &str) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if shared.admits_connection() {
                    let _ = stream.set_nodelay(true);
                    return stream;
                }
            }
            Err(error) => {
                warn!(%error, listener = what, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sockets the kernel may hold waiting for `accept`. A reconnect storm
/// arrives all at once; a short backlog turns it into SYN retransmits (one
/// second each) instead of work. The kernel caps it at `somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket with address reuse and a deep backlog.
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A read-only view of a running gateway's counters.
#[derive(Clone)]
pub struct GatewayStats {
    shared: Arc<Shared>,
}

impl GatewayStats {
    /// Returns the live connection count.
    pub fn connections(&self) -> usize {
        self.shared.connections.len()
    }

    /// Returns the counters.
    pub fn counters(&self) -> &GatewayCounters {
        &self.shared.counters
    }

    /// The push API's request metrics.
    pub fn api_metrics(&self) -> &push_api::metrics::ApiMetrics {
        &self.shared.api_metrics
    }

    /// Client requests waiting for the router's replies now.
    pub fn requests_awaiting_router(&self) -> usize {
        self.shared.admission.awaiting()
    }

    /// Device-user lookups by source and outcome.
    pub fn user_lookups(&self) -> &device_users::LookupCounters {
        &self.shared.users.counters
    }

    /// Whether resident memory is past the high-water mark.
    pub fn over_memory(&self) -> bool {
        self.shared.over_memory.load(Ordering::Relaxed)
    }
}

/// Flags connections whose keep-alive ran out, or whose requests waited
/// for a router too long; one task for all of them, so no connection holds
/// a timer of its own.
async fn sweep_keep_alive(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let reply_timeout = shared.config.router_reply_timeout.as_millis() as u64;
    loop {
        tick.tick().await;
        let now = shared.clock.now().0;
        shared.connections.for_each(|handle| {
            handle.check_keep_alive(now);
            handle.check_overdue(now, reply_timeout);
        });
    }
}

/// Returns the current count of a counter.
pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The gateway's sessions as the registry links list them.
struct Held(std::sync::Weak<Shared>);

impl registry_links::SessionHolder for Held {
    fn held(&self) -> Vec<registry_links::HeldSession> {
        let mut held = Vec::new();
        if let Some(shared) = self.0.upgrade() {
            shared.connections.for_each(|handle| held.extend(handle.listing()));
        }
        held
    }

    fn revoke_transient(&self, session: &herald_core::SessionKey, epoch: herald_core::Epoch) {
        if let Some(shared) = self.0.upgrade() {
            shared.connections.revoke_where(session, epoch, registry::ConnHandle::is_transient);
        }
    }
}
