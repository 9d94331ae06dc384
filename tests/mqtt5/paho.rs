//! Real MQTT 5 clients: paho-mqtt (Debian's python3-paho-mqtt 1.6.1) driven through
//! `py/clients.py`, one process per test hosting every paho client the test needs.
//!
//! The test sends one command per step and waits for its reply, so the order of steps across
//! clients and endpoints is the test's; messages and server disconnections arrive as records in
//! between and queue per client.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Debian's interpreter, which has python3-paho-mqtt; a `python3` earlier on `PATH` may not.
const PYTHON: &str = "/usr/bin/python3";

/// Upper bound for a reply or a message; the script bounds each of its own steps by less.
const STEP_TIMEOUT: Duration = Duration::from_secs(12);

/// One line printed by `clients.py`: `CLIENT EVENT key=value ...`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The client that printed it.
    pub(crate) client: String,
    /// What happened: `connack`, `received`, `closed`, ...
    pub(crate) event: String,
    fields: BTreeMap<String, String>,
}

impl Record {
    fn parse(line: &str) -> Record {
        let mut words = line.split(' ');
        let client = words.next().unwrap_or_default().to_owned();
        let event = words.next().unwrap_or_default().to_owned();
        let fields = words
            .filter(|word| !word.is_empty())
            .map(|word| {
                let (key, value) = word.split_once('=').unwrap_or_else(|| panic!("bad record {line:?}"));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        Record { client, event, fields }
    }

    /// Returns field `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// Returns field `key`; panics if absent.
    pub(crate) fn field(&self, key: &str) -> &str {
        self.get(key).unwrap_or_else(|| panic!("{self:?} has no field {key:?}"))
    }

    /// Returns numeric field `key`; panics if absent or not a number.
    pub(crate) fn number(&self, key: &str) -> u64 {
        self.field(key).parse().unwrap_or_else(|_| panic!("{self:?}: field {key:?} is not a number"))
    }

    /// Returns the payload of a `received` record.
    pub(crate) fn payload(&self) -> &str {
        self.field("payload")
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.client, self.event)?;
        for (key, value) in &self.fields {
            write!(formatter, " {key}={value}")?;
        }
        Ok(())
    }
}

/// Returns the payloads of `records`, in order.
pub(crate) fn payloads(records: &[Record]) -> Vec<&str> {
    records.iter().map(Record::payload).collect()
}

/// The lines a child printed, for failure reports.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line);
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            writeln!(formatter, "    {line}")?;
        }
        Ok(())
    }
}

/// Forwards each line of `source` to `transcript` and, when given, to `sender`, until it closes.
fn drain(source: impl Read + Send + 'static, transcript: Transcript, sender: Option<mpsc::Sender<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            transcript.push(line.clone());
            if let Some(sender) = &sender {
                let _ = sender.send(line);
            }
        }
    });
}

/// The `clients.py` process and the records it printed that no step consumed yet.
pub(crate) struct Clients {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// `received` and `closed` records, per client, in arrival order.
    queued: HashMap<String, VecDeque<Record>>,
    /// Commands sent, then everything the script printed: shown when a test fails.
    transcript: Transcript,
}

impl Clients {
    /// Starts `clients.py` with no clients yet.
    pub(crate) fn start() -> Clients {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mqtt5/py/clients.py");
        let mut child = Command::new(PYTHON)
            .args(["-u", "-B"])
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /usr/bin/python3 (Debian python3-paho-mqtt)");
        let transcript = Transcript::default();
        let (sender, lines) = mpsc::channel();
        drain(child.stdout.take().expect("piped stdout"), transcript.clone(), Some(sender));
        drain(child.stderr.take().expect("piped stderr"), transcript.clone(), None);
        let stdin = child.stdin.take();
        Clients { child, stdin, lines, queued: HashMap::new(), transcript }
    }

    /// Sends `client verb arguments...` and returns its reply record (event `reply`).
    fn command(&mut self, client: &str, verb: &str, arguments: &[&str], reply: &str) -> Record {
        let line = [client, verb].iter().chain(arguments).copied().collect::<Vec<_>>().join(" ");
        self.transcript.push(format!("> {line}"));
        let stdin = self.stdin.as_mut().expect("clients.py stdin is open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to clients.py");
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let record = self.next_record(deadline).unwrap_or_else(|| {
                panic!("no {reply:?} for `{line}` within {STEP_TIMEOUT:?}; clients.py:\n{}", self.transcript)
            });
            if record.client == client && record.event == reply {
                return record;
            }
            self.queue(record);
        }
    }

    /// Returns the next record printed before `deadline`; panics on an `error` record.
    fn next_record(&mut self, deadline: Instant) -> Option<Record> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                let record = Record::parse(&line);
                assert!(record.event != "error", "clients.py failed: {record:?}\n{}", self.transcript);
                Some(record)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // The script exited; give the stderr reader a moment to finish the transcript.
                thread::sleep(Duration::from_millis(50));
                panic!("clients.py exited; transcript:\n{}", self.transcript)
            }
        }
    }

    fn queue(&mut self, record: Record) {
        self.queued.entry(record.client.clone()).or_default().push_back(record);
    }

    /// Connects `client` to `endpoint` with `arguments` (`clean=0`, `session_expiry_interval=60`,
    /// ...) and returns its CONNACK record. A client connected before is replaced.
    pub(crate) fn connect(&mut self, client: &str, endpoint: SocketAddr, arguments: &[&str]) -> Record {
        let host = format!("host={}", endpoint.ip());
        let port = format!("port={}", endpoint.port());
        let arguments: Vec<&str> =
            [host.as_str(), port.as_str()].into_iter().chain(arguments.iter().copied()).collect();
        self.command(client, "connect", &arguments, "connack")
    }

    /// Subscribes `client` to `filter` with `arguments` (`qos=1`, `no_local=1`,
    /// `subscription_identifier=3`, ...) and returns the SUBACK reason code.
    pub(crate) fn subscribe(&mut self, client: &str, filter: &str, arguments: &[&str]) -> u8 {
        let filter = format!("filter={filter}");
        let arguments: Vec<&str> = [filter.as_str()].into_iter().chain(arguments.iter().copied()).collect();
        let reply = self.command(client, "subscribe", &arguments, "suback");
        reply.field("codes").parse().unwrap_or_else(|_| panic!("one SUBACK code expected: {reply:?}"))
    }

    /// Publishes `payload` (no spaces) to `topic` with `arguments` (`qos=1`, `retain=1`,
    /// `message_expiry_interval=5`, ...) and waits until the publication completed.
    pub(crate) fn publish(&mut self, client: &str, topic: &str, payload: &str, arguments: &[&str]) {
        let topic = format!("topic={topic}");
        let payload = format!("payload={payload}");
        let arguments: Vec<&str> =
            [topic.as_str(), payload.as_str()].into_iter().chain(arguments.iter().copied()).collect();
        self.command(client, "publish", &arguments, "published");
    }

    /// Sends DISCONNECT with `arguments` (`reason=4`, `session_expiry_interval=0`, ...).
    pub(crate) fn disconnect(&mut self, client: &str, arguments: &[&str]) {
        self.command(client, "disconnect", arguments, "disconnected");
    }

    /// Closes `client`'s socket without a DISCONNECT.
    pub(crate) fn drop_connection(&mut self, client: &str) {
        self.command(client, "drop", &[], "dropped");
    }

    /// Waits for `client`'s next record of `event` (`received`, `closed`) until `deadline`;
    /// records of other events stay queued.
    fn next_event(&mut self, client: &str, event: &str, deadline: Instant) -> Option<Record> {
        loop {
            let queue = self.queued.entry(client.to_owned()).or_default();
            if let Some(index) = queue.iter().position(|record| record.event == event) {
                return queue.remove(index);
            }
            let record = self.next_record(deadline)?;
            self.queue(record);
        }
    }

    /// Waits for `count` messages to `client` and returns them in arrival order.
    pub(crate) fn expect_messages(&mut self, client: &str, count: usize) -> Vec<Record> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        (0..count)
            .map(|n| {
                self.next_event(client, "received", deadline).unwrap_or_else(|| {
                    panic!("{client}: got {n} of {count} messages in {STEP_TIMEOUT:?}\n{}", self.transcript)
                })
            })
            .collect()
    }

    /// Waits for `client`'s next message and returns it.
    pub(crate) fn expect_message(&mut self, client: &str) -> Record {
        self.expect_messages(client, 1).remove(0)
    }

    /// Waits for the server to end `client`'s connection and returns the `closed` record.
    pub(crate) fn expect_closed(&mut self, client: &str) -> Record {
        let deadline = Instant::now() + STEP_TIMEOUT;
        self.next_event(client, "closed", deadline).unwrap_or_else(|| {
            panic!("{client}: still connected after {STEP_TIMEOUT:?}\n{}", self.transcript)
        })
    }

    /// Asserts that no message reaches `client` within `window`.
    pub(crate) fn expect_silence(&mut self, client: &str, window: Duration) {
        if let Some(record) = self.next_event(client, "received", Instant::now() + window) {
            panic!("{client}: expected no message within {window:?}, got {record:?}\n{}", self.transcript);
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        // End of input ends the script; kill it if it lingers.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- clients.py ----\n{}", self.transcript);
        }
    }
}
