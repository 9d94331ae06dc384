//! Conversions of the push API's seam items (`crate::push`) and of device
//! directory entries (also journaled) to and from their protobuf form.

use super::convert::{ConvertError, invalid, message_id_from_pb, message_to_pb, required, required_message};
use super::pb;
use crate::journal::IdempotentSend;
use crate::push::{
    ApiKeyRecord, Audience, DeviceView, DirectoryAnswer, DirectoryOp, FanoutAudience, FanoutEntry,
    Idempotency, KeyOp, MessageStatus, Push, PushDelta, PushOutcome, PushReport, TagChange,
};
use herald_core::directory::{Alias, DeviceEntry, DirectoryLimits, Tag, TagExpr};
use herald_core::{AppId, ClientId, NodeId, UnixMillis};
use std::sync::Arc;

fn client(id: String, field: &'static str) -> Result<ClientId, ConvertError> {
    ClientId::new(id).map_err(|_| invalid(field, "invalid client id"))
}

fn clients(ids: Vec<String>, field: &'static str) -> Result<Vec<ClientId>, ConvertError> {
    ids.into_iter().map(|id| client(id, field)).collect()
}

fn strings<T: std::fmt::Display>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn alias(text: String, field: &'static str) -> Result<Alias, ConvertError> {
    Alias::new(text).map_err(|_| invalid(field, "invalid alias"))
}

fn tags(list: Vec<String>, field: &'static str) -> Result<Vec<Tag>, ConvertError> {
    list.into_iter().map(|t| Tag::new(t).map_err(|_| invalid(field, "invalid tag"))).collect()
}

pub(crate) fn entry_to_pb(entry: &DeviceEntry) -> pb::DeviceEntry {
    pb::DeviceEntry {
        alias: entry.alias.as_ref().map(ToString::to_string),
        tags: strings(&entry.tags.iter().collect::<Vec<_>>()),
    }
}

pub(crate) fn entry_from_pb(
    entry: Option<pb::DeviceEntry>,
    field: &'static str,
) -> Result<DeviceEntry, ConvertError> {
    let entry = required(entry, field)?;
    Ok(DeviceEntry {
        alias: entry.alias.map(|a| alias(a, field)).transpose()?,
        tags: tags(entry.tags, field)?.into_iter().collect(),
    })
}

pub(crate) fn expr_to_pb(expr: &TagExpr) -> pb::TagExpr {
    use pb::tag_expr::Node;
    let list = |xs: &[TagExpr]| pb::TagExprList { operands: xs.iter().map(expr_to_pb).collect() };
    let node = match expr {
        TagExpr::Tag(tag) => Node::Tag(tag.to_string()),
        TagExpr::And(xs) => Node::And(list(xs)),
        TagExpr::Or(xs) => Node::Or(list(xs)),
        TagExpr::Not(x) => Node::Not(Box::new(expr_to_pb(x))),
    };
    pb::TagExpr { node: Some(node) }
}

pub(crate) fn expr_from_pb(expr: pb::TagExpr) -> Result<TagExpr, ConvertError> {
    use pb::tag_expr::Node;
    let list = |l: pb::TagExprList| l.operands.into_iter().map(expr_from_pb).collect::<Result<Vec<_>, _>>();
    let expr = match required(expr.node, "tag_expr.node")? {
        Node::Tag(tag) => TagExpr::Tag(Tag::new(tag).map_err(|_| invalid("tag_expr.tag", "invalid tag"))?),
        Node::And(l) => TagExpr::And(list(l)?),
        Node::Or(l) => TagExpr::Or(list(l)?),
        Node::Not(x) => TagExpr::Not(Box::new(expr_from_pb(*x)?)),
    };
    // Bounded before anything walks it further.
    expr.check_within(&DirectoryLimits::CEILING)
        .map_err(|_| invalid("tag_expr", "past the ceilings of any app"))?;
    Ok(expr)
}

pub(super) fn push_to_pb(p: &Push) -> pb::Push {
    let mut push = pb::Push {
        request: p.request,
        message: Some(message_to_pb(&p.message)),
        store_offline: p.store_offline,
        idempotency_key: p.idempotency.as_ref().map(|i| i.key.clone()),
        body_hash: p.idempotency.as_ref().map(|i| i.body_hash.to_vec().into()).unwrap_or_default(),
        ..Default::default()
    };
    match &p.audience {
        Audience::Devices(devices) => push.devices = strings(devices),
        Audience::Aliases(aliases) => push.aliases = strings(aliases),
        Audience::Tags(expr) => push.tags = Some(expr_to_pb(expr)),
        Audience::All => push.all = true,
    }
    push
}

pub(super) fn push_from_pb(p: pb::Push) -> Result<Push, ConvertError> {
    let audience = match (p.all, p.tags, p.aliases.is_empty()) {
        (true, None, true) if p.devices.is_empty() => Audience::All,
        (false, Some(expr), true) if p.devices.is_empty() => Audience::Tags(expr_from_pb(expr)?),
        (false, None, false) if p.devices.is_empty() => Audience::Aliases(
            p.aliases.into_iter().map(|a| alias(a, "push.aliases")).collect::<Result<_, _>>()?,
        ),
        (false, None, true) => Audience::Devices(clients(p.devices, "push.devices")?),
        _ => return Err(invalid("push", "exactly one audience")),
    };
    let idempotency = match p.idempotency_key {
        Some(key) if key.is_empty() || key.len() > 64 => {
            return Err(invalid("push.idempotency_key", "1 to 64 characters"));
        }
        Some(key) => {
            let body_hash: [u8; 32] =
                p.body_hash.as_ref().try_into().map_err(|_| invalid("push.body_hash", "must be 32 bytes"))?;
            Some(Idempotency { key, body_hash })
        }
        None => None,
    };
    Ok(Push {
        request: p.request,
        message: required_message(p.message, "push.message")?,
        audience,
        store_offline: p.store_offline,
        idempotency,
    })
}

/// The protobuf form of a fan-out log entry.
pub(crate) fn fanout_to_pb(entry: &FanoutEntry) -> pb::FanoutEntry {
    let (all, devices) = match &entry.audience {
        FanoutAudience::All => (true, Vec::new()),
        FanoutAudience::Devices(devices) => {
            let mut ids: Vec<String> = devices.iter().map(ToString::to_string).collect();
            ids.sort_unstable();
            (false, ids)
        }
    };
    pb::FanoutEntry { seq: entry.seq, message: Some(message_to_pb(&entry.message)), all, devices }
}

/// A fan-out log entry from its protobuf form.
pub(crate) fn fanout_from_pb(entry: pb::FanoutEntry) -> Result<FanoutEntry, ConvertError> {
    let audience = if entry.all {
        FanoutAudience::All
    } else {
        FanoutAudience::Devices(Arc::new(clients(entry.devices, "fanout.devices")?.into_iter().collect()))
    };
    Ok(FanoutEntry { seq: entry.seq, message: required_message(entry.message, "fanout.message")?, audience })
}

fn outcome_to_pb(outcome: PushOutcome) -> pb::PushOutcome {
    match outcome {
        PushOutcome::Online => pb::PushOutcome::Online,
        PushOutcome::Stored => pb::PushOutcome::Stored,
        PushOutcome::Unreachable => pb::PushOutcome::Unreachable,
    }
}

fn outcome_from_pb(value: i32) -> PushOutcome {
    // A value this build does not know (a newer peer) promises nothing.
    match pb::PushOutcome::try_from(value) {
        Ok(pb::PushOutcome::Online) => PushOutcome::Online,
        Ok(pb::PushOutcome::Stored) => PushOutcome::Stored,
        _ => PushOutcome::Unreachable,
    }
}

pub(super) fn report_to_pb(request: u64, report: &PushReport) -> pb::Pushed {
    pb::Pushed {
        request,
        outcomes: report.devices.iter().map(|(_, o)| outcome_to_pb(*o) as i32).collect(),
        error: None,
        devices: report.devices.iter().map(|(d, _)| d.to_string()).collect(),
        unknown_aliases: strings(&report.unknown_aliases),
        online: report.online,
        stored: report.stored,
        replay_of: report.replay_of.map(|id| id.0.to_be_bytes().to_vec().into()),
    }
}

pub(super) fn report_from_pb(p: pb::Pushed) -> Result<PushReport, ConvertError> {
    if p.devices.len() != p.outcomes.len() {
        return Err(invalid("pushed.outcomes", "one outcome per device"));
    }
    let devices = clients(p.devices, "pushed.devices")?;
    Ok(PushReport {
        devices: devices.into_iter().zip(p.outcomes.into_iter().map(outcome_from_pb)).collect(),
        unknown_aliases: p
            .unknown_aliases
            .into_iter()
            .map(|a| alias(a, "pushed.unknown_aliases"))
            .collect::<Result<_, _>>()?,
        online: p.online,
        stored: p.stored,
        replay_of: p.replay_of.map(|id| message_id_from_pb(&id, "pushed.replay_of")).transpose()?,
    })
}

/// The protobuf form of a send kept for its idempotency key.
pub(crate) fn idempotent_to_pb(send: &IdempotentSend) -> pb::IdempotentSend {
    pb::IdempotentSend {
        app: send.app.to_string(),
        key: send.idempotency.key.clone(),
        body_hash: send.idempotency.body_hash.to_vec().into(),
        message_id: send.message_id.0.to_be_bytes().to_vec().into(),
        answer: Some(report_to_pb(0, &send.answer)),
        expires_at_ms: send.expires_at.0,
    }
}

/// A send kept for its idempotency key, from its protobuf form.
pub(crate) fn idempotent_from_pb(send: pb::IdempotentSend) -> Result<IdempotentSend, ConvertError> {
    let body_hash: [u8; 32] = send
        .body_hash
        .as_ref()
        .try_into()
        .map_err(|_| invalid("idempotent.body_hash", "must be 32 bytes"))?;
    Ok(IdempotentSend {
        app: AppId::new(send.app).map_err(|_| invalid("idempotent.app", "invalid app id"))?,
        idempotency: Idempotency { key: send.key, body_hash },
        message_id: message_id_from_pb(&send.message_id, "idempotent.message_id")?,
        answer: report_from_pb(required(send.answer, "idempotent.answer")?)?,
        expires_at: UnixMillis(send.expires_at_ms),
    })
}

pub(super) fn directory_to_pb(
    request: u64,
    app: &herald_core::AppId,
    op: &DirectoryOp,
    limits: &DirectoryLimits,
) -> pb::DirectoryRequest {
    use pb::directory_request::Op;
    let op = match op {
        DirectoryOp::Put { device, entry } => {
            Op::Put(pb::DevicePut { device: device.to_string(), entry: Some(entry_to_pb(entry)) })
        }
        DirectoryOp::Patch { device, alias, tags } => Op::Patch(pb::DevicePatch {
            device: device.to_string(),
            set_alias: alias.is_some(),
            alias: alias.clone().flatten().map(|a| a.to_string()),
            tags: tags
                .iter()
                .map(|change| match change {
                    TagChange::Add(t) => pb::TagChange { add: true, tags: strings(t) },
                    TagChange::Remove(t) => pb::TagChange { add: false, tags: strings(t) },
                })
                .collect(),
        }),
        DirectoryOp::Get { device } => Op::Get(device.to_string()),
        DirectoryOp::Delete { device } => Op::Delete(device.to_string()),
        DirectoryOp::Alias { alias } => Op::Alias(alias.to_string()),
        DirectoryOp::Tag { tag, add, remove } => {
            Op::Tag(pb::TagDevices { tag: tag.to_string(), add: strings(add), remove: strings(remove) })
        }
        DirectoryOp::Count { expr } => Op::Count(expr_to_pb(expr)),
        DirectoryOp::Status { message } => Op::Status(message.0.to_be_bytes().to_vec().into()),
        DirectoryOp::Cancel { message } => Op::Cancel(message.0.to_be_bytes().to_vec().into()),
        DirectoryOp::Stats => Op::Stats(true),
        DirectoryOp::Keys(KeyOp::Create(key)) => Op::KeyCreate(api_key_to_pb(key)),
        DirectoryOp::Keys(KeyOp::Revoke { id }) => Op::KeyRevoke(id.clone()),
        DirectoryOp::Keys(KeyOp::List) => Op::KeyList(true),
        DirectoryOp::Users(op) => super::users::op_to_pb(op),
    };
    // Defaults are left out: an older router reads them as its own.
    let set = |value: usize, default: usize| (value != default).then_some(value as u32);
    let defaults = DirectoryLimits::default();
    pb::DirectoryRequest {
        request,
        app: app.to_string(),
        op: Some(op),
        max_tags_per_device: set(limits.tags_per_device, defaults.tags_per_device),
        max_devices_per_alias: set(limits.devices_per_alias, defaults.devices_per_alias),
        max_expr_depth: set(limits.expr_depth, defaults.expr_depth),
        max_expr_leaves: set(limits.expr_leaves, defaults.expr_leaves),
    }
}

/// An app's directory limits from a request: absent ones are the defaults;
/// none may pass its ceiling.
fn limits_from_pb(d: &pb::DirectoryRequest) -> Result<DirectoryLimits, ConvertError> {
    let defaults = DirectoryLimits::default();
    let get = |value: Option<u32>, default: usize| value.map_or(default, |v| v as usize);
    let limits = DirectoryLimits {
        tags_per_device: get(d.max_tags_per_device, defaults.tags_per_device),
        devices_per_alias: get(d.max_devices_per_alias, defaults.devices_per_alias),
        expr_depth: get(d.max_expr_depth, defaults.expr_depth),
        expr_leaves: get(d.max_expr_leaves, defaults.expr_leaves),
    };
    if !limits.within_ceiling() {
        return Err(invalid("directory.limits", "a limit is 0 or past its ceiling"));
    }
    Ok(limits)
}

pub(super) fn directory_from_pb(
    d: pb::DirectoryRequest,
) -> Result<(u64, herald_core::AppId, DirectoryOp, DirectoryLimits), ConvertError> {
    use pb::directory_request::Op;
    let limits = limits_from_pb(&d)?;
    let app = herald_core::AppId::new(d.app).map_err(|_| invalid("directory.app", "invalid app id"))?;
    let op = match required(d.op, "directory.op")? {
        Op::Put(p) => DirectoryOp::Put {
            device: client(p.device, "directory.put.device")?,
            entry: entry_from_pb(p.entry, "directory.put.entry")?,
        },
        Op::Patch(p) => DirectoryOp::Patch {
            device: client(p.device, "directory.patch.device")?,
            alias: match (p.set_alias, p.alias) {
                (false, _) => None,
                (true, None) => Some(None),
                (true, Some(a)) => Some(Some(alias(a, "directory.patch.alias")?)),
            },
            tags: p
                .tags
                .into_iter()
                .map(|c| {
                    let list = tags(c.tags, "directory.patch.tags")?;
                    Ok(if c.add { TagChange::Add(list) } else { TagChange::Remove(list) })
                })
                .collect::<Result<_, ConvertError>>()?,
        },
        Op::Get(device) => DirectoryOp::Get { device: client(device, "directory.get")? },
        Op::Delete(device) => DirectoryOp::Delete { device: client(device, "directory.delete")? },
        Op::Alias(a) => DirectoryOp::Alias { alias: alias(a, "directory.alias")? },
        Op::Tag(t) => DirectoryOp::Tag {
            tag: Tag::new(t.tag).map_err(|_| invalid("directory.tag.tag", "invalid tag"))?,
            add: clients(t.add, "directory.tag.add")?,
            remove: clients(t.remove, "directory.tag.remove")?,
        },
        Op::Count(expr) => DirectoryOp::Count { expr: expr_from_pb(expr)? },
        Op::Status(id) => DirectoryOp::Status { message: message_id_from_pb(&id, "directory.status")? },
        Op::Cancel(id) => DirectoryOp::Cancel { message: message_id_from_pb(&id, "directory.cancel")? },
        Op::Stats(_) => DirectoryOp::Stats,
        Op::KeyCreate(key) => DirectoryOp::Keys(KeyOp::Create(api_key_from_pb(key)?)),
        Op::KeyRevoke(id) => DirectoryOp::Keys(KeyOp::Revoke { id }),
        Op::KeyList(_) => DirectoryOp::Keys(KeyOp::List),
        op @ (Op::UserPut(_) | Op::UserRemove(_) | Op::UserGet(_) | Op::UserList(_) | Op::UserFind(_)) => {
            DirectoryOp::Users(super::users::op_from_pb(op)?)
        }
    };
    Ok((d.request, app, op, limits))
}

fn view_to_pb(view: &DeviceView) -> pb::DeviceView {
    pb::DeviceView {
        device: view.device.to_string(),
        entry: Some(entry_to_pb(&view.entry)),
        online: view.online.map(|n| n.0),
        since_ms: view.since.map(|t| t.0),
    }
}

fn view_from_pb(view: pb::DeviceView) -> Result<DeviceView, ConvertError> {
    Ok(DeviceView {
        device: client(view.device, "device_view.device")?,
        entry: entry_from_pb(view.entry, "device_view.entry")?,
        online: view.online.map(NodeId),
        since: view.since_ms.map(UnixMillis),
    })
}

pub(super) fn answer_to_pb(answer: &DirectoryAnswer) -> pb::directory_done::Answer {
    use pb::directory_done::Answer;
    match answer {
        DirectoryAnswer::Device(view) => Answer::Device(view_to_pb(view)),
        DirectoryAnswer::Done => Answer::Done(true),
        DirectoryAnswer::Devices(views) => {
            Answer::Devices(pb::DeviceViews { devices: views.iter().map(view_to_pb).collect() })
        }
        DirectoryAnswer::Changed(changed) => Answer::Changed(pb::TagResults { changed: changed.clone() }),
        DirectoryAnswer::Count(count) => Answer::Count(*count),
        DirectoryAnswer::Status(status) => Answer::Status(status_to_pb(status)),
        DirectoryAnswer::Stats(stats) => Answer::Stats(pb::AppStats {
            online: stats.online,
            offline_persistent: stats.offline_persistent,
            directory_devices: stats.directory_devices,
        }),
        DirectoryAnswer::Keys(keys) => {
            Answer::Keys(pb::ApiKeys { keys: keys.iter().map(api_key_to_pb).collect() })
        }
        DirectoryAnswer::Users(users) => {
            Answer::Users(pb::DeviceUsers { users: users.iter().map(super::users::user_to_pb).collect() })
        }
    }
}

/// The protobuf form of an API key's record.
pub(crate) fn api_key_to_pb(key: &ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        app: key.app.to_string(),
        id: key.id.clone(),
        name: key.name.clone(),
        scopes: u32::from(key.scopes),
        digest: key.digest.to_vec().into(),
        created_at_ms: key.created_at.0,
    }
}

/// An API key's record from its protobuf form.
pub(crate) fn api_key_from_pb(key: pb::ApiKey) -> Result<ApiKeyRecord, ConvertError> {
    Ok(ApiKeyRecord {
        app: AppId::new(key.app).map_err(|_| invalid("api_key.app", "invalid app id"))?,
        id: key.id,
        name: key.name,
        scopes: u8::try_from(key.scopes).map_err(|_| invalid("api_key.scopes", "unknown scope bits"))?,
        digest: key.digest.as_ref().try_into().map_err(|_| invalid("api_key.digest", "not 32 bytes"))?,
        created_at: UnixMillis(key.created_at_ms),
    })
}

/// API keys' records from their protobuf form.
pub(crate) fn api_keys_from_pb(keys: Vec<pb::ApiKey>) -> Result<Vec<ApiKeyRecord>, ConvertError> {
    keys.into_iter().map(api_key_from_pb).collect()
}

pub(super) fn answer_from_pb(
    answer: Option<pb::directory_done::Answer>,
) -> Result<DirectoryAnswer, ConvertError> {
    use pb::directory_done::Answer;
    Ok(match required(answer, "directory_done.answer")? {
        Answer::Device(view) => DirectoryAnswer::Device(view_from_pb(view)?),
        Answer::Done(_) => DirectoryAnswer::Done,
        Answer::Devices(views) => {
            DirectoryAnswer::Devices(views.devices.into_iter().map(view_from_pb).collect::<Result<_, _>>()?)
        }
        Answer::Changed(results) => DirectoryAnswer::Changed(results.changed),
        Answer::Count(count) => DirectoryAnswer::Count(count),
        Answer::Status(status) => DirectoryAnswer::Status(status_from_pb(status)?),
        Answer::Stats(stats) => DirectoryAnswer::Stats(crate::push::AppStats {
            online: stats.online,
            offline_persistent: stats.offline_persistent,
            directory_devices: stats.directory_devices,
        }),
        Answer::Keys(keys) => DirectoryAnswer::Keys(api_keys_from_pb(keys.keys)?),
        Answer::Users(users) => DirectoryAnswer::Users(super::users::users_from_pb(users.users)?),
    })
}

/// The protobuf form of a message status.
pub(crate) fn status_to_pb(s: &MessageStatus) -> pb::MessageStatus {
    pb::MessageStatus {
        message: s.message.0.to_be_bytes().to_vec().into(),
        created_at_ms: s.created_at.0,
        expires_at_ms: s.expires_at.map(|t| t.0),
        qos: u32::from(s.qos),
        targeted: s.targeted,
        online: s.online,
        stored: s.stored,
        unreachable: s.unreachable,
        delivered_online: s.delivered_online,
        delivered_from_offline: s.delivered_from_offline,
        acknowledged: s.acknowledged,
        cancelled: s.cancelled,
        expired: s.expired,
        pending: s.pending,
        as_of_ms: s.as_of.0,
        is_final: s.is_final,
        replaced: s.replaced,
    }
}

/// A message status from its protobuf form.
pub(crate) fn status_from_pb(s: pb::MessageStatus) -> Result<MessageStatus, ConvertError> {
    Ok(MessageStatus {
        message: message_id_from_pb(&s.message, "message_status.message")?,
        created_at: UnixMillis(s.created_at_ms),
        expires_at: s.expires_at_ms.map(UnixMillis),
        qos: u8::try_from(s.qos).map_err(|_| invalid("message_status.qos", "0, 1 or 2"))?,
        targeted: s.targeted,
        online: s.online,
        stored: s.stored,
        unreachable: s.unreachable,
        delivered_online: s.delivered_online,
        delivered_from_offline: s.delivered_from_offline,
        acknowledged: s.acknowledged,
        cancelled: s.cancelled,
        replaced: s.replaced,
        expired: s.expired,
        pending: s.pending,
        as_of: UnixMillis(s.as_of_ms),
        is_final: s.is_final,
    })
}

/// The protobuf form of a report.
pub(crate) fn report_items_to_pb(request: u64, origin: u64, batch: u64, deltas: &[PushDelta]) -> pb::Report {
    pb::Report {
        request,
        origin,
        batch,
        deltas: deltas
            .iter()
            .map(|d| pb::PushDelta {
                app: d.app.to_string(),
                message: d.message.0.to_be_bytes().to_vec().into(),
                delivered_online: d.delivered_online,
                delivered_from_offline: d.delivered_from_offline,
                acknowledged: d.acknowledged,
                cancelled: d.cancelled,
                replaced: d.replaced,
            })
            .collect(),
    }
}

/// The deltas of a report, from their protobuf form.
pub(crate) fn deltas_from_pb(deltas: Vec<pb::PushDelta>) -> Result<Vec<PushDelta>, ConvertError> {
    deltas
        .into_iter()
        .map(|d| {
            Ok(PushDelta {
                app: AppId::new(d.app).map_err(|_| invalid("push_delta.app", "invalid app id"))?,
                message: message_id_from_pb(&d.message, "push_delta.message")?,
                delivered_online: d.delivered_online,
                delivered_from_offline: d.delivered_from_offline,
                acknowledged: d.acknowledged,
                cancelled: d.cancelled,
                replaced: d.replaced,
            })
        })
        .collect()
}
