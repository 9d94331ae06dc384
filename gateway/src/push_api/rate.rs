//! Per-app request rates of the push API: a token bucket per app on each
//! gateway, refilled continuously, holding one second of requests. Every
//! answer to an app's request says where it stands (`RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset`); past the rate, 429 with
//! `Retry-After`. Pure: the caller passes the time in.

use herald_core::AppId;
use std::collections::HashMap;

/// Requests per second per app and gateway when none is configured.
pub const DEFAULT_RATE: u32 = 100;

/// What the limiter said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The app's rate (requests per second).
    pub limit: u32,
    /// Whole requests left in the bucket after this one.
    pub remaining: u32,
    /// Seconds until the bucket is full again (allowed), or until one
    /// request fits (refused): at least 1.
    pub reset_seconds: u32,
}

/// A token bucket holding one second of its rate, refilled continuously;
/// full the first time it is used. Every rate limit of the gateway (API
/// requests per app, publishes per client, CONNECTs per gateway) is one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    tokens: f64,
    at_ms: Option<u64>,
}

impl Bucket {
    /// Refills the bucket of `rate` tokens a second for the time since it
    /// was last used; returns the tokens in it now.
    pub fn refill(&mut self, rate: f64, now_ms: u64) -> f64 {
        let elapsed = self.at_ms.map_or(f64::INFINITY, |at| now_ms.saturating_sub(at) as f64 / 1000.0);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at_ms = Some(now_ms);
        self.tokens
    }

    /// Takes `amount` tokens out (after [`Bucket::refill`] said they are there).
    pub fn spend(&mut self, amount: f64) {
        self.tokens -= amount;
    }
}

/// The buckets of every app.
#[derive(Debug, Default)]
pub struct Limiter {
    default_rate: u32,
    rates: HashMap<AppId, u32>,
    buckets: HashMap<AppId, Bucket>,
}

impl Limiter {
    /// A limiter with `default_rate` for apps not in `rates`.
    pub fn new(default_rate: u32, rates: HashMap<AppId, u32>) -> Limiter {
        Limiter { default_rate, rates, buckets: HashMap::new() }
    }

    /// Takes one request of `app` at `now_ms`.
    pub fn take(&mut self, app: &AppId, now_ms: u64) -> Verdict {
        let limit = self.rates.get(app).copied().unwrap_or(self.default_rate).max(1);
        let rate = f64::from(limit);
        let bucket = self.buckets.entry(app.clone()).or_default();
        let allowed = bucket.refill(rate, now_ms) >= 1.0;
        if allowed {
            bucket.spend(1.0);
        }
        let missing = if allowed { rate - bucket.tokens } else { 1.0 - bucket.tokens };
        Verdict {
            allowed,
            limit,
            remaining: bucket.tokens.floor() as u32,
            reset_seconds: ((missing / rate).ceil() as u32).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_one_second_and_refills_at_the_rate() {
        let app = AppId::new("shop").expect("app");
        let mut limiter = Limiter::new(DEFAULT_RATE, [(app.clone(), 3)].into_iter().collect());
        let verdicts: Vec<(bool, u32)> =
            (0..4).map(|_| limiter.take(&app, 1_000)).map(|v| (v.allowed, v.remaining)).collect();
        assert_eq!(verdicts, [(true, 2), (true, 1), (true, 0), (false, 0)]);
        let refused = limiter.take(&app, 1_000);
        assert_eq!((refused.limit, refused.reset_seconds), (3, 1));
        // A third of a second later, one request fits again.
        assert!(limiter.take(&app, 1_334).allowed);
        assert!(!limiter.take(&app, 1_334).allowed);
        // Other apps have their own bucket at the default rate.
        let other = limiter.take(&AppId::new("other").expect("app"), 1_334);
        assert_eq!((other.allowed, other.limit, other.remaining), (true, DEFAULT_RATE, DEFAULT_RATE - 1));
    }
}
