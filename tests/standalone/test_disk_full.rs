//! Standalone Herald whose disk takes no more (writes past a file-size
//! limit, RLIMIT_FSIZE, fail with EFBIG as they would with ENOSPC): the
//! publish it could not store is never acknowledged, the process stays up
//! waiting for room, and once the limit is lifted it starts anew from its
//! data on the same address, with everything acknowledged before.

use crate::support::{Broker, Message, Version, eventually, leave_persistent, publisher, subscriber};
use std::time::Duration;

fn wait_for_log(broker: &Broker, line: &str) {
    eventually(
        Duration::from_secs(20),
        || broker.log().contains(line).then_some(()),
        || format!("no {line:?} in the log:\n{}", broker.log()),
    );
}

#[test]
fn out_of_disk_it_acknowledges_nothing_it_could_not_store_waits_and_resumes_by_itself() {
    // 64 KiB log segments fit under the 256 KiB limit; a 300 KB message needs one past it.
    let mut broker = Broker::start_wrapped(
        &["prlimit", "--fsize=262144:unlimited", "--"],
        &[],
        &[("HERALD_RAFT_SEGMENT_BYTES", "65536")],
    );
    leave_persistent(&broker, "keeper", "disk/#");
    publisher(&broker, Version::V5, "disk/1").qos(1).message("before").run();
    let big = "x".repeat(300_000);
    let acknowledged = publisher(&broker, Version::V5, "disk/2").qos(1).message_from_stdin(&big).try_run();
    assert!(!acknowledged, "a publish that could not be stored was acknowledged");
    wait_for_log(&broker, "out of room on disk");
    assert!(broker.log().contains("File too large"), "the cause is named:\n{}", broker.log());
    std::thread::sleep(Duration::from_secs(1));
    assert!(!broker.exited(), "the process stays up:\n{}", broker.log());

    // Room again: the process starts anew on its data, where clients knew it.
    let lifted = std::process::Command::new("prlimit")
        .args(["--pid", &broker.pid().to_string(), "--fsize=unlimited:unlimited"])
        .status()
        .expect("run prlimit");
    assert!(lifted.success(), "prlimit --pid could not lift the limit");
    wait_for_log(&broker, "room on disk again");
    eventually(
        Duration::from_secs(20),
        || publisher(&broker, Version::V5, "disk/3").qos(1).message("after").try_run().then_some(()),
        || format!("service did not resume:\n{}", broker.log()),
    );
    let mut back =
        subscriber(&broker, Version::V5).client_id("keeper").persistent().topic("disk/#").qos(1).start();
    let got = back.expect_messages(2);
    assert_eq!(
        got,
        [Message::new("disk/1", "before", 1, false), Message::new("disk/3", "after", 1, false)],
        "everything acknowledged, in order, and nothing else"
    );
}
