//! The fixture: Herald as real processes on loopback, in either topology.
//!
//! - standalone: one `herald standalone`; both endpoints are its MQTT listener.
//! - cluster: one `herald router` and two `herald gateway`s (127.0.0.2 and 127.0.0.3) joined over
//!   loopback gRPC; the endpoints are the two gateways, so a test that puts its publisher on the
//!   first and its subscriber on the second crosses the router.
//!
//! Every wait is bounded, every process is killed on drop, and a failing test prints every
//! process's output.

use herald_testkit::process::Supervised;
use std::fmt;
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::Duration;

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
        let data = data_directory();
        let mut command = herald();
        command.args(["standalone", "--mqtt", "127.0.0.1:0", "--data"]).arg(data.path());
        for (key, value) in limits {
            command.env(format!("HERALD_LIMITS_{}", key.to_ascii_uppercase()), value);
        }
        let broker = Supervised::start("standalone", command).expect("start herald standalone");
        let address = listening(&broker, "mqtt");
        Topology { kind: Kind::Standalone, processes: vec![broker], endpoints: [address; 2], _data: data }
    }

    /// Starts a router and two gateways with the default limits: `herald router` and
    /// `herald gateway` take no `[limits]` settings yet.
    pub(crate) fn cluster() -> Topology {
        let data = data_directory();
        let mut command = herald();
        command.args(["router", "--grpc", "127.0.0.1:0", "--data"]).arg(data.path());
        let router = Supervised::start("router", command).expect("start herald router");
        let grpc = listening(&router, "grpc");
        let mut processes = vec![router];
        let mut endpoints = Vec::new();
        for node in 1..=2_u8 {
            let mut command = herald();
            let listen = format!("127.0.0.{}:0", node + 1);
            let router_url = format!("http://{grpc}");
            command.args(["gateway", "--router", &router_url, "--mqtt", &listen, "--node-id"]);
            command.arg(node.to_string());
            let gateway =
                Supervised::start(&format!("gateway-{node}"), command).expect("start herald gateway");
            endpoints.push(listening(&gateway, "mqtt"));
            processes.push(gateway);
        }
        let endpoints = [endpoints[0], endpoints[1]];
        Topology { kind: Kind::Cluster, processes, endpoints, _data: data }
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

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env("NO_COLOR", "1").env("RUST_LOG", "info");
    command
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
