//! Tests of gateway leases: a gateway whose link dropped may take its
//! sessions back; one that does not come back has its sessions ended.

use super::*;
use herald_proto::seam::Reattach;

/// The default lease, in seconds.
const LEASE_S: u32 = 15;

/// A session as a gateway lists it on a link opened again.
fn held(
    client: &str,
    epoch: Epoch,
    expiry_seconds: u32,
    will: Option<(&str, &'static str, u32)>,
) -> Reattach {
    let will = will.map(|(topic, name, delay_seconds)| {
        Box::new(Will { message: plain(topic, name), delay_seconds, expiry_seconds: None })
    });
    Reattach { session: key(client), epoch, expiry_seconds, will }
}

fn reattach(h: &mut Harness, gateway: NodeId, sessions: Vec<Reattach>, now: UnixMillis) -> Vec<Effect> {
    h.apply(gateway, Uplink::Reattach { sessions, last: true }, now)
}

fn unlink(h: &mut Harness, gateway: NodeId, now: UnixMillis) -> Vec<Effect> {
    let mut effects = Vec::new();
    h.state.gateway_unlinked(gateway, now, &mut effects);
    effects
}

/// A listener for `topic` on `GW2`.
fn listen(h: &mut Harness, topic: &str) {
    h.connect(GW2, "listener", 0);
    h.add_routes(GW2, &app(), &[topic]);
}

fn handovers(effects: &[Effect]) -> Vec<(NodeId, String, Epoch, Vec<String>)> {
    effects
        .iter()
        .filter_map(|(to, item)| match item {
            Downlink::Handover { session, epoch, pending } => {
                Some((*to, session.client.as_str().to_owned(), *epoch, names(pending)))
            }
            _ => None,
        })
        .collect()
}

fn revoked(effects: &[Effect]) -> Vec<(NodeId, String, Epoch)> {
    effects
        .iter()
        .filter_map(|(to, item)| match item {
            Downlink::Revoked { session, epoch } => Some((*to, session.client.as_str().to_owned(), *epoch)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_gateway_that_links_again_keeps_its_sessions_and_gets_what_queued_meanwhile() {
    let mut h = Harness::new();
    listen(&mut h, "last/words");
    let (grant, _) = h.claim(GW1, with_will(claim("p", true, 3600), "last/words", "bye", 0), T0);
    let epoch = grant.epoch;
    let asked = vec![(subscription("a/b", QoS::AtLeastOnce), RetainedLookup::Skip)];
    assert_eq!(h.subscribe(GW1, "p", epoch, asked), Ok(Vec::new()));
    h.add_routes(GW1, &app(), &["a/b"]);

    assert_eq!(deliveries(&unlink(&mut h, GW1, T0)), [], "no will while the lease runs");
    let effects = h.publish(with_qos("a/b", "meanwhile", QoS::AtLeastOnce), after_s(1));
    assert_eq!(deliveries(&effects), [], "nothing can reach an unlinked gateway");
    assert_eq!(h.queue_of("p"), ["meanwhile"], "a persistent session queues while unlinked");

    let effects =
        reattach(&mut h, GW1, vec![held("p", epoch, 3600, Some(("last/words", "bye", 0)))], after_s(2));
    assert_eq!(handovers(&effects), [(GW1, "p".to_owned(), epoch, vec!["meanwhile".to_owned()])]);
    assert_eq!(revoked(&effects), []);
    assert_eq!(h.state.session(&key("p")).and_then(|r| r.owner), Some(GW1));

    // Its epoch holds, its subscription routes to the gateway again, and
    // its will never fires.
    let from = Some((key("p"), epoch));
    let (result, _) = h.publish_with_reply(GW1, from, plain("x/y", "own"), after_s(3));
    assert_eq!(result, Ok(false));
    let effects = h.publish(with_qos("a/b", "after", QoS::AtLeastOnce), after_s(3));
    assert_eq!(deliveries(&effects), [(GW1, "after".to_owned())]);
    let (effects, _) = h.tick(after_s(LEASE_S + 100));
    assert_eq!(deliveries(&effects), [], "the will of a session taken back never fires");
    assert_eq!(h.counters().wills_published, 0);
}

#[test]
fn a_gateway_that_does_not_come_back_has_its_wills_published_when_its_lease_ends() {
    let mut h = Harness::new();
    listen(&mut h, "last/+");
    let transient = h.claim(GW1, with_will(claim("t", true, 0), "last/t", "t-bye", 0), T0).0.epoch;
    h.claim(GW1, with_will(claim("p", true, 3600), "last/p", "p-bye", 5), T0);

    unlink(&mut h, GW1, T0);
    let (effects, next) = h.tick(after_s(LEASE_S - 1));
    assert_eq!(deliveries(&effects), []);
    assert_eq!(next, Some(after_s(LEASE_S)), "the lease's end is the next deadline");
    let (effects, _) = h.tick(after_s(LEASE_S));
    assert_eq!(deliveries(&effects), [(GW2, "t-bye".to_owned())], "transient: at the lease's end");
    assert!(h.state.session(&key("t")).is_none());
    let (effects, _) = h.tick(after_s(LEASE_S + 4));
    assert_eq!(deliveries(&effects), []);
    let (effects, _) = h.tick(after_s(LEASE_S + 5));
    assert_eq!(deliveries(&effects), [(GW2, "p-bye".to_owned())], "persistent: after its will delay");

    // Too late to come back: the gateway's connection is told to end.
    let effects = reattach(&mut h, GW1, vec![held("t", transient, 0, None)], after_s(LEASE_S + 6));
    assert_eq!(revoked(&effects), [(GW1, "t".to_owned(), transient)]);
    assert_eq!(h.counters().wills_published, 2);
}

#[test]
fn a_newer_claim_wins_over_a_gateway_that_links_again() {
    let mut h = Harness::new();
    let old = h.connect(GW1, "p", 3600);
    unlink(&mut h, GW1, T0);
    let (grant, _) = h.claim(GW2, claim("p", false, 3600), after_s(1));
    assert!(grant.session_present);

    let effects = reattach(&mut h, GW1, vec![held("p", old, 3600, None)], after_s(2));
    assert_eq!(revoked(&effects), [(GW1, "p".to_owned(), old)]);
    let record = h.state.session(&key("p")).expect("session");
    assert_eq!((record.owner, record.epoch), (Some(GW2), grant.epoch));
}

#[test]
fn sessions_the_gateway_no_longer_lists_end_with_the_list() {
    let mut h = Harness::new();
    listen(&mut h, "last/+");
    let a = h.claim(GW1, with_will(claim("a", true, 0), "last/a", "a-bye", 0), T0).0.epoch;
    h.claim(GW1, with_will(claim("b", true, 0), "last/b", "b-bye", 0), T0);
    unlink(&mut h, GW1, T0);

    let effects = reattach(&mut h, GW1, vec![held("a", a, 0, Some(("last/a", "a-bye", 0)))], after_s(1));
    assert_eq!(
        deliveries(&effects),
        [(GW2, "b-bye".to_owned())],
        "b's connection is gone: its will fires now"
    );
    assert_eq!(h.state.session(&key("a")).and_then(|r| r.owner), Some(GW1));
    let (effects, _) = h.tick(after_s(LEASE_S + 1));
    assert_eq!(deliveries(&effects), [], "the lease ended with the list");
}

#[test]
fn a_connection_that_ended_while_its_gateway_was_unlinked_is_released_as_it_said() {
    let mut h = Harness::new();
    listen(&mut h, "last/p");
    let epoch = h.claim(GW1, with_will(claim("p", true, 3600), "last/p", "p-bye", 0), T0).0.epoch;
    let asked = vec![(subscription("a/b", QoS::AtLeastOnce), RetainedLookup::Skip)];
    assert_eq!(h.subscribe(GW1, "p", epoch, asked), Ok(Vec::new()));
    unlink(&mut h, GW1, T0);
    h.publish(with_qos("a/b", "meanwhile", QoS::AtLeastOnce), after_s(1));

    // The client disconnected normally while the link was down: no will;
    // what it held unacknowledged goes ahead of what queued meanwhile.
    let mut normal = release("p", epoch, 3600, false);
    normal.pending = vec![pending(plain("a/b", "unacked"), true)];
    let effects = h.release(GW1, normal, after_s(2));
    assert_eq!(deliveries(&effects), []);
    assert_eq!(reattach(&mut h, GW1, Vec::new(), after_s(2)), []);
    let (effects, _) = h.tick(after_s(LEASE_S + 100));
    assert_eq!(deliveries(&effects), [], "a normal disconnect publishes no will");
    assert_eq!(h.queue_of("p"), ["unacked", "meanwhile"]);
    assert_eq!(h.state.session(&key("p")).and_then(|r| r.owner), None);
}

#[test]
fn a_publish_replayed_on_a_new_link_is_queued_once() {
    let mut h = Harness::new();
    h.offline_subscriber("p", 3600, &[subscription("a/b", QoS::AtLeastOnce)]);
    let message = with_qos("a/b", "once", QoS::AtLeastOnce);
    h.publish(message.clone(), T0);
    h.publish(with_qos("a/b", "other", QoS::AtLeastOnce), T0);
    h.publish(message, T0);
    assert_eq!(h.queue_of("p"), ["once", "other"]);
    assert_eq!(h.counters().duplicates_ignored, 1);
}

#[test]
fn a_new_process_of_a_gateway_ends_the_sessions_of_the_old_one() {
    let mut h = Harness::new();
    listen(&mut h, "last/+");
    h.claim(GW1, with_will(claim("t", true, 0), "last/t", "t-bye", 0), T0);
    h.claim(GW1, with_will(claim("p", true, 3600), "last/p", "p-bye", 0), T0);
    // The router never saw the old process's link end: the new one's first
    // link lists nothing.
    let effects = reattach(&mut h, GW1, Vec::new(), after_s(1));
    let mut wills = deliveries(&effects);
    wills.sort();
    assert_eq!(wills, [(GW2, "p-bye".to_owned()), (GW2, "t-bye".to_owned())]);
    assert!(h.state.session(&key("t")).is_none());
    assert_eq!(h.state.session(&key("p")).map(|r| r.owner), Some(None), "persistent: offline, kept");
}

#[test]
fn a_replaced_link_keeps_what_it_lists_and_ends_the_rest() {
    let mut h = Harness::new();
    listen(&mut h, "last/+");
    let a = h.claim(GW1, with_will(claim("a", true, 0), "last/a", "a-bye", 0), T0).0.epoch;
    h.claim(GW1, with_will(claim("b", true, 0), "last/b", "b-bye", 0), T0);
    let first = Uplink::Reattach { sessions: vec![held("a", a, 0, None)], last: false };
    assert_eq!(h.apply(GW1, first, after_s(1)), []);
    let effects = reattach(&mut h, GW1, Vec::new(), after_s(1));
    assert_eq!(deliveries(&effects), [(GW2, "b-bye".to_owned())]);
    assert_eq!(h.state.session(&key("a")).map(|r| (r.owner, r.epoch)), Some((Some(GW1), a)));
}

#[test]
fn a_session_does_not_expire_while_its_gateway_may_still_come_back() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "short", 2);
    unlink(&mut h, GW1, T0);
    let (_, next) = h.tick(after_s(3));
    assert!(h.state.session(&key("short")).is_some(), "a 2 s expiry waits for the {LEASE_S} s lease");
    assert_eq!(next, Some(after_s(LEASE_S)));
    let effects = reattach(&mut h, GW1, vec![held("short", epoch, 2, None)], after_s(LEASE_S - 1));
    assert_eq!(revoked(&effects), [], "taken back, not refused");
    assert_eq!(h.state.session(&key("short")).and_then(|r| r.owner), Some(GW1));
}
