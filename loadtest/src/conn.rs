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
    common: CommonArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: u32,
    /// Connections opened per second at most.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Seconds to hold the connections after the last one is up.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=3600))]
    hold: u64,
    /// Keep-alive sent in CONNECT, seconds.
    #[arg(long, default_value_t = 300)]
    keep_alive: u16,
    /// Handshakes in flight at most: a connection due while this many are
    /// under way waits for one to end (1: one at a time).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    parallel: u32,
}

/// Runs the `conn` scenario.
pub(crate) fn run(args: ConnArgs) -> anyhow::Result<Report> {
    let connect_limit =
        Duration::from_secs_f64(f64::from(args.connections) / f64::from(args.rate)) + HANDSHAKE_TIMEOUT;
    let limit = connect_limit + Duration::from_secs(args.hold + 15);
    args.common.run_bounded("conn", args.connections as usize, limit, run_async(&args))
}

async fn run_async(args: &ConnArgs) -> anyhow::Result<Report> {
    let run = run_id();
    let server_before = proc::sample(&args.common.server_pid);
    let mut handshakes = histogram();
    let mut held = Vec::with_capacity(args.connections as usize);
    let mut failures = 0u64;
    let mut first_error = None;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(args.parallel as usize));
    let mut under_way = tokio::task::JoinSet::new();
    let mut record = |(took, outcome): (Duration, Result<Client, crate::client::ClientError>)| match outcome {
        Ok(client) => {
            handshakes.saturating_record((took.as_micros() as u64).max(1));
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
        let mut options = args.common.client(index, format_args!("{run}-c{index}"));
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
    let connect_seconds = started.elapsed().as_secs_f64();
    let server_connected = proc::sample(&args.common.server_pid);
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let open = held.iter().filter(|client| client.is_open()).count() as u64;
    let server_after = proc::sample(&args.common.server_pid);
    let per_connection = match (server_before, server_after) {
        (Some(before), Some(after)) if open > 0 => {
            Some(after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / open as f64)
        }
        _ => None,
    };
    let connects_per_second = per_second(held.len() as u64, connect_seconds);
    // Connects per second of the server's CPU while they were made (null
    // when no server pid was given, or its CPU clock did not tick).
    let per_cpu_second = match (server_before, server_connected) {
        (Some(before), Some(after)) if after.cpu_seconds > before.cpu_seconds => {
            json!(held.len() as f64 / (after.cpu_seconds - before.cpu_seconds))
        }
        _ => serde_json::Value::Null,
    };
    let results = json!({
        "connected": held.len(),
        "open_after_hold": open,
        "failures": failures,
        "first_error": first_error,
        "connect_seconds": connect_seconds,
        "connects_per_second": connects_per_second,
        "connects_per_server_cpu_second": per_cpu_second,
        "handshake_us": latency_json(&handshakes),
        "server_while_connecting": proc::usage_json(server_before, server_connected, held.len() as u64, "connection"),
        "server": proc::usage_json(server_before, server_after, held.len() as u64, "connection"),
        "server_bytes_per_connection": per_connection,
    });
    let summary = format!(
        "conn: {}/{} connected ({} failed) in {:.2}s = {:.0}/s; handshake p50 {} µs p99 {} µs; {} open after {}s{}",
        held.len(),
        args.connections,
        failures,
        connect_seconds,
        connects_per_second,
        handshakes.value_at_quantile(0.5),
        handshakes.value_at_quantile(0.99),
        open,
        args.hold,
        per_connection.map(|bytes| format!("; server {bytes:.0} B/connection")).unwrap_or_default(),
    );
    Ok(Report::new("conn", args, results, summary))
}
