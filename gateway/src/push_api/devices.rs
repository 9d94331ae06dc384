//! The device directory endpoints: a device's alias and tags, alias
//! lookup, bulk tagging, audience counts. Each is one request to the
//! router, answered once the change is committed.

use super::send::{Bounds, list, object, only};
use super::{Api, Problem, json_response, refused, respond};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_core::directory::{Alias, DeviceEntry, DirectoryLimits, Tag, TagExpr};
use herald_core::{AppId, ClientId};
use herald_proto::seam::{DeviceView, DirectoryAnswer, DirectoryOp, Downlink, TagChange, Uplink};
use serde_json::{Value, json};
use std::sync::Arc;

/// Devices per bulk tag request.
const MAX_BULK: usize = 1000;

impl Api {
    /// Asks the router to apply `op` to `app`'s directory.
    pub(super) async fn directory(
        &self,
        app: AppId,
        op: DirectoryOp,
        what: &str,
    ) -> Result<DirectoryAnswer, Problem> {
        self.ask_directory(app, op).await?.map_err(|code| refused(code, what))
    }

    /// Asks the router to apply `op` to `app`'s directory: its answer, or
    /// the code it refused with.
    pub(super) async fn ask_directory(
        &self,
        app: AppId,
        op: DirectoryOp,
    ) -> Result<Result<DirectoryAnswer, herald_core::ErrorCode>, Problem> {
        let limits = self.limits(&app).directory;
        match self.ask(|request| Uplink::Directory { request, app, op, limits }).await? {
            Downlink::DirectoryDone { result, .. } => Ok(result),
            _ => Err(Problem::mismatch()),
        }
    }

    /// Counts the devices `expr` selects in `app`'s directory now.
    pub(super) async fn count(&self, app: AppId, expr: TagExpr) -> Result<u64, Problem> {
        match self.directory(app, DirectoryOp::Count { expr }, "audience").await? {
            DirectoryAnswer::Count(n) => Ok(n),
            _ => Err(Problem::mismatch()),
        }
    }

    /// Authorizes the call (for an endpoint needing `needed`) and parses
    /// its JSON body.
    pub(super) async fn json(
        &self,
        app: &str,
        headers: &HeaderMap,
        body: axum::body::Body,
        needed: super::Scopes,
    ) -> Result<(AppId, Value), Problem> {
        let app = self.authorize_for(headers, app, needed)?;
        let body = self.body(&app, body).await?;
        let value = serde_json::from_slice(&body).map_err(|e| {
            Problem::new(StatusCode::BAD_REQUEST, "INVALID_JSON", format!("the body is not JSON: {e}"))
        })?;
        Ok((app, value))
    }
}

fn device_id(text: &str) -> Result<ClientId, Problem> {
    ClientId::new(text).map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "DEVICE_ID_INVALID", e.to_string()))
}

fn view_json(view: &DeviceView) -> Value {
    json!({
        "device_id": view.device.as_str(),
        "alias": view.entry.alias.as_ref().map(Alias::as_str),
        "tags": view.entry.tags.iter().map(Tag::as_str).collect::<Vec<_>>(),
        "online": view.online.is_some(),
        "gateway": view.online.map(|n| n.0),
        "since": view.since.map(herald_core::UnixMillis::rfc3339),
    })
}

fn device_answer(answer: DirectoryAnswer) -> Result<Response, Problem> {
    match answer {
        DirectoryAnswer::Device(view) => Ok(json_response(StatusCode::OK, &view_json(&view))),
        _ => Err(Problem::mismatch()),
    }
}

fn tags_at(value: &Value, pointer: &str, limits: &DirectoryLimits) -> Result<Vec<Tag>, Problem> {
    let bounds = Bounds { max: limits.tags_per_device, too_many: "TAG_LIMIT_EXCEEDED", empty: None };
    list(value, pointer, bounds, |t| Tag::new(t).map_err(|e| ("TAG_INVALID", e.to_string())))
}

fn alias_at(value: &Value, pointer: &str) -> Result<Option<Alias>, Problem> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Alias::new(text.as_str())
            .map(Some)
            .map_err(|e| Problem::field(pointer, "ALIAS_INVALID", e.to_string())),
        _ => Err(Problem::shape(pointer, "an alias is a string or null")),
    }
}

pub(super) async fn get(
    State(api): State<Arc<Api>>,
    Path((app, device)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let app = api.authorize(&headers, &app)?;
            let device = device_id(&device)?;
            device_answer(api.directory(app, DirectoryOp::Get { device }, "device").await?)
        }
        .await,
    )
}

pub(super) async fn put(
    State(api): State<Arc<Api>>,
    Path((app, device)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(write(&api, &app, &device, &headers, body, false).await)
}

pub(super) async fn patch(
    State(api): State<Arc<Api>>,
    Path((app, device)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(write(&api, &app, &device, &headers, body, true).await)
}

/// `PUT` (the whole entry) or `PATCH` (the alias if given; tags added and
/// removed) of one device.
async fn write(
    api: &Api,
    app: &str,
    device: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
    partial: bool,
) -> Result<Response, Problem> {
    let (app, value) = api.json(app, headers, body, super::Scopes::NONE).await?;
    let limits = api.limits(&app).directory;
    let device = device_id(device)?;
    let map = object(&value, "")?;
    only(map, "", &["alias", "tags"])?;
    let alias = map.get("alias").map(|a| alias_at(a, "/alias")).transpose()?;
    let op = if partial {
        let mut tags = Vec::new();
        if let Some(changes) = map.get("tags") {
            let changes = object(changes, "/tags")?;
            only(changes, "/tags", &["add", "remove"])?;
            if let Some(add) = changes.get("add") {
                tags.push(TagChange::Add(tags_at(add, "/tags/add", &limits)?));
            }
            if let Some(remove) = changes.get("remove") {
                tags.push(TagChange::Remove(tags_at(remove, "/tags/remove", &limits)?));
            }
        }
        DirectoryOp::Patch { device, alias, tags }
    } else {
        let tags = map.get("tags").map(|t| tags_at(t, "/tags", &limits)).transpose()?.unwrap_or_default();
        DirectoryOp::Put {
            device,
            entry: DeviceEntry { alias: alias.flatten(), tags: tags.into_iter().collect() },
        }
    };
    device_answer(api.directory(app, op, "device").await?)
}

pub(super) async fn delete(
    State(api): State<Arc<Api>>,
    Path((app, device)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let app = api.authorize(&headers, &app)?;
            let device = device_id(&device)?;
            api.directory(app, DirectoryOp::Delete { device }, "device").await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

pub(super) async fn alias(
    State(api): State<Arc<Api>>,
    Path((app, alias)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let app = api.authorize(&headers, &app)?;
            let alias = Alias::new(alias.as_str())
                .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "ALIAS_INVALID", e.to_string()))?;
            match api.directory(app, DirectoryOp::Alias { alias: alias.clone() }, "alias").await? {
                DirectoryAnswer::Devices(views) => {
                    let devices: Vec<Value> = views.iter().map(view_json).collect();
                    Ok(json_response(StatusCode::OK, &json!({ "alias": alias.as_str(), "devices": devices })))
                }
                _ => Err(Problem::mismatch()),
            }
        }
        .await,
    )
}

pub(super) async fn tag(
    State(api): State<Arc<Api>>,
    Path((app, tag)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(async {
        let (app, value) = api.json(&app, &headers, body, super::Scopes::NONE).await?;
        let tag = Tag::new(tag.as_str()).map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "TAG_INVALID", e.to_string()))?;
        let map = object(&value, "")?;
        only(map, "", &["add", "remove"])?;
        let ids = |key: &str| -> Result<Vec<ClientId>, Problem> {
            let pointer = format!("/{key}");
            map.get(key)
                .map(|v| list(v, &pointer, Bounds::audience(MAX_BULK), |d| ClientId::new(d).map_err(|e| ("DEVICE_ID_INVALID", e.to_string()))))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let (add, remove) = (ids("add")?, ids("remove")?);
        if add.len() + remove.len() > MAX_BULK {
            return Err(Problem::field("", "BULK_TOO_LARGE", format!("at most {MAX_BULK} devices per request")));
        }
        let asked: Vec<(ClientId, &str)> =
            add.iter().map(|d| (d.clone(), "add")).chain(remove.iter().map(|d| (d.clone(), "remove"))).collect();
        match api.directory(app, DirectoryOp::Tag { tag, add, remove }, "device").await? {
            DirectoryAnswer::Changed(changed) if changed.len() == asked.len() => {
                let results: Vec<Value> = asked
                    .iter()
                    .zip(changed)
                    .map(|((device, op), changed)| json!({ "device_id": device.as_str(), "op": op, "changed": changed }))
                    .collect();
                Ok(json_response(StatusCode::OK, &json!({ "results": results })))
            }
            _ => Err(Problem::mismatch()),
        }
    }.await)
}

pub(super) async fn count(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let (app, value) = api.json(&app, &headers, body, super::Scopes::NONE).await?;
            let map = object(&value, "")?;
            only(map, "", &["tags"])?;
            let expr = map.get("tags").ok_or_else(|| Problem::shape("/tags", "/tags is required"))?;
            let expr = tag_expr(expr, "/tags", &api.limits(&app).directory)?;
            Ok(json_response(StatusCode::OK, &json!({ "estimate": api.count(app, expr).await? })))
        }
        .await,
    )
}

/// Parses a tag expression: a tag, or an object with exactly one of
/// `and` (array), `or` (array), `not` (expression); then checks its bounds.
pub(super) fn tag_expr(value: &Value, pointer: &str, limits: &DirectoryLimits) -> Result<TagExpr, Problem> {
    let expr = parse_expr(value, pointer, 1, limits.expr_depth)?;
    expr.check_within(limits)
        .map_err(|e| Problem::field(pointer, "TAG_EXPRESSION_INVALID", e.to_string()))?;
    Ok(expr)
}

fn parse_expr(value: &Value, pointer: &str, depth: usize, max_depth: usize) -> Result<TagExpr, Problem> {
    if depth > max_depth {
        let detail = format!("a tag expression nests at most {max_depth} deep");
        return Err(Problem::field(pointer, "TAG_EXPRESSION_INVALID", detail));
    }
    if let Some(text) = value.as_str() {
        return Tag::new(text)
            .map(TagExpr::Tag)
            .map_err(|e| Problem::field(pointer, "TAG_INVALID", e.to_string()));
    }
    let map = object(value, pointer)?;
    only(map, pointer, &["and", "or", "not"])?;
    let mut entries = map.iter();
    let (Some((key, operand)), None) = (entries.next(), entries.next()) else {
        return Err(Problem::field(
            pointer,
            "TAG_EXPRESSION_INVALID",
            "an operator object has exactly one of and, or, not",
        ));
    };
    let at = format!("{pointer}/{key}");
    if key == "not" {
        return Ok(TagExpr::Not(Box::new(parse_expr(operand, &at, depth + 1, max_depth)?)));
    }
    let operands = operand.as_array().ok_or_else(|| Problem::shape(&at, format!("{key} takes an array")))?;
    let parsed = operands
        .iter()
        .enumerate()
        .map(|(i, x)| parse_expr(x, &format!("{at}/{i}"), depth + 1, max_depth))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if key == "and" { TagExpr::And(parsed) } else { TagExpr::Or(parsed) })
}

pub(super) async fn stats(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let app = api.authorize(&headers, &app)?;
            match api.directory(app, DirectoryOp::Stats, "app").await? {
                DirectoryAnswer::Stats(s) => {
                    let body = json!({
                        "devices_online": s.online,
                        "devices_offline_persistent": s.offline_persistent,
                        "directory_devices": s.directory_devices,
                        "as_of": api.shared.clock.now().rfc3339(),
                    });
                    Ok(json_response(StatusCode::OK, &body))
                }
                _ => Err(Problem::mismatch()),
            }
        }
        .await,
    )
}
