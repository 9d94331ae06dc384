//! Round trips of every seam item through its protobuf form, and refusals
//! of malformed protobuf items.

use super::*;
use crate::seam::{
    Audience, DeviceView, DirectoryAnswer, DirectoryOp, KeyOp, Push, PushOutcome, PushReport, TagChange,
};
use crate::users::{DeviceUser, HashAlgorithm, PasswordHash, SaltPosition, UserOp};
use bytes::Bytes;
use herald_core::NodeId;
use herald_core::directory::{Alias, DeviceEntry, Tag, TagExpr};
use prost::Message as _;

fn shop() -> AppId {
    AppId::new("shop").expect("app")
}

fn client(id: &str) -> ClientId {
    ClientId::new(id).expect("client")
}

fn tag(name: &str) -> Tag {
    Tag::new(name).expect("tag")
}

fn entry() -> DeviceEntry {
    DeviceEntry {
        alias: Some(Alias::new("user:1").expect("alias")),
        tags: [tag("a"), tag("b")].into_iter().collect(),
    }
}

fn view() -> DeviceView {
    DeviceView {
        device: client("d1"),
        entry: entry(),
        online: Some(NodeId(2)),
        since: Some(herald_core::UnixMillis(5)),
    }
}

fn key(client: &str) -> SessionKey {
    SessionKey::new(AppId::new("shop").expect("app"), ClientId::new(client).expect("client"))
}

fn message(topic: &str, with_properties: bool) -> Arc<Message> {
    let properties = with_properties.then(|| {
        Box::new(MessageProperties {
            payload_format: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        })
    });
    Arc::new(Message {
        id: herald_core::MessageId::compose(1_700_000_000_000, NodeId(3), 42),
        app: AppId::new("shop").expect("app"),
        topic: Topic::new(topic.to_owned()).expect("topic"),
        payload: Bytes::from_static(b"payload"),
        qos: QoS::ExactlyOnce,
        retain: true,
        created_at: UnixMillis(1_700_000_000_000),
        expires_at: with_properties.then_some(UnixMillis(1_700_000_060_000)),
        origin: Some(ClientId::new("sender").expect("client")),
        properties,
        trace: None,
    })
}

fn subscription() -> Subscription {
    Subscription {
        filter: TopicFilter::new("a/+/c").expect("filter"),
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: 2,
        identifier: Some(9),
    }
}

fn queued(progress: Progress) -> QueuedMessage {
    QueuedMessage {
        message: message("q/1", true),
        qos: QoS::AtLeastOnce,
        subscription_ids: vec![1, 2],
        progress,
        shared: (progress == Progress::Unsent).then(|| TopicFilter::new("$share/g/q/+").expect("filter")),
    }
}

/// Encodes to bytes and back, as the wire does.
fn through_the_wire_up(item: &Uplink) -> Uplink {
    let bytes = uplink_to_pb(item).encode_to_vec();
    uplink_from_pb(pb::Uplink::decode(bytes.as_slice()).expect("decodes")).expect("converts")
}

fn through_the_wire_down(item: &Downlink) -> Downlink {
    let bytes = downlink_to_pb(item).encode_to_vec();
    downlink_from_pb(pb::Downlink::decode(bytes.as_slice()).expect("decodes")).expect("converts")
}

/// One of every uplink item, with every optional part used somewhere.
fn uplink_samples() -> Vec<Uplink> {
    vec![
        Uplink::Claim(Claim {
            request: 7 << 24,
            session: key("c1"),
            clean_start: false,
            expiry_seconds: 3600,
            will: Some(Box::new(Will {
                message: message("will/c1", true),
                delay_seconds: 5,
                expiry_seconds: Some(60),
            })),
            granted: None,
        }),
        Uplink::Claim(Claim {
            request: 1,
            session: key("c2"),
            clean_start: true,
            expiry_seconds: 0,
            will: None,
            granted: None,
        }),
        Uplink::Release(Release {
            request: 11,
            session: key("c1"),
            epoch: Epoch::new(4, 9),
            expiry_seconds: 10,
            publish_will: true,
            pending: vec![queued(Progress::Sent(5)), queued(Progress::Released(6)), queued(Progress::Unsent)],
        }),
        Uplink::Routes {
            add: vec![(AppId::new("shop").expect("app"), TopicFilter::new("a/#").expect("filter"))],
            remove: vec![(AppId::default_app(), TopicFilter::new("$share/g/x").expect("filter"))],
        },
        Uplink::Subscribe {
            request: 3,
            session: key("c1"),
            epoch: Epoch::new(1, 2),
            subscriptions: vec![
                (subscription(), RetainedLookup::Send),
                (subscription(), RetainedLookup::Skip),
            ],
        },
        Uplink::Unsubscribe {
            request: 4,
            session: key("c1"),
            epoch: Epoch::new(1, 2),
            filters: vec![TopicFilter::new("a/+/c").expect("filter")],
        },
        Uplink::Publish(Publish {
            request: Some(5),
            from: Some((key("c1"), Epoch::new(1, 2))),
            message: message("a/b/c", true),
        }),
        Uplink::Publish(Publish { request: None, from: None, message: message("a/b/c", false) }),
        Uplink::Redispatch {
            filter: TopicFilter::new("$share/g/a/#").expect("filter"),
            messages: vec![message("a/1", false), message("a/2", true)],
        },
        Uplink::Requeue {
            session: key("c1"),
            epoch: Epoch::new(1, 2),
            messages: vec![queued(Progress::Unsent)],
        },
        Uplink::Reattach {
            sessions: vec![
                Reattach { session: key("c1"), epoch: Epoch::new(3, 8), expiry_seconds: 60, will: None },
                Reattach {
                    session: key("c2"),
                    epoch: Epoch::new(3, 9),
                    expiry_seconds: 0,
                    will: Some(Box::new(Will {
                        message: message("will/c2", false),
                        delay_seconds: 0,
                        expiry_seconds: None,
                    })),
                },
            ],
            last: false,
        },
        Uplink::Reattach { sessions: Vec::new(), last: true },
        Uplink::Push(Push {
            request: 13,
            message: message("$push", true),
            audience: Audience::Devices(vec![
                ClientId::new("d1").expect("id"),
                ClientId::new("d2").expect("id"),
            ]),
            store_offline: true,
            idempotency: None,
        }),
        Uplink::Push(Push {
            request: 23,
            message: message("$push", false),
            audience: Audience::Tags(TagExpr::Or(vec![TagExpr::Tag(tag("a")), TagExpr::Tag(tag("b"))])),
            store_offline: true,
            idempotency: None,
        }),
        Uplink::Push(Push {
            request: 24,
            message: message("$push", false),
            audience: Audience::All,
            store_offline: true,
            idempotency: Some(crate::seam::Idempotency { key: "order-77".to_owned(), body_hash: [7; 32] }),
        }),
        Uplink::Push(Push {
            request: 14,
            message: message("$push", false),
            audience: Audience::Aliases(vec![Alias::new("user:1").expect("alias")]),
            store_offline: false,
            idempotency: None,
        }),
        Uplink::Report {
            request: 25,
            origin: 9,
            batch: 3,
            deltas: vec![crate::seam::PushDelta {
                app: shop(),
                message: MessageId(5),
                delivered_online: 1,
                delivered_from_offline: 2,
                acknowledged: 3,
                cancelled: 0,
                replaced: 0,
            }],
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 26,
            app: shop(),
            op: DirectoryOp::Status { message: MessageId(5) },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 27,
            app: shop(),
            op: DirectoryOp::Cancel { message: MessageId(5) },
        },
        Uplink::Directory { limits: Default::default(), request: 28, app: shop(), op: DirectoryOp::Stats },
        Uplink::Directory {
            limits: Default::default(),
            request: 15,
            app: shop(),
            op: DirectoryOp::Put { device: client("d1"), entry: entry() },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 16,
            app: shop(),
            op: DirectoryOp::Patch {
                device: client("d1"),
                alias: Some(None),
                tags: vec![TagChange::Add(vec![tag("a")]), TagChange::Remove(vec![tag("b")])],
            },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 17,
            app: shop(),
            op: DirectoryOp::Patch {
                device: client("d1"),
                alias: Some(Some(Alias::new("user:2").expect("alias"))),
                tags: vec![],
            },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 18,
            app: shop(),
            op: DirectoryOp::Get { device: client("d1") },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 19,
            app: shop(),
            op: DirectoryOp::Delete { device: client("d1") },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 20,
            app: shop(),
            op: DirectoryOp::Alias { alias: Alias::new("user:1").expect("alias") },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 21,
            app: shop(),
            op: DirectoryOp::Tag { tag: tag("vip"), add: vec![client("d1")], remove: vec![client("d2")] },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 22,
            app: shop(),
            op: DirectoryOp::Count {
                expr: TagExpr::And(vec![
                    TagExpr::Tag(tag("a")),
                    TagExpr::Or(vec![TagExpr::Tag(tag("b")), TagExpr::Not(Box::new(TagExpr::Tag(tag("c"))))]),
                ]),
            },
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 29,
            app: shop(),
            op: DirectoryOp::Keys(KeyOp::Create(api_key())),
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 30,
            app: shop(),
            op: DirectoryOp::Keys(KeyOp::Revoke { id: "key_1".into() }),
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 31,
            app: shop(),
            op: DirectoryOp::Keys(KeyOp::List),
        },
        Uplink::Directory {
            limits: herald_core::directory::DirectoryLimits {
                tags_per_device: 5,
                devices_per_alias: 6,
                expr_depth: 2,
                expr_leaves: 3,
            },
            request: 32,
            app: shop(),
            op: DirectoryOp::Put { device: client("d1"), entry: entry() },
        },
        Uplink::Report {
            request: 33,
            origin: 9,
            batch: 4,
            deltas: vec![crate::seam::PushDelta {
                app: shop(),
                message: MessageId(6),
                delivered_online: 0,
                delivered_from_offline: 0,
                acknowledged: 0,
                cancelled: 2,
                replaced: 0,
            }],
        },
        Uplink::Report {
            request: 34,
            origin: 9,
            batch: 5,
            deltas: vec![crate::seam::PushDelta {
                app: shop(),
                message: MessageId(7),
                delivered_online: 0,
                delivered_from_offline: 0,
                acknowledged: 0,
                cancelled: 0,
                replaced: 1,
            }],
        },
        Uplink::Push(Push {
            request: 30,
            message: traced(),
            audience: Audience::Devices(vec![ClientId::new("d1").expect("client")]),
            store_offline: true,
            idempotency: None,
        }),
        Uplink::Directory {
            limits: Default::default(),
            request: 35,
            app: shop(),
            op: DirectoryOp::Users(UserOp::Put(Box::new(device_user()))),
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 36,
            app: shop(),
            op: DirectoryOp::Users(UserOp::Remove { username: "meter-7".into() }),
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 37,
            app: shop(),
            op: DirectoryOp::Users(UserOp::Get { username: "meter-7".into() }),
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 38,
            app: shop(),
            op: DirectoryOp::Users(UserOp::List { after: Some("meter-6".into()), limit: 100 }),
        },
        Uplink::Directory {
            limits: Default::default(),
            request: 39,
            app: shop(),
            op: DirectoryOp::Users(UserOp::Find { username: "meter-7".into() }),
        },
        Uplink::Acked(vec![
            SessionAcks {
                session: key("c1"),
                messages: vec![MessageId(7), MessageId(u128::MAX)],
                progress: Vec::new(),
            },
            SessionAcks { session: key("c2"), messages: vec![MessageId(8)], progress: Vec::new() },
        ]),
        Uplink::Requeue {
            session: key("c1"),
            epoch: Epoch::new(2, 9),
            messages: vec![queued(Progress::MaybeSent)],
        },
        Uplink::Acked(vec![SessionAcks {
            session: key("c3"),
            messages: vec![MessageId(9)],
            progress: vec![(MessageId(10), Progress::Sent(4)), (MessageId(11), Progress::Released(65_535))],
        }]),
    ]
}

/// A device user whose password is kept as a PBKDF2 hash.
fn device_user() -> DeviceUser {
    DeviceUser {
        app: shop(),
        username: "meter-7".into(),
        password: PasswordHash {
            algorithm: HashAlgorithm::Pbkdf2Sha256,
            salt_position: SaltPosition::Prefix,
            iterations: 4096,
            salt: b"salt".to_vec(),
            hash: vec![7; 32],
        },
        updated_at: UnixMillis(5_000),
    }
}

/// A message that carries a trace context.
fn traced() -> Arc<Message> {
    let parent = herald_core::TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    Arc::new(Message { trace: parent, ..Message::clone(&message("$push", false)) })
}

fn api_key() -> crate::seam::ApiKeyRecord {
    crate::seam::ApiKeyRecord {
        app: shop(),
        id: "key_1".to_owned(),
        name: "ci".to_owned(),
        scopes: 9,
        digest: [7; 32],
        created_at: herald_core::UnixMillis(5_000),
    }
}

#[test]
fn every_uplink_item_survives_the_wire() {
    for item in &uplink_samples() {
        assert_eq!(&through_the_wire_up(item), item);
    }
}

/// One of every downlink item, with every optional part used somewhere.
fn downlink_samples() -> Vec<Downlink> {
    let grant = ClaimGrant {
        epoch: Epoch::new(2, 3),
        session_present: true,
        subscriptions: vec![subscription()],
        queued: vec![queued(Progress::Sent(1))],
    };
    vec![
        Downlink::Claimed { request: 1, result: Ok(grant) },
        Downlink::Claimed { request: 2, result: Err(ErrorCode::Unavailable) },
        Downlink::Revoked { session: key("c1"), epoch: Epoch::new(2, 3) },
        Downlink::Subscribed { request: 3, result: Ok(vec![(1, message("r/1", false))]) },
        Downlink::Subscribed { request: 4, result: Err(ErrorCode::StaleEpoch) },
        Downlink::Unsubscribed { request: 5, result: Ok(()) },
        Downlink::Unsubscribed { request: 6, result: Err(ErrorCode::StaleEpoch) },
        Downlink::Published { request: 7, result: Ok(true) },
        Downlink::Published { request: 8, result: Ok(false) },
        Downlink::Published { request: 9, result: Err(ErrorCode::NotAuthorized) },
        Downlink::Deliver(message("d/1", true)),
        Downlink::Released { request: 12 },
        Downlink::DeliverShared {
            filter: TopicFilter::new("$share/g/d/+").expect("filter"),
            message: message("d/2", false),
        },
        Downlink::Handover {
            session: key("c1"),
            epoch: Epoch::new(5, 1),
            pending: vec![queued(Progress::Released(4))],
        },
        Downlink::Pushed {
            request: 13,
            result: Ok(PushReport {
                devices: vec![
                    (client("d1"), PushOutcome::Online),
                    (client("d2"), PushOutcome::Stored),
                    (client("d3"), PushOutcome::Unreachable),
                ],
                unknown_aliases: vec![Alias::new("user:9").expect("alias")],
                online: 1,
                stored: 1,
                replay_of: None,
            }),
        },
        Downlink::Pushed { request: 14, result: Err(ErrorCode::Unavailable) },
        Downlink::Pushed {
            request: 21,
            result: Ok(PushReport {
                online: 5,
                stored: 2,
                replay_of: Some(MessageId(99)),
                ..PushReport::default()
            }),
        },
        Downlink::DeliverPush { message: message("$push", true), devices: None },
        Downlink::DeliverPush {
            message: message("$push", false),
            devices: Some(vec![client("d1"), client("d2")]),
        },
        Downlink::Reported { request: 25 },
        Downlink::DirectoryDone {
            request: 28,
            result: Ok(DirectoryAnswer::Stats(crate::seam::AppStats {
                online: 4,
                offline_persistent: 2,
                directory_devices: 9,
            })),
        },
        Downlink::DirectoryDone {
            request: 26,
            result: Ok(DirectoryAnswer::Status(crate::seam::MessageStatus {
                message: MessageId(5),
                created_at: herald_core::UnixMillis(1),
                expires_at: None,
                qos: 1,
                targeted: 10,
                online: 4,
                stored: 3,
                unreachable: 3,
                delivered_online: 4,
                delivered_from_offline: 1,
                acknowledged: 5,
                cancelled: 0,
                replaced: 1,
                expired: 2,
                pending: 0,
                as_of: herald_core::UnixMillis(70_000),
                is_final: true,
            })),
        },
        Downlink::DirectoryDone { request: 15, result: Ok(DirectoryAnswer::Device(view())) },
        Downlink::DirectoryDone { request: 16, result: Ok(DirectoryAnswer::Done) },
        Downlink::DirectoryDone { request: 17, result: Ok(DirectoryAnswer::Devices(vec![view(), view()])) },
        Downlink::DirectoryDone { request: 18, result: Ok(DirectoryAnswer::Changed(vec![true, false])) },
        Downlink::DirectoryDone { request: 19, result: Ok(DirectoryAnswer::Count(7)) },
        Downlink::DirectoryDone { request: 20, result: Err(ErrorCode::NotFound) },
        Downlink::DirectoryDone { request: 29, result: Ok(DirectoryAnswer::Keys(vec![api_key()])) },
        Downlink::ApiKeys { app: None, keys: vec![api_key()] },
        Downlink::ApiKeys { app: Some(shop()), keys: Vec::new() },
        Downlink::Retract { app: shop(), message: MessageId(6) },
        Downlink::Deliver(traced()),
        Downlink::DirectoryDone { request: 35, result: Ok(DirectoryAnswer::Users(vec![device_user()])) },
    ]
}

#[test]
fn every_downlink_item_survives_the_wire() {
    for item in &downlink_samples() {
        assert_eq!(&through_the_wire_down(item), item);
    }
}

#[test]
fn malformed_items_are_refused_naming_the_field() {
    let mut bad_topic = message_to_pb(&message("a/b", false));
    bad_topic.topic = "a/+".into();
    assert_eq!(message_from_pb(bad_topic).map_err(|e| e.field), Err("message.topic"));

    let mut short_id = message_to_pb(&message("a/b", false));
    short_id.id = Bytes::from_static(b"\x01");
    assert_eq!(message_from_pb(short_id).map_err(|e| e.field), Err("message.id"));

    let mut bad_qos = message_to_pb(&message("a/b", false));
    bad_qos.qos = 3;
    assert_eq!(message_from_pb(bad_qos).map_err(|e| e.field), Err("message.qos"));

    let no_session = pb::Uplink {
        item: Some(pb::uplink::Item::Claim(pb::Claim {
            request: 1,
            session: None,
            clean_start: true,
            expiry_seconds: 0,
            will: None,
            granted: None,
        })),
    };
    assert_eq!(uplink_from_pb(no_session).map_err(|e| e.field), Err("claim.session"));

    let bad_client = pb::Uplink {
        item: Some(pb::uplink::Item::Release(pb::Release {
            session: Some(pb::SessionKey { app: "shop".into(), client: "a/b".into() }),
            epoch: Some(pb::Epoch { generation: 1, counter: 1 }),
            expiry_seconds: 0,
            publish_will: false,
            pending: Vec::new(),
            request: 1,
        })),
    };
    assert_eq!(uplink_from_pb(bad_client).map_err(|e| e.field), Err("release.session"));

    let hello = pb::Uplink { item: Some(pb::uplink::Item::Hello(pb::Hello::default())) };
    assert!(uplink_from_pb(hello).is_err(), "Hello only opens a stream");
    assert!(uplink_from_pb(pb::Uplink { item: None }).is_err());

    let half_sender = pb::Uplink {
        item: Some(pb::uplink::Item::Publish(pb::Publish {
            request: None,
            from_session: Some(session_to_pb(&key("c1"))),
            from_epoch: None,
            message: Some(message_to_pb(&message("a/b", false))),
        })),
    };
    assert_eq!(uplink_from_pb(half_sender).map_err(|e| e.field), Err("publish.from"));

    let bad_progress =
        pb::QueuedMessage { progress: 1, packet_id: 0, ..queued_to_pb(&queued(Progress::Unsent)) };
    assert_eq!(queued_from_pb(bad_progress).map_err(|e| e.field), Err("queued.progress"));
}

#[test]
fn an_error_name_from_a_newer_peer_is_still_an_error() {
    let reply = pb::Downlink {
        item: Some(pb::downlink::Item::Published(pb::Published {
            request: 1,
            matched: true,
            error: Some("some_future_code".into()),
        })),
    };
    assert_eq!(
        downlink_from_pb(reply),
        Ok(Downlink::Published { request: 1, result: Err(ErrorCode::Internal) })
    );
}

#[test]
fn batches_are_cut_by_encoded_size_in_order() {
    let big = |n: u8| pb::Uplink {
        item: Some(pb::uplink::Item::Publish(pb::Publish {
            request: Some(u64::from(n)),
            from_session: None,
            from_epoch: None,
            message: Some(pb::Message {
                payload: Bytes::from(vec![n; 1 << 20]),
                ..message_to_pb(&message("a/b", false))
            }),
        })),
    };
    let batches = super::super::split_by_size((0..10).map(big).collect());
    assert!(batches.len() >= 3, "10 MiB in batches of at most 4 MiB: {}", batches.len());
    for batch in &batches {
        let bytes: usize = batch.iter().map(prost::Message::encoded_len).sum();
        assert!(bytes <= super::super::BATCH_BYTES || batch.len() == 1, "{bytes}");
    }
    let order: Vec<u64> = batches
        .iter()
        .flatten()
        .map(|item| match &item.item {
            Some(pb::uplink::Item::Publish(p)) => p.request.unwrap_or_default(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}

/// A claim carrying the epoch its shard's owner granted (a field added in
/// contract 1: older routers skip it) survives its wire form.
#[test]
fn a_claim_with_the_owners_epoch_survives_its_wire_form() {
    let claim = Uplink::Claim(Claim {
        request: 3,
        session: key("c3"),
        clean_start: true,
        expiry_seconds: 0,
        will: None,
        granted: Some(Epoch::new(9, 4)),
    });
    let bytes = uplink_to_pb(&claim).encode_to_vec();
    assert_eq!(uplink_from_pb(pb::Uplink::decode(bytes.as_slice()).expect("decodes")), Ok(claim));
}

/// The seam's wire form, version `CONTRACT_VERSION`: every item as a batch,
/// stored; a build that encodes them differently, or cannot read the stored
/// bytes, fails here (a rolling upgrade mixes versions N-1 and N).
#[test]
fn the_seam_wire_format_matches_its_golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seam");
    let up = pb::UplinkBatch { items: uplink_samples().iter().map(uplink_to_pb).collect() };
    let path = dir.join(format!("uplink-v{}.bin", crate::grpc::CONTRACT_VERSION));
    let stored = herald_testkit::golden::check(&path, &up.encode_to_vec());
    let decoded: Vec<Uplink> = pb::UplinkBatch::decode(stored.as_slice())
        .expect("stored uplink batch decodes")
        .items
        .into_iter()
        .map(|item| uplink_from_pb(item).expect("stored uplink item converts"))
        .collect();
    assert_eq!(decoded, uplink_samples());

    let down = pb::DownlinkBatch { items: downlink_samples().iter().map(downlink_to_pb).collect() };
    let path = dir.join(format!("downlink-v{}.bin", crate::grpc::CONTRACT_VERSION));
    let stored = herald_testkit::golden::check(&path, &down.encode_to_vec());
    let decoded: Vec<Downlink> = pb::DownlinkBatch::decode(stored.as_slice())
        .expect("stored downlink batch decodes")
        .items
        .into_iter()
        .map(|item| downlink_from_pb(item).expect("stored downlink item converts"))
        .collect();
    assert_eq!(decoded, downlink_samples());
}

#[test]
fn directory_limits_past_their_ceiling_or_zero_are_refused() {
    let request = |max_tags_per_device| pb::Uplink {
        item: Some(pb::uplink::Item::Directory(pb::DirectoryRequest {
            request: 1,
            app: "shop".into(),
            op: Some(pb::directory_request::Op::Stats(true)),
            max_tags_per_device,
            ..Default::default()
        })),
    };
    assert!(uplink_from_pb(request(Some(10_000))).is_ok());
    for bad in [0, 10_001] {
        assert_eq!(uplink_from_pb(request(Some(bad))).map_err(|e| e.field), Err("directory.limits"), "{bad}");
    }
}
