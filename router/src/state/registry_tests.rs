//! Tests of the registry's changes as its external store takes them: each
//! change of who holds a session, as the session is when taken.

use super::*;
use crate::state::{Holder, RegistryEntry};
use herald_core::{ShardGenerations, ShardId};
use herald_proto::seam::Reattach;

fn changes(h: &mut Harness) -> HashMap<String, Option<Holder>> {
    h.state
        .take_registry_changes()
        .into_iter()
        .map(|RegistryEntry { session, held }| (session.client.to_string(), held))
        .collect()
}

#[test]
fn only_changes_of_ownership_are_taken_and_only_when_tracked() {
    let mut h = Harness::new();
    h.connect(GW1, "untracked", 0);
    h.state.track_registry();
    assert!(changes(&mut h).is_empty(), "nothing before tracking");

    let epoch = h.connect(GW1, "a", 0);
    let persistent = h.connect(GW2, "p", 60);
    let taken = changes(&mut h);
    let holder = |gateway, epoch, expiry_seconds| Some(Holder { gateway, epoch, since: T0, expiry_seconds });
    assert_eq!(taken["a"], holder(Some(GW1), epoch, 0));
    assert_eq!(taken["p"], holder(Some(GW2), persistent, 60));
    assert_eq!(taken.len(), 2);
    assert!(changes(&mut h).is_empty(), "taken once");

    // A subscription or a publish changes no ownership.
    h.subscribe(GW1, "a", epoch, vec![(subscription("t", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("subscribed");
    h.publish(plain("t", "m1"), T0);
    assert!(changes(&mut h).is_empty());

    // A takeover: the newest epoch, on the new gateway.
    let (grant, _) = h.claim(GW2, claim("a", true, 0), after_ms(5));
    let taken = changes(&mut h);
    assert_eq!(taken["a"].map(|held| (held.gateway, held.epoch)), Some((Some(GW2), grant.epoch)));

    // A transient session ends: nothing to keep. A persistent one goes offline.
    h.release(GW2, release("a", grant.epoch, 0, false), after_ms(10));
    h.release(GW2, release("p", persistent, 60, false), after_ms(10));
    let taken = changes(&mut h);
    assert_eq!(taken["a"], None);
    assert_eq!(taken["p"].map(|held| (held.gateway, held.since)), Some((None, after_ms(10))));

    // A stale release changes nothing.
    h.release(GW1, release("a", epoch, 0, false), after_ms(11));
    assert!(changes(&mut h).is_empty());

    // The offline session expires.
    h.tick(after_s(61));
    assert_eq!(changes(&mut h)["p"], None);
}

#[test]
fn the_snapshot_holds_every_session_and_covers_what_was_marked() {
    let mut h = Harness::new();
    h.state.track_registry();
    let a = h.connect(GW1, "a", 0);
    let b = h.connect(GW2, "b", 60);
    let mut snapshot: Vec<(String, Option<Epoch>)> = h
        .state
        .registry_snapshot()
        .into_iter()
        .map(|e| (e.session.client.to_string(), e.held.map(|held| held.epoch)))
        .collect();
    snapshot.sort();
    assert_eq!(snapshot, [("a".to_owned(), Some(a)), ("b".to_owned(), Some(b))]);
    assert!(changes(&mut h).is_empty(), "the snapshot covers the marked changes");
    assert_eq!(h.state.generation(), GENERATION);
}

/// A client id whose session is on `shard` (or, `not`, on another shard).
fn client_on(shard: ShardId, not: bool, taken: &[&str]) -> String {
    (0..)
        .map(|i| format!("c{i}"))
        .find(|c| (ShardId::of(&key(c)) == shard) != not && !taken.contains(&c.as_str()))
        .expect("a client id")
}

#[test]
fn each_session_is_granted_epochs_of_its_own_shards_generation_and_fenced_by_it() {
    // The shard of "a" moved here at generation 9; every other shard is at 4.
    let moved = ShardId::of(&key("a"));
    let mut generations = vec![4; usize::from(herald_core::REGISTRY_SHARDS)];
    generations[moved.index()] = 9;
    let generations = ShardGenerations::from_table(generations);
    let mut h = Harness { state: RouterState::with_generations(RouterConfig::default(), generations) };
    let kept = client_on(moved, true, &[]);
    assert_eq!(h.connect(GW1, "a", 0).generation, 9);
    assert_eq!(h.connect(GW1, &kept, 0).generation, 4);
    assert_eq!(h.state.generation(), 9, "the registry's fence: its highest generation");

    // A gateway links again holding two transient sessions this router never
    // knew, both at epoch 5.1: one from before its shard moved here (5 < 9),
    // which it adopts; one from a generation its shard never had (5 > 4),
    // which it revokes.
    let from_before = client_on(moved, false, &["a"]);
    let from_nowhere = client_on(moved, true, &[&kept]);
    let held = |client: &str| Reattach {
        session: key(client),
        epoch: Epoch::new(5, 1),
        expiry_seconds: 0,
        will: None,
    };
    let effects = h.apply(
        GW2,
        Uplink::Reattach { sessions: vec![held(&from_before), held(&from_nowhere)], last: true },
        T0,
    );
    assert_eq!(h.state.session(&key(&from_before)).and_then(|r| r.owner), Some(GW2));
    assert_eq!(effects, [(GW2, Downlink::Revoked { session: key(&from_nowhere), epoch: Epoch::new(5, 1) })]);
    assert!(h.state.session(&key(&from_nowhere)).is_none());
}

#[test]
fn a_claim_is_taken_with_the_epoch_its_shards_owner_granted_unless_the_session_has_seen_past_it() {
    let mut h = Harness::new();
    let granted = |client: &str, epoch: Epoch| Claim { granted: Some(epoch), ..claim(client, true, 0) };
    let (grant, _) = h.claim(GW1, granted("a", Epoch::new(GENERATION, 5)), T0);
    assert_eq!(grant.epoch, Epoch::new(GENERATION, 5), "the owner's epoch, not one of the router's");

    // An earlier grant that arrives late, and a grant of an owner that held
    // the shard before this generation: refused, the session unchanged.
    let refused = |h: &mut Harness, gateway, claim: Claim| {
        let effects = h.apply(gateway, Uplink::Claim(claim), T0);
        assert_eq!(
            effects,
            [(gateway, Downlink::Claimed { request: CLAIM, result: Err(ErrorCode::StaleEpoch) })]
        );
    };
    refused(&mut h, GW2, granted("a", Epoch::new(GENERATION, 4)));
    refused(&mut h, GW2, granted("b", Epoch::new(GENERATION - 1, 9)));
    assert_eq!(h.state.session(&key("a")).map(|r| (r.owner, r.epoch)), Some((Some(GW1), grant.epoch)));
    assert!(h.state.session(&key("b")).is_none());
    assert_eq!(h.counters().stale_epoch_refused, 2);

    // A later grant takes the session over.
    let (later, effects) = h.claim(GW2, granted("a", Epoch::new(GENERATION, 8)), T0);
    assert_eq!(later.epoch, Epoch::new(GENERATION, 8));
    assert!(effects.contains(&(GW1, Downlink::Revoked { session: key("a"), epoch: grant.epoch })));
    // A gateway of an earlier version claims without a grant: the router's
    // own epoch is above every grant it took, so epochs never go backwards.
    let (own, _) = h.claim(GW1, claim("a", true, 0), T0);
    assert!(own.epoch > later.epoch, "{} after {}", own.epoch, later.epoch);

    // The shard of "c" moves (a later generation): a grant its old owner
    // made meanwhile is refused, one of the new owner's taken.
    let moved = ShardId::of(&key("c"));
    let mut table = vec![GENERATION; usize::from(herald_core::REGISTRY_SHARDS)];
    table[moved.index()] = GENERATION + 1;
    h.state.follow_shard_table(ShardGenerations::from_table(table));
    refused(&mut h, GW2, granted("c", Epoch::new(GENERATION, 99)));
    let (new_owner, _) = h.claim(GW2, granted("c", Epoch::new(GENERATION + 1, 1)), T0);
    assert_eq!(new_owner.epoch, Epoch::new(GENERATION + 1, 1));
}
