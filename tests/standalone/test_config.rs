//! Configuration end to end: the printed template runs, environment
//! overrides reach the broker, and bad configuration stops start-up naming
//! the key.

use crate::support::{Broker, Message, RawConnection, Version, publisher, subscriber};
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
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}, long after the timeout");
    crate::support::assert_still_serving(&broker);
}

/// Starts `herald standalone` with `config` as its file (if any) and
/// `environment`, and asserts that start-up fails naming `key`.
fn assert_start_up_refused(config: Option<&str>, environment: &[(&str, &str)], key: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.args(["standalone", "--mqtt", "127.0.0.1:0", "--data", data.to_str().expect("utf-8 path")]);
    if let Some(config) = config {
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, config).expect("write the config");
        command.arg("--config").arg(path);
    }
    let out = command.envs(environment.iter().copied()).output().expect("run herald");
    assert!(!out.status.success(), "started despite a bad {key}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(key), "{out:?}");
}

#[test]
fn unknown_keys_and_bad_values_stop_start_up_naming_the_key() {
    assert_start_up_refused(Some("mqtt = \"127.0.0.1:0\"\nmax_conections = 5\n"), &[], "max_conections");
    assert_start_up_refused(None, &[("HERALD_LIMITS_RECEIVE_MAXIMUM", "0")], "limits.receive_maximum");
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

/// Runs `herald scram-secret` with `password` on standard input.
fn scram_secret(password: &str) -> String {
    let secret = hashed("scram-secret", password);
    assert!(secret.starts_with("SCRAM-SHA-256$4096:"), "{secret}");
    secret
}

/// Runs `herald COMMAND` with `password` on standard input; returns its line.
fn hashed(command: &str, password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run herald");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("write");
    let output = child.wait_with_output().expect("herald ends");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
}

#[test]
fn configured_users_authenticate_and_each_app_sees_only_its_own_topics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.toml");
    // carol's password is kept only as its SCRAM secret, dave's as a salted hash.
    let carol = scram_secret("c-secret");
    let dave = hashed("password-hash", "d-secret");
    assert!(dave.starts_with("pbkdf2$10000$") && !dave.contains("d-secret"), "{dave}");
    let users = format!(
        "[auth]\nallow_anonymous = false\n\
         [auth.users.alice]\npassword = \"a-secret\"\napp = \"shop\"\n\
         [auth.users.bob]\npassword = \"b-secret\"\napp = \"bank\"\n\
         [auth.users.carol]\nscram = \"{carol}\"\napp = \"shop\"\n\
         [auth.users.dave]\npassword_hash = \"{dave}\"\napp = \"bank\"\n"
    );
    std::fs::write(&path, users).expect("write");
    let broker = Broker::start_with(&["--config", path.to_str().expect("utf-8 path")], &[]);

    for version in [Version::V311, Version::V5] {
        let refused = publisher(&broker, version, "t").message("x").run_refused();
        assert!(refused.contains("ot authori"), "anonymous is refused as not authorized: {refused}");
        let refused = publisher(&broker, version, "t").user("alice", "wrong").message("x").run_refused();
        assert!(refused.to_lowercase().contains("password"), "a wrong password is refused: {refused}");
        let refused = publisher(&broker, version, "t").user("mallory", "x").message("x").run_refused();
        assert!(refused.to_lowercase().contains("password"), "an unknown user is refused: {refused}");
        let refused = publisher(&broker, version, "t").user("dave", "c-secret").message("x").run_refused();
        assert!(refused.to_lowercase().contains("password"), "a wrong password against a hash: {refused}");
    }

    let mut shop =
        subscriber(&broker, Version::V5).user("alice", "a-secret").topic("orders/#").qos(1).start();
    let mut bank = subscriber(&broker, Version::V5).user("bob", "b-secret").topic("orders/#").qos(1).start();
    publisher(&broker, Version::V311, "orders/1").user("carol", "c-secret").qos(1).message("for-shop").run();
    publisher(&broker, Version::V5, "orders/2").user("bob", "b-secret").qos(1).message("for-bank").run();
    publisher(&broker, Version::V5, "orders/3").user("dave", "d-secret").qos(1).message("from-dave").run();
    assert_eq!(shop.expect_messages(1), vec![Message::new("orders/1", "for-shop", 1, false)]);
    assert_eq!(
        bank.expect_messages(2),
        vec![Message::new("orders/2", "for-bank", 1, false), Message::new("orders/3", "from-dave", 1, false)]
    );
    shop.expect_silence(Duration::from_millis(300));
    bank.expect_silence(Duration::from_millis(300));
}

#[test]
fn a_user_with_an_invalid_app_stops_start_up_naming_the_key() {
    let config = "[auth.users.alice]\npassword = \"p\"\napp = \"Not Valid\"\n";
    assert_start_up_refused(Some(config), &[], "auth.users.alice.app");
}
