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

/// The sessions marked changed since the registry's external store last
/// took them; nothing is marked until tracking starts (there is a store).
#[derive(Debug, Default)]
pub struct Changes(Option<HashSet<SessionKey>>);

impl Changes {
    /// Starts marking.
    pub fn track(&mut self) {
        self.0.get_or_insert_with(HashSet::new);
    }

    /// Marks `session` (when tracking).
    pub fn mark(&mut self, session: &SessionKey) {
        if let Some(changed) = &mut self.0 {
            changed.insert(session.clone());
        }
    }

    /// The sessions marked since the last call, unmarked.
    pub fn take(&mut self) -> HashSet<SessionKey> {
        self.0.as_mut().map(std::mem::take).unwrap_or_default()
    }
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
        self.registry_dirty.track();
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
        self.registry_dirty.mark(session);
    }

    /// The sessions whose ownership changed since the last call, each as it
    /// is now.
    pub fn take_registry_changes(&mut self) -> Vec<RegistryEntry> {
        let dirty = self.registry_dirty.take();
        dirty.into_iter().map(|session| self.registry_entry(session)).collect()
    }

    /// Every session the router knows, as it is now; what was marked
    /// changed is covered by it.
    pub fn registry_snapshot(&mut self) -> Vec<RegistryEntry> {
        self.registry_dirty.take();
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
