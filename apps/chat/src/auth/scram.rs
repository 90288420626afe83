//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, as a state machine with
//! no I/O: [`ClientFirst::parse`] → [`ClientFirst::challenge`] (the
//! server-first-message) → [`AwaitingFinal::finish`] (checks the proof, gives
//! the server-final-message `v=...`).
//!
//! # The stored credential
//!
//! At registration (or a password change) the server derives from the
//! password, with a random 16-byte salt and [`DEFAULT_ITERATIONS`]:
//!
//! ```text
//! SaltedPassword = PBKDF2-HMAC-SHA-256(SASLprep(password), salt, i)
//! StoredKey      = SHA-256(HMAC(SaltedPassword, "Client Key"))
//! ServerKey      = HMAC(SaltedPassword, "Server Key")
//! ```
//!
//! and keeps `i`, the salt, StoredKey and ServerKey ([`ScramCredential`]) —
//! never the password or SaltedPassword. Its text form ([`ScramCredential::encode`]):
//!
//! ```text
//! scram-sha-256$i=<iterations>$<salt>$<StoredKey>$<ServerKey>
//! ```
//!
//! each binary field in standard base64 without padding (`=`), like a PHC
//! string: 133 bytes with a 16-byte salt and 600,000 iterations. [`super::record`] keeps it next to
//! the argon2 hash in the account record.
//!
//! **Iterations: 600,000** (new credentials; stored ones may have any count
//! from [`MIN_ITERATIONS`], RFC 7677's 4096, to [`MAX_ITERATIONS`]). A login
//! costs the server two HMACs and a hash whatever the count; the count is paid
//! by the client at every login (PBKDF2 over the password, tens to hundreds
//! of ms in native code) and by the server once per registration. What it
//! buys: a stolen data directory lets an attacker test guesses against
//! StoredKey at the cost of `i` HMACs each, and since the argon2 hash lies
//! beside it, the weaker of the two sets the attacker's price. 4096 would make
//! SCRAM data a shortcut around argon2; 600,000 is OWASP's current figure for
//! PBKDF2-HMAC-SHA-256. Measured here (`examples/auth_bench.rs`, release, ring,
//! one core of a loaded 2-core VM): deriving a credential takes about 220 ms
//! (190 to 300 ms), which a client pays per login unless it caches its
//! ClientKey/ServerKey for the salt and count, as RFC 5802 §5.1 allows; the
//! server side of a whole exchange takes a few microseconds.
//!
//! An account without SCRAM data (made before it existed, or with a password
//! SASLprep refuses) cannot use this mechanism: the SASL layer answers 904
//! after the client-first-message, and the client can fall back to PLAIN.
//!
//! # What is accepted
//!
//! - GS2 header: `n` (no channel binding) or `y` (the client could bind but
//!   thinks the server cannot — true: RFC 5802 §6 lets a server without
//!   channel binding accept it). `p=...` (channel binding) is refused
//!   ([`ScramError::ChannelBindingUnsupported`]): this server offers no
//!   `-PLUS` mechanism.
//! - authzid: absent, or equal to the username (rfc1459 casefolding).
//! - `m=` (reserved mandatory extension): refused, as RFC 5802 requires.
//! - username: `saslname` with `=2C`/`=3D` escapes, then SASLprep; a bad
//!   escape is an error.
//! - nonces: printable ASCII except `,`; the client-final nonce must be the
//!   client's nonce followed by the server's, exactly.
//! - The channel-binding field of client-final must be the base64 of the GS2
//!   header sent first.
//! - The proof is compared in constant time (`subtle`).
//!
//! Every malformed message is an error value; nothing here panics on input.

use std::{borrow::Cow, fmt, num::NonZeroU32};

use base64::{
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
    Engine,
};
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::password::{random_bytes, HashError};
use crate::casemap::casefold;

/// The mechanism's name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Iterations of new credentials (see the module doc).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// The fewest iterations a stored credential may have (RFC 7677's minimum).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most iterations a stored credential may have (a client would need
/// minutes at more).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt bytes of new credentials.
pub const SALT_LEN: usize = 16;
/// Random bytes in the server's nonce (24 base64 characters).
pub const SERVER_NONCE_BYTES: usize = 18;
/// The prefix of [`ScramCredential::encode`].
pub const PREFIX: &str = "scram-sha-256$";

const KEY_LEN: usize = 32;
/// Longest stored salt accepted.
const MAX_SALT_LEN: usize = 64;

/// Why a SCRAM step failed. For the client it is always 904; the variant is
/// for logs and tests (it never holds a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The message does not follow the grammar.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// `p=`: channel binding, which this server does not offer.
    #[error("channel binding is not supported")]
    ChannelBindingUnsupported,
    /// `m=`: a mandatory extension nobody defined.
    #[error("unsupported mandatory extension")]
    UnsupportedExtension,
    /// A `saslname` with a bad `=` escape, or not UTF-8.
    #[error("invalid encoding of a name")]
    InvalidEncoding,
    /// SASLprep refused the username or password.
    #[error("string not allowed by SASLprep")]
    SaslPrep,
    /// An authzid other than the username.
    #[error("authorization identity differs from the username")]
    AuthzidNotAllowed,
    /// The client-final channel binding is not the first GS2 header.
    #[error("channel binding data does not match")]
    ChannelBindingMismatch,
    /// The client-final nonce is not the combined nonce.
    #[error("nonce does not match")]
    NonceMismatch,
    /// Wrong proof: the password was wrong.
    #[error("invalid proof")]
    InvalidProof,
    /// No random bytes for a nonce or salt.
    #[error("no random bytes")]
    Random,
}

/// Why a stored credential does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a SCRAM-SHA-256 credential: {0}")]
pub struct CredentialError(&'static str);

/// What the server keeps to check SCRAM-SHA-256 logins: iterations, salt,
/// StoredKey, ServerKey. `Debug` shows the iterations and salt length only.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// SASLprep (RFC 4013) of a password or username.
pub fn saslprep(s: &str) -> Result<Cow<'_, str>, ScramError> {
    stringprep::saslprep(s).map_err(|_| ScramError::SaslPrep)
}

impl ScramCredential {
    /// Derives a credential from `password` with a random salt and
    /// [`DEFAULT_ITERATIONS`]. Blocks for the PBKDF2 (about 0.2 s): not on a
    /// shard's loop. Fails if the password is not UTF-8 or
    /// SASLprep refuses it — such an account gets no SCRAM data.
    pub fn new(password: &[u8]) -> Result<ScramCredential, ScramError> {
        ScramCredential::with_iterations(password, DEFAULT_ITERATIONS)
    }

    /// [`ScramCredential::new`] with another iteration count (clamped to
    /// [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`]).
    pub fn with_iterations(
        password: &[u8],
        iterations: u32,
    ) -> Result<ScramCredential, ScramError> {
        let mut salt = [0u8; SALT_LEN];
        random_bytes(&mut salt).map_err(|_: HashError| ScramError::Random)?;
        ScramCredential::derive(
            password,
            &salt,
            iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS),
        )
    }

    /// Derives a credential from `password` with a given salt and count (any
    /// count ≥ 1; test vectors use 4096).
    pub fn derive(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramCredential, ScramError> {
        let text = std::str::from_utf8(password).map_err(|_| ScramError::SaslPrep)?;
        let prepared = Zeroizing::new(saslprep(text)?.into_owned());
        let rounds = NonZeroU32::new(iterations).ok_or(ScramError::Malformed("zero iterations"))?;
        let mut salted = Zeroizing::new([0u8; KEY_LEN]);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            prepared.as_bytes(),
            &mut salted[..],
        );
        let client_key = Zeroizing::new(hmac_sha256(&salted[..], b"Client Key"));
        Ok(ScramCredential {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key[..]),
            server_key: hmac_sha256(&salted[..], b"Server Key"),
        })
    }

    /// The iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The text form: `scram-sha-256$i=<n>$<salt>$<StoredKey>$<ServerKey>`
    /// (base64 without padding).
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}i={}${}${}${}",
            self.iterations,
            STANDARD_NO_PAD.encode(&self.salt),
            STANDARD_NO_PAD.encode(self.stored_key),
            STANDARD_NO_PAD.encode(self.server_key),
        )
    }

    /// Parses [`ScramCredential::encode`]'s form. Iterations must be within
    /// [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`], the salt 1 to 64 bytes, the
    /// keys 32 bytes each.
    pub fn parse(s: &str) -> Result<ScramCredential, CredentialError> {
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or(CredentialError("missing scram-sha-256$ prefix"))?;
        let mut parts = rest.split('$');
        let (Some(i), Some(salt), Some(stored), Some(server), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CredentialError(
                "expected i=, salt, StoredKey and ServerKey",
            ));
        };
        let digits = i.strip_prefix("i=").ok_or(CredentialError("missing i="))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 10 {
            return Err(CredentialError("bad iteration count"));
        }
        let iterations: u32 = digits
            .parse()
            .map_err(|_| CredentialError("bad iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(CredentialError("iteration count out of range"));
        }
        let salt = STANDARD_NO_PAD
            .decode(salt)
            .map_err(|_| CredentialError("bad salt"))?;
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(CredentialError("bad salt length"));
        }
        let key = |s: &str| -> Result<[u8; KEY_LEN], CredentialError> {
            let v = STANDARD_NO_PAD
                .decode(s)
                .map_err(|_| CredentialError("bad key"))?;
            v.try_into().map_err(|_| CredentialError("bad key length"))
        };
        Ok(ScramCredential {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// Decodes a `saslname`: `=2C` → `,`, `=3D` → `=`; any other `=` is an error,
/// and so is a NUL or a `,` (which cannot be in one).
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    if s.is_empty() {
        return Err(ScramError::Malformed("empty name"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(['=', ',', '\0']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(ScramError::InvalidEncoding);
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `s` is a valid nonce: non-empty printable ASCII without `,`.
fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Whether `s` is an `attr-val` extension (`ALPHA "=" value`).
fn valid_extension(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}

/// A parsed client-first-message: who wants to log in, and its nonce.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientFirst {
    gs2_header: String,
    authzid: Option<String>,
    username: String,
    client_nonce: String,
    bare: String,
}

impl fmt::Debug for ClientFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFirst")
            .field("username", &self.username)
            .field("authzid", &self.authzid)
            .finish_non_exhaustive()
    }
}

impl ClientFirst {
    /// Parses a client-first-message.
    pub fn parse(msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::InvalidEncoding)?;
        // gs2-header: flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            _ => return Err(ScramError::Malformed("bad GS2 channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let authzid = match authzid {
            "" => None,
            a => Some(decode_saslname(
                a.strip_prefix("a=")
                    .ok_or(ScramError::Malformed("bad authzid"))?,
            )?),
        };
        let gs2_header = msg[..msg.len() - bare.len()].to_string();
        // client-first-message-bare: [m=...,] n=user,r=nonce[,ext...]
        let mut fields = bare.split(',');
        let mut user = fields.next().unwrap_or("");
        if user.starts_with("m=") {
            return Err(ScramError::UnsupportedExtension);
        }
        user = user
            .strip_prefix("n=")
            .ok_or(ScramError::Malformed("no username"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("bad nonce"));
        }
        if !fields.all(valid_extension) {
            return Err(ScramError::Malformed("bad extension"));
        }
        let username = saslprep(&decode_saslname(user)?)?.into_owned();
        if username.is_empty() {
            // SASLprep maps some names to nothing (a soft hyphen alone).
            return Err(ScramError::Malformed("empty name"));
        }
        if let Some(a) = &authzid {
            let a = saslprep(a)?;
            if casefold(&a) != casefold(&username) {
                return Err(ScramError::AuthzidNotAllowed);
            }
        }
        Ok(ClientFirst {
            gs2_header,
            authzid,
            username,
            client_nonce: nonce.to_string(),
            bare: bare.to_string(),
        })
    }

    /// The username (authcid), decoded and SASLprepped: the account to look up.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The authzid, if one was given (then it equals the username).
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }

    /// The server-first-message for the account's credential, with a fresh
    /// nonce from the OS's CSPRNG, and the state that checks the answer.
    pub fn challenge(self, cred: &ScramCredential) -> Result<(AwaitingFinal, String), ScramError> {
        let mut raw = [0u8; SERVER_NONCE_BYTES];
        random_bytes(&mut raw).map_err(|_| ScramError::Random)?;
        Ok(self.challenge_with_nonce(cred, &STANDARD.encode(raw)))
    }

    /// [`ClientFirst::challenge`] with a given server nonce (test vectors).
    /// `server_nonce` must be printable ASCII without `,`.
    pub fn challenge_with_nonce(
        self,
        cred: &ScramCredential,
        server_nonce: &str,
    ) -> (AwaitingFinal, String) {
        let nonce = format!("{}{server_nonce}", self.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&cred.salt),
            cred.iterations
        );
        let auth_prefix = format!("{},{server_first},", self.bare);
        let state = AwaitingFinal {
            gs2_header: self.gs2_header,
            username: self.username,
            nonce,
            auth_prefix,
            stored_key: cred.stored_key,
            server_key: cred.server_key,
        };
        (state, server_first)
    }
}

/// After the server-first-message: waits for the client's proof.
#[derive(Clone)]
pub struct AwaitingFinal {
    gs2_header: String,
    username: String,
    nonce: String,
    /// client-first-message-bare "," server-first-message ","
    auth_prefix: String,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl fmt::Debug for AwaitingFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwaitingFinal")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AwaitingFinal {
    /// The username being authenticated.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks a client-final-message. On success, the server-final-message
    /// (`v=<ServerSignature>`) to send; [`ScramError::InvalidProof`] for a
    /// wrong password.
    pub fn finish(self, msg: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::InvalidEncoding)?;
        // The proof is the last attribute.
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let cb = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if !fields.all(valid_extension) {
            return Err(ScramError::Malformed("bad extension"));
        }
        let cb = STANDARD
            .decode(cb)
            .map_err(|_| ScramError::Malformed("bad channel binding base64"))?;
        if cb != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Malformed("bad proof base64"))?;
        if proof.len() != KEY_LEN {
            return Err(ScramError::Malformed("bad proof length"));
        }
        let auth_message = format!("{}{without_proof}", self.auth_prefix);
        let client_signature = hmac_sha256(&self.stored_key, auth_message.as_bytes());
        let mut client_key = Zeroizing::new([0u8; KEY_LEN]);
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature.iter()))
        {
            *k = p ^ s;
        }
        let ok: bool = sha256(&client_key[..]).ct_eq(&self.stored_key).into();
        if !ok {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac_sha256(&self.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

/// A client's side of SCRAM-SHA-256, for tests (the chat never logs in
/// anywhere): builds the messages a correct client sends.
#[cfg(test)]
pub(crate) mod client {
    use super::*;

    /// client-final-message for `server_first`, given the password.
    pub fn client_final(
        password: &str,
        gs2_header: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for f in server_first.split(',') {
            if let Some(v) = f.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = f.strip_prefix("s=") {
                salt = STANDARD.decode(v).unwrap();
            } else if let Some(v) = f.strip_prefix("i=") {
                iterations = v.parse().unwrap();
            }
        }
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            saslprep(password).unwrap().as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(gs2_header));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac_sha256(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(sig.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3: user "user", password "pencil".
    const C_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const S_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const S_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const C_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                           p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const S_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> ScramCredential {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredential::derive(b"pencil", &salt, 4096).unwrap()
    }

    #[test]
    fn rfc7677_exchange_byte_for_byte() {
        let first = ClientFirst::parse(C_FIRST.as_bytes()).unwrap();
        assert_eq!(first.username(), "user");
        assert_eq!(first.authzid(), None);
        let (state, server_first) = first.challenge_with_nonce(&rfc_credential(), S_NONCE);
        assert_eq!(server_first, S_FIRST);
        assert_eq!(state.finish(C_FINAL.as_bytes()).unwrap(), S_FINAL);
    }

    #[test]
    fn rfc7677_wrong_password_fails() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let other = ScramCredential::derive(b"pencil2", &salt, 4096).unwrap();
        let first = ClientFirst::parse(C_FIRST.as_bytes()).unwrap();
        let (state, server_first) = first.challenge_with_nonce(&other, S_NONCE);
        assert_eq!(
            server_first, S_FIRST,
            "salt and count come from the credential"
        );
        assert_eq!(
            state.finish(C_FINAL.as_bytes()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn rfc7677_tampered_final_fails() {
        let run = |final_msg: &str| {
            let first = ClientFirst::parse(C_FIRST.as_bytes()).unwrap();
            let (state, _) = first.challenge_with_nonce(&rfc_credential(), S_NONCE);
            state.finish(final_msg.as_bytes())
        };
        // Another nonce.
        assert_eq!(
            run(&C_FINAL.replace("hNlF$k0", "hNlF$k1")),
            Err(ScramError::NonceMismatch)
        );
        // Channel binding data claiming "y,,".
        assert_eq!(
            run(&C_FINAL.replace("c=biws", "c=eSws")),
            Err(ScramError::ChannelBindingMismatch)
        );
        // A flipped proof bit.
        assert_eq!(
            run(&C_FINAL.replace("p=dHzb", "p=dHzc")),
            Err(ScramError::InvalidProof)
        );
        // An extra extension changes the AuthMessage, so the proof no longer fits.
        assert_eq!(
            run(&C_FINAL.replace(",p=", ",x=1,p=")),
            Err(ScramError::InvalidProof)
        );
        // Short proof, no proof, garbage.
        assert!(matches!(
            run("c=biws,r=x,p=AAAA"),
            Err(ScramError::NonceMismatch)
        ));
        assert!(matches!(
            run("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA"),
            Err(ScramError::Malformed("bad proof length"))
        ));
        assert!(matches!(run("c=biws,r=x"), Err(ScramError::Malformed(_))));
        assert!(matches!(run(""), Err(ScramError::Malformed(_))));
        assert!(matches!(run("p=,p=,p="), Err(ScramError::Malformed(_))));
    }

    #[test]
    fn a_name_saslprep_maps_to_nothing_is_refused() {
        // Found by the sasl_scram fuzz target: n=U+00AD.
        assert!(ClientFirst::parse(b"n,,n=\xc2\xad,r=abcdef").is_err());
    }

    #[test]
    fn rfc7677_stored_keys() {
        // StoredKey and ServerKey of the RFC's credential, computed
        // independently (Python hashlib/hmac) for the same salt and count.
        let c = rfc_credential();
        assert_eq!(
            STANDARD.encode(c.stored_key),
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        );
        assert_eq!(
            STANDARD.encode(c.server_key),
            "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn credential_encode_parse_round_trip() {
        let c = rfc_credential();
        let text = c.encode();
        assert!(
            text.starts_with("scram-sha-256$i=4096$W22ZaJ0SNY7soEsUEjb6gQ$"),
            "{text}"
        );
        assert!(
            !text.split('$').skip(2).any(|f| f.contains('=')),
            "no padding"
        );
        assert_eq!(ScramCredential::parse(&text), Ok(c.clone()));
        let fresh = ScramCredential::with_iterations(b"pencil", 4096).unwrap();
        assert_eq!(fresh.salt().len(), SALT_LEN);
        assert_eq!(ScramCredential::parse(&fresh.encode()), Ok(fresh.clone()));
        assert_ne!(fresh, c, "random salt");
        assert_eq!(text.len(), 131, "{text}");
    }

    #[test]
    fn credential_parse_refuses_bad_input() {
        let good = rfc_credential().encode();
        let bad = [
            String::new(),
            "scram-sha-256$".into(),
            good.replacen("scram-sha-256", "scram-sha-1", 1),
            good.replacen("i=4096", "i=4095", 1),
            good.replacen("i=4096", "i=10000001", 1),
            good.replacen("i=4096", "i=99999999999999999999", 1),
            good.replacen("i=4096", "i=+4096", 1),
            good.replacen("i=4096", "i=", 1),
            good.replacen("i=4096", "n=4096", 1),
            format!("{good}$extra"),
            good.rsplit_once('$').unwrap().0.to_string(),
            good.replacen("W22Z", "W2!Z", 1),
            format!("{good}AA"),
        ];
        for b in &bad {
            assert!(ScramCredential::parse(b).is_err(), "accepted {b:?}");
        }
    }

    #[test]
    fn client_first_grammar() {
        let p = |s: &str| ClientFirst::parse(s.as_bytes());
        assert_eq!(p("y,,n=user,r=abc").unwrap().username(), "user");
        assert_eq!(
            p("p=tls-exporter,,n=user,r=abc"),
            Err(ScramError::ChannelBindingUnsupported)
        );
        assert_eq!(
            p("n,,m=ext,n=user,r=abc"),
            Err(ScramError::UnsupportedExtension)
        );
        assert!(matches!(
            p("x,,n=user,r=abc"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(p("n,n=user,r=abc"), Err(ScramError::Malformed(_))));
        assert!(matches!(
            p("n,,r=abc,n=user"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(p("n,,n=user"), Err(ScramError::Malformed(_))));
        assert!(matches!(p("n,,n=user,r="), Err(ScramError::Malformed(_))));
        assert!(matches!(p("n,,n=,r=abc"), Err(ScramError::Malformed(_))));
        assert!(matches!(
            p("n,,n=user,r=a b"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            p("n,,n=user,r=abc,1"),
            Err(ScramError::Malformed(_))
        ));
        assert!(p("n,,n=user,r=abc,x=ext").is_ok());
        assert!(matches!(p(""), Err(ScramError::Malformed(_))));
        assert_eq!(
            ClientFirst::parse(b"n,,n=\xff,r=abc"),
            Err(ScramError::InvalidEncoding)
        );
        // saslname escapes.
        assert_eq!(p("n,,n=a=2Cb=3Dc,r=abc").unwrap().username(), "a,b=c");
        assert_eq!(p("n,,n=a=2cb,r=abc"), Err(ScramError::InvalidEncoding));
        assert_eq!(p("n,,n=a=,r=abc"), Err(ScramError::InvalidEncoding));
        // SASLprep: a non-ASCII space becomes a space; a control char is refused.
        assert_eq!(p("n,,n=a\u{00A0}b,r=abc").unwrap().username(), "a b");
        assert_eq!(p("n,,n=a\u{0007}b,r=abc"), Err(ScramError::SaslPrep));
    }

    #[test]
    fn authzid_must_be_the_username() {
        let p = |s: &str| ClientFirst::parse(s.as_bytes());
        let ok = p("n,a=User,n=user,r=abc").unwrap();
        assert_eq!(ok.authzid(), Some("User"));
        assert_eq!(
            p("n,a=other,n=user,r=abc"),
            Err(ScramError::AuthzidNotAllowed)
        );
        assert!(matches!(
            p("n,x=user,n=user,r=abc"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            p("n,a=,n=user,r=abc"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn full_exchange_with_random_nonce_and_y_flag() {
        let cred = ScramCredential::with_iterations("pässword".as_bytes(), 4096).unwrap();
        for gs2 in ["n,,", "y,,", "n,a=bob,"] {
            let bare = "n=bob,r=clientnonce123";
            let first = ClientFirst::parse(format!("{gs2}{bare}").as_bytes()).unwrap();
            let (state, server_first) = first.challenge(&cred).unwrap();
            assert!(server_first.starts_with("r=clientnonce123"));
            assert!(server_first.ends_with(",i=4096"));
            let nonce = server_first.split(',').next().unwrap();
            assert_eq!(nonce.len(), 2 + 14 + 24);
            let fin = client::client_final("pässword", gs2, bare, &server_first);
            let v = state.finish(fin.as_bytes()).unwrap();
            assert!(v.starts_with("v="));
        }
    }

    #[test]
    fn nonces_differ() {
        let cred = rfc_credential();
        let a = ClientFirst::parse(C_FIRST.as_bytes())
            .unwrap()
            .challenge(&cred)
            .unwrap()
            .1;
        let b = ClientFirst::parse(C_FIRST.as_bytes())
            .unwrap()
            .challenge(&cred)
            .unwrap()
            .1;
        assert_ne!(a, b);
    }

    #[test]
    fn passwords_saslprep_refuses_are_errors() {
        assert_eq!(
            ScramCredential::derive(b"bad\x07pw", b"salt", 4096),
            Err(ScramError::SaslPrep)
        );
        assert_eq!(
            ScramCredential::derive(b"\xff\xfe", b"salt", 4096),
            Err(ScramError::SaslPrep)
        );
        // SASLprep maps U+00A0 to a space: both spellings give one credential.
        assert_eq!(
            ScramCredential::derive("a\u{00A0}b".as_bytes(), b"salt", 4096),
            ScramCredential::derive(b"a b", b"salt", 4096)
        );
    }

    #[test]
    fn debug_hides_keys() {
        let c = rfc_credential();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("stored") && !shown.contains("server_key"),
            "{shown}"
        );
        let first = ClientFirst::parse(C_FIRST.as_bytes()).unwrap();
        let (state, _) = first.challenge_with_nonce(&c, S_NONCE);
        assert!(!format!("{state:?}").contains("key"));
    }
}
