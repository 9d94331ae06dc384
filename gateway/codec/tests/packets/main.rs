//! Table tests per packet type: byte-exact vectors worked out from the field
//! layouts of MQTT 3.1.1 and 5.0 §3, and a negative table for every rule the
//! decoder enforces, asserting the exact error and its reason code.

mod support;
mod test_ack;
mod test_auth;
mod test_connack;
mod test_connect;
mod test_disconnect;
mod test_framing;
mod test_ping;
mod test_properties;
mod test_publish;
mod test_reason_codes;
mod test_suback;
mod test_subscribe;
mod test_unsuback;
mod test_unsubscribe;
