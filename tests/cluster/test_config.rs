//! A router and a gateway run from the configuration files `herald config router|gateway`
//! print, edited as an operator would; a bad key stops start-up naming it.

use crate::cluster::{field, herald, run_herald};
use crate::support::{Message, Version, publisher, subscriber};
use herald_testkit::process::Supervised;
use std::net::SocketAddr;
use std::time::Duration;

/// The template `herald config MODE` prints, with `edits` (whole lines) replaced.
fn template(mode: &str, edits: &[(&str, &str)]) -> String {
    let output = herald().args(["config", mode]).output().expect("run herald config");
    assert!(output.status.success());
    let mut text = String::from_utf8(output.stdout).expect("UTF-8");
    for (line, replacement) in edits {
        assert!(text.contains(line), "the {mode} template has no line {line:?}");
        text = text.replacen(line, replacement, 1);
    }
    text
}

#[test]
fn a_router_and_a_gateway_run_from_their_configuration_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router_file = dir.path().join("router.toml");
    let data = dir.path().join("router-data");
    let router_toml = template(
        "router",
        &[
            ("grpc = \"127.0.0.1:7400\"", "grpc = \"127.0.0.1:0\""),
            ("data = \"./herald-router-data\"", &format!("data = {:?}", data.display().to_string())),
            ("# cluster_id = \"prod\"", "cluster_id = \"from-file\""),
        ],
    );
    std::fs::write(&router_file, router_toml).expect("write");
    let mut command = herald();
    command.args(["router", "--config"]).arg(&router_file);
    let router = Supervised::start("router", command).expect("start router");
    let line = router.wait_for_line("listening", Duration::from_secs(15));
    assert_eq!(field(&line, "cluster"), "from-file");
    let grpc: SocketAddr = field(&line, "grpc").parse().expect("grpc address");

    let gateway_file = dir.path().join("gateway.toml");
    let gateway_toml = template(
        "gateway",
        &[
            ("router = []", &format!("router = [\"http://{grpc}\"]")),
            ("# node_id = 1", "node_id = 5"),
            ("mqtt = \"127.0.0.1:1883\"", "mqtt = \"127.0.0.2:0\""),
            ("max_packet_size = 1048576", "max_packet_size = 4096"),
        ],
    );
    std::fs::write(&gateway_file, gateway_toml).expect("write");
    let mut command = herald();
    command.args(["gateway", "--config"]).arg(&gateway_file);
    let gateway = Supervised::start("gateway", command).expect("start gateway");
    let line = gateway.wait_for_line("listening", Duration::from_secs(15));
    assert_eq!(field(&line, "node"), "5");
    let mqtt: SocketAddr = field(&line, "mqtt").parse().expect("mqtt address");

    let mut watcher = subscriber(&mqtt, Version::V5).topic("conf/#").qos(1).start();
    publisher(&mqtt, Version::V5, "conf/1").qos(1).message("from files").run();
    assert_eq!(watcher.expect_messages(1), [Message::new("conf/1", "from files", 1, false)]);
    // The file's limit is in force: a packet over 4096 bytes is refused.
    let refused = publisher(&mqtt, Version::V311, "conf/big").qos(1).message(&"x".repeat(5000)).try_run();
    assert!(!refused, "a publish over the configured maximum packet size is refused");
    watcher.expect_silence(Duration::from_millis(300));
}

#[test]
fn a_bad_key_in_a_gateway_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "router = [\"http://127.0.0.1:1\"]\nnode_id = 1\n[limits]\nmaximum_qos = 7\n")
        .expect("write");
    let (status, output) = run_herald(&["gateway", "--config", path.to_str().expect("UTF-8 path")]);
    assert!(!status.success());
    assert!(output.contains("limits.maximum_qos"), "{output}");
    std::fs::write(&path, "routers = [\"http://127.0.0.1:1\"]\n").expect("write");
    let (status, output) = run_herald(&["gateway", "--config", path.to_str().expect("UTF-8 path")]);
    assert!(!status.success());
    assert!(output.contains("routers"), "{output}");
}

#[test]
fn routers_named_like_statefulset_pods_take_ids_from_their_ordinals_and_find_peers_by_dns_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
        })
        .collect();
    // As a StatefulSet's pods see each other: by name (here `localhost`), ids from the pods'
    // ordinals.
    let peers: Vec<String> =
        ports.iter().enumerate().map(|(i, p)| format!("{}=localhost:{p}", i + 1)).collect();
    let routers: Vec<Supervised> = ports
        .iter()
        .enumerate()
        .map(|(ordinal, port)| {
            let mut command = herald();
            command.args(["router", "--grpc", &format!("127.0.0.1:{port}"), "--cluster-id", "pods"]);
            command.arg("--data").arg(dir.path().join(format!("router-{ordinal}")));
            command.env("HERALD_NODE_ID", "ordinal").env("HOSTNAME", format!("herald-router-{ordinal}"));
            command.env("HERALD_PEERS", peers.join(","));
            Supervised::start(&format!("router-{ordinal}"), command).expect("start router")
        })
        .collect();
    for (ordinal, router) in routers.iter().enumerate() {
        let line = router.wait_for_line("listening", Duration::from_secs(20));
        assert_eq!(field(&line, "node"), (ordinal + 1).to_string(), "{line}");
    }
    let urls: Vec<String> = ports.iter().map(|p| format!("http://localhost:{p}")).collect();
    let mut command = herald();
    command.args(["gateway", "--router", &urls.join(","), "--mqtt", "127.0.0.2:0", "--cluster-id", "pods"]);
    command.env("HERALD_NODE_ID", "hostname").env("HOSTNAME", "herald-gateway-5d8c7-x2x9q");
    let gateway = Supervised::start("gateway", command).expect("start gateway");
    let line = gateway.wait_for_line("listening", Duration::from_secs(20));
    let node: u64 = field(&line, "node").parse().expect("a numeric node id");
    assert!(node > 3, "an id derived from the pod's name: {line}");
    let mqtt: SocketAddr = field(&line, "mqtt").parse().expect("mqtt address");
    let mut reader = subscriber(&mqtt, Version::V5).topic("pods/#").qos(1).start();
    publisher(&mqtt, Version::V5, "pods/up").qos(1).message("three").run();
    assert_eq!(reader.expect_messages(1), [Message::new("pods/up", "three", 1, false)]);
    let (_, status) =
        run_herald(&["ctl", "cluster", "status", "--routers", &urls.join(",").replace("http://", "")]);
    assert_eq!(status.lines().filter(|l| l.contains(" Leader ")).count(), 1, "{status}");
    assert!(status.contains("1=localhost:") && status.contains("3=localhost:"), "{status}");
}
