//! Helpers shared by the table tests.

use std::num::NonZeroU16;

use bytes::BytesMut;
use herald_mqtt::{Codec, DecodeError, Packet, ProtocolVersion, ReasonCode, encoded_len};

pub(crate) const V3: ProtocolVersion = ProtocolVersion::V311;
pub(crate) const V5: ProtocolVersion = ProtocolVersion::V5;
pub(crate) const BOTH: [ProtocolVersion; 2] = [V3, V5];

pub(crate) fn id(value: u16) -> NonZeroU16 {
    NonZeroU16::new(value).expect("test packet identifiers are non-zero")
}

/// Asserts `bytes` is exactly the encoding of `packet` at `version`, that
/// `encoded_len` agrees, and that the bytes decode back (see
/// [`assert_decodes`]).
pub(crate) fn assert_vector(version: ProtocolVersion, bytes: &[u8], packet: &Packet) {
    let mut out = BytesMut::new();
    Codec::new(version, u32::MAX).encode(packet, &mut out).expect("vector packet encodes");
    assert_eq!(&out[..], bytes, "encoding of {packet:?} at {version:?}");
    assert_eq!(encoded_len(packet, version), bytes.len(), "encoded_len of {packet:?}");
    assert_decodes(version, bytes, packet);
}

/// Asserts every strict prefix of `bytes` decodes to `Ok(None)` and leaves
/// the buffer as it was, and the whole decodes to `packet`, consuming it.
pub(crate) fn assert_decodes(version: ProtocolVersion, bytes: &[u8], packet: &Packet) {
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        let result = Codec::new(version, u32::MAX).decode(&mut buf);
        assert_eq!(result, Ok(None), "prefix of {cut} bytes of {bytes:02X?}");
        assert_eq!(&buf[..], &bytes[..cut], "prefix of {cut} bytes was changed");
    }
    let mut buf = BytesMut::from(bytes);
    let result = Codec::new(version, u32::MAX).decode(&mut buf);
    assert_eq!(result, Ok(Some(packet.clone())), "{bytes:02X?} at {version:?}");
    assert!(buf.is_empty(), "decoding left {} bytes", buf.len());
}

/// Asserts decoding `bytes` at `version` fails with `error`, and that
/// `error` maps to `reason`.
pub(crate) fn assert_rejects(version: ProtocolVersion, bytes: &[u8], error: DecodeError, reason: ReasonCode) {
    let mut buf = BytesMut::from(bytes);
    let result = Codec::new(version, u32::MAX).decode(&mut buf);
    assert_eq!(result, Err(error.clone()), "{bytes:02X?} at {version:?}");
    assert_eq!(error.reason_code(), reason, "reason code of {error}");
}

/// Encodes `packet` at `version`; for building inputs the encoder does not
/// police (a property where it does not belong, a zero value).
pub(crate) fn encode(version: ProtocolVersion, packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    Codec::new(version, u32::MAX).encode(packet, &mut out).expect("test packet encodes");
    out.to_vec()
}

/// Decodes one packet from `bytes`, which must hold a whole packet.
pub(crate) fn decode(version: ProtocolVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    Codec::new(version, u32::MAX).decode(&mut buf).map(|packet| packet.expect("a whole packet"))
}

/// Returns a packet with first byte `first_byte` and `body`, the remaining
/// length (below 128 here) filled in.
pub(crate) fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).ok().filter(|&len| len < 128).expect("short test body");
    let mut out = vec![first_byte, len];
    out.extend_from_slice(body);
    out
}

/// Returns `bytes` with a two-byte length prefix: a string or binary field.
pub(crate) fn field(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("short test field");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}
