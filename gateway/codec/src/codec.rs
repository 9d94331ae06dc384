//! The per-connection codec: framing by the fixed header (§2.1), the maximum
//! packet size, and the protocol version in force.

use bytes::{Buf, BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::packet::{self, Packet};
use crate::wire;

/// The MQTT protocol versions this codec speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// Returns the protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// Returns the version for a protocol level, or `None` for levels this
    /// codec does not speak.
    pub fn from_level(level: u8) -> Option<ProtocolVersion> {
        match level {
            4 => Some(ProtocolVersion::V311),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }
}

/// Decodes and encodes the packets of one connection.
///
/// Holds only the protocol version and the largest packet it accepts (eight
/// bytes): everything else about the connection is session state and lives
/// with the session.
#[derive(Debug, Clone)]
pub struct Codec {
    max_packet_size: u32,
    version: ProtocolVersion,
}

impl Codec {
    /// Returns a codec speaking `version` that refuses incoming packets
    /// larger than `max_packet_size` bytes, fixed header included (pass
    /// `u32::MAX` for no limit beyond the protocol's own).
    pub fn new(version: ProtocolVersion, max_packet_size: u32) -> Codec {
        Codec { max_packet_size, version }
    }

    /// Returns the protocol version packets are decoded and encoded at.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Switches the protocol version.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// Returns the largest incoming packet accepted, in bytes.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Changes the largest incoming packet accepted, in bytes.
    pub fn set_max_packet_size(&mut self, max_packet_size: u32) {
        self.max_packet_size = max_packet_size;
    }

    /// Decodes the packet at the front of `src`.
    ///
    /// Returns `Ok(None)` when `src` does not hold a whole packet yet; `src`
    /// is then left as it was, with room reserved for the rest of the packet
    /// (never more than the maximum packet size). Returns an error as soon
    /// as the bytes present prove the packet invalid: the fixed header and
    /// the size limit are checked before the body is buffered. After an
    /// error the stream cannot be resynchronised and the connection must
    /// close.
    ///
    /// On a decoded CONNECT the codec adopts the CONNECT's protocol level, so
    /// packets pipelined behind it in the same buffer decode at the right
    /// version.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(&first_byte) = src.first() else {
            return Ok(None);
        };
        packet::check_first_byte(first_byte, self.version)?;
        let Some((remaining, length_bytes)) = wire::parse_variable_integer(&src[1..])? else {
            return Ok(None);
        };
        let header_len = 1 + length_bytes;
        let total = header_len + remaining as usize;
        if total > self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge { size: total, max: self.max_packet_size });
        }
        if src.len() < total {
            // Bounded by the check above, so a peer announcing a huge packet
            // cannot make us allocate more than the limit.
            src.reserve(total - src.len());
            return Ok(None);
        }
        // Freezing the split-off packet lets topics and payloads be slices
        // of the read buffer: fan-out clones a reference count, not bytes.
        let mut body = src.split_to(total).freeze();
        body.advance(header_len);
        let packet = packet::decode(first_byte, body, self.version)?;
        if let Packet::Connect(connect) = &packet {
            self.version = connect.protocol;
        }
        Ok(Some(packet))
    }

    /// Appends the encoding of `packet` at [`Codec::version`] to `dst`.
    ///
    /// Whatever the version cannot carry is left out: properties, reason
    /// codes other than CONNACK's and SUBACK's, and subscription options
    /// beyond QoS in MQTT 3.1.1. CONNACK and SUBACK reason codes are mapped
    /// to their 3.1.1 return codes. On error nothing is appended.
    pub fn encode(&self, packet: &Packet, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let version = self.version;
        if let Packet::Connect(connect) = packet
            && connect.protocol != version
        {
            return Err(EncodeError::ConnectVersionMismatch { connect: connect.protocol, codec: version });
        }
        let remaining = packet.body_len(version);
        let remaining_u32 = u32::try_from(remaining)
            .ok()
            .filter(|&len| len <= wire::MAX_VARIABLE_INTEGER)
            .ok_or(EncodeError::PacketTooLarge { remaining })?;
        let start = dst.len();
        dst.reserve(1 + wire::variable_integer_len(remaining) + remaining);
        dst.put_u8(packet.first_byte());
        wire::write_variable_integer(dst, remaining_u32)?;
        let body_start = dst.len();
        if let Err(err) = packet.encode_body(version, dst) {
            dst.truncate(start);
            return Err(err);
        }
        debug_assert_eq!(dst.len() - body_start, remaining, "body_len disagrees with encode_body");
        Ok(())
    }
}

/// Returns the total encoded size of `packet` at `version`, fixed header
/// included: what to compare with a peer's Maximum Packet Size before
/// sending.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let remaining = packet.body_len(version);
    1 + wire::variable_integer_len(remaining) + remaining
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codec_is_a_few_bytes() {
        assert!(size_of::<Codec>() <= 8, "{}", size_of::<Codec>());
    }

    #[test]
    fn protocol_levels_are_4_and_5() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            assert_eq!(ProtocolVersion::from_level(version.level()), Some(version));
        }
        assert_eq!(ProtocolVersion::V311.level(), 4);
        assert_eq!(ProtocolVersion::V5.level(), 5);
        assert_eq!(ProtocolVersion::from_level(3), None);
    }
}
