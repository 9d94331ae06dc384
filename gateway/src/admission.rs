//! Admission of client requests to the router: at most
//! [`MAX_AWAITING_REPLIES`] claims, releases, publishes, subscribes and
//! unsubscribes of this gateway's clients wait for the router's replies at
//! once (a burst of CONNECTs, or of connections closing, waits its turn
//! like a burst of publishes). Past it a
//! connection waits before sending another (it stops reading its socket,
//! so TCP pushes back on its client), instead of the router's replies
//! overflowing this gateway's downlink (which the router would have to
//! answer by letting the gateway go). A reply, or a request the link drops
//! (of a connection gone, or given up), makes room.
//!
//! Counted by kind, exactly: what connections send (`Claim`, `Release`,
//! `Publish` with a request, `Subscribe`, `Unsubscribe`) against their
//! replies. Should the
//! count ever drift up, a connection waits at most [`MAX_WAIT`], so a
//! drift slows, never stops, the gateway.
//!
//! The same wait applies while this gateway's own downlink holds more than
//! a quarter of its capacity (deliveries it has not handed to connections
//! yet): publishers then slow down before the router, at half, has to drop
//! deliveries for want of room.

use herald_proto::seam::{Downlink, Uplink};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Client requests waiting for the router's replies at most: an eighth of
/// the downlink's capacity, so that their replies, and the deliveries each
/// publish makes, fit in the half the router keeps for them (it drops
/// deliveries past half of it).
pub(crate) const MAX_AWAITING_REPLIES: usize = 1024;
/// The longest a connection waits for room: past it the request goes all
/// the same. Only a drift of the count (which the exact accounting should
/// never have) would make anyone wait this long: a router slow to answer
/// holds replies back, not the other way round.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// The requests waiting for replies.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    awaiting: AtomicUsize,
    /// Whether the downlink holds more than a quarter of its capacity.
    backlogged: std::sync::atomic::AtomicBool,
    room: Notify,
}

/// Whether `item` is a client request this module counts.
pub(crate) fn counted_request(item: &Uplink) -> bool {
    match item {
        Uplink::Publish(publish) => publish.request.is_some(),
        Uplink::Claim(_) | Uplink::Release(_) | Uplink::Subscribe { .. } | Uplink::Unsubscribe { .. } => true,
        _ => false,
    }
}

/// Whether `reply` answers a request this module counts.
pub(crate) fn counted_reply(reply: &Downlink) -> bool {
    matches!(
        reply,
        Downlink::Claimed { .. }
            | Downlink::Released { .. }
            | Downlink::Published { .. }
            | Downlink::Subscribed { .. }
            | Downlink::Unsubscribed { .. }
    )
}

impl Admission {
    /// Waits until a request may be sent, and counts it.
    pub(crate) async fn admit(&self) {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let room = self.room.notified();
            let awaiting = self.awaiting.load(Ordering::Acquire);
            let open = awaiting < MAX_AWAITING_REPLIES && !self.backlogged.load(Ordering::Acquire);
            if open
                && self
                    .awaiting
                    .compare_exchange(awaiting, awaiting + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return;
            }
            if open {
                continue;
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                self.awaiting.fetch_add(1, Ordering::AcqRel);
                return;
            }
        }
    }

    /// `n` counted requests are answered or dropped.
    pub(crate) fn done(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before =
            self.awaiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| Some(a.saturating_sub(n)));
        // Below the limit nobody waits for a reply: no wake-up per reply.
        if before.unwrap_or(0) >= MAX_AWAITING_REPLIES {
            self.room.notify_waiters();
        }
    }

    /// Notes how many items wait in the downlink of `capacity`.
    pub(crate) fn set_backlog(&self, waiting: usize, capacity: usize) {
        let backlogged = waiting > capacity / 4;
        if self.backlogged.swap(backlogged, Ordering::AcqRel) && !backlogged {
            self.room.notify_waiters();
        }
    }

    /// Requests waiting for replies now.
    pub(crate) fn awaiting(&self) -> usize {
        self.awaiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_a_request_waits_for_a_reply_and_at_most_max_wait() {
        let admission = std::sync::Arc::new(Admission::default());
        for _ in 0..MAX_AWAITING_REPLIES {
            admission.admit().await;
        }
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "no room yet");
        admission.done(1);
        waiting.await.expect("admitted once a reply came");
        assert_eq!(admission.awaiting(), MAX_AWAITING_REPLIES);
        // No reply ever comes: the wait ends after MAX_WAIT all the same.
        let started = tokio::time::Instant::now();
        admission.admit().await;
        assert_eq!(started.elapsed(), MAX_WAIT);
        admission.done(usize::MAX);
        assert_eq!(admission.awaiting(), 0, "never below zero");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlogged_downlink_holds_requests_until_it_drains() {
        let admission = std::sync::Arc::new(Admission::default());
        admission.set_backlog(3000, 8192);
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "more than a quarter waits in the downlink");
        admission.set_backlog(100, 8192);
        waiting.await.expect("admitted once the downlink drained");
        assert_eq!(admission.awaiting(), 1);
    }
}
