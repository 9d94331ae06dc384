//! Gateway↔router bad input over real gRPC on loopback: a link of another
//! contract version or cluster, a first item that is not a hello, and an
//! oversize batch are each refused with a gRPC status and counted.

use herald_core::{NodeId, SystemClock};
use herald_proto::grpc::CONTRACT_VERSION;
use herald_proto::grpc::pb::{self, seam_client::SeamClient, uplink};
use herald_router::grpc::{MAX_BATCH_ITEMS, SeamService};
use herald_router::{Router, RouterConfig};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_stream::wrappers::ReceiverStream;

fn hello(contract_version: u32, cluster_id: &str, gateway: u64) -> pb::Uplink {
    pb::Uplink {
        item: Some(uplink::Item::Hello(pb::Hello {
            contract_version,
            cluster_id: cluster_id.to_owned(),
            gateway,
            incarnation: 1,
            acks: true,
        })),
    }
}

/// Opens a link that sends `batches`; returns the status the router ends it with, if any
/// (`None`: it welcomed the gateway and is still serving).
async fn link(address: &str, batches: Vec<pb::UplinkBatch>) -> Option<tonic::Status> {
    let channel =
        herald_proto::grpc::tls::endpoint(address).expect("an endpoint").connect().await.expect("connect");
    let mut client = SeamClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    for batch in batches {
        sender.send(batch).await.expect("queued");
    }
    let response = match client.link(ReceiverStream::new(receiver)).await {
        Ok(response) => response,
        Err(status) => return Some(status),
    };
    let mut inbound = response.into_inner();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, inbound.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return None,
            Ok(Err(status)) => return Some(status),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_links_and_batches_are_refused_with_a_status_and_counted() {
    let router = Router::new(RouterConfig::default(), 1, Arc::new(SystemClock));
    let service = SeamService::new(router, NodeId(1), "ours".to_owned(), 64);
    let counters = service.counters();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(service.serve(listener, std::future::pending()));

    let one = |item| pb::UplinkBatch { items: vec![item] };
    let status = link(&address, vec![one(hello(CONTRACT_VERSION + 1, "ours", 1))]).await.expect("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(counters.refused_version.load(Ordering::Relaxed), 1);

    let status = link(&address, vec![one(hello(CONTRACT_VERSION, "theirs", 2))]).await.expect("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(counters.refused_cluster.load(Ordering::Relaxed), 1);

    let routes = pb::Uplink { item: Some(uplink::Item::Routes(pb::Routes::default())) };
    let status = link(&address, vec![one(routes.clone())]).await.expect("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A good link whose next batch is over the item limit: it ends, counted.
    let oversize = pb::UplinkBatch { items: vec![routes; MAX_BATCH_ITEMS + 1] };
    let status = link(&address, vec![one(hello(CONTRACT_VERSION, "ours", 3)), oversize]).await;
    assert_eq!(status.map(|s| s.code()), Some(tonic::Code::InvalidArgument));
    assert_eq!(
        counters.refused_malformed.load(Ordering::Relaxed),
        2,
        "the non-hello first item and the batch"
    );
    assert_eq!(counters.links_opened.load(Ordering::Relaxed), 1);
}
