//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 §4.8.2): how a
//! message picks one member of a group. The router picks a gateway among
//! those with members; each gateway picks one of its member connections.
//! Both use a [`Dispatcher`] with the configured [`SharedStrategy`].

/// How a shared subscription group spreads its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedStrategy {
    /// Each candidate in turn.
    #[default]
    RoundRobin,
    /// A candidate at random.
    Random,
    /// The same candidate while it stays one.
    Sticky,
    /// By the publishing client: one publisher's messages stay together.
    HashClient,
    /// By topic: one topic's messages stay together.
    HashTopic,
}

impl SharedStrategy {
    /// Every strategy with its configuration name.
    pub const ALL: [(SharedStrategy, &'static str); 5] = [
        (SharedStrategy::RoundRobin, "round_robin"),
        (SharedStrategy::Random, "random"),
        (SharedStrategy::Sticky, "sticky"),
        (SharedStrategy::HashClient, "hash_client"),
        (SharedStrategy::HashTopic, "hash_topic"),
    ];

    /// Returns the strategy with this configuration name.
    pub fn parse(name: &str) -> Option<SharedStrategy> {
        SharedStrategy::ALL.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }
}

/// The per-group state of a strategy: a cursor, the sticky choice, and a
/// pseudo-random sequence (xorshift; pure, so replicas given the same
/// history choose the same).
#[derive(Debug, Clone)]
pub struct Dispatcher<K> {
    cursor: usize,
    sticky: Option<K>,
    state: u64,
}

impl<K> Default for Dispatcher<K> {
    fn default() -> Self {
        Dispatcher { cursor: 0, sticky: None, state: 0x9E37_79B9_7F4A_7C15 }
    }
}

impl<K: Copy + Eq> Dispatcher<K> {
    /// Picks one of `candidates` (none when empty) for a message published
    /// by `publisher` to `topic`.
    pub fn pick(
        &mut self,
        strategy: SharedStrategy,
        candidates: &[K],
        publisher: Option<&str>,
        topic: &str,
    ) -> Option<K> {
        let index = self.pick_index(strategy, candidates.len(), |i| candidates[i], publisher, topic)?;
        Some(candidates[index])
    }

    /// [`Dispatcher::pick`] among `n` candidates that `key` names by
    /// index, for callers whose candidates are not a slice of keys; returns
    /// the index picked.
    pub fn pick_index(
        &mut self,
        strategy: SharedStrategy,
        n: usize,
        key: impl Fn(usize) -> K,
        publisher: Option<&str>,
        topic: &str,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let index = match strategy {
            SharedStrategy::RoundRobin => self.next_in_turn(n),
            SharedStrategy::Random => (self.next_random() % n as u64) as usize,
            SharedStrategy::Sticky => match self.sticky.and_then(|k| (0..n).position(|i| key(i) == k)) {
                Some(index) => index,
                None => self.next_in_turn(n),
            },
            SharedStrategy::HashClient => (fnv1a(publisher.unwrap_or_default()) % n as u64) as usize,
            SharedStrategy::HashTopic => (fnv1a(topic) % n as u64) as usize,
        };
        self.sticky = Some(key(index));
        Some(index)
    }

    fn next_in_turn(&mut self, n: usize) -> usize {
        let index = self.cursor % n;
        self.cursor = self.cursor.wrapping_add(1);
        index
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}

fn fnv1a(text: &str) -> u64 {
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        strategy: SharedStrategy,
        messages: usize,
        publisher: impl Fn(usize) -> String,
        topic: impl Fn(usize) -> String,
    ) -> [usize; 3] {
        let mut dispatcher = Dispatcher::default();
        let mut counts = [0; 3];
        for i in 0..messages {
            let chosen = dispatcher
                .pick(strategy, &[0usize, 1, 2], Some(&publisher(i)), &topic(i))
                .expect("candidates");
            counts[chosen] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_takes_turns_exactly() {
        assert_eq!(counts(SharedStrategy::RoundRobin, 300, |_| "p".into(), |_| "t".into()), [100, 100, 100]);
    }

    #[test]
    fn random_spreads_roughly_evenly() {
        let c = counts(SharedStrategy::Random, 3000, |_| "p".into(), |_| "t".into());
        assert!(c.iter().all(|n| (800..=1200).contains(n)), "{c:?}");
    }

    #[test]
    fn sticky_stays_with_one_candidate_until_it_leaves() {
        assert_eq!(counts(SharedStrategy::Sticky, 100, |_| "p".into(), |_| "t".into()), [100, 0, 0]);
        let mut dispatcher = Dispatcher::default();
        assert_eq!(dispatcher.pick(SharedStrategy::Sticky, &[7, 8], None, "t"), Some(7));
        let next = dispatcher.pick(SharedStrategy::Sticky, &[8, 9], None, "t").expect("a candidate");
        assert_ne!(next, 7, "a new choice once 7 left");
        assert_eq!(dispatcher.pick(SharedStrategy::Sticky, &[9, 8], None, "t"), Some(next), "and it sticks");
    }

    #[test]
    fn hashing_keeps_a_publisher_or_a_topic_on_one_candidate_and_spreads_many() {
        let one = counts(SharedStrategy::HashClient, 50, |_| "only-publisher".into(), |i| format!("t/{i}"));
        assert_eq!(one.iter().filter(|n| **n > 0).count(), 1, "{one:?}");
        let many = counts(SharedStrategy::HashClient, 3000, |i| format!("client-{i}"), |_| "t".into());
        assert!(many.iter().all(|n| (700..=1300).contains(n)), "{many:?}");
        let topic = counts(SharedStrategy::HashTopic, 50, |i| format!("c{i}"), |_| "same/topic".into());
        assert_eq!(topic.iter().filter(|n| **n > 0).count(), 1, "{topic:?}");
        let topics = counts(SharedStrategy::HashTopic, 3000, |_| "p".into(), |i| format!("t/{i}"));
        assert!(topics.iter().all(|n| (700..=1300).contains(n)), "{topics:?}");
    }

    #[test]
    fn no_candidate_no_pick_and_names_parse() {
        assert_eq!(Dispatcher::<u8>::default().pick(SharedStrategy::RoundRobin, &[], None, "t"), None);
        for (strategy, name) in SharedStrategy::ALL {
            assert_eq!(SharedStrategy::parse(name), Some(strategy));
        }
        assert_eq!(SharedStrategy::parse("first"), None);
    }
}
