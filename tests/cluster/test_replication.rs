//! Three routers replicate with Raft: the leader serves the gateways, and
//! when it is killed a new leader serves them with everything that was
//! acknowledged.

use crate::raft_cluster::{History, RaftCluster, at_least_once, numbered, publish_numbered};
use crate::support::{Message, Version, leave_persistent, publisher, subscriber};
use std::time::Duration;

#[test]
fn three_routers_serve_two_gateways_through_their_leader() {
    let mut cluster = RaftCluster::start(3);
    let status = cluster.status();
    assert_eq!(status.lines().filter(|l| l.contains(" Leader ")).count(), 1, "one leader:\n{status}");
    assert_eq!(status.lines().filter(|l| l.contains(" Follower ")).count(), 2, "two followers:\n{status}");
    assert!(status.contains("1=127.0.0.11:") && status.contains("3=127.0.0.13:"), "voters listed:\n{status}");

    let (a, b) = (cluster.start_gateway(), cluster.start_gateway());
    let mut reader = subscriber(&b, Version::V5).topic("rep/#").qos(1).start();
    let mut workers: Vec<_> =
        [a, b].iter().map(|g| subscriber(g, Version::V5).topic("$share/w/rep/jobs").qos(1).start()).collect();
    publisher(&a, Version::V311, "rep/news").qos(1).message("hello").run();
    publisher(&a, Version::V5, "rep/status").qos(1).retain().message("up").run();
    assert_eq!(
        reader.expect_messages(2),
        [Message::new("rep/news", "hello", 1, false), Message::new("rep/status", "up", 1, false)]
    );
    // The leader counts its gateways' online sessions: a worker on the first, the reader and
    // a worker on the second.
    let status = cluster.status();
    let leader = status.lines().find(|l| l.contains(" Leader ")).expect("a leader");
    assert!(leader.contains("gateways=1=1,2=2"), "{status}");
    // The registry shards are spread over the three routers, as each one's copy of the table says.
    cluster.wait_for_shards_over(&[1, 2, 3]);
    // The owners of the shards count the same sessions, each its shards': summed, per gateway.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let summed = "online sessions per gateway (summed over 3 of 3 routers' registry shards): 1=1,2=2";
    while !cluster.status().contains(summed) {
        assert!(std::time::Instant::now() < deadline, "{summed}, not:\n{}", cluster.status());
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in 0..4 {
        publisher(&b, Version::V5, "rep/jobs").qos(1).message(&format!("job-{n}")).run();
    }
    let mut jobs: Vec<String> =
        workers.iter_mut().flat_map(|w| w.expect_messages(2)).map(|m| m.payload).collect();
    jobs.sort();
    assert_eq!(jobs, ["job-0", "job-1", "job-2", "job-3"], "each job once, two per gateway");
}

#[test]
fn killing_the_leader_loses_nothing_that_was_acknowledged() {
    let mut cluster = RaftCluster::start(3);
    let gateway = cluster.start_gateway();
    leave_persistent(&gateway, "durable", "orders/#");
    for n in 0..20 {
        publisher(&gateway, Version::V5, &format!("orders/{n}")).qos(1).message(&format!("order-{n}")).run();
    }
    publisher(&gateway, Version::V5, "config/mode").qos(1).retain().message("night").run();

    let other = cluster.start_gateway();
    let mut online = subscriber(&other, Version::V5).client_id("online").topic("live/#").qos(1).start();

    let leader = cluster.leader();
    cluster.kill_router(leader);
    // The gateways find the new leader among the routers they know and keep their clients.
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    // The old leader's registry shards moved to the two routers left.
    let left: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    cluster.wait_for_shards_over(&left);
    publisher(&gateway, Version::V5, "live/1").qos(1).message("after").run();
    assert_eq!(online.expect_messages(1), [Message::new("live/1", "after", 1, false)]);
    assert_eq!(online.connects(), 1, "the client stayed connected through the change of leader");

    let mut back =
        subscriber(&gateway, Version::V5).client_id("durable").persistent().topic("orders/#").qos(1).start();
    let expected: Vec<Message> =
        (0..20).map(|n| Message::new(&format!("orders/{n}"), &format!("order-{n}"), 1, false)).collect();
    assert_eq!(back.expect_messages(20), expected, "every acknowledged message, in order, once");
    let mut fresh = subscriber(&gateway, Version::V5).topic("config/mode").qos(1).start();
    assert_eq!(fresh.expect_messages(1), [Message::new("config/mode", "night", 1, true)]);
}

#[test]
fn a_router_that_missed_many_writes_catches_up_by_snapshot() {
    // Snapshots every 20 entries, 2 kept behind: a router that misses 60 writes finds the log
    // it needs compacted away and must be sent a snapshot.
    let settings = [("HERALD_RAFT_SNAPSHOT_ENTRIES", "20"), ("HERALD_RAFT_KEEP_ENTRIES", "2")];
    let mut cluster = RaftCluster::start_with(3, &settings);
    let leader = cluster.leader();
    let lagging = if leader == 1 { 2 } else { 1 };
    cluster.kill_router(lagging);
    let gateway = cluster.start_gateway();
    for n in 0..60 {
        publisher(&gateway, Version::V5, &format!("lag/{n}")).qos(1).retain().message("v").run();
    }
    cluster.restart_router(lagging);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let columns = cluster.status_of(lagging).unwrap_or_default();
        // node role term leader last-log applied snapshot retained sessions
        let caught_up = columns.get(7).map(String::as_str) == Some("60");
        let by_snapshot = columns.get(6).and_then(|s| s.parse::<u64>().ok()).is_some_and(|index| index >= 20);
        if caught_up && by_snapshot {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "router {lagging} did not catch up: {columns:?}\n{}",
            cluster.status()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_fourth_router_joins_and_one_leaves_under_traffic_without_loss() {
    let mut cluster = RaftCluster::start(3);
    let gateway = cluster.start_gateway();
    subscriber(&gateway, Version::V5)
        .client_id("counter")
        .persistent()
        .topic("flow/#")
        .qos(1)
        .exit_after_subscribe()
        .start();
    let traffic = std::thread::spawn(move || {
        for n in 0..60 {
            publisher(&gateway, Version::V5, &format!("flow/{n}")).qos(1).message(&format!("m{n}")).run();
        }
    });
    let added = cluster.add_router();
    let leader = cluster.leader();
    let leaving = (1..=3).find(|n| *n != leader).expect("a follower");
    let out = cluster.remove_router(leaving);
    assert!(!out.contains(&format!("{leaving}=")), "router {leaving} left the voters: {out}");
    traffic.join().expect("every publish acknowledged while membership changed");

    let status = cluster.status();
    let line = status.lines().find(|l| l.contains(" Leader ")).expect("a leader");
    assert!(line.contains(&format!("{added}=127.0.0.{}", 10 + added)), "{status}");
    assert!(!line.contains(&format!(" {leaving}=")) && !line.contains(&format!(",{leaving}=")), "{status}");
    // The registry shards follow the voters: the one added took its share,
    // the one removed gave its own up.
    let voters: Vec<usize> = (1..=added).filter(|n| *n != leaving).collect();
    cluster.wait_for_shards_over_ignoring(&voters, &[leaving]);
    let gateway = cluster.gateway(0);
    let mut back =
        subscriber(&gateway, Version::V5).client_id("counter").persistent().topic("flow/#").qos(1).start();
    let expected: Vec<Message> =
        (0..60).map(|n| Message::new(&format!("flow/{n}"), &format!("m{n}"), 1, false)).collect();
    assert_eq!(back.expect_messages(60), expected);
}

#[test]
fn a_leader_stopped_with_sigterm_hands_over_to_a_follower_and_clients_only_wait() {
    let mut cluster = RaftCluster::start(3);
    let (a, b) = (cluster.start_gateway(), cluster.start_gateway());
    let mut online = subscriber(&b, Version::V5).client_id("watching").topic("handover/#").qos(1).start();
    let leader = cluster.leader();

    let (exited, output) = cluster.terminate_router(leader, Duration::from_secs(10));
    assert!(exited, "the leader exits cleanly on SIGTERM:\n{}", output.join("\n"));
    let handed = output.iter().find(|line| line.contains("handed leadership over")).expect("a handover line");
    let successor: usize = crate::cluster::field(handed, "successor").parse().expect("successor id");
    assert_eq!(cluster.leader(), successor, "the follower it chose leads");

    publisher(&a, Version::V5, "handover/1").qos(1).message("after").run();
    assert_eq!(online.expect_messages(1), [Message::new("handover/1", "after", 1, false)]);
    assert_eq!(online.connects(), 1, "the client stayed connected");
}

#[test]
fn a_leader_stopped_past_the_election_timeout_steps_down_when_it_resumes_and_nothing_is_lost() {
    let mut cluster = RaftCluster::start(3);
    let gateway = cluster.start_gateway();
    leave_persistent(&gateway, "kept", "stop/#");
    publish_numbered(&gateway, "stop", 0..5);
    let old = cluster.leader();
    cluster.signal_router(old, "STOP");
    // The others elect a leader of a later term; the gateway finds it (its link to the
    // frozen one times out) and what is published meanwhile is acknowledged by it.
    let new = cluster.wait_for_leader_other_than(old);
    // Meanwhile clients may be refused (CONNACK 0x88 while the gateway's link to the frozen
    // leader times out) and retry, as clients do; nothing is acknowledged that is then lost.
    publish_numbered(&gateway, "stop", 5..10);
    cluster.signal_router(old, "CONT");
    // The old leader sees the later term and steps down: one leader, the new one.
    cluster.wait_until_sole_leader(new, old);
    let mut back =
        subscriber(&gateway, Version::V5).client_id("kept").persistent().topic("stop/#").qos(1).start();
    let expected = numbered("stop", 0..10);
    // A publish refused at CONNECT was never sent; one whose PUBACK a timeout cut off may have
    // been stored and is then there twice (at least once): every acknowledged message is
    // there, in order.
    let got = at_least_once(&mut back, 10);
    assert_eq!(got, expected, "every acknowledged message, in order");
}

#[test]
fn routers_are_ready_once_they_have_a_leader_and_have_caught_up_with_it() {
    use crate::ops_client::{fetch, ops_address};
    let mut cluster = RaftCluster::start_with(3, &[("HERALD_OPS", "127.0.0.1:0")]);
    let ops: Vec<String> = (1..=3).map(|node| ops_address(&cluster.router_output(node))).collect();
    let ready = |node: usize| fetch(&ops[node - 1], "/readyz");
    let wait_ready = |node: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while ready(node).0 != 200 {
            assert!(std::time::Instant::now() < deadline, "router {node} not ready: {:?}", ready(node));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Followers ask the leader how far it has applied: all three are ready.
    for node in 1..=3 {
        wait_ready(node);
    }
    // A router whose peers are gone cannot tell whether it has caught up (and soon knows no
    // leader): not ready.
    let leader = cluster.leader();
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let others: Vec<usize> = (1..=3).filter(|n| *n != follower).collect();
    for node in &others {
        cluster.signal_router(*node, "STOP");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = ready(follower);
        if status == 503 {
            let said = body.join(" ");
            assert!(said.contains("catching up") || said.contains("no known leader"), "{said}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "router {follower} stayed ready without its peers");
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in &others {
        cluster.signal_router(*node, "CONT");
    }
    cluster.kill_router(leader);
    // The other two elect a leader and are ready again.
    for node in (1..=3).filter(|n| *n != leader) {
        wait_ready(node);
    }
}

#[test]
fn a_follower_that_cannot_ask_its_leader_how_far_it_is_stays_unready_while_it_follows() {
    use crate::ops_client::{fetch, ops_address};
    let cluster = RaftCluster::start_partitionable_with(3, &[("HERALD_OPS", "127.0.0.1:0")]);
    let ops: Vec<String> = (1..=3).map(|node| ops_address(&cluster.router_output(node))).collect();
    let ready = |node: usize| fetch(&ops[node - 1], "/readyz");
    let wait_for = |node: usize, status: u16| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (got, body) = ready(node);
            if got == status {
                return body.join(" ");
            }
            assert!(std::time::Instant::now() < deadline, "router {node}: {got} {body:?}, not {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let leader = cluster.leader();
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    wait_for(follower, 200);
    // The leader's heartbeats still reach the follower, which keeps following it; only its
    // question to the leader goes unanswered, so it cannot tell it has caught up.
    cluster.blackhole_calls_to(leader);
    let said = wait_for(follower, 503);
    assert!(said.contains("catching up with the leader"), "{said}");
    let status = cluster.status_of(follower).expect("the follower answers");
    assert_eq!(
        (status[1].as_str(), status[3].as_str()),
        ("Follower", leader.to_string().as_str()),
        "{status:?}"
    );
    cluster.heal();
    wait_for(follower, 200);
}

#[test]
fn clients_riding_through_a_leader_killed_and_a_leader_stopped_see_a_history_with_nothing_lost() {
    let mut cluster = RaftCluster::start(3);
    let gateways = [cluster.start_gateway(), cluster.start_gateway()];
    // 10 publishers and 10 persistent subscribers over both gateways, 150 messages each.
    let history = History::start(&gateways, 10, 150, 40);
    std::thread::sleep(Duration::from_secs(1));
    let first = cluster.leader();
    cluster.kill_router(first);
    let second = cluster.wait_for_leader_other_than(first);
    cluster.restart_router(first);
    std::thread::sleep(Duration::from_secs(1));
    cluster.signal_router(second, "STOP");
    std::thread::sleep(Duration::from_secs(3));
    cluster.signal_router(second, "CONT");
    let report = history.finish();
    assert!(report["results"]["acknowledged"].as_u64() >= Some(1500), "{report}");
    eprintln!("{report}");
}

/// Every router down, one restarted with no data (lost, or a first start where its peers are
/// slow to come up): it waits for a leader however long that takes (it used to exit after
/// 10 s, and a supervisor's back-off then delayed it past the others' return), answers health,
/// readiness and status meanwhile, and serves once the others are back.
#[test]
fn a_router_without_a_leader_waits_for_one_and_answers_meanwhile() {
    use crate::ops_client::{fetch, ops_address};
    let mut cluster = RaftCluster::start_with(3, &[("HERALD_OPS", "127.0.0.1:0")]);
    let gateway = cluster.start_gateway();
    publisher(&gateway, Version::V5, "kept/one").qos(1).retain().message("one").run();
    for node in 1..=3 {
        cluster.kill_router(node);
    }
    std::fs::remove_dir_all(cluster.data_dir(3)).expect("lose router 3's data");
    cluster.restart_router_unwaited(3);
    assert_eq!(cluster.wait_exit(3, Duration::from_secs(12)), None, "router 3 gave up waiting");
    let output = cluster.router_output(3);
    assert!(output.contains("no leader yet: waiting until a majority of the voters is up"), "{output}");
    let ops = ops_address(&output);
    assert_eq!(fetch(&ops, "/healthz").0, 200);
    let (ready, said) = fetch(&ops, "/readyz");
    assert_eq!(ready, 503, "ready without a leader: {said:?}");
    let status = cluster.status_of(3).expect("router 3 answers status");
    assert_ne!(status[1], "Leader", "{status:?}");

    cluster.restart_router(1);
    cluster.restart_router(2);
    cluster.wait_serving(3);
    let leader = cluster.leader();
    cluster.wait_caught_up(3, leader);
    let mut reader = subscriber(&gateway, Version::V5).topic("kept/#").qos(1).start();
    assert_eq!(reader.expect_messages(1), [Message::new("kept/one", "one", 1, true)]);
}
