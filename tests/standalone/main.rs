//! End-to-end tests of `herald standalone` with real MQTT clients over loopback TCP and WebSocket.
//!
//! Each test starts its own broker process on a free port with its own data directory, so tests
//! run in parallel. The clients are the mosquitto command-line tools (Debian `mosquitto-clients`),
//! paho scenarios in `py/` run by Debian's `/usr/bin/python3` (`python3-paho-mqtt`), and raw
//! sockets for malformed input; `stdbuf` (coreutils) line-buffers `mosquitto_sub`. Start with
//! `support.rs`.
//!
//! Run with `cargo nextest run --test standalone`. A failing test prints the broker's log and the
//! output of the clients it started.

mod ops_client;
mod push_client;
mod support;
mod test_bad_input;
mod test_config;
mod test_device_users;
mod test_disk_full;
mod test_durability;
mod test_leaks;
mod test_lifecycle;
mod test_ops;
mod test_push;
mod test_qos;
mod test_registry;
mod test_retained;
mod test_sessions;
mod test_shared;
mod test_tls;
mod test_websocket;
mod test_wildcards;
mod test_will;
