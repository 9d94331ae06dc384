// Hot path: every delivery of every run is recorded here once. One vector
// index and one bit per message; no allocation after a publisher's bit set
// has grown to its run length.

//! What one subscriber received: a bit per (publisher, sequence number), from
//! which losses, duplicates and reordering are counted.

use crate::payload::Stamp;
use serde_json::{Value, json};
use std::ops::Range;

/// Lost messages listed in a report, at most.
const LOSS_EXAMPLES: usize = 10;

/// The highest sequence number accepted (a bit set of 32 MiB per publisher);
/// above it a payload is counted as foreign rather than grown into.
const MAX_SEQUENCE: u32 = 1 << 28;

/// The sequences one subscriber received from one publisher.
#[derive(Debug, Default)]
struct Sequences {
    seen: Vec<u64>,
    /// One past the highest sequence number received.
    end: u32,
}

impl Sequences {
    /// Marks `sequence` received; returns whether it was new.
    fn insert(&mut self, sequence: u32) -> bool {
        let word = (sequence / 64) as usize;
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        let bit = 1u64 << (sequence % 64);
        let new = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        new
    }

    /// Returns whether `sequence` was received.
    fn contains(&self, sequence: u32) -> bool {
        self.seen.get((sequence / 64) as usize).is_some_and(|word| word & (1u64 << (sequence % 64)) != 0)
    }

    /// Returns how many of the sequences `0..end` were received.
    fn count_below(&self, end: u32) -> u64 {
        let whole = (end / 64) as usize;
        let mut count: u64 = self.seen.iter().take(whole).map(|word| u64::from(word.count_ones())).sum();
        let rest = end % 64;
        if let Some(word) = self.seen.get(whole).filter(|_| rest > 0) {
            count += u64::from((word & ((1u64 << rest) - 1)).count_ones());
        }
        count
    }
}

/// Whether a delivery was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The first copy of this message.
    New,
    /// A copy of a message already received.
    Duplicate,
    /// Not from a publisher this subscriber expects, or unreadable.
    Foreign,
}

/// One message expected and never received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Loss {
    /// The subscriber's index.
    pub(crate) subscriber: u32,
    /// The publisher's index.
    pub(crate) publisher: u32,
    /// The message's sequence number.
    pub(crate) sequence: u32,
}

/// Everything one subscriber received.
#[derive(Debug)]
pub(crate) struct Deliveries {
    publishers: Range<u32>,
    by_publisher: Vec<Sequences>,
    /// First copies.
    pub(crate) unique: u64,
    /// Repeated copies without the DUP flag.
    pub(crate) duplicates: u64,
    /// Repeated copies with the DUP flag (a redelivery the protocol allows
    /// at QoS 1 after a reconnect), and QoS 2 retransmissions.
    pub(crate) dup_redeliveries: u64,
    /// First copies that arrived after a later sequence number of the same
    /// publisher.
    pub(crate) out_of_order: u64,
    /// Messages from no expected publisher, or too short to carry a stamp.
    pub(crate) foreign: u64,
    /// When the last first copy arrived, on the payload clock.
    pub(crate) last_ns: u64,
}

impl Deliveries {
    /// Returns an empty record for a subscriber that expects messages from
    /// the publishers in `publishers`.
    pub(crate) fn new(publishers: Range<u32>) -> Deliveries {
        let by_publisher = publishers.clone().map(|_| Sequences::default()).collect();
        Deliveries {
            publishers,
            by_publisher,
            unique: 0,
            duplicates: 0,
            dup_redeliveries: 0,
            out_of_order: 0,
            foreign: 0,
            last_ns: 0,
        }
    }

    /// Records a delivery whose payload carried `stamp` (`None`: too short),
    /// with the PUBLISH's DUP flag, arriving at `now_ns`.
    pub(crate) fn record(&mut self, stamp: Option<Stamp>, dup: bool, now_ns: u64) -> Arrival {
        let Some(stamp) = stamp.filter(|stamp| stamp.sequence < MAX_SEQUENCE) else {
            self.foreign += 1;
            return Arrival::Foreign;
        };
        let Some(sequences) = self.slot(stamp.publisher).map(|slot| &mut self.by_publisher[slot]) else {
            self.foreign += 1;
            return Arrival::Foreign;
        };
        if !sequences.insert(stamp.sequence) {
            if dup {
                self.dup_redeliveries += 1;
            } else {
                self.duplicates += 1;
            }
            return Arrival::Duplicate;
        }
        if stamp.sequence < sequences.end {
            self.out_of_order += 1;
        }
        sequences.end = sequences.end.max(stamp.sequence + 1);
        self.unique += 1;
        self.last_ns = now_ns;
        Arrival::New
    }

    /// Counts a QoS 2 retransmission the flow filtered out before delivery.
    pub(crate) fn record_retransmission(&mut self) {
        self.dup_redeliveries += 1;
    }

    /// Adds what another member of the same shared-subscription group
    /// received: a message both received is a duplicate (the group is one
    /// audience). Both must expect the same publishers.
    pub(crate) fn absorb(&mut self, other: &Deliveries) {
        for (mine, theirs) in self.by_publisher.iter_mut().zip(&other.by_publisher) {
            if mine.seen.len() < theirs.seen.len() {
                mine.seen.resize(theirs.seen.len(), 0);
            }
            let mut both = 0;
            for (word, their) in mine.seen.iter_mut().zip(&theirs.seen) {
                both += u64::from((*word & their).count_ones());
                *word |= their;
            }
            mine.end = mine.end.max(theirs.end);
            self.duplicates += both;
            self.unique -= both;
        }
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.dup_redeliveries += other.dup_redeliveries;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
        self.last_ns = self.last_ns.max(other.last_ns);
    }

    /// Returns the publishers this subscriber expects.
    pub(crate) fn publishers(&self) -> Range<u32> {
        self.publishers.clone()
    }

    /// Returns how many of the `sent` messages of `publisher` (sequence
    /// numbers `0..sent`) never arrived, appending the first few to
    /// `examples` (up to `max_examples` in all) as from `subscriber`.
    pub(crate) fn missing(
        &self,
        subscriber: u32,
        publisher: u32,
        sent: u32,
        examples: &mut Vec<Loss>,
        max_examples: usize,
    ) -> u64 {
        let Some(sequences) = self.slot(publisher).map(|slot| &self.by_publisher[slot]) else {
            return 0;
        };
        let missing = u64::from(sent).saturating_sub(sequences.count_below(sent));
        if missing > 0 {
            let room = max_examples.saturating_sub(examples.len());
            let lost = (0..sent).filter(|&sequence| !sequences.contains(sequence)).take(room);
            examples.extend(lost.map(|sequence| Loss { subscriber, publisher, sequence }));
        }
        missing
    }

    /// Returns the index in `by_publisher` of `publisher`, if expected.
    fn slot(&self, publisher: u32) -> Option<usize> {
        let offset = publisher.checked_sub(self.publishers.start)? as usize;
        (offset < self.by_publisher.len()).then_some(offset)
    }
}

/// The deliveries of many subscribers, added up against what was sent.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// First copies.
    pub(crate) received: u64,
    /// Messages expected by a subscriber that never reached it.
    pub(crate) losses: u64,
    /// The first few losses.
    pub(crate) loss_examples: Vec<Loss>,
    /// Repeated copies without the DUP flag.
    pub(crate) duplicates: u64,
    /// Repeated copies with the DUP flag, and QoS 2 retransmissions.
    pub(crate) dup_redeliveries: u64,
    /// First copies that overtook an earlier message of their publisher.
    pub(crate) out_of_order: u64,
    /// Messages from no expected publisher.
    pub(crate) foreign: u64,
    /// When the last first copy arrived, on the payload clock.
    pub(crate) last_ns: u64,
}

impl Tally {
    /// Adds what subscriber `subscriber` received; publisher `p` sent
    /// `sent[p]` messages.
    pub(crate) fn add(&mut self, subscriber: u32, deliveries: &Deliveries, sent: &[u32]) {
        for publisher in deliveries.publishers() {
            let count = sent.get(publisher as usize).copied().unwrap_or(0);
            self.losses +=
                deliveries.missing(subscriber, publisher, count, &mut self.loss_examples, LOSS_EXAMPLES);
        }
        self.received += deliveries.unique;
        self.duplicates += deliveries.duplicates;
        self.dup_redeliveries += deliveries.dup_redeliveries;
        self.out_of_order += deliveries.out_of_order;
        self.foreign += deliveries.foreign;
        self.last_ns = self.last_ns.max(deliveries.last_ns);
    }

    /// Returns the counts as report fields.
    pub(crate) fn json(&self, expected: u64) -> Value {
        json!({
            "deliveries_expected": expected,
            "deliveries_received": self.received,
            "losses": self.losses,
            "loss_examples": self.loss_examples,
            "duplicates": self.duplicates,
            "dup_redeliveries": self.dup_redeliveries,
            "out_of_order": self.out_of_order,
            "foreign": self.foreign,
        })
    }

    /// Returns the counts for a summary line.
    pub(crate) fn text(&self, expected: u64) -> String {
        format!(
            "deliveries {}/{expected}, losses {}, duplicates {} (+{} DUP), out of order {}",
            self.received, self.losses, self.duplicates, self.dup_redeliveries, self.out_of_order
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u32, sequence: u32) -> Option<Stamp> {
        Some(Stamp { publisher, sequence, sent_ns: 0 })
    }

    #[test]
    fn losses_duplicates_and_reordering_are_told_apart() {
        let mut deliveries = Deliveries::new(3..5);
        assert_eq!(deliveries.record(stamp(3, 0), false, 10), Arrival::New);
        assert_eq!(deliveries.record(stamp(3, 2), false, 11), Arrival::New);
        assert_eq!(deliveries.record(stamp(3, 1), false, 12), Arrival::New);
        assert_eq!(deliveries.record(stamp(3, 1), false, 13), Arrival::Duplicate);
        assert_eq!(deliveries.record(stamp(3, 2), true, 14), Arrival::Duplicate);
        assert_eq!(deliveries.record(stamp(4, 500), false, 15), Arrival::New);
        assert_eq!(deliveries.record(stamp(5, 0), false, 16), Arrival::Foreign);
        assert_eq!(deliveries.record(None, false, 17), Arrival::Foreign);
        assert_eq!(deliveries.unique, 4);
        assert_eq!(deliveries.duplicates, 1);
        assert_eq!(deliveries.dup_redeliveries, 1);
        assert_eq!(deliveries.out_of_order, 1);
        assert_eq!(deliveries.foreign, 2);
        assert_eq!(deliveries.last_ns, 15);

        let mut examples = Vec::new();
        assert_eq!(deliveries.missing(9, 3, 5, &mut examples, 1), 2);
        assert_eq!(examples, vec![Loss { subscriber: 9, publisher: 3, sequence: 3 }]);
        assert_eq!(deliveries.missing(9, 4, 501, &mut examples, 1), 500);
        assert_eq!(deliveries.missing(9, 7, 10, &mut examples, 1), 0, "not expected here");

        let mut tally = Tally::default();
        tally.add(9, &deliveries, &[0, 0, 0, 5, 501]);
        assert_eq!((tally.received, tally.losses, tally.duplicates, tally.foreign), (4, 502, 1, 2));
        assert_eq!(tally.json(506)["deliveries_expected"], 506);
        assert_eq!(tally.loss_examples[0], Loss { subscriber: 9, publisher: 3, sequence: 3 });
    }

    #[test]
    fn members_of_a_group_add_up_to_one_audience() {
        let mut first = Deliveries::new(0..1);
        let mut second = Deliveries::new(0..1);
        for sequence in [0, 2, 4] {
            first.record(stamp(0, sequence), false, 1);
        }
        for sequence in [1, 4, 70] {
            second.record(stamp(0, sequence), false, 2);
        }
        first.absorb(&second);
        assert_eq!((first.unique, first.duplicates, first.last_ns), (5, 1, 2), "4 went to both");
        let mut examples = Vec::new();
        assert_eq!(first.missing(0, 0, 71, &mut examples, 3), 66, "71 sent, 5 distinct received");
        assert_eq!(examples.iter().map(|l| l.sequence).collect::<Vec<_>>(), [3, 5, 6]);
    }

    #[test]
    fn absurd_sequence_numbers_do_not_grow_the_record() {
        let mut deliveries = Deliveries::new(0..1);
        assert_eq!(deliveries.record(stamp(0, u32::MAX), false, 1), Arrival::Foreign);
        assert!(deliveries.by_publisher[0].seen.is_empty());
    }
}
