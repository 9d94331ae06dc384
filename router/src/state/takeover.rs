//! Taking over a persistent session whose connection is live elsewhere.
//!
//! The new connection's claim waits, at most [`TAKEOVER_WAIT_MS`], for the
//! old connection's release: the session then resumes as after any clean
//! end, with how far each message got (the packet id it was sent under, or
//! its PUBREL), so the new connection resends under the same packet ids
//! [MQTT-4.4.0-1] and a QoS 2 message the client holds is not delivered to
//! it twice. Past the wait (the old gateway is frozen or gone) the claim
//! goes ahead as before: what the inbox holds is resent with DUP under new
//! packet ids.

use super::{Effect, RouterState};
use herald_core::{Epoch, ErrorCode, NodeId, UnixMillis};
use herald_proto::seam::{Claim, Downlink};

/// How long a claim waits for the connection it takes over to end.
pub(super) const TAKEOVER_WAIT_MS: u64 = 2_000;

/// A claim waiting for the session's current connection to end.
#[derive(Debug)]
pub(super) struct PendingClaim {
    gateway: NodeId,
    claim: Claim,
    deadline: UnixMillis,
}

impl RouterState {
    /// Claims a session: at once, or once its live connection has ended
    /// (see the module).
    pub(super) fn claim(&mut self, gateway: NodeId, claim: Claim, now: UnixMillis, out: &mut Vec<Effect>) {
        if let Some(granted) = claim.granted
            && !self.takes_granted(&claim, granted)
        {
            // An owner's grant the session has seen past (a newer claim got
            // here first), or of an owner that has lost the shard since: the
            // gateway claims again at the shard's owner (ADR 0033).
            self.counters.stale_epoch_refused += 1;
            out.push((
                gateway,
                Downlink::Claimed { request: claim.request, result: Err(ErrorCode::StaleEpoch) },
            ));
            return;
        }
        // A claim already waiting for this session goes first, at once: the
        // newer one then takes over from it.
        if let Some(waiting) = self.takeovers.remove(&claim.session) {
            self.claim_now(waiting.gateway, waiting.claim, true, now, out);
        }
        // Only a resumed persistent session with a live connection waits.
        let live = self
            .sessions
            .get(&claim.session)
            .filter(|r| !claim.clean_start && r.is_persistent())
            .and_then(|r| r.owner.map(|owner| (owner, r.epoch)));
        let Some((owner, epoch)) = live else {
            return self.claim_now(gateway, claim, false, now, out);
        };
        // Takeover: the old connection must end [MQTT-3.1.4-3].
        out.push((owner, Downlink::Revoked { session: claim.session.clone(), epoch }));
        let deadline = UnixMillis(now.0 + TAKEOVER_WAIT_MS);
        self.takeovers.insert(claim.session.clone(), PendingClaim { gateway, claim, deadline });
    }

    /// Whether a claim with the epoch `granted` by the session's shard owner
    /// may be taken: its generation is not older than the shard's in the
    /// table now (else its owner lost the shard since), and it is later than
    /// the session's epoch and than a claim waiting for it.
    fn takes_granted(&self, claim: &Claim, granted: Epoch) -> bool {
        let latest = self.sessions.get(&claim.session).map(|r| r.epoch);
        let waiting = self.takeovers.get(&claim.session).and_then(|w| w.claim.granted);
        granted.generation >= self.table_generation_of(&claim.session)
            && latest.is_none_or(|latest| granted > latest)
            && waiting.is_none_or(|waiting| granted > waiting)
    }

    /// Grants the waiting claims whose session's connection has ended, and
    /// those past their deadline. Returns the next deadline.
    pub(super) fn resume_takeovers(&mut self, now: UnixMillis, out: &mut Vec<Effect>) -> Option<UnixMillis> {
        if self.takeovers.is_empty() {
            return None;
        }
        let due: Vec<_> = self
            .takeovers
            .iter()
            .filter(|(session, pending)| {
                pending.deadline <= now || self.sessions.get(*session).is_none_or(|r| r.owner.is_none())
            })
            .map(|(session, _)| session.clone())
            .collect();
        for session in due {
            if let Some(pending) = self.takeovers.remove(&session) {
                self.claim_now(pending.gateway, pending.claim, true, now, out);
            }
        }
        self.takeovers.values().map(|pending| pending.deadline).min()
    }

    /// Forgets the claims `gateway` is waiting for: its link dropped, and it
    /// asks again on its next one.
    pub(super) fn forget_takeovers_of(&mut self, gateway: NodeId) {
        self.takeovers.retain(|_, pending| pending.gateway != gateway);
    }
}
