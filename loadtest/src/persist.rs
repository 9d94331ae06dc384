//! The `persist` scenario: N persistent subscribers subscribe and go
//! offline; one publisher sends M QoS 1 (or 2) messages into their offline
//! sessions (publish rate and publish → acknowledgement latency); then the
//! subscribers come back and every message must reach each of them, once,
//! in order.

use crate::client::{Client, ClientError, connect_many, disconnect_all};
use crate::delivery::Tally;
use crate::options::{CommonArgs, SetupArgs, keep_alive_for, qos, run_id};
use crate::payload::now_ns;
use crate::proc;
use crate::publisher::{Plan, PublisherStats, publish};
use crate::report::{Report, latency_json, latency_text, merge, per_second};
use crate::subscriber::{Shared, receive};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Arguments of the `persist` scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct PersistArgs {
    #[command(flatten)]
    #[serde(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    setup: SetupArgs,
    /// Persistent subscribers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Messages published while the subscribers are offline.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// QoS of the publishes and subscriptions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    qos: u8,
    /// Payload bytes (at least 16).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    payload: u32,
    /// Publish rate, messages per second (0: as fast as the in-flight window
    /// allows).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Publishes in flight; in 5.0 also the Receive Maximum subscribers
    /// announce.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    inflight: u16,
    /// Seconds allowed for publishing every message and getting its
    /// acknowledgement.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds allowed, after the subscribers are back, for every queued
    /// message to arrive (ends early once all arrived, or after 2 s without
    /// a delivery).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    drain: u64,
    /// Session expiry of the subscribers' 5.0 sessions, seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    session_expiry: u32,
}

/// Runs the `persist` scenario.
pub(crate) fn run(args: PersistArgs) -> anyhow::Result<Report> {
    let limit = Duration::from_secs(3 * args.setup.connect_timeout + args.duration + args.drain + 20);
    args.common.run_bounded("persist", args.connections as usize + 1, limit, run_async(&args))
}

async fn run_async(args: &PersistArgs) -> anyhow::Result<Report> {
    let run = run_id();
    let version = args.common.version();
    let level = qos(args.qos);
    let topic = format!("lt/{run}/persist");
    let keep_alive = keep_alive_for(3 * args.setup.connect_timeout + args.duration + args.drain);
    let subscriber = |index: u32, clean_start: bool| {
        let mut options = args.common.client(index, format_args!("{run}-o{index}"));
        options.keep_alive = keep_alive;
        options.clean_start = clean_start;
        options.session_expiry = args.session_expiry;
        options.receive_maximum = args.inflight;
        options
    };

    // 1. Persistent sessions with a subscription, then offline. A 3.1.1
    // session is persistent only without clean session; 5.0 starts a fresh
    // one with Clean Start and an expiry.
    let setup_started = Instant::now();
    let deadline = setup_started + args.setup.connect_timeout();
    let first_clean = version == herald_mqtt::ProtocolVersion::V5;
    let clients = connect_many(args.connections, args.setup.parallel, |index| {
        let options = subscriber(index, first_clean);
        let filter = topic.clone();
        async move {
            let mut client = Client::connect(&options, deadline).await?;
            client.subscribe(&[filter], level, deadline).await?;
            Ok::<_, ClientError>(client)
        }
    })
    .await?;
    disconnect_all(clients, None, deadline).await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    // 2. Publish into the offline sessions.
    let shared = Arc::new(Shared::new(args.common.threads));
    let mut options = args.common.client(args.connections, format_args!("{run}-p"));
    options.keep_alive = keep_alive;
    let publisher = Client::connect(&options, Instant::now() + args.setup.connect_timeout()).await?;
    let server_before = proc::sample(&args.common.server_pid);
    let start = Instant::now();
    let first_send_ns = now_ns();
    let end = start + Duration::from_secs(args.duration);
    let plan = Plan {
        index: 0,
        topic: topic.clone().into(),
        qos: level,
        payload: args.payload as usize,
        interval: (args.rate > 0).then(|| 1.0 / f64::from(args.rate)),
        offset: 0.0,
        count: args.messages,
        start,
        end,
        drain_deadline: end,
        window: usize::from(args.inflight.min(publisher.server_receive_maximum())),
    };
    let published = publish(publisher, plan, shared.clone()).await;
    let server_published = proc::sample(&args.common.server_pid);
    let publish_seconds = published.last_ack_ns.saturating_sub(first_send_ns) as f64 / 1e9;

    // 3. Back online: every message, once, in order.
    let reconnect_started = Instant::now();
    let reconnect_ns = now_ns();
    let deadline = reconnect_started + args.setup.connect_timeout();
    let clients = connect_many(args.connections, args.setup.parallel, |index| {
        let options = subscriber(index, false);
        async move { Client::connect(&options, deadline).await }
    })
    .await?;
    let sessions_present = clients.iter().filter(|client| client.session_present()).count();
    let (stop, stopped) = watch::channel(false);
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(0u32..)
        .map(|(client, index)| tokio::spawn(receive(client, index, 0..1, shared.clone(), stopped.clone())))
        .collect();
    let expected = u64::from(published.sent) * u64::from(args.connections);
    shared.wait_for_deliveries(expected, Instant::now() + Duration::from_secs(args.drain)).await;
    let server_delivered = proc::sample(&args.common.server_pid);
    let _ = stop.send(true);
    let mut tally = Tally::default();
    let mut errors: Vec<String> = published.error.iter().cloned().collect();
    for (task, index) in tasks.into_iter().zip(0u32..) {
        let stats = task.await?;
        tally.add(index, &stats.deliveries, &[published.sent]);
        errors.extend(stats.error);
    }
    let delivery_seconds = tally.last_ns.saturating_sub(reconnect_ns) as f64 / 1e9;

    // Leave nothing behind: a clean connection ends each session.
    let deadline = Instant::now() + Duration::from_secs(5);
    if let Ok(clients) = connect_many(args.connections, args.setup.parallel, |index| {
        let mut options = subscriber(index, true);
        options.session_expiry = 0;
        async move { Client::connect(&options, deadline).await }
    })
    .await
    {
        let _ = disconnect_all(clients, None, deadline).await;
    }

    let ack_latency = shared.ack_latency.merged();
    let latency = shared.latency.merged();
    let results = merge([
        json!({ "subscribers": args.connections, "setup_seconds": setup_seconds }),
        PublisherStats::json(std::slice::from_ref(&published), level),
        json!({
            "publish_seconds": publish_seconds,
            "publish_per_second": per_second(published.accepted, publish_seconds),
            "ack_latency_us": latency_json(&ack_latency),
            "sessions_present": sessions_present,
        }),
        tally.json(expected),
        json!({
            "in_order": tally.out_of_order == 0,
            "delivery_seconds": delivery_seconds,
            "deliveries_per_second": per_second(tally.received, delivery_seconds),
            "delivery_latency_us": latency_json(&latency),
            "connection_errors": errors.len(),
            "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
            "server_publish": proc::usage_json(server_before, server_published, published.accepted, "publish"),
            "server_delivery": proc::usage_json(server_published, server_delivered, tally.received, "delivery"),
        }),
    ]);
    let mut summary = format!(
        "persist: {} subscribers, {} QoS {} messages: acked {} in {publish_seconds:.2}s ({:.0}/s), publish→ack {}; \
         back online: {sessions_present} sessions present, {} in {delivery_seconds:.2}s",
        args.connections,
        published.sent,
        args.qos,
        published.accepted,
        per_second(published.accepted, publish_seconds),
        latency_text(&ack_latency),
        tally.text(expected),
    );
    if let Some(first) = errors.first() {
        summary.push_str(&format!("; {} connection error(s), first: {first}", errors.len()));
    }
    Ok(Report::new("persist", args, results, summary))
}
