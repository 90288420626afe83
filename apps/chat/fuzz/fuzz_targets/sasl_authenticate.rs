//! `AUTHENTICATE` lines from the fuzzer through the per-client SASL machine
//! (`auth::sasl::Sasl`), checked against a small model of the chunk
//! reassembly for PLAIN. Invariants checked:
//!
//! - nothing panics;
//! - every reply renders to one line of at most 512 bytes ending in CR LF, and
//!   every `AUTHENTICATE` chunk the server sends is at most 400 bytes;
//! - PLAIN follows the model: `*` → 906; a chunk over 400 bytes or a response
//!   over 8 KiB of base64 → 905; a 400-byte chunk → nothing yet; a shorter one
//!   or `+` ends the response, which is looked up (the name the model decoded)
//!   or refused with 904;
//! - at most 3 counted failures: then 904 and a disconnect, and 904 for
//!   everything after; the machine never logs anyone in (every lookup here
//!   answers "no such account").
//!
//! Input layout: lines split on `\n`. A line starting with byte 0x01 is
//! `[0x01, n, c]`: the character `c` (mapped into base64's alphabet) repeated
//! `2n` times, so 400- and 401-byte chunks are one step away; any other line
//! is sent as is (lossy UTF-8). Lookups are answered at once.

#![no_main]

use base64::{engine::general_purpose::STANDARD, Engine};
use libfuzzer_sys::fuzz_target;
use shardline_chat::auth::sasl::{
    Output, Reply, Sasl, SaslConfig, CHUNK_LEN, DEFAULT_MAX_FAILURES, DEFAULT_MAX_PAYLOAD,
};

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

/// What the model expects of one line.
#[derive(Debug, PartialEq)]
enum Expect {
    /// `AUTHENTICATE +` alone: PLAIN started.
    Start,
    Nothing,
    Codes(Vec<u16>),
    /// A lookup of this name (or 904 if the name is not what PLAIN allows).
    Plain(Vec<u8>),
    /// Not modelled (another mechanism under way).
    Unknown,
}

#[derive(Debug)]
enum Model {
    Idle,
    Plain(String),
    Other,
    Closed,
}

fn plain_authcid(payload: &[u8]) -> Option<String> {
    let mut parts = payload.splitn(3, |&b| b == 0);
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    let authzid = std::str::from_utf8(authzid).ok()?;
    let authcid = std::str::from_utf8(authcid).ok()?;
    let fold = |s: &str| {
        s.chars()
            .map(|c| match c {
                'A'..='Z' => c.to_ascii_lowercase(),
                '[' => '{',
                ']' => '}',
                '\\' => '|',
                '~' => '^',
                c => c,
            })
            .collect::<String>()
    };
    (!authcid.is_empty()
        && !password.is_empty()
        && !password.contains(&0)
        && (authzid.is_empty() || fold(authzid) == fold(authcid)))
    .then(|| authcid.to_string())
}

fuzz_target!(|data: &[u8]| {
    let mut sasl = Sasl::new(SaslConfig::new(true), Some("ab".repeat(32)));
    let mut model = Model::Idle;
    for raw in data.split(|&b| b == b'\n') {
        let line = match raw {
            [1, n, c, ..] => {
                let ch = B64[usize::from(*c) % B64.len()] as char;
                ch.to_string().repeat(usize::from(*n) * 2)
            }
            _ => String::from_utf8_lossy(raw).into_owned(),
        };
        // The model's expectation.
        let expect = match &mut model {
            Model::Closed => Expect::Codes(vec![904]),
            _ if line == "*" => {
                model = Model::Idle;
                Expect::Codes(vec![906])
            }
            Model::Idle if line.eq_ignore_ascii_case("PLAIN") => {
                model = Model::Plain(String::new());
                Expect::Start
            }
            Model::Idle => {
                model = Model::Other;
                Expect::Unknown
            }
            Model::Other => Expect::Unknown,
            Model::Plain(buf) => {
                if line.len() > CHUNK_LEN {
                    model = Model::Idle;
                    Expect::Codes(vec![905])
                } else if line != "+" && buf.len() + line.len() > DEFAULT_MAX_PAYLOAD {
                    model = Model::Idle;
                    Expect::Codes(vec![905])
                } else {
                    if line != "+" {
                        buf.push_str(&line);
                    }
                    if line.len() == CHUNK_LEN {
                        Expect::Nothing
                    } else {
                        let e = match STANDARD.decode(buf.as_bytes()) {
                            Ok(p) => Expect::Plain(p),
                            Err(_) => Expect::Codes(vec![904]),
                        };
                        model = Model::Idle;
                        e
                    }
                }
            }
        };
        let mut outputs = sasl.authenticate(&line);
        // Answer lookups at once: no such account.
        let mut i = 0;
        while i < outputs.len() {
            let more = match &outputs[i] {
                Output::LookupAccount { query, .. } | Output::LookupByFingerprint { query, .. } => {
                    sasl.account_found(*query, None)
                }
                Output::VerifyPassword { .. } => panic!("no account, so nothing to verify"),
                Output::LoggedIn { .. } => panic!("logged in without an account"),
                _ => Vec::new(),
            };
            outputs.extend(more);
            i += 1;
        }

        let mut codes = Vec::new();
        let mut chunks = Vec::new();
        let mut lookups = Vec::new();
        let mut disconnect = false;
        for o in &outputs {
            match o {
                Output::Reply(r) => {
                    let l = r.render("srv.test", "nick", "nick!user@host");
                    assert!(l.len() <= 512 && l.ends_with(b"\r\n"), "{l:?}");
                    assert_eq!(l.iter().filter(|&&b| b == b'\n').count(), 1);
                    match r {
                        Reply::Authenticate(c) => {
                            assert!(!c.is_empty() && c.len() <= CHUNK_LEN);
                            chunks.push(c.clone());
                        }
                        r => codes.push(r.code().unwrap()),
                    }
                }
                Output::LookupAccount { name, .. } => lookups.push(name.clone()),
                Output::LookupByFingerprint { .. } => lookups.push(String::new()),
                Output::Disconnect { .. } => disconnect = true,
                _ => {}
            }
        }
        // Failures as the machine counts them: the third one disconnects.
        assert!(sasl.failures() <= DEFAULT_MAX_FAILURES);
        if disconnect {
            assert!(!matches!(model, Model::Closed), "disconnected twice");
            assert_eq!(sasl.failures(), DEFAULT_MAX_FAILURES);
            assert_eq!(codes.last(), Some(&904));
            assert!(matches!(outputs.last(), Some(Output::Disconnect { .. })));
            model = Model::Closed;
        }

        match expect {
            Expect::Unknown => {
                // Any exchange that ended brings the model back in step.
                if codes.iter().any(|c| (904..=906).contains(c)) && !matches!(model, Model::Closed)
                {
                    model = Model::Idle;
                }
            }
            Expect::Start => {
                assert_eq!(chunks, ["+"], "PLAIN starts with AUTHENTICATE +");
                assert!(codes.is_empty());
            }
            Expect::Nothing => assert!(outputs.is_empty(), "{line:?}: {outputs:?}"),
            Expect::Codes(want) => assert_eq!(codes, want, "{line:?}"),
            Expect::Plain(payload) => match plain_authcid(&payload) {
                Some(name) => {
                    assert_eq!(lookups, [name]);
                    assert_eq!(codes, [904], "unknown account");
                }
                None => {
                    assert!(lookups.is_empty());
                    assert_eq!(codes, [904]);
                }
            },
        }
    }
});
