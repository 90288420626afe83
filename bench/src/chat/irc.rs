//! The IRC the load speaks: nicks and rooms, message lines with the numbers the
//! harness checks (sender, sequence, timestamp), and a cheap classifier for the
//! lines the server sends.

use std::sync::atomic::{AtomicUsize, Ordering};

static TAGS: AtomicUsize = AtomicUsize::new(0);

/// A fresh nick/channel prefix: `b1`, `b2`, … (nicks `b1n0`, rooms `#b1r0`).
pub fn next_tag() -> String {
    format!("b{}", TAGS.fetch_add(1, Ordering::Relaxed) + 1)
}

/// A message id as members record it: sender index in the room (8 bits), sequence
/// number (24 bits).
pub fn message_id(sender: usize, seq: u64) -> u32 {
    ((sender as u32) << 24) | (seq as u32 & 0x00ff_ffff)
}

pub(super) fn id_parts(id: u32) -> (usize, u64) {
    ((id >> 24) as usize, u64::from(id & 0x00ff_ffff))
}

/// Writes one message line: `PRIVMSG #chan :SID SEQ TS ` padded with `x` to
/// `text_size` bytes of text, then CR LF.
pub fn write_message(
    out: &mut Vec<u8>,
    chan: &str,
    sid: usize,
    seq: u64,
    ts: u64,
    text_size: usize,
) {
    out.extend_from_slice(b"PRIVMSG ");
    out.extend_from_slice(chan.as_bytes());
    out.extend_from_slice(b" :");
    let start = out.len();
    push_u64(out, sid as u64);
    out.push(b' ');
    push_u64(out, seq);
    out.push(b' ');
    push_u64(out, ts);
    out.push(b' ');
    let used = out.len() - start;
    out.resize(out.len() + text_size.saturating_sub(used), b'x');
    out.extend_from_slice(b"\r\n");
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The numbers at the start of a message text: (sender id, sequence, timestamp).
pub fn parse_text(text: &[u8]) -> Option<(u64, u64, u64)> {
    let mut it = text.split(|&b| b == b' ');
    let mut num = || -> Option<u64> {
        let t = it.next()?;
        if t.is_empty() || t.len() > 19 {
            return None;
        }
        t.iter().try_fold(0u64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
        })
    };
    Some((num()?, num()?, num()?))
}

/// What a line from the server means to the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// `PRIVMSG target :text`.
    Privmsg {
        /// The channel (or nick).
        target: &'a [u8],
        /// The text after the colon.
        text: &'a [u8],
    },
    /// `PING params` (answer with `PONG params`).
    Ping(&'a [u8]),
    /// A `PONG`.
    Pong,
    /// 001: registered.
    Welcome,
    /// 366: end of NAMES (after a JOIN).
    EndOfNames,
    /// A 4xx/5xx numeric (but 422, no MOTD) or `ERROR`: something was refused.
    Refusal,
    /// Anything else.
    Other,
}

pub(super) fn split_space(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => {
            let mut rest = &s[i + 1..];
            while let [b' ', r @ ..] = rest {
                rest = r;
            }
            (&s[..i], rest)
        }
        None => (s, &[]),
    }
}

/// Classifies one line (without its CR LF). Cheap: no allocation, one pass.
pub fn parse_line(line: &[u8]) -> Line<'_> {
    let mut rest = line;
    if rest.first() == Some(&b'@') {
        rest = split_space(rest).1;
    }
    if rest.first() == Some(&b':') {
        rest = split_space(rest).1;
    }
    let (cmd, params) = split_space(rest);
    match cmd {
        b"PRIVMSG" => {
            let (target, text) = split_space(params);
            Line::Privmsg {
                target,
                text: text.strip_prefix(b":").unwrap_or(text),
            }
        }
        b"PING" => Line::Ping(params),
        b"PONG" => Line::Pong,
        b"001" => Line::Welcome,
        b"366" => Line::EndOfNames,
        b"ERROR" => Line::Refusal,
        // 422 (no MOTD) is an ERR_ numeric in name only: every registration may get it.
        b"422" => Line::Other,
        [a, b, c] if (b'4'..=b'5').contains(a) && b.is_ascii_digit() && c.is_ascii_digit() => {
            Line::Refusal
        }
        _ => Line::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_the_parsers() {
        let mut out = Vec::new();
        write_message(&mut out, "#b1r0", 42, 7, 123_456_789_012, 64);
        let line = &out[..out.len() - 2];
        assert!(out.ends_with(b"\r\n"));
        assert_eq!(out.len(), "PRIVMSG #b1r0 :".len() + 64 + 2);
        // As a member receives it: with a prefix (and tags).
        let mut relayed = b"@time=2026-01-01T00:00:00.000Z :b1n42!b1n42@127.0.0.1 ".to_vec();
        relayed.extend_from_slice(line);
        match parse_line(&relayed) {
            Line::Privmsg { target, text } => {
                assert_eq!(target, b"#b1r0");
                assert_eq!(parse_text(text), Some((42, 7, 123_456_789_012)));
            }
            other => panic!("{other:?}"),
        }
        // A long number never overflows, and garbage is refused.
        assert_eq!(parse_text(b"1 2"), None);
        assert_eq!(parse_text(b"1 x 3 "), None);
        assert_eq!(parse_text(b"99999999999999999999 1 1"), None);
        assert_eq!(parse_text(b"0 0 0"), Some((0, 0, 0)));
    }

    #[test]
    fn lines_classify() {
        assert_eq!(
            parse_line(b":srv 001 b1n0 :Welcome to the network"),
            Line::Welcome
        );
        assert_eq!(
            parse_line(b":srv 366 b1n0 #b1r0 :End of /NAMES list"),
            Line::EndOfNames
        );
        assert_eq!(parse_line(b"PING :srv"), Line::Ping(b":srv"));
        assert_eq!(parse_line(b":srv PONG srv :b1"), Line::Pong);
        assert_eq!(
            parse_line(b":srv 433 * b1n0 :Nickname is already in use"),
            Line::Refusal
        );
        assert_eq!(parse_line(b"ERROR :Closing link"), Line::Refusal);
        assert_eq!(
            parse_line(b":srv 422 b1n0 :MOTD File is missing"),
            Line::Other
        );
        assert_eq!(parse_line(b":srv 353 b1n0 = #b1r0 :a b"), Line::Other);
        assert_eq!(parse_line(b":a!b@c JOIN #b1r0"), Line::Other);
        assert_eq!(parse_line(b""), Line::Other);
        assert_eq!(parse_line(b":only-a-prefix"), Line::Other);
    }

    #[test]
    fn ids_pack_sender_and_sequence() {
        let id = message_id(3, 70_000);
        assert_eq!(id_parts(id), (3, 70_000));
        assert_eq!(
            id_parts(message_id(254, (1 << 24) - 1)),
            (254, (1 << 24) - 1)
        );
    }
}
