//! Gateway leases: what happens to a gateway's sessions between its link
//! dropping and the gateway coming back (or not).
//!
//! ```text
//!   link drops ──▶ unlinked: routes removed, persistent sessions offline
//!                  (queueing), transient ones still owned, wills held
//!        │
//!        ├─ the gateway links again: Reattach … last ──▶ sessions taken back
//!        │                                               with their epochs
//!        └─ the lease runs out (or `last` omits them) ──▶ sessions end as if
//!                                                         their connections dropped
//! ```
//!
//! A router that takes over (a new leader, or a restart) knows no lease:
//! sessions that were online are restored offline with a zero counter in
//! the new generation, and a gateway that still holds one with an older
//! epoch takes it back the same way.

use super::{Effect, RouterState};
use herald_core::{Epoch, NodeId, SessionKey, UnixMillis};
use herald_proto::journal::Fact;
use herald_proto::seam::{Downlink, Reattach, Release};
use std::collections::HashMap;

/// Whether a gateway whose lease ends came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Back {
    /// It linked again and listed what it holds.
    Yes,
    /// Its lease ran out, or it is gone for good.
    No,
}

/// The sessions of a gateway whose link dropped, kept for it until `until`.
#[derive(Debug)]
pub(super) struct Lease {
    until: UnixMillis,
    sessions: HashMap<SessionKey, Epoch>,
}

impl RouterState {
    /// A gateway's link dropped at `now`. Its routes go at once (nothing
    /// can reach it); its persistent sessions go offline, so what is
    /// published for them queues; its transient sessions stay its own.
    /// Their wills wait for the lease: the gateway may link again and take
    /// every session back ([`RouterState::apply`] with `Uplink::Reattach`).
    pub fn gateway_unlinked(&mut self, gateway: NodeId, now: UnixMillis, out: &mut Vec<Effect>) {
        self.ack_gateways.remove(&gateway);
        self.legacy_gateways.remove(&gateway);
        self.forget_takeovers_of(gateway);
        let owned = self.gateway_routes.remove(&gateway).unwrap_or_default();
        self.change_routes(gateway, Vec::new(), owned.into_iter().collect(), out);
        let held: Vec<(SessionKey, Epoch, u32)> = self
            .sessions
            .iter()
            .filter(|(_, record)| record.owner == Some(gateway))
            .map(|(key, record)| (key.clone(), record.epoch, record.expiry_seconds))
            .collect();
        let until = UnixMillis(now.0 + self.config.gateway_lease_ms);
        let lease = self.leases.entry(gateway).or_insert_with(|| Lease { until, sessions: HashMap::new() });
        self.lease_timers.remove(&(lease.until, gateway));
        lease.until = until;
        self.lease_timers.insert((until, gateway));
        lease.sessions.extend(held.iter().map(|(session, epoch, _)| (session.clone(), *epoch)));
        for (session, epoch, expiry_seconds) in held {
            if expiry_seconds > 0 {
                let release = Release {
                    request: 0,
                    session,
                    epoch,
                    expiry_seconds,
                    publish_will: false,
                    pending: Vec::new(),
                };
                let session = release.session.clone();
                self.end_connection(release, super::sessions::WillFate::Keep, now, out);
                self.connection_lost(&session);
                // Its connection may still be live: it does not expire
                // before the gateway has had its lease to come back.
                self.expire_no_sooner_than(&session, until);
            }
        }
        // Claims waiting for those connections to end wait no more.
        self.resume_takeovers(now, out);
    }

    /// A gateway is gone for good: its lease ends now.
    pub fn gateway_gone(&mut self, gateway: NodeId, now: UnixMillis, out: &mut Vec<Effect>) {
        self.gateway_unlinked(gateway, now, out);
        self.end_lease(gateway, Back::No, now, out);
    }

    /// A gateway linked. The first link of a gateway id is journaled: a
    /// router that takes over knows to wait for it. `acks`: whether it
    /// reports its clients' acknowledgements (ADR 0028).
    pub fn gateway_linked(&mut self, gateway: NodeId, acks: bool) {
        if self.known_gateways.insert(gateway) {
            self.journal.push(Fact::GatewayLinked(gateway));
        }
        if acks {
            self.legacy_gateways.remove(&gateway);
            self.ack_gateways.insert(gateway);
        } else {
            self.ack_gateways.remove(&gateway);
            self.legacy_gateways.insert(gateway);
        }
    }

    /// Whether the whole cluster is of this version: a gateway links that
    /// reports acknowledgements, and none that does not. Gateways are
    /// upgraded after every router (docs/operations.md), so the journal
    /// facts of this version (`SessionMeta`, `Acked`) are written only
    /// then.
    pub(super) fn cluster_current(&self) -> bool {
        !self.ack_gateways.is_empty() && self.legacy_gateways.is_empty()
    }

    /// Whether `gateway` reports acknowledgements (gateways never linked,
    /// as in tests of the state alone, are taken to).
    pub(super) fn reports_acks(&self, gateway: NodeId) -> bool {
        !self.legacy_gateways.contains(&gateway)
    }

    /// After a restore: every gateway the durable state knows gets a lease
    /// (it may still hold sessions), and publishes wait until each has
    /// linked again and listed its sessions, or its lease ended.
    pub(super) fn restore_gateways(&mut self, gateways: Vec<NodeId>, now: UnixMillis) {
        let until = UnixMillis(now.0 + self.config.gateway_lease_ms);
        for gateway in gateways {
            self.known_gateways.insert(gateway);
            self.settling.insert(gateway);
            self.leases.insert(gateway, Lease { until, sessions: HashMap::new() });
            self.lease_timers.insert((until, gateway));
        }
    }

    /// Routes the publishes held while gateways were settling, in order.
    fn release_held(&mut self, now: UnixMillis, out: &mut Vec<Effect>) {
        while let Some((gateway, item)) = self.held.pop_front() {
            self.apply_held(gateway, item, now, out);
        }
    }

    /// Ends every lease due at `now`; returns the next deadline.
    pub(super) fn expire_leases(&mut self, now: UnixMillis, out: &mut Vec<Effect>) -> Option<UnixMillis> {
        while let Some(&(at, gateway)) = self.lease_timers.first() {
            if at > now {
                return Some(at);
            }
            self.lease_timers.pop_first();
            if self.leases.get(&gateway).is_some_and(|lease| lease.until == at) {
                self.end_lease(gateway, Back::No, now, out);
            }
        }
        None
    }

    /// Takes back the sessions a gateway still holds, as it lists them on a
    /// link opened again. A session taken meanwhile by a newer claim is
    /// revoked on the gateway (DISCONNECT 0x8E for its client).
    pub(super) fn reattach(
        &mut self,
        gateway: NodeId,
        sessions: Vec<Reattach>,
        last: bool,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) {
        if !self.leases.contains_key(&gateway) {
            // A list this router did not see coming: it replaced the
            // gateway's link without seeing the old one end, or a new
            // process of the gateway linked. What the gateway owns is on
            // lease until the list ends; what it does not list then ends.
            let owned: HashMap<SessionKey, Epoch> = self
                .sessions
                .iter()
                .filter(|(_, record)| record.owner == Some(gateway))
                .map(|(key, record)| (key.clone(), record.epoch))
                .collect();
            let until = UnixMillis(now.0 + self.config.gateway_lease_ms);
            self.leases.insert(gateway, Lease { until, sessions: owned });
            self.lease_timers.insert((until, gateway));
        }
        for reattach in sessions {
            let session = reattach.session.clone();
            let epoch = reattach.epoch;
            let owned =
                self.sessions.get(&session).is_some_and(|r| r.owner == Some(gateway) && r.epoch == epoch);
            if owned {
                // The router never saw the link drop (it replaced the link).
                self.leave_lease(gateway, &session);
            } else if self.take_back(gateway, &session, epoch, now) {
                self.adopt(gateway, reattach, now, out);
            } else if !self.sessions.contains_key(&session) && epoch.generation < self.generation_of(&session)
            {
                // A session this router never knew (a transient one, from
                // before the registry moved here).
                self.adopt(gateway, reattach, now, out);
            } else {
                self.counters.stale_epoch_refused += 1;
                out.push((gateway, Downlink::Revoked { session, epoch }));
            }
        }
        if last {
            // Sessions the gateway no longer holds end now.
            self.end_lease(gateway, Back::Yes, now, out);
        }
    }

    /// Whether `gateway` may take `session` back at `epoch`: it held it when
    /// its link dropped and nobody claimed it since, or this router
    /// restored it from an older generation and nobody claimed it since.
    /// On success the session is the gateway's again, as it was before its
    /// link dropped (its queue stays where it is).
    pub(super) fn take_back(
        &mut self,
        gateway: NodeId,
        session: &SessionKey,
        epoch: Epoch,
        now: UnixMillis,
    ) -> bool {
        let leased = self.leases.get(&gateway).and_then(|lease| lease.sessions.get(session)) == Some(&epoch);
        let generation = self.generation_of(session);
        let restored = Epoch::new(generation, 0);
        let Some(record) = self.sessions.get(session) else { return false };
        // A restored record names the epoch of its last claim: only the
        // connection holding exactly that epoch takes it back.
        let last_claim = record.restored_from();
        let allowed = record.owner.is_none()
            && ((leased && record.epoch == epoch)
                || (record.epoch == restored
                    && epoch.generation < generation
                    && last_claim.is_none_or(|last| last == epoch)));
        if !allowed {
            return false;
        }
        self.leave_lease(gateway, session);
        self.resume_offline(gateway, session, epoch, now);
        true
    }

    fn leave_lease(&mut self, gateway: NodeId, session: &SessionKey) {
        if let Some(lease) = self.leases.get_mut(&gateway) {
            lease.sessions.remove(session);
        }
    }

    /// Ends a gateway's lease: every session it held and has not taken back
    /// ends as if its connection had dropped (wills after their delay).
    pub(super) fn end_lease(&mut self, gateway: NodeId, back: Back, now: UnixMillis, out: &mut Vec<Effect>) {
        if back == Back::No && self.known_gateways.remove(&gateway) {
            self.journal.push(Fact::GatewayGone(gateway));
        }
        if self.settling.remove(&gateway) && self.settling.is_empty() {
            self.release_held(now, out);
        }
        let Some(lease) = self.leases.remove(&gateway) else { return };
        self.lease_timers.remove(&(lease.until, gateway));
        for (session, epoch) in lease.sessions {
            let Some(record) = self.sessions.get(&session) else { continue };
            if record.epoch != epoch {
                continue;
            }
            match record.owner {
                Some(owner) if owner == gateway => {
                    let expiry_seconds = record.expiry_seconds;
                    let release = Release {
                        request: 0,
                        session,
                        epoch,
                        expiry_seconds,
                        publish_will: true,
                        pending: Vec::new(),
                    };
                    self.release(release, now, out);
                }
                None => self.schedule_will(&session, now, out),
                Some(_) => {}
            }
        }
    }
}
