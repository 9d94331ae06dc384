//! Taking back copies of push-API messages that have not been delivered:
//! a cancel, or a newer message with the same collapse key (which replaces
//! the older one wherever the older still waits: a session's queue, the
//! app's fan-out log). A cancel also tells every gateway, which drops the
//! copies not yet written to devices and reports them as cancelled.

use super::RouterState;
use herald_core::{AppId, ErrorCode, MessageId, SessionKey, UnixMillis};
use herald_proto::Message;
use herald_proto::journal::Fact;
use herald_proto::seam::{Downlink, MessageStatus, Progress, QueuedMessage};

pub(super) use herald_proto::seam::collapse_key;

/// Whether `queued` is an undelivered push-API copy that `newer` replaces.
pub(super) fn replaced_by(queued: &QueuedMessage, newer: &Message) -> bool {
    queued.progress == Progress::Unsent
        && queued.message.id != newer.id
        && queued.message.app == newer.app
        && collapse_key(newer).is_some_and(|key| collapse_key(&queued.message) == Some(key))
}

impl RouterState {
    /// Before `copy` joins the queue of `key`: removes the older copies it
    /// replaces (same collapse key), counting them on their records.
    pub(super) fn collapse_in_queue(&mut self, key: &SessionKey, copy: &Message) {
        if collapse_key(copy).is_none() {
            return;
        }
        for older in self.remove_queued(key, |q| replaced_by(q, copy)) {
            self.retracted(&key.app, older, 0, 1);
        }
    }

    /// Counts copies of `message` taken back, on its record (journaled).
    pub(super) fn retracted(&mut self, app: &AppId, message: MessageId, cancelled: u64, replaced: u64) {
        if cancelled + replaced == 0 {
            return;
        }
        self.records.retract(app, message, cancelled, replaced);
        self.journal.push(Fact::MessageRetracted { app: app.clone(), message, cancelled, replaced });
    }

    /// Cancels what of `message` has not been delivered: its copies in
    /// offline sessions' queues and its fan-out log entry. Answers its
    /// status after.
    pub(super) fn cancel(
        &mut self,
        app: &AppId,
        message: MessageId,
        now: UnixMillis,
        out: &mut Vec<super::Effect>,
    ) -> Result<MessageStatus, ErrorCode> {
        let before = self.records.status(app, message, now).ok_or(ErrorCode::NotFound)?;
        if before.is_final {
            return Ok(before);
        }
        let persistent: Vec<(SessionKey, bool)> = self
            .sessions
            .iter()
            .filter(|(key, record)| key.app == *app && record.is_persistent())
            .map(|(key, record)| (key.clone(), record.owner.is_some()))
            .collect();
        let mut removed = 0;
        for (key, online) in persistent {
            let taken =
                self.remove_queued(&key, |q| q.message.id == message && q.progress == Progress::Unsent);
            // Online sessions' inbox copies go uncounted: their gateways
            // count what they had not written yet.
            if !online {
                removed += taken.len() as u64;
            }
        }
        // Copies in queues, and those of its log entry no session has read.
        let unread = self.remove_fanout(app, message).unwrap_or(0);
        self.retracted(app, message, removed + unread, 0);
        // Copies on gateways not yet written to devices: dropped there and
        // reported as cancelled.
        for gateway in &self.known_gateways {
            out.push((*gateway, Downlink::Retract { app: app.clone(), message }));
        }
        self.records.status(app, message, now).ok_or(ErrorCode::Internal)
    }
}
