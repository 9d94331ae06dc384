//! Sans-IO MQTT 3.1.1 and 5.0 codec: bytes in, packets out.
//!
//! Owns: the wire format of every MQTT control packet at protocol levels 4
//! (3.1.1) and 5 (5.0), the fixed-header framing with the maximum packet size
//! enforced before a body is buffered, MQTT 5.0 properties, and every check
//! either specification makes about a packet on its own. Errors cite the
//! normative statement they enforce and map to the reason code to close
//! with ([`DecodeError::reason_code`]).
//!
//! Does not own: anything that needs connection history (packet identifiers
//! in flight, topic alias tables, receive maximum, keep alive, the order of
//! packets). That is session state and lives with the session.
//!
//! Must never depend on: any workspace crate but `herald-core`, nor on tokio,
//! clocks or I/O. One [`Codec`] per connection, driven by whichever task owns
//! the socket; the gateway, the load generator and test clients all share it.
//!
//! Start here:
//! - `codec.rs`: [`Codec::decode`] / [`Codec::encode`], framing and size limit.
//! - `packet/mod.rs`: [`Packet`] and the dispatch by packet type.
//! - `packet/publish.rs`: the hot path.
//! - `properties.rs`: [`Properties`]; `properties/encoding.rs`: table 2-4.
//! - `error.rs`: [`DecodeError`], [`EncodeError`] and the reason-code mapping.
//! - `wire.rs`: integers, variable byte integers, strings, binary data.

mod codec;
mod error;
mod fuzz;
mod packet;
mod properties;
mod wire;

pub use codec::{Codec, ProtocolVersion, encoded_len};
pub use error::{DecodeError, EncodeError};
#[doc(hidden)]
pub use fuzz::fuzz_decode;
pub use herald_core::{ByteString, QoS, ReasonCode};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PubAck, Publish, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use properties::{Properties, Property, PropertyId};
