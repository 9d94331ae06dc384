//! How many online sessions of an app each gateway holds, over the shards
//! an owner serves: what a push to everyone is sent by (ADR 0033).

use super::ShardOwner;
use herald_core::{AppId, NodeId, ShardId};
use std::collections::HashMap;

/// The online sessions of one app in some shards, per gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppOnline {
    /// Online sessions per gateway holding any.
    pub per_gateway: HashMap<NodeId, u64>,
    /// The shards counted: served here and listed by every gateway. A
    /// shard being rebuilt is left out, to be asked again.
    pub shards: Vec<ShardId>,
}

impl ShardOwner {
    /// The online sessions of `app` in the shards served here (see
    /// [`AppOnline`]). One pass over the sessions here: for a push to
    /// everyone, not for each device.
    pub fn online_of_app(&self, app: &AppId) -> AppOnline {
        let mut shards: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(_, owned)| owned.unlisted.is_empty())
            .map(|(shard, _)| *shard)
            .collect();
        shards.sort_unstable();
        let mut per_gateway = HashMap::new();
        for (key, entry) in &self.sessions {
            let Some(gateway) = entry.gateway.filter(|_| key.app == *app) else { continue };
            if shards.binary_search(&ShardId::of(key)).is_ok() {
                *per_gateway.entry(gateway).or_default() += 1;
            }
        }
        AppOnline { per_gateway, shards }
    }
}
