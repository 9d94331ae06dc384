//! Registry shards (ADR 0033): the session registry is split into a fixed
//! number of shards, and a session's shard is a stable hash of its key, so
//! that every gateway and router computes the same one without asking.

use crate::SessionKey;
use std::fmt;

/// How many registry shards a cluster has. Fixed: a session's shard must
/// not change while the cluster runs, and the shard table in the
/// replicated state has exactly this many entries.
pub const REGISTRY_SHARDS: u16 = 64;

/// One registry shard, `0..REGISTRY_SHARDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The shard `session` belongs to: FNV-1a (64 bit) of the app's bytes, a
    /// zero byte (which neither may contain), then the client id's bytes,
    /// modulo [`REGISTRY_SHARDS`]. Part of the cluster's contract: gateways
    /// and routers of different versions must agree on it.
    pub fn of(session: &SessionKey) -> ShardId {
        let bytes = session.app.as_str().bytes().chain([0]).chain(session.client.as_str().bytes());
        let hash = bytes.fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        ShardId((hash % u64::from(REGISTRY_SHARDS)) as u16)
    }

    /// Every shard, in order.
    pub fn all() -> impl Iterator<Item = ShardId> {
        (0..REGISTRY_SHARDS).map(ShardId)
    }

    /// The shard's position in a table of [`REGISTRY_SHARDS`] entries.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Every shard's generation, as the router serving the registry grants
/// epochs with it: the shard table's, or, in a cluster without one, the
/// cluster's single generation for every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardGenerations(Vec<u64>);

impl ShardGenerations {
    /// Every shard at `generation` (a cluster without a shard table, and
    /// tests).
    pub fn uniform(generation: u64) -> ShardGenerations {
        ShardGenerations(vec![generation; usize::from(REGISTRY_SHARDS)])
    }

    /// Shard `shard`'s generation is `generations[shard]`; a table of any
    /// other length is padded (or cut) to [`REGISTRY_SHARDS`] with its
    /// highest generation.
    pub fn from_table(mut generations: Vec<u64>) -> ShardGenerations {
        let top = generations.iter().copied().max().unwrap_or(0);
        generations.resize(usize::from(REGISTRY_SHARDS), top);
        ShardGenerations(generations)
    }

    /// Shard `shard`'s generation.
    pub fn get(&self, shard: ShardId) -> u64 {
        self.0[shard.index()]
    }

    /// The highest generation of any shard.
    pub fn high_water(&self) -> u64 {
        self.0.iter().copied().max().unwrap_or(0)
    }
}

impl Default for ShardGenerations {
    fn default() -> ShardGenerations {
        ShardGenerations::uniform(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppId, ClientId};

    fn key(app: &str, client: &str) -> SessionKey {
        SessionKey::new(AppId::new(app).expect("app"), ClientId::new(client).expect("client"))
    }

    /// The hash is a contract between versions: these values must never
    /// change (FNV-1a 64 of `app \0 client`, modulo 64, computed apart).
    #[test]
    fn a_sessions_shard_is_stable_across_versions() {
        assert_eq!(ShardId::of(&key("default", "device-1")), ShardId(6));
        assert_eq!(ShardId::of(&key("acme", "x")), ShardId(63));
        assert_eq!(ShardId::of(&key("default", "sensor-42")), ShardId(5));
    }

    #[test]
    fn the_app_and_the_client_id_both_choose_the_shard_and_sessions_spread_over_every_shard() {
        // Moving bytes between the app and the client id changes the key,
        // and the separator keeps those keys apart.
        let split = (0..200)
            .filter(|i| ShardId::of(&key("ab", &format!("c{i}"))) != ShardId::of(&key("abc", &i.to_string())))
            .count();
        assert!(split > 150, "only {split} of 200 keys told apart");
        let mut per_shard = [0u32; REGISTRY_SHARDS as usize];
        for i in 0..64_000 {
            per_shard[ShardId::of(&key("default", &format!("device-{i}"))).index()] += 1;
        }
        let (min, max) = (per_shard.iter().min().copied(), per_shard.iter().max().copied());
        assert!(min > Some(800) && max < Some(1_200), "uneven spread: {min:?}..{max:?}");
    }
}
