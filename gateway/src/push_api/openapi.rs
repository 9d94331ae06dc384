//! The push API's operations, as one table: the router is built from it and
//! `/v1/openapi.json` (OpenAPI 3.1) is generated from it, so the document
//! cannot leave out an endpoint the gateway serves.

use super::Scopes;
use serde_json::{Value, json};

/// One endpoint.
pub(crate) struct Operation {
    /// `get`, `post`, `put`, `patch` or `delete`.
    pub(crate) method: &'static str,
    /// The path, with `{app}` and other parameters as axum and OpenAPI
    /// both write them.
    pub(crate) path: &'static str,
    /// The operation id; also picks the handler.
    pub(crate) id: &'static str,
    pub(crate) summary: &'static str,
    /// The request body's schema, if it takes one.
    pub(crate) request: Option<&'static str>,
    /// The success status and its body's schema (`None`: no body).
    pub(crate) ok: (u16, Option<&'static str>),
    /// What an API key needs to call it.
    pub(crate) scope: Scopes,
}

const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    ok: (u16, Option<&'static str>),
) -> Operation {
    // Reading needs `read`, sending `send`, changing devices `devices`,
    // managing keys `admin`.
    let scope = match (method.as_bytes(), id.as_bytes()) {
        (_, b"createKey" | b"listKeys" | b"revokeKey") => Scopes::ADMIN,
        (_, b"putUser" | b"getUser" | b"deleteUser" | b"listUsers") => Scopes::ADMIN,
        (_, b"sendMessage" | b"validateMessage" | b"cancelMessage") => Scopes::SEND,
        (b"get", _) | (_, b"countAudience") => Scopes::READ,
        _ => Scopes::DEVICES,
    };
    Operation { method, path, id, summary, request, ok, scope }
}

/// Every endpoint of the push API.
pub(crate) const OPERATIONS: &[Operation] = &[
    op(
        "post",
        "/v1/apps/{app}/messages",
        "sendMessage",
        "Send a message to devices, aliases, a tag expression or everyone",
        Some("SendRequest"),
        (202, Some("SendAccepted")),
    ),
    op(
        "get",
        "/v1/apps/{app}/messages/{message}",
        "getMessage",
        "Read a message's delivery funnel",
        None,
        (200, Some("MessageStatus")),
    ),
    op(
        "post",
        "/v1/apps/{app}/messages/{message}/cancel",
        "cancelMessage",
        "Cancel what of a message has not been delivered",
        None,
        (200, Some("MessageStatus")),
    ),
    op(
        "post",
        "/v1/apps/{app}/messages/validate",
        "validateMessage",
        "Check a send without sending it",
        Some("SendRequest"),
        (200, Some("Validation")),
    ),
    op(
        "get",
        "/v1/apps/{app}/stats",
        "getStats",
        "Count the app's devices online and offline",
        None,
        (200, Some("Stats")),
    ),
    op(
        "get",
        "/v1/apps/{app}/sse",
        "streamEvents",
        "A web device's pushes as Server-Sent Events (authorised by a device token)",
        None,
        (200, None),
    ),
    op(
        "get",
        "/v1/apps/{app}/devices/{device}",
        "getDevice",
        "Read a device's alias, tags and presence",
        None,
        (200, Some("Device")),
    ),
    op(
        "put",
        "/v1/apps/{app}/devices/{device}",
        "putDevice",
        "Set a device's whole entry",
        Some("DeviceWrite"),
        (200, Some("Device")),
    ),
    op(
        "patch",
        "/v1/apps/{app}/devices/{device}",
        "patchDevice",
        "Change a device's alias or tags",
        Some("DevicePatch"),
        (200, Some("Device")),
    ),
    op(
        "delete",
        "/v1/apps/{app}/devices/{device}",
        "deleteDevice",
        "Remove a device from the directory",
        None,
        (204, None),
    ),
    op(
        "get",
        "/v1/apps/{app}/aliases/{alias}",
        "getAlias",
        "List the devices of an alias",
        None,
        (200, Some("AliasDevices")),
    ),
    op(
        "post",
        "/v1/apps/{app}/tags/{tag}/devices",
        "tagDevices",
        "Add a tag to devices and remove it from others",
        Some("TagDevices"),
        (200, Some("TagResults")),
    ),
    op(
        "post",
        "/v1/apps/{app}/audiences/count",
        "countAudience",
        "Count the devices a tag expression selects",
        Some("CountRequest"),
        (200, Some("Count")),
    ),
    op(
        "post",
        "/v1/apps/{app}/keys",
        "createKey",
        "Make an API key (shown once, in this answer)",
        Some("KeyCreate"),
        (201, Some("KeyCreated")),
    ),
    op(
        "get",
        "/v1/apps/{app}/keys",
        "listKeys",
        "List the API keys made at run time",
        None,
        (200, Some("Keys")),
    ),
    op("delete", "/v1/apps/{app}/keys/{key}", "revokeKey", "Revoke an API key", None, (204, None)),
    op(
        "put",
        "/v1/apps/{app}/users/{username}",
        "putUser",
        "Set a device user's password (kept as a salted hash)",
        Some("UserPut"),
        (200, Some("User")),
    ),
    op("get", "/v1/apps/{app}/users/{username}", "getUser", "Read a device user", None, (200, Some("User"))),
    op("delete", "/v1/apps/{app}/users/{username}", "deleteUser", "Remove a device user", None, (204, None)),
    op(
        "get",
        "/v1/apps/{app}/users",
        "listUsers",
        "List device users in name order (query: after, limit)",
        None,
        (200, Some("Users")),
    ),
];

/// The operation `method` on `path` is, if any (`{…}` matches one level).
pub(crate) fn find(method: &str, path: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|op| {
        op.method == method && {
            let (mut pattern, mut levels) = (op.path.split('/'), path.split('/'));
            loop {
                match (pattern.next(), levels.next()) {
                    (None, None) => break true,
                    (Some(p), Some(l)) if p.starts_with('{') || p == l => {}
                    _ => break false,
                }
            }
        }
    })
}

fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|level| level.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect()
}

fn reference(schema: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{schema}") })
}

fn operation(op: &Operation) -> Value {
    let problem = json!({ "description": "A problem", "content": { "application/problem+json": { "schema": reference("Problem") } } });
    let mut responses = serde_json::Map::new();
    let ok = match op.ok.1 {
        Some(schema) => {
            json!({ "description": "Done", "content": { "application/json": { "schema": reference(schema) } } })
        }
        None => json!({ "description": "Done" }),
    };
    responses.insert(op.ok.0.to_string(), ok);
    for status in ["400", "401", "403", "404", "409", "413", "422", "429", "503"] {
        responses.insert(status.to_owned(), problem.clone());
    }
    let scope = op.scope.names().join(" ");
    let security = if op.scope == Scopes::ADMIN {
        json!([{ "apiKey": [] }, { "operatorToken": [] }])
    } else {
        json!([{ "apiKey": [] }])
    };
    let mut value = json!({
        "operationId": op.id,
        "x-herald-scope": scope,
        "summary": op.summary,
        "security": security,
        "parameters": parameters(op.path),
        "responses": responses,
    });
    if let Some(schema) = op.request {
        value["requestBody"] =
            json!({ "required": true, "content": { "application/json": { "schema": reference(schema) } } });
    }
    value
}

/// The OpenAPI 3.1 document of [`OPERATIONS`].
pub(crate) fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for op in OPERATIONS {
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Herald push API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Send to devices by id, alias, tag expression or to everyone; manage the device directory. See docs/push-api.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": { "type": "http", "scheme": "bearer", "description": "An API key of the app" },
                "operatorToken": { "type": "http", "scheme": "bearer", "description": "The operator token from configuration (key management only)" },
            },
            "schemas": schemas(),
        },
    })
}

fn schemas() -> Value {
    let mut schemas = push_schemas();
    if let (Some(all), Value::Object(keys)) = (schemas.as_object_mut(), key_schemas()) {
        all.extend(keys);
    }
    schemas
}

/// The admin API's schemas.
fn key_schemas() -> Value {
    json!({
        "KeyCreate": {
            "type": "object", "required": ["name", "scopes"], "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 64 },
                "scopes": { "type": "array", "minItems": 1, "maxItems": 5,
                    "items": { "type": "string", "enum": ["send", "read", "devices", "admin", "all"] } },
            },
        },
        "Key": {
            "type": "object", "required": ["id", "name", "scopes", "created_at"],
            "properties": {
                "id": { "type": "string" }, "name": { "type": "string" },
                "scopes": { "type": "array", "items": { "type": "string" } },
                "created_at": { "type": "string", "format": "date-time" },
            },
        },
        "KeyCreated": {
            "allOf": [reference("Key"), { "type": "object", "required": ["key"],
                "properties": { "key": { "type": "string", "description": "The key; shown only here" } } }],
        },
        "Keys": { "type": "object", "properties": { "keys": { "type": "array", "items": reference("Key") } } },
        "UserPut": {
            "type": "object", "additionalProperties": false,
            "description": "Either password (hashed by the gateway with a fresh salt) or password_hash with its salt (made elsewhere, hex digits)",
            "properties": {
                "password": { "type": "string", "minLength": 8, "maxLength": 1024 },
                "algorithm": { "type": "string", "enum": ["sha256", "sha512", "pbkdf2"], "default": "sha256" },
                "iterations": { "type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 10_000 },
                "password_hash": { "type": "string", "pattern": "^[0-9a-fA-F]+$" },
                "salt": { "type": "string" },
                "salt_position": { "type": "string", "enum": ["prefix", "suffix"], "default": "prefix" },
            },
        },
        "User": {
            "type": "object", "required": ["username", "algorithm", "updated_at"],
            "properties": {
                "username": { "type": "string" }, "algorithm": { "type": "string" },
                "updated_at": { "type": "string", "format": "date-time" },
            },
        },
        "Users": {
            "type": "object", "required": ["users", "next"],
            "properties": {
                "users": { "type": "array", "items": reference("User") },
                "next": { "type": ["string", "null"], "description": "Pass as after for the next page" },
            },
        },
    })
}

fn push_schemas() -> Value {
    let strings =
        |max: u32| json!({ "type": "array", "items": { "type": "string" }, "minItems": 1, "maxItems": max });
    json!({
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "code", "detail"],
            "properties": {
                "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
                "code": { "type": "string" }, "detail": { "type": "string" }, "retryable": { "type": "boolean" },
                "errors": { "type": "array", "items": { "type": "object", "properties": {
                    "pointer": { "type": "string" }, "code": { "type": "string" }, "detail": { "type": "string" } } } },
            },
        },
        "TagExpression": {
            "oneOf": [
                { "type": "string", "pattern": "^[a-z0-9:_-]{1,64}$" },
                { "type": "object", "required": ["and"], "additionalProperties": false,
                  "properties": { "and": { "type": "array", "minItems": 1, "items": reference("TagExpression") } } },
                { "type": "object", "required": ["or"], "additionalProperties": false,
                  "properties": { "or": { "type": "array", "minItems": 1, "items": reference("TagExpression") } } },
                { "type": "object", "required": ["not"], "additionalProperties": false,
                  "properties": { "not": reference("TagExpression") } },
            ],
        },
        "SendRequest": {
            "type": "object",
            "required": ["audience", "content"],
            "additionalProperties": false,
            "properties": {
                "audience": {
                    "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": false,
                    "properties": {
                        "device_ids": strings(1000), "aliases": strings(1000),
                        "tags": reference("TagExpression"), "all": { "const": true },
                    },
                },
                "content": {
                    "type": "object", "additionalProperties": false, "minProperties": 1,
                    "properties": {
                        "notification": { "type": "object", "additionalProperties": false, "properties": {
                            "title": { "type": "string" }, "body": { "type": "string" }, "image": { "type": "string" },
                            "sound": { "type": "string" }, "click_url": { "type": "string" },
                            "badge": { "type": "integer", "minimum": 0 } } },
                        "data": { "type": "object" },
                    },
                },
                "options": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "ttl": { "type": "integer", "minimum": 0, "maximum": 2_592_000 },
                        "qos": { "type": "integer", "enum": [0, 1, 2] },
                        "priority": { "type": "string", "enum": ["normal", "high"] },
                        "collapse_key": { "type": "string", "minLength": 1, "maxLength": 64 },
                    },
                },
            },
        },
        "SendAccepted": {
            "type": "object",
            "required": ["message_id", "status", "audience_estimate", "devices"],
            "properties": {
                "message_id": { "type": "string" }, "status": { "const": "accepted" },
                "audience_estimate": { "type": "integer" },
                "devices": { "type": "object", "properties": {
                    "online": { "type": "integer" }, "stored": { "type": "integer" }, "unreachable": { "type": "integer" } } },
                "unreachable": { "type": "array", "items": { "type": "string" } },
                "unknown_aliases": { "type": "array", "items": { "type": "string" } },
            },
        },
        "Validation": {
            "type": "object",
            "properties": {
                "valid": { "const": true }, "audience_estimate": { "type": ["integer", "null"] },
                "payload_bytes": { "type": "integer" },
            },
        },
        "Device": {
            "type": "object",
            "required": ["device_id", "tags", "online"],
            "properties": {
                "device_id": { "type": "string" }, "alias": { "type": ["string", "null"] },
                "tags": { "type": "array", "items": { "type": "string" } },
                "online": { "type": "boolean" }, "gateway": { "type": ["integer", "null"] },
                "since": { "type": ["string", "null"], "format": "date-time" },
            },
        },
        "DeviceWrite": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "alias": { "type": ["string", "null"] },
                "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 1000 },
            },
        },
        "DevicePatch": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "alias": { "type": ["string", "null"] },
                "tags": { "type": "object", "additionalProperties": false, "properties": {
                    "add": { "type": "array", "items": { "type": "string" } },
                    "remove": { "type": "array", "items": { "type": "string" } } } },
            },
        },
        "AliasDevices": {
            "type": "object",
            "properties": { "alias": { "type": "string" }, "devices": { "type": "array", "items": reference("Device") } },
        },
        "TagDevices": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "add": { "type": "array", "items": { "type": "string" } },
                "remove": { "type": "array", "items": { "type": "string" } },
            },
        },
        "TagResults": {
            "type": "object",
            "properties": { "results": { "type": "array", "items": { "type": "object", "properties": {
                "device_id": { "type": "string" }, "op": { "type": "string", "enum": ["add", "remove"] },
                "changed": { "type": "boolean" } } } } },
        },
        "CountRequest": {
            "type": "object", "required": ["tags"], "additionalProperties": false,
            "properties": { "tags": reference("TagExpression") },
        },
        "Count": { "type": "object", "properties": { "estimate": { "type": "integer" } } },
        "Stats": { "type": "object", "properties": {
            "devices_online": { "type": "integer" }, "devices_offline_persistent": { "type": "integer" },
            "directory_devices": { "type": "integer" }, "as_of": { "type": "string", "format": "date-time" } } },
        "MessageStatus": {
            "type": "object",
            "required": ["message_id", "created_at", "qos", "as_of", "final", "funnel"],
            "properties": {
                "message_id": { "type": "string" }, "created_at": { "type": "string", "format": "date-time" },
                "expires_at": { "type": ["string", "null"], "format": "date-time" }, "qos": { "type": "integer" },
                "as_of": { "type": "string", "format": "date-time" }, "final": { "type": "boolean" },
                "funnel": { "type": "object", "properties": {
                    "targeted": { "type": "integer" }, "online": { "type": "integer" },
                    "stored_offline": { "type": "integer" }, "unreachable": { "type": "integer" },
                    "delivered_online": { "type": "integer" }, "delivered_from_offline": { "type": "integer" },
                    "acknowledged": { "type": "integer" }, "cancelled": { "type": "integer" },
                    "replaced": { "type": "integer" },
                    "expired": { "type": "integer" }, "pending": { "type": "integer" } } },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_finds_its_operation_and_scope() {
        let id = |method, path| find(method, path).map(|op| (op.id, op.scope));
        assert_eq!(id("post", "/v1/apps/shop/messages"), Some(("sendMessage", Scopes::SEND)));
        assert_eq!(id("get", "/v1/apps/shop/messages/abc"), Some(("getMessage", Scopes::READ)));
        assert_eq!(id("post", "/v1/apps/shop/messages/abc/cancel"), Some(("cancelMessage", Scopes::SEND)));
        assert_eq!(id("put", "/v1/apps/shop/devices/d1"), Some(("putDevice", Scopes::DEVICES)));
        assert_eq!(id("post", "/v1/apps/shop/audiences/count"), Some(("countAudience", Scopes::READ)));
        assert_eq!(id("delete", "/v1/apps/shop/keys/key_1"), Some(("revokeKey", Scopes::ADMIN)));
        assert_eq!(id("get", "/v1/apps/shop/keys"), Some(("listKeys", Scopes::ADMIN)));
        assert_eq!(id("get", "/v1/apps/shop/nothing"), None);
        assert_eq!(id("delete", "/v1/apps/shop/messages"), None);
    }
}
