//! Device tokens: short-lived JWTs an app backend signs so that a device
//! can connect as itself without a password of its own: HS256 with the
//! app's secret, or RS256/ES256 with a private key whose public half the
//! app's configuration holds (so gateways hold nothing that can sign).
//! Pure: the caller passes the time in.
//!
//! A token's claims: `app` (the app that signed it), `sub` (the device id,
//! which must be the MQTT client id), `exp` (seconds since the epoch;
//! required), and optionally `nbf`. The header's `alg` must be one the app
//! has a key for (never `none`); its `kid`, when present, picks the key.

mod public_key;

pub use public_key::{Algorithm, PublicKey};

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
    /// Another algorithm than HS256, RS256 or ES256 (including `none`).
    #[error("only HS256, RS256 and ES256 tokens are accepted")]
    Algorithm,
    /// No such app, or it has no key for the token's algorithm (and `kid`).
    #[error("no device-token key of this app for this token")]
    UnknownApp,
    /// The signature does not match the app's key.
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

/// What verifies one app's tokens.
#[derive(Clone, Default)]
struct AppKeys {
    /// The HS256 secret.
    secret: Option<Arc<[u8]>>,
    /// Public keys, each with its optional `kid`.
    public: Vec<(Option<String>, PublicKey)>,
}

/// The device-token keys of the apps that have any.
#[derive(Clone, Default)]
pub struct DeviceTokens {
    apps: HashMap<AppId, AppKeys>,
}

impl std::fmt::Debug for DeviceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTokens").field("apps", &self.apps.keys().collect::<Vec<_>>()).finish()
    }
}

impl DeviceTokens {
    /// Adds `app`'s HS256 secret.
    pub fn add(&mut self, app: AppId, secret: &[u8]) {
        self.apps.entry(app).or_default().secret = Some(secret.into());
    }

    /// Adds a public key of `app` (RS256 or ES256, as the key's type says),
    /// picked by tokens whose header names `kid`, or tried by those naming
    /// none.
    pub fn add_public(&mut self, app: AppId, kid: Option<String>, key: PublicKey) {
        self.apps.entry(app).or_default().public.push((kid, key));
    }

    /// Whether any app has a key.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
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
        let header = json(header)?;
        let algorithm = match header["alg"].as_str() {
            Some("HS256") => None,
            Some("RS256") => Some(Algorithm::Rs256),
            Some("ES256") => Some(Algorithm::Es256),
            _ => return Err(TokenError::Algorithm),
        };
        let signed = &token[..token.len() - signature.len() - 1];
        let claims = json(claims)?;
        let app = claims["app"].as_str().and_then(|a| AppId::new(a).ok()).ok_or(TokenError::UnknownApp)?;
        let keys = self.apps.get(&app).ok_or(TokenError::UnknownApp)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        match algorithm {
            None => {
                let secret = keys.secret.as_ref().ok_or(TokenError::UnknownApp)?;
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
                mac.update(signed.as_bytes());
                mac.verify_slice(&signature).map_err(|_| TokenError::Signature)?;
            }
            Some(algorithm) => {
                // Only keys of the header's algorithm: a token cannot pick
                // how a key is used. A key with a `kid` is tried for tokens
                // naming it (or none); a key without one, for any token.
                let kid = header["kid"].as_str();
                let mut candidates = keys.public.iter().filter(|(key_id, key)| {
                    key.algorithm() == algorithm
                        && (kid.is_none() || key_id.is_none() || key_id.as_deref() == kid)
                });
                let mut any = false;
                let good = candidates.any(|(_, key)| {
                    any = true;
                    key.verify(signed.as_bytes(), &signature)
                });
                if !any {
                    return Err(TokenError::UnknownApp);
                }
                if !good {
                    return Err(TokenError::Signature);
                }
            }
        }
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

    fn knows(&self, username: &str) -> bool {
        self.inner.knows(username)
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

    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA8lAeYsAegD9mLH9lb/94\nwsPT3pr4Ijc0Z2O2lwZtMt6kR6uTOHYHxcWPkQAVFqeS83oqxQfMkLShCS37f46a\nKCXQrWqRZ48G1RPYH+Cfi6p5CdAlUt0eiBypej38ErSzByhKaCi1rxXcEoZAG+MZ\nLUzZ+x6GrJPs8DVlNHM3XPGitmogg6NEtYn4eC5xl3YIkQ+YgmotgebvnuLQO5YR\nsMxo1UP/YooydkoUcVhDYi6drVhx6ooG9JqEixHE3Czkz+LWBoJp0Dfhw/BtUlky\nKjIYkjQZec3rJprQj/nFSxndaOK3U+eaKOXai2mwSOHRdWE9x5qWi7ryylVE+8Nv\nBQIDAQAB\n-----END PUBLIC KEY-----";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2myT/Binbh6+lBfc/xxQy3t2MXVc\nWJX52Oj43iHrAl3Cqq9OKeVJVf22q3zcgyAfAtgm+TBuiJkvWGoHk+9n8g==\n-----END PUBLIC KEY-----";
    const EC_P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEncS60/9GyRJfNY6hgrfOLQVh7REKCQV3\nYgcOIQl977YCb1GQi68f51xr2L/snwZd+fR552AmCKbDt328KC06MGiGlrq+lAXw\nLfUfR65rFo1D67pOdFXWMt/U2JnIJfdP\n-----END PUBLIC KEY-----";
    /// Signed by the private halves with openssl (claims: app shop, sub dev1,
    /// exp 1000000060; kid r1 and e1).
    const RS256_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InIxIn0.eyJhcHAiOiJzaG9wIiwic3ViIjoiZGV2MSIsImV4cCI6MTAwMDAwMDA2MH0.P9cCRsKV9yjTsDesShimD7c8VjTXkTbdHVE9SHjNVpL3a5DBTJNvQbhfaffE7QW8kOESXkTOltu5l_FLIQlMNFsM0uvHlxaSBcDHx6biT5ebumuBWESjMnFlAJWjHJo88xpmddTWImJuRoTaYh8uUetGBTcOG-pisylvDHaAxr52NCarL6uG2aL5SnC66HJ4VMld64GKFpBwdDE0KfBosKJf0qPd5ENaZpV1wRebDwq8e8S0Ai6N530hKcIxxjh530JFOoe1XThNhzwxSaW9OwYz6xU-NmKJ9ujAdmzTxPRllofSf_0fqL4ejLNbAy6gcxlHmKO7lE9RggS-ofDCmw";
    const ES256_TOKEN: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImUxIn0.eyJhcHAiOiJzaG9wIiwic3ViIjoiZGV2MSIsImV4cCI6MTAwMDAwMDA2MH0.NEyqzJNOBA0V-W7B3DDYDzNsuPQGfys_nViEMDyz1mOPjROmjrFFo1BsHVhJwFu9vVCzVrf-CfGHeX81WLAy6w";

    fn public_tokens(rsa_kid: Option<&str>) -> DeviceTokens {
        let mut tokens = DeviceTokens::default();
        let app = AppId::new("shop").expect("app");
        let rsa = PublicKey::from_pem(RSA_PUBLIC).expect("rsa");
        let ec = PublicKey::from_pem(EC_PUBLIC).expect("ec");
        assert_eq!((rsa.algorithm(), ec.algorithm()), (Algorithm::Rs256, Algorithm::Es256));
        tokens.add_public(app.clone(), rsa_kid.map(str::to_owned), rsa);
        tokens.add_public(app, None, ec);
        tokens
    }

    #[test]
    fn rs256_and_es256_tokens_verify_with_the_apps_public_keys() {
        let shop = AppId::new("shop").expect("app");
        for tokens in [public_tokens(Some("r1")), public_tokens(None)] {
            for token in [RS256_TOKEN, ES256_TOKEN] {
                let verified = tokens.verify(token, "dev1", NOW).expect("valid");
                assert_eq!(verified.app, shop);
                assert_eq!(tokens.verify(token, "dev2", NOW), Err(TokenError::WrongDevice));
                assert_eq!(
                    tokens.verify(token, "dev1", UnixMillis(1_000_000_060_000)),
                    Err(TokenError::Expired)
                );
            }
        }
        // The header's kid names a key the app does not have.
        assert_eq!(public_tokens(Some("r2")).verify(RS256_TOKEN, "dev1", NOW), Err(TokenError::UnknownApp));
        // Without public keys, only HS256 is open.
        assert_eq!(tokens().verify(RS256_TOKEN, "dev1", NOW), Err(TokenError::UnknownApp));
    }

    #[test]
    fn a_public_key_token_cannot_be_forged_or_switch_algorithms() {
        let tokens = public_tokens(None);
        let [header, claims, signature] = RS256_TOKEN.split('.').collect::<Vec<_>>()[..] else {
            unreachable!("three parts")
        };
        let other = URL_SAFE_NO_PAD.encode(r#"{"app":"shop","sub":"dev1","exp":1000009999}"#);
        assert_eq!(
            tokens.verify(&format!("{header}.{other}.{signature}"), "dev1", NOW),
            Err(TokenError::Signature)
        );
        // The ES256 signature under an RS256 header is tried with RSA keys only.
        let es_signature = ES256_TOKEN.rsplit('.').next().expect("signature");
        assert_eq!(
            tokens.verify(&format!("{header}.{claims}.{es_signature}"), "dev1", NOW),
            Err(TokenError::Signature)
        );
        // HS256 signed with the public key as the secret: the app has no secret.
        let hs = sign(HS256, r#"{"app":"shop","sub":"dev1","exp":1000000060}"#, RSA_PUBLIC.as_bytes());
        assert_eq!(tokens.verify(&hs, "dev1", NOW), Err(TokenError::UnknownApp));
    }

    #[test]
    fn only_rsa_and_p256_keys_are_taken() {
        let refused = PublicKey::from_pem(EC_P384_PUBLIC).expect_err("P-384");
        assert!(refused.contains("P-256"), "{refused}");
    }
}
