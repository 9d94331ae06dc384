//! Conversions between seam items and their protobuf form.

use super::pb;
use crate::seam::{
    Claim, ClaimGrant, Downlink, Progress, Publish, QueuedMessage, Reattach, Release, RetainedLookup,
    SessionAcks, Subscription, Uplink, Will,
};
use crate::{Message, MessageProperties};
use herald_core::{
    AppId, ByteString, ClientId, Epoch, ErrorCode, MessageId, QoS, SessionKey, Topic, TopicFilter,
    TraceParent, UnixMillis,
};
use std::sync::Arc;

/// A protobuf item that does not make a valid seam item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConvertError {
    /// The field, as a path (`claim.session.client`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

pub(crate) fn invalid(field: &'static str, reason: &'static str) -> ConvertError {
    ConvertError { field, reason }
}

pub(crate) fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ConvertError> {
    value.ok_or(invalid(field, "missing"))
}

// ------------------------------------------------------------------ leaves

/// A session key's protobuf form.
pub fn session_to_pb(key: &SessionKey) -> pb::SessionKey {
    pb::SessionKey { app: key.app.as_str().to_owned(), client: key.client.as_str().to_owned() }
}

/// The session key a protobuf one names; `field` names it in errors.
pub fn session_from_pb(key: Option<pb::SessionKey>, field: &'static str) -> Result<SessionKey, ConvertError> {
    let key = required(key, field)?;
    let app = AppId::new(key.app).map_err(|_| invalid(field, "invalid app id"))?;
    let client = ClientId::new(key.client).map_err(|_| invalid(field, "invalid client id"))?;
    Ok(SessionKey::new(app, client))
}

/// An epoch's protobuf form.
pub fn epoch_to_pb(epoch: Epoch) -> pb::Epoch {
    pb::Epoch { generation: epoch.generation, counter: epoch.counter }
}

/// The epoch a protobuf one holds; `field` names it in errors.
pub fn epoch_from_pb(epoch: Option<pb::Epoch>, field: &'static str) -> Result<Epoch, ConvertError> {
    let epoch = required(epoch, field)?;
    Ok(Epoch::new(epoch.generation, epoch.counter))
}

pub(super) fn qos_from_pb(qos: u32, field: &'static str) -> Result<QoS, ConvertError> {
    u8::try_from(qos).ok().and_then(QoS::from_u8).ok_or(invalid(field, "qos must be 0, 1 or 2"))
}

fn error_from_pb(name: &str) -> ErrorCode {
    // An error name this build does not know (a newer peer) is still an
    // error; `Internal` is the honest reading of it.
    ErrorCode::parse(name).unwrap_or(ErrorCode::Internal)
}

fn error_to_pb(error: ErrorCode) -> Option<String> {
    Some(error.as_str().to_owned())
}

/// Returns the protobuf form of `message`.
pub fn message_to_pb(message: &Message) -> pb::Message {
    let p = message.properties.as_deref();
    pb::Message {
        id: message.id.0.to_be_bytes().to_vec().into(),
        app: message.app.as_str().to_owned(),
        topic: message.topic.as_str().to_owned(),
        payload: message.payload.clone(),
        qos: u32::from(message.qos.as_u8()),
        retain: message.retain,
        created_at_ms: message.created_at.0,
        expires_at_ms: message.expires_at.map(|at| at.0),
        origin: message.origin.as_ref().map(|c| c.as_str().to_owned()),
        payload_format: p.and_then(|p| p.payload_format).map(u32::from),
        content_type: p.and_then(|p| p.content_type.as_deref()).map(str::to_owned),
        response_topic: p.and_then(|p| p.response_topic.as_deref()).map(str::to_owned),
        correlation_data: p.and_then(|p| p.correlation_data.clone()),
        user_properties: p
            .map(|p| {
                p.user_properties
                    .iter()
                    .map(|(key, value)| pb::UserProperty { key: key.to_string(), value: value.to_string() })
                    .collect()
            })
            .unwrap_or_default(),
        traceparent: message.trace.map(|t| t.to_string()),
    }
}

/// Returns the message a protobuf message describes.
pub fn message_from_pb(message: pb::Message) -> Result<Message, ConvertError> {
    let id = message_id_from_pb(&message.id, "message.id")?;
    let payload_format = message
        .payload_format
        .map(|f| {
            u8::try_from(f)
                .ok()
                .filter(|f| *f <= 1)
                .ok_or(invalid("message.payload_format", "must be 0 or 1"))
        })
        .transpose()?;
    let properties = MessageProperties {
        payload_format,
        content_type: message.content_type.map(ByteString::from),
        response_topic: message.response_topic.map(ByteString::from),
        correlation_data: message.correlation_data,
        user_properties: message
            .user_properties
            .into_iter()
            .map(|p| (ByteString::from(p.key), ByteString::from(p.value)))
            .collect(),
    };
    Ok(Message {
        id,
        app: AppId::new(message.app).map_err(|_| invalid("message.app", "invalid app id"))?,
        topic: Topic::new(message.topic).map_err(|_| invalid("message.topic", "invalid topic name"))?,
        payload: message.payload,
        qos: qos_from_pb(message.qos, "message.qos")?,
        retain: message.retain,
        created_at: UnixMillis(message.created_at_ms),
        expires_at: message.expires_at_ms.map(UnixMillis),
        origin: message
            .origin
            .map(|c| ClientId::new(c).map_err(|_| invalid("message.origin", "invalid client id")))
            .transpose()?,
        properties: (!properties.is_empty()).then(|| Box::new(properties)),
        // A context that does not parse is dropped: tracing never refuses work.
        trace: message.traceparent.as_deref().and_then(TraceParent::parse),
    })
}

/// A message id from its 16 big-endian bytes.
pub(crate) fn message_id_from_pb(bytes: &[u8], field: &'static str) -> Result<MessageId, ConvertError> {
    let id: [u8; 16] = bytes.try_into().map_err(|_| invalid(field, "must be 16 bytes"))?;
    Ok(MessageId(u128::from_be_bytes(id)))
}

pub(crate) fn session_acks_to_pb(acks: &SessionAcks) -> pb::SessionAcks {
    pb::SessionAcks {
        session: Some(session_to_pb(&acks.session)),
        messages: acks.messages.iter().map(|id| id.0.to_be_bytes().to_vec().into()).collect(),
        progress: acks
            .progress
            .iter()
            .map(|(id, progress)| {
                let (progress, packet_id) = progress_to_pb(*progress);
                pb::InboxProgress { message: id.0.to_be_bytes().to_vec().into(), progress, packet_id }
            })
            .collect(),
    }
}

pub(crate) fn session_acks_from_pb(acks: pb::SessionAcks) -> Result<SessionAcks, ConvertError> {
    Ok(SessionAcks {
        session: session_from_pb(acks.session, "acked.session")?,
        messages: acks
            .messages
            .iter()
            .map(|id| message_id_from_pb(id, "acked.messages"))
            .collect::<Result<_, _>>()?,
        progress: acks
            .progress
            .into_iter()
            .map(|p| {
                let id = message_id_from_pb(&p.message, "acked.progress.message")?;
                match progress_from_pb(p.progress, p.packet_id, "acked.progress")? {
                    progress @ (Progress::Sent(_) | Progress::Released(_)) => Ok((id, progress)),
                    _ => Err(invalid("acked.progress", "only sent or released")),
                }
            })
            .collect::<Result<_, _>>()?,
    })
}

/// A progress as its number and packet id (0 when it has none).
fn progress_to_pb(progress: Progress) -> (u32, u32) {
    let (progress, packet_id) = match progress {
        Progress::Unsent => (0, 0),
        Progress::Sent(id) => (1, id),
        Progress::Released(id) => (2, id),
        Progress::MaybeSent => (3, 0),
    };
    (progress, u32::from(packet_id))
}

fn progress_from_pb(progress: u32, packet_id: u32, field: &'static str) -> Result<Progress, ConvertError> {
    let packet_id = u16::try_from(packet_id).map_err(|_| invalid(field, "packet id out of range"))?;
    Ok(match (progress, packet_id) {
        (0, _) => Progress::Unsent,
        (1, id) if id > 0 => Progress::Sent(id),
        (2, id) if id > 0 => Progress::Released(id),
        (3, _) => Progress::MaybeSent,
        _ => return Err(invalid(field, "unknown progress or missing packet id")),
    })
}

pub(crate) fn required_message(
    message: Option<pb::Message>,
    field: &'static str,
) -> Result<Arc<Message>, ConvertError> {
    Ok(Arc::new(message_from_pb(required(message, field)?)?))
}

/// A will as the wire carries it.
pub fn will_to_pb(w: &Will) -> pb::Will {
    pb::Will {
        message: Some(message_to_pb(&w.message)),
        delay_seconds: w.delay_seconds,
        expiry_seconds: w.expiry_seconds,
    }
}

/// A will from the wire; `field` names its message in errors.
pub fn will_from_pb(w: pb::Will, field: &'static str) -> Result<Box<Will>, ConvertError> {
    Ok(Box::new(Will {
        message: required_message(w.message, field)?,
        delay_seconds: w.delay_seconds,
        expiry_seconds: w.expiry_seconds,
    }))
}

pub(super) fn subscription_to_pb(s: &Subscription) -> pb::Subscription {
    pb::Subscription {
        filter: s.filter.as_str().to_owned(),
        qos: u32::from(s.qos.as_u8()),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: u32::from(s.retain_handling),
        identifier: s.identifier,
    }
}

pub(super) fn subscription_from_pb(s: pb::Subscription) -> Result<Subscription, ConvertError> {
    Ok(Subscription {
        filter: TopicFilter::new(s.filter)
            .map_err(|_| invalid("subscription.filter", "invalid topic filter"))?,
        qos: qos_from_pb(s.qos, "subscription.qos")?,
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: u8::try_from(s.retain_handling)
            .ok()
            .filter(|h| *h <= 2)
            .ok_or(invalid("subscription.retain_handling", "must be 0, 1 or 2"))?,
        identifier: s.identifier,
    })
}

pub(super) fn queued_to_pb(q: &QueuedMessage) -> pb::QueuedMessage {
    let (progress, packet_id) = progress_to_pb(q.progress);
    pb::QueuedMessage {
        message: Some(message_to_pb(&q.message)),
        qos: u32::from(q.qos.as_u8()),
        subscription_ids: q.subscription_ids.clone(),
        progress,
        packet_id,
        shared: q.shared.as_ref().map(|f| f.as_str().to_owned()),
    }
}

pub(super) fn queued_from_pb(q: pb::QueuedMessage) -> Result<QueuedMessage, ConvertError> {
    let progress = progress_from_pb(q.progress, q.packet_id, "queued.progress")?;
    Ok(QueuedMessage {
        message: required_message(q.message, "queued.message")?,
        qos: qos_from_pb(q.qos, "queued.qos")?,
        subscription_ids: q.subscription_ids,
        progress,
        shared: q
            .shared
            .map(|f| TopicFilter::new(f).map_err(|_| invalid("queued.shared", "invalid topic filter")))
            .transpose()?,
    })
}

fn queued_list_from_pb(list: Vec<pb::QueuedMessage>) -> Result<Vec<QueuedMessage>, ConvertError> {
    list.into_iter().map(queued_from_pb).collect()
}

fn route_to_pb((app, filter): &(AppId, TopicFilter)) -> pb::Route {
    pb::Route { app: app.as_str().to_owned(), filter: filter.as_str().to_owned() }
}

fn route_from_pb(route: pb::Route) -> Result<(AppId, TopicFilter), ConvertError> {
    Ok((
        AppId::new(route.app).map_err(|_| invalid("route.app", "invalid app id"))?,
        TopicFilter::new(route.filter).map_err(|_| invalid("route.filter", "invalid topic filter"))?,
    ))
}

// ------------------------------------------------------------------ uplink

/// Returns the protobuf form of an uplink item.
pub fn uplink_to_pb(item: &Uplink) -> pb::Uplink {
    use pb::uplink::Item;
    let item = match item {
        Uplink::Claim(c) => Item::Claim(pb::Claim {
            request: c.request,
            session: Some(session_to_pb(&c.session)),
            clean_start: c.clean_start,
            expiry_seconds: c.expiry_seconds,
            will: c.will.as_deref().map(will_to_pb),
            granted: c.granted.map(epoch_to_pb),
        }),
        Uplink::Release(r) => Item::Release(pb::Release {
            request: r.request,
            session: Some(session_to_pb(&r.session)),
            epoch: Some(epoch_to_pb(r.epoch)),
            expiry_seconds: r.expiry_seconds,
            publish_will: r.publish_will,
            pending: r.pending.iter().map(queued_to_pb).collect(),
        }),
        Uplink::Routes { add, remove } => Item::Routes(pb::Routes {
            add: add.iter().map(route_to_pb).collect(),
            remove: remove.iter().map(route_to_pb).collect(),
        }),
        Uplink::Subscribe { request, session, epoch, subscriptions } => Item::Subscribe(pb::Subscribe {
            request: *request,
            session: Some(session_to_pb(session)),
            epoch: Some(epoch_to_pb(*epoch)),
            subscriptions: subscriptions
                .iter()
                .map(|(s, lookup)| pb::SubscribeEntry {
                    subscription: Some(subscription_to_pb(s)),
                    send_retained: *lookup == RetainedLookup::Send,
                })
                .collect(),
        }),
        Uplink::Unsubscribe { request, session, epoch, filters } => Item::Unsubscribe(pb::Unsubscribe {
            request: *request,
            session: Some(session_to_pb(session)),
            epoch: Some(epoch_to_pb(*epoch)),
            filters: filters.iter().map(|f| f.as_str().to_owned()).collect(),
        }),
        Uplink::Redispatch { filter, messages } => Item::Redispatch(pb::Redispatch {
            filter: filter.as_str().to_owned(),
            messages: messages.iter().map(|m| message_to_pb(m)).collect(),
        }),
        Uplink::Reattach { sessions, last } => Item::Reattach(pb::Reattach {
            sessions: sessions
                .iter()
                .map(|r| pb::ReattachedSession {
                    session: Some(session_to_pb(&r.session)),
                    epoch: Some(epoch_to_pb(r.epoch)),
                    expiry_seconds: r.expiry_seconds,
                    will: r.will.as_deref().map(will_to_pb),
                })
                .collect(),
            last: *last,
        }),
        Uplink::Requeue { session, epoch, messages } => Item::Requeue(pb::Requeue {
            session: Some(session_to_pb(session)),
            epoch: Some(epoch_to_pb(*epoch)),
            messages: messages.iter().map(queued_to_pb).collect(),
        }),
        Uplink::Publish(p) => Item::Publish(pb::Publish {
            request: p.request,
            from_session: p.from.as_ref().map(|(s, _)| session_to_pb(s)),
            from_epoch: p.from.as_ref().map(|(_, e)| epoch_to_pb(*e)),
            message: Some(message_to_pb(&p.message)),
        }),
        Uplink::Push(p) => Item::Push(super::push::push_to_pb(p)),
        Uplink::Acked(sessions) => {
            Item::Acked(pb::Acked { sessions: sessions.iter().map(session_acks_to_pb).collect() })
        }
        Uplink::Report { request, origin, batch, deltas } => {
            Item::Report(super::push::report_items_to_pb(*request, *origin, *batch, deltas))
        }
        Uplink::Directory { request, app, op, limits } => {
            Item::Directory(super::push::directory_to_pb(*request, app, op, limits))
        }
    };
    pb::Uplink { item: Some(item) }
}

/// Returns the uplink item a protobuf item describes. `Hello` is not an
/// item of the seam (it opens the stream) and is refused here.
pub fn uplink_from_pb(item: pb::Uplink) -> Result<Uplink, ConvertError> {
    use pb::uplink::Item;
    Ok(match required(item.item, "uplink.item")? {
        Item::Hello(_) => return Err(invalid("uplink.hello", "only the first item of a stream")),
        Item::Claim(c) => Uplink::Claim(Claim {
            request: c.request,
            session: session_from_pb(c.session, "claim.session")?,
            clean_start: c.clean_start,
            expiry_seconds: c.expiry_seconds,
            will: c.will.map(|w| will_from_pb(w, "claim.will.message")).transpose()?,
            granted: c.granted.map(|e| epoch_from_pb(Some(e), "claim.granted")).transpose()?,
        }),
        Item::Release(r) => Uplink::Release(Release {
            request: r.request,
            session: session_from_pb(r.session, "release.session")?,
            epoch: epoch_from_pb(r.epoch, "release.epoch")?,
            expiry_seconds: r.expiry_seconds,
            publish_will: r.publish_will,
            pending: queued_list_from_pb(r.pending)?,
        }),
        Item::Routes(r) => Uplink::Routes {
            add: r.add.into_iter().map(route_from_pb).collect::<Result<_, _>>()?,
            remove: r.remove.into_iter().map(route_from_pb).collect::<Result<_, _>>()?,
        },
        Item::Subscribe(s) => Uplink::Subscribe {
            request: s.request,
            session: session_from_pb(s.session, "subscribe.session")?,
            epoch: epoch_from_pb(s.epoch, "subscribe.epoch")?,
            subscriptions: s
                .subscriptions
                .into_iter()
                .map(|entry| {
                    let s = subscription_from_pb(required(entry.subscription, "subscribe.subscription")?)?;
                    let lookup =
                        if entry.send_retained { RetainedLookup::Send } else { RetainedLookup::Skip };
                    Ok((s, lookup))
                })
                .collect::<Result<_, ConvertError>>()?,
        },
        Item::Unsubscribe(u) => Uplink::Unsubscribe {
            request: u.request,
            session: session_from_pb(u.session, "unsubscribe.session")?,
            epoch: epoch_from_pb(u.epoch, "unsubscribe.epoch")?,
            filters: u
                .filters
                .into_iter()
                .map(|f| {
                    TopicFilter::new(f).map_err(|_| invalid("unsubscribe.filters", "invalid topic filter"))
                })
                .collect::<Result<_, _>>()?,
        },
        Item::Redispatch(r) => Uplink::Redispatch {
            filter: TopicFilter::new(r.filter)
                .map_err(|_| invalid("redispatch.filter", "invalid topic filter"))?,
            messages: r
                .messages
                .into_iter()
                .map(|m| message_from_pb(m).map(Arc::new))
                .collect::<Result<_, _>>()?,
        },
        Item::Reattach(r) => Uplink::Reattach {
            sessions: r
                .sessions
                .into_iter()
                .map(|r| {
                    Ok(Reattach {
                        session: session_from_pb(r.session, "reattach.session")?,
                        epoch: epoch_from_pb(r.epoch, "reattach.epoch")?,
                        expiry_seconds: r.expiry_seconds,
                        will: r.will.map(|w| will_from_pb(w, "reattach.will.message")).transpose()?,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
            last: r.last,
        },
        Item::Requeue(r) => Uplink::Requeue {
            session: session_from_pb(r.session, "requeue.session")?,
            epoch: epoch_from_pb(r.epoch, "requeue.epoch")?,
            messages: queued_list_from_pb(r.messages)?,
        },
        Item::Publish(p) => Uplink::Publish(Publish {
            request: p.request,
            from: match (p.from_session, p.from_epoch) {
                (Some(s), Some(e)) => Some((
                    session_from_pb(Some(s), "publish.from_session")?,
                    epoch_from_pb(Some(e), "publish.from_epoch")?,
                )),
                (None, None) => None,
                _ => return Err(invalid("publish.from", "session and epoch go together")),
            },
            message: required_message(p.message, "publish.message")?,
        }),
        Item::Push(p) => Uplink::Push(super::push::push_from_pb(p)?),
        Item::Acked(a) => {
            Uplink::Acked(a.sessions.into_iter().map(session_acks_from_pb).collect::<Result<_, _>>()?)
        }
        Item::Report(r) => Uplink::Report {
            request: r.request,
            origin: r.origin,
            batch: r.batch,
            deltas: super::push::deltas_from_pb(r.deltas)?,
        },
        Item::Directory(d) => {
            let (request, app, op, limits) = super::push::directory_from_pb(d)?;
            Uplink::Directory { request, app, op, limits }
        }
    })
}

// ---------------------------------------------------------------- downlink

/// Returns the protobuf form of a downlink item.
pub fn downlink_to_pb(item: &Downlink) -> pb::Downlink {
    use pb::downlink::Item;
    let item = match item {
        Downlink::Retract { app, message } => Item::Retract(pb::Retract {
            app: app.to_string(),
            message: message.0.to_be_bytes().to_vec().into(),
        }),
        Downlink::ApiKeys { app, keys } => Item::ApiKeys(pb::ApiKeysChanged {
            app: app.as_ref().map(|a| a.to_string()),
            keys: keys.iter().map(super::push::api_key_to_pb).collect(),
        }),
        Downlink::Claimed { request, result } => Item::Claimed(match result {
            Ok(grant) => pb::Claimed {
                request: *request,
                grant: Some(pb::ClaimGrant {
                    epoch: Some(epoch_to_pb(grant.epoch)),
                    session_present: grant.session_present,
                    subscriptions: grant.subscriptions.iter().map(subscription_to_pb).collect(),
                    queued: grant.queued.iter().map(queued_to_pb).collect(),
                }),
                error: None,
            },
            Err(error) => pb::Claimed { request: *request, grant: None, error: error_to_pb(*error) },
        }),
        Downlink::Revoked { session, epoch } => Item::Revoked(pb::Revoked {
            session: Some(session_to_pb(session)),
            epoch: Some(epoch_to_pb(*epoch)),
        }),
        Downlink::Subscribed { request, result } => Item::Subscribed(match result {
            Ok(retained) => pb::Subscribed {
                request: *request,
                retained: retained
                    .iter()
                    .map(|(index, m)| pb::RetainedMatch {
                        index: u32::try_from(*index).unwrap_or(u32::MAX),
                        message: Some(message_to_pb(m)),
                    })
                    .collect(),
                error: None,
            },
            Err(error) => {
                pb::Subscribed { request: *request, retained: Vec::new(), error: error_to_pb(*error) }
            }
        }),
        Downlink::Unsubscribed { request, result } => Item::Unsubscribed(pb::Unsubscribed {
            request: *request,
            error: result.err().and_then(error_to_pb),
        }),
        Downlink::Published { request, result } => Item::Published(pb::Published {
            request: *request,
            matched: *result.as_ref().unwrap_or(&false),
            error: result.err().and_then(error_to_pb),
        }),
        Downlink::Pushed { request, result } => Item::Pushed(match result {
            Ok(report) => super::push::report_to_pb(*request, report),
            Err(error) => pb::Pushed { request: *request, error: error_to_pb(*error), ..Default::default() },
        }),
        Downlink::DirectoryDone { request, result } => Item::DirectoryDone(match result {
            Ok(answer) => pb::DirectoryDone {
                request: *request,
                error: None,
                answer: Some(super::push::answer_to_pb(answer)),
            },
            Err(error) => pb::DirectoryDone { request: *request, error: error_to_pb(*error), answer: None },
        }),
        Downlink::Reported { request } => Item::Reported(pb::Reported { request: *request }),
        Downlink::DeliverPush { message, devices } => Item::DeliverPush(pb::DeliverPush {
            message: Some(message_to_pb(message)),
            all: devices.is_none(),
            devices: devices.iter().flatten().map(ToString::to_string).collect(),
        }),
        Downlink::Deliver(message) => Item::Deliver(pb::Deliver { message: Some(message_to_pb(message)) }),
        Downlink::Released { request } => Item::Released(pb::Released { request: *request }),
        Downlink::DeliverShared { filter, message } => Item::DeliverShared(pb::DeliverShared {
            filter: filter.as_str().to_owned(),
            message: Some(message_to_pb(message)),
        }),
        Downlink::Handover { session, epoch, pending } => Item::Handover(pb::Handover {
            session: Some(session_to_pb(session)),
            epoch: Some(epoch_to_pb(*epoch)),
            pending: pending.iter().map(queued_to_pb).collect(),
        }),
    };
    pb::Downlink { item: Some(item) }
}

/// Returns the downlink item a protobuf item describes. `Welcome` opens the
/// stream and is refused here.
pub fn downlink_from_pb(item: pb::Downlink) -> Result<Downlink, ConvertError> {
    use pb::downlink::Item;
    Ok(match required(item.item, "downlink.item")? {
        Item::Welcome(_) => return Err(invalid("downlink.welcome", "only the first item of a stream")),
        Item::Claimed(c) => Downlink::Claimed {
            request: c.request,
            result: match (c.grant, c.error) {
                (_, Some(error)) => Err(error_from_pb(&error)),
                (Some(grant), None) => Ok(ClaimGrant {
                    epoch: epoch_from_pb(grant.epoch, "claimed.grant.epoch")?,
                    session_present: grant.session_present,
                    subscriptions: grant
                        .subscriptions
                        .into_iter()
                        .map(subscription_from_pb)
                        .collect::<Result<_, _>>()?,
                    queued: queued_list_from_pb(grant.queued)?,
                }),
                (None, None) => return Err(invalid("claimed", "neither grant nor error")),
            },
        },
        Item::Retract(r) => Downlink::Retract {
            app: AppId::new(r.app).map_err(|_| invalid("retract.app", "invalid app id"))?,
            message: message_id_from_pb(&r.message, "retract.message")?,
        },
        Item::ApiKeys(k) => Downlink::ApiKeys {
            app: k
                .app
                .map(|a| AppId::new(a).map_err(|_| invalid("api_keys.app", "invalid app id")))
                .transpose()?,
            keys: super::push::api_keys_from_pb(k.keys)?,
        },
        Item::Revoked(r) => Downlink::Revoked {
            session: session_from_pb(r.session, "revoked.session")?,
            epoch: epoch_from_pb(r.epoch, "revoked.epoch")?,
        },
        Item::Subscribed(s) => Downlink::Subscribed {
            request: s.request,
            result: match s.error {
                Some(error) => Err(error_from_pb(&error)),
                None => Ok(s
                    .retained
                    .into_iter()
                    .map(|r| {
                        let message = required_message(r.message, "subscribed.retained.message")?;
                        Ok((r.index as usize, message))
                    })
                    .collect::<Result<_, ConvertError>>()?),
            },
        },
        Item::Unsubscribed(u) => Downlink::Unsubscribed {
            request: u.request,
            result: u.error.map_or(Ok(()), |e| Err(error_from_pb(&e))),
        },
        Item::Published(p) => Downlink::Published {
            request: p.request,
            result: p.error.map_or(Ok(p.matched), |e| Err(error_from_pb(&e))),
        },
        Item::Pushed(p) => Downlink::Pushed {
            request: p.request,
            result: match p.error.clone() {
                Some(error) => Err(error_from_pb(&error)),
                None => Ok(super::push::report_from_pb(p)?),
            },
        },
        Item::DirectoryDone(d) => Downlink::DirectoryDone {
            request: d.request,
            result: match d.error {
                Some(error) => Err(error_from_pb(&error)),
                None => Ok(super::push::answer_from_pb(d.answer)?),
            },
        },
        Item::Reported(r) => Downlink::Reported { request: r.request },
        Item::DeliverPush(d) => Downlink::DeliverPush {
            message: required_message(d.message, "deliver_push.message")?,
            devices: match d.all {
                true => None,
                false => Some(
                    d.devices
                        .into_iter()
                        .map(|id| {
                            ClientId::new(id)
                                .map_err(|_| invalid("deliver_push.devices", "invalid client id"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
            },
        },
        Item::Deliver(d) => Downlink::Deliver(required_message(d.message, "deliver.message")?),
        Item::Released(r) => Downlink::Released { request: r.request },
        Item::DeliverShared(d) => Downlink::DeliverShared {
            filter: TopicFilter::new(d.filter)
                .map_err(|_| invalid("deliver_shared.filter", "invalid topic filter"))?,
            message: required_message(d.message, "deliver_shared.message")?,
        },
        Item::Handover(h) => Downlink::Handover {
            session: session_from_pb(h.session, "handover.session")?,
            epoch: epoch_from_pb(h.epoch, "handover.epoch")?,
            pending: queued_list_from_pb(h.pending)?,
        },
    })
}

#[cfg(test)]
mod tests;
