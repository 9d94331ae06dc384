//! Tests of tag and broadcast sends: one fan-out log entry, read by the
//! sessions that were offline when it was sent.

use super::*;
use herald_core::directory::{DeviceEntry, Tag, TagExpr};
use herald_proto::journal::Fact;
use herald_proto::seam::{Audience, DirectoryOp, Push, PushReport};

fn send(
    h: &mut Harness,
    audience: Audience,
    name: &'static str,
    now: UnixMillis,
) -> (PushReport, Vec<Effect>) {
    let message = shared(Message { expires_at: Some(now.plus_seconds(600)), ..message("$push", name) });
    let item = Uplink::Push(Push { request: 9, message, audience, store_offline: true, idempotency: None });
    let mut effects = h.apply(GW1, item, now);
    let at = effects.iter().position(|(_, e)| matches!(e, Downlink::Pushed { .. })).expect("answered");
    match effects.remove(at).1 {
        Downlink::Pushed { result: Ok(report), .. } => (report, effects),
        other => panic!("refused: {other:?}"),
    }
}

fn push_sub(client: &str) -> Subscription {
    subscription(&format!("$push/{client}"), QoS::AtLeastOnce)
}

/// Resumes `client`'s persistent session on `gateway`; returns the names
/// and topics of what it is given.
fn resume(h: &mut Harness, gateway: NodeId, client: &str, now: UnixMillis) -> Vec<(String, String)> {
    let (grant, _) = h.claim(gateway, claim(client, false, 3600), now);
    grant.queued.iter().map(|q| (name_of(&q.message), q.message.topic.to_string())).collect()
}

fn tag_devices(h: &mut Harness, tag: &str, devices: &[&str]) {
    let op = DirectoryOp::Tag {
        tag: Tag::new(tag).expect("tag"),
        add: devices.iter().map(|d| client_id(d)).collect(),
        remove: vec![],
    };
    h.apply(GW1, Uplink::Directory { limits: Default::default(), request: 5, app: app(), op }, T0);
}

#[test]
fn a_broadcast_is_one_log_entry_read_by_sessions_offline_when_it_was_sent() {
    let mut h = Harness::new();
    h.offline_subscriber("away", 3600, &[push_sub("away")]);
    let online = h.connect(GW2, "here", 3600);
    h.subscribe(GW2, "here", online, vec![(push_sub("here"), RetainedLookup::Skip)]).expect("subscribed");

    let (report, effects) = send(&mut h, Audience::All, "news", T0);
    assert_eq!((report.online, report.stored), (1, 1));
    let pushes: Vec<_> = effects
        .iter()
        .filter_map(|(to, e)| match e {
            Downlink::DeliverPush { message, devices } => Some((*to, name_of(message), devices.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(pushes, [(GW2, "news".to_owned(), None)], "one item per gateway, no device list");
    let facts = h.state.take_journal();
    assert_eq!(facts.iter().filter(|f| matches!(f, Fact::Fanout(_))).count(), 1, "one write: {facts:?}");
    assert!(!facts.iter().any(|f| matches!(f, Fact::Queued { .. })), "no copy per session");

    // The away session gets it on its topic when it comes back, once.
    assert_eq!(resume(&mut h, GW1, "away", after_s(1)), [("news".to_owned(), "$push/away".to_owned())]);
    h.acknowledge(GW1, "away", &["news"], after_s(1));
    h.release(GW1, release("away", h.state.session(&key("away")).expect("s").epoch, 3600, false), after_s(2));
    assert_eq!(resume(&mut h, GW1, "away", after_s(3)), []);
    // The session that was online gets nothing from the log later; nor does
    // a session that did not exist when it was sent.
    h.release(GW2, release("here", online, 3600, false), after_s(4));
    assert_eq!(resume(&mut h, GW2, "here", after_s(5)), []);
    h.offline_subscriber("late", 3600, &[push_sub("late")]);
    assert_eq!(resume(&mut h, GW1, "late", after_s(6)), []);
}

#[test]
fn a_tag_audience_is_frozen_when_sent() {
    let mut h = Harness::new();
    for device in ["a", "b", "c"] {
        h.offline_subscriber(device, 3600, &[push_sub(device)]);
    }
    tag_devices(&mut h, "vip", &["a", "b"]);
    let vip = TagExpr::Tag(Tag::new("vip").expect("tag"));
    let (report, effects) = send(&mut h, Audience::Tags(vip), "sale", T0);
    assert_eq!((report.online, report.stored), (0, 2));
    assert!(!effects.iter().any(|(_, e)| matches!(e, Downlink::DeliverPush { .. })), "nobody online");
    // c is tagged after the send: it does not get it; b lost the tag: it does.
    tag_devices(&mut h, "vip", &["c"]);
    let op = DirectoryOp::Put { device: client_id("b"), entry: DeviceEntry::default() };
    h.apply(GW1, Uplink::Directory { limits: Default::default(), request: 6, app: app(), op }, T0);
    assert_eq!(resume(&mut h, GW1, "a", after_s(1)).len(), 1);
    assert_eq!(resume(&mut h, GW1, "b", after_s(1)).len(), 1);
    assert_eq!(resume(&mut h, GW1, "c", after_s(1)), []);
}

#[test]
fn online_tagged_devices_are_listed_per_gateway() {
    let mut h = Harness::new();
    h.connect(GW2, "a", 0);
    h.connect(GW3, "b", 0);
    h.connect(GW3, "c", 0);
    tag_devices(&mut h, "beta", &["a", "b"]);
    let beta = TagExpr::Tag(Tag::new("beta").expect("tag"));
    let (report, effects) = send(&mut h, Audience::Tags(beta), "try", T0);
    assert_eq!(report.online, 2);
    let mut pushes: Vec<_> = effects
        .iter()
        .filter_map(|(to, e)| match e {
            Downlink::DeliverPush { devices: Some(devices), .. } => {
                Some((*to, devices.iter().map(|d| d.to_string()).collect::<Vec<_>>()))
            }
            _ => None,
        })
        .collect();
    pushes.sort();
    assert_eq!(pushes, [(GW2, vec!["a".to_owned()]), (GW3, vec!["b".to_owned()])]);
}

#[test]
fn the_log_and_cursors_survive_a_restart_and_expired_entries_go() {
    let mut h = Harness::new();
    h.offline_subscriber("away", 3600, &[push_sub("away")]);
    h.offline_subscriber("later", 3600, &[push_sub("later")]);
    send(&mut h, Audience::All, "kept", T0);
    let mut durable = crate::state::DurableState::default();
    let commit = |h: &mut Harness, durable: &mut crate::state::DurableState| {
        for fact in h.state.take_journal() {
            durable.apply(fact);
        }
    };
    commit(&mut h, &mut durable);
    let mut after = Harness::new();
    after.state.restore(durable.image(), after_s(1));
    assert_eq!(resume(&mut after, GW1, "away", after_s(2)), [("kept".to_owned(), "$push/away".to_owned())]);

    // Past its ttl (600 s) the entry is trimmed, journaled, and not given.
    let (_, _) = after.tick(after_s(601));
    let facts = after.state.take_journal();
    assert!(facts.iter().any(|f| matches!(f, Fact::FanoutTrimmed { through: 0, .. })), "{facts:?}");
    assert_eq!(resume(&mut after, GW1, "later", after_s(602)), []);
    assert_eq!(after.counters().fanout_gaps, 0, "an expired entry is not a gap");
}

#[test]
fn catching_up_keeps_the_queue_within_its_byte_limit() {
    let config = RouterConfig { max_queued_bytes: 10, ..RouterConfig::default() };
    let mut h = Harness::with_config(config);
    h.offline_subscriber("away", 3600, &[push_sub("away")]);
    send(&mut h, Audience::All, "8 bytes!", T0);
    send(&mut h, Audience::All, "8 more!!", T0);
    assert_eq!(resume(&mut h, GW1, "away", after_s(1)).len(), 1, "the second would pass 10 bytes");
    assert_eq!(h.counters().dropped_queue_full, 1);
}

#[test]
fn a_full_log_drops_its_oldest_entry_and_counts_the_gap() {
    let mut h = Harness::new();
    h.offline_subscriber("away", 3600, &[push_sub("away")]);
    for _ in 0..=crate::state::MAX_FANOUT_ENTRIES {
        send(&mut h, Audience::All, "n", T0);
    }
    assert_eq!(h.counters().fanout_dropped, 1);
    let given = resume(&mut h, GW1, "away", after_s(1));
    assert_eq!(given.len(), RouterConfig::default().max_queued_messages, "bounded by the queue limit");
    assert_eq!(h.counters().fanout_gaps, 1);
}

#[test]
fn a_session_online_when_a_broadcast_went_out_does_not_get_it_again_on_takeover_or_restore() {
    let mut h = Harness::new();
    let epoch = h.connect(GW2, "here", 3600);
    h.subscribe(GW2, "here", epoch, vec![(push_sub("here"), RetainedLookup::Skip)]).expect("subscribed");
    let (report, _) = send(&mut h, Audience::All, "live", T0);
    assert_eq!(report.online, 1);
    // Taken over by a new connection (resuming): the old one releases the
    // session with nothing unacknowledged, so it had it live already.
    h.apply(GW3, Uplink::Claim(claim("here", false, 3600)), after_s(1));
    let effects = h.apply(GW2, Uplink::Release(release("here", epoch, 3600, false)), after_s(1));
    let grant = effects
        .iter()
        .find_map(|(_, e)| match e {
            Downlink::Claimed { result: Ok(grant), .. } => Some(grant.clone()),
            _ => None,
        })
        .expect("granted after the release");
    assert_eq!(names(&grant.queued), Vec::<String>::new());

    // Restored after a restart while online: the log is not read again.
    let mut durable = crate::state::DurableState::default();
    for fact in h.state.take_journal() {
        durable.apply(fact);
    }
    let mut after = Harness::new();
    after.state.restore(durable.image(), after_s(2));
    let (grant, _) = after.claim(GW3, claim("here", false, 3600), after_s(3));
    assert_eq!(names(&grant.queued), Vec::<String>::new());
}

/// A takeover whose old gateway does not release the session in time (it
/// is frozen): the tag and broadcast entries sent since the client's last
/// acknowledged one come again, perhaps sent (DUP); the acknowledged one
/// does not.
#[test]
fn a_takeover_from_a_frozen_gateway_reads_again_what_the_client_had_not_acknowledged() {
    let mut h = Harness::new();
    let epoch = h.connect(GW2, "here", 3600);
    h.subscribe(GW2, "here", epoch, vec![(push_sub("here"), RetainedLookup::Skip)]).expect("subscribed");
    let (_, effects) = send(&mut h, Audience::All, "acked", T0);
    let acked = effects
        .iter()
        .find_map(|(_, e)| match e {
            Downlink::DeliverPush { message, .. } => Some(message.id),
            _ => None,
        })
        .expect("delivered live");
    send(&mut h, Audience::All, "in flight", T0);
    let acks = vec![herald_proto::seam::SessionAcks {
        session: key("here"),
        messages: vec![acked],
        progress: Vec::new(),
    }];
    h.apply(GW2, Uplink::Acked(acks), T0);
    // The harness's claim waits out the takeover: GW2 never releases.
    let (grant, _) = h.claim(GW3, claim("here", false, 3600), after_s(1));
    let got: Vec<_> = grant.queued.iter().map(|q| (name_of(&q.message), q.progress)).collect();
    assert_eq!(got, [("in flight".to_owned(), Progress::MaybeSent)]);
}

#[test]
fn a_push_asked_again_is_not_routed_twice() {
    let mut h = Harness::new();
    h.connect(GW2, "d1", 0);
    let message = shared(Message { expires_at: Some(after_s(600)), ..message("$push", "once") });
    let item = || {
        let audience = Audience::Devices(vec![client_id("d1")]);
        Uplink::Push(Push {
            request: 9,
            message: message.clone(),
            audience,
            store_offline: true,
            idempotency: None,
        })
    };
    let first = h.apply(GW1, item(), T0);
    assert_eq!(first.iter().filter(|(_, e)| matches!(e, Downlink::Deliver(_))).count(), 1);
    let again = h.apply(GW1, item(), after_s(1));
    assert_eq!(again.iter().filter(|(_, e)| matches!(e, Downlink::Deliver(_))).count(), 0, "{again:?}");
    let replay = again.iter().find_map(|(_, e)| match e {
        Downlink::Pushed { result: Ok(report), .. } => Some(report.clone()),
        _ => None,
    });
    assert_eq!(replay.map(|r| (r.online, r.replay_of)), Some((1, Some(message.id))));
}

/// An online persistent session `here` on `GW2`, subscribed to its topic.
fn online_device(h: &mut Harness) -> Epoch {
    let epoch = h.connect(GW2, "here", 3600);
    h.subscribe(GW2, "here", epoch, vec![(push_sub("here"), RetainedLookup::Skip)]).expect("subscribed");
    epoch
}

fn delivered_id(effects: &[Effect]) -> herald_core::MessageId {
    effects
        .iter()
        .find_map(|(_, e)| match e {
            Downlink::DeliverPush { message, .. } => Some(message.id),
            _ => None,
        })
        .expect("delivered online")
}

fn lose(h: &mut Harness, gateway: NodeId, now: UnixMillis) {
    let mut effects = Vec::new();
    h.state.gateway_unlinked(gateway, now, &mut effects);
}

#[test]
fn broadcasts_a_lost_gateways_client_had_not_acknowledged_are_read_again_with_dup() {
    let mut h = Harness::new();
    online_device(&mut h);
    let (_, effects) = send(&mut h, Audience::All, "first", T0);
    let first = delivered_id(&effects);
    send(&mut h, Audience::All, "second", T0);
    let acks = vec![herald_proto::seam::SessionAcks {
        session: key("here"),
        messages: vec![first],
        progress: Vec::new(),
    }];
    assert_eq!(h.apply(GW2, Uplink::Acked(acks), T0), []);
    assert_eq!(h.state.take_journal().iter().filter(|f| matches!(f, Fact::Acked(_))).count(), 0, "no write");
    lose(&mut h, GW2, after_s(1));

    let (grant, _) = h.claim(GW1, claim("here", false, 3600), after_s(2));
    let got: Vec<_> = grant.queued.iter().map(|q| (name_of(&q.message), q.progress)).collect();
    assert_eq!(got, [("second".to_owned(), Progress::MaybeSent)], "from past the acknowledged one");
}

#[test]
fn a_gateway_that_takes_its_session_back_is_not_sent_what_it_had_again() {
    let mut h = Harness::new();
    let epoch = online_device(&mut h);
    send(&mut h, Audience::All, "before", T0);
    lose(&mut h, GW2, after_s(1));
    send(&mut h, Audience::All, "during", after_s(1));
    let held = herald_proto::seam::Reattach { session: key("here"), epoch, expiry_seconds: 3600, will: None };
    let effects = h.apply(GW2, Uplink::Reattach { sessions: vec![held], last: true }, after_s(2));
    let handed: Vec<_> = effects
        .iter()
        .filter_map(|(_, e)| match e {
            Downlink::Handover { pending, .. } => Some(names(pending)),
            _ => None,
        })
        .collect();
    assert_eq!(handed, [vec!["during".to_owned()]]);
}
