//! A cluster of processes for tests: one router, gateways on their own
//! loopback addresses, every process stopped on drop.

use herald_testkit::process::Supervised;
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::time::Duration;

const STARTUP: Duration = Duration::from_secs(15);

/// A running router and its gateways.
pub(crate) struct Cluster {
    router: Supervised,
    router_addr: SocketAddr,
    cluster_id: String,
    gateways: Vec<Option<Gateway>>,
    _data: tempfile::TempDir,
}

/// A running gateway.
pub(crate) struct Gateway {
    process: Supervised,
    mqtt: SocketAddr,
    websocket: Option<SocketAddr>,
}

pub(crate) fn field(line: &str, name: &str) -> String {
    let start =
        line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name}= in {line:?}")) + name.len() + 1;
    line[start..].split_whitespace().next().unwrap_or_default().to_owned()
}

/// How long routers in tests keep an unlinked gateway's sessions.
pub(crate) const LEASE: Duration = Duration::from_secs(2);

/// A `herald` command with plain, info-level logs (and, for routers, a
/// short gateway lease).
pub(crate) fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.env("NO_COLOR", "1").env("RUST_LOG", "info");
    command.env("HERALD_LIMITS_GATEWAY_LEASE_SECS", LEASE.as_secs().to_string());
    command
}

impl Cluster {
    /// Starts a router and `gateways` gateways (on 127.0.0.2, .3, …).
    pub(crate) fn start(gateways: usize) -> Cluster {
        Cluster::start_with(gateways, &[])
    }

    /// Starts a router with extra `HERALD_*` settings, and `gateways` gateways.
    pub(crate) fn start_with(gateways: usize, environment: &[(&str, &str)]) -> Cluster {
        Cluster::start_wrapped(gateways, environment, &[])
    }

    /// Like [`Cluster::start_with`], the router run by `wrapper` (a command
    /// and its arguments before the router's, e.g. `prlimit --fsize=N`).
    pub(crate) fn start_wrapped(gateways: usize, environment: &[(&str, &str)], wrapper: &[&str]) -> Cluster {
        let data = tempfile::tempdir().expect("tempdir");
        let herald = herald();
        let mut command = match wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(herald.get_program());
                for (key, value) in herald.get_envs() {
                    if let Some(value) = value {
                        command.env(key, value);
                    }
                }
                command
            }
            None => herald,
        };
        command.args(["router", "--grpc", "127.0.0.1:0", "--data"]).arg(data.path().join("router"));
        command.envs(environment.iter().copied());
        let router = Supervised::start("router", command).expect("start router");
        let line = router.wait_for_line("listening", STARTUP);
        let router_addr = field(&line, "grpc").parse().expect("grpc address");
        let cluster_id = field(&line, "cluster");
        let mut cluster = Cluster { router, router_addr, cluster_id, gateways: Vec::new(), _data: data };
        for _ in 0..gateways {
            cluster.add_gateway();
        }
        cluster
    }

    /// Returns the router's gRPC address (`host:port`, for `herald ctl`).
    pub(crate) fn router_address(&self) -> String {
        self.router_addr.to_string()
    }

    /// Returns the router's gRPC URL.
    pub(crate) fn router_url(&self) -> String {
        format!("http://{}", self.router_addr)
    }

    /// Returns the cluster id the router announced.
    pub(crate) fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Starts one more gateway; returns its index.
    pub(crate) fn add_gateway(&mut self) -> usize {
        self.start_gateway(false, &[])
    }

    /// Starts one more gateway with extra command-line `arguments`; returns its index.
    pub(crate) fn add_gateway_with(&mut self, arguments: &[&str]) -> usize {
        self.start_gateway(false, arguments)
    }

    /// Returns gateway `index`'s process id.
    pub(crate) fn gateway_pid(&self, index: usize) -> u32 {
        self.gateways[index].as_ref().expect("gateway is running").process.pid()
    }

    /// Waits up to `timeout` for gateway `index` to exit; returns its status.
    pub(crate) fn wait_gateway(&mut self, index: usize, timeout: Duration) -> Option<ExitStatus> {
        self.gateways[index].as_mut().expect("gateway was started").process.wait_timeout(timeout)
    }

    /// Returns gateway `index`'s output so far.
    pub(crate) fn gateway_output(&self, index: usize) -> String {
        self.gateways[index].as_ref().expect("gateway is running").process.output().join("\n")
    }

    /// Starts one more gateway that also serves MQTT over WebSocket, on the
    /// same address; returns its index.
    pub(crate) fn add_websocket_gateway(&mut self) -> usize {
        self.start_gateway(true, &[])
    }

    fn start_gateway(&mut self, websocket: bool, arguments: &[&str]) -> usize {
        let index = self.gateways.len();
        let node = (index + 1).to_string();
        let listen = format!("127.0.0.{}:0", index + 2);
        let mut command = herald();
        command.args(["gateway", "--router", &self.router_url(), "--mqtt", &listen, "--node-id", &node]);
        command.args(["--cluster-id", &self.cluster_id]);
        if websocket {
            command.args(["--websocket", &listen]);
        }
        command.args(arguments);
        let process = Supervised::start(&format!("gateway-{node}"), command).expect("start gateway");
        let line = process.wait_for_line("listening", STARTUP);
        let mqtt = field(&line, "mqtt").parse().expect("mqtt address");
        let websocket = websocket.then(|| field(&line, "websocket").parse().expect("websocket address"));
        self.gateways.push(Some(Gateway { process, mqtt, websocket }));
        index
    }

    /// Returns gateway `index`'s MQTT address.
    pub(crate) fn gateway(&self, index: usize) -> SocketAddr {
        self.gateways[index].as_ref().expect("gateway is running").mqtt
    }

    /// Returns gateway `index`'s MQTT-over-WebSocket address; panics unless
    /// it was started by [`Cluster::add_websocket_gateway`].
    pub(crate) fn gateway_websocket(&self, index: usize) -> SocketAddr {
        let gateway = self.gateways[index].as_ref().expect("gateway is running");
        gateway.websocket.expect("gateway serves no websocket")
    }

    /// Kills gateway `index` with SIGKILL.
    pub(crate) fn kill_gateway(&mut self, index: usize) {
        let mut gateway = self.gateways[index].take().expect("gateway is running");
        gateway.process.signal("KILL");
        gateway.process.wait_timeout(Duration::from_secs(5));
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to gateway `index`.
    pub(crate) fn signal_gateway(&self, index: usize, signal: &str) {
        self.gateways[index].as_ref().expect("gateway is running").process.signal(signal);
    }

    /// Stops the router with SIGKILL.
    pub(crate) fn kill_router(&mut self) {
        self.router.signal("KILL");
        self.router.wait_timeout(Duration::from_secs(5));
    }

    /// Starts the router again on its data directory and gRPC address (after
    /// [`Cluster::kill_router`]); gateways must be started anew.
    pub(crate) fn restart_router(&mut self) {
        let mut command = herald();
        command.args(["router", "--grpc", &self.router_addr.to_string(), "--data"]);
        command.arg(self._data.path().join("router"));
        self.router = Supervised::start("router", command).expect("restart router");
        let line = self.router.wait_for_line("listening", STARTUP);
        assert_eq!(field(&line, "cluster"), self.cluster_id, "the data directory keeps the cluster id");
    }

    /// Stops the router with SIGTERM; returns whether it exited in time.
    pub(crate) fn terminate_router(&mut self, timeout: Duration) -> bool {
        self.router.signal("TERM");
        self.router.wait_timeout(timeout).is_some()
    }

    /// Stops gateway `index` with SIGTERM; returns whether it exited in time.
    pub(crate) fn terminate_gateway(&mut self, index: usize, timeout: Duration) -> bool {
        self.signal_gateway(index, "TERM");
        self.wait_gateway(index, timeout).is_some()
    }

    /// Waits up to `timeout` for the router to exit; returns its status.
    pub(crate) fn wait_router(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.router.wait_timeout(timeout)
    }

    /// Returns the router's process id.
    pub(crate) fn router_pid(&self) -> u32 {
        self.router.pid()
    }

    /// Returns the router's output so far.
    pub(crate) fn router_output(&self) -> Vec<String> {
        self.router.output()
    }
}

/// Runs `herald` with `arguments` to completion (bounded) and returns its
/// status and output.
pub(crate) fn run_herald(arguments: &[&str]) -> (ExitStatus, String) {
    let mut command = herald();
    command.args(arguments);
    let mut process = Supervised::start("herald", command).expect("start herald");
    let status = process.wait_timeout(Duration::from_secs(15)).expect("herald exits");
    (status, process.output().join("\n"))
}

/// Leaves, through `gateway`, what a router must keep: a persistent
/// session ("keeper", on `kept/#`) gone offline, a message queued for it
/// and a retained message.
pub(crate) fn leave_state_to_keep(gateway: &SocketAddr) {
    use crate::support::{Version, publisher, subscriber};
    subscriber(gateway, Version::V5)
        .client_id("keeper")
        .persistent()
        .topic("kept/#")
        .qos(1)
        .exit_after_subscribe()
        .start();
    publisher(gateway, Version::V5, "kept/status").qos(1).retain().message("ready").run();
    publisher(gateway, Version::V311, "kept/1").qos(1).message("one").run();
}

/// Checks, through `gateway`, that what [`leave_state_to_keep`] left is
/// there: the session resumes with both messages queued, and the retained
/// message reaches a new subscriber.
pub(crate) fn expect_state_kept(gateway: &SocketAddr) {
    use crate::support::{Message, Version, subscriber};
    let mut back =
        subscriber(gateway, Version::V5).client_id("keeper").persistent().topic("kept/#").qos(1).start();
    let got = back.expect_messages(2);
    assert!(got.contains(&Message::new("kept/1", "one", 1, false)), "queued message kept: {got:?}");
    assert!(got.contains(&Message::new("kept/status", "ready", 1, false)), "queued retained kept: {got:?}");
    let mut fresh = subscriber(gateway, Version::V5).topic("kept/status").qos(1).start();
    assert_eq!(fresh.expect_messages(1), [Message::new("kept/status", "ready", 1, true)]);
}
