//! The gateway's registry links (ADR 0033): one `Registry.Link` stream to
//! every router, leader or not, each telling the gateway the shard table
//! as that router's copy has it.
//!
//! ```text
//!   configured routers ∪ routers the tables name ──▶ one link task each
//!        link task: open ──▶ hello ──▶ tables ──▶ (ends) ──▶ wait, open again
//!   tables ──▶ the newest kept (per shard, generations only grow)
//! ```
//!
//! Routers apply the same log at different speeds, so their tables differ
//! only by age: a table is newer when its generations sum higher, or, at
//! the same generations, when it was read at a later log index. The
//! gateway keeps the newest, and links to every router the tables name,
//! so a router added later is linked too. Claims and releases go to the
//! shard's owner over these links next (slice 2).

use herald_core::{NodeId, REGISTRY_SHARDS, ShardId};
use herald_proto::grpc::CONTRACT_VERSION;
use herald_proto::grpc::pb::registry_client::RegistryClient;
use herald_proto::grpc::pb::{self, registry_down, registry_up};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

/// Waits between attempts to link to a router, doubling up to the second.
const RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));
/// How long opening a link may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The shard table as the gateway knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownTable {
    /// Per shard, its owner (0: none); empty before any table.
    pub owners: Vec<u64>,
    /// Per shard, its generation.
    pub generations: Vec<u64>,
    /// The routers, by node id, with their `host:port`.
    pub routers: BTreeMap<u64, String>,
    /// The log index the table was read at.
    pub applied_index: u64,
}

impl KnownTable {
    /// How new the table is: its generations' sum, then the index.
    fn age(&self) -> (u128, u64) {
        (self.generations.iter().map(|&g| u128::from(g)).sum(), self.applied_index)
    }

    /// The owner of `shard`, if the table names one.
    pub fn owner(&self, shard: ShardId) -> Option<u64> {
        self.owners.get(shard.index()).copied().filter(|&owner| owner != 0)
    }
}

/// The gateway's registry links.
pub struct RegistryLinks {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: NodeId,
    /// The routers of the newest table, for the seam link to look through.
    learned: crate::router_client::LearnedRouters,
    cluster_id: Option<String>,
    table: Mutex<KnownTable>,
    /// Routers linked to, by address (`host:port`).
    started: Mutex<HashSet<String>>,
    /// Routers linked now, by node id: a second address of a router linked
    /// already (a name and an IP) is given up.
    linked: Mutex<HashSet<u64>>,
    /// Links open now.
    open: AtomicU64,
    /// Tables taken (newer than the one kept).
    tables: AtomicU64,
}

impl RegistryLinks {
    /// Starts linking gateway `gateway` to each router of `addresses`
    /// (`http://host:port` or `host:port`), and to every router their
    /// tables name. Links end when the returned value is dropped.
    /// The routers of the newest table are kept in `learned` too.
    pub fn start(
        gateway: NodeId,
        cluster_id: Option<String>,
        addresses: &[String],
        learned: crate::router_client::LearnedRouters,
    ) -> RegistryLinks {
        let inner = Arc::new(Inner {
            gateway,
            learned,
            cluster_id,
            table: Mutex::default(),
            started: Mutex::default(),
            linked: Mutex::default(),
            open: AtomicU64::new(0),
            tables: AtomicU64::new(0),
        });
        for address in addresses {
            Inner::link(&inner, address);
        }
        RegistryLinks { inner }
    }

    /// The newest shard table received.
    pub fn table(&self) -> KnownTable {
        self.inner.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// How many routers it is linked to now.
    pub fn open(&self) -> u64 {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// How many shards each router owns, as the newest table says.
    pub fn shards_per_owner(&self) -> BTreeMap<u64, u64> {
        let table = self.table();
        let mut owned = BTreeMap::new();
        for shard in ShardId::all() {
            if let Some(owner) = table.owner(shard) {
                *owned.entry(owner).or_insert(0) += 1;
            }
        }
        owned
    }
}

impl Inner {
    fn lock_linked(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.linked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the link task for `address` unless one runs.
    fn link(inner: &Arc<Inner>, address: &str) {
        let authority =
            address.strip_prefix("https://").or_else(|| address.strip_prefix("http://")).unwrap_or(address);
        let fresh = inner
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(authority.to_owned());
        if fresh {
            tokio::spawn(keep_linked(Arc::downgrade(inner), authority.to_owned()));
        }
    }

    /// Keeps `table` if it is newer than the one kept, and links to the
    /// routers it names.
    fn take(inner: &Arc<Inner>, table: pb::ShardTable) {
        let routers: BTreeMap<u64, String> = table
            .routers
            .iter()
            .filter_map(|entry| entry.split_once('='))
            .filter_map(|(id, address)| Some((id.parse().ok()?, address.to_owned())))
            .collect();
        let whole = table.owners.len() == usize::from(REGISTRY_SHARDS)
            && table.generations.len() == table.owners.len();
        let known = KnownTable {
            owners: if whole { table.owners } else { Vec::new() },
            generations: if whole { table.generations } else { Vec::new() },
            routers,
            applied_index: table.applied_index,
        };
        for address in known.routers.values() {
            Inner::link(inner, address);
        }
        let mut kept = inner.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.age() > kept.age() || (known.age() == kept.age() && known.routers != kept.routers) {
            *inner.learned.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                known.routers.values().cloned().collect();
            *kept = known;
            inner.tables.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Links to the router at `address` for as long as the gateway lives,
/// opening the link again whenever it ends.
async fn keep_linked(inner: Weak<Inner>, address: String) {
    let mut wait = RETRY.0;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let (gateway, cluster_id) = (strong.gateway, strong.cluster_id.clone());
        drop(strong);
        match tokio::time::timeout(OPEN_TIMEOUT, open(&address, gateway, cluster_id)).await {
            // The uplink stays open while `_uplink` lives, for the items to come.
            Ok(Ok((_uplink, mut inbound))) => {
                wait = RETRY.0;
                let mut router = None;
                loop {
                    let item = inbound.message().await;
                    let Some(strong) = inner.upgrade() else { return };
                    match item {
                        Ok(Some(pb::RegistryDown { item: Some(registry_down::Item::Table(table)) })) => {
                            if router.is_none() {
                                if !strong.lock_linked().insert(table.router) {
                                    info!(router = %address, id = table.router, "a router linked already under another address");
                                    return;
                                }
                                router = Some(table.router);
                                strong.open.fetch_add(1, Ordering::Relaxed);
                                info!(router = %address, id = table.router, "registry link open");
                            }
                            Inner::take(&strong, table);
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => {
                            if let Some(id) = router {
                                strong.lock_linked().remove(&id);
                                strong.open.fetch_sub(1, Ordering::Relaxed);
                                info!(router = %address, "registry link lost: opening it again");
                            }
                            break;
                        }
                    }
                }
            }
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                warn!(router = %address, reason = status.message(), "registry link refused");
            }
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY.1);
    }
}

/// Opens the link to `address` and says hello.
async fn open(
    address: &str,
    gateway: NodeId,
    cluster_id: Option<String>,
) -> Result<(tokio::sync::mpsc::Sender<pb::RegistryUp>, tonic::Streaming<pb::RegistryDown>), tonic::Status> {
    let endpoint = crate::router_client::router_endpoint(address).map_err(tonic::Status::invalid_argument)?;
    let channel = endpoint.connect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (outbound, items) = tokio::sync::mpsc::channel(1);
    let hello = pb::RegistryUp {
        item: Some(registry_up::Item::Hello(pb::RegistryHello {
            contract_version: CONTRACT_VERSION,
            cluster_id: cluster_id.unwrap_or_default(),
            gateway: gateway.0,
        })),
    };
    outbound.send(hello).await.map_err(|_| tonic::Status::cancelled("closed"))?;
    let response = RegistryClient::new(channel).link(ReceiverStream::new(items)).await?;
    Ok((outbound, response.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(generation: u64, owner: u64, applied_index: u64, routers: &[&str]) -> pb::ShardTable {
        pb::ShardTable {
            router: 1,
            cluster_id: "c".to_owned(),
            owners: vec![owner; usize::from(REGISTRY_SHARDS)],
            generations: vec![generation; usize::from(REGISTRY_SHARDS)],
            routers: routers.iter().map(|r| (*r).to_owned()).collect(),
            applied_index,
        }
    }

    #[tokio::test]
    async fn the_newest_table_is_kept_whichever_router_sends_it_and_its_routers_are_linked() {
        let learned = crate::router_client::LearnedRouters::default();
        let links = RegistryLinks::start(NodeId(1), None, &[], learned.clone());
        let inner = &links.inner;
        Inner::take(inner, table(2, 7, 10, &["7=127.0.0.1:1"]));
        assert_eq!(links.shards_per_owner(), BTreeMap::from([(7, 64)]));
        // A router that lags sends an older table: it is not taken.
        Inner::take(inner, table(1, 8, 20, &["7=127.0.0.1:1"]));
        assert_eq!(links.shards_per_owner(), BTreeMap::from([(7, 64)]));
        // The same generations read later, with a router added: taken, and
        // the new router is linked to.
        Inner::take(inner, table(2, 7, 30, &["7=127.0.0.1:1", "9=127.0.0.1:2"]));
        assert_eq!(links.table().routers.len(), 2);
        assert_eq!(*learned.lock().expect("unpoisoned"), ["127.0.0.1:1", "127.0.0.1:2"], "for the seam link");
        let started = inner.started.lock().expect("unpoisoned").clone();
        assert_eq!(started, HashSet::from(["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()]));
        // A table of a cluster without a shard table names no owner.
        let mut empty = table(3, 7, 40, &[]);
        empty.owners.clear();
        empty.generations.clear();
        Inner::take(inner, empty);
        assert_eq!(links.shards_per_owner(), BTreeMap::from([(7, 64)]), "older than what is kept");
        assert_eq!(links.table().owner(ShardId(0)), Some(7));
    }
}
