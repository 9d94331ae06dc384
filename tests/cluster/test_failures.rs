//! What happens when a gateway or the router goes away, and what a router
//! refuses.

use crate::cluster::{Cluster, run_herald};
use crate::support::{Message, Version, publisher, subscriber};
use std::time::Duration;

#[test]
fn a_killed_gateways_clients_get_their_wills_published_by_the_router() {
    let mut cluster = Cluster::start(2);
    let mut watcher = subscriber(&cluster.gateway(1), Version::V5).topic("wills/#").qos(1).start();
    let _doomed = subscriber(&cluster.gateway(0), Version::V311)
        .client_id("doomed")
        .topic("x")
        .will("wills/doomed", "gone")
        .start();
    cluster.kill_gateway(0);
    assert_eq!(watcher.expect_messages(1), [Message::new("wills/doomed", "gone", 1, false)]);
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

#[test]
fn gateways_stop_with_an_error_when_the_router_is_lost() {
    let mut cluster = Cluster::start(1);
    cluster.kill_router();
    let (status, output) = cluster.gateway_exit(0, Duration::from_secs(10));
    let status = status.expect("the gateway exits");
    assert!(!status.success(), "exit status {status}");
    assert!(output.iter().any(|line| line.contains("router lost")), "{output:?}");
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

    let (status, output) =
        run_herald(&["gateway", "--router", &url, "--mqtt", "127.0.0.9:0", "--node-id", "1"]);
    assert!(!status.success());
    assert!(output.contains("already linked"), "{output}");
    assert!(cluster.router_output().iter().any(|line| line.contains("gateway link refused")));
}

#[test]
fn a_router_killed_and_restarted_keeps_persistent_sessions_and_retained_messages() {
    let mut cluster = Cluster::start(1);
    let gateway = cluster.gateway(0);
    subscriber(&gateway, Version::V5)
        .client_id("keeper")
        .persistent()
        .topic("kept/#")
        .qos(1)
        .exit_after_subscribe()
        .start();
    publisher(&gateway, Version::V5, "kept/status").qos(1).retain().message("ready").run();
    publisher(&gateway, Version::V311, "kept/1").qos(1).message("one").run();

    cluster.kill_router();
    let (status, _) = cluster.gateway_exit(0, Duration::from_secs(10));
    assert!(status.is_some(), "the gateway exits when its router is lost");
    cluster.restart_router();
    let index = cluster.add_gateway();
    let gateway = cluster.gateway(index);

    let mut back =
        subscriber(&gateway, Version::V5).client_id("keeper").persistent().topic("kept/#").qos(1).start();
    let got = back.expect_messages(2);
    assert!(got.contains(&Message::new("kept/1", "one", 1, false)), "queued message kept: {got:?}");
    assert!(got.contains(&Message::new("kept/status", "ready", 1, false)), "queued retained kept: {got:?}");
    let mut fresh = subscriber(&gateway, Version::V5).topic("kept/status").qos(1).start();
    assert_eq!(fresh.expect_messages(1), [Message::new("kept/status", "ready", 1, true)]);
}
