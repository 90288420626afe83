//! Passwords: the policy a new one must meet, argon2id hashing and
//! verification (PHC strings), and operator passwords from the configuration.
//!
//! # Parameters
//!
//! New hashes use **argon2id, m = 19 MiB (19,456 KiB), t = 2, p = 1**, a 16-byte
//! random salt and a 32-byte output: the first of OWASP's recommended argon2id
//! configurations, and the `argon2` crate's default. Memory is what makes
//! guessing on GPUs and ASICs costly, and 19 MiB per hash in flight keeps a
//! handful of concurrent logins affordable on a small server; one lane because
//! a shard's helper thread runs one hash at a time anyway.
//!
//! Measured with `examples/auth_bench.rs` (release build, this project's 2-core
//! VM while other builds loaded it): **a hash takes about 45 ms and a
//! verification about 55 ms of one core** (medians; 33 to 79 ms over 20 runs
//! each), see [`HASH_COST_NOTE`]. An idle core should do better; the figure
//! to plan with is "tens of milliseconds".
//!
//! # Off the event loop
//!
//! A hash or a verification takes tens of milliseconds of CPU and 19 MiB: a
//! shard's loop must not run one inline, or every client of the shard waits
//! that long (50 ms is ten times the store's whole sync interval). [`hash_password`] and [`verify_password`] are plain blocking
//! functions; [`VerifyJob`] and [`HashJob`] hold everything they need by value
//! (`Send + 'static`), so the chat can move one to a helper thread (a small
//! pool, one or two threads, with a bounded queue: refuse with 904 /
//! `TEMPORARILY_UNAVAILABLE` when it is full rather than queueing without
//! bound) and post the result back into the shard through a `Remote`, the
//! same way the store's writer reports. The SASL machine ([`super::sasl`])
//! is built for that: it asks for a verification and takes the answer later.
//!
//! Verification refuses stored hashes whose parameters exceed
//! [`MAX_M_COST_KIB`], [`MAX_T_COST`] or [`MAX_P_COST`], so a corrupt or
//! hostile record cannot make a verification allocate gigabytes.
//!
//! Passwords are held in [`Password`], which wipes its bytes when dropped and
//! never prints them.

use std::fmt;

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The measured cost of one hash with [`ARGON2_PARAMS`] (kept in sync with
/// `examples/auth_bench.rs`).
pub const HASH_COST_NOTE: &str = "argon2id m=19456 KiB t=2 p=1, one core: hash median 45 ms \
     (33 to 63 ms), verification median 56 ms (38 to 79 ms), 20 rounds each, release \
     build on a 2-core VM at load 2.6 to 3.9 from other builds; 19 MiB of memory while it runs";

/// Memory cost of new hashes, KiB (19 MiB).
pub const ARGON2_M_COST_KIB: u32 = 19 * 1024;
/// Time cost (passes) of new hashes.
pub const ARGON2_T_COST: u32 = 2;
/// Lanes of new hashes.
pub const ARGON2_P_COST: u32 = 1;
/// Salt bytes of new hashes.
pub const SALT_LEN: usize = 16;

/// The most memory a stored hash may ask for when verified, KiB (256 MiB).
pub const MAX_M_COST_KIB: u32 = 256 * 1024;
/// The most passes a stored hash may ask for when verified.
pub const MAX_T_COST: u32 = 16;
/// The most lanes a stored hash may ask for when verified.
pub const MAX_P_COST: u32 = 8;

/// The parameters of new hashes.
pub fn argon2_params() -> Params {
    // Within argon2's bounds by construction; a failure would be a bug here.
    Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, Some(32))
        .unwrap_or(Params::DEFAULT)
}

/// The parameters of new hashes, for display.
pub const ARGON2_PARAMS: &str = "argon2id v=19 m=19456 t=2 p=1";

/// A password (or any secret) in memory: wiped on drop, never shown by
/// `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Takes `bytes` as the secret.
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Password {
        Password::new(bytes.to_vec())
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Password {
        Password::from_slice(s.as_bytes())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// What a new password must be: its length in bytes, and no NUL, CR or LF
/// (which no IRC line or SASL PLAIN payload could carry intact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest bytes.
    pub min_len: usize,
    /// Most bytes. 300 by default: the account-registration spec's advice, so
    /// a password fits in any command that may carry it.
    pub max_len: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_len: 8,
            max_len: 300,
        }
    }
}

/// Why a password breaks the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Shorter than the minimum.
    #[error("password must be at least {min} bytes long")]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// Longer than the maximum.
    #[error("password must be at most {max} bytes long")]
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// Holds a NUL, CR or LF.
    #[error("password must not contain NUL, CR or LF")]
    ForbiddenByte,
}

impl PolicyError {
    /// Whether this is about strength (`WEAK_PASSWORD`) rather than form
    /// (`UNACCEPTABLE_PASSWORD`).
    pub fn is_weak(&self) -> bool {
        matches!(self, PolicyError::TooShort { .. })
    }
}

impl PasswordPolicy {
    /// Checks a new password.
    pub fn check(&self, password: &[u8]) -> Result<(), PolicyError> {
        if password.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err(PolicyError::ForbiddenByte);
        }
        if password.len() < self.min_len {
            return Err(PolicyError::TooShort { min: self.min_len });
        }
        if password.len() > self.max_len {
            return Err(PolicyError::TooLong { max: self.max_len });
        }
        Ok(())
    }
}

/// Why a hash could not be made or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The stored value is not an argon2 PHC string this server accepts.
    #[error("not a usable argon2 password hash: {0}")]
    BadHash(String),
    /// The stored hash asks for more memory, passes or lanes than allowed.
    #[error("password hash parameters over the limit ({0})")]
    TooCostly(String),
    /// No random bytes (the OS refused).
    #[error("no random bytes for a salt")]
    Random,
    /// argon2 failed (never expected with valid parameters).
    #[error("argon2: {0}")]
    Argon2(String),
}

/// Fills `buf` from the OS's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), HashError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| HashError::Random)
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with the current parameters and a random salt: a PHC
/// string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). Blocks for the
/// whole hash (see [`HASH_COST_NOTE`]): not on a shard's loop.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    hash_password_with(password, argon2_params())
}

/// [`hash_password`] with other parameters (tests use cheap ones).
pub fn hash_password_with(password: &[u8], params: Params) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_LEN];
    random_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    argon2id(params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

/// Parses a stored PHC string, refusing anything but argon2 (`argon2id`,
/// `argon2i`, `argon2d`) within the cost limits.
fn parse_stored(phc: &str) -> Result<PasswordHash<'_>, HashError> {
    let hash = PasswordHash::new(phc).map_err(|e| HashError::BadHash(e.to_string()))?;
    if Algorithm::new(hash.algorithm.as_str()).is_err() {
        return Err(HashError::BadHash(format!(
            "algorithm {} is not argon2",
            hash.algorithm
        )));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(HashError::BadHash("no salt or no hash".into()));
    }
    let params = Params::try_from(&hash).map_err(|e| HashError::BadHash(e.to_string()))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(HashError::TooCostly(format!(
            "m={} t={} p={}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        )));
    }
    Ok(hash)
}

/// Checks that `phc` is a hash [`verify_password`] would accept, without
/// hashing anything (cheap: for checking a configuration at load).
pub fn check_hash(phc: &str) -> Result<(), HashError> {
    parse_stored(phc).map(|_| ())
}

/// Whether `password` matches the stored PHC string `phc`. `Ok(false)` for a
/// wrong password; `Err` if `phc` is not a usable argon2 hash. Takes as long
/// as a hash with the stored parameters (see [`HASH_COST_NOTE`]): not on a
/// shard's loop. The comparison of the outputs is constant-time.
pub fn verify_password(password: &[u8], phc: &str) -> Result<bool, HashError> {
    let hash = parse_stored(phc)?;
    // verify_password uses the algorithm, version and parameters in the hash.
    match Argon2::default().verify_password(password, &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(HashError::Argon2(e.to_string())),
    }
}

/// Whether a stored hash was made with other parameters than the current
/// ones (the chat may rehash at the next successful login). `false` for a
/// hash it cannot read.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    hash.algorithm.as_str() != "argon2id"
        || hash.version != Some(19)
        || params.m_cost() != ARGON2_M_COST_KIB
        || params.t_cost() != ARGON2_T_COST
        || params.p_cost() != ARGON2_P_COST
}

/// A verification with everything it needs, to run on a helper thread:
/// `job.run()` there, then post the answer back to the shard.
#[derive(Clone)]
pub struct VerifyJob {
    /// The password given.
    pub password: Password,
    /// The stored PHC string.
    pub phc: String,
}

impl VerifyJob {
    /// Runs [`verify_password`]. Blocks.
    pub fn run(self) -> Result<bool, HashError> {
        verify_password(self.password.as_bytes(), &self.phc)
    }
}

impl fmt::Debug for VerifyJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyJob")
            .field("password", &self.password)
            .field("phc", &"<redacted>")
            .finish()
    }
}

/// A hash to make (a registration, a password change), to run on a helper
/// thread.
#[derive(Clone, Debug)]
pub struct HashJob {
    /// The new password.
    pub password: Password,
}

impl HashJob {
    /// Runs [`hash_password`]. Blocks.
    pub fn run(self) -> Result<String, HashError> {
        hash_password(self.password.as_bytes())
    }
}

/// An operator password from the configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum OperPassword {
    /// An argon2 PHC string (a value starting with `$argon2`), checked at load.
    Hash(String),
    /// Plaintext: accepted, but the chat should warn that it is stored in the
    /// clear (see [`OperPassword::is_plaintext`]).
    Plain(Password),
}

impl OperPassword {
    /// Reads a configured value: one starting with `$argon2` is a hash (and
    /// must be a valid one within the cost limits), anything else plaintext.
    pub fn parse(value: &str) -> Result<OperPassword, HashError> {
        if value.starts_with("$argon2") {
            check_hash(value)?;
            Ok(OperPassword::Hash(value.to_string()))
        } else {
            Ok(OperPassword::Plain(Password::from(value)))
        }
    }

    /// Whether the configuration holds this password in the clear (warn).
    pub fn is_plaintext(&self) -> bool {
        matches!(self, OperPassword::Plain(_))
    }

    /// Whether `given` is the password. For a hash this blocks like
    /// [`verify_password`] (tens of ms): the chat should run it off the loop,
    /// or accept that cost for the rare OPER. Plaintext is compared in
    /// constant time.
    pub fn verify(&self, given: &[u8]) -> bool {
        match self {
            OperPassword::Hash(phc) => verify_password(given, phc).unwrap_or(false),
            OperPassword::Plain(p) => constant_time_eq(p.as_bytes(), given),
        }
    }
}

impl fmt::Debug for OperPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperPassword::Hash(_) => f.write_str("OperPassword::Hash(<redacted>)"),
            OperPassword::Plain(_) => f.write_str("OperPassword::Plain(<redacted>)"),
        }
    }
}

#[cfg(test)]
pub(crate) fn cheap_params() -> Params {
    // The smallest argon2 allows: tests stay fast; the code path is the same.
    Params::new(8, 1, 1, Some(32)).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify_round_trip() {
        let phc = hash_password_with(b"correct horse", cheap_params()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert_eq!(verify_password(b"correct horse", &phc), Ok(true));
        assert_eq!(verify_password(b"correct horsf", &phc), Ok(false));
        assert_eq!(verify_password(b"", &phc), Ok(false));
        // Two hashes of one password differ (random salt).
        let again = hash_password_with(b"correct horse", cheap_params()).unwrap();
        assert_ne!(phc, again);
    }

    #[test]
    fn default_parameters_are_the_documented_ones() {
        let p = argon2_params();
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (19456, 2, 1));
        assert!(HASH_COST_NOTE.contains("m=19456 KiB t=2 p=1"));
        assert!(ARGON2_PARAMS.contains("m=19456 t=2 p=1"));
    }

    #[test]
    fn known_argon2id_vector_verifies() {
        // Made by the reference implementation's CLI (Debian's `argon2`):
        // echo -n "correct horse" | argon2 saltsaltsalt -id -t 2 -m 14 -p 1 -e
        let phc = "$argon2id$v=19$m=16384,t=2,p=1$c2FsdHNhbHRzYWx0$aKYGoKS5Dl1OzlEn1ZIXi7M2XGdxu5fG6AtewZsq6nE";
        assert_eq!(verify_password(b"correct horse", phc), Ok(true));
        assert_eq!(verify_password(b"correct horsE", phc), Ok(false));
        assert!(needs_rehash(phc));
    }

    #[test]
    fn bad_and_costly_hashes_are_refused() {
        assert!(matches!(
            verify_password(b"x", "plaintext"),
            Err(HashError::BadHash(_))
        ));
        assert!(matches!(
            verify_password(b"x", "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA"),
            Err(HashError::BadHash(_))
        ));
        assert!(matches!(
            verify_password(b"x", "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ"),
            Err(HashError::BadHash(_))
        ));
        // 4 GiB of memory: refused before any allocation.
        let costly = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert!(matches!(
            verify_password(b"x", costly),
            Err(HashError::TooCostly(_))
        ));
        let many_passes = "$argon2id$v=19$m=64,t=1000,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert!(matches!(
            verify_password(b"x", many_passes),
            Err(HashError::TooCostly(_))
        ));
        assert!(!needs_rehash("garbage"));
    }

    #[test]
    fn policy_lengths_and_bytes() {
        let p = PasswordPolicy::default();
        assert_eq!(p.check(b"12345678"), Ok(()));
        assert_eq!(p.check(b"1234567"), Err(PolicyError::TooShort { min: 8 }));
        assert!(p.check(b"1234567").unwrap_err().is_weak());
        assert_eq!(p.check(&[b'a'; 300]), Ok(()));
        assert_eq!(
            p.check(&[b'a'; 301]),
            Err(PolicyError::TooLong { max: 300 })
        );
        assert!(!p.check(&[b'a'; 301]).unwrap_err().is_weak());
        for bad in [&b"abcd\0efgh"[..], b"abcd\refgh", b"abcd\nefgh", b"\0"] {
            assert_eq!(p.check(bad), Err(PolicyError::ForbiddenByte));
        }
        // Bytes, not characters: 4 two-byte characters are 8 bytes.
        assert_eq!(p.check("éééé".as_bytes()), Ok(()));
    }

    #[test]
    fn oper_passwords_hash_or_plaintext() {
        let plain = OperPassword::parse("s3cret").unwrap();
        assert!(plain.is_plaintext());
        assert!(plain.verify(b"s3cret"));
        assert!(!plain.verify(b"s3cre"));
        assert!(!plain.verify(b"s3cret "));

        let phc = hash_password_with(b"s3cret", cheap_params()).unwrap();
        let hashed = OperPassword::parse(&phc).unwrap();
        assert!(!hashed.is_plaintext());
        assert!(hashed.verify(b"s3cret"));
        assert!(!hashed.verify(b"s3cret2"));

        // A value that claims to be a hash but is not one is an error, not
        // a plaintext password.
        assert!(OperPassword::parse("$argon2id$nonsense").is_err());
        // Other values starting with `$` are plaintext.
        assert!(OperPassword::parse("$ecret").unwrap().is_plaintext());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let p = Password::from("hunter2");
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        let job = VerifyJob {
            password: p.clone(),
            phc: "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        };
        let shown = format!("{job:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("c29tZXNhbHQ"),
            "{shown}"
        );
        let hash = HashJob { password: p };
        assert!(!format!("{hash:?}").contains("hunter2"));
        let oper = OperPassword::parse("hunter2").unwrap();
        assert!(!format!("{oper:?}").contains("hunter2"));
    }

    #[test]
    fn jobs_run_off_thread() {
        let phc = hash_password_with(b"pw", cheap_params()).unwrap();
        let job = VerifyJob {
            password: Password::from("pw"),
            phc,
        };
        let answer = std::thread::spawn(move || job.run()).join().unwrap();
        assert_eq!(answer, Ok(true));
    }

    #[test]
    fn constant_time_eq_matches_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
