//! The engine behind `fanout` (1 publisher → N subscribers on one topic),
//! `fanin` (N publishers → 1 subscriber on a wildcard), `p2p` (N pairs,
//! each on its own topic) and `shared` (1 publisher → a shared-subscription
//! group of N members, each message to one of them).
//!
//! A run: every subscriber connects and gets its SUBACK, every publisher
//! connects; publishers then send at the target rate for the duration, each
//! within its in-flight window; the run drains (publishers wait for their
//! last acknowledgements, subscribers for their last deliveries) until
//! every expected delivery arrived, nothing arrived for 2 s, or the drain
//! time ran out. Each task owns its client and its counts
//! (`publisher.rs`, `subscriber.rs`); they meet only in the latency
//! histograms and one counter of deliveries.

use crate::client::{Client, ClientError, connect_many};
use crate::delivery::Tally;
use crate::options::{CommonArgs, SetupArgs, keep_alive_for, qos, run_id};
use crate::payload::now_ns;
use crate::proc;
use crate::publisher::{Plan, PublisherStats, publish};
use crate::report::{Report, latency_json, latency_text, merge, per_second};
use crate::subscriber::{Shared, receive};
use herald_mqtt::QoS;
use serde::Serialize;
use serde_json::json;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Who publishes to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// 1 publisher → N subscribers on one topic.
    Fanout,
    /// N publishers on their own topics → 1 subscriber on a wildcard.
    Fanin,
    /// N publisher/subscriber pairs, each pair on its own topic.
    P2p,
    /// 1 publisher → N members of one shared-subscription group.
    Shared,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Fanout => "fanout",
            Shape::Fanin => "fanin",
            Shape::P2p => "p2p",
            Shape::Shared => "shared",
        }
    }

    /// Returns (publishers, subscribers) for `--connections n`.
    fn counts(self, n: u32) -> (u32, u32) {
        match self {
            Shape::Fanout | Shape::Shared => (1, n),
            Shape::Fanin => (n, 1),
            Shape::P2p => (n, n),
        }
    }

    fn topic(self, run: &str, publisher: u32) -> String {
        match self {
            Shape::Fanout => format!("lt/{run}/fanout"),
            Shape::Fanin => format!("lt/{run}/fanin/{publisher}"),
            Shape::P2p => format!("lt/{run}/p2p/{publisher}"),
            Shape::Shared => format!("lt/{run}/shared"),
        }
    }

    fn filter(self, run: &str, subscriber: u32) -> String {
        match self {
            Shape::Fanout => format!("lt/{run}/fanout"),
            Shape::Fanin => format!("lt/{run}/fanin/+"),
            Shape::P2p => format!("lt/{run}/p2p/{subscriber}"),
            Shape::Shared => format!("$share/lt/lt/{run}/shared"),
        }
    }

    /// Returns the publishers whose messages `subscriber` expects.
    fn publishers_of(self, subscriber: u32, n: u32) -> Range<u32> {
        match self {
            Shape::Fanout | Shape::Shared => 0..1,
            Shape::Fanin => 0..n,
            Shape::P2p => subscriber..subscriber + 1,
        }
    }
}

/// Arguments of `fanout`, `fanin` and `p2p`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct FlowArgs {
    #[command(flatten)]
    #[serde(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    setup: SetupArgs,
    /// fanout: subscribers; fanin: publishers; p2p: pairs; shared: group
    /// members.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// QoS of every publish and subscription.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 16: publisher id, sequence, send time).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    payload: u32,
    /// Total publish rate over all publishers, messages per second (0: as
    /// fast as the in-flight windows and sockets allow).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Seconds after publishing to wait for the last acknowledgements and
    /// deliveries (ends early once everything arrived, or after 2 s without
    /// a delivery).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    drain: u64,
    /// QoS 1/2 publishes in flight per publisher; in 5.0 also the Receive
    /// Maximum subscribers announce.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    inflight: u16,
    /// Subscribers' session expiry in seconds (0: clean sessions): with it
    /// they are online persistent sessions, whose messages the broker keeps
    /// until acknowledged. 3.1.1 subscribers then connect without clean
    /// session. Their sessions are ended after the run.
    #[arg(long, default_value_t = 0)]
    session_expiry: u32,
}

/// Runs `shape` with `args`.
pub(crate) fn run(shape: Shape, args: FlowArgs) -> anyhow::Result<Report> {
    let (publishers, subscribers) = shape.counts(args.connections);
    let sockets = publishers as usize + subscribers as usize;
    let limit = Duration::from_secs(args.setup.connect_timeout + args.duration + args.drain + 15);
    args.common.run_bounded(shape.name(), sockets, limit, run_async(shape, &args))
}

/// Connected subscribers (SUBACK received) and publishers.
struct Clients {
    subscribers: Vec<Client>,
    publishers: Vec<Client>,
}

/// Connects every subscriber and subscribes it, then every publisher, by
/// `--connect-timeout`.
async fn connect(shape: Shape, args: &FlowArgs, run: &str) -> anyhow::Result<Clients> {
    let (publisher_count, subscriber_count) = shape.counts(args.connections);
    let deadline = Instant::now() + args.setup.connect_timeout();
    let keep_alive = keep_alive_for(args.setup.connect_timeout + args.duration + args.drain);
    let level = qos(args.qos);
    let options = |index: u32, role: char| {
        let mut options = args.common.client(index, format_args!("{run}-{role}{index}"));
        options.keep_alive = keep_alive;
        options.receive_maximum = args.inflight;
        options
    };
    let subscribers = connect_many(subscriber_count, args.setup.parallel, |index| {
        let mut options = options(publisher_count + index, 's');
        if args.session_expiry > 0 {
            options.session_expiry = args.session_expiry;
            options.clean_start = false;
        }
        let filter = shape.filter(run, index);
        async move {
            let mut client = Client::connect(&options, deadline).await?;
            client.subscribe(&[filter], level, deadline).await?;
            Ok::<_, ClientError>(client)
        }
    })
    .await?;
    let publishers = connect_many(publisher_count, args.setup.parallel, |index| {
        let options = options(index, 'p');
        async move { Client::connect(&options, deadline).await }
    })
    .await?;
    Ok(Clients { subscribers, publishers })
}

/// Ends the persistent sessions of the subscribers: each connects again
/// with a clean start and leaves without expiry.
async fn end_sessions(shape: Shape, args: &FlowArgs, run: &str) {
    let (publisher_count, subscriber_count) = shape.counts(args.connections);
    let deadline = Instant::now() + Duration::from_secs(10);
    let clients = connect_many(subscriber_count, args.setup.parallel, |index| {
        let index = publisher_count + index;
        let options = args.common.client(index, format_args!("{run}-s{index}"));
        async move { Client::connect(&options, deadline).await }
    })
    .await;
    if let Ok(clients) = clients {
        let _ = crate::client::disconnect_all(clients, None, deadline).await;
    }
}

async fn run_async(shape: Shape, args: &FlowArgs) -> anyhow::Result<Report> {
    let run = run_id();
    let n = args.connections;
    let (publisher_count, subscriber_count) = shape.counts(n);
    let level = qos(args.qos);
    let setup_started = Instant::now();
    let clients = connect(shape, args, &run).await?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let shared = Arc::new(Shared::new(args.common.threads));
    let (stop, stopped) = watch::channel(false);
    let server_before = proc::sample(&args.common.server_pid);
    let generator_before = proc::own_cpu_seconds();
    let subscribers: Vec<_> = (clients.subscribers.into_iter().zip(0u32..))
        .map(|(client, index)| {
            let publishers = shape.publishers_of(index, n);
            tokio::spawn(receive(client, index, publishers, shared.clone(), stopped.clone()))
        })
        .collect();

    let start = Instant::now() + Duration::from_millis(20);
    let start_ns = now_ns() + 20_000_000;
    let end = start + Duration::from_secs(args.duration);
    let drain_deadline = end + Duration::from_secs(args.drain);
    let publishers: Vec<_> = (clients.publishers.into_iter().zip(0u32..))
        .map(|(client, index)| {
            let plan = Plan {
                index,
                topic: shape.topic(&run, index).into(),
                qos: level,
                payload: args.payload as usize,
                interval: (args.rate > 0).then(|| f64::from(publisher_count) / f64::from(args.rate)),
                offset: f64::from(index) / f64::from(publisher_count),
                count: u32::MAX,
                start,
                end,
                drain_deadline,
                window: usize::from(args.inflight.min(client.server_receive_maximum())),
            };
            tokio::spawn(publish(client, plan, shared.clone()))
        })
        .collect();
    let mut publisher_stats = Vec::with_capacity(publishers.len());
    for task in publishers {
        publisher_stats.push(task.await?);
    }

    let sent: Vec<u32> = publisher_stats.iter().map(|stats| stats.sent).collect();
    let audience = if shape == Shape::Fanout { u64::from(subscriber_count) } else { 1 };
    let expected = sent.iter().map(|&count| u64::from(count) * audience).sum::<u64>();
    let published_at = Instant::now();
    shared.wait_for_deliveries(expected, drain_deadline).await;
    let drain_seconds = published_at.elapsed().as_secs_f64();
    let server_after = proc::sample(&args.common.server_pid);
    let generator_after = proc::own_cpu_seconds();
    let _ = stop.send(true);
    let mut tally = Tally::default();
    let mut errors: Vec<String> = publisher_stats.iter().filter_map(|stats| stats.error.clone()).collect();
    // A group's members are one audience: a message is lost if no member got
    // it, and a duplicate if two did.
    let mut group: Option<crate::delivery::Deliveries> = None;
    for (task, index) in subscribers.into_iter().zip(0u32..) {
        let stats = task.await?;
        match (shape, group.as_mut()) {
            (Shape::Shared, Some(group)) => group.absorb(&stats.deliveries),
            (Shape::Shared, None) => group = Some(stats.deliveries),
            _ => tally.add(index, &stats.deliveries, &sent),
        }
        errors.extend(stats.error);
    }
    if let Some(group) = &group {
        tally.add(0, group, &sent);
    }

    if args.session_expiry > 0 {
        end_sessions(shape, args, &run).await;
    }

    let published = sent.iter().map(|&count| u64::from(count)).sum::<u64>();
    let delivery_seconds = tally.last_ns.saturating_sub(start_ns) as f64 / 1e9;
    let latency = shared.latency.merged();
    let ack_latency = shared.ack_latency.merged();
    let results = merge([
        json!({ "publishers": publisher_count, "subscribers": subscriber_count, "setup_seconds": setup_seconds }),
        PublisherStats::json(&publisher_stats, level),
        json!({ "published_per_second": per_second(published, args.duration as f64) }),
        tally.json(expected),
        json!({
            "deliveries_per_second": per_second(tally.received, delivery_seconds),
            "delivery_seconds": delivery_seconds,
            "drain_seconds": drain_seconds,
            "latency_us": latency_json(&latency),
            "ack_latency_us": latency_json(&ack_latency),
            "connection_errors": errors.len(),
            "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
            "server": proc::usage_json(server_before, server_after, tally.received, "delivery"),
            "generator_cpu_seconds": generator_before.zip(generator_after).map(|(before, after)| after - before),
        }),
    ]);
    let mut summary = format!(
        "{}: {publisher_count} publisher(s) → {subscriber_count} subscriber(s), QoS {}, {} B: published {published} \
         ({:.0}/s), {} ({:.0}/s); latency {}",
        shape.name(),
        args.qos,
        args.payload,
        per_second(published, args.duration as f64),
        tally.text(expected),
        per_second(tally.received, delivery_seconds),
        latency_text(&latency),
    );
    if level != QoS::AtMostOnce {
        summary.push_str(&format!("; publish→ack {}", latency_text(&ack_latency)));
    }
    if let Some(first) = errors.first() {
        summary.push_str(&format!("; {} connection error(s), first: {first}", errors.len()));
    }
    Ok(Report::new(shape.name(), args, results, summary))
}
