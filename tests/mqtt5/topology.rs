//! The fixture: Herald as real processes on loopback, in either topology.
//!
//! - standalone: one `herald standalone`; both endpoints are its MQTT listener.
//! - cluster: one `herald router` and two `herald gateway`s (127.0.0.2 and 127.0.0.3) joined over
//!   loopback gRPC; the endpoints are the two gateways, so a test that puts its publisher on the
//!   first and its subscriber on the second crosses the router.
//!
//! Every wait is bounded, every process is killed on drop, and a failing test prints every
//! process's output.

use herald_gateway::scram::{self, ScramSecret};
use herald_testkit::process::Supervised;
use std::fmt;
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::Duration;

/// A configured user with a plain password (name, password), in app `item14`.
pub(crate) const PLAIN_USER: (&str, &str) = ("alice", "alice-password");
/// A configured user with a stored SCRAM secret (name, password), in app `item14`.
pub(crate) const SCRAM_USER: (&str, &str) = ("carol", "carol-password");

/// Upper bound for a process to start listening, or to stop once told.
const STARTUP: Duration = Duration::from_secs(15);

/// Which processes serve the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One `herald standalone`.
    Standalone,
    /// A router and two gateways.
    Cluster,
}

/// A running Herald deployment with two MQTT endpoints.
pub(crate) struct Topology {
    kind: Kind,
    /// Standalone: the broker. Cluster: the router, then the gateways in endpoint order.
    processes: Vec<Supervised>,
    endpoints: [SocketAddr; 2],
    /// The MQTT-over-WebSocket listeners, in endpoint order.
    websockets: [SocketAddr; 2],
    _data: tempfile::TempDir,
}

impl Topology {
    /// Starts a standalone broker with the default limits.
    pub(crate) fn standalone() -> Topology {
        Topology::standalone_with(&[])
    }

    /// Starts a standalone broker with `limits` as `[limits]` settings (`("max_packet_size",
    /// "1024")` becomes `HERALD_LIMITS_MAX_PACKET_SIZE=1024`).
    pub(crate) fn standalone_with(limits: &[(&str, &str)]) -> Topology {
        Topology::standalone_env(&limit_variables(limits))
    }

    /// Starts a standalone broker with the `HERALD_*` variables `env`.
    pub(crate) fn standalone_env(env: &[(String, String)]) -> Topology {
        let data = data_directory();
        let mut command = herald(env);
        command.args(["standalone", "--mqtt", "127.0.0.1:0", "--websocket", "127.0.0.1:0", "--data"]);
        command.arg(data.path());
        let broker = Supervised::start("standalone", command).expect("start herald standalone");
        let address = listening(&broker, "mqtt");
        let websocket = listening(&broker, "websocket");
        Topology {
            kind: Kind::Standalone,
            processes: vec![broker],
            endpoints: [address; 2],
            websockets: [websocket; 2],
            _data: data,
        }
    }

    /// Starts a router and two gateways with the default limits.
    pub(crate) fn cluster() -> Topology {
        Topology::cluster_with(&[])
    }

    /// Starts a router and two gateways, each with `limits` as `[limits]` settings.
    pub(crate) fn cluster_with(limits: &[(&str, &str)]) -> Topology {
        Topology::cluster_env(&limit_variables(limits))
    }

    /// Starts a router and two gateways with the `HERALD_*` variables `env`.
    pub(crate) fn cluster_env(env: &[(String, String)]) -> Topology {
        let data = data_directory();
        let mut command = herald(env);
        command.args(["router", "--grpc", "127.0.0.1:0", "--data"]).arg(data.path());
        let router = Supervised::start("router", command).expect("start herald router");
        let grpc = listening(&router, "grpc");
        let mut processes = vec![router];
        let (mut endpoints, mut websockets) = (Vec::new(), Vec::new());
        for node in 1..=2_u8 {
            let mut command = herald(env);
            let listen = format!("127.0.0.{}:0", node + 1);
            let router_url = format!("http://{grpc}");
            command.args(["gateway", "--router", &router_url, "--mqtt", &listen, "--websocket", &listen]);
            command.args(["--node-id", &node.to_string()]);
            let gateway =
                Supervised::start(&format!("gateway-{node}"), command).expect("start herald gateway");
            endpoints.push(listening(&gateway, "mqtt"));
            websockets.push(listening(&gateway, "websocket"));
            processes.push(gateway);
        }
        let endpoints = [endpoints[0], endpoints[1]];
        let websockets = [websockets[0], websockets[1]];
        Topology { kind: Kind::Cluster, processes, endpoints, websockets, _data: data }
    }

    /// Returns the first MQTT endpoint (the first gateway of a cluster).
    pub(crate) fn first(&self) -> SocketAddr {
        self.endpoints[0]
    }

    /// Returns the second MQTT endpoint: the other gateway of a cluster, the same broker
    /// standalone.
    pub(crate) fn second(&self) -> SocketAddr {
        self.endpoints[1]
    }

    /// Returns the MQTT-over-WebSocket listener of endpoint `index` (0 or 1): path `/mqtt`,
    /// subprotocol `mqtt`.
    pub(crate) fn websocket(&self, index: usize) -> SocketAddr {
        self.websockets[index]
    }

    /// Sends SIGTERM to the process serving [`Topology::first`] and waits until it reports
    /// that it stopped.
    pub(crate) fn shut_down_first(&self) {
        let process = match self.kind {
            Kind::Standalone => &self.processes[0],
            Kind::Cluster => &self.processes[1],
        };
        process.signal("TERM");
        process.wait_for_line("stopped", STARTUP);
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?} {} {}", self.kind, self.endpoints[0], self.endpoints[1])
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if thread::panicking() {
            let names: &[&str] = match self.kind {
                Kind::Standalone => &["standalone"],
                Kind::Cluster => &["router", "gateway-1", "gateway-2"],
            };
            for (name, process) in names.iter().zip(&self.processes) {
                eprintln!("---- {name} ----\n{}", process.output().join("\n"));
            }
        }
    }
}

fn data_directory() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("herald-mqtt5-").tempdir().expect("create a data directory")
}

/// `[limits]` settings as `HERALD_LIMITS_*` variables.
fn limit_variables(limits: &[(&str, &str)]) -> Vec<(String, String)> {
    limits
        .iter()
        .map(|(key, value)| (format!("HERALD_LIMITS_{}", key.to_ascii_uppercase()), value.to_string()))
        .collect()
}

/// A `herald` command with the variables `env` and the test users configured (anonymous
/// clients stay allowed).
fn herald(env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env("NO_COLOR", "1").env("RUST_LOG", "info").env("HERALD_AUTH_USERS", users());
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// `[auth.users]` as an inline TOML table.
fn users() -> String {
    let secret = ScramSecret::generate(SCRAM_USER.1.as_bytes(), scram::DEFAULT_ITERATIONS).encode();
    let (plain, hashed) = (PLAIN_USER, SCRAM_USER.0);
    format!(
        "{{ {} = {{ password = \"{}\", app = \"item14\" }}, {hashed} = {{ scram = \"{secret}\", app = \"item14\" }} }}",
        plain.0, plain.1
    )
}

/// Waits for `process`'s `listening` line and returns the address in its field `name`.
fn listening(process: &Supervised, name: &str) -> SocketAddr {
    let line = process.wait_for_line("listening", STARTUP);
    let value = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"));
    value.parse().unwrap_or_else(|_| panic!("bad address in {line:?}"))
}
