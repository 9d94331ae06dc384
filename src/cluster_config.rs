//! Configuration of `herald router` and `herald gateway`: the same layers
//! as standalone's (a TOML file, then `HERALD_*` variables, then flags),
//! validated at start-up with the key named.

use crate::config::{AclConfig, AuthConfig, Limits, PushConfig, RaftConfig, TlsSection, load_layers};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The commented template of a router's configuration.
pub(crate) const ROUTER_TEMPLATE: &str = include_str!("../config/router.toml");
/// The commented template of a gateway's configuration.
pub(crate) const GATEWAY_TEMPLATE: &str = include_str!("../config/gateway.toml");

/// Configuration of `herald router`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RouterConfig {
    /// gRPC listen address (gateways and the other routers).
    pub(crate) grpc: SocketAddr,
    /// Data directory.
    pub(crate) data: PathBuf,
    /// This router's node id: a number, or `ordinal` (a StatefulSet pod's).
    #[serde(deserialize_with = "crate::node_id::deserialize")]
    pub(crate) node_id: u64,
    /// The voters, `ID=HOST:PORT` each (a list, or one comma-separated
    /// string); empty: a cluster of one.
    #[serde(deserialize_with = "list")]
    pub(crate) peers: Vec<String>,
    /// The cluster id every router of the cluster shares.
    pub(crate) cluster_id: Option<String>,
    /// Join a running cluster instead of forming one.
    pub(crate) join: bool,
    /// Operations HTTP listen address.
    pub(crate) ops: Option<SocketAddr>,
    /// The router's share of the limits (offline queues, session expiry,
    /// shared groups, gateway lease).
    pub(crate) limits: Limits,
    /// Raft timing and log compaction.
    pub(crate) raft: RaftConfig,
    /// Span export.
    pub(crate) telemetry: crate::telemetry::TelemetryConfig,
    /// Mutual TLS on the cluster's gRPC.
    pub(crate) cluster_tls: crate::config::ClusterTlsConfig,
    /// Where the session registry is kept besides the router's memory.
    pub(crate) registry: crate::config::RegistryConfig,
}

/// Configuration of `herald gateway`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GatewayConfig {
    /// The routers' gRPC URLs (a list, or one comma-separated string).
    #[serde(deserialize_with = "list")]
    pub(crate) router: Vec<String>,
    /// MQTT/TCP listen address.
    pub(crate) mqtt: SocketAddr,
    /// MQTT-over-WebSocket listen address.
    pub(crate) websocket: Option<SocketAddr>,
    /// This gateway's node id, unique among the cluster's gateways: a
    /// number, or `hostname` (derived from the pod's name).
    #[serde(deserialize_with = "crate::node_id::deserialize_optional")]
    pub(crate) node_id: Option<u64>,
    /// The cluster id the routers must have.
    pub(crate) cluster_id: Option<String>,
    /// Operations HTTP listen address.
    pub(crate) ops: Option<SocketAddr>,
    /// Seconds to wait at start for a router that serves gateways.
    pub(crate) router_patience_secs: u64,
    /// Seconds a socket may take to send CONNECT.
    pub(crate) connect_timeout_secs: u64,
    /// Connections held at most.
    pub(crate) max_connections: usize,
    /// CONNECTs accepted per second at most (0: no limit).
    pub(crate) max_connect_rate: u32,
    /// Payload bytes waiting for one connection at most.
    pub(crate) max_inbox_bytes: usize,
    /// Sockets accepted but not connected yet at most.
    pub(crate) max_pending_connects: usize,
    /// Resident memory, in MiB, past which new connections are shed (0:
    /// no mark).
    pub(crate) memory_high_water_mb: u64,
    /// Seconds shutdown waits for connections to leave.
    pub(crate) drain_timeout_secs: u64,
    /// Connections told to leave per second at shutdown (0: all at once).
    pub(crate) drain_rate: u32,
    /// Seconds a client's publish or subscription may wait for a router's
    /// answer before it gets an explicit error (v5: 0x80; 3.1.1: closed).
    pub(crate) router_reply_timeout_secs: u64,
    /// Per-session limits.
    pub(crate) limits: Limits,
    /// Who may connect.
    pub(crate) auth: AuthConfig,
    /// The push API.
    pub(crate) push: PushConfig,
    /// TLS listeners.
    pub(crate) tls: TlsSection,
    /// Who may publish and subscribe to what.
    pub(crate) acl: AclConfig,
    /// Span export.
    pub(crate) telemetry: crate::telemetry::TelemetryConfig,
    /// Mutual TLS on the cluster's gRPC.
    pub(crate) cluster_tls: crate::config::ClusterTlsConfig,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            grpc: SocketAddr::from(([127, 0, 0, 1], 7400)),
            data: PathBuf::from("./herald-router-data"),
            node_id: 1,
            peers: Vec::new(),
            cluster_id: None,
            join: false,
            ops: None,
            limits: Limits::default(),
            raft: RaftConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
            cluster_tls: crate::config::ClusterTlsConfig::default(),
            registry: crate::config::RegistryConfig::default(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            router: Vec::new(),
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            websocket: None,
            node_id: None,
            cluster_id: None,
            ops: None,
            router_patience_secs: 30,
            connect_timeout_secs: 10,
            max_connections: 100_000,
            max_connect_rate: 0,
            max_inbox_bytes: 16 << 20,
            max_pending_connects: 10_000,
            memory_high_water_mb: 0,
            drain_timeout_secs: 5,
            drain_rate: 0,
            router_reply_timeout_secs: 10,
            limits: Limits::default(),
            auth: AuthConfig::default(),
            push: PushConfig::default(),
            tls: TlsSection::default(),
            acl: AclConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
            cluster_tls: crate::config::ClusterTlsConfig::default(),
        }
    }
}

/// Top-level keys and sections of a router's configuration: the
/// `HERALD_*` variables it reads (others belong to other modes).
const ROUTER_KEYS: &[&str] = &["grpc", "data", "node_id", "peers", "cluster_id", "join", "ops"];
const ROUTER_SECTIONS: &[&str] = &["limits_", "raft_", "telemetry_", "cluster_tls_", "registry_"];
const GATEWAY_KEYS: &[&str] = &[
    "router",
    "mqtt",
    "websocket",
    "node_id",
    "cluster_id",
    "ops",
    "router_patience_secs",
    "connect_timeout_secs",
    "max_connections",
    "max_connect_rate",
    "max_inbox_bytes",
    "max_pending_connects",
    "memory_high_water_mb",
    "drain_timeout_secs",
    "drain_rate",
    "router_reply_timeout_secs",
];
const GATEWAY_SECTIONS: &[&str] =
    &["limits_", "auth_", "push_", "tls_", "acl_", "telemetry_", "cluster_tls_"];

fn wanted(keys: &'static [&'static str], sections: &'static [&'static str]) -> impl Fn(&str) -> bool {
    move |key| keys.contains(&key) || sections.iter().any(|section| key.starts_with(section))
}

impl RouterConfig {
    /// Reads the file at `path` (if any), applies the router's `HERALD_*`
    /// variables from `env`, and validates.
    pub(crate) fn load(path: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<RouterConfig> {
        let config: RouterConfig = load_layers(path, env, wanted(ROUTER_KEYS, ROUTER_SECTIONS))?;
        config.limits.validate()?;
        config.raft.validate()?;
        config.telemetry.validate()?;
        config.registry.redis()?;
        anyhow::ensure!(!config.join || config.peers.is_empty(), "join: a joining router takes no peers");
        Ok(config)
    }
}

impl GatewayConfig {
    /// Reads the file at `path` (if any), applies the gateway's `HERALD_*`
    /// variables from `env`, and validates (flags are applied after, then
    /// [`GatewayConfig::validate`] again).
    pub(crate) fn load(path: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<GatewayConfig> {
        let config: GatewayConfig = load_layers(path, env, wanted(GATEWAY_KEYS, GATEWAY_SECTIONS))?;
        config.limits.validate()?;
        config.auth.authenticator()?;
        config.auth.device_users()?;
        config.push.api()?;
        config.tls.listeners()?;
        config.acl.acl()?;
        config.telemetry.validate()?;
        Ok(config)
    }

    /// Checks what flags may have supplied too.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.router.is_empty(), "router: give at least one router URL (http://HOST:PORT)");
        anyhow::ensure!(self.node_id.is_some(), "node_id: required, unique among the cluster's gateways");
        anyhow::ensure!(self.connect_timeout_secs > 0, "connect_timeout_secs: must be at least 1");
        anyhow::ensure!(self.router_reply_timeout_secs > 0, "router_reply_timeout_secs: must be at least 1");
        anyhow::ensure!(self.max_connections > 0, "max_connections: must be at least 1");
        Ok(())
    }
}

/// Accepts a list of strings or one comma-separated string (the form an
/// environment variable gives).
fn list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Form::deserialize(deserializer)? {
        Form::List(items) => items,
        Form::Text(text) => {
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_templates_parse_to_the_defaults() {
        let router: RouterConfig = toml::from_str(ROUTER_TEMPLATE).expect("router template");
        assert_eq!(router, RouterConfig::default());
        let gateway: GatewayConfig = toml::from_str(GATEWAY_TEMPLATE).expect("gateway template");
        assert_eq!(gateway, GatewayConfig::default());
    }

    #[test]
    fn the_environment_fills_lists_and_sections_and_other_modes_variables_are_left_alone() {
        let vars = env(&[
            ("HERALD_PEERS", "1=127.0.0.11:7401,2=127.0.0.12:7402"),
            ("HERALD_RAFT_HEARTBEAT_MS", "50"),
            ("HERALD_MQTT", "127.0.0.1:1999"),
            ("HERALD_AUTH_ALLOW_ANONYMOUS", "false"),
        ]);
        let router = RouterConfig::load(None, &vars).expect("router");
        assert_eq!(router.peers, ["1=127.0.0.11:7401", "2=127.0.0.12:7402"]);
        assert_eq!(router.raft.heartbeat_ms, 50);
        let gateway = GatewayConfig::load(None, &vars).expect("gateway");
        assert_eq!(gateway.mqtt, "127.0.0.1:1999".parse().expect("addr"));
        assert!(!gateway.auth.allow_anonymous);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "mqtt = \"127.0.0.1:1883\"\nnode = 3\n").expect("write");
        let error = GatewayConfig::load(Some(&path), &[]).expect_err("unknown key").to_string();
        assert!(error.contains("node"), "{error}");
        std::fs::write(&path, "[limits]\nmaximum_qos = 3\n").expect("write");
        let error = GatewayConfig::load(Some(&path), &[]).expect_err("bad value").to_string();
        assert!(error.contains("limits.maximum_qos"), "{error}");
        let error = RouterConfig::load(None, &env(&[("HERALD_RAFT_ELECTION_MIN_MS", "10")]))
            .expect_err("bad timing")
            .to_string();
        assert!(error.contains("raft.election_min_ms"), "{error}");
        let error =
            RouterConfig::load(None, &env(&[("HERALD_NODE_ID", "first")])).expect_err("word").to_string();
        assert!(error.contains("node_id") && error.contains("\"ordinal\""), "{error}");
        let router = RouterConfig::load(None, &env(&[("HERALD_NODE_ID", "7")])).expect("a number");
        assert_eq!(router.node_id, 7);
        let missing = GatewayConfig::default().validate().expect_err("no router").to_string();
        assert!(missing.contains("router"), "{missing}");
    }
}
