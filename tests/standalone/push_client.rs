//! Clients of the push API for tests: an HTTP caller (`py/http_call.py`,
//! Python's standard HTTP client) and a paho device (`py/device.py`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standalone/py");
/// Upper bound of one step: a device's start, an HTTP call, a delivery.
const STEP: Duration = Duration::from_secs(20);

/// The push API address announced in a `listening` line of the log `log`
/// returns (the line may still be on its way into the transcript).
/// A broker with `config` as its file and the push API on; and the push
/// API's address.
pub(crate) fn start(dir: &tempfile::TempDir, config: &str) -> (crate::support::Broker, SocketAddr) {
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, config).expect("write the config");
    let broker = crate::support::Broker::start_with(
        &["--config", path.to_str().expect("utf-8")],
        &[("HERALD_PUSH_HTTP", "127.0.0.1:0")],
    );
    let http = push_address(|| broker.log());
    (broker, http)
}

pub(crate) fn push_address(log: impl Fn() -> String) -> SocketAddr {
    let deadline = Instant::now() + STEP;
    loop {
        let text = log();
        let line = text.lines().find(|line| line.contains("listening") && line.contains(" http="));
        if let Some(line) = line {
            let rest = line.split_once(" http=").expect("http= field").1;
            return rest.split_whitespace().next().expect("address").parse().expect("a socket address");
        }
        assert!(Instant::now() < deadline, "no push API address in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) location: String,
    pub(crate) replayed: String,
    pub(crate) retry_after: String,
    pub(crate) ratelimit: String,
    pub(crate) body: serde_json::Value,
}

/// What goes in the request body.
pub(crate) enum Body<'a> {
    Json(&'a serde_json::Value),
    Text(&'a str),
    Bytes(usize),
}

/// Makes one request to the push API at `address`.
pub(crate) fn call(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Body<'_>,
) -> Reply {
    request(address, method, path, key, &[], body)
}

/// Makes one request with extra headers and a JSON body.
pub(crate) fn call_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Reply {
    request(address, method, path, Some(key), headers, Body::Json(body))
}

fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Body<'_>,
) -> Reply {
    let mut command = Command::new("/usr/bin/python3");
    command.arg(format!("{PY}/http_call.py")).arg(method).arg(format!("http://{address}{path}"));
    for (name, value) in headers {
        command.arg("--header").arg(format!("{name}:{value}"));
    }
    if let Some(key) = key {
        command.args(["--key", key]);
    }
    let json;
    match body {
        Body::Json(value) => {
            json = value.to_string();
            command.args(["--body", &json]);
        }
        Body::Text(text) => {
            command.args(["--body", text]);
        }
        Body::Bytes(size) => {
            command.args(["--body-size", &size.to_string()]);
        }
    }
    let output = command.output().expect("run http_call.py");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "http_call.py failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {stdout}"))
            .to_owned()
    };
    let text = field("body");
    Reply {
        status: field("status").parse().expect("status"),
        content_type: field("content-type"),
        location: field("location"),
        replayed: field("replayed"),
        retry_after: field("retry-after"),
        ratelimit: field("ratelimit"),
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    }
}

/// A delivery a device printed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delivery {
    pub(crate) topic: String,
    pub(crate) qos: u8,
    pub(crate) message_id: String,
    /// The `traceparent` user property, or `-`.
    pub(crate) trace: String,
    pub(crate) envelope: serde_json::Value,
}

/// A paho device running `py/device.py`.
pub(crate) struct Device {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Device {
    /// Starts a v5 device `client` of the user `user` (password `pw`) and
    /// waits until it is connected and subscribed (`ready`).
    pub(crate) fn start(mqtt: SocketAddr, client: &str, user: &str, extra: &[&str]) -> Device {
        Device::start_with_password(mqtt, client, user, "pw", extra)
    }

    /// Starts a v5 device presenting `password` (a device token, say).
    pub(crate) fn start_with_password(
        mqtt: SocketAddr,
        client: &str,
        user: &str,
        password: &str,
        extra: &[&str],
    ) -> Device {
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(format!("{PY}/device.py"))
            .args([&mqtt.ip().to_string(), &mqtt.port().to_string(), "5", client])
            .args(["--user", user, "--password", password])
            .args(extra);
        Device::spawn(command, "ready")
    }

    /// Runs `command`, reading its output lines, until it prints `first`.
    fn spawn(mut command: Command, first: &str) -> Device {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn a client script");
        let stdout = child.stdout.take().expect("piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut device = Device { child, lines, seen: Vec::new() };
        device.wait_for(first);
        device
    }

    /// Opens a page in headless Chromium listening to `sse_url` with
    /// `EventSource` (`py/sse_page.py`), and waits until its stream is open.
    pub(crate) fn page(sse_url: &str, expect: usize) -> Device {
        let mut command = Command::new("/usr/bin/python3");
        command.arg(format!("{PY}/sse_page.py")).args([sse_url, &expect.to_string(), "25"]);
        Device::spawn(command, "open")
    }

    /// Waits for the page to finish; returns what it recorded.
    pub(crate) fn page_lines(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.seen.iter().any(|l| l == "done" || l == "timeout") {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("the page never finished: {:#?}", self.seen),
            }
        }
        let _ = self.child.wait();
        std::mem::take(&mut self.seen)
    }

    fn wait_for(&mut self, prefix: &str) {
        let deadline = Instant::now() + STEP;
        while !self.seen.iter().any(|l| l.starts_with(prefix)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("device printed no {prefix:?} line; so far: {:#?}", self.seen);
                }
            }
        }
    }

    /// The CONNACK's reason code.
    pub(crate) fn connack(&self) -> Option<u8> {
        self.seen.iter().find_map(|l| l.strip_prefix("connack reason=")?.split(' ').next()?.parse().ok())
    }

    /// The reason code of the server's DISCONNECT, once finished.
    pub(crate) fn disconnected(&mut self) -> Option<u8> {
        self.wait_for("done");
        self.seen.iter().find_map(|l| l.strip_prefix("disconnected reason=")?.parse().ok())
    }

    /// The code of the SUBACK: the granted QoS, or a reason code.
    pub(crate) fn granted(&self) -> Option<u8> {
        self.seen.iter().find_map(|l| l.strip_prefix("granted code=")?.parse().ok())
    }

    /// Waits for the device to finish (it waits for its `--expect` count,
    /// then `--settle`); returns its deliveries in order.
    pub(crate) fn finish(mut self) -> Vec<Delivery> {
        self.wait_for("done");
        let _ = self.child.wait();
        self.seen
            .iter()
            .filter_map(|line| line.strip_prefix("received "))
            .map(|rest| {
                let (fields, payload) = rest.split_once(" payload=").expect("payload last");
                let field = |name: &str| {
                    fields
                        .split(' ')
                        .find_map(|f| f.strip_prefix(&format!("{name}=")))
                        .expect("field")
                        .to_owned()
                };
                Delivery {
                    topic: field("topic"),
                    qos: field("qos").parse().expect("qos"),
                    message_id: field("message_id"),
                    trace: field("trace"),
                    envelope: serde_json::from_str(payload).expect("a JSON envelope"),
                }
            })
            .collect()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mints a device token for `device` of `app`, valid `seconds` from now.
pub(crate) fn device_token(app: &str, device: &str, secret: &str, seconds: i64) -> String {
    signed_device_token(app, device, secret, seconds, &[])
}

/// Mints a device token signed with `key`: the secret (no `alg`), or the
/// file of a private key with `&["RS256"]`, `&["ES256"]`, or either with a
/// kid (`&["RS256", "kid"]`).
pub(crate) fn signed_device_token(app: &str, device: &str, key: &str, seconds: i64, alg: &[&str]) -> String {
    let output = Command::new("/usr/bin/python3")
        .arg(format!("{PY}/jwt_token.py"))
        .args([app, device, key, &seconds.to_string()])
        .args(alg)
        .output()
        .expect("run jwt_token.py");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
