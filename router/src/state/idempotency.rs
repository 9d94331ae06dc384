//! Idempotency keys of push-API sends: a send repeated with the same key
//! and body within 24 hours gets the first answer again and sends nothing;
//! with another body it is refused. Kept in the replicated state, so a
//! retry after a change of leader is still recognised.

use super::{Effect, RouterState};
use crate::owner::Locations;
use herald_core::{AppId, ErrorCode, UnixMillis};
use herald_proto::journal::{Fact, IdempotentSend};
use herald_proto::seam::{Push, PushReport};
use std::collections::HashMap;

/// How long a key is kept.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;
/// Keys kept per app at most; past it the oldest is forgotten early
/// (policy: forget oldest).
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;

/// The keys of every app.
#[derive(Debug, Clone, Default)]
pub(super) struct Keys {
    sends: super::expiring::Expiring<String, IdempotentSend, MAX_IDEMPOTENCY_KEYS>,
    /// Keys whose first send waits for its batch's commit, with the batch:
    /// another send with the key meanwhile is refused as in progress. Only
    /// the router answering sends has any (it is not replicated).
    pending: HashMap<(AppId, String), u64>,
    /// The number of the batch being applied.
    batch: u64,
}

impl Keys {
    /// Keeps `send`, forgetting the app's oldest key past the cap. The
    /// same rule runs on every replica (`DurableState`).
    pub(super) fn keep(&mut self, send: IdempotentSend) {
        let (app, key, until) = (send.app.clone(), send.idempotency.key.clone(), send.expires_at);
        self.sends.insert(app, key, until, send);
    }

    /// Forgets every key that expires before `before`.
    pub(super) fn expire(&mut self, before: UnixMillis) -> bool {
        self.sends.expire(before)
    }

    /// Returns every kept send.
    pub(super) fn all(&self) -> impl Iterator<Item = &IdempotentSend> {
        self.sends.values()
    }
}

impl RouterState {
    /// Routes `push` and makes its message's record.
    fn push_recorded(
        &mut self,
        push: Push,
        located: Option<&Locations>,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) -> PushReport {
        let message = push.message.clone();
        let report = self.push(push, located, now, out);
        self.record_message(&message, &report);
        report
    }

    /// Routes `push` once per idempotency key: a repeat gets the first
    /// answer (marked as a replay), another body under the key a conflict.
    pub(super) fn push_once(
        &mut self,
        push: Push,
        located: Option<&Locations>,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) -> Result<PushReport, ErrorCode> {
        // A push the gateway asks again (its link to the router broke
        // before the answer) is not routed twice: its record says it was.
        if let Some(s) = self.records.status(&push.message.app, push.message.id, now) {
            let report = PushReport {
                online: s.online,
                stored: s.stored,
                replay_of: Some(s.message),
                ..PushReport::default()
            };
            return Ok(report);
        }
        let Some(idempotency) = push.idempotency.clone() else {
            return Ok(self.push_recorded(push, located, now, out));
        };
        let app = push.message.app.clone();
        let id = (app.clone(), idempotency.key.clone());
        if self.idempotency.pending.contains_key(&id) {
            return Err(ErrorCode::InProgress);
        }
        if let Some(kept) = self.idempotency.sends.get(&id.0, &id.1)
            && kept.expires_at > now
        {
            if kept.idempotency.body_hash != idempotency.body_hash {
                return Err(ErrorCode::Conflict);
            }
            return Ok(PushReport { replay_of: Some(kept.message_id), ..kept.answer.clone() });
        }
        let message_id = push.message.id;
        let answer = self.push_recorded(push, located, now, out);
        let send = IdempotentSend {
            app,
            idempotency,
            message_id,
            answer: answer.clone(),
            expires_at: UnixMillis(now.0 + IDEMPOTENCY_TTL_MS),
        };
        self.journal.push(Fact::Idempotent(Box::new(send.clone())));
        self.idempotency.keep(send);
        self.idempotency.pending.insert(id, self.idempotency.batch);
        Ok(answer)
    }

    /// Ends the batch being applied; returns its number, for
    /// [`RouterState::settle_batch`] once it is committed.
    pub fn seal_batch(&mut self) -> u64 {
        let batch = self.idempotency.batch;
        self.idempotency.batch += 1;
        batch
    }

    /// Batches up to `batch` are committed and answered: their idempotency
    /// keys replay from now on instead of being refused as in progress.
    pub fn settle_batch(&mut self, batch: u64) {
        if !self.idempotency.pending.is_empty() {
            self.idempotency.pending.retain(|_, pending| *pending > batch);
        }
    }

    /// Forgets the keys whose day is over (a fact, so replicas agree).
    pub(super) fn expire_idempotency(&mut self, now: UnixMillis) {
        if self.idempotency.expire(now) {
            self.journal.push(Fact::IdempotencyExpired(now));
        }
    }

    /// Rebuilds the keys from an image.
    pub(super) fn restore_idempotency(&mut self, sends: Vec<IdempotentSend>) {
        for send in sends {
            self.idempotency.keep(send);
        }
    }
}
