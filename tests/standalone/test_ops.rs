//! The operations listener: Prometheus metrics, liveness and readiness, read by real HTTP
//! clients and the Prometheus client library's parser.

use crate::ops_client::{fetch, ops_address, samples};
use crate::support::{Broker, Message, Version, publisher, subscriber};

#[test]
fn metrics_count_what_clients_did_and_parse_as_prometheus_text() {
    let broker = Broker::start_with(&["--ops", "127.0.0.1:0"], &[]);
    let ops = ops_address(&broker.log());
    // A persistent session that leaves: what is published meanwhile waits in its inbox.
    subscriber(&broker, Version::V5)
        .client_id("keeper")
        .persistent()
        .topic("ops/#")
        .qos(1)
        .exit_after_subscribe()
        .start();
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
    assert!(value("herald_messages_received_total{}") >= 1.0);
    // The publisher and the persistent session's client left with a DISCONNECT.
    assert!(value("herald_connections_closed_total{reason=\"normal\"}") >= 2.0);
    assert_eq!(value("herald_sessions_persistent{}"), 1.0);
    assert_eq!(value("herald_subscriptions{}"), 1.0, "the persistent session's one filter");
    assert!(value("herald_routes{}") >= 1.0, "the watcher's filter is routed to the gateway");
    assert_eq!(value("herald_inbox_messages{}"), 1.0, "ops/1 waits for the persistent session");
    assert_eq!(value("herald_inbox_bytes{}"), 3.0);
    assert!(metrics.keys().any(|k| k.starts_with("herald_gateway_backlog{gateway=")), "{lines:#?}");
    assert_eq!(value("herald_raft_snapshots_total{event=\"installed\"}"), 0.0);
    assert!(value("herald_heap_bytes{}") > 0.0);
}

#[test]
fn a_running_node_is_live_and_ready() {
    let broker = Broker::start_with(&["--ops", "127.0.0.1:0"], &[]);
    let ops = ops_address(&broker.log());
    assert_eq!(fetch(&ops, "/healthz"), (200, vec!["body ok".to_owned()]));
    assert_eq!(fetch(&ops, "/readyz"), (200, vec!["body ready".to_owned()]));
    assert_eq!(fetch(&ops, "/nothing").0, 404);
}

/// Runs `promtool` with `arguments` (and `input` on its standard input); returns whether it
/// passed, and what it said.
fn promtool(arguments: &[&str], input: Option<&str>) -> (bool, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(arguments)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool (Debian's prometheus package)");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write to promtool");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("promtool output");
    let said =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}

#[test]
fn the_metrics_pass_promtool_and_so_do_the_alert_rules_and_their_unit_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "[push.apps.shop]\napi_keys = [\"shop-key-0123456789abcdef\"]\n").expect("config");
    let broker = Broker::start_with(
        &["--config", path.to_str().expect("utf-8")],
        &[("HERALD_PUSH_HTTP", "127.0.0.1:0"), ("HERALD_OPS", "127.0.0.1:0")],
    );
    // A push-API request, so that its counters and histogram are there.
    let http = crate::push_client::push_address(|| broker.log());
    let reply = crate::push_client::call(
        http,
        "GET",
        "/v1/apps/shop/devices/d1",
        Some("shop-key-0123456789abcdef"),
        crate::push_client::Body::Text(""),
    );
    assert_eq!(reply.status, 404);
    let address = ops_address(&broker.log());
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://{address}/metrics")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.contains("herald_push_request_duration_seconds_bucket"), "{text}");
    let (clean, said) = promtool(&["check", "metrics"], Some(&text));
    assert!(clean, "promtool check metrics:\n{said}");
    let (valid, said) = promtool(&["check", "rules", "herald-alerts.yml"], None);
    assert!(valid, "{said}");
    let (passed, said) = promtool(&["test", "rules", "herald-alerts.test.yml"], None);
    assert!(passed, "{said}");
}
