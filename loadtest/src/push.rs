//! The `push` scenario: N push-API devices connected over MQTT, each
//! subscribed to its own topic `$push/{client id}`, and an app backend
//! sending to them through Herald's HTTP push API, one request per device:
//! by client id (Herald's push-to-one-device path, through the session
//! registry), by alias (each device first given the alias `u{index}`) or by
//! tag (each device first given the tag `t{index}`: a tag expression
//! selecting one device from the directory).
//! Reports pushes per second, the HTTP request latency, and each
//! delivery's latency from the moment its request was sent.

use crate::client::{Client, deadline_within};
use crate::http::HttpClient;
use crate::options::{CommonArgs, SetupArgs, check_target};
use crate::report::{Report, histogram, latency_json, latency_text, per_second};
use herald_mqtt::{Packet, PubAck};
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Arguments of the `push` scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct PushArgs {
    #[command(flatten)]
    #[serde(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    #[serde(flatten)]
    setup: SetupArgs,
    /// The push API's address (loopback only).
    #[arg(long)]
    http: SocketAddr,
    /// The app the devices belong to.
    #[arg(long, default_value = "default")]
    app: String,
    /// An API key of the app (send and devices scopes).
    #[arg(long)]
    key: String,
    /// Devices to connect and push to, one request each.
    #[arg(long, default_value_t = 1000)]
    devices: u32,
    /// How each request names its device: `device` (by client id), `alias`
    /// or `tag`.
    #[arg(long, default_value = "device", value_parser = ["device", "alias", "tag"])]
    to: String,
    /// Requests per second at most.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: u32,
    /// HTTP connections sending at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// Seconds to wait for the last deliveries once every request is answered.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    drain: u64,
}

/// Runs the `push` scenario.
pub(crate) fn run(args: PushArgs) -> anyhow::Result<Report> {
    check_target(args.http)?;
    let seconds = u64::from(args.devices / args.rate) + args.drain + 30;
    let limit = args.setup.connect_timeout() + Duration::from_secs(seconds);
    let sockets = args.devices as usize + args.concurrency as usize;
    args.common.run_bounded("push", sockets, limit, run_async(&args))
}

/// When each device's request was sent (`None` until it is).
type SentAt = Arc<Mutex<Vec<Option<Instant>>>>;

async fn run_async(args: &PushArgs) -> anyhow::Result<Report> {
    let clients = crate::devices::connect_devices(&args.common, &args.setup, args.devices, "p").await?;
    let ids: Arc<[String]> = (0..args.devices).map(|i| format!("{}-p{i}", args.common.prefix)).collect();
    if args.to != "device" {
        name_devices(args, &ids).await?;
    }
    let sent_at: SentAt = Arc::new(Mutex::new(vec![None; args.devices as usize]));
    let until = Instant::now() + Duration::from_secs(u64::from(args.devices / args.rate) + args.drain + 10);
    let mut listeners = JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        listeners.spawn(listen(client, index, sent_at.clone(), until));
    }

    let server_before = crate::proc::sample(&args.common.server_pid);
    let started = Instant::now();
    let (http_latency, failures) = send_all(args, &ids, &sent_at).await?;
    let send_seconds = started.elapsed().as_secs_f64();
    let mut delivery = histogram();
    let (mut received, mut last) = (0u64, started);
    // Devices stay connected until every push is in (their leaving is not
    // the server's work per push).
    let mut devices = Vec::with_capacity(args.devices as usize);
    while let Some(joined) = listeners.join_next().await {
        let (client, got) = joined?;
        devices.push(client);
        if let Some((latency, at)) = got {
            received += 1;
            delivery.saturating_record(latency.max(1));
            last = last.max(at);
        }
    }
    let seconds = last.duration_since(started).as_secs_f64();
    let server_after = crate::proc::sample(&args.common.server_pid);
    devices.into_iter().for_each(Client::abort);
    let results = json!({
        "server": crate::proc::usage_json(server_before, server_after, received, "push"),
        "devices": args.devices,
        "to": args.to,
        "requests_failed": failures,
        "received": received,
        "lost": u64::from(args.devices).saturating_sub(received + failures),
        "send_seconds": send_seconds,
        "requests_per_second": per_second(u64::from(args.devices), send_seconds),
        "deliveries_per_second": per_second(received, seconds),
        "http_latency_us": latency_json(&http_latency),
        "delivery_latency_us": latency_json(&delivery),
    });
    let summary = format!(
        "push: {} devices by {}, {} requests in {send_seconds:.2} s ({:.0}/s, {failures} failed); {received} \
         delivered ({:.0}/s); HTTP {}; request→delivery {}",
        args.devices,
        args.to,
        args.devices,
        per_second(u64::from(args.devices), send_seconds),
        per_second(received, seconds),
        latency_text(&http_latency),
        latency_text(&delivery),
    );
    Ok(Report::new("push", args, results, summary))
}

/// Gives device `i` the alias `u{i}` (`--to alias`) or the tag `t{i}`.
async fn name_devices(args: &PushArgs, ids: &[String]) -> anyhow::Result<()> {
    let mut http = HttpClient::connect(args.http).await?;
    for (index, id) in ids.iter().enumerate() {
        let path = format!("/v1/apps/{}/devices/{id}", args.app);
        let body = match args.to.as_str() {
            "alias" => json!({ "alias": format!("u{index}"), "tags": [] }),
            _ => json!({ "tags": [format!("t{index}")] }),
        }
        .to_string();
        let status = http.request("PUT", &path, &args.key, &body).await?;
        anyhow::ensure!(status == 200, "PUT {path}: HTTP {status}");
    }
    Ok(())
}

/// Sends one request per device, `--concurrency` at a time, at `--rate`.
/// Returns the request latencies and how many failed.
async fn send_all(
    args: &PushArgs,
    ids: &Arc<[String]>,
    sent_at: &SentAt,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, u64)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let interval = Duration::from_secs(1) / args.rate;
    let mut senders = JoinSet::new();
    for _ in 0..args.concurrency {
        let (next, ids, sent_at, args) = (next.clone(), ids.clone(), sent_at.clone(), args.clone());
        senders.spawn(async move {
            let mut http = HttpClient::connect(args.http).await?;
            let (mut latency, mut failed) = (histogram(), 0u64);
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(index) else { break };
                tokio::time::sleep_until(start + interval * index as u32).await;
                let audience = match args.to.as_str() {
                    "alias" => json!({ "aliases": [format!("u{index}")] }),
                    "tag" => json!({ "tags": format!("t{index}") }),
                    _ => json!({ "device_ids": [id] }),
                };
                let body = json!({ "audience": audience, "content": { "data": { "n": index } } }).to_string();
                let path = format!("/v1/apps/{}/messages", args.app);
                let sent = Instant::now();
                lock(&sent_at)[index] = Some(sent);
                match http.request("POST", &path, &args.key, &body).await {
                    Ok(202) => {
                        latency.saturating_record((sent.elapsed().as_micros() as u64).max(1));
                    }
                    _ => {
                        failed += 1;
                        lock(&sent_at)[index] = None;
                        http = HttpClient::connect(args.http).await?;
                    }
                }
            }
            anyhow::Ok((latency, failed))
        });
    }
    let (mut latency, mut failed) = (histogram(), 0);
    while let Some(joined) = senders.join_next().await {
        let (part, part_failed) = joined??;
        latency.add(&part).map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
        failed += part_failed;
    }
    Ok((latency, failed))
}

fn lock(sent_at: &SentAt) -> std::sync::MutexGuard<'_, Vec<Option<Instant>>> {
    sent_at.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for device `index`'s push (acknowledging it) until `until`;
/// returns the client, and the push's latency from its request in
/// microseconds and when it came.
async fn listen(
    mut client: Client,
    index: usize,
    sent_at: SentAt,
    until: Instant,
) -> (Client, Option<(u64, Instant)>) {
    loop {
        let Ok(packet) = client.receive(deadline_within(until, Duration::from_secs(3600)), "a push").await
        else {
            return (client, None);
        };
        if let Packet::Publish(publish) = packet {
            let arrived = Instant::now();
            if let Some(id) = publish.packet_id {
                let _ = client.send(&Packet::PubAck(PubAck::new(id)));
                let _ = client.flush(deadline_within(until, Duration::from_secs(5))).await;
            }
            let latency =
                lock(&sent_at)[index].map(|sent| (arrived.duration_since(sent).as_micros() as u64, arrived));
            return (client, latency);
        }
    }
}
