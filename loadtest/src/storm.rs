//! The `storm` scenario: N clients connect, then all drop their sockets at
//! once (a TCP reset, no DISCONNECT: a gateway restart as the devices see
//! it) and reconnect at once. Reports the time until every client has its
//! CONNACK again, and the clients that never got one.

use crate::client::{Client, ConnectOptions, connect_many, deadline_within, disconnect_all};
use crate::options::{CommonArgs, SetupArgs, keep_alive_for, run_id};
use crate::proc;
use crate::report::{Report, histogram, latency_json, latency_text, per_second};
use serde::Serialize;
use serde_json::json;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

/// How long one reconnect attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of the `storm` scenario. `--connect-timeout` bounds the first
/// connections, and again the reconnections.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct StormArgs {
    #[command(flatten)]
    #[serde(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    setup: SetupArgs,
    /// Clients.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Persistent sessions: clean session 0 (3.1.1), Clean Start 0 with a
    /// session expiry (5.0).
    #[arg(long)]
    persistent: bool,
    /// Session expiry of persistent 5.0 sessions, seconds.
    #[arg(long, default_value_t = 600)]
    session_expiry: u32,
    /// Seconds to hold the connections before the storm.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    hold: u64,
    /// Storm at this wall-clock time (Unix milliseconds) instead of after
    /// `--hold`: several generator processes storm together (each waits
    /// at most `--hold` plus `--connect-timeout` seconds for it).
    #[arg(long)]
    storm_at: Option<u64>,
}

/// Runs the `storm` scenario.
pub(crate) fn run(args: StormArgs) -> anyhow::Result<Report> {
    let limit = Duration::from_secs(3 * args.setup.connect_timeout + args.hold + 15);
    args.common.run_bounded("storm", args.connections as usize, limit, run_async(&args))
}

/// How one client came back.
#[derive(Debug)]
struct Return {
    client: Option<Client>,
    /// From the storm's start to its CONNACK.
    latency: Duration,
    attempts: u32,
    error: Option<String>,
}

async fn run_async(args: &StormArgs) -> anyhow::Result<Report> {
    let run = run_id();
    let version = args.common.version();
    let keep_alive = keep_alive_for(3 * args.setup.connect_timeout + args.hold);
    let options = |index: u32, first: bool| {
        let mut options = args.common.client(index, format_args!("{run}-r{index}"));
        options.keep_alive = keep_alive;
        if args.persistent {
            // 5.0 starts a fresh persistent session with Clean Start 1 and
            // an expiry, and resumes it with Clean Start 0; 3.1.1 has one
            // flag for both, and the run's fresh client ids stand in for
            // "fresh".
            options.clean_start = first && version == herald_mqtt::ProtocolVersion::V5;
            options.session_expiry = args.session_expiry;
        }
        options
    };

    let setup_started = Instant::now();
    let setup_deadline = setup_started + args.setup.connect_timeout();
    let clients = connect_many(args.connections, args.setup.parallel, |index| {
        let options = options(index, true);
        async move { Client::connect(&options, setup_deadline).await }
    })
    .await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    match args.storm_at {
        Some(at) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let wait = Duration::from_millis(at.saturating_sub(now));
            let most = Duration::from_secs(args.hold) + args.setup.connect_timeout();
            anyhow::ensure!(wait <= most, "--storm-at is more than --hold + --connect-timeout away");
            sleep(wait).await;
        }
        None => sleep(Duration::from_secs(args.hold)).await,
    }
    let open_before = clients.iter().filter(|client| client.is_open()).count();

    let server_before = proc::sample(&args.common.server_pid);
    let storm_started = Instant::now();
    let deadline = storm_started + args.setup.connect_timeout();
    for client in clients {
        client.abort();
    }
    let mut returns = JoinSet::new();
    for index in 0..args.connections {
        let options = options(index, false);
        returns.spawn(reconnect(options, index, storm_started, deadline));
    }
    let mut reconnected = Vec::with_capacity(args.connections as usize);
    let mut latencies = histogram();
    let (mut failures, mut retries, mut sessions_present) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    let mut all_back = Duration::ZERO;
    while let Some(joined) = returns.join_next().await {
        let back = joined?;
        retries += u64::from(back.attempts.saturating_sub(1));
        match back.client {
            Some(client) => {
                latencies.saturating_record((back.latency.as_micros() as u64).max(1));
                all_back = all_back.max(back.latency);
                sessions_present += u64::from(client.session_present());
                reconnected.push(client);
            }
            None => {
                failures += 1;
                if first_error.is_none() {
                    first_error = back.error;
                }
            }
        }
    }
    let server_after = proc::sample(&args.common.server_pid);
    let back = reconnected.len() as u64;

    // Leave nothing behind: persistent 5.0 sessions end with an expiry of 0.
    let cleanup_deadline = Instant::now() + Duration::from_secs(5);
    let expiry = args.persistent.then_some(0);
    // Best effort: the figures are taken; a client that fails to leave
    // changes none of them.
    let _ = disconnect_all(reconnected, expiry, cleanup_deadline).await;

    let seconds = all_back.as_secs_f64();
    let results = json!({
        "setup_seconds": setup_seconds,
        "open_before_storm": open_before,
        "back": back,
        "failures": failures,
        "first_error": first_error,
        "retries": retries,
        "sessions_present": args.persistent.then_some(sessions_present),
        "all_back_seconds": (failures == 0).then_some(seconds),
        "last_back_seconds": seconds,
        "reconnects_per_second": per_second(back, seconds),
        "reconnect_us": latency_json(&latencies),
        "server": proc::usage_json(server_before, server_after, back, "reconnect"),
    });
    let summary = format!(
        "storm: {back}/{} back in {seconds:.3}s ({:.0}/s), {failures} failed, {retries} retries{}; reconnect {}",
        args.connections,
        per_second(back, seconds),
        if args.persistent { format!(", session present for {sessions_present}") } else { String::new() },
        latency_text(&latencies),
    );
    Ok(Report::new("storm", args, results, summary))
}

/// Reconnects until a CONNACK or `deadline`, retrying after a short pause
/// (staggered by `index`) as devices do.
async fn reconnect(options: ConnectOptions, index: u32, started: Instant, deadline: Instant) -> Return {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match Client::connect(&options, deadline_within(deadline, ATTEMPT_TIMEOUT)).await {
            Ok(client) => {
                return Return { client: Some(client), latency: started.elapsed(), attempts, error: None };
            }
            Err(error) => {
                let pause = Duration::from_millis(50 + u64::from(index % 50));
                if Instant::now() + pause >= deadline {
                    return Return {
                        client: None,
                        latency: started.elapsed(),
                        attempts,
                        error: Some(format!("client {index}: {error}")),
                    };
                }
                sleep(pause).await;
            }
        }
    }
}
