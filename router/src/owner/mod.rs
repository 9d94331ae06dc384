//! The registry shards one router owns (ADR 0033, slices 2 and 3): for
//! each session of those shards, the gateway holding it and its epoch.
//! Pure: items and time in, effects out; `registry_link` is its shell.
//!
//! ```text
//!  claim ──▶ epoch (shard generation, counter) ──▶ the previous holder is revoked
//!  release ──▶ a transient session ends (its will is published), a persistent one goes offline
//!  claim taken over before the gateway says it was accepted ──▶ its will waits for that
//!  shard taken (new generation) ──▶ empty ──▶ gateways list what they hold ──▶ rebuilt
//!  gateway's link drops ──▶ lease ──▶ listed again, or its sessions end
//! ```
//!
//! The owner serialises the claims of its sessions and is the only one to
//! grant their epochs. Persistent sessions are attached at the leader as
//! well, with the epoch granted here; their wills stay with the leader.
//! Transient sessions' wills are here (the leader still tracks the
//! sessions themselves, ADR 0033 slice 3).

use herald_core::{Epoch, NodeId, SessionKey, ShardGenerations, ShardId, UnixMillis};
use herald_proto::seam::{Claim, Reattach, Release, Will};
use std::collections::{BTreeSet, HashMap, HashSet};

mod online;
mod registry;
pub use online::AppOnline;
#[cfg(test)]
pub(crate) mod tests;

/// What the owner asks of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerEffect {
    /// `gateway`'s connection for `session` at `epoch` lost the session:
    /// it ends (DISCONNECT 0x8E) and delivers nothing more for it.
    Revoke {
        /// The gateway holding the connection.
        gateway: NodeId,
        /// The session.
        session: SessionKey,
        /// The epoch the connection holds.
        epoch: Epoch,
    },
    /// A transient session ended: its will is published (through the
    /// leader, as any publish).
    PublishWill {
        /// The session whose will it is.
        session: SessionKey,
        /// The will.
        will: Box<Will>,
    },
}

/// Why the owner did not take an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The session's shard is not owned here; the table names `owner`
    /// (0: nobody yet).
    NotOwner {
        /// The owner the table names.
        owner: u64,
    },
    /// A release or listing with an epoch that is not the session's latest.
    Stale,
}

/// What a granted claim is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The session's new epoch.
    pub epoch: Epoch,
    /// Whether the session is persistent (it asks for an expiry, or one
    /// exists that a clean start must end): the gateway attaches it at the
    /// leader with `epoch`.
    pub persistent: bool,
}

/// Where a session is, for a delivery by client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// Online, on `gateway`, at `epoch`.
    Online {
        /// The gateway holding its connection.
        gateway: NodeId,
        /// The connection's epoch: the gateway drops a copy for another.
        epoch: Epoch,
        /// Since when it is online.
        since: UnixMillis,
    },
    /// A persistent session offline: its inbox is at the leader.
    Offline,
    /// No session of that key.
    Unknown,
    /// The shard is being rebuilt: some gateway has not listed its
    /// sessions yet; ask again.
    Rebuilding,
    /// The shard is not owned here.
    NotOwner {
        /// The owner the table names.
        owner: u64,
    },
}

/// What the owners said of a push's devices before it is applied.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    /// Where each device named one by one, or by a tag, is.
    pub sessions: HashMap<SessionKey, Located>,
    /// For pushes to everyone: how many online sessions of their app each
    /// gateway holds, for each app whose every shard's owner answered.
    pub everyone: HashMap<herald_core::AppId, HashMap<NodeId, u64>>,
}

/// A session known here.
#[derive(Debug, Clone)]
struct Entry {
    /// The gateway holding its connection; `None`: a persistent session
    /// offline.
    gateway: Option<NodeId>,
    epoch: Epoch,
    persistent: bool,
    /// A transient session's will (a persistent session's is the leader's).
    will: Option<Box<Will>>,
    /// Whether its connection was accepted (the gateway said so, or listed
    /// it): only then is its will published when a newer claim takes it.
    accepted: bool,
    /// The gateway's number for the connection that claimed it (0: not
    /// said): a claim of the same connection again (its first answer was
    /// lost with a link) takes nothing over.
    connection: u64,
    /// Since when it is online (or offline), and its expiry interval, in
    /// seconds: what the registry in Redis shows.
    since: UnixMillis,
    expiry_seconds: u32,
}

/// The will of a claim taken over before its gateway said whether its
/// connection was accepted.
#[derive(Debug, Clone)]
struct PendingWill {
    gateway: NodeId,
    will: Box<Will>,
    since: UnixMillis,
}

/// How long a will waits for its connection's fate before it is published
/// (the gateway may have accepted the connection and died): longer than
/// any claim waits for the leader.
pub const PENDING_WILL_PATIENCE_MS: u64 = 30_000;
/// Wills waiting for their connection's fate, at most; beyond, a will is
/// published at once, as if its connection had been accepted (a will is
/// never dropped unseen).
pub const PENDING_WILLS: usize = 65_536;

/// A shard owned here.
#[derive(Debug, Clone)]
struct Owned {
    generation: u64,
    /// Gateways that have not listed their sessions of this shard since it
    /// was taken: until they have (or their lease ended), a session of the
    /// shard that is not known here may be online on one of them.
    unlisted: BTreeSet<NodeId>,
    /// Sessions claimed since the shard was taken, while some gateway had
    /// not listed yet: a listing of one with an earlier generation's epoch
    /// is stale, even if the session ended since.
    claimed: HashSet<SessionKey>,
}

/// The registry shards one router owns, and their sessions.
#[derive(Debug)]
pub struct ShardOwner {
    node: u64,
    lease_ms: u64,
    owners: Vec<u64>,
    shards: HashMap<ShardId, Owned>,
    sessions: HashMap<SessionKey, Entry>,
    counter: u64,
    /// Gateways linked now.
    linked: HashSet<NodeId>,
    /// Until when a gateway may list what it holds: one whose link dropped,
    /// or one a shard taken here waits for.
    leases: HashMap<NodeId, UnixMillis>,
    /// Sessions a gateway listed or claimed since its link opened, until its
    /// list ends (`last`).
    listing: HashMap<NodeId, HashSet<SessionKey>>,
    /// Whether a table with owners was seen: the first one names what an
    /// earlier process of this router owned.
    seen_table: bool,
    /// Shards the table gave this router before this process saw it, at
    /// the generation it gave them: an earlier process may have granted
    /// epochs of that generation, so they are not served here until an
    /// event gives them a new one (the leader restarts them).
    inherited: HashMap<ShardId, u64>,
    /// Wills of claims taken over before their connection's fate was known.
    pending_wills: HashMap<(SessionKey, Epoch), PendingWill>,
    /// Claims with a will granted here, oldest first: one still not
    /// settled after [`PENDING_WILL_PATIENCE_MS`] was given up (its
    /// gateway settles on a live link, and lists an accepted connection
    /// on a new one), and ends without its will.
    unsettled: std::collections::VecDeque<(UnixMillis, SessionKey, Epoch)>,
    /// Sessions changed since the registry in Redis was last written, while
    /// one is kept (`registry.rs`).
    changed: crate::state::Changes,
}

impl ShardOwner {
    /// The owner on router `node`, with gateway leases of `lease_ms`.
    /// It owns nothing until [`ShardOwner::set_table`].
    pub fn new(node: u64, lease_ms: u64) -> ShardOwner {
        ShardOwner {
            node,
            lease_ms,
            owners: Vec::new(),
            shards: HashMap::new(),
            sessions: HashMap::new(),
            counter: 0,
            linked: HashSet::new(),
            leases: HashMap::new(),
            listing: HashMap::new(),
            seen_table: false,
            inherited: HashMap::new(),
            pending_wills: HashMap::new(),
            unsettled: std::collections::VecDeque::new(),
            changed: Default::default(),
        }
    }

    /// The shard table changed (`owners[shard]`, each shard's generation).
    /// A shard that became this router's, or is this router's at a new
    /// generation (it restarted, or came back), starts empty and waits for
    /// every gateway in `known` (the cluster's gateways, replicated) to list
    /// its sessions; one not linked now has a lease to do so. A shard that
    /// went elsewhere is forgotten: its new owner rebuilds it. The shards the
    /// first table with owners gives this router are inherited from an
    /// earlier process: not served until a later table restarts them.
    /// Returns whether a shard was taken or restarted here.
    pub fn set_table(
        &mut self,
        owners: &[u64],
        generations: &ShardGenerations,
        known: &BTreeSet<NodeId>,
        now: UnixMillis,
    ) -> bool {
        self.owners = owners.to_vec();
        let first = !self.seen_table && owners.iter().any(|&owner| owner != 0);
        self.seen_table |= first;
        let mut taken = false;
        for shard in ShardId::all() {
            let mine = owners.get(shard.index()) == Some(&self.node);
            let generation = generations.get(shard);
            if mine && (first || self.inherited.get(&shard) == Some(&generation)) {
                self.inherited.insert(shard, generation);
                continue;
            }
            self.inherited.remove(&shard);
            match self.shards.get(&shard) {
                Some(owned) if mine && owned.generation == generation => {}
                _ if mine => {
                    taken = true;
                    self.sessions.retain(|session, _| ShardId::of(session) != shard);
                    let owned = Owned { generation, unlisted: known.clone(), claimed: HashSet::new() };
                    self.shards.insert(shard, owned);
                }
                Some(_) => {
                    self.shards.remove(&shard);
                    self.sessions.retain(|session, _| ShardId::of(session) != shard);
                }
                None => {}
            }
        }
        if taken {
            // Every gateway has a lease to list what it holds of them.
            let until = UnixMillis(now.0 + self.lease_ms);
            for gateway in known {
                self.leases.entry(*gateway).or_insert(until);
            }
        }
        taken
    }

    /// How many shards are owned here.
    pub fn owned(&self) -> usize {
        self.shards.len()
    }

    /// Moves the epoch counter ahead before a claim the leader refused
    /// `stale_refusals` times as stale: the session's epoch there is the
    /// leader's own (a gateway of an earlier version claimed it), above
    /// this counter. The jump grows fourfold with each refusal, so a few
    /// refusals pass any counter.
    pub fn jump_counter(&mut self, stale_refusals: u32) {
        if stale_refusals > 0 {
            self.counter = self.counter.saturating_add(1 << (2 * stale_refusals.min(30)));
        }
    }

    /// How many shards the table gives this router that it does not serve:
    /// inherited from an earlier process, waiting for the leader to restart
    /// them.
    pub fn inherited(&self) -> usize {
        self.inherited.len()
    }

    /// How many sessions are known here.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn shard(&self, session: &SessionKey) -> Result<(ShardId, u64), Refused> {
        let shard = ShardId::of(session);
        match self.shards.get(&shard) {
            Some(owned) => Ok((shard, owned.generation)),
            None => Err(Refused::NotOwner { owner: self.owners.get(shard.index()).copied().unwrap_or(0) }),
        }
    }

    /// Grants `claim` from `gateway`: a new epoch of the session's shard,
    /// taking the session from whichever connection held it.
    /// `durable_persistent` says whether the replicated state holds a
    /// persistent session of that key.
    pub fn claim(
        &mut self,
        gateway: NodeId,
        claim: &Claim,
        durable_persistent: bool,
        now: UnixMillis,
        out: &mut Vec<OwnerEffect>,
    ) -> Result<Granted, Refused> {
        self.claim_of(gateway, 0, claim, durable_persistent, now, out)
    }

    /// [`ShardOwner::claim`] by connection `claim_connection` of `gateway`
    /// (its own number; 0: not said): the same connection claiming again
    /// (its first answer was lost with a link, or the leader refused it and
    /// its "given up" was lost) takes over its own claim without a will.
    pub fn claim_of(
        &mut self,
        gateway: NodeId,
        claim_connection: u64,
        claim: &Claim,
        durable_persistent: bool,
        now: UnixMillis,
        out: &mut Vec<OwnerEffect>,
    ) -> Result<Granted, Refused> {
        let (shard, generation) = self.shard(&claim.session)?;
        if let Some(owned) = self.shards.get_mut(&shard).filter(|o| !o.unlisted.is_empty()) {
            owned.claimed.insert(claim.session.clone());
        }
        if let Some(listing) = self.listing.get_mut(&gateway) {
            listing.insert(claim.session.clone());
        }
        self.counter += 1;
        let epoch = Epoch::new(generation, self.counter);
        let mut persistent = claim.expiry_seconds > 0 || durable_persistent;
        if let Some(old) = self.sessions.remove(&claim.session) {
            persistent |= old.persistent;
            if let Some(holder) = old.gateway {
                // Takeover: the old connection must end [MQTT-3.1.4-3].
                out.push(OwnerEffect::Revoke {
                    gateway: holder,
                    session: claim.session.clone(),
                    epoch: old.epoch,
                });
            }
            let again =
                old.gateway == Some(gateway) && old.connection != 0 && old.connection == claim_connection;
            if let Some(will) = old.will.filter(|_| !again) {
                // A transient session ends with its connection's takeover:
                // its will is published now [MQTT-3.1.3-9], if that
                // connection was accepted; else once its gateway says it was.
                match old.gateway.filter(|_| !old.accepted) {
                    Some(holder) => self.hold_will(&claim.session, old.epoch, holder, will, now, out),
                    None => out.push(OwnerEffect::PublishWill { session: claim.session.clone(), will }),
                }
            }
        }
        // A claim without expiry is transient from now on (one that ends a
        // persistent session too, which the leader ends): its will is here.
        let will = if claim.expiry_seconds == 0 { claim.will.clone() } else { None };
        // Only a claim with a will waits to be settled (nothing else
        // depends on it): the gateway settles no other.
        let accepted = will.is_none();
        if !accepted {
            self.unsettled.push_back((now, claim.session.clone(), epoch));
        }
        let entry = Entry {
            gateway: Some(gateway),
            epoch,
            persistent: claim.expiry_seconds > 0,
            will,
            accepted,
            connection: claim_connection,
            since: now,
            expiry_seconds: claim.expiry_seconds,
        };
        self.touched(&claim.session);
        self.sessions.insert(claim.session.clone(), entry);
        Ok(Granted { epoch, persistent })
    }

    /// Keeps the will of a claim taken over until its gateway says whether
    /// its connection was accepted; when too many wait, publishes it now.
    fn hold_will(
        &mut self,
        session: &SessionKey,
        epoch: Epoch,
        gateway: NodeId,
        will: Box<Will>,
        now: UnixMillis,
        out: &mut Vec<OwnerEffect>,
    ) {
        if self.pending_wills.len() >= PENDING_WILLS {
            out.push(OwnerEffect::PublishWill { session: session.clone(), will });
            return;
        }
        self.pending_wills.insert((session.clone(), epoch), PendingWill { gateway, will, since: now });
    }

    /// `gateway` says what became of its claim of `session` at `epoch`:
    /// its connection was `accepted` (CONNACK sent), or the claim was given
    /// up (the leader refused it, or it timed out). An accepted connection
    /// whose claim was taken over meanwhile has its will published; a given
    /// up claim ends without one.
    pub fn settled(
        &mut self,
        gateway: NodeId,
        session: &SessionKey,
        epoch: Epoch,
        accepted: bool,
        out: &mut Vec<OwnerEffect>,
    ) -> Result<(), Refused> {
        // A will waiting here may be of a shard that moved since: the
        // gateway tells the owner that granted the claim.
        if let Some(pending) = self.pending_wills.remove(&(session.clone(), epoch)) {
            if pending.gateway != gateway {
                self.pending_wills.insert((session.clone(), epoch), pending);
                return Err(Refused::Stale);
            }
            if accepted {
                out.push(OwnerEffect::PublishWill { session: session.clone(), will: pending.will });
            }
            return Ok(());
        }
        self.shard(session)?;
        match self.sessions.get_mut(session) {
            Some(entry) if entry.gateway == Some(gateway) && entry.epoch == epoch => {
                if accepted {
                    entry.accepted = true;
                    // Held from now on: a list being sent may have been
                    // read before its connection was.
                    if let Some(listing) = self.listing.get_mut(&gateway) {
                        listing.insert(session.clone());
                    }
                } else {
                    self.touched(session);
                    self.sessions.remove(session);
                }
                Ok(())
            }
            _ => Err(Refused::Stale),
        }
    }

    /// How many wills wait for their connection's fate.
    #[cfg(test)]
    pub(crate) fn pending_wills(&self) -> usize {
        self.pending_wills.len()
    }

    /// Ends `release`'s connection, held by `gateway`: a transient session
    /// ends (its will published if the release asks), a persistent one goes
    /// offline. A release of an older epoch changes nothing.
    pub fn release(
        &mut self,
        gateway: NodeId,
        release: &Release,
        now: UnixMillis,
        out: &mut Vec<OwnerEffect>,
    ) -> Result<(), Refused> {
        self.shard(&release.session)?;
        let Some(entry) = self.sessions.get_mut(&release.session) else { return Err(Refused::Stale) };
        if entry.gateway != Some(gateway) || entry.epoch != release.epoch {
            return Err(Refused::Stale);
        }
        if entry.persistent && release.expiry_seconds > 0 {
            (entry.gateway, entry.since, entry.expiry_seconds) = (None, now, release.expiry_seconds);
            self.touched(&release.session);
            return Ok(());
        }
        self.touched(&release.session);
        let ended = self.sessions.remove(&release.session).and_then(|e| e.will);
        if let Some(will) = ended.filter(|_| release.publish_will) {
            out.push(OwnerEffect::PublishWill { session: release.session.clone(), will });
        }
        Ok(())
    }

    /// The leader ended persistent session `session` (it expired, or a
    /// clean start ended it): it is forgotten here unless a connection
    /// holds it or it went offline again since `before`.
    pub fn forget_offline(&mut self, session: &SessionKey, before: UnixMillis) {
        if self.sessions.get(session).is_some_and(|e| e.gateway.is_none() && e.since < before) {
            self.touched(session);
            self.sessions.remove(session);
        }
    }

    /// `gateway` lists sessions it holds (on a link opened again, or for a
    /// shard taken here). Each is kept with the epoch it holds when it is
    /// the session's latest, or, on the gateway's first listing since the
    /// shard was taken, when nobody claimed the session here since and the
    /// epoch is of an earlier generation of its shard (granted before the
    /// shard came here); otherwise it is revoked (and, taken over before it
    /// was listed, its will published). `last` ends the list:
    /// sessions the gateway held here and did not list end as if their
    /// connections had dropped. Returns the sessions of shards not owned
    /// here, with their owners, for the gateway to list there.
    pub fn relist(
        &mut self,
        gateway: NodeId,
        sessions: Vec<Reattach>,
        last: bool,
        now: UnixMillis,
        out: &mut Vec<OwnerEffect>,
    ) -> Vec<(SessionKey, u64)> {
        let mut elsewhere = Vec::new();
        for held in sessions {
            let (shard, generation) = match self.shard(&held.session) {
                Ok(found) => found,
                Err(Refused::NotOwner { owner }) => {
                    elsewhere.push((held.session, owner));
                    continue;
                }
                Err(Refused::Stale) => continue,
            };
            if let Some(listing) = self.listing.get_mut(&gateway) {
                listing.insert(held.session.clone());
            }
            let owned = &self.shards[&shard];
            let first = held.epoch.generation < generation && owned.unlisted.contains(&gateway);
            let claimed_since = owned.claimed.contains(&held.session);
            let kept = match self.sessions.get(&held.session) {
                Some(entry) if entry.gateway == Some(gateway) && entry.epoch == held.epoch => true,
                // Two gateways list it after the take (a revocation was lost
                // with the old owner): the newer connection keeps it, the
                // older one is revoked (its will was the old owner's to
                // publish when the newer claim took it).
                Some(entry)
                    if first
                        && !claimed_since
                        && entry.epoch.generation < generation
                        && held.epoch > entry.epoch =>
                {
                    if let Some(older) = entry.gateway {
                        let (session, epoch) = (held.session.clone(), entry.epoch);
                        out.push(OwnerEffect::Revoke { gateway: older, session, epoch });
                    }
                    self.sessions.remove(&held.session);
                    true
                }
                Some(_) => false,
                None => first && !claimed_since,
            };
            if !kept {
                // Granted before the shard came here and taken over since,
                // before its gateway listed it: its will was not here when
                // the newer claim took it, so it goes now.
                if let Some(will) = held.will.filter(|_| first && claimed_since && held.expiry_seconds == 0) {
                    out.push(OwnerEffect::PublishWill { session: held.session.clone(), will });
                }
                out.push(OwnerEffect::Revoke { gateway, session: held.session, epoch: held.epoch });
                continue;
            }
            let will = held.will.filter(|_| held.expiry_seconds == 0);
            self.touched(&held.session);
            let entry = self.sessions.entry(held.session).or_insert(Entry {
                gateway: Some(gateway),
                epoch: held.epoch,
                persistent: held.expiry_seconds > 0,
                will: None,
                accepted: true,
                connection: 0,
                since: now,
                expiry_seconds: held.expiry_seconds,
            });
            // A gateway lists only connections it accepted.
            entry.accepted = true;
            if entry.will.is_none() {
                entry.will = will;
            }
        }
        if last {
            let listed = self.listing.remove(&gateway);
            self.listed(gateway, listed, now, out);
        }
        elsewhere
    }

    /// `gateway` has listed what it holds, or its lease ended: no shard
    /// waits for it. After a link opened again (`listed`: what it listed and
    /// claimed since), or when it is gone (`None`, not linked), the sessions
    /// it held here and did not list end.
    fn listed(
        &mut self,
        gateway: NodeId,
        listed: Option<HashSet<SessionKey>>,
        now: UnixMillis,
        out: &mut Vec<OwnerEffect>,
    ) {
        self.leases.remove(&gateway);
        for owned in self.shards.values_mut() {
            owned.unlisted.remove(&gateway);
            if owned.unlisted.is_empty() {
                owned.claimed = HashSet::new();
            }
        }
        if listed.is_none() && self.linked.contains(&gateway) {
            // Linked all along: what it holds here is as it was.
            return;
        }
        // A gateway that listed again still holds the claims it has not
        // settled (their connections wait for the leader, so are not
        // listed); a gateway gone holds nothing.
        let relisted = listed.is_some();
        let listed = listed.unwrap_or_default();
        let gone: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(session, entry)| {
                entry.gateway == Some(gateway) && !listed.contains(*session) && (entry.accepted || !relisted)
            })
            .map(|(session, _)| session.clone())
            .collect();
        for session in gone {
            self.dropped(&session, now, out);
        }
    }

    /// A session's connection is gone without a release: a transient
    /// session ends and its will is published; a persistent one goes
    /// offline (the leader publishes its will).
    fn dropped(&mut self, session: &SessionKey, now: UnixMillis, out: &mut Vec<OwnerEffect>) {
        let Some(entry) = self.sessions.get_mut(session) else { return };
        if entry.persistent {
            (entry.gateway, entry.since) = (None, now);
            self.touched(session);
            return;
        }
        self.touched(session);
        if let Some(will) = self.sessions.remove(session).and_then(|e| e.will) {
            out.push(OwnerEffect::PublishWill { session: session.clone(), will });
        }
    }

    /// `gateway`'s link opened: it lists its sessions next.
    pub fn gateway_linked(&mut self, gateway: NodeId) {
        self.linked.insert(gateway);
        self.listing.insert(gateway, HashSet::new());
    }

    /// `gateway`'s link dropped at `now`: its sessions stay its own for a
    /// lease, waiting for it to link again and list them.
    pub fn gateway_unlinked(&mut self, gateway: NodeId, now: UnixMillis) {
        self.linked.remove(&gateway);
        self.listing.remove(&gateway);
        self.leases.insert(gateway, UnixMillis(now.0 + self.lease_ms));
    }

    /// Ends the leases due at `now`: a gateway that did not end its list
    /// in time loses the sessions it did not list, and no shard waits for
    /// it. Returns the next lease's end.
    pub fn tick(&mut self, now: UnixMillis, out: &mut Vec<OwnerEffect>) -> Option<UnixMillis> {
        let due: Vec<NodeId> =
            self.leases.iter().filter(|(_, until)| **until <= now).map(|(g, _)| *g).collect();
        for gateway in due {
            let listed = self.listing.remove(&gateway);
            self.listed(gateway, listed, now, out);
        }
        // A will whose connection's fate never came (its gateway may have
        // accepted it and died) is published.
        let overdue: Vec<(SessionKey, Epoch)> = self
            .pending_wills
            .iter()
            .filter(|(_, p)| now.0 >= p.since.0 + PENDING_WILL_PATIENCE_MS)
            .map(|(key, _)| key.clone())
            .collect();
        for key in overdue {
            if let Some(pending) = self.pending_wills.remove(&key) {
                out.push(OwnerEffect::PublishWill { session: key.0, will: pending.will });
            }
        }
        while let Some((since, _, _)) = self.unsettled.front() {
            if now.0 < since.0 + PENDING_WILL_PATIENCE_MS {
                break;
            }
            let Some((_, session, epoch)) = self.unsettled.pop_front() else { break };
            if self.sessions.get(&session).is_some_and(|e| e.epoch == epoch && !e.accepted) {
                self.touched(&session);
                self.sessions.remove(&session);
            }
        }
        self.leases.values().min().copied()
    }

    /// The gateways linked here or holding sessions of its shards, with
    /// how many online sessions of its shards each holds (`herald ctl
    /// cluster status` sums them over the routers).
    pub fn online_per_gateway(&self) -> Vec<(u64, usize)> {
        let mut counts: std::collections::BTreeMap<u64, usize> =
            self.linked.iter().map(|gateway| (gateway.0, 0)).collect();
        for entry in self.sessions.values() {
            if let Some(gateway) = entry.gateway {
                *counts.entry(gateway.0).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }

    /// Where `session` is, for a delivery by client id.
    pub fn locate(&self, session: &SessionKey) -> Located {
        let shard = ShardId::of(session);
        let Some(owned) = self.shards.get(&shard) else {
            return Located::NotOwner { owner: self.owners.get(shard.index()).copied().unwrap_or(0) };
        };
        match self.sessions.get(session) {
            Some(Entry { gateway: Some(gateway), epoch, since, .. }) => {
                Located::Online { gateway: *gateway, epoch: *epoch, since: *since }
            }
            Some(_) => Located::Offline,
            None if owned.unlisted.is_empty() => Located::Unknown,
            None => Located::Rebuilding,
        }
    }
}
