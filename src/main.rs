//! The `herald` binary: parses the command line and configuration, sets up
//! logging, and runs the chosen mode.

mod cluster;
mod cluster_config;
mod config;
mod node_id;
mod ops;
mod room;
mod standalone;
mod telemetry;

use clap::{Parser, Subcommand, ValueEnum};
use config::StandaloneConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc (ADR 0031), counting the bytes allocated and not yet freed:
/// `herald_heap_bytes` (resident memory also counts what the allocator
/// keeps for reuse, so it cannot tell a leak from a high-water mark).
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// Sets mimalloc's defaults for a server holding many small, long-lived
/// connections: freed pages go back to the system at once, not after a
/// second; arena memory is committed as it is used, not up front (a
/// compile-time default, `.cargo/config.toml`, since the first arena exists
/// before `main`). Measured per idle connection: 2.7 KB resident with
/// mimalloc's own defaults, 2.0 KB with these, 2.2 KB with glibc (ADR 0031).
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)]
fn tune_allocator() {
    // Position of `mi_option_purge_delay` in `mi_option_e` of the mimalloc 3
    // sources that libmimalloc-sys 0.1.49 (pinned) builds.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists (the function is not thread-safe); the option takes any
        // integer.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
    }
}

/// Bytes allocated and not yet freed, now.
pub(crate) fn heap_bytes() -> u64 {
    ALLOCATOR.allocated() as u64
}

/// Herald: a horizontally clustered push-notification platform.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process on an embedded store (the default for a first run).
    Standalone(StandaloneArgs),
    /// Run a router node of a cluster.
    Router(RouterArgs),
    /// Run a gateway node of a cluster.
    Gateway(GatewayArgs),
    /// Generate load against an MQTT broker (Herald or any other).
    Loadtest(herald_loadtest::Args),
    /// Print the commented configuration template of a mode.
    Config {
        /// The mode.
        mode: Mode,
    },
    /// Print the SCRAM-SHA-256 secret of the password on standard input, for
    /// `scram = "..."` under `[auth.users.NAME]` (the password itself is then
    /// not kept anywhere).
    ScramSecret {
        /// PBKDF2 iterations (4096 to 1000000).
        #[arg(long, default_value_t = herald_gateway::scram::DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Print a salted hash of the password on standard input, for
    /// `password_hash = "..."` under `[auth.users.NAME]` (the password
    /// itself is then not kept anywhere).
    PasswordHash {
        /// sha256 (for generated device secrets), sha512 or pbkdf2 (for
        /// passwords people chose).
        #[arg(long, default_value = "pbkdf2")]
        algorithm: String,
        /// PBKDF2 iterations (1 to 1000000).
        #[arg(long, default_value_t = herald_gateway::password::DEFAULT_PBKDF2_ITERATIONS)]
        iterations: u32,
    },
    /// Operate a running cluster.
    Ctl {
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Commands about the router cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Backups of the routers' replicated state.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Save the replicated state (retained messages, persistent sessions
    /// and their queues, shared groups' queues) to a backup file, from the
    /// leader if one answers.
    Save {
        /// Router gRPC addresses (`host:port`, comma-separated).
        #[arg(long, env = "HERALD_ROUTERS", value_delimiter = ',', required = true)]
        routers: Vec<String>,
        /// The cluster's id.
        #[arg(long, env = "HERALD_CLUSTER_ID")]
        cluster_id: String,
        /// The backup file to write.
        file: PathBuf,
    },
    /// Load a backup file into a cluster that holds nothing yet (fresh
    /// data directories), through its leader.
    Restore {
        /// Router gRPC addresses (`host:port`, comma-separated).
        #[arg(long, env = "HERALD_ROUTERS", value_delimiter = ',', required = true)]
        routers: Vec<String>,
        /// The cluster's id (the cluster restored into).
        #[arg(long, env = "HERALD_CLUSTER_ID")]
        cluster_id: String,
        /// The backup file to read.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Show each router's view: role, term, leader, log and applied index,
    /// voters and learners.
    Status {
        /// Router gRPC addresses (`host:port`, comma-separated).
        #[arg(long, env = "HERALD_ROUTERS", value_delimiter = ',', required = true)]
        routers: Vec<String>,
    },
    /// Add a router (started with `--join`) as a voter: it catches up as a
    /// learner first.
    Add {
        /// Router gRPC addresses to find the leader among.
        #[arg(long, env = "HERALD_ROUTERS", value_delimiter = ',', required = true)]
        routers: Vec<String>,
        /// The cluster's id.
        #[arg(long, env = "HERALD_CLUSTER_ID")]
        cluster_id: String,
        /// The new router, `ID=HOST:PORT`.
        #[arg(long)]
        node: String,
    },
    /// Remove a router from the voters.
    Remove {
        /// Router gRPC addresses to find the leader among.
        #[arg(long, env = "HERALD_ROUTERS", value_delimiter = ',', required = true)]
        routers: Vec<String>,
        /// The cluster's id.
        #[arg(long, env = "HERALD_CLUSTER_ID")]
        cluster_id: String,
        /// The router's node id.
        #[arg(long)]
        node: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Standalone,
    Router,
    Gateway,
}

#[derive(Debug, clap::Args)]
struct RouterArgs {
    /// Configuration file (TOML); `herald config router` prints a template.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address for gateways and routers [default: 127.0.0.1:7400; env HERALD_GRPC].
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Data directory [default: ./herald-router-data; env HERALD_DATA].
    #[arg(long)]
    data: Option<PathBuf>,
    /// This router's node id, or `ordinal`: a StatefulSet pod's ordinal
    /// plus one, from the host name [default: 1; env HERALD_NODE_ID].
    #[arg(long)]
    node_id: Option<String>,
    /// The voters of a replicated router cluster, `ID=HOST:PORT` each,
    /// comma-separated, this node included; the lowest id forms the cluster
    /// on first start. Without it, the router is a cluster of one [env HERALD_PEERS].
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// The cluster id: every router of a cluster must be given the same
    /// (recorded in the data directory at first start, checked after) [env HERALD_CLUSTER_ID].
    #[arg(long)]
    cluster_id: Option<String>,
    /// Join a running cluster: wait to be added with `herald ctl cluster
    /// add` instead of forming a cluster [env HERALD_JOIN].
    #[arg(long, conflicts_with = "peers")]
    join: bool,
    /// Operations HTTP listen address (`/metrics`, `/healthz`, `/readyz`) [env HERALD_OPS].
    #[arg(long)]
    ops: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// Configuration file (TOML); `herald config gateway` prints a template.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// The routers' gRPC addresses, e.g. `http://127.0.0.1:7400`
    /// (comma-separated: the gateway links to whichever serves) [env HERALD_ROUTER].
    #[arg(long, value_delimiter = ',')]
    router: Vec<String>,
    /// MQTT/TCP listen address [default: 127.0.0.1:1883; env HERALD_MQTT].
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// MQTT-over-WebSocket listen address, path `/mqtt` [default: none; env HERALD_WEBSOCKET].
    #[arg(long)]
    websocket: Option<SocketAddr>,
    /// This gateway's node id, unique among the cluster's gateways, or
    /// `hostname`: derived from the host (pod) name [env HERALD_NODE_ID].
    #[arg(long)]
    node_id: Option<String>,
    /// The cluster id the router must have (printed by the router at start) [env HERALD_CLUSTER_ID].
    #[arg(long)]
    cluster_id: Option<String>,
    /// Seconds to wait at start for a router that serves gateways (later
    /// losses of the link are waited out for as long as it takes)
    /// [default: 30; env HERALD_ROUTER_PATIENCE_SECS].
    #[arg(long)]
    router_patience: Option<u64>,
    /// Operations HTTP listen address (`/metrics`, `/healthz`, `/readyz`) [env HERALD_OPS].
    #[arg(long)]
    ops: Option<SocketAddr>,
    /// Seconds shutdown (SIGTERM) waits for connections to leave
    /// [default: 5; env HERALD_DRAIN_TIMEOUT_SECS].
    #[arg(long)]
    drain_timeout: Option<u64>,
    /// Connections told to leave per second at shutdown, 0: all at once
    /// [default: 0; env HERALD_DRAIN_RATE].
    #[arg(long)]
    drain_rate: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct StandaloneArgs {
    /// Configuration file (TOML); `herald config standalone` prints a template.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// MQTT/TCP listen address [default: 127.0.0.1:1883; env HERALD_MQTT].
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// MQTT-over-WebSocket listen address, path `/mqtt` [default: none; env HERALD_WEBSOCKET].
    #[arg(long)]
    websocket: Option<SocketAddr>,
    /// Data directory [default: ./herald-data; env HERALD_DATA].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Operations HTTP listen address: `/metrics`, `/healthz`, `/readyz`
    /// [default: none; env HERALD_OPS].
    #[arg(long)]
    ops: Option<SocketAddr>,
}

/// Reads a router's configuration: file, environment, then flags.
fn router_config(args: RouterArgs) -> anyhow::Result<cluster_config::RouterConfig> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = cluster_config::RouterConfig::load(args.config.as_deref(), &env)?;
    config.grpc = args.grpc.unwrap_or(config.grpc);
    config.data = args.data.unwrap_or(config.data);
    if let Some(id) = args.node_id {
        config.node_id = node_id::parse(&id, node_id::hostname)?;
    }
    if !args.peers.is_empty() {
        config.peers = args.peers;
    }
    config.cluster_id = args.cluster_id.or(config.cluster_id);
    config.join |= args.join;
    config.ops = args.ops.or(config.ops);
    anyhow::ensure!(!config.join || config.peers.is_empty(), "--join: a joining router takes no peers");
    Ok(config)
}

/// Reads a gateway's configuration: file, environment, then flags.
fn gateway_config(args: GatewayArgs) -> anyhow::Result<cluster_config::GatewayConfig> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = cluster_config::GatewayConfig::load(args.config.as_deref(), &env)?;
    if !args.router.is_empty() {
        config.router = args.router;
    }
    config.mqtt = args.mqtt.unwrap_or(config.mqtt);
    config.websocket = args.websocket.or(config.websocket);
    if let Some(id) = args.node_id {
        config.node_id = Some(node_id::parse(&id, node_id::hostname)?);
    }
    config.cluster_id = args.cluster_id.or(config.cluster_id);
    config.router_patience_secs = args.router_patience.unwrap_or(config.router_patience_secs);
    config.ops = args.ops.or(config.ops);
    config.drain_timeout_secs = args.drain_timeout.unwrap_or(config.drain_timeout_secs);
    config.drain_rate = args.drain_rate.unwrap_or(config.drain_rate);
    config.validate()?;
    Ok(config)
}

/// Reads one password line from standard input and prints its SCRAM secret.
fn print_scram_secret(iterations: u32) -> anyhow::Result<()> {
    use herald_gateway::scram::{MAX_ITERATIONS, MIN_ITERATIONS, ScramSecret};
    anyhow::ensure!(
        (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations),
        "--iterations: {MIN_ITERATIONS} to {MAX_ITERATIONS}"
    );
    let password = read_password()?;
    println!("{}", ScramSecret::generate(password.as_bytes(), iterations).encode());
    Ok(())
}

fn print_password_hash(algorithm: &str, iterations: u32) -> anyhow::Result<()> {
    let algorithm = herald_proto::users::HashAlgorithm::from_name(algorithm)
        .ok_or_else(|| anyhow::anyhow!("--algorithm: sha256, sha512 or pbkdf2"))?;
    let password = read_password()?;
    let hash = herald_gateway::password::hash(algorithm, password.as_bytes(), iterations)
        .ok_or_else(|| anyhow::anyhow!("--iterations: 1 to 1000000"))?;
    println!("{}", herald_gateway::password::encode(&hash));
    Ok(())
}

/// The first line of standard input, without its line end.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // Serving modes set up logging once their configuration (which may ask
    // for span export) is read; the others now.
    let serving = matches!(cli.command, Command::Standalone(_) | Command::Router(_) | Command::Gateway(_));
    if !serving && let Err(error) = telemetry::init(None, "herald") {
        eprintln!("herald: {error:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Standalone(args) => run_standalone(args),
        Command::Config { mode } => {
            print!(
                "{}",
                match mode {
                    Mode::Standalone => config::STANDALONE_TEMPLATE,
                    Mode::Router => cluster_config::ROUTER_TEMPLATE,
                    Mode::Gateway => cluster_config::GATEWAY_TEMPLATE,
                }
            );
            Ok(())
        }
        Command::Loadtest(args) => herald_loadtest::main(args),
        Command::ScramSecret { iterations } => print_scram_secret(iterations),
        Command::PasswordHash { algorithm, iterations } => print_password_hash(&algorithm, iterations),
        Command::Router(args) => router_config(args).and_then(|config| {
            config.cluster_tls.install()?;
            let telemetry = config.telemetry.clone();
            let (data, probe) = (config.data.clone(), room_probe(&config.raft, &config.limits));
            // Started again after running out of room, it listens where it did.
            let listened = std::sync::Arc::new(std::sync::Mutex::new(None));
            let run = room::resuming(data, probe, shutdown_signal(), move |stop| {
                let mut config = config.clone();
                if let Some(grpc) = *listened.lock().unwrap_or_else(|p| p.into_inner()) {
                    config.grpc = grpc;
                }
                cluster::run_router(config, stop, listened.clone())
            });
            serve(telemetry, "herald-router", run)
        }),
        Command::Gateway(args) => gateway_config(args).and_then(|config| {
            config.cluster_tls.install()?;
            serve(config.telemetry.clone(), "herald-gateway", cluster::run_gateway(config, shutdown_signal()))
        }),
        // `herald ctl` speaks to the routers with the cluster's identity
        // from HERALD_CLUSTER_TLS_* when they require one.
        Command::Ctl { .. }
            if let Err(error) = config::ClusterTlsConfig::from_env(&std::env::vars().collect::<Vec<_>>())
                .and_then(|tls| tls.install()) =>
        {
            Err(error)
        }
        Command::Ctl { command: CtlCommand::Snapshot { command } } => match command {
            SnapshotCommand::Save { routers, cluster_id, file } => {
                block_on(cluster::save_backup(&routers, &cluster_id, &file))
            }
            SnapshotCommand::Restore { routers, cluster_id, file } => {
                block_on(cluster::restore_backup(&routers, &cluster_id, &file))
            }
        },
        Command::Ctl { command: CtlCommand::Cluster { command } } => match command {
            ClusterCommand::Status { routers } => block_on(cluster::print_status(&routers)),
            ClusterCommand::Add { routers, cluster_id, node } => {
                block_on(cluster::add_router(&routers, &cluster_id, &node))
            }
            ClusterCommand::Remove { routers, cluster_id, node } => {
                block_on(cluster::remove_router(&routers, &cluster_id, node))
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = StandaloneConfig::load(args.config.as_deref(), &env)?;
    if let Some(mqtt) = args.mqtt {
        config.mqtt = mqtt;
    }
    if args.ops.is_some() {
        config.ops = args.ops;
    }
    if args.websocket.is_some() {
        config.websocket = args.websocket;
    }
    if let Some(data) = args.data {
        config.data = data;
    }
    config.validate()?;
    let telemetry = config.telemetry.clone();
    let (data, probe) = (config.data.clone(), room_probe(&config.raft, &config.limits));
    // Started again after running out of room, it listens where it did.
    let listened = standalone::Listened::default();
    let run = room::resuming(data, probe, shutdown_signal(), move |stop| {
        let mut config = config.clone();
        standalone::listen_as_before(&mut config, &listened);
        standalone::run(config, stop, listened.clone())
    });
    serve(telemetry, "herald-standalone", run)
}

/// What a data directory must take before a process that ran out of room
/// starts again: a log segment, or the largest record a publish can make.
fn room_probe(raft: &config::RaftConfig, limits: &config::Limits) -> u64 {
    raft.segment_bytes.max(u64::from(limits.max_packet_size) + 64 * 1024)
}

/// Runs a serving mode on a new runtime, with logging and, when
/// configured, span export set up on it; flushes the spans at the end.
fn serve(
    config: telemetry::TelemetryConfig,
    service: &'static str,
    run: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    block_on(async move {
        let telemetry = telemetry::init(Some(&config), service)?;
        // A write past the file-size limit (RLIMIT_FSIZE) then fails with
        // an error the storage reports, instead of SIGXFSZ killing the
        // process without a word.
        let _file_size_signal =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25)).ok();
        let outcome = run.await;
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        outcome
    })
}

fn block_on(future: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(future)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}
