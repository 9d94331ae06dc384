//! A network partition between routers (through the fault proxies in front
//! of each router's Raft traffic): the leader cut off from the majority
//! stops serving, the majority elects a leader that serves, work that only
//! the cut-off side can see is refused with explicit errors (CONNACK 0x88,
//! PUBACK and SUBACK 0x80, HTTP 503) and is never applied later, and after
//! healing there is one leader and one history.

use crate::cluster::Cluster;
use crate::push_client::{Body, call, push_address};
use crate::raft_cluster::{RaftCluster, at_least_once, eventually, numbered, publish_numbered};
use crate::raw;
use crate::support::{Incoming, RawConnection, SILENCE, Version, connect_v5, leave_persistent, subscriber};
use serde_json::json;
use std::time::Duration;

const KEY: &str = "shop-key-0123456789abcdef";

#[test]
fn a_leader_cut_off_from_the_majority_stops_serving_and_after_healing_there_is_one_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    // A short reply timeout: a client's publish that no router takes is refused after 3 s.
    let text = format!(
        "router_reply_timeout_secs = 3\n[auth.users.shop-device]\npassword = \"pw\"\napp = \"shop\"\n\
         [push]\nhttp = \"127.0.0.1:0\"\n[push.apps.shop]\napi_keys = [\"{KEY}\"]\n"
    );
    std::fs::write(&config, text).expect("write the config");
    let config = config.to_str().expect("utf-8");

    let mut cluster = RaftCluster::start_partitionable(3);
    let gateway = cluster.start_gateway();
    leave_persistent(&gateway, "kept", "part/#");
    leave_persistent(&gateway, "watch", "late/#");
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
    // A device connected to the cut-off gateway before the partition.
    let mut device = RawConnection::open(&cut_off);
    device.send(&connect_v5("raw-device", 0, true, None));
    assert_eq!(device.expect_packet().first_byte, 0x20, "CONNACK");

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
    // The device already connected there gets explicit errors once the reply timeout passes:
    // PUBACK 0x80 for its QoS 1 publish, SUBACK 0x80 for its subscription.
    expect_refused_after_the_reply_timeout(&mut device, "late/1");

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
    // The publish refused with 0x80 was not applied by the majority. (This gateway never
    // links again: it knows only the old leader, now a follower; that a refused publish is
    // not sent once a router serves again is the next test's.)
    let mut watch =
        subscriber(&gateway, Version::V5).client_id("watch").persistent().topic("late/#").qos(1).start();
    watch.expect_silence(SILENCE);
    drop(device);
    assert!(!cluster.router_output(old).contains("panicked"), "{}", cluster.router_output(old));
}

/// A v5 QoS 1 PUBLISH to `topic` with `packet_id` (payload `late`).
fn publish_qos1(topic: &str, packet_id: u16) -> Vec<u8> {
    raw::publish(raw::QOS1, topic, packet_id, &[], b"late")
}

/// Sends a QoS 1 publish to `topic` and a subscription to `late/#` that no
/// router takes, and expects PUBACK 0x80 and SUBACK 0x80 once the
/// gateway's reply timeout passes.
fn expect_refused_after_the_reply_timeout(device: &mut RawConnection, topic: &str) {
    device.send(&publish_qos1(topic, 7));
    device.send(&raw::subscribe(8, &[], &[("late/#", 1)]));
    let mut refused = Vec::new();
    while refused.len() < 2 {
        match device.receive(Duration::from_secs(15)) {
            Incoming::Packet(packet) => refused.push(packet),
            other => panic!("PUBACK and SUBACK 0x80 expected, got {other:?} after {refused:?}"),
        }
    }
    let (puback, suback) = (&refused[0], &refused[1]);
    assert_eq!(
        (puback.first_byte, &puback.body[..3]),
        (0x40, &[0x00, 0x07, 0x80][..]),
        "PUBACK 0x80: {puback:?}"
    );
    assert_eq!((suback.first_byte, &suback.body[..2]), (0x90, &[0x00, 0x08][..]), "{suback:?}");
    assert_eq!(suback.body.last(), Some(&0x80), "SUBACK 0x80: {suback:?}");
}

#[test]
fn a_publish_refused_after_the_reply_timeout_is_never_applied_when_a_router_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "router_reply_timeout_secs = 2\n").expect("write the config");
    let mut cluster = Cluster::start(0);
    let index = cluster.add_gateway_with(&["--config", config.to_str().expect("utf-8")]);
    let gateway = cluster.gateway(index);
    leave_persistent(&gateway, "watch", "late/#");
    let mut device = RawConnection::open(&gateway);
    device.send(&connect_v5("raw-device", 0, true, None));
    assert_eq!(device.expect_packet().first_byte, 0x20, "CONNACK");

    // No router: the gateway keeps its clients, and what they ask for waits, then is refused.
    cluster.kill_router();
    expect_refused_after_the_reply_timeout(&mut device, "late/1");

    // A router again: the gateway links, gives its sessions back, and does not send what its
    // clients were told had failed.
    cluster.restart_router();
    eventually(
        Duration::from_secs(30),
        || cluster.gateway_output(index).contains("router linked again").then_some(()),
        || "the gateway never linked again".to_owned(),
    );
    device.send(&publish_qos1("late/2", 9));
    let puback = device.expect_packet();
    assert_eq!((puback.first_byte, &puback.body[..2]), (0x40, &[0x00, 0x09][..]), "{puback:?}");
    assert!(puback.body.len() == 2 || puback.body[2] == 0x00, "PUBACK success: {puback:?}");
    let mut watch =
        subscriber(&gateway, Version::V5).client_id("watch").persistent().topic("late/#").qos(1).start();
    let got = watch.expect_messages(1);
    assert_eq!(got[0].topic, "late/2", "only the publish that was acknowledged: {got:?}");
    watch.expect_silence(SILENCE);
}
