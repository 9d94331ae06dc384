//! The `conn` scenario: many idle connections, opened at a given rate
//! (several at once, up to a bound, so the rate measures the server and not
//! one handshake's latency) and held.

use crate::client::Client;
use crate::options::{CommonArgs, run_id};
use crate::proc;
use crate::report::{Report, histogram, latency_json, per_second};
use serde::Serialize;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

/// Seconds one handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of the `conn` scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct ConnArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) common: CommonArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub(crate) connections: u32,
    /// Connections opened per second at most.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rate: u32,
    /// Seconds to hold the connections after the last one is up.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub(crate) hold: u64,
    /// Keep-alive sent in CONNECT, seconds.
    #[arg(long, default_value_t = 300)]
    keep_alive: u16,
    /// Handshakes in flight at most: a connection due while this many are
    /// under way waits for one to end (1: one at a time).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) parallel: u32,
    /// Set by a parent `conn` on its worker processes: this worker's share
    /// starts at this connection index (`crate::workers`).
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub(crate) worker_first: Option<u32>,
}

/// Runs the `conn` scenario, in this process when the connections fit its
/// open-file limit, else over worker processes.
pub(crate) fn run(args: ConnArgs) -> anyhow::Result<Report> {
    let connect_limit =
        Duration::from_secs_f64(f64::from(args.connections) / f64::from(args.rate)) + HANDSHAKE_TIMEOUT;
    let limit = connect_limit + Duration::from_secs(args.hold + 15);
    if let Some(first) = args.worker_first {
        return args.common.run_bounded("conn worker", args.connections as usize, limit, async {
            crate::workers::serve_as_worker(&args, connect_all(&args, first).await?).await
        });
    }
    let per_process = crate::workers::sockets_per_process();
    if per_process.is_some_and(|room| args.connections as usize > room) {
        return crate::workers::run_conn(&args, per_process.unwrap_or(1), limit);
    }
    args.common.run_bounded("conn", args.connections as usize, limit, run_async(&args))
}

/// What one process's connects did.
pub(crate) struct Connected {
    pub(crate) held: Vec<Client>,
    pub(crate) handshakes_us: Vec<u64>,
    pub(crate) failures: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) connect_seconds: f64,
}

/// Opens this process's connections (indices `first..first + connections`)
/// at the rate asked, at most `parallel` handshakes at once.
pub(crate) async fn connect_all(args: &ConnArgs, first: u32) -> anyhow::Result<Connected> {
    let run = run_id();
    let mut handshakes_us = Vec::with_capacity(args.connections as usize);
    let mut held = Vec::with_capacity(args.connections as usize);
    let mut failures = 0u64;
    let mut first_error = None;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(args.parallel as usize));
    let mut under_way = tokio::task::JoinSet::new();
    let mut record = |(took, outcome): (Duration, Result<Client, crate::client::ClientError>)| match outcome {
        Ok(client) => {
            handshakes_us.push((took.as_micros() as u64).max(1));
            held.push(client);
        }
        Err(error) => {
            failures += 1;
            first_error.get_or_insert_with(|| error.to_string());
        }
    };
    let started = Instant::now();
    for index in 0..args.connections {
        tokio::time::sleep_until(started + interval * index).await;
        let slot = slots.clone().acquire_owned().await?;
        let global = first + index;
        let mut options = args.common.client(global, format_args!("{run}-c{global}"));
        options.keep_alive = args.keep_alive;
        under_way.spawn(async move {
            let begun = Instant::now();
            let outcome = Client::connect(&options, begun + HANDSHAKE_TIMEOUT).await;
            drop(slot);
            (begun.elapsed(), outcome)
        });
        while let Some(done) = under_way.try_join_next() {
            record(done?);
        }
    }
    while let Some(done) = under_way.join_next().await {
        record(done?);
    }
    Ok(Connected {
        held,
        handshakes_us,
        failures,
        first_error,
        connect_seconds: started.elapsed().as_secs_f64(),
    })
}

async fn run_async(args: &ConnArgs) -> anyhow::Result<Report> {
    let server_before = proc::sample(&args.common.server_pid);
    let connected = connect_all(args, 0).await?;
    let server_connected = proc::sample(&args.common.server_pid);
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let open = connected.held.iter().filter(|client| client.is_open()).count() as u64;
    let server_after = proc::sample(&args.common.server_pid);
    let mut handshakes = histogram();
    for us in &connected.handshakes_us {
        handshakes.saturating_record(*us);
    }
    let tally = Tally {
        connected: connected.held.len() as u64,
        open,
        failures: connected.failures,
        first_error: connected.first_error,
        connect_seconds: connected.connect_seconds,
        handshakes,
        workers: 1,
    };
    Ok(report(args, tally, [server_before, server_connected, server_after]))
}

/// The figures of a run, from one process or summed over workers.
pub(crate) struct Tally {
    pub(crate) connected: u64,
    pub(crate) open: u64,
    pub(crate) failures: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) connect_seconds: f64,
    pub(crate) handshakes: hdrhistogram::Histogram<u64>,
    pub(crate) workers: usize,
}

/// The report of a run: the server sampled before, once connected, and
/// after the hold.
pub(crate) fn report(args: &ConnArgs, tally: Tally, server: [Option<proc::Sample>; 3]) -> Report {
    let [server_before, server_connected, server_after] = server;
    let Tally { connected, open, failures, first_error, connect_seconds, handshakes, workers } = tally;
    let per_connection = match (server_before, server_after) {
        (Some(before), Some(after)) if open > 0 => {
            Some(after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / open as f64)
        }
        _ => None,
    };
    let connects_per_second = per_second(connected, connect_seconds);
    // Connects per second of the server's CPU while they were made (null
    // when no server pid was given, or its CPU clock did not tick).
    let per_cpu_second = match (server_before, server_connected) {
        (Some(before), Some(after)) if after.cpu_seconds > before.cpu_seconds => {
            json!(connected as f64 / (after.cpu_seconds - before.cpu_seconds))
        }
        _ => serde_json::Value::Null,
    };
    let results = json!({
        "connected": connected,
        "worker_processes": workers,
        "open_after_hold": open,
        "failures": failures,
        "first_error": first_error,
        "connect_seconds": connect_seconds,
        "connects_per_second": connects_per_second,
        "connects_per_server_cpu_second": per_cpu_second,
        "handshake_us": latency_json(&handshakes),
        "server_while_connecting": proc::usage_json(server_before, server_connected, connected, "connection"),
        "server": proc::usage_json(server_before, server_after, connected, "connection"),
        "server_bytes_per_connection": per_connection,
    });
    let summary = format!(
        "conn: {}/{} connected ({} failed{}) in {:.2}s = {:.0}/s; handshake p50 {} µs p99 {} µs; {} open after {}s{}",
        connected,
        args.connections,
        failures,
        if workers > 1 { format!(", {workers} worker processes") } else { String::new() },
        connect_seconds,
        connects_per_second,
        handshakes.value_at_quantile(0.5),
        handshakes.value_at_quantile(0.99),
        open,
        args.hold,
        per_connection.map(|bytes| format!("; server {bytes:.0} B/connection")).unwrap_or_default(),
    );
    Report::new("conn", args, results, summary)
}
