//! The router: owner of everything that outlives a connection.
//!
//! Owns: the route table (which gateways have subscribers for which
//! filters), the session registry (who owns `(app, client id)`, at which
//! epoch), persistent sessions' subscriptions and offline queues, scheduled
//! wills and session expiries, and retained messages.
//!
//! ```text
//!   RouterPort (per gateway) ──▶ service::Router (shell task per port)
//!                                   │ lock, apply a batch, unlock
//!                                   ▼
//!                              state::RouterState (pure: items + time in,
//!                                   downlink effects out)
//! ```
//!
//! The state machine never reads a clock: every call takes `now`, so the
//! same code can later be applied as replicated commands carrying absolute
//! times. Must never depend on: `herald-gateway` or `herald-mqtt` (the
//! router speaks only the seam in `herald-proto`).
//!
//! Start here: `state/mod.rs`, then `state/sessions.rs` and
//! `state/routing.rs`; `service.rs` is the async shell, and
//! `registry_redis.rs` keeps the registry in Redis when asked to.

pub mod grpc;
pub mod locate;
pub mod owner;
pub mod raft;
pub mod registry_link;
pub mod registry_redis;
mod service;
pub mod state;

pub use service::{Committing, Journal, Router};
pub use state::{Overflow, RouterConfig, RouterCounters, RouterState};
