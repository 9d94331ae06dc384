//! Device users kept by the router (ADR 0026): a user name, the app its
//! sessions belong to, and a salted hash of its password. The password
//! itself never reaches the router: the gateway that takes it from the
//! admin API hashes it, and the gateway a device connects to checks it.

use herald_core::{AppId, UnixMillis};

/// Device users per app at most; past it a new one is refused (policy:
/// refuse newest). About 200 bytes of router memory each.
pub const MAX_DEVICE_USERS_PER_APP: usize = 10_000_000;
/// Most users one list request returns.
pub const MAX_USERS_PER_PAGE: u32 = 1000;
/// Longest user name, in bytes (the MQTT field allows 65,535; names longer
/// than this are not names).
pub const MAX_USERNAME_BYTES: usize = 256;
/// Longest salt or hash kept, in bytes.
pub const MAX_HASH_PART_BYTES: usize = 256;
/// Most PBKDF2 iterations a hash may ask for: each check of a password
/// costs that many HMACs on the gateway.
pub const MAX_PBKDF2_ITERATIONS: u32 = 1_000_000;

/// How a password was hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// One SHA-256 over the salt and the password: for generated device
    /// secrets, which are too long to guess.
    Sha256,
    /// One SHA-512 over the salt and the password.
    Sha512,
    /// PBKDF2 with HMAC-SHA256 (RFC 8018): for passwords people chose.
    Pbkdf2Sha256,
}

impl HashAlgorithm {
    /// Its name in configuration and in the admin API.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha512 => "sha512",
            HashAlgorithm::Pbkdf2Sha256 => "pbkdf2",
        }
    }

    /// The algorithm named `name`.
    pub fn from_name(name: &str) -> Option<HashAlgorithm> {
        [HashAlgorithm::Sha256, HashAlgorithm::Sha512, HashAlgorithm::Pbkdf2Sha256]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// Where the salt goes relative to the password before a SHA hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaltPosition {
    /// `hash(salt ‖ password)`.
    Prefix,
    /// `hash(password ‖ salt)`.
    Suffix,
}

/// A password as kept: never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    /// How it was hashed.
    pub algorithm: HashAlgorithm,
    /// Where the salt goes (SHA algorithms only).
    pub salt_position: SaltPosition,
    /// PBKDF2's iteration count (0 for the SHA algorithms).
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// The hash.
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordHash({}, ..)", self.algorithm.name())
    }
}

impl PasswordHash {
    /// Whether the parts are within bounds and fit the algorithm.
    pub fn is_well_formed(&self) -> bool {
        let length_fits = match self.algorithm {
            HashAlgorithm::Sha256 => self.hash.len() == 32,
            HashAlgorithm::Sha512 => self.hash.len() == 64,
            HashAlgorithm::Pbkdf2Sha256 => {
                (16..=MAX_HASH_PART_BYTES).contains(&self.hash.len())
                    && (1..=MAX_PBKDF2_ITERATIONS).contains(&self.iterations)
            }
        };
        length_fits && self.salt.len() <= MAX_HASH_PART_BYTES
    }
}

/// A device user as the router keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUser {
    /// The app its sessions belong to.
    pub app: AppId,
    /// The user name (unique across apps).
    pub username: String,
    /// Its password's hash.
    pub password: PasswordHash,
    /// When it was set.
    pub updated_at: UnixMillis,
}

/// Whether `name` can be a device user's name: 1 to
/// [`MAX_USERNAME_BYTES`] bytes without control characters.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_USERNAME_BYTES && !name.chars().any(char::is_control)
}

/// A request on the device users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserOp {
    /// Sets a user of the request's app (creating it or replacing its
    /// password). Refused when another app has the name.
    Put(Box<DeviceUser>),
    /// Removes a user of the request's app.
    Remove {
        /// The user name.
        username: String,
    },
    /// Reads a user of the request's app.
    Get {
        /// The user name.
        username: String,
    },
    /// Lists the request's app's users in name order, after `after`.
    List {
        /// Where the previous page ended.
        after: Option<String>,
        /// Most users to return (at most [`MAX_USERS_PER_PAGE`]).
        limit: u32,
    },
    /// Finds a user in any app: a device connecting names no app, so the
    /// request's app is not consulted.
    Find {
        /// The user name.
        username: String,
    },
}
