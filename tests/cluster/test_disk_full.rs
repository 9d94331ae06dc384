//! A router whose disk takes no more (here: writes past a file-size limit,
//! RLIMIT_FSIZE, fail with EFBIG): the publish it could not make durable is
//! never acknowledged, the router stops serving with a clear error instead
//! of serving without its log, stays up waiting for room, and once there is
//! room again starts anew from its data by itself: service resumes with
//! everything acknowledged before.

use crate::cluster::Cluster;
use crate::ops_client::{fetch, ops_address, samples};
use crate::raft_cluster::eventually;
use crate::support::{Message, Version, leave_persistent, publisher, subscriber};
use std::time::Duration;

#[test]
fn a_router_out_of_disk_acknowledges_nothing_it_could_not_store_and_resumes_when_there_is_room() {
    // Log segments of 64 KiB fit under the 256 KiB limit; a 300 KB message needs a segment of
    // its own past it.
    let mut cluster = Cluster::start_wrapped(
        1,
        &[("HERALD_RAFT_SEGMENT_BYTES", "65536"), ("HERALD_OPS", "127.0.0.1:0")],
        // The soft limit alone: raising it later takes no privilege.
        &["prlimit", "--fsize=262144:unlimited", "--"],
    );
    let gateway = cluster.gateway(0);
    leave_persistent(&gateway, "keeper", "disk/#");
    // Offline for the router too: what is published for it now is stored before the PUBACK.
    let ops = ops_address(&cluster.router_output().join("\n"));
    let metrics = || samples(&fetch(&ops, "/metrics").1);
    eventually(
        Duration::from_secs(10),
        || {
            let m = metrics();
            (m.get("herald_sessions_online{}") == Some(&0.0)
                && m.get("herald_sessions_persistent{}") == Some(&1.0))
            .then_some(())
        },
        || format!("the persistent session never went offline: {:?}", metrics()),
    );
    publisher(&gateway, Version::V5, "disk/1").qos(1).message("before").run();

    let big = "x".repeat(300_000);
    let acknowledged = publisher(&gateway, Version::V5, "disk/2").qos(1).message_from_stdin(&big).try_run();
    assert!(!acknowledged, "a publish the router could not store was acknowledged");
    eventually(
        Duration::from_secs(20),
        || cluster.router_output().join("\n").contains("out of room on disk").then_some(()),
        || format!("the router never said it ran out of room: {}", cluster.router_output().join("\n")),
    );
    let said = cluster.router_output().join("\n");
    assert!(said.contains("File too large"), "the cause is named: {said}");
    assert!(cluster.wait_router(Duration::from_secs(3)).is_none(), "the router stays up: {said}");

    // Room again (the limit lifted from outside): the router starts anew on its data by
    // itself, the gateway links again, service resumes.
    let lifted = std::process::Command::new("prlimit")
        .args(["--pid", &cluster.router_pid().to_string(), "--fsize=unlimited:unlimited"])
        .status()
        .expect("run prlimit");
    assert!(lifted.success(), "prlimit --pid could not lift the limit");
    eventually(
        Duration::from_secs(20),
        || cluster.router_output().join("\n").contains("room on disk again").then_some(()),
        || format!("the router never started again: {}", cluster.router_output().join("\n")),
    );
    eventually(
        Duration::from_secs(40),
        || publisher(&gateway, Version::V5, "disk/3").qos(1).message("after").try_run().then_some(()),
        || "service did not resume".to_owned(),
    );
    let mut back =
        subscriber(&gateway, Version::V5).client_id("keeper").persistent().topic("disk/#").qos(1).start();
    // The big publish was never acknowledged; the gateway may have sent it again once the
    // router was back (at least once), so it may be there, in its place.
    let mut got = back.expect_messages(2);
    if got.iter().any(|m| m.topic == "disk/2") {
        got.extend(back.expect_messages(1));
    }
    got.retain(|m| m.topic != "disk/2");
    got.dedup();
    assert_eq!(
        got,
        [Message::new("disk/1", "before", 1, false), Message::new("disk/3", "after", 1, false)],
        "everything acknowledged, in order"
    );
}
