//! The `devices` scenario: N push-API devices, each subscribed to its own
//! topic `$push/{client id}`, waiting for what an app backend sends them.
//!
//! The scenario does not send: once every device is subscribed it touches
//! `--ready-file`, and a script sends through the push API (a broadcast, a
//! tag expression). Each delivery's latency is its arrival time less the
//! time in its message id (milliseconds since the epoch, stamped by the
//! gateway that took the HTTP request), on the same machine's clock.

use crate::client::{Client, connect_many, deadline_within};
use crate::options::{CommonArgs, SetupArgs, run_id};
use crate::report::{Report, histogram, latency_json, latency_text};
use herald_mqtt::{Packet, PubAck, QoS};
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Arguments of the `devices` scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct DevicesArgs {
    #[command(flatten)]
    #[serde(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    setup: SetupArgs,
    /// Devices to connect; client ids `{prefix}-d{index}`.
    #[arg(long, default_value_t = 1000)]
    devices: u32,
    /// Messages each device waits for.
    #[arg(long, default_value_t = 1)]
    expect: u32,
    /// Seconds to wait for them once every device is subscribed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    wait: u64,
    /// A file created once every device is subscribed.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// A file to write every delivery's `ordinal latency_us` to (ordinal:
    /// 0 for a device's first message, 1 for its second, …), for exact
    /// percentiles over several processes.
    #[arg(long)]
    latencies_file: Option<std::path::PathBuf>,
}

/// Runs the `devices` scenario.
pub(crate) fn run(args: DevicesArgs) -> anyhow::Result<Report> {
    let limit = args.setup.connect_timeout() + Duration::from_secs(args.wait + 15);
    args.common.run_bounded("devices", args.devices as usize, limit, run_async(&args))
}

/// What one device saw: arrival latencies in microseconds.
struct Seen {
    latencies: Vec<u64>,
}

async fn run_async(args: &DevicesArgs) -> anyhow::Result<Report> {
    let _ = run_id();
    let clients = connect_devices(&args.common, &args.setup, args.devices, "d").await?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n")?;
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(args.wait);
    let mut tasks = JoinSet::new();
    for client in clients {
        tasks.spawn(listen(client, args.expect, until));
    }
    let mut by_message: Vec<hdrhistogram::Histogram<u64>> = (0..args.expect).map(|_| histogram()).collect();
    let (mut complete, mut received) = (0u64, 0u64);
    let mut lines = String::new();
    // Devices stay connected until every one has what it expects: their
    // leaving is not the server's work per push, and would compete with
    // the deliveries still going.
    let mut done = Vec::with_capacity(args.devices as usize);
    while let Some(joined) = tasks.join_next().await {
        let (client, seen) = joined?;
        done.push(client);
        received += seen.latencies.len() as u64;
        complete += u64::from(seen.latencies.len() as u32 >= args.expect);
        for (ordinal, latency) in seen.latencies.into_iter().enumerate() {
            if let Some(h) = by_message.get_mut(ordinal) {
                h.saturating_record(latency.max(1));
            }
            if args.latencies_file.is_some() {
                lines.push_str(&format!("{ordinal} {latency}\n"));
            }
        }
    }
    done.into_iter().for_each(Client::abort);
    if let Some(path) = &args.latencies_file {
        std::fs::write(path, lines)?;
    }
    let results = json!({
        "devices": args.devices,
        "complete": complete,
        "received": received,
        "latency_us_by_message": by_message.iter().map(latency_json).collect::<Vec<_>>(),
    });
    let summary = format!(
        "devices: {complete}/{} got all {} message(s), {received} deliveries; latency from the HTTP send \
         p50/p99/p99.9/max by message: {}",
        args.devices,
        args.expect,
        by_message.iter().map(latency_text).collect::<Vec<_>>().join("; "),
    );
    Ok(Report::new("devices", args, results, summary))
}

/// Connects `count` devices `{prefix}-{role}{index}`, each subscribed to
/// `$push/{client id}` at QoS 1, by `--connect-timeout`.
pub(crate) async fn connect_devices(
    common: &CommonArgs,
    setup: &SetupArgs,
    count: u32,
    role: &str,
) -> anyhow::Result<Vec<Client>> {
    let deadline = Instant::now() + setup.connect_timeout();
    connect_many(count, setup.parallel, |index| {
        let options = common.client(index, format_args!("{role}{index}"));
        async move {
            let topic = format!("$push/{}", options.client_id);
            let mut client = Client::connect(&options, deadline).await?;
            client.subscribe(&[topic], QoS::AtLeastOnce, deadline).await?;
            Ok(client)
        }
    })
    .await
}

/// Waits for `expect` pushes (acknowledging each) until `until`; returns
/// the client, still connected, and what it saw.
async fn listen(mut client: Client, expect: u32, until: Instant) -> (Client, Seen) {
    let mut seen = Seen { latencies: Vec::with_capacity(expect as usize) };
    while (seen.latencies.len() as u32) < expect {
        let Ok(packet) = client.receive(deadline_within(until, Duration::from_secs(3600)), "a push").await
        else {
            break;
        };
        if let Packet::Publish(publish) = packet {
            if let Some(id) = publish.packet_id {
                let _ = client.send(&Packet::PubAck(PubAck::new(id)));
                let _ = client.pump().await;
            }
            // The id rides in the v5 user property `message-id`, and in
            // the envelope (`"id":"…"`) for 3.1.1 devices.
            let id = publish.properties.user_properties().find(|(k, _)| *k == "message-id").map(|(_, id)| id);
            let from_payload = || {
                let text = std::str::from_utf8(&publish.payload).ok()?;
                let start = text.find("\"id\":\"")? + 6;
                text.get(start..start + 32)
            };
            let sent_ms = id.or_else(from_payload).and_then(|id| u64::from_str_radix(id.get(..12)?, 16).ok());
            seen.latencies.push(sent_ms.map_or(0, |ms| now_micros().saturating_sub(ms * 1000)));
        }
    }
    (client, seen)
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
