//! The seam's gRPC form: generated protobuf types and service stubs
//! (`proto/herald/v1/seam.proto`), and conversions between them and the
//! seam items in [`crate::seam`].
//!
//! Conversion from the wire checks everything a peer could get wrong
//! (missing fields, invalid topics or ids, unknown error names) and fails
//! with a [`ConvertError`] naming the field; the receiving side answers a
//! gRPC `InvalidArgument` and counts it.

mod convert;

pub use convert::{
    ConvertError, downlink_from_pb, downlink_to_pb, message_from_pb, message_to_pb, uplink_from_pb,
    uplink_to_pb,
};

/// Generated protobuf messages and service stubs.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("herald.v1");
}

/// The seam contract version a build speaks. A router refuses a gateway of
/// another version with `FailedPrecondition`; it changes only when a
/// change cannot be read by the previous version (see the `.proto` header).
pub const CONTRACT_VERSION: u32 = 1;
