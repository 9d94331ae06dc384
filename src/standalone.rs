//! `herald standalone`: a gateway and a single-node router in one process,
//! joined by the same seam the cluster carries over gRPC.

use crate::config::StandaloneConfig;
use herald_core::{NodeId, SystemClock};
use herald_gateway::{Gateway, GatewayConfig};
use herald_router::Router;
use herald_router::raft::{Membership, RaftNode};
use herald_store::DataDir;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Items each direction of the in-process seam holds before the sender
/// waits (uplink) or deliveries are dropped and counted (downlink).
const SEAM_CAPACITY: usize = 8192;

/// Where a standalone process listened: MQTT, WebSocket, the push API.
pub(crate) type Listened =
    Arc<std::sync::Mutex<Option<(SocketAddr, Option<SocketAddr>, Option<SocketAddr>)>>>;

/// Takes the addresses a run listened on, so that a run after it (once a
/// full disk has room again) listens where clients know to find it.
pub(crate) fn listen_as_before(config: &mut StandaloneConfig, listened: &Listened) {
    if let Some((mqtt, websocket, http)) = *listened.lock().unwrap_or_else(|p| p.into_inner()) {
        config.mqtt = mqtt;
        config.websocket = websocket.or(config.websocket);
        config.push.http = http.or(config.push.http);
    }
}

/// Runs standalone Herald until `shutdown` resolves; writes the addresses
/// it listens on to `listened`.
pub(crate) async fn run(
    config: StandaloneConfig,
    shutdown: impl Future<Output = ()>,
    listened: Listened,
) -> anyhow::Result<()> {
    let data = DataDir::open(&config.data)?;
    // A shard event per start, committed through the single-node Raft,
    // keeps session epochs increasing across restarts (ADR 0012, ADR 0033).
    let dir = data.path().join("raft");
    let raft = Arc::new(RaftNode::open(&dir, 1, "", config.raft.settings()).await?);
    raft.join("in-process", Membership::Single).await?;
    let generations = raft.take_registry().await?;
    let generation = generations.high_water();
    let clock = Arc::new(SystemClock);
    // Retained messages, persistent sessions and shared groups' queues come
    // back from the Raft log; every batch that changes them is committed
    // there before it is answered (ADR 0013).
    let image = raft.durable_image();
    let router =
        Router::durable(config.limits.router_config(), generations, clock.clone(), raft.clone(), image);
    let registry = config.registry.redis()?.map(|redis| {
        let stats = Arc::new(herald_router::registry_redis::RegistryStats::default());
        router.keep_registry_in_redis(redis, stats.clone());
        stats
    });
    let (link, port) = herald_proto::seam::link(NodeId(1), SEAM_CAPACITY);
    let router_task = router.attach(port, 0, true).expect("the only gateway of a standalone router");
    // A fresh gateway holds no session of the last run: the router need not
    // wait for it to list any (ADR 0015).
    let fresh = herald_proto::seam::Uplink::Reattach { sessions: Vec::new(), last: true };
    link.uplink.send(fresh).await.map_err(|_| anyhow::anyhow!("the router stopped at start"))?;
    let (stop_timers, timers_stopped) = tokio::sync::oneshot::channel::<()>();
    let timers = router.spawn_timers(async move {
        let _ = timers_stopped.await;
    });

    let gateway_config = GatewayConfig {
        mqtt: config.mqtt,
        websocket: config.websocket,
        limits: Arc::new(herald_gateway::SessionLimits {
            acl: Arc::new(config.acl.acl()?),
            trace_user_property: config.telemetry.mqtt_user_property,
            ..config.limits.session_limits()
        }),
        connect_timeout: Duration::from_secs(config.connect_timeout_secs),
        max_connections: config.max_connections,
        drain_timeout: Duration::from_secs(config.drain_timeout_secs),
        drain_rate: config.drain_rate,
        push_api: config.push.api()?,
        tls: config.tls.listeners()?,
        max_connect_rate: config.max_connect_rate,
        max_inbox_bytes: config.max_inbox_bytes,
        max_pending_connects: config.max_pending_connects,
        memory_high_water: (config.memory_high_water_mb > 0).then_some(config.memory_high_water_mb << 20),
        device_users: config.auth.device_users()?,
        router_reply_timeout: Duration::from_secs(config.router_reply_timeout_secs),
        ..GatewayConfig::default()
    };
    let authenticator = config.push.authenticator(&config.auth, clock.clone())?;
    let gateway = Gateway::bind(gateway_config, link, authenticator, clock).await?;
    let mqtt = gateway.local_addr()?;
    let websocket = gateway.websocket_addr()?.map(tracing::field::display);
    let fixed = router.clone();
    let sources = crate::ops::Sources {
        gateway: Some(gateway.counters()),
        router: Some(Arc::new(move || Some(fixed.clone()))),
        raft: Some(raft.clone()),
        registry,
        ..Default::default()
    };
    let (ops, shutdown) = crate::ops::start(config.ops, sources, shutdown).await?;
    *listened.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((mqtt, gateway.websocket_addr()?, gateway.push_api_addr()?));
    let http = gateway.push_api_addr()?.map(tracing::field::display);
    let (mqtts, wss) = gateway.tls_addrs()?;
    let (mqtts, wss) = (mqtts.map(tracing::field::display), wss.map(tracing::field::display));
    info!(%mqtt, websocket, http, mqtts, wss, data = %data.path().display(), generation, "listening");
    let mut failure = None;
    let watched = router.clone();
    gateway
        .run(async {
            tokio::select! {
                () = shutdown => {}
                reason = watched.failed() => failure = Some(reason),
            }
        })
        .await;
    ops.stop().await;
    // The gateway dropped its uplink: the router task ends once it has
    // applied every release.
    let _ = tokio::time::timeout(Duration::from_secs(5), router_task).await;
    let _ = stop_timers.send(());
    let _ = timers.await;
    let stopped = raft.stopped();
    raft.shutdown().await;
    if let (Some(_), Some(reason)) = (&failure, stopped) {
        // A storage error (a full disk is waited out by the caller).
        anyhow::bail!("stopped: raft stopped: {reason}");
    }
    if let Some(reason) = failure {
        anyhow::bail!("stopped: the router could not commit: {reason}");
    }
    info!("stopped");
    Ok(())
}
