//! Configuration end to end: the printed template runs, environment
//! overrides reach the broker, and bad configuration stops start-up naming
//! the key.

use crate::support::{Broker, RawConnection};
use std::process::Command;
use std::time::{Duration, Instant};

fn herald(arguments: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald")).args(arguments).output().expect("run herald")
}

#[test]
fn the_printed_template_is_a_configuration_the_broker_runs_with() {
    let printed = herald(&["config", "standalone"]);
    assert!(printed.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("standalone.toml");
    std::fs::write(&path, &printed.stdout).expect("write the template");
    let broker = Broker::start_with(&["--config", path.to_str().expect("utf-8 path")], &[]);
    crate::support::assert_still_serving(&broker);
}

#[test]
fn a_socket_that_never_sends_connect_is_closed_at_the_connect_timeout() {
    let broker = Broker::start_with(&[], &[("HERALD_CONNECT_TIMEOUT_SECS", "1")]);
    let started = Instant::now();
    let mut silent = RawConnection::open(&broker);
    let sent = silent.expect_closed();
    let waited = started.elapsed();
    assert!(sent.is_empty(), "nothing is sent to a socket that never spoke: {sent:?}");
    assert!(waited >= Duration::from_millis(900), "closed after {waited:?}, before the timeout");
    crate::support::assert_still_serving(&broker);
}

#[test]
fn unknown_keys_and_bad_values_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "mqtt = \"127.0.0.1:0\"\nmax_conections = 5\n").expect("write");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let config = path.to_str().expect("utf-8 path");
    let out = herald(&["standalone", "--config", config, "--data", data]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"), "{out:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["standalone", "--mqtt", "127.0.0.1:0", "--data", data])
        .env("HERALD_LIMITS_RECEIVE_MAXIMUM", "0")
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.receive_maximum"), "{out:?}");
}

#[test]
fn a_data_directory_is_held_by_one_broker_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.args(["standalone", "--mqtt", "127.0.0.1:0", "--data", data]).env("NO_COLOR", "1");
    let mut holder = herald_testkit::process::Supervised::start("holder", command).expect("start herald");
    holder.wait_for_line("listening", Duration::from_secs(10));
    let out = herald(&["standalone", "--mqtt", "127.0.0.1:0", "--data", data]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{out:?}");
    assert!(holder.stop(Duration::from_secs(5)).is_some_and(|status| status.success()));
}
