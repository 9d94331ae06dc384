// Hot path: every delivery of a run is decoded, acknowledged and recorded
// here. One clock read and at most one lock per batch of packets.

//! A subscriber task: receives until told to stop, answers QoS 1 with
//! PUBACK and QoS 2 with PUBREC / PUBCOMP, and records every delivery
//! (first copies, duplicates, end-to-end latency).

use crate::client::{Client, ClientError, check_control};
use crate::delivery::{Arrival, Deliveries};
use crate::flow::Inbound;
use crate::payload::{Stamp, elapsed_us, now_ns};
use crate::report::Shards;
use herald_mqtt::Packet;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

/// The drain ends early after this long without a new delivery.
const QUIET: Duration = Duration::from_secs(2);

/// What the tasks of a run share: histograms, sharded and locked once per
/// batch, and one counter.
#[derive(Debug)]
pub(crate) struct Shared {
    /// End-to-end latency of first copies, µs.
    pub(crate) latency: Shards,
    /// Publish → PUBACK (QoS 1) or PUBREC (QoS 2) latency, µs.
    pub(crate) ack_latency: Shards,
    /// First copies received by all subscribers together.
    pub(crate) received: AtomicU64,
}

impl Shared {
    /// Returns empty tallies for a generator of `threads` threads.
    pub(crate) fn new(threads: u16) -> Shared {
        let shards = usize::from(threads) * 4;
        Shared { latency: Shards::new(shards), ack_latency: Shards::new(shards), received: AtomicU64::new(0) }
    }

    /// Waits until `expected` first copies arrived, or none arrived for
    /// [`QUIET`], or `deadline` passed.
    pub(crate) async fn wait_for_deliveries(&self, expected: u64, deadline: Instant) {
        let mut last = self.received.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        loop {
            let now = Instant::now();
            let count = self.received.load(Ordering::Relaxed);
            if count != last {
                last = count;
                last_change = now;
            }
            if count >= expected || now >= deadline || now - last_change >= QUIET {
                return;
            }
            sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What one subscriber did.
#[derive(Debug)]
pub(crate) struct SubscriberStats {
    /// What it received.
    pub(crate) deliveries: Deliveries,
    /// What ended it early, if anything.
    pub(crate) error: Option<String>,
}

/// Receives messages from `publishers` until `stop` turns, then
/// disconnects.
pub(crate) async fn receive(
    mut client: Client,
    index: u32,
    publishers: Range<u32>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberStats {
    let mut deliveries = Deliveries::new(publishers);
    let mut inbound = Inbound::default();
    // Packets may have come in with the CONNACK (a resumed session's queue).
    let result = match on_deliveries(&mut client, index, &shared, &mut inbound, &mut deliveries) {
        Err(error) => Err(error),
        Ok(()) => loop {
            tokio::select! {
                pumped = client.pump() => {
                    let handled = pumped
                        .and_then(|()| on_deliveries(&mut client, index, &shared, &mut inbound, &mut deliveries));
                    if let Err(error) = handled {
                        break Err(error);
                    }
                }
                _ = stop.changed() => break Ok(()),
            }
        },
    };
    let result = match result {
        Ok(()) => client.leave().await,
        Err(error) => Err(error),
    };
    SubscriberStats { deliveries, error: result.err().map(|error| format!("subscriber {index}: {error}")) }
}

/// Records every delivery in the client's read buffer and queues its
/// acknowledgement.
fn on_deliveries(
    client: &mut Client,
    index: u32,
    shared: &Shared,
    inbound: &mut Inbound,
    deliveries: &mut Deliveries,
) -> Result<(), ClientError> {
    let now = now_ns();
    let mut new = 0;
    let mut histogram = None;
    while let Some(packet) = client.decode()? {
        match packet {
            Packet::Publish(publish) => {
                let received = inbound.on_publish(&publish);
                if let Some(reply) = received.reply {
                    client.send(&reply)?;
                }
                if !received.deliver {
                    deliveries.record_retransmission();
                    continue;
                }
                let stamp = Stamp::decode(&publish.payload);
                if let (Arrival::New, Some(stamp)) = (deliveries.record(stamp, publish.dup, now), stamp) {
                    new += 1;
                    histogram
                        .get_or_insert_with(|| shared.latency.lock(index as usize))
                        .saturating_record(elapsed_us(stamp.sent_ns, now));
                }
            }
            Packet::PubRel(release) => client.send(&inbound.on_release(&release))?,
            other => check_control(&other)?,
        }
    }
    if new > 0 {
        shared.received.fetch_add(new, Ordering::Relaxed);
    }
    Ok(())
}
