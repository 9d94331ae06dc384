// Hot path: every message of a run is generated and encoded here, and every
// acknowledgement applied. No allocation but the payload itself.

//! A publisher task: sends its messages at a paced rate within its in-flight
//! window, applies PUBACK / PUBREC → PUBREL → PUBCOMP, and records publish →
//! acknowledgement latency.

use crate::client::{Client, ClientError, check_control};
use crate::flow::{AckOutcome, Outbound};
use crate::payload::{Stamp, elapsed_us, now_ns};
use crate::subscriber::Shared;
use herald_mqtt::{ByteString, Packet, Publish, QoS};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep_until};

/// A publisher stops generating while this many bytes wait to be written:
/// the socket, not a queue, absorbs a broker that reads slowly.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// What one publisher does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The publisher's index, carried in its payloads.
    pub(crate) index: u32,
    /// Where it publishes.
    pub(crate) topic: ByteString,
    /// At which QoS.
    pub(crate) qos: QoS,
    /// Payload bytes.
    pub(crate) payload: usize,
    /// Seconds between two messages of this publisher; `None`: unpaced.
    pub(crate) interval: Option<f64>,
    /// This publisher's first message is due `offset` intervals after the
    /// start, so publishers do not all send at the same instant.
    pub(crate) offset: f64,
    /// Messages to send at most.
    pub(crate) count: u32,
    /// When the first message is due.
    pub(crate) start: Instant,
    /// When sending stops, whatever is left of `count`.
    pub(crate) end: Instant,
    /// When waiting for acknowledgements stops.
    pub(crate) drain_deadline: Instant,
    /// QoS 1/2 publishes in flight at most.
    pub(crate) window: usize,
}

impl Plan {
    /// Returns when message `sequence` is due.
    fn due(&self, sequence: u32) -> Instant {
        match self.interval {
            Some(interval) => {
                self.start + Duration::from_secs_f64((f64::from(sequence) + self.offset) * interval)
            }
            None => self.start,
        }
    }
}

/// What one publisher did, or several added up.
#[derive(Debug, Default)]
pub(crate) struct PublisherStats {
    /// Messages sent (sequence numbers `0..sent`).
    pub(crate) sent: u32,
    /// PUBACKs (QoS 1) or PUBRECs (QoS 2) that accepted a message.
    pub(crate) accepted: u64,
    /// QoS 2 flows finished with PUBCOMP.
    pub(crate) completed: u64,
    /// Acknowledgements that refused a message.
    pub(crate) rejected: u64,
    /// Publishes still unacknowledged at the end.
    pub(crate) unacknowledged: u64,
    /// When the last acceptance arrived, on the payload clock.
    pub(crate) last_ack_ns: u64,
    /// What ended the publisher early, if anything.
    pub(crate) error: Option<String>,
}

impl PublisherStats {
    /// Returns the publish counts as report fields; acknowledgement counts
    /// are `null` at a QoS that has none.
    pub(crate) fn json(stats: &[PublisherStats], qos: QoS) -> Value {
        let sum = |count: fn(&PublisherStats) -> u64| stats.iter().map(count).sum::<u64>();
        json!({
            "published": sum(|stats| u64::from(stats.sent)),
            "publish_acked": (qos != QoS::AtMostOnce).then(|| sum(|stats| stats.accepted)),
            "publish_completed": (qos == QoS::ExactlyOnce).then(|| sum(|stats| stats.completed)),
            "publish_rejected": sum(|stats| stats.rejected),
            "publish_unacked": sum(|stats| stats.unacknowledged),
        })
    }
}

/// Publishes per `plan` until its end or count, then waits (until the
/// drain deadline) for the acknowledgements still due and disconnects.
pub(crate) async fn publish(mut client: Client, plan: Plan, shared: Arc<Shared>) -> PublisherStats {
    let mut stats = PublisherStats::default();
    let mut outbound = Outbound::new(plan.window);
    let result = publish_loop(&mut client, &plan, &shared, &mut outbound, &mut stats).await;
    stats.unacknowledged = outbound.in_flight() as u64;
    let result = match result {
        Ok(()) => client.leave().await,
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        stats.error = Some(format!("publisher {}: {error}", plan.index));
    }
    stats
}

async fn publish_loop(
    client: &mut Client,
    plan: &Plan,
    shared: &Shared,
    outbound: &mut Outbound,
    stats: &mut PublisherStats,
) -> Result<(), ClientError> {
    let windowed = plan.qos != QoS::AtMostOnce;
    let can_send = |outbound: &Outbound, client: &Client| {
        (!windowed || outbound.has_room()) && client.pending_write() < WRITE_HIGH_WATER
    };
    loop {
        let now = Instant::now();
        let sending = now < plan.end && stats.sent < plan.count;
        if sending {
            while can_send(outbound, client) && stats.sent < plan.count && plan.due(stats.sent) <= now {
                send_one(client, plan, outbound, stats.sent)?;
                stats.sent += 1;
            }
        } else if outbound.in_flight() == 0 || now >= plan.drain_deadline {
            return Ok(());
        }
        let wake = if !sending {
            plan.drain_deadline
        } else if can_send(outbound, client) {
            plan.due(stats.sent).min(plan.end)
        } else {
            plan.end
        };
        tokio::select! {
            pumped = client.pump() => {
                pumped?;
                on_acknowledgements(client, plan, shared, outbound, stats)?;
            }
            () = sleep_until(wake) => {}
        }
    }
}

/// Encodes message `sequence` of `plan` into the client's write buffer.
fn send_one(
    client: &mut Client,
    plan: &Plan,
    outbound: &mut Outbound,
    sequence: u32,
) -> Result<(), ClientError> {
    let sent_ns = now_ns();
    let payload = Stamp { publisher: plan.index, sequence, sent_ns }.encode(plan.payload);
    let mut publish = Publish::new(plan.topic.clone(), payload);
    publish.qos = plan.qos;
    if plan.qos != QoS::AtMostOnce {
        publish.packet_id = outbound.start(sent_ns);
        debug_assert!(publish.packet_id.is_some(), "sent with a full window");
    }
    client.send(&Packet::Publish(publish))
}

/// Applies every acknowledgement in the client's read buffer.
fn on_acknowledgements(
    client: &mut Client,
    plan: &Plan,
    shared: &Shared,
    outbound: &mut Outbound,
    stats: &mut PublisherStats,
) -> Result<(), ClientError> {
    let now = now_ns();
    let mut histogram = None;
    while let Some(packet) = client.decode()? {
        match outbound.on_ack(&packet) {
            AckOutcome::Accepted { sent_ns, reply } => {
                stats.accepted += 1;
                stats.last_ack_ns = now;
                histogram
                    .get_or_insert_with(|| shared.ack_latency.lock(plan.index as usize))
                    .saturating_record(elapsed_us(sent_ns, now));
                if let Some(reply) = reply {
                    client.send(&reply)?;
                }
            }
            AckOutcome::Resend(reply) => client.send(&reply)?,
            AckOutcome::Completed => stats.completed += 1,
            AckOutcome::Rejected(_) => stats.rejected += 1,
            AckOutcome::Ignored => check_control(&packet)?,
        }
    }
    Ok(())
}
