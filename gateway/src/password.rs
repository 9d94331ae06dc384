//! Device passwords as kept (ADR 0026): a salted hash made here, from the
//! password the admin API was given, and checked here against the password
//! a device presents. Neither the router nor Redis ever holds a password.

use herald_proto::users::{HashAlgorithm, MAX_PBKDF2_ITERATIONS, PasswordHash, SaltPosition};
use ring::{digest, pbkdf2};
use std::num::NonZeroU32;

/// PBKDF2 iterations of a password hashed without a count given.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 10_000;
/// Bytes of random salt in a hash made here.
const SALT_BYTES: usize = 16;

/// Hashes `password` with a fresh random salt.
pub fn hash(algorithm: HashAlgorithm, password: &[u8], iterations: u32) -> Option<PasswordHash> {
    let salt = crate::scram::random_bytes::<SALT_BYTES>().to_vec();
    let iterations = iterations_of(algorithm, iterations);
    // Checked before deriving: a count past the bound is that much work.
    if algorithm == HashAlgorithm::Pbkdf2Sha256 && !(1..=MAX_PBKDF2_ITERATIONS).contains(&iterations) {
        return None;
    }
    let salt_position = SaltPosition::Prefix;
    let mut hash = PasswordHash { algorithm, salt_position, iterations, salt, hash: Vec::new() };
    hash.hash = derive(&hash, password, 32)?;
    Some(hash)
}

/// Whether `password` is the one `kept` was made from (compared in time
/// independent of where the hashes differ).
pub fn verify(kept: &PasswordHash, password: &[u8]) -> bool {
    if !kept.is_well_formed() {
        return false;
    }
    match kept.algorithm {
        HashAlgorithm::Pbkdf2Sha256 => {
            let Some(iterations) = NonZeroU32::new(kept.iterations) else { return false };
            pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &kept.salt, password, &kept.hash).is_ok()
        }
        HashAlgorithm::Sha256 | HashAlgorithm::Sha512 => derive(kept, password, kept.hash.len())
            .is_some_and(|derived| crate::auth::same_secret(&derived, &kept.hash)),
    }
}

/// The hash of `password` with `kept`'s algorithm, salt and count.
fn derive(kept: &PasswordHash, password: &[u8], length: usize) -> Option<Vec<u8>> {
    let sha = |algorithm: &'static digest::Algorithm| {
        let mut context = digest::Context::new(algorithm);
        match kept.salt_position {
            SaltPosition::Prefix => {
                context.update(&kept.salt);
                context.update(password);
            }
            SaltPosition::Suffix => {
                context.update(password);
                context.update(&kept.salt);
            }
        }
        context.finish().as_ref().to_vec()
    };
    Some(match kept.algorithm {
        HashAlgorithm::Sha256 => sha(&digest::SHA256),
        HashAlgorithm::Sha512 => sha(&digest::SHA512),
        HashAlgorithm::Pbkdf2Sha256 => {
            let iterations = NonZeroU32::new(kept.iterations)?;
            let mut out = vec![0; length];
            pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &kept.salt, password, &mut out);
            out
        }
    })
}

/// The text form of a hash made here, for `password_hash = "…"` under
/// `[auth.users.NAME]`: `sha256$SALT$HASH`, `sha512$SALT$HASH` or
/// `pbkdf2$ITERATIONS$SALT$HASH`, salt and hash in hex (the salt before the
/// password).
pub fn encode(kept: &PasswordHash) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match kept.algorithm {
        HashAlgorithm::Pbkdf2Sha256 => {
            format!("pbkdf2${}${}${}", kept.iterations, hex(&kept.salt), hex(&kept.hash))
        }
        algorithm => format!("{}${}${}", algorithm.name(), hex(&kept.salt), hex(&kept.hash)),
    }
}

/// Reads what [`encode`] wrote.
pub fn parse(text: &str) -> Result<PasswordHash, String> {
    const FORM: &str = "expected sha256$SALT$HASH, sha512$SALT$HASH or pbkdf2$ITERATIONS$SALT$HASH (hex)";
    let parts: Vec<&str> = text.trim().split('$').collect();
    let (algorithm, iterations, salt, hash) = match parts.as_slice() {
        ["pbkdf2", iterations, salt, hash] => {
            (HashAlgorithm::Pbkdf2Sha256, iterations.parse().map_err(|_| FORM.to_owned())?, *salt, *hash)
        }
        [name, salt, hash] if *name != "pbkdf2" => {
            (HashAlgorithm::from_name(name).ok_or_else(|| FORM.to_owned())?, 0, *salt, *hash)
        }
        _ => return Err(FORM.to_owned()),
    };
    let salt = decode_hex(salt).ok_or_else(|| "the salt is not hex".to_owned())?;
    from_hex(algorithm, SaltPosition::Prefix, iterations, hash, &salt)
        .ok_or_else(|| "the hash does not fit its algorithm (length, iterations 1 to 1000000)".to_owned())
}

/// A hash kept in EMQX's layout: hex digits of the hash, and the salt as
/// text (empty: none).
pub fn from_hex(
    algorithm: HashAlgorithm,
    salt_position: SaltPosition,
    iterations: u32,
    hash_hex: &str,
    salt: &[u8],
) -> Option<PasswordHash> {
    let hash = decode_hex(hash_hex.trim())?;
    let iterations = iterations_of(algorithm, iterations);
    let kept = PasswordHash { algorithm, salt_position, iterations, salt: salt.to_vec(), hash };
    kept.is_well_formed().then_some(kept)
}

/// The iteration count a hash of `algorithm` keeps: `iterations` for
/// PBKDF2, none for the SHA algorithms.
fn iterations_of(algorithm: HashAlgorithm, iterations: u32) -> u32 {
    if algorithm == HashAlgorithm::Pbkdf2Sha256 { iterations } else { 0 }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    text.as_bytes().chunks(2).map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hashes_made_here_check_their_password_only() {
        for (algorithm, iterations) in
            [(HashAlgorithm::Sha256, 0), (HashAlgorithm::Sha512, 0), (HashAlgorithm::Pbkdf2Sha256, 1000)]
        {
            let kept = hash(algorithm, b"s3cret", iterations).expect("hashed");
            assert!(kept.is_well_formed(), "{algorithm:?}");
            assert!(verify(&kept, b"s3cret"), "{algorithm:?}");
            for wrong in [&b"s3cret "[..], b"S3cret", b""] {
                assert!(!verify(&kept, wrong), "{algorithm:?}");
            }
            let again = hash(algorithm, b"s3cret", iterations).expect("hashed");
            assert_ne!((&kept.salt, &kept.hash), (&again.salt, &again.hash), "a fresh salt each time");
        }
        assert!(hash(HashAlgorithm::Pbkdf2Sha256, b"x", 0).is_none());
        assert!(hash(HashAlgorithm::Pbkdf2Sha256, b"x", MAX_PBKDF2_ITERATIONS + 1).is_none());
    }

    #[test]
    fn emqx_hashes_check_against_known_values() {
        // EMQX keeps hex(sha256(salt ‖ password)) with a prefix salt.
        let computed = hex(digest::digest(&digest::SHA256, b"saltpublic").as_ref());
        let kept =
            from_hex(HashAlgorithm::Sha256, SaltPosition::Prefix, 0, &computed, b"salt").expect("kept");
        assert!(verify(&kept, b"public"));
        assert!(!verify(&kept, b"salt"));
        let suffix =
            from_hex(HashAlgorithm::Sha256, SaltPosition::Suffix, 0, &computed, b"salt").expect("kept");
        assert!(!verify(&suffix, b"public"), "the salt's position matters");
        let suffixed = hex(digest::digest(&digest::SHA512, b"publicsalt").as_ref());
        let kept =
            from_hex(HashAlgorithm::Sha512, SaltPosition::Suffix, 0, &suffixed, b"salt").expect("kept");
        assert!(verify(&kept, b"public"));
        // RFC 7914 §11's PBKDF2-HMAC-SHA256 vector: "passwd", "salt", 1 iteration.
        let rfc = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc\
                   49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783";
        let kept =
            from_hex(HashAlgorithm::Pbkdf2Sha256, SaltPosition::Prefix, 1, rfc, b"salt").expect("kept");
        assert!(verify(&kept, b"passwd"));
        assert!(!verify(&kept, b"passwd!"));
    }

    #[test]
    fn the_text_form_round_trips_and_refuses_what_it_does_not_know() {
        for (algorithm, iterations) in
            [(HashAlgorithm::Sha256, 0), (HashAlgorithm::Sha512, 0), (HashAlgorithm::Pbkdf2Sha256, 1000)]
        {
            let kept = hash(algorithm, b"s3cret", iterations).expect("hashed");
            let text = encode(&kept);
            assert_eq!(parse(&text), Ok(kept.clone()), "{text}");
            assert!(!text.contains("s3cret"));
        }
        for bad in ["", "md5$00$00", "sha256$zz$00", "sha256$00$0000", "pbkdf2$0$00$", "pbkdf2$x$00$00"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_kept_hashes_check_nothing() {
        for bad in ["", "abc", "zz", &"0".repeat(63)] {
            assert!(from_hex(HashAlgorithm::Sha256, SaltPosition::Prefix, 0, bad, b"").is_none(), "{bad:?}");
        }
        let short = PasswordHash {
            algorithm: HashAlgorithm::Sha256,
            salt_position: SaltPosition::Prefix,
            iterations: 0,
            salt: Vec::new(),
            hash: vec![0; 8],
        };
        assert!(!verify(&short, b""));
    }
}
