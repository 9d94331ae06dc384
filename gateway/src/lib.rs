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
//!  TCP ─▶ listener ─▶ connection task (codec + Session) ─▶ uplink ─▶ router
//!                                 ▲
//!  router ─▶ downlink ─▶ delivery task ─▶ local index ─▶ ConnHandle inbox
//! ```
//!
//! Must never depend on: `herald-router`, `herald-store`, openraft or sled.
//!
//! Start here: `session.rs` (the state machine), `handshake.rs`,
//! `connection.rs` (its shell), `delivery.rs`, `registry.rs`.

pub mod auth;
mod connection;
mod delivery;
pub mod handshake;
mod registry;
pub mod router_client;
pub mod session;

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
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How a gateway listens and what it admits.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The MQTT/TCP listen address.
    pub mqtt: SocketAddr,
    /// Per-session limits.
    pub limits: Arc<SessionLimits>,
    /// How long a new socket may take to send CONNECT.
    pub connect_timeout: Duration,
    /// How long a session claim may wait for the router.
    pub claim_timeout: Duration,
    /// Connections held at most; further sockets are closed on accept and
    /// counted (`connections_refused`).
    pub max_connections: usize,
    /// Deliveries waiting in one connection's inbox at most; past it they
    /// are dropped and counted (`dropped_connection_backlog`).
    pub max_inbox: usize,
    /// How long shutdown waits for connections to close.
    pub drain_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            limits: Arc::new(SessionLimits::default()),
            connect_timeout: Duration::from_secs(10),
            claim_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_inbox: 1000,
            drain_timeout: Duration::from_secs(5),
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
}

/// A bound gateway, ready to run.
pub struct Gateway {
    listener: TcpListener,
    shared: Arc<Shared>,
    downlink: mpsc::Receiver<herald_proto::seam::Downlink>,
}

impl Gateway {
    /// Binds the MQTT listener and prepares the gateway on `link`.
    pub async fn bind(
        config: GatewayConfig,
        link: GatewayLink,
        authenticator: Arc<dyn Authenticator>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(config.mqtt).await?;
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
        };
        Ok(Gateway { listener, shared: Arc::new(shared), downlink: link.downlink })
    }

    /// Returns the address the MQTT listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Returns a handle to the gateway's counters.
    pub fn counters(&self) -> GatewayStats {
        GatewayStats { shared: self.shared.clone() }
    }

    /// Serves until `shutdown` resolves, then tells every connection the
    /// server is shutting down (v5: DISCONNECT 0x8B) and waits for them to
    /// release their sessions, up to the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Gateway { listener, shared, downlink } = self;
        let delivery = tokio::spawn(delivery::run(shared.clone(), downlink));
        let sweeper = tokio::spawn(sweep_keep_alive(shared.clone()));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        if shared.connections.len() >= shared.config.max_connections {
                            GatewayCounters::add(&shared.counters.connections_refused, 1);
                            drop(stream);
                            continue;
                        }
                        tokio::spawn(connection::serve(stream, shared.clone()));
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning.
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        shared.connections.for_each(|handle| handle.shut_down());
        let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
        while shared.connections.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(remaining = shared.connections.len(), "gateway drained");
        sweeper.abort();
        delivery.abort();
    }
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
}

/// Flags connections whose keep-alive ran out; one task for all of them,
/// so no connection holds a timer of its own.
async fn sweep_keep_alive(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let now = shared.clock.now().0;
        shared.connections.for_each(|handle| handle.check_keep_alive(now));
    }
}

/// Returns the current count of a counter.
pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
