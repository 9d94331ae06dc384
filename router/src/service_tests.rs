//! The router's shell with a locator: a batch's pushes located at their
//! shards' owners before they are applied, refused as busy beyond the
//! lookups under way, and dropped when their gateway linked again
//! meanwhile (it sends them again on its new link).

use super::*;
use crate::locate::Locator;
use crate::raft::shards::{ShardTable, TableView};
use crate::registry_link::link_tests::owner;
use herald_core::{AppId, ClientId, ErrorCode, MessageId, QoS, REGISTRY_SHARDS, SystemClock, Topic};
use herald_proto::Message;
use herald_proto::seam::{self, Audience, GatewayLink, Push, PushOutcome};
use tokio::sync::watch;

const GATEWAY: NodeId = NodeId(7);

/// Every shard owned by router `owner`, at `address` when not this one.
fn table(owner: u64, address: Option<&str>) -> TableView {
    TableView {
        table: Some(ShardTable {
            owners: vec![owner; usize::from(REGISTRY_SHARDS)],
            generations: vec![2; usize::from(REGISTRY_SHARDS)],
        }),
        routers: address.map(|a| (owner, a.to_owned())).into_iter().collect(),
        gateways: [GATEWAY].into(),
        applied_index: 2,
    }
}

/// Router 1, locating through `table`, its own shards served in place
/// (no gateway known to them: none is waited for).
async fn router(table_view: TableView) -> (Router, Locator) {
    let (local, _table) = owner(1, TableView { gateways: Default::default(), ..table(1, None) }).await;
    let (_, view) = watch::channel(table_view);
    let locator = Locator::new(1, "c".to_owned(), local, view);
    let router = Router::new(RouterConfig::default(), 2, Arc::new(SystemClock));
    router.locate_through(locator.clone());
    (router, locator)
}

fn link(router: &Router) -> GatewayLink {
    let (gateway, port) = seam::link(GATEWAY, 64);
    router.attach(port, 1, true).expect("attached");
    gateway
}

fn push(request: u64, device: &str) -> Uplink {
    let message = Message {
        id: MessageId::compose(1_000, NodeId(1), request),
        app: AppId::default_app(),
        topic: Topic::new(format!("$push/{device}")).expect("topic"),
        payload: bytes::Bytes::from_static(b"hello"),
        qos: QoS::AtLeastOnce,
        retain: false,
        created_at: UnixMillis(1_000),
        expires_at: None,
        origin: None,
        properties: None,
        trace: None,
    };
    let audience = Audience::Devices(vec![ClientId::new(device.to_owned()).expect("client id")]);
    Uplink::Push(Push {
        request,
        message: Arc::new(message),
        audience,
        store_offline: false,
        idempotency: None,
    })
}

/// The answer to push `request`, skipping what else comes down, or `None`
/// if none comes within `wait`.
async fn pushed(gateway: &mut GatewayLink, request: u64, wait: Duration) -> Option<Downlink> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, gateway.downlink.recv()).await {
            Ok(Some(answer @ Downlink::Pushed { request: r, .. })) if r == request => return Some(answer),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// With every lookup slot taken, a push to locate is refused as busy at
/// once (the gateway answers 503); once there is room, the same push is
/// located and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_beyond_the_lookups_under_way_is_refused_busy_then_taken_once_there_is_room() {
    let (router, locator) = router(table(1, None)).await;
    let mut gateway = link(&router);
    let taken = router.inner.locating.clone().try_acquire_many_owned(LOCATING as u32).expect("every slot");
    gateway.uplink.send(push(9, "d1")).await.expect("sent");
    let refused = pushed(&mut gateway, 9, Duration::from_secs(5)).await;
    assert!(
        matches!(refused, Some(Downlink::Pushed { result: Err(ErrorCode::ServerBusy), .. })),
        "{refused:?}"
    );
    assert_eq!(locator.counts(), [0, 0, 0], "nothing asked");

    drop(taken);
    gateway.uplink.send(push(10, "d1")).await.expect("sent");
    match pushed(&mut gateway, 10, Duration::from_secs(5)).await {
        Some(Downlink::Pushed { result: Ok(report), .. }) => {
            assert_eq!(
                report.devices,
                [(ClientId::new("d1".to_owned()).expect("id"), PushOutcome::Unreachable)]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(locator.counts(), [1, 0, 0], "located at this router's own shard");
}

/// A push whose lookup ends after its gateway linked again is not
/// applied: its answer could only reach the new link, which did not ask
/// (the gateway sends its unanswered requests again there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_located_push_whose_gateway_linked_again_meanwhile_is_dropped() {
    // Every shard owned by router 2, which does not answer: the lookup
    // lasts its patience.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = closed.local_addr().expect("address").to_string();
    drop(closed);
    let (router, locator) = router(table(2, Some(&address))).await;
    let mut first = link(&router);
    first.uplink.send(push(9, "d1")).await.expect("sent");
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while router.inner.locating.available_permits() == LOCATING {
        assert!(tokio::time::Instant::now() < until, "the push was never taken to be located");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut second = link(&router);
    let until = tokio::time::Instant::now() + crate::locate::LOCATE_PATIENCE + Duration::from_secs(2);
    while locator.counts()[2] == 0 {
        assert!(tokio::time::Instant::now() < until, "the lookup never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = pushed(&mut second, 9, Duration::from_secs(2)).await;
    assert!(late.is_none(), "applied after its link was replaced: {late:?}");
    assert!(pushed(&mut first, 9, Duration::from_millis(50)).await.is_none(), "nor answered on the old link");
}
