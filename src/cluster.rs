//! `herald router` and `herald gateway`: the two halves of a cluster, joined
//! by the seam over gRPC. Routers form a Raft cluster (one node, or the
//! voters given by `--peers`); the leader serves every gateway, the others
//! replicate and stand by (docs/cluster.md).

use herald_core::{NodeId, SystemClock};
use herald_gateway::{Gateway, GatewayConfig};
use herald_router::Router;
use herald_router::grpc::SeamService;
use herald_router::raft::{Membership, RaftNode};
use herald_router::registry_redis::{RedisRegistryConfig, RegistryStats};
use herald_store::DataDir;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Items each seam queue holds per gateway.
const SEAM_CAPACITY: usize = 8192;

/// Entries a router may be behind its leader and still count as caught up
/// (ready): a healthy follower under load is a few batches behind; one that
/// replays a snapshot or a long outage is far more.
const CATCH_UP_SLACK: u64 = 1000;

/// Parses `--peers` (`ID=HOST:PORT,...`).
pub(crate) fn parse_peers(peers: &[String]) -> anyhow::Result<Option<BTreeMap<u64, String>>> {
    if peers.is_empty() {
        return Ok(None);
    }
    let mut voters = BTreeMap::new();
    for peer in peers {
        let (id, address) =
            peer.split_once('=').ok_or_else(|| anyhow::anyhow!("--peers: {peer:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.parse().map_err(|_| anyhow::anyhow!("--peers: {id:?} is not a node id"))?;
        anyhow::ensure!(host_port(address), "--peers: {address:?} is not HOST:PORT");
        anyhow::ensure!(voters.insert(id, address.to_owned()).is_none(), "--peers: node {id} appears twice");
    }
    Ok(Some(voters))
}

/// Whether `address` is `HOST:PORT`: an IP address or a DNS name (a
/// StatefulSet pod's stable name, resolved on each connection) and a port.
fn host_port(address: &str) -> bool {
    if address.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = address.rsplit_once(':') else { return false };
    let name = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    port.parse::<u16>().is_ok_and(|p| p > 0) && host.len() <= 253 && host.split('.').all(name)
}

/// Runs a router until `shutdown` resolves. It takes part in Raft all the
/// while, and serves gateways while it leads: on each election it wins it
/// starts a router from the replicated state; when it steps down, it lets
/// its gateways go (they find the new leader).
/// The address it listens on is written to `listened`.
pub(crate) async fn run_router(
    config: crate::cluster_config::RouterConfig,
    shutdown: impl Future<Output = ()>,
    listened: Arc<std::sync::Mutex<Option<SocketAddr>>>,
) -> anyhow::Result<()> {
    let data = DataDir::open(&config.data)?;
    let cluster_id = data.claim_cluster_id(config.cluster_id.as_deref())?;
    let node = NodeId(config.node_id);
    let limits = config.limits;
    let registry: Option<(RedisRegistryConfig, Arc<RegistryStats>)> =
        config.registry.redis()?.map(|redis| (redis, Arc::default()));
    let membership = match parse_peers(&config.peers)? {
        Some(voters) => {
            anyhow::ensure!(voters.contains_key(&node.0), "--peers: must list this node ({})", node);
            Membership::Voters(voters)
        }
        None if config.join => Membership::Join,
        None => Membership::Single,
    };
    let listener = tokio::net::TcpListener::bind(config.grpc).await?;
    let grpc = listener.local_addr()?;
    *listened.lock().unwrap_or_else(|p| p.into_inner()) = Some(grpc);
    let raft = Arc::new(
        RaftNode::open(&data.path().join("raft"), node.0, &cluster_id, raft_settings(&config.raft, grpc))
            .await?,
    );
    let (serving, current) = watch::channel::<Option<Router>>(None);
    let watched = current.clone();
    let counts: herald_router::raft::GatewayCounts =
        Arc::new(move || watched.borrow().as_ref().map(Router::gateway_sessions).unwrap_or_default());
    // Every router tells gateways its copy of the registry shard table.
    let (table, table_watch) = watch::channel(herald_router::raft::shards::TableView::default());
    let table_task = {
        let raft = raft.clone();
        tokio::spawn(async move { raft.watch_shard_table(table).await })
    };
    let persistent: herald_router::registry_link::PersistentLookup = {
        let raft = raft.clone();
        Arc::new(move |sessions| raft.has_persistent_sessions(sessions))
    };
    let shard_owner = herald_router::registry_link::RegistryService::new(
        node.0,
        cluster_id.clone(),
        table_watch.clone(),
        persistent,
        Arc::new(SystemClock),
        Duration::from_millis(limits.router_config().gateway_lease_ms),
        raft.inherited_shards(),
    );
    let registry_counts: herald_router::raft::GatewayCounts = {
        let owner = shard_owner.clone();
        Arc::new(move || owner.online_per_gateway())
    };
    let service = SeamService::following(
        current,
        raft.peer_service().with_gateway_counts(counts).with_registry_counts(registry_counts),
        node,
        cluster_id.clone(),
        SEAM_CAPACITY,
    );
    // The wills of transient sessions its shards end go through the leader.
    let leader: herald_router::registry_link::LeaderLookup = {
        let raft = raft.clone();
        Arc::new(move || raft.leader())
    };
    shard_owner.publish_wills_through(serving.subscribe(), leader);
    // Each router keeps its shards' sessions in Redis, when asked to.
    if let Some((redis, stats)) = &registry {
        let offline: herald_router::registry_link::OfflineLookup = {
            let raft = raft.clone();
            Arc::new(move |wanted| raft.offline_sessions_where(wanted))
        };
        shard_owner.keep_registry_in_redis(redis.clone(), stats.clone(), offline);
    }
    let service = service.with_registry(shard_owner.clone());
    let seam = service.counters();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(listener, async {
        let _ = server_stopped.await;
    }));
    let address = match &membership {
        Membership::Voters(voters) => voters[&node.0].clone(),
        Membership::Single | Membership::Join => grpc.to_string(),
    };
    let single = membership == Membership::Single;
    let serving_now = serving.subscribe();
    let router_source: crate::ops::RouterSource = Arc::new(move || serving_now.borrow().clone());
    let caught_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (raft, caught_up) = (raft.clone(), caught_up.clone());
        tokio::spawn(async move { raft.watch_caught_up(CATCH_UP_SLACK, caught_up).await })
    };
    // The router that serves finds the push API's devices at their owners.
    let locator = herald_router::locate::Locator::new(
        node.0,
        cluster_id.clone(),
        shard_owner.clone(),
        table_watch.clone(),
    );
    let sources = crate::ops::Sources {
        router: Some(router_source),
        raft: Some(raft.clone()),
        seam: Some(seam),
        caught_up: Some(caught_up),
        registry: registry.as_ref().map(|(_, stats)| Arc::clone(stats)),
        shard_owner: Some(shard_owner.clone()),
        locator: Some(locator.clone()),
        ..Default::default()
    };
    // Metrics and health answer while it waits for a leader, however long.
    let (ops, shutdown) = crate::ops::start(config.ops, sources, shutdown).await?;
    let mut shutdown = std::pin::pin!(shutdown);
    let joined = tokio::select! {
        joined = raft.join(&address, membership) => Some(joined),
        () = &mut shutdown => None,
    };
    let outcome = match joined {
        Some(Ok(())) => {
            info!(%grpc, cluster = %cluster_id, %node, "listening");
            let shards = Shards { table: table_watch.clone(), locator };
            lead(&raft, &serving, &limits, single, &shards, shutdown).await
        }
        Some(Err(e)) => Err(e.into()),
        None => Ok(()),
    };
    // Leadership first (the gateways were let go already), then the server:
    // a leader that kept heartbeating while it waited for its streams to
    // close would keep the others from electing.
    watcher.abort();
    table_task.abort();
    raft.step_down_and_shutdown().await;
    let _ = stop_server.send(());
    if tokio::time::timeout(Duration::from_secs(2), server).await.is_err() {
        warn!("gRPC streams still open after 2 s: closing them");
    }
    ops.stop().await;
    outcome?;
    info!("stopped");
    Ok(())
}

/// The Raft settings of a router listening on `grpc`: its calls to peers
/// leave from the address it listens on, when that is a specific one.
fn raft_settings(raft: &crate::config::RaftConfig, grpc: SocketAddr) -> herald_router::raft::RaftSettings {
    let mut settings = raft.settings();
    settings.source_ip = Some(grpc.ip()).filter(|ip| !ip.is_unspecified());
    settings
}

/// What the router serving the gateways reads of the registry shards.
struct Shards {
    /// This router's copy of the shard table.
    table: watch::Receiver<herald_router::raft::shards::TableView>,
    /// Finds devices at their shards' owners.
    locator: herald_router::locate::Locator,
}

/// Serves gateways whenever this node leads, until `shutdown` resolves.
async fn lead(
    raft: &Arc<RaftNode>,
    serving: &watch::Sender<Option<Router>>,
    limits: &crate::config::Limits,
    single: bool,
    shards: &Shards,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            led = raft.wait_until_leader(Duration::from_secs(3600)) => if !led {
                // Raft stops for good on a storage error: exit, so that the
                // process is restarted (once there is space again) and the
                // others go on without it.
                if let Some(reason) = raft.stopped() {
                    anyhow::bail!("raft stopped: {reason}");
                }
                continue;
            },
        }
        // The shard event commits after everything before this term is
        // applied: the image below is complete.
        // Without a quorum it waits here, and still stops on `shutdown`.
        let generations = tokio::select! {
            () = &mut shutdown => return Ok(()),
            generations = raft.take_registry() => generations,
        };
        let generations = match generations {
            Ok(generations) => generations,
            Err(error) => {
                warn!(%error, "won an election but could not commit: waiting to lead again");
                continue;
            }
        };
        let image = raft.durable_image();
        let router = Router::durable(
            limits.router_config(),
            generations.clone(),
            Arc::new(SystemClock),
            raft.clone(),
            image,
        );
        router.locate_through(shards.locator.clone());
        let (stop_timers, timers_stopped) = tokio::sync::oneshot::channel::<()>();
        let timers = router.spawn_timers(async move {
            let _ = timers_stopped.await;
        });
        serving.send_replace(Some(router.clone()));
        info!(
            generation = generations.high_water(),
            "leading: serving gateways; the registry shards spread over the routers"
        );
        // Moves the shards of a router lost, gives one that joins or comes
        // back its share, restarts those of a router restarted.
        let spreader = {
            let raft = raft.clone();
            tokio::spawn(async move { raft.keep_registry_spread().await })
        };
        // The router refuses grants of an owner that lost its shard since.
        let table_follower = {
            let (router, mut table) = (router.clone(), shards.table.clone());
            tokio::spawn(async move {
                loop {
                    let generations = table.borrow_and_update().table.as_ref().map(|t| t.generations.clone());
                    if let Some(generations) = generations {
                        router.follow_shard_table(herald_core::ShardGenerations::from_table(generations));
                    }
                    if table.changed().await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut restored = false;
        let failure = tokio::select! {
            () = &mut shutdown => None,
            reason = router.failed() => Some(reason),
            reason = raft.until_stepped_down() => Some(reason.to_owned()),
            () = raft.restored() => {
                restored = true;
                Some("a backup was restored: serving from it".to_owned())
            }
        };
        spreader.abort();
        table_follower.abort();
        serving.send_replace(None);
        if failure.is_none() {
            // Stopping while it leads: answer what is committed first.
            router.settle(Duration::from_secs(2)).await;
        }
        router.disconnect_gateways();
        let _ = stop_timers.send(());
        let _ = timers.await;
        // A storage error stopped Raft for good: say so (a full disk is
        // waited out by the caller).
        if let (Some(_), Some(reason)) = (&failure, raft.stopped()) {
            anyhow::bail!("raft stopped: {reason}");
        }
        match failure {
            None => return Ok(()),
            Some(reason) if restored => info!(reason, "rebuilding the router"),
            Some(reason) if single => anyhow::bail!("stopped: the router could not commit: {reason}"),
            Some(reason) => warn!(reason, "no longer serving gateways"),
        }
    }
}

/// Adds router `node` (`ID=HOST:PORT`) as a voter (`herald ctl cluster add`).
pub(crate) async fn add_router(routers: &[String], cluster_id: &str, node: &str) -> anyhow::Result<()> {
    let peer = parse_peers(&[node.to_owned()])?.and_then(|p| p.into_iter().next());
    let (id, address) = peer.ok_or_else(|| anyhow::anyhow!("--node: expected ID=HOST:PORT"))?;
    let change = herald_router::raft::MembershipChange::Add(id, address);
    let voters = herald_router::raft::change_membership(routers, cluster_id, &change)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("voters: {}", voters.join(","));
    Ok(())
}

/// Removes router `node` from the voters (`herald ctl cluster remove`).
pub(crate) async fn remove_router(routers: &[String], cluster_id: &str, node: u64) -> anyhow::Result<()> {
    let change = herald_router::raft::MembershipChange::Remove(node);
    let voters = herald_router::raft::change_membership(routers, cluster_id, &change)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("voters: {}", voters.join(","));
    Ok(())
}

/// Prints each router's view of the cluster (`herald ctl cluster status`).
pub(crate) async fn print_status(routers: &[String]) -> anyhow::Result<()> {
    println!(
        "{:<6} {:<10} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  voters / learners",
        "node", "role", "term", "leader", "last log", "applied", "snapshot", "retained", "sessions"
    );
    let mut reached = 0;
    let mut counted = 0;
    let mut online: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for address in routers {
        match herald_router::raft::status(address, false).await {
            Ok(s) => {
                reached += 1;
                if s.registry_counted {
                    counted += 1;
                    for (gateway, sessions) in s.registry_gateways.iter().filter_map(|g| g.split_once('=')) {
                        if let (Ok(gateway), Ok(sessions)) = (gateway.parse::<u64>(), sessions.parse::<u64>())
                        {
                            *online.entry(gateway).or_default() += sessions;
                        }
                    }
                }
                let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
                println!(
                    "{:<6} {:<10} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  {} / {}   cluster={} address={address} gateways={} shards={} registry={}{}{}",
                    s.node_id,
                    s.state,
                    s.term,
                    show(s.leader),
                    show(s.last_log_index),
                    show(s.applied_index),
                    show(s.snapshot_index),
                    s.retained_messages,
                    s.persistent_sessions,
                    s.voters.join(","),
                    if s.learners.is_empty() { "-".to_owned() } else { s.learners.join(",") },
                    s.cluster_id,
                    if s.gateways.is_empty() { "-".to_owned() } else { s.gateways.join(",") },
                    show(s.shards_owned.map(u64::from)),
                    if s.registry_gateways.is_empty() {
                        "-".to_owned()
                    } else {
                        s.registry_gateways.join(",")
                    },
                    if s.shards_inherited > 0 {
                        format!(" inherited={}", s.shards_inherited)
                    } else {
                        String::new()
                    },
                    if s.vote_withheld { " vote=withheld" } else { "" },
                );
            }
            Err(error) => println!("{:<6} unreachable: {error}", "?"),
        }
    }
    anyhow::ensure!(reached > 0, "no router answered");
    // Each router counts the sessions of the registry shards it owns: the
    // sum is each gateway's online sessions.
    if counted > 0 {
        let sums: Vec<String> =
            online.iter().map(|(gateway, sessions)| format!("{gateway}={sessions}")).collect();
        println!(
            "online sessions per gateway (summed over {counted} of {} routers' registry shards): {}",
            routers.len(),
            if sums.is_empty() { "-".to_owned() } else { sums.join(",") }
        );
    }
    Ok(())
}

/// Runs a gateway until `shutdown` resolves. The first router link must
/// open within the router patience; after that, a lost link is looked for
/// again while the gateway keeps its clients (see `router_client`).
pub(crate) async fn run_gateway(
    settings: crate::cluster_config::GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let node = NodeId(settings.node_id.ok_or_else(|| anyhow::anyhow!("node_id: required"))?);
    let link_settings = herald_gateway::router_client::LinkSettings {
        addresses: settings.router.clone(),
        gateway: node,
        cluster_id: settings.cluster_id.clone(),
        incarnation: herald_core::process_incarnation(),
    };
    let patience = Duration::from_secs(settings.router_patience_secs);
    let open = herald_gateway::router_client::connect_any(&link_settings, patience).await?;
    let config = GatewayConfig {
        mqtt: settings.mqtt,
        websocket: settings.websocket,
        limits: Arc::new(herald_gateway::SessionLimits {
            acl: Arc::new(settings.acl.acl()?),
            trace_user_property: settings.telemetry.mqtt_user_property,
            ..settings.limits.session_limits()
        }),
        connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
        max_connections: settings.max_connections,
        drain_timeout: Duration::from_secs(settings.drain_timeout_secs),
        drain_rate: settings.drain_rate,
        push_api: settings.push.api()?,
        tls: settings.tls.listeners()?,
        max_connect_rate: settings.max_connect_rate,
        max_inbox_bytes: settings.max_inbox_bytes,
        max_pending_connects: settings.max_pending_connects,
        memory_high_water: (settings.memory_high_water_mb > 0).then_some(settings.memory_high_water_mb << 20),
        device_users: settings.auth.device_users()?,
        router_reply_timeout: Duration::from_secs(settings.router_reply_timeout_secs),
        ..GatewayConfig::default()
    };
    let authenticator = settings.push.authenticator(&settings.auth, Arc::new(SystemClock))?;
    let (link, port) = herald_proto::seam::link(node, SEAM_CAPACITY);
    let gateway = Gateway::bind(config, link, authenticator, Arc::new(SystemClock)).await?;
    let mqtt = gateway.local_addr()?;
    let websocket = gateway.websocket_addr()?.map(tracing::field::display);
    // A registry link to every router (ADR 0033): the gateway learns the
    // shard table and every router of the cluster.
    let registry_links = Arc::new(herald_gateway::registry_links::RegistryLinks::start(
        node,
        link_settings.cluster_id.clone(),
        &link_settings.addresses,
    ));
    gateway.claim_at_shard_owners(registry_links.clone());
    let router = herald_gateway::router_client::start(open, port, gateway.resync(), link_settings);
    let sources = crate::ops::Sources {
        gateway: Some(gateway.counters()),
        link: Some(router.status.clone()),
        registry_links: Some(registry_links),
        ..Default::default()
    };
    let (ops, shutdown) = crate::ops::start(settings.ops, sources, shutdown).await?;
    let http = gateway.push_api_addr()?.map(tracing::field::display);
    let (mqtts, wss) = gateway.tls_addrs()?;
    let (mqtts, wss) = (mqtts.map(tracing::field::display), wss.map(tracing::field::display));
    info!(%mqtt, websocket, http, mqtts, wss, router = %router.info.router, cluster = %router.info.cluster_id, %node, "listening");
    gateway.run(shutdown).await;
    ops.stop().await;
    // The releases and requeues of the last connections are on their way:
    // let them reach the router before the process ends.
    if tokio::time::timeout(Duration::from_secs(5), router.done).await.is_err() {
        warn!("uplink not flushed within 5 s");
    }
    info!("stopped");
    Ok(())
}

/// Saves a backup of the cluster's replicated state to `file`
/// (`herald ctl snapshot save`).
pub(crate) async fn save_backup(
    routers: &[String],
    cluster_id: &str,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let bytes =
        herald_router::raft::save_backup(routers, cluster_id).await.map_err(|e| anyhow::anyhow!(e))?;
    let backup = herald_router::raft::backup::Backup::decode(&bytes).map_err(|e| anyhow::anyhow!(e))?;
    let mut out = std::fs::File::create(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    std::io::Write::write_all(&mut out, &bytes)?;
    out.sync_all()?;
    let m = &backup.meta;
    println!(
        "saved {} bytes: cluster={} node={} applied_index={} generation={}",
        bytes.len(),
        m.cluster_id,
        m.node_id,
        m.applied_index,
        m.generation
    );
    Ok(())
}

/// Restores the backup in `file` into an empty cluster
/// (`herald ctl snapshot restore`).
pub(crate) async fn restore_backup(
    routers: &[String],
    cluster_id: &str,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let generation = herald_router::raft::restore_backup(routers, cluster_id, &bytes)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("restored into cluster {cluster_id}: generation {generation}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_ip_addresses_or_dns_names_with_ports() {
        let peers = [
            "1=127.0.0.11:7400".to_owned(),
            "2=herald-router-1.herald-router-headless.prod.svc.cluster.local:7400".to_owned(),
        ];
        let voters = parse_peers(&peers).expect("valid").expect("voters");
        assert_eq!(voters[&2], "herald-router-1.herald-router-headless.prod.svc.cluster.local:7400");
        for bad in ["3=router", "3=router:0", "3=router:http", "3=bad_name:7400", "3=-a:7400", "x=a:1"] {
            assert!(parse_peers(&[bad.to_owned()]).is_err(), "{bad} must be refused");
        }
    }
}
