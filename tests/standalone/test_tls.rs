//! TLS on every listener: MQTT over TLS, MQTT over secure WebSocket, the
//! push API over HTTPS; and mutual TLS with the client id bound to the
//! client certificate. Certificates are made with openssl for each test;
//! the clients are mosquitto_pub/sub, paho and curl.

use crate::support::{Broker, listening_field};
use herald_testkit::pki::Pki;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standalone/py");

/// A broker with TLS listeners (`extra` added to `[tls]`); its MQTT/TLS,
/// secure WebSocket and HTTPS addresses.
fn tls_broker(dir: &Path, pki: &Pki, extra: &str) -> (Broker, [std::net::SocketAddr; 3]) {
    let (cert, key) = pki.issue("server");
    let config = dir.join("herald.toml");
    let text = format!(
        "[push]\nhttp = \"127.0.0.1:0\"\n[push.apps.shop]\napi_keys = [\"shop-key-0123456789abcdef\"]\n\
         [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nmqtt = \"127.0.0.1:0\"\nwebsocket = \"127.0.0.1:0\"\n\
         push_api = true\n{extra}",
        cert.display(),
        key.display()
    );
    std::fs::write(&config, text).expect("config");
    let broker =
        Broker::start_with(&["--config", config.to_str().expect("utf-8")], &[("HERALD_OPS", "127.0.0.1:0")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = broker.log();
        let line = log.lines().find(|l| l.contains("listening")).unwrap_or_default().to_owned();
        let fields = ["mqtts", "wss", "http"].map(|key| listening_field(&line, key));
        if let [Some(mqtts), Some(wss), Some(https)] = fields {
            return (broker, [mqtts, wss, https]);
        }
        assert!(Instant::now() < deadline, "no TLS addresses in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the paho TLS scenario; returns its output.
fn tls_echo(
    transport: &str,
    address: std::net::SocketAddr,
    ca: &Path,
    client: &str,
    cert: &[&Path],
) -> String {
    let output = Command::new("/usr/bin/python3")
        .arg(format!("{PY}/tls_echo.py"))
        .args([transport, "127.0.0.1", &address.port().to_string()])
        .arg(ca)
        .arg(client)
        .args(cert)
        .output()
        .expect("run tls_echo.py");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// One QoS 1 message through mosquitto_sub and mosquitto_pub over TLS.
fn mosquitto_round_trip(address: std::net::SocketAddr, ca: &Path, extra: &[&str]) -> (String, bool) {
    let port = address.port().to_string();
    let mut subscriber = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "--cafile"])
        .arg(ca)
        .args(["-t", "tls/t", "-q", "1", "-C", "1", "-W", "10", "-i", "sub-1"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // The subscription is in place once its client is connected; retry the
    // publish until the subscriber has it (bounded by its -W).
    let mut published = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "--cafile"])
            .arg(ca)
            .args(["-t", "tls/t", "-q", "1", "-m", "secret", "-i", "pub-1"])
            .args(extra)
            .status()
            .expect("mosquitto_pub");
        published |= status.success();
        if matches!(subscriber.try_wait(), Ok(Some(_))) {
            break;
        }
    }
    let output = subscriber.wait_with_output().expect("mosquitto_sub output");
    (String::from_utf8_lossy(&output.stdout).trim().to_owned(), published)
}

#[test]
fn mqtt_websocket_and_the_push_api_speak_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "test-ca");
    let (broker, [mqtts, wss, https]) = tls_broker(dir.path(), &pki, "");

    // MQTT over TLS with the mosquitto clients, and with paho.
    assert_eq!(mosquitto_round_trip(mqtts, &pki.ca(), &[]), ("secret".to_owned(), true));
    let paho = tls_echo("tcp", mqtts, &pki.ca(), "paho-tls", &[]);
    assert!(paho.contains("connack reason=0") && paho.contains("echo payload=over-tls"), "{paho}");
    // MQTT over secure WebSocket.
    let paho = tls_echo("ws", wss, &pki.ca(), "paho-wss", &[]);
    assert!(paho.contains("connack reason=0") && paho.contains("echo payload=over-tls"), "{paho}");

    // The push API over HTTPS; plain HTTP on that port gets no answer.
    let curl = |url: String| {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(pki.ca())
            .arg(url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(curl(format!("https://127.0.0.1:{}/v1/openapi.json", https.port())), "200");
    assert_ne!(curl(format!("http://127.0.0.1:{}/v1/openapi.json", https.port())), "200");

    // A client that does not trust the CA does not get in; nor does plain
    // MQTT on the TLS port. The broker counts the failed handshakes.
    let stranger = Pki::new(dir.path(), "other-ca");
    assert!(!mosquitto_round_trip(mqtts, &stranger.ca(), &[]).1);
    let plain = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtts.port().to_string(), "-t", "t", "-m", "x"])
        .output()
        .expect("mosquitto_pub");
    assert!(!plain.status.success());
    assert!(broker.log().contains("listening"));
}

#[test]
fn with_mutual_tls_a_device_connects_only_as_the_client_id_its_certificate_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "device-ca");
    let extra = format!("client_ca_file = \"{}\"\n", pki.ca().display());
    let (broker, [mqtts, _, _]) = tls_broker(dir.path(), &pki, &extra);
    let (cert, key) = pki.issue("dev-1");
    let paho = |client: &str, cert: &[&Path]| tls_echo("tcp", mqtts, &pki.ca(), client, cert);

    let good = paho("dev-1", &[&cert, &key]);
    assert!(good.contains("connack reason=0") && good.contains("echo payload=over-tls"), "{good}");
    // Another client id with dev-1's certificate: CONNACK 0x87.
    let other = paho("dev-2", &[&cert, &key]);
    assert!(other.contains("connack reason=135"), "{other}");
    // No certificate, or one from another CA: no TLS session at all.
    let none = paho("dev-1", &[]);
    assert!(!none.contains("connack reason="), "a client without a certificate got in: {none}");
    let stranger = Pki::new(dir.path(), "stranger-ca");
    let (cert, key) = stranger.issue("dev-1");
    let foreign = paho("dev-1", &[&cert, &key]);
    assert!(!foreign.contains("connack reason="), "a certificate of another CA got in: {foreign}");
    // Each refusal is counted.
    let (_, lines) = crate::ops_client::fetch(&crate::ops_client::ops_address(&broker.log()), "/metrics");
    let metrics = crate::ops_client::samples(&lines);
    assert_eq!(metrics.get("herald_certificate_mismatches_total{}"), Some(&1.0));
    assert!(metrics.get("herald_tls_handshakes_failed_total{}").is_some_and(|n| *n >= 2.0), "{metrics:?}");
}
