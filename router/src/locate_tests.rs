//! Locating devices at their shards' owners over real gRPC on loopback.

use super::*;
use crate::raft::shards::ShardTable;
use crate::registry_link::PersistentLookup;
use crate::registry_link::link_tests::serve;
use herald_core::{AppId, ClientId, Epoch, ManualClock, REGISTRY_SHARDS, UnixMillis};
use herald_proto::grpc::pb::{registry_claimed, registry_down, registry_up};
use std::sync::atomic::AtomicU32;
use tokio_stream::wrappers::ReceiverStream;

fn key(client: &str) -> SessionKey {
    SessionKey::new(AppId::default_app(), ClientId::new(client.to_owned()).expect("client id"))
}

/// A table giving every shard to router 1 but those `to_two` names.
fn table(to_two: &[&str], generation: u64, routers: &[(u64, &str)]) -> TableView {
    let mut owners = vec![1; usize::from(REGISTRY_SHARDS)];
    for client in to_two {
        owners[ShardId::of(&key(client)).index()] = 2;
    }
    TableView {
        table: Some(ShardTable { owners, generations: vec![generation; usize::from(REGISTRY_SHARDS)] }),
        routers: routers.iter().map(|(id, address)| (*id, (*address).to_owned())).collect(),
        gateways: [NodeId(7), NodeId(8)].into(),
        applied_index: generation,
    }
}

/// Router `node`'s registry service, serving the shards `view` gives it
/// (a process's first table names what it inherited: a second one, of a
/// later generation, is what it serves).
async fn owner(node: u64, view: TableView) -> (RegistryService, watch::Sender<TableView>) {
    let mut first = view.clone();
    first.table.as_mut().expect("a table").generations.iter_mut().for_each(|g| *g -= 1);
    let (sender, watched) = watch::channel(first);
    let persistent: PersistentLookup = Arc::new(|_: &SessionKey| false);
    let clock = Arc::new(ManualClock::new(UnixMillis(1_000)));
    let lease = Duration::from_secs(15);
    let service = RegistryService::new(
        node,
        "c".to_owned(),
        watched,
        persistent,
        clock,
        lease,
        Arc::new(AtomicU32::new(0)),
    );
    while service.counts().1 == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sender.send_replace(view);
    while service.counts().0 == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (service, sender)
}

/// A gateway's registry link to one router, listed (nothing: no shard
/// waits for it).
struct Gateway {
    up: tokio::sync::mpsc::Sender<pb::RegistryUp>,
    down: tonic::Streaming<pb::RegistryDown>,
}

impl Gateway {
    async fn link(address: &str, gateway: u64) -> Gateway {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{address}")).expect("endpoint");
        let mut client = RegistryClient::new(endpoint.connect().await.expect("connect"));
        let (up, items) = tokio::sync::mpsc::channel(16);
        let hello =
            pb::RegistryHello { contract_version: CONTRACT_VERSION, cluster_id: "c".to_owned(), gateway };
        up.send(pb::RegistryUp { item: Some(registry_up::Item::Hello(hello)) }).await.expect("hello");
        let down = client.link(ReceiverStream::new(items)).await.expect("linked").into_inner();
        let list = pb::RegistryList { sessions: Vec::new(), last: true };
        up.send(pb::RegistryUp { item: Some(registry_up::Item::List(list)) }).await.expect("list");
        Gateway { up, down }
    }

    /// Claims `clients`; returns their epochs.
    async fn claim(&mut self, clients: &[&str]) -> Vec<Epoch> {
        let mut epochs = Vec::new();
        for (request, name) in clients.iter().enumerate() {
            let claim = pb::RegistryClaim {
                request: request as u64,
                session: Some(session_to_pb(&key(name))),
                clean_start: true,
                expiry_seconds: 0,
                stale_refusals: 0,
                will: None,
                connection: request as u64 + 1,
            };
            self.up
                .send(pb::RegistryUp { item: Some(registry_up::Item::Claim(claim)) })
                .await
                .expect("claim");
            loop {
                let item = tokio::time::timeout(Duration::from_secs(5), self.down.message()).await;
                let item = item.expect("in time").expect("an item").expect("open").item.expect("an item");
                if let registry_down::Item::Claimed(claimed) = item {
                    let Some(registry_claimed::Result::Granted(grant)) = claimed.result else {
                        panic!("granted")
                    };
                    epochs.push(epoch_from_pb(grant.epoch, "epoch").expect("an epoch"));
                    break;
                }
            }
        }
        epochs
    }
}

/// Router 2 serves the gateways and locates; router 1 owns most shards.
/// Sessions are found at their owners, here or over gRPC, after a "not
/// owner" answer at the owner the table names now; one whose owner does
/// not answer is reported not located once the patience is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_locates_its_devices_at_their_shards_owners() {
    let (far, near, moved) = ("far", "near", "moved");
    let shards: std::collections::HashSet<_> =
        [far, near, moved, "nobody"].iter().map(|c| ShardId::of(&key(c))).collect();
    assert_eq!(shards.len(), 4, "four shards");
    let (one, _one_table) = owner(1, table(&[near, moved], 2, &[])).await;
    let (one_address, one_server) = serve(&one).await;
    let (two, _two_table) = owner(2, table(&[near, moved], 2, &[])).await;
    let (two_address, two_server) = serve(&two).await;
    let mut links = Vec::new();
    for address in [&one_address, &two_address] {
        for gateway in [7, 8] {
            links.push(Gateway::link(address, gateway).await);
        }
    }
    let far_epochs = links[0].claim(&[far]).await;
    let near_epochs = links[3].claim(&[near, moved]).await;
    // The locator's copy of the table is behind: "moved" was router 1's.
    let (_, stale) = watch::channel(table(&[near], 1, &[(1, &one_address), (2, &two_address)]));
    let locator = Locator::new(2, "c".to_owned(), two.clone(), stale);
    let located = locator.locate(vec![key(far), key(near), key(moved), key("nobody"), key(far)]).await;
    let expected: Locations = [
        (key(far), Located::Online { gateway: NodeId(7), epoch: far_epochs[0] }),
        (key(near), Located::Online { gateway: NodeId(8), epoch: near_epochs[0] }),
        (key(moved), Located::Online { gateway: NodeId(8), epoch: near_epochs[1] }),
        (key("nobody"), Located::Unknown),
    ]
    .into();
    assert_eq!(located, expected);
    assert_eq!(locator.counts(), [2, 2, 0], "near and moved here; far and nobody at router 1");

    // Router 1 unreachable: its session is not located in time.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_address = closed.local_addr().expect("address").to_string();
    drop(closed);
    let (_, unreachable) = watch::channel(table(&[near], 2, &[(1, &closed_address), (2, &two_address)]));
    let locator = Locator::new(2, "c".to_owned(), two.clone(), unreachable);
    let located = locator.locate(vec![key(far), key(near)]).await;
    assert_eq!(located[&key(far)], Located::Rebuilding);
    assert_eq!(located[&key(near)], Located::Online { gateway: NodeId(8), epoch: near_epochs[0] });
    assert_eq!(locator.counts(), [1, 0, 1], "near here; far not located");
    one_server.abort();
    two_server.abort();
}
