//! CONNACK (§3.2): the server's answer to CONNECT.

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::ReasonCode;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::wire;

/// The CONNACK reason codes of §3.2.2.2.
const ALLOWED: &[ReasonCode] = {
    use ReasonCode::*;
    &[
        Success,
        UnspecifiedError,
        MalformedPacket,
        ProtocolError,
        ImplementationSpecificError,
        UnsupportedProtocolVersion,
        ClientIdentifierNotValid,
        BadUserNameOrPassword,
        NotAuthorized,
        ServerUnavailable,
        ServerBusy,
        Banned,
        BadAuthenticationMethod,
        TopicNameInvalid,
        PacketTooLarge,
        QuotaExceeded,
        PayloadFormatInvalid,
        RetainNotSupported,
        QosNotSupported,
        UseAnotherServer,
        ServerMoved,
        ConnectionRateExceeded,
    ]
};

const SESSION_PRESENT: u8 = 0x01;

/// The server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session. Must be false when
    /// `reason_code` refuses the connection.
    pub session_present: bool,
    /// The v5 reason code; mapped to a 3.1.1 return code on encode.
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

impl ConnAck {
    /// Returns a CONNACK with `reason_code`, no session present and no
    /// properties.
    pub fn new(reason_code: ReasonCode) -> ConnAck {
        ConnAck { session_present: false, reason_code, properties: Properties::new() }
    }

    pub(crate) fn decode(body: &mut Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let flags = wire::read_u8(body)?;
        if flags & !SESSION_PRESENT != 0 {
            return Err(DecodeError::ConnAckReservedFlags { flags });
        }
        let session_present = flags & SESSION_PRESENT != 0;
        let reason_code = match version {
            ProtocolVersion::V311 => {
                let code = wire::read_u8(body)?;
                ReasonCode::from_v3_connack(code)
                    .ok_or(DecodeError::InvalidReasonCode { packet: "CONNACK", code })?
            }
            ProtocolVersion::V5 => super::read_reason_code(body, "CONNACK", ALLOWED)?,
        };
        if session_present && reason_code != ReasonCode::Success {
            return Err(DecodeError::SessionPresentWithError);
        }
        let properties = match version {
            ProtocolVersion::V311 => Properties::new(),
            ProtocolVersion::V5 => Properties::decode(body, PropertyContext::ConnAck)?,
        };
        Ok(ConnAck { session_present, reason_code, properties })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        match version {
            ProtocolVersion::V311 => 2,
            ProtocolVersion::V5 => 2 + self.properties.encoded_len(),
        }
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        dst.put_u8(if self.session_present { SESSION_PRESENT } else { 0 });
        match version {
            ProtocolVersion::V311 => dst.put_u8(self.reason_code.to_v3_connack()),
            ProtocolVersion::V5 => {
                dst.put_u8(self.reason_code.as_u8());
                self.properties.encode(dst)?;
            }
        }
        Ok(())
    }
}
