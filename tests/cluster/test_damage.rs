//! A router whose Raft log was damaged on disk while it was down refuses to
//! start, saying why, rather than vote or serve without entries it had
//! acknowledged; the others keep serving, and once its data is whole again
//! it starts and catches up.

use crate::raft_cluster::RaftCluster;
use crate::support::{Message, Version, publisher, subscriber};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

/// Router `node`'s log segments, oldest first.
fn segments(cluster: &RaftCluster, node: usize) -> Vec<PathBuf> {
    let dir = cluster.data_dir(node).join("raft").join("log");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the log directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// The `count` retained messages under `kept/`, read through `gateway`, by topic.
fn kept(gateway: &std::net::SocketAddr, count: usize) -> Vec<Message> {
    let mut reader = subscriber(gateway, Version::V5).topic("kept/#").qos(1).start();
    let mut got = reader.expect_messages(count);
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    got
}

#[test]
fn a_router_with_a_damaged_or_truncated_log_refuses_to_start_and_starts_once_it_is_whole() {
    // Small segments: the retained messages below span several.
    let mut cluster = RaftCluster::start_with(3, &[("HERALD_RAFT_SEGMENT_BYTES", "65536")]);
    let gateway = cluster.start_gateway();
    let big = "x".repeat(20_000);
    for n in 0..12 {
        publisher(&gateway, Version::V5, &format!("big/{n}")).qos(1).retain().message(&big).run();
    }
    let leader = cluster.leader();
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    // A QoS 1 acknowledgement needs a majority, which may not have been this follower.
    cluster.wait_caught_up(follower, leader);
    let (stopped, _) = cluster.terminate_router(follower, Duration::from_secs(10));
    assert!(stopped, "the follower stops cleanly");
    let files = segments(&cluster, follower);
    assert!(files.len() >= 3, "the log spans several segments: {files:?}");

    // 1. A flipped checksum in the first segment (bit rot, a bad sector): later segments follow
    //    it, so this is no torn tail of a crash.
    let first = std::fs::OpenOptions::new().read(true).write(true).open(&files[0]).expect("open");
    let mut original = [0u8; 4];
    first.read_exact_at(&mut original, 4).expect("read the first record's checksum");
    first.write_all_at(&[!original[0], !original[1], !original[2], !original[3]], 4).expect("damage");
    let said = cluster.start_router_expecting_refusal(follower);
    assert!(said.contains("is damaged at byte") && said.contains("refuses to start"), "{said}");

    // The others serve meanwhile.
    publisher(&gateway, Version::V5, "big/after").qos(1).retain().message("still served").run();

    // 2. The first segment whole again, the last one cut to nothing: entries that were
    //    committed are missing.
    first.write_all_at(&original, 4).expect("repair");
    let last = files.last().expect("a last segment");
    let kept = std::fs::read(last).expect("read the last segment");
    std::fs::File::options().write(true).open(last).expect("open").set_len(0).expect("truncate");
    let said = cluster.start_router_expecting_refusal(follower);
    assert!(said.contains("were committed but the log ends at"), "{said}");

    // 3. Whole again: it starts, follows, and catches up with what it missed.
    std::fs::write(last, &kept).expect("restore the last segment");
    cluster.restart_router(follower);
    cluster.wait_caught_up(follower, leader);
    // The leader gone, the caught-up follower and the third router elect a leader with it all.
    cluster.kill_router(leader);
    cluster.leader();
    let mut reader = subscriber(&gateway, Version::V5).topic("big/after").qos(1).start();
    assert_eq!(reader.expect_messages(1), [Message::new("big/after", "still served", 1, true)]);
}

#[test]
fn the_first_router_with_its_data_lost_never_forms_a_cluster_of_its_own_and_rejoins_through_remove_and_add() {
    let mut cluster = RaftCluster::start(3);
    let gateway = cluster.start_gateway();
    publisher(&gateway, Version::V5, "kept/before").qos(1).retain().message("one").run();
    // Node 1 forms the cluster at first start: with an empty volume it must not do so again.
    let (stopped, _) = cluster.terminate_router(1, Duration::from_secs(10));
    assert!(stopped, "router 1 stops cleanly");
    std::fs::remove_dir_all(cluster.data_dir(1)).expect("lose router 1's data");
    cluster.restart_router(1);
    assert!(
        cluster.router_output(1).contains("this router has no data and its peers' cluster lists it"),
        "{}",
        cluster.router_output(1)
    );
    let leader = cluster.leader();
    cluster.wait_caught_up(1, leader);

    // The safe way back for a router that lost its data: out, then in again.
    let (stopped, _) = cluster.terminate_router(1, Duration::from_secs(10));
    assert!(stopped, "router 1 stops cleanly");
    std::fs::remove_dir_all(cluster.data_dir(1)).expect("lose router 1's data again");
    let leader = cluster.leader();
    let out = cluster.remove_router(1);
    assert!(!out.contains("1=127.0.0.11"), "router 1 is no voter any more: {out}");
    publisher(&gateway, Version::V5, "kept/while-out").qos(1).retain().message("two").run();
    cluster.restart_router(1);
    assert!(cluster.router_output(1).contains("waiting to be added"), "{}", cluster.router_output(1));
    cluster.add_voter(1);
    cluster.wait_caught_up(1, leader);
    let status = cluster.status();
    assert_eq!(
        status.lines().filter(|l| l.contains(" Leader ")).count(),
        1,
        "one cluster, one leader:\n{status}"
    );
    assert_eq!(
        kept(&gateway, 2),
        [Message::new("kept/before", "one", 1, true), Message::new("kept/while-out", "two", 1, true)]
    );
}

#[test]
fn a_router_that_lost_its_data_votes_for_no_one_until_a_leader_has_brought_it_up_to_date() {
    let mut cluster = RaftCluster::start(3);
    let gateway = cluster.start_gateway();
    publisher(&gateway, Version::V5, "kept/before").qos(1).retain().message("one").run();
    let leader = cluster.leader();
    let others: Vec<usize> = (1..=3).filter(|node| *node != leader).collect();
    let (stale, wiped) = (others[0], others[1]);

    // The stale router misses a write that the leader and `wiped` commit:
    // acknowledged, so it is in `wiped`'s log.
    cluster.signal_router(stale, "STOP");
    publisher(&gateway, Version::V5, "kept/while-stale").qos(1).retain().message("two").run();
    // Then the leader dies and `wiped` loses its data: only the stale
    // router and one with an empty log are left.
    cluster.kill_router(leader);
    cluster.kill_router(wiped);
    std::fs::remove_dir_all(cluster.data_dir(wiped)).expect("lose the data");
    cluster.restart_router_unwaited(wiped);
    cluster.signal_router(stale, "CONT");

    // An empty log would vote for the stale router, which would lead
    // without the write. `wiped` votes for no one: no leader while the
    // stale router asks, election after election (timeouts of 0.3-0.6 s).
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let roles = cluster.roles();
        assert!(!roles.iter().any(|(_, role, _)| role == "Leader"), "a leader without the write: {roles:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = cluster.router_output(wiped);
    assert!(output.contains("it votes for no one until a leader has brought it up to date"), "{output}");
    let line = cluster.status_of(wiped).expect("the wiped router answers status").join(" ");
    assert!(line.contains("vote=withheld"), "{line}");
    assert!(output.contains("vote withheld"), "the stale router asked for votes: {output}");

    // The router that has the write comes back and leads; `wiped` follows,
    // catches up and votes again.
    cluster.restart_router(leader);
    let leader = cluster.leader();
    cluster.wait_serving(wiped);
    cluster.wait_caught_up(wiped, leader);
    cluster.wait_caught_up(stale, leader);
    crate::support::eventually(
        Duration::from_secs(10),
        || cluster.router_output(wiped).contains("it votes again").then_some(()),
        || format!("router {wiped} still withholds its vote:\n{}", cluster.router_output(wiped)),
    );
    let line = cluster.status_of(wiped).expect("the wiped router answers status").join(" ");
    assert!(!line.contains("vote=withheld"), "{line}");
    // The registry shards serve again (the restarted routers' ones are
    // restarted by the leader) before a client connects to read.
    cluster.wait_for_shards_over(&[1, 2, 3]);
    assert_eq!(
        kept(&gateway, 2),
        [Message::new("kept/before", "one", 1, true), Message::new("kept/while-stale", "two", 1, true)]
    );
}
