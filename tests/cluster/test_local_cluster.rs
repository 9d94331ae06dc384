//! `deploy/local-cluster.sh` starts a working cluster and stops it.

use crate::support::{Message, Version, publisher, subscriber};
use std::net::SocketAddr;
use std::process::Command;

fn script(action: &str, dir: &std::path::Path) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh"))
        .arg(action)
        .arg(dir)
        .env("LOCAL_CLUSTER_BIN", env!("CARGO_BIN_EXE_herald"))
        .output()
        .expect("run local-cluster.sh");
    assert!(out.status.success(), "{action}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_local_cluster_script_starts_three_routers_and_two_gateways_that_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let printed = script("start", dir.path());
    let lines: Vec<Vec<&str>> = printed.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 5, "{printed}");
    for (index, name) in ["router-1", "router-2", "router-3"].into_iter().enumerate() {
        assert_eq!((lines[index][0], lines[index][1], lines[index][3]), (name, "grpc", "pid"), "{printed}");
    }
    let gateway = |index: usize| -> SocketAddr {
        assert_eq!(lines[index][1], "mqtt", "{printed}");
        lines[index][2].parse().expect("address")
    };
    let mut sub = subscriber(&gateway(3), Version::V5).topic("local/t").qos(1).start();
    publisher(&gateway(4), Version::V311, "local/t").qos(1).message("hi").run();
    assert_eq!(sub.expect_messages(1), [Message::new("local/t", "hi", 1, false)]);
    drop(sub);
    // `stop` returns once every process has exited, and fails naming any
    // it had to kill.
    script("stop", dir.path());
    for line in &lines {
        let pid = line[line.len() - 1];
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z "), "{} still running: {state}", line[0]);
        let log = std::fs::read_to_string(dir.path().join(format!("{}.log", line[0]))).expect("log");
        assert!(
            log.lines().any(|l| l.ends_with("herald::cluster: stopped")),
            "{} did not stop cleanly:\n{log}",
            line[0]
        );
    }
}
