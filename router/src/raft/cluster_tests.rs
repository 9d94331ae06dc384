//! Three router nodes in one process, talking Raft over loopback gRPC:
//! the journal replicates, and survives the loss of the leader.

use super::*;
use herald_proto::grpc::pb::RaftRequest;
use herald_proto::grpc::pb::raft_peer_client::RaftPeerClient;
use herald_proto::journal::Fact;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const CLUSTER: &str = "test-cluster";

/// A node and the server its peers reach it through.
struct Running {
    node: Arc<RaftNode>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) {
        self.node.shutdown().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.server.await;
    }
}

fn retained(topic: &str) -> Fact {
    Fact::Retained(super::tests::retained_message(topic, b"x"))
}

fn topics(node: &RaftNode) -> Vec<String> {
    let mut topics: Vec<String> =
        node.durable_image().retained.iter().map(|m| m.topic.as_str().to_owned()).collect();
    topics.sort();
    topics
}

/// Waits until `check` holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts three voters on loopback and waits for a leader.
async fn three_nodes() -> Vec<Running> {
    let mut listeners = Vec::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3_u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        voters.insert(id, listener.local_addr().expect("address").to_string());
        listeners.push(listener);
    }
    let mut running = Vec::new();
    for (id, listener) in (1..=3_u64).zip(listeners) {
        let dir = tempfile::tempdir().expect("tempdir");
        let node =
            Arc::new(RaftNode::open(dir.path(), id, CLUSTER, RaftSettings::default()).await.expect("open"));
        let (stop, stopped) = oneshot::channel::<()>();
        let service = node.peer_service().into_server();
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        running.push(Running { node, stop: Some(stop), server, _dir: dir });
    }
    let joins = running.iter().map(|r| {
        let (node, voters) = (r.node.clone(), voters.clone());
        let address = voters[&node.id()].clone();
        tokio::spawn(async move { node.join(&address, Membership::Voters(voters)).await })
    });
    for join in joins.collect::<Vec<_>>() {
        join.await.expect("join task").expect("a leader is elected");
    }
    running
}

fn leader_of(running: &[Running]) -> usize {
    let leader = running[0].node.leader().expect("a leader is known");
    running.iter().position(|r| r.node.id() == leader).expect("the leader is one of them")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_the_journal_and_carry_on_without_their_leader() {
    let mut running = three_nodes().await;
    let first = leader_of(&running);
    super::tests::commit(&running[first].node, &[retained("a")]).await.expect("commit on the leader");
    let follower = (first + 1) % 3;
    assert!(
        super::tests::commit(&running[follower].node, &[retained("x")]).await.is_err(),
        "a follower does not commit on its own"
    );
    for r in &running {
        eventually("every node applied the fact", || topics(&r.node) == ["a"]).await;
    }

    let gone = running.remove(first);
    gone.stop().await;
    let survivor = running[0].node.clone();
    eventually("the two left elect a leader", || {
        survivor.leader().is_some_and(|leader| leader != (first as u64 + 1))
    })
    .await;
    let second = leader_of(&running);
    super::tests::commit(&running[second].node, &[retained("b")]).await.expect("commit on the new leader");
    for r in &running {
        eventually("both survivors applied it", || topics(&r.node) == ["a", "b"]).await;
    }
    for r in running {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_raft_messages_from_another_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RaftNode::open(dir.path(), 1, CLUSTER, RaftSettings::default()).await.expect("open");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let service = node.peer_service().into_server();
    let server = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    let channel = herald_proto::grpc::tls::endpoint(&address.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = RaftPeerClient::new(channel);
    let request = RaftRequest { cluster_id: "another".into(), payload: b"{}".to_vec().into() };
    let status = client.vote(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    let request = RaftRequest { cluster_id: CLUSTER.into(), payload: b"not json".to_vec().into() };
    let status = client.vote(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    server.abort();
    node.shutdown().await;
}
