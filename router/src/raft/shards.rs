//! The registry shard table (ADR 0033), part of the replicated state: for
//! every registry shard, the router that owns it and its generation, the
//! first half of every epoch granted for the shard's sessions.
//!
//! A shard event (created, moved, restarted) is one committed command that
//! names the shards it changes and bumps each one's generation past every
//! generation any shard had before, so epochs never go backwards. Clusters
//! created before the table have one generation for the whole registry
//! ([`Command::NextGeneration`](super::Command)): it stays the floor of
//! every shard's generation.

use herald_core::REGISTRY_SHARDS;
use herald_proto::grpc::pb::StatusReply;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The Raft commands a router of this version applies, as it tells its
/// peers (`StatusReply.raft_commands`): 1, the generation, the journal and
/// restores; 2, shard events too. A leader proposes a shard event only once
/// every voter applies them.
pub const RAFT_COMMANDS: u32 = 2;

/// Whether each of `peers` answered (`answers`) that it applies shard
/// events. A peer that did not answer may run an older version: no.
pub(super) fn every_peer_applies_shard_events(
    peers: &BTreeMap<u64, String>,
    answers: &[StatusReply],
) -> bool {
    peers.keys().all(|id| answers.iter().any(|a| a.node_id == *id && a.raft_commands >= RAFT_COMMANDS))
}

/// What a router tells gateways of the registry: its copy of the shard
/// table and the routers of the membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableView {
    /// The shard table; `None` while the cluster has none.
    pub table: Option<ShardTable>,
    /// The routers, by node id, with their `host:port`.
    pub routers: BTreeMap<u64, String>,
    /// The gateways the cluster knows (linked and not gone): a shard taken
    /// by a router waits for each to list what it holds.
    pub gateways: std::collections::BTreeSet<herald_core::NodeId>,
    /// The last log index applied to the copy it was read from.
    pub applied_index: u64,
}

/// Each shard's owner and generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTable {
    /// The owning router's node id, per shard (0: none yet).
    pub owners: Vec<u64>,
    /// The generation, per shard.
    pub generations: Vec<u64>,
}

impl ShardTable {
    /// A table whose shards are owned by no one, at `generation`.
    pub fn new(generation: u64) -> ShardTable {
        let shards = usize::from(REGISTRY_SHARDS);
        ShardTable { owners: vec![0; shards], generations: vec![generation; shards] }
    }

    /// Gives `shards` to `owner`, each at a generation above `floor` and
    /// above every generation the table holds. Refuses a shard out of range.
    pub fn assign(&mut self, owner: u64, shards: &[u16], floor: u64) -> Result<(), u16> {
        if let Some(&bad) = shards.iter().find(|&&s| s >= REGISTRY_SHARDS) {
            return Err(bad);
        }
        let next = self.high_water().max(floor) + 1;
        for &shard in shards {
            self.owners[usize::from(shard)] = owner;
            self.generations[usize::from(shard)] = next;
        }
        Ok(())
    }

    /// The highest generation of any shard.
    pub fn high_water(&self) -> u64 {
        self.generations.iter().copied().max().unwrap_or(0)
    }

    /// How many shards `owner` holds.
    pub fn owned_by(&self, owner: u64) -> usize {
        self.owners.iter().filter(|&&o| o == owner).count()
    }

    /// Every shard's generation, none below `floor`.
    pub fn generations(&self, floor: u64) -> Vec<u64> {
        self.generations.iter().map(|&g| g.max(floor)).collect()
    }

    /// Snapshot form: the shard count (u16), then per shard its owner and
    /// its generation (u64 each); little endian.
    pub(super) fn encode(&self, bytes: &mut Vec<u8>) {
        bytes.extend((self.owners.len() as u16).to_le_bytes());
        for (owner, generation) in self.owners.iter().zip(&self.generations) {
            bytes.extend(owner.to_le_bytes());
            bytes.extend(generation.to_le_bytes());
        }
    }

    /// Decodes what [`ShardTable::encode`] wrote at the start of `bytes`;
    /// returns the table and the rest.
    pub(super) fn decode(bytes: &[u8]) -> Option<(ShardTable, &[u8])> {
        let (count, mut rest) = bytes.split_first_chunk::<2>()?;
        let count = u16::from_le_bytes(*count);
        if count != REGISTRY_SHARDS {
            return None;
        }
        let mut table = ShardTable { owners: Vec::new(), generations: Vec::new() };
        for _ in 0..count {
            let (owner, tail) = rest.split_first_chunk::<8>()?;
            let (generation, tail) = tail.split_first_chunk::<8>()?;
            table.owners.push(u64::from_le_bytes(*owner));
            table.generations.push(u64::from_le_bytes(*generation));
            rest = tail;
        }
        Some((table, rest))
    }
}

/// The shard events that spread the registry over the `live` routers (the
/// voters that answer; never empty when called): one `(owner, shards)` per
/// router that gets shards, each one command. Moves as few shards as it
/// can: a shard stays with a live owner holding no more than its share
/// (64 over the live routers, rounded up); the shards of a router that is
/// not live, or beyond a router's share, go to the live router holding
/// fewest. With `everything`, every shard gets an event even where its
/// owner stays (a new leader restarts the whole registry, ADR 0033); the
/// shards kept by a router of `restarted` (a new process, which cannot
/// grant at its old generations) get one too.
pub fn spread(
    owners: &[u64],
    live: &std::collections::BTreeSet<u64>,
    restarted: &std::collections::BTreeSet<u64>,
    everything: bool,
) -> Vec<(u64, Vec<u16>)> {
    let Some(&fallback) = live.first() else { return Vec::new() };
    let share = usize::from(REGISTRY_SHARDS).div_ceil(live.len());
    let mut held: BTreeMap<u64, Vec<u16>> = live.iter().map(|id| (*id, Vec::new())).collect();
    let mut moving = Vec::new();
    for shard in 0..REGISTRY_SHARDS {
        match owners.get(usize::from(shard)).and_then(|owner| held.get_mut(owner)) {
            Some(kept) => kept.push(shard),
            None => moving.push(shard),
        }
    }
    for kept in held.values_mut() {
        if kept.len() > share {
            moving.extend(kept.drain(share..));
        }
    }
    moving.sort_unstable();
    let mut events: BTreeMap<u64, Vec<u16>> = BTreeMap::new();
    for shard in moving {
        let target = held.iter().min_by_key(|(id, kept)| (kept.len(), **id)).map_or(fallback, |(id, _)| *id);
        held.entry(target).or_default().push(shard);
        events.entry(target).or_default().push(shard);
    }
    for (owner, kept) in &held {
        if everything || restarted.contains(owner) {
            let event = events.entry(*owner).or_default();
            event.extend(kept);
            event.sort_unstable();
            event.dedup();
        }
    }
    events.into_iter().filter(|(_, shards)| !shards.is_empty()).collect()
}
