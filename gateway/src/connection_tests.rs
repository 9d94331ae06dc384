//! Tests of the connection task against a gateway whose router side is
//! the test.

use super::*;
use crate::auth::ConfigAuthenticator;
use crate::websocket::WebSocketTransport;
use crate::{Gateway, GatewayConfig};
use herald_core::{NodeId, SystemClock};
use tokio::net::TcpStream;

/// The idle connection's state is the task's future: it must stay small
/// (docs/benchmarks.md, memory per idle connection). Growing it past
/// this budget needs a measurement and a new budget, not an accident.
#[tokio::test]
async fn an_idle_connection_future_stays_within_its_budget() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
    let (link, _port) = herald_proto::seam::link(NodeId(1), 4);
    let config = GatewayConfig { mqtt: "127.0.0.1:0".parse().expect("addr"), ..GatewayConfig::default() };
    let auth = Arc::new(ConfigAuthenticator::anonymous());
    let gateway = Gateway::bind(config, link, auth, Arc::new(SystemClock)).await.expect("bind gateway");
    assert!(gateway.shared.admits_connection());
    let future = serve(client, gateway.shared.clone());
    let size = std::mem::size_of_val(&future);
    eprintln!("serve future: {size} bytes");
    // tokio rounds a task cell (future + 96 bytes) up to 128: up to 280
    // bytes of future is a 384-byte cell.
    assert!(size <= 280, "the per-connection future grew to {size} bytes");
}

/// The WebSocket instantiation of the same task: a little larger than
/// TCP's (the transport keeps a message taken off the socket), with the
/// WebSocket stream itself boxed beside it (ADR 0009).
#[test]
fn a_websocket_connection_future_stays_within_its_budget() {
    fn future_size<F: Future>(_: &impl FnOnce(WebSocketTransport, Arc<Shared>) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    let size = future_size(&serve::<WebSocketTransport>);
    eprintln!("websocket serve future: {size} bytes");
    assert!(size <= 320, "the websocket connection future grew to {size} bytes");
}

/// A gateway bound on loopback whose router side is the test.
struct TestGateway {
    addr: std::net::SocketAddr,
    port: herald_proto::seam::RouterPort,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    async fn start(config: GatewayConfig) -> TestGateway {
        let (link, port) = herald_proto::seam::link(NodeId(1), 16);
        let auth = Arc::new(ConfigAuthenticator::anonymous());
        let gateway = Gateway::bind(config, link, auth, Arc::new(SystemClock)).await.expect("bind");
        let addr = gateway.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(gateway.run(async move {
            let _ = stopped.await;
        }));
        TestGateway { addr, port, stop, running }
    }

    /// Connects and sends a v3.1.1 CONNECT: clean session 0,
    /// keep-alive 60 s, the four-byte client id `id`.
    async fn connect_v311(&self, id: &[u8; 4]) -> TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut client = TcpStream::connect(self.addr).await.expect("connect");
        let mut connect =
            vec![0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x3C, 0x00, 0x04];
        connect.extend_from_slice(id);
        client.write_all(&connect).await.expect("write");
        client
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.running.await;
    }
}

impl TestGateway {
    /// A gateway on a free loopback port that drains within 100 ms.
    async fn quick() -> TestGateway {
        TestGateway::start(GatewayConfig {
            mqtt: "127.0.0.1:0".parse().expect("addr"),
            drain_timeout: std::time::Duration::from_millis(100),
            ..GatewayConfig::default()
        })
        .await
    }
}

/// Message `id` on topic `a/b` with payload `hi`, in the app of `claim`.
fn hi_on_a_b(id: u128, claim: &herald_proto::seam::Claim, qos: herald_core::QoS) -> herald_proto::Message {
    herald_proto::Message {
        id: herald_core::MessageId(id),
        app: claim.session.app.clone(),
        topic: herald_core::Topic::new("a/b").expect("topic"),
        payload: bytes::Bytes::from_static(b"hi"),
        qos,
        retain: false,
        created_at: herald_core::UnixMillis(0),
        expires_at: None,
        origin: None,
        properties: None,
        trace: None,
    }
}

/// A router too slow to answer a claim in time must not keep the session
/// owned by a connection that gave up: when the grant comes, the gateway
/// releases it. (A slow router is a fault a real one does not produce on
/// demand, so the router here is the test.)
#[tokio::test]
async fn a_grant_that_comes_after_the_claim_timeout_is_released_at_once() {
    use herald_proto::seam::Downlink as D;
    use tokio::io::AsyncReadExt;
    let mut gateway = TestGateway::start(GatewayConfig {
        mqtt: "127.0.0.1:0".parse().expect("addr"),
        claim_timeout: std::time::Duration::from_millis(200),
        ..GatewayConfig::default()
    })
    .await;
    let mut client = gateway.connect_v311(b"slow").await;
    let port = &mut gateway.port;
    let Some(Uplink::Claim(claim)) = port.uplink.recv().await else { panic!("no claim") };
    let mut connack = [0u8; 4];
    client.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x03], "server unavailable after the claim timeout");

    let epoch = herald_core::Epoch::new(1, 9);
    let grant = ClaimGrant { epoch, session_present: true, subscriptions: Vec::new(), queued: Vec::new() };
    port.downlink.send(D::Claimed { request: claim.request, result: Ok(grant) }).await.expect("send");
    let released = tokio::time::timeout(std::time::Duration::from_secs(5), port.uplink.recv()).await;
    let Ok(Some(Uplink::Release(release))) = released else { panic!("no release: {released:?}") };
    assert_eq!((release.session, release.epoch, release.publish_will), (claim.session, epoch, false));
    gateway.stop().await;
}

/// A burst of CONNECTs is asked of the router at most
/// `MAX_AWAITING_REPLIES` at a time: the rest wait for answers, so the
/// router's replies never overflow the gateway's downlink (which the
/// router answers by letting the gateway go). The router here does not
/// answer until told: a fault a real one does not produce on demand.
#[tokio::test]
async fn a_burst_of_connects_waits_for_room_among_the_claims_awaiting_replies() {
    use crate::admission::MAX_AWAITING_REPLIES;
    use herald_proto::seam::Downlink as D;
    let mut gateway = TestGateway::quick().await;
    let mut clients = Vec::new();
    for index in 0..MAX_AWAITING_REPLIES + 100 {
        let id = format!("{index:04}");
        clients.push(gateway.connect_v311(id.as_bytes().try_into().expect("four bytes")).await);
    }
    let port = &mut gateway.port;
    let mut claims = Vec::new();
    let quiet = std::time::Duration::from_millis(200);
    while let Ok(Some(item)) = tokio::time::timeout(quiet, port.uplink.recv()).await {
        let Uplink::Claim(claim) = item else { continue };
        claims.push(claim);
    }
    assert_eq!(claims.len(), MAX_AWAITING_REPLIES, "claims asked before any answer");
    // An answer makes room for one more.
    let grant = |epoch| ClaimGrant {
        epoch: herald_core::Epoch::new(1, epoch),
        session_present: false,
        subscriptions: Vec::new(),
        queued: Vec::new(),
    };
    let first = claims.remove(0);
    port.downlink.send(D::Claimed { request: first.request, result: Ok(grant(1)) }).await.expect("send");
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), port.uplink.recv()).await;
    assert!(matches!(next, Ok(Some(Uplink::Claim(_)))), "one more claim: {next:?}");
    let after = tokio::time::timeout(quiet, port.uplink.recv()).await;
    assert!(!matches!(after, Ok(Some(Uplink::Claim(_)))), "only one: {after:?}");
    drop(clients);
    gateway.stop().await;
}

/// The same for connections closing at once: at most
/// `MAX_AWAITING_REPLIES` releases wait for the router's answers.
#[tokio::test]
async fn connections_closing_at_once_wait_for_room_among_the_releases_awaiting_replies() {
    use crate::admission::MAX_AWAITING_REPLIES;
    use herald_proto::seam::Downlink as D;
    use tokio::io::AsyncReadExt;
    let mut gateway = TestGateway::quick().await;
    let count = MAX_AWAITING_REPLIES + 100;
    let mut clients = Vec::new();
    for index in 0..count {
        let id = format!("{index:04}");
        let mut client = gateway.connect_v311(id.as_bytes().try_into().expect("four bytes")).await;
        let Some(Uplink::Claim(claim)) = gateway.port.uplink.recv().await else { panic!("no claim") };
        let grant = ClaimGrant {
            epoch: herald_core::Epoch::new(1, index as u64 + 1),
            session_present: false,
            subscriptions: Vec::new(),
            queued: Vec::new(),
        };
        let reply = D::Claimed { request: claim.request, result: Ok(grant) };
        gateway.port.downlink.send(reply).await.expect("send");
        let mut connack = [0u8; 4];
        client.read_exact(&mut connack).await.expect("CONNACK");
        clients.push(client);
    }
    drop(clients);
    let mut releases = Vec::new();
    let quiet = std::time::Duration::from_millis(200);
    while let Ok(Some(item)) = tokio::time::timeout(quiet, gateway.port.uplink.recv()).await {
        let Uplink::Release(release) = item else { continue };
        releases.push(release);
    }
    assert_eq!(releases.len(), MAX_AWAITING_REPLIES, "releases asked before any answer");
    let first = releases.remove(0);
    gateway.port.downlink.send(D::Released { request: first.request }).await.expect("send");
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), gateway.port.uplink.recv()).await;
    assert!(matches!(next, Ok(Some(Uplink::Release(_)))), "one more release: {next:?}");
    gateway.stop().await;
}

/// A persistent session's acknowledgements go to the router ahead of
/// its release, not 20 ms later with the next batch: the router must not
/// keep in the inbox, and resend, what the client has.
#[tokio::test]
async fn a_sessions_acknowledgements_go_ahead_of_its_release() {
    use herald_proto::seam::{Downlink as D, QueuedMessage};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut gateway = TestGateway::quick().await;
    let mut client = gateway.connect_v311(b"keep").await;
    let port = &mut gateway.port;
    let Some(Uplink::Claim(claim)) = port.uplink.recv().await else { panic!("no claim") };
    let message = hi_on_a_b(77, &claim, herald_core::QoS::AtLeastOnce);
    let queued = QueuedMessage {
        message: Arc::new(message),
        qos: herald_core::QoS::AtLeastOnce,
        subscription_ids: Vec::new(),
        progress: herald_proto::seam::Progress::Unsent,
        shared: None,
    };
    let grant = ClaimGrant {
        epoch: herald_core::Epoch::new(1, 1),
        session_present: true,
        subscriptions: Vec::new(),
        queued: vec![queued],
    };
    port.downlink.send(D::Claimed { request: claim.request, result: Ok(grant) }).await.expect("send");
    // CONNACK (4 bytes), then PUBLISH QoS 1: topic `a/b`, packet id, `hi`.
    let mut received = [0u8; 4 + 11];
    tokio::time::timeout(std::time::Duration::from_secs(5), client.read_exact(&mut received))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(received[4] & 0xF6, 0x32, "a QoS 1 PUBLISH: {received:?}");
    let packet_id = [received[11], received[12]];
    // PUBACK, then DISCONNECT at once.
    client.write_all(&[0x40, 0x02, packet_id[0], packet_id[1], 0xE0, 0x00]).await.expect("write");
    let mut seen = Vec::new();
    while let Ok(Some(item)) =
        tokio::time::timeout(std::time::Duration::from_secs(5), port.uplink.recv()).await
    {
        match item {
            Uplink::Acked(acks) => {
                let acked = acks[0].messages == [herald_core::MessageId(77)];
                seen.push(if acked { "acked 77" } else { "acked something else" }.to_owned());
            }
            Uplink::Release(_) => {
                seen.push("release".to_owned());
                break;
            }
            _ => {}
        }
    }
    assert_eq!(seen, ["acked 77", "release"]);
    gateway.stop().await;
}

/// A delivery right behind the grant (a message published while the
/// session resumed) reaches the client: the claim wait must not eat it.
#[tokio::test]
async fn a_delivery_right_behind_the_grant_reaches_the_client() {
    use herald_proto::seam::{Downlink as D, Subscription};
    use tokio::io::AsyncReadExt;
    let mut gateway = TestGateway::quick().await;
    let mut client = gateway.connect_v311(b"back").await;
    let port = &mut gateway.port;
    let Some(Uplink::Claim(claim)) = port.uplink.recv().await else { panic!("no claim") };
    let filter = herald_core::TopicFilter::new("a/#").expect("filter");
    let subscription = Subscription {
        filter,
        qos: herald_core::QoS::AtMostOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        identifier: None,
    };
    let grant = ClaimGrant {
        epoch: herald_core::Epoch::new(1, 1),
        session_present: true,
        subscriptions: vec![subscription],
        queued: Vec::new(),
    };
    let message = hi_on_a_b(1, &claim, herald_core::QoS::AtMostOnce);
    port.downlink.send(D::Claimed { request: claim.request, result: Ok(grant) }).await.expect("send");
    port.downlink.send(D::Deliver(Arc::new(message))).await.expect("send");
    let mut received = [0u8; 13];
    tokio::time::timeout(std::time::Duration::from_secs(5), client.read_exact(&mut received))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&received[..4], &[0x20, 0x02, 0x01, 0x00], "CONNACK, session present");
    // PUBLISH QoS 0, remaining length 7: topic `a/b`, payload `hi`.
    assert_eq!(&received[4..], &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'], "the PUBLISH");
    gateway.stop().await;
}
