//! `herald router` and `herald gateway`: the two halves of a cluster, joined
//! by the seam over gRPC. This is the first slice of the cluster: one
//! router (no replication yet) and any number of gateways.

use crate::config::StandaloneConfig;
use herald_core::{NodeId, SystemClock};
use herald_gateway::{Gateway, GatewayConfig};
use herald_router::Router;
use herald_router::grpc::SeamService;
use herald_router::raft::RaftNode;
use herald_store::DataDir;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Items each seam queue holds per gateway.
const SEAM_CAPACITY: usize = 8192;

/// Returns the `[limits]` and `[auth]` settings from `HERALD_LIMITS_*` and
/// `HERALD_AUTH_*` variables (the same keys as in the standalone
/// configuration), validated.
fn settings_from_environment() -> anyhow::Result<StandaloneConfig> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("HERALD_LIMITS_") || name.starts_with("HERALD_AUTH_"))
        .collect();
    StandaloneConfig::load(None, &env)
}

/// Settings of `herald router`.
pub(crate) struct RouterSettings {
    pub(crate) grpc: SocketAddr,
    pub(crate) data: PathBuf,
    pub(crate) node: NodeId,
}

/// Runs a router until `shutdown` resolves.
pub(crate) async fn run_router(
    settings: RouterSettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let data = DataDir::open(&settings.data)?;
    let raft = Arc::new(
        RaftNode::start_single(&data.path().join("raft"), settings.node.0, &settings.grpc.to_string())
            .await?,
    );
    let generation = raft.next_generation().await?;
    let cluster_id = data.cluster_id()?;
    let limits = settings_from_environment()?.limits;
    let image = raft.durable_image();
    let router =
        Router::durable(limits.router_config(), generation, Arc::new(SystemClock), raft.clone(), image);
    let (stop_timers, timers_stopped) = tokio::sync::oneshot::channel::<()>();
    let timers = router.spawn_timers(async move {
        let _ = timers_stopped.await;
    });
    let listener = tokio::net::TcpListener::bind(settings.grpc).await?;
    let grpc = listener.local_addr()?;
    info!(%grpc, cluster = %cluster_id, node = %settings.node, generation, "listening");
    let watched = router.clone();
    let mut failure = None;
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            reason = watched.failed() => failure = Some(reason),
        }
    };
    SeamService::new(router, settings.node, cluster_id, SEAM_CAPACITY).serve(listener, stop).await?;
    let _ = stop_timers.send(());
    let _ = timers.await;
    raft.shutdown().await;
    if let Some(reason) = failure {
        anyhow::bail!("stopped: the router could not commit: {reason}");
    }
    info!("stopped");
    Ok(())
}

/// Settings of `herald gateway`.
pub(crate) struct GatewaySettings {
    pub(crate) router: String,
    pub(crate) mqtt: SocketAddr,
    pub(crate) websocket: Option<SocketAddr>,
    pub(crate) node: NodeId,
    pub(crate) cluster_id: Option<String>,
}

/// Runs a gateway until `shutdown` resolves or the router link is lost.
/// Losing the router ends the process with an error, so the supervisor
/// (Kubernetes, systemd) restarts it and clients reconnect.
pub(crate) async fn run_gateway(
    settings: GatewaySettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings_from_env = settings_from_environment()?;
    let limits = settings_from_env.limits;
    let link = herald_gateway::router_client::connect(
        &settings.router,
        settings.node,
        settings.cluster_id.as_deref(),
        SEAM_CAPACITY,
    )
    .await?;
    let config = GatewayConfig {
        mqtt: settings.mqtt,
        websocket: settings.websocket,
        limits: Arc::new(limits.session_limits()),
        drain_timeout: Duration::from_secs(5),
        ..GatewayConfig::default()
    };
    let authenticator = Arc::new(settings_from_env.auth.authenticator()?);
    let gateway = Gateway::bind(config, link.link, authenticator, Arc::new(SystemClock)).await?;
    let mqtt = gateway.local_addr()?;
    let websocket = gateway.websocket_addr()?.map(tracing::field::display);
    info!(%mqtt, websocket, router = %settings.router, cluster = %link.info.cluster_id, node = %settings.node, "listening");
    let mut lost = link.lost;
    let mut lost_reason = None;
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            reason = &mut lost => lost_reason = Some(reason.unwrap_or_else(|_| "router link closed".into())),
        }
    };
    gateway.run(stop).await;
    // The releases and requeues of the last connections are on their way:
    // let them reach the router before the process ends.
    if tokio::time::timeout(Duration::from_secs(5), link.flushed).await.is_err() {
        warn!("uplink not flushed within 5 s");
    }
    match lost_reason {
        Some(reason) => {
            warn!(reason, "stopped: router lost");
            anyhow::bail!("router lost: {reason}")
        }
        None => {
            info!("stopped");
            Ok(())
        }
    }
}
