//! `herald standalone`: a gateway and a single-node router in one process,
//! joined by the same seam the cluster carries over gRPC.

use crate::config::StandaloneConfig;
use herald_core::{NodeId, SystemClock};
use herald_gateway::auth::ConfigAuthenticator;
use herald_gateway::{Gateway, GatewayConfig, SessionLimits};
use herald_router::{Router, RouterConfig};
use herald_store::DataDir;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Items each direction of the in-process seam holds before the sender
/// waits (uplink) or deliveries are dropped and counted (downlink).
const SEAM_CAPACITY: usize = 8192;

/// Runs standalone Herald until `shutdown` resolves.
pub(crate) async fn run(config: StandaloneConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let data = DataDir::open(&config.data)?;
    // A new generation per start keeps session epochs increasing across
    // restarts (see docs/adr/0004-state-and-time.md).
    let generation = data.next_generation()?;
    let clock = Arc::new(SystemClock);
    let l = &config.limits;
    let router_config = RouterConfig {
        max_queued_messages: l.max_offline_messages,
        max_session_expiry_seconds: l.max_session_expiry_secs,
    };
    let router = Router::new(router_config, generation, clock.clone());
    let (link, port) = herald_proto::seam::link(NodeId(1), SEAM_CAPACITY);
    let router_task = router.attach(port);
    let (stop_timers, timers_stopped) = tokio::sync::oneshot::channel::<()>();
    let timers = router.spawn_timers(async move {
        let _ = timers_stopped.await;
    });

    let limits = SessionLimits {
        max_packet_size: l.max_packet_size,
        receive_maximum: l.receive_maximum,
        topic_alias_maximum: l.topic_alias_maximum,
        max_inflight_v311: l.max_inflight_v311,
        max_queued_messages: l.max_queued_messages,
        max_session_expiry_seconds: l.max_session_expiry_secs,
        max_keep_alive: l.max_keep_alive,
    };
    let gateway_config = GatewayConfig {
        mqtt: config.mqtt,
        limits: Arc::new(limits),
        connect_timeout: Duration::from_secs(config.connect_timeout_secs),
        max_connections: config.max_connections,
        drain_timeout: Duration::from_secs(config.drain_timeout_secs),
        ..GatewayConfig::default()
    };
    let authenticator = Arc::new(ConfigAuthenticator::anonymous());
    let gateway = Gateway::bind(gateway_config, link, authenticator, clock).await?;
    let mqtt = gateway.local_addr()?;
    info!(%mqtt, data = %data.path().display(), generation, "listening");
    gateway.run(shutdown).await;
    // The gateway dropped its uplink: the router task ends once it has
    // applied every release.
    let _ = tokio::time::timeout(Duration::from_secs(5), router_task).await;
    let _ = stop_timers.send(());
    let _ = timers.await;
    info!("stopped");
    Ok(())
}
