//! Tests of the session state machine: packets, router replies and
//! deliveries in, actions out.

use super::*;
use crate::auth::ConfigAuthenticator;
use crate::handshake::accept;
use bytes::Bytes;
use herald_core::{AppId, ErrorCode};
use herald_mqtt::{Connect, SubscriptionOptions};

const NOW: UnixMillis = UnixMillis(1_000_000);
const REQUEST_BASE: u64 = 7 << 24;
const EPOCH: Epoch = Epoch { generation: 1, counter: 4 };

// ---------------------------------------------------------------- builders

fn limits() -> SessionLimits {
    SessionLimits::default()
}

fn connect_v5() -> Connect {
    Connect::new(ProtocolVersion::V5, "dev-1")
}

fn connect_v311() -> Connect {
    Connect::new(ProtocolVersion::V311, "dev-1")
}

/// A v5 CONNECT stating a receive maximum (the outbound window).
fn connect_window(window: u16) -> Connect {
    let mut connect = connect_v5();
    connect.properties.push(Property::ReceiveMaximum(window));
    connect
}

/// A v5 CONNECT asking for a persistent session.
fn connect_persistent(expiry: u32, window: u16) -> Connect {
    let mut connect = connect_window(window);
    connect.properties.push(Property::SessionExpiryInterval(expiry));
    connect
}

fn id(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero")
}

fn publish(topic: &str, qos: QoS, packet_id: u16) -> Publish {
    let mut publish = Publish::new(topic, Bytes::from_static(b"payload"));
    publish.qos = qos;
    publish.packet_id = NonZeroU16::new(packet_id);
    publish
}

fn subscribe(filters: &[(&str, QoS)]) -> Subscribe {
    let filters = filters.iter().map(|(f, q)| (ByteString::from(*f), SubscriptionOptions::new(*q))).collect();
    Subscribe { packet_id: id(9), properties: Properties::default(), filters }
}

fn subscribe_with(filter: &str, options: SubscriptionOptions) -> Subscribe {
    Subscribe { packet_id: id(9), properties: Properties::default(), filters: vec![(filter.into(), options)] }
}

fn unsubscribe(filters: &[&str]) -> Unsubscribe {
    let filters = filters.iter().map(|f| ByteString::from(*f)).collect();
    Unsubscribe { packet_id: id(10), properties: Properties::default(), filters }
}

fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).expect("valid filter")
}

/// A message with an id of its own (a session tells deliveries apart by id).
fn message(topic: &str, payload: &'static [u8]) -> Message {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(500);
    Message {
        id: MessageId(u128::from(NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed))),
        app: AppId::default_app(),
        topic: Topic::new(topic).expect("valid topic"),
        payload: Bytes::from_static(payload),
        qos: QoS::ExactlyOnce,
        retain: false,
        created_at: NOW,
        expires_at: None,
        origin: None,
        properties: None,
        trace: None,
    }
}

fn queued_message(message: Message, qos: QoS) -> QueuedMessage {
    QueuedMessage {
        message: Arc::new(message),
        qos,
        subscription_ids: Vec::new(),
        progress: Progress::Unsent,
        shared: None,
    }
}

fn queued(payload: &'static [u8], qos: QoS) -> QueuedMessage {
    queued_message(message("news/a", payload), qos)
}

/// A session under test, with a message-id counter and a settable clock.
struct Harness {
    session: Session,
    accepted: Accepted,
    ids: u128,
    now: UnixMillis,
}

impl Harness {
    fn new(connect: Connect, limits: SessionLimits) -> Harness {
        let accepted = accept(
            &connect,
            &limits,
            crate::handshake::Identity::Password(&ConfigAuthenticator::anonymous()),
            || "generated".to_owned(),
            MessageId(1),
            NOW,
        )
        .expect("connect accepted");
        let session = Session::new(&accepted, Arc::new(limits), EPOCH, REQUEST_BASE);
        Harness { session, accepted, ids: 100, now: NOW }
    }

    fn v5() -> Harness {
        Harness::new(connect_v5(), limits())
    }

    fn v311() -> Harness {
        Harness::new(connect_v311(), limits())
    }

    fn packet(&mut self, packet: Packet) -> Vec<Action> {
        let mut out = Vec::new();
        let ids = &mut self.ids;
        let mut new_id = || {
            *ids += 1;
            MessageId(*ids)
        };
        self.session.on_packet(packet, self.now, &mut new_id, &mut out);
        out
    }

    fn publish(&mut self, publish: Publish) -> Vec<Action> {
        self.packet(Packet::Publish(publish))
    }

    fn reply(&mut self, reply: Downlink) -> Vec<Action> {
        let mut out = Vec::new();
        self.session.on_reply(reply, self.now, &mut out);
        out
    }

    fn published(&mut self, request: RequestId, result: Result<bool, ErrorCode>) -> Vec<Action> {
        self.reply(Downlink::Published { request, result })
    }

    fn deliver(&mut self, queued: QueuedMessage) -> Vec<Action> {
        let mut out = Vec::new();
        self.session.deliver(queued, self.now, &mut out);
        out
    }

    /// Delivers `count` QoS 1 messages with payloads "m0", "m1", …
    fn deliver_many(&mut self, count: usize) -> Vec<Action> {
        const PAYLOADS: [&[u8]; 8] = [b"m0", b"m1", b"m2", b"m3", b"m4", b"m5", b"m6", b"m7"];
        PAYLOADS[..count].iter().flat_map(|p| self.deliver(queued(p, QoS::AtLeastOnce))).collect()
    }

    /// Sends a SUBSCRIBE and the router's empty success reply.
    fn subscribed(&mut self, subscribe: Subscribe) -> Vec<Action> {
        let mut out = self.packet(Packet::Subscribe(subscribe));
        let request = subscribe_request(&out);
        out.extend(self.reply(Downlink::Subscribed { request, result: Ok(Vec::new()) }));
        out
    }
}

// -------------------------------------------------------------- extractors

fn packets(actions: &[Action]) -> Vec<&Packet> {
    actions.iter().filter_map(|a| if let Action::Send(p) = a { Some(p) } else { None }).collect()
}

fn published_packets(actions: &[Action]) -> Vec<&Publish> {
    packets(actions)
        .into_iter()
        .filter_map(|p| if let Packet::Publish(p) = p { Some(p) } else { None })
        .collect()
}

fn uplinks(actions: &[Action]) -> Vec<&Uplink> {
    actions.iter().filter_map(|a| if let Action::Uplink(u) = a { Some(u) } else { None }).collect()
}

fn closed(actions: &[Action]) -> Option<&Close> {
    actions.iter().find_map(|a| if let Action::Close(c) = a { Some(c) } else { None })
}

fn close_reason(actions: &[Action]) -> ReasonCode {
    closed(actions).unwrap_or_else(|| panic!("expected a close, got {actions:?}")).reason
}

/// Returns the routed publish of `actions`, which must be the only action.
fn routed(actions: &[Action]) -> &herald_proto::seam::Publish {
    match actions {
        [Action::Uplink(Uplink::Publish(publish))] => publish,
        other => panic!("expected exactly one routed publish, got {other:?}"),
    }
}

fn publish_request(actions: &[Action]) -> RequestId {
    routed(actions).request.expect("QoS 1/2 publishes carry a request id")
}

fn subscribe_request(actions: &[Action]) -> RequestId {
    match uplinks(actions).as_slice() {
        [Uplink::Subscribe { request, .. }] => *request,
        other => panic!("expected one subscribe uplink, got {other:?}"),
    }
}

fn subscribe_uplink(actions: &[Action]) -> &[(herald_proto::seam::Subscription, RetainedLookup)] {
    match uplinks(actions).as_slice() {
        [Uplink::Subscribe { subscriptions, .. }] => subscriptions,
        other => panic!("expected one subscribe uplink, got {other:?}"),
    }
}

fn single_ack(actions: &[Action]) -> (&'static str, &PubAck) {
    match actions {
        [Action::Send(Packet::PubAck(ack))] => ("PUBACK", ack),
        [Action::Send(Packet::PubRec(ack))] => ("PUBREC", ack),
        [Action::Send(Packet::PubRel(ack))] => ("PUBREL", ack),
        [Action::Send(Packet::PubComp(ack))] => ("PUBCOMP", ack),
        other => panic!("expected exactly one acknowledgement, got {other:?}"),
    }
}

fn payloads(actions: &[Action]) -> Vec<&[u8]> {
    published_packets(actions).iter().map(|p| p.payload.as_ref()).collect()
}

fn pending_payloads(release: &Release) -> Vec<(&[u8], bool)> {
    release.pending.iter().map(|q| (q.message.payload.as_ref(), q.progress != Progress::Unsent)).collect()
}

// ------------------------------------------------------- inbound publishes

#[test]
fn qos1_publish_is_routed_with_request_and_epoch_and_acked_only_after_the_reply() {
    let mut h = Harness::v5();
    let out = h.publish(publish("news/a", QoS::AtLeastOnce, 5));
    let routed = routed(&out);
    assert_eq!(routed.request, Some(REQUEST_BASE | 1));
    assert_eq!(routed.from, Some((h.session.key().clone(), EPOCH)));
    assert_eq!(routed.message.topic.as_str(), "news/a");
    assert_eq!(routed.message.qos, QoS::AtLeastOnce);
    assert_eq!(routed.message.id, MessageId(101));
    assert_eq!(routed.message.origin.as_ref().map(|c| c.as_str()), Some("dev-1"));

    let request = publish_request(&out);
    let out = h.published(request, Ok(true));
    assert_eq!(out, vec![Action::Send(Packet::PubAck(PubAck::new(id(5))))]);
}

#[test]
fn qos0_publish_is_routed_without_request_and_never_acked() {
    let mut h = Harness::v5();
    let out = h.publish(publish("news/a", QoS::AtMostOnce, 0));
    assert_eq!(routed(&out).request, None);
}

#[test]
fn no_matching_subscribers_is_0x10_for_v5_and_success_for_v311() {
    let mut h = Harness::v5();
    let request = publish_request(&h.publish(publish("news/a", QoS::AtLeastOnce, 5)));
    let out = h.published(request, Ok(false));
    assert_eq!(single_ack(&out).1.reason_code, ReasonCode::NoMatchingSubscribers);

    let mut h = Harness::v311();
    let request = publish_request(&h.publish(publish("news/a", QoS::AtLeastOnce, 5)));
    let out = h.published(request, Ok(false));
    assert_eq!(out, vec![Action::Send(Packet::PubAck(PubAck::new(id(5))))]);
}

#[test]
fn a_stale_epoch_reply_closes_as_taken_over_without_the_will() {
    let mut h = Harness::v5();
    let request = publish_request(&h.publish(publish("news/a", QoS::AtLeastOnce, 5)));
    let out = h.published(request, Err(ErrorCode::StaleEpoch));
    let close = closed(&out).expect("closed");
    assert_eq!(close.reason, ReasonCode::SessionTakenOver);
    assert!(!close.publish_will);
    assert!(packets(&out).is_empty(), "no PUBACK: {out:?}");
}

#[test]
fn qos2_publish_is_received_exactly_once() {
    let mut h = Harness::v5();
    let out = h.publish(publish("news/a", QoS::ExactlyOnce, 7));
    assert!(packets(&out).is_empty(), "PUBREC before the router replied: {out:?}");
    let request = publish_request(&out);
    assert_eq!(h.published(request, Ok(true)), vec![Action::Send(Packet::PubRec(PubAck::new(id(7))))]);

    let mut resent = publish("news/a", QoS::ExactlyOnce, 7);
    resent.dup = true;
    let out = h.publish(resent);
    assert_eq!(out, vec![Action::Send(Packet::PubRec(PubAck::new(id(7))))], "routed twice");

    let out = h.packet(Packet::PubRel(PubAck::new(id(7))));
    assert_eq!(out, vec![Action::Send(Packet::PubComp(PubAck::new(id(7))))]);

    // The id is free again: a new publish with it is a new message.
    let out = h.publish(publish("news/a", QoS::ExactlyOnce, 7));
    assert!(routed(&out).request.is_some());
}

#[test]
fn requests_no_router_answers_in_time_get_0x80_in_order_and_late_replies_are_ignored() {
    let mut h = Harness::v5();
    let first = publish_request(&h.publish(publish("a", QoS::AtLeastOnce, 5)));
    h.now = UnixMillis(NOW.0 + 1_000);
    let out = h.packet(Packet::Subscribe(subscribe(&[("s/#", QoS::AtLeastOnce)])));
    let second = subscribe_request(&out);
    h.now = UnixMillis(NOW.0 + 2_000);
    let third = publish_request(&h.publish(publish("b", QoS::ExactlyOnce, 6)));
    assert_eq!(h.session.oldest_awaiting(), Some(NOW));
    // The third is answered; the first two are not.
    assert!(h.published(third, Ok(true)).is_empty(), "acks leave in request order");
    let mut out = Vec::new();
    assert!(h.session.expire_requests(UnixMillis(NOW.0 + 9_999), 10_000, &mut out).is_empty());
    assert!(out.is_empty(), "nothing is overdue yet: {out:?}");
    let given_up = h.session.expire_requests(UnixMillis(NOW.0 + 11_500), 10_000, &mut out);
    assert_eq!(given_up, [first, second], "the subscribe waited 10.5 s: overdue too");
    match packets(&out).as_slice() {
        [Packet::PubAck(failed), Packet::SubAck(suback), Packet::PubRec(answered)] => {
            assert_eq!((failed.packet_id, failed.reason_code), (id(5), ReasonCode::UnspecifiedError));
            assert!(failed.properties.reason_string().is_some_and(|r| r.contains("no router")), "{failed:?}");
            assert_eq!(suback.reason_codes, [ReasonCode::UnspecifiedError]);
            assert_eq!((answered.packet_id, answered.reason_code), (id(6), ReasonCode::Success));
        }
        other => panic!("PUBACK 0x80, SUBACK 0x80, then the answered PUBREC expected: {other:?}"),
    }
    assert!(
        out.iter().any(|a| matches!(a, Action::RemoveLocal(f) if *f == filter("s/#"))),
        "the refused subscription is not kept: {out:?}"
    );
    assert!(h.session.subscriptions().is_empty());
    assert_eq!(h.session.oldest_awaiting(), None);
    // A reply that comes after all is ignored: the client was told.
    assert!(h.published(first, Ok(true)).is_empty());
}

#[test]
fn a_v311_publish_no_router_answers_in_time_closes_the_connection() {
    let mut h = Harness::v311();
    let request = publish_request(&h.publish(publish("a", QoS::AtLeastOnce, 5)));
    let mut out = Vec::new();
    assert_eq!(h.session.expire_requests(UnixMillis(NOW.0 + 10_000), 10_000, &mut out), [request]);
    assert_eq!(close_reason(&out), ReasonCode::ServerUnavailable, "3.1.1 has no negative PUBACK");
}

#[test]
fn pubrel_for_an_unknown_id_is_0x92_in_v5_and_success_in_v311() {
    let out = Harness::v5().packet(Packet::PubRel(PubAck::new(id(3))));
    let (kind, ack) = single_ack(&out);
    assert_eq!((kind, ack.reason_code), ("PUBCOMP", ReasonCode::PacketIdentifierNotFound));

    let out = Harness::v311().packet(Packet::PubRel(PubAck::new(id(3))));
    assert_eq!(out, vec![Action::Send(Packet::PubComp(PubAck::new(id(3))))]);
}

#[test]
fn v5_publish_to_a_dollar_topic_is_refused_with_a_reason_string_and_not_routed() {
    let mut h = Harness::v5();
    let out = h.publish(publish("$foo", QoS::AtLeastOnce, 4));
    let (kind, ack) = single_ack(&out);
    assert_eq!((kind, ack.packet_id, ack.reason_code), ("PUBACK", id(4), ReasonCode::TopicNameInvalid));
    assert!(ack.properties.reason_string().is_some_and(|s| !s.is_empty()));
    assert_eq!(h.session.counters().publishes_refused, 1);
}

#[test]
fn refusals_carry_no_reason_string_when_problem_information_is_off() {
    let mut connect = connect_v5();
    connect.properties.push(Property::RequestProblemInformation(0));
    let mut h = Harness::new(connect, limits());
    let out = h.publish(publish("$foo", QoS::AtLeastOnce, 4));
    let (_, ack) = single_ack(&out);
    assert_eq!(ack.reason_code, ReasonCode::TopicNameInvalid);
    assert!(ack.properties.is_empty(), "{:?}", ack.properties);
}

#[test]
fn v5_qos2_refusal_is_an_error_pubrec() {
    let out = Harness::v5().publish(publish("$foo", QoS::ExactlyOnce, 4));
    let (kind, ack) = single_ack(&out);
    assert_eq!((kind, ack.reason_code), ("PUBREC", ReasonCode::TopicNameInvalid));
}

#[test]
fn v311_publish_to_a_dollar_topic_closes_the_connection() {
    let out = Harness::v311().publish(publish("$foo", QoS::AtLeastOnce, 4));
    assert_eq!(close_reason(&out), ReasonCode::TopicNameInvalid);
    assert!(uplinks(&out).is_empty());
    assert!(packets(&out).is_empty());
}

#[test]
fn payload_format_1_with_invalid_utf8_is_refused_0x99() {
    let mut h = Harness::v5();
    let mut bad = publish("news/a", QoS::AtLeastOnce, 4);
    bad.payload = Bytes::from_static(&[0xff, 0xfe]);
    bad.properties.push(Property::PayloadFormatIndicator(1));
    let out = h.publish(bad);
    let (_, ack) = single_ack(&out);
    assert_eq!(ack.reason_code, ReasonCode::PayloadFormatInvalid);

    // Valid UTF-8 with the same indicator is routed.
    let mut good = publish("news/a", QoS::AtLeastOnce, 5);
    good.properties.push(Property::PayloadFormatIndicator(1));
    assert!(routed(&h.publish(good)).request.is_some());
}

#[test]
fn more_unacknowledged_publishes_than_the_receive_maximum_close_0x93() {
    let mut h = Harness::new(connect_v5(), SessionLimits { receive_maximum: 2, ..limits() });
    let first = publish_request(&h.publish(publish("news/a", QoS::AtLeastOnce, 1)));
    publish_request(&h.publish(publish("news/a", QoS::ExactlyOnce, 2)));
    let out = h.publish(publish("news/a", QoS::AtLeastOnce, 3));
    assert_eq!(close_reason(&out), ReasonCode::ReceiveMaximumExceeded);
    assert!(uplinks(&out).is_empty());

    // Once one is acknowledged, there is room again; QoS 0 never counts.
    h.published(first, Ok(true));
    assert!(routed(&h.publish(publish("news/a", QoS::AtLeastOnce, 3))).request.is_some());
    assert_eq!(routed(&h.publish(publish("news/a", QoS::AtMostOnce, 0))).request, None);
}

#[test]
fn pending_subscribes_do_not_count_against_the_receive_maximum() {
    let mut h = Harness::new(connect_v5(), SessionLimits { receive_maximum: 1, ..limits() });
    h.packet(Packet::Subscribe(subscribe(&[("news/#", QoS::AtLeastOnce)])));
    let out = h.publish(publish("news/a", QoS::AtLeastOnce, 1));
    // [MQTT-3.3.4-9] counts only PUBLISH packets without PUBACK/PUBCOMP;
    // a SUBSCRIBE waiting for the router is not one.
    assert!(closed(&out).is_none(), "closed with no publish outstanding: {out:?}");
    assert!(routed(&out).request.is_some());
}

// ------------------------------------------------------------ topic aliases

#[test]
fn a_topic_alias_is_set_by_a_publish_with_topic_and_resolved_by_one_without() {
    let mut h = Harness::v5();
    let mut first = publish("news/a", QoS::AtMostOnce, 0);
    first.properties.push(Property::TopicAlias(3));
    assert_eq!(routed(&h.publish(first)).message.topic.as_str(), "news/a");

    let mut second = publish("", QoS::AtMostOnce, 0);
    second.properties.push(Property::TopicAlias(3));
    let out = h.publish(second);
    assert_eq!(routed(&out).message.topic.as_str(), "news/a");
}

#[test]
fn a_topic_alias_of_0_or_above_the_maximum_closes_0x94() {
    for alias in [0, 6] {
        let mut h = Harness::new(connect_v5(), SessionLimits { topic_alias_maximum: 5, ..limits() });
        let mut aliased = publish("news/a", QoS::AtMostOnce, 0);
        aliased.properties.push(Property::TopicAlias(alias));
        let out = h.publish(aliased);
        assert_eq!(close_reason(&out), ReasonCode::TopicAliasInvalid, "alias {alias}");
        assert!(uplinks(&out).is_empty());
    }
}

#[test]
fn an_unknown_topic_alias_without_a_topic_is_a_protocol_error() {
    let mut h = Harness::v5();
    let mut aliased = publish("", QoS::AtMostOnce, 0);
    aliased.properties.push(Property::TopicAlias(2));
    let out = h.publish(aliased);
    assert_eq!(close_reason(&out), ReasonCode::ProtocolError);
    assert!(uplinks(&out).is_empty());
}

// ------------------------------------------------------------ outbound flow

#[test]
fn deliveries_beyond_the_client_receive_maximum_wait_for_pubacks() {
    let mut h = Harness::new(connect_window(2), limits());
    let out = h.deliver_many(5);
    let sent = published_packets(&out);
    assert_eq!(payloads(&out), [b"m0", b"m1"]);
    let ids: Vec<_> = sent.iter().map(|p| p.packet_id.expect("QoS 1 has a packet id")).collect();
    assert_ne!(ids[0], ids[1]);
    assert!(sent.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
    assert_eq!(h.session.outbound_backlog(), 5);

    let out = h.packet(Packet::PubAck(PubAck::new(ids[0])));
    assert_eq!(payloads(&out), [b"m2"]);
    let third = published_packets(&out)[0].packet_id.expect("packet id");
    assert_ne!(third, ids[1], "packet id still in flight reused");

    let out = h.packet(Packet::PubAck(PubAck::new(ids[1])));
    assert_eq!(payloads(&out), [b"m3"]);
    // An acknowledgement of an id not in flight frees nothing.
    assert!(h.packet(Packet::PubAck(PubAck::new(ids[1]))).is_empty());
    assert_eq!(h.session.outbound_backlog(), 3);
}

#[test]
fn a_full_waiting_queue_drops_the_newest_and_counts_it() {
    let mut h = Harness::new(connect_window(1), SessionLimits { max_queued_messages: 2, ..limits() });
    let out = h.deliver_many(4);
    assert_eq!(payloads(&out), [b"m0"]);
    assert_eq!(h.session.counters().dropped_queue_full, 1);
    assert_eq!(h.session.outbound_backlog(), 3);

    // Packet ids are allocated 1, 2, 3, …
    let out: Vec<_> = (1..=3).flat_map(|n| h.packet(Packet::PubAck(PubAck::new(id(n))))).collect();
    assert_eq!(payloads(&out), [b"m1", b"m2"], "m3 was the one dropped");
}

#[test]
fn qos0_deliveries_bypass_a_full_window() {
    let mut h = Harness::new(connect_window(1), limits());
    h.deliver_many(2);
    let out = h.deliver(queued(b"fast", QoS::AtMostOnce));
    let sent = published_packets(&out);
    assert_eq!(payloads(&out), [b"fast"]);
    assert_eq!((sent[0].qos, sent[0].packet_id), (QoS::AtMostOnce, None));
}

#[test]
fn expired_messages_are_not_sent_and_are_counted() {
    let mut h = Harness::new(connect_window(1), limits());
    let mut expired = message("news/a", b"old");
    expired.expires_at = Some(NOW);
    assert!(h.deliver(queued_message(expired, QoS::AtLeastOnce)).is_empty());
    assert_eq!(h.session.counters().dropped_expired, 1);

    // A message that expires while waiting behind the window is dropped
    // when its turn comes.
    let first = h.deliver(queued(b"m0", QoS::AtLeastOnce));
    let mut soon = message("news/a", b"soon");
    soon.expires_at = Some(NOW.plus_seconds(5));
    h.deliver(queued_message(soon, QoS::AtLeastOnce));
    h.deliver(queued(b"m1", QoS::AtLeastOnce));
    h.now = NOW.plus_seconds(10);
    let ack = published_packets(&first)[0].packet_id.expect("packet id");
    let out = h.packet(Packet::PubAck(PubAck::new(ack)));
    assert_eq!(payloads(&out), [b"m1"]);
    assert_eq!(h.session.counters().dropped_expired, 2);
}

#[test]
fn messages_larger_than_the_client_maximum_packet_size_are_dropped_and_counted() {
    let mut connect = connect_window(1);
    connect.properties.push(Property::MaximumPacketSize(64));
    let mut h = Harness::new(connect, limits());
    let big = queued_message(message("news/a", &[b'x'; 100]), QoS::AtLeastOnce);
    assert!(h.deliver(big).is_empty());
    assert_eq!(h.session.counters().dropped_too_large, 1);
    // The window is not taken by the dropped message.
    assert_eq!(payloads(&h.deliver(queued(b"small", QoS::AtLeastOnce))), [b"small"]);
}

#[test]
fn outbound_qos2_runs_publish_pubrec_pubrel_pubcomp_and_frees_the_window() {
    let mut h = Harness::new(connect_window(1), limits());
    let out = h.deliver(queued(b"q2", QoS::ExactlyOnce));
    let sent = published_packets(&out);
    assert_eq!(sent[0].qos, QoS::ExactlyOnce);
    let packet_id = sent[0].packet_id.expect("packet id");
    assert!(h.deliver(queued(b"next", QoS::AtLeastOnce)).is_empty(), "window of 1 is full");

    // A PUBACK does not end a QoS 2 exchange.
    assert!(h.packet(Packet::PubAck(PubAck::new(packet_id))).is_empty());
    let out = h.packet(Packet::PubRec(PubAck::new(packet_id)));
    assert_eq!(out, vec![Action::Send(Packet::PubRel(PubAck::new(packet_id)))]);
    let out = h.packet(Packet::PubComp(PubAck::new(packet_id)));
    assert_eq!(payloads(&out), [b"next"]);
}

#[test]
fn v5_deliveries_carry_the_message_properties_in_order() {
    let mut h = Harness::v5();
    let mut m = message("news/a", b"{}");
    m.expires_at = Some(NOW.plus_seconds(30));
    m.properties = Some(Box::new(MessageProperties {
        payload_format: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("replies/dev-1".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into()), ("b".into(), "3".into())],
    }));
    let mut delivery = queued_message(m, QoS::AtLeastOnce);
    delivery.subscription_ids = vec![3, 9];
    h.now = NOW.plus_seconds(10);
    let out = h.deliver(delivery);
    let expected: Properties = vec![
        Property::PayloadFormatIndicator(1),
        Property::ContentType("application/json".into()),
        Property::ResponseTopic("replies/dev-1".into()),
        Property::CorrelationData(Bytes::from_static(b"corr")),
        Property::UserProperty("b".into(), "2".into()),
        Property::UserProperty("a".into(), "1".into()),
        Property::UserProperty("b".into(), "3".into()),
        Property::MessageExpiryInterval(20),
        Property::SubscriptionIdentifier(3),
        Property::SubscriptionIdentifier(9),
    ]
    .into();
    assert_eq!(published_packets(&out)[0].properties, expected);
}

#[test]
fn v311_deliveries_carry_no_properties() {
    let mut h = Harness::v311();
    let mut m = message("news/a", b"{}");
    m.expires_at = Some(NOW.plus_seconds(30));
    m.properties = Some(Box::new(MessageProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("a".into(), "1".into())],
        ..MessageProperties::default()
    }));
    let mut delivery = queued_message(m, QoS::AtLeastOnce);
    delivery.subscription_ids = vec![3];
    let out = h.deliver(delivery);
    assert_eq!(payloads(&out), [b"{}"]);
    assert!(published_packets(&out)[0].properties.is_empty());
}

#[test]
fn v311_sessions_use_the_configured_inflight_window() {
    let mut h = Harness::new(connect_v311(), SessionLimits { max_inflight_v311: 2, ..limits() });
    assert_eq!(payloads(&h.deliver_many(3)), [b"m0", b"m1"]);
}

// ---------------------------------------------------------------- subscribe

#[test]
fn subscribe_adds_local_routes_before_the_uplink_and_subacks_after_the_reply() {
    let mut h = Harness::v5();
    let out = h.packet(Packet::Subscribe(subscribe(&[
        ("bad/#/filter", QoS::AtLeastOnce),
        ("a/+", QoS::AtLeastOnce),
        ("b", QoS::ExactlyOnce),
        ("c", QoS::AtMostOnce),
    ])));
    let local =
        |qos| LocalSubscription { qos, no_local: false, retain_as_published: false, identifier: None };
    assert_eq!(
        &out[..3],
        &[
            Action::AddLocal(filter("a/+"), local(QoS::AtLeastOnce)),
            Action::AddLocal(filter("b"), local(QoS::ExactlyOnce)),
            Action::AddLocal(filter("c"), local(QoS::AtMostOnce)),
        ]
    );
    assert!(matches!(out[3], Action::Uplink(Uplink::Subscribe { .. })) && out.len() == 4, "{out:?}");
    let filters: Vec<_> = subscribe_uplink(&out).iter().map(|(s, _)| s.filter.as_str()).collect();
    assert_eq!(filters, ["a/+", "b", "c"], "shared subscriptions are not sent to the router");
    assert!(packets(&out).is_empty(), "SUBACK before the router replied");

    let request = subscribe_request(&out);
    let out = h.reply(Downlink::Subscribed { request, result: Ok(Vec::new()) });
    // A v5 SUBACK with a failure says why: the first failure's reason
    // string and stable error code.
    let mut properties = Properties::default();
    properties.push(Property::ReasonString("topic filter invalid".into()));
    properties.push(Property::UserProperty("error".into(), "topic_filter_invalid".into()));
    let expected = SubAck {
        packet_id: id(9),
        properties,
        reason_codes: vec![
            ReasonCode::TopicFilterInvalid,
            ReasonCode::GrantedQos1,
            ReasonCode::GrantedQos2,
            ReasonCode::Success,
        ],
    };
    assert_eq!(out, vec![Action::Send(Packet::SubAck(expected))]);
    assert_eq!(h.session.subscriptions().len(), 3);
}

#[test]
fn a_refused_subscribe_suback_carries_the_error_for_accepted_filters() {
    let mut h = Harness::v5();
    let out = h
        .packet(Packet::Subscribe(subscribe(&[("bad/#/filter", QoS::AtLeastOnce), ("a", QoS::AtLeastOnce)])));
    let request = subscribe_request(&out);
    let out = h.reply(Downlink::Subscribed { request, result: Err(ErrorCode::QuotaExceeded) });
    match packets(&out).as_slice() {
        [Packet::SubAck(ack)] => {
            assert_eq!(ack.reason_codes, [ReasonCode::TopicFilterInvalid, ReasonCode::QuotaExceeded])
        }
        other => panic!("expected a SUBACK, got {other:?}"),
    }
}

#[test]
fn retained_messages_follow_the_suback_with_retain_set() {
    let mut h = Harness::v5();
    let out = h.packet(Packet::Subscribe(subscribe(&[("a/#", QoS::AtLeastOnce), ("b", QoS::AtMostOnce)])));
    let request = subscribe_request(&out);
    let retained = vec![(0, Arc::new(message("a/x", b"ra"))), (1, Arc::new(message("b", b"rb")))];
    let out = h.reply(Downlink::Subscribed { request, result: Ok(retained) });
    assert!(matches!(out[0], Action::Send(Packet::SubAck(_))), "{out:?}");
    let sent = published_packets(&out[1..]);
    assert_eq!(payloads(&out[1..]), [b"ra", b"rb"]);
    assert!(sent.iter().all(|p| p.retain), "{sent:?}");
    // Delivered at the minimum of the message's and the subscription's QoS.
    assert_eq!((sent[0].qos, sent[1].qos), (QoS::AtLeastOnce, QoS::AtMostOnce));
}

#[test]
fn retained_messages_queued_behind_a_full_window_keep_the_retain_flag() {
    let mut h = Harness::new(connect_window(1), limits());
    let first = h.deliver(queued(b"live", QoS::AtLeastOnce));
    let out = h.packet(Packet::Subscribe(subscribe(&[("a/#", QoS::AtLeastOnce)])));
    let request = subscribe_request(&out);
    let mut stored = message("a/x", b"retained");
    stored.retain = true;
    let out = h.reply(Downlink::Subscribed { request, result: Ok(vec![(0, Arc::new(stored))]) });
    assert!(published_packets(&out).is_empty(), "window of 1 is full");

    let ack = published_packets(&first)[0].packet_id.expect("packet id");
    let out = h.packet(Packet::PubAck(PubAck::new(ack)));
    assert_eq!(payloads(&out), [b"retained"]);
    // A message sent because of a new subscription has RETAIN=1
    // [MQTT-3.3.1-8], even when it waited behind a full window.
    assert!(published_packets(&out)[0].retain, "retained message sent with RETAIN=0");
}

#[test]
fn retain_handling_decides_the_retained_lookup() {
    let mut h = Harness::v5();
    let options = |handling| SubscriptionOptions {
        retain_handling: handling,
        ..SubscriptionOptions::new(QoS::AtLeastOnce)
    };
    let lookup = |h: &mut Harness, handling| {
        let out = h.subscribed(subscribe_with("a", options(handling)));
        let uplink = subscribe_uplink(&out);
        (uplink[0].1, uplink[0].0.retain_handling)
    };
    assert_eq!(lookup(&mut h, RetainHandling::SendAtSubscribeIfNew), (RetainedLookup::Send, 1));
    assert_eq!(lookup(&mut h, RetainHandling::SendAtSubscribeIfNew), (RetainedLookup::Skip, 1));
    assert_eq!(lookup(&mut h, RetainHandling::DoNotSend), (RetainedLookup::Skip, 2));
    assert_eq!(lookup(&mut h, RetainHandling::SendAtSubscribe), (RetainedLookup::Send, 0));

    let mut fresh = Harness::v5();
    assert_eq!(lookup(&mut fresh, RetainHandling::DoNotSend), (RetainedLookup::Skip, 2));
}

#[test]
fn the_subscription_identifier_reaches_the_local_index_and_the_router() {
    let mut h = Harness::v5();
    let mut sub = subscribe_with(
        "a/+",
        SubscriptionOptions {
            no_local: true,
            retain_as_published: true,
            ..SubscriptionOptions::new(QoS::AtLeastOnce)
        },
    );
    sub.properties.push(Property::SubscriptionIdentifier(42));
    let out = h.packet(Packet::Subscribe(sub));
    let expected = LocalSubscription {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        identifier: Some(42),
    };
    assert_eq!(out[0], Action::AddLocal(filter("a/+"), expected));
    let (subscription, _) = &subscribe_uplink(&out)[0];
    assert_eq!(subscription.identifier, Some(42));
    assert_eq!((subscription.no_local, subscription.retain_as_published), (true, true));
    assert_eq!(h.session.subscriptions(), &[(filter("a/+"), expected)]);
}

// -------------------------------------------------------------- unsubscribe

#[test]
fn unsubscribe_removes_existing_filters_and_unsubacks_after_the_reply() {
    let mut h = Harness::v5();
    h.subscribed(subscribe(&[("a", QoS::AtLeastOnce)]));
    let out = h.packet(Packet::Unsubscribe(unsubscribe(&["a", "b"])));
    assert_eq!(out[0], Action::RemoveLocal(filter("a")));
    let request = match &out[1..] {
        [Action::Uplink(Uplink::Unsubscribe { request, filters, epoch, .. })] => {
            assert_eq!(filters, &[filter("a"), filter("b")]);
            assert_eq!(*epoch, EPOCH);
            *request
        }
        other => panic!("expected one unsubscribe uplink, got {other:?}"),
    };
    assert!(h.session.subscriptions().is_empty());

    let out = h.reply(Downlink::Unsubscribed { request, result: Ok(()) });
    let expected = UnsubAck {
        packet_id: id(10),
        properties: Properties::default(),
        reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
    };
    assert_eq!(out, vec![Action::Send(Packet::UnsubAck(expected))]);
}

#[test]
fn v311_unsuback_has_no_reason_codes() {
    let mut h = Harness::v311();
    h.subscribed(subscribe(&[("a", QoS::AtLeastOnce)]));
    let out = h.packet(Packet::Unsubscribe(unsubscribe(&["a"])));
    let Some(Uplink::Unsubscribe { request, .. }) = uplinks(&out).first().copied() else {
        panic!("expected an unsubscribe uplink, got {out:?}");
    };
    let out = h.reply(Downlink::Unsubscribed { request: *request, result: Ok(()) });
    let expected =
        UnsubAck { packet_id: id(10), properties: Properties::default(), reason_codes: Vec::new() };
    assert_eq!(out, vec![Action::Send(Packet::UnsubAck(expected))]);
}

// --------------------------------------------------------------- disconnect

#[test]
fn a_normal_disconnect_closes_without_the_will_and_0x04_with_it() {
    let out = Harness::v5().packet(Packet::Disconnect(Disconnect::new(ReasonCode::Success)));
    let close = closed(&out).expect("closed");
    assert_eq!((close.reason, close.publish_will, close.notify), (ReasonCode::Success, false, false));

    let out = Harness::v5().packet(Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)));
    let close = closed(&out).expect("closed");
    assert_eq!((close.reason, close.publish_will), (ReasonCode::DisconnectWithWill, true));
}

#[test]
fn disconnect_may_not_raise_a_zero_session_expiry() {
    let mut disconnect = Disconnect::new(ReasonCode::Success);
    disconnect.properties.push(Property::SessionExpiryInterval(60));
    let mut h = Harness::v5();
    let out = h.packet(Packet::Disconnect(disconnect));
    assert_eq!(close_reason(&out), ReasonCode::ProtocolError);
    assert_eq!(h.session.release(false).expiry_seconds, 0);
}

#[test]
fn disconnect_changes_a_non_zero_session_expiry_within_the_cap() {
    let limits = SessionLimits { max_session_expiry_seconds: 1_000, ..limits() };
    for (requested, in_force) in [(30, 30), (5_000, 1_000), (0, 0)] {
        let mut h = Harness::new(connect_persistent(100, 10), limits.clone());
        let mut disconnect = Disconnect::new(ReasonCode::Success);
        disconnect.properties.push(Property::SessionExpiryInterval(requested));
        let out = h.packet(Packet::Disconnect(disconnect));
        assert_eq!(close_reason(&out), ReasonCode::Success);
        assert_eq!(h.session.release(false).expiry_seconds, in_force, "requested {requested}");
    }
}

// ------------------------------------------------------- release and resume

#[test]
fn release_of_a_persistent_session_returns_unacknowledged_then_waiting_messages() {
    let mut h = Harness::new(connect_persistent(100, 3), limits());
    let out = [
        h.deliver(queued(b"m0", QoS::AtLeastOnce)),
        h.deliver(queued(b"m1", QoS::ExactlyOnce)),
        h.deliver(queued(b"m2", QoS::AtLeastOnce)),
        h.deliver(queued(b"m3", QoS::AtLeastOnce)),
    ]
    .concat();
    let sent = published_packets(&out);
    h.packet(Packet::PubRec(PubAck::new(sent[1].packet_id.expect("packet id"))));

    let release = h.session.release(true);
    assert_eq!(release.session, *h.session.key());
    assert_eq!((release.epoch, release.expiry_seconds, release.publish_will), (EPOCH, 100, true));
    // m1 was PUBREC'd: it has arrived; only its PUBREL is outstanding.
    let ids: Vec<u16> = sent.iter().map(|p| p.packet_id.expect("packet id").get()).collect();
    let progress: Vec<(&[u8], Progress)> =
        release.pending.iter().map(|q| (q.message.payload.as_ref(), q.progress)).collect();
    assert_eq!(
        progress,
        [
            (&b"m0"[..], Progress::Sent(ids[0])),
            (b"m1", Progress::Released(ids[1])),
            (b"m2", Progress::Sent(ids[2])),
            (b"m3", Progress::Unsent),
        ]
    );
}

#[test]
fn release_keeps_the_order_messages_were_sent_in() {
    let mut h = Harness::new(connect_persistent(100, 3), limits());
    let out = h.deliver_many(3);
    let first = published_packets(&out)[0].packet_id.expect("packet id");
    h.packet(Packet::PubAck(PubAck::new(first)));
    let release = h.session.release(false);
    // Unacknowledged messages come back in the order they were sent, so a
    // resumed session resends them in order [MQTT-4.6.0-1].
    assert_eq!(pending_payloads(&release), [(&b"m1"[..], true), (b"m2", true)]);
}

#[test]
fn release_of_a_session_ending_with_its_connection_carries_nothing() {
    let mut h = Harness::new(connect_window(1), limits());
    h.deliver_many(3);
    let release = h.session.release(true);
    assert_eq!(release.expiry_seconds, 0);
    assert!(release.pending.is_empty());
}

#[test]
fn resume_restores_subscriptions_and_resends_redeliveries_with_dup() {
    let mut h = Harness::new(connect_persistent(100, 10), limits());
    let subscription = herald_proto::seam::Subscription {
        filter: filter("a/#"),
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: false,
        retain_handling: 0,
        identifier: Some(4),
    };
    let redelivery = QueuedMessage { progress: Progress::Sent(9), ..queued(b"again", QoS::AtLeastOnce) };
    let fresh = queued(b"new", QoS::AtLeastOnce);
    let mut out = Vec::new();
    h.session.resume(vec![subscription], vec![redelivery, fresh], NOW, &mut out);
    let local = LocalSubscription {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: false,
        identifier: Some(4),
    };
    assert_eq!(out[0], Action::AddLocal(filter("a/#"), local));
    let sent = published_packets(&out);
    assert_eq!(payloads(&out), [&b"again"[..], b"new"]);
    assert_eq!((sent[0].dup, sent[1].dup), (true, false));
    assert_eq!(h.session.subscriptions(), &[(filter("a/#"), local)]);
}

#[test]
fn a_delivery_perhaps_sent_before_goes_with_dup_under_a_new_packet_id() {
    let mut h = Harness::new(connect_persistent(100, 10), limits());
    let lost = QueuedMessage { progress: Progress::MaybeSent, ..queued(b"lost", QoS::AtLeastOnce) };
    let mut out = Vec::new();
    h.session.resume(Vec::new(), vec![lost], NOW, &mut out);
    let sent = published_packets(&out);
    assert_eq!((sent.len(), sent[0].dup, sent[0].packet_id.map(NonZeroU16::get)), (1, true, Some(1)));
}

#[test]
fn a_handover_skips_what_the_connection_holds_already() {
    let mut h = Harness::new(connect_persistent(100, 10), limits());
    let held = queued(b"held", QoS::AtLeastOnce);
    h.deliver(held.clone());
    let mut out = Vec::new();
    h.session.resume(Vec::new(), vec![held, queued(b"missed", QoS::AtLeastOnce)], NOW, &mut out);
    assert_eq!(payloads(&out), [&b"missed"[..]]);
}

#[test]
fn acknowledgements_of_a_persistent_session_take_messages_out_of_its_inbox() {
    let acked = |actions: &[Action]| -> Vec<MessageId> {
        actions.iter().filter_map(|a| if let Action::Acked(id) = a { Some(*id) } else { None }).collect()
    };
    let mut persistent = Harness::new(connect_persistent(100, 10), limits());
    let one = queued(b"one", QoS::AtLeastOnce);
    let two = queued(b"two", QoS::ExactlyOnce);
    let group = QueuedMessage { shared: Some(filter("$share/g/a/#")), ..queued(b"group", QoS::AtLeastOnce) };
    let ids = [one.message.id, two.message.id];
    for q in [one, two, group] {
        persistent.deliver(q);
    }
    assert_eq!(acked(&persistent.packet(Packet::PubAck(PubAck::new(id(1))))), [ids[0]]);
    assert_eq!(acked(&persistent.packet(Packet::PubRec(PubAck::new(id(2))))), [], "at PUBCOMP, not PUBREC");
    assert_eq!(acked(&persistent.packet(Packet::PubComp(PubAck::new(id(2))))), [ids[1]]);
    assert_eq!(acked(&persistent.packet(Packet::PubAck(PubAck::new(id(3))))), [], "a group's message");

    let mut transient = Harness::v5();
    transient.deliver(queued(b"one", QoS::AtLeastOnce));
    assert_eq!(acked(&transient.packet(Packet::PubAck(PubAck::new(id(1))))), [], "no inbox");
}

#[test]
fn how_far_a_persistent_sessions_qos2_deliveries_got_is_told_to_the_router() {
    let progressed = |actions: &[Action]| -> Vec<(MessageId, Progress)> {
        actions
            .iter()
            .filter_map(|a| if let Action::Progressed(id, p) = a { Some((*id, *p)) } else { None })
            .collect()
    };
    let mut persistent = Harness::new(connect_persistent(100, 10), limits());
    let exactly = queued(b"two", QoS::ExactlyOnce);
    let once = exactly.message.id;
    assert_eq!(progressed(&persistent.deliver(exactly)), [(once, Progress::Sent(1))]);
    assert_eq!(progressed(&persistent.deliver(queued(b"one", QoS::AtLeastOnce))), [], "QoS 1: not told");
    let rec = persistent.packet(Packet::PubRec(PubAck::new(id(1))));
    assert_eq!(progressed(&rec), [(once, Progress::Released(1))]);
    // Resent under the id the router has already: nothing new to tell.
    let resent = QueuedMessage { progress: Progress::Sent(7), ..queued(b"again", QoS::ExactlyOnce) };
    let mut out = Vec::new();
    let mut resumed = Harness::new(connect_persistent(100, 10), limits());
    resumed.session.resume(Vec::new(), vec![resent], NOW, &mut out);
    assert_eq!(progressed(&out), []);

    let mut transient = Harness::v5();
    assert_eq!(progressed(&transient.deliver(queued(b"two", QoS::ExactlyOnce))), [], "no inbox");
}

#[test]
fn deliveries_given_up_for_good_leave_a_persistent_sessions_inbox() {
    let acked = |actions: &[Action]| -> Vec<MessageId> {
        actions.iter().filter_map(|a| if let Action::Acked(id) = a { Some(*id) } else { None }).collect()
    };
    let mut h = Harness::new(connect_persistent(100, 10), limits());
    let stale = QueuedMessage {
        message: Arc::new(Message { expires_at: Some(NOW), ..message("news/a", b"old") }),
        ..queued(b"unused", QoS::AtLeastOnce)
    };
    let stale_id = stale.message.id;
    h.now = UnixMillis(NOW.0 + 1);
    assert_eq!(acked(&h.deliver(stale)), [stale_id], "expired before it could be sent");

    let refused = queued(b"refused", QoS::ExactlyOnce);
    let refused_id = refused.message.id;
    h.deliver(refused);
    let mut rec = PubAck::new(id(1));
    rec.reason_code = ReasonCode::UnspecifiedError;
    assert_eq!(acked(&h.packet(Packet::PubRec(rec))), [refused_id], "refused with an error PUBREC");
}

// ------------------------------------------------------ protocol violations

#[test]
fn a_second_connect_is_a_protocol_error() {
    let out = Harness::v5().packet(Packet::Connect(Box::new(connect_v5())));
    assert_eq!(close_reason(&out), ReasonCode::ProtocolError);
}

#[test]
fn server_only_packets_from_the_client_are_protocol_errors() {
    let suback = SubAck { packet_id: id(1), properties: Properties::default(), reason_codes: vec![] };
    for packet in
        [Packet::ConnAck(ConnAck::new(ReasonCode::Success)), Packet::SubAck(suback), Packet::PingResp]
    {
        let out = Harness::v5().packet(packet.clone());
        assert_eq!(close_reason(&out), ReasonCode::ProtocolError, "{packet:?}");
    }
}

#[test]
fn pingreq_gets_pingresp() {
    assert_eq!(Harness::v311().packet(Packet::PingReq), vec![Action::Send(Packet::PingResp)]);
}

// ---------------------------------------------------------- server closes

fn server_close() -> Close {
    Close {
        reason: ReasonCode::KeepAliveTimeout,
        detail: "keep alive expired",
        notify: true,
        publish_will: true,
    }
}

#[test]
fn v5_clients_get_a_disconnect_with_reason_and_reason_string() {
    let h = Harness::v5();
    let expected = Disconnect {
        reason_code: ReasonCode::KeepAliveTimeout,
        properties: vec![
            Property::ReasonString("keep alive expired".into()),
            Property::UserProperty("error".into(), "protocol_violation".into()),
        ]
        .into(),
    };
    assert_eq!(h.session.disconnect_packet(&server_close()), Some(Packet::Disconnect(expected)));
    assert_eq!(h.session.disconnect_packet(&Close { notify: false, ..server_close() }), None);
}

#[test]
fn v311_clients_get_no_disconnect() {
    assert_eq!(Harness::v311().session.disconnect_packet(&server_close()), None);
}

#[test]
fn no_reason_string_in_disconnect_without_problem_information() {
    let mut connect = connect_v5();
    connect.properties.push(Property::RequestProblemInformation(0));
    let h = Harness::new(connect, limits());
    let expected = Disconnect::new(ReasonCode::KeepAliveTimeout);
    assert_eq!(h.session.disconnect_packet(&server_close()), Some(Packet::Disconnect(expected)));
}

#[test]
fn connack_carries_session_present_and_the_accepted_properties() {
    let h = Harness::v5();
    match Session::connack(&h.accepted, true) {
        Packet::ConnAck(ack) => {
            assert!(ack.session_present);
            assert_eq!(ack.reason_code, ReasonCode::Success);
            assert_eq!(ack.properties, h.accepted.connack_properties);
            assert_eq!(ack.properties.receive_maximum(), Some(limits().receive_maximum));
        }
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

#[test]
fn a_qos2_publish_resent_before_the_router_answers_is_routed_once() {
    let mut h = Harness::v5();
    let first = h.publish(publish("a/b", QoS::ExactlyOnce, 7));
    let request = publish_request(&first);
    let mut again = publish("a/b", QoS::ExactlyOnce, 7);
    again.dup = true;
    let resent = h.publish(again);
    assert!(uplinks(&resent).is_empty(), "routed twice: {resent:?}");
    assert!(packets(&resent).is_empty(), "the PUBREC waits for the router: {resent:?}");
    let acked = h.published(request, Ok(true));
    assert_eq!(single_ack(&acked).0, "PUBREC");
}

#[test]
fn acknowledgements_leave_in_the_order_publishes_arrived_whatever_order_the_router_answers_in() {
    let mut h = Harness::v5();
    let first = publish_request(&h.publish(publish("a/1", QoS::AtLeastOnce, 1)));
    let second = publish_request(&h.publish(publish("a/2", QoS::AtLeastOnce, 2)));
    let early = h.published(second, Ok(true));
    assert!(packets(&early).is_empty(), "PUBACK 2 must wait for PUBACK 1: {early:?}");
    let both = h.published(first, Ok(true));
    let ids: Vec<u16> = packets(&both)
        .iter()
        .map(|p| match p {
            Packet::PubAck(ack) => ack.packet_id.get(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn a_subscribe_the_router_refuses_is_undone_locally() {
    let mut h = Harness::v5();
    let out = h.packet(Packet::Subscribe(subscribe(&[("a/+", QoS::AtLeastOnce)])));
    let request = subscribe_request(&out);
    let reply = h.reply(Downlink::Subscribed { request, result: Err(ErrorCode::StaleEpoch) });
    assert!(reply.iter().any(|a| matches!(a, Action::RemoveLocal(f) if *f == filter("a/+"))), "{reply:?}");
    assert!(h.session.subscriptions().is_empty());
    let Some(Packet::SubAck(ack)) = packets(&reply).into_iter().next() else {
        panic!("no SUBACK: {reply:?}")
    };
    assert_eq!(ack.reason_codes, [ReasonCode::SessionTakenOver]);
}

#[test]
fn a_resumed_session_resends_publish_and_pubrel_with_their_original_packet_ids() {
    // First connection: three QoS 2 deliveries; the client PUBRECs the
    // first (so only its PUBREL is outstanding) and then disappears.
    let mut first = Harness::new(connect_persistent(3600, 10), limits());
    let mut sent = Vec::new();
    for payload in [&b"m1"[..], b"m2", b"m3"] {
        let out = first.deliver(queued(payload, QoS::ExactlyOnce));
        sent.extend(published_packets(&out).iter().map(|p| p.packet_id.expect("QoS 2 has an id").get()));
    }
    first.packet(Packet::PubRec(PubAck::new(id(sent[0]))));
    let release = first.session.release(false);
    let progress: Vec<Progress> = release.pending.iter().map(|q| q.progress).collect();
    assert_eq!(progress, [Progress::Released(sent[0]), Progress::Sent(sent[1]), Progress::Sent(sent[2])]);

    // Second connection resumes: PUBREL for the first, PUBLISH with DUP and
    // the same ids for the others, and a fresh message gets a new id.
    let mut second = Harness::new(connect_persistent(3600, 10), limits());
    let mut out = Vec::new();
    let mut queue = release.pending;
    queue.push(queued(b"m4", QoS::ExactlyOnce));
    second.session.resume(Vec::new(), queue, NOW, &mut out);
    let packets = packets(&out);
    assert!(matches!(packets[0], Packet::PubRel(rel) if rel.packet_id.get() == sent[0]), "{packets:?}");
    let resent: Vec<(u16, bool)> =
        published_packets(&out).iter().map(|p| (p.packet_id.expect("id").get(), p.dup)).collect();
    assert_eq!(resent[..2], [(sent[1], true), (sent[2], true)]);
    assert!(!resent[2].1, "a message never sent before has no DUP");
    assert!(!sent.contains(&resent[2].0), "a fresh message does not reuse an id in flight");
    // The PUBCOMP for the released one frees its id.
    second.packet(Packet::PubComp(PubAck::new(id(sent[0]))));
    assert_eq!(second.session.outbound_backlog(), 3);
}

// ------------------------------------------------------------ topic aliases

fn connect_with_aliases(maximum: u16) -> Connect {
    let mut connect = connect_v5();
    connect.properties.push(Property::TopicAliasMaximum(maximum));
    connect
}

/// Returns (topic sent, alias sent) of the one PUBLISH in `out`.
fn topic_and_alias(out: &[Action]) -> (String, Option<u16>) {
    let [publish] = published_packets(out)[..] else { panic!("expected one PUBLISH: {out:?}") };
    (publish.topic.to_string(), publish.properties.topic_alias())
}

#[test]
fn repeated_topics_go_out_as_aliases_reusing_the_least_recently_used() {
    let mut h = Harness::new(connect_with_aliases(2), limits());
    let mut send =
        |topic: &str| topic_and_alias(&h.deliver(queued_message(message(topic, b"x"), QoS::AtMostOnce)));
    assert_eq!(send("t/a"), ("t/a".into(), Some(1)), "first use: topic and new alias");
    assert_eq!(send("t/a"), (String::new(), Some(1)), "then the alias alone");
    assert_eq!(send("t/b"), ("t/b".into(), Some(2)));
    // Both aliases in use; t/b is now the least recently used.
    assert_eq!(send("t/a"), (String::new(), Some(1)));
    assert_eq!(send("t/c"), ("t/c".into(), Some(2)), "reassigns the least recently used alias");
    assert_eq!(send("t/b"), ("t/b".into(), Some(1)), "t/b lost its alias; t/a is now the oldest");
}

#[test]
fn no_aliases_for_clients_that_accept_none_or_speak_v311() {
    for connect in [connect_v5(), connect_v311()] {
        let mut h = Harness::new(connect, limits());
        for _ in 0..2 {
            let out = h.deliver(queued_message(message("t/a", b"x"), QoS::AtMostOnce));
            assert_eq!(topic_and_alias(&out), ("t/a".into(), None));
        }
    }
    let mut h = Harness::new(connect_with_aliases(10), SessionLimits { max_outbound_aliases: 0, ..limits() });
    let out = h.deliver(queued_message(message("t/a", b"x"), QoS::AtMostOnce));
    assert_eq!(topic_and_alias(&out), ("t/a".into(), None), "the server's limit wins");
}

#[test]
fn an_alias_is_only_remembered_once_the_packet_carrying_it_is_sent() {
    let mut connect = connect_with_aliases(4);
    connect.properties.push(Property::MaximumPacketSize(64));
    let mut h = Harness::new(connect, limits());
    let big = Message { payload: Bytes::from(vec![b'x'; 100]), ..message("t/a", b"") };
    assert!(published_packets(&h.deliver(queued_message(big, QoS::AtMostOnce))).is_empty(), "too large");
    let out = h.deliver(queued_message(message("t/a", b"x"), QoS::AtMostOnce));
    assert_eq!(
        topic_and_alias(&out),
        ("t/a".into(), Some(1)),
        "the dropped packet taught the client nothing"
    );
}

// ------------------------------------------------------------- capabilities

#[test]
fn a_publish_beyond_the_servers_capabilities_is_disconnected_with_its_reason() {
    let limited = SessionLimits { maximum_qos: QoS::AtLeastOnce, retain_available: false, ..limits() };
    let mut h = Harness::new(connect_v5(), limited.clone());
    assert_eq!(close_reason(&h.publish(publish("a/b", QoS::ExactlyOnce, 1))), ReasonCode::QosNotSupported);
    let mut h = Harness::new(connect_v5(), limited);
    let mut retained = publish("a/b", QoS::AtLeastOnce, 1);
    retained.retain = true;
    assert_eq!(close_reason(&h.publish(retained)), ReasonCode::RetainNotSupported);
}

#[test]
fn subscriptions_beyond_the_servers_capabilities_are_refused_or_downgraded() {
    let limited = SessionLimits { maximum_qos: QoS::AtLeastOnce, wildcard_subscriptions: false, ..limits() };
    let mut h = Harness::new(connect_v5(), limited);
    let out = h.subscribed(subscribe(&[("a/+", QoS::AtLeastOnce), ("a/b", QoS::ExactlyOnce)]));
    let Some(Packet::SubAck(ack)) = packets(&out).into_iter().find(|p| matches!(p, Packet::SubAck(_))) else {
        panic!("no SUBACK: {out:?}")
    };
    assert_eq!(ack.reason_codes, [ReasonCode::WildcardSubscriptionsNotSupported, ReasonCode::GrantedQos1]);

    let mut h = Harness::new(connect_v5(), SessionLimits { subscription_identifiers: false, ..limits() });
    let mut with_id = subscribe(&[("a/b", QoS::AtMostOnce)]);
    with_id.properties.push(Property::SubscriptionIdentifier(5));
    let out = h.packet(Packet::Subscribe(with_id));
    assert_eq!(close_reason(&out), ReasonCode::SubscriptionIdentifiersNotSupported);
}

#[test]
fn shutting_down_with_a_server_reference_sends_clients_there() {
    let h =
        Harness::new(connect_v5(), SessionLimits { server_reference: Some("other:1883".into()), ..limits() });
    let close =
        Close { reason: ReasonCode::ServerShuttingDown, detail: "", notify: true, publish_will: true };
    let Some(Packet::Disconnect(disconnect)) = h.session.disconnect_packet(&close) else {
        panic!("no DISCONNECT")
    };
    assert_eq!(disconnect.reason_code, ReasonCode::UseAnotherServer);
    assert_eq!(disconnect.properties.server_reference(), Some("other:1883"));
    let plain = Harness::new(connect_v5(), limits());
    let Some(Packet::Disconnect(disconnect)) = plain.session.disconnect_packet(&close) else {
        panic!("none")
    };
    assert_eq!(
        (disconnect.reason_code, disconnect.properties.server_reference()),
        (ReasonCode::ServerShuttingDown, None)
    );
}

#[test]
fn a_server_that_moved_for_good_says_0x9d_at_shutdown() {
    let moved = SessionLimits { server_reference: Some("new:1883".into()), server_moved: true, ..limits() };
    // The session of a connection accepted before the move was configured.
    let accepted = Harness::v5().accepted;
    let session = Session::new(&accepted, Arc::new(moved), EPOCH, REQUEST_BASE);
    let close =
        Close { reason: ReasonCode::ServerShuttingDown, detail: "", notify: true, publish_will: true };
    let Some(Packet::Disconnect(disconnect)) = session.disconnect_packet(&close) else {
        panic!("no DISCONNECT")
    };
    assert_eq!(
        (disconnect.reason_code, disconnect.properties.server_reference()),
        (ReasonCode::ServerMoved, Some("new:1883"))
    );
}

#[test]
fn a_resumed_queue_longer_than_the_waiting_bound_is_delivered_whole() {
    let limits = SessionLimits { max_queued_messages: 2, ..limits() };
    let mut h = Harness::new(connect_persistent(3600, 1), limits);
    let queue: Vec<QueuedMessage> = (0..6).map(|_| queued(b"q", QoS::AtLeastOnce)).collect();
    let mut out = Vec::new();
    h.session.resume(Vec::new(), queue, NOW, &mut out);
    assert_eq!(published_packets(&out).len(), 1, "one in the client's window");
    assert_eq!(h.session.outbound_backlog(), 6, "the other five wait, none dropped");
    assert_eq!(h.session.counters().dropped_queue_full, 0);
}

// ---------------------------------------------------------- shared groups

#[test]
fn shared_subscriptions_are_accepted_unless_turned_off() {
    let mut h = Harness::new(connect_v5(), limits());
    let out = h.subscribed(subscribe(&[("$share/g/a/+", QoS::AtLeastOnce)]));
    assert!(
        out.iter().any(|a| matches!(a, Action::AddLocal(f, _) if f.as_str() == "$share/g/a/+")),
        "{out:?}"
    );
    let Some(Packet::SubAck(ack)) = packets(&out).into_iter().find(|p| matches!(p, Packet::SubAck(_))) else {
        panic!("no SUBACK: {out:?}")
    };
    assert_eq!(ack.reason_codes, [ReasonCode::GrantedQos1]);

    let mut off = Harness::new(connect_v5(), SessionLimits { shared_subscriptions: false, ..limits() });
    let out = off.subscribed(subscribe(&[("$share/g/a/+", QoS::AtLeastOnce)]));
    let Some(Packet::SubAck(ack)) = packets(&out).into_iter().find(|p| matches!(p, Packet::SubAck(_))) else {
        panic!("no SUBACK: {out:?}")
    };
    assert_eq!(ack.reason_codes, [ReasonCode::SharedSubscriptionsNotSupported]);
}

#[test]
fn a_leaving_member_gives_back_its_unacknowledged_shared_deliveries_and_keeps_its_own() {
    let mut h = Harness::new(connect_persistent(3600, 1), limits());
    let group = filter("$share/g/t");
    let shared = |payload: &'static [u8]| QueuedMessage {
        shared: Some(group.clone()),
        ..queued(payload, QoS::AtLeastOnce)
    };
    h.deliver(shared(b"s1"));
    h.deliver(queued(b"own", QoS::AtLeastOnce));
    h.deliver(shared(b"s2"));
    assert_eq!(h.session.free_window(), 0, "window full, two waiting");

    let taken = h.session.take_shared();
    let taken: Vec<(&str, &[u8])> = taken.iter().map(|(f, m)| (f.as_str(), m.payload.as_ref())).collect();
    assert_eq!(taken, [("$share/g/t", &b"s1"[..]), ("$share/g/t", b"s2")]);
    let release = h.session.release(false);
    let own: Vec<&[u8]> = release.pending.iter().map(|q| q.message.payload.as_ref()).collect();
    assert_eq!(own, [&b"own"[..]], "the session keeps only its own deliveries");
}

#[test]
fn subscriptions_beyond_the_per_session_limit_get_quota_exceeded() {
    let mut h = Harness::new(connect_v5(), SessionLimits { max_subscriptions: 2, ..limits() });
    let out =
        h.subscribed(subscribe(&[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce), ("c", QoS::AtMostOnce)]));
    let Some(Packet::SubAck(ack)) = packets(&out).into_iter().find(|p| matches!(p, Packet::SubAck(_))) else {
        panic!("no SUBACK: {out:?}")
    };
    assert_eq!(ack.reason_codes, [ReasonCode::Success, ReasonCode::Success, ReasonCode::QuotaExceeded]);
    let again = h.subscribed(subscribe(&[("a", QoS::AtLeastOnce)]));
    let Some(Packet::SubAck(ack)) = packets(&again).into_iter().find(|p| matches!(p, Packet::SubAck(_)))
    else {
        panic!("no SUBACK: {again:?}")
    };
    assert_eq!(ack.reason_codes, [ReasonCode::GrantedQos1], "replacing an existing one is not a new one");
}

fn push_events(actions: &[Action]) -> Vec<crate::session::PushEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Push(event) => Some(*event),
            _ => None,
        })
        .collect()
}

#[test]
fn push_messages_are_counted_delivered_once_and_acknowledged_once() {
    use crate::session::PushEvent::{Acknowledged, Delivered};
    let mut h = Harness::v5();
    let push = |id: u128| {
        queued_message(Message { id: MessageId(id), ..message("$push/generated", b"p") }, QoS::AtLeastOnce)
    };
    // A live delivery, then its PUBACK.
    let out = h.deliver(push(7));
    assert_eq!(push_events(&out), [Delivered { message: MessageId(7), from_offline: false }]);
    let packet_id = published_packets(&out)[0].packet_id.expect("qos 1");
    let out = h.packet(Packet::PubAck(PubAck::new(packet_id)));
    assert_eq!(push_events(&out), [Acknowledged { message: MessageId(7) }]);
    // From the offline queue; and a resend with DUP is not a new delivery.
    let stored = push(8);
    let resent = QueuedMessage { progress: Progress::Sent(9), ..push(9) };
    h.session.note_stored(&[stored.clone(), resent.clone()]);
    let mut out = Vec::new();
    h.session.resume(Vec::new(), vec![resent, stored], NOW, &mut out);
    assert_eq!(push_events(&out), [Delivered { message: MessageId(8), from_offline: true }]);
    // Other topics are not push messages.
    assert_eq!(push_events(&h.deliver(queued(b"x", QoS::AtLeastOnce))), []);
}

#[test]
fn a_client_publishing_past_its_rate_is_disconnected_with_0x96_and_counted() {
    let mut h = Harness::new(connect_v5(), SessionLimits { max_publish_rate: 2, ..limits() });
    let throttled = |actions: &[Action]| {
        actions.iter().any(|a| matches!(a, Action::Throttled))
            && actions
                .iter()
                .any(|a| matches!(a, Action::Close(c) if c.reason == ReasonCode::MessageRateTooHigh))
    };
    // A burst of one second's worth, then the next is one too many.
    assert!(!throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    assert!(!throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    assert!(throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    // Half a second later one publish has been earned back.
    let mut h = Harness::new(connect_v5(), SessionLimits { max_publish_rate: 2, ..limits() });
    for _ in 0..2 {
        assert!(!throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    }
    h.now = UnixMillis(NOW.0 + 500);
    assert!(!throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    assert!(throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    // Bytes count too: "payload" is 7 bytes, 10 a second allow one.
    let mut h = Harness::new(connect_v5(), SessionLimits { max_publish_bytes_rate: 10, ..limits() });
    assert!(!throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    assert!(throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    // No limit: never.
    let mut h = Harness::v5();
    for _ in 0..1000 {
        assert!(!throttled(&h.publish(publish("a", QoS::AtMostOnce, 0))));
    }
}
