//! Tests of push-API sends to devices: found through the session registry,
//! each device's copy on its own per-device topic.

use super::*;
use herald_proto::seam::{Push, PushOutcome};

const PUSH: u64 = 9;

fn push(devices: &[&str], name: &'static str, store_offline: bool) -> Uplink {
    Uplink::Push(Push {
        request: PUSH,
        message: plain("$push", name),
        devices: devices.iter().map(|d| client_id(d)).collect(),
        store_offline,
    })
}

/// Applies a push; returns its outcomes and the other effects.
fn pushed(
    h: &mut Harness,
    gateway: NodeId,
    item: Uplink,
    now: UnixMillis,
) -> (Vec<PushOutcome>, Vec<Effect>) {
    let mut effects = h.apply(gateway, item, now);
    let at = effects
        .iter()
        .position(|(to, item)| *to == gateway && matches!(item, Downlink::Pushed { request: PUSH, .. }))
        .expect("a push is answered");
    match effects.remove(at).1 {
        Downlink::Pushed { result: Ok(outcomes), .. } => (outcomes, effects),
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
    let item =
        Uplink::Push(Push { request: PUSH, message, devices: vec![client_id("d1")], store_offline: true });
    let (outcomes, effects) = pushed(&mut h, GW1, item, T0);
    assert_eq!((outcomes, topics(&effects)), (vec![PushOutcome::Unreachable], vec![]));
    assert_eq!(h.counters().dropped_expired, 1);
}
