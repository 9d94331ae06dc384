//! The operations listener: Prometheus metrics, liveness and readiness, read by real HTTP
//! clients and the Prometheus client library's parser.

use crate::ops_client::{fetch, ops_address, samples};
use crate::support::{Broker, Message, Version, publisher, subscriber};

#[test]
fn metrics_count_what_clients_did_and_parse_as_prometheus_text() {
    let broker = Broker::start_with(&["--ops", "127.0.0.1:0"], &[]);
    let ops = ops_address(&broker.log());
    let mut watcher = subscriber(&broker, Version::V5).topic("ops/#").qos(1).start();
    publisher(&broker, Version::V311, "ops/1").qos(1).message("one").run();
    assert_eq!(watcher.expect_messages(1), [Message::new("ops/1", "one", 1, false)]);

    let (status, lines) = fetch(&ops, "/metrics");
    assert_eq!(status, 200);
    let metrics = samples(&lines);
    let value = |name: &str| *metrics.get(name).unwrap_or_else(|| panic!("no {name} in {lines:#?}"));
    assert_eq!(value("herald_connections{}"), 1.0, "the subscriber is connected");
    assert!(value("herald_connections_opened_total{}") >= 2.0);
    assert!(value("herald_deliveries_total{}") >= 1.0);
    assert!(value("herald_messages_routed_total{}") >= 1.0);
    assert_eq!(value("herald_sessions_online{}"), 1.0);
    assert_eq!(value("herald_raft_is_leader{}"), 1.0);
    assert_eq!(value("herald_messages_dropped_total{reason=\"queue_full\"}"), 0.0);
    assert!(value("herald_raft_applied_index{}") >= 1.0);
}

#[test]
fn a_running_node_is_live_and_ready() {
    let broker = Broker::start_with(&["--ops", "127.0.0.1:0"], &[]);
    let ops = ops_address(&broker.log());
    assert_eq!(fetch(&ops, "/healthz"), (200, vec!["body ok".to_owned()]));
    assert_eq!(fetch(&ops, "/readyz"), (200, vec!["body ready".to_owned()]));
    assert_eq!(fetch(&ops, "/nothing").0, 404);
}
