//! `POST /v1/apps/{app}/messages`: the request, checked field by field with
//! a JSON pointer for each mistake, and the envelope a device receives.
//! Pure: no I/O, the caller passes the time and the message id in.

use super::problem::Problem;
use axum::http::StatusCode;
use bytes::Bytes;
use herald_core::directory::{Alias, DirectoryLimits};
use herald_core::{AppId, ClientId, MessageId, QoS, Topic, UnixMillis};
use herald_proto::seam::{Audience, COLLAPSE_PROPERTY};
use herald_proto::{Message, MessageProperties};
use serde_json::{Map, Value, json};

/// An app's limits on requests (documented in `docs/push-api.md`): the
/// defaults, or the app's own within [`AppLimits::CEILING`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLimits {
    /// Device ids (or aliases) per audience.
    pub max_devices: usize,
    /// Bytes of the envelope a device receives.
    pub max_payload: usize,
    /// The longest ttl, in seconds.
    pub max_ttl_seconds: u32,
    /// Request bodies longer than this are refused (413).
    pub max_body_bytes: usize,
    /// The longest `Idempotency-Key`, in characters.
    pub max_idempotency_key: usize,
    /// Tags per device, devices per alias, tag expressions' size.
    pub directory: DirectoryLimits,
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            max_devices: 1000,
            max_payload: 4096,
            max_ttl_seconds: 30 * 24 * 3600,
            max_body_bytes: 64 * 1024,
            max_idempotency_key: 64,
            directory: DirectoryLimits::default(),
        }
    }
}

impl AppLimits {
    /// The highest each limit may be set to.
    pub const CEILING: AppLimits = AppLimits {
        max_devices: 10_000,
        max_payload: 64 * 1024,
        max_ttl_seconds: 365 * 24 * 3600,
        max_body_bytes: 1024 * 1024,
        max_idempotency_key: 255,
        directory: DirectoryLimits::CEILING,
    };

    /// The first limit that is 0 or past its ceiling, by name.
    pub fn out_of_range(&self) -> Option<&'static str> {
        let c = AppLimits::CEILING;
        let d = (&self.directory, &c.directory);
        [
            ("max_audience", self.max_devices, c.max_devices),
            ("max_payload_bytes", self.max_payload, c.max_payload),
            ("max_ttl_secs", self.max_ttl_seconds as usize, c.max_ttl_seconds as usize),
            ("max_body_bytes", self.max_body_bytes, c.max_body_bytes),
            ("max_idempotency_key_chars", self.max_idempotency_key, c.max_idempotency_key),
            ("max_tags_per_device", d.0.tags_per_device, d.1.tags_per_device),
            ("max_devices_per_alias", d.0.devices_per_alias, d.1.devices_per_alias),
            ("max_expression_depth", d.0.expr_depth, d.1.expr_depth),
            ("max_expression_tags", d.0.expr_leaves, d.1.expr_leaves),
        ]
        .into_iter()
        .find(|(_, value, ceiling)| !(1..=*ceiling).contains(value))
        .map(|(name, _, _)| name)
    }
}

/// The ttl when none is given: one day.
const DEFAULT_TTL_SECONDS: u32 = 24 * 3600;

/// A checked send request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SendRequest {
    /// Whom it reaches: devices or aliases, each once, in the order first given.
    pub(super) audience: Audience,
    /// `content.notification`, if given.
    pub notification: Option<Map<String, Value>>,
    /// `content.data`, if given.
    pub data: Option<Map<String, Value>>,
    /// Seconds an offline device may still get it; 0: online devices only.
    pub ttl_seconds: u32,
    /// The QoS of the delivery.
    pub qos: QoS,
    /// `normal` or `high`, passed to the device.
    pub priority: &'static str,
    /// A newer message with this key replaces an older undelivered one.
    pub collapse_key: Option<String>,
}

/// Parses and checks a request body.
pub(super) fn parse(body: &[u8], limits: &AppLimits) -> Result<SendRequest, Problem> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "INVALID_JSON", format!("the body is not JSON: {e}"))
    })?;
    let root = object(&value, "")?;
    only(root, "", &["audience", "content", "options"])?;
    let audience = audience(root.get("audience").ok_or_else(|| missing("/audience"))?, limits)?;
    let content = object(root.get("content").ok_or_else(|| missing("/content"))?, "/content")?;
    only(content, "/content", &["notification", "data"])?;
    let notification = content.get("notification").map(notification).transpose()?;
    let data = content.get("data").map(|d| object(d, "/content/data").cloned()).transpose()?;
    if notification.is_none() && data.is_none() {
        return Err(Problem::field("/content", "CONTENT_EMPTY", "give a notification, data, or both"));
    }
    let mut request = SendRequest {
        audience,
        notification,
        data,
        ttl_seconds: DEFAULT_TTL_SECONDS,
        qos: QoS::AtLeastOnce,
        priority: "normal",
        collapse_key: None,
    };
    if let Some(options) = root.get("options") {
        let options = object(options, "/options")?;
        only(options, "/options", &["ttl", "qos", "priority", "collapse_key"])?;
        if let Some(key) = options.get("collapse_key") {
            let key = key
                .as_str()
                .filter(|k| !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_graphic()));
            let key = key.ok_or_else(|| {
                Problem::field(
                    "/options/collapse_key",
                    "COLLAPSE_KEY_INVALID",
                    "a collapse key is 1 to 64 printable ASCII characters",
                )
            })?;
            request.collapse_key = Some(key.to_owned());
        }
        if let Some(ttl) = options.get("ttl") {
            let ttl = ttl
                .as_u64()
                .ok_or_else(|| Problem::shape("/options/ttl", "ttl is whole seconds, 0 or more"))?;
            if ttl > u64::from(limits.max_ttl_seconds) {
                let detail = format!("ttl is at most {} seconds", limits.max_ttl_seconds);
                return Err(Problem::field("/options/ttl", "TTL_OUT_OF_RANGE", detail));
            }
            request.ttl_seconds = ttl as u32;
        }
        if let Some(qos) = options.get("qos") {
            request.qos = qos
                .as_u64()
                .and_then(|q| u8::try_from(q).ok())
                .and_then(QoS::from_u8)
                .ok_or_else(|| Problem::field("/options/qos", "QOS_INVALID", "qos is 0, 1 or 2"))?;
        }
        if let Some(priority) = options.get("priority") {
            request.priority = match priority.as_str() {
                Some("normal") => "normal",
                Some("high") => "high",
                _ => {
                    return Err(Problem::field(
                        "/options/priority",
                        "PRIORITY_INVALID",
                        "priority is normal or high",
                    ));
                }
            };
        }
    }
    Ok(request)
}

impl SendRequest {
    /// Returns the message every device gets a copy of (each on its own
    /// per-device topic): a JSON envelope with the message id, which also
    /// rides in the v5 user property `message-id`.
    pub(super) fn message(
        &self,
        app: AppId,
        id: MessageId,
        now: UnixMillis,
        limits: &AppLimits,
    ) -> Result<Message, Problem> {
        let mut envelope =
            json!({ "id": id.to_string(), "sent_at": now.rfc3339(), "priority": self.priority });
        if let Some(notification) = &self.notification {
            envelope["notification"] = Value::Object(notification.clone());
        }
        if let Some(data) = &self.data {
            envelope["data"] = Value::Object(data.clone());
        }
        if let Some(key) = &self.collapse_key {
            envelope["collapse_key"] = Value::String(key.clone());
        }
        let payload = envelope.to_string();
        if payload.len() > limits.max_payload {
            let detail = format!(
                "the message is {} bytes as delivered; at most {} are allowed",
                payload.len(),
                limits.max_payload
            );
            return Err(Problem::field("/content", "PAYLOAD_TOO_LARGE", detail));
        }
        Ok(Message {
            id,
            app,
            topic: Topic::new("$push").expect("a valid topic name"),
            payload: Bytes::from(payload),
            qos: self.qos,
            retain: false,
            created_at: now,
            expires_at: (self.ttl_seconds > 0).then(|| now.plus_seconds(self.ttl_seconds)),
            origin: None,
            properties: Some(Box::new(MessageProperties {
                payload_format: Some(1),
                content_type: Some("application/json".into()),
                user_properties: std::iter::once(("message-id".into(), id.to_string().into()))
                    .chain(self.collapse_key.iter().map(|k| (COLLAPSE_PROPERTY.into(), k.as_str().into())))
                    .collect(),
                ..MessageProperties::default()
            })),
            trace: None,
        })
    }
}

fn missing(pointer: &str) -> Problem {
    Problem::shape(pointer, format!("{pointer} is required"))
}

pub(super) fn object<'a>(value: &'a Value, pointer: &str) -> Result<&'a Map<String, Value>, Problem> {
    value.as_object().ok_or_else(|| Problem::shape(pointer, format!("{} must be an object", at(pointer))))
}

fn at(pointer: &str) -> &str {
    if pointer.is_empty() { "the body" } else { pointer }
}

/// Refuses fields the API does not know: a misspelt option must not be
/// ignored silently.
pub(super) fn only(map: &Map<String, Value>, pointer: &str, known: &[&str]) -> Result<(), Problem> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(Problem::shape(
            format!("{pointer}/{key}"),
            format!("unknown field {key:?} in {}; known: {}", at(pointer), known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn audience(value: &Value, limits: &AppLimits) -> Result<Audience, Problem> {
    let audience = object(value, "/audience")?;
    only(audience, "/audience", &["device_ids", "aliases", "tags", "all"])?;
    if audience.len() != 1 {
        return Err(Problem::shape("/audience", "give exactly one of device_ids, aliases, tags and all"));
    }
    if let Some(all) = audience.get("all") {
        return match all {
            Value::Bool(true) => Ok(Audience::All),
            _ => Err(Problem::shape("/audience/all", "all is true (every device of the app)")),
        };
    }
    if let Some(expr) = audience.get("tags") {
        return super::devices::tag_expr(expr, "/audience/tags", &limits.directory).map(Audience::Tags);
    }
    if let Some(ids) = audience.get("device_ids") {
        let ids = list(ids, "/audience/device_ids", Bounds::audience(limits.max_devices), |id| {
            ClientId::new(id).map_err(|e| ("DEVICE_ID_INVALID", e.to_string()))
        })?;
        return Ok(Audience::Devices(ids));
    }
    let aliases = audience.get("aliases").ok_or_else(|| missing("/audience/aliases"))?;
    let aliases = list(aliases, "/audience/aliases", Bounds::audience(limits.max_devices), |alias| {
        Alias::new(alias).map_err(|e| ("ALIAS_INVALID", e.to_string()))
    })?;
    Ok(Audience::Aliases(aliases))
}

/// The bounds of an array of strings, and the codes of breaking them.
pub(super) struct Bounds {
    /// Entries at most.
    pub(super) max: usize,
    /// The code of more than `max`.
    pub(super) too_many: &'static str,
    /// The code of none; `None`: none is fine.
    pub(super) empty: Option<&'static str>,
}

impl Bounds {
    /// An audience list: 1 to `max` entries.
    pub(super) fn audience(max: usize) -> Bounds {
        Bounds { max, too_many: "AUDIENCE_TOO_LARGE", empty: Some("AUDIENCE_EMPTY") }
    }
}

/// Reads a bounded array of strings at `pointer`, each checked by `check`;
/// duplicates count once.
pub(super) fn list<T: Clone + Eq + std::hash::Hash>(
    value: &Value,
    pointer: &str,
    bounds: Bounds,
    check: impl Fn(&str) -> Result<T, (&'static str, String)>,
) -> Result<Vec<T>, Problem> {
    let items = value
        .as_array()
        .ok_or_else(|| Problem::shape(pointer, format!("{pointer} must be an array of strings")))?;
    if let (true, Some(code)) = (items.is_empty(), bounds.empty) {
        return Err(Problem::field(pointer, code, format!("{pointer} names nothing")));
    }
    if items.len() > bounds.max {
        let detail = format!("{} entries; at most {} are allowed", items.len(), bounds.max);
        return Err(Problem::field(pointer, bounds.too_many, detail));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{pointer}/{i}");
        let text = item.as_str().ok_or_else(|| Problem::shape(&at, "each entry is a string"))?;
        let checked = check(text).map_err(|(code, detail)| Problem::field(&at, code, detail))?;
        if seen.insert(checked.clone()) {
            out.push(checked);
        }
    }
    Ok(out)
}

fn notification(value: &Value) -> Result<Map<String, Value>, Problem> {
    let map = object(value, "/content/notification")?;
    only(map, "/content/notification", &["title", "body", "image", "sound", "badge", "click_url"])?;
    for (key, value) in map {
        let ok = match key.as_str() {
            "badge" => value.as_u64().is_some(),
            _ => value.is_string(),
        };
        if !ok {
            let kind = if key == "badge" { "a whole number" } else { "a string" };
            return Err(Problem::shape(format!("/content/notification/{key}"), format!("{key} is {kind}")));
        }
    }
    if !map.contains_key("title") && !map.contains_key("body") {
        return Err(Problem::field(
            "/content/notification",
            "NOTIFICATION_EMPTY",
            "give a title, a body, or both",
        ));
    }
    Ok(map.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<SendRequest, Problem> {
        parse(body.as_bytes(), &AppLimits::default())
    }

    fn refused(body: &str) -> (u16, &'static str, Option<String>) {
        let problem = check(body).expect_err("refused");
        (problem.status.as_u16(), problem.code, problem.pointer)
    }

    #[test]
    fn a_send_to_devices_is_read_with_defaults() {
        let request =
            check(r#"{"audience":{"device_ids":["a","b","a"]},"content":{"data":{"k":1}}}"#).expect("valid");
        let devices = vec![ClientId::new("a").expect("id"), ClientId::new("b").expect("id")];
        assert_eq!(request.audience, Audience::Devices(devices));
        assert_eq!(
            (request.ttl_seconds, request.qos, request.priority),
            (86_400, QoS::AtLeastOnce, "normal")
        );
        let message = request
            .message(AppId::new("shop").expect("app"), MessageId(7), UnixMillis(1000), &AppLimits::default())
            .expect("fits");
        let envelope: Value = serde_json::from_slice(&message.payload).expect("JSON");
        assert_eq!(envelope["id"], MessageId(7).to_string());
        assert_eq!(envelope["data"]["k"], 1);
        assert_eq!(message.expires_at, Some(UnixMillis(1000 + 86_400_000)));
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases = [
            ("{", (400, "INVALID_JSON", None)),
            ("[]", (400, "INVALID_ARGUMENT", Some(""))),
            (
                r#"{"audience":{"device_ids":["a"]},"content":{"data":{}},"extra":1}"#,
                (400, "INVALID_ARGUMENT", Some("/extra")),
            ),
            (r#"{"content":{"data":{}}}"#, (400, "INVALID_ARGUMENT", Some("/audience"))),
            (
                r#"{"audience":{"device_ids":[]},"content":{"data":{}}}"#,
                (422, "AUDIENCE_EMPTY", Some("/audience/device_ids")),
            ),
            (
                r#"{"audience":{"device_ids":["a","b/c"]},"content":{"data":{}}}"#,
                (422, "DEVICE_ID_INVALID", Some("/audience/device_ids/1")),
            ),
            (
                r#"{"audience":{"device_ids":["a",7]},"content":{"data":{}}}"#,
                (400, "INVALID_ARGUMENT", Some("/audience/device_ids/1")),
            ),
            (r#"{"audience":{"device_ids":["a"]},"content":{}}"#, (422, "CONTENT_EMPTY", Some("/content"))),
            (
                r#"{"audience":{"device_ids":["a"]},"content":{"notification":{"title":3}}}"#,
                (400, "INVALID_ARGUMENT", Some("/content/notification/title")),
            ),
            (
                r#"{"audience":{"device_ids":["a"]},"content":{"data":{}},"options":{"ttl":2592001}}"#,
                (422, "TTL_OUT_OF_RANGE", Some("/options/ttl")),
            ),
            (
                r#"{"audience":{"device_ids":["a"]},"content":{"data":{}},"options":{"qos":3}}"#,
                (422, "QOS_INVALID", Some("/options/qos")),
            ),
            (
                r#"{"audience":{"device_ids":["a"]},"content":{"data":{}},"options":{"colapse":"x"}}"#,
                (400, "INVALID_ARGUMENT", Some("/options/colapse")),
            ),
        ];
        for (body, (status, code, pointer)) in cases {
            assert_eq!(refused(body), (status, code, pointer.map(str::to_owned)), "{body}");
        }
        let many: Vec<String> = (0..1001).map(|i| format!("\"d{i}\"")).collect();
        let body =
            format!(r#"{{"audience":{{"device_ids":[{}]}},"content":{{"data":{{}}}}}}"#, many.join(","));
        assert_eq!(refused(&body).1, "AUDIENCE_TOO_LARGE");
    }

    #[test]
    fn an_envelope_over_the_payload_limit_is_refused() {
        let big = "x".repeat(5000);
        let request =
            check(&format!(r#"{{"audience":{{"device_ids":["a"]}},"content":{{"data":{{"k":"{big}"}}}}}}"#))
                .expect("valid shape");
        let result =
            request.message(AppId::default_app(), MessageId(1), UnixMillis(0), &AppLimits::default());
        assert_eq!(result.expect_err("too large").code, "PAYLOAD_TOO_LARGE");
    }
}
