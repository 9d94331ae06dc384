//! What a restart keeps: retained messages, persistent sessions with their
//! subscriptions and queued messages, and the messages waiting in a shared
//! group, whether the broker stopped cleanly or was killed, because each is
//! committed to the Raft log before it is acknowledged (ADR 0013).

use crate::support::{Broker, Message, Version, publisher, subscriber};

#[test]
fn retained_messages_survive_a_restart() {
    let broker = Broker::start();
    publisher(&broker, Version::V5, "status/lamp").qos(1).retain().message("on").run();
    publisher(&broker, Version::V311, "status/door").qos(0).retain().message("open").run();
    publisher(&broker, Version::V311, "status/door").qos(1).retain().message("").run();
    let broker = broker.restart("TERM");
    let mut reader = subscriber(&broker, Version::V5).topic("status/#").qos(1).start();
    assert_eq!(reader.expect_messages(1), vec![Message::new("status/lamp", "on", 1, true)]);
    reader.expect_silence(std::time::Duration::from_millis(300));
}

#[test]
fn a_persistent_sessions_queue_survives_a_crash() {
    for version in [Version::V311, Version::V5] {
        let broker = Broker::start();
        let id = format!("durable-{version}");
        subscriber(&broker, version)
            .client_id(&id)
            .topic("orders/#")
            .qos(1)
            .persistent()
            .exit_after_subscribe()
            .start();
        for n in 1..=3 {
            // Each PUBACK means committed: SIGKILL right after loses none.
            publisher(&broker, Version::V5, &format!("orders/{n}"))
                .qos(1)
                .message(&format!("order-{n}"))
                .run();
        }
        let broker = broker.restart("KILL");
        let mut back =
            subscriber(&broker, version).client_id(&id).topic("orders/#").qos(1).persistent().start();
        let expected: Vec<Message> =
            (1..=3).map(|n| Message::new(&format!("orders/{n}"), &format!("order-{n}"), 1, false)).collect();
        assert_eq!(back.expect_messages(3), expected, "{version}: queued messages in order, after a crash");
    }
}

#[test]
fn a_shared_groups_waiting_messages_survive_a_crash() {
    let broker = Broker::start();
    subscriber(&broker, Version::V5)
        .client_id("member")
        .topic("$share/workers/jobs")
        .qos(1)
        .persistent()
        .exit_after_subscribe()
        .start();
    publisher(&broker, Version::V5, "jobs").qos(1).message("job-1").run();
    let broker = broker.restart("KILL");
    let mut next = subscriber(&broker, Version::V5).topic("$share/workers/jobs").qos(1).start();
    assert_eq!(next.expect_messages(1), vec![Message::new("jobs", "job-1", 1, false)]);
}
