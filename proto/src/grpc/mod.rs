//! The seam's gRPC form: generated protobuf types and service stubs
//! (`proto/herald/v1/seam.proto`), and conversions between them and the
//! seam items in [`crate::seam`].
//!
//! Conversion from the wire checks everything a peer could get wrong
//! (missing fields, invalid topics or ids, unknown error names) and fails
//! with a [`ConvertError`] naming the field; the receiving side answers a
//! gRPC `InvalidArgument` and counts it.

mod convert;
pub(crate) mod journal;
mod push;
pub mod tls;
mod users;

pub use convert::{
    ConvertError, downlink_from_pb, downlink_to_pb, epoch_from_pb, epoch_to_pb, message_from_pb,
    message_to_pb, session_from_pb, session_to_pb, uplink_from_pb, uplink_to_pb, will_from_pb, will_to_pb,
};

/// Generated protobuf messages and service stubs.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("herald.v1");
}

/// What a router says when it refuses a gateway's link, or closes one,
/// because it does not (or no longer) serve gateways: the gateway tries the
/// other routers of the cluster it knows.
pub const NOT_LEADER: &str = "not serving gateways; try another router of the cluster";

/// What a router says when another gateway process holds the gateway id:
/// a gateway restarted quickly waits until the router sees the old link end.
pub const ALREADY_LINKED: &str = "another process holds this gateway id";

/// The largest stream message either side accepts. One item must fit: a
/// claim grant carries a resumed session's whole queue (bounded by the
/// offline-queue limit), so this is generous; streaming the queue instead
/// is the durable-inbox work's.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Batches are cut at about this many encoded bytes, so that large
/// payloads make smaller batches rather than oversize stream messages.
pub const BATCH_BYTES: usize = 4 << 20;

/// Splits `items` into batches of at most [`BATCH_BYTES`] encoded bytes
/// (an item larger than that is a batch of its own), in order.
pub fn split_by_size<T: prost::Message>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = item.encoded_len();
        if !current.is_empty() && bytes + size > BATCH_BYTES {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(item);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The seam contract version a build speaks. A router refuses a gateway of
/// another version with `FailedPrecondition`; it changes only when a
/// change cannot be read by the previous version (see the `.proto` header).
pub const CONTRACT_VERSION: u32 = 1;
