//! The `herald` binary: parses the command line and configuration, sets up
//! logging, and runs the chosen mode.

mod config;
mod standalone;

use clap::{Parser, Subcommand, ValueEnum};
use config::StandaloneConfig;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    Router,
    /// Run a gateway node of a cluster.
    Gateway,
    /// Generate load against an MQTT broker (Herald or any other).
    Loadtest(herald_loadtest::Args),
    /// Print the commented configuration template of a mode.
    Config {
        /// The mode.
        mode: Mode,
    },
    /// Operate a running cluster.
    Ctl,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Standalone,
}

#[derive(Debug, clap::Args)]
struct StandaloneArgs {
    /// Configuration file (TOML); `herald config standalone` prints a template.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// MQTT/TCP listen address [default: 127.0.0.1:1883; env HERALD_MQTT].
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// Data directory [default: ./herald-data; env HERALD_DATA].
    #[arg(long)]
    data: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Standalone(args) => run_standalone(args),
        Command::Config { mode: Mode::Standalone } => {
            print!("{}", config::STANDALONE_TEMPLATE);
            Ok(())
        }
        Command::Loadtest(args) => herald_loadtest::main(args),
        Command::Router | Command::Gateway | Command::Ctl => {
            eprintln!(
                "herald: this mode is not available yet: it arrives with the cluster (docs/adr/0002-gateway-router-seam.md)"
            );
            return ExitCode::from(2);
        }
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
    if let Some(data) = args.data {
        config.data = data;
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(standalone::run(config, shutdown_signal()))
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

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERALD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}
