//! Arbitrary bytes through the TLS passthrough listener's ClientHello reader
//! (`shardline_proxy::sni`), as the proxy uses it: the whole input so far, again
//! after every read. Invariants checked:
//!
//! - nothing panics;
//! - the answer does not depend on how the stream is cut into reads (one read vs
//!   `chunk`-byte reads, stopping at the first answer that is not `NeedMore`),
//!   nor, for `NeedMore` and `Hello`, the number of bytes examined;
//! - at most `MAX_INPUT` bytes are examined, and a stream of `MAX_INPUT` bytes
//!   or more is always decided (never `NeedMore`);
//! - a hello's server name is a lower-case DNS host name (`host_name` gives it
//!   back unchanged) and its ALPN list has no empty or GREASE entry;
//! - a hello re-encoded canonically (only server_name and ALPN, in as few
//!   records of at most `chunk` bytes as the record limit allows) reads back
//!   the same.
//!
//! Input layout: the first byte picks the read size (1..=256), the rest is the
//! stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_proxy::sni::{
    host_name, ClientHello, HelloReader, Sniff, MAX_HELLO, MAX_INPUT, MAX_RECORDS,
};

/// What the reader answers when fed `stream` `chunk` bytes at a time, and how
/// many bytes it examined.
fn in_pieces(stream: &[u8], chunk: usize) -> (Sniff, usize) {
    let mut r = HelloReader::new();
    let mut end = 0;
    loop {
        end = (end + chunk).min(stream.len());
        let got = r.read(&stream[..end]);
        if got != Sniff::NeedMore || end == stream.len() {
            return (got, r.examined());
        }
    }
}

fn u16_vec(out: &mut Vec<u8>, data: &[u8]) {
    let len = u16::try_from(data.len()).expect("fits: from a parsed hello");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

/// A minimal ClientHello asking for what `hello` asks, in records of at most
/// `chunk` bytes (more if needed to stay within `MAX_RECORDS`).
fn encode(hello: &ClientHello, chunk: usize) -> Vec<u8> {
    let mut exts = Vec::new();
    if let Some(name) = &hello.server_name {
        let mut list = vec![0];
        u16_vec(&mut list, name.as_bytes());
        let mut data = Vec::new();
        u16_vec(&mut data, &list);
        exts.extend_from_slice(&[0, 0]);
        u16_vec(&mut exts, &data);
    }
    if !hello.alpn.is_empty() {
        let mut list = Vec::new();
        for p in &hello.alpn {
            list.push(u8::try_from(p.len()).expect("fits: from a parsed hello"));
            list.extend_from_slice(p);
        }
        let mut data = Vec::new();
        u16_vec(&mut data, &list);
        exts.extend_from_slice(&[0, 16]);
        u16_vec(&mut exts, &data);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    u16_vec(&mut body, &exts);
    let len = u32::try_from(body.len()).expect("small").to_be_bytes();
    let mut msg = vec![1, len[1], len[2], len[3]];
    msg.extend_from_slice(&body);
    assert!(msg.len() <= MAX_HELLO, "re-encoded hello of {}", msg.len());
    let size = chunk.max(msg.len().div_ceil(MAX_RECORDS));
    let mut out = Vec::new();
    for piece in msg.chunks(size) {
        out.extend_from_slice(&[22, 3, 3]);
        u16_vec(&mut out, piece);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first) + 1;
    let mut whole_reader = HelloReader::new();
    let whole = whole_reader.read(stream);
    assert!(whole_reader.examined() <= MAX_INPUT.min(stream.len()));
    if stream.len() >= MAX_INPUT {
        assert_ne!(whole, Sniff::NeedMore, "{} bytes undecided", stream.len());
    }
    let (cut, examined) = in_pieces(stream, chunk);
    assert_eq!(whole, cut, "answer depends on read size {chunk}");
    if matches!(whole, Sniff::NeedMore | Sniff::Hello(_)) {
        // Everything but a partial record header, or exactly up to the
        // hello's end. (A refusal may come a few bytes apart.)
        assert_eq!(examined, whole_reader.examined(), "read size {chunk}");
    }

    if let Sniff::Hello(hello) = &whole {
        if let Some(name) = &hello.server_name {
            assert_eq!(host_name(name.as_bytes()).as_deref(), Ok(name.as_str()));
        }
        for p in &hello.alpn {
            assert!(!p.is_empty(), "empty ALPN protocol");
            assert!(
                !(p.len() == 2 && p[0] == p[1] && p[0] & 0x0f == 0x0a),
                "GREASE ALPN value {p:?} kept"
            );
        }
        let again = encode(hello, chunk);
        assert_eq!(
            HelloReader::new().read(&again),
            whole,
            "re-encoded hello reads differently"
        );
    }
});
