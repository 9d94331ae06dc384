//! A gateway drained with SIGTERM under load: every v5 client is told why, moves to the other
//! gateway with its session, and no acknowledged QoS 1 message is lost.

use crate::cluster::Cluster;
use crate::support::{paho, record, records};
use std::time::Duration;

const SUBSCRIBERS: usize = 20;
const MESSAGES: usize = 600;

#[test]
fn a_drained_gateways_persistent_clients_move_to_the_other_and_lose_nothing() {
    let mut cluster = Cluster::start(0);
    let drained = cluster.add_gateway_with(&["--drain-rate", "10", "--drain-timeout", "10"]);
    let other = cluster.add_gateway();
    let (b, pid_a) = (cluster.gateway(other).to_string(), cluster.gateway_pid(drained).to_string());
    let all = paho(
        &cluster.gateway(drained),
        "drain.py",
        &[&b, &pid_a, &SUBSCRIBERS.to_string(), &MESSAGES.to_string()],
    );

    assert_eq!(record(&all, "published").field("acked"), MESSAGES.to_string());
    let subscribers = records(&all, "subscriber");
    assert_eq!(subscribers.len(), SUBSCRIBERS);
    for subscriber in subscribers {
        assert_eq!(
            subscriber.field("reason"),
            "139",
            "DISCONNECT 0x8B (server shutting down): {subscriber:?}"
        );
        assert_eq!(subscriber.field("present"), "1", "the session moved with the client: {subscriber:?}");
        assert_eq!(subscriber.field("missing"), "0", "no acknowledged message lost: {subscriber:?}");
    }
    // 20 connections at 10 per second: the drain is spread, not a storm.
    let spread: u64 = record(&all, "drain").field("spread_ms").parse().expect("spread");
    assert!(spread >= 1_000, "connections were told to leave over {spread} ms");
    let status = cluster.wait_gateway(drained, Duration::from_secs(15)).expect("the drained gateway exits");
    assert!(status.success(), "{status}");
}
