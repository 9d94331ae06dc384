//! The session registry as readers outside the router see it: which
//! gateway holds each session, at which epoch (ADR 0029). The state marks
//! the sessions whose ownership changed; the shell takes them after each
//! batch and writes them to the registry's external store.

use super::RouterState;
use herald_core::{Epoch, NodeId, SessionKey, ShardGenerations, UnixMillis};
use std::collections::HashSet;

/// One session's registry entry, as it is when taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// The session.
    pub session: SessionKey,
    /// Its record; `None`: the session ended (nothing to keep).
    pub held: Option<Holder>,
}

/// Who holds a session known to the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The gateway holding its connection; `None`: a persistent session
    /// offline.
    pub gateway: Option<NodeId>,
    /// The latest epoch granted.
    pub epoch: Epoch,
    /// Since when it is online (or offline).
    pub since: UnixMillis,
    /// Its session expiry interval, in seconds.
    pub expiry_seconds: u32,
}

impl RouterState {
    /// Starts marking the sessions whose ownership changes, for
    /// [`RouterState::take_registry_changes`].
    pub fn track_registry(&mut self) {
        self.registry_dirty.get_or_insert_with(HashSet::new);
    }

    /// The highest generation of any registry shard.
    pub fn generation(&self) -> u64 {
        self.generations.high_water()
    }

    /// Each registry shard's generation: the fence of this router's writes
    /// to the registry's external store.
    pub fn generations(&self) -> &ShardGenerations {
        &self.generations
    }

    /// Marks `session`'s ownership as changed (when tracked).
    pub(super) fn registry_changed(&mut self, session: &SessionKey) {
        if let Some(dirty) = &mut self.registry_dirty {
            dirty.insert(session.clone());
        }
    }

    /// The sessions whose ownership changed since the last call, each as it
    /// is now.
    pub fn take_registry_changes(&mut self) -> Vec<RegistryEntry> {
        let Some(dirty) = self.registry_dirty.as_mut().filter(|d| !d.is_empty()) else { return Vec::new() };
        let dirty = std::mem::take(dirty);
        dirty.into_iter().map(|session| self.registry_entry(session)).collect()
    }

    /// Every session the router knows, as it is now; what was marked
    /// changed is covered by it.
    pub fn registry_snapshot(&mut self) -> Vec<RegistryEntry> {
        if let Some(dirty) = &mut self.registry_dirty {
            dirty.clear();
        }
        self.sessions
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .map(|s| self.registry_entry(s))
            .collect()
    }

    fn registry_entry(&self, session: SessionKey) -> RegistryEntry {
        let held = self.sessions.get(&session).map(|record| Holder {
            gateway: record.owner,
            // A session restored and not claimed since: the epoch of its
            // last claim, which its connection still holds.
            epoch: record.restored_from().unwrap_or(record.epoch),
            since: record.since,
            expiry_seconds: record.expiry_seconds,
        });
        RegistryEntry { session, held }
    }
}
