//! Errors of the push API as `application/problem+json` (RFC 9457), each
//! with a stable code; field errors carry a JSON pointer into the request.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One push-API error.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code (`AUDIENCE_EMPTY`); part of the contract.
    pub code: &'static str,
    /// What happened, for people.
    pub detail: String,
    /// Where in the request body, as a JSON pointer (`/audience/device_ids/3`).
    pub pointer: Option<String>,
    /// Seconds after which a retry may succeed (503, 429).
    pub retry_after: Option<u32>,
}

impl Problem {
    /// A problem with no field pointer.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, code, detail: detail.into(), pointer: None, retry_after: None }
    }

    /// A problem with one field of the request body (422 unless the caller
    /// says otherwise).
    pub fn field(pointer: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            pointer: Some(pointer.into()),
            ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
        }
    }

    /// The request is well-formed JSON of the wrong shape (400).
    pub fn shape(pointer: impl Into<String>, detail: impl Into<String>) -> Problem {
        Problem { status: StatusCode::BAD_REQUEST, ..Problem::field(pointer, "INVALID_ARGUMENT", detail) }
    }

    /// The router could not be reached or answered in time (503).
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem {
            retry_after: Some(1),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", detail)
        }
    }

    /// The router answered with another kind of reply than the request
    /// asked for (a bug on one side; retrying may help).
    pub fn mismatch() -> Problem {
        Problem::unavailable("the router's answer did not match the request")
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    /// The body, as sent.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("urn:herald:problem:{}", self.code),
            "title": self.title(),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
            "retryable": self.retry_after.is_some(),
        });
        if let Some(pointer) = &self.pointer {
            body["errors"] = json!([{ "pointer": pointer, "code": self.code, "detail": self.detail }]);
        }
        body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
