//! The contracts between gateways and routers.
//!
//! Owns: the [`Message`] that travels from ingress to device, and the
//! gateway↔router seam ([`seam`]): two bounded, batched streams per gateway.
//! The uplink carries session claims and releases, route changes,
//! subscriptions, publishes and acknowledgements; the downlink carries
//! replies, deliveries and revocations. Standalone mode passes these items
//! over in-process channels ([`seam::link`]); the cluster carries the same
//! items over gRPC, one stream message per batch.
//!
//! Must never depend on: another workspace crate than `herald-core`; in
//! particular never on the gateway or the router, so that neither of those
//! depends on the other.
//!
//! Start here: `seam.rs` (the items and their ordering rules), `message.rs`,
//! then `proto/herald/v1/seam.proto` and `grpc/convert.rs` (the wire form).

pub mod grpc;
pub mod journal;
mod message;
mod push;
pub mod seam;
pub mod trace;
pub mod users;

pub use message::{Message, MessageProperties};
