//! A replicated router cluster as processes for tests: three (or more)
//! routers joined by Raft on 127.0.0.1x, gateways that know all of them.

use crate::cluster::herald;
use herald_testkit::process::Supervised;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

const STARTUP: Duration = Duration::from_secs(20);
pub(crate) const CLUSTER_ID: &str = "raft-test";

/// Running routers and gateways; every process is stopped on drop.
pub(crate) struct RaftCluster {
    environment: Vec<(String, String)>,
    routers: Vec<Option<Supervised>>,
    addresses: Vec<SocketAddr>,
    gateways: Vec<Option<(Supervised, SocketAddr)>>,
    data: tempfile::TempDir,
}

/// A free port on `host` (bound and released: the router binds it next).
fn free_address(host: &str) -> SocketAddr {
    TcpListener::bind((host, 0)).and_then(|l| l.local_addr()).expect("a free port")
}

impl RaftCluster {
    /// Starts `routers` voters and waits until each has joined the cluster.
    pub(crate) fn start(routers: usize) -> RaftCluster {
        RaftCluster::start_with(routers, &[])
    }

    /// Starts `routers` voters with extra `HERALD_*` settings.
    pub(crate) fn start_with(routers: usize, environment: &[(&str, &str)]) -> RaftCluster {
        let data = tempfile::tempdir().expect("tempdir");
        let addresses: Vec<SocketAddr> =
            (0..routers).map(|i| free_address(&format!("127.0.0.{}", 11 + i))).collect();
        let environment = environment.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut cluster =
            RaftCluster { environment, routers: Vec::new(), addresses, gateways: Vec::new(), data };
        for node in 1..=routers {
            let router = cluster.spawn_router(node);
            cluster.routers.push(Some(router));
        }
        for router in cluster.routers.iter().flatten() {
            router.wait_for_line("listening", STARTUP);
        }
        cluster
    }

    fn spawn_router(&self, node: usize) -> Supervised {
        let peers: Vec<String> =
            self.addresses.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let mut command = herald();
        command.args([
            "router",
            "--node-id",
            &node.to_string(),
            "--grpc",
            &self.addresses[node - 1].to_string(),
        ]);
        command.args(["--peers", &peers.join(","), "--cluster-id", CLUSTER_ID, "--data"]);
        command.arg(self.data.path().join(format!("router-{node}")));
        command.envs(self.environment.iter().map(|(k, v)| (k, v)));
        Supervised::start(&format!("router-{node}"), command).expect("start router")
    }

    /// The routers' addresses, comma-separated, for `herald ctl`.
    pub(crate) fn router_addresses(&self) -> String {
        self.addresses.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",")
    }

    /// Starts a gateway that knows every router; returns its MQTT address.
    pub(crate) fn start_gateway(&mut self) -> SocketAddr {
        let index = self.gateways.len();
        let urls: Vec<String> = self.addresses.iter().map(|a| format!("http://{a}")).collect();
        let listen = format!("127.0.0.{}:0", 2 + index);
        let mut command = herald();
        command.args(["gateway", "--router", &urls.join(","), "--mqtt", &listen]);
        command.args(["--node-id", &(index + 1).to_string(), "--cluster-id", CLUSTER_ID]);
        let process = Supervised::start(&format!("gateway-{}", index + 1), command).expect("start gateway");
        let line = process.wait_for_line("listening", STARTUP);
        let mqtt = crate::cluster::field(&line, "mqtt").parse().expect("mqtt address");
        self.gateways.push(Some((process, mqtt)));
        mqtt
    }

    /// Returns gateway `index`'s MQTT address.
    pub(crate) fn gateway(&self, index: usize) -> SocketAddr {
        self.gateways[index].as_ref().expect("running").1
    }

    /// Returns `herald ctl cluster status` for every router.
    pub(crate) fn status(&self) -> String {
        let output = herald()
            .args(["ctl", "cluster", "status", "--routers", &self.router_addresses()])
            .output()
            .expect("run herald ctl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the routers agree on a leader among the running ones;
    /// returns its node id.
    pub(crate) fn leader(&self) -> usize {
        let deadline = std::time::Instant::now() + STARTUP;
        loop {
            let status = self.status();
            let leaders: Vec<usize> = status
                .lines()
                .filter(|line| line.split_whitespace().nth(1) == Some("Leader"))
                .filter_map(|line| line.split_whitespace().next()?.parse().ok())
                .collect();
            if let [leader] = leaders[..]
                && self.routers[leader - 1].is_some()
            {
                return leader;
            }
            assert!(std::time::Instant::now() < deadline, "no single leader:\n{status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts one more router, with `--join`, and adds it as a voter with
    /// `herald ctl cluster add`; returns its node id.
    pub(crate) fn add_router(&mut self) -> usize {
        let node = self.routers.len() + 1;
        let address = free_address(&format!("127.0.0.{}", 10 + node));
        self.addresses.push(address);
        let mut command = herald();
        command.args(["router", "--node-id", &node.to_string(), "--grpc", &address.to_string(), "--join"]);
        command
            .args(["--cluster-id", CLUSTER_ID, "--data"])
            .arg(self.data.path().join(format!("router-{node}")));
        command.envs(self.environment.iter().map(|(k, v)| (k, v)));
        let router = Supervised::start(&format!("router-{node}"), command).expect("start router");
        router.wait_for_line("listening", STARTUP);
        self.routers.push(Some(router));
        let out = self.ctl(&["add", "--node", &format!("{node}={address}")]);
        assert!(out.contains(&format!("{node}={address}")), "router {node} is a voter: {out}");
        node
    }

    /// Removes router `node` from the voters with `herald ctl cluster remove`.
    pub(crate) fn remove_router(&mut self, node: usize) -> String {
        self.ctl(&["remove", "--node", &node.to_string()])
    }

    /// Runs `herald ctl cluster COMMAND` against every router; returns its
    /// output, which must report success.
    fn ctl(&self, arguments: &[&str]) -> String {
        let output = herald()
            .args([
                "ctl",
                "cluster",
                arguments[0],
                "--routers",
                &self.router_addresses(),
                "--cluster-id",
                CLUSTER_ID,
            ])
            .args(&arguments[1..])
            .output()
            .expect("run herald ctl");
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "herald ctl cluster {arguments:?}: {text}");
        text
    }

    /// Starts router `node` (1-based) again on its data, after a kill.
    pub(crate) fn restart_router(&mut self, node: usize) {
        let router = self.spawn_router(node);
        router.wait_for_line("listening", STARTUP);
        self.routers[node - 1] = Some(router);
    }

    /// Returns router `node`'s line of `herald ctl cluster status`, split
    /// into columns (node, role, term, leader, last log, applied, snapshot,
    /// retained, sessions, …), if it answered.
    pub(crate) fn status_of(&self, node: usize) -> Option<Vec<String>> {
        self.status()
            .lines()
            .map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|columns| columns.first().map(String::as_str) == Some(&node.to_string()))
    }

    /// Stops router `node` (1-based) with SIGTERM; returns whether it exited within `timeout`,
    /// and its output.
    pub(crate) fn terminate_router(&mut self, node: usize, timeout: Duration) -> (bool, Vec<String>) {
        let mut router = self.routers[node - 1].take().expect("running");
        router.signal("TERM");
        let exited = router.wait_timeout(timeout).is_some_and(|status| status.success());
        (exited, router.output())
    }

    /// Sends `signal` to router `node` (1-based), which keeps running (STOP, CONT).
    pub(crate) fn signal_router(&self, node: usize, signal: &str) {
        self.routers[node - 1].as_ref().expect("running").signal(signal);
    }

    /// The roles and terms of the routers that answer, by node id.
    pub(crate) fn roles(&self) -> Vec<(usize, String, u64)> {
        self.status()
            .lines()
            .filter_map(|line| {
                let columns: Vec<&str> = line.split_whitespace().collect();
                Some((
                    columns.first()?.parse().ok()?,
                    columns.get(1)?.to_string(),
                    columns.get(2)?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// Kills router `node` (1-based) with SIGKILL.
    pub(crate) fn kill_router(&mut self, node: usize) {
        let mut router = self.routers[node - 1].take().expect("running");
        router.signal("KILL");
        router.wait_timeout(Duration::from_secs(5));
    }
}
