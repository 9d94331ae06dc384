//! The test payload and the clock its timestamps come from.
//!
//! Layout, little-endian: publisher id (`u32`), sequence number (`u32`),
//! send time in nanoseconds on [`now_ns`]'s clock (`u64`), then zero padding
//! up to the requested size. Publishers and subscribers live in one process
//! and read one monotonic clock, so end-to-end latency is a subtraction.

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::OnceLock;
use std::time::Instant;

/// The smallest payload: the header and no padding.
pub(crate) const HEADER_LEN: usize = 16;

/// What a payload says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The publisher's index in the run.
    pub(crate) publisher: u32,
    /// The message's sequence number at its publisher, from 0.
    pub(crate) sequence: u32,
    /// When it was sent, on [`now_ns`]'s clock.
    pub(crate) sent_ns: u64,
}

impl Stamp {
    /// Returns the payload of `len` bytes (at least [`HEADER_LEN`]) for this
    /// stamp.
    pub(crate) fn encode(&self, len: usize) -> Bytes {
        debug_assert!(len >= HEADER_LEN, "payload shorter than its header");
        let mut payload = BytesMut::with_capacity(len.max(HEADER_LEN));
        payload.put_u32_le(self.publisher);
        payload.put_u32_le(self.sequence);
        payload.put_u64_le(self.sent_ns);
        payload.resize(len.max(HEADER_LEN), 0);
        payload.freeze()
    }

    /// Reads the stamp at the front of `payload`, or `None` when it is too
    /// short to hold one.
    pub(crate) fn decode(payload: &[u8]) -> Option<Stamp> {
        let header: &[u8; HEADER_LEN] = payload.get(..HEADER_LEN)?.try_into().ok()?;
        let (publisher, rest) = header.split_at(4);
        let (sequence, sent) = rest.split_at(4);
        Some(Stamp {
            publisher: u32::from_le_bytes(publisher.try_into().ok()?),
            sequence: u32::from_le_bytes(sequence.try_into().ok()?),
            sent_ns: u64::from_le_bytes(sent.try_into().ok()?),
        })
    }
}

/// Returns nanoseconds since this process first read the clock: monotonic,
/// shared by every task and thread of the process.
pub(crate) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Returns the microseconds between `sent_ns` and `now_ns`, at least 1, for
/// a histogram that starts at 1.
pub(crate) fn elapsed_us(sent_ns: u64, now_ns: u64) -> u64 {
    (now_ns.saturating_sub(sent_ns) / 1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_at_every_size() {
        let stamp = Stamp { publisher: 7, sequence: 0xDEAD_BEEF, sent_ns: u64::MAX - 3 };
        for len in [HEADER_LEN, 17, 64, 1024] {
            let payload = stamp.encode(len);
            assert_eq!(payload.len(), len);
            assert_eq!(Stamp::decode(&payload), Some(stamp));
        }
    }

    #[test]
    fn a_short_payload_has_no_stamp() {
        assert_eq!(Stamp::decode(&[0u8; HEADER_LEN - 1]), None);
        assert_eq!(Stamp::decode(b""), None);
    }

    #[test]
    fn the_clock_moves_forward() {
        let first = now_ns();
        let second = now_ns();
        assert!(second >= first);
        assert_eq!(elapsed_us(5_000, 4_000), 1);
        assert_eq!(elapsed_us(1_000, 3_500_000), 3_499);
    }
}
