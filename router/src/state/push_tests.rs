//! Tests of push-API sends to devices: found through the session registry,
//! each device's copy on its own per-device topic.

use super::*;
use herald_core::directory::{Alias, DeviceEntry, Tag, TagExpr};
use herald_proto::journal::Fact;
use herald_proto::seam::{
    Audience, DeviceView, DirectoryAnswer, DirectoryOp, Push, PushOutcome, PushReport, TagChange,
};

const PUSH: u64 = 9;

fn push(devices: &[&str], name: &'static str, store_offline: bool) -> Uplink {
    Uplink::Push(Push {
        request: PUSH,
        message: plain("$push", name),
        audience: Audience::Devices(devices.iter().map(|d| client_id(d)).collect()),
        store_offline,
        idempotency: None,
    })
}

/// Applies a push; returns its outcomes and the other effects.
fn pushed(
    h: &mut Harness,
    gateway: NodeId,
    item: Uplink,
    now: UnixMillis,
) -> (Vec<PushOutcome>, Vec<Effect>) {
    let (report, effects) = reported(h, gateway, item, now);
    (report.devices.into_iter().map(|(_, o)| o).collect(), effects)
}

/// Applies a push; returns its report and the other effects.
fn reported(h: &mut Harness, gateway: NodeId, item: Uplink, now: UnixMillis) -> (PushReport, Vec<Effect>) {
    let mut effects = h.apply(gateway, item, now);
    let at = effects
        .iter()
        .position(|(to, item)| *to == gateway && matches!(item, Downlink::Pushed { request: PUSH, .. }))
        .expect("a push is answered");
    match effects.remove(at).1 {
        Downlink::Pushed { result: Ok(report), .. } => (report, effects),
        other => panic!("push refused: {other:?}"),
    }
}

fn topics(effects: &[Effect]) -> Vec<(NodeId, String)> {
    effects
        .iter()
        .filter_map(|(gateway, item)| match item {
            Downlink::Deliver(message) => Some((*gateway, message.topic.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn each_device_is_reached_where_its_session_is() {
    let mut h = Harness::new();
    // d1 online on GW2 (no route of any kind), d2 offline and subscribed to
    // its topic, d3 offline without that subscription, d4 unknown.
    h.connect(GW2, "d1", 0);
    h.offline_subscriber("d2", 3600, &[subscription("$push/d2", QoS::AtLeastOnce)]);
    h.offline_subscriber("d3", 3600, &[subscription("news/#", QoS::AtLeastOnce)]);

    let (outcomes, effects) = pushed(&mut h, GW1, push(&["d1", "d2", "d3", "d4"], "hello", true), T0);

    use PushOutcome::{Online, Stored, Unreachable};
    assert_eq!(outcomes, [Online, Stored, Unreachable, Unreachable]);
    assert_eq!(topics(&effects), [(GW2, "$push/d1".to_owned())], "one copy, to d1's gateway");
    assert_eq!(h.queue_of("d2"), ["hello"]);
    let queued = h.state.session(&key("d2")).expect("d2").queue().next().expect("queued").message.clone();
    assert_eq!(queued.topic.as_str(), "$push/d2");
    assert_eq!(h.queue_of("d3"), Vec::<String>::new());
}

#[test]
fn an_online_only_send_is_not_stored() {
    let mut h = Harness::new();
    h.offline_subscriber("d2", 3600, &[subscription("$push/d2", QoS::AtLeastOnce)]);
    let (outcomes, _) = pushed(&mut h, GW1, push(&["d2"], "now-or-never", false), T0);
    assert_eq!(outcomes, [PushOutcome::Unreachable]);
    assert_eq!(h.queue_of("d2"), Vec::<String>::new());
}

#[test]
fn a_device_of_another_app_with_the_same_id_is_not_reached() {
    let mut h = Harness::new();
    let other =
        Claim { session: SessionKey::new(app_named("other"), client_id("d1")), ..claim("d1", true, 0) };
    h.claim(GW2, other, T0);
    let (outcomes, effects) = pushed(&mut h, GW1, push(&["d1"], "mine", true), T0);
    assert_eq!(outcomes, [PushOutcome::Unreachable]);
    assert_eq!(topics(&effects), []);
}

#[test]
fn an_expired_send_reaches_nobody() {
    let mut h = Harness::new();
    h.connect(GW2, "d1", 0);
    let message = shared(Message { expires_at: Some(T0), ..message("$push", "late") });
    let audience = Audience::Devices(vec![client_id("d1")]);
    let item =
        Uplink::Push(Push { request: PUSH, message, audience, store_offline: true, idempotency: None });
    let (outcomes, effects) = pushed(&mut h, GW1, item, T0);
    assert_eq!((outcomes, topics(&effects)), (vec![PushOutcome::Unreachable], vec![]));
    assert_eq!(h.counters().dropped_expired, 1);
}

fn tags(list: &[&str]) -> std::collections::BTreeSet<Tag> {
    list.iter().map(|t| Tag::new(*t).expect("tag")).collect()
}

fn directory(h: &mut Harness, op: DirectoryOp) -> Result<DirectoryAnswer, ErrorCode> {
    let item = Uplink::Directory { limits: Default::default(), request: 5, app: app(), op };
    match h.apply(GW1, item, T0).as_slice() {
        [(GW1, Downlink::DirectoryDone { request: 5, result })] => result.clone(),
        other => panic!("expected one DirectoryDone, got {other:?}"),
    }
}

fn put(h: &mut Harness, device: &str, alias: Option<&str>, tag_list: &[&str]) {
    let entry = DeviceEntry { alias: alias.map(|a| Alias::new(a).expect("alias")), tags: tags(tag_list) };
    directory(h, DirectoryOp::Put { device: client_id(device), entry }).expect("put");
}

#[test]
fn aliases_reach_every_device_they_name_and_report_unknown_ones() {
    let mut h = Harness::new();
    put(&mut h, "phone", Some("user:1"), &[]);
    put(&mut h, "tablet", Some("user:1"), &[]);
    put(&mut h, "other", Some("user:2"), &[]);
    h.connect(GW2, "phone", 0);
    let aliases = ["user:1", "user:9", "user:1"].iter().map(|a| Alias::new(*a).expect("alias")).collect();
    let item = Uplink::Push(Push {
        request: PUSH,
        message: plain("$push", "hi"),
        audience: Audience::Aliases(aliases),
        store_offline: true,
        idempotency: None,
    });
    let (report, effects) = reported(&mut h, GW1, item, T0);
    assert_eq!(
        report.devices,
        [(client_id("phone"), PushOutcome::Online), (client_id("tablet"), PushOutcome::Unreachable)]
    );
    assert_eq!(report.unknown_aliases, [Alias::new("user:9").expect("alias")]);
    assert_eq!(topics(&effects), [(GW2, "$push/phone".to_owned())]);
}

#[test]
fn the_directory_keeps_entries_within_limits_and_journals_them() {
    let mut h = Harness::new();
    put(&mut h, "d1", Some("user:1"), &["vip"]);
    h.connect(GW2, "d1", 0);
    let patch = DirectoryOp::Patch {
        device: client_id("d1"),
        alias: Some(None),
        tags: vec![
            TagChange::Add(vec![Tag::new("city:bj").expect("tag")]),
            TagChange::Remove(vec![Tag::new("vip").expect("tag")]),
        ],
    };
    let view = DeviceView {
        device: client_id("d1"),
        entry: DeviceEntry { alias: None, tags: tags(&["city:bj"]) },
        online: Some(GW2),
        since: Some(T0),
    };
    assert_eq!(directory(&mut h, patch), Ok(DirectoryAnswer::Device(view)));
    let missing = DirectoryOp::Patch { device: client_id("nobody"), alias: None, tags: vec![] };
    assert_eq!(directory(&mut h, missing), Err(ErrorCode::NotFound));
    // Bulk tagging creates entries; a change that is no change says so.
    let bulk = DirectoryOp::Tag {
        tag: Tag::new("beta").expect("tag"),
        add: vec![client_id("d1"), client_id("d2")],
        remove: vec![client_id("d3")],
    };
    assert_eq!(directory(&mut h, bulk), Ok(DirectoryAnswer::Changed(vec![true, true, false])));
    let count = |expr| DirectoryOp::Count { expr };
    let beta = TagExpr::Tag(Tag::new("beta").expect("tag"));
    assert_eq!(directory(&mut h, count(beta.clone())), Ok(DirectoryAnswer::Count(2)));
    let not_bj =
        TagExpr::And(vec![beta, TagExpr::Not(Box::new(TagExpr::Tag(Tag::new("city:bj").expect("tag"))))]);
    assert_eq!(directory(&mut h, count(not_bj)), Ok(DirectoryAnswer::Count(1)));
    // An alias names at most MAX_DEVICES_PER_ALIAS devices.
    for i in 0..herald_core::directory::MAX_DEVICES_PER_ALIAS {
        put(&mut h, &format!("p{i}"), Some("crowd"), &[]);
    }
    let one_more = DeviceEntry { alias: Some(Alias::new("crowd").expect("alias")), tags: tags(&[]) };
    assert_eq!(
        directory(&mut h, DirectoryOp::Put { device: client_id("late"), entry: one_more }),
        Err(ErrorCode::QuotaExceeded)
    );
    assert_eq!(directory(&mut h, DirectoryOp::Delete { device: client_id("d2") }), Ok(DirectoryAnswer::Done));
    assert_eq!(directory(&mut h, DirectoryOp::Get { device: client_id("d2") }), Err(ErrorCode::NotFound));

    // What was journaled rebuilds the same directory after a restart.
    let mut durable = crate::state::DurableState::default();
    for fact in h.state.take_journal() {
        durable.apply(fact);
    }
    let mut after = Harness::new();
    after.state.restore(durable.image(), T0);
    let get = |h: &mut Harness, d: &str| directory(h, DirectoryOp::Get { device: client_id(d) });
    assert_eq!(get(&mut after, "d1").map(|_| ()), Ok(()));
    assert_eq!(get(&mut after, "d2"), Err(ErrorCode::NotFound));
    assert_eq!(after.state.durable_image().devices.len(), h.state.durable_image().devices.len());
}

fn keyed(devices: &[&str], name: &'static str, key: &str, hash: u8) -> Uplink {
    let Uplink::Push(push) = push(devices, name, true) else { unreachable!("push builds a push") };
    let idempotency = Some(herald_proto::seam::Idempotency { key: key.to_owned(), body_hash: [hash; 32] });
    Uplink::Push(Push { idempotency, ..push })
}

fn answer(h: &mut Harness, item: Uplink, now: UnixMillis) -> (Result<PushReport, ErrorCode>, Vec<Effect>) {
    let mut effects = h.apply(GW1, item, now);
    let at = effects.iter().position(|(_, e)| matches!(e, Downlink::Pushed { .. })).expect("answered");
    match effects.remove(at).1 {
        Downlink::Pushed { result, .. } => (result, effects),
        _ => unreachable!("matched above"),
    }
}

#[test]
fn a_send_repeated_with_its_idempotency_key_is_answered_again_and_not_sent() {
    let mut h = Harness::new();
    h.connect(GW2, "d1", 0);
    let (first, effects) = answer(&mut h, keyed(&["d1"], "once", "k1", 1), T0);
    let first = first.expect("sent");
    assert_eq!((topics(&effects).len(), first.replay_of), (1, None));
    let first_id = h.state.take_journal().iter().find_map(|f| match f {
        Fact::Idempotent(send) => Some(send.message_id),
        _ => None,
    });
    assert!(first_id.is_some(), "the key is journaled with its answer");

    let (again, effects) = answer(&mut h, keyed(&["d1"], "twice", "k1", 1), after_s(60));
    let again = again.expect("replayed");
    assert_eq!(topics(&effects), [], "nothing sent again");
    assert_eq!(again.replay_of, first_id);
    assert_eq!(again.devices, first.devices);
    let (other_body, _) = answer(&mut h, keyed(&["d1"], "other", "k1", 2), after_s(60));
    assert_eq!(other_body, Err(ErrorCode::Conflict));

    // After a restart the key is still known.
    let mut durable = crate::state::DurableState::default();
    h.apply(GW1, keyed(&["d1"], "x", "k2", 3), after_s(61));
    for fact in h.state.take_journal() {
        durable.apply(fact);
    }
    let mut after = Harness::new();
    after.state.restore(durable.image(), after_s(62));
    assert_eq!(answer(&mut after, keyed(&["d1"], "y", "k2", 4), after_s(62)).0, Err(ErrorCode::Conflict));

    // A day later the key is forgotten: the same key sends anew.
    let day = crate::state::IDEMPOTENCY_TTL_MS / 1000;
    after.tick(after_s(62 + day as u32));
    assert!(after.state.take_journal().iter().any(|f| matches!(f, Fact::IdempotencyExpired(_))));
    let (fresh, _) = answer(&mut after, keyed(&["d1"], "z", "k2", 4), after_s(63 + day as u32));
    assert_eq!(fresh.expect("sent").replay_of, None);
}

#[test]
fn a_send_repeated_while_the_first_is_being_committed_is_refused_as_in_progress() {
    let mut h = Harness::new();
    h.connect(GW2, "d1", 0);
    let pushed = |h: &mut Harness, gateway, item| {
        let mut out = Vec::new();
        h.state.apply(gateway, item, T0, &mut out);
        out.into_iter().find_map(|(_, e)| match e {
            Downlink::Pushed { result, .. } => Some(result),
            _ => None,
        })
    };
    let first = pushed(&mut h, GW1, keyed(&["d1"], "once", "k1", 1)).expect("answered");
    assert_eq!(first.map(|r| r.replay_of), Ok(None));
    let batch = h.state.seal_batch();
    let first_id = h.state.take_journal().iter().find_map(|f| match f {
        Fact::Idempotent(send) => Some(send.message_id),
        _ => None,
    });
    // The first send's batch is not committed yet: a duplicate from another
    // gateway, in this batch or the next, is refused rather than replayed
    // with an answer that is not durable.
    let during = pushed(&mut h, GW2, keyed(&["d1"], "once", "k1", 1));
    assert_eq!(during, Some(Err(ErrorCode::InProgress)));
    let next = h.state.seal_batch();
    h.state.settle_batch(batch);
    let after = pushed(&mut h, GW2, keyed(&["d1"], "once", "k1", 1)).expect("answered");
    // Committed: now the duplicate gets the first answer again.
    assert_eq!(after.map(|r| r.replay_of), Ok(first_id));
    assert!(first_id.is_some());
    h.state.settle_batch(next);
}

fn status(
    h: &mut Harness,
    message: herald_core::MessageId,
    now: UnixMillis,
) -> herald_proto::seam::MessageStatus {
    let item = Uplink::Directory {
        limits: Default::default(),
        request: 5,
        app: app(),
        op: DirectoryOp::Status { message },
    };
    match h.apply(GW1, item, now).as_slice() {
        [(_, Downlink::DirectoryDone { result: Ok(DirectoryAnswer::Status(s)), .. })] => s.clone(),
        other => panic!("no status: {other:?}"),
    }
}

fn report(
    h: &mut Harness,
    gateway: NodeId,
    batch: u64,
    delta: (u64, u64, u64),
    message: herald_core::MessageId,
) {
    let deltas = vec![herald_proto::seam::PushDelta {
        app: app(),
        message,
        delivered_online: delta.0,
        delivered_from_offline: delta.1,
        acknowledged: delta.2,
        cancelled: 0,
        replaced: 0,
    }];
    let item = Uplink::Report { request: 8, origin: 1, batch, deltas };
    assert_eq!(h.apply(gateway, item, T0), [(gateway, Downlink::Reported { request: 8 })]);
}

#[test]
fn a_message_status_counts_each_report_once_and_accounts_for_every_device_when_final() {
    let mut h = Harness::new();
    h.connect(GW2, "d1", 0);
    h.offline_subscriber("d2", 3600, &[subscription("$push/d2", QoS::AtLeastOnce)]);
    let sent = shared(Message { expires_at: Some(after_s(60)), ..message("$push", "m") });
    let id = sent.id;
    let audience = Audience::Devices(vec![client_id("d1"), client_id("d2"), client_id("d3")]);
    let item =
        Uplink::Push(Push { request: PUSH, message: sent, audience, store_offline: true, idempotency: None });
    h.apply(GW1, item, T0);

    let s = status(&mut h, id, after_s(1));
    assert_eq!((s.targeted, s.online, s.stored, s.unreachable, s.pending), (3, 1, 1, 1, 2));
    assert!(!s.is_final);
    report(&mut h, GW2, 1, (1, 0, 1), id);
    report(&mut h, GW2, 1, (1, 0, 1), id); // sent again on a new link: not counted twice
    let s = status(&mut h, id, after_s(2));
    assert_eq!((s.delivered_online, s.acknowledged, s.pending), (1, 1, 1));

    // Survives a restart (journaled), and the report batch is remembered.
    let mut durable = crate::state::DurableState::default();
    for fact in h.state.take_journal() {
        durable.apply(fact);
    }
    let mut after = Harness::new();
    after.state.restore(durable.image(), after_s(3));
    report(&mut after, GW2, 1, (1, 0, 1), id);
    report(&mut after, GW3, 1, (0, 1, 1), id);
    let s = status(&mut after, id, after_s(4));
    assert_eq!((s.delivered_online, s.delivered_from_offline, s.acknowledged, s.pending), (1, 1, 2, 0));
    // Final at the ttl: every device is in exactly one bucket.
    let s = status(&mut after, id, after_s(60));
    assert!(s.is_final);
    assert_eq!(s.unreachable + s.acknowledged + s.expired + s.pending, s.targeted);

    // A message nobody received: what was not delivered by the ttl expired.
    let lost = shared(Message { expires_at: Some(after_s(70)), ..message("$push", "lost") });
    let lost_id = lost.id;
    let audience = Audience::Devices(vec![client_id("d2")]);
    let item =
        Uplink::Push(Push { request: PUSH, message: lost, audience, store_offline: true, idempotency: None });
    after.apply(GW1, item, after_s(5));
    let s = status(&mut after, lost_id, after_s(71));
    assert_eq!((s.stored, s.expired, s.pending, s.is_final), (1, 1, 0, true));
    let missing = Uplink::Directory {
        limits: Default::default(),
        request: 5,
        app: app(),
        op: DirectoryOp::Status { message: herald_core::MessageId(u128::MAX) },
    };
    assert!(matches!(
        after.apply(GW1, missing, T0).as_slice(),
        [(_, Downlink::DirectoryDone { result: Err(ErrorCode::NotFound), .. })]
    ));
}

fn keyed_message(name: &'static str, collapse: Option<&str>) -> Arc<Message> {
    let properties = collapse.map(|key| {
        Box::new(herald_proto::MessageProperties {
            user_properties: vec![(herald_proto::seam::COLLAPSE_PROPERTY.into(), key.into())],
            ..Default::default()
        })
    });
    shared(Message { expires_at: Some(after_s(600)), properties, ..message("$push", name) })
}

fn send_to(h: &mut Harness, audience: Audience, message: Arc<Message>) {
    let item =
        Uplink::Push(Push { request: PUSH, message, audience, store_offline: true, idempotency: None });
    h.apply(GW1, item, T0);
}

#[test]
fn a_newer_message_with_a_collapse_key_replaces_the_older_undelivered_one() {
    let mut h = Harness::new();
    h.offline_subscriber("d1", 3600, &[subscription("$push/d1", QoS::AtLeastOnce)]);
    let to_d1 = || Audience::Devices(vec![client_id("d1")]);
    let (first, second, other) = (
        keyed_message("score 1-0", Some("score")),
        keyed_message("score 2-0", Some("score")),
        keyed_message("news", None),
    );
    let first_id = first.id;
    send_to(&mut h, to_d1(), first);
    send_to(&mut h, to_d1(), other);
    send_to(&mut h, to_d1(), second);
    assert_eq!(h.queue_of("d1"), ["news", "score 2-0"]);
    assert_eq!(status(&mut h, first_id, after_s(1)).replaced, 1);
    // Broadcasts collapse in the fan-out log, and over a queued direct copy.
    let (old, new) = (keyed_message("old", Some("banner")), keyed_message("new", Some("banner")));
    let old_id = old.id;
    send_to(&mut h, Audience::All, old);
    send_to(&mut h, Audience::All, new);
    let s = status(&mut h, old_id, after_s(1));
    assert_eq!((s.stored, s.replaced, s.pending), (1, 1, 0));
    let (grant, _) = h.claim(GW1, claim("d1", false, 3600), after_s(2));
    assert_eq!(names(&grant.queued), ["news", "score 2-0", "new"]);
}

#[test]
fn a_broadcast_cancelled_after_some_sessions_read_it_counts_only_the_copies_it_took_back() {
    let mut h = Harness::new();
    for device in ["d1", "d2", "d3"] {
        h.offline_subscriber(device, 3600, &[subscription(&format!("$push/{device}"), QoS::AtLeastOnce)]);
    }
    let broadcast = keyed_message("broadcast", None);
    let id = broadcast.id;
    send_to(&mut h, Audience::All, broadcast);
    // d1 comes back and is handed its copy; its gateway has not reported
    // the delivery yet. d2 comes back and leaves again with the copy still
    // unsent in its queue. d3 has not read the log.
    let (grant, _) = h.claim(GW2, claim("d1", false, 3600), after_s(1));
    assert_eq!(names(&grant.queued), ["broadcast"]);
    let (grant, _) = h.claim(GW2, claim("d2", false, 3600), after_s(1));
    let pending = grant.queued.clone();
    let released = Release { pending, ..release("d2", grant.epoch, 3600, false) };
    h.release(GW2, released, after_s(1));

    let item = Uplink::Directory {
        limits: Default::default(),
        request: 5,
        app: app(),
        op: DirectoryOp::Cancel { message: id },
    };
    let cancelled = match h.apply(GW1, item, after_s(2)).as_slice() {
        [(_, Downlink::DirectoryDone { result: Ok(DirectoryAnswer::Status(s)), .. })] => s.cancelled,
        other => panic!("no answer: {other:?}"),
    };
    assert_eq!(cancelled, 2, "d2's queued copy and d3's unread one; d1's is on its way");
    report(&mut h, GW2, 1, (0, 1, 1), id);
    let end = status(&mut h, id, after_s(3600));
    assert!(end.is_final);
    assert_eq!(
        (end.stored, end.delivered_from_offline, end.cancelled, end.expired),
        (3, 1, 2, 0),
        "the buckets add up to what was stored"
    );
    let (grant, _) = h.claim(GW1, claim("d3", false, 3600), after_s(4));
    assert_eq!(names(&grant.queued), Vec::<String>::new());
}

#[test]
fn a_cancel_takes_back_stored_copies_and_says_so() {
    let mut h = Harness::new();
    h.offline_subscriber("d1", 3600, &[subscription("$push/d1", QoS::AtLeastOnce)]);
    h.offline_subscriber("d2", 3600, &[subscription("$push/d2", QoS::AtLeastOnce)]);
    let direct = keyed_message("direct", None);
    let (direct_id, devices) = (direct.id, vec![client_id("d1"), client_id("d2")]);
    send_to(&mut h, Audience::Devices(devices), direct);
    let broadcast = keyed_message("broadcast", None);
    let broadcast_id = broadcast.id;
    send_to(&mut h, Audience::All, broadcast);

    let cancel = |h: &mut Harness, message| {
        let item = Uplink::Directory {
            limits: Default::default(),
            request: 5,
            app: app(),
            op: DirectoryOp::Cancel { message },
        };
        match h.apply(GW1, item, after_s(1)).as_slice() {
            [(_, Downlink::DirectoryDone { result: Ok(DirectoryAnswer::Status(s)), .. })] => s.clone(),
            other => panic!("no answer: {other:?}"),
        }
    };
    let s = cancel(&mut h, direct_id);
    assert_eq!((s.cancelled, s.pending), (2, 0));
    assert_eq!(cancel(&mut h, direct_id).cancelled, 2, "a second cancel changes nothing");
    let s = cancel(&mut h, broadcast_id);
    assert_eq!((s.stored, s.cancelled, s.pending), (2, 2, 0));
    let (grant, _) = h.claim(GW1, claim("d1", false, 3600), after_s(2));
    assert_eq!(names(&grant.queued), Vec::<String>::new(), "nothing cancelled is delivered");
    let missing = Uplink::Directory {
        limits: Default::default(),
        request: 5,
        app: app(),
        op: DirectoryOp::Cancel { message: herald_core::MessageId(u128::MAX) },
    };
    assert!(matches!(
        h.apply(GW1, missing, T0).as_slice(),
        [(_, Downlink::DirectoryDone { result: Err(ErrorCode::NotFound), .. })]
    ));
}

/// Applies `push` with what its shards' owners said; returns its report
/// and the other effects.
fn applied(h: &mut Harness, push: Push, located: crate::owner::Locations) -> (PushReport, Vec<Effect>) {
    let mut out = Vec::new();
    h.state.apply_push(GW1, push, Some(Arc::new(located)), T0, &mut out);
    let batch = h.state.seal_batch();
    h.state.settle_batch(batch);
    let at = out.iter().position(|(_, item)| matches!(item, Downlink::Pushed { .. })).expect("answered");
    let Downlink::Pushed { result: Ok(report), .. } = out.remove(at).1 else { panic!("refused") };
    (report, out)
}

/// Applies a push with where its shards' owners located its devices.
fn pushed_located(
    h: &mut Harness,
    devices: &[&str],
    located: &[(&str, Located)],
) -> (Vec<PushOutcome>, Vec<Effect>) {
    let Uplink::Push(push) = push(devices, "located", true) else { unreachable!() };
    let sessions = located.iter().map(|(d, l)| (key(d), *l)).collect();
    let (report, out) = applied(h, push, crate::owner::Locations { sessions, ..Default::default() });
    (report.devices.into_iter().map(|(_, o)| o).collect(), out)
}

/// The tag and broadcast copies among `effects`: gateway and the devices
/// named (`None`: every device of the app there).
fn fanned(effects: &[Effect]) -> Vec<(NodeId, Option<Vec<String>>)> {
    let mut fanned: Vec<_> = effects
        .iter()
        .filter_map(|(gateway, item)| match item {
            Downlink::DeliverPush { devices, .. } => {
                let devices = devices.as_ref().map(|devices| {
                    let mut names: Vec<String> = devices.iter().map(|d| d.as_str().to_owned()).collect();
                    names.sort();
                    names
                });
                Some((*gateway, devices))
            }
            _ => None,
        })
        .collect();
    fanned.sort();
    fanned
}

use crate::owner::Located;
use crate::state::ToLocate;

#[test]
fn a_cluster_push_goes_where_the_owners_located_transient_devices_and_persistent_ones_by_record() {
    let mut h = Harness::new();
    // d1: transient, this router's record says GW2, its owner says GW3 (it
    // moved: the owner knows). d2: the record says GW2, its owner knows no
    // such session. d3: no record here, online at GW2 as its owner says.
    // d4: persistent, offline and subscribed to its topic: its record holds
    // its inbox, whatever its owner says.
    h.connect(GW2, "d1", 0);
    h.connect(GW2, "d2", 0);
    h.offline_subscriber("d4", 3600, &[subscription("$push/d4", QoS::AtLeastOnce)]);
    let epoch = Epoch::new(1, 7);
    let located = [
        ("d1", Located::Online { gateway: GW3, epoch, since: T0 }),
        ("d2", Located::Unknown),
        ("d3", Located::Online { gateway: GW2, epoch, since: T0 }),
        ("d4", Located::Online { gateway: GW3, epoch, since: T0 }),
    ];
    let (outcomes, effects) = pushed_located(&mut h, &["d1", "d2", "d3", "d4", "d5"], &located);
    use PushOutcome::{Online, Stored, Unreachable};
    // d5: located by nobody (an owner of an earlier version): the record
    // answers, and there is none.
    assert_eq!(outcomes, [Online, Unreachable, Online, Stored, Unreachable]);
    assert_eq!(topics(&effects), [(GW3, "$push/d1".to_owned()), (GW2, "$push/d3".to_owned())]);
    assert_eq!(h.queue_of("d4"), ["located"]);
}

#[test]
fn the_sessions_to_locate_are_the_named_devices_not_persistent_here() {
    let mut h = Harness::new();
    h.offline_subscriber("d4", 3600, &[subscription("$push/d4", QoS::AtLeastOnce)]);
    put(&mut h, "d1", Some("ann"), &[]);
    put(&mut h, "d4", Some("ann"), &[]);
    put(&mut h, "d2", None, &["vip"]);
    put(&mut h, "d3", None, &["vip"]);
    put(&mut h, "d4", None, &["vip"]);
    let Uplink::Push(by_id) = push(&["d1", "d2", "d4"], "x", true) else { unreachable!() };
    assert_eq!(h.state.sessions_to_locate(&by_id), ToLocate::Sessions(vec![key("d1"), key("d2")]));
    let by_alias =
        Push { audience: Audience::Aliases(vec![Alias::new("ann").expect("alias")]), ..by_id.clone() };
    assert_eq!(h.state.sessions_to_locate(&by_alias), ToLocate::Sessions(vec![key("d1")]));
    let by_tag =
        Push { audience: Audience::Tags(TagExpr::Tag(Tag::new("vip").expect("tag"))), ..by_id.clone() };
    let ToLocate::Sessions(mut tagged) = h.state.sessions_to_locate(&by_tag) else { panic!("sessions") };
    tagged.sort_by(|a, b| a.client.cmp(&b.client));
    assert_eq!(tagged, [key("d2"), key("d3")]);
    let to_all = Push { audience: Audience::All, ..by_id };
    assert_eq!(h.state.sessions_to_locate(&to_all), ToLocate::Everyone(app()));
}

#[test]
fn a_cluster_tag_send_goes_where_the_owners_located_transient_devices_and_persistent_ones_by_record() {
    let mut h = Harness::new();
    // t1: transient, the record says GW2, its owner GW3. t2: the record
    // says GW2, its owner knows no such session. t3: no record, online at
    // GW2 as its owner says. t4: persistent, offline, subscribed: its
    // record stores it, whatever its owner says. t5: online, not tagged.
    h.connect(GW2, "t1", 0);
    h.connect(GW2, "t2", 0);
    h.connect(GW1, "t5", 0);
    h.offline_subscriber("t4", 3600, &[subscription("$push/t4", QoS::AtLeastOnce)]);
    for device in ["t1", "t2", "t3", "t4"] {
        put(&mut h, device, None, &["vip"]);
    }
    put(&mut h, "t5", None, &["other"]);
    let Uplink::Push(send) = push(&[], "sale", true) else { unreachable!() };
    let to_vip = Push { audience: Audience::Tags(TagExpr::Tag(Tag::new("vip").expect("tag"))), ..send };
    let epoch = Epoch::new(1, 7);
    let sessions = [
        (key("t1"), Located::Online { gateway: GW3, epoch, since: T0 }),
        (key("t2"), Located::Unknown),
        (key("t3"), Located::Online { gateway: GW2, epoch, since: T0 }),
        (key("t4"), Located::Online { gateway: GW3, epoch, since: T0 }),
    ]
    .into();
    let (report, effects) =
        applied(&mut h, to_vip, crate::owner::Locations { sessions, ..Default::default() });
    assert_eq!((report.online, report.stored), (2, 1));
    let named = |d: &str| Some(vec![d.to_owned()]);
    assert_eq!(fanned(&effects), [(GW2, named("t3")), (GW3, named("t1"))]);
}

#[test]
fn a_cluster_send_to_everyone_goes_to_the_gateways_the_owners_counted() {
    let mut h = Harness::new();
    h.connect(GW1, "here", 0);
    h.offline_subscriber("away", 3600, &[subscription("$push/away", QoS::AtLeastOnce)]);
    let Uplink::Push(send) = push(&[], "news", true) else { unreachable!() };
    let to_all = Push { audience: Audience::All, ..send };
    // The owners count 3 online sessions of the app on GW2, none on GW3;
    // the offline persistent session is stored by its record.
    let counted = crate::owner::Locations {
        everyone: [(app(), [(GW2, 3), (GW3, 0)].into())].into(),
        ..Default::default()
    };
    let (report, effects) = applied(&mut h, to_all, counted);
    assert_eq!((report.online, report.stored), (3, 1));
    assert_eq!(fanned(&effects), [(GW2, None)]);
    // Not counted by every owner: this router's records answer.
    let Uplink::Push(send) = push(&[], "more news", true) else { unreachable!() };
    let to_all = Push { audience: Audience::All, ..send };
    let (report, effects) = applied(&mut h, to_all, crate::owner::Locations::default());
    assert_eq!((report.online, report.stored), (1, 1));
    assert_eq!(fanned(&effects), [(GW1, None)]);
}

/// Applies directory `op` with what the shards' owners said.
fn directory_located(
    h: &mut Harness,
    op: DirectoryOp,
    located: crate::owner::Locations,
) -> Result<DirectoryAnswer, ErrorCode> {
    let item = Uplink::Directory { limits: Default::default(), request: 5, app: app(), op };
    let mut out = Vec::new();
    h.state.apply_located(GW1, item, Some(Arc::new(located)), T0, &mut out);
    match out.as_slice() {
        [(GW1, Downlink::DirectoryDone { request: 5, result })] => result.clone(),
        other => panic!("expected one DirectoryDone, got {other:?}"),
    }
}

#[test]
fn a_cluster_directory_shows_devices_online_where_their_owners_located_them() {
    let mut h = Harness::new();
    // v1: transient, the record says GW2, its owner GW3 (since later). v2:
    // no session its owner knows. v3: persistent, offline: by its record.
    h.connect(GW2, "v1", 0);
    h.offline_subscriber("v3", 3600, &[subscription("$push/v3", QoS::AtLeastOnce)]);
    for device in ["v1", "v2", "v3"] {
        put(&mut h, device, Some("fan"), &[]);
    }
    let later = UnixMillis(T0.0 + 5_000);
    let epoch = Epoch::new(1, 7);
    let get = DirectoryOp::Get { device: client_id("v1") };
    let item = Uplink::Directory { limits: Default::default(), request: 5, app: app(), op: get.clone() };
    assert_eq!(h.state.to_locate(&item), Some(ToLocate::Sessions(vec![key("v1")])));
    let located = || crate::owner::Locations {
        sessions: [
            (key("v1"), Located::Online { gateway: GW3, epoch, since: later }),
            (key("v2"), Located::Unknown),
            (key("v3"), Located::Online { gateway: GW3, epoch, since: later }),
        ]
        .into(),
        ..Default::default()
    };
    let Ok(DirectoryAnswer::Device(view)) = directory_located(&mut h, get, located()) else {
        panic!("a view")
    };
    assert_eq!((view.online, view.since), (Some(GW3), Some(later)));

    let by_alias = DirectoryOp::Alias { alias: Alias::new("fan").expect("alias") };
    let Ok(DirectoryAnswer::Devices(views)) = directory_located(&mut h, by_alias, located()) else {
        panic!("views")
    };
    let mut shown: Vec<_> = views.iter().map(|v| (v.device.as_str().to_owned(), v.online)).collect();
    shown.sort();
    assert_eq!(shown, [("v1".to_owned(), Some(GW3)), ("v2".to_owned(), None), ("v3".to_owned(), None)]);

    let stats =
        Uplink::Directory { limits: Default::default(), request: 5, app: app(), op: DirectoryOp::Stats };
    assert_eq!(h.state.to_locate(&stats), Some(ToLocate::Everyone(app())));
    let counted = crate::owner::Locations {
        everyone: [(app(), [(GW2, 4), (GW3, 1)].into())].into(),
        ..Default::default()
    };
    let Ok(DirectoryAnswer::Stats(stats)) = directory_located(&mut h, DirectoryOp::Stats, counted) else {
        panic!("stats")
    };
    assert_eq!((stats.online, stats.offline_persistent, stats.directory_devices), (5, 1, 3));
    // Not counted by the owners: the records say one online.
    let Ok(DirectoryAnswer::Stats(stats)) = directory(&mut h, DirectoryOp::Stats) else { panic!("stats") };
    assert_eq!(stats.online, 1);
}
