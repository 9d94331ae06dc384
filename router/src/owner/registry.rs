//! What the registry in Redis holds of this owner's shards (ADR 0029, ADR
//! 0033): each router writes the sessions of the shards it owns, fenced by
//! its generation of each, so a router that lost a shard never overwrites
//! what its new owner wrote.

use super::ShardOwner;
use crate::state::{Holder, RegistryEntry};
use herald_core::{SessionKey, ShardGenerations, ShardId, UnixMillis};

impl ShardOwner {
    /// Starts marking the sessions that change, for
    /// [`ShardOwner::take_registry_changes`].
    pub fn track_registry(&mut self) {
        self.changed.track();
    }

    /// Marks `session` as changed (when tracked).
    pub(super) fn touched(&mut self, session: &SessionKey) {
        self.changed.mark(session);
    }

    /// The sessions of shards owned here that changed since the last call,
    /// each as it is now (`held: None`: it ended).
    pub fn take_registry_changes(&mut self) -> Vec<RegistryEntry> {
        let changed = self.changed.take();
        changed
            .into_iter()
            .filter(|session| self.shards.contains_key(&ShardId::of(session)))
            .map(|session| self.registry_entry(session))
            .collect()
    }

    /// Whether a shard owned here still waits for a gateway's list: what it
    /// knows of that shard is not whole yet.
    pub fn rebuilding(&self) -> bool {
        self.shards.values().any(|owned| !owned.unlisted.is_empty())
    }

    /// The generation of each shard owned here; 0 for the others, which
    /// this router does not write.
    pub fn owned_generations(&self) -> ShardGenerations {
        let mut generations = vec![0; ShardId::all().count()];
        for (shard, owned) in &self.shards {
            generations[shard.index()] = owned.generation;
        }
        ShardGenerations::from_table(generations)
    }

    /// Every session of the shards owned here, as it is now; the changes
    /// marked so far are covered by it.
    pub fn registry_snapshot(&mut self) -> Vec<RegistryEntry> {
        self.changed.take();
        let sessions: Vec<SessionKey> = self.sessions.keys().cloned().collect();
        sessions.into_iter().map(|session| self.registry_entry(session)).collect()
    }

    /// The persistent sessions offline here since before `before` (their
    /// connection released them, or their gateway was lost): the sweep
    /// forgets those the replicated state no longer holds (they expired, or
    /// a clean start ended them). A later one may not have reached this
    /// router's copy of the replicated state yet.
    pub fn offline_sessions(&self, before: UnixMillis) -> Vec<SessionKey> {
        self.sessions
            .iter()
            .filter(|(_, entry)| entry.gateway.is_none() && entry.since < before)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Whether `session` is known here (online, or offline).
    pub fn knows(&self, session: &SessionKey) -> bool {
        self.sessions.contains_key(session)
    }

    fn registry_entry(&self, session: SessionKey) -> RegistryEntry {
        let held = self.sessions.get(&session).map(|entry| Holder {
            gateway: entry.gateway,
            epoch: entry.epoch,
            since: entry.since,
            expiry_seconds: entry.expiry_seconds,
        });
        RegistryEntry { session, held }
    }
}
