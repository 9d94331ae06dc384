//! Items 5, 6 and 11: the properties a message carries from its publisher to its subscribers.

use crate::paho::{Clients, payloads};
use crate::raw::{self, CONNACK, PUBACK, QOS1, Raw, property};
use crate::topology::Topology;

/// Item 5: the payload format indicator and the content type are forwarded; a payload that
/// claims to be UTF-8 and is not is refused with 0x99 and not routed, on a PUBLISH (PUBACK)
/// and on a will (CONNACK).
pub(crate) fn item_05_payload_format_and_content_type(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();
    clients.connect("reader", second, &[]);
    clients.subscribe("reader", "item5/+", &["qos=1"]);
    clients.connect("writer", first, &[]);
    let typed = ["qos=1", "payload_format_indicator=1", "content_type=application/json"];
    clients.publish("writer", "item5/text", "{\"n\":1}", &typed);
    clients.publish("writer", "item5/bytes", "plain", &["qos=1"]);
    let [text, bytes] = <[_; 2]>::try_from(clients.expect_messages("reader", 2)).expect("two messages");
    assert_eq!(
        (text.get("payload_format_indicator"), text.get("content_type")),
        (Some("1"), Some("application/json")),
        "{text:?}"
    );
    assert_eq!((bytes.get("payload_format_indicator"), bytes.get("content_type")), (None, None), "{bytes:?}");

    // Raw: paho hides the PUBACK's reason code.
    let (mut raw_writer, _) = Raw::connected(first, &raw::connect("raw-writer", 60, &[]));
    let utf8 = [property::PAYLOAD_FORMAT_INDICATOR, 0x01];
    raw_writer.send(&raw::publish(QOS1, "item5/text", 1, &utf8, &[0xFF, 0xFE])); // not UTF-8
    let puback = raw_writer.expect(PUBACK);
    assert_eq!(puback.reason_code(), 0x99, "payload format invalid: {puback:?}");
    raw_writer.send(&raw::publish(QOS1, "item5/text", 2, &utf8, b"valid"));
    assert_eq!(raw_writer.expect(PUBACK).reason_code(), 0x00);
    let next = clients.expect_message("reader");
    assert_eq!(next.payload(), "valid", "the invalid payload was routed: {next:?}");

    // The same check on a will, at CONNECT.
    let will_connect = raw::packet(
        raw::CONNECT,
        &[
            raw::utf8("MQTT"),                                            // protocol name
            vec![0x05],                                                   // protocol level 5
            vec![0x06],                                                   // flags: will, clean start
            vec![0x00, 0x3C],                                             // keep alive 60 s
            raw::properties(&[]),                                         // CONNECT properties
            raw::utf8("testator"),                                        // client identifier
            raw::properties(&[property::PAYLOAD_FORMAT_INDICATOR, 0x01]), // will properties: UTF-8
            raw::utf8("item5/will"),                                      // will topic
            vec![0x00, 0x02, 0xFF, 0xFE],                                 // will payload: not UTF-8
        ]
        .concat(),
    );
    let mut testator = Raw::open(first);
    testator.send(&will_connect);
    let connack = testator.expect(CONNACK);
    assert_eq!(connack.reason_code(), 0x99, "payload format invalid: {connack:?}");
}

/// Item 6: the response topic and the correlation data travel with a request and its
/// response; Response Information is sent only when requested and configured (none is by
/// default; [`item_06_response_information`] configures one).
pub(crate) fn item_06_request_response(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();
    clients.connect("responder", second, &[]);
    clients.subscribe("responder", "item6/requests", &["qos=1"]);
    let connack = clients.connect("requester", first, &["request_response_information=1"]);
    assert_eq!(connack.get("response_information"), None, "none configured: {connack:?}");
    clients.subscribe("requester", "item6/replies/requester", &["qos=1"]);

    let request = ["qos=1", "response_topic=item6/replies/requester", "correlation_data=c0ffee01"];
    clients.publish("requester", "item6/requests", "question", &request);
    let question = clients.expect_message("responder");
    assert_eq!(question.get("response_topic"), Some("item6/replies/requester"), "{question:?}");
    assert_eq!(question.get("correlation_data"), Some("c0ffee01"), "{question:?}");

    let correlation = format!("correlation_data={}", question.field("correlation_data"));
    clients.publish("responder", question.field("response_topic"), "answer", &["qos=1", &correlation]);
    let answer = clients.expect_message("requester");
    assert_eq!(
        (answer.payload(), answer.get("correlation_data")),
        ("answer", Some("c0ffee01")),
        "{answer:?}"
    );
}

/// Item 6, with `response_information` set: a client that requests Response Information gets
/// the prefix plus its client identifier; one that does not, gets none [MQTT-3.1.2-28].
pub(crate) fn item_06_response_information(topology: &Topology) {
    let mut clients = Clients::start();
    let connack = clients.connect("asker", topology.first(), &["request_response_information=1"]);
    assert_eq!(connack.get("response_information"), Some("reply/asker"), "{connack:?}");
    let connack = clients.connect("silent", topology.first(), &[]);
    assert_eq!(connack.get("response_information"), None, "not requested: {connack:?}");
}

/// Item 11: user properties are forwarded in order, repeated keys included, on a PUBLISH and
/// on a will.
pub(crate) fn item_11_user_properties(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();
    clients.connect("reader", second, &[]);
    clients.subscribe("reader", "item11/+", &["qos=1"]);

    clients.connect("writer", first, &[]);
    clients.publish("writer", "item11/publish", "p", &["qos=1", "user_property=b:2,a:1,b:3"]);
    let message = clients.expect_message("reader");
    assert_eq!(message.get("user_property"), Some("b:2,a:1,b:3"), "{message:?}");

    // The will goes out when the connection drops without a DISCONNECT.
    let will =
        ["will_topic=item11/will", "will_payload=gone", "will_qos=1", "will.user_property=z:9,y:8,z:7"];
    clients.connect("testator", first, &will);
    clients.drop_connection("testator");
    let will = clients.expect_message("reader");
    assert_eq!(payloads(std::slice::from_ref(&will)), ["gone"]);
    assert_eq!(will.get("user_property"), Some("z:9,y:8,z:7"), "{will:?}");
}
