//! The registry link over real gRPC on loopback: claims, releases and
//! listings applied to the shards this router owns, and revocations sent
//! to the gateway that lost a session.

use super::*;
use crate::raft::shards::ShardTable;
use herald_core::{AppId, ClientId, ManualClock, REGISTRY_SHARDS, ShardId};
use herald_proto::grpc::pb::registry_client::RegistryClient;
use tokio_stream::wrappers::TcpListenerStream;

const ME: u64 = 1;
const LEASE: Duration = Duration::from_secs(15);

fn key(client: &str) -> SessionKey {
    SessionKey::new(AppId::default_app(), ClientId::new(client.to_owned()).expect("client id"))
}

/// A gateway's end of a link.
pub(crate) struct Link {
    up: mpsc::Sender<pb::RegistryUp>,
    down: Streaming<pb::RegistryDown>,
}

impl Link {
    pub(crate) async fn open(address: &str, gateway: u64) -> Link {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{address}")).expect("endpoint");
        let mut client = RegistryClient::new(endpoint.connect().await.expect("connect"));
        let (up, items) = mpsc::channel(16);
        let hello =
            pb::RegistryHello { contract_version: CONTRACT_VERSION, cluster_id: "c".to_owned(), gateway };
        up.send(pb::RegistryUp { item: Some(registry_up::Item::Hello(hello)) }).await.expect("hello");
        let down = client.link(ReceiverStream::new(items)).await.expect("linked").into_inner();
        let mut link = Link { up, down };
        assert!(matches!(link.next().await, registry_down::Item::Table(_)), "the table comes first");
        link
    }

    async fn next(&mut self) -> registry_down::Item {
        let item = tokio::time::timeout(Duration::from_secs(5), self.down.message()).await;
        item.expect("in time").expect("an item").expect("not closed").item.expect("an item")
    }

    pub(crate) async fn send(&self, item: registry_up::Item) {
        self.up.send(pb::RegistryUp { item: Some(item) }).await.expect("sent");
    }

    pub(crate) async fn claim(&mut self, request: u64, client: &str) -> registry_claimed::Result {
        self.claim_refused(request, client, 0).await
    }

    /// A claim the leader refused `stale_refusals` times as stale.
    async fn claim_refused(
        &mut self,
        request: u64,
        client: &str,
        stale_refusals: u32,
    ) -> registry_claimed::Result {
        let session = Some(session_to_pb(&key(client)));
        let claim = pb::RegistryClaim {
            request,
            session,
            clean_start: true,
            expiry_seconds: 0,
            stale_refusals,
            will: None,
            connection: request,
        };
        self.send(registry_up::Item::Claim(claim)).await;
        match self.next().await {
            registry_down::Item::Claimed(claimed) if claimed.request == request => {
                claimed.result.expect("a result")
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Waits (5 s at most) until `check` holds.
async fn until(check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) fn granted(result: registry_claimed::Result) -> Epoch {
    match result {
        registry_claimed::Result::Granted(grant) => epoch_of(grant.epoch, "epoch").expect("an epoch"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_releases_and_listings_reach_the_shards_this_router_owns_and_revocations_the_gateway_that_lost()
 {
    // Router 1 owns every shard, but the shard of "elsewhere", owned by 2:
    // at generation 3 from before this process started, then restarted at 4.
    let mut owners = vec![ME; usize::from(REGISTRY_SHARDS)];
    owners[ShardId::of(&key("elsewhere")).index()] = 2;
    let view = |generation: u64, applied_index: u64| TableView {
        table: Some(ShardTable {
            owners: owners.clone(),
            generations: vec![generation; usize::from(REGISTRY_SHARDS)],
        }),
        routers: Default::default(),
        gateways: [NodeId(7), NodeId(8)].into(),
        applied_index,
    };
    let (table, watched) = watch::channel(view(3, 1));
    let clock = Arc::new(ManualClock::new(UnixMillis(1_000)));
    let persistent: PersistentLookup =
        Arc::new(|sessions: &[SessionKey]| sessions.iter().map(|s| s.client.as_str() == "durable").collect());
    let inherited = Arc::new(AtomicU32::new(0));
    let service = RegistryService::new(
        ME,
        "c".to_owned(),
        watched,
        persistent,
        clock.clone(),
        LEASE,
        inherited.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.clone().into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let mut seven = Link::open(&address, 7).await;
    // The shards it inherited are not served; their owner is this router.
    until(|| inherited.load(Ordering::Relaxed) == 63).await;
    assert_eq!(seven.claim(9, "a").await, registry_claimed::Result::NotOwner(ME));
    table.send_replace(view(4, 2));
    until(|| service.counts().0 == 63).await;
    assert!(matches!(seven.next().await, registry_down::Item::Table(_)), "the restarted table");
    let mut eight = Link::open(&address, 8).await;
    // Both gateways list what they hold: seven holds "old" from before the
    // shard came here, at generation 2.
    let old = pb::ListedSession {
        session: Some(session_to_pb(&key("old"))),
        epoch: Some(epoch_to_pb(Epoch::new(2, 9))),
        expiry_seconds: 0,
        will: None,
    };
    seven.send(registry_up::Item::List(pb::RegistryList { sessions: vec![old], last: true })).await;
    eight.send(registry_up::Item::List(pb::RegistryList { sessions: Vec::new(), last: true })).await;

    let first = granted(seven.claim(1, "a").await);
    assert_eq!(first.generation, 4);
    let second = granted(eight.claim(2, "a").await);
    assert!(second > first);
    // A claim the leader refused three times as stale: the counter jumps by 4^3.
    let jumped = granted(eight.claim_refused(20, "jumped", 3).await);
    assert!(jumped.counter >= second.counter + 64, "{jumped} after {second}");
    // Seven's connection lost "a": it is told so.
    let revoked = seven.next().await;
    let registry_down::Item::Revoked(revoked) = revoked else { panic!("{revoked:?}") };
    assert_eq!(
        (
            session_of(revoked.session, "session").expect("key"),
            epoch_of(revoked.epoch, "epoch").expect("epoch")
        ),
        (key("a"), first)
    );
    // Its release is stale; eight's ends the session.
    let release = |request, epoch| {
        registry_up::Item::Release(pb::RegistryRelease {
            request,
            session: Some(session_to_pb(&key("a"))),
            epoch: Some(epoch_to_pb(epoch)),
            expiry_seconds: 0,
            publish_will: false,
        })
    };
    seven.send(release(3, first)).await;
    assert!(matches!(seven.next().await, registry_down::Item::Released(r) if r.request == 3 && r.stale));
    eight.send(release(4, second)).await;
    assert!(matches!(eight.next().await, registry_down::Item::Released(r) if r.request == 4 && !r.stale));
    assert_eq!(service.locate(&key("a")), Located::Unknown);

    // The shard of "elsewhere" is router 2's; what the replicated state
    // holds as persistent is attached at the leader.
    assert_eq!(seven.claim(5, "elsewhere").await, registry_claimed::Result::NotOwner(2));
    let durable = seven.claim(6, "durable").await;
    assert!(matches!(durable, registry_claimed::Result::Granted(g) if g.persistent));
    // "old" was kept with its epoch from generation 2.
    assert_eq!(
        service.locate(&key("old")),
        Located::Online { gateway: NodeId(7), epoch: Epoch::new(2, 9), since: UnixMillis(1_000) }
    );

    // Seven goes away: after its lease, its sessions end.
    drop(seven);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while service.linked() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "the link's end is seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.advance(LEASE.as_millis() as u64);
    while service.locate(&key("old")) != Located::Unknown {
        assert!(tokio::time::Instant::now() < deadline, "its lease ends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // "durable" was claimed with a clean start and no expiry: transient
    // from then on (the leader ends the persistent session), so it ends too.
    assert_eq!(service.locate(&key("durable")), Located::Unknown);
    server.abort();
}

/// A will on `wills/{client}` as the wire carries it.
fn will_of(client: &str) -> pb::Will {
    will_to_pb(&crate::owner::tests::will(client))
}

/// Starts `service` on a loopback port; returns its address.
/// Router `node`'s registry service, serving the shards `view` gives it
/// (a process's first table names what it inherited: a second one, of a
/// later generation, is what it serves).
pub(crate) async fn owner(node: u64, view: TableView) -> (RegistryService, watch::Sender<TableView>) {
    let mut first = view.clone();
    first.table.as_mut().expect("a table").generations.iter_mut().for_each(|g| *g -= 1);
    let (sender, watched) = watch::channel(first);
    let persistent: PersistentLookup = Arc::new(|sessions: &[SessionKey]| vec![false; sessions.len()]);
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

pub(crate) async fn serve(service: &RegistryService) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let server = tonic::transport::Server::builder()
        .add_service(service.clone().into_server())
        .serve_with_incoming(TcpListenerStream::new(listener));
    (address, tokio::spawn(async move { server.await.expect("served") }))
}

/// Router 1 owns every shard; router 2 leads. The will a transient claim
/// carries is published when its connection ends abnormally: sent to the
/// leader's `Registry.Wills` over gRPC, whose router publishes it; once
/// router 1 leads, on its own router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wills_of_transient_sessions_are_published_through_the_leader() {
    let clock = Arc::new(ManualClock::new(UnixMillis(1_000)));
    let table = |routers: std::collections::BTreeMap<u64, String>| TableView {
        table: Some(ShardTable {
            owners: vec![ME; usize::from(REGISTRY_SHARDS)],
            generations: vec![2; usize::from(REGISTRY_SHARDS)],
        }),
        routers,
        gateways: [NodeId(7)].into(),
        applied_index: 1,
    };
    let start = |node, watched| {
        let persistent: PersistentLookup = Arc::new(|sessions: &[SessionKey]| vec![false; sessions.len()]);
        let inherited = Arc::new(AtomicU32::new(0));
        RegistryService::new(node, "c".to_owned(), watched, persistent, clock.clone(), LEASE, inherited)
    };
    // The leader, router 2.
    let (_, leader_table) = watch::channel(table(Default::default()));
    let leader = start(2, leader_table);
    let leader_router = Router::new(crate::state::RouterConfig::default(), 2, clock.clone());
    let (_, leader_serving) = watch::channel(Some(leader_router.clone()));
    leader.publish_wills_through(leader_serving, Arc::new(|| Some(2)));
    let (leader_address, leader_server) = serve(&leader).await;
    // The owner, router 1, not leading: it knows router 2's address.
    // The first table a process sees names what it inherited; the next
    // restarts its shards.
    let mut first = table(Default::default());
    first.table =
        Some(ShardTable { owners: vec![ME; usize::from(REGISTRY_SHARDS)], generations: vec![1; 64] });
    let (owner_table, watched) = watch::channel(first);
    let owner = start(ME, watched);
    until(|| owner.counts().1 == u64::from(REGISTRY_SHARDS)).await;
    owner_table.send_replace(table([(2, leader_address.clone())].into()));
    until(|| owner.counts().0 == u64::from(REGISTRY_SHARDS)).await;
    let (serving, owner_serving) = watch::channel(None);
    let lead = Arc::new(std::sync::atomic::AtomicU64::new(2));
    let leader_of = lead.clone();
    owner.publish_wills_through(owner_serving, Arc::new(move || Some(leader_of.load(Ordering::Relaxed))));
    let (owner_address, owner_server) = serve(&owner).await;

    let mut gateway = Link::open(&owner_address, 7).await;
    gateway.send(registry_up::Item::List(pb::RegistryList { sessions: Vec::new(), last: true })).await;
    // A claim with a will, accepted, ended normally; then one ended
    // abnormally: only the second will is published.
    ended(&mut gateway, 1, "quiet", false).await;
    ended(&mut gateway, 3, "lost", true).await;
    until(|| owner.wills() == [0, 1, 0]).await;
    assert_eq!(leader_router.counters().wills_published, 1, "published by the leader's router");
    // A batch sent again (its answer lost) is published once.
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{leader_address}")).expect("endpoint");
    let mut client = RegistryClient::new(endpoint.connect().await.expect("connect"));
    let batch = |batch| pb::OwnerWills {
        contract_version: CONTRACT_VERSION,
        cluster_id: "c".to_owned(),
        router: 3,
        wills: vec![will_of("again")],
        incarnation: 77,
        batch,
    };
    for sent in [batch(1), batch(1), batch(2)] {
        client.wills(sent).await.expect("taken");
    }
    assert_eq!(leader_router.counters().wills_published, 3, "batch 1 once, batch 2");
    // Another cluster's wills are refused.
    let foreign = pb::OwnerWills { cluster_id: "other".to_owned(), ..batch(3) };
    let refused = client.wills(foreign).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // Router 1 leads now: its own router publishes.
    let own_router = Router::new(crate::state::RouterConfig::default(), 3, clock.clone());
    serving.send_replace(Some(own_router.clone()));
    lead.store(ME, Ordering::Relaxed);
    ended(&mut gateway, 5, "lost-again", true).await;
    until(|| owner.wills() == [1, 1, 0]).await;
    assert_eq!(own_router.counters().wills_published, 1);
    assert_eq!(leader_router.counters().wills_published, 3);
    leader_server.abort();
    owner_server.abort();
}

/// Claims `client` with a will over `gateway`, says the connection was
/// accepted, and ends it (`publish_will`: abnormally).
async fn ended(gateway: &mut Link, request: u64, client: &str, publish_will: bool) {
    let session = Some(session_to_pb(&key(client)));
    let claim = pb::RegistryClaim {
        request,
        session: session.clone(),
        clean_start: true,
        expiry_seconds: 0,
        stale_refusals: 0,
        will: Some(will_of(client)),
        connection: request,
    };
    gateway.send(registry_up::Item::Claim(claim)).await;
    let registry_down::Item::Claimed(claimed) = gateway.next().await else { panic!("claimed") };
    let Some(registry_claimed::Result::Granted(grant)) = claimed.result else { panic!("granted") };
    assert!(grant.holds_will, "this owner holds wills");
    let accepted = pb::RegistryAccepted { session: session.clone(), epoch: grant.epoch, accepted: true };
    gateway.send(registry_up::Item::Accepted(accepted)).await;
    let release = pb::RegistryRelease {
        request: request + 1,
        session,
        epoch: grant.epoch,
        expiry_seconds: 0,
        publish_will,
    };
    gateway.send(registry_up::Item::Release(release)).await;
    assert!(matches!(gateway.next().await, registry_down::Item::Released(r) if !r.stale));
}

/// A gateway lists its sessions of the shards a table gives this router as
/// soon as it reads the table: it is sent one only once the owner has
/// applied it (else the owner would take the list for another router's
/// shards, and wait for one that never comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::await_holding_lock, reason = "the owner is held busy on purpose while the table changes")]
async fn a_gateway_is_sent_a_table_only_once_the_owner_has_applied_it() {
    let moving = ShardId::of(&key("moving")).index();
    let view = |owner_of_moving: u64, generation: u64, applied_index: u64| {
        let mut owners = vec![ME; usize::from(REGISTRY_SHARDS)];
        owners[moving] = owner_of_moving;
        let mut generations = vec![generation; usize::from(REGISTRY_SHARDS)];
        generations[moving] += u64::from(owner_of_moving == ME);
        TableView {
            table: Some(ShardTable { owners, generations }),
            routers: Default::default(),
            gateways: [NodeId(7)].into(),
            applied_index,
        }
    };
    let (service, table) = owner(ME, view(2, 4, 2)).await;
    let (address, server) = serve(&service).await;
    let mut seven = Link::open(&address, 7).await;
    seven.send(registry_up::Item::List(pb::RegistryList { sessions: Vec::new(), last: true })).await;
    // Answered after the list: nothing of the link waits for the owner now.
    granted(seven.claim(1, "probe").await);

    // The shard of "moving" comes here; the owner is busy meanwhile.
    let busy = service.shared.owner();
    table.send_replace(view(ME, 4, 3));
    let early = tokio::time::timeout(Duration::from_millis(300), seven.down.message()).await;
    assert!(early.is_err(), "a table the owner has not applied was sent: {early:?}");
    drop(busy);
    assert!(matches!(seven.next().await, registry_down::Item::Table(_)), "the table, once applied");
    let listed = pb::ListedSession {
        session: Some(session_to_pb(&key("moving"))),
        epoch: Some(epoch_to_pb(Epoch::new(4, 9))),
        expiry_seconds: 0,
        will: None,
    };
    seven.send(registry_up::Item::List(pb::RegistryList { sessions: vec![listed], last: true })).await;
    until(|| service.locate(&key("moving")) != Located::Rebuilding).await;
    assert_eq!(
        service.locate(&key("moving")),
        Located::Online { gateway: NodeId(7), epoch: Epoch::new(4, 9), since: UnixMillis(1_000) }
    );
    server.abort();
}
