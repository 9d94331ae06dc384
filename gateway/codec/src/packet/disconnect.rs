//! DISCONNECT (§3.14). Empty in 3.1.1; 5.0 adds an optional reason code and
//! properties.

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::ReasonCode;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};

/// The DISCONNECT reason codes of §3.14.2.1.
const ALLOWED: &[ReasonCode] = {
    use ReasonCode::*;
    &[
        Success,
        DisconnectWithWill,
        UnspecifiedError,
        MalformedPacket,
        ProtocolError,
        ImplementationSpecificError,
        NotAuthorized,
        ServerBusy,
        ServerShuttingDown,
        KeepAliveTimeout,
        SessionTakenOver,
        TopicFilterInvalid,
        TopicNameInvalid,
        ReceiveMaximumExceeded,
        TopicAliasInvalid,
        PacketTooLarge,
        MessageRateTooHigh,
        QuotaExceeded,
        AdministrativeAction,
        PayloadFormatInvalid,
        RetainNotSupported,
        QosNotSupported,
        UseAnotherServer,
        ServerMoved,
        SharedSubscriptionsNotSupported,
        ConnectionRateExceeded,
        MaximumConnectTime,
        SubscriptionIdentifiersNotSupported,
        WildcardSubscriptionsNotSupported,
    ]
};

/// A notice that the connection is closing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The v5 reason code; 3.1.1 has no room for it.
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (5.0).
    pub properties: Properties,
}

impl Disconnect {
    /// Returns a DISCONNECT with `reason_code` and no properties.
    pub fn new(reason_code: ReasonCode) -> Disconnect {
        Disconnect { reason_code, properties: Properties::new() }
    }

    /// Decodes the 5.0 forms: remaining length 0 (normal disconnection), 1
    /// (reason code only) or more. In 3.1.1 any body is left for the trailing
    /// bytes check.
    pub(crate) fn decode(body: &mut Bytes, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
        if version == ProtocolVersion::V311 || body.is_empty() {
            return Ok(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
        }
        let reason_code = super::read_reason_code(body, "DISCONNECT", ALLOWED)?;
        let properties = if body.is_empty() {
            Properties::new()
        } else {
            Properties::decode(body, PropertyContext::Disconnect)?
        };
        Ok(Disconnect { reason_code, properties })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        short_form_len(version, self.reason_code, &self.properties)
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        encode_short_form(version, self.reason_code, &self.properties, dst)
    }
}

/// Returns the length of the shortest form of a DISCONNECT or AUTH body:
/// nothing for success without properties, the reason code alone without
/// properties, both otherwise (§3.14.2.1, §3.15.2.1).
pub(super) fn short_form_len(
    version: ProtocolVersion,
    reason_code: ReasonCode,
    properties: &Properties,
) -> usize {
    match version {
        ProtocolVersion::V311 => 0,
        ProtocolVersion::V5 if !properties.is_empty() => 1 + properties.encoded_len(),
        ProtocolVersion::V5 if reason_code != ReasonCode::Success => 1,
        ProtocolVersion::V5 => 0,
    }
}

/// Writes the form [`short_form_len`] measures.
pub(super) fn encode_short_form(
    version: ProtocolVersion,
    reason_code: ReasonCode,
    properties: &Properties,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    if short_form_len(version, reason_code, properties) == 0 {
        return Ok(());
    }
    dst.put_u8(reason_code.as_u8());
    if !properties.is_empty() {
        properties.encode(dst)?;
    }
    Ok(())
}
