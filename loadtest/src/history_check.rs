//! The check of a `history` log (see `history.rs`): acknowledged loss,
//! per-publisher order, stray deliveries, persistent sessions gone. Pure.

use std::collections::{BTreeMap, BTreeSet};

/// What a history says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Messages acknowledged to their publisher.
    pub acknowledged: u64,
    /// Deliveries, duplicates included.
    pub delivered: u64,
    /// Deliveries of a message already delivered.
    pub duplicates: u64,
    /// Messages never acknowledged (the run ended first).
    pub unacknowledged: u64,
    /// Connections lost or refused.
    pub reconnects: u64,
    /// What must not happen, one line each.
    pub violations: Vec<String>,
}

/// Checks a history of `pairs` pairs of `messages` messages each: every
/// acknowledged message delivered, each pair's first deliveries in sending
/// order, no stray delivery, no subscriber session gone.
pub fn check(history: &str, pairs: u32, messages: u32) -> Outcome {
    let mut outcome = Outcome::default();
    let mut acked: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut seen: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut last_first: BTreeMap<u32, u32> = BTreeMap::new();
    for line in history.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
        match fields[0] {
            "ack" => {
                if let (Some(pair), Some(seq)) = (number(1), number(2)) {
                    outcome.acknowledged += 1;
                    acked.entry(pair).or_default().insert(seq);
                }
            }
            "deliver" => {
                let (Some(pair), Some(seq)) = (number(1), number(2)) else { continue };
                outcome.delivered += 1;
                if !seen.entry(pair).or_default().insert(seq) {
                    outcome.duplicates += 1;
                    continue;
                }
                if let Some(&last) = last_first.get(&pair)
                    && seq < last
                {
                    outcome.violations.push(format!("order: pair {pair} got {seq} first after {last}"));
                }
                last_first.insert(pair, seq.max(last_first.get(&pair).copied().unwrap_or(0)));
            }
            "lost" => outcome.reconnects += 1,
            "stray" => outcome.violations.push(format!("stray delivery: {line}")),
            "session-gone" => outcome.violations.push(format!("persistent session gone: {line}")),
            _ => {}
        }
    }
    for pair in 0..pairs {
        let acked = acked.remove(&pair).unwrap_or_default();
        let seen = seen.remove(&pair).unwrap_or_default();
        outcome.unacknowledged += u64::from(messages) - acked.len() as u64;
        for seq in acked.difference(&seen) {
            outcome.violations.push(format!("acknowledged loss: pair {pair} message {seq}"));
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_history_with_duplicates_and_unacknowledged_ends_passes() {
        let history = "subscribed 0\nack 0 0\ndeliver 0 0 dup=0\ndeliver 0 1 dup=0\nlost hist-pub-0 closed\n\
                       deliver 0 1 dup=1\nack 0 1\nack 0 2\ndeliver 0 2 dup=0\n";
        let outcome = check(history, 1, 4);
        assert_eq!(
            outcome,
            Outcome {
                acknowledged: 3,
                delivered: 4,
                duplicates: 1,
                unacknowledged: 1,
                reconnects: 1,
                violations: Vec::new()
            }
        );
    }

    #[test]
    fn loss_reordering_strays_and_lost_sessions_are_violations() {
        let history = "ack 0 0\nack 0 1\ndeliver 0 1 dup=0\ndeliver 0 0 dup=0\nack 1 0\nstray 1 x\n\
                       session-gone hist-sub-1\n";
        let outcome = check(history, 2, 2);
        assert_eq!(
            outcome.violations,
            [
                "order: pair 0 got 0 first after 1",
                "stray delivery: stray 1 x",
                "persistent session gone: session-gone hist-sub-1",
                "acknowledged loss: pair 1 message 0",
            ]
        );
    }
}
