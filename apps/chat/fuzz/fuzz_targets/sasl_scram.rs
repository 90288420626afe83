//! SCRAM-SHA-256 client messages from the fuzzer through the server's state
//! machine (`auth::scram`), and stored credential strings through their parsers.
//! Invariants checked:
//!
//! - nothing panics, whatever the bytes;
//! - a client-first-message that parses has a non-empty username, and the
//!   server-first-message starts with its nonce followed by the server's;
//! - arbitrary client-final bytes never authenticate;
//! - a correct client-final built for any client-first that parses (a real
//!   client's computation, done here with ring) always authenticates, and the
//!   server's `v=` is the ServerSignature that client expects; the same message
//!   with one proof byte changed never does;
//! - `ScramCredential::parse` and `Credentials::parse` round-trip whatever
//!   they accept.
//!
//! Input layout: byte 0 is a mode (bit 0: build the correct client-final
//! rather than take it from the input), bytes 1–2 the length of the
//! client-first-message (u16 LE, cut to what is there), then client-first,
//! then the client-final; the whole input is also tried as a credential string.

#![no_main]

use std::{num::NonZeroU32, sync::OnceLock};

use base64::{engine::general_purpose::STANDARD, Engine};
use libfuzzer_sys::fuzz_target;
use ring::{digest, hmac, pbkdf2};
use shardline_chat::auth::{
    record::Credentials,
    scram::{ClientFirst, ScramCredential},
};

const PASSWORD: &str = "pencil";
const SALT: &[u8] = b"0123456789abcdef";
const ITERATIONS: u32 = 4096;

fn credential() -> &'static ScramCredential {
    static CRED: OnceLock<ScramCredential> = OnceLock::new();
    CRED.get_or_init(|| ScramCredential::derive(PASSWORD.as_bytes(), SALT, ITERATIONS).unwrap())
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// What a correct client sends for `server_first`, and the `v=` it expects.
fn correct_final(gs2: &str, bare: &str, server_first: &str) -> (String, String) {
    static SALTED: OnceLock<[u8; 32]> = OnceLock::new();
    let salted = SALTED.get_or_init(|| {
        let mut out = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(ITERATIONS).unwrap(),
            SALT,
            PASSWORD.as_bytes(),
            &mut out,
        );
        out
    });
    let nonce = server_first.split(',').next().unwrap();
    let without_proof = format!("c={},{nonce}", STANDARD.encode(gs2));
    let auth = format!("{bare},{server_first},{without_proof}");
    let client_key = hmac256(salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    let sig = hmac256(stored_key.as_ref(), auth.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    let server_key = hmac256(salted, b"Server Key");
    let v = format!(
        "v={}",
        STANDARD.encode(hmac256(&server_key, auth.as_bytes()))
    );
    (format!("{without_proof},p={}", STANDARD.encode(proof)), v)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = ScramCredential::parse(text) {
            assert_eq!(ScramCredential::parse(&c.encode()), Ok(c));
        }
        let creds = Credentials::parse(text);
        assert_eq!(Credentials::parse(&creds.encode()), creds);
    }
    let [mode, lo, hi, rest @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
    let (first_msg, final_msg) = rest.split_at(split);
    let Ok(first) = ClientFirst::parse(first_msg) else {
        return;
    };
    assert!(!first.username().is_empty());
    let first_text = std::str::from_utf8(first_msg).expect("parsed, so UTF-8");
    // gs2-header ends at the second comma.
    let gs2_end = first_text
        .match_indices(',')
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("parsed, so a GS2 header");
    let (gs2, bare) = first_text.split_at(gs2_end);
    let client_nonce = bare
        .split(',')
        .find_map(|f| f.strip_prefix("r="))
        .expect("parsed, so a nonce");

    let (state, server_first) = first.challenge(credential()).unwrap();
    assert!(server_first.starts_with(&format!("r={client_nonce}")));
    assert!(
        server_first.len() > 2 + client_nonce.len() + 20,
        "server nonce"
    );

    if mode & 1 == 0 {
        assert!(
            state.finish(final_msg).is_err(),
            "random bytes authenticated"
        );
        return;
    }
    let (good, v) = correct_final(gs2, bare, &server_first);
    assert_eq!(
        state.clone().finish(good.as_bytes()).as_deref(),
        Ok(v.as_str())
    );
    // One proof byte off: refused.
    let (head, proof) = good.rsplit_once(",p=").unwrap();
    let mut raw = STANDARD.decode(proof).unwrap();
    let at = usize::from(*mode >> 1) % raw.len();
    raw[at] ^= 1 << (mode >> 5);
    let bad = format!("{head},p={}", STANDARD.encode(raw));
    assert!(state.finish(bad.as_bytes()).is_err());
});
