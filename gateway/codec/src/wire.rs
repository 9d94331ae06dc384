//! The data representations of MQTT 5.0 §1.5 (3.1.1 §1.5 is a subset):
//! big-endian integers, variable byte integers, length-prefixed UTF-8
//! strings and binary data.
//!
//! Readers take the packet body as `&mut Bytes` that ends where the packet
//! ends, so no field can ever read into the next packet: running out of bytes
//! is [`DecodeError::UnexpectedEnd`]. Strings and binary data are split off
//! the body, sharing its allocation instead of copying.

use std::num::NonZeroU16;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::{DecodeError, EncodeError};

/// The largest value a variable byte integer can hold (four bytes).
pub(crate) const MAX_VARIABLE_INTEGER: u32 = 268_435_455;

pub(crate) fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    buf.try_get_u8().map_err(|_| DecodeError::UnexpectedEnd)
}

pub(crate) fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    buf.try_get_u16().map_err(|_| DecodeError::UnexpectedEnd)
}

pub(crate) fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    buf.try_get_u32().map_err(|_| DecodeError::UnexpectedEnd)
}

/// Reads a packet identifier, which is non-zero wherever it appears.
pub(crate) fn read_packet_id(buf: &mut Bytes) -> Result<NonZeroU16, DecodeError> {
    NonZeroU16::new(read_u16(buf)?).ok_or(DecodeError::ZeroPacketId)
}

/// Parses a variable byte integer at the start of `bytes`, returning its
/// value and length, or `Ok(None)` when `bytes` ends before its last byte.
///
/// A fourth byte with the continuation bit set is an error at once: the
/// answer cannot depend on bytes that have not arrived yet.
pub(crate) fn parse_variable_integer(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (index, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            // A final byte of zero after a continuation adds nothing: the
            // same value fits in fewer bytes.
            if index > 0 && byte == 0 {
                return Err(DecodeError::NonMinimalVariableInteger);
            }
            return Ok(Some((value, index + 1)));
        }
        if index == 3 {
            return Err(DecodeError::VariableIntegerTooLong);
        }
    }
    Ok(None)
}

pub(crate) fn read_variable_integer(buf: &mut Bytes) -> Result<u32, DecodeError> {
    match parse_variable_integer(buf)? {
        Some((value, len)) => {
            buf.advance(len);
            Ok(value)
        }
        None => Err(DecodeError::UnexpectedEnd),
    }
}

/// Splits `len` bytes off the front of `buf` without copying.
fn split(buf: &mut Bytes, len: usize) -> Result<Bytes, DecodeError> {
    if buf.len() < len {
        return Err(DecodeError::UnexpectedEnd);
    }
    Ok(buf.split_to(len))
}

/// Reads a UTF-8 encoded string. The result shares the packet's buffer.
pub(crate) fn read_string(buf: &mut Bytes) -> Result<ByteString, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    let bytes = split(buf, len)?;
    // U+0000 is the only code point whose UTF-8 form contains a zero byte.
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    // from_utf8 refuses surrogates (U+D800..U+DFFF), as [MQTT-1.5.4-1] asks.
    ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

/// Reads binary data. The result shares the packet's buffer.
pub(crate) fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    split(buf, len)
}

/// Returns how many bytes the variable byte integer form of `value` takes.
/// Values above the maximum count as four; encoding them fails.
pub(crate) fn variable_integer_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn write_variable_integer(dst: &mut BytesMut, value: u32) -> Result<(), EncodeError> {
    if value > MAX_VARIABLE_INTEGER {
        return Err(EncodeError::VariableIntegerTooLarge { value });
    }
    let mut rest = value;
    loop {
        // Truncation is the point: the low seven bits go out first.
        let mut byte = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest > 0 {
            byte |= 0x80;
        }
        dst.put_u8(byte);
        if rest == 0 {
            return Ok(());
        }
    }
}

/// Returns the encoded length of a string or binary field.
pub(crate) fn field_len(bytes: &[u8]) -> usize {
    2 + bytes.len()
}

pub(crate) fn write_string(dst: &mut BytesMut, value: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len()).map_err(|_| EncodeError::StringTooLong { len: value.len() })?;
    dst.put_u16(len);
    dst.put_slice(value.as_bytes());
    Ok(())
}

pub(crate) fn write_binary(dst: &mut BytesMut, value: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len()).map_err(|_| EncodeError::BinaryTooLong { len: value.len() })?;
    dst.put_u16(len);
    dst.put_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_integers_match_the_boundaries_of_table_1_5_5() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            let mut out = BytesMut::new();
            write_variable_integer(&mut out, value).expect("in range");
            assert_eq!(&out[..], bytes, "{value}");
            assert_eq!(variable_integer_len(value as usize), bytes.len(), "{value}");
            assert_eq!(parse_variable_integer(bytes), Ok(Some((value, bytes.len()))));
            for cut in 0..bytes.len() {
                assert_eq!(parse_variable_integer(&bytes[..cut]), Ok(None), "{value} cut {cut}");
            }
        }
    }

    #[test]
    fn variable_integers_refuse_a_fifth_byte_and_padding() {
        assert_eq!(
            parse_variable_integer(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::VariableIntegerTooLong)
        );
        assert_eq!(parse_variable_integer(&[0x80, 0x00]), Err(DecodeError::NonMinimalVariableInteger));
        assert_eq!(parse_variable_integer(&[0xFF, 0x80, 0x00]), Err(DecodeError::NonMinimalVariableInteger));
        let mut out = BytesMut::new();
        assert_eq!(
            write_variable_integer(&mut out, MAX_VARIABLE_INTEGER + 1),
            Err(EncodeError::VariableIntegerTooLarge { value: MAX_VARIABLE_INTEGER + 1 })
        );
    }

    #[test]
    fn strings_are_checked_and_share_the_packet_buffer() {
        let mut buf = Bytes::from_static(b"\x00\x03a/bXY");
        let base = buf.as_ptr();
        let s = read_string(&mut buf).expect("valid");
        assert_eq!(&*s, "a/b");
        assert_eq!(s.as_bytes().as_ptr(), base.wrapping_add(2), "no copy");
        assert_eq!(&buf[..], b"XY");

        let cases: &[(&[u8], DecodeError)] = &[
            (b"\x00\x02a\x00", DecodeError::NullCharacter),
            (b"\x00\x02\xC3\x28", DecodeError::InvalidUtf8),
            // U+D800 encoded as if it were a scalar value.
            (b"\x00\x03\xED\xA0\x80", DecodeError::InvalidUtf8),
            (b"\x00\x05abc", DecodeError::UnexpectedEnd),
            (b"\x00", DecodeError::UnexpectedEnd),
        ];
        for (bytes, want) in cases {
            let mut buf = Bytes::from_static(bytes);
            assert_eq!(read_string(&mut buf), Err(want.clone()), "{bytes:?}");
        }
    }

    #[test]
    fn long_fields_cannot_be_encoded() {
        let long = "a".repeat(65_536);
        let mut out = BytesMut::new();
        assert_eq!(write_string(&mut out, &long), Err(EncodeError::StringTooLong { len: 65_536 }));
        assert_eq!(write_binary(&mut out, long.as_bytes()), Err(EncodeError::BinaryTooLong { len: 65_536 }));
        write_string(&mut out, &long[..65_535]).expect("fits");
        assert_eq!(out.len(), 65_537);
    }
}
