//! Registry shards (ADR 0033): every gateway links to every router's
//! registry and learns from them which router owns each shard.

use crate::ops_client::{fetch, ops_address, samples};
use crate::raft_cluster::RaftCluster;
use crate::support::{Version, subscriber};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Waits until gateway metrics at `ops` satisfy `check`; returns them.
fn metrics_until(
    ops: &str,
    what: &str,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, lines) = fetch(ops, "/metrics");
        assert_eq!(status, 200);
        let metrics = samples(&lines);
        if check(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "{what}: {metrics:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn owned_by(metrics: &HashMap<String, f64>, router: usize) -> f64 {
    metrics.get(&format!("herald_gateway_registry_shards{{owner=\"{router}\"}}")).copied().unwrap_or(0.0)
}

#[test]
fn a_gateway_links_to_every_routers_registry_and_learns_who_owns_each_shard() {
    let mut cluster = RaftCluster::start(3);
    let leader = cluster.leader();
    // Told of the leader only: it learns the two others from the shard table.
    let gateway = cluster.start_gateway_with(&[leader], &["--ops", "127.0.0.2:0"]);
    let ops = ops_address(&cluster.gateway_output(0));
    let links = "herald_gateway_registry_links{}";
    metrics_until(&ops, "linked to the three routers, the leader owning every shard", |m| {
        m.get(links) == Some(&3.0) && owned_by(m, leader) == 64.0
    });
    // A connect is claimed at the session's shard owner first.
    let granted = "herald_gateway_owner_claims_total{outcome=\"granted\"}";
    let _client = subscriber(&gateway, Version::V5).client_id("owned").topic("t").start();
    metrics_until(&ops, "the claim granted by the shard's owner", |m| m.get(granted) == Some(&1.0));

    // The leader is killed: its link drops, and the new leader's shard event
    // reaches the gateway through the two routers left.
    cluster.kill_router(leader);
    let new_leader = cluster.leader();
    let metrics = metrics_until(&ops, "the new leader owns every shard", |m| {
        m.get(links) == Some(&2.0) && owned_by(m, new_leader) == 64.0
    });
    assert_eq!(owned_by(&metrics, leader), 0.0, "{metrics:#?}");
}
