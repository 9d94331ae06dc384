//! `POST /v1/apps/{app}/messages` and `…/messages/validate`.

use super::send::{self, SendRequest};
use super::{Api, Problem, json_response, refused, respond};
use crate::registry::message_id;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use herald_core::{ErrorCode, TraceParent};
use herald_proto::Message;
use herald_proto::seam::{Audience, Downlink, Idempotency, Push, PushOutcome, PushReport, Uplink};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tracing::Instrument;

/// Checks a send; returns the request, the message it makes and its
/// idempotency key (with the body's hash), if it has one.
async fn check(
    api: &Api,
    app: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(SendRequest, Message, Option<Idempotency>), Problem> {
    let app = api.authorize(headers, app)?;
    let limits = api.limits(&app);
    let key = idempotency_key(headers, limits.max_idempotency_key)?;
    let body = api.body(&app, body).await?;
    let request = send::parse(&body, limits)?;
    let now = api.shared.clock.now();
    let id = message_id(api.shared.node, now.0, &api.shared.message_sequence);
    let message = request.message(app, id, now, limits)?;
    let idempotency = key.map(|key| Idempotency { key, body_hash: Sha256::digest(&body).into() });
    Ok((request, message, idempotency))
}

fn idempotency_key(headers: &HeaderMap, max: usize) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= max && k.bytes().all(|b| b.is_ascii_graphic()));
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "IDEMPOTENCY_KEY_INVALID",
            format!("Idempotency-Key is 1 to {max} printable ASCII characters"),
        )),
    }
}

pub(super) async fn send(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // One span per send, the root of the push's trace (or a child of the
    // caller's, given as a W3C `traceparent` header).
    let span = tracing::info_span!("push.send", app = %app, status = tracing::field::Empty);
    let caller = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    if let Some(caller) = caller {
        herald_proto::trace::set_parent(&span, &caller);
    }
    let response = respond(send_checked(&api, &app, &headers, body).instrument(span.clone()).await);
    span.record("status", response.status().as_u16());
    response
}

async fn send_checked(
    api: &Api,
    app: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Problem> {
    let (request, mut message, idempotency) = check(api, app, headers, body).await?;
    message.trace = herald_proto::trace::context_of(&tracing::Span::current());
    // A second send with a key whose first is still waiting here: refused
    // rather than sent twice (across gateways, the router refuses it).
    let _guard = match &idempotency {
        Some(i) => Some(api.claim_key(&message.app, &i.key).ok_or_else(in_progress)?),
        None => None,
    };
    let message_id = message.id;
    let message = Arc::new(message);
    let store_offline = request.ttl_seconds > 0;
    let audience = request.audience;
    // Device and alias audiences are answered per device; tag and
    // broadcast audiences with totals.
    let per_device = matches!(audience, Audience::Devices(_) | Audience::Aliases(_));
    let reply = api
        .ask(|id| Uplink::Push(Push { request: id, message, audience, store_offline, idempotency }))
        .await?;
    let report = match reply {
        Downlink::Pushed { result: Ok(report), .. } => report,
        Downlink::Pushed { result: Err(ErrorCode::Conflict), .. } => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was used with another request body in the last 24 hours",
            ));
        }
        Downlink::Pushed { result: Err(ErrorCode::InProgress), .. } => return Err(in_progress()),
        Downlink::Pushed { result: Err(code), .. } => return Err(refused(code, "message")),
        _ => return Err(Problem::mismatch()),
    };
    // A send asked again after a router link broke is answered from its
    // record: totals, without the per-device list.
    let replayed_without_devices = report.replay_of.is_some() && report.devices.is_empty();
    let mut body = if per_device && !replayed_without_devices {
        per_device_body(&report)?
    } else {
        totals_body(&report)
    };
    let message_id = report.replay_of.unwrap_or(message_id);
    body["message_id"] = json!(message_id.to_string());
    body["status"] = json!("accepted");
    let mut response = json_response(StatusCode::ACCEPTED, &body);
    if let Ok(location) = header::HeaderValue::try_from(format!("/v1/apps/{app}/messages/{message_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if report.replay_of.is_some() {
        response.headers_mut().insert("idempotent-replayed", header::HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A send whose `Idempotency-Key` another send holds until it is answered
/// (on this gateway, or, as the router says, on another).
fn in_progress() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "REQUEST_IN_PROGRESS",
        "a send with this Idempotency-Key is in progress",
    )
}

fn per_device_body(report: &PushReport) -> Result<Value, Problem> {
    let unknown: Vec<&str> = report.unknown_aliases.iter().map(|a| a.as_str()).collect();
    if report.devices.is_empty() {
        let detail = format!("no device has any of the aliases {unknown:?}");
        return Err(Problem::field("/audience/aliases", "AUDIENCE_EMPTY", detail));
    }
    let unreachable: Vec<&str> = report
        .devices
        .iter()
        .filter(|(_, o)| *o == PushOutcome::Unreachable)
        .map(|(d, _)| d.as_str())
        .collect();
    Ok(json!({
        "audience_estimate": report.devices.len(),
        "devices": { "online": report.online, "stored": report.stored, "unreachable": unreachable.len() },
        "unreachable": unreachable,
        "unknown_aliases": unknown,
    }))
}

fn totals_body(report: &PushReport) -> Value {
    json!({
        "audience_estimate": report.online + report.stored,
        "devices": { "online": report.online, "stored": report.stored },
    })
}

pub(super) async fn validate(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let (request, message, _) = check(&api, &app, &headers, body).await?;
            let estimate = match request.audience {
                Audience::Devices(devices) => json!(devices.len()),
                // Tags are counted as they select now; aliases and
                // broadcasts resolve when sent.
                Audience::Tags(expr) => json!(api.count(message.app.clone(), expr).await?),
                Audience::Aliases(_) | Audience::All => Value::Null,
            };
            let body =
                json!({ "valid": true, "audience_estimate": estimate, "payload_bytes": message.payload.len() });
            Ok(json_response(StatusCode::OK, &body))
        }
        .await,
    )
}

pub(super) async fn status(
    State(api): State<Arc<Api>>,
    Path((app, message)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(funnel(&api, &app, &message, &headers, false).await)
}

pub(super) async fn cancel(
    State(api): State<Arc<Api>>,
    Path((app, message)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(funnel(&api, &app, &message, &headers, true).await)
}

/// Answers a message's funnel, after cancelling what of it is undelivered
/// when `cancel`.
async fn funnel(
    api: &Api,
    app: &str,
    message: &str,
    headers: &HeaderMap,
    cancel: bool,
) -> Result<Response, Problem> {
    use herald_proto::seam::{DirectoryAnswer, DirectoryOp};
    let app = api.authorize(headers, app)?;
    let message = herald_core::MessageId::parse(message).ok_or_else(|| {
        Problem::new(StatusCode::BAD_REQUEST, "MESSAGE_ID_INVALID", "a message id is 32 hexadecimal digits")
    })?;
    let op = if cancel { DirectoryOp::Cancel { message } } else { DirectoryOp::Status { message } };
    match api.directory(app, op, "message").await? {
        DirectoryAnswer::Status(s) => Ok(json_response(StatusCode::OK, &status_json(&s))),
        _ => Err(Problem::mismatch()),
    }
}

fn status_json(s: &herald_proto::seam::MessageStatus) -> Value {
    json!({
        "message_id": s.message.to_string(),
        "created_at": s.created_at.rfc3339(),
        "expires_at": s.expires_at.map(herald_core::UnixMillis::rfc3339),
        "qos": s.qos,
        "as_of": s.as_of.rfc3339(),
        "final": s.is_final,
        "funnel": {
            "targeted": s.targeted,
            "online": s.online,
            "stored_offline": s.stored,
            "unreachable": s.unreachable,
            "delivered_online": s.delivered_online,
            "delivered_from_offline": s.delivered_from_offline,
            "acknowledged": s.acknowledged,
            "cancelled": s.cancelled,
            "replaced": s.replaced,
            "expired": s.expired,
            "pending": s.pending,
        },
    })
}
