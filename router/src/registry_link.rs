//! The router's side of the registry link (ADR 0033): one `Registry.Link`
//! stream per gateway, on every router, leader or not.
//!
//! ```text
//!   gateway ──RegistryHello──▶ router
//!   gateway ◀──ShardTable───── router   (now, and whenever its copy changes)
//! ```
//!
//! The stream opens with the gateway's hello (contract version, cluster id,
//! gateway id); another version or cluster is refused with
//! `FailedPrecondition`. The table sent is this router's copy of the
//! replicated shard table, with the routers of the membership, so a gateway
//! learns every router and which one owns each shard. Claims and releases
//! to shard owners travel here next (slice 2).

use crate::raft::shards::TableView;
use herald_proto::grpc::CONTRACT_VERSION;
use herald_proto::grpc::pb::registry_server::{Registry, RegistryServer};
use herald_proto::grpc::pb::{self, registry_down, registry_up};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Tables waiting for a slow gateway; a newer one replaces what it has
/// not read only through the watch, so two are enough.
const DOWNLINK_BUFFER: usize = 2;

/// The `Registry` gRPC service of a router.
#[derive(Clone)]
pub struct RegistryService {
    node: u64,
    cluster_id: String,
    table: watch::Receiver<TableView>,
    /// Gateways linked now.
    linked: Arc<AtomicU64>,
}

impl RegistryService {
    /// The service of router `node` in cluster `cluster_id`, sending
    /// `table` as it changes (kept by `RaftNode::watch_shard_table`).
    pub fn new(node: u64, cluster_id: String, table: watch::Receiver<TableView>) -> RegistryService {
        RegistryService { node, cluster_id, table, linked: Arc::default() }
    }

    /// How many gateways are linked now.
    pub fn linked(&self) -> Arc<AtomicU64> {
        self.linked.clone()
    }

    /// The tonic server for it.
    pub fn into_server(self) -> RegistryServer<RegistryService> {
        RegistryServer::new(self)
    }
}

/// `view` as the router `router` of `cluster_id` sends it.
pub fn table_to_pb(view: &TableView, router: u64, cluster_id: &str) -> pb::RegistryDown {
    let (owners, generations) =
        view.table.as_ref().map(|t| (t.owners.clone(), t.generations.clone())).unwrap_or_default();
    pb::RegistryDown {
        item: Some(registry_down::Item::Table(pb::ShardTable {
            router,
            cluster_id: cluster_id.to_owned(),
            owners,
            generations,
            routers: view.routers.iter().map(|(id, address)| format!("{id}={address}")).collect(),
            applied_index: view.applied_index,
        })),
    }
}

/// Counts a linked gateway for as long as it lives.
struct Linked(Arc<AtomicU64>);

impl Drop for Linked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl Registry for RegistryService {
    type LinkStream = ReceiverStream<Result<pb::RegistryDown, Status>>;

    async fn link(
        &self,
        request: Request<Streaming<pb::RegistryUp>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(pb::RegistryUp { item: Some(registry_up::Item::Hello(hello)) }) => hello,
            _ => return Err(Status::invalid_argument("the first registry item must be hello")),
        };
        if hello.contract_version != CONTRACT_VERSION {
            return Err(Status::failed_precondition(format!(
                "contract version {} (this router speaks {CONTRACT_VERSION})",
                hello.contract_version
            )));
        }
        if !hello.cluster_id.is_empty() && hello.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster {} (this router belongs to {})",
                hello.cluster_id, self.cluster_id
            )));
        }
        let (downlink, receiver) = mpsc::channel(DOWNLINK_BUFFER);
        let (mut table, node, cluster_id) = (self.table.clone(), self.node, self.cluster_id.clone());
        self.linked.fetch_add(1, Ordering::Relaxed);
        let linked = Linked(self.linked.clone());
        tokio::spawn(async move {
            let _linked = linked;
            loop {
                let down = table_to_pb(&table.borrow_and_update(), node, &cluster_id);
                if downlink.send(Ok(down)).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        changed = table.changed() => if changed.is_err() { return } else { break },
                        // Nothing else is expected yet: the stream's end is
                        // the gateway's going.
                        item = inbound.message() => if !matches!(item, Ok(Some(_))) { return },
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::shards::ShardTable;
    use prost::Message;

    /// The registry link's wire form (contract version 1): a hello and a
    /// table, stored; a build that encodes them differently, or cannot read
    /// the stored bytes, fails here.
    #[test]
    fn the_registry_link_wire_format_matches_its_golden_file() {
        let mut table = ShardTable::new(3);
        table.assign(2, &[0, 5], 3).expect("in range");
        let view = TableView {
            table: Some(table),
            routers: [(1, "127.0.0.11:7401".to_owned()), (2, "127.0.0.12:7402".to_owned())].into(),
            applied_index: 42,
        };
        let down = table_to_pb(&view, 1, "prod");
        let up = pb::RegistryUp {
            item: Some(registry_up::Item::Hello(pb::RegistryHello {
                contract_version: CONTRACT_VERSION,
                cluster_id: "prod".to_owned(),
                gateway: 7,
            })),
        };
        let mut bytes = up.encode_length_delimited_to_vec();
        bytes.extend(down.encode_length_delimited_to_vec());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/registry/link-v1.bin");
        let stored = herald_testkit::golden::check(&path, &bytes);
        let mut rest = stored.as_slice();
        assert_eq!(pb::RegistryUp::decode_length_delimited(&mut rest).expect("hello decodes"), up);
        let decoded = pb::RegistryDown::decode_length_delimited(&mut rest).expect("table decodes");
        assert_eq!(decoded, down);
        let Some(registry_down::Item::Table(t)) = decoded.item else { panic!("a table") };
        assert_eq!((t.owners[0], t.owners[1], t.generations[5], t.generations[6]), (2, 0, 4, 3));
        assert_eq!(t.routers, ["1=127.0.0.11:7401", "2=127.0.0.12:7402"]);
    }
}
