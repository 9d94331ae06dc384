//! Authentication: turning a CONNECT into a principal.
//!
//! The [`Authenticator`] trait is the seam credentials plug into: a
//! password in CONNECT, or an enhanced-authentication method run as an
//! [`AuthExchange`] (MQTT 5 §4.12). [`ConfigAuthenticator`] reads its users
//! from configuration and offers SCRAM-SHA-256.

use crate::scram::{self, ScramSecret};
use bytes::Bytes;
use herald_core::{AppId, ByteString, ReasonCode};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant the session belongs to; every topic it touches is scoped to it.
    pub app: AppId,
    /// The user name presented, if any.
    pub username: Option<ByteString>,
    /// When the credentials stop being valid (a device token's expiry):
    /// the connection ends then (v5: DISCONNECT 0x87).
    pub valid_until: Option<herald_core::UnixMillis>,
}

/// The credentials a CONNECT presents.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The client id (possibly assigned by the server).
    pub client_id: &'a str,
    /// The user name field.
    pub username: Option<&'a str>,
    /// The password field.
    pub password: Option<&'a [u8]>,
}

/// One step of an enhanced-authentication exchange (MQTT 5 §4.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send AUTH 0x18 (continue authentication) with this data and wait
    /// for the client's next AUTH.
    Continue(Bytes),
    /// Authenticated: the principal, and the data of the packet that ends
    /// the exchange (CONNACK, or AUTH 0x00 when re-authenticating).
    Done {
        /// Who the client proved to be.
        principal: Principal,
        /// Authentication Data for the closing packet.
        data: Option<Bytes>,
    },
}

/// Why an exchange failed: the reason code (0x87, usually) and a reason
/// string that is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// The reason code of the CONNACK or DISCONNECT that ends the connection.
    pub code: ReasonCode,
    /// The reason string.
    pub detail: String,
}

/// An enhanced-authentication exchange in progress: one per CONNECT or
/// re-authentication that names a method. Pure: no I/O, no clock.
pub trait AuthExchange: Send + Sync {
    /// Takes the client's Authentication Data (from CONNECT or AUTH 0x19
    /// first, then from each AUTH 0x18) and returns the next step.
    fn step(&mut self, data: Option<&[u8]>) -> Result<AuthStep, AuthFailure>;
}

/// Returns an AUTH packet of `method` with `reason_code` and, if any, `data`
/// [MQTT-4.12.0-5]: every AUTH of an exchange names the method.
pub fn auth_packet(reason_code: ReasonCode, method: ByteString, data: Option<Bytes>) -> herald_mqtt::Auth {
    let mut properties = herald_mqtt::Properties::default();
    properties.push(herald_mqtt::Property::AuthenticationMethod(method));
    if let Some(data) = data {
        properties.push(herald_mqtt::Property::AuthenticationData(data));
    }
    herald_mqtt::Auth { reason_code, properties }
}

/// Decides whether a connection may proceed and as whom.
///
/// A new authentication method implements [`AuthExchange`] and is
/// returned by [`Authenticator::begin`] for its name; the gateway runs the
/// AUTH packet flow around it, at CONNECT and for re-authentication.
pub trait Authenticator: Send + Sync + 'static {
    /// Returns the principal, or the CONNACK reason code refusing the
    /// connection (0x86 bad user name or password, 0x87 not authorized).
    fn authenticate(&self, credentials: Credentials<'_>) -> Result<Principal, ReasonCode>;

    /// Whether `username` is one of this authenticator's own users (then
    /// device users kept elsewhere are not consulted for it).
    fn knows(&self, username: &str) -> bool {
        let _ = username;
        false
    }

    /// Starts an exchange of the authentication method `method`, or returns
    /// `None` when the method is not supported (CONNACK 0x8C).
    fn begin(&self, method: &str) -> Option<Box<dyn AuthExchange>> {
        let _ = method;
        None
    }
}

/// How a configured user proves who they are.
#[derive(Debug, Clone)]
pub enum Secret {
    /// A password kept as written in configuration.
    Password(String),
    /// A SCRAM-SHA-256 secret: the password itself is not kept.
    Scram(ScramSecret),
    /// A salted hash of the password (`herald password-hash`): the password
    /// itself is not kept; SCRAM is not offered to such a user.
    Hash(herald_proto::users::PasswordHash),
}

/// A user known from configuration.
#[derive(Debug)]
pub struct ConfiguredUser {
    secret: Secret,
    app: AppId,
    /// The SCRAM secret of a plain password, derived on first use.
    derived: OnceLock<ScramSecret>,
}

impl ConfiguredUser {
    /// Returns a user with `secret` whose sessions belong to `app`.
    pub fn new(secret: Secret, app: AppId) -> ConfiguredUser {
        ConfiguredUser { secret, app, derived: OnceLock::new() }
    }

    /// Returns the app the user's sessions belong to.
    pub fn app(&self) -> &AppId {
        &self.app
    }

    fn check_password(&self, presented: &[u8]) -> bool {
        match &self.secret {
            Secret::Password(password) => same_secret(presented, password.as_bytes()),
            Secret::Scram(secret) => secret.verify_password(presented),
            Secret::Hash(hash) => crate::password::verify(hash, presented),
        }
    }

    fn scram_secret(&self) -> Option<ScramSecret> {
        match &self.secret {
            Secret::Scram(secret) => Some(secret.clone()),
            Secret::Password(password) => Some(
                self.derived
                    .get_or_init(|| ScramSecret::generate(password.as_bytes(), scram::DEFAULT_ITERATIONS))
                    .clone(),
            ),
            Secret::Hash(_) => None,
        }
    }
}

/// Authenticates against users listed in configuration, with a password in
/// CONNECT or with SCRAM-SHA-256. Without users, every client is admitted
/// into the default app when `allow_anonymous`.
#[derive(Debug, Clone)]
pub struct ConfigAuthenticator {
    allow_anonymous: bool,
    users: Arc<HashMap<String, ConfiguredUser>>,
    /// Keys the made-up salts of unknown user names.
    salt_key: [u8; 32],
}

impl ConfigAuthenticator {
    /// Returns an authenticator for `users`.
    pub fn new(allow_anonymous: bool, users: HashMap<String, ConfiguredUser>) -> ConfigAuthenticator {
        ConfigAuthenticator { allow_anonymous, users: Arc::new(users), salt_key: scram::random_bytes() }
    }

    /// Returns an authenticator that admits everyone into the default app.
    pub fn anonymous() -> ConfigAuthenticator {
        ConfigAuthenticator::new(true, HashMap::new())
    }
}

impl Authenticator for ConfigAuthenticator {
    fn authenticate(&self, credentials: Credentials<'_>) -> Result<Principal, ReasonCode> {
        let Some(username) = credentials.username else {
            return if self.allow_anonymous {
                Ok(Principal { app: AppId::default_app(), username: None, valid_until: None })
            } else {
                Err(ReasonCode::NotAuthorized)
            };
        };
        match self.users.get(username) {
            Some(user) if credentials.password.is_some_and(|p| user.check_password(p)) => Ok(Principal {
                app: user.app.clone(),
                username: Some(ByteString::from(username)),
                valid_until: None,
            }),
            Some(_) => Err(ReasonCode::BadUserNameOrPassword),
            None if self.allow_anonymous && self.users.is_empty() => Ok(Principal {
                app: AppId::default_app(),
                username: Some(ByteString::from(username)),
                valid_until: None,
            }),
            None => Err(ReasonCode::BadUserNameOrPassword),
        }
    }

    fn knows(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    fn begin(&self, method: &str) -> Option<Box<dyn AuthExchange>> {
        (method == scram::METHOD).then(|| {
            Box::new(ScramExchange { users: self.users.clone(), salt_key: self.salt_key, started: None })
                as Box<dyn AuthExchange>
        })
    }
}

/// SCRAM-SHA-256 against the configured users.
struct ScramExchange {
    users: Arc<HashMap<String, ConfiguredUser>>,
    salt_key: [u8; 32],
    started: Option<scram::ServerFirst>,
}

impl AuthExchange for ScramExchange {
    fn step(&mut self, data: Option<&[u8]>) -> Result<AuthStep, AuthFailure> {
        let data = data.unwrap_or_default();
        let failed = |error: scram::ScramError| AuthFailure {
            code: ReasonCode::NotAuthorized,
            detail: error.to_string(),
        };
        match self.started.take() {
            None => {
                let users = &self.users;
                let first = scram::server_first(
                    data,
                    |name| users.get(name).and_then(ConfiguredUser::scram_secret),
                    |name| scram::fake_salt(&self.salt_key, name),
                    &scram::new_nonce(),
                )
                .map_err(failed)?;
                let reply = Bytes::from(first.message.clone());
                self.started = Some(first);
                Ok(AuthStep::Continue(reply))
            }
            Some(first) => {
                let username = first.username.clone();
                let last = first.finish(data).map_err(failed)?;
                let user = self.users.get(&username).ok_or_else(|| failed(scram::ScramError::Failed))?;
                Ok(AuthStep::Done {
                    principal: Principal {
                        app: user.app.clone(),
                        valid_until: None,
                        username: Some(ByteString::from(username)),
                    },
                    data: Some(Bytes::from(last)),
                })
            }
        }
    }
}

/// Compares two secrets in time independent of where they first differ.
pub(crate) fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let mut difference = presented.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        difference |= usize::from(presented.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds<'a>(username: Option<&'a str>, password: Option<&'a [u8]>) -> Credentials<'a> {
        Credentials { client_id: "c", username, password }
    }

    fn shop() -> AppId {
        AppId::new("shop").expect("valid")
    }

    fn with_users(users: &[(&str, Secret)]) -> ConfigAuthenticator {
        let users = users
            .iter()
            .map(|(name, secret)| (name.to_string(), ConfiguredUser::new(secret.clone(), shop())));
        ConfigAuthenticator::new(false, users.collect())
    }

    #[test]
    fn configured_users_need_their_password_and_land_in_their_app() {
        let scram = ScramSecret::generate(b"hashed", scram::DEFAULT_ITERATIONS);
        let auth = with_users(&[("alice", Secret::Password("pw".into())), ("carol", Secret::Scram(scram))]);
        assert_eq!(auth.authenticate(creds(Some("alice"), Some(b"pw"))).map(|p| p.app), Ok(shop()));
        assert_eq!(auth.authenticate(creds(Some("carol"), Some(b"hashed"))).map(|p| p.app), Ok(shop()));
        for (name, password) in [("alice", &b"no"[..]), ("bob", b"pw"), ("carol", b"hashed!")] {
            assert_eq!(
                auth.authenticate(creds(Some(name), Some(password))),
                Err(ReasonCode::BadUserNameOrPassword),
                "{name}"
            );
        }
        assert_eq!(auth.authenticate(creds(None, None)), Err(ReasonCode::NotAuthorized));
    }

    #[test]
    fn a_user_kept_as_a_hash_checks_its_password_but_is_not_offered_scram() {
        let hash =
            crate::password::hash(herald_proto::users::HashAlgorithm::Sha256, b"hashed-pw", 0).expect("hash");
        let auth = with_users(&[("dave", Secret::Hash(hash))]);
        assert_eq!(auth.authenticate(creds(Some("dave"), Some(b"hashed-pw"))).map(|p| p.app), Ok(shop()));
        assert_eq!(
            auth.authenticate(creds(Some("dave"), Some(b"nope"))),
            Err(ReasonCode::BadUserNameOrPassword)
        );
        let (outcome, _) = scram(&auth, "dave", b"hashed-pw");
        assert!(outcome.is_err(), "no SCRAM secret can be made from a hash");
    }

    #[test]
    fn anonymous_mode_admits_into_the_default_app() {
        let auth = ConfigAuthenticator::anonymous();
        let principal = auth.authenticate(creds(None, None)).expect("admitted");
        assert_eq!(principal.app, AppId::default_app());
    }

    /// Runs a SCRAM exchange as `name` with `password`; returns the outcome and
    /// whether the server's final message proved it knows the secret.
    fn scram(
        auth: &ConfigAuthenticator,
        name: &str,
        password: &[u8],
    ) -> (Result<Principal, AuthFailure>, bool) {
        let mut exchange = auth.begin(scram::METHOD).expect("SCRAM is offered");
        let client = scram::Client::new(name, &scram::new_nonce());
        let Ok(AuthStep::Continue(server_first)) = exchange.step(Some(client.first().as_bytes())) else {
            panic!("the first step continues");
        };
        let (last, expected) = client.finish(&server_first, password).expect("valid server-first");
        match exchange.step(Some(last.as_bytes())) {
            Ok(AuthStep::Done { principal, data }) => {
                (Ok(principal), data.as_deref() == Some(expected.as_bytes()))
            }
            Ok(AuthStep::Continue(_)) => panic!("SCRAM has two steps"),
            Err(failure) => (Err(failure), false),
        }
    }

    #[test]
    fn scram_admits_users_with_either_kind_of_secret_into_their_app() {
        let hashed = ScramSecret::generate(b"hashed", scram::DEFAULT_ITERATIONS);
        let auth = with_users(&[("alice", Secret::Password("pw".into())), ("carol", Secret::Scram(hashed))]);
        for (name, password) in [("alice", &b"pw"[..]), ("carol", b"hashed")] {
            let (principal, server_proved) = scram(&auth, name, password);
            assert_eq!(principal.map(|p| (p.app, p.username)), Ok((shop(), Some(ByteString::from(name)))));
            assert!(server_proved, "the server-final message must carry the server's signature");
        }
        for (name, password) in [("alice", &b"wrong"[..]), ("nobody", b"pw")] {
            let (outcome, _) = scram(&auth, name, password);
            let failure = outcome.expect_err("refused");
            assert_eq!(
                (failure.code, failure.detail.as_str()),
                (ReasonCode::NotAuthorized, "SCRAM authentication failed")
            );
        }
        assert!(auth.begin("SCRAM-SHA-1").is_none(), "only the offered method starts");
    }
}
