//! Bytes from the cluster's engine (Redis) through the link's reply reader
//! (`cluster::resp`), fed in two pieces as a socket might deliver them, and
//! the account records the engine hands back (`<name>\n<credentials>`).
//! Invariants checked:
//!
//! - nothing panics;
//! - a decoded reply takes at least one byte and no more than there were;
//! - decoding the same bytes in two pieces gives the same replies as in one
//!   (the link keeps what is incomplete and decodes it again with more);
//! - a reply that is neither whole nor broken is a prefix the reader keeps,
//!   and is never over `MAX_REPLY` bytes;
//! - a channel event other nodes published (`cluster::events`) that decodes
//!   encodes again to a form that decodes to the same event;
//! - any reply read as a stream's entries (`events::stream_events`, a
//!   catch-up) gives only events that round-trip the same way.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_chat::cluster::{
    events::{stream_events, Envelope},
    resp::{decode_reply, text, Decoded, MAX_REPLY},
};

fn replies(buf: &[u8]) -> (Vec<String>, usize, bool) {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match decode_reply(&buf[at..]) {
            Decoded::Frame(f, used) => {
                assert!(used >= 1 && at + used <= buf.len());
                at += used;
                let _ = text(&f);
                for env in stream_events(&f) {
                    if let Some(wire) = env.encode() {
                        assert_eq!(Envelope::decode(&wire).as_ref(), Some(&env), "{wire:?}");
                    }
                }
                out.push(format!("{f:?}"));
            }
            Decoded::Incomplete => {
                assert!(buf.len() - at <= MAX_REPLY);
                return (out, at, false);
            }
            Decoded::Broken(_) => return (out, at, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (whole, used, broken) = replies(data);
    // Two pieces: what the first decodes, then the rest with the kept tail.
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let (mut first, used1, broken1) = replies(&data[..cut]);
    if !broken1 {
        let rest = data[used1..].to_vec();
        let (second, used2, broken2) = replies(&rest);
        first.extend(second);
        if !broken2 && !broken {
            assert_eq!(first, whole, "pieces differ from the whole");
            assert_eq!(used1 + used2, used);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = shardline_chat::cluster::account_from_engine(s);
        if let Some(env) = Envelope::decode(s) {
            if let Some(wire) = env.encode() {
                assert_eq!(Envelope::decode(&wire).as_ref(), Some(&env), "{wire:?}");
            }
        }
    }
});
