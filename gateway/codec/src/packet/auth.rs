//! AUTH (§3.15): the extended authentication exchange, MQTT 5.0 only. Packet
//! type 15 is reserved in 3.1.1, so the fixed header check refuses it there
//! before this file is reached.

use bytes::{Bytes, BytesMut};
use herald_core::ReasonCode;

use super::disconnect::{encode_short_form, short_form_len};
use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};

/// The AUTH reason codes of §3.15.2.1.
const ALLOWED: &[ReasonCode] =
    &[ReasonCode::Success, ReasonCode::ContinueAuthentication, ReasonCode::ReAuthenticate];

/// One step of an extended authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, continue authentication or re-authenticate.
    pub reason_code: ReasonCode,
    /// AUTH properties: Authentication Method and Data, Reason String, User
    /// Properties.
    pub properties: Properties,
}

impl Auth {
    /// Returns an AUTH with `reason_code` and no properties.
    pub fn new(reason_code: ReasonCode) -> Auth {
        Auth { reason_code, properties: Properties::new() }
    }

    /// Decodes the forms DISCONNECT also has: remaining length 0 (success),
    /// 1 (reason code only) or more.
    pub(crate) fn decode(body: &mut Bytes, version: ProtocolVersion) -> Result<Auth, DecodeError> {
        if version == ProtocolVersion::V311 {
            return Err(DecodeError::ReservedPacketType { packet_type: 15 });
        }
        if body.is_empty() {
            return Ok(Auth::new(ReasonCode::Success));
        }
        let reason_code = super::read_reason_code(body, "AUTH", ALLOWED)?;
        let properties = if body.is_empty() {
            Properties::new()
        } else {
            Properties::decode(body, PropertyContext::Auth)?
        };
        Ok(Auth { reason_code, properties })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        short_form_len(version, self.reason_code, &self.properties)
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if version == ProtocolVersion::V311 {
            return Err(EncodeError::UnsupportedInVersion { packet: "AUTH", version });
        }
        encode_short_form(version, self.reason_code, &self.properties, dst)
    }
}
