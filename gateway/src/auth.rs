//! Authentication: turning a CONNECT into a principal.
//!
//! The [`Authenticator`] trait is the seam later issues plug app-signed
//! tokens, SCRAM and Redis-backed credentials into; today's implementation
//! reads its users from configuration.

use herald_core::{AppId, ByteString, ReasonCode};
use std::collections::HashMap;

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant the session belongs to; every topic it touches is scoped to it.
    pub app: AppId,
    /// The user name presented, if any.
    pub username: Option<ByteString>,
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

/// Decides whether a connection may proceed and as whom.
pub trait Authenticator: Send + Sync + 'static {
    /// Returns the principal, or the CONNACK reason code refusing the
    /// connection (0x86 bad user name or password, 0x87 not authorized).
    fn authenticate(&self, credentials: Credentials<'_>) -> Result<Principal, ReasonCode>;
}

/// A user known from configuration.
#[derive(Debug, Clone)]
pub struct ConfiguredUser {
    /// The user's password.
    pub password: String,
    /// The app the user's sessions belong to.
    pub app: AppId,
}

/// Authenticates against users listed in configuration. Without users,
/// every client is admitted into the default app when `allow_anonymous`.
#[derive(Debug, Clone, Default)]
pub struct ConfigAuthenticator {
    /// Admit clients that present no user name.
    pub allow_anonymous: bool,
    /// Known users by name.
    pub users: HashMap<String, ConfiguredUser>,
}

impl ConfigAuthenticator {
    /// Returns an authenticator that admits everyone into the default app.
    pub fn anonymous() -> ConfigAuthenticator {
        ConfigAuthenticator { allow_anonymous: true, users: HashMap::new() }
    }
}

impl Authenticator for ConfigAuthenticator {
    fn authenticate(&self, credentials: Credentials<'_>) -> Result<Principal, ReasonCode> {
        let Some(username) = credentials.username else {
            return if self.allow_anonymous {
                Ok(Principal { app: AppId::default_app(), username: None })
            } else {
                Err(ReasonCode::NotAuthorized)
            };
        };
        match self.users.get(username) {
            Some(user) if credentials.password.is_some_and(|p| same_secret(p, user.password.as_bytes())) => {
                Ok(Principal { app: user.app.clone(), username: Some(ByteString::from(username)) })
            }
            Some(_) => Err(ReasonCode::BadUserNameOrPassword),
            None if self.allow_anonymous && self.users.is_empty() => {
                Ok(Principal { app: AppId::default_app(), username: Some(ByteString::from(username)) })
            }
            None => Err(ReasonCode::BadUserNameOrPassword),
        }
    }
}

/// Compares two secrets in time independent of where they first differ.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
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

    #[test]
    fn configured_users_need_their_password_and_land_in_their_app() {
        let mut auth = ConfigAuthenticator::default();
        let app = AppId::new("shop").expect("valid");
        auth.users.insert("alice".into(), ConfiguredUser { password: "pw".into(), app: app.clone() });
        assert_eq!(auth.authenticate(creds(Some("alice"), Some(b"pw"))).map(|p| p.app), Ok(app));
        assert_eq!(
            auth.authenticate(creds(Some("alice"), Some(b"no"))),
            Err(ReasonCode::BadUserNameOrPassword)
        );
        assert_eq!(
            auth.authenticate(creds(Some("bob"), Some(b"pw"))),
            Err(ReasonCode::BadUserNameOrPassword)
        );
        assert_eq!(auth.authenticate(creds(None, None)), Err(ReasonCode::NotAuthorized));
    }

    #[test]
    fn anonymous_mode_admits_into_the_default_app() {
        let auth = ConfigAuthenticator::anonymous();
        let principal = auth.authenticate(creds(None, None)).expect("admitted");
        assert_eq!(principal.app, AppId::default_app());
    }
}
