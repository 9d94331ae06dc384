//! Tests of the journal: what a restart keeps is exactly what the facts
//! describe, and transient traffic writes nothing.

use super::*;
use crate::state::DurableState;
use herald_proto::journal::Fact;

/// Applies `state`'s journal so far to `durable`.
fn commit(state: &mut RouterState, durable: &mut DurableState) {
    for fact in state.take_journal() {
        durable.apply(fact);
    }
}

/// A router restarted from `durable` at `now`, with a new generation.
fn restarted(durable: &DurableState, now: UnixMillis) -> Harness {
    let mut harness = Harness { state: RouterState::new(RouterConfig::default(), GENERATION + 1) };
    harness.state.restore(durable.image(), now);
    harness
}

fn shared_subscription(filter_text: &str) -> Subscription {
    subscription(filter_text, QoS::AtLeastOnce)
}

#[test]
fn replaying_the_journal_rebuilds_what_a_restart_must_keep() {
    let mut h = Harness::new();
    let mut durable = DurableState::default();

    // A retained message; a persistent session that subscribes, goes offline and queues two
    // messages; a persistent member of a shared group that goes offline, so the group queues.
    h.publish(retained("status/a", "up"), T0);
    let epoch = h.connect(GW1, "keeper", 3600);
    h.subscribe(GW1, "keeper", epoch, vec![(subscription("news/#", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("subscribed");
    h.apply(GW1, Uplink::Release(release("keeper", epoch, 3600, true)), T0);
    let member = h.connect(GW2, "member", 3600);
    h.subscribe(GW2, "member", member, vec![(shared_subscription("$share/g/jobs"), RetainedLookup::Skip)])
        .expect("subscribed");
    h.apply(GW2, Uplink::Release(release("member", member, 3600, true)), T0);
    commit(&mut h.state, &mut durable);
    h.publish(plain("news/1", "m1"), T0);
    h.publish(plain("news/2", "m2"), T0);
    h.publish(plain("jobs", "j1"), T0);
    commit(&mut h.state, &mut durable);

    let mut after = restarted(&durable, after_s(10));
    assert_eq!(after.retained_count(), 1);
    assert_eq!(after.state.group_backlog(&app(), &filter("$share/g/jobs")), 1);
    let (grant, _) = after.claim(GW3, claim("keeper", false, 3600), after_s(10));
    assert!(grant.session_present);
    assert_eq!(names(&grant.queued), ["m1", "m2"]);
    let filters: Vec<_> = grant.subscriptions.iter().map(|s| s.filter.as_str().to_owned()).collect();
    assert_eq!(filters, ["news/#"]);
    assert!(grant.epoch > epoch, "epochs go on rising after a restart: {:?} after {epoch:?}", grant.epoch);
    // The group's message goes to the first gateway that has a member again.
    let add = vec![(app(), filter("$share/g/jobs"))];
    let effects = after.apply(GW1, Uplink::Routes { add, remove: Vec::new() }, after_s(10));
    assert_eq!(shared_deliveries(&effects), [(GW1, "$share/g/jobs".to_owned(), "j1".to_owned())]);
}

#[test]
fn the_image_and_the_journal_agree() {
    let mut h = Harness::new();
    let mut durable = DurableState::default();
    let epoch = h.connect(GW1, "a", 60);
    h.subscribe(GW1, "a", epoch, vec![(subscription("t/#", QoS::ExactlyOnce), RetainedLookup::Skip)])
        .expect("subscribed");
    h.apply(GW1, Uplink::Release(release("a", epoch, 60, true)), T0);
    h.publish(plain("t/1", "x"), T0);
    h.publish(retained("t/r", "r"), T0);
    commit(&mut h.state, &mut durable);
    let from_journal = DurableState::from_image(durable.image()).image();
    let from_state = DurableState::from_image(h.state.durable_image()).image();
    assert_eq!(from_journal.sessions, from_state.sessions);
    assert_eq!(from_journal.retained, from_state.retained);
}

#[test]
fn transient_sessions_and_plain_routing_write_nothing() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "passing", 0);
    h.subscribe(GW1, "passing", epoch, vec![(subscription("t", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("subscribed");
    h.add_routes(GW1, &app(), &["t"]);
    h.publish(plain("t", "hello"), T0);
    h.apply(GW1, Uplink::Release(release("passing", epoch, 0, true)), T0);
    assert_eq!(h.state.take_journal(), [], "connection churn stays off the journal");
}

#[test]
fn a_session_online_when_the_router_stopped_ends_at_restore_and_its_will_fires_after_the_lease_and_its_delay()
{
    let mut h = Harness::new();
    let mut durable = DurableState::default();
    let (grant, _) = h.claim(GW1, with_will(claim("device", true, 600), "last/words", "bye", 5), T0);
    assert!(!grant.session_present);
    commit(&mut h.state, &mut durable);

    let mut after = restarted(&durable, after_s(100));
    let listener = after.connect(GW2, "listener", 600);
    after
        .subscribe(
            GW2,
            "listener",
            listener,
            vec![(subscription("last/words", QoS::AtLeastOnce), RetainedLookup::Skip)],
        )
        .expect("subscribed");
    after.add_routes(GW2, &app(), &["last/words"]);
    // Its gateway may still hold the connection: the will waits for the
    // gateway lease (15 s by default), then for its own delay.
    let (effects, _) = after.tick(after_s(119));
    assert_eq!(deliveries(&effects), [], "not before the lease and the will delay");
    let (effects, _) = after.tick(after_s(120));
    assert_eq!(deliveries(&effects), [(GW2, "bye".to_owned())]);
}

#[test]
fn a_router_that_took_over_gives_a_restored_session_back_to_the_gateway_that_still_holds_it() {
    let mut h = Harness::new();
    let mut durable = DurableState::default();
    let (grant, _) = h.claim(GW1, with_will(claim("p", true, 600), "last/words", "bye", 0), T0);
    let asked = vec![(subscription("a/b", QoS::AtLeastOnce), RetainedLookup::Skip)];
    assert_eq!(h.subscribe(GW1, "p", grant.epoch, asked), Ok(Vec::new()));
    commit(&mut h.state, &mut durable);

    let mut after = restarted(&durable, after_s(100));
    after.connect(GW2, "listener", 0);
    after.add_routes(GW2, &app(), &["last/words"]);
    after.publish(with_qos("a/b", "meanwhile", QoS::AtLeastOnce), after_s(101));
    assert_eq!(after.queue_of("p"), ["meanwhile"]);

    // GW1 still holds the connection with the epoch of the old generation.
    let will = Will { message: plain("last/words", "bye"), delay_seconds: 0, expiry_seconds: None };
    let held = |epoch| herald_proto::seam::Reattach {
        session: key("p"),
        epoch,
        expiry_seconds: 600,
        will: Some(Box::new(will.clone())),
    };
    let item = Uplink::Reattach { sessions: vec![held(grant.epoch)], last: true };
    let effects = after.apply(GW1, item, after_s(102));
    assert!(
        matches!(effects.as_slice(), [(GW1, Downlink::Handover { epoch, pending, .. })]
            if *epoch == grant.epoch && names(pending) == ["meanwhile"]),
        "{effects:?}"
    );
    let (effects, _) = after.tick(after_s(200));
    assert_eq!(deliveries(&effects), [], "the will of a session taken back does not fire");
    assert_eq!(after.state.session(&key("p")).and_then(|r| r.owner), Some(GW1));

    // Only once: another gateway with the same old epoch is told to end it.
    let item = Uplink::Reattach { sessions: vec![held(grant.epoch)], last: true };
    let effects = after.apply(GW2, item, after_s(201));
    assert_eq!(effects, [(GW2, Downlink::Revoked { session: key("p"), epoch: grant.epoch })]);
}

#[test]
fn a_router_that_took_over_holds_publishes_until_the_gateways_it_knew_are_back() {
    let mut h = Harness::new();
    let mut durable = DurableState::default();
    h.state.gateway_linked(GW1, true);
    h.state.gateway_linked(GW2, true);
    h.state.gateway_linked(GW1, true);
    let facts = h.state.take_journal();
    assert_eq!(facts, [Fact::GatewayLinked(GW1), Fact::GatewayLinked(GW2)], "one fact per gateway id");
    for fact in facts {
        durable.apply(fact);
    }

    let mut after = restarted(&durable, after_s(100));
    // GW1 is back first and publishes; GW2's subscriber is not known yet.
    assert_eq!(after.apply(GW1, Uplink::Reattach { sessions: Vec::new(), last: true }, after_s(101)), []);
    let item =
        Uplink::Publish(Publish { request: Some(PUBLISH), from: None, message: plain("a/b", "early") });
    assert_eq!(after.apply(GW1, item, after_s(101)), [], "held: no delivery, no answer yet");
    // GW2 links again with its routes, then ends its list: the held publish goes out.
    after.add_routes(GW2, &app(), &["a/b"]);
    let effects = after.apply(GW2, Uplink::Reattach { sessions: Vec::new(), last: true }, after_s(101));
    assert_eq!(deliveries(&effects), [(GW2, "early".to_owned())]);
    assert!(effects.contains(&(GW1, Downlink::Published { request: PUBLISH, result: Ok(true) })));
    assert_eq!(after.counters().publishes_held, 1);
}

#[test]
fn a_gateway_that_never_comes_back_holds_publishes_only_for_its_lease() {
    let mut h = Harness::new();
    let mut durable = DurableState::default();
    h.state.gateway_linked(GW2, true);
    commit(&mut h.state, &mut durable);
    let mut after = restarted(&durable, after_s(100));
    let effects = after.publish(plain("a/b", "waiting"), after_s(100));
    assert_eq!(effects, []);
    after.add_routes(GW1, &app(), &["a/b"]);
    let (effects, _) = after.tick(after_s(114));
    assert_eq!(deliveries(&effects), []);
    let (effects, _) = after.tick(after_s(115));
    assert_eq!(deliveries(&effects), [(GW1, "waiting".to_owned())], "routed when GW2's lease ends");
    let facts = after.state.take_journal();
    assert!(facts.contains(&Fact::GatewayGone(GW2)), "{facts:?}");
}

#[test]
fn wills_fired_while_publishes_are_held_keep_their_place() {
    let mut h = Harness::new();
    let mut durable = DurableState::default();
    h.state.gateway_linked(GW1, true);
    h.state.gateway_linked(GW2, true);
    commit(&mut h.state, &mut durable);
    let mut after = restarted(&durable, after_s(100));
    assert_eq!(after.apply(GW1, Uplink::Reattach { sessions: Vec::new(), last: true }, after_s(100)), []);
    // The device says it is online, then its connection drops: the will
    // (offline) comes after the held "online" and must stay last.
    let will = Will {
        message: Arc::new(Message { retain: true, ..message("status/dev", "offline") }),
        delay_seconds: 0,
        expiry_seconds: None,
    };
    let claim_with_will = Claim { will: Some(Box::new(will)), ..claim("dev", true, 0) };
    let (grant, _) = after.claim(GW1, claim_with_will, after_s(100));
    let online = Arc::new(Message { retain: true, ..message("status/dev", "online") });
    let item =
        Uplink::Publish(Publish { request: None, from: Some((key("dev"), grant.epoch)), message: online });
    assert_eq!(after.apply(GW1, item, after_s(100)), []);
    after.release(GW1, release("dev", grant.epoch, 0, true), after_s(100));
    let effects = after.apply(GW2, Uplink::Reattach { sessions: Vec::new(), last: true }, after_s(101));
    assert_eq!(deliveries(&effects), [], "no subscriber yet");
    let watcher = after.connect(GW2, "watcher", 0);
    let retained = after
        .subscribe(
            GW2,
            "watcher",
            watcher,
            vec![(subscription("status/dev", QoS::AtMostOnce), RetainedLookup::Send)],
        )
        .expect("subscribed");
    assert_eq!(retained_names(&retained), [(0, "offline".to_owned())], "the will is the last word");
}

#[test]
fn after_a_restore_only_the_last_claim_takes_a_session_back() {
    let mut h = Harness::new();
    let mut durable = DurableState::default();
    let first = h.connect(GW1, "p", 600);
    // GW2 takes the session over; GW1's revocation is lost with the leader.
    let (second, _) = h.claim(GW2, claim("p", false, 600), T0);
    assert!(second.epoch > first);
    commit(&mut h.state, &mut durable);

    let mut after = restarted(&durable, after_s(100));
    let held =
        |epoch| herald_proto::seam::Reattach { session: key("p"), epoch, expiry_seconds: 600, will: None };
    let stale = Uplink::Reattach { sessions: vec![held(first)], last: false };
    assert_eq!(
        after.apply(GW1, stale, after_s(101)),
        [(GW1, Downlink::Revoked { session: key("p"), epoch: first })],
        "the connection that lost the session does not get it back"
    );
    let current = Uplink::Reattach { sessions: vec![held(second.epoch)], last: true };
    assert_eq!(after.apply(GW2, current, after_s(101)), []);
    assert_eq!(after.state.session(&key("p")).map(|r| (r.owner, r.epoch)), Some((Some(GW2), second.epoch)));
}

#[test]
fn a_router_that_took_over_holds_pushes_until_the_sessions_are_listed() {
    let mut h = Harness::new();
    let mut durable = DurableState::default();
    h.state.gateway_linked(GW2, true);
    commit(&mut h.state, &mut durable);
    let mut after = restarted(&durable, after_s(100));
    let item = Uplink::Push(herald_proto::seam::Push {
        request: PUBLISH,
        message: plain("$push", "early"),
        audience: herald_proto::seam::Audience::Devices(vec![client_id("d1")]),
        store_offline: true,
        idempotency: None,
    });
    assert_eq!(after.apply(GW1, item, after_s(100)), [], "held: the registry is not rebuilt yet");
    // GW2 lists d1 (held at an epoch of the last run) and ends its list.
    let listed = herald_proto::seam::Reattach {
        session: key("d1"),
        epoch: Epoch::new(GENERATION - 1, 3),
        expiry_seconds: 0,
        will: None,
    };
    let effects = after.apply(GW2, Uplink::Reattach { sessions: vec![listed], last: true }, after_s(100));
    assert!(
        effects
            .iter()
            .any(|(to, item)| *to == GW2
                && matches!(item, Downlink::Deliver(m) if m.topic.as_str() == "$push/d1")),
        "{effects:?}"
    );
    let outcomes = effects.iter().find_map(|(to, item)| match item {
        Downlink::Pushed { result: Ok(report), .. } if *to == GW1 => Some(report.devices.clone()),
        _ => None,
    });
    assert_eq!(outcomes, Some(vec![(client_id("d1"), herald_proto::seam::PushOutcome::Online)]));
}
