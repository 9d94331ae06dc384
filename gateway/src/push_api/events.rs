//! `GET /v1/apps/{app}/sse`: a web device's pushes as Server-Sent Events
//! (`crate::sse` runs the stream).

use super::{Api, Problem};
use crate::device_token::DeviceTokens;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// How long a browser waits before reconnecting, in milliseconds.
const RETRY_MS: u32 = 1000;

pub(super) async fn stream(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(uri.query().unwrap_or_default());
    let mut response = match open(&api, &app, &query, &headers).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    // Pages on any origin may listen: the device token is the authority.
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

async fn open(
    api: &Api,
    app: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let unauthenticated = |detail: &str| Problem::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", detail);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query.get("token").map(String::as_str))
        .ok_or_else(|| unauthenticated("send a device token: ?token=… or Authorization: Bearer …"))?;
    let device = DeviceTokens::subject(token).ok_or_else(|| unauthenticated("not a device token"))?;
    let verified = api
        .config
        .tokens
        .verify(token, &device, api.shared.clock.now())
        .map_err(|e| unauthenticated(&format!("device token refused: {e}")))?;
    if verified.app.as_str() != app {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this device token belongs to another app",
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("last_event_id").cloned());
    let opened =
        crate::sse::start(&api.shared, &device, token, last_event_id).await.map_err(
            |refused| match refused {
                crate::sse::Refused::Connect(code) => Problem::new(
                    herald_core::ErrorCode::from_reason_code(code)
                        .and_then(|e| StatusCode::from_u16(e.http_status()).ok())
                        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "REFUSED",
                    format!("the session was refused: {code:?}"),
                ),
                crate::sse::Refused::Closed => {
                    Problem::unavailable("the device's session could not be opened")
                }
                crate::sse::Refused::Busy => Problem {
                    retry_after: Some(5),
                    ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, "SERVER_BUSY", "this gateway is full")
                },
            },
        )?;
    let (events, body) = tokio::sync::mpsc::channel(64);
    let _ = events.send(Ok(format!("retry: {RETRY_MS}\n\n"))).await;
    tokio::spawn(crate::sse::pump(opened, events, api.config.sse_lifetime));
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

/// The `key=value` pairs of a query string, percent-decoded.
fn parse_query(query: &str) -> HashMap<String, String> {
    let decode = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                },
                b'+' => out.push(b' '),
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query.split('&').filter_map(|pair| pair.split_once('=').map(|(k, v)| (decode(k), decode(v)))).collect()
}
