//! The admin API's device users (ADR 0026): user names and passwords that
//! devices connect with, kept by the router as salted hashes. Called with
//! the operator token or an app key with the `admin` scope.
//!
//! The password given here is hashed here, and only the hash goes to the
//! router; a hash made elsewhere (moved over from another broker) can be
//! given instead of a password.

use super::send::{object, only};
use super::{Api, Problem, Scopes, json_response, refused, respond};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_core::ErrorCode;
use herald_proto::seam::{DirectoryAnswer, DirectoryOp};
use herald_proto::users::{
    DeviceUser, HashAlgorithm, MAX_USERS_PER_PAGE, PasswordHash, SaltPosition, UserOp, valid_username,
};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Shortest password accepted, in bytes: a fast hash of a short password
/// is quickly guessed.
pub(super) const MIN_PASSWORD_BYTES: usize = 8;
/// Longest password accepted, in bytes.
pub(super) const MAX_PASSWORD_BYTES: usize = 1024;
/// Users per page unless asked otherwise.
const DEFAULT_PAGE: u32 = 100;

fn user_json(user: &DeviceUser) -> Value {
    json!({
        "username": user.username,
        "algorithm": user.password.algorithm.name(),
        "updated_at": user.updated_at.rfc3339(),
    })
}

fn username(name: String) -> Result<String, Problem> {
    if valid_username(&name) {
        Ok(name)
    } else {
        let detail = "a user name is 1 to 256 bytes without control characters";
        Err(Problem::new(StatusCode::BAD_REQUEST, "USERNAME_INVALID", detail))
    }
}

/// The problem of a refusal of a user request.
fn user_refused(code: ErrorCode) -> Problem {
    match code {
        ErrorCode::Conflict => Problem::new(
            StatusCode::CONFLICT,
            "USERNAME_TAKEN",
            "another app has a device user of this name; user names are unique across apps",
        ),
        ErrorCode::QuotaExceeded => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "USER_LIMIT_EXCEEDED",
            format!("an app has at most {} device users", herald_proto::users::MAX_DEVICE_USERS_PER_APP),
        ),
        code => refused(code, "user"),
    }
}

/// The answer naming one user, as the response.
fn one_user(answer: Result<DirectoryAnswer, ErrorCode>) -> Result<Response, Problem> {
    match answer {
        Ok(DirectoryAnswer::Users(users)) if users.len() == 1 => {
            Ok(json_response(StatusCode::OK, &user_json(&users[0])))
        }
        Ok(_) => Err(Problem::mismatch()),
        Err(code) => Err(user_refused(code)),
    }
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Problem> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Problem::field(format!("/{key}"), "FIELD_INVALID", format!("{key} is a string"))),
    }
}

/// The hash a PUT's body asks for: of a password, or given as it was made
/// elsewhere.
pub(super) fn hash_from(map: &Map<String, Value>) -> Result<PasswordHash, Problem> {
    only(map, "", &["password", "algorithm", "iterations", "password_hash", "salt", "salt_position"])?;
    let algorithm = match text(map, "algorithm")? {
        None => HashAlgorithm::Sha256,
        Some(name) => HashAlgorithm::from_name(name).ok_or_else(|| {
            Problem::field("/algorithm", "ALGORITHM_UNKNOWN", "the algorithm is sha256, sha512 or pbkdf2")
        })?,
    };
    let iterations = match map.get("iterations") {
        None => crate::password::DEFAULT_PBKDF2_ITERATIONS,
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=herald_proto::users::MAX_PBKDF2_ITERATIONS).contains(n))
            .ok_or_else(|| Problem::field("/iterations", "ITERATIONS_INVALID", "1 to 1,000,000"))?,
    };
    match (text(map, "password")?, text(map, "password_hash")?) {
        (Some(password), None) => {
            if !(MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
                let detail = format!("a password is {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes");
                return Err(Problem::field("/password", "PASSWORD_INVALID", detail));
            }
            if map.contains_key("salt") || map.contains_key("salt_position") {
                let detail = "a salt goes with a password_hash; a password gets a fresh one";
                return Err(Problem::field("/salt", "FIELD_INVALID", detail));
            }
            crate::password::hash(algorithm, password.as_bytes(), iterations)
                .ok_or_else(|| Problem::field("/iterations", "ITERATIONS_INVALID", "1 to 1,000,000"))
        }
        (None, Some(hex)) => {
            let salt_position = match text(map, "salt_position")? {
                None | Some("prefix") => SaltPosition::Prefix,
                Some("suffix") => SaltPosition::Suffix,
                Some(_) => {
                    return Err(Problem::field("/salt_position", "FIELD_INVALID", "prefix or suffix"));
                }
            };
            let salt = text(map, "salt")?.unwrap_or_default().as_bytes();
            crate::password::from_hex(algorithm, salt_position, iterations, hex, salt).ok_or_else(|| {
                let detail = "password_hash is the hash's hex digits, of the length its algorithm makes";
                Problem::field("/password_hash", "PASSWORD_HASH_INVALID", detail)
            })
        }
        _ => Err(Problem::field(
            "/password",
            "PASSWORD_REQUIRED",
            "give either a password or a password_hash (with its salt)",
        )),
    }
}

pub(super) async fn put(
    State(api): State<Arc<Api>>,
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let (app, value) = api.json(&app, &headers, body, Scopes::ADMIN).await?;
            let name = username(name)?;
            let password = hash_from(object(&value, "")?)?;
            let user =
                DeviceUser { app: app.clone(), username: name, password, updated_at: api.shared.clock.now() };
            one_user(api.ask_directory(app, DirectoryOp::Users(UserOp::Put(Box::new(user)))).await?)
        }
        .await,
    )
}

pub(super) async fn get(
    State(api): State<Arc<Api>>,
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let app = api.authorize_for(&headers, &app, Scopes::ADMIN)?;
            let op = DirectoryOp::Users(UserOp::Get { username: username(name)? });
            one_user(api.ask_directory(app, op).await?)
        }
        .await,
    )
}

pub(super) async fn delete(
    State(api): State<Arc<Api>>,
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let app = api.authorize_for(&headers, &app, Scopes::ADMIN)?;
            let op = DirectoryOp::Users(UserOp::Remove { username: username(name)? });
            match api.ask_directory(app, op).await? {
                Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(code) => Err(user_refused(code)),
            }
        }
        .await,
    )
}

pub(super) async fn list(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    respond(
        async {
            let app = api.authorize_for(&headers, &app, Scopes::ADMIN)?;
            let (after, limit) = page(uri.query().unwrap_or(""))?;
            let op = DirectoryOp::Users(UserOp::List { after, limit });
            match api.directory(app, op, "user").await? {
                DirectoryAnswer::Users(users) => {
                    let next =
                        (users.len() == limit as usize).then(|| users.last().map(|u| u.username.clone()));
                    let users: Vec<Value> = users.iter().map(user_json).collect();
                    Ok(json_response(StatusCode::OK, &json!({ "users": users, "next": next.flatten() })))
                }
                _ => Err(Problem::mismatch()),
            }
        }
        .await,
    )
}

/// `after` and `limit` from a list's query string.
pub(super) fn page(query: &str) -> Result<(Option<String>, u32), Problem> {
    let (mut after, mut limit) = (None, DEFAULT_PAGE);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)
            .ok_or_else(|| Problem::new(StatusCode::BAD_REQUEST, "QUERY_INVALID", "bad percent-encoding"))?;
        match key {
            "after" => after = Some(username(value)?),
            "limit" => {
                limit =
                    value.parse().ok().filter(|n| (1..=MAX_USERS_PER_PAGE).contains(n)).ok_or_else(|| {
                        Problem::new(StatusCode::BAD_REQUEST, "LIMIT_INVALID", "limit is 1 to 1000")
                    })?;
            }
            _ => {
                let detail = format!("unknown query parameter {key:?}: after and limit are known");
                return Err(Problem::new(StatusCode::BAD_REQUEST, "QUERY_INVALID", detail));
            }
        }
    }
    Ok((after, limit))
}

/// Decodes `%XX` escapes and `+` (a space) of a query value.
fn percent_decode(value: &str) -> Option<String> {
    let (mut out, mut bytes) = (Vec::with_capacity(value.len()), value.bytes());
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b'+' => b' ',
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Result<PasswordHash, Problem> {
        let value: Value = serde_json::from_str(text).expect("json");
        hash_from(value.as_object().expect("object"))
    }

    #[test]
    fn a_password_is_hashed_with_a_fresh_salt_and_checks() {
        let kept = body(r#"{"password":"correct horse"}"#).expect("hashed");
        assert_eq!((kept.algorithm, kept.salt.len()), (HashAlgorithm::Sha256, 16));
        assert!(crate::password::verify(&kept, b"correct horse"));
        let kept =
            body(r#"{"password":"correct horse","algorithm":"pbkdf2","iterations":1000}"#).expect("ok");
        assert_eq!((kept.algorithm, kept.iterations), (HashAlgorithm::Pbkdf2Sha256, 1000));
        assert!(crate::password::verify(&kept, b"correct horse"));
    }

    #[test]
    fn a_hash_made_elsewhere_is_taken_as_it_is() {
        let kept = body(
            r#"{"password_hash":"55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc","salt":"salt","algorithm":"pbkdf2","iterations":1}"#,
        )
        .expect("taken");
        assert!(crate::password::verify(&kept, b"passwd"));
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        for (text, code) in [
            (r#"{}"#, "PASSWORD_REQUIRED"),
            (r#"{"password":"short"}"#, "PASSWORD_INVALID"),
            (r#"{"password":"long enough","password_hash":"00"}"#, "PASSWORD_REQUIRED"),
            (r#"{"password":"long enough","algorithm":"md5"}"#, "ALGORITHM_UNKNOWN"),
            (r#"{"password":"long enough","algorithm":"pbkdf2","iterations":0}"#, "ITERATIONS_INVALID"),
            (r#"{"password":"long enough","salt":"x"}"#, "FIELD_INVALID"),
            (r#"{"password_hash":"abcd"}"#, "PASSWORD_HASH_INVALID"),
            (r#"{"password":12345678}"#, "FIELD_INVALID"),
        ] {
            assert_eq!(body(text).expect_err(text).code, code, "{text}");
        }
        assert_eq!(body(r#"{"password":"long enough","role":"x"}"#).expect_err("unknown").status, 400);
    }

    #[test]
    fn pages_read_after_and_limit() {
        assert_eq!(page("").expect("ok"), (None, DEFAULT_PAGE));
        assert_eq!(page("after=meter%2D7+b&limit=5").expect("ok"), (Some("meter-7 b".to_owned()), 5));
        for bad in ["limit=0", "limit=1001", "after=", "after=%zz", "sort=name"] {
            assert!(page(bad).is_err(), "{bad}");
        }
    }
}
