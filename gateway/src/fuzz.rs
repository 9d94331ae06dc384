//! The bodies of the cargo-fuzz targets in `gateway/fuzz/`, kept in the
//! crate so an ordinary test (`tests/fuzz_corpus.rs`) replays their corpora
//! through exactly the same checks. Each panics only when an invariant
//! breaks; refusing bad input is the expected outcome.

use crate::acl::{Acl, Permission, Rule};
use crate::auth::ConfigAuthenticator;
use crate::handshake::{Identity, accept};
use crate::push_api::AppLimits;
use crate::session::{Action, Session, SessionLimits};
use bytes::BytesMut;
use herald_core::directory::{DeviceEntry, Directory, DirectoryLimits, Tag};
use herald_core::{AppId, ClientId, Epoch, MessageId, QoS, UnixMillis};
use herald_mqtt::{Codec, Connect, Packet, ProtocolVersion};
use herald_proto::seam::{Downlink, Uplink};
use std::sync::Arc;

/// A session driven by arbitrary packets. The first byte picks the
/// protocol version, the session's persistence and whether access rules
/// apply; the rest is a packet stream, decoded as a connection would. Every
/// request the session sends the router is answered (successes and
/// refusals in turn), and every few packets a message is delivered, so
/// that acknowledgements meet deliveries. Checks: nothing panics; the
/// session never holds more than the client's window and its queue; no
/// PUBLISH follows a close in the same actions.
#[doc(hidden)]
pub fn fuzz_session(data: &[u8]) {
    let Some((&choice, stream)) = data.split_first() else { return };
    let version = if choice & 1 == 0 { ProtocolVersion::V311 } else { ProtocolVersion::V5 };
    let mut connect = Connect::new(version, "fuzz-1");
    if choice & 2 != 0 {
        connect.clean_start = false;
        connect.properties.push(herald_mqtt::Property::SessionExpiryInterval(60));
    }
    let window = 1 + u16::from(choice >> 4);
    if version == ProtocolVersion::V5 {
        connect.properties.push(herald_mqtt::Property::ReceiveMaximum(window));
    }
    let mut limits =
        SessionLimits { max_queued_messages: 8, max_subscriptions: 16, ..SessionLimits::default() };
    if choice & 4 != 0 {
        limits.acl = Arc::new(fuzz_acl());
    }
    let now = UnixMillis(1_000_000);
    let identity = Identity::Password(&ConfigAuthenticator::anonymous());
    let Ok(accepted) = accept(&connect, &limits, identity, || "assigned".to_owned(), MessageId(1), now)
    else {
        return;
    };
    let mut session = Session::new(&accepted, Arc::new(limits), Epoch::new(1, 1), 1 << 20);
    let mut codec = Codec::new(version, 4096);
    let mut buffer = BytesMut::from(stream);
    let (mut ids, mut turn) = (10u128, 0u64);
    while let Ok(Some(packet)) = codec.decode(&mut buffer) {
        let mut out = Vec::new();
        let mut new_id = || {
            ids += 1;
            MessageId(ids)
        };
        session.on_packet(packet, now, &mut new_id, &mut out);
        if closes(&out) {
            break;
        }
        turn += 1;
        if turn.is_multiple_of(3) {
            let mut delivered = Vec::new();
            session.deliver(delivery(turn, now), now, &mut delivered);
            if closes(&delivered) {
                break;
            }
            out.extend(delivered);
        }
        // The router answers every request, in order, as it would.
        let mut index = 0;
        let mut closed = false;
        while index < out.len() && !closed {
            if let Action::Uplink(item) = &out[index]
                && let Some(reply) = answer(item, turn)
            {
                let mut more = Vec::new();
                session.on_reply(reply, now, &mut more);
                closed = closes(&more);
                out.extend(more);
            }
            index += 1;
        }
        let window = if version == ProtocolVersion::V5 { usize::from(window) } else { 32 };
        assert!(session.outbound_backlog() <= 8 + window, "the session holds more than its window and queue");
        if closed {
            break;
        }
    }
}

/// Whether `actions` (one call's) close the connection; panics if a PUBLISH
/// follows the close: a close is the last thing the session says, and the
/// connection stops feeding it.
fn closes(actions: &[Action]) -> bool {
    let Some(at) = actions.iter().position(|a| matches!(a, Action::Close(_))) else { return false };
    let after = &actions[at + 1..];
    assert!(
        !after.iter().any(|a| matches!(a, Action::Send(Packet::Publish(_)))),
        "a PUBLISH after the close: {after:?}"
    );
    true
}

/// A message for the session's subscription to `fuzz/in`.
fn delivery(turn: u64, now: UnixMillis) -> herald_proto::seam::QueuedMessage {
    let message = herald_proto::Message {
        id: MessageId(1_000 + u128::from(turn)),
        app: AppId::default_app(),
        topic: herald_core::Topic::new("fuzz/in").expect("a valid topic"),
        payload: bytes::Bytes::from_static(b"x"),
        qos: if turn.is_multiple_of(2) { QoS::AtLeastOnce } else { QoS::ExactlyOnce },
        retain: false,
        created_at: now,
        expires_at: None,
        origin: None,
        properties: None,
        trace: None,
    };
    herald_proto::seam::QueuedMessage {
        message: Arc::new(message),
        qos: QoS::ExactlyOnce,
        subscription_ids: Vec::new(),
        progress: herald_proto::seam::Progress::Unsent,
        shared: None,
    }
}

/// The router's answer to `item`: a success, or now and then a refusal.
fn answer(item: &Uplink, turn: u64) -> Option<Downlink> {
    let refuse = turn.is_multiple_of(5);
    let code = herald_core::ErrorCode::Unavailable;
    Some(match item {
        Uplink::Publish(publish) => Downlink::Published {
            request: publish.request?,
            result: if refuse { Err(code) } else { Ok(turn.is_multiple_of(2)) },
        },
        Uplink::Subscribe { request, .. } => Downlink::Subscribed {
            request: *request,
            result: if refuse { Err(code) } else { Ok(Vec::new()) },
        },
        Uplink::Unsubscribe { request, .. } => {
            Downlink::Unsubscribed { request: *request, result: if refuse { Err(code) } else { Ok(()) } }
        }
        _ => return None,
    })
}

/// Access rules with templates, for the session target.
fn fuzz_acl() -> Acl {
    let rule = |permission, publish, subscribe, topic: &str| Rule {
        app: None,
        permission,
        publish,
        subscribe,
        topics: vec![topic.to_owned()],
        users: Vec::new(),
        clients: Vec::new(),
    };
    let rules = vec![
        rule(Permission::Allow, true, true, "fuzz/%c/#"),
        rule(Permission::Allow, false, true, "fuzz/+"),
        rule(Permission::Deny, true, true, "#"),
    ];
    Acl::new(rules, Permission::Allow).expect("valid rules")
}

/// A tag expression from arbitrary JSON, as the push API reads one.
/// Checks: nothing panics; an expression that parses is within the limits
/// and selects, from a small directory, exactly what a direct evaluation
/// says.
#[doc(hidden)]
pub fn fuzz_tag_expr(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let limits = DirectoryLimits::default();
    let Ok(expr) = crate::push_api::fuzz_tag_expr(&value, &limits) else { return };
    assert_eq!(expr.check_within(&limits), Ok(()), "a parsed expression breaks the limits");
    let mut directory = Directory::default();
    let tags = ["a", "b", "c", "vip", "city:bj"];
    for n in 0..16u32 {
        let entry = DeviceEntry {
            alias: None,
            tags: tags
                .iter()
                .enumerate()
                .filter(|(i, _)| n >> i & 1 == 1)
                .map(|(_, t)| Tag::new(*t).expect("a valid tag"))
                .collect(),
        };
        directory.put(ClientId::new(format!("d{n}")).expect("a valid id"), entry);
    }
    let selected = directory.select(&expr);
    for n in 0..16u32 {
        let device = ClientId::new(format!("d{n}")).expect("a valid id");
        let entry = directory.get(&device).expect("put above");
        assert_eq!(selected.contains(&device), expr.matches(&entry.tags), "{expr:?} on d{n}");
    }
}

/// A push-API send body, as `POST …/messages` reads it. Checks: nothing
/// panics; a request that parses makes a message within the payload limit.
#[doc(hidden)]
pub fn fuzz_push_json(data: &[u8]) {
    let limits = AppLimits::default();
    crate::push_api::fuzz_send(data, &limits);
}
