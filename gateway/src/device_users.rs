//! Device users kept outside configuration (ADR 0026): in the router,
//! made through the admin API, and optionally in Redis in EMQX's layout.
//! Looked up when a device presents a user name and password that the
//! configuration does not know; the password is checked here, against a
//! salted hash, and never leaves the gateway.

use crate::Shared;
use herald_core::{AppId, ErrorCode};
use herald_proto::seam::{DirectoryAnswer, DirectoryOp, Downlink, Uplink};
use herald_proto::users::{HashAlgorithm, PasswordHash, SaltPosition, UserOp, valid_username};
use herald_redis::{Redis, RedisAddress, RedisError, Reply};
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tracing::warn;

/// Lookups waiting for the router at most (with the push API's requests);
/// past it a CONNECT that needs one gets CONNACK 0x88 (server unavailable).
const MAX_ROUTER_LOOKUPS: usize = 4096;

/// Where device users are looked up.
#[derive(Debug, Clone)]
pub struct DeviceUsersConfig {
    /// Ask the router (users made through the admin API).
    pub router: bool,
    /// Ask Redis; `None`: not.
    pub redis: Option<RedisUsersConfig>,
    /// How long one lookup may take.
    pub timeout: Duration,
}

impl Default for DeviceUsersConfig {
    fn default() -> Self {
        DeviceUsersConfig { router: true, redis: None, timeout: Duration::from_secs(3) }
    }
}

/// Device users kept in Redis: one hash per user, EMQX's layout
/// (`HMGET mqtt_user:<name> password_hash salt`), plus an optional `app`
/// field naming the user's app.
#[derive(Debug, Clone)]
pub struct RedisUsersConfig {
    /// Where Redis is.
    pub address: RedisAddress,
    /// The key of a user's hash; `%u` stands for the user name.
    pub key: String,
    /// How the passwords were hashed.
    pub algorithm: HashAlgorithm,
    /// Where the salt goes (SHA algorithms).
    pub salt_position: SaltPosition,
    /// PBKDF2's iteration count.
    pub iterations: u32,
    /// The app of users whose hash has no `app` field.
    pub app: AppId,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The user, with its app and password hash.
    Found(AppId, PasswordHash),
    /// No source knows the name.
    Unknown,
    /// A source that might know it cannot be asked now.
    Unavailable,
    /// A source keeps the name, but not in a form that can be checked:
    /// nobody gets in as this user.
    Unusable,
}

/// Lookups per source and outcome, for `/metrics`.
#[derive(Debug, Default)]
pub struct LookupCounters {
    /// Indexed by source (router, Redis) then outcome (found, unknown,
    /// unavailable).
    counts: [[AtomicU64; 3]; 2],
}

impl LookupCounters {
    /// `(source, outcome, count)` for every pair.
    pub fn all(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut all = Vec::new();
        for (s, source) in ["router", "redis"].into_iter().enumerate() {
            for (o, outcome) in ["found", "unknown", "unavailable"].into_iter().enumerate() {
                all.push((source, outcome, crate::read(&self.counts[s][o])));
            }
        }
        all
    }

    fn count(&self, source: usize, lookup: &Lookup) {
        let outcome = match lookup {
            Lookup::Found(..) | Lookup::Unusable => 0,
            Lookup::Unknown => 1,
            Lookup::Unavailable => 2,
        };
        crate::GatewayCounters::add(&self.counts[source][outcome], 1);
    }
}

/// The sources of a gateway.
pub(crate) struct DeviceUsers {
    router: bool,
    timeout: Duration,
    /// Redis, with how its users are kept.
    redis: Option<(Redis, RedisUsersConfig)>,
    pub(crate) counters: LookupCounters,
}

impl DeviceUsers {
    pub(crate) fn new(config: DeviceUsersConfig) -> DeviceUsers {
        let timeout = config.timeout;
        let redis = config.redis.map(|r| (Redis::new(r.address.clone(), timeout), r));
        DeviceUsers { router: config.router, timeout, redis, counters: LookupCounters::default() }
    }

    /// Whether any source is asked.
    pub(crate) fn any(&self) -> bool {
        self.router || self.redis.is_some()
    }

    /// Looks `username` up: in the router first, then in Redis.
    pub(crate) async fn lookup(&self, shared: &Shared, username: &str) -> Lookup {
        if !valid_username(username) {
            return Lookup::Unknown;
        }
        if self.router {
            let found = in_router(shared, username, self.timeout).await;
            self.counters.count(0, &found);
            if found != Lookup::Unknown {
                return found;
            }
        }
        if let Some((redis, config)) = &self.redis {
            let found = in_redis(redis, config, username).await;
            self.counters.count(1, &found);
            return found;
        }
        Lookup::Unknown
    }
}

/// Asks the router for `username`, as the push API asks it for devices.
async fn in_router(shared: &Shared, username: &str, timeout: Duration) -> Lookup {
    let op = DirectoryOp::Users(UserOp::Find { username: username.to_owned() });
    // A user name names no app: the router looks in all of them.
    let ask =
        |request| Uplink::Directory { request, app: AppId::default_app(), op, limits: Default::default() };
    match shared.ask_router(MAX_ROUTER_LOOKUPS, timeout, ask).await {
        Ok(Downlink::DirectoryDone { result: Ok(DirectoryAnswer::Users(users)), .. }) => {
            match users.into_iter().next() {
                Some(user) => Lookup::Found(user.app, user.password),
                None => Lookup::Unknown,
            }
        }
        Ok(Downlink::DirectoryDone { result: Err(ErrorCode::NotFound), .. }) => Lookup::Unknown,
        _ => Lookup::Unavailable,
    }
}

/// Reads `username`'s hash from Redis.
async fn in_redis(redis: &Redis, config: &RedisUsersConfig, username: &str) -> Lookup {
    let key = config.key.replace("%u", username);
    let fields: [&[u8]; 5] = [b"HMGET", key.as_bytes(), b"password_hash", b"salt", b"app"];
    let reply = match redis.command(&fields).await {
        Ok(Reply::Array(reply)) if reply.len() == 3 => reply,
        Ok(_) => {
            warn!(key, "Redis answered HMGET with something else than three fields");
            return Lookup::Unavailable;
        }
        Err(RedisError::Refused(error)) => {
            // WRONGTYPE and the like: the key is not a user's hash.
            warn!(key, error, "Redis refused a user lookup");
            return Lookup::Unknown;
        }
        Err(error) => {
            warn!(%error, "a device user lookup in Redis failed");
            return Lookup::Unavailable;
        }
    };
    let text = |reply: &Reply| match reply {
        Reply::Bulk(bytes) => Some(bytes.clone()),
        _ => None,
    };
    let Some(hash) = text(&reply[0]) else { return Lookup::Unknown };
    let salt = text(&reply[1]).unwrap_or_default();
    let app = match text(&reply[2]) {
        None => Some(config.app.clone()),
        Some(app) => String::from_utf8(app).ok().and_then(|app| AppId::new(app).ok()),
    };
    let hash = std::str::from_utf8(&hash).ok().and_then(|hex| {
        crate::password::from_hex(config.algorithm, config.salt_position, config.iterations, hex, &salt)
    });
    match (app, hash) {
        (Some(app), Some(hash)) => Lookup::Found(app, hash),
        _ => {
            warn!(key, "a device user in Redis has a malformed password_hash or app");
            Lookup::Unusable
        }
    }
}
