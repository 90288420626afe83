//! Arbitrary bytes through everything the server does with a client's input before
//! a command handler runs: framing (`LineReader`, lines of at most `MAX_LINE`
//! bytes), lossy UTF-8, then `parse`. Invariants checked:
//!
//! - nothing panics;
//! - framing: every line is non-empty, within the buffer, at most `MAX_LINE` bytes
//!   and free of CR/LF; at most one (partial) line stays buffered; and the frames do
//!   not depend on how the stream is cut into reads (one read vs `chunk`-byte reads);
//! - parsing: a parsed message has a valid command and at most `MAX_PARAMS`
//!   parameters, its tag section and body are within `MAX_TAGS` / `MAX_BODY`, it
//!   writes back (`Display`) to a line that parses to the same message, and its
//!   client-only tags re-parse to the same tags.
//!
//! Input layout: the first byte picks the read size (1..=256), the rest is the
//! stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_chat::{
    framing::{Frame, LineReader},
    message::{parse, MAX_BODY, MAX_LINE, MAX_PARAMS, MAX_TAGS},
};

/// What framing made of a stream: each line's bytes, or `None` for a too-long one.
fn frames(stream: &[u8], chunk: usize) -> Vec<Option<Vec<u8>>> {
    let mut reader = LineReader::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let (frame, used) = reader.next_frame(&buf, MAX_LINE);
            assert!(used <= buf.len(), "used {used} of {}", buf.len());
            match frame {
                Some(Frame::Line(r)) => {
                    assert!(r.start < r.end && r.end < used, "{r:?}, used {used}");
                    assert!(r.len() <= MAX_LINE, "line of {} bytes", r.len());
                    let line = &buf[r];
                    assert!(!line.iter().any(|&b| b == b'\r' || b == b'\n'));
                    out.push(Some(line.to_vec()));
                    buf.drain(..used);
                }
                Some(Frame::TooLong) => {
                    out.push(None);
                    buf.drain(..used);
                }
                None => {
                    buf.drain(..used);
                    break;
                }
            }
        }
        assert!(buf.len() <= MAX_LINE, "{} bytes buffered", buf.len());
    }
    out
}

fn check_line(raw: &[u8]) {
    let text = String::from_utf8_lossy(raw);
    let Ok(m) = parse(&text) else {
        return;
    };
    assert!(m.params.len() <= MAX_PARAMS, "{} params", m.params.len());
    let letters = !m.command.is_empty() && m.command.bytes().all(|b| b.is_ascii_alphabetic());
    let numeric = m.command.len() == 3 && m.command.bytes().all(|b| b.is_ascii_digit());
    assert!(letters || numeric, "command {:?}", m.command);

    let written = m.to_string();
    let (tags, body) = match written.strip_prefix('@') {
        Some(rest) => {
            let end = rest.find(' ').expect("tag section ends with a space");
            (end + 2, written[end + 2..].len())
        }
        None => (0, written.len()),
    };
    assert!(
        tags <= MAX_TAGS,
        "{text:?} writes a {tags}-byte tag section"
    );
    assert!(
        body <= MAX_BODY,
        "{text:?} writes a {body}-byte body: {written:?}"
    );
    let back = parse(&written).unwrap_or_else(|e| panic!("{text:?} writes {written:?}: {e}"));
    assert_eq!(back, m, "{text:?} writes {written:?}");

    if let Some(client) = m.client_tags() {
        assert!(
            client.len() < MAX_TAGS,
            "client tags of {} bytes",
            client.len()
        );
        let line = format!("@{client} TAGMSG");
        let again = parse(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let want: Vec<_> = m.tags.iter().filter(|t| t.key.starts_with('+')).collect();
        let got: Vec<_> = again.tags.iter().collect();
        assert_eq!(got, want, "{text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first) + 1;
    let whole = frames(stream, stream.len().max(1));
    let cut = frames(stream, chunk);
    assert_eq!(whole, cut, "framing depends on read size {chunk}");
    for line in whole.iter().flatten() {
        check_line(line);
    }
});
