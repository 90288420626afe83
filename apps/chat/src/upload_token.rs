//! Session tokens for the file host ([`crate::filehost`]): what a client
//! logged in over IRC (the web client) sends with its uploads instead of its
//! account's password.
//!
//! # Protocol
//!
//! - A registered client logged in to an account sends `FILEHOST TOKEN`; the
//!   server answers `:<server> FILEHOST TOKEN <token> <seconds>` (through
//!   labeled-response when the client uses it). Without an account: `FAIL
//!   FILEHOST ACCOUNT_REQUIRED`; another subcommand: `FAIL FILEHOST
//!   INVALID_PARAMS`. The command exists only while the file host is on.
//! - The client uploads with `Authorization: Bearer <token>`. The token is
//!   good while all of these hold: its MAC checks, it has not expired
//!   ([`LIFETIME`] after it was made), and the IRC session it was made for
//!   is still connected, not quitting, and logged in to the same account.
//!   The last is asked of the session's shard (`ChatMsg::SessionCheck`, one
//!   hop, answered at once); the others are checked on the shard the upload
//!   reached. A session that ends takes its tokens with it.
//! - Anything else is 401 with `WWW-Authenticate: Bearer realm="filehost",
//!   error="invalid_token"` (RFC 6750), and the client asks for a new token.
//!
//! # The token
//!
//! `base64url(payload || HMAC-SHA256(key, payload))`, unpadded, where
//! `payload = version (1) | shard (u16) | client id (u64) | expiry (u64, Unix
//! seconds) | account (UTF-8)`, integers big-endian. The key is 32 random
//! bytes made when the process opens its file host and never stored: a
//! restart or an upgrade (a new process) invalidates every token, which the
//! client sees as a 401 and answers by asking again. Client ids are never
//! reused within a process, so a token cannot outlive its session into
//! another one that got the same id.

use base64::Engine as _;
use ring::hmac;

/// How long a token is good for at most, seconds.
pub const LIFETIME: u64 = 3600;

/// The format's version byte.
const VERSION: u8 = 1;
/// Bytes of the payload before the account.
const FIXED: usize = 1 + 2 + 8 + 8;
/// Bytes of the MAC.
const MAC: usize = 32;
/// The longest account a token carries, bytes.
pub const MAX_ACCOUNT: usize = 200;
/// The longest token accepted, characters (base64 of the largest payload
/// and MAC).
pub const MAX_TOKEN: usize = (FIXED + MAX_ACCOUNT + MAC).div_ceil(3) * 4;

/// What a good token names: the session it was made for and its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The session's shard.
    pub shard: usize,
    /// The session's client id on that shard.
    pub client: u64,
    /// The account the session was logged in to.
    pub account: String,
}

/// The key tokens are made and checked with (one per process).
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A fresh random key.
    pub fn generate() -> TokenKey {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system's random source");
        TokenKey(key)
    }

    /// A key from fixed bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> TokenKey {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A token for `claim`, good until `now + LIFETIME` (Unix seconds).
    /// `None` when the account is longer than [`MAX_ACCOUNT`] or the shard
    /// does not fit.
    pub fn issue(&self, claim: &Claim, now: u64) -> Option<String> {
        let shard = u16::try_from(claim.shard).ok()?;
        if claim.account.is_empty() || claim.account.len() > MAX_ACCOUNT {
            return None;
        }
        let mut raw = Vec::with_capacity(FIXED + claim.account.len() + MAC);
        raw.push(VERSION);
        raw.extend_from_slice(&shard.to_be_bytes());
        raw.extend_from_slice(&claim.client.to_be_bytes());
        raw.extend_from_slice(&now.saturating_add(LIFETIME).to_be_bytes());
        raw.extend_from_slice(claim.account.as_bytes());
        let tag = hmac::sign(&self.0, &raw);
        raw.extend_from_slice(tag.as_ref());
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    }

    /// What `token` claims, if it was made with this key and has not
    /// expired at `now` (Unix seconds). Whether the session still holds is
    /// the caller's to ask.
    pub fn check(&self, token: &str, now: u64) -> Option<Claim> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        if raw.len() < FIXED + 1 + MAC {
            return None;
        }
        let (payload, tag) = raw.split_at(raw.len() - MAC);
        // Constant time; nothing of the payload is read before it passes.
        hmac::verify(&self.0, payload, tag).ok()?;
        if payload[0] != VERSION {
            return None;
        }
        let shard = u16::from_be_bytes(payload[1..3].try_into().ok()?);
        let client = u64::from_be_bytes(payload[3..11].try_into().ok()?);
        let expiry = u64::from_be_bytes(payload[11..19].try_into().ok()?);
        if now >= expiry {
            return None;
        }
        let account = std::str::from_utf8(&payload[FIXED..]).ok()?.to_string();
        Some(Claim {
            shard: usize::from(shard),
            client,
            account,
        })
    }
}

/// The token of an `Authorization: Bearer` value (RFC 6750's b64token
/// characters only).
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    let ok = !token.is_empty()
        && token.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
        });
    ok.then_some(token)
}

/// The current time, Unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            shard: 3,
            client: 0x0102_0304_0506_0708,
            account: "älice".into(),
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let key = TokenKey::from_bytes(b"k1");
        let t = key.issue(&claim(), 1_000).expect("token");
        assert!(t.len() <= MAX_TOKEN);
        assert_eq!(parse_bearer(&format!("Bearer {t}")), Some(t.as_str()));
        assert_eq!(key.check(&t, 1_000), Some(claim()));
        assert_eq!(key.check(&t, 1_000 + LIFETIME - 1), Some(claim()));
        assert_eq!(key.check(&t, 1_000 + LIFETIME), None, "expired");
        // Another process's key.
        assert_eq!(TokenKey::from_bytes(b"k2").check(&t, 1_000), None);
        assert_eq!(TokenKey::generate().check(&t, 1_000), None);
    }

    #[test]
    fn tampering_is_refused() {
        let key = TokenKey::from_bytes(b"k1");
        let t = key.issue(&claim(), 1_000).expect("token");
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&t)
            .expect("b64");
        for i in 0..raw.len() {
            raw[i] ^= 1;
            let bad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
            assert_eq!(key.check(&bad, 1_000), None, "byte {i} flipped");
            raw[i] ^= 1;
        }
        // Cut short, cut to nothing, extended.
        assert_eq!(key.check(&t[..t.len() - 2], 1_000), None);
        assert_eq!(key.check("", 1_000), None);
        assert_eq!(key.check(&format!("{t}AA"), 1_000), None);
        assert_eq!(key.check(&"A".repeat(MAX_TOKEN + 4), 1_000), None);
        assert_eq!(key.check("not base64!", 1_000), None);
    }

    #[test]
    fn limits_and_header() {
        let key = TokenKey::from_bytes(b"k1");
        let long = Claim {
            account: "a".repeat(MAX_ACCOUNT),
            ..claim()
        };
        let t = key.issue(&long, 5).expect("the longest account");
        assert!(t.len() <= MAX_TOKEN, "{} > {MAX_TOKEN}", t.len());
        assert_eq!(key.check(&t, 5), Some(long));
        let too_long = Claim {
            account: "a".repeat(MAX_ACCOUNT + 1),
            ..claim()
        };
        assert_eq!(key.issue(&too_long, 5), None);
        let empty = Claim {
            account: String::new(),
            ..claim()
        };
        assert_eq!(key.issue(&empty, 5), None);
        let far = Claim {
            shard: 70_000,
            ..claim()
        };
        assert_eq!(key.issue(&far, 5), None);
        assert_eq!(parse_bearer("bearer abc-_~+/="), Some("abc-_~+/="));
        assert_eq!(parse_bearer("Basic abc"), None);
        assert_eq!(parse_bearer("Bearer "), None);
        assert_eq!(parse_bearer("Bearer a b"), None);
        assert_eq!(parse_bearer("Bearer a\u{0}"), None);
        assert_eq!(parse_bearer("Bearer"), None);
    }
}
