//! A replicated router cluster as processes for tests: three (or more)
//! routers joined by Raft on 127.0.0.1x, gateways that know all of them.

use crate::cluster::herald;
pub(crate) use crate::support::eventually;
use crate::support::{Message, Subscriber, Version, publisher};
use herald_testkit::process::Supervised;
use herald_testkit::proxy::{Fault, FaultProxy};
use std::net::{IpAddr, SocketAddr, TcpListener};
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
    /// With [`RaftCluster::start_partitionable`]: a fault proxy in front of
    /// each router's Raft traffic (routers reach each other through them;
    /// gateways and `herald ctl` reach the routers directly).
    proxies: Vec<FaultProxy>,
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
        RaftCluster::assemble(routers, environment, false)
    }

    /// Like [`RaftCluster::start`], with a fault proxy on 127.0.0.2x in
    /// front of each router for the others' Raft traffic, so that
    /// [`RaftCluster::isolate`] can cut one router off from the rest.
    pub(crate) fn start_partitionable(routers: usize) -> RaftCluster {
        RaftCluster::assemble(routers, &[], true)
    }

    /// [`RaftCluster::start_partitionable`] with extra `HERALD_*` settings.
    pub(crate) fn start_partitionable_with(routers: usize, environment: &[(&str, &str)]) -> RaftCluster {
        RaftCluster::assemble(routers, environment, true)
    }

    fn assemble(routers: usize, environment: &[(&str, &str)], proxied: bool) -> RaftCluster {
        let data = tempfile::tempdir().expect("tempdir");
        let addresses: Vec<SocketAddr> =
            (0..routers).map(|i| free_address(&format!("127.0.0.{}", 11 + i))).collect();
        let proxy = |(i, target): (usize, &SocketAddr)| {
            let listen = format!("127.0.0.{}:0", 21 + i).parse().expect("address");
            FaultProxy::start(listen, *target).expect("start a fault proxy")
        };
        let proxies = if proxied { addresses.iter().enumerate().map(proxy).collect() } else { Vec::new() };
        let environment = environment.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut cluster =
            RaftCluster { environment, routers: Vec::new(), addresses, gateways: Vec::new(), data, proxies };
        cluster.spawn_all(routers);
        cluster
    }

    /// Cuts router `node` off from the other routers, both ways: nothing
    /// reaches it through its proxy, and the others' proxies hold what it
    /// sends (its calls leave from its own address). Gateways still reach
    /// every router.
    pub(crate) fn isolate(&self, node: usize) {
        let cut: IpAddr = self.addresses[node - 1].ip();
        for (i, proxy) in self.proxies.iter().enumerate() {
            if i + 1 == node {
                proxy.set(Fault::Blackhole);
            } else {
                proxy.isolate(&[cut]);
            }
        }
    }

    /// Black-holes every connection to router `node` through its proxy:
    /// calls to it hang, while its own calls to the others (its heartbeats
    /// and appends, as leader) still pass.
    pub(crate) fn blackhole_calls_to(&self, node: usize) {
        self.proxies[node - 1].set(Fault::Blackhole);
    }

    /// Heals every partition [`RaftCluster::isolate`] made.
    pub(crate) fn heal(&self) {
        for proxy in &self.proxies {
            proxy.set(Fault::Pass);
            proxy.isolate(&[]);
        }
    }

    fn spawn_all(&mut self, routers: usize) {
        for node in 1..=routers {
            let router = self.spawn_router(node);
            self.routers.push(Some(router));
        }
        for router in self.routers.iter().flatten() {
            router.wait_for_line("listening", STARTUP);
        }
    }

    fn spawn_router(&self, node: usize) -> Supervised {
        let raft_address = |i: usize| self.proxies.get(i).map_or(self.addresses[i], FaultProxy::addr);
        let peers: Vec<String> =
            (0..self.addresses.len()).map(|i| format!("{}={}", i + 1, raft_address(i))).collect();
        let mut command = herald();
        command.args([
            "router",
            "--node-id",
            &node.to_string(),
            "--grpc",
            &self.addresses[node - 1].to_string(),
        ]);
        command.args(["--peers", &peers.join(","), "--cluster-id", CLUSTER_ID, "--data"]);
        command.arg(self.data_dir(node));
        command.envs(self.environment.iter().map(|(k, v)| (k, v)));
        Supervised::start(&format!("router-{node}"), command).expect("start router")
    }

    /// The routers' addresses, comma-separated, for `herald ctl`.
    pub(crate) fn router_addresses(&self) -> String {
        self.addresses.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",")
    }

    /// Starts a gateway that knows every router; returns its MQTT address.
    pub(crate) fn start_gateway(&mut self) -> SocketAddr {
        let every: Vec<usize> = (1..=self.addresses.len()).collect();
        self.start_gateway_with(&every, &[])
    }

    /// Starts a gateway that knows routers `nodes` only, with `extra`
    /// arguments; returns its MQTT address.
    pub(crate) fn start_gateway_with(&mut self, nodes: &[usize], extra: &[&str]) -> SocketAddr {
        let index = self.gateways.len();
        let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", self.addresses[n - 1])).collect();
        let listen = format!("127.0.0.{}:0", 2 + index);
        let mut command = herald();
        command.args(["gateway", "--router", &urls.join(","), "--mqtt", &listen]);
        command.args(["--node-id", &(index + 1).to_string(), "--cluster-id", CLUSTER_ID]);
        command.args(extra);
        let process = Supervised::start(&format!("gateway-{}", index + 1), command).expect("start gateway");
        let line = process.wait_for_line("listening", STARTUP);
        let mqtt = crate::cluster::field(&line, "mqtt").parse().expect("mqtt address");
        self.gateways.push(Some((process, mqtt)));
        mqtt
    }

    /// Returns what gateway `index` (0-based) printed so far.
    pub(crate) fn gateway_output(&self, index: usize) -> String {
        self.gateways[index].as_ref().expect("running").0.output().join("\n")
    }

    /// Returns what router `node` (1-based) printed so far.
    pub(crate) fn router_output(&self, node: usize) -> String {
        self.routers[node - 1].as_ref().expect("running").output().join("\n")
    }

    /// Returns gateway `index`'s MQTT address.
    pub(crate) fn gateway(&self, index: usize) -> SocketAddr {
        self.gateways[index].as_ref().expect("running").1
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to gateway `index` (0-based).
    pub(crate) fn signal_gateway(&self, index: usize, signal: &str) {
        self.gateways[index].as_ref().expect("running").0.signal(signal);
    }

    /// Returns `herald ctl cluster status` for every router.
    pub(crate) fn status(&self) -> String {
        let output = herald()
            .envs(self.environment.iter().map(|(k, v)| (k, v)))
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

    /// Waits until the registry shards (ADR 0033) are spread over the routers
    /// `over`, as each running router's copy of the shard table says in
    /// `herald ctl cluster status`: every running router answers, those of
    /// `over` own their share (64 over their number, give or take two),
    /// the others none, 64 in all, and none waits for its inherited shards
    /// to be restarted. Returns the status.
    pub(crate) fn wait_for_shards_over(&self, over: &[usize]) -> String {
        self.wait_for_shards_over_ignoring(over, &[])
    }

    /// Like [`RaftCluster::wait_for_shards_over`], ignoring what the routers
    /// `ignoring` say (removed from the voters, they keep an old copy).
    pub(crate) fn wait_for_shards_over_ignoring(&self, over: &[usize], ignoring: &[usize]) -> String {
        let deadline = std::time::Instant::now() + STARTUP;
        let share = 64usize.div_ceil(over.len());
        loop {
            let status = self.status();
            let owned: Vec<(usize, usize)> = status
                .lines()
                .filter_map(|line| {
                    let node = line.split_whitespace().next()?.parse().ok()?;
                    let shards = line.split_whitespace().find_map(|w| w.strip_prefix("shards="))?;
                    Some((node, shards.parse().ok()?))
                })
                .filter(|(node, _)| !ignoring.contains(node))
                .collect();
            let running = self.routers.iter().filter(|r| r.is_some()).count() - ignoring.len();
            let fair = |node: usize, shards: usize| {
                if over.contains(&node) { shards + 2 >= share && shards <= share } else { shards == 0 }
            };
            if owned.len() == running
                && owned.iter().map(|(_, shards)| shards).sum::<usize>() == 64
                && owned.iter().all(|(node, shards)| fair(*node, *shards))
                && !status.lines().any(|l| {
                    l.contains("inherited=") && !ignoring.iter().any(|n| l.starts_with(&format!("{n} ")))
                })
            {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the registry shards are not spread over routers {over:?}:\n{status}"
            );
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

    /// Adds router `node` (1-based), running on its address, as a voter
    /// with `herald ctl cluster add`.
    pub(crate) fn add_voter(&self, node: usize) {
        let address = self.addresses[node - 1];
        let out = self.ctl(&["add", "--node", &format!("{node}={address}")]);
        assert!(out.contains(&format!("{node}={address}")), "router {node} is a voter: {out}");
    }

    /// Removes router `node` from the voters with `herald ctl cluster remove`.
    pub(crate) fn remove_router(&mut self, node: usize) -> String {
        self.ctl(&["remove", "--node", &node.to_string()])
    }

    /// Runs `herald ctl cluster COMMAND` against every router; returns its
    /// output, which must report success.
    fn ctl(&self, arguments: &[&str]) -> String {
        let output = herald()
            .envs(self.environment.iter().map(|(k, v)| (k, v)))
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

    /// Router `node`'s (1-based) data directory.
    pub(crate) fn data_dir(&self, node: usize) -> std::path::PathBuf {
        self.data.path().join(format!("router-{node}"))
    }

    /// Starts router `node` (1-based), which must exit with an error rather
    /// than start serving; returns what it printed.
    pub(crate) fn start_router_expecting_refusal(&self, node: usize) -> String {
        let mut router = self.spawn_router(node);
        let status = router.wait_timeout(STARTUP).expect("the router exits");
        let output = router.output().join("\n");
        assert!(!status.success() && !output.contains("listening"), "router {node} started: {output}");
        output
    }

    /// Starts router `node` (1-based) again on its data, after a kill.
    pub(crate) fn restart_router(&mut self, node: usize) {
        let router = self.spawn_router(node);
        router.wait_for_line("listening", STARTUP);
        self.routers[node - 1] = Some(router);
    }

    /// Starts router `node` (1-based) again without waiting for it to serve:
    /// it may wait for a leader. [`RaftCluster::wait_serving`] waits.
    pub(crate) fn restart_router_unwaited(&mut self, node: usize) {
        self.routers[node - 1] = Some(self.spawn_router(node));
    }

    /// Waits up to `timeout` for router `node` (1-based) to exit; `None`: it
    /// still runs.
    pub(crate) fn wait_exit(&mut self, node: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.routers[node - 1].as_mut().expect("running").wait_timeout(timeout)
    }

    /// Waits until router `node` (1-based) serves: it has found a leader.
    pub(crate) fn wait_serving(&self, node: usize) {
        self.routers[node - 1].as_ref().expect("running").wait_for_line("listening", STARTUP);
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

    /// Waits until a router other than `old` leads; returns it.
    pub(crate) fn wait_for_leader_other_than(&self, old: usize) -> usize {
        eventually(
            Duration::from_secs(30),
            || {
                let roles = self.roles();
                roles
                    .iter()
                    .find(|(node, role, _)| *node != old && role == "Leader")
                    .map(|(node, _, _)| *node)
            },
            || format!("no new leader: {:?}", self.roles()),
        )
    }

    /// Waits until `new` is the only leader and `old` follows it.
    pub(crate) fn wait_until_sole_leader(&self, new: usize, old: usize) {
        eventually(
            Duration::from_secs(30),
            || {
                let roles = self.roles();
                let leaders: Vec<usize> =
                    roles.iter().filter(|(_, role, _)| role == "Leader").map(|(n, _, _)| *n).collect();
                let old_follows = roles.iter().any(|(node, role, _)| *node == old && role == "Follower");
                (leaders == [new] && old_follows).then_some(())
            },
            || format!("not one leader: {:?}", self.roles()),
        );
    }

    /// Waits until router `node` follows `leader` and has applied as much.
    pub(crate) fn wait_caught_up(&self, node: usize, leader: usize) {
        eventually(
            Duration::from_secs(30),
            || {
                let applied = self.status_of(leader)?[5].clone();
                let status = self.status_of(node)?;
                (status[1] == "Follower" && status[5] == applied).then_some(())
            },
            || format!("router {node} did not catch up:\n{}", self.status()),
        );
    }

    /// Kills router `node` (1-based) with SIGKILL.
    pub(crate) fn kill_router(&mut self, node: usize) {
        let mut router = self.routers[node - 1].take().expect("running");
        router.signal("KILL");
        router.wait_timeout(Duration::from_secs(5));
    }
}

/// Reads `count` messages from `subscriber`, where a publish whose PUBACK a
/// fault cut off may be there twice (at least once): returns them with
/// repeats removed.
pub(crate) fn at_least_once(subscriber: &mut Subscriber, count: usize) -> Vec<Message> {
    let mut got = subscriber.expect_messages(count);
    got.dedup();
    while got.len() < count {
        got.extend(subscriber.expect_messages(1));
        got.dedup();
    }
    got
}

/// Publishes `{prefix}/{n}` with the payload `m-{n}` at QoS 1 through
/// `gateway` for each `n` of `numbers`, in order, each retried until
/// acknowledged (within 40 s): across a fault, a client may be refused
/// (CONNACK 0x88) or time out, and retries, as clients do.
pub(crate) fn publish_numbered(gateway: &SocketAddr, prefix: &str, numbers: std::ops::Range<usize>) {
    for n in numbers {
        let topic = format!("{prefix}/{n}");
        eventually(
            Duration::from_secs(40),
            || {
                publisher(gateway, Version::V5, &topic)
                    .qos(1)
                    .message(&format!("m-{n}"))
                    .try_run()
                    .then_some(())
            },
            || format!("{topic} never acknowledged"),
        );
    }
}

/// The messages [`publish_numbered`] sends for `numbers`, as received.
pub(crate) fn numbered(prefix: &str, numbers: std::ops::Range<usize>) -> Vec<Message> {
    numbers.map(|n| Message::new(&format!("{prefix}/{n}"), &format!("m-{n}"), 1, false)).collect()
}

/// A `herald loadtest history` run in the background: publishers and
/// persistent subscribers that connect again through faults and log every
/// acknowledgement and delivery, for [`History::finish`] to check.
pub(crate) struct History {
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl History {
    /// Starts `pairs` publisher/subscriber pairs, `messages` each at `rate`
    /// per second, spread over `targets`.
    pub(crate) fn start(targets: &[SocketAddr], pairs: u32, messages: u32, rate: u32) -> History {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("history.log");
        let targets: Vec<String> = targets.iter().map(SocketAddr::to_string).collect();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["loadtest", "history", "--targets", &targets.join(",")])
            .args(["--pairs", &pairs.to_string(), "--messages", &messages.to_string()])
            .args(["--rate", &rate.to_string(), "--deadline", "100", "--log"])
            .arg(&log)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start herald loadtest history");
        History { child, log, _dir: dir }
    }

    /// Waits for the run to end and asserts what its history shows: every
    /// message acknowledged (clients retry through faults), every
    /// acknowledged message delivered, each publisher's messages first seen
    /// in order, no persistent session lost.
    pub(crate) fn finish(self) -> herald_loadtest::Value {
        let output = self.child.wait_with_output().expect("wait for herald loadtest history");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let history = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = history.lines().rev().take(40).collect();
        let report = stdout
            .lines()
            .find_map(herald_loadtest::parse_report_line)
            .unwrap_or_else(|| panic!("no report from herald loadtest history: {stdout}\n{stderr}"));
        let results = &report["results"];
        let context = || format!("{stderr}\nlast lines of the history:\n{}", tail.join("\n"));
        assert_eq!(results["violations"], serde_json::json!([]), "{}", context());
        assert_eq!(results["unacknowledged"], 0, "every message acknowledged in the end: {}", context());
        report
    }
}
