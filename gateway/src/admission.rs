//! Admission of client requests to the router: at most
//! [`MAX_AWAITING_REPLIES`] publishes, subscribes and unsubscribes of this
//! gateway's clients wait for the router's replies at once. Past it a
//! connection waits before sending another (it stops reading its socket,
//! so TCP pushes back on its client), instead of the router's replies
//! overflowing this gateway's downlink (which the router would have to
//! answer by letting the gateway go). A reply, or a request the link drops
//! (of a connection gone, or given up), makes room.
//!
//! Counted by kind, exactly: what connections send (`Publish` with a
//! request, `Subscribe`, `Unsubscribe`) against their replies. Should the
//! count ever drift up, a connection waits at most [`MAX_WAIT`], so a
//! drift slows, never stops, the gateway.

use herald_proto::seam::{Downlink, Uplink};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Client requests waiting for the router's replies at most: a quarter of
/// the downlink's capacity, so their replies fit beside the deliveries the
/// router lets into it (it drops deliveries past half of it).
pub(crate) const MAX_AWAITING_REPLIES: usize = 2048;
/// The longest a connection waits for room.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The requests waiting for replies.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    awaiting: AtomicUsize,
    room: Notify,
}

/// Whether `item` is a client request this module counts.
pub(crate) fn counted_request(item: &Uplink) -> bool {
    match item {
        Uplink::Publish(publish) => publish.request.is_some(),
        Uplink::Subscribe { .. } | Uplink::Unsubscribe { .. } => true,
        _ => false,
    }
}

/// Whether `reply` answers a request this module counts.
pub(crate) fn counted_reply(reply: &Downlink) -> bool {
    matches!(reply, Downlink::Published { .. } | Downlink::Subscribed { .. } | Downlink::Unsubscribed { .. })
}

impl Admission {
    /// Waits until a request may be sent, and counts it.
    pub(crate) async fn admit(&self) {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let room = self.room.notified();
            let awaiting = self.awaiting.load(Ordering::Acquire);
            if awaiting < MAX_AWAITING_REPLIES
                && self
                    .awaiting
                    .compare_exchange(awaiting, awaiting + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return;
            }
            if awaiting < MAX_AWAITING_REPLIES {
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
        let _ =
            self.awaiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| Some(a.saturating_sub(n)));
        self.room.notify_waiters();
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
    async fn past_the_limit_a_request_waits_for_a_reply_and_at_most_a_second() {
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
        // No reply ever comes: the wait ends after a second all the same.
        let started = tokio::time::Instant::now();
        admission.admit().await;
        assert_eq!(started.elapsed(), MAX_WAIT);
        admission.done(usize::MAX);
        assert_eq!(admission.awaiting(), 0, "never below zero");
    }
}
