//! What happens when a gateway or the router goes away, and what a router
//! refuses.

use crate::cluster::{Cluster, LEASE, expect_state_kept, leave_state_to_keep, run_herald};
use crate::ops_client::{fetch, ops_address, samples};
use crate::support::{Message, RawConnection, Version, connect_v5, publisher, subscriber};
use std::time::{Duration, Instant};

#[test]
fn a_killed_gateways_clients_get_their_wills_published_by_the_router_when_its_lease_ends() {
    let mut cluster = Cluster::start(2);
    let mut watcher = subscriber(&cluster.gateway(1), Version::V5).topic("wills/#").qos(1).start();
    let _doomed = subscriber(&cluster.gateway(0), Version::V311)
        .client_id("doomed")
        .topic("x")
        .will("wills/doomed", "gone")
        .start();
    let killed = Instant::now();
    cluster.kill_gateway(0);
    // The gateway might link again and keep its clients: the router waits for its lease.
    watcher.expect_silence(LEASE - Duration::from_millis(500));
    assert_eq!(watcher.expect_messages(1), [Message::new("wills/doomed", "gone", 1, false)]);
    assert!(killed.elapsed() >= LEASE - Duration::from_millis(200), "not before the lease ends");
}

#[test]
fn a_persistent_subscriber_of_a_killed_gateway_gets_its_messages_on_the_other() {
    let mut cluster = Cluster::start(2);
    let _before = subscriber(&cluster.gateway(0), Version::V5)
        .client_id("survivor")
        .persistent()
        .topic("survive/#")
        .qos(1)
        .start();
    cluster.kill_gateway(0);
    // The router ends the dead gateway's sessions when its link drops; a
    // publish now is queued for the offline persistent session.
    std::thread::sleep(Duration::from_millis(300));
    publisher(&cluster.gateway(1), Version::V5, "survive/1").qos(1).message("kept").run();
    let mut after = subscriber(&cluster.gateway(1), Version::V5)
        .client_id("survivor")
        .persistent()
        .topic("survive/#")
        .qos(1)
        .start();
    assert_eq!(after.expect_messages(1), [Message::new("survive/1", "kept", 1, false)]);
}

/// The payload, packet id and DUP flag of a v5 QoS 1 PUBLISH read raw.
fn raw_delivery(packet: &crate::support::Packet) -> (String, u16, bool) {
    assert_eq!(packet.first_byte & 0xF6, 0x32, "a QoS 1 PUBLISH: {packet:?}");
    let publication =
        crate::raw::Packet { first_byte: packet.first_byte, body: packet.body.clone() }.publish();
    let payload = String::from_utf8(publication.payload).expect("utf-8 payload");
    (payload, publication.packet_id, packet.first_byte & 0x08 != 0)
}

#[test]
fn what_a_killed_gateways_client_had_not_acknowledged_comes_again_with_dup_on_the_other() {
    let mut cluster = Cluster::start(2);
    let mut device = RawConnection::open(&cluster.gateway(0));
    device.send(&connect_v5("inflight", 3600, true, None));
    assert_eq!(device.expect_packet().first_byte, 0x20, "CONNACK");
    device.send(&crate::raw::subscribe(1, &[], &[("inflight/#", 1)]));
    assert_eq!(device.expect_packet().first_byte, 0x90, "SUBACK");

    // Ten QoS 1 messages, each acknowledged to its publisher.
    let mut publisher = RawConnection::open(&cluster.gateway(1));
    publisher.send(&connect_v5("sender", 0, true, None));
    assert_eq!(publisher.expect_packet().first_byte, 0x20, "CONNACK");
    for n in 0..10_u16 {
        publisher.send(&crate::raw::publish(
            crate::raw::QOS1,
            "inflight/x",
            n + 1,
            &[],
            format!("m{n}").as_bytes(),
        ));
        assert_eq!(publisher.expect_packet().first_byte, 0x40, "PUBACK for m{n}");
    }
    // The device gets all ten and acknowledges only the first four.
    let received: Vec<_> = (0..10).map(|_| raw_delivery(&device.expect_packet())).collect();
    let payloads: Vec<_> = received.iter().map(|(p, _, _)| p.clone()).collect();
    assert_eq!(payloads, (0..10).map(|n| format!("m{n}")).collect::<Vec<_>>());
    for (_, packet_id, _) in &received[..4] {
        device.send(&crate::raw::ack(0x40, *packet_id));
    }
    // Acknowledgements reach the router within tens of milliseconds.
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill_gateway(0);

    let mut again = RawConnection::open(&cluster.gateway(1));
    again.send(&connect_v5("inflight", 3600, false, None));
    let connack = again.expect_packet();
    assert_eq!((connack.first_byte, connack.body[0]), (0x20, 0x01), "CONNACK with session present");
    let resent: Vec<_> = (0..6).map(|_| raw_delivery(&again.expect_packet())).collect();
    let expected: Vec<_> = (4..10).map(|n| (format!("m{n}"), true)).collect();
    assert_eq!(resent.iter().map(|(p, _, dup)| (p.clone(), *dup)).collect::<Vec<_>>(), expected);
    for (_, packet_id, _) in &resent {
        again.send(&crate::raw::ack(0x40, *packet_id));
    }
    assert!(
        matches!(again.receive(Duration::from_secs(1)), crate::support::Incoming::Silent),
        "nothing acknowledged comes back"
    );
    drop(again);
    // Acknowledged on the new connection, they are gone from the inbox.
    std::thread::sleep(Duration::from_millis(500));
    let mut last = RawConnection::open(&cluster.gateway(1));
    last.send(&connect_v5("inflight", 3600, false, None));
    assert_eq!(last.expect_packet().first_byte, 0x20, "CONNACK");
    assert!(matches!(last.receive(Duration::from_secs(1)), crate::support::Incoming::Silent));
}

#[test]
fn gateways_keep_their_clients_while_the_router_restarts() {
    let mut cluster = Cluster::start(2);
    let mut live =
        subscriber(&cluster.gateway(0), Version::V5).client_id("live").topic("live/#").qos(1).start();
    let mut kept = subscriber(&cluster.gateway(0), Version::V311)
        .client_id("kept")
        .persistent()
        .topic("kept/#")
        .qos(1)
        .will("wills/kept", "gone")
        .start();
    let mut watcher = subscriber(&cluster.gateway(1), Version::V5).topic("wills/#").qos(1).start();

    cluster.kill_router();
    // A publish while no router serves waits for one instead of failing.
    let waiting = {
        let gateway = cluster.gateway(1);
        std::thread::spawn(move || {
            publisher(&gateway, Version::V5, "kept/during").qos(1).message("waited").try_run()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart_router();
    assert!(waiting.join().expect("publisher thread"), "the publish during the outage was acknowledged");
    assert_eq!(kept.expect_messages(1), [Message::new("kept/during", "waited", 1, false)]);

    publisher(&cluster.gateway(1), Version::V5, "live/after").qos(1).message("hello").run();
    assert_eq!(live.expect_messages(1), [Message::new("live/after", "hello", 1, false)]);
    publisher(&cluster.gateway(1), Version::V5, "kept/after").qos(1).message("again").run();
    assert_eq!(kept.expect_messages(1), [Message::new("kept/after", "again", 1, false)]);
    assert_eq!((live.connects(), kept.connects()), (1, 1), "nobody had to reconnect");
    watcher.expect_silence(LEASE + Duration::from_secs(1));
}

#[test]
fn a_router_refuses_a_gateway_of_another_cluster_or_a_duplicate_id() {
    let cluster = Cluster::start(1);
    let url = cluster.router_url();
    let (status, output) = run_herald(&[
        "gateway",
        "--router",
        &url,
        "--mqtt",
        "127.0.0.9:0",
        "--node-id",
        "7",
        "--cluster-id",
        "another-cluster",
    ]);
    assert!(!status.success());
    assert!(output.contains("another-cluster") && output.contains(cluster.cluster_id()), "{output}");

    // A second process with gateway 1's id waits for the first one's link to end, then gives up.
    let (status, output) = run_herald(&[
        "gateway",
        "--router",
        &url,
        "--mqtt",
        "127.0.0.9:0",
        "--node-id",
        "1",
        "--router-patience",
        "2",
    ]);
    assert!(!status.success());
    assert!(output.contains("already linked"), "{output}");
    assert!(cluster.router_output().iter().any(|line| line.contains("gateway link refused")));
}

#[test]
fn a_router_killed_and_restarted_keeps_persistent_sessions_and_retained_messages() {
    let mut cluster = Cluster::start(1);
    leave_state_to_keep(&cluster.gateway(0));
    cluster.kill_router();
    cluster.restart_router();
    let index = cluster.add_gateway();
    expect_state_kept(&cluster.gateway(index));
}

#[test]
fn a_gateway_without_its_router_stays_ready_and_says_so_in_its_metrics() {
    let mut cluster = Cluster::start(0);
    let index = cluster.add_gateway_with(&["--ops", "127.0.0.2:0"]);
    let ops = ops_address(&cluster.gateway_output(index));
    let _client = subscriber(&cluster.gateway(index), Version::V5).client_id("held").topic("t").start();
    let metric = |name: &str| {
        let (status, lines) = fetch(&ops, "/metrics");
        assert_eq!(status, 200);
        samples(&lines).get(name).copied().unwrap_or_else(|| panic!("no {name} in {lines:#?}"))
    };
    let eventually = |name: &str, value: f64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(name) != value {
            assert!(Instant::now() < deadline, "{name} never became {value}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(metric("herald_router_quorum_reachable{}"), 1.0);
    // Publishes that wait for the router's reply time the hop to it and back.
    let round_trips = "herald_router_publish_round_trip_seconds_count{}";
    assert_eq!(metric(round_trips), 0.0);
    publisher(&cluster.gateway(index), Version::V5, "t")
        .qos(1)
        .lines(&["a".to_owned(), "b".to_owned()])
        .run();
    eventually(round_trips, 2.0);
    assert!(metric("herald_router_publish_round_trip_seconds_bucket{le=\"5\"}") == 2.0);
    assert!(metric("herald_router_publish_round_trip_seconds_sum{}") > 0.0);

    cluster.kill_router();
    eventually("herald_router_quorum_reachable{}", 0.0);
    assert_eq!(
        fetch(&ops, "/readyz").0,
        200,
        "a gateway that lost its router keeps its clients: still ready"
    );
    assert_eq!(metric("herald_connections{}"), 1.0);

    cluster.restart_router();
    eventually("herald_router_quorum_reachable{}", 1.0);
    assert_eq!(metric("herald_router_links_lost_total{}"), 1.0);
    assert_eq!(metric("herald_sessions_reattached_total{}"), 1.0);
}
