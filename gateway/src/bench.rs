//! A gateway's local fan-out without sockets, for the `fanout` criterion
//! bench (`gateway/benches/fanout.rs`): what the delivery task and the
//! connection tasks do with one message for many local subscribers, using
//! the same index, inboxes, session state machines and codec.

use crate::auth::ConfigAuthenticator;
use crate::delivery::hand_to_matches;
use crate::handshake::{Identity, accept};
use crate::registry::{ConnHandle, ConnId, Connections, Inbound, LocalIndex, RouteChanges};
use crate::session::{Action, LocalSubscription, Session, SessionLimits};
use bytes::{Bytes, BytesMut};
use herald_core::{AppId, Epoch, MessageId, QoS, SessionKey, Topic, TopicFilter, UnixMillis};
use herald_mqtt::{Codec, Connect, Packet, ProtocolVersion, PubAck};
use herald_proto::Message;
use std::sync::Arc;

/// `subscribers` connected sessions, each subscribed to `fan/out`.
pub struct FanOut {
    index: std::sync::RwLock<LocalIndex>,
    connections: Connections,
    sessions: Vec<(Arc<ConnHandle>, Session)>,
    message: Arc<Message>,
    targets: crate::delivery::Targets,
    codec: Codec,
    out: BytesMut,
}

impl FanOut {
    /// Sets up the sessions (MQTT 3.1.1, granted `qos`) and a message of
    /// `payload` bytes published at `qos`.
    pub fn new(subscribers: usize, qos: QoS, payload: usize) -> FanOut {
        let now = UnixMillis(1_000_000);
        let limits = Arc::new(SessionLimits::default());
        let app = AppId::default_app();
        let filter = TopicFilter::new("fan/out").expect("a valid filter");
        let mut index = LocalIndex::default();
        let connections = Connections::new();
        let mut sessions = Vec::with_capacity(subscribers);
        for n in 0..subscribers {
            let client = format!("sub-{n}");
            let connect = Connect::new(ProtocolVersion::V311, client.as_str());
            let identity = Identity::Password(&ConfigAuthenticator::anonymous());
            let accepted = accept(&connect, &limits, identity, || client.clone(), MessageId(1), now)
                .expect("an anonymous client is accepted");
            let session = Session::new(&accepted, limits.clone(), Epoch::new(1, 1), 1 << 20);
            let key = SessionKey::new(app.clone(), herald_core::ClientId::new(client).expect("a valid id"));
            let handle = Arc::new(ConnHandle::new(n as ConnId + 1, Arc::new(key), now.0));
            connections.insert(handle.clone());
            let subscription =
                LocalSubscription { qos, no_local: false, retain_as_published: false, identifier: None };
            index.add(&app, &filter, handle.id, subscription, &mut RouteChanges::default());
            sessions.push((handle, session));
        }
        let message = Message {
            id: MessageId(7),
            app,
            topic: Topic::new("fan/out").expect("a valid topic"),
            payload: Bytes::from(vec![b'x'; payload]),
            qos,
            retain: false,
            created_at: now,
            expires_at: None,
            origin: None,
            properties: None,
            trace: None,
        };
        FanOut {
            index: std::sync::RwLock::new(index),
            connections,
            sessions,
            message: Arc::new(message),
            targets: Vec::new(),
            codec: Codec::new(ProtocolVersion::V311, 1 << 20),
            out: BytesMut::new(),
        }
    }

    /// Delivers the message once: matched in the index and handed to each
    /// subscriber's inbox as the delivery task does; then each connection
    /// takes its inbox, runs its session and encodes the PUBLISH (the
    /// socket write left out), and at QoS 1 its client's PUBACK comes back.
    /// Returns the bytes encoded.
    pub fn deliver(&mut self) -> usize {
        let now = UnixMillis(1_000_000);
        let mut handed = 0;
        hand_to_matches(
            &self.index,
            &self.connections,
            &self.message,
            (1000, usize::MAX),
            &mut self.targets,
            |taken| handed += usize::from(taken),
        );
        assert_eq!(handed, self.sessions.len(), "every subscriber takes the message");
        let mut encoded = 0;
        let mut actions = Vec::new();
        for (handle, session) in &mut self.sessions {
            for item in handle.take_inbox().into_iter().flatten() {
                if let Inbound::Deliver(queued) = item {
                    session.deliver(queued, now, &mut actions);
                }
            }
            let mut acks = Vec::new();
            for action in actions.drain(..) {
                if let Action::Send(packet) = action {
                    if let Packet::Publish(publish) = &packet
                        && let Some(id) = publish.packet_id
                    {
                        acks.push(Packet::PubAck(PubAck::new(id)));
                    }
                    self.out.clear();
                    self.codec.encode(&packet, &mut self.out).expect("a PUBLISH encodes");
                    encoded += self.out.len();
                }
            }
            for ack in acks {
                session.on_packet(ack, now, &mut || MessageId(0), &mut actions);
            }
            actions.clear();
        }
        encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_encodes_one_publish_per_subscriber_and_acks_free_the_window() {
        let mut fan_out = FanOut::new(3, QoS::AtLeastOnce, 8);
        // Fixed header 2, topic 2 + 7, packet id 2, payload 8.
        let publish = 2 + 2 + "fan/out".len() + 2 + 8;
        for _ in 0..1000 {
            assert_eq!(fan_out.deliver(), 3 * publish);
        }
        let mut qos0 = FanOut::new(2, QoS::AtMostOnce, 8);
        assert_eq!(qos0.deliver(), 2 * (publish - 2));
    }
}
