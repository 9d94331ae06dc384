//! `herald loadtest` against a real `herald standalone`: every scenario at a
//! small size, run as the command line runs it, its JSON line read back.
//! At QoS 1 and 2 every message must arrive exactly once; latency figures
//! must be there. Loopback only, every wait bounded.

use herald_loadtest::Value;
use herald_testkit::process::Supervised;
use std::process::Command;
use std::time::Duration;

/// Upper bound for the broker to announce its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound for one scenario run (each runs for a few seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A `herald standalone` on a free loopback port with its own data
/// directory, killed on drop.
struct Broker {
    process: Supervised,
    address: String,
    _data: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let data = tempfile::Builder::new().prefix("herald-loadtest-").tempdir().expect("a data directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .args(["standalone", "--mqtt", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let process = Supervised::start("herald standalone", command).expect("spawn herald standalone");
        let line = process.wait_for_line("listening", START_TIMEOUT);
        let address = line
            .split_once("mqtt=")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no mqtt=ADDRESS in {line:?}"))
            .to_string();
        assert!(address.starts_with("127."), "{address}");
        Broker { process, address, _data: data }
    }

    /// Runs `herald loadtest ARGS --target … --server-pid …` to completion
    /// and returns its JSON report.
    fn loadtest(&self, args: &[&str]) -> Value {
        let pid = self.process.pid().to_string();
        let mut all = args.to_vec();
        all.extend(["--target", &self.address, "--server-pid", &pid]);
        let (status, report, output) = run_loadtest(&all);
        assert!(
            status,
            "herald loadtest {all:?} failed:\n{output}\nbroker:\n{}",
            self.process.output().join("\n")
        );
        report.unwrap_or_else(|| panic!("no JSON report from herald loadtest {all:?}:\n{output}"))
    }
}

/// Runs `herald loadtest ARGS`; returns whether it exited successfully, its
/// report if it printed one, and everything it printed.
fn run_loadtest(args: &[&str]) -> (bool, Option<Value>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.arg("loadtest").args(args);
    run_to_report(command, args)
}

/// Runs `command` (a `herald loadtest` with `args`) as [`run_loadtest`] does.
fn run_to_report(command: Command, args: &[&str]) -> (bool, Option<Value>, String) {
    let mut process = Supervised::start("herald loadtest", command).expect("spawn herald loadtest");
    let status = process
        .wait_timeout(RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("herald loadtest {args:?} still running after {RUN_TIMEOUT:?}"));
    // The output threads may still be reading the last lines: a success ends
    // with the report, a failure with `herald: <error>`.
    let mut report = None;
    for _ in 0..100 {
        let output = process.output();
        report = output.iter().find_map(|line| herald_loadtest::parse_report_line(line));
        let failure_told = output.iter().any(|line| line.starts_with("herald: "));
        if (status.success() && report.is_some()) || (!status.success() && failure_told) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (status.success(), report, process.output().join("\n"))
}

/// Returns `report["results"][key]` as an integer.
fn count(report: &Value, key: &str) -> u64 {
    report["results"][key].as_u64().unwrap_or_else(|| panic!("results.{key} is not a count in {report}"))
}

/// Asserts every expected delivery arrived exactly once, with latencies.
fn assert_exactly_once(report: &Value) {
    let expected = count(report, "deliveries_expected");
    assert!(expected > 0, "nothing expected: {report}");
    assert_eq!(count(report, "deliveries_received"), expected, "{report}");
    assert_eq!(count(report, "losses"), 0, "{report}");
    assert_eq!(count(report, "duplicates"), 0, "{report}");
    assert_eq!(count(report, "dup_redeliveries"), 0, "{report}");
    assert_eq!(count(report, "out_of_order"), 0, "{report}");
    assert_eq!(count(report, "connection_errors"), 0, "{report}");
    assert_eq!(count(report, "publish_rejected"), 0, "{report}");
    assert_eq!(count(report, "publish_acked"), count(report, "published"), "{report}");
    let ack = &report["results"]["ack_latency_us"];
    assert!(ack["p50"].as_u64().is_some_and(|p50| p50 > 0), "{report}");
    assert!(ack["max"].as_u64().is_some_and(|max| max > 0), "{report}");
}

/// Asserts the server's CPU time was read from `/proc` (`key` names the
/// phase).
fn assert_server_usage(report: &Value, key: &str) {
    assert!(report["results"][key]["cpu_seconds"].as_f64().is_some(), "{key}: {report}");
    assert!(report["results"][key]["rss_after"].as_u64().is_some_and(|rss| rss > 0), "{key}: {report}");
}

/// Asserts the end-to-end latency figures are there and positive.
fn assert_latency(report: &Value, key: &str) {
    let latency = &report["results"][key];
    for quantile in ["p50", "p99", "p999", "max"] {
        assert!(latency[quantile].as_u64().is_some_and(|value| value > 0), "{key}.{quantile}: {report}");
    }
}

#[test]
fn fanout_at_qos1_delivers_every_message_once() {
    let broker = Broker::start();
    let report =
        broker.loadtest(&["fanout", "--connections", "20", "--qos", "1", "--rate", "200", "--duration", "2"]);
    assert_eq!(report["scenario"], "fanout");
    assert_eq!(report["params"]["connections"], 20);
    assert_eq!(count(&report, "subscribers"), 20);
    assert_eq!(count(&report, "deliveries_expected"), 20 * count(&report, "published"));
    assert_exactly_once(&report);
    assert_latency(&report, "latency_us");
    assert_server_usage(&report, "server");
}

#[test]
fn fanout_at_qos2_over_mqtt5_delivers_every_message_once() {
    let broker = Broker::start();
    let report = broker.loadtest(&[
        "fanout",
        "--connections",
        "10",
        "--qos",
        "2",
        "--protocol",
        "5",
        "--rate",
        "100",
        "--duration",
        "2",
    ]);
    assert_exactly_once(&report);
    assert_eq!(count(&report, "publish_completed"), count(&report, "published"));
    assert_latency(&report, "latency_us");
}

#[test]
fn fanin_at_qos1_delivers_every_message_once() {
    let broker = Broker::start();
    let report =
        broker.loadtest(&["fanin", "--connections", "20", "--qos", "1", "--rate", "400", "--duration", "2"]);
    assert_eq!(count(&report, "publishers"), 20);
    assert_eq!(count(&report, "subscribers"), 1);
    assert_exactly_once(&report);
    assert_latency(&report, "latency_us");
}

#[test]
fn p2p_at_qos1_and_qos2_delivers_every_message_once() {
    let broker = Broker::start();
    for (qos, protocol) in [("1", "4"), ("2", "5")] {
        let report = broker.loadtest(&[
            "p2p",
            "--connections",
            "10",
            "--qos",
            qos,
            "--protocol",
            protocol,
            "--rate",
            "200",
            "--duration",
            "2",
            "--sources",
            "127.0.0.1,127.0.0.2",
        ]);
        assert_eq!(count(&report, "publishers"), 10);
        assert_eq!(count(&report, "deliveries_expected"), count(&report, "published"));
        assert_exactly_once(&report);
        assert_latency(&report, "latency_us");
    }
}

#[test]
fn publishers_as_fast_as_they_go_are_slowed_down_not_disconnected() {
    // 200 publishers with 100 QoS 1 publishes in flight each: more replies
    // than a gateway's downlink holds, were they all let through.
    let broker = Broker::start();
    let report = broker.loadtest(&[
        "p2p",
        "--connections",
        "200",
        "--qos",
        "1",
        "--rate",
        "0",
        "--duration",
        "2",
        "--drain",
        "10",
    ]);
    assert_eq!(count(&report, "connection_errors"), 0, "{report}");
    assert_eq!(count(&report, "publish_rejected"), 0, "{report}");
    assert_eq!(count(&report, "publish_acked"), count(&report, "published"), "{report}");
    // Deliveries past half a gateway's downlink may be dropped (and
    // counted) under this overload; nearly all arrive.
    let (received, expected) = (count(&report, "deliveries_received"), count(&report, "deliveries_expected"));
    assert!(received * 100 >= expected * 99, "{received} of {expected}: {report}");
}

#[test]
fn shared_at_qos1_delivers_every_message_to_exactly_one_member() {
    let broker = Broker::start();
    let report = broker.loadtest(&[
        "shared",
        "--connections",
        "4",
        "--qos",
        "1",
        "--protocol",
        "5",
        "--rate",
        "400",
        "--duration",
        "2",
    ]);
    assert_eq!((count(&report, "publishers"), count(&report, "subscribers")), (1, 4));
    // The group is one audience: each message once, to one member.
    assert_eq!(count(&report, "deliveries_expected"), count(&report, "published"));
    assert_exactly_once(&report);
    assert_latency(&report, "latency_us");
}

#[test]
fn fanout_at_qos0_reports_without_acknowledgements() {
    let broker = Broker::start();
    let report =
        broker.loadtest(&["fanout", "--connections", "5", "--qos", "0", "--rate", "100", "--duration", "1"]);
    // QoS 0 may lose messages by design; the run still reports them.
    assert!(count(&report, "deliveries_received") > 0, "{report}");
    assert!(report["results"]["publish_acked"].is_null(), "{report}");
    assert!(report["results"]["ack_latency_us"].is_null(), "{report}");
    assert_latency(&report, "latency_us");
}

#[test]
fn storm_brings_every_client_back() {
    let broker = Broker::start();
    let report = broker.loadtest(&["storm", "--connections", "50", "--hold", "0"]);
    assert_eq!(count(&report, "back"), 50, "{report}");
    assert_eq!(count(&report, "failures"), 0, "{report}");
    assert!(report["results"]["all_back_seconds"].as_f64().is_some_and(|seconds| seconds > 0.0), "{report}");
    assert_latency(&report, "reconnect_us");
}

#[test]
fn storm_with_persistent_sessions_resumes_them() {
    let broker = Broker::start();
    for protocol in ["4", "5"] {
        let report = broker.loadtest(&[
            "storm",
            "--connections",
            "50",
            "--hold",
            "0",
            "--persistent",
            "--protocol",
            protocol,
        ]);
        assert_eq!(count(&report, "back"), 50, "{report}");
        assert_eq!(count(&report, "sessions_present"), 50, "{report}");
    }
}

/// `--storm-at` makes processes storm together: each waits for the given
/// wall-clock moment, and one too far away (past what the clients would
/// wait) is refused.
#[test]
fn storm_at_a_wall_clock_moment_waits_for_it() {
    let broker = Broker::start();
    let now_ms = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
    };
    let at = now_ms() + 3_000;
    let report =
        broker.loadtest(&["storm", "--connections", "20", "--hold", "0", "--storm-at", &at.to_string()]);
    assert!(now_ms() >= at, "the storm ran before its moment");
    assert_eq!(count(&report, "back"), 20, "{report}");

    let far = (now_ms() + 3_600_000).to_string();
    let pid = broker.process.pid().to_string();
    let args =
        ["storm", "--connections", "5", "--hold", "0", "--storm-at", &far, "--target", &broker.address];
    let (ok, _, output) = run_loadtest(&[&args[..], &["--server-pid", &pid]].concat());
    assert!(!ok && output.contains("--storm-at is more than"), "{output}");
}

#[test]
fn persist_delivers_every_queued_message_in_order() {
    let broker = Broker::start();
    for (qos, protocol) in [("1", "4"), ("2", "5")] {
        let report = broker.loadtest(&[
            "persist",
            "--connections",
            "20",
            "--messages",
            "200",
            "--qos",
            qos,
            "--protocol",
            protocol,
        ]);
        assert_eq!(count(&report, "published"), 200, "{report}");
        assert_eq!(count(&report, "sessions_present"), 20, "{report}");
        assert_eq!(count(&report, "deliveries_expected"), 20 * 200, "{report}");
        assert_eq!(report["results"]["in_order"], true, "{report}");
        assert!(report["results"]["publish_per_second"].as_f64().is_some_and(|rate| rate > 0.0), "{report}");
        assert_exactly_once(&report);
        assert_latency(&report, "delivery_latency_us");
        assert_server_usage(&report, "server_publish");
    }
}

#[test]
fn conn_holds_its_connections() {
    let broker = Broker::start();
    let report = broker.loadtest(&["conn", "--connections", "50", "--hold", "1"]);
    assert_eq!(count(&report, "connected"), 50, "{report}");
    assert_eq!(count(&report, "open_after_hold"), 50, "{report}");
    assert_latency(&report, "handshake_us");
    // Connects per server CPU-second: the connections over the CPU the
    // server used while they were made (null if its clock did not tick).
    let results = &report["results"];
    let cpu =
        results["server_while_connecting"]["cpu_seconds"].as_f64().expect("the server's CPU, given its pid");
    let per_cpu = &results["connects_per_server_cpu_second"];
    match per_cpu.as_f64() {
        Some(rate) => assert!((rate - 50.0 / cpu).abs() < 1e-6 * rate, "{report}"),
        None => assert!(per_cpu.is_null() && cpu == 0.0, "{report}"),
    }
}

#[test]
fn conn_past_the_open_file_limit_spreads_over_worker_processes() {
    let broker = Broker::start();
    let pid = broker.process.pid().to_string();
    // 300 open files: 236 sockets a process, so 600 connections take three.
    let args =
        ["conn", "--connections", "600", "--hold", "1", "--target", &broker.address, "--server-pid", &pid];
    let mut command = Command::new("/usr/bin/prlimit");
    command.args(["--nofile=300", env!("CARGO_BIN_EXE_herald"), "loadtest"]).args(args);
    let (status, report, output) = run_to_report(command, &args);
    assert!(status, "{output}");
    let report = report.unwrap_or_else(|| panic!("no report:\n{output}"));
    assert_eq!(count(&report, "worker_processes"), 3, "{report}");
    assert_eq!(count(&report, "connected"), 600, "{report}");
    assert_eq!(count(&report, "open_after_hold"), 600, "{report}");
    assert_eq!(report["results"]["handshake_us"]["count"], 600, "every handshake in the merged histogram");
    // The server is measured while every worker holds its share.
    assert!(report["results"]["server_bytes_per_connection"].as_f64().is_some(), "{report}");
}

#[test]
fn targets_outside_loopback_are_refused() {
    for scenario in ["conn", "fanout", "storm", "persist"] {
        let (success, report, output) = run_loadtest(&[scenario, "--target", "192.0.2.1:1883"]);
        assert!(!success, "{scenario} ran against a non-loopback target:\n{output}");
        assert!(report.is_none(), "{output}");
        assert!(output.contains("refusing target"), "{output}");
    }
    let (success, _, output) = run_loadtest(&["p2p", "--sources", "192.0.2.7"]);
    assert!(!success && output.contains("refusing source"), "{output}");
}

/// A `herald standalone` with the push API on and `config` as its file;
/// its MQTT and HTTP addresses.
fn push_broker(data: &tempfile::TempDir, config: &str) -> (Supervised, String, String) {
    let path = data.path().join("herald.toml");
    std::fs::write(&path, config).expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(["standalone", "--mqtt", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data")
        .arg(data.path().join("data"))
        .env("HERALD_PUSH_HTTP", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let broker = Supervised::start("herald standalone", command).expect("spawn herald standalone");
    let line = broker.wait_for_line("listening", START_TIMEOUT);
    let field = |name: &str| {
        line.split_once(&format!("{name}="))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .to_owned()
    };
    let (mqtt, http) = (field("mqtt"), field("http"));
    (broker, mqtt, http)
}

#[test]
fn devices_wait_for_a_broadcast_and_report_its_latency() {
    let data = tempfile::tempdir().expect("a data directory");
    let config = "[push.apps.default]\napi_keys = [\"bench-key-0123456789abcdef\"]\n";
    let (_broker, mqtt, http) = push_broker(&data, config);
    let ready = data.path().join("ready");
    let mut devices = Command::new(env!("CARGO_BIN_EXE_herald"));
    devices
        .args(["loadtest", "devices", "--devices", "3", "--protocol", "5", "--wait", "20", "--target", &mqtt])
        .arg("--ready-file")
        .arg(&ready);
    let mut devices = Supervised::start("herald loadtest devices", devices).expect("spawn loadtest");
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "the devices never got ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://{http}/v1/apps/default/messages"))
        .args(["-H", "Authorization: Bearer bench-key-0123456789abcdef"])
        .args(["--data", r#"{"audience":{"all":true},"content":{"data":{}}}"#])
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&sent.stdout), "202");
    let status = devices.wait_timeout(RUN_TIMEOUT).expect("the devices finished");
    assert!(status.success(), "{}", devices.output().join("\n"));
    let mut report = None;
    for _ in 0..100 {
        report = devices.output().iter().find_map(|line| herald_loadtest::parse_report_line(line));
        if report.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = report.expect("a report");
    assert_eq!((count(&report, "complete"), count(&report, "received")), (3, 3), "{report}");
    assert!(report["results"]["latency_us_by_message"][0]["p99"].as_u64().is_some(), "{report}");
}

#[test]
fn push_sends_to_each_device_by_id_by_alias_and_by_tag_and_every_one_arrives() {
    let data = tempfile::tempdir().expect("a data directory");
    let config = "[push]\nrate_per_second = 100000\n[push.apps.default]\napi_keys = [\"bench-key-0123456789abcdef\"]\n";
    let (_broker, mqtt, http) = push_broker(&data, config);
    for (to, prefix) in [("device", "pd"), ("alias", "pa"), ("tag", "pt")] {
        let (success, report, output) = run_loadtest(&[
            "push",
            "--target",
            &mqtt,
            "--http",
            &http,
            "--key",
            "bench-key-0123456789abcdef",
            "--devices",
            "20",
            "--rate",
            "200",
            "--to",
            to,
            "--prefix",
            prefix,
        ]);
        assert!(success, "{output}");
        let report = report.expect("a report");
        assert_eq!(
            (count(&report, "received"), count(&report, "requests_failed")),
            (20, 0),
            "{to}: {report}"
        );
        assert_latency(&report, "delivery_latency_us");
        assert_latency(&report, "http_latency_us");
    }
}
