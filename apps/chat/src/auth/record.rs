//! What an account record holds for logging in: the argon2 hash and, where it
//! could be made, the SCRAM-SHA-256 credential — both in the store's one
//! `password_hash` field — plus certificate fingerprints.
//!
//! # The `password_hash` field
//!
//! The store's [`Account`] has one text field for credentials,
//! `password_hash`. It holds:
//!
//! ```text
//! <argon2 PHC string>[ <SCRAM credential>]
//! $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash> scram-sha-256$i=600000$<salt>$<StoredKey>$<ServerKey>
//! ```
//!
//! separated by one space, which neither a PHC string nor the SCRAM form
//! ([`ScramCredential::encode`]) can contain. A field with only the PHC string
//! (an account made before SCRAM data existed, or whose password SASLprep
//! refuses) is valid: PLAIN works, SCRAM-SHA-256 fails with 904 so the client
//! falls back. An empty field is an account without a password
//! (certificate-only: EXTERNAL works, PLAIN and SCRAM fail). Further
//! space-separated items are ignored, so a later version can add one.
//!
//! Should the store get its own field for SCRAM data, only
//! [`Credentials::parse`] and [`Credentials::encode`] change.

use std::fmt;

use super::{
    password::{hash_password, hash_password_with, HashError, Password},
    scram::{ScramCredential, DEFAULT_ITERATIONS, PREFIX as SCRAM_PREFIX},
};
use crate::store::Account;

/// The credentials in an account record. `Debug` shows which exist, not
/// their values.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// The argon2 PHC string; empty if the account has no password.
    pub phc: String,
    /// The SCRAM-SHA-256 credential, if the account has one.
    pub scram: Option<ScramCredential>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &!self.phc.is_empty())
            .field("scram", &self.scram.as_ref().map(|s| s.iterations()))
            .finish()
    }
}

impl Credentials {
    /// Derives both from a new password (which should have passed the
    /// [`super::password::PasswordPolicy`]). Blocks for the argon2 hash and
    /// the PBKDF2 (see `examples/auth_bench.rs`): run it off the shard's loop.
    /// A password SASLprep refuses gets no SCRAM credential.
    pub fn from_password(password: &Password) -> Result<Credentials, HashError> {
        Ok(Credentials {
            phc: hash_password(password.as_bytes())?,
            scram: ScramCredential::with_iterations(password.as_bytes(), DEFAULT_ITERATIONS).ok(),
        })
    }

    /// [`Credentials::from_password`] with cheap parameters, for tests.
    #[doc(hidden)]
    pub fn from_password_cheap(password: &Password) -> Result<Credentials, HashError> {
        let params =
            argon2::Params::new(8, 1, 1, Some(32)).map_err(|e| HashError::Argon2(e.to_string()))?;
        Ok(Credentials {
            phc: hash_password_with(password.as_bytes(), params)?,
            scram: ScramCredential::with_iterations(password.as_bytes(), 4096).ok(),
        })
    }

    /// Reads the store's `password_hash` field. Never fails: an item that
    /// does not parse is left out (an unreadable PHC string then fails at
    /// verification, with a log line there; an unreadable SCRAM credential
    /// means no SCRAM).
    pub fn parse(field: &str) -> Credentials {
        let mut items = field.split(' ').filter(|s| !s.is_empty());
        let mut creds = Credentials::default();
        if let Some(first) = items.next() {
            if first.starts_with(SCRAM_PREFIX) {
                creds.scram = ScramCredential::parse(first).ok();
            } else {
                creds.phc = first.to_string();
            }
        }
        for item in items {
            if creds.scram.is_none() && item.starts_with(SCRAM_PREFIX) {
                creds.scram = ScramCredential::parse(item).ok();
            }
        }
        creds
    }

    /// The `password_hash` field.
    pub fn encode(&self) -> String {
        match &self.scram {
            Some(s) if self.phc.is_empty() => s.encode(),
            Some(s) => format!("{} {}", self.phc, s.encode()),
            None => self.phc.clone(),
        }
    }

    /// Whether the account has a password (PLAIN can work).
    pub fn has_password(&self) -> bool {
        !self.phc.is_empty()
    }
}

/// A new account record (no certificates, no flags) for `name` with these
/// credentials, created at `now_ms`.
pub fn new_account(name: &str, creds: &Credentials, now_ms: u64) -> Account {
    Account {
        name: name.to_string(),
        password_hash: creds.encode(),
        created: now_ms,
        cert_fingerprints: Vec::new(),
        flags: 0,
    }
}

/// Normalizes a TLS client certificate fingerprint to the form the framework
/// reports (`TlsInfo::peer_cert_sha256_hex`): 64 lowercase hex digits. Accepts
/// upper case and `:` separators (`AB:CD:...`, as `openssl x509 -fingerprint
/// -sha256` prints). `None` if it is not a SHA-256 fingerprint.
pub fn normalize_fingerprint(fp: &str) -> Option<String> {
    let hex: String = fp
        .trim()
        .chars()
        .filter(|&c| c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Whether `account` lists the (normalized) fingerprint `fp`.
pub fn has_fingerprint(account: &Account, fp: &str) -> bool {
    account
        .cert_fingerprints
        .iter()
        .any(|f| normalize_fingerprint(f).as_deref() == Some(fp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::verify_password;

    #[test]
    fn field_round_trip_with_and_without_scram() {
        let pw = Password::from("correct horse");
        let c = Credentials::from_password_cheap(&pw).unwrap();
        assert!(c.scram.is_some());
        let field = c.encode();
        assert_eq!(field.matches(' ').count(), 1, "{field}");
        assert!(field.starts_with("$argon2id$"));
        assert_eq!(Credentials::parse(&field), c);
        assert_eq!(
            verify_password(b"correct horse", &Credentials::parse(&field).phc),
            Ok(true)
        );

        // An account from before SCRAM: the PHC string alone.
        let old = Credentials {
            phc: c.phc.clone(),
            scram: None,
        };
        assert_eq!(old.encode(), c.phc);
        assert_eq!(Credentials::parse(&c.phc), old);

        // No password at all.
        assert_eq!(Credentials::parse(""), Credentials::default());
        assert!(!Credentials::parse("").has_password());
    }

    #[test]
    fn parse_tolerates_unknown_and_broken_items() {
        let pw = Password::from("correct horse");
        let c = Credentials::from_password_cheap(&pw).unwrap();
        let field = format!("{} future-item$x", c.encode());
        assert_eq!(Credentials::parse(&field), c);
        let broken = format!("{} scram-sha-256$i=1$$$", c.phc);
        assert_eq!(Credentials::parse(&broken).scram, None);
        assert_eq!(Credentials::parse(&broken).phc, c.phc);
    }

    #[test]
    fn passwords_saslprep_refuses_get_no_scram() {
        let pw = Password::from_slice(b"bell\x07bell\x07");
        let c = Credentials::from_password_cheap(&pw).unwrap();
        assert!(c.has_password());
        assert!(c.scram.is_none());
        assert_eq!(Credentials::parse(&c.encode()), c);
    }

    #[test]
    fn fingerprints_normalize() {
        let hex = "ab".repeat(32);
        assert_eq!(normalize_fingerprint(&hex).as_deref(), Some(hex.as_str()));
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            normalize_fingerprint(&colons).as_deref(),
            Some(hex.as_str())
        );
        assert_eq!(normalize_fingerprint("abc"), None);
        assert_eq!(normalize_fingerprint(&"zz".repeat(32)), None);
        let mut a = new_account("alice", &Credentials::default(), 1);
        a.cert_fingerprints.push(colons);
        assert!(has_fingerprint(&a, &hex));
        assert!(!has_fingerprint(&a, &"cd".repeat(32)));
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Credentials::from_password_cheap(&Password::from("correct horse")).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains('$'), "{shown}");
    }
}
