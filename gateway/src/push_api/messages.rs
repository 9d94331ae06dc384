//! `POST /v1/apps/{app}/messages` and `…/messages/validate`.

use super::send::{self, SendRequest};
use super::{Api, Problem, json_response, refused, respond};
use crate::registry::message_id;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use herald_proto::Message;
use herald_proto::seam::{Audience, Downlink, Push, PushOutcome, PushReport, Uplink};
use serde_json::{Value, json};
use std::sync::Arc;

/// Checks a send; returns the request and the message it makes.
async fn check(
    api: &Api,
    app: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(SendRequest, Message), Problem> {
    let app = api.authorize(headers, app)?;
    let body = api.body(body).await?;
    let request = send::parse(&body, &api.config.limits)?;
    let now = api.shared.clock.now();
    let id = message_id(api.shared.node, now.0, &api.shared.message_sequence);
    let message = request.message(app, id, now, &api.config.limits)?;
    Ok((request, message))
}

pub(super) async fn send(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(send_checked(&api, &app, &headers, body).await)
}

async fn send_checked(
    api: &Api,
    app: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Problem> {
    let (request, message) = check(api, app, headers, body).await?;
    let message_id = message.id;
    let message = Arc::new(message);
    let store_offline = request.ttl_seconds > 0;
    let audience = request.audience;
    // Device and alias audiences are answered per device; tag and
    // broadcast audiences with totals.
    let per_device = matches!(audience, Audience::Devices(_) | Audience::Aliases(_));
    let reply = api.ask(|id| Uplink::Push(Push { request: id, message, audience, store_offline })).await?;
    let report = match reply {
        Downlink::Pushed { result: Ok(report), .. } => report,
        Downlink::Pushed { result: Err(code), .. } => return Err(refused(code, "message")),
        _ => return Err(Problem::unavailable("the router's answer did not match the send")),
    };
    let body = if per_device { per_device_body(&report)? } else { totals_body(&report) };
    let mut body = body;
    body["message_id"] = json!(message_id.to_string());
    body["status"] = json!("accepted");
    let mut response = json_response(StatusCode::ACCEPTED, &body);
    if let Ok(location) = header::HeaderValue::try_from(format!("/v1/apps/{app}/messages/{message_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
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
            let (request, message) = check(&api, &app, &headers, body).await?;
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
