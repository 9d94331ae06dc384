//! Scenario tests of the router state machine: uplink items and time in;
//! downlink effects, counters and session records out.
//!
//! Messages carry their name as payload, so assertions read as lists of
//! names (`["m1", "m2"]`) addressed to gateways.

use super::{Effect, RouterConfig, RouterCounters, RouterState};
use bytes::Bytes;
use herald_core::{
    AppId, ClientId, Epoch, ErrorCode, MessageId, NodeId, QoS, SessionKey, Topic, TopicFilter, UnixMillis,
};
use herald_proto::Message;
use herald_proto::journal::Fact;
use herald_proto::seam::{
    Claim, ClaimGrant, Downlink, Progress, Publish, QueuedMessage, Release, RetainedLookup, Subscription,
    Uplink, Will,
};
use std::collections::HashMap;
use std::sync::Arc;

const T0: UnixMillis = UnixMillis(1_000_000);
const GENERATION: u64 = 7;
const GW1: NodeId = NodeId(1);
const GW2: NodeId = NodeId(2);
const GW3: NodeId = NodeId(3);

// Request ids, one per kind of request, so a reply is found by its id.
const CLAIM: u64 = 1;
const SUBSCRIBE: u64 = 2;
const UNSUBSCRIBE: u64 = 3;
const PUBLISH: u64 = 4;

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

fn app() -> AppId {
    AppId::default_app()
}

fn app_named(name: &str) -> AppId {
    AppId::new(name.to_owned()).expect("valid app id")
}

fn key(client: &str) -> SessionKey {
    SessionKey::new(app(), client_id(client))
}

fn client_id(client: &str) -> ClientId {
    ClientId::new(client.to_owned()).expect("valid client id")
}

fn filter(filter: &str) -> TopicFilter {
    TopicFilter::new(filter.to_owned()).expect("valid topic filter")
}

fn after_ms(ms: u64) -> UnixMillis {
    UnixMillis(T0.0 + ms)
}

fn after_s(seconds: u32) -> UnixMillis {
    T0.plus_seconds(seconds)
}

/// Returns a QoS 1 message in the default app, named by its payload.
/// A fresh message id: every test message is a distinct message.
fn next_message_id() -> MessageId {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    MessageId(u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
}

fn message(topic: &str, name: &'static str) -> Message {
    Message {
        id: next_message_id(),
        app: app(),
        topic: Topic::new(topic.to_owned()).expect("valid topic"),
        payload: Bytes::from_static(name.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        created_at: T0,
        expires_at: None,
        origin: None,
        properties: None,
        trace: None,
    }
}

fn shared(message: Message) -> Arc<Message> {
    Arc::new(message)
}

fn plain(topic: &str, name: &'static str) -> Arc<Message> {
    shared(message(topic, name))
}

fn with_qos(topic: &str, name: &'static str, qos: QoS) -> Arc<Message> {
    shared(Message { qos, ..message(topic, name) })
}

fn retained(topic: &str, name: &'static str) -> Arc<Message> {
    shared(Message { retain: true, ..message(topic, name) })
}

fn subscription(filter_text: &str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter(filter_text),
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        identifier: None,
    }
}

fn claim(client: &str, clean_start: bool, expiry_seconds: u32) -> Claim {
    Claim { request: CLAIM, session: key(client), clean_start, expiry_seconds, will: None, granted: None }
}

/// Returns `claim` with a will on `topic` named `name`, delayed `delay_seconds`.
fn with_will(claim: Claim, topic: &str, name: &'static str, delay_seconds: u32) -> Claim {
    let will = Will { message: plain(topic, name), delay_seconds, expiry_seconds: None };
    Claim { will: Some(Box::new(will)), ..claim }
}

fn release(client: &str, epoch: Epoch, expiry_seconds: u32, publish_will: bool) -> Release {
    Release { request: 77, session: key(client), epoch, expiry_seconds, publish_will, pending: Vec::new() }
}

fn pending(message: Arc<Message>, redelivery: bool) -> QueuedMessage {
    let progress = if redelivery { Progress::Sent(1) } else { Progress::Unsent };
    QueuedMessage { qos: message.qos, message, subscription_ids: Vec::new(), progress, shared: None }
}

// ---------------------------------------------------------------------------
// Readers of effects and queues
// ---------------------------------------------------------------------------

fn name_of(message: &Message) -> String {
    String::from_utf8(message.payload.to_vec()).expect("test payloads are UTF-8")
}

/// Returns `(gateway, message name)` of every `Deliver`, in order.
fn deliveries(effects: &[Effect]) -> Vec<(NodeId, String)> {
    effects
        .iter()
        .filter_map(|(gateway, item)| match item {
            Downlink::Deliver(message) => Some((*gateway, name_of(message))),
            _ => None,
        })
        .collect()
}

fn shared_deliveries(effects: &[Effect]) -> Vec<(NodeId, String, String)> {
    effects
        .iter()
        .filter_map(|(gateway, item)| match item {
            Downlink::DeliverShared { filter, message } => {
                Some((*gateway, filter.to_string(), name_of(message)))
            }
            _ => None,
        })
        .collect()
}

fn names(queued: &[QueuedMessage]) -> Vec<String> {
    queued.iter().map(|q| name_of(&q.message)).collect()
}

fn retained_names(found: &[(usize, Arc<Message>)]) -> Vec<(usize, String)> {
    found.iter().map(|(index, message)| (*index, name_of(message))).collect()
}

// ---------------------------------------------------------------------------
// The harness: a router state and the gateway-side calls tests make on it
// ---------------------------------------------------------------------------

struct Harness {
    state: RouterState,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_config(RouterConfig::default())
    }

    fn with_config(config: RouterConfig) -> Harness {
        Harness { state: RouterState::new(config, GENERATION) }
    }

    fn apply(&mut self, gateway: NodeId, item: Uplink, now: UnixMillis) -> Vec<Effect> {
        let mut out = Vec::new();
        self.state.apply(gateway, item, now, &mut out);
        // Each item is a batch, committed at once.
        let batch = self.state.seal_batch();
        self.state.settle_batch(batch);
        out
    }

    fn tick(&mut self, now: UnixMillis) -> (Vec<Effect>, Option<UnixMillis>) {
        let mut out = Vec::new();
        let next = self.state.tick(now, &mut out);
        (out, next)
    }

    fn counters(&self) -> RouterCounters {
        self.state.counters().clone()
    }

    /// Returns the number of retained messages of the default app.
    fn retained_count(&self) -> usize {
        self.state.retained_count(&app())
    }

    /// Claims a session; returns the grant and every other effect. A claim
    /// that takes over a live persistent session waits for the old
    /// connection's release: here it never comes, so the grant is the one
    /// made at the end of the wait.
    fn claim(&mut self, gateway: NodeId, claim: Claim, now: UnixMillis) -> (ClaimGrant, Vec<Effect>) {
        let mut effects = self.apply(gateway, Uplink::Claim(claim), now);
        let answered =
            |effects: &[Effect]| effects.iter().any(|(_, item)| matches!(item, Downlink::Claimed { .. }));
        if !answered(&effects) {
            let waited = UnixMillis(now.0 + super::takeover::TAKEOVER_WAIT_MS);
            let (later, _) = self.tick(waited);
            assert!(answered(&later), "a claim is answered at the end of the wait at the latest");
            effects.extend(later);
        }
        let at = effects
            .iter()
            .position(|(to, item)| *to == gateway && matches!(item, Downlink::Claimed { request: CLAIM, .. }))
            .expect("a claim is always answered");
        match effects.remove(at).1 {
            Downlink::Claimed { result: Ok(grant), .. } => (grant, effects),
            other => panic!("claim refused: {other:?}"),
        }
    }

    /// Connects `client` with a clean start on `gateway`; returns its epoch.
    fn connect(&mut self, gateway: NodeId, client: &str, expiry_seconds: u32) -> Epoch {
        self.claim(gateway, claim(client, true, expiry_seconds), T0).0.epoch
    }

    fn subscribe(
        &mut self,
        gateway: NodeId,
        client: &str,
        epoch: Epoch,
        subscriptions: Vec<(Subscription, RetainedLookup)>,
    ) -> Result<Vec<(usize, Arc<Message>)>, ErrorCode> {
        let item = Uplink::Subscribe { request: SUBSCRIBE, session: key(client), epoch, subscriptions };
        match self.apply(gateway, item, T0).as_slice() {
            [(to, Downlink::Subscribed { request: SUBSCRIBE, result })] if *to == gateway => result.clone(),
            other => panic!("expected one Subscribed reply, got {other:?}"),
        }
    }

    fn unsubscribe(
        &mut self,
        gateway: NodeId,
        client: &str,
        epoch: Epoch,
        filters: &[&str],
    ) -> Result<(), ErrorCode> {
        let filters = filters.iter().map(|f| filter(f)).collect();
        let item = Uplink::Unsubscribe { request: UNSUBSCRIBE, session: key(client), epoch, filters };
        match self.apply(gateway, item, T0).as_slice() {
            [(to, Downlink::Unsubscribed { request: UNSUBSCRIBE, result })] if *to == gateway => *result,
            other => panic!("expected one Unsubscribed reply, got {other:?}"),
        }
    }

    fn add_routes(&mut self, gateway: NodeId, app: &AppId, filters: &[&str]) {
        let add = filters.iter().map(|f| (app.clone(), filter(f))).collect();
        let effects = self.apply(gateway, Uplink::Routes { add, remove: Vec::new() }, T0);
        assert_eq!(effects, [], "route changes have no reply");
    }

    fn remove_routes(&mut self, gateway: NodeId, app: &AppId, filters: &[&str]) {
        let remove = filters.iter().map(|f| (app.clone(), filter(f))).collect();
        let effects = self.apply(gateway, Uplink::Routes { add: Vec::new(), remove }, T0);
        assert_eq!(effects, [], "route changes have no reply");
    }

    /// Publishes from the push API (no session, no reply) through `GW3`.
    fn publish(&mut self, message: Arc<Message>, now: UnixMillis) -> Vec<Effect> {
        self.apply(GW3, Uplink::Publish(Publish { request: None, from: None, message }), now)
    }

    /// Publishes with a reply; returns the reply's result and every other effect.
    fn publish_with_reply(
        &mut self,
        gateway: NodeId,
        from: Option<(SessionKey, Epoch)>,
        message: Arc<Message>,
        now: UnixMillis,
    ) -> (Result<bool, ErrorCode>, Vec<Effect>) {
        let item = Uplink::Publish(Publish { request: Some(PUBLISH), from, message });
        let mut effects = self.apply(gateway, item, now);
        let at = effects
            .iter()
            .position(|(to, item)| {
                *to == gateway && matches!(item, Downlink::Published { request: PUBLISH, .. })
            })
            .expect("a publish with a request id is always answered");
        match effects.remove(at).1 {
            Downlink::Published { result, .. } => (result, effects),
            _ => unreachable!("matched above"),
        }
    }

    /// Applies a release; checks that it is answered with `Released` (last,
    /// to the releasing gateway) and returns the other effects.
    fn release(&mut self, gateway: NodeId, release: Release, now: UnixMillis) -> Vec<Effect> {
        let request = release.request;
        let mut effects = self.apply(gateway, Uplink::Release(release), now);
        assert_eq!(
            effects.pop(),
            Some((gateway, Downlink::Released { request })),
            "a release is answered last"
        );
        effects
    }

    /// Connects a persistent session on `GW1`, subscribes it and ends its
    /// connection at `T0` without a will; returns the epoch it held.
    fn offline_subscriber(
        &mut self,
        client: &str,
        expiry_seconds: u32,
        subscriptions: &[Subscription],
    ) -> Epoch {
        let epoch = self.connect(GW1, client, expiry_seconds);
        let asked = subscriptions.iter().map(|s| (s.clone(), RetainedLookup::Skip)).collect();
        assert_eq!(self.subscribe(GW1, client, epoch, asked), Ok(Vec::new()));
        assert_eq!(self.release(GW1, release(client, epoch, expiry_seconds, false), T0), []);
        epoch
    }

    /// Returns the names of the messages queued for `client`'s session.
    fn queue_of(&self, client: &str) -> Vec<String> {
        let record = self.state.session(&key(client)).expect("session exists");
        record.queue().map(|q| name_of(&q.message)).collect()
    }

    /// Has `client`'s gateway report that its client acknowledged the
    /// messages of its inbox named `names`.
    fn acknowledge(&mut self, gateway: NodeId, client: &str, names: &[&str], now: UnixMillis) {
        let record = self.state.session(&key(client)).expect("session exists");
        let messages = record
            .queue()
            .filter(|q| names.contains(&name_of(&q.message).as_str()))
            .map(|q| q.message.id)
            .collect();
        let acks =
            vec![herald_proto::seam::SessionAcks { session: key(client), messages, progress: Vec::new() }];
        assert_eq!(self.apply(gateway, Uplink::Acked(acks), now), [], "acknowledgements get no reply");
    }
}

// ---------------------------------------------------------------------------
// 1. Claims and epochs
// ---------------------------------------------------------------------------

#[test]
fn claim_of_a_new_session_is_granted_an_epoch_without_session_present() {
    let mut h = Harness::new();

    let effects = h.apply(GW1, Uplink::Claim(claim("c1", false, 0)), T0);

    let [(gateway, Downlink::Claimed { request, result: Ok(grant) })] = effects.as_slice() else {
        panic!("expected one Claimed grant, got {effects:?}");
    };
    assert_eq!((*gateway, *request), (GW1, CLAIM));
    assert!(!grant.session_present);
    assert_eq!(grant.epoch.generation, GENERATION);
    assert_eq!((grant.subscriptions.as_slice(), grant.queued.as_slice()), (&[][..], &[][..]));
    let record = h.state.session(&key("c1")).expect("claimed session is recorded");
    assert_eq!((record.owner, record.epoch), (Some(GW1), grant.epoch));
    assert_eq!(h.state.session_count(), 1);
}

#[test]
fn second_claim_revokes_the_first_owner_and_grants_a_higher_epoch() {
    let mut h = Harness::new();
    let first = h.connect(GW1, "c1", 0);

    let (grant, others) = h.claim(GW2, claim("c1", true, 0), T0);

    assert_eq!(others, [(GW1, Downlink::Revoked { session: key("c1"), epoch: first })]);
    assert!(grant.epoch > first, "{} must exceed {first}", grant.epoch);
    assert!(!grant.session_present);
    let record = h.state.session(&key("c1")).expect("session exists");
    assert_eq!((record.owner, record.epoch), (Some(GW2), grant.epoch));
}

#[test]
fn epochs_increase_across_sessions_and_claims() {
    let mut h = Harness::new();
    let epochs = [h.connect(GW1, "c1", 0), h.connect(GW1, "c2", 0), h.connect(GW2, "c1", 0)];
    assert!(epochs.windows(2).all(|pair| pair[0] < pair[1]), "{epochs:?}");
}

#[test]
fn claims_in_other_apps_are_other_sessions() {
    let mut h = Harness::new();
    h.connect(GW1, "c1", 0);
    let other = Claim { session: SessionKey::new(app_named("x"), client_id("c1")), ..claim("c1", true, 0) };

    let (_, others) = h.claim(GW2, other, T0);

    assert_eq!(others, [], "the same client id in another app is not a takeover");
    assert_eq!(h.state.session_count(), 2);
}

#[test]
fn session_expiry_is_capped_by_the_config() {
    let config = RouterConfig { max_session_expiry_seconds: 60, ..RouterConfig::default() };
    let mut h = Harness::with_config(config);
    let epoch = h.connect(GW1, "c1", u32::MAX);
    assert_eq!(h.state.session(&key("c1")).map(|r| r.expiry_seconds), Some(60));

    h.release(GW1, release("c1", epoch, u32::MAX, false), T0);

    assert_eq!(h.tick(T0).1, Some(after_s(60)));
}

// ---------------------------------------------------------------------------
// 2. Fencing by epoch
// ---------------------------------------------------------------------------

#[test]
fn items_carrying_a_stale_epoch_are_refused_and_counted() {
    let mut h = Harness::new();
    h.add_routes(GW2, &app(), &["#"]);
    let stale = h.connect(GW1, "c1", 3600);
    h.claim(GW2, claim("c1", false, 3600), T0);
    let refused = Err(ErrorCode::StaleEpoch);

    let cases: Vec<(&str, Uplink, Downlink)> = vec![
        (
            "subscribe",
            Uplink::Subscribe {
                request: SUBSCRIBE,
                session: key("c1"),
                epoch: stale,
                subscriptions: vec![(subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Send)],
            },
            Downlink::Subscribed { request: SUBSCRIBE, result: refused.map(|()| Vec::new()) },
        ),
        (
            "unsubscribe",
            Uplink::Unsubscribe {
                request: UNSUBSCRIBE,
                session: key("c1"),
                epoch: stale,
                filters: vec![filter("a/+")],
            },
            Downlink::Unsubscribed { request: UNSUBSCRIBE, result: refused },
        ),
        (
            "publish",
            Uplink::Publish(Publish {
                request: Some(PUBLISH),
                from: Some((key("c1"), stale)),
                message: plain("a/b", "m1"),
            }),
            Downlink::Published { request: PUBLISH, result: refused.map(|()| false) },
        ),
    ];
    for (expected_refusals, (name, item, reply)) in (1..).zip(cases) {
        let effects = h.apply(GW1, item, T0);
        assert_eq!(effects, [(GW1, reply)], "{name}: only the refusal, no delivery");
        assert_eq!(h.counters().stale_epoch_refused, expected_refusals, "{name}");
    }
    let record = h.state.session(&key("c1")).expect("session exists");
    assert_eq!(record.subscriptions(), [], "the stale subscribe was not recorded");
    assert_eq!(h.counters().messages_routed, 0);
}

#[test]
fn stale_releases_are_refused_silently_and_counted() {
    let mut h = Harness::new();
    let stale = h.connect(GW1, "c1", 3600);
    let current = h.claim(GW2, claim("c1", false, 3600), T0).0.epoch;
    let released = h.connect(GW1, "c2", 3600);
    h.release(GW1, release("c2", released, 3600, false), T0);

    let cases = [
        ("an epoch that lost ownership", release("c1", stale, 0, false)),
        ("a session never claimed", release("nobody", current, 0, false)),
        ("a second release of the same connection", release("c2", released, 0, false)),
    ];
    for (expected_refusals, (name, item)) in (1..).zip(cases) {
        assert_eq!(h.release(GW1, item, T0), [], "{name}");
        assert_eq!(h.counters().stale_epoch_refused, expected_refusals, "{name}");
    }
    let c1 = h.state.session(&key("c1")).expect("c1 still exists");
    assert_eq!((c1.owner, c1.epoch), (Some(GW2), current));
    let c2 = h.state.session(&key("c2")).expect("c2 still exists");
    assert_eq!(c2.expiry_seconds, 3600, "the refused release did not end the session");
}

#[test]
fn stale_release_does_not_publish_the_will() {
    let mut h = Harness::new();
    h.add_routes(GW3, &app(), &["will/#"]);
    // A resumption within the will delay: no will is due from the takeover.
    let stale = h.claim(GW1, with_will(claim("c1", true, 3600), "will/c1", "w1", 60), T0).0.epoch;
    h.claim(GW2, claim("c1", false, 3600), T0);

    let effects = h.release(GW1, release("c1", stale, 0, true), T0);

    assert_eq!(effects, []);
    assert_eq!(deliveries(&h.tick(after_s(3600)).0), []);
    assert_eq!(h.counters().wills_published, 0);
    assert_eq!(h.counters().stale_epoch_refused, 1);
}

#[test]
fn a_session_that_released_cannot_publish_with_its_old_epoch() {
    let mut h = Harness::new();
    h.add_routes(GW2, &app(), &["#"]);
    let epoch = h.connect(GW1, "c1", 3600);
    h.release(GW1, release("c1", epoch, 3600, false), T0);

    let (result, effects) = h.publish_with_reply(GW1, Some((key("c1"), epoch)), plain("a/b", "m1"), T0);

    assert_eq!((result, effects), (Err(ErrorCode::StaleEpoch), Vec::new()));
    assert_eq!(h.counters().stale_epoch_refused, 1);
}

#[test]
fn items_carrying_the_current_epoch_are_applied() {
    let mut h = Harness::new();
    h.add_routes(GW2, &app(), &["a/+"]);
    let epoch = h.connect(GW1, "c1", 3600);

    let (result, effects) = h.publish_with_reply(GW1, Some((key("c1"), epoch)), plain("a/b", "m1"), T0);
    assert_eq!(result, Ok(true));
    assert_eq!(deliveries(&effects), [(GW2, "m1".to_owned())]);
    assert_eq!(
        h.subscribe(GW1, "c1", epoch, vec![(subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Send)]),
        Ok(vec![])
    );
    assert_eq!(h.unsubscribe(GW1, "c1", epoch, &["a/+"]), Ok(()));
    assert_eq!(h.counters().stale_epoch_refused, 0);
}

// ---------------------------------------------------------------------------
// 3. Routes
// ---------------------------------------------------------------------------

#[test]
fn a_route_delivers_matching_publishes_to_its_gateway_only() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["a/+"]);
    h.add_routes(GW2, &app(), &["x/y"]);

    let (matched, effects) = h.publish_with_reply(GW3, None, plain("a/b", "m1"), T0);
    assert_eq!((matched, deliveries(&effects)), (Ok(true), vec![(GW1, "m1".to_owned())]));

    let (matched, effects) = h.publish_with_reply(GW3, None, plain("a/b/c", "m2"), T0);
    assert_eq!((matched, effects), (Ok(false), Vec::new()), "`+` matches one level only");
    assert_eq!(h.counters().messages_routed, 2);
}

#[test]
fn each_matching_gateway_gets_exactly_one_delivery() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["a/+", "a/#", "a/b", "+/b", "#"]);
    h.add_routes(GW2, &app(), &["a/b", "a/#"]);
    h.add_routes(GW3, &app(), &["c/#"]);

    let mut delivered = deliveries(&h.publish(plain("a/b", "m1"), T0));
    delivered.sort();

    assert_eq!(delivered, [(GW1, "m1".to_owned()), (GW2, "m1".to_owned())]);
}

#[test]
fn removed_routes_deliver_nothing() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["a/+", "a/b"]);

    h.remove_routes(GW1, &app(), &["a/+"]);
    assert_eq!(deliveries(&h.publish(plain("a/b", "m1"), T0)), [(GW1, "m1".to_owned())], "a/b still routes");

    h.remove_routes(GW1, &app(), &["a/b"]);
    let (matched, effects) = h.publish_with_reply(GW3, None, plain("a/b", "m2"), T0);
    assert_eq!((matched, effects), (Ok(false), Vec::new()));
}

#[test]
fn removing_a_route_of_one_gateway_keeps_the_same_route_of_another() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["a/+"]);
    h.add_routes(GW2, &app(), &["a/+"]);

    h.remove_routes(GW1, &app(), &["a/+"]);

    assert_eq!(deliveries(&h.publish(plain("a/b", "m1"), T0)), [(GW2, "m1".to_owned())]);
}

#[test]
fn routes_never_cross_apps() {
    let mut h = Harness::new();
    let (x, y) = (app_named("x"), app_named("y"));
    h.add_routes(GW1, &x, &["#"]);
    h.add_routes(GW2, &y, &["#"]);

    let to_y = shared(Message { app: y, ..message("a/b", "m1") });
    let to_default = plain("a/b", "m2");

    assert_eq!(deliveries(&h.publish(to_y, T0)), [(GW2, "m1".to_owned())]);
    assert_eq!(deliveries(&h.publish(to_default, T0)), []);
}

#[test]
fn shared_subscription_routes_match_on_the_filter_after_the_share_name() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["$share/g/a/+"]);

    let effects = h.publish(plain("a/b", "m1"), T0);
    assert_eq!(deliveries(&effects), [], "a group member is not a plain route");
    assert_eq!(shared_deliveries(&effects), [(GW1, "$share/g/a/+".to_owned(), "m1".to_owned())]);
}

#[test]
fn removing_one_route_keeps_another_filter_with_the_same_matching_part() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["a/+", "$share/g1/a/+", "$share/g2/a/+"]);

    h.remove_routes(GW1, &app(), &["$share/g1/a/+"]);

    // `a/+`, `$share/g1/a/+` and `$share/g2/a/+` share a trie path but are
    // separate routes: removing one must leave the others in force.
    assert_eq!(
        deliveries(&h.publish(plain("a/b", "m1"), T0)),
        [(GW1, "m1".to_owned())],
        "GW1 still has subscribers for a/+ and $share/g2/a/+"
    );
}

// ---------------------------------------------------------------------------
// 4. Retained messages
// ---------------------------------------------------------------------------

#[test]
fn retained_publish_is_stored_and_sent_on_subscribe_with_the_subscription_index() {
    let mut h = Harness::new();
    h.publish(retained("a/b", "r1"), T0);
    h.publish(plain("a/c", "not-retained"), T0);
    assert_eq!(h.retained_count(), 1);
    let epoch = h.connect(GW1, "c1", 0);

    let found = h.subscribe(
        GW1,
        "c1",
        epoch,
        vec![
            (subscription("x/y", QoS::AtLeastOnce), RetainedLookup::Send),
            (subscription("a/c", QoS::AtLeastOnce), RetainedLookup::Send),
            (subscription("a/b", QoS::AtLeastOnce), RetainedLookup::Send),
        ],
    );

    assert_eq!(retained_names(&found.expect("current epoch")), [(2, "r1".to_owned())]);
}

#[test]
fn retained_lookup_skip_sends_none() {
    let mut h = Harness::new();
    h.publish(retained("a/b", "r1"), T0);
    let epoch = h.connect(GW1, "c1", 0);

    let found =
        h.subscribe(GW1, "c1", epoch, vec![(subscription("a/b", QoS::AtLeastOnce), RetainedLookup::Skip)]);

    assert_eq!(found, Ok(Vec::new()));
    assert_eq!(h.retained_count(), 1, "skipping does not delete it");
}

#[test]
fn a_newer_retained_message_replaces_the_older_one() {
    let mut h = Harness::new();
    h.publish(retained("a/b", "r1"), T0);
    h.publish(retained("a/b", "r2"), T0);
    let epoch = h.connect(GW1, "c1", 0);

    let found =
        h.subscribe(GW1, "c1", epoch, vec![(subscription("a/b", QoS::AtLeastOnce), RetainedLookup::Send)]);

    assert_eq!(retained_names(&found.expect("current epoch")), [(0, "r2".to_owned())]);
    assert_eq!(h.retained_count(), 1);
}

#[test]
fn an_empty_retained_payload_deletes_the_retained_message() {
    let mut h = Harness::new();
    h.add_routes(GW2, &app(), &["a/b"]);
    h.publish(retained("a/b", "r1"), T0);

    let effects = h.publish(retained("a/b", ""), T0);

    assert_eq!(deliveries(&effects), [(GW2, String::new())], "the deleting publish is still routed");
    assert_eq!(h.retained_count(), 0);
    let epoch = h.connect(GW1, "c1", 0);
    let found =
        h.subscribe(GW1, "c1", epoch, vec![(subscription("a/b", QoS::AtLeastOnce), RetainedLookup::Send)]);
    assert_eq!(found, Ok(Vec::new()));
}

#[test]
fn wildcard_filters_match_retained_messages() {
    let mut h = Harness::new();
    for (topic, name) in [("a/b", "r-ab"), ("a/c", "r-ac"), ("a/b/c", "r-abc"), ("b/c", "r-bc")] {
        h.publish(retained(topic, name), T0);
    }
    let epoch = h.connect(GW1, "c1", 0);

    let cases: [(&str, &[&str]); 5] = [
        ("a/+", &["r-ab", "r-ac"]),
        ("a/#", &["r-ab", "r-abc", "r-ac"]),
        ("+/c", &["r-ac", "r-bc"]),
        ("#", &["r-ab", "r-abc", "r-ac", "r-bc"]),
        ("c/+", &[]),
    ];
    for (filter_text, expected) in cases {
        let found = h
            .subscribe(
                GW1,
                "c1",
                epoch,
                vec![(subscription(filter_text, QoS::AtLeastOnce), RetainedLookup::Send)],
            )
            .expect("current epoch");
        let mut found: Vec<String> = found.iter().map(|(_, m)| name_of(m)).collect();
        found.sort();
        assert_eq!(found, expected, "{filter_text}");
    }
}

#[test]
fn shared_subscriptions_never_get_retained_messages() {
    let mut h = Harness::new();
    h.publish(retained("a/b", "r1"), T0);
    let epoch = h.connect(GW1, "c1", 0);

    let found = h.subscribe(
        GW1,
        "c1",
        epoch,
        vec![
            (subscription("$share/g/a/b", QoS::AtLeastOnce), RetainedLookup::Send),
            (subscription("$share/g/a/+", QoS::AtLeastOnce), RetainedLookup::Send),
            (subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Send),
        ],
    );

    assert_eq!(retained_names(&found.expect("current epoch")), [(2, "r1".to_owned())]);
}

#[test]
fn retained_messages_are_kept_per_app() {
    let mut h = Harness::new();
    let x = app_named("x");
    h.publish(shared(Message { app: x.clone(), retain: true, ..message("a/b", "r-x") }), T0);
    let epoch = h.connect(GW1, "c1", 0);

    let found =
        h.subscribe(GW1, "c1", epoch, vec![(subscription("#", QoS::AtLeastOnce), RetainedLookup::Send)]);

    assert_eq!(found, Ok(Vec::new()), "a default-app session does not see app x's retained message");
    assert_eq!((h.state.retained_count(&x), h.retained_count()), (1, 0));
}

// ---------------------------------------------------------------------------
// 5. Persistent sessions and offline queues
// ---------------------------------------------------------------------------

#[test]
fn offline_persistent_session_queues_with_the_lower_of_both_qos() {
    let mut h = Harness::new();
    h.offline_subscriber(
        "c1",
        3600,
        &[subscription("one/+", QoS::AtLeastOnce), subscription("two/+", QoS::ExactlyOnce)],
    );

    h.publish(with_qos("one/x", "m1", QoS::ExactlyOnce), T0);
    h.publish(with_qos("two/x", "m2", QoS::AtLeastOnce), T0);
    h.publish(with_qos("two/y", "m3", QoS::ExactlyOnce), T0);
    h.publish(with_qos("three/x", "unmatched", QoS::ExactlyOnce), T0);

    let record = h.state.session(&key("c1")).expect("persistent session outlives its connection");
    let queued: Vec<(String, QoS)> = record.queue().map(|q| (name_of(&q.message), q.qos)).collect();
    assert_eq!(
        queued,
        [
            ("m1".to_owned(), QoS::AtLeastOnce),
            ("m2".to_owned(), QoS::AtLeastOnce),
            ("m3".to_owned(), QoS::ExactlyOnce)
        ]
    );
    assert!(record.queue().all(|q| q.progress == Progress::Unsent));
}

#[test]
fn qos0_is_never_queued_offline_and_is_counted() {
    let mut h = Harness::new();
    h.offline_subscriber(
        "c1",
        3600,
        &[subscription("zero/+", QoS::AtMostOnce), subscription("one/+", QoS::AtLeastOnce)],
    );

    let (matched, _) =
        h.publish_with_reply(GW3, None, with_qos("zero/x", "by-subscription", QoS::ExactlyOnce), T0);
    assert_eq!(matched, Ok(true));
    h.publish(with_qos("one/x", "by-message", QoS::AtMostOnce), T0);

    assert_eq!(h.queue_of("c1"), Vec::<String>::new());
    assert_eq!(h.counters().dropped_offline_qos0, 2);
}

#[test]
fn a_full_offline_queue_refuses_the_newest_message() {
    let mut h = Harness::with_config(RouterConfig { max_queued_messages: 2, ..RouterConfig::default() });
    h.offline_subscriber("c1", 3600, &[subscription("a/+", QoS::AtLeastOnce)]);

    for name in ["m1", "m2", "m3", "m4"] {
        h.publish(plain("a/b", name), T0);
    }

    assert_eq!(h.queue_of("c1"), ["m1", "m2"]);
    assert_eq!(h.counters().dropped_queue_full, 2);
}

#[test]
fn a_full_offline_queue_drops_its_oldest_messages_when_so_configured() {
    let config = RouterConfig {
        max_queued_messages: 2,
        overflow: super::Overflow::DropOldest,
        ..RouterConfig::default()
    };
    let mut h = Harness::with_config(config);
    h.offline_subscriber("c1", 3600, &[subscription("a/+", QoS::AtLeastOnce)]);
    let mut durable = super::DurableState::default();
    for name in ["m1", "m2", "m3", "m4"] {
        h.publish(plain("a/b", name), T0);
        for fact in h.state.take_journal() {
            durable.apply(fact);
        }
    }
    assert_eq!(h.queue_of("c1"), ["m3", "m4"]);
    assert_eq!((h.counters().dropped_queue_oldest, h.counters().dropped_queue_full), (2, 0));
    let journaled: Vec<String> =
        durable.image().sessions[0].queue.iter().map(|q| name_of(&q.message)).collect();
    assert_eq!(journaled, ["m3", "m4"], "the journal drops what the queue dropped");
}

#[test]
fn the_byte_limit_of_an_offline_queue_follows_the_same_policies() {
    for (overflow, kept, counted) in [
        (super::Overflow::RefuseNewest, ["m1", "m2"], (2, 0)),
        (super::Overflow::DropOldest, ["m3", "m4"], (0, 2)),
    ] {
        // Payloads are 2 bytes: a 5-byte limit holds two.
        let config = RouterConfig { max_queued_bytes: 5, overflow, ..RouterConfig::default() };
        let mut h = Harness::with_config(config);
        h.offline_subscriber("c1", 3600, &[subscription("a/+", QoS::AtLeastOnce)]);
        for name in ["m1", "m2", "m3", "m4"] {
            h.publish(plain("a/b", name), T0);
        }
        assert_eq!(h.queue_of("c1"), kept, "{overflow:?}");
        let counters = h.counters();
        assert_eq!((counters.dropped_queue_full, counters.dropped_queue_oldest), counted, "{overflow:?}");
    }
}

#[test]
fn resume_returns_the_subscriptions_and_the_queue_in_order() {
    let mut h = Harness::new();
    let subscribed = [subscription("a/+", QoS::AtLeastOnce), subscription("b/#", QoS::ExactlyOnce)];
    let old = h.offline_subscriber("c1", 3600, &subscribed);
    for (topic, name) in [("a/x", "m1"), ("b/y/z", "m2"), ("a/y", "m3")] {
        h.publish(plain(topic, name), after_s(1));
    }

    let (grant, others) = h.claim(GW2, claim("c1", false, 3600), after_s(2));

    assert_eq!(others, [], "an offline session has no owner to revoke");
    assert!(grant.session_present);
    assert!(grant.epoch > old);
    assert_eq!(grant.subscriptions, subscribed);
    assert_eq!(names(&grant.queued), ["m1", "m2", "m3"]);
    let record = h.state.session(&key("c1")).expect("resumed");
    assert_eq!((record.owner, record.subscriptions()), (Some(GW2), &subscribed[..]));

    // Online, the inbox keeps what it had and takes what comes, until the
    // client acknowledges it.
    h.publish(plain("a/x", "online"), after_s(3));
    assert_eq!(h.queue_of("c1"), ["m1", "m2", "m3", "online"]);
    h.state.take_journal();
    h.acknowledge(GW2, "c1", &["m1", "m3"], after_s(4));
    assert_eq!(h.queue_of("c1"), ["m2", "online"]);
    let facts = h.state.take_journal();
    assert!(
        matches!(&facts[..], [Fact::Acked(acks)] if acks.session == key("c1") && acks.messages.len() == 2),
        "one fact per session and batch: {facts:?}"
    );
    h.acknowledge(GW2, "c1", &["m1"], after_s(4));
    assert_eq!(h.state.take_journal(), [], "acknowledging again writes nothing");
}

#[test]
fn overlapping_subscriptions_queue_one_copy_with_the_highest_qos_and_every_identifier() {
    let with_id = |f: &str, qos, id| Subscription { identifier: Some(id), ..subscription(f, qos) };
    // Either filter may hold the higher QoS, whichever the index visits first.
    for (plus_qos, hash_qos) in [(QoS::AtLeastOnce, QoS::ExactlyOnce), (QoS::ExactlyOnce, QoS::AtLeastOnce)] {
        let mut h = Harness::new();
        h.offline_subscriber("c1", 3600, &[with_id("a/+", plus_qos, 1), with_id("a/#", hash_qos, 2)]);

        h.publish(with_qos("a/b", "m1", QoS::ExactlyOnce), T0);

        let record = h.state.session(&key("c1")).expect("session exists");
        let [queued] = record.queue().collect::<Vec<_>>()[..] else {
            panic!("expected one queued copy, got {:?}", record.queue().collect::<Vec<_>>());
        };
        let mut ids = queued.subscription_ids.clone();
        ids.sort_unstable();
        assert_eq!((queued.qos, ids), (QoS::ExactlyOnce, vec![1, 2]), "a/+ {plus_qos:?}, a/# {hash_qos:?}");
    }
}

#[test]
fn pending_messages_of_the_release_are_queued_ahead_of_newer_ones() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "c1", 3600);
    h.subscribe(GW1, "c1", epoch, vec![(subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("current epoch");
    let ended = Release {
        pending: vec![pending(plain("a/b", "p1"), true), pending(plain("a/b", "p2"), false)],
        ..release("c1", epoch, 3600, false)
    };
    h.release(GW1, ended, T0);
    h.publish(plain("a/b", "m3"), T0);

    let (grant, _) = h.claim(GW1, claim("c1", false, 3600), after_s(1));

    let queued: Vec<(String, bool)> =
        grant.queued.iter().map(|q| (name_of(&q.message), q.progress != Progress::Unsent)).collect();
    assert_eq!(queued, [("p1".to_owned(), true), ("p2".to_owned(), false), ("m3".to_owned(), false)]);
}

#[test]
fn clean_start_discards_the_offline_session() {
    let mut h = Harness::new();
    h.offline_subscriber("c1", 3600, &[subscription("a/+", QoS::AtLeastOnce)]);
    h.publish(plain("a/b", "m1"), T0);

    let (grant, _) = h.claim(GW1, claim("c1", true, 3600), after_s(1));

    assert!(!grant.session_present);
    assert_eq!((grant.subscriptions, grant.queued), (Vec::new(), Vec::new()));
    let record = h.state.session(&key("c1")).expect("new session");
    assert_eq!(record.subscriptions(), []);

    // The old subscriptions are gone for good: nothing is queued once the
    // new session goes offline in turn.
    h.release(GW1, release("c1", grant.epoch, 3600, false), after_s(2));
    h.publish(plain("a/b", "m2"), after_s(3));
    assert_eq!(h.queue_of("c1"), Vec::<String>::new());
}

#[test]
fn no_local_subscriptions_skip_their_own_clients_messages() {
    let mut h = Harness::new();
    h.offline_subscriber(
        "c1",
        3600,
        &[Subscription { no_local: true, ..subscription("a/+", QoS::AtLeastOnce) }],
    );

    h.publish(shared(Message { origin: Some(client_id("c1")), ..message("a/b", "own") }), T0);
    h.publish(shared(Message { origin: Some(client_id("c2")), ..message("a/b", "other") }), T0);
    h.publish(plain("a/b", "api"), T0);

    assert_eq!(h.queue_of("c1"), ["other", "api"]);
}

#[test]
fn unsubscribed_filters_queue_nothing_offline() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "c1", 3600);
    let asked = vec![
        (subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Skip),
        (subscription("b/+", QoS::AtLeastOnce), RetainedLookup::Skip),
    ];
    h.subscribe(GW1, "c1", epoch, asked).expect("current epoch");
    assert_eq!(h.unsubscribe(GW1, "c1", epoch, &["a/+"]), Ok(()));
    h.release(GW1, release("c1", epoch, 3600, false), T0);

    h.publish(plain("a/x", "gone"), T0);
    h.publish(plain("b/x", "kept"), T0);

    assert_eq!(h.queue_of("c1"), ["kept"]);
}

#[test]
fn resubscribing_a_filter_replaces_its_subscription() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "c1", 3600);
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        h.subscribe(GW1, "c1", epoch, vec![(subscription("a/+", qos), RetainedLookup::Skip)])
            .expect("current epoch");
    }

    let record = h.state.session(&key("c1")).expect("session exists");
    assert_eq!(record.subscriptions(), [subscription("a/+", QoS::ExactlyOnce)]);
}

#[test]
fn a_non_persistent_session_is_gone_after_release() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "c1", 0);
    h.subscribe(GW1, "c1", epoch, vec![(subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("current epoch");
    let record = h.state.session(&key("c1")).expect("online session");
    assert_eq!(record.subscriptions(), [], "only persistent sessions record subscriptions");

    assert_eq!(h.release(GW1, release("c1", epoch, 0, false), T0), []);

    assert!(h.state.session(&key("c1")).is_none());
    assert_eq!(h.state.session_count(), 0);
    assert_eq!(h.publish(plain("a/b", "m1"), T0), []);
    assert_eq!(h.tick(after_s(1)).1, None, "nothing left to expire");
    let (grant, _) = h.claim(GW1, claim("c1", false, 0), after_s(1));
    assert!(!grant.session_present);
}

#[test]
fn takeover_of_a_session_that_ends_with_its_connection_starts_afresh() {
    let mut h = Harness::new();
    h.connect(GW1, "c1", 0);

    let (grant, others) = h.claim(GW2, claim("c1", false, 3600), T0);

    assert_eq!(others.len(), 1, "only the revocation: {others:?}");
    assert!(!grant.session_present, "no session state outlived the old connection");
}

#[test]
fn release_with_expiry_zero_ends_a_session_claimed_as_persistent() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "c1", 3600);
    h.subscribe(GW1, "c1", epoch, vec![(subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("current epoch");

    h.release(GW1, release("c1", epoch, 0, false), T0);

    assert!(h.state.session(&key("c1")).is_none());
    assert_eq!(h.publish(plain("a/b", "m1"), T0), []);
    assert_eq!(h.counters().dropped_offline_qos0 + h.counters().dropped_queue_full, 0);
}

// ---------------------------------------------------------------------------
// 6. Wills
// ---------------------------------------------------------------------------

/// A harness where `GW3` has a route for every will, and `c1` is connected
/// on `GW1` with a will on `will/c1`; returns the epoch of `c1`.
fn with_connected_will(h: &mut Harness, expiry_seconds: u32, delay_seconds: u32) -> Epoch {
    h.add_routes(GW3, &app(), &["will/#"]);
    let claimed = with_will(claim("c1", true, expiry_seconds), "will/c1", "w1", delay_seconds);
    h.claim(GW1, claimed, T0).0.epoch
}

fn will_delivered() -> Vec<(NodeId, String)> {
    vec![(GW3, "w1".to_owned())]
}

#[test]
fn will_without_delay_is_routed_at_release() {
    for expiry_seconds in [0, 3600] {
        let mut h = Harness::new();
        let epoch = with_connected_will(&mut h, expiry_seconds, 0);

        let effects = h.release(GW1, release("c1", epoch, expiry_seconds, true), T0);

        assert_eq!(deliveries(&effects), will_delivered(), "expiry {expiry_seconds}");
        assert_eq!(h.counters().wills_published, 1, "expiry {expiry_seconds}");
        assert_eq!(deliveries(&h.tick(after_s(3600)).0), [], "published once, expiry {expiry_seconds}");
    }
}

#[test]
fn release_without_publish_will_discards_the_will() {
    for delay_seconds in [0, 5] {
        let mut h = Harness::new();
        let epoch = with_connected_will(&mut h, 3600, delay_seconds);

        assert_eq!(h.release(GW1, release("c1", epoch, 3600, false), T0), []);

        assert_eq!(h.tick(after_s(5)).1, Some(after_s(3600)), "only the expiry is scheduled");
        assert_eq!(deliveries(&h.tick(after_s(3600)).0), []);
        assert_eq!(h.counters().wills_published, 0);
    }
}

#[test]
fn delayed_will_is_fired_by_the_tick_after_the_delay() {
    let mut h = Harness::new();
    let epoch = with_connected_will(&mut h, 3600, 5);

    assert_eq!(h.release(GW1, release("c1", epoch, 3600, true), T0), []);
    assert_eq!(h.tick(T0), (Vec::new(), Some(after_s(5))));
    assert_eq!(h.tick(after_ms(4_999)), (Vec::new(), Some(after_s(5))));

    let (effects, next) = h.tick(after_s(5));

    assert_eq!(deliveries(&effects), will_delivered());
    assert_eq!(next, Some(after_s(3600)), "the session expiry is still due");
    assert_eq!(h.counters().wills_published, 1);
    assert!(h.state.session(&key("c1")).is_some(), "the will does not end the session");
}

#[test]
fn will_delay_does_not_outlive_a_session_that_ends_with_its_connection() {
    let mut h = Harness::new();
    let epoch = with_connected_will(&mut h, 0, 5);

    let effects = h.release(GW1, release("c1", epoch, 0, true), T0);

    assert_eq!(deliveries(&effects), will_delivered());
}

#[test]
fn resuming_within_the_will_delay_cancels_the_will() {
    let mut h = Harness::new();
    let epoch = with_connected_will(&mut h, 3600, 5);
    h.release(GW1, release("c1", epoch, 3600, true), T0);

    let (grant, others) = h.claim(GW2, claim("c1", false, 3600), after_s(2));

    assert!(grant.session_present);
    assert_eq!(others, []);
    assert_eq!(h.tick(after_s(3600)), (Vec::new(), None));
    assert_eq!(h.counters().wills_published, 0);
}

#[test]
fn clean_start_within_the_will_delay_fires_the_will_at_once() {
    let mut h = Harness::new();
    let epoch = with_connected_will(&mut h, 3600, 5);
    h.release(GW1, release("c1", epoch, 3600, true), T0);

    let (grant, others) = h.claim(GW2, claim("c1", true, 3600), after_s(2));

    assert!(!grant.session_present);
    assert_eq!(deliveries(&others), will_delivered());
    assert_eq!(h.tick(after_s(3600)), (Vec::new(), None), "no second will, no stale expiry");
    assert_eq!(h.counters().wills_published, 1);
}

#[test]
fn session_expiry_before_the_will_delay_fires_the_will_at_expiry() {
    let mut h = Harness::new();
    let epoch = with_connected_will(&mut h, 2, 5);
    h.release(GW1, release("c1", epoch, 2, true), T0);

    assert_eq!(h.tick(after_ms(1_999)), (Vec::new(), Some(after_s(2))));
    let (effects, next) = h.tick(after_s(2));

    assert_eq!(deliveries(&effects), will_delivered());
    assert_eq!(next, None);
    assert!(h.state.session(&key("c1")).is_none());
    assert_eq!((h.counters().wills_published, h.counters().sessions_expired), (1, 1));
    assert_eq!(h.tick(after_s(5)), (Vec::new(), None), "published once");
}

#[test]
fn a_will_is_routed_like_any_message() {
    let mut h = Harness::new();
    let epoch = with_connected_will(&mut h, 0, 0);
    h.add_routes(GW2, &app(), &["will/+"]);

    let mut delivered = deliveries(&h.release(GW1, release("c1", epoch, 0, true), T0));
    delivered.sort();

    assert_eq!(delivered, [(GW2, "w1".to_owned()), (GW3, "w1".to_owned())]);
    assert_eq!(h.counters().messages_routed, 1);
}

#[test]
fn a_will_is_stamped_and_given_its_expiry_when_published() {
    let mut h = Harness::new();
    h.add_routes(GW3, &app(), &["will/#"]);
    let cases = [("c1", Some(30), Some(after_s(35))), ("c2", None, None)];
    for (client, will_expiry, expected_expiry) in cases {
        let will = Will { message: plain("will/x", "w"), delay_seconds: 5, expiry_seconds: will_expiry };
        let claimed = Claim { will: Some(Box::new(will)), ..claim(client, true, 3600) };
        let epoch = h.claim(GW1, claimed, T0).0.epoch;
        h.release(GW1, release(client, epoch, 3600, true), T0);

        let (effects, _) = h.tick(after_s(5));

        let [(GW3, Downlink::Deliver(published))] = effects.as_slice() else {
            panic!("{client}: expected the will delivered to GW3, got {effects:?}");
        };
        assert_eq!((published.created_at, published.expires_at), (after_s(5), expected_expiry), "{client}");
    }
}

#[test]
fn a_persistent_session_subscribed_to_its_own_delayed_will_queues_it() {
    let mut h = Harness::new();
    let epoch = with_connected_will(&mut h, 3600, 5);
    h.subscribe(GW1, "c1", epoch, vec![(subscription("will/#", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("current epoch");
    h.release(GW1, release("c1", epoch, 3600, true), T0);

    h.tick(after_s(5));

    assert_eq!(h.queue_of("c1"), ["w1"]);
}

#[test]
fn a_persistent_session_subscribed_to_its_own_immediate_will_queues_it() {
    let mut h = Harness::new();
    let epoch = with_connected_will(&mut h, 3600, 0);
    h.subscribe(GW1, "c1", epoch, vec![(subscription("will/#", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("current epoch");

    let effects = h.release(GW1, release("c1", epoch, 3600, true), T0);

    assert_eq!(deliveries(&effects), will_delivered());
    // The session outlives its connection and subscribes to the will's
    // topic, so it queues its own will, with or without a will delay.
    assert_eq!(h.queue_of("c1"), ["w1"], "the session still exists and subscribes to will/#");
}

#[test]
fn takeover_with_clean_start_publishes_the_old_connections_will() {
    let mut h = Harness::new();
    with_connected_will(&mut h, 0, 0);

    let (_, others) = h.claim(GW2, claim("c1", true, 0), after_s(1));

    // A takeover ends the old connection [MQTT-3.1.4-3], and with clean
    // start the old session ends too, so its will is due now; the old
    // gateway's later `Release` carries the revoked epoch and is refused.
    assert_eq!(deliveries(&others), will_delivered(), "the old connection's will is published at takeover");
    assert_eq!(h.counters().wills_published, 1);
}

// ---------------------------------------------------------------------------
// 7. Session expiry and timers
// ---------------------------------------------------------------------------

#[test]
fn offline_session_expires_at_its_deadline() {
    let mut h = Harness::new();
    h.offline_subscriber("c1", 10, &[subscription("a/+", QoS::AtLeastOnce)]);
    h.publish(plain("a/b", "m1"), T0);

    assert_eq!(h.tick(after_ms(9_999)), (Vec::new(), Some(after_s(10))));
    assert!(h.state.session(&key("c1")).is_some());

    assert_eq!(h.tick(after_s(10)), (Vec::new(), None));

    assert!(h.state.session(&key("c1")).is_none());
    assert_eq!(h.counters().sessions_expired, 1);
    let (matched, effects) = h.publish_with_reply(GW3, None, plain("a/b", "m2"), after_s(11));
    assert_eq!((matched, effects), (Ok(false), Vec::new()), "its offline subscriptions are gone");
    let (grant, _) = h.claim(GW1, claim("c1", false, 10), after_s(12));
    assert!(!grant.session_present);
    assert_eq!(grant.queued, []);
}

#[test]
fn tick_returns_the_earliest_deadline_of_all_sessions() {
    let mut h = Harness::new();
    h.offline_subscriber("c1", 30, &[]);
    h.offline_subscriber("c2", 10, &[]);
    h.offline_subscriber("c3", 20, &[]);

    assert_eq!(h.tick(T0).1, Some(after_s(10)));
    assert_eq!(h.tick(after_s(10)).1, Some(after_s(20)));
    assert_eq!(h.tick(after_s(25)).1, Some(after_s(30)));
    assert_eq!(h.state.session_count(), 1);
    assert_eq!(h.tick(after_s(60)).1, None);
    assert_eq!(h.counters().sessions_expired, 3);
}

#[test]
fn a_late_tick_fires_every_deadline_that_passed() {
    let mut h = Harness::new();
    h.offline_subscriber("c1", 10, &[]);
    h.offline_subscriber("c2", 20, &[]);

    assert_eq!(h.tick(after_s(100)), (Vec::new(), None));

    assert_eq!((h.state.session_count(), h.counters().sessions_expired), (0, 2));
}

#[test]
fn a_resumed_session_does_not_expire() {
    let mut h = Harness::new();
    h.offline_subscriber("c1", 10, &[]);
    h.claim(GW1, claim("c1", false, 10), after_s(5));

    assert_eq!(h.tick(after_s(6)), (Vec::new(), None), "the expiry is no longer scheduled");
    assert_eq!(h.tick(after_s(60)), (Vec::new(), None));

    assert!(h.state.session(&key("c1")).is_some_and(|r| r.owner == Some(GW1)));
    assert_eq!(h.counters().sessions_expired, 0);
}

#[test]
fn online_sessions_schedule_nothing() {
    let mut h = Harness::new();
    with_connected_will(&mut h, 3600, 5);

    assert_eq!(h.tick(after_s(7200)), (Vec::new(), None));
    assert_eq!(h.counters(), RouterCounters::default());
}

// ---------------------------------------------------------------------------
// 8. Message expiry
// ---------------------------------------------------------------------------

#[test]
fn an_expired_message_is_neither_routed_nor_retained() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["a/+"]);
    h.offline_subscriber("c1", 3600, &[subscription("a/+", QoS::AtLeastOnce)]);

    let expired = shared(Message { expires_at: Some(T0), retain: true, ..message("a/b", "expired") });
    let (matched, effects) = h.publish_with_reply(GW3, None, expired, T0);

    assert_eq!((matched, effects), (Ok(false), Vec::new()));
    assert_eq!(h.queue_of("c1"), Vec::<String>::new());
    assert_eq!(h.retained_count(), 0);
    assert_eq!(h.counters().dropped_expired, 1);
    assert_eq!(h.counters().messages_routed, 0);
}

#[test]
fn a_message_that_has_not_expired_yet_is_routed() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["a/+"]);

    let fresh = shared(Message { expires_at: Some(after_ms(1)), ..message("a/b", "fresh") });

    assert_eq!(deliveries(&h.publish(fresh, T0)), [(GW1, "fresh".to_owned())]);
    assert_eq!(h.counters().dropped_expired, 0);
}

#[test]
fn a_queued_message_that_expires_before_resume_is_not_granted() {
    let mut h = Harness::new();
    h.offline_subscriber("c1", 3600, &[subscription("a/+", QoS::AtLeastOnce)]);
    h.publish(shared(Message { expires_at: Some(after_s(5)), ..message("a/b", "short-lived") }), T0);
    h.publish(plain("a/b", "lasting"), T0);
    h.publish(shared(Message { expires_at: Some(after_s(60)), ..message("a/b", "long-lived") }), T0);
    assert_eq!(h.queue_of("c1"), ["short-lived", "lasting", "long-lived"]);

    let (grant, _) = h.claim(GW1, claim("c1", false, 3600), after_s(6));

    assert_eq!(names(&grant.queued), ["lasting", "long-lived"]);
    assert_eq!(h.counters().dropped_expired, 1);
}

// ---------------------------------------------------------------------------
// Handover of a taken-over connection's unacknowledged messages
// ---------------------------------------------------------------------------

#[test]
fn a_taken_over_connections_unacknowledged_messages_go_to_the_new_connection() {
    let mut h = Harness::new();
    let old = h.connect(GW1, "c1", 3600);
    let new = h.claim(GW2, claim("c1", false, 3600), T0).0.epoch;
    let mut stale = release("c1", old, 3600, true);
    stale.pending = vec![pending(plain("a/b", "m1"), true), pending(plain("a/b", "m2"), false)];

    let effects = h.release(GW1, stale, T0);

    let [(gateway, Downlink::Handover { session, epoch, pending })] = effects.as_slice() else {
        panic!("expected one handover, got {effects:?}");
    };
    assert_eq!((*gateway, session, *epoch), (GW2, &key("c1"), new));
    assert_eq!(names(pending), ["m1", "m2"]);
    assert_eq!(h.counters().handed_over, 1);
    assert_eq!(h.counters().wills_published, 0, "a taken-over connection publishes no will");
    let record = h.state.session(&key("c1")).expect("session continues");
    assert_eq!((record.owner, record.epoch), (Some(GW2), new));
}

#[test]
fn handed_over_messages_are_queued_first_when_the_new_connection_is_gone_too() {
    let mut h = Harness::new();
    let old = h.connect(GW1, "c1", 3600);
    let new = h.claim(GW2, claim("c1", false, 3600), T0).0.epoch;
    h.subscribe(GW2, "c1", new, vec![(subscription("a/#", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("subscribed");
    h.release(GW2, release("c1", new, 3600, false), T0);
    h.publish(plain("a/b", "later"), T0);
    let mut stale = release("c1", old, 3600, false);
    stale.pending = vec![pending(plain("a/b", "held"), true)];

    assert_eq!(h.release(GW1, stale, T0), []);
    assert_eq!(h.queue_of("c1"), ["held", "later"]);
}

#[test]
fn a_transient_session_gets_no_handover() {
    let mut h = Harness::new();
    let old = h.connect(GW1, "c1", 0);
    h.claim(GW2, claim("c1", false, 0), T0);
    let mut stale = release("c1", old, 0, false);
    stale.pending = vec![pending(plain("a/b", "m1"), true)];
    assert_eq!(h.release(GW1, stale, T0), []);
    assert_eq!(h.counters().stale_epoch_refused, 1);
}

// ---------------------------------------------------------------------------
// A gateway that is gone
// ---------------------------------------------------------------------------

#[test]
fn a_gone_gateways_routes_are_removed_and_its_sessions_end() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["a/#"]);
    h.add_routes(GW2, &app(), &["a/#"]);
    h.claim(GW1, with_will(claim("transient", true, 0), "will/t", "w", 0), T0);
    let persistent = h.connect(GW1, "persistent", 3600);
    h.subscribe(
        GW1,
        "persistent",
        persistent,
        vec![(subscription("p/#", QoS::AtLeastOnce), RetainedLookup::Skip)],
    )
    .expect("subscribed");
    h.connect(GW2, "elsewhere", 0);

    let mut effects = Vec::new();
    h.state.gateway_gone(GW1, T0, &mut effects);

    assert_eq!(h.counters().wills_published, 1, "the transient session's will");
    assert!(h.state.session(&key("transient")).is_none());
    let record = h.state.session(&key("persistent")).expect("persistent sessions outlive their gateway");
    assert_eq!(record.owner, None);
    assert!(h.state.session(&key("elsewhere")).is_some_and(|r| r.owner == Some(GW2)));
    assert_eq!(
        deliveries(&h.publish(plain("a/b", "m1"), T0)),
        [(GW2, "m1".to_string())],
        "GW1's route is gone"
    );
    h.publish(with_qos("p/1", "queued", QoS::AtLeastOnce), T0);
    assert_eq!(h.queue_of("persistent"), ["queued"]);
}

// ---------------------------------------------------------------------------
// Deliveries still in flight to a released connection
// ---------------------------------------------------------------------------

#[test]
fn late_deliveries_of_a_released_connection_queue_between_its_pending_and_newer_messages() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "c1", 3600);
    h.subscribe(GW1, "c1", epoch, vec![(subscription("a/+", QoS::AtLeastOnce), RetainedLookup::Skip)])
        .expect("subscribed");
    let ended = Release {
        pending: vec![pending(plain("a/b", "pending"), true)],
        ..release("c1", epoch, 3600, false)
    };
    h.release(GW1, ended, T0);
    h.publish(plain("a/b", "newer"), T0);
    let late = vec![pending(plain("a/b", "late1"), false), pending(plain("a/b", "late2"), false)];
    assert_eq!(h.apply(GW1, Uplink::Requeue { session: key("c1"), epoch, messages: late }, T0), []);
    assert_eq!(h.queue_of("c1"), ["pending", "late1", "late2", "newer"]);
}

#[test]
fn late_deliveries_go_to_the_sessions_new_connection_and_are_refused_for_strangers() {
    let mut h = Harness::new();
    let old = h.connect(GW1, "c1", 3600);
    h.release(GW1, release("c1", old, 3600, false), T0);
    let new = h.claim(GW2, claim("c1", false, 3600), T0).0.epoch;
    let late = vec![pending(plain("a/b", "late"), false)];
    let effects =
        h.apply(GW1, Uplink::Requeue { session: key("c1"), epoch: old, messages: late.clone() }, T0);
    assert_eq!(
        effects,
        [(GW2, Downlink::Handover { session: key("c1"), epoch: new, pending: late.clone() })]
    );

    let transient = h.connect(GW1, "t1", 0);
    h.release(GW1, release("t1", transient, 0, false), T0);
    assert_eq!(
        h.apply(GW1, Uplink::Requeue { session: key("t1"), epoch: transient, messages: late }, T0),
        []
    );
}

// ---------------------------------------------------------------------------
// Shared subscription groups
// ---------------------------------------------------------------------------

#[test]
fn a_group_spreads_messages_over_its_gateways_one_gateway_per_message() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["$share/workers/jobs/+"]);
    h.add_routes(GW2, &app(), &["$share/workers/jobs/+", "$share/audit/jobs/#"]);
    let mut per_gateway = HashMap::new();
    for n in 0..10 {
        let effects = h.publish(with_qos("jobs/x", "job", QoS::AtLeastOnce), after_ms(n));
        let shared = shared_deliveries(&effects);
        let workers: Vec<_> = shared.iter().filter(|(_, f, _)| f.starts_with("$share/workers")).collect();
        assert_eq!(workers.len(), 1, "one gateway of the group per message: {shared:?}");
        *per_gateway.entry(workers[0].0).or_insert(0) += 1;
        assert!(
            shared.iter().any(|(g, f, _)| *g == GW2 && f == "$share/audit/jobs/#"),
            "every group gets it"
        );
    }
    assert_eq!((per_gateway[&GW1], per_gateway[&GW2]), (5, 5), "round robin");
}

#[test]
fn a_group_without_members_queues_qos1_and_gives_it_to_the_first_gateway_that_joins() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["$share/g/t"]);
    h.remove_routes(GW1, &app(), &["$share/g/t"]);
    h.publish(with_qos("t", "kept", QoS::AtLeastOnce), T0);
    h.publish(with_qos("t", "fleeting", QoS::AtMostOnce), T0);
    let filter = TopicFilter::new("$share/g/t").expect("filter");
    assert_eq!(h.state.group_backlog(&app(), &filter), 1);
    assert_eq!(h.counters().dropped_shared_no_member, 1);

    let effects = h.apply(GW2, Uplink::Routes { add: vec![(app(), filter.clone())], remove: Vec::new() }, T0);
    assert_eq!(shared_deliveries(&effects), [(GW2, "$share/g/t".to_owned(), "kept".to_owned())]);
    assert_eq!(h.state.group_backlog(&app(), &filter), 0);
}

#[test]
fn messages_a_member_could_not_take_go_to_another_gateway_of_the_group() {
    let mut h = Harness::new();
    h.add_routes(GW1, &app(), &["$share/g/t"]);
    h.add_routes(GW2, &app(), &["$share/g/t"]);
    h.remove_routes(GW1, &app(), &["$share/g/t"]);
    let filter = TopicFilter::new("$share/g/t").expect("filter");
    let effects = h.apply(
        GW1,
        Uplink::Redispatch { filter, messages: vec![with_qos("t", "orphan", QoS::AtLeastOnce)] },
        T0,
    );
    assert_eq!(shared_deliveries(&effects), [(GW2, "$share/g/t".to_owned(), "orphan".to_owned())]);
}

#[test]
fn an_offline_member_of_a_group_does_not_queue_the_groups_messages() {
    let mut h = Harness::new();
    let epoch = h.connect(GW1, "member", 3600);
    h.subscribe(
        GW1,
        "member",
        epoch,
        vec![(subscription("$share/g/t", QoS::AtLeastOnce), RetainedLookup::Skip)],
    )
    .expect("subscribed");
    h.release(GW1, release("member", epoch, 3600, false), T0);
    h.publish(with_qos("t", "for-the-group", QoS::AtLeastOnce), T0);
    assert_eq!(h.queue_of("member"), Vec::<String>::new(), "the group keeps it, not one member");
    let filter = TopicFilter::new("$share/g/t").expect("filter");
    assert_eq!(h.state.group_backlog(&app(), &filter), 1);
}

#[test]
fn a_message_published_while_a_session_resumes_reaches_its_new_gateway() {
    let mut h = Harness::new();
    h.offline_subscriber("c1", 3600, &[subscription("a/+", QoS::AtLeastOnce)]);
    h.claim(GW2, claim("c1", false, 3600), T0);
    // Before GW2 has sent a route change of its own.
    assert_eq!(
        deliveries(&h.publish(with_qos("a/b", "during", QoS::AtLeastOnce), T0)),
        [(GW2, "during".to_owned())]
    );
}

#[test]
fn late_deliveries_of_an_older_connection_still_queue_when_the_session_is_offline_again() {
    let mut h = Harness::new();
    let first = h.connect(GW1, "c1", 3600);
    h.release(GW1, release("c1", first, 3600, false), T0);
    let second = h.claim(GW2, claim("c1", false, 3600), T0).0.epoch;
    h.release(GW2, release("c1", second, 3600, false), T0);
    let late = vec![pending(plain("a/b", "late"), false)];
    assert_eq!(h.apply(GW1, Uplink::Requeue { session: key("c1"), epoch: first, messages: late }, T0), []);
    assert_eq!(h.queue_of("c1"), ["late"]);
}

#[path = "journal_tests.rs"]
mod journal;

#[path = "lease_tests.rs"]
mod leases;

#[path = "push_tests.rs"]
mod push;

#[path = "fanout_tests.rs"]
mod fanout;

#[path = "api_keys_tests.rs"]
mod api_keys;

#[path = "device_users_tests.rs"]
mod device_users;

#[path = "inbox_tests.rs"]
mod inbox;

#[path = "registry_tests.rs"]
mod registry;
