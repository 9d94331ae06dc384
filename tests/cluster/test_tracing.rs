//! A push is one trace: a router and a gateway export their spans over
//! OTLP/gRPC to a collector (here, one in the test that keeps what it is
//! sent), and the spans of one send, made in two processes, share the
//! caller's trace and form one tree: the HTTP request at the gateway, the
//! routing and the Raft commit at the router, the delivery at the gateway.

use crate::cluster::Cluster;
use crate::push_client::{Device, call_with, push_address};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "shop-key-0123456789abcdef";
/// The app backend's own span: the push joins its trace.
const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A span as exported: its name, the service that made it, its ids.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    service: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

/// An OTLP trace receiver that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                kept.push(Exported {
                    name: span.name,
                    service: service.clone(),
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent: span.parent_span_id,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts the collector on a loopback port, on its own runtime.
fn start_collector() -> (Collector, SocketAddr, tokio::runtime::Runtime) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let address = listener.local_addr().expect("address");
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    runtime.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    (collector, address, runtime)
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn a_push_is_one_trace_from_the_http_request_through_the_commit_to_the_delivery() {
    let (collector, address, _runtime) = start_collector();
    let endpoint = format!("http://{address}");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    let text = format!(
        "[auth.users.shop-device]\npassword = \"pw\"\napp = \"shop\"\n\
         [push]\nhttp = \"127.0.0.1:0\"\n[push.apps.shop]\napi_keys = [\"{KEY}\"]\n\
         [telemetry]\notlp_endpoint = \"{endpoint}\"\nmqtt_user_property = true\n"
    );
    std::fs::write(&config, text).expect("write the config");
    let mut cluster = Cluster::start_with(0, &[("HERALD_TELEMETRY_OTLP_ENDPOINT", &endpoint)]);
    let gateway = cluster.add_gateway_with(&["--config", config.to_str().expect("utf-8")]);
    let http = push_address(|| cluster.gateway_output(gateway));
    let device = Device::start(
        cluster.gateway(gateway),
        "d1",
        "shop-device",
        &["--subscribe", "$push/d1", "--expect", "1"],
    );
    let body = json!({"audience": {"device_ids": ["d1"]}, "content": {"data": {"n": 1}}});
    let reply = call_with(http, "POST", "/v1/apps/shop/messages", KEY, &[("traceparent", CALLER)], &body);
    assert_eq!(reply.status, 202, "{reply:?}");
    let got = device.finish();
    assert_eq!(got.len(), 1, "the device got the push");
    // The device gets the trace too (`mqtt_user_property`): the delivery's parent, in the
    // caller's trace.
    let delivered = got[0].trace.clone();
    assert_eq!(delivered.len(), 55, "a traceparent user property: {delivered}");
    // Both processes flush their spans when they stop.
    assert!(cluster.terminate_gateway(gateway, Duration::from_secs(15)), "the gateway stops");
    assert!(cluster.terminate_router(Duration::from_secs(15)), "the router stops");

    let spans = collector.spans.lock().expect("lock").clone();
    let trace = hex(&CALLER[3..35]);
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.trace_id == trace)
            .unwrap_or_else(|| panic!("no {name} span in the caller's trace: {spans:#?}"))
            .clone()
    };
    let (send, route, commit, deliver) =
        (find("push.send"), find("push.route"), find("raft.commit"), find("push.deliver"));
    assert_eq!(send.parent, hex(&CALLER[36..52]), "the send continues the caller's span");
    assert_eq!(route.parent, send.span_id, "routing is a child of the HTTP request");
    assert_eq!(commit.parent, route.span_id, "the commit is a child of the routing");
    assert_eq!(deliver.parent, route.span_id, "the delivery is a child of the routing");
    assert_eq!(
        (hex(&delivered[3..35]), hex(&delivered[36..52])),
        (trace.clone(), route.span_id.clone()),
        "the device sees the caller's trace and the routing span"
    );
    assert!(
        send.service.contains("herald-gateway") && deliver.service.contains("herald-gateway"),
        "{send:?} {deliver:?}"
    );
    assert!(
        route.service.contains("herald-router") && commit.service.contains("herald-router"),
        "{route:?} {commit:?}"
    );
}
