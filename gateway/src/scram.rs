//! SCRAM-SHA-256 (RFC 5802 with the SHA-256 hash of RFC 7677), sans-IO:
//! the server's two steps, the stored secret, and a client for tests and
//! load generators.
//!
//! ```text
//! client-first  n,,n=alice,r=<client nonce>                 (CONNECT / AUTH 0x19)
//! server-first  r=<client nonce><server nonce>,s=<salt>,i=4096   (AUTH 0x18)
//! client-final  c=biws,r=<both nonces>,p=<proof>            (AUTH 0x18)
//! server-final  v=<server signature>                        (CONNACK / AUTH 0x00)
//! ```
//!
//! The server keeps only `StoredKey` and `ServerKey`, never the password. A
//! user name it does not know gets a made-up salt and fails at the proof,
//! so the exchange does not tell which names exist.
//!
//! Not supported: channel binding (`p=` in the GS2 header fails), and
//! SASLprep of user names and passwords (names are compared as sent).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The method name, as carried in the Authentication Method property.
pub const METHOD: &str = "SCRAM-SHA-256";
/// Iterations of new secrets (RFC 7677's minimum).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Fewest iterations a stored secret may have.
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations a stored secret may have (bounds the server's work when
/// checking a plain password against it).
pub const MAX_ITERATIONS: u32 = 1_000_000;

type HmacSha256 = hmac::Hmac<Sha256>;
type Key = [u8; 32];

/// Why an exchange failed. The text is safe to send to the client as a
/// reason string: it never says whether the user exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message that does not follow RFC 5802's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which this server does not offer.
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    /// The nonce, the GS2 header or the proof does not match.
    #[error("SCRAM authentication failed")]
    Failed,
}

/// What the server stores for a user: enough to check a proof, not enough
/// to produce one.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Key,
    server_key: Key,
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramSecret").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl ScramSecret {
    /// Derives the secret of `password` with `salt` and `iterations`.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramSecret {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Derives the secret of `password` with a fresh random 16-byte salt.
    pub fn generate(password: &[u8], iterations: u32) -> ScramSecret {
        ScramSecret::derive(password, &random_bytes::<16>(), iterations)
    }

    /// Parses the text form `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
    /// (base64 fields), the form PostgreSQL also uses.
    pub fn parse(text: &str) -> Result<ScramSecret, String> {
        let bad = |what: &str| {
            format!(
                "not a SCRAM-SHA-256 secret ({what}); expected {METHOD}$<iterations>:<salt>$<StoredKey>:<ServerKey>"
            )
        };
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(|| bad("prefix"))?;
        let (parameters, keys) = rest.split_once('$').ok_or_else(|| bad("no '$'"))?;
        let (iterations, salt) = parameters.split_once(':').ok_or_else(|| bad("no iterations"))?;
        let (stored, server) = keys.split_once(':').ok_or_else(|| bad("no ServerKey"))?;
        let iterations: u32 = iterations.parse().map_err(|_| bad("iterations"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "SCRAM iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}, not {iterations}"
            ));
        }
        let salt = BASE64.decode(salt).map_err(|_| bad("salt"))?;
        let key = |field: &str, what| -> Result<Key, String> {
            BASE64.decode(field).ok().and_then(|k| k.try_into().ok()).ok_or_else(|| bad(what))
        };
        Ok(ScramSecret {
            salt,
            iterations,
            stored_key: key(stored, "StoredKey")?,
            server_key: key(server, "ServerKey")?,
        })
    }

    /// Returns the text form [`ScramSecret::parse`] reads.
    pub fn encode(&self) -> String {
        format!(
            "{METHOD}${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// Whether `password` is the one this secret was derived from (for
    /// clients that send a plain password in CONNECT). Costs `iterations`
    /// HMACs.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let derived = ScramSecret::derive(password, &self.salt, self.iterations);
        constant_time_eq(&derived.stored_key, &self.stored_key)
    }
}

/// A server exchange after the client-first message: what it must check
/// in the client-final one.
#[derive(Debug)]
pub struct ServerFirst {
    /// The user name the client sent (decoded).
    pub username: String,
    /// The server-first message to send.
    pub message: String,
    gs2_header: String,
    nonce: String,
    auth_message_prefix: String,
    secret: Option<ScramSecret>,
}

/// Handles a client-first message. `lookup` returns the user's secret, if
/// the user exists; `fake_salt` is used when it does not, so the reply
/// looks the same. `server_nonce` must be fresh and random (see
/// [`new_nonce`]).
pub fn server_first(
    client_first: &[u8],
    lookup: impl FnOnce(&str) -> Option<ScramSecret>,
    fake_salt: impl FnOnce(&str) -> Vec<u8>,
    server_nonce: &str,
) -> Result<ServerFirst, ScramError> {
    let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let (flag, rest) = text.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
    let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        flag if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel binding flag")),
    }
    let mut fields = bare.split(',');
    if bare.starts_with("m=") {
        return Err(ScramError::Malformed("mandatory extension"));
    }
    let username = fields
        .next()
        .and_then(|f| f.strip_prefix("n="))
        .ok_or(ScramError::Malformed("no user name"))
        .and_then(decode_name)?;
    let client_nonce =
        fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    if !authzid.is_empty() && decode_name(authzid.strip_prefix("a=").unwrap_or(authzid))? != username {
        return Err(ScramError::Failed);
    }
    let secret = lookup(&username);
    let (salt, iterations) = match &secret {
        Some(secret) => (secret.salt.clone(), secret.iterations),
        None => (fake_salt(&username), DEFAULT_ITERATIONS),
    };
    let nonce = format!("{client_nonce}{server_nonce}");
    let message = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
    Ok(ServerFirst {
        auth_message_prefix: format!("{bare},{message},"),
        gs2_header: format!("{flag},{authzid},"),
        username,
        message,
        nonce,
        secret,
    })
}

impl ServerFirst {
    /// Checks the client-final message; returns the server-final message.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let binding =
            fields.next().and_then(|f| f.strip_prefix("c=")).ok_or(ScramError::Malformed("no binding"))?;
        let nonce =
            fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
        let proof: Key = BASE64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("bad proof"))?;
        if BASE64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) || nonce != self.nonce {
            return Err(ScramError::Failed);
        }
        let Some(secret) = self.secret else { return Err(ScramError::Failed) };
        let auth_message = format!("{}{without_proof}", self.auth_message_prefix);
        let client_signature = hmac(&secret.stored_key, auth_message.as_bytes());
        let client_key: Key = std::array::from_fn(|i| proof[i] ^ client_signature[i]);
        let stored: Key = Sha256::digest(client_key).into();
        if !constant_time_eq(&stored, &secret.stored_key) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

/// The client side, for tests and load generators.
#[derive(Debug, Clone)]
pub struct Client {
    bare: String,
    nonce: String,
}

impl Client {
    /// Starts an exchange as `username` with `nonce` (printable, no ',').
    pub fn new(username: &str, nonce: &str) -> Client {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Client { bare: format!("n={name},r={nonce}"), nonce: nonce.to_owned() }
    }

    /// Returns the client-first message.
    pub fn first(&self) -> String {
        format!("n,,{}", self.bare)
    }

    /// Answers the server-first message with `password`; returns the
    /// client-final message and the server-final message to expect.
    pub fn finish(&self, server_first: &[u8], password: &[u8]) -> Result<(String, String), ScramError> {
        let text = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut fields = text.split(',');
        let mut field = |prefix| fields.next().and_then(|f: &str| f.strip_prefix(prefix));
        let nonce = field("r=").ok_or(ScramError::Malformed("no nonce"))?;
        let salt = field("s=").and_then(|s| BASE64.decode(s).ok()).ok_or(ScramError::Malformed("no salt"))?;
        let iterations: u32 =
            field("i=").and_then(|i| i.parse().ok()).ok_or(ScramError::Malformed("no iterations"))?;
        if !nonce.starts_with(&self.nonce) || iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(ScramError::Failed);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.bare);
        let salted = salted_password(password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: Key = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Key = std::array::from_fn(|i| client_key[i] ^ signature[i]);
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", BASE64.encode(proof)),
            format!("v={}", BASE64.encode(server_signature)),
        ))
    }
}

/// Returns a fresh random nonce: 18 bytes, base64 (24 printable characters).
pub fn new_nonce() -> String {
    BASE64.encode(random_bytes::<18>())
}

/// Returns a salt for `username` that stays the same for this `key`, so a
/// name that does not exist gets the same salt every time it is tried.
pub fn fake_salt(key: &[u8; 32], username: &str) -> Vec<u8> {
    hmac(key, username.as_bytes())[..16].to_vec()
}

/// Returns `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::TryRngCore;
    let mut bytes = [0_u8; N];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the operating system's random source works");
    bytes
}

/// `saslname` decoding: `=2C` is ',' and `=3D` is '='; any other '=' is an error.
fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad user name escape")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    Ok(out)
}

/// `Hi()` of RFC 5802: PBKDF2 with HMAC-SHA-256 and one output block.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mac = HmacSha256::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut block = mac.clone();
    block.update(salt);
    block.update(&1_u32.to_be_bytes());
    let mut u: Key = block.finalize().into_bytes().into();
    let mut result = u;
    for _ in 1..iterations {
        let mut next = mac.clone();
        next.update(&u);
        u = next.finalize().into_bytes().into();
        result.iter_mut().zip(u).for_each(|(r, b)| *r ^= b);
    }
    result
}

fn hmac(key: &[u8], data: &[u8]) -> Key {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Compares in time independent of where the inputs first differ.
fn constant_time_eq(a: &Key, b: &Key) -> bool {
    a.iter().zip(b).fold(0_u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example exchange of RFC 7677 §3: user "user", password "pencil".
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn pencil() -> ScramSecret {
        ScramSecret::derive(b"pencil", &BASE64.decode(SALT).expect("base64"), 4096)
    }

    fn first(client_first: &str) -> Result<ServerFirst, ScramError> {
        server_first(
            client_first.as_bytes(),
            |name| (name == "user").then(pencil),
            |_| vec![7; 16],
            SERVER_NONCE,
        )
    }

    #[test]
    fn the_server_reproduces_the_rfc_7677_exchange() {
        let first = first(&format!("n,,n=user,r={CLIENT_NONCE}")).expect("client-first accepted");
        assert_eq!(first.message, SERVER_FIRST);
        assert_eq!(first.username, "user");
        assert_eq!(first.finish(CLIENT_FINAL.as_bytes()), Ok(SERVER_FINAL.to_owned()));
    }

    #[test]
    fn the_client_reproduces_the_rfc_7677_exchange() {
        let client = Client::new("user", CLIENT_NONCE);
        assert_eq!(client.first(), format!("n,,n=user,r={CLIENT_NONCE}"));
        let (last, expected) = client.finish(SERVER_FIRST.as_bytes(), b"pencil").expect("server-first valid");
        assert_eq!((last.as_str(), expected.as_str()), (CLIENT_FINAL, SERVER_FINAL));
    }

    #[test]
    fn a_wrong_password_an_unknown_user_or_a_changed_nonce_fails() {
        let client = Client::new("user", CLIENT_NONCE);
        let (wrong, _) = client.finish(SERVER_FIRST.as_bytes(), b"pencil2").expect("valid");
        assert_eq!(first(&client.first()).expect("valid").finish(wrong.as_bytes()), Err(ScramError::Failed));

        let stranger = Client::new("nobody", CLIENT_NONCE);
        let reply = first(&stranger.first()).expect("an unknown name gets a reply like any other");
        assert!(
            reply.message.starts_with(&format!("r={CLIENT_NONCE}{SERVER_NONCE},s=")),
            "{}",
            reply.message
        );
        let (last, _) = stranger.finish(reply.message.as_bytes(), b"pencil").expect("valid");
        assert_eq!(reply.finish(last.as_bytes()), Err(ScramError::Failed));

        let tampered = CLIENT_FINAL.replace(",r=rOpr", ",r=XOpr");
        assert_eq!(
            first(&client.first()).expect("valid").finish(tampered.as_bytes()),
            Err(ScramError::Failed)
        );
    }

    #[test]
    fn malformed_messages_and_channel_binding_are_refused() {
        for (message, expected) in [
            ("n=user,r=abc", ScramError::Malformed("no GS2 header")),
            ("n,,r=abc", ScramError::Malformed("no user name")),
            ("p=tls-unique,,n=user,r=abc", ScramError::ChannelBinding),
            ("x,,n=user,r=abc", ScramError::Malformed("bad channel binding flag")),
            ("n,,m=ext,n=user,r=abc", ScramError::Malformed("mandatory extension")),
            ("n,,n=us=er,r=abc", ScramError::Malformed("bad user name escape")),
            ("n,,n=user", ScramError::Malformed("no nonce")),
            ("n,,n=user,r=a b", ScramError::Malformed("bad nonce")),
            ("n,a=other,n=user,r=abc", ScramError::Failed),
        ] {
            assert_eq!(first(message).map(|f| f.message), Err(expected), "{message}");
        }
        let started = first(&format!("n,,n=user,r={CLIENT_NONCE}")).expect("valid");
        assert_eq!(started.finish(b"c=biws,r=x"), Err(ScramError::Malformed("no proof")));
    }

    #[test]
    fn escaped_names_are_decoded() {
        let reply = server_first(b"n,,n=a=2Cb=3Dc,r=xyz", |_| None, |_| vec![1; 16], "s").expect("valid");
        assert_eq!(reply.username, "a,b=c");
    }

    #[test]
    fn secrets_round_trip_through_their_text_form_and_check_passwords() {
        let secret = ScramSecret::generate(b"s3cret", DEFAULT_ITERATIONS);
        let text = secret.encode();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        let parsed = ScramSecret::parse(&text).expect("round trip");
        assert_eq!(parsed, secret);
        assert!(parsed.verify_password(b"s3cret"));
        assert!(!parsed.verify_password(b"s3cret!"));
        assert!(ScramSecret::parse("SCRAM-SHA-256$10:AAAA$AAAA:AAAA").is_err(), "too few iterations");
        assert!(ScramSecret::parse("md5$abc").is_err());
    }
}
