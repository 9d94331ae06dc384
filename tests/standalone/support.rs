//! The harness: a `herald standalone` process per test, the mosquitto command-line clients, the
//! paho scenarios in `py/`, and a raw TCP connection for bytes no well-behaved client sends.
//!
//! Every wait is bounded. A step that should take milliseconds gets [`STEP_TIMEOUT`]; a test that
//! hangs becomes a failing test, and a failing test prints the broker's log and the clients'
//! transcripts. Every child process is killed when its guard is dropped, panics included.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for one step that takes milliseconds on loopback: the broker starting, a CONNACK,
/// a SUBACK, a publication reaching its subscribers.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test listens before concluding that something did not happen.
pub(crate) const SILENCE: Duration = Duration::from_millis(1500);

/// Upper bound for one paho scenario; each scenario also bounds its own steps.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian's interpreter, which has python3-paho-mqtt; a `python3` earlier on `PATH` may not.
const PYTHON: &str = "/usr/bin/python3";

/// The prefix `mosquitto_sub -F` puts before each message, telling messages from debug lines.
const MESSAGE_PREFIX: &str = "MSG ";

/// The MQTT protocol version a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// Both versions, for tests that run once per version.
    pub(crate) const ALL: [Version; 2] = [Version::V311, Version::V5];

    /// Returns the `-V` argument of the mosquitto clients.
    fn mosquitto_name(self) -> &'static str {
        match self {
            Version::V311 => "mqttv311",
            Version::V5 => "mqttv5",
        }
    }

    /// Returns the version argument of the paho scenarios.
    pub(crate) fn paho_name(self) -> &'static str {
        match self {
            Version::V311 => "311",
            Version::V5 => "5",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.paho_name())
    }
}

/// Lines of output collected from a child process by a draining thread.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    fn push(&self, line: String) {
        self.0.lock().expect("transcript lock poisoned").push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().expect("transcript lock poisoned").clone()
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.0.lock().expect("transcript lock poisoned").iter() {
            writeln!(formatter, "    {line}")?;
        }
        Ok(())
    }
}

/// Reads `source` line by line until it closes, recording every line in `transcript` and handing
/// it to `on_line`. Draining continuously keeps the child from blocking on a full pipe.
fn drain(
    source: impl Read + Send + 'static,
    transcript: Transcript,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = strip_ansi(&String::from_utf8_lossy(&buffer));
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    on_line(&line);
                    transcript.push(line);
                }
            }
        }
    })
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), so log lines parse with or without colour.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character == '\u{1b}' {
            if characters.next() == Some('[') {
                for code in characters.by_ref() {
                    if code.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            plain.push(character);
        }
    }
    plain
}

/// Returns the MQTT address announced by a start-up line such as
/// `... INFO herald: listening mqtt=127.0.0.1:41234 data=/tmp/x`.
fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    listening_field(line, "mqtt")
}

/// Returns the address in field `key` of a `listening` line, if the line has that field.
pub(crate) fn listening_field(line: &str, key: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let (_, rest) = line.split_once(&format!(" {key}="))?;
    let value: String = rest.chars().take_while(|character| !character.is_whitespace()).collect();
    value.trim_matches(|character| matches!(character, '"' | '\'' | ',')).parse().ok()
}

/// Waits up to `timeout` for `child` to exit; returns `None` if it is still running.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(error) => panic!("cannot wait for child {}: {error}", child.id()),
        }
    }
}

/// Sends a signal (`TERM`, `INT`, ...) with `kill(1)`: the tests have no libc binding.
fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .stdin(Stdio::null())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{signal} {} failed: {status}", child.id());
}

/// Kills `child` (SIGKILL) unless it has already exited, and reaps it.
fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A running `herald standalone` with its own data directory, stopped on drop.
pub(crate) struct Broker {
    child: Child,
    address: SocketAddr,
    websocket: Option<SocketAddr>,
    log: Transcript,
    exit: Option<ExitStatus>,
    /// Kept for a restart on the same data.
    arguments: Vec<String>,
    environment: Vec<(String, String)>,
    /// A command the broker runs under (e.g. `prlimit --fsize=N --`).
    wrapper: Vec<String>,
    data: Option<tempfile::TempDir>,
}

/// Something MQTT clients connect to: a standalone broker or a gateway.
pub(crate) trait Endpoint {
    /// Returns the MQTT listen address.
    fn addr(&self) -> SocketAddr;
}

impl Endpoint for Broker {
    fn addr(&self) -> SocketAddr {
        Broker::addr(self)
    }
}

impl Endpoint for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

impl Broker {
    /// Starts a broker on a free loopback port and waits for its `listening` line.
    pub(crate) fn start() -> Broker {
        Broker::start_with(&[], &[])
    }

    /// Starts a broker that also serves MQTT over WebSocket on a free loopback port, with extra
    /// `HERALD_*` environment variables.
    pub(crate) fn start_with_websocket(environment: &[(&str, &str)]) -> Broker {
        Broker::start_with(&["--websocket", "127.0.0.1:0"], environment)
    }

    /// Starts a broker with extra command-line `arguments` and `HERALD_*`
    /// environment variables.
    pub(crate) fn start_with(arguments: &[&str], environment: &[(&str, &str)]) -> Broker {
        let data =
            tempfile::Builder::new().prefix("herald-standalone-").tempdir().expect("create a data directory");
        let arguments: Vec<String> = arguments.iter().map(|a| (*a).to_owned()).collect();
        let environment = environment.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Broker::start_in(data, arguments, environment, Vec::new())
    }

    /// Like [`Broker::start_with`], run by `wrapper` (a command and its
    /// arguments before herald's, e.g. `prlimit --fsize=N --`).
    #[allow(dead_code, reason = "used by the standalone tests only")]
    pub(crate) fn start_wrapped(
        wrapper: &[&str],
        arguments: &[&str],
        environment: &[(&str, &str)],
    ) -> Broker {
        let data =
            tempfile::Builder::new().prefix("herald-standalone-").tempdir().expect("create a data directory");
        let arguments: Vec<String> = arguments.iter().map(|a| (*a).to_owned()).collect();
        let environment = environment.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Broker::start_in(data, arguments, environment, wrapper.iter().map(|w| (*w).to_owned()).collect())
    }

    /// Stops the broker with `signal` (`TERM` for a clean shutdown, `KILL` for a crash) and
    /// starts it again on the same data directory, with the same settings and a new port.
    pub(crate) fn restart(mut self, signal: &str) -> Broker {
        let status = self.stop(signal, STEP_TIMEOUT);
        assert!(status.is_some(), "herald did not stop on SIG{signal}; log:\n{}", self.log);
        let data = self.data.take().expect("a broker owns its data directory");
        let wrapper = std::mem::take(&mut self.wrapper);
        Broker::start_in(
            data,
            std::mem::take(&mut self.arguments),
            std::mem::take(&mut self.environment),
            wrapper,
        )
    }

    fn start_in(
        data: tempfile::TempDir,
        arguments: Vec<String>,
        environment: Vec<(String, String)>,
        wrapper: Vec<String>,
    ) -> Broker {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(env!("CARGO_BIN_EXE_herald"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_herald")),
        };
        let mut child = command
            .args(["standalone", "--mqtt", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(&arguments)
            .envs(environment.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");

        let log = Transcript::default();
        let (ready_sender, ready) = mpsc::channel();
        let mut ready_sender = Some(ready_sender);
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        drain(stdout, log.clone(), |_| {});
        drain(stderr, log.clone(), move |line| {
            if let Some(address) = parse_listening_line(line)
                && let Some(sender) = ready_sender.take()
            {
                let _ = sender.send((address, listening_field(line, "websocket")));
            }
        });

        let started = Instant::now();
        let (address, websocket) = loop {
            match ready.recv_timeout(Duration::from_millis(50)) {
                Ok(addresses) => break addresses,
                Err(error) => {
                    if error == RecvTimeoutError::Disconnected {
                        // stderr closed without the line: the process is on its way out.
                        thread::sleep(Duration::from_millis(50));
                    }
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("herald exited ({status}) before announcing its address; log:\n{log}");
                    }
                    if started.elapsed() > STEP_TIMEOUT {
                        kill_and_reap(&mut child);
                        panic!(
                            "herald printed no `listening ... mqtt=IP:PORT` line on stderr within \
                             {STEP_TIMEOUT:?}; log:\n{log}"
                        );
                    }
                }
            }
        };
        Broker {
            child,
            address,
            websocket,
            log,
            exit: None,
            arguments,
            environment,
            wrapper,
            data: Some(data),
        }
    }

    /// The broker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many file descriptors the broker holds open now.
    pub(crate) fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |dir| dir.count())
    }

    /// Returns the MQTT address the broker announced.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.address
    }

    /// Returns the MQTT-over-WebSocket address the broker announced; panics unless it was
    /// started with a WebSocket listener ([`Broker::start_with_websocket`]).
    pub(crate) fn websocket_addr(&self) -> SocketAddr {
        self.websocket.unwrap_or_else(|| panic!("herald announced no websocket= address; log:\n{}", self.log))
    }

    /// Sends `signal` and waits up to `timeout` for the broker to exit; returns its exit status,
    /// or `None` if it is still running (it is then killed on drop).
    pub(crate) fn stop(&mut self, signal: &str, timeout: Duration) -> Option<ExitStatus> {
        send_signal(&self.child, signal);
        self.exit = wait_bounded(&mut self.child, timeout);
        self.exit
    }

    /// Whether the broker process has exited.
    #[allow(dead_code, reason = "used by the standalone tests only")]
    pub(crate) fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Returns the broker's data directory.
    pub(crate) fn data_path(&self) -> &std::path::Path {
        self.data.as_ref().expect("a broker owns its data directory").path()
    }

    /// Returns everything the broker printed so far, for assertion messages.
    pub(crate) fn log(&self) -> String {
        self.log.to_string()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.exit.is_none() {
            if let Ok(None) = self.child.try_wait() {
                send_signal(&self.child, "TERM");
                if wait_bounded(&mut self.child, Duration::from_secs(5)).is_none() {
                    eprintln!("herald ignored SIGTERM for 5 s; killing it");
                }
            }
            kill_and_reap(&mut self.child);
        }
        if thread::panicking() {
            eprintln!("---- herald log ----\n{}", self.log);
        }
    }
}

/// One application message as a client printed it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Message {
    /// The topic name it was published to.
    pub(crate) topic: String,
    /// The payload, as UTF-8.
    pub(crate) payload: String,
    /// The QoS it was delivered at.
    pub(crate) qos: u8,
    /// The RETAIN flag of the PUBLISH the client received.
    pub(crate) retain: bool,
}

impl Message {
    /// Returns the message as a subscriber should see it.
    pub(crate) fn new(topic: &str, payload: &str, qos: u8, retain: bool) -> Message {
        Message { topic: topic.to_owned(), payload: payload.to_owned(), qos, retain }
    }
}

/// Returns a client identifier that no other client of this test binary uses.
///
/// The mosquitto clients send an empty identifier by default; naming them keeps every test but
/// the one about assigned identifiers independent of that feature.
fn unique_client_id(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Arguments for a `mosquitto_sub`; [`SubscriberBuilder::start`] runs it.
pub(crate) struct SubscriberBuilder {
    addr: SocketAddr,
    version: Version,
    client_id: String,
    arguments: Vec<String>,
    exit_after_subscribe: bool,
}

/// Subscribes `client`, a persistent v5 session, to `filter` at QoS 1 and
/// leaves at once: what is published for it from now on waits in its inbox.
#[allow(dead_code, reason = "used by the cluster tests, which share this file")]
pub(crate) fn leave_persistent(broker: &impl Endpoint, client: &str, filter: &str) {
    subscriber(broker, Version::V5)
        .client_id(client)
        .persistent()
        .topic(filter)
        .qos(1)
        .exit_after_subscribe()
        .start();
}

/// Prepares a `mosquitto_sub` against `broker`, speaking `version`.
pub(crate) fn subscriber(broker: &impl Endpoint, version: Version) -> SubscriberBuilder {
    SubscriberBuilder {
        addr: broker.addr(),
        version,
        client_id: unique_client_id("sub"),
        arguments: Vec::new(),
        exit_after_subscribe: false,
    }
}

impl SubscriberBuilder {
    fn argument(mut self, flag: &str, value: impl ToString) -> Self {
        self.arguments.push(flag.to_owned());
        self.arguments.push(value.to_string());
        self
    }

    /// Adds a topic filter (`-t`); all filters go in one SUBSCRIBE.
    pub(crate) fn topic(self, filter: &str) -> Self {
        self.argument("-t", filter)
    }

    /// Sets the requested QoS of every filter (`-q`).
    pub(crate) fn qos(self, qos: u8) -> Self {
        self.argument("-q", qos)
    }

    /// Sets the client identifier (`-i`) instead of a unique one.
    pub(crate) fn client_id(mut self, client_id: &str) -> Self {
        client_id.clone_into(&mut self.client_id);
        self
    }

    /// Asks for a session that outlives the connection: clean session 0 (`-c`), and for v5 also a
    /// Session Expiry Interval of 300 s.
    pub(crate) fn persistent(mut self) -> Self {
        if self.version == Version::V5 {
            return self.session_expiry(300);
        }
        self.arguments.push("-c".to_owned());
        self
    }

    /// Asks for a v5 session that outlives the connection by `seconds`
    /// (`-c -x seconds`).
    pub(crate) fn session_expiry(mut self, seconds: u32) -> Self {
        self.arguments.push("-c".to_owned());
        self.argument("-x", seconds)
    }

    /// Presents a user name and password (`-u`, `-P`).
    pub(crate) fn user(self, name: &str, password: &str) -> Self {
        self.argument("-u", name).argument("-P", password)
    }

    /// Sets a will at QoS 1.
    pub(crate) fn will(self, topic: &str, payload: &str) -> Self {
        self.argument("--will-topic", topic).argument("--will-payload", payload).argument("--will-qos", 1)
    }

    /// Makes the client send DISCONNECT and exit once its SUBACK arrived (`-E`).
    pub(crate) fn exit_after_subscribe(mut self) -> Self {
        self.arguments.push("-E".to_owned());
        self.exit_after_subscribe = true;
        self
    }

    /// Runs the client and waits until its SUBACK arrived, so that anything published afterwards
    /// reaches it. With [`SubscriberBuilder::exit_after_subscribe`], also waits for it to exit
    /// successfully, after its DISCONNECT.
    pub(crate) fn start(self) -> Subscriber {
        // mosquitto_sub writes to a pipe through C stdio: without line buffering, nothing shows
        // up until its buffer fills or it exits.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                &self.addr.ip().to_string(),
                "-p",
                &self.addr.port().to_string(),
            ])
            .args(["-V", self.version.mosquitto_name(), "-i", &self.client_id])
            // -d prints the packet flow (and `Subscribed (mid: N): QOS`), -F one line per message,
            // -W bounds a client whose guard never ran.
            .args(["-d", "-F", "MSG %q %r %t %p", "-W", "60"])
            .args(&self.arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_sub (Debian package mosquitto-clients)");
        let transcript = Transcript::default();
        let (sender, lines) = mpsc::channel();
        drain(child.stdout.take().expect("piped stdout"), transcript.clone(), line_forwarder(sender));
        drain(child.stderr.take().expect("piped stderr"), transcript.clone(), |_| {});
        let mut subscriber = Subscriber {
            child,
            lines,
            transcript,
            pending: VecDeque::new(),
            granted: None,
            connects: 0,
            arguments: [vec!["-i".to_owned(), self.client_id], self.arguments].concat(),
        };
        subscriber.wait_for_suback();
        if self.exit_after_subscribe {
            let status = wait_bounded(&mut subscriber.child, STEP_TIMEOUT);
            assert!(
                status.is_some_and(|status| status.success()),
                "mosquitto_sub -E did not exit successfully ({status:?})"
            );
        }
        subscriber
    }
}

/// Returns a line callback that forwards each line to `sender` while the receiver listens.
fn line_forwarder(sender: Sender<String>) -> impl FnMut(&str) + Send + 'static {
    move |line| {
        let _ = sender.send(line.to_owned());
    }
}

/// A running `mosquitto_sub`; killed on drop.
pub(crate) struct Subscriber {
    child: Child,
    lines: Receiver<String>,
    transcript: Transcript,
    pending: VecDeque<Message>,
    granted: Option<Vec<u8>>,
    arguments: Vec<String>,
    connects: usize,
}

impl Subscriber {
    /// Returns how many times the client has sent CONNECT so far (it
    /// reconnects on its own when its connection drops).
    #[allow(dead_code, reason = "used by the cluster tests, which share this file")]
    pub(crate) fn connects(&mut self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.absorb(&line);
        }
        self.connects
    }

    /// Returns what the SUBACK granted, one QoS (or reason code >= 0x80) per filter.
    pub(crate) fn granted(&self) -> Vec<u8> {
        self.granted.clone().expect("start waited for the SUBACK")
    }

    /// Handles one line of output: a message goes to `pending`, the SUBACK summary to `granted`.
    fn absorb(&mut self, line: &str) {
        if let Some(fields) = line.strip_prefix(MESSAGE_PREFIX) {
            let mut parts = fields.splitn(4, ' ');
            let mut next = || parts.next().unwrap_or_else(|| panic!("short message line {line:?}"));
            let qos = next().parse().unwrap_or_else(|_| panic!("bad QoS in {line:?}"));
            let retain = next() == "1";
            let topic = next().to_owned();
            let payload = parts.next().unwrap_or("").to_owned();
            self.pending.push_back(Message { topic, payload, qos, retain });
        } else if line.contains("sending CONNECT") {
            self.connects += 1;
        } else if let Some(summary) = line.strip_prefix("Subscribed (mid: ") {
            let (_, codes) = summary.split_once("): ").unwrap_or_else(|| panic!("bad SUBACK line {line:?}"));
            let codes = codes.split(", ").map(|code| code.trim().parse().expect("numeric SUBACK code"));
            self.granted = Some(codes.collect());
        }
    }

    /// Processes output until `done` holds or `deadline` passes; returns whether `done` held.
    fn read_until(&mut self, deadline: Instant, done: impl Fn(&Subscriber) -> bool) -> bool {
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.lines.recv_timeout(left) {
                Ok(line) => self.absorb(&line),
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return done(self),
            }
        }
        true
    }

    fn wait_for_suback(&mut self) {
        let subscribed = self.read_until(Instant::now() + STEP_TIMEOUT, |me| me.granted.is_some());
        assert!(subscribed, "mosquitto_sub got no SUBACK within {STEP_TIMEOUT:?}");
    }

    /// Waits for exactly `count` messages (at most [`STEP_TIMEOUT`]) and returns them in order.
    pub(crate) fn expect_messages(&mut self, count: usize) -> Vec<Message> {
        let arrived = self.read_until(Instant::now() + STEP_TIMEOUT, |me| me.pending.len() >= count);
        assert!(arrived, "expected {count} messages within {STEP_TIMEOUT:?}, got {:?}", self.pending);
        self.pending.drain(..count).collect()
    }

    /// Returns every message that arrived by the end of `window`.
    #[allow(dead_code, reason = "used by the cluster tests, which share this file")]
    pub(crate) fn collect(&mut self, window: Duration) -> Vec<Message> {
        self.read_until(Instant::now() + window, |_| false);
        self.pending.drain(..).collect()
    }

    /// Asserts that no message arrives within `window`.
    pub(crate) fn expect_silence(&mut self, window: Duration) {
        self.read_until(Instant::now() + window, |me| !me.pending.is_empty());
        assert!(self.pending.is_empty(), "expected no message within {window:?}, got {:?}", self.pending);
    }

    /// Kills the client with SIGKILL: the socket closes without a DISCONNECT.
    pub(crate) fn kill_abruptly(mut self) {
        kill_and_reap(&mut self.child);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        if thread::panicking() {
            eprintln!("---- mosquitto_sub {} ----\n{}", self.arguments.join(" "), self.transcript);
        }
    }
}

/// Arguments for a `mosquitto_pub`; [`PublishBuilder::run`] runs it.
pub(crate) struct PublishBuilder {
    addr: SocketAddr,
    version: Version,
    arguments: Vec<String>,
    stdin: Option<String>,
    /// How long it may take: one step, plus a millisecond per line.
    timeout: Duration,
}

/// Prepares a `mosquitto_pub` to `topic` at QoS 0; exactly one of [`PublishBuilder::message`],
/// [`PublishBuilder::empty`] or [`PublishBuilder::lines`] must give the payload.
pub(crate) fn publisher(broker: &impl Endpoint, version: Version, topic: &str) -> PublishBuilder {
    let arguments = vec!["-i".to_owned(), unique_client_id("pub"), "-t".to_owned(), topic.to_owned()];
    PublishBuilder { addr: broker.addr(), version, arguments, stdin: None, timeout: STEP_TIMEOUT }
}

impl PublishBuilder {
    fn argument(mut self, flag: &str, value: impl ToString) -> Self {
        self.arguments.push(flag.to_owned());
        self.arguments.push(value.to_string());
        self
    }

    /// Sets the QoS (`-q`).
    pub(crate) fn qos(self, qos: u8) -> Self {
        self.argument("-q", qos)
    }

    /// Sets the RETAIN flag (`-r`).
    pub(crate) fn retain(mut self) -> Self {
        self.arguments.push("-r".to_owned());
        self
    }

    /// Presents a user name and password (`-u`, `-P`).
    pub(crate) fn user(self, name: &str, password: &str) -> Self {
        self.argument("-u", name).argument("-P", password)
    }

    /// Publishes `payload` (`-m`).
    pub(crate) fn message(self, payload: &str) -> Self {
        self.argument("-m", payload)
    }

    /// Gives the message a v5 Message Expiry Interval of `seconds` (`-D publish
    /// message-expiry-interval`).
    pub(crate) fn expiry(mut self, seconds: u32) -> Self {
        self.arguments.extend(["-D", "publish", "message-expiry-interval"].map(str::to_owned));
        self.arguments.push(seconds.to_string());
        self
    }

    /// Publishes a zero-length payload (`-n`).
    pub(crate) fn empty(mut self) -> Self {
        self.arguments.push("-n".to_owned());
        self
    }

    /// Publishes `payload`, read from standard input (`-s`): for payloads too long for an
    /// argument.
    #[allow(dead_code, reason = "used by the cluster tests, which share this file")]
    pub(crate) fn message_from_stdin(mut self, payload: &str) -> Self {
        self.arguments.push("-s".to_owned());
        self.stdin = Some(payload.to_owned());
        self
    }

    /// Publishes each line as its own message, in order, over one connection (`-l`).
    pub(crate) fn lines(mut self, payloads: &[String]) -> Self {
        self.arguments.push("-l".to_owned());
        self.stdin = Some(payloads.iter().map(|payload| format!("{payload}\n")).collect());
        // Thousands of lines take their time on two cores shared with a
        // cluster, in a debug build.
        self.timeout = STEP_TIMEOUT + Duration::from_millis(payloads.len() as u64);
        self
    }

    /// Runs the client and asserts that it exits successfully, which for QoS 1 and 2 means every
    /// publication was acknowledged.
    pub(crate) fn run(self) {
        let mut command = Command::new("mosquitto_pub");
        command
            .args([
                "-h",
                &self.addr.ip().to_string(),
                "-p",
                &self.addr.port().to_string(),
                "-V",
                self.version.mosquitto_name(),
            ])
            .arg("-d")
            .args(&self.arguments);
        let finished = run_bounded(command, self.stdin.as_deref(), self.timeout);
        assert!(
            finished.succeeded(),
            "mosquitto_pub {} did not succeed within {:?}\n{finished}",
            self.arguments.join(" "),
            self.timeout
        );
    }
}

impl PublishBuilder {
    /// The `mosquitto_pub` command, quiet.
    fn quiet_command(&self) -> Command {
        let mut command = Command::new("mosquitto_pub");
        command
            .args(["-h", &self.addr.ip().to_string(), "-p", &self.addr.port().to_string()])
            .args(["-V", self.version.mosquitto_name()])
            .args(&self.arguments);
        command
    }

    /// Runs the client and returns whether it succeeded (for QoS 1 and 2: every publication
    /// acknowledged), for tests in which the broker may be away.
    #[allow(dead_code, reason = "used by the cluster tests, which share this file")]
    pub(crate) fn try_run(self) -> bool {
        run_bounded(self.quiet_command(), self.stdin.as_deref(), STEP_TIMEOUT).succeeded()
    }

    /// Runs the client, asserts that the broker refused it, and returns what it printed.
    pub(crate) fn run_refused(self) -> String {
        let finished = run_bounded(self.quiet_command(), None, STEP_TIMEOUT);
        assert!(
            finished.status.is_some_and(|status| !status.success()),
            "mosquitto_pub {} was not refused\n{finished}",
            self.arguments.join(" ")
        );
        finished.to_string()
    }
}

/// How a bounded child process ended.
struct Finished {
    /// The exit status; `None` if the child was killed for running past its time.
    status: Option<ExitStatus>,
    stdout: Transcript,
    stderr: Transcript,
}

impl Finished {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "exit: {:?}\n  stdout:\n{}  stderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `command` to completion with `stdin` as its input, killing it after `timeout`.
fn run_bounded(mut command: Command, stdin: Option<&str>, timeout: Duration) -> Finished {
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| panic!("spawn {command:?}: {error}"));
    let (stdout, stderr) = (Transcript::default(), Transcript::default());
    let readers = [
        drain(child.stdout.take().expect("piped stdout"), stdout.clone(), |_| {}),
        drain(child.stderr.take().expect("piped stderr"), stderr.clone(), |_| {}),
    ];
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A child that exits early closes its end; its exit status and output tell why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let status = wait_bounded(&mut child, timeout);
    kill_and_reap(&mut child);
    // The readers end at end of stream, then the transcripts are whole. A grandchild holding the
    // pipes open must not hang the test, hence the bound.
    let deadline = Instant::now() + Duration::from_secs(1);
    while !readers.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    Finished { status, stdout, stderr }
}

/// One line printed by a paho scenario: `event key=value key=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// The first word of the line.
    pub(crate) event: String,
    fields: BTreeMap<String, String>,
}

impl Record {
    fn parse(line: &str) -> Record {
        let mut words = line.split(' ');
        let event = words.next().unwrap_or_default().to_owned();
        let fields = words
            .filter(|word| !word.is_empty())
            .map(|word| {
                let (key, value) = word.split_once('=').unwrap_or_else(|| panic!("bad record {line:?}"));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        Record { event, fields }
    }

    /// Returns the value of `key`; panics if the record has none.
    pub(crate) fn field(&self, key: &str) -> &str {
        self.fields.get(key).unwrap_or_else(|| panic!("record {self:?} has no field {key:?}"))
    }

    /// Returns the `received` record as a [`Message`].
    pub(crate) fn message(&self) -> Message {
        assert_eq!(self.event, "received", "not a message: {self:?}");
        Message {
            topic: self.field("topic").to_owned(),
            payload: self.field("payload").to_owned(),
            qos: self.field("qos").parse().expect("numeric qos"),
            retain: self.field("retain") == "1",
        }
    }
}

/// Runs the paho scenario `py/<script>` against `broker` with `arguments` after host and port,
/// asserts that it succeeds, and returns its records.
pub(crate) fn paho(broker: &impl Endpoint, script: &str, arguments: &[&str]) -> Vec<Record> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standalone/py").join(script);
    let mut command = Command::new(PYTHON);
    command
        .args(["-u", "-B"])
        .arg(&path)
        .arg(broker.addr().ip().to_string())
        .arg(broker.addr().port().to_string())
        .args(arguments);
    let finished = run_bounded(command, None, SCENARIO_TIMEOUT);
    assert!(finished.succeeded(), "{script} {} failed\n{finished}", arguments.join(" "));
    finished
        .stdout
        .lines()
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| Record::parse(line))
        .collect()
}

/// Returns the records of `event`, in order.
pub(crate) fn records<'a>(all: &'a [Record], event: &str) -> Vec<&'a Record> {
    all.iter().filter(|record| record.event == event).collect()
}

/// Returns the single record of `event`; panics unless there is exactly one.
pub(crate) fn record<'a>(all: &'a [Record], event: &str) -> &'a Record {
    match records(all, event).as_slice() {
        [single] => single,
        other => panic!("expected one {event:?} record, got {other:?}"),
    }
}

/// Returns the messages of the `received` records, in arrival order.
pub(crate) fn received(all: &[Record]) -> Vec<Message> {
    records(all, "received").into_iter().map(Record::message).collect()
}

/// One MQTT control packet read off a raw connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Packet {
    /// Packet type (high nibble) and flags (low nibble).
    pub(crate) first_byte: u8,
    /// Everything after the remaining length.
    pub(crate) body: Vec<u8>,
}

/// What a raw connection read next.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A whole packet.
    Packet(Packet),
    /// The broker closed the connection (end of stream or reset).
    Closed,
    /// Nothing arrived in time.
    Silent,
}

/// A v5 CONNECT for `client`: keep-alive 60 s, a Session Expiry Interval of `expiry_seconds`,
/// clean start or not, and optionally a QoS 1 will `(topic, payload)`.
pub(crate) fn connect_v5(
    client: &str,
    expiry_seconds: u32,
    clean_start: bool,
    will: Option<(&str, &str)>,
) -> Vec<u8> {
    let utf8 = |s: &str| [&(s.len() as u16).to_be_bytes()[..], s.as_bytes()].concat();
    let flags = u8::from(clean_start) << 1 | if will.is_some() { 0x04 | 0x08 } else { 0 };
    let mut body = utf8("MQTT");
    body.extend_from_slice(&[0x05, flags, 0x00, 0x3C]); // level 5, flags, keep alive 60 s
    body.extend_from_slice(&[0x05, 0x11]); // properties: Session Expiry Interval
    body.extend_from_slice(&expiry_seconds.to_be_bytes());
    body.extend(utf8(client));
    if let Some((topic, payload)) = will {
        body.push(0x00); // will properties
        body.extend(utf8(topic));
        body.extend(utf8(payload));
    }
    [vec![0x10, body.len() as u8], body].concat()
}

/// A TCP connection that sends hand-written bytes and reads packets back.
pub(crate) struct RawConnection {
    stream: TcpStream,
}

impl RawConnection {
    /// Opens a connection to the broker.
    pub(crate) fn open(broker: &impl Endpoint) -> RawConnection {
        let stream = TcpStream::connect_timeout(&broker.addr(), STEP_TIMEOUT).expect("connect to herald");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawConnection { stream }
    }

    /// Writes `bytes` in one call.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to herald");
    }

    /// Reads the next packet, waiting at most `timeout` for it to start.
    pub(crate) fn receive(&mut self, timeout: Duration) -> Incoming {
        self.stream.set_read_timeout(Some(timeout)).expect("set read timeout");
        let mut first = [0_u8; 1];
        match self.stream.read(&mut first) {
            Ok(0) => return Incoming::Closed,
            Ok(_) => {}
            Err(error) if is_timeout(&error) => return Incoming::Silent,
            Err(error) if is_reset(&error) => return Incoming::Closed,
            Err(error) => panic!("read from herald: {error}"),
        }
        self.stream.set_read_timeout(Some(STEP_TIMEOUT)).expect("set read timeout");
        let mut length = 0_usize;
        for index in 0..4 {
            let mut byte = [0_u8; 1];
            if self.stream.read_exact(&mut byte).is_err() {
                return Incoming::Closed;
            }
            length |= usize::from(byte[0] & 0x7F) << (7 * index);
            if byte[0] & 0x80 == 0 {
                let mut body = vec![0_u8; length];
                if self.stream.read_exact(&mut body).is_err() {
                    return Incoming::Closed;
                }
                return Incoming::Packet(Packet { first_byte: first[0], body });
            }
        }
        panic!("herald sent a remaining length longer than 4 bytes");
    }

    /// Reads the next packet; panics if the connection closes or stays silent for [`STEP_TIMEOUT`].
    pub(crate) fn expect_packet(&mut self) -> Packet {
        match self.receive(STEP_TIMEOUT) {
            Incoming::Packet(packet) => packet,
            other => panic!("expected a packet from herald, got {other:?}"),
        }
    }

    /// Reads until the broker closes the connection, at most [`STEP_TIMEOUT`]; returns the
    /// packets that came before the close.
    pub(crate) fn expect_closed(&mut self) -> Vec<Packet> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut packets = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "herald kept the connection open; it sent {packets:?}");
            match self.receive(left) {
                Incoming::Packet(packet) => packets.push(packet),
                Incoming::Closed => return packets,
                Incoming::Silent => {}
            }
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_reset(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
}

/// Asserts that the broker still routes messages: a v5 subscriber gets a QoS 1 publication.
pub(crate) fn assert_still_serving(broker: &impl Endpoint) {
    let mut probe = subscriber(broker, Version::V5).topic("probe/alive").qos(1).start();
    publisher(broker, Version::V311, "probe/alive").qos(1).message("still serving").run();
    assert_eq!(probe.expect_messages(1), [Message::new("probe/alive", "still serving", 1, false)]);
}

/// Polls `done` every 200 ms until it gives a value; fails after `limit`
/// with `what`'s account of the state then.
pub(crate) fn eventually<T>(
    limit: Duration,
    mut done: impl FnMut() -> Option<T>,
    what: impl FnOnce() -> String,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_parses_with_and_without_colour() {
        let plain = "2025-01-01T00:00:00Z  INFO herald: listening mqtt=127.0.0.1:41234 data=/tmp/x";
        assert_eq!(parse_listening_line(plain), Some("127.0.0.1:41234".parse().unwrap()));
        let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mherald\u{1b}[0m: listening \
                        \u{1b}[3mmqtt\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:5 \u{1b}[3mdata\u{1b}[0m=/x";
        assert_eq!(parse_listening_line(&strip_ansi(coloured)), Some("127.0.0.1:5".parse().unwrap()));
        assert_eq!(parse_listening_line("starting mqtt=127.0.0.1:1"), None);
        let both = "INFO herald: listening mqtt=127.0.0.1:5 websocket=127.0.0.1:6 data=/x";
        assert_eq!(parse_listening_line(both), Some("127.0.0.1:5".parse().unwrap()));
        assert_eq!(listening_field(both, "websocket"), Some("127.0.0.1:6".parse().unwrap()));
        assert_eq!(listening_field(plain, "websocket"), None);
    }
}
