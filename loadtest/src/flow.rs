//! The QoS 1 and QoS 2 acknowledgement flows of one client, without I/O:
//! [`Outbound`] for what it publishes (a bounded in-flight window keyed by
//! packet id) and [`Inbound`] for what it receives (the QoS 2 packet ids
//! awaiting PUBREL). Packets in, replies and outcomes out.

use herald_mqtt::{Packet, PubAck, Publish, QoS, ReasonCode};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU16;

/// A publish the broker has not finished acknowledging.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    sent_ns: u64,
    /// QoS 2: PUBREC came and PUBREL went; waiting for PUBCOMP.
    released: bool,
}

/// What an acknowledgement meant to the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// Not for a publish in flight (unknown packet id, or a packet that is
    /// not an acknowledgement): ignored.
    Ignored,
    /// The broker took the message: PUBACK (QoS 1, which also ends the
    /// flow) or PUBREC (QoS 2, whose PUBREL is in `reply`).
    Accepted {
        /// When the publish was sent.
        sent_ns: u64,
        /// PUBREL to send, at QoS 2.
        reply: Option<Packet>,
    },
    /// A repeated PUBREC: nothing new, but the PUBREL goes again.
    Resend(Packet),
    /// QoS 2 finished (PUBCOMP): the window slot is free.
    Completed,
    /// The broker refused the message (a reason code of 0x80 or more); the
    /// window slot is free.
    Rejected(ReasonCode),
}

/// The in-flight window of a publisher: at most `capacity` QoS 1/2
/// publishes unacknowledged.
#[derive(Debug)]
pub(crate) struct Outbound {
    window: HashMap<u16, InFlight>,
    capacity: usize,
    next_id: u16,
}

impl Outbound {
    /// Returns an empty window of `capacity` slots (at least 1, at most
    /// 65,535, the packet id space).
    pub(crate) fn new(capacity: usize) -> Outbound {
        let capacity = capacity.clamp(1, usize::from(u16::MAX));
        Outbound { window: HashMap::with_capacity(capacity), capacity, next_id: 0 }
    }

    /// Returns whether another publish may start.
    pub(crate) fn has_room(&self) -> bool {
        self.window.len() < self.capacity
    }

    /// Returns how many publishes are unacknowledged.
    pub(crate) fn in_flight(&self) -> usize {
        self.window.len()
    }

    /// Starts a publish sent at `sent_ns` and returns its packet id, or
    /// `None` when the window is full.
    pub(crate) fn start(&mut self, sent_ns: u64) -> Option<NonZeroU16> {
        if !self.has_room() {
            return None;
        }
        // With fewer than 65,535 ids in use a free one is always found.
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.window.contains_key(&self.next_id) {
                self.window.insert(self.next_id, InFlight { sent_ns, released: false });
                return NonZeroU16::new(self.next_id);
            }
        }
    }

    /// Applies an acknowledgement from the broker.
    pub(crate) fn on_ack(&mut self, packet: &Packet) -> AckOutcome {
        match packet {
            Packet::PubAck(ack) => match self.window.remove(&ack.packet_id.get()) {
                None => AckOutcome::Ignored,
                Some(_) if ack.reason_code.is_error() => AckOutcome::Rejected(ack.reason_code),
                Some(flight) => AckOutcome::Accepted { sent_ns: flight.sent_ns, reply: None },
            },
            Packet::PubRec(ack) => {
                let id = ack.packet_id.get();
                let Some(flight) = self.window.get_mut(&id) else {
                    return AckOutcome::Ignored;
                };
                if ack.reason_code.is_error() {
                    self.window.remove(&id);
                    return AckOutcome::Rejected(ack.reason_code);
                }
                let release = Packet::PubRel(PubAck::new(ack.packet_id));
                if flight.released {
                    return AckOutcome::Resend(release);
                }
                flight.released = true;
                AckOutcome::Accepted { sent_ns: flight.sent_ns, reply: Some(release) }
            }
            Packet::PubComp(ack) => match self.window.remove(&ack.packet_id.get()) {
                Some(_) => AckOutcome::Completed,
                None => AckOutcome::Ignored,
            },
            _ => AckOutcome::Ignored,
        }
    }
}

/// What a received PUBLISH or PUBREL asks of the subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Received {
    /// Whether the message goes to the application: false for a QoS 2
    /// retransmission of a packet id still awaiting PUBREL.
    pub(crate) deliver: bool,
    /// The acknowledgement to send.
    pub(crate) reply: Option<Packet>,
}

/// The receiving side of a client: which QoS 2 packet ids await PUBREL.
/// Bounded by the broker's in-flight window towards us (at most 65,535 ids).
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    awaiting_release: HashSet<u16>,
}

impl Inbound {
    /// Applies a PUBLISH: QoS 1 is acknowledged with PUBACK, QoS 2 with
    /// PUBREC and delivered only the first time its packet id is seen.
    pub(crate) fn on_publish(&mut self, publish: &Publish) -> Received {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                Received { deliver: true, reply: Some(Packet::PubAck(PubAck::new(id))) }
            }
            (QoS::ExactlyOnce, Some(id)) => Received {
                deliver: self.awaiting_release.insert(id.get()),
                reply: Some(Packet::PubRec(PubAck::new(id))),
            },
            _ => Received { deliver: true, reply: None },
        }
    }

    /// Applies a PUBREL: the packet id is free again; PUBCOMP is the reply
    /// (also for an id we do not know, as the protocol asks).
    pub(crate) fn on_release(&mut self, release: &PubAck) -> Packet {
        self.awaiting_release.remove(&release.packet_id.get());
        Packet::PubComp(PubAck::new(release.packet_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: NonZeroU16) -> PubAck {
        PubAck::new(id)
    }

    #[test]
    fn the_window_is_bounded_and_frees_on_puback() {
        let mut outbound = Outbound::new(2);
        let first = outbound.start(10).expect("room");
        let second = outbound.start(20).expect("room");
        assert_ne!(first, second);
        assert!(outbound.start(30).is_none());
        assert_eq!(
            outbound.on_ack(&Packet::PubAck(ack(first))),
            AckOutcome::Accepted { sent_ns: 10, reply: None }
        );
        assert_eq!(outbound.in_flight(), 1);
        assert_eq!(outbound.on_ack(&Packet::PubAck(ack(first))), AckOutcome::Ignored);
        assert!(outbound.start(40).is_some());
    }

    #[test]
    fn qos2_releases_on_pubrec_and_frees_on_pubcomp() {
        let mut outbound = Outbound::new(1);
        let id = outbound.start(5).expect("room");
        let outcome = outbound.on_ack(&Packet::PubRec(ack(id)));
        assert_eq!(outcome, AckOutcome::Accepted { sent_ns: 5, reply: Some(Packet::PubRel(ack(id))) });
        assert!(!outbound.has_room());
        assert_eq!(outbound.on_ack(&Packet::PubRec(ack(id))), AckOutcome::Resend(Packet::PubRel(ack(id))));
        assert_eq!(outbound.on_ack(&Packet::PubComp(ack(id))), AckOutcome::Completed);
        assert!(outbound.has_room());
    }

    #[test]
    fn refusals_free_the_slot() {
        let mut outbound = Outbound::new(1);
        let id = outbound.start(5).expect("room");
        let mut refusal = ack(id);
        refusal.reason_code = ReasonCode::QuotaExceeded;
        assert_eq!(
            outbound.on_ack(&Packet::PubAck(refusal)),
            AckOutcome::Rejected(ReasonCode::QuotaExceeded)
        );
        assert!(outbound.has_room());
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_use() {
        let mut outbound = Outbound::new(3);
        outbound.next_id = u16::MAX - 1;
        let ids: Vec<u16> = (0..3).map(|_| outbound.start(0).expect("room").get()).collect();
        assert_eq!(ids, vec![u16::MAX, 1, 2]);
    }

    #[test]
    fn qos2_retransmissions_are_not_delivered_twice() {
        let mut inbound = Inbound::default();
        let id = NonZeroU16::new(9).expect("non-zero");
        let mut publish = Publish::new("t", &b"x"[..]);
        publish.qos = QoS::ExactlyOnce;
        publish.packet_id = Some(id);
        let first = inbound.on_publish(&publish);
        assert!(first.deliver);
        assert_eq!(first.reply, Some(Packet::PubRec(ack(id))));
        publish.dup = true;
        assert!(!inbound.on_publish(&publish).deliver);
        assert_eq!(inbound.on_release(&ack(id)), Packet::PubComp(ack(id)));
        assert!(inbound.on_publish(&publish).deliver, "a released id is a new message");
    }

    #[test]
    fn qos1_is_acknowledged_and_qos0_is_not() {
        let mut inbound = Inbound::default();
        let id = NonZeroU16::new(3).expect("non-zero");
        let mut publish = Publish::new("t", &b"x"[..]);
        assert_eq!(inbound.on_publish(&publish), Received { deliver: true, reply: None });
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = Some(id);
        assert_eq!(inbound.on_publish(&publish).reply, Some(Packet::PubAck(ack(id))));
    }
}
