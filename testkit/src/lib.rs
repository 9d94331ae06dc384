//! Herald's test harness (used by tests only).
//!
//! Owns: [`process`], a supervisor for tests that start real processes (the
//! `herald` binary, client tools) with bounded waits and kill-on-drop; and
//! [`proxy`], a TCP fault proxy between two loopback endpoints that can pass,
//! delay, black-hole or cut traffic, so partition tests need no root; and
//! [`pki`], certificates made with `openssl` for TLS tests; and [`redis`],
//! a real `redis-server` started and stopped by the test.
//!
//! Must never depend on: Herald's own crates; it drives them from outside.

pub mod golden;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod redis;
