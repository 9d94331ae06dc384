//! The body of the cargo-fuzz target in `fuzz/`, kept in the crate so an
//! ordinary test can replay the seed corpus through exactly the same checks.

use bytes::BytesMut;

use crate::codec::{Codec, ProtocolVersion, encoded_len};
use crate::error::DecodeError;
use crate::packet::Packet;

/// Small enough that fuzz inputs reach the size limit, large enough for the
/// seed packets to pass it.
const FUZZ_MAX_PACKET_SIZE: u32 = 4096;

/// What decoding a byte stream produced: each packet with the version it was
/// decoded at, then the error that stopped the stream, if any.
type Outcome = (Vec<(Packet, ProtocolVersion)>, Option<DecodeError>);

/// Decodes `data` at both protocol versions and panics if an invariant
/// breaks: decoding never panics; the packets and the error do not depend on
/// how the bytes are split across reads; `Ok(None)` leaves the buffer as it
/// was; every decoded packet re-encodes to `encoded_len` bytes that decode
/// to an equal packet.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let whole = decode_stream(version, data, data.len().max(1));
        let byte_by_byte = decode_stream(version, data, 1);
        assert_eq!(whole, byte_by_byte, "result depends on read boundaries");
        for (packet, packet_version) in &whole.0 {
            check_reencodes(packet, *packet_version);
        }
    }
}

fn decode_stream(version: ProtocolVersion, data: &[u8], chunk_size: usize) -> Outcome {
    let mut codec = Codec::new(version, FUZZ_MAX_PACKET_SIZE);
    let mut buffer = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in data.chunks(chunk_size) {
        buffer.extend_from_slice(chunk);
        loop {
            let before = buffer.clone();
            match codec.decode(&mut buffer) {
                Ok(Some(packet)) => packets.push((packet, codec.version())),
                Ok(None) => {
                    assert_eq!(buffer, before, "Ok(None) changed the buffer");
                    break;
                }
                Err(err) => return (packets, Some(err)),
            }
        }
    }
    (packets, None)
}

fn check_reencodes(packet: &Packet, version: ProtocolVersion) {
    let codec = Codec::new(version, u32::MAX);
    let mut encoded = BytesMut::new();
    if let Err(err) = codec.encode(packet, &mut encoded) {
        panic!("decoded {packet:?} does not re-encode: {err}");
    }
    assert_eq!(encoded.len(), encoded_len(packet, version), "encoded_len disagrees");
    let mut decoder = Codec::new(version, u32::MAX);
    match decoder.decode(&mut encoded) {
        Ok(Some(again)) => assert_eq!(&again, packet, "re-encoding changed the packet"),
        other => panic!("re-encoded {packet:?} decodes to {other:?}"),
    }
    assert!(encoded.is_empty(), "re-encoding left bytes behind");
}
