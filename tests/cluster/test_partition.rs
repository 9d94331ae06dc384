//! A network partition between routers (through the fault proxies in front
//! of each router's Raft traffic): the leader cut off from the majority
//! stops serving, the majority elects a leader that serves, work that only
//! the cut-off side can see is refused with explicit errors, and after
//! healing there is one leader and one history.

use crate::push_client::{Body, call, push_address};
use crate::raft_cluster::{RaftCluster, at_least_once, eventually, numbered, publish_numbered};
use crate::support::{Version, leave_persistent, subscriber};
use serde_json::json;
use std::time::Duration;

const KEY: &str = "shop-key-0123456789abcdef";

#[test]
fn a_leader_cut_off_from_the_majority_stops_serving_and_after_healing_there_is_one_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    let text = format!(
        "[auth.users.shop-device]\npassword = \"pw\"\napp = \"shop\"\n\
         [push]\nhttp = \"127.0.0.1:0\"\n[push.apps.shop]\napi_keys = [\"{KEY}\"]\n"
    );
    std::fs::write(&config, text).expect("write the config");
    let config = config.to_str().expect("utf-8");

    let mut cluster = RaftCluster::start_partitionable(3);
    let gateway = cluster.start_gateway();
    leave_persistent(&gateway, "kept", "part/#");
    publish_numbered(&gateway, "part", 0..5);
    let old = cluster.leader();
    // A second gateway that knows the old leader only: it stays on that side of the partition.
    let cut_off = cluster.start_gateway_with(&[old], &["--config", config]);
    let cut_off_http = push_address(|| cluster.gateway_output(1));
    let send = |text: &str| {
        let body = json!({"audience": {"device_ids": ["d1"]}, "content": {"data": {"text": text}}});
        call(cut_off_http, "POST", "/v1/apps/shop/messages", Some(KEY), Body::Json(&body))
    };
    assert_eq!(send("before").status, 202, "the cut-off gateway serves before the partition");

    cluster.isolate(old);
    // The old leader notices that no quorum acknowledges it and stops serving, with a clear
    // log line; the majority elects a leader of a later term.
    eventually(
        Duration::from_secs(20),
        || cluster.router_output(old).contains("no quorum of voters acknowledges this leader").then_some(()),
        || "the old leader never said it lost the quorum".to_owned(),
    );
    let new = cluster.wait_for_leader_other_than(old);

    // The gateway that reaches the majority links to the new leader: what it acknowledges
    // from now on is committed there (a publish sent while it looked for the new leader waits,
    // or is refused at CONNECT with 0x88, and is retried, as clients do).
    publish_numbered(&gateway, "part", 5..10);
    // The cut-off side refuses new work explicitly: the push API answers 503 with a problem,
    // and a device's CONNECT gets CONNACK 0x88 (server unavailable). Nothing is acknowledged.
    let refused = send("during");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.body["code"], "UNAVAILABLE", "{refused:?}");
    let (host, port) = (cut_off.ip().to_string(), cut_off.port().to_string());
    let connect = std::process::Command::new("mosquitto_sub")
        .args(["-h", &host, "-p", &port, "-V", "5", "-i", "d1", "-u", "shop-device", "-P", "pw"])
        .args(["-t", "$push/d1", "-C", "1", "-W", "30"])
        .output()
        .expect("run mosquitto_sub");
    let said = String::from_utf8_lossy(&connect.stderr).to_lowercase();
    assert!(
        !connect.status.success() && said.contains("server unavailable"),
        "CONNACK 0x88 expected: {said}"
    );

    cluster.heal();
    // The old leader sees the later term and follows: one leader, and every router applies
    // the same log.
    cluster.wait_until_sole_leader(new, old);
    eventually(
        Duration::from_secs(30),
        || {
            let applied: Vec<String> = (1..=3)
                .filter_map(|node| cluster.status_of(node).map(|columns| columns[5].clone()))
                .collect();
            (applied.len() == 3 && applied.iter().all(|a| *a == applied[0])).then_some(())
        },
        || "the routers' logs did not converge".to_owned(),
    );
    let mut back =
        subscriber(&gateway, Version::V5).client_id("kept").persistent().topic("part/#").qos(1).start();
    let expected = numbered("part", 0..10);
    // At least once: a publish whose PUBACK was cut off may be there twice, in order.
    let got = at_least_once(&mut back, 10);
    assert_eq!(got, expected, "every acknowledged message, in order");
    assert!(!cluster.router_output(old).contains("panicked"), "{}", cluster.router_output(old));
}
