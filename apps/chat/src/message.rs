//! IRC messages: a strict parser and a writer for one line (without its CR/LF).
//!
//! Grammar (modern.ircdocs.horse, IRCv3 message-tags):
//!
//! ```text
//! message = [ "@" tags SPACE ] [ ":" source SPACE ] command *( SPACE param )
//! tags    = tag *( ";" tag )          tag = key [ "=" escaped-value ]
//! param   = middle / ":" trailing     (at most 15; the 15th may hold spaces)
//! command = 1*letter / 3digit
//! ```
//!
//! Limits: the tag section (`@`, tags and the space after them) is at most
//! [`MAX_TAGS`] bytes, the rest of the line at most [`MAX_BODY`] bytes. Runs of spaces
//! between parts are accepted. NUL, CR and LF inside a line are refused.
//!
//! The parser never panics and never allocates more than the tags and the parameter
//! list of the one line it is given; it borrows everything else from the input.

use std::{borrow::Cow, fmt};

/// Bytes of one line without tags, excluding CR LF.
pub const MAX_BODY: usize = 510;
/// Bytes of the tag section: `@`, the tags and the space after them.
pub const MAX_TAGS: usize = 8191;
/// Bytes of client-only (`+`) tag data a client may send, excluding `@` and the
/// space.
pub const MAX_CLIENT_TAGS: usize = 4094;
/// Longest line the framing layer accepts before it gives up on it (tags + body).
pub const MAX_LINE: usize = MAX_TAGS + MAX_BODY;
/// Parameters one message may carry.
pub const MAX_PARAMS: usize = 15;

/// One message tag; an absent value and an empty value are the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag<'a> {
    /// The key, with its `+` (client-only) and vendor prefix, if any.
    pub key: &'a str,
    /// The unescaped value.
    pub value: Cow<'a, str>,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Message tags, in the order sent.
    pub tags: Vec<Tag<'a>>,
    /// The source (`nick!user@host` or a server name), without the colon.
    pub source: Option<&'a str>,
    /// The command as sent (letters in any case, or three digits).
    pub command: &'a str,
    /// Parameters; the trailing one without its colon.
    pub params: Vec<&'a str>,
}

/// Why a line is not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but spaces.
    #[error("empty line")]
    Empty,
    /// NUL, CR or LF inside the line.
    #[error("illegal byte (NUL, CR or LF) in line")]
    IllegalByte,
    /// The tag section is longer than [`MAX_TAGS`].
    #[error("tag section too long")]
    TagsTooLong,
    /// The line without tags is longer than [`MAX_BODY`].
    #[error("line too long")]
    LineTooLong,
    /// A tag key is empty or has characters a key cannot have.
    #[error("malformed message tag")]
    BadTag,
    /// A `:` with no source after it.
    #[error("empty source")]
    BadSource,
    /// No command after the tags and source.
    #[error("no command")]
    NoCommand,
    /// The command is neither letters nor three digits.
    #[error("malformed command")]
    BadCommand,
}

/// Parses one line (without CR/LF).
pub fn parse(line: &str) -> Result<Message<'_>, ParseError> {
    if line.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(ParseError::IllegalByte);
    }
    let mut rest = line.trim_start_matches(' ');
    if rest.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut tags = Vec::new();
    if let Some(after_at) = rest.strip_prefix('@') {
        let end = after_at.find(' ').ok_or(ParseError::NoCommand)?;
        // '@' + tags + ' '
        if end + 2 > MAX_TAGS {
            return Err(ParseError::TagsTooLong);
        }
        parse_tags(&after_at[..end], &mut tags)?;
        rest = after_at[end..].trim_start_matches(' ');
    }
    if rest.len() > MAX_BODY {
        return Err(ParseError::LineTooLong);
    }
    let mut source = None;
    if let Some(after_colon) = rest.strip_prefix(':') {
        let end = after_colon.find(' ').ok_or(ParseError::NoCommand)?;
        if end == 0 {
            return Err(ParseError::BadSource);
        }
        source = Some(&after_colon[..end]);
        rest = after_colon[end..].trim_start_matches(' ');
    }
    let end = rest.find(' ').unwrap_or(rest.len());
    let command = &rest[..end];
    if command.is_empty() {
        return Err(ParseError::NoCommand);
    }
    let letters = command.bytes().all(|b| b.is_ascii_alphabetic());
    let numeric = command.len() == 3 && command.bytes().all(|b| b.is_ascii_digit());
    if !letters && !numeric {
        return Err(ParseError::BadCommand);
    }
    rest = &rest[end..];
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        if params.len() == MAX_PARAMS - 1 {
            // RFC 2812: the fifteenth parameter takes the rest of the line.
            params.push(rest);
            break;
        }
        let end = rest.find(' ').unwrap_or(rest.len());
        params.push(&rest[..end]);
        rest = &rest[end..];
    }
    Ok(Message {
        tags,
        source,
        command,
        params,
    })
}

fn parse_tags<'a>(section: &'a str, tags: &mut Vec<Tag<'a>>) -> Result<(), ParseError> {
    for item in section.split(';') {
        if item.is_empty() {
            // Tolerate `@a;;b` and a trailing `;`.
            continue;
        }
        let (key, raw) = match item.split_once('=') {
            Some((k, v)) => (k, v),
            None => (item, ""),
        };
        if !valid_tag_key(key) {
            return Err(ParseError::BadTag);
        }
        tags.push(Tag {
            key,
            value: unescape_tag_value(raw),
        });
    }
    Ok(())
}

/// Whether `key` is a tag key: optional `+`, optional `vendor/`, then a name of
/// letters, digits and `-`.
pub fn valid_tag_key(key: &str) -> bool {
    let key = key.strip_prefix('+').unwrap_or(key);
    let (vendor, name) = match key.rsplit_once('/') {
        Some((v, n)) => (Some(v), n),
        None => (None, key),
    };
    let vendor_ok = vendor.is_none_or(|v| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    });
    vendor_ok && !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn unescape_tag_value(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('\\') => out.push('\\'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {} // a lone trailing backslash is dropped
        }
    }
    Cow::Owned(out)
}

/// Appends `value` escaped for a tag value.
pub fn escape_tag_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

/// Whether `p` can be sent as a middle (non-trailing) parameter.
pub fn is_middle(p: &str) -> bool {
    !p.is_empty() && !p.starts_with(':') && !p.contains(' ')
}

impl Message<'_> {
    /// The message's client-only (`+`) tags, re-escaped as `+a=b;+c`, or `None` if
    /// it has none.
    pub fn client_tags(&self) -> Option<String> {
        let mut out = String::new();
        for tag in self.tags.iter().filter(|t| t.key.starts_with('+')) {
            if !out.is_empty() {
                out.push(';');
            }
            out.push_str(tag.key);
            if !tag.value.is_empty() {
                out.push('=');
                escape_tag_value(&tag.value, &mut out);
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

impl fmt::Display for Message<'_> {
    /// Writes the message as one line without CR LF. The last parameter is written
    /// as a trailing one only where it must be (empty, has a space, starts with
    /// `:`); every other parameter must satisfy [`is_middle`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.tags.is_empty() {
            let mut tags = String::new();
            for (i, tag) in self.tags.iter().enumerate() {
                if i > 0 {
                    tags.push(';');
                }
                tags.push_str(tag.key);
                if !tag.value.is_empty() {
                    tags.push('=');
                    escape_tag_value(&tag.value, &mut tags);
                }
            }
            write!(f, "@{tags} ")?;
        }
        if let Some(source) = self.source {
            write!(f, ":{source} ")?;
        }
        f.write_str(self.command)?;
        let last = self.params.len().saturating_sub(1);
        for (i, p) in self.params.iter().enumerate() {
            // The 15th parameter takes the rest of the line, spaces and all, without
            // a `:` (as `parse` reads it); adding one would make the line a byte
            // longer than the one parsed, perhaps over the limit.
            // (Not one that starts with a space: parsing skips spaces before it.)
            let fifteenth = i == MAX_PARAMS - 1 && !p.is_empty() && !p.starts_with([':', ' ']);
            if i == last && !is_middle(p) && !fifteenth {
                write!(f, " :{p}")?;
            } else {
                write!(f, " {p}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteenth_param_with_spaces_is_written_as_parsed() {
        // Found while writing the fuzz target's invariants: a 510-byte body whose
        // 15th parameter holds spaces came back a byte longer, over the limit.
        let head = "CMD 1 2 3 4 5 6 7 8 9 10 11 12 13 14 x ";
        let line = format!("{head}{}", "y".repeat(510 - head.len()));
        let m = parse(&line).expect("a 510-byte body parses");
        assert_eq!(m.params[14], &line[head.len() - 2..]);
        let written = m.to_string();
        assert_eq!(written, line);
        assert_eq!(parse(&written).expect("parses again"), m);
        // Found by the fuzzer in CI: a 15th parameter that starts with a space
        // (`: x`) keeps its `:`, or the space would be lost.
        let line = "CMD 1 2 3 4 5 6 7 8 9 10 11 12 13 14 : spaced out";
        let m = parse(line).expect("parses");
        assert_eq!(m.params[14], " spaced out");
        assert_eq!(m.to_string(), line);
        assert_eq!(parse(&m.to_string()).expect("parses again"), m);
    }

    #[test]
    fn full_line() {
        let m = parse("@id=1;+x=a\\sb :nick!u@h PRIVMSG #chan :hello world").expect("valid");
        assert_eq!(m.tags.len(), 2);
        assert_eq!(m.tags[1].key, "+x");
        assert_eq!(m.tags[1].value, "a b");
        assert_eq!(m.source, Some("nick!u@h"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#chan", "hello world"]);
        assert_eq!(m.client_tags().as_deref(), Some("+x=a\\sb"));
    }

    #[test]
    fn spaces_and_empty_trailing() {
        let m = parse("  TOPIC   #a   :").expect("valid");
        assert_eq!(m.params, ["#a", ""]);
        let m = parse("PING x  ").expect("valid");
        assert_eq!(m.params, ["x"]);
    }

    #[test]
    fn fifteenth_param_takes_the_rest() {
        let line = format!(
            "CMD {} x y z",
            (1..=14)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let m = parse(&line).expect("valid");
        assert_eq!(m.params.len(), 15);
        assert_eq!(m.params[14], "x y z");
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("   "), Err(ParseError::Empty));
        assert_eq!(parse("@a=b"), Err(ParseError::NoCommand));
        assert_eq!(parse(": PRIVMSG"), Err(ParseError::BadSource));
        assert_eq!(parse(":src"), Err(ParseError::NoCommand));
        assert_eq!(parse("PRIV-MSG x"), Err(ParseError::BadCommand));
        assert_eq!(parse("1234"), Err(ParseError::BadCommand));
        assert_eq!(parse("@=x CMD"), Err(ParseError::BadTag));
        assert_eq!(parse("@a b=c CMD"), Err(ParseError::BadCommand));
        assert_eq!(parse("NICK a\0b"), Err(ParseError::IllegalByte));
        let long = format!("PRIVMSG #a :{}", "x".repeat(MAX_BODY));
        assert_eq!(parse(&long), Err(ParseError::LineTooLong));
        let tags = format!("@a={} CMD", "x".repeat(MAX_TAGS));
        assert_eq!(parse(&tags), Err(ParseError::TagsTooLong));
    }

    #[test]
    fn body_limit_excludes_tags() {
        let line = format!("@a={} PRIVMSG #a :{}", "x".repeat(4000), "y".repeat(490));
        assert!(parse(&line).is_ok());
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_tag_value("a\\:b\\s\\\\\\r\\n\\x\\"), "a;b \\\r\nx");
    }

    #[test]
    fn writes_trailing_only_when_needed() {
        let m = Message {
            tags: vec![],
            source: None,
            command: "PRIVMSG",
            params: vec!["#a", "hi"],
        };
        assert_eq!(m.to_string(), "PRIVMSG #a hi");
        let m = Message {
            params: vec!["#a", ":)"],
            ..m
        };
        assert_eq!(m.to_string(), "PRIVMSG #a ::)");
    }
}
