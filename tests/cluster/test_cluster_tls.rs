//! Mutual TLS on the cluster's own gRPC: three routers replicate over it, a
//! gateway with a certificate of the cluster's CA links and serves, and a
//! gateway with none, or with one of another CA, is refused; so is
//! `herald ctl` without the cluster's identity. Registry shard owners send
//! the wills of transient sessions to the leader over it too.

use crate::raft_cluster::RaftCluster;
use crate::support::{Message, RawConnection, Version, connect_v5, publisher, subscriber};
use herald_testkit::pki::Pki;
use herald_testkit::process::Supervised;
use std::time::Duration;

/// A gateway's configuration file with `[cluster_tls]` from `(cert, key)`.
fn gateway_config(
    dir: &std::path::Path,
    name: &str,
    ca: &std::path::Path,
    identity: (std::path::PathBuf, std::path::PathBuf),
) -> String {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[cluster_tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nserver_name = \"herald-router\"\n",
        ca.display().to_string(),
        identity.0.display().to_string(),
        identity.1.display().to_string()
    );
    std::fs::write(&path, text).expect("write the config");
    path.display().to_string()
}

/// Starts a gateway that must fail to link; returns what it printed.
fn refused_gateway(cluster: &RaftCluster, arguments: &[&str]) -> String {
    let urls =
        cluster.router_addresses().split(',').map(|a| format!("http://{a}")).collect::<Vec<_>>().join(",");
    let mut command = crate::cluster::herald();
    command.args(["gateway", "--router", &urls, "--mqtt", "127.0.0.9:0", "--node-id", "99"]);
    command.args(["--cluster-id", crate::raft_cluster::CLUSTER_ID, "--router-patience", "2"]).args(arguments);
    let mut gateway = Supervised::start("refused-gateway", command).expect("start gateway");
    let status = gateway.wait_timeout(Duration::from_secs(20)).expect("the gateway gives up");
    let output = gateway.output().join("\n");
    assert!(!status.success() && !output.contains("listening"), "the gateway linked: {output}");
    output
}

#[test]
fn routers_and_gateways_speak_mutual_tls_and_refuse_whoever_lacks_the_clusters_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "cluster-ca");
    let (router_cert, router_key) = pki.issue_member("router", "herald-router");
    let ca = pki.ca();
    let text = |path: &std::path::Path| path.display().to_string();
    let environment = [
        ("HERALD_CLUSTER_TLS_CA_FILE", text(&ca)),
        ("HERALD_CLUSTER_TLS_CERT_FILE", text(&router_cert)),
        ("HERALD_CLUSTER_TLS_KEY_FILE", text(&router_key)),
        ("HERALD_CLUSTER_TLS_SERVER_NAME", "herald-router".to_owned()),
    ];
    let environment: Vec<(&str, &str)> = environment.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Raft between the routers runs over TLS: they elect a leader.
    let mut cluster = RaftCluster::start_with(3, &environment);
    let status = cluster.status();
    assert_eq!(status.lines().filter(|l| l.contains(" Leader ")).count(), 1, "one leader:\n{status}");

    let member = gateway_config(dir.path(), "member", &ca, pki.issue_member("gateway", "herald-gateway"));
    let gateway = cluster.start_gateway_with(&[1, 2, 3], &["--config", &member]);
    let mut reader = subscriber(&gateway, Version::V5).topic("tls/#").qos(1).start();
    publisher(&gateway, Version::V5, "tls/1").qos(1).message("sealed").run();
    assert_eq!(reader.expect_messages(1), [Message::new("tls/1", "sealed", 1, false)]);
    // The registry shards' owners send the wills of transient sessions to
    // the leader over TLS too: every lost connection's will arrives.
    cluster.wait_for_shards_over(&[1, 2, 3]);
    let mut wills = subscriber(&gateway, Version::V5).topic("wills/#").qos(1).start();
    let lost: Vec<RawConnection> = (0..12)
        .map(|n| {
            let (client, topic) = (format!("tls-{n}"), format!("wills/tls-{n}"));
            let mut connection = RawConnection::open(&gateway);
            connection.send(&connect_v5(&client, 0, true, Some((&topic, "gone"))));
            assert_eq!(connection.expect_packet().first_byte, 0x20, "CONNACK");
            connection
        })
        .collect();
    drop(lost);
    assert_eq!(wills.expect_messages(12).len(), 12);

    // No certificate: plain gRPC does not reach a router that requires TLS.
    let said = refused_gateway(&cluster, &[]);
    assert!(said.contains("does the router require cluster TLS?"), "{said}");
    // A certificate of another CA: the routers refuse the handshake.
    let rogue = Pki::new(dir.path(), "rogue-ca");
    let intruder =
        gateway_config(dir.path(), "intruder", &ca, rogue.issue_member("intruder", "herald-gateway"));
    let said = refused_gateway(&cluster, &["--config", &intruder]);
    assert!(said.contains("cluster TLS handshake failed?"), "{said}");

    // `herald ctl` without the cluster's identity reaches no router.
    let output = crate::cluster::herald()
        .args(["ctl", "cluster", "status", "--routers", &cluster.router_addresses()])
        .output()
        .expect("run herald ctl");
    assert!(
        !output.status.success(),
        "ctl without a certificate: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
