//! Public keys that verify RS256 and ES256 device tokens, read from PEM
//! (`-----BEGIN PUBLIC KEY-----`, the SubjectPublicKeyInfo form that
//! `openssl pkey -pubout` prints). Pure: a few lines of DER, then `ring`.

use crate::der::element;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

/// `rsaEncryption` (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// `id-ecPublicKey` (1.2.840.10045.2.1).
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `prime256v1`, alias P-256 (1.2.840.10045.3.1.7).
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A JWT signature algorithm with a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (keys of 2048 to 8192 bits).
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Algorithm {
    /// The name in a JWT header.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }
}

/// A public key and the one algorithm it verifies.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: Algorithm,
    /// RSA: the PKCS#1 `RSAPublicKey`; EC: the uncompressed point.
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("algorithm", &self.algorithm).finish()
    }
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` holding an RSA or a P-256 key.
    pub fn from_pem(pem: &str) -> Result<PublicKey, String> {
        let body = pem
            .trim()
            .strip_prefix("-----BEGIN PUBLIC KEY-----")
            .and_then(|rest| rest.trim_end().strip_suffix("-----END PUBLIC KEY-----"))
            .ok_or("not a PEM public key (-----BEGIN PUBLIC KEY-----, as `openssl pkey -pubout` prints)")?;
        let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(base64).map_err(|_| "the PEM body is not base64")?;
        PublicKey::from_spki(&der)
    }

    /// Reads a DER SubjectPublicKeyInfo.
    fn from_spki(der: &[u8]) -> Result<PublicKey, String> {
        const SEQUENCE: u8 = 0x30;
        const OID: u8 = 0x06;
        const BIT_STRING: u8 = 0x03;
        let malformed = || "malformed SubjectPublicKeyInfo".to_owned();
        let (info, rest) = element(der, SEQUENCE).ok_or_else(malformed)?;
        if !rest.is_empty() {
            return Err(malformed());
        }
        let (algorithm, info) = element(info, SEQUENCE).ok_or_else(malformed)?;
        let (key, rest) = element(info, BIT_STRING).ok_or_else(malformed)?;
        let (oid, parameters) = element(algorithm, OID).ok_or_else(malformed)?;
        // A bit string of whole bytes starts with 0 unused bits.
        let bytes = match key.split_first() {
            Some((0, bytes)) if rest.is_empty() => bytes.to_vec(),
            _ => return Err(malformed()),
        };
        let algorithm = if oid == RSA_ENCRYPTION {
            Algorithm::Rs256
        } else if oid == EC_PUBLIC_KEY {
            match element(parameters, OID) {
                Some((curve, [])) if curve == P256 => Algorithm::Es256,
                _ => return Err("only P-256 EC keys are supported (ES256)".to_owned()),
            }
        } else {
            return Err("only RSA (RS256) and P-256 EC (ES256) keys are supported".to_owned());
        };
        if algorithm == Algorithm::Es256 && (bytes.len() != 65 || bytes[0] != 4) {
            return Err("the EC key is not an uncompressed P-256 point".to_owned());
        }
        Ok(PublicKey { algorithm, bytes })
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether `signature` signs `message` under this key (ES256: the JWT
    /// form, `r ‖ s`, 64 bytes).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::Rs256 => &RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Es256 => &ECDSA_P256_SHA256_FIXED,
        };
        UnparsedPublicKey::new(algorithm, &self.bytes).verify(message, signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_reason_and_never_panics() {
        assert!(PublicKey::from_pem("hello").is_err());
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----").is_err());
        for len in 0..40 {
            let der: Vec<u8> = (0..len).map(|i| [0x30, 0x82, 0xff, 0x06, 0x03, 0x00][i % 6]).collect();
            assert!(PublicKey::from_spki(&der).is_err(), "{der:?}");
        }
    }
}
