//! Scenario tests of a registry shard owner: claims, releases, wills,
//! leases and the rebuild of a shard taken here, from the gateways' lists.

use super::*;
use bytes::Bytes;
use herald_core::{AppId, ClientId, QoS, REGISTRY_SHARDS, Topic};
use herald_proto::Message;
use std::sync::Arc;

const ME: u64 = 1;
const GW1: NodeId = NodeId(11);
const GW2: NodeId = NodeId(12);
const LEASE_MS: u64 = 15_000;

fn at(ms: u64) -> UnixMillis {
    UnixMillis(1_000_000 + ms)
}

fn key(client: &str) -> SessionKey {
    SessionKey::new(AppId::default_app(), ClientId::new(client.to_owned()).expect("client id"))
}

/// A QoS 1 will on `wills/{client}`.
pub(crate) fn will(client: &str) -> Box<Will> {
    Box::new(Will {
        message: Arc::new(Message {
            id: herald_core::MessageId(1),
            app: AppId::default_app(),
            topic: Topic::new(format!("wills/{client}")).expect("topic"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            created_at: at(0),
            expires_at: None,
            origin: None,
            properties: None,
            trace: None,
        }),
        delay_seconds: 0,
        expiry_seconds: None,
    })
}

fn claim(client: &str, clean_start: bool, expiry_seconds: u32, with_will: bool) -> Claim {
    Claim {
        request: 1,
        session: key(client),
        clean_start,
        expiry_seconds,
        will: with_will.then(|| will(client)),
        granted: None,
    }
}

fn release(client: &str, epoch: Epoch, expiry_seconds: u32, publish_will: bool) -> Release {
    Release { request: 2, session: key(client), epoch, expiry_seconds, publish_will, pending: Vec::new() }
}

fn held(client: &str, epoch: Epoch, expiry_seconds: u32) -> Reattach {
    Reattach { session: key(client), epoch, expiry_seconds, will: Some(will(client)) }
}

fn revoke(gateway: NodeId, client: &str, epoch: Epoch) -> OwnerEffect {
    OwnerEffect::Revoke { gateway, session: key(client), epoch }
}

fn will_of(client: &str) -> OwnerEffect {
    OwnerEffect::PublishWill { session: key(client), will: will(client) }
}

/// The owner of a router whose process has seen a table (router 2 owning
/// every shard): what the table gives it from now on, it serves.
fn started() -> ShardOwner {
    let mut owner = ShardOwner::new(ME, LEASE_MS);
    owner.set_table(&[2; REGISTRY_SHARDS as usize], &ShardGenerations::uniform(1), &BTreeSet::new(), at(0));
    owner
}

/// An owner of every shard at `generation`, with `known` gateways linked
/// and done listing.
fn owner_of_all(generation: u64, known: &[NodeId]) -> ShardOwner {
    let mut owner = started();
    let known: BTreeSet<NodeId> = known.iter().copied().collect();
    owner.set_table(&[ME; REGISTRY_SHARDS as usize], &ShardGenerations::uniform(generation), &known, at(0));
    for gateway in &known {
        owner.gateway_linked(*gateway);
        assert_eq!(owner.relist(*gateway, Vec::new(), true, at(0), &mut Vec::new()), []);
    }
    owner
}

/// Runs one call; returns what it returned and the effects it produced.
fn run<T>(f: impl FnOnce(&mut Vec<OwnerEffect>) -> T) -> (T, Vec<OwnerEffect>) {
    let mut effects = Vec::new();
    let value = f(&mut effects);
    (value, effects)
}

#[test]
fn a_claim_gets_an_epoch_of_its_shards_generation_and_a_second_claim_revokes_the_first() {
    let mut owner = owner_of_all(3, &[GW1, GW2]);
    let (first, effects) = run(|out| owner.claim(GW1, &claim("a", true, 0, false), false, at(0), out));
    let first = first.expect("granted");
    assert_eq!(first, Granted { epoch: Epoch::new(3, 1), persistent: false });
    assert_eq!(effects, []);
    assert_eq!(owner.locate(&key("a")), Located::Online { gateway: GW1, epoch: first.epoch, since: at(0) });

    let (second, effects) = run(|out| owner.claim(GW2, &claim("a", true, 0, false), false, at(0), out));
    let second = second.expect("granted").epoch;
    assert!(second > first.epoch);
    assert_eq!(effects, [revoke(GW1, "a", first.epoch)], "the old connection ends");

    // The old connection's release is stale: it ends nothing.
    let (stale, effects) = run(|out| owner.release(GW1, &release("a", first.epoch, 0, true), at(0), out));
    assert_eq!((stale, effects), (Err(Refused::Stale), vec![]));
    assert_eq!(owner.locate(&key("a")), Located::Online { gateway: GW2, epoch: second, since: at(0) });
    let (ended, _) = run(|out| owner.release(GW2, &release("a", second, 0, false), at(0), out));
    assert_eq!(ended, Ok(()));
    assert_eq!(owner.locate(&key("a")), Located::Unknown);
    assert_eq!(owner.sessions(), 0);
}

#[test]
fn a_session_of_a_shard_owned_elsewhere_is_refused_with_its_owner() {
    let mut owners = vec![ME; REGISTRY_SHARDS as usize];
    let elsewhere = ShardId::of(&key("x"));
    owners[elsewhere.index()] = 2;
    let mut owner = started();
    owner.set_table(&owners, &ShardGenerations::uniform(1), &BTreeSet::new(), at(0));
    assert_eq!(owner.owned(), usize::from(REGISTRY_SHARDS) - 1);
    let (refused, _) = run(|out| owner.claim(GW1, &claim("x", true, 0, false), false, at(0), out));
    assert_eq!(refused, Err(Refused::NotOwner { owner: 2 }));
    assert_eq!(owner.locate(&key("x")), Located::NotOwner { owner: 2 });
    let listed = owner.relist(GW1, vec![held("x", Epoch::new(1, 1), 0)], true, at(0), &mut Vec::new());
    assert_eq!(listed, [(key("x"), 2)], "listed again at its owner");
}

#[test]
fn a_transient_sessions_will_is_published_here_and_a_persistent_ones_is_left_to_the_leader() {
    let mut owner = owner_of_all(1, &[GW1, GW2]);
    // Ended abnormally: its will goes out; a normal end drops it.
    let a = owner.claim(GW1, &claim("a", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    let (_, effects) = run(|out| owner.release(GW1, &release("a", a.epoch, 0, true), at(0), out));
    assert_eq!(effects, [will_of("a")]);
    let b = owner.claim(GW1, &claim("b", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    let (_, effects) = run(|out| owner.release(GW1, &release("b", b.epoch, 0, false), at(0), out));
    assert_eq!(effects, []);
    // Taken over: the transient session ends, with its will [MQTT-3.1.3-9].
    let c = owner.claim(GW1, &claim("c", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    owner.settled(GW1, &key("c"), c.epoch, true, &mut Vec::new()).expect("accepted");
    let (_, effects) = run(|out| owner.claim(GW2, &claim("c", true, 0, false), false, at(0), out));
    assert_eq!(effects, [revoke(GW1, "c", c.epoch), will_of("c")]);

    // Persistent: attached at the leader, which has its will; offline here.
    let p = owner.claim(GW1, &claim("p", false, 600, true), false, at(0), &mut Vec::new()).expect("granted");
    assert!(p.persistent);
    let (_, effects) = run(|out| owner.release(GW1, &release("p", p.epoch, 600, true), at(0), out));
    assert_eq!(effects, []);
    assert_eq!(owner.locate(&key("p")), Located::Offline);
    // A clean start without expiry ends it: still attached at the leader
    // (which ends the old one), transient here from now on.
    let q = owner.claim(GW2, &claim("p", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    assert!(q.persistent, "the leader must end the persistent session");
    let (_, effects) = run(|out| owner.release(GW2, &release("p", q.epoch, 0, true), at(0), out));
    assert_eq!(effects, [will_of("p")]);
    // What only the replicated state knows is persistent is attached too.
    let r = owner.claim(GW1, &claim("r", true, 0, false), true, at(0), &mut Vec::new()).expect("granted");
    assert!(r.persistent);
    // The leader expired an offline session: forgotten here.
    let s = owner.claim(GW1, &claim("s", false, 60, false), false, at(0), &mut Vec::new()).expect("granted");
    owner.release(GW1, &release("s", s.epoch, 60, false), at(0), &mut Vec::new()).expect("released");
    owner.forget_offline(&key("s"), at(60_000));
    assert_eq!(owner.locate(&key("s")), Located::Unknown);
}

/// Two connections of one client id race: the first claim is taken over by
/// the second before its gateway knows whether the leader accepts it. Its
/// will waits for that: published if the connection was accepted (it got
/// CONNACK, then was taken over), not if the claim was given up (the
/// gateway claims again, or gives the connection up).
#[test]
fn the_will_of_a_claim_taken_over_before_it_was_accepted_waits_for_its_fate() {
    let mut owner = owner_of_all(1, &[GW1, GW2]);
    let first = owner.claim(GW1, &claim("a", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    let (second, effects) = run(|out| owner.claim(GW2, &claim("a", true, 0, true), false, at(0), out));
    let second = second.expect("granted");
    assert_eq!(effects, [revoke(GW1, "a", first.epoch)], "no will yet");
    assert_eq!(owner.pending_wills(), 1);
    // Only its own gateway settles it.
    let (wrong, effects) = run(|out| owner.settled(GW2, &key("a"), first.epoch, true, out));
    assert_eq!((wrong, effects), (Err(Refused::Stale), vec![]));
    // The leader accepted the first connection: taken over, its will goes.
    let (_, effects) = run(|out| owner.settled(GW1, &key("a"), first.epoch, true, out));
    assert_eq!(effects, [will_of("a")]);
    assert_eq!(owner.pending_wills(), 0);

    // The second is accepted; a third claim takes it over: its will at once.
    owner.settled(GW2, &key("a"), second.epoch, true, &mut Vec::new()).expect("accepted");
    let (third, effects) = run(|out| owner.claim(GW1, &claim("a", true, 0, true), false, at(0), out));
    let third = third.expect("granted");
    assert_eq!(effects, [revoke(GW2, "a", second.epoch), will_of("a")]);
    // A fourth takes the third before it is accepted; the third is given
    // up (the leader refused it): no will, ever.
    owner.claim(GW2, &claim("a", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    let (_, effects) = run(|out| owner.settled(GW1, &key("a"), third.epoch, false, out));
    assert_eq!(effects, []);
    let (_, effects) = run(|out| owner.tick(at(PENDING_WILL_PATIENCE_MS + 1), out));
    assert_eq!(effects, []);

    // A claim given up while it is still the latest ends without a will.
    let b = owner.claim(GW1, &claim("b", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    let (_, effects) = run(|out| owner.settled(GW1, &key("b"), b.epoch, false, out));
    assert_eq!((effects, owner.locate(&key("b"))), (vec![], Located::Unknown));

    // A fate that never comes (the gateway died): published after a while.
    owner.claim(GW1, &claim("c", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    owner.claim(GW2, &claim("c", true, 0, false), false, at(1_000), &mut Vec::new()).expect("granted");
    let (_, effects) = run(|out| owner.tick(at(PENDING_WILL_PATIENCE_MS), out));
    assert_eq!(effects, [], "still waiting");
    let (_, effects) = run(|out| owner.tick(at(PENDING_WILL_PATIENCE_MS + 1_000), out));
    assert_eq!(effects, [will_of("c")]);
}

/// Every shard taken here at generation 5, `known` gateways to list.
fn taken(known: &[NodeId]) -> ShardOwner {
    let mut owner = started();
    let known: BTreeSet<NodeId> = known.iter().copied().collect();
    owner.set_table(&[ME; REGISTRY_SHARDS as usize], &ShardGenerations::uniform(5), &known, at(0));
    owner
}

#[test]
fn a_shard_taken_here_is_rebuilt_from_what_the_gateways_list() {
    let mut owner = taken(&[GW1, GW2]);
    assert_eq!(owner.locate(&key("s1")), Located::Rebuilding, "GW1 and GW2 may hold it");
    owner.gateway_linked(GW1);
    let old = Epoch::new(3, 7);
    let (_, effects) = run(|out| {
        owner.relist(GW1, vec![held("s1", old, 0), held("s2", Epoch::new(5, 1), 0)], true, at(0), out)
    });
    // s1 was granted before the shard came here: kept with its epoch. s2
    // claims an epoch of this generation that was never granted here.
    assert_eq!(effects, [revoke(GW1, "s2", Epoch::new(5, 1))]);
    assert_eq!(owner.locate(&key("s1")), Located::Online { gateway: GW1, epoch: old, since: at(0) });
    assert_eq!(owner.locate(&key("zz")), Located::Rebuilding, "GW2 has not listed");
    owner.gateway_linked(GW2);
    owner.relist(GW2, Vec::new(), true, at(0), &mut Vec::new());
    assert_eq!(owner.locate(&key("zz")), Located::Unknown, "every gateway listed");
    // s1's will was listed with it: published when its connection ends.
    let (_, effects) = run(|out| owner.release(GW1, &release("s1", old, 0, true), at(0), out));
    assert_eq!(effects, [will_of("s1")]);
}

#[test]
fn a_gateway_frozen_through_the_move_cannot_take_back_a_session_claimed_since() {
    // GW1 held s at 3.4 and froze; the shard came here at generation 5.
    let mut owner = taken(&[GW1, GW2]);
    owner.gateway_linked(GW2);
    owner.relist(GW2, Vec::new(), true, at(0), &mut Vec::new());
    // The client reconnected through GW2 and left again.
    let s = owner.claim(GW2, &claim("s", true, 0, false), false, at(0), &mut Vec::new()).expect("granted");
    owner.release(GW2, &release("s", s.epoch, 0, false), at(0), &mut Vec::new()).expect("released");
    // GW1 thaws and lists what it held: refused, though nobody holds s now.
    // Its connection was taken over by the reconnect, which came before its
    // will was here: the will goes now.
    owner.gateway_linked(GW1);
    let (_, effects) = run(|out| owner.relist(GW1, vec![held("s", Epoch::new(3, 4), 0)], true, at(0), out));
    assert_eq!(effects, [will_of("s"), revoke(GW1, "s", Epoch::new(3, 4))]);
    assert_eq!(owner.locate(&key("s")), Located::Unknown);
    // Listed again (its link opened again before the revocation reached
    // it): refused, the will not published twice.
    owner.gateway_linked(GW1);
    let (_, effects) = run(|out| owner.relist(GW1, vec![held("s", Epoch::new(3, 4), 0)], true, at(0), out));
    assert_eq!(effects, [revoke(GW1, "s", Epoch::new(3, 4))]);
}

#[test]
fn a_gateway_that_lists_after_its_lease_ended_takes_nothing_back() {
    let mut owner = taken(&[GW1]);
    assert_eq!(owner.tick(at(1), &mut Vec::new()), Some(at(LEASE_MS)));
    assert_eq!(owner.tick(at(LEASE_MS), &mut Vec::new()), None);
    assert_eq!(owner.locate(&key("s")), Located::Unknown, "nobody to wait for");
    owner.gateway_linked(GW1);
    let (_, effects) = run(|out| owner.relist(GW1, vec![held("s", Epoch::new(3, 4), 0)], true, at(0), out));
    assert_eq!(effects, [revoke(GW1, "s", Epoch::new(3, 4))]);
}

#[test]
fn a_gateway_whose_link_dropped_keeps_what_it_lists_in_time_and_loses_the_rest() {
    let mut owner = owner_of_all(2, &[GW1]);
    let a = owner.claim(GW1, &claim("a", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    let b = owner.claim(GW1, &claim("b", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    let p = owner.claim(GW1, &claim("p", false, 60, false), false, at(0), &mut Vec::new()).expect("granted");
    for (client, granted) in [("a", a), ("b", b), ("p", p)] {
        owner.settled(GW1, &key(client), granted.epoch, true, &mut Vec::new()).expect("accepted");
    }
    owner.gateway_unlinked(GW1, at(2));
    assert_eq!(
        owner.locate(&key("a")),
        Located::Online { gateway: GW1, epoch: a.epoch, since: at(0) },
        "its lease holds"
    );
    // Back within the lease, holding a (b's and p's connections ended).
    owner.gateway_linked(GW1);
    let (_, effects) = run(|out| owner.relist(GW1, vec![held("a", a.epoch, 0)], true, at(0), out));
    assert_eq!(effects, [will_of("b")], "b ended with its connection: its will");
    assert_eq!(owner.locate(&key("a")), Located::Online { gateway: GW1, epoch: a.epoch, since: at(0) });
    assert_eq!(owner.locate(&key("p")), Located::Offline);

    // Gone for good: at the lease's end its sessions end.
    owner.gateway_unlinked(GW1, at(4));
    assert_eq!(owner.tick(at(5), &mut Vec::new()), Some(at(4 + LEASE_MS)));
    let (_, effects) = run(|out| owner.tick(at(4 + LEASE_MS), out));
    assert_eq!(effects, [will_of("a")]);
    assert_eq!(owner.locate(&key("a")), Located::Unknown);
}

#[test]
fn a_shard_that_moves_away_is_forgotten_and_one_that_comes_back_starts_empty() {
    let mut owner = owner_of_all(1, &[GW1]);
    let a = owner.claim(GW1, &claim("a", true, 0, false), false, at(0), &mut Vec::new()).expect("granted");
    let shard = ShardId::of(&key("a"));
    // A session of a shard that stays here, on the same gateway.
    let stays = (0..).map(|i| format!("k{i}")).find(|c| ShardId::of(&key(c)) != shard).expect("a client id");
    let k = owner.claim(GW1, &claim(&stays, true, 0, false), false, at(0), &mut Vec::new()).expect("granted");
    let mut owners = vec![ME; REGISTRY_SHARDS as usize];
    owners[shard.index()] = 2;
    let mut generations = vec![1; REGISTRY_SHARDS as usize];
    generations[shard.index()] = 2;
    let known: BTreeSet<NodeId> = [GW1].into();
    owner.set_table(&owners, &ShardGenerations::from_table(generations.clone()), &known, at(2));
    assert_eq!(owner.locate(&key("a")), Located::NotOwner { owner: 2 });
    assert_eq!(owner.sessions(), 1, "only the session of the shard that stayed");

    // Back here at generation 3: GW1 gives a back with its epoch of generation 1.
    owners[shard.index()] = ME;
    generations[shard.index()] = 3;
    owner.set_table(&owners, &ShardGenerations::from_table(generations), &known, at(3));
    assert_eq!(owner.locate(&key("a")), Located::Rebuilding);
    let (_, effects) = run(|out| owner.relist(GW1, vec![held("a", a.epoch, 0)], true, at(0), out));
    assert_eq!(effects, []);
    assert_eq!(owner.locate(&key("a")), Located::Online { gateway: GW1, epoch: a.epoch, since: at(0) });
    // Listing the shard that came back ended nothing else the gateway holds.
    assert_eq!(owner.locate(&key(&stays)), Located::Online { gateway: GW1, epoch: k.epoch, since: at(0) });
    let next = owner.claim(GW1, &claim("a", true, 0, false), false, at(0), &mut Vec::new()).expect("granted");
    assert_eq!(next.epoch.generation, 3);
}

#[test]
fn shards_the_first_table_gives_this_router_are_served_only_once_restarted() {
    // A new process: an earlier one may have granted epochs of generation 3
    // for these shards, so it refuses to grant any until they are restarted.
    let mut owner = ShardOwner::new(ME, LEASE_MS);
    let mut owners = [ME; REGISTRY_SHARDS as usize];
    owners[ShardId::of(&key("elsewhere")).index()] = 2;
    owner.set_table(&owners, &ShardGenerations::uniform(3), &BTreeSet::new(), at(0));
    assert_eq!((owner.owned(), owner.inherited()), (0, 63));
    assert_eq!(
        owner.claim(GW1, &claim("a", true, 0, false), false, at(0), &mut Vec::new()),
        Err(Refused::NotOwner { owner: ME })
    );
    // The same table again (another gateway or router changed) serves nothing more.
    owner.set_table(&owners, &ShardGenerations::uniform(3), &BTreeSet::new(), at(2));
    assert_eq!(owner.inherited(), 63);
    // The leader restarts them at generation 4: served from then on.
    owner.set_table(&owners, &ShardGenerations::uniform(4), &BTreeSet::new(), at(3));
    assert_eq!((owner.owned(), owner.inherited()), (63, 0));
    let granted =
        owner.claim(GW1, &claim("a", true, 0, false), false, at(0), &mut Vec::new()).expect("granted");
    assert_eq!(granted.epoch.generation, 4);
}

#[test]
fn a_claim_the_leader_refused_as_stale_comes_back_with_the_counter_jumped_further_each_time() {
    // The leader granted "a" itself at (5, 1000) for a gateway of an earlier
    // version; this owner's counter is far behind.
    let mut owner = owner_of_all(5, &[]);
    let mut out = Vec::new();
    let first = owner.claim(GW1, &claim("a", true, 0, false), false, at(0), &mut out).expect("granted");
    assert_eq!(first.epoch, Epoch::new(5, 1));
    let mut epochs = vec![first.epoch];
    for refusals in 1..=5 {
        owner.jump_counter(refusals);
        epochs.push(
            owner.claim(GW1, &claim("a", true, 0, false), false, at(0), &mut out).expect("granted").epoch,
        );
    }
    // Each retry one step past a jump of 4, 16, 64, 256, 1024: the fifth passes 1000.
    let counters: Vec<u64> = epochs.iter().map(|e| e.counter).collect();
    assert_eq!(counters, [1, 6, 23, 88, 345, 1370]);
    assert!(epochs[5] > Epoch::new(5, 1000));
    // Without refusals, one step.
    owner.jump_counter(0);
    let next = owner.claim(GW1, &claim("a", true, 0, false), false, at(0), &mut out).expect("granted").epoch;
    assert_eq!(next.counter, epochs[5].counter + 1);
}

/// A shard taken here after its old owner was lost with a revocation it
/// had not sent: two gateways list the same session. The newer connection
/// keeps it, whichever lists first; the older one is revoked.
#[test]
fn of_two_gateways_listing_one_session_the_newer_connection_keeps_it() {
    for newer_first in [false, true] {
        let mut owner = taken(&[GW1, GW2]);
        owner.gateway_linked(GW1);
        owner.gateway_linked(GW2);
        let (older, newer) = (Epoch::new(3, 4), Epoch::new(3, 9));
        let mut effects = Vec::new();
        let lists = [(GW1, older), (GW2, newer)];
        let order = if newer_first { [lists[1], lists[0]] } else { lists };
        for (gateway, epoch) in order {
            owner.relist(gateway, vec![held("s", epoch, 0)], true, at(0), &mut effects);
        }
        assert_eq!(effects, [revoke(GW1, "s", older)], "newer first: {newer_first}");
        assert_eq!(owner.locate(&key("s")), Located::Online { gateway: GW2, epoch: newer, since: at(0) });
    }
}

/// A gateway whose link opened again lists what it holds; a claim still
/// waiting for the leader is not held yet, so not listed, and is not ended
/// by the end of the list: its will waits for the connection's real end.
#[test]
fn the_end_of_a_list_does_not_end_a_claim_still_waiting_for_the_leader() {
    let mut owner = owner_of_all(1, &[GW1]);
    let waiting =
        owner.claim(GW1, &claim("w", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    owner.gateway_unlinked(GW1, at(1));
    owner.gateway_linked(GW1);
    let (_, effects) = run(|out| owner.relist(GW1, Vec::new(), true, at(0), out));
    assert_eq!(effects, [], "no will while its connection may be accepted");
    owner.settled(GW1, &key("w"), waiting.epoch, true, &mut Vec::new()).expect("accepted");
    let (_, effects) = run(|out| owner.release(GW1, &release("w", waiting.epoch, 0, true), at(0), out));
    assert_eq!(effects, [will_of("w")], "at its real end");
    // An accepted session not listed again ended with its connection.
    let gone = owner.claim(GW1, &claim("g", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    owner.settled(GW1, &key("g"), gone.epoch, true, &mut Vec::new()).expect("accepted");
    owner.gateway_unlinked(GW1, at(2));
    owner.gateway_linked(GW1);
    let (_, effects) = run(|out| owner.relist(GW1, Vec::new(), true, at(0), out));
    assert_eq!(effects, [will_of("g")]);
    // A claim without a will has nothing to settle: not listed again, it
    // ended with its connection.
    owner.claim(GW1, &claim("n", true, 0, false), false, at(3), &mut Vec::new()).expect("granted");
    owner.gateway_unlinked(GW1, at(4));
    owner.gateway_linked(GW1);
    owner.relist(GW1, Vec::new(), true, at(0), &mut Vec::new());
    assert_eq!(owner.locate(&key("n")), Located::Unknown);
    // One never settled was given up (its settling was lost with a link):
    // it ends, without its will, once it is older than any claim waits.
    let lost = owner.claim(GW1, &claim("l", true, 0, true), false, at(5), &mut Vec::new()).expect("granted");
    let (_, effects) = run(|out| owner.tick(at(5 + PENDING_WILL_PATIENCE_MS - 1), out));
    assert_eq!(
        (effects, owner.locate(&key("l"))),
        (vec![], Located::Online { gateway: GW1, epoch: lost.epoch, since: at(5) })
    );
    let (_, effects) = run(|out| owner.tick(at(5 + PENDING_WILL_PATIENCE_MS), out));
    assert_eq!((effects, owner.locate(&key("l"))), (vec![], Located::Unknown));
}

/// The shard of a will waiting for its claim's fate moves away: the
/// gateway tells the owner that granted the claim, which still settles it.
#[test]
fn a_will_waiting_for_its_claims_fate_is_settled_after_its_shard_moved_away() {
    let mut owner = owner_of_all(1, &[GW1, GW2]);
    let first = owner.claim(GW1, &claim("a", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    owner.claim(GW2, &claim("a", true, 0, false), false, at(0), &mut Vec::new()).expect("granted");
    owner.set_table(&[2; REGISTRY_SHARDS as usize], &ShardGenerations::uniform(2), &BTreeSet::new(), at(1));
    assert_eq!(owner.owned(), 0);
    let (_, effects) = run(|out| owner.settled(GW1, &key("a"), first.epoch, false, out));
    assert_eq!(effects, [], "given up: no will");
    assert_eq!(owner.pending_wills(), 0);
}

/// A connection that claims again (its first grant was lost with a link,
/// or its "given up" was) takes over its own claim without a will; another
/// connection of the same gateway taking it over holds the will as usual.
#[test]
fn a_connection_claiming_again_takes_over_its_own_claim_without_a_will() {
    let mut owner = owner_of_all(1, &[GW1]);
    owner.claim_of(GW1, 7, &claim("a", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    let (again, effects) = run(|out| owner.claim_of(GW1, 7, &claim("a", true, 0, true), false, at(0), out));
    again.expect("granted");
    assert_eq!(owner.pending_wills(), 0, "{effects:?}");
    let (_, effects) = run(|out| owner.tick(at(PENDING_WILL_PATIENCE_MS + 1), out));
    assert_eq!(effects, [], "no will of the first grant, ever");
    // Accepted; another connection of the gateway takes it over.
    let mut owner = owner_of_all(1, &[GW1]);
    let first =
        owner.claim_of(GW1, 7, &claim("b", true, 0, true), false, at(0), &mut Vec::new()).expect("granted");
    owner.settled(GW1, &key("b"), first.epoch, true, &mut Vec::new()).expect("accepted");
    let (_, effects) = run(|out| owner.claim_of(GW1, 8, &claim("b", true, 0, true), false, at(0), out));
    assert_eq!(effects, [revoke(GW1, "b", first.epoch), will_of("b")]);
}

#[test]
fn online_sessions_are_counted_per_gateway_with_linked_gateways_holding_none() {
    const GW3: NodeId = NodeId(13);
    let mut owner = owner_of_all(1, &[GW1, GW2, GW3]);
    for (gateway, client, expiry) in [(GW1, "a", 0), (GW1, "b", 0), (GW2, "c", 0), (GW2, "d", 60)] {
        let (granted, _) =
            run(|out| owner.claim(gateway, &claim(client, true, expiry, false), false, at(0), out));
        granted.expect("granted");
    }
    assert_eq!(owner.online_per_gateway(), [(11, 2), (12, 2), (13, 0)]);
    // A persistent session offline is held by no gateway; a transient one
    // released is gone.
    let Located::Online { epoch: d, .. } = owner.locate(&key("d")) else { panic!("d online") };
    assert_eq!(run(|out| owner.release(GW2, &release("d", d, 60, false), at(0), out)).0, Ok(()));
    let Located::Online { epoch: a, .. } = owner.locate(&key("a")) else { panic!("a online") };
    assert_eq!(run(|out| owner.release(GW1, &release("a", a, 0, false), at(0), out)).0, Ok(()));
    assert_eq!(owner.locate(&key("d")), Located::Offline);
    assert_eq!(owner.online_per_gateway(), [(11, 1), (12, 1), (13, 0)]);
    // A gateway unlinked and holding nothing is not listed.
    owner.gateway_unlinked(GW3, at(1));
    assert_eq!(owner.online_per_gateway(), [(11, 1), (12, 1)]);
}

#[test]
fn the_registry_changes_are_each_sessions_latest_state_in_the_shards_owned_here() {
    use crate::state::{Holder, RegistryEntry};
    let mut owner = owner_of_all(1, &[GW1]);
    owner.track_registry();
    let (a, _) = run(|out| owner.claim(GW1, &claim("a", true, 0, false), false, at(5), out));
    let (d, _) = run(|out| owner.claim(GW1, &claim("d", true, 60, false), false, at(5), out));
    let (a, d) = (a.expect("granted").epoch, d.expect("granted").epoch);
    let sorted = |mut entries: Vec<RegistryEntry>| {
        entries.sort_by(|x, y| x.session.client.cmp(&y.session.client));
        entries
    };
    let entry = |client: &str, gateway, epoch, since, expiry_seconds| RegistryEntry {
        session: key(client),
        held: Some(Holder { gateway, epoch, since, expiry_seconds }),
    };
    assert_eq!(
        sorted(owner.take_registry_changes()),
        [entry("a", Some(GW1), a, at(5), 0), entry("d", Some(GW1), d, at(5), 60)]
    );
    assert_eq!(owner.take_registry_changes(), [], "taken once");
    // The transient session ends, the persistent one goes offline.
    assert_eq!(run(|out| owner.release(GW1, &release("a", a, 0, false), at(9), out)).0, Ok(()));
    assert_eq!(run(|out| owner.release(GW1, &release("d", d, 60, false), at(9), out)).0, Ok(()));
    assert_eq!(
        sorted(owner.take_registry_changes()),
        [RegistryEntry { session: key("a"), held: None }, entry("d", None, d, at(9), 60)]
    );
    assert_eq!(owner.registry_snapshot(), [entry("d", None, d, at(9), 60)]);
    // Offline since at(9): swept only once that is past.
    assert_eq!(owner.offline_sessions(at(9)), []);
    assert_eq!(owner.offline_sessions(at(10)), [key("d")]);
    assert!(owner.knows(&key("d")) && !owner.knows(&key("a")));
    owner.forget_offline(&key("d"), at(9));
    assert!(owner.knows(&key("d")), "offline since at(9): not before it");
    owner.forget_offline(&key("d"), at(10));
    assert_eq!(owner.take_registry_changes(), [RegistryEntry { session: key("d"), held: None }]);
}

#[test]
fn a_shard_taken_here_is_rebuilding_until_its_gateways_list_and_only_owned_shards_have_generations() {
    let mut owners = vec![2; REGISTRY_SHARDS as usize];
    let mine = ShardId::of(&key("x"));
    owners[mine.index()] = ME;
    let mut owner = started();
    owner.set_table(&owners, &ShardGenerations::uniform(7), &[GW1].into(), at(0));
    assert!(owner.rebuilding(), "waiting for GW1's list");
    let generations = owner.owned_generations();
    assert_eq!(generations.get(mine), 7);
    assert_eq!(
        ShardId::all().filter(|s| generations.get(*s) > 0).count(),
        1,
        "the others are not written here"
    );
    owner.gateway_linked(GW1);
    owner.relist(GW1, Vec::new(), true, at(1), &mut Vec::new());
    assert!(!owner.rebuilding());
}
