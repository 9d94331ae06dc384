//! What clients of persistent sessions acknowledged (PUBACK, PUBCOMP),
//! gathered for a few tens of milliseconds and sent to the router as one
//! `Uplink::Acked`: the messages leave the sessions' inboxes there, with at
//! most one journal write per session per batch.
//!
//! An acknowledgement that never reaches the router (the gateway dies, or
//! more than [`MAX_PENDING`] wait) only costs a resend: the message stays in
//! the inbox and the session's next connection gets it again with DUP.

use crate::Shared;
use herald_core::{MessageId, SessionKey};
use herald_proto::seam::{Progress, SessionAcks, Uplink};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long acknowledgements gather before they go.
const GATHER: Duration = Duration::from_millis(20);
/// Acknowledgements waiting at most; past it further ones are dropped and
/// counted (policy: the router resends those messages with DUP later).
const MAX_PENDING: usize = 200_000;

/// Acknowledgements gathered since the last batch.
#[derive(Default)]
pub(crate) struct Acks {
    pending: Mutex<Pending>,
    ready: Notify,
}

#[derive(Default)]
struct Pending {
    by_session: HashMap<SessionKey, Gathered>,
    count: usize,
}

/// What one session's client acknowledged, and how far its QoS 2
/// deliveries got.
#[derive(Default)]
struct Gathered {
    messages: Vec<MessageId>,
    progress: Vec<(MessageId, Progress)>,
}

impl Gathered {
    fn into_acks(self, session: SessionKey) -> SessionAcks {
        SessionAcks { session, messages: self.messages, progress: self.progress }
    }

    fn len(&self) -> usize {
        self.messages.len() + self.progress.len()
    }
}

impl Acks {
    /// Notes that the client of `session` acknowledged `message`; returns
    /// false when too many wait (the acknowledgement is dropped).
    pub(crate) fn add(&self, session: &SessionKey, message: MessageId) -> bool {
        self.gather(session, |gathered| gathered.messages.push(message))
    }

    /// Notes how far a QoS 2 delivery of `session` got (sent under a packet
    /// id, or PUBREL sent); returns false when too many wait (dropped: the
    /// message is then resent under a new packet id after a loss).
    pub(crate) fn progress(&self, session: &SessionKey, message: MessageId, progress: Progress) -> bool {
        self.gather(session, |gathered| gathered.progress.push((message, progress)))
    }

    fn gather(&self, session: &SessionKey, add: impl FnOnce(&mut Gathered)) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.count >= MAX_PENDING {
            return false;
        }
        let first = pending.count == 0;
        pending.count += 1;
        match pending.by_session.get_mut(session) {
            Some(gathered) => add(gathered),
            None => {
                let mut gathered = Gathered::default();
                add(&mut gathered);
                pending.by_session.insert(session.clone(), gathered);
            }
        }
        drop(pending);
        if first {
            self.ready.notify_one();
        }
        true
    }

    /// Takes what waits for `session` (sent ahead of its release, so the
    /// router does not keep what its client has).
    pub(crate) fn take_session(&self, session: &SessionKey) -> Option<SessionAcks> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let gathered = pending.by_session.remove(session)?;
        pending.count -= gathered.len();
        Some(gathered.into_acks(session.clone()))
    }

    /// Takes everything gathered.
    pub(crate) fn take(&self) -> Vec<SessionAcks> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.count = 0;
        std::mem::take(&mut pending.by_session)
            .into_iter()
            .map(|(session, gathered)| gathered.into_acks(session))
            .collect()
    }
}

/// Sends gathered acknowledgements to the router until the gateway stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        shared.acks.ready.notified().await;
        tokio::time::sleep(GATHER).await;
        let batch = shared.acks.take();
        if !batch.is_empty() && shared.uplink.send(Uplink::Acked(batch)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::{AppId, ClientId};

    fn key(client: &str) -> SessionKey {
        SessionKey::new(AppId::default_app(), ClientId::new(client.to_owned()).expect("id"))
    }

    #[test]
    fn acknowledgements_gather_per_session_and_a_release_takes_its_own() {
        let acks = Acks::default();
        assert!(acks.add(&key("a"), MessageId(1)));
        assert!(acks.add(&key("b"), MessageId(2)));
        assert!(acks.add(&key("a"), MessageId(3)));
        assert!(acks.progress(&key("a"), MessageId(4), Progress::Sent(9)));
        let a = acks.take_session(&key("a")).expect("a's acknowledgements");
        assert_eq!(a.messages, [MessageId(1), MessageId(3)]);
        assert_eq!(a.progress, [(MessageId(4), Progress::Sent(9))]);
        assert!(acks.take_session(&key("a")).is_none());
        let rest = acks.take();
        assert_eq!(
            rest,
            [SessionAcks { session: key("b"), messages: vec![MessageId(2)], progress: Vec::new() }]
        );
        assert!(acks.take().is_empty());
    }

    #[test]
    fn past_the_bound_acknowledgements_are_refused() {
        let acks = Acks::default();
        for id in 0..MAX_PENDING {
            assert!(acks.add(&key("a"), MessageId(id as u128)));
        }
        assert!(!acks.add(&key("a"), MessageId(u128::MAX)));
        assert_eq!(acks.take_session(&key("a")).map(|a| a.messages.len()), Some(MAX_PENDING));
        assert!(acks.add(&key("a"), MessageId(u128::MAX)), "room again once taken");
    }
}
