//! Tests of the inboxes of online persistent sessions: what is routed to
//! one stays in its inbox until its client acknowledges it, so neither a
//! lost gateway nor a takeover loses what a publisher had acknowledged.

use super::*;
use crate::state::DurableState;
use herald_proto::journal::Fact;
use herald_proto::seam::SessionAcks;

/// An online persistent session `c1` on `GW1` subscribed to `a/+` at QoS 1
/// (with its route), and the epoch it holds.
fn online_subscriber(h: &mut Harness) -> Epoch {
    let epoch = h.connect(GW1, "c1", 3600);
    let asked = vec![(subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Skip)];
    h.subscribe(GW1, "c1", epoch, asked).expect("subscribed");
    h.add_routes(GW1, &app(), &["a/+"]);
    epoch
}

fn progress_of(queued: &[QueuedMessage]) -> Vec<(String, Progress)> {
    queued.iter().map(|q| (name_of(&q.message), q.progress)).collect()
}

#[test]
fn what_an_online_persistent_session_is_sent_waits_in_its_inbox_until_acknowledged() {
    let mut h = Harness::new();
    online_subscriber(&mut h);
    let effects = h.publish(plain("a/x", "m1"), T0);
    assert!(
        effects.iter().any(|(to, e)| *to == GW1 && matches!(e, Downlink::Deliver(m) if name_of(m) == "m1")),
        "the gateway delivers it: {effects:?}"
    );
    h.publish(with_qos("a/y", "fleeting", QoS::AtMostOnce), T0);
    assert_eq!(h.queue_of("c1"), ["m1"], "QoS 0 is never kept");
    assert_eq!(h.counters().dropped_offline_qos0, 0, "nor dropped: its gateway delivers it");
    let facts = h.state.take_journal();
    assert!(facts.iter().any(|f| matches!(f, Fact::Queued { .. })), "durable before the publisher's ack");

    h.acknowledge(GW1, "c1", &["m1"], T0);
    assert_eq!(h.queue_of("c1"), Vec::<String>::new());
    assert_eq!(h.counters().inbox_acknowledged, 1);
}

#[test]
fn a_session_whose_gateway_is_lost_gets_its_unacknowledged_messages_again_with_dup() {
    let mut h = Harness::new();
    online_subscriber(&mut h);
    for name in ["m1", "m2", "m3"] {
        h.publish(plain("a/x", name), T0);
    }
    h.acknowledge(GW1, "c1", &["m1"], T0);
    let mut effects = Vec::new();
    h.state.gateway_unlinked(GW1, after_s(1), &mut effects);

    let (grant, _) = h.claim(GW2, claim("c1", false, 3600), after_s(2));
    assert!(grant.session_present);
    assert_eq!(
        progress_of(&grant.queued),
        [("m2".to_owned(), Progress::MaybeSent), ("m3".to_owned(), Progress::MaybeSent)]
    );
    assert_eq!(h.queue_of("c1"), ["m2", "m3"], "still kept until acknowledged on the new connection");
}

#[test]
fn a_release_leaves_the_inbox_in_place_with_how_far_each_message_got() {
    let mut h = Harness::new();
    let epoch = online_subscriber(&mut h);
    let mut durable = DurableState::default();
    let [m1, m2, m3] = [plain("a/x", "m1"), plain("a/x", "m2"), plain("a/x", "m3")];
    for m in [&m1, &m2, &m3] {
        h.publish(m.clone(), T0);
    }
    // m3's acknowledgement reaches the router after the release; a
    // retained copy the inbox never had is in the release too.
    let extra = plain("a/r", "retained copy");
    let mut sent = pending(m1.clone(), true);
    sent.progress = Progress::Sent(5);
    let mut gone = release("c1", epoch, 3600, false);
    gone.pending = vec![sent, pending(m2.clone(), false), pending(m3.clone(), false), pending(extra, false)];
    h.release(GW1, gone, after_s(1));
    h.acknowledge(GW1, "c1", &["m3"], after_s(1));
    for fact in h.state.take_journal() {
        durable.apply(fact);
    }

    let (grant, _) = h.claim(GW2, claim("c1", false, 3600), after_s(2));
    let expected = [
        ("retained copy".to_owned(), Progress::Unsent),
        ("m1".to_owned(), Progress::Sent(5)),
        ("m2".to_owned(), Progress::Unsent),
    ];
    assert_eq!(progress_of(&grant.queued), expected);
    // What the journal says is what the state holds.
    let from_journal = DurableState::from_image(durable.image()).image();
    let queue: Vec<_> = from_journal.sessions.iter().flat_map(|s| s.queue.iter().cloned()).collect();
    assert_eq!(progress_of(&queue), expected);
}

#[test]
fn a_takeover_resends_the_inbox_with_dup_and_the_old_connection_hands_over_only_the_rest() {
    let mut h = Harness::new();
    let old = online_subscriber(&mut h);
    let m1 = plain("a/x", "m1");
    h.publish(m1.clone(), T0);

    let (grant, revoked) = h.claim(GW2, claim("c1", false, 3600), after_s(1));
    assert_eq!(revoked, [(GW1, Downlink::Revoked { session: key("c1"), epoch: old })]);
    assert_eq!(progress_of(&grant.queued), [("m1".to_owned(), Progress::MaybeSent)]);

    // The old connection's release lists m1 (in flight) and a copy the
    // inbox never had: only that one is handed over.
    let mut stale = release("c1", old, 3600, false);
    stale.pending = vec![pending(m1, true), pending(plain("a/r", "retained copy"), false)];
    let effects = h.release(GW1, stale, after_s(1));
    let handed: Vec<_> = effects
        .iter()
        .filter_map(|(to, e)| match e {
            Downlink::Handover { pending, .. } => Some((*to, names(pending))),
            _ => None,
        })
        .collect();
    assert_eq!(handed, [(GW2, vec!["retained copy".to_owned()])]);
    // Only the inbox copy's acknowledgement removes it.
    assert_eq!(h.queue_of("c1"), ["m1"]);
}

#[test]
fn a_takeover_waits_for_the_old_connection_and_resumes_under_the_same_packet_ids() {
    let mut h = Harness::new();
    let old = online_subscriber(&mut h);
    let (m1, m2) = (plain("a/x", "m1"), plain("a/x", "m2"));
    h.publish(m1.clone(), T0);
    h.publish(m2.clone(), T0);

    // The claim waits: the old connection is told to end, nothing granted yet.
    let asked = h.apply(GW2, Uplink::Claim(claim("c1", false, 3600)), after_s(1));
    assert_eq!(asked, [(GW1, Downlink::Revoked { session: key("c1"), epoch: old })]);
    assert!(h.tick(after_s(1)).0.is_empty(), "still waiting");

    // Its release says how far each got: m1 was sent as packet 7 and its
    // PUBREC came back (PUBREL 7 in flight), m2 was sent as packet 8.
    let mut gone = release("c1", old, 3600, false);
    let mut released = pending(m1, true);
    released.progress = Progress::Released(7);
    let mut sent = pending(m2, true);
    sent.progress = Progress::Sent(8);
    gone.pending = vec![released, sent];
    let effects = h.apply(GW1, Uplink::Release(gone), after_s(1));
    assert!(effects.contains(&(GW1, Downlink::Released { request: 77 })));
    let grant = effects
        .iter()
        .find_map(|(to, e)| match e {
            Downlink::Claimed { result: Ok(grant), .. } if *to == GW2 => Some(grant.clone()),
            _ => None,
        })
        .expect("granted once the old connection ended");
    assert!(grant.session_present);
    let expected = [("m1".to_owned(), Progress::Released(7)), ("m2".to_owned(), Progress::Sent(8))];
    assert_eq!(progress_of(&grant.queued), expected, "the same packet ids, not MaybeSent");
    assert!(grant.epoch > old);
}

#[test]
fn after_a_gateways_loss_qos2_messages_are_resent_under_the_packet_ids_it_reported() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "c1", 3600);
    let asked = vec![(subscription("a/+", QoS::ExactlyOnce), RetainedLookup::Skip)];
    h.subscribe(GW1, "c1", epoch, asked).expect("subscribed");
    h.add_routes(GW1, &app(), &["a/+"]);
    let [m1, m2, m3] = [
        with_qos("a/x", "m1", QoS::ExactlyOnce),
        with_qos("a/x", "m2", QoS::ExactlyOnce),
        with_qos("a/x", "m3", QoS::ExactlyOnce),
    ];
    for m in [&m1, &m2, &m3] {
        h.publish(m.clone(), T0);
    }
    // GW1 says m1 got its PUBREC (PUBREL 3 out) and m2 went out as packet
    // 4; another gateway's word about m3 does not count.
    let report = |progress| vec![SessionAcks { session: key("c1"), messages: Vec::new(), progress }];
    let from_owner = report(vec![(m1.id, Progress::Released(3)), (m2.id, Progress::Sent(4))]);
    h.apply(GW1, Uplink::Acked(from_owner), T0);
    h.apply(GW3, Uplink::Acked(report(vec![(m3.id, Progress::Sent(9))])), T0);
    let mut effects = Vec::new();
    h.state.gateway_unlinked(GW1, after_s(1), &mut effects);

    let (grant, _) = h.claim(GW2, claim("c1", false, 3600), after_s(2));
    let expected = [
        ("m1".to_owned(), Progress::Released(3)),
        ("m2".to_owned(), Progress::Sent(4)),
        ("m3".to_owned(), Progress::MaybeSent),
    ];
    assert_eq!(progress_of(&grant.queued), expected);
}

#[test]
fn a_takeover_whose_old_gateway_never_answers_goes_ahead_at_the_end_of_the_wait() {
    let mut h = Harness::new();
    let old = online_subscriber(&mut h);
    h.publish(plain("a/x", "m1"), T0);
    h.apply(GW2, Uplink::Claim(claim("c1", false, 3600)), after_s(1));
    let wait = super::super::takeover::TAKEOVER_WAIT_MS;
    let (early, next) = h.tick(after_ms(1_000 + wait - 1));
    assert!(early.is_empty());
    assert_eq!(next, Some(after_ms(1_000 + wait)), "the end of the wait is a deadline");
    let (effects, _) = h.tick(after_ms(1_000 + wait));
    let grant = effects
        .iter()
        .find_map(|(_, e)| match e {
            Downlink::Claimed { result: Ok(grant), .. } => Some(grant.clone()),
            _ => None,
        })
        .expect("granted at the deadline");
    assert_eq!(progress_of(&grant.queued), [("m1".to_owned(), Progress::MaybeSent)]);
    assert!(!effects.iter().any(|(_, e)| matches!(e, Downlink::Revoked { .. })), "told once only");
    assert!(grant.epoch > old);
}

#[test]
fn a_claimant_whose_link_drops_is_forgotten_and_a_second_claim_goes_after_the_first() {
    let mut h = Harness::new();
    online_subscriber(&mut h);
    h.apply(GW2, Uplink::Claim(claim("c1", false, 3600)), after_s(1));
    let mut effects = Vec::new();
    h.state.gateway_unlinked(GW2, after_s(1), &mut effects);
    assert!(h.tick(after_s(10)).0.iter().all(|(_, e)| !matches!(e, Downlink::Claimed { .. })));

    // Two claims: the first is granted at once when the second comes, and
    // the second waits for the first's connection in turn.
    h.apply(GW2, Uplink::Claim(Claim { request: 40, ..claim("c1", false, 3600) }), after_s(11));
    let effects = h.apply(GW3, Uplink::Claim(Claim { request: 41, ..claim("c1", false, 3600) }), after_s(11));
    let granted: Vec<_> = effects
        .iter()
        .filter_map(|(to, e)| match e {
            Downlink::Claimed { request, result: Ok(grant) } => Some((*to, *request, grant.epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(granted.len(), 1, "{effects:?}");
    assert_eq!((granted[0].0, granted[0].1), (GW2, 40));
    assert!(effects.contains(&(GW2, Downlink::Revoked { session: key("c1"), epoch: granted[0].2 })));
}

#[test]
fn unsubscribing_stops_the_inbox_and_a_session_ending_clears_it() {
    let mut h = Harness::new();
    let epoch = online_subscriber(&mut h);
    h.unsubscribe(GW1, "c1", epoch, &["a/+"]).expect("unsubscribed");
    h.publish(plain("a/x", "m1"), T0);
    assert_eq!(h.queue_of("c1"), Vec::<String>::new());

    // A session that becomes transient at its end leaves no index entry.
    let asked = vec![(subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Skip)];
    h.subscribe(GW1, "c1", epoch, asked).expect("subscribed");
    h.release(GW1, release("c1", epoch, 0, false), after_s(1));
    assert!(h.state.session(&key("c1")).is_none());
    h.publish(plain("a/x", "m2"), after_s(2));
    let epoch = h.connect(GW1, "c1", 3600);
    assert_eq!(h.queue_of("c1"), Vec::<String>::new(), "epoch {epoch:?}: nothing kept for a session gone");
}

#[test]
fn a_full_inbox_of_an_online_session_is_counted_apart_from_offline_losses() {
    for overflow in [crate::state::Overflow::RefuseNewest, crate::state::Overflow::DropOldest] {
        let config = RouterConfig { max_queued_messages: 2, overflow, ..RouterConfig::default() };
        let mut h = Harness::with_config(config);
        online_subscriber(&mut h);
        for name in ["m1", "m2", "m3"] {
            let effects = h.publish(plain("a/x", name), T0);
            assert!(effects.iter().any(|(_, e)| matches!(e, Downlink::Deliver(_))), "delivered all the same");
        }
        let c = h.counters();
        assert_eq!(
            (c.inbox_overflow_online, c.dropped_queue_full, c.dropped_queue_oldest),
            (1, 0, 0),
            "{overflow:?}"
        );
        assert_eq!(h.queue_of("c1").len(), 2, "{overflow:?}");
    }
}

#[test]
fn a_reconnect_journals_the_session_record_not_its_inbox() {
    let mut h = Harness::new();
    h.state.gateway_linked(GW2, true);
    h.state.take_journal();
    let mut durable = DurableState::default();
    h.offline_subscriber("c1", 3600, &[subscription("a/+", QoS::AtLeastOnce)]);
    for name in ["m1", "m2", "m3"] {
        h.publish(plain("a/x", name), T0);
    }
    for fact in h.state.take_journal() {
        durable.apply(fact);
    }

    let (grant, _) = h.claim(GW2, claim("c1", false, 3600), after_s(1));
    assert_eq!(names(&grant.queued), ["m1", "m2", "m3"]);
    let facts = h.state.take_journal();
    assert!(
        matches!(&facts[..], [Fact::SessionMeta(meta)] if meta.queue.is_empty() && meta.online),
        "the record alone: {facts:?}"
    );
    for fact in facts {
        durable.apply(fact);
    }
    let from_journal = DurableState::from_image(durable.image()).image();
    let from_state = DurableState::from_image(h.state.durable_image()).image();
    assert_eq!(from_journal.sessions, from_state.sessions, "the journal still holds the inbox");
}

#[test]
fn a_gateway_of_an_earlier_version_gets_what_it_knows() {
    let mut h = Harness::new();
    h.state.gateway_linked(GW1, false);
    online_subscriber(&mut h);
    h.publish(plain("a/x", "m1"), T0);
    assert_eq!(h.queue_of("c1"), Vec::<String>::new(), "no inbox: its acknowledgements never come");
    let facts = h.state.take_journal();
    assert!(!facts.iter().any(|f| matches!(f, Fact::SessionMeta(_))), "whole records only: {facts:?}");

    // Inbox entries perhaps sent go to it as unsent (it knows no MaybeSent).
    let mut h = Harness::new();
    h.state.gateway_linked(GW2, false);
    online_subscriber(&mut h);
    h.publish(plain("a/x", "m1"), T0);
    let mut effects = Vec::new();
    h.state.gateway_unlinked(GW1, after_s(1), &mut effects);
    let (grant, _) = h.claim(GW2, claim("c1", false, 3600), after_s(2));
    assert_eq!(progress_of(&grant.queued), [("m1".to_owned(), Progress::Unsent)]);
}
