//! Device tokens: short-lived JWTs an app backend signs (HS256, with the
//! app's secret) so that a device can connect as itself without a password
//! of its own. Pure: the caller passes the time in.
//!
//! A token's claims: `app` (the app whose secret signed it), `sub` (the
//! device id, which must be the MQTT client id), `exp` (seconds since the
//! epoch; required), and optionally `nbf`. Only `alg: HS256` is accepted.

use crate::auth::{AuthExchange, Authenticator, Credentials, Principal};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::{AppId, ByteString, ReasonCode, UnixMillis};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("not a JWT")]
    Malformed,
    /// Another algorithm than HS256 (including `none`).
    #[error("only HS256 tokens are accepted")]
    Algorithm,
    /// No such app, or it has no device-token secret.
    #[error("no device tokens for this app")]
    UnknownApp,
    /// The signature does not match the app's secret.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed, or is missing.
    #[error("expired")]
    Expired,
    /// `nbf` is still to come.
    #[error("not valid yet")]
    NotYet,
    /// `sub` is not the device connecting.
    #[error("the token names another device")]
    WrongDevice,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The app.
    pub app: AppId,
    /// When it stops being valid.
    pub expires_at: UnixMillis,
}

/// The device-token secrets of the apps that have one.
#[derive(Clone, Default)]
pub struct DeviceTokens {
    secrets: HashMap<AppId, Arc<[u8]>>,
}

impl std::fmt::Debug for DeviceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTokens").field("apps", &self.secrets.keys().collect::<Vec<_>>()).finish()
    }
}

impl DeviceTokens {
    /// Adds `app`'s secret.
    pub fn add(&mut self, app: AppId, secret: &[u8]) {
        self.secrets.insert(app, secret.into());
    }

    /// Whether any app has a secret.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The device a token names (`sub`), unverified: what to verify it for.
    pub fn subject(token: &str) -> Option<String> {
        let claims = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
        claims["sub"].as_str().map(str::to_owned)
    }

    /// Verifies `token` for the device `device` at `now`.
    pub fn verify(&self, token: &str, device: &str, now: UnixMillis) -> Result<Verified, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let json = |part: &str| -> Result<serde_json::Value, TokenError> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
            serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
        };
        if json(header)?["alg"] != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let signed = &token[..header.len() + 1 + claims.len()];
        let claims = json(claims)?;
        let app = claims["app"].as_str().and_then(|a| AppId::new(a).ok()).ok_or(TokenError::UnknownApp)?;
        let secret = self.secrets.get(&app).ok_or(TokenError::UnknownApp)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature).map_err(|_| TokenError::Signature)?;
        let seconds = |name: &str| claims[name].as_u64().map(|s| UnixMillis(s.saturating_mul(1000)));
        let expires_at = seconds("exp").ok_or(TokenError::Expired)?;
        if expires_at <= now {
            return Err(TokenError::Expired);
        }
        if seconds("nbf").is_some_and(|nbf| nbf > now) {
            return Err(TokenError::NotYet);
        }
        if claims["sub"].as_str() != Some(device) {
            return Err(TokenError::WrongDevice);
        }
        Ok(Verified { app, expires_at })
    }
}

/// Whether `password` is shaped like a JWT (three base64url parts whose
/// header starts `{"`): such a password is checked as a device token.
pub fn looks_like_token(password: &[u8]) -> bool {
    password.starts_with(b"eyJ") && password.iter().filter(|b| **b == b'.').count() == 2
}

/// Admits devices with a token in the password field, and everyone else
/// through `inner`.
pub struct TokenAuthenticator<A> {
    tokens: DeviceTokens,
    inner: A,
    clock: Arc<dyn herald_core::Clock>,
}

impl<A: Authenticator> TokenAuthenticator<A> {
    /// Checks tokens with `tokens`, other credentials with `inner`.
    pub fn new(tokens: DeviceTokens, inner: A, clock: Arc<dyn herald_core::Clock>) -> TokenAuthenticator<A> {
        TokenAuthenticator { tokens, inner, clock }
    }
}

impl<A: Authenticator> Authenticator for TokenAuthenticator<A> {
    fn authenticate(&self, credentials: Credentials<'_>) -> Result<Principal, ReasonCode> {
        let token = credentials.password.filter(|p| !self.tokens.is_empty() && looks_like_token(p));
        let Some(token) = token else { return self.inner.authenticate(credentials) };
        let token = std::str::from_utf8(token).map_err(|_| ReasonCode::BadUserNameOrPassword)?;
        match self.tokens.verify(token, credentials.client_id, self.clock.now()) {
            Ok(verified) => Ok(Principal {
                app: verified.app,
                username: credentials.username.map(ByteString::from),
                valid_until: Some(verified.expires_at),
            }),
            Err(_) => Err(ReasonCode::BadUserNameOrPassword),
        }
    }

    fn begin(&self, method: &str) -> Option<Box<dyn AuthExchange>> {
        self.inner.begin(method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
        let (h, c) = (URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(format!("{h}.{c}").as_bytes());
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn tokens() -> DeviceTokens {
        let mut tokens = DeviceTokens::default();
        tokens.add(AppId::new("shop").expect("app"), SECRET);
        tokens
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
    const NOW: UnixMillis = UnixMillis(1_000_000_000_000);

    #[test]
    fn a_valid_token_names_its_app_and_when_it_ends() {
        let token = sign(HS256, r#"{"app":"shop","sub":"dev1","exp":1000000060}"#, SECRET);
        assert!(looks_like_token(token.as_bytes()));
        let verified = tokens().verify(&token, "dev1", NOW).expect("valid");
        assert_eq!(
            verified,
            Verified { app: AppId::new("shop").expect("app"), expires_at: UnixMillis(1_000_000_060_000) }
        );
    }

    #[test]
    fn every_flaw_is_refused() {
        let cases = [
            (
                sign(
                    HS256,
                    r#"{"app":"shop","sub":"dev1","exp":1000000060}"#,
                    b"another-secret-of-32-bytes-xxxxx",
                ),
                TokenError::Signature,
            ),
            (sign(HS256, r#"{"app":"shop","sub":"dev1","exp":999999999}"#, SECRET), TokenError::Expired),
            (sign(HS256, r#"{"app":"shop","sub":"dev1"}"#, SECRET), TokenError::Expired),
            (
                sign(HS256, r#"{"app":"shop","sub":"dev1","exp":1000000060,"nbf":1000000030}"#, SECRET),
                TokenError::NotYet,
            ),
            (sign(HS256, r#"{"app":"shop","sub":"dev2","exp":1000000060}"#, SECRET), TokenError::WrongDevice),
            (sign(HS256, r#"{"app":"other","sub":"dev1","exp":1000000060}"#, SECRET), TokenError::UnknownApp),
            (
                sign(r#"{"alg":"none"}"#, r#"{"app":"shop","sub":"dev1","exp":1000000060}"#, SECRET),
                TokenError::Algorithm,
            ),
            ("a.b".to_owned(), TokenError::Malformed),
            ("eyJ.!!.x".to_owned(), TokenError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(tokens().verify(&token, "dev1", NOW), Err(want), "{token}");
        }
    }
}
