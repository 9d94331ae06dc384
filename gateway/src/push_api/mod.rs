//! The push API (`docs/push-api.md`): what app backends call to reach
//! devices. Every gateway serves it; a send is checked here and forwarded
//! over the seam as one `Uplink::Push`, answered once the router has routed
//! it and made what it stored durable (ADR 0017).
//!
//! ```text
//!  POST /v1/apps/{app}/messages ─▶ key ─▶ parse ─▶ Uplink::Push ─▶ router
//!        202 {message_id, …}    ◀────────────── Downlink::Pushed ◀─┘
//! ```

mod admin;
mod devices;
mod events;
mod messages;
pub mod metrics;
mod openapi;
mod problem;
pub mod rate;
mod send;
mod users;

pub(crate) use admin::RuntimeKeys;
pub use admin::{KEY_PREFIX, OperatorToken};
pub use problem::Problem;
pub use send::AppLimits;

use crate::Shared;
use crate::registry::REQUEST_SEQ_BITS;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_core::{AppId, ErrorCode};
use herald_proto::seam::{Downlink, RequestId, Uplink};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How the push API listens and whom it serves.
#[derive(Debug, Clone)]
pub struct PushApiConfig {
    /// The HTTP listen address.
    pub listen: SocketAddr,
    /// The API keys.
    pub keys: Arc<ApiKeys>,
    /// Every app's limits, unless it has its own in `app_limits`.
    pub limits: AppLimits,
    /// The limits of apps that have their own.
    pub app_limits: HashMap<AppId, AppLimits>,
    /// Sends waiting for the router at most; more get 503 (admission).
    pub max_in_flight: usize,
    /// How long a send waits for the router's answer.
    pub timeout: Duration,
    /// Requests per second per app on this gateway, when the app has none
    /// of its own in `rates`.
    pub default_rate: u32,
    /// Requests per second of particular apps on this gateway.
    pub rates: HashMap<AppId, u32>,
    /// Device tokens, for the SSE stream of web devices.
    pub tokens: crate::device_token::DeviceTokens,
    /// An SSE stream ends after this long (the browser reconnects and
    /// resumes; spreads streams over gateways); `None`: it lasts.
    pub sse_lifetime: Option<Duration>,
    /// The token that authorises the admin API for every app; `None`: only
    /// app keys with the `admin` scope manage keys.
    pub operator_token: Option<OperatorToken>,
}

impl PushApiConfig {
    /// A configuration with the documented defaults.
    pub fn new(listen: SocketAddr, keys: ApiKeys) -> PushApiConfig {
        PushApiConfig {
            listen,
            keys: Arc::new(keys),
            limits: AppLimits::default(),
            app_limits: HashMap::new(),
            max_in_flight: 1024,
            timeout: Duration::from_secs(10),
            default_rate: rate::DEFAULT_RATE,
            rates: HashMap::new(),
            tokens: crate::device_token::DeviceTokens::default(),
            sse_lifetime: None,
            operator_token: None,
        }
    }
}

/// API keys from configuration: each belongs to one app. Only a digest of
/// each key is held.
#[derive(Debug, Default)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], (AppId, Scopes)>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// Nothing.
    pub const NONE: Scopes = Scopes(0);
    /// Send, validate and cancel messages.
    pub const SEND: Scopes = Scopes(1);
    /// Read message status, devices, aliases, counts and stats.
    pub const READ: Scopes = Scopes(2);
    /// Change devices: put, patch, delete, tag.
    pub const DEVICES: Scopes = Scopes(4);
    /// Make, list and revoke the app's API keys.
    pub const ADMIN: Scopes = Scopes(8);
    /// Everything.
    pub const ALL: Scopes = Scopes(15);

    const NAMES: [(&'static str, Scopes); 4] = [
        ("send", Scopes::SEND),
        ("read", Scopes::READ),
        ("devices", Scopes::DEVICES),
        ("admin", Scopes::ADMIN),
    ];

    /// Parses a scope's name (`send`, `read`, `devices`, `admin`, `all`).
    pub fn parse(name: &str) -> Option<Scopes> {
        if name == "all" {
            return Some(Scopes::ALL);
        }
        Scopes::NAMES.iter().find(|(n, _)| *n == name).map(|(_, scope)| *scope)
    }

    /// The names of these scopes.
    pub fn names(self) -> Vec<&'static str> {
        Scopes::NAMES.iter().filter(|(_, scope)| self.allow(*scope)).map(|(name, _)| *name).collect()
    }

    /// The scopes of bits `bits` (unknown bits are dropped).
    pub fn from_bits(bits: u8) -> Scopes {
        Scopes(bits & Scopes::ALL.0)
    }

    /// These scopes as bits.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// These and `other`.
    pub fn with(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    /// Whether these include `needed`.
    pub fn allow(self, needed: Scopes) -> bool {
        self.0 & needed.0 == needed.0
    }
}

impl ApiKeys {
    /// Adds `key` for `app`, with every scope.
    pub fn add(&mut self, key: &str, app: AppId) {
        self.add_scoped(key, app, Scopes::ALL);
    }

    /// Adds `key` for `app`, limited to `scopes`.
    pub fn add_scoped(&mut self, key: &str, app: AppId, scopes: Scopes) {
        self.by_digest.insert(Sha256::digest(key.as_bytes()).into(), (app, scopes));
    }

    /// Returns the app of the key whose digest is `digest`, and what it may do.
    fn app_of(&self, digest: &[u8; 32]) -> Option<&(AppId, Scopes)> {
        self.by_digest.get(digest)
    }
}

/// The connection id the push API's requests carry (connections start at 1):
/// the downlink's replies to them come here.
pub(crate) const API_CONNECTION: u64 = 0;

/// Sends waiting for the router's answer.
#[derive(Default)]
pub(crate) struct ApiRequests {
    seq: AtomicU64,
    waiting: Mutex<HashMap<RequestId, oneshot::Sender<Downlink>>>,
}

impl ApiRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, oneshot::Sender<Downlink>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request, unless `limit` are waiting already.
    pub(crate) fn begin(&self, limit: usize) -> Option<(RequestId, oneshot::Receiver<Downlink>)> {
        let mut waiting = self.lock();
        if waiting.len() >= limit {
            return None;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) & ((1 << REQUEST_SEQ_BITS) - 1);
        let request = (API_CONNECTION << REQUEST_SEQ_BITS) | seq;
        let (answer, answered) = oneshot::channel();
        waiting.insert(request, answer);
        Some((request, answered))
    }

    pub(crate) fn forget(&self, request: RequestId) {
        self.lock().remove(&request);
    }

    /// Hands a reply to its waiting send, if it still waits.
    pub(crate) fn answer(&self, request: RequestId, reply: Downlink) {
        if let Some(answer) = self.lock().remove(&request) {
            let _ = answer.send(reply);
        }
    }

    /// Whether a send still waits for `request` (a new router link asks
    /// the router again only for those).
    pub(crate) fn is_waiting(&self, request: RequestId) -> bool {
        self.lock().contains_key(&request)
    }
}

/// Binds the push API's listener.
pub(crate) fn bind(config: &PushApiConfig) -> std::io::Result<tokio::net::TcpListener> {
    crate::listen(config.listen)
}

/// Serves the push API on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    config: PushApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limiter = Mutex::new(rate::Limiter::new(config.default_rate, config.rates.clone()));
    let api = Arc::new(Api { shared, config, keys_in_flight: Mutex::default(), limiter });
    let mut routes = axum::Router::new();
    for op in openapi::OPERATIONS.iter().filter(|op| op.id != "streamEvents") {
        // Every operation has its handler (checked by a test below).
        if let Some(handler) = handler(op.method, op.id) {
            routes = routes.route(op.path, handler);
        }
    }
    let document = openapi::document().to_string();
    let tls = shared_tls(&api);
    let app = routes
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), guard))
        // Web devices authenticate with a device token, not an API key.
        .route("/v1/apps/{app}/sse", get(events::stream))
        .route(
            "/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(api.clone());
    let served = match tls {
        None => axum::serve(without_delay(listener), app).with_graceful_shutdown(shutdown).await,
        Some(tls) => {
            let timeout = api.shared.config.connect_timeout;
            match crate::tls::TlsListener::new(listener, tls, timeout, api.shared.clone()) {
                Ok(listener) => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
                Err(error) => Err(error),
            }
        }
    };
    if let Err(error) = served {
        tracing::warn!(%error, "push API listener failed");
    }
}

/// The listener with TCP_NODELAY set on every socket it accepts: without
/// it Nagle's algorithm holds an SSE event written while the previous one
/// is unacknowledged until the browser's delayed ACK (up to 40 ms).
fn without_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    })
}

/// The TLS configuration of the push API, when it is served over HTTPS.
fn shared_tls(api: &Api) -> Option<crate::tls::TlsConfig> {
    api.shared.config.tls.as_ref().filter(|t| t.push_api).map(|t| t.config.clone())
}

/// The handler of operation `id` (see [`openapi::OPERATIONS`]).
fn handler(method: &str, id: &str) -> Option<axum::routing::MethodRouter<Arc<Api>>> {
    let filter = match method {
        "get" => axum::routing::MethodFilter::GET,
        "put" => axum::routing::MethodFilter::PUT,
        "patch" => axum::routing::MethodFilter::PATCH,
        "delete" => axum::routing::MethodFilter::DELETE,
        _ => axum::routing::MethodFilter::POST,
    };
    use axum::routing::on;
    Some(match id {
        "sendMessage" => on(filter, messages::send),
        "validateMessage" => on(filter, messages::validate),
        "getMessage" => on(filter, messages::status),
        "cancelMessage" => on(filter, messages::cancel),
        "getDevice" => on(filter, devices::get),
        "putDevice" => on(filter, devices::put),
        "patchDevice" => on(filter, devices::patch),
        "deleteDevice" => on(filter, devices::delete),
        "getAlias" => on(filter, devices::alias),
        "tagDevices" => on(filter, devices::tag),
        "countAudience" => on(filter, devices::count),
        "getStats" => on(filter, devices::stats),
        "streamEvents" => on(filter, events::stream),
        "createKey" => on(filter, admin::create),
        "listKeys" => on(filter, admin::list_keys),
        "revokeKey" => on(filter, admin::revoke),
        "putUser" => on(filter, users::put),
        "getUser" => on(filter, users::get),
        "deleteUser" => on(filter, users::delete),
        "listUsers" => on(filter, users::list),
        _ => return None,
    })
}

/// What every handler shares.
pub(crate) struct Api {
    shared: Arc<Shared>,
    config: PushApiConfig,
    /// Idempotency keys of sends waiting for the router on this gateway.
    keys_in_flight: Mutex<std::collections::HashSet<(AppId, String)>>,
    /// Request rates per app.
    limiter: Mutex<rate::Limiter>,
}

/// Runs before every app's endpoint: the key must belong to the app of
/// the path, and the app must be within its rate; every answer then says
/// where the app stands (`RateLimit-*`).
async fn guard(
    axum::extract::State(api): axum::extract::State<Arc<Api>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let path = request.uri().path();
    let app = path.strip_prefix("/v1/apps/").and_then(|rest| rest.split('/').next()).unwrap_or("").to_owned();
    // What the endpoint needs (every scope for one the table does not know).
    let method = request.method().as_str().to_ascii_lowercase();
    let operation = openapi::find(&method, path);
    let needed = operation.map_or(Scopes::ALL, |op| op.scope);
    let operation = operation.map_or("unknown", |op| op.id);
    let response = guarded(&api, request, next, &app, needed).await;
    api.shared.api_metrics.record(operation, response.status().as_u16(), started.elapsed());
    response
}

/// The guard's checks and the endpoint, for [`guard`] to time.
async fn guarded(
    api: &Arc<Api>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
    app: &str,
    needed: Scopes,
) -> Response {
    let app = match api.authorize_for(request.headers(), app, needed) {
        Ok(app) => app,
        Err(problem) => return problem.into_response(),
    };
    let now_ms = api.shared.clock.now().0;
    let verdict = api.limiter.lock().unwrap_or_else(|p| p.into_inner()).take(&app, now_ms);
    let mut response = if verdict.allowed {
        next.run(request).await
    } else {
        let detail = format!("more than {} requests per second for this app on this gateway", verdict.limit);
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", detail);
        Problem { retry_after: Some(verdict.reset_seconds), ..problem }.into_response()
    };
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", verdict.limit.into());
    headers.insert("ratelimit-remaining", verdict.remaining.into());
    headers.insert("ratelimit-reset", verdict.reset_seconds.into());
    response
}

/// Holds an idempotency key for one send; lets it go when dropped.
pub(crate) struct KeyGuard<'a> {
    api: &'a Api,
    key: (AppId, String),
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.api.keys_in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl Api {
    /// Checks the bearer key against the app of the path.
    fn authorize(&self, headers: &HeaderMap, app: &str) -> Result<AppId, Problem> {
        self.authorize_for(headers, app, Scopes::NONE)
    }

    /// Checks the bearer key against the app of the path and the scope the
    /// endpoint needs: a key of the app from configuration or made at run
    /// time; for the admin endpoints, also the operator token.
    fn authorize_for(&self, headers: &HeaderMap, app: &str, needed: Scopes) -> Result<AppId, Problem> {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHENTICATED",
                    "send an API key as Authorization: Bearer <key>",
                )
            })?;
        let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
        if self.config.operator_token.as_ref().is_some_and(|token| token.is(&digest)) {
            if needed != Scopes::ADMIN {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "OPERATOR_TOKEN_ONLY_MANAGES_KEYS",
                    "the operator token manages API keys; call this endpoint with one of the app's keys",
                ));
            }
            return AppId::new(app)
                .map_err(|e| Problem::new(StatusCode::NOT_FOUND, "APP_INVALID", e.to_string()));
        }
        let found = match self.config.keys.app_of(&digest) {
            Some(found) => found.clone(),
            None => match self.shared.api_keys.find(&digest) {
                admin::Lookup::Found(app, scopes) => (app, scopes),
                admin::Lookup::Unknown => {
                    return Err(Problem::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "unknown API key"));
                }
                admin::Lookup::NotYet => {
                    return Err(Problem::unavailable(
                        "this gateway has not received the API keys made at run time yet; retry",
                    ));
                }
            },
        };
        let (owner, scopes) = &found;
        if owner.as_str() != app {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "this API key belongs to another app",
            ));
        }
        if !scopes.allow(needed) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "SCOPE_MISSING",
                "this API key may not call this endpoint",
            ));
        }
        Ok(owner.clone())
    }

    /// Takes `key` of `app` for one send, unless a send with it waits here.
    fn claim_key(&self, app: &AppId, key: &str) -> Option<KeyGuard<'_>> {
        let id = (app.clone(), key.to_owned());
        let fresh = self.keys_in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone());
        fresh.then_some(KeyGuard { api: self, key: id })
    }

    /// `app`'s limits.
    fn limits(&self, app: &AppId) -> &AppLimits {
        self.config.app_limits.get(app).unwrap_or(&self.config.limits)
    }

    /// Reads the request body up to `app`'s limit.
    async fn body(&self, app: &AppId, body: axum::body::Body) -> Result<bytes::Bytes, Problem> {
        let limit = self.limits(app).max_body_bytes;
        axum::body::to_bytes(body, limit).await.map_err(|_| {
            let detail = format!("the request body is larger than {limit} bytes");
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE", detail)
        })
    }

    /// Sends the uplink item `make` builds for a fresh request id, and
    /// waits for the router's reply (admission-controlled, bounded in time).
    async fn ask(&self, make: impl FnOnce(RequestId) -> Uplink) -> Result<Downlink, Problem> {
        match self.shared.ask_router(self.config.max_in_flight, self.config.timeout, make).await {
            Ok(reply) => Ok(reply),
            Err(Unanswered::Busy) => {
                let problem = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVER_BUSY",
                    "too many requests in flight",
                );
                Err(Problem { retry_after: Some(1), ..problem })
            }
            Err(Unanswered::NotTaken) => {
                Err(Problem::unavailable("the router link is not taking requests; retry"))
            }
            Err(Unanswered::NoReply) => Err(Problem::unavailable(
                "no router answered in time; the request may or may not have been applied",
            )),
        }
    }
}

/// Why a request to the router got no reply.
pub(crate) enum Unanswered {
    /// `limit` requests were waiting already.
    Busy,
    /// The router link did not take it in time.
    NotTaken,
    /// No router answered in time: it may or may not have been applied.
    NoReply,
}

impl Shared {
    /// Sends the uplink item `make` builds for a fresh request id and waits
    /// for the router's reply, with at most `limit` such requests waiting
    /// (the push API's and device-user lookups together), all within
    /// `timeout`.
    pub(crate) async fn ask_router(
        &self,
        limit: usize,
        timeout: std::time::Duration,
        make: impl FnOnce(RequestId) -> Uplink,
    ) -> Result<Downlink, Unanswered> {
        let Some((id, answered)) = self.api.begin(limit) else { return Err(Unanswered::Busy) };
        let deadline = tokio::time::Instant::now() + timeout;
        let sent = tokio::time::timeout_at(deadline, self.uplink.send(make(id))).await;
        if !matches!(sent, Ok(Ok(()))) {
            self.api.forget(id);
            return Err(Unanswered::NotTaken);
        }
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(reply)) => Ok(reply),
            _ => {
                self.api.forget(id);
                Err(Unanswered::NoReply)
            }
        }
    }
}

/// Reads a tag expression as the push API does (for the fuzz target).
#[doc(hidden)]
pub fn fuzz_tag_expr(
    value: &serde_json::Value,
    limits: &herald_core::directory::DirectoryLimits,
) -> Result<herald_core::directory::TagExpr, Problem> {
    devices::tag_expr(value, "/tags", limits)
}

/// Reads a send body as `POST …/messages` does and, when it parses, makes
/// its message; panics if that message breaks the payload limit (for the
/// fuzz target).
#[doc(hidden)]
pub fn fuzz_send(body: &[u8], limits: &AppLimits) {
    let Ok(request) = send::parse(body, limits) else { return };
    let app = AppId::new("fuzz").expect("a valid app");
    let now = herald_core::UnixMillis(1_000_000);
    if let Ok(message) = request.message(app, herald_core::MessageId(1), now, limits) {
        assert!(message.payload.len() <= limits.max_payload, "an envelope over the payload limit");
    }
}

/// The problem for a refusal the router answered with `code`.
fn refused(code: ErrorCode, what: &str) -> Problem {
    match code {
        ErrorCode::NotFound => Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no such {what}")),
        ErrorCode::Conflict => Problem::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("the {what} conflicts with an earlier request"),
        ),
        ErrorCode::TooLarge => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "TAG_LIMIT_EXCEEDED",
            "a device would have more tags than the app's limit (max_tags_per_device)",
        ),
        ErrorCode::QuotaExceeded => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ALIAS_LIMIT_EXCEEDED",
            "the alias would name more devices than the app's limit (max_devices_per_alias)",
        ),
        code => {
            let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let problem =
                Problem::new(status, "UNAVAILABLE", format!("the router refused: {}", code.as_str()));
            Problem { retry_after: Some(1), ..problem }
        }
    }
}

/// Turns a handler's result into its response.
fn respond(result: Result<Response, Problem>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_sockets_send_small_writes_at_once() {
        use axum::serve::Listener;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut listener = super::without_delay(listener);
        let _client = tokio::net::TcpStream::connect(address).await.expect("connect");
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().expect("TCP_NODELAY readable"), "Nagle's algorithm is off");
    }

    #[test]
    fn every_documented_operation_is_served() {
        for op in super::openapi::OPERATIONS {
            assert!(super::handler(op.method, op.id).is_some(), "{} has no handler", op.id);
        }
    }
}
