//! Property tests of the line parser and framing: no byte sequence makes them
//! panic, and valid messages survive a write/parse round trip.

use std::borrow::Cow;

use proptest::prelude::*;
use shardline_chat::{
    framing::{Frame, LineReader},
    message::{is_middle, parse, Message, Tag, MAX_LINE},
};

/// Everything the server does with raw input before a command handler runs.
fn feed(bytes: &[u8], chunk: usize) {
    let mut reader = LineReader::default();
    let mut buf = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let (frame, used) = reader.next_frame(&buf, MAX_LINE);
            match frame {
                Some(Frame::Line(r)) => {
                    assert!(r.end <= buf.len() && r.start < r.end);
                    let text = String::from_utf8_lossy(&buf[r]);
                    if let Ok(m) = parse(&text) {
                        assert!(m.params.len() <= 15);
                        let _ = m.client_tags();
                        let _ = m.to_string();
                    }
                    buf.drain(..used);
                }
                Some(Frame::TooLong) => {
                    buf.drain(..used);
                }
                None => {
                    buf.drain(..used);
                    break;
                }
            }
        }
        assert!(buf.len() <= MAX_LINE, "framing keeps at most one line");
    }
}

fn key() -> impl Strategy<Value = String> {
    "\\+?([a-z0-9.-]{1,8}/)?[A-Za-z0-9-]{1,10}"
}

fn middle() -> impl Strategy<Value = String> {
    "[^ \r\n\0:][^ \r\n\0]{0,12}"
}

fn trailing() -> impl Strategy<Value = String> {
    "[^\r\n\0]{0,40}"
}

prop_compose! {
    fn message()(
        tags in prop::collection::vec((key(), "[^\r\n\0]{0,12}"), 0..4),
        source in prop::option::of("[^ \r\n\0:@!][^ \r\n\0]{0,20}"),
        command in prop_oneof!["[A-Za-z]{1,10}", "[0-9]{3}"],
        middles in prop::collection::vec(middle(), 0..10),
        last in prop::option::of(trailing()),
    ) -> (Vec<(String, String)>, Option<String>, String, Vec<String>) {
        let mut params = middles;
        params.extend(last);
        (tags, source, command, params)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn framing_and_parsing_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
        feed(&bytes, chunk);
    }

    #[test]
    fn ircish_bytes_never_panic(s in "[@:;= \\\\+a-zA-Z0-9#/\r\n\0\x07-]{0,600}") {
        feed(s.as_bytes(), 7);
        let _ = parse(&s);
    }

    #[test]
    fn parse_never_panics_on_any_str(s in "\\PC{0,700}") {
        let _ = parse(&s);
    }

    #[test]
    fn valid_messages_round_trip((tags, source, command, params) in message()) {
        let m = Message {
            tags: tags.iter().map(|(k, v)| Tag { key: k.as_str(), value: Cow::Borrowed(v.as_str()) }).collect(),
            source: source.as_deref(),
            command: &command,
            params: params.iter().map(String::as_str).collect(),
        };
        prop_assume!(m.params.iter().rev().skip(1).all(|p| is_middle(p)));
        let text = m.to_string();
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(back, m);
    }
}
