//! The admin API: an app's API keys made and revoked at run time, called
//! with the operator token from configuration or with a key of the app that
//! has the `admin` scope.
//!
//! A key is made here from 32 random bytes and shown once, in the answer to
//! its creation; the router keeps only its SHA-256 digest (replicated), and
//! sends every gateway the digests it must accept: when the gateway links,
//! and after each change, before the change is answered.

use super::send::{Bounds, list, object, only};
use super::{Api, Problem, Scopes, json_response, refused, respond};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::{AppId, ErrorCode};
use herald_proto::seam::{ApiKeyRecord, DirectoryAnswer, DirectoryOp, KeyOp, MAX_API_KEYS_PER_APP};
use ring::rand::SecureRandom as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The prefix of every key made here (so that leaked keys can be found by
/// secret scanners).
pub const KEY_PREFIX: &str = "hk_";
/// The longest key name, in characters.
const MAX_NAME_CHARS: usize = 64;

/// The keys made at run time that this gateway accepts, as the router last
/// sent them; none until the first set arrives after linking.
#[derive(Default)]
pub(crate) struct RuntimeKeys {
    keys: RwLock<Option<ByDigest>>,
}

/// Keys by their SHA-256 digest, with their app and scopes.
type ByDigest = HashMap<[u8; 32], (AppId, Scopes)>;

/// What the runtime keys say of a key.
pub(crate) enum Lookup {
    /// It belongs to this app, with these scopes.
    Found(AppId, Scopes),
    /// It is not one of them.
    Unknown,
    /// The gateway has not heard from the router yet: it cannot tell.
    NotYet,
}

impl RuntimeKeys {
    /// Takes the router's keys: all of them (`app: None`) or one app's.
    pub(crate) fn replace(&self, app: Option<AppId>, records: Vec<ApiKeyRecord>) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let keys = match (app, keys.as_mut()) {
            (Some(app), Some(keys)) => {
                keys.retain(|_, (owner, _)| *owner != app);
                keys
            }
            // One app's keys before the whole set: kept, the set follows.
            _ => keys.insert(HashMap::new()),
        };
        for record in records {
            keys.insert(record.digest, (record.app, Scopes::from_bits(record.scopes)));
        }
    }

    /// Looks up the key whose digest is `digest`.
    pub(crate) fn find(&self, digest: &[u8; 32]) -> Lookup {
        match self.keys.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            None => Lookup::NotYet,
            Some(keys) => match keys.get(digest) {
                Some((app, scopes)) => Lookup::Found(app.clone(), *scopes),
                None => Lookup::Unknown,
            },
        }
    }
}

/// The operator token, of which only a digest is held (and never logged).
#[derive(Clone)]
pub struct OperatorToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(..)")
    }
}

impl OperatorToken {
    /// The shortest token accepted, in characters.
    pub const MIN_CHARS: usize = 32;

    /// Holds `token`'s digest.
    pub fn new(token: &str) -> OperatorToken {
        OperatorToken { digest: Sha256::digest(token.as_bytes()).into() }
    }

    /// Whether the key with digest `digest` is the token (compared in
    /// constant time; digests, so nothing can be learnt byte by byte).
    pub(crate) fn is(&self, digest: &[u8; 32]) -> bool {
        self.digest.iter().zip(digest).fold(0, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

fn random<const N: usize>() -> Result<[u8; N], Problem> {
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Problem::unavailable("no randomness for a new key; retry"))?;
    Ok(bytes)
}

fn key_json(key: &ApiKeyRecord) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "scopes": Scopes::from_bits(key.scopes).names(),
        "created_at": key.created_at.rfc3339(),
    })
}

/// The problem of a refusal of a key request.
fn key_refused(code: ErrorCode) -> Problem {
    match code {
        ErrorCode::QuotaExceeded => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "KEY_LIMIT_EXCEEDED",
            format!("an app has at most {MAX_API_KEYS_PER_APP} keys made through the API; revoke one first"),
        ),
        code => refused(code, "key"),
    }
}

pub(super) async fn create(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            let (app, value) = api.json(&app, &headers, body, Scopes::ADMIN).await?;
            let map = object(&value, "")?;
            only(map, "", &["name", "scopes"])?;
            let name = match map.get("name") {
                Some(Value::String(name))
                    if (1..=MAX_NAME_CHARS).contains(&name.chars().count())
                        && !name.chars().any(char::is_control) =>
                {
                    name.clone()
                }
                Some(_) => {
                    let detail =
                        format!("a name is 1 to {MAX_NAME_CHARS} characters, none a control character");
                    return Err(Problem::field("/name", "NAME_INVALID", detail));
                }
                None => return Err(Problem::field("/name", "NAME_REQUIRED", "name the key")),
            };
            let scopes = map.get("scopes").ok_or_else(|| {
                Problem::field(
                    "/scopes",
                    "SCOPES_REQUIRED",
                    "give its scopes: send, read, devices, admin or all",
                )
            })?;
            let bounds = Bounds { max: 5, too_many: "SCOPES_INVALID", empty: Some("SCOPES_REQUIRED") };
            let scopes = list(scopes, "/scopes", bounds, |s| {
                Scopes::parse(s)
                    .ok_or(("SCOPE_UNKNOWN", format!("{s:?} is not send, read, devices, admin or all")))
            })?
            .into_iter()
            .fold(Scopes::NONE, Scopes::with);
            let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random::<32>()?));
            let id: String = random::<8>()?.iter().map(|b| format!("{b:02x}")).collect();
            let record = ApiKeyRecord {
                app: app.clone(),
                id: format!("key_{id}"),
                name,
                scopes: scopes.bits(),
                digest: Sha256::digest(key.as_bytes()).into(),
                created_at: api.shared.clock.now(),
            };
            let made = match api.ask_directory(app.clone(), DirectoryOp::Keys(KeyOp::Create(record))).await? {
                Ok(DirectoryAnswer::Keys(mut keys)) if keys.len() == 1 => keys.remove(0),
                Ok(_) => return Err(Problem::mismatch()),
                Err(code) => return Err(key_refused(code)),
            };
            let mut body = key_json(&made);
            body["key"] = json!(key);
            let mut response = json_response(StatusCode::CREATED, &body);
            if let Ok(location) = HeaderValue::try_from(format!("/v1/apps/{app}/keys/{}", made.id)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        .await,
    )
}

pub(super) async fn list_keys(
    State(api): State<Arc<Api>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let app = api.authorize_for(&headers, &app, Scopes::ADMIN)?;
            match api.directory(app, DirectoryOp::Keys(KeyOp::List), "key").await? {
                DirectoryAnswer::Keys(keys) => {
                    let keys: Vec<Value> = keys.iter().map(key_json).collect();
                    Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
                }
                _ => Err(Problem::mismatch()),
            }
        }
        .await,
    )
}

pub(super) async fn revoke(
    State(api): State<Arc<Api>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let app = api.authorize_for(&headers, &app, Scopes::ADMIN)?;
            match api.ask_directory(app, DirectoryOp::Keys(KeyOp::Revoke { id })).await? {
                Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(code) => Err(key_refused(code)),
            }
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(app: &str, id: &str, digest: u8, scopes: Scopes) -> ApiKeyRecord {
        ApiKeyRecord {
            app: AppId::new(app).expect("app"),
            id: id.to_owned(),
            name: id.to_owned(),
            scopes: scopes.bits(),
            digest: [digest; 32],
            created_at: herald_core::UnixMillis(0),
        }
    }

    fn found(keys: &RuntimeKeys, digest: u8) -> Option<(String, Scopes)> {
        match keys.find(&[digest; 32]) {
            Lookup::Found(app, scopes) => Some((app.to_string(), scopes)),
            Lookup::Unknown => None,
            Lookup::NotYet => panic!("the keys are known"),
        }
    }

    #[test]
    fn the_routers_sets_replace_all_keys_or_one_apps() {
        let keys = RuntimeKeys::default();
        assert!(matches!(keys.find(&[1; 32]), Lookup::NotYet), "nothing heard from the router yet");
        let all = vec![record("shop", "a", 1, Scopes::SEND), record("other", "b", 2, Scopes::ALL)];
        keys.replace(None, all);
        assert_eq!(found(&keys, 1), Some(("shop".to_owned(), Scopes::SEND)));
        // A change of shop's keys leaves other's alone.
        keys.replace(Some(AppId::new("shop").expect("app")), vec![record("shop", "c", 3, Scopes::READ)]);
        assert_eq!(found(&keys, 1), None, "revoked");
        assert_eq!(found(&keys, 3), Some(("shop".to_owned(), Scopes::READ)));
        assert_eq!(found(&keys, 2), Some(("other".to_owned(), Scopes::ALL)));
        // A new link's whole set replaces everything.
        keys.replace(None, Vec::new());
        assert_eq!((found(&keys, 2), found(&keys, 3)), (None, None));
    }

    #[test]
    fn scopes_read_and_print_by_name() {
        assert_eq!(Scopes::parse("admin"), Some(Scopes::ADMIN));
        assert_eq!(Scopes::parse("all").map(Scopes::names), Some(vec!["send", "read", "devices", "admin"]));
        assert_eq!(Scopes::parse("root"), None);
        assert_eq!(Scopes::from_bits(0xff), Scopes::ALL, "unknown bits are dropped");
        assert!(!Scopes::SEND.with(Scopes::READ).allow(Scopes::ADMIN));
    }

    #[test]
    fn the_operator_token_matches_itself_only_and_never_prints() {
        let token = OperatorToken::new("operator-token-0123456789abcdef-0123");
        assert!(token.is(&Sha256::digest(b"operator-token-0123456789abcdef-0123").into()));
        assert!(!token.is(&Sha256::digest(b"operator-token-0123456789abcdef-0124").into()));
        assert!(!format!("{token:?}").contains("0123"));
    }
}
