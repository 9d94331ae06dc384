//! The one error-code table: every failure Herald reports has a stable
//! code, and each code maps to an MQTT reason code, a gRPC status code and an
//! HTTP status, so the three transports never disagree about what happened.

use crate::ReasonCode;

/// A stable, transport-independent error code. The `as_str` form appears in
/// HTTP problem documents and logs and never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bytes that do not parse.
    Malformed,
    /// Well-formed input that breaks a protocol rule.
    ProtocolViolation,
    /// A topic name that is not valid, or not allowed for this client.
    TopicNameInvalid,
    /// A topic filter that is not valid, or not allowed for this client.
    TopicFilterInvalid,
    /// Credentials that do not check out.
    BadCredentials,
    /// An authenticated principal without the permission asked for.
    NotAuthorized,
    /// A packet or body over the size limit.
    TooLarge,
    /// A per-client or per-app quota is exhausted.
    QuotaExceeded,
    /// A rate limit was hit.
    RateLimited,
    /// The node sheds load.
    ServerBusy,
    /// The router has no quorum, or cannot be reached.
    Unavailable,
    /// The node is shutting down.
    ShuttingDown,
    /// A session was claimed by a newer owner; the caller's epoch is stale.
    StaleEpoch,
    /// A named resource does not exist.
    NotFound,
    /// The request conflicts with the current state (e.g. an idempotency key
    /// reused with another body).
    Conflict,
    /// The same request (e.g. a send under one idempotency key) is still
    /// being processed.
    InProgress,
    /// A bug or an unexpected failure inside Herald.
    Internal,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::Malformed,
        ErrorCode::ProtocolViolation,
        ErrorCode::TopicNameInvalid,
        ErrorCode::TopicFilterInvalid,
        ErrorCode::BadCredentials,
        ErrorCode::NotAuthorized,
        ErrorCode::TooLarge,
        ErrorCode::QuotaExceeded,
        ErrorCode::RateLimited,
        ErrorCode::ServerBusy,
        ErrorCode::Unavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::StaleEpoch,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::InProgress,
        ErrorCode::Internal,
    ];

    /// Returns the stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::ProtocolViolation => "protocol_violation",
            ErrorCode::TopicNameInvalid => "topic_name_invalid",
            ErrorCode::TopicFilterInvalid => "topic_filter_invalid",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::NotAuthorized => "not_authorized",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InProgress => "in_progress",
            ErrorCode::Internal => "internal",
        }
    }

    /// Returns the code named `name` (the `as_str` form).
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == name)
    }

    /// Returns the MQTT 5.0 reason code a client sees for this error.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            ErrorCode::Malformed => ReasonCode::MalformedPacket,
            ErrorCode::ProtocolViolation => ReasonCode::ProtocolError,
            ErrorCode::TopicNameInvalid => ReasonCode::TopicNameInvalid,
            ErrorCode::TopicFilterInvalid => ReasonCode::TopicFilterInvalid,
            ErrorCode::BadCredentials => ReasonCode::BadUserNameOrPassword,
            ErrorCode::NotAuthorized => ReasonCode::NotAuthorized,
            ErrorCode::TooLarge => ReasonCode::PacketTooLarge,
            ErrorCode::QuotaExceeded => ReasonCode::QuotaExceeded,
            ErrorCode::RateLimited => ReasonCode::MessageRateTooHigh,
            ErrorCode::ServerBusy => ReasonCode::ServerBusy,
            ErrorCode::Unavailable => ReasonCode::ServerUnavailable,
            ErrorCode::ShuttingDown => ReasonCode::ServerShuttingDown,
            ErrorCode::StaleEpoch => ReasonCode::SessionTakenOver,
            ErrorCode::NotFound | ErrorCode::Conflict | ErrorCode::InProgress => ReasonCode::UnspecifiedError,
            ErrorCode::Internal => ReasonCode::ImplementationSpecificError,
        }
    }

    /// Returns the stable code of an MQTT error reason code (`None` for
    /// success codes). Several reason codes share a stable code: the reason
    /// code says exactly what happened, the stable code what kind of thing.
    pub fn from_reason_code(reason: ReasonCode) -> Option<ErrorCode> {
        use ReasonCode as R;
        Some(match reason {
            R::MalformedPacket | R::PayloadFormatInvalid => ErrorCode::Malformed,
            R::ProtocolError
            | R::UnsupportedProtocolVersion
            | R::ClientIdentifierNotValid
            | R::KeepAliveTimeout
            | R::ReceiveMaximumExceeded
            | R::TopicAliasInvalid
            | R::RetainNotSupported
            | R::QosNotSupported
            | R::SharedSubscriptionsNotSupported
            | R::SubscriptionIdentifiersNotSupported
            | R::WildcardSubscriptionsNotSupported => ErrorCode::ProtocolViolation,
            R::TopicNameInvalid => ErrorCode::TopicNameInvalid,
            R::TopicFilterInvalid => ErrorCode::TopicFilterInvalid,
            R::BadUserNameOrPassword | R::BadAuthenticationMethod => ErrorCode::BadCredentials,
            R::NotAuthorized | R::Banned => ErrorCode::NotAuthorized,
            R::PacketTooLarge => ErrorCode::TooLarge,
            R::QuotaExceeded => ErrorCode::QuotaExceeded,
            R::MessageRateTooHigh | R::ConnectionRateExceeded => ErrorCode::RateLimited,
            R::ServerBusy => ErrorCode::ServerBusy,
            R::ServerUnavailable
            | R::UseAnotherServer
            | R::ServerMoved
            | R::AdministrativeAction
            | R::MaximumConnectTime => ErrorCode::Unavailable,
            R::ServerShuttingDown => ErrorCode::ShuttingDown,
            R::SessionTakenOver => ErrorCode::StaleEpoch,
            R::PacketIdentifierNotFound => ErrorCode::NotFound,
            R::PacketIdentifierInUse => ErrorCode::Conflict,
            R::UnspecifiedError | R::ImplementationSpecificError => ErrorCode::Internal,
            _ => return None,
        })
    }

    /// Returns the gRPC status code (numeric, as in `google.rpc.Code`), so
    /// this crate needs no gRPC dependency.
    pub fn grpc_code(self) -> i32 {
        const INVALID_ARGUMENT: i32 = 3;
        const NOT_FOUND: i32 = 5;
        const PERMISSION_DENIED: i32 = 7;
        const RESOURCE_EXHAUSTED: i32 = 8;
        const FAILED_PRECONDITION: i32 = 9;
        const ABORTED: i32 = 10;
        const INTERNAL: i32 = 13;
        const UNAVAILABLE: i32 = 14;
        const UNAUTHENTICATED: i32 = 16;
        match self {
            ErrorCode::Malformed
            | ErrorCode::ProtocolViolation
            | ErrorCode::TopicNameInvalid
            | ErrorCode::TopicFilterInvalid => INVALID_ARGUMENT,
            ErrorCode::BadCredentials => UNAUTHENTICATED,
            ErrorCode::NotAuthorized => PERMISSION_DENIED,
            ErrorCode::TooLarge | ErrorCode::QuotaExceeded | ErrorCode::RateLimited => RESOURCE_EXHAUSTED,
            ErrorCode::ServerBusy | ErrorCode::Unavailable | ErrorCode::ShuttingDown => UNAVAILABLE,
            ErrorCode::StaleEpoch => ABORTED,
            ErrorCode::NotFound => NOT_FOUND,
            ErrorCode::Conflict => FAILED_PRECONDITION,
            ErrorCode::InProgress => ABORTED,
            ErrorCode::Internal => INTERNAL,
        }
    }

    /// Returns the HTTP status for the push API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Malformed
            | ErrorCode::ProtocolViolation
            | ErrorCode::TopicNameInvalid
            | ErrorCode::TopicFilterInvalid => 400,
            ErrorCode::BadCredentials => 401,
            ErrorCode::NotAuthorized => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::StaleEpoch | ErrorCode::InProgress => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::QuotaExceeded | ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::ServerBusy | ErrorCode::Unavailable | ErrorCode::ShuttingDown => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_statuses_are_errors() {
        let names: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
        for code in ErrorCode::ALL {
            assert!(code.reason_code().is_error(), "{code:?}");
            assert!(code.http_status() >= 400, "{code:?}");
            assert!(code.grpc_code() != 0, "{code:?}");
        }
    }

    #[test]
    fn every_error_reason_has_a_stable_code_and_the_table_round_trips() {
        for byte in 0..=u8::MAX {
            let Some(reason) = ReasonCode::from_u8(byte) else { continue };
            assert_eq!(ErrorCode::from_reason_code(reason).is_some(), reason.is_error(), "{reason:?}");
        }
        for code in ErrorCode::ALL {
            if !matches!(code, ErrorCode::NotFound | ErrorCode::Conflict | ErrorCode::InProgress) {
                assert_eq!(ErrorCode::from_reason_code(code.reason_code()), Some(code), "{code:?}");
            }
        }
    }

    #[test]
    fn overload_is_retryable_everywhere() {
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        assert_eq!(ErrorCode::Unavailable.grpc_code(), 14);
        assert_eq!(ErrorCode::ServerBusy.reason_code(), ReasonCode::ServerBusy);
    }
}
