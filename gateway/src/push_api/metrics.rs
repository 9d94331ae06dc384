//! What the push API counts for `/metrics`: requests by operation and
//! status, their latency as a histogram per operation, and rate-limit
//! refusals. Recorded by the guard around every app endpoint.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One operation's latency histogram.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Requests per bucket (not cumulative); the last counts those above
    /// every bound.
    pub buckets: [u64; BUCKETS.len() + 1],
    /// Seconds, summed.
    pub sum: f64,
    /// Requests.
    pub count: u64,
}

/// The push API's request metrics.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Latency>>,
    /// Requests refused with 429 for an app past its rate.
    pub rate_limited: AtomicU64,
}

impl ApiMetrics {
    /// Counts a request of `operation` answered with `status` after
    /// `elapsed`.
    pub(crate) fn record(&self, operation: &'static str, status: u16, elapsed: Duration) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry((operation, status)).or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let histogram = latency.entry(operation).or_default();
        let bucket = BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(BUCKETS.len());
        histogram.buckets[bucket] += 1;
        histogram.sum += seconds;
        histogram.count += 1;
        if status == 429 {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests by operation and status.
    pub fn requests(&self) -> Vec<((&'static str, u16), u64)> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Latency per operation.
    pub fn latency(&self) -> Vec<(&'static str, Latency)> {
        self.latency.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_in_their_bucket_and_429s_are_counted() {
        let metrics = ApiMetrics::default();
        metrics.record("sendMessage", 202, Duration::from_millis(3));
        metrics.record("sendMessage", 202, Duration::from_millis(30));
        metrics.record("sendMessage", 429, Duration::from_secs(20));
        assert_eq!(metrics.requests(), [(("sendMessage", 202), 2), (("sendMessage", 429), 1)]);
        let latency = &metrics.latency()[0].1;
        assert_eq!((latency.buckets[0], latency.buckets[3], latency.buckets[BUCKETS.len()]), (1, 1, 1));
        assert_eq!(latency.count, 3);
        assert_eq!(metrics.rate_limited.load(Ordering::Relaxed), 1);
    }
}
