//! Configuration of each mode: a TOML file, `HERALD_*` environment
//! overrides and a few flags, validated at start-up with the key named.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The commented template of the standalone configuration.
pub(crate) const STANDALONE_TEMPLATE: &str = include_str!("../config/standalone.toml");

/// Configuration of `herald standalone`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StandaloneConfig {
    /// MQTT/TCP listen address.
    pub(crate) mqtt: SocketAddr,
    /// MQTT-over-WebSocket listen address (path `/mqtt`); none by default.
    pub(crate) websocket: Option<SocketAddr>,
    /// Operations HTTP listen address (`/metrics`, `/healthz`, `/readyz`);
    /// none by default.
    pub(crate) ops: Option<SocketAddr>,
    /// Data directory.
    pub(crate) data: PathBuf,
    /// Seconds a socket may take to send CONNECT.
    pub(crate) connect_timeout_secs: u64,
    /// Connections held at most.
    pub(crate) max_connections: usize,
    /// CONNECTs accepted per second at most (0: no limit).
    pub(crate) max_connect_rate: u32,
    /// Payload bytes waiting for one connection at most; past it its
    /// deliveries are dropped and counted.
    pub(crate) max_inbox_bytes: usize,
    /// Sockets accepted but not connected yet at most.
    pub(crate) max_pending_connects: usize,
    /// Resident memory, in MiB, past which new connections are shed (0:
    /// no mark).
    pub(crate) memory_high_water_mb: u64,
    /// Seconds shutdown waits for connections.
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
    /// Raft timing and log compaction.
    pub(crate) raft: RaftConfig,
    /// The push API.
    pub(crate) push: PushConfig,
    /// TLS listeners.
    pub(crate) tls: TlsSection,
    /// Who may publish and subscribe to what.
    pub(crate) acl: AclConfig,
    /// Span export.
    pub(crate) telemetry: crate::telemetry::TelemetryConfig,
    /// Where the session registry is kept besides the router's memory.
    pub(crate) registry: RegistryConfig,
}

/// The session registry in Redis (`[registry]`, `HERALD_REGISTRY_*`,
/// ADR 0029): one hash per session, kept from the router's memory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RegistryConfig {
    /// `redis://[[user]:password@]host[:port][/db]`; none: the registry is
    /// only in the router's memory.
    pub(crate) redis: Option<String>,
    /// What every key starts with.
    pub(crate) prefix: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { redis: None, prefix: "herald:".to_owned() }
    }
}

impl RegistryConfig {
    /// The writer's configuration, if the registry is kept in Redis; an
    /// error names the key.
    pub(crate) fn redis(&self) -> anyhow::Result<Option<herald_router::registry_redis::RedisRegistryConfig>> {
        let Some(url) = self.redis.as_deref().filter(|url| !url.is_empty()) else { return Ok(None) };
        let address =
            herald_redis::RedisAddress::parse(url).map_err(|e| anyhow::anyhow!("registry.redis: {e}"))?;
        anyhow::ensure!(
            !self.prefix.is_empty() && self.prefix.len() <= 64 && !self.prefix.contains(char::is_whitespace),
            "registry.prefix: 1 to 64 characters, no spaces"
        );
        Ok(Some(herald_router::registry_redis::RedisRegistryConfig { address, prefix: self.prefix.clone() }))
    }
}

/// Access rules (`[acl]`, docs/security.md): the first rule that applies
/// decides; `default` when none does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AclConfig {
    /// `allow` or `deny`.
    pub(crate) default: String,
    /// The rules, in order.
    pub(crate) rules: Vec<AclRuleConfig>,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig { default: "allow".to_owned(), rules: Vec::new() }
    }
}

/// One access rule (`[[acl.rules]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclRuleConfig {
    /// The app it applies to; every app when unset.
    pub(crate) app: Option<String>,
    /// `allow` or `deny`.
    pub(crate) permission: String,
    /// `publish`, `subscribe` or `all`.
    pub(crate) action: String,
    /// Topic filters; `%c` is the client id, `%u` the user name.
    pub(crate) topics: Vec<String>,
    /// Only for these user names.
    #[serde(default)]
    pub(crate) users: Vec<String>,
    /// Only for these client ids.
    #[serde(default)]
    pub(crate) clients: Vec<String>,
}

impl AclConfig {
    /// The access rules, checked; errors name the rule.
    pub(crate) fn acl(&self) -> anyhow::Result<herald_gateway::acl::Acl> {
        use herald_gateway::acl::{Acl, Permission, Rule};
        let permission = |text: &str, at: &str| match text {
            "allow" => Ok(Permission::Allow),
            "deny" => Ok(Permission::Deny),
            other => Err(anyhow::anyhow!("{at}: {other:?} is not allow or deny")),
        };
        let default = permission(&self.default, "acl.default")?;
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("acl.rules[{i}]");
            let (publish, subscribe) = match rule.action.as_str() {
                "publish" => (true, false),
                "subscribe" => (false, true),
                "all" => (true, true),
                other => anyhow::bail!("{at}.action: {other:?} is not publish, subscribe or all"),
            };
            let app = match &rule.app {
                Some(app) => Some(
                    herald_core::AppId::new(app.as_str()).map_err(|e| anyhow::anyhow!("{at}.app: {e}"))?,
                ),
                None => None,
            };
            rules.push(Rule {
                app,
                permission: permission(&rule.permission, &format!("{at}.permission"))?,
                publish,
                subscribe,
                topics: rule.topics.clone(),
                users: rule.users.clone(),
                clients: rule.clients.clone(),
            });
        }
        Acl::new(rules, default).map_err(|e| anyhow::anyhow!("acl.{e}"))
    }
}

/// TLS (`[tls]`, `HERALD_TLS_*`): the listeners that speak it and the
/// certificate they present.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsSection {
    /// PEM certificate chain, the server's first.
    pub(crate) cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub(crate) key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, devices must present a certificate
    /// signed by one (mutual TLS), whose common name is their client id.
    pub(crate) client_ca_file: Option<PathBuf>,
    /// MQTT over TLS listen address (usually port 8883); none by default.
    pub(crate) mqtt: Option<SocketAddr>,
    /// MQTT over secure WebSocket listen address; none by default.
    pub(crate) websocket: Option<SocketAddr>,
    /// Serve the push API and SSE over HTTPS on `[push] http`.
    pub(crate) push_api: bool,
}

/// Mutual TLS on the cluster's own gRPC (`[cluster_tls]`): between
/// gateways and routers, routers and routers, and `herald ctl`. Every
/// process presents a certificate signed by `ca_file` and checks the
/// other side's against it (docs/security.md).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterTlsConfig {
    /// PEM certificate of the CA that signs every member's certificate.
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM certificate chain of this process (both server and client use).
    pub(crate) cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub(crate) key_file: Option<PathBuf>,
    /// The name routers' certificates carry, when not the host of each
    /// router's address (e.g. one name for every router).
    pub(crate) server_name: Option<String>,
}

impl ClusterTlsConfig {
    /// Reads the files and installs the identity for every gRPC endpoint
    /// and server of this process; nothing when no file is set.
    pub(crate) fn install(&self) -> anyhow::Result<()> {
        let (Some(ca), Some(cert), Some(key)) = (&self.ca_file, &self.cert_file, &self.key_file) else {
            anyhow::ensure!(
                self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none(),
                "cluster_tls: ca_file, cert_file and key_file go together"
            );
            return Ok(());
        };
        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("cluster_tls.{key}: {}: {e}", path.display()))
        };
        let (ca, cert, key) = (read("ca_file", ca)?, read("cert_file", cert)?, read("key_file", key)?);
        for (name, pem, marker) in [
            ("ca_file", &ca, "CERTIFICATE"),
            ("cert_file", &cert, "CERTIFICATE"),
            ("key_file", &key, "PRIVATE KEY"),
        ] {
            anyhow::ensure!(
                String::from_utf8_lossy(pem).contains(marker),
                "cluster_tls.{name}: no PEM {marker} in the file"
            );
        }
        herald_proto::grpc::tls::ClusterTls::from_pem(&ca, &cert, &key, self.server_name.clone())
            .install()
            .map_err(|e| anyhow::anyhow!("cluster_tls: {e}"))
    }

    /// The settings from `HERALD_CLUSTER_TLS_*` variables in `env` alone
    /// (for `herald ctl`, which has no configuration file), read as every
    /// mode reads its variables; an empty variable counts as unset.
    pub(crate) fn from_env(env: &[(String, String)]) -> anyhow::Result<ClusterTlsConfig> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Ctl {
            cluster_tls: ClusterTlsConfig,
        }
        let set: Vec<(String, String)> = env.iter().filter(|(_, value)| !value.is_empty()).cloned().collect();
        let ctl: Ctl = load_layers(None, &set, |key| key.starts_with("cluster_tls_"))?;
        Ok(ctl.cluster_tls)
    }
}

impl TlsSection {
    /// The gateway's TLS listeners, if any is configured; reads and checks
    /// the certificate and key.
    pub(crate) fn listeners(&self) -> anyhow::Result<Option<herald_gateway::TlsListeners>> {
        if self.mqtt.is_none() && self.websocket.is_none() && !self.push_api {
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else {
            anyhow::bail!(
                "tls.cert_file and tls.key_file: required by a TLS listener (tls.mqtt, tls.websocket, tls.push_api)"
            );
        };
        let config = herald_gateway::tls::TlsConfig::from_files(cert, key, self.client_ca_file.as_deref())
            .map_err(|e| anyhow::anyhow!("tls: {e}"))?;
        Ok(Some(herald_gateway::TlsListeners {
            config,
            mqtt: self.mqtt,
            websocket: self.websocket,
            push_api: self.push_api,
        }))
    }
}

/// The push API (`[push]`, `HERALD_PUSH_*`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PushConfig {
    /// HTTP listen address of the push API; none: not served.
    pub(crate) http: Option<SocketAddr>,
    /// Requests per second per app on each gateway, unless the app sets
    /// its own.
    pub(crate) rate_per_second: u32,
    /// Seconds after which an SSE stream ends (the browser reconnects and
    /// resumes, possibly through another gateway); 0: streams last.
    pub(crate) sse_stream_secs: u64,
    /// The token that authorises the admin API (making and revoking API
    /// keys) for every app; none: only app keys with the `admin` scope can.
    pub(crate) operator_token: Option<Secret>,
    /// Every app's request limits (`[push.limits]`), unless the app sets
    /// its own.
    pub(crate) limits: AppLimitsConfig,
    /// Apps by id, with their API keys.
    pub(crate) apps: std::collections::BTreeMap<String, AppConfig>,
}

/// Request limits of the push API (`[push.limits]`, `[push.apps.NAME.limits]`);
/// each unset one is the default (or, for an app, `[push.limits]`'s).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AppLimitsConfig {
    pub(crate) max_audience: Option<usize>,
    pub(crate) max_payload_bytes: Option<usize>,
    pub(crate) max_ttl_secs: Option<u32>,
    pub(crate) max_body_bytes: Option<usize>,
    pub(crate) max_idempotency_key_chars: Option<usize>,
    pub(crate) max_tags_per_device: Option<usize>,
    pub(crate) max_devices_per_alias: Option<usize>,
    pub(crate) max_expression_depth: Option<usize>,
    pub(crate) max_expression_tags: Option<usize>,
}

impl AppLimitsConfig {
    /// `base` with these limits set; an error names the first out of range
    /// (under `at`).
    fn apply(
        &self,
        base: &herald_gateway::push_api::AppLimits,
        at: &str,
    ) -> anyhow::Result<herald_gateway::push_api::AppLimits> {
        let mut limits = base.clone();
        let d = &mut limits.directory;
        let pairs = [
            (self.max_audience, &mut limits.max_devices),
            (self.max_payload_bytes, &mut limits.max_payload),
            (self.max_body_bytes, &mut limits.max_body_bytes),
            (self.max_idempotency_key_chars, &mut limits.max_idempotency_key),
            (self.max_tags_per_device, &mut d.tags_per_device),
            (self.max_devices_per_alias, &mut d.devices_per_alias),
            (self.max_expression_depth, &mut d.expr_depth),
            (self.max_expression_tags, &mut d.expr_leaves),
        ];
        for (value, field) in pairs {
            if let Some(value) = value {
                *field = value;
            }
        }
        if let Some(ttl) = self.max_ttl_secs {
            limits.max_ttl_seconds = ttl;
        }
        if let Some(name) = limits.out_of_range() {
            anyhow::bail!("{at}.{name}: from 1 up to its ceiling (docs/push-api.md, Limits)");
        }
        Ok(limits)
    }
}

/// A secret from configuration: never printed.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<secret>\"")
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            http: None,
            rate_per_second: herald_gateway::push_api::rate::DEFAULT_RATE,
            sse_stream_secs: 0,
            operator_token: None,
            limits: AppLimitsConfig::default(),
            apps: std::collections::BTreeMap::new(),
        }
    }
}

/// One app of the push API (`[push.apps.ID]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AppConfig {
    /// Keys that may do everything in the app (`Authorization: Bearer <key>`).
    pub(crate) api_keys: Vec<String>,
    /// Keys limited to some scopes (`send`, `read`, `devices`).
    pub(crate) scoped_keys: Vec<ScopedKey>,
    /// The app's own request rate per gateway (requests per second).
    pub(crate) rate_per_second: Option<u32>,
    /// The app's own request limits.
    pub(crate) limits: AppLimitsConfig,
    /// The secret the app's backend signs device tokens with (HS256 JWTs;
    /// at least 32 bytes): devices connect with one as their password.
    pub(crate) device_token_secret: Option<String>,
    /// Public keys that verify RS256/ES256 device tokens (the backend keeps
    /// the private halves).
    pub(crate) device_token_keys: Vec<TokenKey>,
}

/// A public key of device tokens (`[[push.apps.NAME.device_token_keys]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenKey {
    /// Picked by tokens whose header names it; without one, the key is
    /// tried for every token of its algorithm.
    pub(crate) kid: Option<String>,
    /// The PEM `PUBLIC KEY` (RSA: RS256; P-256: ES256) ...
    pub(crate) pem: Option<String>,
    /// ... or the file holding it.
    pub(crate) pem_file: Option<std::path::PathBuf>,
}

/// An API key limited to some scopes (`[[push.apps.NAME.scoped_keys]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScopedKey {
    /// The key.
    pub(crate) key: String,
    /// What it may do: `send`, `read`, `devices`, `admin` (or `all`).
    pub(crate) scopes: Vec<String>,
}

/// API keys shorter than this are refused at start-up.
const MIN_API_KEY_CHARS: usize = 16;

impl PushConfig {
    /// Returns the device-token secrets of the apps that have one.
    pub(crate) fn device_tokens(&self) -> anyhow::Result<herald_gateway::device_token::DeviceTokens> {
        let mut tokens = herald_gateway::device_token::DeviceTokens::default();
        for (name, app) in &self.apps {
            let id = herald_core::AppId::new(name.as_str())
                .map_err(|e| anyhow::anyhow!("push.apps.{name}: {e}"))?;
            for (i, key) in app.device_token_keys.iter().enumerate() {
                let at = format!("push.apps.{name}.device_token_keys[{i}]");
                let pem = match (&key.pem, &key.pem_file) {
                    (Some(pem), None) => pem.clone(),
                    (None, Some(file)) => std::fs::read_to_string(file)
                        .map_err(|e| anyhow::anyhow!("{at}.pem_file: {}: {e}", file.display()))?,
                    _ => anyhow::bail!("{at}: set exactly one of pem and pem_file"),
                };
                let public = herald_gateway::device_token::PublicKey::from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
                tokens.add_public(id.clone(), key.kid.clone(), public);
            }
            let Some(secret) = &app.device_token_secret else { continue };
            anyhow::ensure!(
                secret.len() >= herald_gateway::device_token::MIN_SECRET_BYTES,
                "push.apps.{name}.device_token_secret: at least {} bytes",
                herald_gateway::device_token::MIN_SECRET_BYTES
            );
            tokens.add(id, secret.as_bytes());
        }
        Ok(tokens)
    }

    /// Returns the authenticator of a gateway: device tokens, then `auth`'s users.
    pub(crate) fn authenticator(
        &self,
        auth: &AuthConfig,
        clock: std::sync::Arc<dyn herald_core::Clock>,
    ) -> anyhow::Result<std::sync::Arc<dyn herald_gateway::auth::Authenticator>> {
        let inner = auth.authenticator()?;
        let tokens = self.device_tokens()?;
        Ok(std::sync::Arc::new(herald_gateway::device_token::TokenAuthenticator::new(tokens, inner, clock)))
    }

    /// Returns the gateway's push-API configuration, if it is served.
    pub(crate) fn api(&self) -> anyhow::Result<Option<herald_gateway::push_api::PushApiConfig>> {
        anyhow::ensure!(self.rate_per_second > 0, "push.rate_per_second: must be at least 1");
        let mut keys = herald_gateway::push_api::ApiKeys::default();
        let mut rates = std::collections::HashMap::new();
        let limits = self.limits.apply(&herald_gateway::push_api::AppLimits::default(), "push.limits")?;
        let mut app_limits = std::collections::HashMap::new();
        for (name, app) in &self.apps {
            let id = herald_core::AppId::new(name.as_str())
                .map_err(|e| anyhow::anyhow!("push.apps.{name}: {e}"))?;
            if app.limits != AppLimitsConfig::default() {
                app_limits
                    .insert(id.clone(), app.limits.apply(&limits, &format!("push.apps.{name}.limits"))?);
            }
            if let Some(rate) = app.rate_per_second {
                anyhow::ensure!(rate > 0, "push.apps.{name}.rate_per_second: must be at least 1");
                rates.insert(id.clone(), rate);
            }
            let good =
                |key: &str| key.chars().count() >= MIN_API_KEY_CHARS && !key.chars().any(char::is_whitespace);
            for (i, key) in app.api_keys.iter().enumerate() {
                anyhow::ensure!(
                    good(key),
                    "push.apps.{name}.api_keys[{i}]: at least {MIN_API_KEY_CHARS} characters, no spaces"
                );
                keys.add(key, id.clone());
            }
            for (i, scoped) in app.scoped_keys.iter().enumerate() {
                anyhow::ensure!(
                    good(&scoped.key),
                    "push.apps.{name}.scoped_keys[{i}].key: at least {MIN_API_KEY_CHARS} characters, no spaces"
                );
                let mut scopes = None;
                for scope in &scoped.scopes {
                    let parsed = herald_gateway::push_api::Scopes::parse(scope).ok_or_else(|| {
                        anyhow::anyhow!("push.apps.{name}.scoped_keys[{i}].scopes: {scope:?} is not send, read, devices, admin or all")
                    })?;
                    scopes =
                        Some(scopes.map_or(parsed, |s: herald_gateway::push_api::Scopes| s.with(parsed)));
                }
                let scopes = scopes.ok_or_else(|| {
                    anyhow::anyhow!("push.apps.{name}.scoped_keys[{i}].scopes: name at least one")
                })?;
                keys.add_scoped(&scoped.key, id.clone(), scopes);
            }
        }
        let tokens = self.device_tokens()?;
        let operator_token = match &self.operator_token {
            Some(Secret(token)) => {
                let min = herald_gateway::push_api::OperatorToken::MIN_CHARS;
                anyhow::ensure!(
                    token.chars().count() >= min && !token.chars().any(char::is_whitespace),
                    "push.operator_token: at least {min} characters, no spaces"
                );
                Some(herald_gateway::push_api::OperatorToken::new(token))
            }
            None => None,
        };
        let sse_lifetime =
            (self.sse_stream_secs > 0).then(|| std::time::Duration::from_secs(self.sse_stream_secs));
        Ok(self.http.map(|listen| herald_gateway::push_api::PushApiConfig {
            default_rate: self.rate_per_second,
            rates,
            tokens,
            sse_lifetime,
            operator_token,
            limits,
            app_limits,
            ..herald_gateway::push_api::PushApiConfig::new(listen, keys)
        }))
    }
}

/// Raft timing and log compaction (`[raft]`, `HERALD_RAFT_*`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RaftConfig {
    /// Leader heartbeat interval, milliseconds.
    pub(crate) heartbeat_ms: u64,
    /// Election timeout range, milliseconds: a follower that hears no
    /// leader for a random time in it starts an election.
    pub(crate) election_min_ms: u64,
    pub(crate) election_max_ms: u64,
    /// A snapshot is taken every this many log entries.
    pub(crate) snapshot_entries: u64,
    /// Entries kept in the log behind the last snapshot (for followers that
    /// lag a little; one further behind catches up by snapshot).
    pub(crate) keep_entries: u64,
    /// Bytes per log segment file (preallocated; whole segments are freed
    /// once a snapshot covers them).
    pub(crate) segment_bytes: u64,
    /// How long a router may not answer the leader before its registry
    /// shards move to the others, milliseconds (ADR 0033).
    pub(crate) registry_move_after_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        let defaults = herald_router::raft::RaftSettings::default();
        RaftConfig {
            heartbeat_ms: defaults.heartbeat_ms,
            election_min_ms: defaults.election_min_ms,
            election_max_ms: defaults.election_max_ms,
            snapshot_entries: defaults.snapshot_entries,
            keep_entries: defaults.keep_entries,
            segment_bytes: defaults.segment_bytes,
            registry_move_after_ms: defaults.registry_move_after_ms,
        }
    }
}

impl RaftConfig {
    /// Returns the router's Raft settings.
    pub(crate) fn settings(&self) -> herald_router::raft::RaftSettings {
        herald_router::raft::RaftSettings {
            heartbeat_ms: self.heartbeat_ms,
            election_min_ms: self.election_min_ms,
            election_max_ms: self.election_max_ms,
            snapshot_entries: self.snapshot_entries,
            keep_entries: self.keep_entries,
            segment_bytes: self.segment_bytes,
            registry_move_after_ms: self.registry_move_after_ms,
            source_ip: None,
        }
    }
}

/// Who may connect, and into which app.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthConfig {
    /// Admit clients that present no user name (into the default app).
    pub(crate) allow_anonymous: bool,
    /// Known users by name.
    pub(crate) users: std::collections::BTreeMap<String, UserConfig>,
    /// Look up device users made through the admin API (kept by the router
    /// as salted hashes) when a name is not under `users`.
    pub(crate) router_users: bool,
    /// How long a device-user lookup (router or Redis) may take, in ms;
    /// past it the CONNECT gets 0x88 (server unavailable).
    pub(crate) lookup_timeout_ms: u64,
    /// Device users kept in Redis (EMQX's layout); none if unset.
    pub(crate) redis: Option<RedisAuthConfig>,
}

/// Device users kept in Redis, one hash per user:
/// `HSET mqtt_user:<name> password_hash <hex> salt <salt> [app <app>]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisAuthConfig {
    /// `redis://[[user]:password@]host[:port][/db]`.
    pub(crate) url: String,
    /// The key of a user's hash; `%u` is the user name.
    #[serde(default = "RedisAuthConfig::default_key")]
    pub(crate) key: String,
    /// `sha256`, `sha512` or `pbkdf2` (PBKDF2-HMAC-SHA256).
    #[serde(default = "RedisAuthConfig::default_algorithm")]
    pub(crate) algorithm: String,
    /// `prefix` (hash(salt ‖ password)) or `suffix` (SHA algorithms).
    #[serde(default = "RedisAuthConfig::default_salt_position")]
    pub(crate) salt_position: String,
    /// PBKDF2's iteration count.
    #[serde(default = "RedisAuthConfig::default_iterations")]
    pub(crate) iterations: u32,
    /// The app of users whose hash has no `app` field.
    #[serde(default)]
    pub(crate) app: Option<String>,
}

impl RedisAuthConfig {
    fn default_key() -> String {
        "mqtt_user:%u".to_owned()
    }
    fn default_algorithm() -> String {
        "sha256".to_owned()
    }
    fn default_salt_position() -> String {
        "prefix".to_owned()
    }
    fn default_iterations() -> u32 {
        4096
    }
}

/// One configured user.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserConfig {
    /// The user's password, as written (either this or `scram`).
    #[serde(default)]
    pub(crate) password: Option<String>,
    /// The user's SCRAM-SHA-256 secret, from `herald scram-secret`: the
    /// password itself is not kept (one of `password`, `scram`,
    /// `password_hash`).
    #[serde(default)]
    pub(crate) scram: Option<String>,
    /// A salted hash of the user's password, from `herald password-hash`:
    /// the password itself is not kept (SCRAM is then not offered).
    #[serde(default)]
    pub(crate) password_hash: Option<String>,
    /// The app (tenant) the user's sessions belong to; the default app if unset.
    #[serde(default)]
    pub(crate) app: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            users: std::collections::BTreeMap::new(),
            router_users: true,
            lookup_timeout_ms: 3000,
            redis: None,
        }
    }
}

impl AuthConfig {
    /// Returns the gateway's authenticator (after [`StandaloneConfig::validate`]).
    pub(crate) fn authenticator(&self) -> anyhow::Result<herald_gateway::auth::ConfigAuthenticator> {
        let mut users = std::collections::HashMap::new();
        for (name, user) in &self.users {
            let app = match &user.app {
                Some(app) => herald_core::AppId::new(app.as_str())
                    .map_err(|e| anyhow::anyhow!("auth.users.{name}.app: {e}"))?,
                None => herald_core::AppId::default_app(),
            };
            use herald_gateway::auth::Secret;
            let secret = match (&user.password, &user.scram, &user.password_hash) {
                (Some(password), None, None) => Secret::Password(password.clone()),
                (None, Some(scram), None) => Secret::Scram(
                    herald_gateway::scram::ScramSecret::parse(scram)
                        .map_err(|e| anyhow::anyhow!("auth.users.{name}.scram: {e}"))?,
                ),
                (None, None, Some(hash)) => Secret::Hash(
                    herald_gateway::password::parse(hash)
                        .map_err(|e| anyhow::anyhow!("auth.users.{name}.password_hash: {e}"))?,
                ),
                _ => anyhow::bail!("auth.users.{name}: set exactly one of password, scram and password_hash"),
            };
            users.insert(name.clone(), herald_gateway::auth::ConfiguredUser::new(secret, app));
        }
        Ok(herald_gateway::auth::ConfigAuthenticator::new(self.allow_anonymous, users))
    }

    /// Where the gateway looks device users up.
    pub(crate) fn device_users(&self) -> anyhow::Result<herald_gateway::device_users::DeviceUsersConfig> {
        use herald_proto::users::{HashAlgorithm, SaltPosition};
        anyhow::ensure!((1..=60_000).contains(&self.lookup_timeout_ms), "auth.lookup_timeout_ms: 1 to 60000");
        let redis = match &self.redis {
            None => None,
            Some(redis) => {
                let address = herald_redis::RedisAddress::parse(&redis.url)
                    .map_err(|e| anyhow::anyhow!("auth.redis.url: {e}"))?;
                anyhow::ensure!(redis.key.contains("%u"), "auth.redis.key: name the user with %u");
                let algorithm = HashAlgorithm::from_name(&redis.algorithm)
                    .ok_or_else(|| anyhow::anyhow!("auth.redis.algorithm: sha256, sha512 or pbkdf2"))?;
                let salt_position = match redis.salt_position.as_str() {
                    "prefix" => SaltPosition::Prefix,
                    "suffix" => SaltPosition::Suffix,
                    _ => anyhow::bail!("auth.redis.salt_position: prefix or suffix"),
                };
                anyhow::ensure!(
                    (1..=herald_proto::users::MAX_PBKDF2_ITERATIONS).contains(&redis.iterations),
                    "auth.redis.iterations: 1 to 1000000"
                );
                let app = match &redis.app {
                    Some(app) => herald_core::AppId::new(app.as_str())
                        .map_err(|e| anyhow::anyhow!("auth.redis.app: {e}"))?,
                    None => herald_core::AppId::default_app(),
                };
                Some(herald_gateway::device_users::RedisUsersConfig {
                    address,
                    key: redis.key.clone(),
                    algorithm,
                    salt_position,
                    iterations: redis.iterations,
                    app,
                })
            }
        };
        Ok(herald_gateway::device_users::DeviceUsersConfig {
            router: self.router_users,
            redis,
            timeout: std::time::Duration::from_millis(self.lookup_timeout_ms),
        })
    }
}

/// Per-session limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    /// Largest packet accepted, bytes.
    pub(crate) max_packet_size: u32,
    /// Unacknowledged inbound QoS 1/2 publishes per client.
    pub(crate) receive_maximum: u16,
    /// Inbound topic aliases per connection.
    pub(crate) topic_alias_maximum: u16,
    /// In-flight deliveries to a v3.1.1 client.
    pub(crate) max_inflight_v311: u16,
    /// Deliveries waiting per connection.
    pub(crate) max_queued_messages: usize,
    /// Messages queued per offline persistent session.
    pub(crate) max_offline_messages: usize,
    /// Payload bytes queued per offline persistent session (0: no limit).
    pub(crate) max_offline_bytes: usize,
    /// What a full offline queue does: `refuse_newest` or `drop_oldest`.
    pub(crate) offline_overflow: String,
    /// Upper bound on session expiry, seconds.
    pub(crate) max_session_expiry_secs: u32,
    /// Keep-alive imposed at most, seconds (0: none).
    pub(crate) max_keep_alive: u16,
    /// Outbound topic aliases per connection at most (0: none).
    pub(crate) max_outbound_aliases: u16,
    /// Response Information prefix for v5 clients that request it.
    pub(crate) response_information: Option<String>,
    /// Highest QoS clients may publish with (0, 1 or 2).
    pub(crate) maximum_qos: u8,
    /// Whether clients may publish retained messages.
    pub(crate) retain_available: bool,
    /// Whether subscriptions may use wildcards.
    pub(crate) wildcard_subscriptions: bool,
    /// Whether subscriptions may carry identifiers.
    pub(crate) subscription_identifiers: bool,
    /// Server Reference sent with DISCONNECT 0x9C at shutdown.
    pub(crate) server_reference: Option<String>,
    /// This server has moved for good to `server_reference` (0x9D).
    pub(crate) server_moved: bool,
    /// Subscriptions one session may hold.
    pub(crate) max_subscriptions: usize,
    /// Publishes per second one client may send (burst: one second's
    /// worth); past it DISCONNECT 0x96. 0: no limit.
    pub(crate) max_publish_rate: u32,
    /// Payload bytes per second one client may publish, likewise.
    pub(crate) max_publish_bytes_rate: u32,
    /// Whether clients may join shared subscription groups.
    pub(crate) shared_subscriptions: bool,
    /// How a shared group picks a gateway and a member.
    pub(crate) shared_strategy: String,
    /// How long the router keeps a gateway's sessions after its link
    /// drops (the gateway may link again and keep its clients), seconds.
    pub(crate) gateway_lease_secs: u32,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        StandaloneConfig {
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            websocket: None,
            ops: None,
            data: PathBuf::from("./herald-data"),
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
            raft: RaftConfig::default(),
            push: PushConfig::default(),
            tls: TlsSection::default(),
            acl: AclConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
            registry: RegistryConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: 1024 * 1024,
            receive_maximum: 128,
            topic_alias_maximum: 64,
            max_inflight_v311: 32,
            max_queued_messages: 1000,
            max_offline_messages: 1000,
            max_offline_bytes: 0,
            offline_overflow: "refuse_newest".to_owned(),
            max_session_expiry_secs: 7 * 24 * 3600,
            max_keep_alive: 0,
            max_outbound_aliases: 32,
            response_information: None,
            maximum_qos: 2,
            retain_available: true,
            wildcard_subscriptions: true,
            subscription_identifiers: true,
            server_reference: None,
            server_moved: false,
            max_subscriptions: 1000,
            max_publish_rate: 0,
            max_publish_bytes_rate: 0,
            shared_subscriptions: true,
            shared_strategy: "round_robin".to_owned(),
            gateway_lease_secs: 15,
        }
    }
}

impl Limits {
    /// Returns the gateway's per-session limits.
    pub(crate) fn session_limits(&self) -> herald_gateway::SessionLimits {
        herald_gateway::SessionLimits {
            max_packet_size: self.max_packet_size,
            receive_maximum: self.receive_maximum,
            topic_alias_maximum: self.topic_alias_maximum,
            max_inflight_v311: self.max_inflight_v311,
            max_queued_messages: self.max_queued_messages,
            max_session_expiry_seconds: self.max_session_expiry_secs,
            max_keep_alive: self.max_keep_alive,
            max_outbound_aliases: self.max_outbound_aliases,
            response_information: self.response_information.clone(),
            maximum_qos: herald_core::QoS::from_u8(self.maximum_qos).unwrap_or(herald_core::QoS::ExactlyOnce),
            retain_available: self.retain_available,
            wildcard_subscriptions: self.wildcard_subscriptions,
            subscription_identifiers: self.subscription_identifiers,
            server_reference: self.server_reference.clone(),
            server_moved: self.server_moved,
            max_subscriptions: self.max_subscriptions,
            max_publish_rate: self.max_publish_rate,
            max_publish_bytes_rate: self.max_publish_bytes_rate,
            shared_subscriptions: self.shared_subscriptions,
            shared_strategy: self.strategy(),
            acl: Default::default(),
            trace_user_property: false,
        }
    }

    /// Returns the router's limits.
    pub(crate) fn router_config(&self) -> herald_router::RouterConfig {
        herald_router::RouterConfig {
            max_queued_messages: self.max_offline_messages,
            max_queued_bytes: self.max_offline_bytes,
            overflow: herald_router::Overflow::parse(&self.offline_overflow).unwrap_or_default(),
            max_session_expiry_seconds: self.max_session_expiry_secs,
            shared_strategy: self.strategy(),
            gateway_lease_ms: u64::from(self.gateway_lease_secs) * 1000,
        }
    }

    fn strategy(&self) -> herald_core::SharedStrategy {
        herald_core::SharedStrategy::parse(&self.shared_strategy).unwrap_or_default()
    }
}

impl StandaloneConfig {
    /// Reads the file at `path` (if any), then applies `HERALD_*` variables
    /// from `env`, then validates. Errors name the key.
    pub(crate) fn load(path: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<StandaloneConfig> {
        let config: StandaloneConfig = load_layers(path, env, |_| true)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks value ranges the types cannot express.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.limits.validate()?;
        anyhow::ensure!(self.connect_timeout_secs > 0, "connect_timeout_secs: must be at least 1");
        anyhow::ensure!(self.router_reply_timeout_secs > 0, "router_reply_timeout_secs: must be at least 1");
        anyhow::ensure!(self.max_connections > 0, "max_connections: must be at least 1");
        self.raft.validate()?;
        self.auth.authenticator()?;
        self.auth.device_users()?;
        self.push.api()?;
        self.tls.listeners()?;
        self.acl.acl()?;
        self.telemetry.validate()?;
        self.registry.redis()?;
        Ok(())
    }
}

impl Limits {
    /// Checks value ranges the types cannot express.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let l = self;
        anyhow::ensure!(l.max_packet_size >= 64, "limits.max_packet_size: must be at least 64 bytes");
        anyhow::ensure!(
            l.max_packet_size <= 268_435_460,
            "limits.max_packet_size: at most 268435460 (the protocol's limit)"
        );
        anyhow::ensure!(l.receive_maximum > 0, "limits.receive_maximum: must be at least 1");
        anyhow::ensure!(l.maximum_qos <= 2, "limits.maximum_qos: must be 0, 1 or 2");
        anyhow::ensure!(
            herald_core::SharedStrategy::parse(&l.shared_strategy).is_some(),
            "limits.shared_strategy: one of round_robin, random, sticky, hash_client, hash_topic"
        );
        anyhow::ensure!(
            !l.server_moved || l.server_reference.is_some(),
            "limits.server_moved: needs limits.server_reference (where the server moved to)"
        );
        anyhow::ensure!(
            herald_router::Overflow::parse(&l.offline_overflow).is_some(),
            "limits.offline_overflow: refuse_newest or drop_oldest"
        );
        anyhow::ensure!(l.max_inflight_v311 > 0, "limits.max_inflight_v311: must be at least 1");
        anyhow::ensure!(l.max_queued_messages > 0, "limits.max_queued_messages: must be at least 1");
        Ok(())
    }
}

impl RaftConfig {
    /// Checks that the timings make sense together.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let r = self;
        anyhow::ensure!(r.heartbeat_ms > 0, "raft.heartbeat_ms: must be at least 1");
        anyhow::ensure!(
            r.election_min_ms > r.heartbeat_ms && r.election_max_ms > r.election_min_ms,
            "raft.election_min_ms / election_max_ms: need heartbeat_ms < election_min_ms < election_max_ms"
        );
        anyhow::ensure!(r.snapshot_entries > 0, "raft.snapshot_entries: must be at least 1");
        anyhow::ensure!(r.segment_bytes >= 64 * 1024, "raft.segment_bytes: at least 65536");
        anyhow::ensure!(
            r.registry_move_after_ms >= 1000,
            "raft.registry_move_after_ms: at least 1000 (the leader checks every second)"
        );
        Ok(())
    }
}

/// Sets `HERALD_KEY` / `HERALD_SECTION_KEY` variables into `table`, parsing
/// each value as a TOML value (falling back to a string).
/// Reads the TOML file at `path` (if any), applies the `HERALD_*`
/// variables of `env` whose key `wanted` accepts (the mode's own keys:
/// variables meant for other modes are left alone), and deserializes the
/// result: unknown keys and bad values fail naming the key.
pub(crate) fn load_layers<T: serde::de::DeserializeOwned>(
    path: Option<&Path>,
    env: &[(String, String)],
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<T> {
    let mut table: toml::Table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let env: Vec<(String, String)> = env
        .iter()
        .filter(|(name, _)| name.strip_prefix("HERALD_").is_some_and(|key| wanted(&key.to_ascii_lowercase())))
        .cloned()
        .collect();
    apply_env(&mut table, &env)?;
    toml::Value::Table(table).try_into().map_err(|e| anyhow::anyhow!("config: {e}"))
}

fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> anyhow::Result<()> {
    const SECTIONS: [&str; 9] =
        ["limits", "auth", "raft", "push", "cluster_tls", "tls", "acl", "telemetry", "registry"];
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("HERALD_") else { continue };
        // Not configuration: logging, the file's path, fault injection for tests.
        if matches!(rest, "LOG" | "CONFIG") || rest.starts_with("FAULT_") {
            continue;
        }
        let key = rest.to_ascii_lowercase();
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let section = SECTIONS.iter().find(|s| key.starts_with(&format!("{s}_")));
        match section {
            Some(section) => {
                let field = key[section.len() + 1..].to_string();
                let entry = table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(inner) = entry else {
                    anyhow::bail!("{name}: {section} is not a table in the config file");
                };
                inner.insert(field, parsed);
            }
            None => {
                table.insert(key, parsed);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_gateway::auth::{Authenticator, Credentials};

    #[test]
    fn the_template_parses_to_the_defaults() {
        let table: toml::Table = toml::from_str(STANDALONE_TEMPLATE).expect("template is TOML");
        let config: StandaloneConfig = toml::Value::Table(table).try_into().expect("template is valid");
        config.validate().expect("template validates");
        assert_eq!(config, StandaloneConfig::default());
    }

    #[test]
    fn the_push_api_is_configured_per_app_and_checked() {
        let env = [("HERALD_PUSH_HTTP".to_owned(), "127.0.0.1:8089".to_owned())];
        let config = StandaloneConfig::load(None, &env).expect("valid");
        assert_eq!(config.push.http, Some("127.0.0.1:8089".parse().expect("addr")));
        assert!(config.push.api().expect("valid").is_some());
        assert!(StandaloneConfig::default().push.api().expect("valid").is_none(), "off by default");
        let table: toml::Table = toml::from_str("[push.apps.shop]\napi_keys = [\"short\"]").expect("TOML");
        let config: StandaloneConfig = toml::Value::Table(table).try_into().expect("shape");
        let error = config.validate().expect_err("a short key is refused").to_string();
        assert!(error.contains("push.apps.shop.api_keys[0]"), "{error}");
        let toml = "[push]\noperator_token = \"short\"\n";
        let config: StandaloneConfig = toml::from_str(toml).expect("shape");
        let error = config.validate().expect_err("a short token is refused").to_string();
        assert!(error.contains("push.operator_token"), "{error}");
        let toml = "[push]\noperator_token = \"operator-token-0123456789abcdef-0123\"\n";
        let config: StandaloneConfig = toml::from_str(toml).expect("shape");
        config.validate().expect("a long token is taken");
        assert!(!format!("{config:?}").contains("operator-token-"), "the token is never printed");
        let toml = "[push]\nhttp = \"127.0.0.1:0\"\n[push.limits]\nmax_audience = 50\n\
                    [push.apps.shop.limits]\nmax_tags_per_device = 5\n[push.apps.other]\n";
        let config: StandaloneConfig = toml::from_str(toml).expect("shape");
        let api = config.push.api().expect("valid").expect("served");
        let shop = &api.app_limits[&herald_core::AppId::new("shop").expect("app")];
        assert_eq!(
            (shop.max_devices, shop.directory.tags_per_device),
            (50, 5),
            "the app's over [push.limits]"
        );
        assert_eq!((api.limits.max_devices, api.limits.directory.tags_per_device), (50, 1000));
        for (toml, named) in [
            ("[push.limits]\nmax_audience = 0\n", "push.limits.max_audience"),
            (
                "[push.apps.shop.limits]\nmax_expression_depth = 17\n",
                "push.apps.shop.limits.max_expression_depth",
            ),
            ("[push.apps.shop.limits]\nmax_tags = 3\n", "max_tags"),
        ] {
            let error = match toml::from_str::<StandaloneConfig>(toml) {
                Ok(config) => config.validate().expect_err("out of range").to_string(),
                Err(error) => error.to_string(),
            };
            assert!(error.contains(named), "{error}");
        }
        for (keys, named) in [
            ("pem = \"not a key\"", "device_token_keys[0]: not a PEM public key"),
            ("pem_file = \"/no/such/file.pub\"", "device_token_keys[0].pem_file"),
            ("kid = \"k\"", "device_token_keys[0]: set exactly one of pem and pem_file"),
        ] {
            let toml = format!("[push.apps.shop]\n[[push.apps.shop.device_token_keys]]\n{keys}\n");
            let config: StandaloneConfig = toml::from_str(&toml).expect("shape");
            let error = config.validate().expect_err("a bad key is refused").to_string();
            assert!(error.contains(&format!("push.apps.shop.{named}")), "{error}");
        }
    }

    #[test]
    fn access_rules_are_checked_at_start_naming_the_rule() {
        for (toml, named) in [
            ("[acl]\ndefault = \"maybe\"\n", "acl.default"),
            (
                "[[acl.rules]]\npermission = \"allow\"\naction = \"read\"\ntopics = [\"a\"]\n",
                "acl.rules[0].action",
            ),
            (
                "[[acl.rules]]\npermission = \"permit\"\naction = \"all\"\ntopics = [\"a\"]\n",
                "acl.rules[0].permission",
            ),
            ("[[acl.rules]]\npermission = \"deny\"\naction = \"all\"\ntopics = [\"a/#/b\"]\n", "acl.rule 0"),
        ] {
            let config: StandaloneConfig = toml::from_str(toml).expect("shape");
            let error = config.validate().expect_err("refused").to_string();
            assert!(error.contains(named), "{error}");
        }
        let env = [("HERALD_ACL_DEFAULT".to_owned(), "deny".to_owned())];
        assert_eq!(StandaloneConfig::load(None, &env).expect("valid").acl.default, "deny");
    }

    #[test]
    fn a_tls_listener_needs_a_readable_certificate_and_key() {
        let config: StandaloneConfig = toml::from_str("[tls]\nmqtt = \"127.0.0.1:0\"\n").expect("shape");
        let error = config.validate().expect_err("no certificate").to_string();
        assert!(error.contains("tls.cert_file"), "{error}");
        let toml = "[tls]\npush_api = true\ncert_file = \"/no/such.pem\"\nkey_file = \"/no/such.key\"\n";
        let config: StandaloneConfig = toml::from_str(toml).expect("shape");
        let error = config.validate().expect_err("no such file").to_string();
        assert!(error.contains("/no/such.pem"), "{error}");
        let config: StandaloneConfig = toml::from_str("[tls]\ncert_file = \"/x\"\n").expect("shape");
        config.validate().expect("no listener: nothing to check");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "mqtt = \"127.0.0.1:1\"\nmqtt_port = 3\n").expect("write");
        let error = StandaloneConfig::load(Some(&path), &[]).expect_err("unknown key").to_string();
        assert!(error.contains("mqtt_port"), "{error}");
        std::fs::write(&path, "[limits]\nreceive_maximum = 0\n").expect("write");
        let error = StandaloneConfig::load(Some(&path), &[]).expect_err("bad value").to_string();
        assert!(error.contains("limits.receive_maximum"), "{error}");
        std::fs::write(&path, "mqtt = \"not an address\"\n").expect("write");
        let error = StandaloneConfig::load(Some(&path), &[]).expect_err("bad address").to_string();
        assert!(error.contains("mqtt"), "{error}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            ("HERALD_MQTT".to_string(), "127.0.0.9:1999".to_string()),
            ("HERALD_LIMITS_RECEIVE_MAXIMUM".to_string(), "7".to_string()),
            ("HERALD_DATA".to_string(), "/tmp/x y".to_string()),
        ];
        let config = StandaloneConfig::load(None, &env).expect("valid");
        assert_eq!(config.mqtt, "127.0.0.9:1999".parse().expect("addr"));
        assert_eq!(config.limits.receive_maximum, 7);
        assert_eq!(config.data, PathBuf::from("/tmp/x y"));
    }

    #[test]
    fn the_websocket_listener_is_off_unless_configured() {
        assert_eq!(StandaloneConfig::load(None, &[]).expect("valid").websocket, None);
        let env = vec![("HERALD_WEBSOCKET".to_string(), "127.0.0.1:8083".to_string())];
        let config = StandaloneConfig::load(None, &env).expect("valid");
        assert_eq!(config.websocket, Some("127.0.0.1:8083".parse().expect("addr")));
        let table: toml::Table = toml::from_str("websocket = \"127.0.0.1:9001\"").expect("TOML");
        let config: StandaloneConfig = toml::Value::Table(table).try_into().expect("valid");
        assert_eq!(config.websocket, Some("127.0.0.1:9001".parse().expect("addr")));
    }

    #[test]
    fn users_map_to_their_apps_and_anonymous_access_can_be_turned_off() {
        let text = "[auth]\nallow_anonymous = false\n[auth.users.alice]\npassword = \"p\"\napp = \"shop\"\n\
                    [auth.users.bob]\npassword = \"q\"\n";
        let config: StandaloneConfig =
            toml::Value::Table(toml::from_str(text).expect("TOML")).try_into().expect("valid");
        let auth = config.auth.authenticator().expect("valid users");
        let app = |username: &str, password: &[u8]| {
            let credentials =
                Credentials { client_id: "c", username: Some(username), password: Some(password) };
            auth.authenticate(credentials).map(|principal| principal.app)
        };
        assert_eq!(app("alice", b"p"), Ok(herald_core::AppId::new("shop").expect("valid")));
        assert_eq!(app("bob", b"q"), Ok(herald_core::AppId::default_app()));
        let anonymous = Credentials { client_id: "c", username: None, password: None };
        assert_eq!(auth.authenticate(anonymous), Err(herald_core::ReasonCode::NotAuthorized));
        let env = vec![("HERALD_AUTH_ALLOW_ANONYMOUS".to_string(), "false".to_string())];
        assert!(!StandaloneConfig::load(None, &env).expect("valid").auth.allow_anonymous);
    }

    #[test]
    fn a_user_has_a_password_or_a_scram_secret_but_not_both() {
        let secret = herald_gateway::scram::ScramSecret::generate(b"s3cret", 4096).encode();
        let env = |users: String| vec![("HERALD_AUTH_USERS".to_string(), users)];
        let config = StandaloneConfig::load(None, &env(format!("{{ carol = {{ scram = \"{secret}\" }} }}")))
            .expect("a SCRAM secret is enough");
        let auth = config.auth.authenticator().expect("valid");
        let credentials = Credentials { client_id: "c", username: Some("carol"), password: Some(b"s3cret") };
        assert!(auth.authenticate(credentials).is_ok(), "a plain password checks against the secret");
        for (users, named) in [
            (format!("{{ carol = {{ password = \"p\", scram = \"{secret}\" }} }}"), "auth.users.carol"),
            ("{ carol = {} }".to_string(), "auth.users.carol"),
            (
                "{ carol = { scram = \"SCRAM-SHA-256$1:AA==$AA==:AA==\" } }".to_string(),
                "auth.users.carol.scram",
            ),
        ] {
            let error = StandaloneConfig::load(None, &env(users.clone())).expect_err(&users).to_string();
            assert!(error.contains(named), "{users}: {error}");
        }
    }

    #[test]
    fn herald_ctl_reads_cluster_tls_from_its_variables_and_an_empty_one_is_unset() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let tls = ClusterTlsConfig::from_env(&vars(&[
            ("HERALD_CLUSTER_TLS_CA_FILE", "/ca.pem"),
            ("HERALD_CLUSTER_TLS_SERVER_NAME", "herald-router"),
            ("HERALD_CLUSTER_TLS_CERT_FILE", ""),
            ("HERALD_MQTT", "127.0.0.1:1883"),
        ]))
        .expect("read");
        assert_eq!(tls.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("herald-router"));
        assert_eq!(tls.cert_file, None, "empty is unset");
        let error = ClusterTlsConfig::from_env(&vars(&[("HERALD_CLUSTER_TLS_CA_FLIE", "/ca.pem")]))
            .expect_err("a misspelt variable")
            .to_string();
        assert!(error.contains("ca_flie"), "{error}");
    }
}
