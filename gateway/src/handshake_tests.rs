//! Tests of CONNECT handling: what is accepted, what the session will be and
//! what CONNACK says.

use super::*;
use crate::auth::ConfigAuthenticator;
use bytes::Bytes;
use herald_core::QoS;
use herald_mqtt::LastWill;

const NOW: UnixMillis = UnixMillis(5_000);
const WILL_ID: MessageId = MessageId(77);

fn limits() -> SessionLimits {
    SessionLimits {
        max_packet_size: 4096,
        receive_maximum: 20,
        topic_alias_maximum: 8,
        max_inflight_v311: 12,
        max_session_expiry_seconds: 3600,
        max_keep_alive: 0,
        ..SessionLimits::default()
    }
}

fn v5(client_id: &str) -> Connect {
    Connect::new(ProtocolVersion::V5, client_id)
}

fn v311(client_id: &str) -> Connect {
    Connect::new(ProtocolVersion::V311, client_id)
}

fn will(topic: &str) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    }
}

fn run(connect: &Connect, limits: &SessionLimits) -> Result<Accepted, Packet> {
    accept(
        connect,
        limits,
        Identity::Password(&ConfigAuthenticator::anonymous()),
        || "auto-1".to_owned(),
        WILL_ID,
        NOW,
    )
}

fn accepted(connect: &Connect) -> Accepted {
    run(connect, &limits()).expect("connect accepted")
}

/// Returns the reason code of the CONNACK refusing `connect`.
fn refused(connect: &Connect) -> ReasonCode {
    match run(connect, &limits()) {
        Err(Packet::ConnAck(ack)) => {
            assert!(!ack.session_present);
            ack.reason_code
        }
        Err(other) => panic!("refused with a non-CONNACK packet {other:?}"),
        Ok(accepted) => panic!("expected a refusal, accepted {accepted:?}"),
    }
}

#[test]
fn a_v5_empty_client_id_is_assigned_and_announced() {
    let accepted = accepted(&v5(""));
    assert_eq!(accepted.key.client.as_str(), "auto-1");
    assert_eq!(accepted.connack_properties.assigned_client_identifier(), Some("auto-1"));
}

#[test]
fn a_given_client_id_is_kept_and_not_announced() {
    let accepted = accepted(&v5("dev-1"));
    assert_eq!(accepted.key.client.as_str(), "dev-1");
    assert_eq!(accepted.key.app, herald_core::AppId::default_app());
    assert_eq!(accepted.connack_properties.assigned_client_identifier(), None);
}

#[test]
fn a_v311_empty_client_id_needs_clean_session() {
    let mut connect = v311("");
    connect.clean_start = false;
    assert_eq!(refused(&connect), ReasonCode::ClientIdentifierNotValid);

    let accepted = accepted(&v311(""));
    assert_eq!(accepted.key.client.as_str(), "auto-1");
    assert!(accepted.connack_properties.is_empty(), "v3.1.1 CONNACK has no properties");
}

#[test]
fn an_invalid_client_id_is_refused_0x85() {
    assert_eq!(refused(&v5("a/b")), ReasonCode::ClientIdentifierNotValid);
    assert_eq!(refused(&v311("a/b")), ReasonCode::ClientIdentifierNotValid);
}

#[test]
fn a_failed_authentication_is_refused_with_the_authenticator_code() {
    let closed = ConfigAuthenticator::new(false, Default::default());
    let result =
        accept(&v5("dev-1"), &limits(), Identity::Password(&closed), || "auto-1".to_owned(), WILL_ID, NOW);
    let Err(Packet::ConnAck(ack)) = result else { panic!("refused: {result:?}") };
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
    // v5 refusals say why, in words and as the stable error code.
    assert_eq!(ack.properties.reason_string(), Some("not authorized"));
    let user: Vec<_> =
        ack.properties.user_properties().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(user, [("error".to_owned(), "not_authorized".to_owned())]);
}

#[test]
fn a_proven_identity_is_used_and_its_method_and_data_go_back_in_connack() {
    let principal = crate::auth::Principal {
        app: herald_core::AppId::new("shop").expect("valid"),
        username: None,
        valid_until: None,
    };
    let identity = Identity::Proven {
        principal: principal.clone(),
        method: ByteString::from_static("SCRAM-SHA-256"),
        data: Some(Bytes::from_static(b"v=sig")),
    };
    let accepted = accept(&v5("dev-1"), &limits(), identity, || "auto-1".to_owned(), WILL_ID, NOW)
        .expect("a proven identity needs no password");
    assert_eq!(accepted.key.app, principal.app);
    assert_eq!(accepted.auth_method.as_deref(), Some("SCRAM-SHA-256"));
    assert_eq!(accepted.connack_properties.authentication_method(), Some("SCRAM-SHA-256"));
    assert_eq!(accepted.connack_properties.authentication_data().map(|d| &d[..]), Some(&b"v=sig"[..]));
}

#[test]
fn v5_session_expiry_is_capped_and_the_cap_announced() {
    let mut connect = v5("dev-1");
    connect.properties.push(Property::SessionExpiryInterval(1_000_000));
    let accepted = accepted(&connect);
    assert_eq!(accepted.expiry_seconds, 3600);
    assert_eq!(accepted.connack_properties.session_expiry_interval(), Some(3600));

    let mut connect = v5("dev-1");
    connect.properties.push(Property::SessionExpiryInterval(60));
    let accepted = self::accepted(&connect);
    assert_eq!(accepted.expiry_seconds, 60);
    assert_eq!(accepted.connack_properties.session_expiry_interval(), None, "granted as asked");

    assert_eq!(self::accepted(&v5("dev-1")).expiry_seconds, 0, "absent means 0");
}

#[test]
fn a_v311_persistent_session_lives_until_the_cap() {
    let mut connect = v311("dev-1");
    connect.clean_start = false;
    let accepted = accepted(&connect);
    assert_eq!(accepted.expiry_seconds, 3600);
    assert!(!accepted.clean_start);
    assert!(accepted.connack_properties.is_empty());

    assert_eq!(self::accepted(&v311("dev-1")).expiry_seconds, 0, "clean session ends with the connection");
}

#[test]
fn keep_alive_is_clamped_to_the_server_maximum_and_announced_to_v5() {
    let limits = SessionLimits { max_keep_alive: 60, ..limits() };
    for (asked, granted, announced) in [(120, 60, Some(60)), (0, 60, Some(60)), (30, 30, None)] {
        let mut connect = v5("dev-1");
        connect.keep_alive = asked;
        let accepted = run(&connect, &limits).expect("accepted");
        assert_eq!(accepted.keep_alive, granted, "asked {asked}");
        assert_eq!(accepted.connack_properties.server_keep_alive(), announced, "asked {asked}");
    }

    let mut connect = v311("dev-1");
    connect.keep_alive = 120;
    let accepted = run(&connect, &limits).expect("accepted");
    assert_eq!(accepted.keep_alive, 60);
    assert!(accepted.connack_properties.is_empty());
}

#[test]
fn keep_alive_is_kept_without_a_server_maximum() {
    let mut connect = v5("dev-1");
    connect.keep_alive = 900;
    let accepted = accepted(&connect);
    assert_eq!(accepted.keep_alive, 900);
    assert_eq!(accepted.connack_properties.server_keep_alive(), None);
}

#[test]
fn v5_connack_announces_the_server_limits() {
    let properties = accepted(&v5("dev-1")).connack_properties;
    assert_eq!(properties.receive_maximum(), Some(20));
    assert_eq!(properties.maximum_packet_size(), Some(4096));
    assert_eq!(properties.topic_alias_maximum(), Some(8));
    assert_eq!(properties.shared_subscription_available(), None, "available: announced only when turned off");
}

#[test]
fn a_will_to_a_dollar_topic_is_refused_0x90() {
    let mut connect = v5("dev-1");
    connect.will = Some(will("$SYS/x"));
    assert_eq!(refused(&connect), ReasonCode::TopicNameInvalid);
}

#[test]
fn a_utf8_will_with_invalid_payload_is_refused_0x99() {
    let mut last_will = will("devices/dev-1/status");
    last_will.payload = Bytes::from_static(&[0xc3, 0x28]);
    last_will.properties.push(Property::PayloadFormatIndicator(1));
    let mut connect = v5("dev-1");
    connect.will = Some(last_will);
    assert_eq!(refused(&connect), ReasonCode::PayloadFormatInvalid);
}

#[test]
fn the_will_keeps_its_message_delay_and_expiry() {
    let mut last_will = will("devices/dev-1/status");
    last_will.properties.push(Property::WillDelayInterval(30));
    last_will.properties.push(Property::MessageExpiryInterval(600));
    last_will.properties.push(Property::ContentType("text/plain".into()));
    let mut connect = v5("dev-1");
    connect.will = Some(last_will);
    let will = accepted(&connect).will.expect("a will");
    assert_eq!((will.delay_seconds, will.expiry_seconds), (30, Some(600)));
    let message = &will.message;
    assert_eq!(message.id, WILL_ID);
    assert_eq!(message.topic.as_str(), "devices/dev-1/status");
    assert_eq!(message.payload, Bytes::from_static(b"gone"));
    assert_eq!((message.qos, message.retain), (QoS::AtLeastOnce, true));
    assert_eq!(message.created_at, NOW);
    assert_eq!(message.origin.as_ref().map(|c| c.as_str()), Some("dev-1"));
    let properties = message.properties.as_deref().expect("properties");
    assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
}

#[test]
fn a_will_without_properties_has_no_delay_or_expiry() {
    let mut connect = v311("dev-1");
    connect.will = Some(will("devices/dev-1/status"));
    let will = accepted(&connect).will.expect("a will");
    assert_eq!((will.delay_seconds, will.expiry_seconds), (0, None));
    assert!(will.message.properties.is_none());
    assert!(self::accepted(&v5("dev-1")).will.is_none());
}

#[test]
fn client_receive_maximum_defaults_per_version() {
    assert_eq!(accepted(&v5("dev-1")).client_receive_maximum, 65535);
    assert_eq!(accepted(&v311("dev-1")).client_receive_maximum, 12);

    let mut connect = v5("dev-1");
    connect.properties.push(Property::ReceiveMaximum(5));
    assert_eq!(accepted(&connect).client_receive_maximum, 5);
}

#[test]
fn client_maximum_packet_size_and_problem_information_are_taken_from_connect() {
    let plain = accepted(&v5("dev-1"));
    assert_eq!(plain.client_max_packet, u32::MAX);
    assert!(plain.problem_information);

    let mut connect = v5("dev-1");
    connect.properties.push(Property::MaximumPacketSize(1024));
    connect.properties.push(Property::RequestProblemInformation(0));
    let accepted = accepted(&connect);
    assert_eq!(accepted.client_max_packet, 1024);
    assert!(!accepted.problem_information);
}

#[test]
fn response_information_is_returned_only_when_requested_and_configured() {
    let configured = SessionLimits { response_information: Some("reply/".into()), ..limits() };
    let mut asking = v5("dev-7");
    asking.properties.push(Property::RequestResponseInformation(1));
    let info = |connect: &Connect, limits: &SessionLimits| {
        run_ok(connect, limits).connack_properties.response_information().map(str::to_owned)
    };
    assert_eq!(info(&asking, &configured), Some("reply/dev-7".into()));
    assert_eq!(info(&v5("dev-7"), &configured), None, "not requested");
    assert_eq!(info(&asking, &limits()), None, "not configured");
}

#[test]
fn the_outbound_alias_limit_is_the_lower_of_the_clients_and_the_servers() {
    let mut connect = v5("dev-8");
    connect.properties.push(Property::TopicAliasMaximum(100));
    let server = SessionLimits { max_outbound_aliases: 16, ..limits() };
    assert_eq!(run_ok(&connect, &server).client_topic_alias_maximum, 16);
    assert_eq!(run_ok(&v5("dev-9"), &server).client_topic_alias_maximum, 0, "absent means none");
}

fn run_ok(connect: &Connect, limits: &SessionLimits) -> Accepted {
    run(connect, limits).expect("accepted")
}

#[test]
fn capabilities_are_announced_where_they_differ_and_wills_beyond_them_refused() {
    let limited = SessionLimits {
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        wildcard_subscriptions: false,
        subscription_identifiers: false,
        ..limits()
    };
    let properties = run_ok(&v5("cap-1"), &limited).connack_properties;
    assert_eq!(properties.maximum_qos(), Some(1));
    assert_eq!(properties.retain_available(), Some(0));
    assert_eq!(properties.wildcard_subscription_available(), Some(0));
    assert_eq!(properties.subscription_identifier_available(), Some(0));
    let defaults = run_ok(&v5("cap-2"), &limits()).connack_properties;
    assert_eq!((defaults.maximum_qos(), defaults.retain_available()), (None, None), "absent means available");

    let mut qos2_will = v5("cap-3");
    qos2_will.will = Some(LastWill { qos: QoS::ExactlyOnce, ..will("w/t") });
    let refusal = |connect: &Connect| match run(connect, &limited) {
        Err(Packet::ConnAck(ack)) => ack.reason_code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refusal(&qos2_will), ReasonCode::QosNotSupported);
    let mut retained_will = v5("cap-4");
    retained_will.will = Some(LastWill { retain: true, ..will("w/t") });
    assert_eq!(refusal(&retained_will), ReasonCode::RetainNotSupported);
}

#[test]
fn a_server_that_moved_refuses_every_connect_with_0x9d_and_where_it_went() {
    let moved = SessionLimits { server_reference: Some("new:1883".into()), server_moved: true, ..limits() };
    let Err(Packet::ConnAck(ack)) = run(&v5("dev-1"), &moved) else { panic!("refused") };
    assert_eq!(
        (ack.reason_code, ack.properties.server_reference()),
        (ReasonCode::ServerMoved, Some("new:1883"))
    );
    let Err(Packet::ConnAck(ack)) = run(&v311("dev-1"), &moved) else { panic!("refused") };
    assert_eq!(ack.reason_code.to_v3_connack(), 0x03, "v3.1.1: server unavailable");
    // A reference alone sends clients away only at shutdown (0x9C).
    let referenced = SessionLimits { server_reference: Some("new:1883".into()), ..limits() };
    assert!(run(&v5("dev-1"), &referenced).is_ok());
}
