//! End-to-end tests of a cluster: a router and gateways as real processes
//! on 127.0.0.x, joined by the seam over gRPC, driven by real MQTT clients.

#[allow(dead_code)]
#[path = "../standalone/support.rs"]
mod support;

#[path = "../standalone/ops_client.rs"]
mod ops_client;

#[allow(dead_code)]
#[path = "../standalone/push_client.rs"]
mod push_client;

#[allow(dead_code)]
#[path = "../mqtt5/raw.rs"]
mod raw;

mod cluster;
mod raft_cluster;
mod test_backup;
mod test_cluster_tls;
mod test_config;
mod test_damage;
mod test_delivery;
mod test_disk_full;
mod test_drain;
mod test_failures;
mod test_fencing;
mod test_inbox;
mod test_local_cluster;
mod test_partition;
mod test_push;
mod test_registry;
mod test_replication;
mod test_sessions;
mod test_shards;
mod test_takeover;
mod test_tracing;
