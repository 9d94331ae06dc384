//! PINGREQ and PINGRESP (§3.12, §3.13): a fixed header and nothing else.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::packet::Packet;

/// Returns `packet` if `body` is empty, as both ping packets require.
pub(super) fn decode(body: &Bytes, packet: Packet) -> Result<Packet, DecodeError> {
    if !body.is_empty() {
        return Err(DecodeError::TrailingBytes { count: body.len() });
    }
    Ok(packet)
}
