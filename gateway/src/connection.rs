//! One task per connection: it owns the socket and the session state
//! machine, and carries out the machine's actions.
//!
//! ```text
//!  socket ──bytes──▶ Codec ──Packet──▶ Session ──Action──▶ write / uplink / index / close
//!  ConnHandle inbox (deliveries, replies) ──▶ Session
//!  ConnHandle flags (revoked, keep-alive, shutdown) ──▶ close with a reason
//! ```
//!
//! The socket is a [`Transport`]: TCP or WebSocket, driven by this same
//! code (the task is generic over it, so each keeps its own size).
//!
//! Memory: an idle connection holds no read buffer, no write buffer and no
//! queue; the shared handle allocates its inbox on first use and frees it
//! when drained. Keep-alive is checked by one sweeper for all connections.
//!
//! Hot path: the read → decode → session loop and `carry_out`.

use crate::Shared;
use crate::auth::{AuthStep, Principal, auth_packet};
use crate::device_users::Lookup;
use crate::handshake::{self, Accepted, Identity};
use crate::registry::{ConnHandle, GatewayCounters, Inbound, REQUEST_SEQ_BITS, RouteChanges, message_id};
use crate::registry_links::{ClaimTerms, OwnerClaim};
use crate::session::{Action, Close, Session};
use crate::transport::{READ_CHUNK, Received, Transport};
use bytes::{Bytes, BytesMut};
use herald_core::{ByteString, ErrorCode, ReasonCode, SessionKey, UnixMillis};
use herald_mqtt::{Codec, ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion};
use herald_proto::seam::{Claim, ClaimGrant, Downlink, QueuedMessage, Release, Uplink};
use herald_proto::users::HashAlgorithm;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use tracing::debug;

/// How long a gateway waits for the grant of a claim its connection gave
/// up on, to release it.
const ABANDONED_CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long one write may wait for a client that does not read.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Read granularity before CONNECT: most CONNECT packets are far smaller.
const CONNECT_CHUNK: usize = 512;

/// Serves one accepted socket (TCP, or WebSocket after its upgrade) until
/// it closes.
///
/// The task's own future stays small: each phase runs in a boxed future
/// that exists only while the phase does, so an idle connection pays for
/// the idle loop's state and nothing else.
pub(crate) async fn serve<T: Transport>(transport: T, shared: Arc<Shared>) {
    // Admitted by the listener (`Shared::admits_connection`); the place is
    // given back at each way out rather than by a guard, which would cost
    // every idle connection a word of future.
    let Some(opened) = Box::pin(open(transport, &shared)).await else {
        return shared.release_socket();
    };
    let Some((mut connection, mut session, actions)) = Box::pin(start(opened, shared.clone())).await else {
        return shared.release_socket();
    };
    let close = connection.run(&mut session, actions).await;
    Box::pin(connection.finish(&mut session, close)).await;
    shared.release_socket();
}

/// A socket whose CONNECT has arrived (and whose enhanced authentication,
/// if the CONNECT asked for one, has succeeded).
struct Opened<T> {
    transport: T,
    codec: Codec,
    buffer: Option<BytesMut>,
    connect: Box<herald_mqtt::Connect>,
    proven: Option<Proven>,
}

/// The outcome of a successful enhanced-authentication exchange.
struct Proven {
    principal: Principal,
    method: ByteString,
    data: Option<Bytes>,
}

/// Waits for the CONNECT and runs its authentication exchange, all within
/// the connect timeout.
async fn open<T: Transport>(mut transport: T, shared: &Shared) -> Option<Opened<T>> {
    let mut codec = Codec::new(ProtocolVersion::V311, shared.config.limits.max_packet_size);
    let mut buffer: Option<BytesMut> = None;
    let handshake = async {
        let connect = match read_packet(&mut transport, &mut codec, &mut buffer).await {
            Ok(Packet::Connect(connect)) => connect,
            // [MQTT-3.1.0-1]: the first packet must be CONNECT.
            Ok(_) | Err(None) => return Err(None),
            Err(Some(error)) => return Err(connect_refusal(&error)),
        };
        let proven = match connect.properties.authentication_method() {
            Some(method) if connect.protocol == ProtocolVersion::V5 => {
                let data = connect.properties.authentication_data().cloned();
                Some(exchange(&mut transport, &mut codec, &mut buffer, shared, method, data).await?)
            }
            _ => None,
        };
        Ok((connect, proven))
    };
    match tokio::time::timeout(shared.config.connect_timeout, handshake).await {
        Ok(Ok((connect, proven))) => Some(Opened { transport, codec, buffer, connect, proven }),
        Ok(Err(refusal)) => {
            if let Some(packet) = refusal {
                let _ = write_packets(&mut transport, &codec, &[packet]).await;
            }
            None
        }
        Err(_elapsed) => {
            debug!("connect timeout");
            None
        }
    }
}

/// Runs the enhanced-authentication exchange a CONNECT started (MQTT 5
/// §4.12): AUTH 0x18 back and forth until the method succeeds or fails.
/// Returns the proven identity, or the CONNACK refusing the connection.
async fn exchange<T: Transport>(
    transport: &mut T,
    codec: &mut Codec,
    buffer: &mut Option<BytesMut>,
    shared: &Shared,
    method: &str,
    mut data: Option<Bytes>,
) -> Result<Proven, Option<Packet>> {
    let v5 = ProtocolVersion::V5;
    let Some(mut exchange) = shared.authenticator.begin(method) else {
        return Err(Some(handshake::refusal(
            v5,
            ReasonCode::BadAuthenticationMethod,
            "authentication method not supported",
        )));
    };
    loop {
        match exchange.step(data.as_deref()) {
            Ok(AuthStep::Done { principal, data }) => {
                return Ok(Proven { principal, method: ByteString::from(method), data });
            }
            Ok(AuthStep::Continue(reply)) => {
                let auth =
                    auth_packet(ReasonCode::ContinueAuthentication, ByteString::from(method), Some(reply));
                write_packets(transport, codec, &[Packet::Auth(auth)]).await.map_err(|_| None)?;
            }
            Err(failure) => return Err(Some(handshake::refusal(v5, failure.code, &failure.detail))),
        }
        match read_packet(transport, codec, buffer).await {
            Ok(Packet::Auth(auth))
                if auth.reason_code == ReasonCode::ContinueAuthentication
                    && auth.properties.authentication_method() == Some(method) =>
            {
                data = auth.properties.authentication_data().cloned();
            }
            Ok(Packet::Auth(_)) => {
                return Err(Some(handshake::refusal(
                    v5,
                    ReasonCode::ProtocolError,
                    "[MQTT-4.12.0-3] AUTH must continue the exchange (0x18) with the method of CONNECT",
                )));
            }
            Ok(Packet::Disconnect(_)) | Err(None) => return Err(None),
            Ok(_) => {
                return Err(Some(handshake::refusal(
                    v5,
                    ReasonCode::ProtocolError,
                    "[MQTT-3.1.2-30] only AUTH or DISCONNECT may precede CONNACK",
                )));
            }
            Err(Some(error)) => {
                return Err(Some(handshake::refusal(v5, error.reason_code(), "malformed or invalid packet")));
            }
        }
    }
}

/// Reads until the next whole packet. `Err(None)` means the socket closed
/// or failed; `Err(Some(_))` that the bytes do not decode.
async fn read_packet<T: Transport>(
    transport: &mut T,
    codec: &mut Codec,
    buffer: &mut Option<BytesMut>,
) -> Result<Packet, Option<DecodeError>> {
    loop {
        if let Some(buf) = buffer.as_mut() {
            match codec.decode(buf) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(error) => return Err(Some(error)),
            }
        }
        std::future::poll_fn(|cx| transport.poll_readable(cx)).await.map_err(|_| None)?;
        match transport.read_available(buffer, CONNECT_CHUNK) {
            Received::Bytes | Received::Nothing => {}
            Received::Closed | Received::TooLarge | Received::Failed => return Err(None),
        }
    }
}

/// Whether the access rules let the client publish its will.
fn will_allowed(shared: &Shared, accepted: &handshake::Accepted, will: &herald_proto::seam::Will) -> bool {
    let acl = &shared.config.limits.acl;
    let who = crate::acl::Client {
        app: &accepted.key.app,
        client: accepted.key.client.as_str(),
        user: accepted.username.as_deref(),
    };
    acl.is_open() || acl.allows(who, crate::acl::Access::Publish, will.message.topic.as_str())
}

/// A malformed CONNECT gets a CONNACK with a reason when the version is
/// known well enough to answer [MQTT-3.1.4-?]; otherwise the socket closes.
fn connect_refusal(error: &DecodeError) -> Option<Packet> {
    let code = error.reason_code();
    (code == ReasonCode::UnsupportedProtocolVersion).then(|| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: code,
            properties: Properties::default(),
        })
    })
}

/// Accepts or refuses the CONNECT, claims the session, and returns the
/// running connection with the actions that open it (CONNACK, resumed
/// subscriptions and messages).
/// The session is boxed: its state is the bulk of an idle connection, and
/// a box of its exact size beats a task cell rounded up to 128 bytes.
async fn start<T: Transport>(
    opened: Opened<T>,
    shared: Arc<Shared>,
) -> Option<(Connection<T>, Box<Session>, Vec<Action>)> {
    let Opened { mut transport, codec, buffer, connect, proven } = opened;
    // Overload is answered before any work is spent on the CONNECT.
    if let Err(code) = shared.admits_connect() {
        let detail = match code {
            ReasonCode::ServerBusy => "the server is past its memory mark; connect again later",
            _ => "too many connections per second; connect again later",
        };
        let _ = write_packets(&mut transport, &codec, &[handshake::refusal(connect.protocol, code, detail)])
            .await;
        return None;
    }
    let now = shared.clock.now();
    let will_id = message_id(shared.node, now.0, &shared.message_sequence);
    let assign = || format!("herald-{:016x}", shared.message_sequence.fetch_add(1, Ordering::Relaxed));
    let identity = match proven {
        Some(Proven { principal, method, data }) => Identity::Proven { principal, method, data },
        None => match stored_user(&shared, &connect).await {
            None => Identity::Password(&*shared.authenticator),
            Some(Ok(principal)) => Identity::Verified(principal),
            Some(Err((code, detail))) => {
                let _ = write_packets(
                    &mut transport,
                    &codec,
                    &[handshake::refusal(connect.protocol, code, detail)],
                )
                .await;
                return None;
            }
        },
    };
    let accepted = match handshake::accept(&connect, &shared.config.limits, identity, assign, will_id, now) {
        // A client certificate names the one client id it may use.
        Ok(accepted)
            if transport.certificate_name().is_some_and(|name| name != accepted.key.client.as_str()) =>
        {
            GatewayCounters::add(&shared.counters.certificate_mismatches, 1);
            let detail = "the client id is not the one the client certificate names";
            let refusal = handshake::refusal(connect.protocol, ReasonCode::NotAuthorized, detail);
            let _ = write_packets(&mut transport, &codec, &[refusal]).await;
            return None;
        }
        // A will is a publish the client asks for now: the rules apply.
        Ok(accepted)
            if accepted.will.as_ref().is_some_and(|will| !will_allowed(&shared, &accepted, will)) =>
        {
            GatewayCounters::add(&shared.counters.acl_denied_publish, 1);
            let detail = "the access rules do not let this client publish to its will topic";
            let refusal = handshake::refusal(connect.protocol, ReasonCode::NotAuthorized, detail);
            let _ = write_packets(&mut transport, &codec, &[refusal]).await;
            return None;
        }
        Ok(accepted) => accepted,
        Err(connack) => {
            let _ = write_packets(&mut transport, &codec, &[connack]).await;
            return None;
        }
    };
    drop(connect);
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let handle = Arc::new(ConnHandle::new(id, accepted.key.clone(), now.0));
    if let Some(until) = accepted.valid_until {
        handle.set_valid_until(until.0);
    }
    shared.connections.insert(handle.clone());
    GatewayCounters::add(&shared.counters.connections_opened, 1);
    let grant = match claim(&shared, &handle, &accepted).await {
        ClaimOutcome::Granted(grant) => grant,
        outcome => {
            let refusal = ConnAck {
                session_present: false,
                reason_code: ReasonCode::ServerUnavailable,
                properties: Properties::default(),
            };
            let _ = write_packets(&mut transport, &codec, &[Packet::ConnAck(refusal)]).await;
            if matches!(outcome, ClaimOutcome::TimedOut) {
                // The router may still grant it: give the session back then,
                // or it would stay "online" here with nobody to deliver to.
                tokio::spawn(abandon_claim(shared.clone(), handle, accepted.expiry_seconds));
            } else {
                shared.connections.remove(&handle);
            }
            shared.counters.connections_closed.count(&unavailable());
            return None;
        }
    };
    handle.set_epoch(grant.epoch);
    handle.set_keep_alive(accepted.keep_alive);
    let mut session =
        Box::new(Session::new(&accepted, shared.config.limits.clone(), grant.epoch, id << REQUEST_SEQ_BITS));
    // Bytes pipelined after CONNECT stay; an empty buffer is freed so an
    // idle connection holds none.
    let buffer = buffer.filter(|b| !b.is_empty());
    let connection = Connection { transport, codec, buffer, handle, shared };
    let mut actions = vec![Action::Send(Session::connack(&accepted, grant.session_present))];
    session.note_stored(&grant.queued);
    session.resume(grant.subscriptions, grant.queued, now, &mut actions);
    Some((connection, session, actions))
}

/// Checks the CONNECT's user name and password against the device users
/// kept in the router or in Redis (ADR 0026), when the configuration does
/// not know the name and the password is not a device token. `None`: no
/// such user; the configured authenticator decides.
async fn stored_user(
    shared: &Shared,
    connect: &Connect,
) -> Option<Result<Principal, (ReasonCode, &'static str)>> {
    let (Some(username), Some(password)) = (connect.username.as_deref(), connect.password.as_deref()) else {
        return None;
    };
    if !shared.users.any()
        || shared.authenticator.knows(username)
        || crate::device_token::looks_like_token(password)
    {
        return None;
    }
    let refused = (ReasonCode::BadUserNameOrPassword, "bad user name or password");
    let (app, hash) = match shared.users.lookup(shared, username).await {
        Lookup::Unknown => return None,
        Lookup::Unavailable => {
            let detail = "the device user store cannot be reached; connect again later";
            return Some(Err((ReasonCode::ServerUnavailable, detail)));
        }
        Lookup::Unusable => return Some(Err(refused)),
        Lookup::Found(app, hash) => (app, hash),
    };
    let matches = if hash.algorithm == HashAlgorithm::Pbkdf2Sha256 {
        // Thousands of HMACs: off the threads that serve connections.
        let password = password.to_vec();
        tokio::task::spawn_blocking(move || crate::password::verify(&hash, &password)).await.unwrap_or(false)
    } else {
        crate::password::verify(&hash, password)
    };
    Some(if matches {
        Ok(Principal { app, username: Some(ByteString::from(username)), valid_until: None })
    } else {
        Err(refused)
    })
}

/// Sends the claim and waits for the router's grant.
/// Waits for the router's answer to this connection's claim (the grant, or
/// `None` for a refusal). Items after the answer (deliveries and handovers
/// that follow the grant) are put back for the session; nothing can come
/// before it.
async fn claimed(handle: &ConnHandle) -> Result<ClaimGrant, ErrorCode> {
    loop {
        handle.news().await;
        let mut items = handle.take_inbox().unwrap_or_default();
        while let Some(item) = items.pop_front() {
            if let Inbound::Reply(Downlink::Claimed { result, .. }) = item {
                handle.put_back(items);
                return result;
            }
        }
    }
}

/// How a claim ended.
enum ClaimOutcome {
    /// The router granted the session.
    Granted(ClaimGrant),
    /// The router refused it, or the uplink is closed.
    Refused,
    /// No answer within the claim timeout: a grant may still come.
    TimedOut,
}

/// Waits for the grant of a claim the connection gave up on, and releases
/// the session at once (without its will; its queue goes back), so the
/// router does not keep it owned by a connection that is gone.
async fn abandon_claim(shared: Arc<Shared>, handle: Arc<ConnHandle>, expiry_seconds: u32) {
    let late = tokio::time::timeout(ABANDONED_CLAIM_WAIT, claimed(&handle)).await.ok().and_then(Result::ok);
    if let Some(grant) = late {
        let key = SessionKey::clone(&handle.key);
        let filters: Vec<_> = grant.subscriptions.iter().map(|s| s.filter.clone()).collect();
        shared
            .change_index(|index, changes| {
                for filter in &filters {
                    index.remove(&key.app, filter, handle.id, changes);
                }
            })
            .await;
        if let Some(links) = shared.registry_links.get() {
            links.release(&key, grant.epoch, expiry_seconds, false);
        }
        let release = Release {
            request: (handle.id << REQUEST_SEQ_BITS) | ((1 << REQUEST_SEQ_BITS) - 1),
            session: key,
            epoch: grant.epoch,
            expiry_seconds,
            publish_will: false,
            pending: grant.queued,
        };
        let _ = shared.request(Uplink::Release(release)).await;
    }
    shared.connections.remove(&handle);
}

async fn claim(shared: &Shared, handle: &ConnHandle, accepted: &Accepted) -> ClaimOutcome {
    let request = handle.id << REQUEST_SEQ_BITS;
    handle.set_terms(accepted.expiry_seconds, accepted.will.clone());
    let deadline = tokio::time::Instant::now() + shared.config.claim_timeout;
    let mut stale_refusals = 0;
    loop {
        // In a router cluster the session's shard owner grants the epoch
        // first (ADR 0033); the leader then takes the claim with it. An
        // owner that holds a transient session's will is told what became
        // of the claim: only an accepted connection's will is published.
        let (granted, settle) = match shared.registry_links.get() {
            Some(links) => {
                let patience = deadline.saturating_duration_since(tokio::time::Instant::now());
                let terms = ClaimTerms {
                    session: &accepted.key,
                    clean_start: accepted.clean_start,
                    expiry_seconds: accepted.expiry_seconds,
                    will: accepted.will.as_deref(),
                    connection: handle.id,
                };
                match links.claim(&terms, stale_refusals, patience).await {
                    OwnerClaim::Granted { epoch, holds_will, owner, .. } => {
                        let held = holds_will && accepted.expiry_seconds == 0;
                        (Some(epoch), held.then_some((links, epoch, owner)))
                    }
                    OwnerClaim::NoShardTable => (None, None),
                    OwnerClaim::NotGranted => return ClaimOutcome::Refused,
                }
            }
            None => (None, None),
        };
        // Only a claim with a will has anything to settle.
        let settled = |accepted_now: bool| async move {
            if let Some((links, epoch, owner)) = settle.filter(|_| accepted.will.is_some()) {
                links.settled(owner, &accepted.key, epoch, accepted_now).await;
            }
        };
        let claim = Claim {
            request,
            session: SessionKey::clone(&accepted.key),
            clean_start: accepted.clean_start,
            expiry_seconds: accepted.expiry_seconds,
            // The owner holds it.
            will: if settle.is_some() { None } else { accepted.will.clone() },
            granted,
        };
        if shared.request(Uplink::Claim(claim)).await.is_err() {
            settled(false).await;
            return ClaimOutcome::Refused;
        }
        match tokio::time::timeout_at(deadline, claimed(handle)).await {
            Ok(Ok(grant)) => {
                settled(true).await;
                return ClaimOutcome::Granted(grant);
            }
            // A newer claim reached the leader first with a later grant, or
            // the leader granted the session's epoch itself (a gateway of
            // an earlier version): this connection claims again at the
            // owner, whose counter jumps further ahead each time.
            Ok(Err(ErrorCode::StaleEpoch)) if granted.is_some() => {
                settled(false).await;
                stale_refusals += 1;
                continue;
            }
            Ok(Err(_)) => {
                settled(false).await;
                return ClaimOutcome::Refused;
            }
            // No answer in time: the connection is given up (a late grant
            // is released without a will).
            Err(_) => {
                settled(false).await;
                return ClaimOutcome::TimedOut;
            }
        }
    }
}

/// Why an idle connection woke up.
enum Wake {
    /// The socket has bytes (or end of stream).
    Readable,
    /// Another task handed over deliveries, replies or flags.
    News,
    /// The socket failed.
    Failed,
}

/// A running connection: its transport, codec and the bytes of a packet
/// still arriving.
struct Connection<T> {
    transport: T,
    codec: Codec,
    buffer: Option<BytesMut>,
    handle: Arc<ConnHandle>,
    shared: Arc<Shared>,
}

impl<T: Transport> Connection<T> {
    /// Runs the session until it closes; returns why.
    async fn run(&mut self, session: &mut Session, mut actions: Vec<Action>) -> Close {
        // Packets that arrived with the CONNECT are decoded now: the socket
        // may have nothing more to say.
        if let Err(close) = self.decode(session, self.shared.clock.now(), &mut actions) {
            actions.push(Action::Close(close));
        }
        loop {
            if !actions.is_empty() {
                if let Some(close) = Box::pin(self.carry_out(session, &mut actions)).await {
                    return close;
                }
                // An idle connection keeps no action buffer.
                actions = Vec::new();
            }
            self.handle.set_free_window(session.free_window());
            self.handle.set_awaiting_since(session.oldest_awaiting().map(|t| t.0));
            if let Some(close) = self.check_flags() {
                return close;
            }
            // One small poll function instead of `select!` over `readable()`
            // and a notification future: the idle connection's future holds
            // two references, not two waiter nodes.
            let (transport, handle) = (&mut self.transport, &self.handle);
            let wake = std::future::poll_fn(|cx| {
                if handle.poll_news(cx) {
                    return Poll::Ready(Wake::News);
                }
                match transport.poll_readable(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Wake::Readable),
                    Poll::Ready(Err(_)) => Poll::Ready(Wake::Failed),
                    Poll::Pending => Poll::Pending,
                }
            });
            let wake = wake.await;
            // Before anything else: a connection that lost its session (or
            // must go) reads, delivers and writes nothing more. Deliveries
            // still in its inbox go back with its release.
            if let Some(close) = self.check_flags() {
                return close;
            }
            match wake {
                Wake::Readable => {
                    if let Err(close) = self.read(session, &mut actions) {
                        actions.push(Action::Close(close));
                    }
                }
                Wake::News => {}
                Wake::Failed => return abrupt(),
            }
            let now = self.shared.clock.now();
            for item in self.handle.take_inbox().into_iter().flatten() {
                match item {
                    Inbound::Deliver(queued) => session.deliver(queued, now, &mut actions),
                    Inbound::Reply(reply) => session.on_reply(reply, now, &mut actions),
                    Inbound::Handover(pending) => session.resume(Vec::new(), pending, now, &mut actions),
                    Inbound::Retract(message) => session.retract(message, &mut actions),
                }
            }
            if self.handle.take_overdue() {
                let timeout = self.shared.config.router_reply_timeout.as_millis() as u64;
                let given_up = session.expire_requests(now, timeout, &mut actions);
                if !given_up.is_empty() {
                    GatewayCounters::add(&self.shared.counters.requests_given_up, given_up.len() as u64);
                    self.shared.given_up.lock().unwrap_or_else(|p| p.into_inner()).extend(given_up);
                }
            }
        }
    }

    fn check_flags(&self) -> Option<Close> {
        if self.handle.is_revoked() {
            return Some(Close {
                reason: ReasonCode::SessionTakenOver,
                detail: "session taken over by another connection",
                notify: true,
                publish_will: false,
            });
        }
        if self.handle.credentials_expired() {
            // A device token ran out: the device connects again with a new one.
            return Some(Close {
                reason: ReasonCode::NotAuthorized,
                detail: "the device token expired",
                notify: true,
                publish_will: true,
            });
        }
        if self.handle.keep_alive_expired() {
            return Some(Close {
                reason: ReasonCode::KeepAliveTimeout,
                detail: "keep alive timeout",
                notify: true,
                publish_will: true,
            });
        }
        if self.handle.is_shutting_down() {
            return Some(Close {
                reason: ReasonCode::ServerShuttingDown,
                detail: "server shutting down",
                notify: true,
                publish_will: true,
            });
        }
        None
    }

    /// Reads what the socket has and feeds every complete packet to the
    /// session.
    fn read(&mut self, session: &mut Session, actions: &mut Vec<Action>) -> Result<(), Close> {
        match self.transport.read_available(&mut self.buffer, READ_CHUNK) {
            Received::Bytes => {}
            Received::Nothing => return Ok(()),
            Received::Closed | Received::Failed => return Err(abrupt()),
            Received::TooLarge => return Err(too_large()),
        }
        let now = self.shared.clock.now();
        self.handle.touch(now.0);
        self.decode(session, now, actions)
    }

    /// Feeds every complete packet in the buffer to the session, up to the
    /// first close; frees the buffer when nothing is left in it.
    fn decode(
        &mut self,
        session: &mut Session,
        now: UnixMillis,
        actions: &mut Vec<Action>,
    ) -> Result<(), Close> {
        let Some(buf) = self.buffer.as_mut() else { return Ok(()) };
        let shared = &self.shared;
        let mut new_id = || message_id(shared.node, now.0, &shared.message_sequence);
        loop {
            match self.codec.decode(buf) {
                Ok(Some(Packet::Auth(auth))) => session.on_auth(auth, &*shared.authenticator, actions),
                Ok(Some(packet)) => session.on_packet(packet, now, &mut new_id, actions),
                Ok(None) => break,
                Err(error) => {
                    debug!(session = %session.key(), %error, "bad packet");
                    return Err(Close {
                        reason: error.reason_code(),
                        detail: "malformed or invalid packet",
                        notify: true,
                        publish_will: true,
                    });
                }
            }
            if actions.iter().any(|a| matches!(a, Action::Close(_))) {
                break;
            }
        }
        if buf.is_empty() {
            // Idle connections keep no buffer.
            self.buffer = None;
        }
        Ok(())
    }

    /// Carries out actions in order; returns the close among them, if any.
    async fn carry_out(&mut self, session: &mut Session, actions: &mut Vec<Action>) -> Option<Close> {
        let mut packets = Vec::new();
        let mut close = None;
        for action in actions.drain(..) {
            match action {
                Action::Send(packet) => packets.push(packet),
                Action::Uplink(item) => {
                    if matches!(item, Uplink::Publish(_)) {
                        GatewayCounters::add(&self.shared.counters.messages_received, 1);
                    }
                    if self.shared.request(item).await.is_err() {
                        close = Some(unavailable());
                        break;
                    }
                }
                Action::AddLocal(filter, sub) => {
                    let key = session.key().clone();
                    self.shared
                        .change_index(|index, changes| {
                            index.add(&key.app, &filter, self.handle.id, sub, changes)
                        })
                        .await;
                }
                Action::RemoveLocal(filter) => {
                    let key = session.key().clone();
                    self.shared
                        .change_index(|index, changes| {
                            index.remove(&key.app, &filter, self.handle.id, changes)
                        })
                        .await;
                }
                Action::Push(event) => self.shared.reports.add(&session.key().app, event),
                Action::Acked(message) => {
                    if !self.shared.acks.add(session.key(), message) {
                        GatewayCounters::add(&self.shared.counters.acks_dropped, 1);
                    }
                }
                Action::Progressed(message, progress) => {
                    if !self.shared.acks.progress(session.key(), message, progress) {
                        GatewayCounters::add(&self.shared.counters.acks_dropped, 1);
                    }
                }
                Action::Throttled => GatewayCounters::add(&self.shared.counters.publish_rate_exceeded, 1),
                Action::Denied(access) => GatewayCounters::add(
                    match access {
                        crate::acl::Access::Publish => &self.shared.counters.acl_denied_publish,
                        crate::acl::Access::Subscribe => &self.shared.counters.acl_denied_subscribe,
                    },
                    1,
                ),
                Action::Close(c) => {
                    close = Some(c);
                    break;
                }
            }
        }
        actions.clear();
        if !packets.is_empty() && write_packets(&mut self.transport, &self.codec, &packets).await.is_err() {
            return Some(close.unwrap_or_else(abrupt));
        }
        close
    }

    /// Ends the connection: tells a v5 client why, releases the session to
    /// the router and removes its local subscriptions.
    ///
    /// The order is what keeps every acknowledged message: the release goes
    /// to the router first (from then on it queues for the session), the
    /// local routes are removed only after, and deliveries that were already
    /// on their way (ahead of the router's `Released` reply on the ordered
    /// downlink) go back to the router to be queued.
    async fn finish(mut self, session: &mut Session, close: Close) {
        // A revoked connection lost ownership: the router ignores its
        // release but for the unacknowledged messages, which it hands to the
        // session's new connection; its will is the new owner's business.
        let revoked = self.handle.is_revoked();
        // Shared-subscription deliveries go back to their groups, not to
        // this session.
        let mut orphans = session.take_shared();
        let release = session.release(close.publish_will && !revoked);
        let (request, epoch) = (release.request, release.epoch);
        if let Some(links) = self.shared.registry_links.get().filter(|_| !revoked) {
            links.release(&release.session, epoch, release.expiry_seconds, release.publish_will);
        }
        // What its client acknowledged goes first: the router then keeps
        // only what it did not.
        if let Some(acks) = self.shared.acks.take_session(session.key()) {
            let _ = self.shared.uplink.send(Uplink::Acked(vec![acks])).await;
        }
        // A revoked transient session has nothing left to release, but in a
        // cluster of shard owners: its owner may have revoked it before the
        // leader heard of the newer claim, and the leader then ends its
        // record of this connection (stale otherwise; the will is the
        // owner's business).
        let owned = self.shared.registry_links.get().is_some();
        let sent = (!revoked || session.is_persistent() || owned)
            && self.shared.request(Uplink::Release(release)).await.is_ok();
        if let Some(packet) = session.disconnect_packet(&close) {
            let _ = write_packets(&mut self.transport, &self.codec, &[packet]).await;
        }
        self.transport.close().await;
        let key = session.key().clone();
        if sent && session.is_persistent() {
            let (late, shared): (Vec<_>, Vec<_>) =
                self.deliveries_until_released(request).await.into_iter().partition(|q| q.shared.is_none());
            orphans.extend(shared.into_iter().filter_map(|q| Some((q.shared?, q.message))));
            if !late.is_empty() {
                let requeue = Uplink::Requeue { session: key.clone(), epoch, messages: late };
                let _ = self.shared.uplink.send(requeue).await;
            }
        }
        let id = self.handle.id;
        let filters: Vec<_> = session.subscriptions().iter().map(|(f, _)| f.clone()).collect();
        self.shared
            .change_index(|index, changes| {
                for filter in &filters {
                    index.remove(&key.app, filter, id, changes);
                }
            })
            .await;
        // The last look at the inbox: nothing can land after it.
        for item in self.handle.close_inbox().into_iter().flatten() {
            if let Inbound::Deliver(QueuedMessage { shared: Some(filter), message, .. }) = item {
                orphans.push((filter, message));
            }
        }
        self.shared.connections.remove(&self.handle);
        // One item per run of orphans of the same group, in order.
        let mut orphans = orphans.into_iter().peekable();
        while let Some((filter, message)) = orphans.next() {
            let mut messages = vec![message];
            while let Some((_, message)) = orphans.next_if(|(next, _)| *next == filter) {
                messages.push(message);
            }
            let _ = self.shared.uplink.send(Uplink::Redispatch { filter, messages }).await;
        }
        self.shared.counters.connections_closed.count(&close);
        debug!(session = %key, reason = ?close.reason, "connection closed");
    }
}

impl<T: Transport> Connection<T> {
    /// Collects the deliveries that reach this connection before the
    /// router's `Released` reply to `request` (bounded by the claim timeout:
    /// a router that does not answer has lost the session anyway).
    async fn deliveries_until_released(&mut self, request: u64) -> Vec<QueuedMessage> {
        let handle = self.handle.clone();
        let mut late = Vec::new();
        let wait = async {
            loop {
                handle.news().await;
                for item in handle.take_inbox().into_iter().flatten() {
                    match item {
                        Inbound::Deliver(queued) => late.push(queued),
                        Inbound::Handover(pending) => late.extend(pending),
                        Inbound::Reply(Downlink::Released { request: answered }) if answered == request => {
                            return;
                        }
                        Inbound::Reply(_) | Inbound::Retract(_) => {}
                    }
                }
            }
        };
        let _ = tokio::time::timeout(self.shared.config.claim_timeout, wait).await;
        late
    }
}

fn abrupt() -> Close {
    Close { reason: ReasonCode::UnspecifiedError, detail: "", notify: false, publish_will: true }
}

/// More than the maximum packet size arrived in one piece the transport
/// reads whole (a WebSocket message): refused like a packet the codec finds
/// too large.
fn too_large() -> Close {
    Close { reason: ReasonCode::PacketTooLarge, detail: "packet too large", notify: true, publish_will: true }
}

fn unavailable() -> Close {
    Close {
        reason: ReasonCode::ServerUnavailable,
        detail: "router unavailable",
        notify: true,
        publish_will: false,
    }
}

/// Encodes `packets` into one buffer and writes it as one batch.
async fn write_packets<T: Transport>(transport: &mut T, codec: &Codec, packets: &[Packet]) -> io::Result<()> {
    let mut out = BytesMut::new();
    for packet in packets {
        codec
            .encode(packet, &mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    }
    // Most batches fit the socket's send buffer: written at once, with no
    // timer to set and clear.
    transport.write_now(&mut out)?;
    if out.is_empty() {
        return Ok(());
    }
    // A client that stops reading must not hold its task forever: past the
    // timeout the connection ends as if the socket had failed, which
    // releases the session and publishes the will.
    match tokio::time::timeout(WRITE_TIMEOUT, transport.write_batch(out)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")),
    }
}

impl Shared {
    /// Sends a connection's request to the router, after waiting its turn
    /// among the requests awaiting answers if it is one that gets an
    /// answer (`admission.rs`). Fails when the link to the router is gone.
    pub(crate) async fn request(&self, item: Uplink) -> Result<(), ()> {
        if crate::admission::counted_request(&item) {
            self.admission.admit().await;
        }
        self.uplink.send(item).await.map_err(|_| ())
    }

    /// Applies a change to the local index and sends the resulting route
    /// changes, in index order, before anything else this task sends.
    pub(crate) async fn change_index(
        &self,
        f: impl FnOnce(&mut crate::registry::LocalIndex, &mut RouteChanges),
    ) {
        let _order = self.route_order.lock().await;
        let mut changes = RouteChanges::default();
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            f(&mut index, &mut changes);
        }
        if !changes.add.is_empty() || !changes.remove.is_empty() {
            let _ = self.uplink.send(Uplink::Routes { add: changes.add, remove: changes.remove }).await;
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
