//! MQTT 5.0 conformance, end to end: one test per numbered item of `docs/mqtt5.md`, each run
//! in both topologies through one fixture ([`topology::Topology`]): a standalone broker, and a
//! router with two gateways over loopback gRPC, where the clients of one test sit on different
//! gateways (publisher on one, subscriber on the other; a session resuming on the other).
//!
//! Clients are paho-mqtt 1.6.1 (`py/clients.py`, driven step by step from the test) and, where
//! paho cannot send or show a case, hand-written packets over a raw socket (`raw.rs`).
//!
//! Each item is a function taking the topology; `<item>_standalone` and `<item>_cluster` run it
//! on a fresh one. What needs a setting other than the defaults runs on a topology started
//! with those `[limits]` (`configured!`), again in both. Every topology also has the test users
//! of item 14 and a WebSocket listener per endpoint (item 16).
//!
//! Run with `cargo nextest run -p herald --test mqtt5`. A failing test prints the output of
//! every Herald process and the paho transcript.

mod paho;
mod raw;
mod test_acl;
mod test_auth;
mod test_limits;
mod test_properties;
mod test_reason_codes;
mod test_sessions;
mod test_shared;
mod test_subscriptions;
mod test_websocket;
mod topology;

use std::thread;
use std::time::{Duration, Instant};
use topology::Topology;

/// How long a test listens before concluding that a message did not come.
pub(crate) const SILENCE: Duration = Duration::from_millis(700);

/// How long a DISCONNECT takes, on loopback, to end a session in the router. A CONNECT that
/// reaches another gateway sooner is not ordered after the DISCONNECT (two connections, two
/// gateways) and may still find the session; the test of that case waits this long.
pub(crate) const RELEASE: Duration = Duration::from_millis(300);

/// Sleeps until `deadline` (not at all if it has passed).
pub(crate) fn sleep_until(deadline: Instant) {
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
}

#[test]
fn item_01_session_expiry_standalone() {
    test_sessions::item_01_session_expiry(&Topology::standalone());
}

#[test]
fn item_01_session_expiry_cluster() {
    test_sessions::item_01_session_expiry(&Topology::cluster());
}

#[test]
fn item_02_message_expiry_standalone() {
    test_sessions::item_02_message_expiry(&Topology::standalone());
}

#[test]
fn item_02_message_expiry_cluster() {
    test_sessions::item_02_message_expiry(&Topology::cluster());
}

#[test]
fn item_03_reason_codes_standalone() {
    test_reason_codes::item_03_reason_codes(&Topology::standalone());
}

#[test]
fn item_03_reason_codes_cluster() {
    test_reason_codes::item_03_reason_codes(&Topology::cluster());
}

#[test]
fn item_04_server_sent_disconnect_standalone() {
    test_reason_codes::item_04_server_sent_disconnect(&Topology::standalone());
}

#[test]
fn item_04_server_sent_disconnect_cluster() {
    test_reason_codes::item_04_server_sent_disconnect(&Topology::cluster());
}

#[test]
fn item_05_payload_format_and_content_type_standalone() {
    test_properties::item_05_payload_format_and_content_type(&Topology::standalone());
}

#[test]
fn item_05_payload_format_and_content_type_cluster() {
    test_properties::item_05_payload_format_and_content_type(&Topology::cluster());
}

#[test]
fn item_06_request_response_standalone() {
    test_properties::item_06_request_response(&Topology::standalone());
}

#[test]
fn item_06_request_response_cluster() {
    test_properties::item_06_request_response(&Topology::cluster());
}

#[test]
fn item_07_shared_subscriptions_standalone() {
    test_shared::item_07_shared_subscriptions(&Topology::standalone());
}

#[test]
fn item_07_shared_subscriptions_cluster() {
    test_shared::item_07_shared_subscriptions(&Topology::cluster());
}

#[test]
fn item_08_subscription_identifiers_standalone() {
    test_subscriptions::item_08_subscription_identifiers(&Topology::standalone());
}

#[test]
fn item_08_subscription_identifiers_cluster() {
    test_subscriptions::item_08_subscription_identifiers(&Topology::cluster());
}

#[test]
fn item_09_topic_aliases_both_ways_standalone() {
    test_limits::item_09_topic_aliases_both_ways(&Topology::standalone());
}

#[test]
fn item_09_topic_aliases_both_ways_cluster() {
    test_limits::item_09_topic_aliases_both_ways(&Topology::cluster());
}

#[test]
fn item_10_flow_control_standalone() {
    test_limits::item_10_flow_control(&Topology::standalone());
}

#[test]
fn item_10_flow_control_cluster() {
    test_limits::item_10_flow_control(&Topology::cluster());
}

#[test]
fn item_11_user_properties_standalone() {
    test_properties::item_11_user_properties(&Topology::standalone());
}

#[test]
fn item_11_user_properties_cluster() {
    test_properties::item_11_user_properties(&Topology::cluster());
}

#[test]
fn item_12_maximum_packet_size_standalone() {
    test_limits::item_12_maximum_packet_size(&Topology::standalone());
}

#[test]
fn item_12_maximum_packet_size_cluster() {
    test_limits::item_12_maximum_packet_size(&Topology::cluster());
}

#[test]
fn item_13_server_capabilities_standalone() {
    test_limits::item_13_server_capabilities(&Topology::standalone());
}

#[test]
fn item_13_server_capabilities_cluster() {
    test_limits::item_13_server_capabilities(&Topology::cluster());
}

#[test]
fn item_14_enhanced_authentication_standalone() {
    test_auth::item_14_enhanced_authentication(&Topology::standalone());
}

#[test]
fn item_14_enhanced_authentication_cluster() {
    test_auth::item_14_enhanced_authentication(&Topology::cluster());
}

#[test]
fn item_15_subscription_options_standalone() {
    test_subscriptions::item_15_subscription_options(&Topology::standalone());
}

#[test]
fn item_15_subscription_options_cluster() {
    test_subscriptions::item_15_subscription_options(&Topology::cluster());
}

#[test]
fn item_16_mqtt_over_websocket_standalone() {
    test_websocket::item_16_mqtt_over_websocket(&Topology::standalone());
}

#[test]
fn item_16_mqtt_over_websocket_cluster() {
    test_websocket::item_16_mqtt_over_websocket(&Topology::cluster());
}

// Settings other than the defaults, in both topologies: `herald router` and `herald gateway`
// read `[limits]` from `HERALD_LIMITS_*` as standalone does.

/// Defines `<name>_standalone` and `<name>_cluster`, running `test` on a topology started
/// with `limits`.
macro_rules! configured {
    ($standalone:ident, $cluster:ident, $test:path, $limits:expr) => {
        #[test]
        fn $standalone() {
            $test(&Topology::standalone_with($limits));
        }

        #[test]
        fn $cluster() {
            $test(&Topology::cluster_with($limits));
        }
    };
}

configured!(
    item_04_server_sent_disconnect_with_server_reference_standalone,
    item_04_server_sent_disconnect_with_server_reference_cluster,
    test_reason_codes::item_04_server_sent_disconnect_with_server_reference,
    &[("server_reference", "other:1883")]
);

configured!(
    item_04_server_moved_standalone,
    item_04_server_moved_cluster,
    test_reason_codes::item_04_server_moved,
    &[("server_reference", "moved:1883"), ("server_moved", "true")]
);

configured!(
    item_06_response_information_standalone,
    item_06_response_information_cluster,
    test_properties::item_06_response_information,
    &[("response_information", "reply/")]
);

configured!(
    item_12_configured_maximum_packet_size_standalone,
    item_12_configured_maximum_packet_size_cluster,
    test_limits::item_12_configured_maximum_packet_size,
    &[("max_packet_size", "1024")]
);

configured!(
    item_13_configured_server_capabilities_standalone,
    item_13_configured_server_capabilities_cluster,
    test_limits::item_13_configured_server_capabilities,
    &[
        ("maximum_qos", "1"),
        ("retain_available", "false"),
        ("wildcard_subscriptions", "false"),
        ("subscription_identifiers", "false"),
        ("shared_subscriptions", "false"),
        ("max_keep_alive", "5"),
        ("receive_maximum", "10"),
        ("topic_alias_maximum", "3"),
        ("max_packet_size", "2048"),
        ("max_session_expiry_secs", "100"),
    ]
);

#[test]
fn access_rules_standalone() {
    test_acl::access_rules(&Topology::standalone_env(&test_acl::rules()));
}

#[test]
fn access_rules_cluster() {
    test_acl::access_rules(&Topology::cluster_env(&test_acl::rules()));
}

configured!(
    publish_rate_standalone,
    publish_rate_cluster,
    test_limits::configured_publish_rate,
    &[("max_publish_rate", "5")]
);
