//! Conversions between journal facts and their protobuf form.

use super::convert::{
    ConvertError, invalid, message_from_pb, message_to_pb, qos_from_pb, queued_from_pb, queued_to_pb,
    required, required_message, session_from_pb, session_to_pb, subscription_from_pb, subscription_to_pb,
    will_from_pb, will_to_pb,
};
use super::pb;
use crate::journal::{
    DirectoryDevice, DurableImage, DurableSession, Fact, FanoutLog, GroupQueue, MessageRecord, QueueTarget,
    ReportMark,
};
use herald_core::{AppId, NodeId, TopicFilter, UnixMillis};
use prost::Message as _;
use std::sync::Arc;

/// Encodes facts as one `Journal` message.
pub fn encode(facts: &[Fact]) -> Vec<u8> {
    pb::Journal { facts: facts.iter().map(fact_to_pb).collect() }.encode_to_vec()
}

/// Decodes what [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Vec<Fact>, ConvertError> {
    let journal = pb::Journal::decode(bytes).map_err(|_| invalid("journal", "not a Journal message"))?;
    journal.facts.into_iter().map(fact_from_pb).collect()
}

/// Encodes a whole durable image.
pub fn encode_image(image: &DurableImage) -> Vec<u8> {
    pb::DurableImage {
        retained: image.retained.iter().map(|m| message_to_pb(m)).collect(),
        sessions: image.sessions.iter().map(session_put_to_pb).collect(),
        groups: image.groups.iter().map(group_to_pb).collect(),
        gateways: image.gateways.iter().map(|g| g.0).collect(),
        devices: image.devices.iter().map(device_to_pb).collect(),
        fanout: image
            .fanout
            .iter()
            .map(|log| pb::FanoutLog {
                app: log.app.to_string(),
                next_seq: log.next_seq,
                entries: log.entries.iter().map(super::push::fanout_to_pb).collect(),
            })
            .collect(),
        idempotent: image.idempotent.iter().map(super::push::idempotent_to_pb).collect(),
        messages: image.messages.iter().map(record_to_pb).collect(),
        report_marks: image
            .report_marks
            .iter()
            .map(|m| pb::ReportMark { gateway: m.gateway.0, origin: m.origin, batch: m.batch })
            .collect(),
        api_keys: image.api_keys.iter().map(super::push::api_key_to_pb).collect(),
        device_users: image.device_users.iter().map(super::users::user_to_pb).collect(),
    }
    .encode_to_vec()
}

/// Decodes what [`encode_image`] wrote.
pub fn decode_image(bytes: &[u8]) -> Result<DurableImage, ConvertError> {
    let image =
        pb::DurableImage::decode(bytes).map_err(|_| invalid("image", "not a DurableImage message"))?;
    Ok(DurableImage {
        retained: image
            .retained
            .into_iter()
            .map(|m| message_from_pb(m).map(Arc::new))
            .collect::<Result<_, _>>()?,
        sessions: image.sessions.into_iter().map(session_put_from_pb).collect::<Result<_, _>>()?,
        groups: image.groups.into_iter().map(group_from_pb).collect::<Result<_, _>>()?,
        gateways: image.gateways.into_iter().map(NodeId).collect(),
        devices: image.devices.into_iter().map(device_from_pb).collect::<Result<_, _>>()?,
        fanout: image
            .fanout
            .into_iter()
            .map(|log| {
                Ok(FanoutLog {
                    app: AppId::new(log.app).map_err(|_| invalid("fanout_log.app", "invalid app id"))?,
                    next_seq: log.next_seq,
                    entries: log
                        .entries
                        .into_iter()
                        .map(super::push::fanout_from_pb)
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, ConvertError>>()?,
        idempotent: image
            .idempotent
            .into_iter()
            .map(super::push::idempotent_from_pb)
            .collect::<Result<_, _>>()?,
        messages: image.messages.into_iter().map(record_from_pb).collect::<Result<_, _>>()?,
        report_marks: image
            .report_marks
            .into_iter()
            .map(|m| ReportMark { gateway: NodeId(m.gateway), origin: m.origin, batch: m.batch })
            .collect(),
        api_keys: super::push::api_keys_from_pb(image.api_keys)?,
        device_users: super::users::users_from_pb(image.device_users)?,
    })
}

fn fact_to_pb(fact: &Fact) -> pb::Fact {
    use pb::fact::Kind;
    let kind = match fact {
        Fact::Retained(message) => Kind::Retained(message_to_pb(message)),
        Fact::SessionPut(session) => Kind::SessionPut(session_put_to_pb(session)),
        Fact::SessionMeta(session) => Kind::SessionMeta(session_put_to_pb(session)),
        Fact::SessionRemoved(key) => Kind::SessionRemoved(session_to_pb(key)),
        Fact::Queued { message, targets } => Kind::Queued(pb::Queued {
            message: Some(message_to_pb(message)),
            targets: targets
                .iter()
                .map(|t| pb::QueueTarget {
                    session: Some(session_to_pb(&t.session)),
                    qos: u32::from(t.qos.as_u8()),
                    subscription_ids: t.subscription_ids.clone(),
                })
                .collect(),
        }),
        Fact::GroupQueue(group) => Kind::GroupQueue(group_to_pb(group)),
        Fact::QueueDropped { session, count } => {
            Kind::QueueDropped(pb::QueueDropped { session: Some(session_to_pb(session)), count: *count })
        }
        Fact::Acked(acks) => Kind::Acked(super::convert::session_acks_to_pb(acks)),
        Fact::GatewayLinked(gateway) => Kind::GatewayLinked(gateway.0),
        Fact::GatewayGone(gateway) => Kind::GatewayGone(gateway.0),
        Fact::DevicePut(device) => Kind::DevicePut(device_to_pb(device)),
        Fact::DeviceRemoved(key) => Kind::DeviceRemoved(session_to_pb(key)),
        Fact::Fanout(entry) => Kind::Fanout(super::push::fanout_to_pb(entry)),
        Fact::Idempotent(send) => Kind::Idempotent(super::push::idempotent_to_pb(send)),
        Fact::IdempotencyExpired(before) => Kind::IdempotencyExpired(before.0),
        Fact::MessageRecorded(record) => Kind::MessageRecorded(record_to_pb(record)),
        Fact::MessageReport { gateway, origin, batch, deltas } => Kind::MessageReport(pb::MessageReport {
            gateway: gateway.0,
            report: Some(super::push::report_items_to_pb(0, *origin, *batch, deltas)),
        }),
        Fact::MessagesForgotten(before) => Kind::MessagesForgotten(before.0),
        Fact::MessageRetracted { app, message, cancelled, replaced } => {
            Kind::MessageRetracted(pb::MessageRetracted {
                app: app.to_string(),
                message: message.0.to_be_bytes().to_vec().into(),
                cancelled: *cancelled,
                replaced: *replaced,
            })
        }
        Fact::FanoutRemoved { app, seq } => {
            Kind::FanoutRemoved(pb::FanoutTrimmed { app: app.to_string(), through: *seq })
        }
        Fact::FanoutTrimmed { app, through } => {
            Kind::FanoutTrimmed(pb::FanoutTrimmed { app: app.to_string(), through: *through })
        }
        Fact::ApiKeyPut(key) => Kind::ApiKeyPut(super::push::api_key_to_pb(key)),
        Fact::ApiKeyRevoked { app, id } => {
            Kind::ApiKeyRevoked(pb::ApiKeyRevoked { app: app.to_string(), id: id.clone() })
        }
        Fact::DeviceUserPut(user) => Kind::DeviceUserPut(super::users::user_to_pb(user)),
        Fact::DeviceUserRemoved { app, username } => Kind::DeviceUserRemoved(pb::DeviceUserRemoved {
            app: app.to_string(),
            username: username.clone(),
        }),
    };
    pb::Fact { kind: Some(kind) }
}

fn fact_from_pb(fact: pb::Fact) -> Result<Fact, ConvertError> {
    use pb::fact::Kind;
    Ok(match required(fact.kind, "fact.kind")? {
        Kind::Retained(message) => Fact::Retained(Arc::new(message_from_pb(message)?)),
        Kind::SessionPut(session) => Fact::SessionPut(Box::new(session_put_from_pb(session)?)),
        Kind::SessionMeta(session) => Fact::SessionMeta(Box::new(session_put_from_pb(session)?)),
        Kind::SessionRemoved(key) => {
            Fact::SessionRemoved(session_from_pb(Some(key), "fact.session_removed")?)
        }
        Kind::Queued(q) => Fact::Queued {
            message: required_message(q.message, "queued.message")?,
            targets: q
                .targets
                .into_iter()
                .map(|t| {
                    Ok(QueueTarget {
                        session: session_from_pb(t.session, "queued.targets.session")?,
                        qos: qos_from_pb(t.qos, "queued.targets.qos")?,
                        subscription_ids: t.subscription_ids,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
        },
        Kind::GroupQueue(group) => Fact::GroupQueue(group_from_pb(group)?),
        Kind::QueueDropped(d) => Fact::QueueDropped {
            session: session_from_pb(d.session, "queue_dropped.session")?,
            count: d.count,
        },
        Kind::Acked(acks) => Fact::Acked(super::convert::session_acks_from_pb(acks)?),
        Kind::GatewayLinked(gateway) => Fact::GatewayLinked(NodeId(gateway)),
        Kind::GatewayGone(gateway) => Fact::GatewayGone(NodeId(gateway)),
        Kind::DevicePut(device) => Fact::DevicePut(Box::new(device_from_pb(device)?)),
        Kind::DeviceRemoved(key) => Fact::DeviceRemoved(session_from_pb(Some(key), "fact.device_removed")?),
        Kind::Fanout(entry) => Fact::Fanout(super::push::fanout_from_pb(entry)?),
        Kind::Idempotent(send) => Fact::Idempotent(Box::new(super::push::idempotent_from_pb(send)?)),
        Kind::IdempotencyExpired(before) => Fact::IdempotencyExpired(UnixMillis(before)),
        Kind::MessageRecorded(record) => Fact::MessageRecorded(Box::new(record_from_pb(record)?)),
        Kind::MessageReport(r) => {
            let report = required(r.report, "message_report.report")?;
            Fact::MessageReport {
                gateway: NodeId(r.gateway),
                origin: report.origin,
                batch: report.batch,
                deltas: super::push::deltas_from_pb(report.deltas)?,
            }
        }
        Kind::MessagesForgotten(before) => Fact::MessagesForgotten(UnixMillis(before)),
        Kind::MessageRetracted(r) => Fact::MessageRetracted {
            app: AppId::new(r.app).map_err(|_| invalid("message_retracted.app", "invalid app id"))?,
            message: super::convert::message_id_from_pb(&r.message, "message_retracted.message")?,
            cancelled: r.cancelled,
            replaced: r.replaced,
        },
        Kind::FanoutRemoved(r) => Fact::FanoutRemoved {
            app: AppId::new(r.app).map_err(|_| invalid("fanout_removed.app", "invalid app id"))?,
            seq: r.through,
        },
        Kind::FanoutTrimmed(t) => Fact::FanoutTrimmed {
            app: AppId::new(t.app).map_err(|_| invalid("fanout_trimmed.app", "invalid app id"))?,
            through: t.through,
        },
        Kind::ApiKeyPut(key) => Fact::ApiKeyPut(Box::new(super::push::api_key_from_pb(key)?)),
        Kind::ApiKeyRevoked(r) => Fact::ApiKeyRevoked {
            app: AppId::new(r.app).map_err(|_| invalid("api_key_revoked.app", "invalid app id"))?,
            id: r.id,
        },
        Kind::DeviceUserPut(user) => Fact::DeviceUserPut(Box::new(super::users::user_from_pb(user)?)),
        Kind::DeviceUserRemoved(r) => Fact::DeviceUserRemoved {
            app: AppId::new(r.app).map_err(|_| invalid("device_user_removed.app", "invalid app id"))?,
            username: r.username,
        },
    })
}

fn record_to_pb(r: &MessageRecord) -> pb::MessageRecord {
    pb::MessageRecord {
        app: r.app.to_string(),
        status: Some(super::push::status_to_pb(&r.status)),
        forget_at_ms: r.forget_at.0,
    }
}

fn record_from_pb(r: pb::MessageRecord) -> Result<MessageRecord, ConvertError> {
    Ok(MessageRecord {
        app: AppId::new(r.app).map_err(|_| invalid("message_record.app", "invalid app id"))?,
        status: super::push::status_from_pb(required(r.status, "message_record.status")?)?,
        forget_at: UnixMillis(r.forget_at_ms),
    })
}

fn device_to_pb(d: &DirectoryDevice) -> pb::DirectoryDevice {
    pb::DirectoryDevice {
        app: d.device.app.to_string(),
        device: d.device.client.to_string(),
        entry: Some(super::push::entry_to_pb(&d.entry)),
    }
}

fn device_from_pb(d: pb::DirectoryDevice) -> Result<DirectoryDevice, ConvertError> {
    let key = session_from_pb(Some(pb::SessionKey { app: d.app, client: d.device }), "directory_device")?;
    Ok(DirectoryDevice { device: key, entry: super::push::entry_from_pb(d.entry, "directory_device.entry")? })
}

fn session_put_to_pb(s: &DurableSession) -> pb::DurableSession {
    pb::DurableSession {
        session: Some(session_to_pb(&s.session)),
        expiry_seconds: s.expiry_seconds,
        subscriptions: s.subscriptions.iter().map(subscription_to_pb).collect(),
        queue: s.queue.iter().map(queued_to_pb).collect(),
        will: s.will.as_deref().map(will_to_pb),
        will_at_ms: s.will_at.map(|t| t.0),
        expires_at_ms: s.expires_at.map(|t| t.0),
        online: s.online,
        epoch: s.epoch.map(|e| pb::Epoch { generation: e.generation, counter: e.counter }),
        fanout_cursor: s.fanout_cursor,
    }
}

fn session_put_from_pb(s: pb::DurableSession) -> Result<DurableSession, ConvertError> {
    Ok(DurableSession {
        session: session_from_pb(s.session, "session_put.session")?,
        expiry_seconds: s.expiry_seconds,
        subscriptions: s.subscriptions.into_iter().map(subscription_from_pb).collect::<Result<_, _>>()?,
        queue: s.queue.into_iter().map(queued_from_pb).collect::<Result<_, _>>()?,
        will: s.will.map(|w| will_from_pb(w, "session_put.will.message")).transpose()?,
        will_at: s.will_at_ms.map(UnixMillis),
        expires_at: s.expires_at_ms.map(UnixMillis),
        online: s.online,
        epoch: s.epoch.map(|e| herald_core::Epoch::new(e.generation, e.counter)),
        fanout_cursor: s.fanout_cursor,
    })
}

fn group_to_pb(group: &GroupQueue) -> pb::GroupQueue {
    pb::GroupQueue {
        app: group.app.as_str().to_owned(),
        filter: group.filter.as_str().to_owned(),
        messages: group.messages.iter().map(|m| message_to_pb(m)).collect(),
    }
}

fn group_from_pb(group: pb::GroupQueue) -> Result<GroupQueue, ConvertError> {
    Ok(GroupQueue {
        app: AppId::new(group.app).map_err(|_| invalid("group_queue.app", "invalid app id"))?,
        filter: TopicFilter::new(group.filter)
            .map_err(|_| invalid("group_queue.filter", "invalid topic filter"))?,
        messages: group
            .messages
            .into_iter()
            .map(|m| message_from_pb(m).map(Arc::new))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seam::{Progress, QueuedMessage, Subscription, Will};
    use herald_core::{ClientId, MessageId, QoS, SessionKey, Topic};

    fn message(topic: &str, payload: &'static [u8]) -> Arc<crate::Message> {
        Arc::new(crate::Message {
            id: MessageId(42),
            app: AppId::default_app(),
            topic: Topic::new(topic.to_owned()).expect("topic"),
            payload: bytes::Bytes::from_static(payload),
            qos: QoS::ExactlyOnce,
            retain: true,
            created_at: UnixMillis(5),
            expires_at: Some(UnixMillis(9)),
            origin: None,
            properties: None,
            trace: None,
        })
    }

    fn key() -> SessionKey {
        SessionKey::new(AppId::default_app(), ClientId::new("dev".to_owned()).expect("id"))
    }

    fn queued(payload: &'static [u8]) -> QueuedMessage {
        QueuedMessage {
            message: message("q", payload),
            qos: QoS::AtLeastOnce,
            subscription_ids: vec![3, 4],
            progress: Progress::Sent(7),
            shared: None,
        }
    }

    fn session() -> DurableSession {
        DurableSession {
            session: key(),
            expiry_seconds: 60,
            subscriptions: vec![Subscription {
                filter: TopicFilter::new("a/#".to_owned()).expect("filter"),
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
                identifier: Some(9),
            }],
            queue: vec![queued(b"one")],
            will: Some(Box::new(Will {
                message: message("w", b"bye"),
                delay_seconds: 5,
                expiry_seconds: Some(3),
            })),
            will_at: Some(UnixMillis(100)),
            expires_at: Some(UnixMillis(200)),
            online: true,
            // Records written before the epoch was kept (the golden
            // files of version 1 hold them) have none.
            epoch: None,
            fanout_cursor: None,
        }
    }

    fn fanout(seq: u64, all: bool) -> crate::seam::FanoutEntry {
        use crate::seam::FanoutAudience;
        let devices = ["d1", "d2"].iter().map(|d| herald_core::ClientId::new(*d).expect("id")).collect();
        let audience = if all { FanoutAudience::All } else { FanoutAudience::Devices(Arc::new(devices)) };
        crate::seam::FanoutEntry { seq, message: message("$push", b"news"), audience }
    }

    fn delta() -> crate::seam::PushDelta {
        crate::seam::PushDelta {
            app: AppId::default_app(),
            message: herald_core::MessageId(42),
            delivered_online: 3,
            delivered_from_offline: 2,
            acknowledged: 4,
            cancelled: 0,
            replaced: 0,
        }
    }

    fn record() -> MessageRecord {
        let status = crate::seam::MessageStatus {
            message: herald_core::MessageId(42),
            created_at: UnixMillis(10),
            expires_at: Some(UnixMillis(3_600_010)),
            qos: 1,
            targeted: 9,
            online: 3,
            stored: 4,
            unreachable: 2,
            delivered_online: 1,
            ..Default::default()
        };
        MessageRecord { app: AppId::default_app(), status, forget_at: UnixMillis(90_000_010) }
    }

    fn idempotent() -> crate::journal::IdempotentSend {
        use crate::seam::{Idempotency, PushOutcome, PushReport};
        let device = herald_core::ClientId::new("d1").expect("id");
        crate::journal::IdempotentSend {
            app: AppId::default_app(),
            idempotency: Idempotency { key: "k-1".to_owned(), body_hash: [3; 32] },
            message_id: herald_core::MessageId(42),
            answer: PushReport {
                devices: vec![(device, PushOutcome::Stored)],
                stored: 1,
                ..PushReport::default()
            },
            expires_at: UnixMillis(86_400_000),
        }
    }

    fn api_key() -> crate::seam::ApiKeyRecord {
        crate::seam::ApiKeyRecord {
            app: AppId::default_app(),
            id: "key_1".to_owned(),
            name: "ci".to_owned(),
            scopes: 3,
            digest: [9; 32],
            created_at: UnixMillis(4_000),
        }
    }

    fn device_user() -> crate::users::DeviceUser {
        use crate::users::{DeviceUser, HashAlgorithm, PasswordHash, SaltPosition};
        DeviceUser {
            app: AppId::default_app(),
            username: "meter-7".to_owned(),
            password: PasswordHash {
                algorithm: HashAlgorithm::Sha256,
                salt_position: SaltPosition::Suffix,
                iterations: 0,
                salt: b"pepper".to_vec(),
                hash: vec![5; 32],
            },
            updated_at: UnixMillis(6_000),
        }
    }

    fn device() -> DirectoryDevice {
        use herald_core::directory::{Alias, DeviceEntry, Tag};
        let tags = ["city:bj", "vip"].into_iter().map(|t| Tag::new(t).expect("tag")).collect();
        DirectoryDevice {
            device: key(),
            entry: DeviceEntry { alias: Some(Alias::new("user:42").expect("alias")), tags },
        }
    }

    #[test]
    fn every_fact_and_an_image_survive_their_encoding() {
        let group = GroupQueue {
            app: AppId::default_app(),
            filter: TopicFilter::new("$share/g/jobs".to_owned()).expect("filter"),
            messages: vec![message("jobs", b"j")],
        };
        let facts = vec![
            Fact::Retained(message("r", b"kept")),
            Fact::SessionPut(Box::new(session())),
            Fact::SessionRemoved(key()),
            Fact::Queued {
                message: message("q", b"two"),
                targets: vec![QueueTarget {
                    session: key(),
                    qos: QoS::AtLeastOnce,
                    subscription_ids: vec![5],
                }],
            },
            Fact::GroupQueue(group.clone()),
            Fact::QueueDropped { session: key(), count: 3 },
            Fact::GatewayLinked(NodeId(4)),
            Fact::GatewayGone(NodeId(4)),
            Fact::DevicePut(Box::new(device())),
            Fact::DeviceRemoved(key()),
            Fact::Fanout(fanout(3, true)),
            Fact::Fanout(fanout(4, false)),
            Fact::FanoutTrimmed { app: AppId::default_app(), through: 3 },
            Fact::Idempotent(Box::new(idempotent())),
            Fact::IdempotencyExpired(UnixMillis(1_000)),
            Fact::MessageRecorded(Box::new(record())),
            Fact::MessageReport { gateway: NodeId(2), origin: 77, batch: 5, deltas: vec![delta()] },
            Fact::MessagesForgotten(UnixMillis(2_000)),
            Fact::MessageRetracted {
                app: AppId::default_app(),
                message: herald_core::MessageId(42),
                cancelled: 2,
                replaced: 1,
            },
            Fact::FanoutRemoved { app: AppId::default_app(), seq: 4 },
            Fact::ApiKeyPut(Box::new(api_key())),
            Fact::ApiKeyRevoked { app: AppId::default_app(), id: "key_1".to_owned() },
            Fact::MessageReport {
                gateway: NodeId(2),
                origin: 77,
                batch: 6,
                deltas: vec![crate::seam::PushDelta { cancelled: 3, ..delta() }],
            },
            Fact::MessageReport {
                gateway: NodeId(2),
                origin: 77,
                batch: 7,
                deltas: vec![crate::seam::PushDelta { replaced: 2, ..delta() }],
            },
            Fact::DeviceUserPut(Box::new(device_user())),
            Fact::DeviceUserRemoved { app: AppId::default_app(), username: "meter-7".to_owned() },
            Fact::Acked(crate::seam::SessionAcks {
                session: key(),
                messages: vec![herald_core::MessageId(42), herald_core::MessageId(43)],
                progress: Vec::new(),
            }),
            Fact::SessionMeta(Box::new(DurableSession { queue: Vec::new(), ..session() })),
        ];
        assert_eq!(decode(&encode(&facts)).expect("decodes"), facts);
        let image = DurableImage {
            retained: vec![message("r", b"kept")],
            sessions: vec![session()],
            groups: vec![group],
            gateways: vec![NodeId(2), NodeId(3)],
            devices: vec![device()],
            fanout: vec![FanoutLog {
                app: AppId::default_app(),
                next_seq: 5,
                entries: vec![fanout(4, false)],
            }],
            idempotent: vec![idempotent()],
            messages: vec![record()],
            report_marks: vec![ReportMark { gateway: NodeId(2), origin: 77, batch: 5 }],
            api_keys: vec![api_key()],
            device_users: vec![device_user()],
        };
        assert_eq!(decode_image(&encode_image(&image)).expect("decodes"), image);
        let with_epoch = vec![Fact::SessionPut(Box::new(DurableSession {
            epoch: Some(herald_core::Epoch::new(4, 2)),
            fanout_cursor: Some(12),
            ..session()
        }))];
        assert_eq!(decode(&encode(&with_epoch)).expect("decodes"), with_epoch);

        // What the Raft log and snapshots of routers in the field hold: a
        // build must read it back as it was written (golden files, v1).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/journal");
        let stored = herald_testkit::golden::check(&dir.join("facts-v1.bin"), &encode(&facts));
        assert_eq!(decode(&stored).expect("stored facts decode"), facts);
        let stored = herald_testkit::golden::check(&dir.join("image-v1.bin"), &encode_image(&image));
        assert_eq!(decode_image(&stored).expect("stored image decodes"), image);
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        assert!(decode(&[0xFF, 0xFF, 0xFF]).is_err());
        assert!(decode_image(&[0x0A, 0x05, 0x01]).is_err());
        let missing = pb::Journal { facts: vec![pb::Fact { kind: None }] }.encode_to_vec();
        assert!(decode(&missing).is_err(), "a fact without a kind");
    }
}
