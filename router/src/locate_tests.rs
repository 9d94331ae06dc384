//! Locating devices at their shards' owners over real gRPC on loopback.

use super::*;
use crate::raft::shards::ShardTable;
use crate::registry_link::link_tests::{Link, granted, owner, serve};
use herald_core::{AppId, ClientId, Epoch, REGISTRY_SHARDS, UnixMillis};
use herald_proto::grpc::pb::registry_up;

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

/// Gateway `gateway`'s registry link to the router at `address`, listed
/// (nothing: no shard waits for it).
async fn linked(address: &str, gateway: u64) -> Link {
    let link = Link::open(address, gateway).await;
    link.send(registry_up::Item::List(pb::RegistryList { sessions: Vec::new(), last: true })).await;
    link
}

/// Three clients whose shards are not "near"'s.
fn far_from_near() -> Vec<&'static str> {
    let names = ["far-0", "far-1", "far-2", "far-3", "far-4", "far-5", "far-6", "far-7"];
    names.into_iter().filter(|c| ShardId::of(&key(c)) != ShardId::of(&key("near"))).take(3).collect()
}

/// Claims `clients` over `link`; returns their epochs.
async fn claim(link: &mut Link, clients: &[&str]) -> Vec<Epoch> {
    let mut epochs = Vec::new();
    for (request, client) in clients.iter().enumerate() {
        epochs.push(granted(link.claim(request as u64 + 1, client).await));
    }
    epochs
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
            links.push(linked(address, gateway).await);
        }
    }
    let far_epochs = claim(&mut links[0], &[far]).await;
    let near_epochs = claim(&mut links[3], &[near, moved]).await;
    // The locator's copy of the table is behind: "moved" was router 1's.
    let (_, stale) = watch::channel(table(&[near], 1, &[(1, &one_address), (2, &two_address)]));
    let locator = Locator::new(2, "c".to_owned(), two.clone(), stale);
    let located = locator.locate(vec![key(far), key(near), key(moved), key("nobody"), key(far)]).await;
    let expected: HashMap<SessionKey, Located> = [
        (key(far), Located::Online { gateway: NodeId(7), epoch: far_epochs[0], since: UnixMillis(1_000) }),
        (key(near), Located::Online { gateway: NodeId(8), epoch: near_epochs[0], since: UnixMillis(1_000) }),
        (key(moved), Located::Online { gateway: NodeId(8), epoch: near_epochs[1], since: UnixMillis(1_000) }),
        (key("nobody"), Located::Unknown),
    ]
    .into();
    assert_eq!(located, expected);
    assert_eq!(locator.counts(), [2, 2, 0], "near and moved here; far and nobody at router 1");
    assert_eq!(
        one.answered(),
        [1, 0],
        "one call to router 1 for the three sessions the stale table gives it"
    );

    // Router 1 unreachable: its session is not located in time.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_address = closed.local_addr().expect("address").to_string();
    drop(closed);
    let (_, unreachable) = watch::channel(table(&[near], 2, &[(1, &closed_address), (2, &two_address)]));
    let locator = Locator::new(2, "c".to_owned(), two.clone(), unreachable);
    let located = locator.locate(vec![key(far), key(near)]).await;
    assert_eq!(located[&key(far)], Located::Rebuilding);
    assert_eq!(
        located[&key(near)],
        Located::Online { gateway: NodeId(8), epoch: near_epochs[0], since: UnixMillis(1_000) }
    );
    assert_eq!(locator.counts(), [1, 0, 1], "near here; far not located");
    one_server.abort();
    two_server.abort();
}

/// Router 2 serves the gateways and counts an app's online sessions for a
/// push to everyone: per gateway, over both routers' shards, once router
/// 1's shards, rebuilt until gateway 8 has listed there, are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_everyone_counts_the_apps_online_sessions_at_every_owner() {
    let (one, _one_table) = owner(1, table(&["near"], 2, &[])).await;
    let (one_address, one_server) = serve(&one).await;
    let (two, _two_table) = owner(2, table(&["near"], 2, &[])).await;
    let (two_address, two_server) = serve(&two).await;
    let mut at_one = linked(&one_address, 7).await;
    let unlisted = Link::open(&one_address, 8).await;
    let mut at_two = linked(&two_address, 8).await;
    let _listed_elsewhere = linked(&two_address, 7).await;
    claim(&mut at_one, &far_from_near()).await;
    claim(&mut at_two, &["near"]).await;

    let (_, view) = watch::channel(table(&["near"], 2, &[(1, &one_address), (2, &two_address)]));
    let locator = Locator::new(2, "c".to_owned(), two.clone(), view);
    let counting = tokio::spawn({
        let locator = locator.clone();
        async move { locator.count_online(&AppId::default_app()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!counting.is_finished(), "router 1's shards are counted once gateway 8 listed there");
    unlisted.send(registry_up::Item::List(pb::RegistryList { sessions: Vec::new(), last: true })).await;
    let counted = counting.await.expect("counted").expect("every shard counted");
    assert_eq!(counted, [(NodeId(7), 3), (NodeId(8), 1)].into());
    let other = AppId::new("other").expect("app");
    assert_eq!(locator.count_online(&other).await, Some(HashMap::new()), "no session of that app");
    one_server.abort();
    two_server.abort();
}

/// The shard of "near" moves from router 2 to router 1 (generation 3),
/// which rebuilds it until both gateways have listed there: router 1's
/// first count leaves it out, and a later one, with it, replaces the
/// first; the push to everyone is counted by the owners, not given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_takes_an_owners_wider_answer_once_its_rebuilt_shard_is_counted() {
    let (one, one_table) = owner(1, table(&["near"], 2, &[])).await;
    let (one_address, one_server) = serve(&one).await;
    let (two, two_table) = owner(2, table(&["near"], 2, &[])).await;
    let (two_address, two_server) = serve(&two).await;
    let mut seven_at_one = linked(&one_address, 7).await;
    let eight_at_one = linked(&one_address, 8).await;
    let mut eight_at_two = linked(&two_address, 8).await;
    let _seven_at_two = linked(&two_address, 7).await;
    claim(&mut seven_at_one, &far_from_near()).await;
    let near_epoch = claim(&mut eight_at_two, &["near"]).await[0];

    let routers = [(1, one_address.as_str()), (2, two_address.as_str())];
    let mut moved = table(&[], 2, &routers);
    moved.table.as_mut().expect("a table").generations[ShardId::of(&key("near")).index()] = 3;
    moved.applied_index = 3;
    one_table.send_replace(moved.clone());
    two_table.send_replace(moved.clone());
    while one.counts().0 != u64::from(REGISTRY_SHARDS) || two.counts().0 != 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, view) = watch::channel(moved);
    let locator = Locator::new(2, "c".to_owned(), two.clone(), view);
    let counting = tokio::spawn({
        let locator = locator.clone();
        async move { locator.count_online(&AppId::default_app()).await }
    });
    // Router 1 answered (without the moved shard) before it is listed.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while one.answered()[1] == 0 {
        assert!(tokio::time::Instant::now() < until, "router 1 was never asked to count");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!counting.is_finished(), "the moved shard is counted once both gateways listed it");
    let listed = pb::ListedSession {
        session: Some(session_to_pb(&key("near"))),
        epoch: Some(epoch_to_pb(near_epoch)),
        expiry_seconds: 0,
        will: None,
    };
    eight_at_one.send(registry_up::Item::List(pb::RegistryList { sessions: vec![listed], last: true })).await;
    seven_at_one.send(registry_up::Item::List(pb::RegistryList { sessions: Vec::new(), last: true })).await;
    let counted = counting.await.expect("counted").expect("every shard counted at its owner");
    assert_eq!(counted, [(NodeId(7), 3), (NodeId(8), 1)].into());
    assert_eq!(locator.everyone_counts(), [1, 0], "counted by the owners");
    one_server.abort();
    two_server.abort();
}
