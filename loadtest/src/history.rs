//! `history`: clients that ride through faults, and a check of what they
//! saw. N publisher/subscriber pairs, each pair on its own topic; every
//! subscriber holds a persistent session (QoS 1). Publishers send numbered
//! messages one at a time, and on any failure (a refused or lost
//! connection, a PUBACK with an error, no PUBACK in time) connect again,
//! to the next of the targets, and send the same number again; subscribers
//! connect again the same way and resume their sessions.
//!
//! Every acknowledgement and every delivery is written to a log, one line
//! each (`ack P SEQ`, `deliver P SEQ dup=0|1`, `connect CLIENT TARGET
//! present=0|1`, `lost CLIENT REASON`), and [`check`] reads the log back:
//! every acknowledged message reached its subscriber (no acknowledged
//! loss), each subscriber saw its publisher's messages first in the order
//! they were sent (per-publisher order), and no subscriber found its
//! session gone when it came back. Observed, not sampled: the tests that
//! inject faults run it and assert on the check.

use crate::client::{Client, ClientError, ConnectOptions};
pub use crate::history_check::{Outcome, check};
use crate::options::check_target;
use crate::report::Report;
use bytes::Bytes;
use herald_mqtt::{Packet, PubAck, Publish, QoS, ReasonCode};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long one step (a connect, a PUBACK) may take before the client
/// gives up on the connection and connects again.
const STEP: Duration = Duration::from_secs(5);
/// The pause before connecting again.
const PAUSE: Duration = Duration::from_millis(100);
/// Session expiry of the subscribers, seconds.
const SESSION_EXPIRY: u32 = 600;

/// Options of `history`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct HistoryArgs {
    /// The brokers' MQTT addresses (comma-separated, loopback only): a
    /// client that loses its connection tries the next one.
    #[arg(long, value_delimiter = ',', required = true)]
    targets: Vec<SocketAddr>,
    /// Publisher/subscriber pairs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pairs: u32,
    /// Messages each publisher sends.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    messages: u32,
    /// Messages per second each publisher sends at most.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: u32,
    /// Seconds the whole run may take; what is not acknowledged or
    /// delivered by then is reported as such.
    #[arg(long, default_value_t = 120)]
    deadline: u64,
    /// Where the log of acknowledgements and deliveries is written.
    #[arg(long)]
    log: PathBuf,
    /// Client id prefix.
    #[arg(long, default_value = "hist")]
    prefix: String,
}

/// What the clients saw, in order.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    /// Per pair: acknowledged sequence numbers.
    acked: Vec<BTreeSet<u32>>,
    /// Per pair: delivered sequence numbers.
    delivered: Vec<BTreeSet<u32>>,
}

type Shared = Arc<Mutex<Log>>;

fn lock(log: &Shared) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

fn note(log: &Shared, line: String) {
    lock(log).lines.push(line);
}

/// Runs the scenario.
pub(crate) fn run(args: HistoryArgs) -> anyhow::Result<Report> {
    for target in &args.targets {
        check_target(*target)?;
    }
    anyhow::ensure!(!args.prefix.is_empty() && args.prefix.len() <= 8, "--prefix: 1 to 8 characters");
    crate::options::check_open_files(args.pairs as usize * 2)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let log: Shared = Arc::new(Mutex::new(Log {
        acked: vec![BTreeSet::new(); args.pairs as usize],
        delivered: vec![BTreeSet::new(); args.pairs as usize],
        ..Log::default()
    }));
    let started = std::time::Instant::now();
    let deadline = Instant::now() + Duration::from_secs(args.deadline);
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for pair in 0..args.pairs {
            tasks.spawn(subscribe(args.clone(), pair, log.clone(), deadline));
        }
        // Subscriptions first: a message published before them has nobody to go to.
        wait_until(deadline, || {
            lock(&log).lines.iter().filter(|l| l.starts_with("subscribed")).count() as u32 >= args.pairs
        })
        .await;
        for pair in 0..args.pairs {
            tasks.spawn(publish(args.clone(), pair, log.clone(), deadline));
        }
        // Done once every acknowledged message has arrived and every publisher finished.
        wait_until(deadline, || {
            let log = lock(&log);
            let published = log.lines.iter().filter(|l| l.starts_with("published ")).count() as u32;
            published >= args.pairs && log.acked.iter().zip(&log.delivered).all(|(a, d)| a.is_subset(d))
        })
        .await;
        // Late duplicates show within a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tasks.abort_all();
    });
    let text = lock(&log).lines.join("\n") + "\n";
    std::fs::File::create(&args.log)?.write_all(text.as_bytes())?;
    let outcome = check(&text, args.pairs, args.messages);
    let seconds = started.elapsed().as_secs_f64();
    let results = json!({
        "acknowledged": outcome.acknowledged,
        "delivered": outcome.delivered,
        "duplicates": outcome.duplicates,
        "unacknowledged": outcome.unacknowledged,
        "reconnects": outcome.reconnects,
        "violations": outcome.violations,
        "seconds": seconds,
    });
    let summary = format!(
        "history: {} pairs × {} messages in {seconds:.1} s: {} acknowledged, {} delivered ({} duplicates), \
         {} never acknowledged, {} reconnects; {} violations{}",
        args.pairs,
        args.messages,
        outcome.acknowledged,
        outcome.delivered,
        outcome.duplicates,
        outcome.unacknowledged,
        outcome.reconnects,
        outcome.violations.len(),
        outcome.violations.first().map(|v| format!(", first: {v}")).unwrap_or_default(),
    );
    Ok(Report::new("history", &args, results, summary))
}

async fn wait_until(deadline: Instant, done: impl Fn() -> bool) {
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn options(args: &HistoryArgs, role: &str, pair: u32, attempt: usize) -> ConnectOptions {
    let target = args.targets[(pair as usize + attempt) % args.targets.len()];
    let source: IpAddr = target.ip();
    let mut options = ConnectOptions::new(
        target,
        source,
        herald_mqtt::ProtocolVersion::V5,
        format!("{}-{role}-{pair}", args.prefix),
    );
    options.keep_alive = 30;
    options
}

/// One publisher: sends 0..messages in order, each until acknowledged.
async fn publish(args: HistoryArgs, pair: u32, log: Shared, deadline: Instant) {
    let topic = format!("{}/h/{pair}", args.prefix);
    let interval = Duration::from_secs(1) / args.rate;
    let mut attempt = 0;
    let mut client: Option<Client> = None;
    let mut seq = 0;
    while seq < args.messages && Instant::now() < deadline {
        let mut connected = match client.take() {
            Some(client) => client,
            None => {
                let options = options(&args, "pub", pair, attempt);
                match Client::connect(&options, Instant::now() + STEP).await {
                    Ok(client) => {
                        note(&log, format!("connect {} {} present=0", options.client_id, options.target));
                        client
                    }
                    Err(error) => {
                        note(&log, format!("lost {} {}", options.client_id, reason(&error)));
                        attempt += 1;
                        tokio::time::sleep(PAUSE).await;
                        continue;
                    }
                }
            }
        };
        let sent = Instant::now();
        match publish_one(&mut connected, &topic, pair, seq).await {
            Ok(()) => {
                {
                    let mut log = lock(&log);
                    log.lines.push(format!("ack {pair} {seq}"));
                    log.acked[pair as usize].insert(seq);
                }
                seq += 1;
                client = Some(connected);
                tokio::time::sleep(interval.saturating_sub(sent.elapsed())).await;
            }
            Err(error) => {
                note(&log, format!("lost {}-pub-{pair} {}", args.prefix, reason(&error)));
                connected.abort();
                attempt += 1;
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
    note(&log, format!("published {pair}"));
    if let Some(client) = client {
        let _ = client.leave().await;
    }
}

/// Sends message `seq` of `pair` at QoS 1 and waits for a successful PUBACK.
async fn publish_one(client: &mut Client, topic: &str, pair: u32, seq: u32) -> Result<(), ClientError> {
    let packet_id = NonZeroU16::new((seq % 65_535 + 1) as u16).expect("non-zero");
    let mut publish = Publish::new(topic, Bytes::from(format!("{pair}:{seq}")));
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = Some(packet_id);
    client.send(&Packet::Publish(publish))?;
    let deadline = Instant::now() + STEP;
    client.flush(deadline).await?;
    loop {
        match client.receive(deadline, "PUBACK").await? {
            Packet::PubAck(ack) if ack.packet_id == packet_id => {
                return if ack.reason_code.is_error() {
                    Err(ClientError::Refused(ack.reason_code))
                } else {
                    Ok(())
                };
            }
            other => crate::client::check_control(&other)?,
        }
    }
}

/// One subscriber: a persistent session on its pair's topic, resumed after
/// every lost connection, acknowledging each delivery.
async fn subscribe(args: HistoryArgs, pair: u32, log: Shared, deadline: Instant) {
    let topic = format!("{}/h/{pair}", args.prefix);
    let mut attempt = 0;
    let mut first = true;
    while Instant::now() < deadline {
        let mut options = options(&args, "sub", pair, attempt);
        options.clean_start = first;
        options.session_expiry = SESSION_EXPIRY;
        options.receive_maximum = 16;
        let mut client = match Client::connect(&options, Instant::now() + STEP).await {
            Ok(client) => client,
            Err(error) => {
                note(&log, format!("lost {} {}", options.client_id, reason(&error)));
                attempt += 1;
                tokio::time::sleep(PAUSE).await;
                continue;
            }
        };
        let present = client.session_present();
        note(&log, format!("connect {} {} present={}", options.client_id, options.target, u8::from(present)));
        if !present {
            if !first {
                note(&log, format!("session-gone {}", options.client_id));
            }
            if let Err(error) =
                client.subscribe(std::slice::from_ref(&topic), QoS::AtLeastOnce, Instant::now() + STEP).await
            {
                note(&log, format!("lost {} {}", options.client_id, reason(&error)));
                client.abort();
                attempt += 1;
                tokio::time::sleep(PAUSE).await;
                continue;
            }
            if first {
                note(&log, format!("subscribed {pair}"));
            }
        }
        first = false;
        let error = receive(&mut client, pair, &log).await;
        note(&log, format!("lost {} {}", options.client_id, reason(&error)));
        client.abort();
        attempt += 1;
        tokio::time::sleep(PAUSE).await;
    }
}

/// Receives and acknowledges deliveries until the connection fails.
async fn receive(client: &mut Client, pair: u32, log: &Shared) -> ClientError {
    loop {
        let packet = match client.receive(Instant::now() + Duration::from_secs(3600), "a delivery").await {
            Ok(packet) => packet,
            Err(error) => return error,
        };
        match packet {
            Packet::Publish(publish) => {
                let text = String::from_utf8_lossy(&publish.payload).into_owned();
                let parsed = text
                    .split_once(':')
                    .and_then(|(p, s)| Some((p.parse::<u32>().ok()?, s.parse::<u32>().ok()?)));
                match parsed {
                    Some((from, seq)) if from == pair => {
                        let mut log = lock(log);
                        log.lines.push(format!("deliver {pair} {seq} dup={}", u8::from(publish.dup)));
                        log.delivered[pair as usize].insert(seq);
                    }
                    _ => note(log, format!("stray {pair} {text}")),
                }
                if let Some(packet_id) = publish.packet_id {
                    let ack = PubAck {
                        packet_id,
                        reason_code: ReasonCode::Success,
                        properties: Default::default(),
                    };
                    if let Err(error) = client.send(&Packet::PubAck(ack)) {
                        return error;
                    }
                }
            }
            other => {
                if let Err(error) = crate::client::check_control(&other) {
                    return error;
                }
            }
        }
    }
}

/// A short name for why a connection ended.
fn reason(error: &ClientError) -> String {
    let text = match error {
        ClientError::Refused(code) | ClientError::Disconnected(code) => format!("0x{:02x}", code.as_u8()),
        ClientError::Timeout(_) => "timeout".to_owned(),
        ClientError::Closed => "closed".to_owned(),
        other => other.to_string(),
    };
    text.replace(' ', "_")
}
