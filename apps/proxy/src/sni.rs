//! Reading a TLS ClientHello without terminating TLS: the server name (SNI) and
//! the ALPN protocols a client asks for, for routing a TLS passthrough listener
//! ([`crate::tcp`]).
//!
//! [`HelloReader`] is fed the bytes a client has sent so far — each time the
//! whole input since the connection began, as the framework presents what
//! `on_data` did not consume — and answers incrementally: [`Sniff::NeedMore`]
//! until the ClientHello is complete, then [`Sniff::Hello`], or a refusal as
//! soon as the bytes show one: [`Sniff::NotTls`] when the first record header
//! is not a TLS handshake record, [`Sniff::Malformed`] when it is but the
//! ClientHello is not valid. Bytes it has processed are not looked at again.
//!
//! What it reads (RFC 8446 §4.1.2 and §5.1, RFC 6066 §3, RFC 7301 §3.1):
//!
//! - **Records**: content type 22 (handshake), `legacy_record_version`
//!   0x0301..=0x0304, fragments of 1..=2^14 bytes. The ClientHello may be
//!   split over up to [`MAX_RECORDS`] records, all of them handshake records.
//! - **The ClientHello** (handshake type 1), of at most [`MAX_HELLO`] bytes
//!   with its 4-byte header: version, random, session id (at most 32 bytes),
//!   cipher suites (a non-empty even length), compression methods (non-empty),
//!   then optionally the extensions block, which must end exactly where the
//!   message does. An extension type may appear only once.
//! - **server_name** (extension 0): a non-empty list; its `host_name` entry
//!   (at most one) must be a DNS host name ([`host_name`]) and is returned
//!   lower-cased; entries of other name types are skipped.
//! - **ALPN** (extension 16): a non-empty list of non-empty protocol names;
//!   GREASE values (RFC 8701) are dropped from what is returned.
//!
//! Every other extension (GREASE ones included) is skipped by its length.
//! Nothing after the ClientHello is looked at (a TLS 1.3 client may follow it
//! with a ChangeCipherSpec or early data at once), so at most [`MAX_INPUT`]
//! bytes of input are ever examined; a ClientHello that needs more is refused.
//! With Encrypted Client Hello the name read is the outer (public) one.
//!
//! Must never: panic, or look past the bounds of what it was given — every
//! read goes through a small cursor type that checks every length.

use std::fmt;

/// The largest ClientHello accepted, its 4-byte handshake header included.
/// Real ones are well under it (a post-quantum key share makes ~1.8 KiB).
pub const MAX_HELLO: usize = 16 << 10;

/// The most TLS records a ClientHello may be split over.
pub const MAX_RECORDS: usize = 16;

/// A TLS record header: type, version, length.
pub const RECORD_HEADER: usize = 5;

/// The most input bytes a [`HelloReader`] examines before it decides: a
/// ClientHello of [`MAX_HELLO`] bytes in [`MAX_RECORDS`] records.
pub const MAX_INPUT: usize = MAX_HELLO + MAX_RECORDS * RECORD_HEADER;

/// The largest record fragment TLS allows (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;

/// Record content type of handshake records.
const HANDSHAKE: u8 = 22;

/// Handshake message type of the ClientHello.
const CLIENT_HELLO: u8 = 1;

/// Extension types read.
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// What a complete ClientHello asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, lower-cased; `None` when
    /// the client sent none.
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order, GREASE values
    /// removed; empty without the extension.
    pub alpn: Vec<Vec<u8>>,
}

/// What the bytes seen so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// The ClientHello is not complete yet and nothing wrong was seen.
    NeedMore,
    /// A complete, valid ClientHello.
    Hello(ClientHello),
    /// The first record header is not that of a TLS handshake record (plain
    /// HTTP, SSLv2, anything else): why.
    NotTls(&'static str),
    /// TLS records, but not a valid ClientHello of at most [`MAX_HELLO`]
    /// bytes in at most [`MAX_RECORDS`] records.
    Malformed(HelloError),
}

/// Why a ClientHello was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// A record after the first is not a handshake record of a TLS version,
    /// or a record's length is 0 or over 2^14.
    #[error("bad record: {0}")]
    Record(&'static str),
    /// Split over more than [`MAX_RECORDS`] records.
    #[error("ClientHello split over more than {MAX_RECORDS} records")]
    TooManyRecords,
    /// The first handshake message is not a ClientHello: its type.
    #[error("handshake message of type {0}, not a ClientHello")]
    NotClientHello(u8),
    /// The ClientHello says it is longer than [`MAX_HELLO`]: its length.
    #[error("ClientHello of {0} bytes, over the limit of {MAX_HELLO}")]
    TooLarge(usize),
    /// A length runs past what contains it: which field.
    #[error("{0} runs past its container")]
    Truncated(&'static str),
    /// Bytes left where none may be: after which field.
    #[error("trailing bytes after {0}")]
    Trailing(&'static str),
    /// A field's value is not allowed: what.
    #[error("invalid ClientHello: {0}")]
    Invalid(&'static str),
    /// The server name is not a DNS host name.
    #[error("server name: {0}")]
    Name(#[from] NameError),
    /// The reader was given less input than before (a caller's mistake).
    #[error("input shorter than what was already read")]
    InputShrank,
}

/// Why a name is not a DNS host name (see [`host_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No bytes.
    #[error("empty")]
    Empty,
    /// Over 253 bytes.
    #[error("longer than 253 bytes")]
    TooLong,
    /// An empty label (`a..b`, a leading or trailing dot).
    #[error("empty label")]
    EmptyLabel,
    /// A label over 63 bytes.
    #[error("label longer than 63 bytes")]
    LongLabel,
    /// A byte other than a letter, a digit, '-' or '.'.
    #[error("byte {0:#04x} is not a letter, digit, '-' or '.'")]
    BadByte(u8),
    /// A label starting or ending with '-'.
    #[error("label starts or ends with '-'")]
    Hyphen,
    /// An all-numeric last label: an IPv4 literal, not a host name.
    #[error("an IP address, not a host name")]
    Numeric,
}

/// `raw` as a lower-cased DNS host name (RFC 1123 §2.1, RFC 6066 §3): at most
/// 253 bytes of dot-separated labels of 1..=63 letters, digits and hyphens,
/// no label starting or ending with a hyphen, no trailing dot, the last label
/// not all digits (an IPv4 address is not a host name).
pub fn host_name(raw: &[u8]) -> Result<String, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > 253 {
        return Err(NameError::TooLong);
    }
    let mut last_numeric = false;
    for label in raw.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(NameError::LongLabel);
        }
        if let Some(&b) = label
            .iter()
            .find(|&&b| !(b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(NameError::BadByte(b));
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return Err(NameError::Hyphen);
        }
        last_numeric = label.iter().all(u8::is_ascii_digit);
    }
    if last_numeric {
        return Err(NameError::Numeric);
    }
    // Only ASCII letters, digits, '-' and '.' remain.
    Ok(raw
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

/// Reads a ClientHello incrementally; see the module doc. Give it the whole
/// input every time (what was given before, then what came since); once it has
/// answered something else than [`Sniff::NeedMore`] it keeps that answer.
#[derive(Debug, Default)]
pub struct HelloReader {
    /// Input bytes processed: record headers and the fragment bytes taken.
    seen: usize,
    /// Fragment bytes of the current record not yet taken.
    left_in_record: usize,
    /// Records whose header was read.
    records: usize,
    /// The handshake bytes gathered, up to the ClientHello's end.
    msg: Vec<u8>,
    /// The answer, once decided.
    done: Option<Sniff>,
}

impl HelloReader {
    /// A reader that has seen nothing.
    pub fn new() -> HelloReader {
        HelloReader::default()
    }

    /// What `input` (everything the client sent so far) says.
    pub fn read(&mut self, input: &[u8]) -> Sniff {
        if let Some(done) = &self.done {
            return done.clone();
        }
        let answer = self.advance(input);
        if answer != Sniff::NeedMore {
            self.done = Some(answer.clone());
            self.msg = Vec::new();
        }
        answer
    }

    /// Input bytes examined so far (at most [`MAX_INPUT`]).
    pub fn examined(&self) -> usize {
        self.seen
    }

    fn advance(&mut self, input: &[u8]) -> Sniff {
        let Some(mut rest) = input.get(self.seen..) else {
            return Sniff::Malformed(HelloError::InputShrank);
        };
        loop {
            if self.left_in_record == 0 {
                match self.record_header(rest) {
                    Ok(Some(len)) => {
                        self.seen += RECORD_HEADER;
                        rest = rest.get(RECORD_HEADER..).unwrap_or_default();
                        self.left_in_record = len;
                    }
                    Ok(None) => return Sniff::NeedMore,
                    Err(refusal) => return refusal,
                }
            }
            if rest.is_empty() {
                return Sniff::NeedMore;
            }
            let want = match self.hello_len() {
                Ok(Some(total)) => total - self.msg.len(),
                Ok(None) => 4 - self.msg.len(),
                Err(e) => return Sniff::Malformed(e),
            };
            let n = want.min(self.left_in_record).min(rest.len());
            let (take, after) = rest.split_at(n);
            self.msg.extend_from_slice(take);
            self.seen += n;
            self.left_in_record -= n;
            rest = after;
            match self.hello_len() {
                Ok(Some(total)) if self.msg.len() == total => {
                    let body = self.msg.get(4..).unwrap_or_default();
                    return match parse_hello(body) {
                        Ok(hello) => Sniff::Hello(hello),
                        Err(e) => Sniff::Malformed(e),
                    };
                }
                Ok(_) => {}
                Err(e) => return Sniff::Malformed(e),
            }
        }
    }

    /// The next record's fragment length, `None` if its header is not all
    /// there yet (what is there was checked), or the refusal.
    fn record_header(&mut self, rest: &[u8]) -> Result<Option<usize>, Sniff> {
        let first = self.records == 0;
        let refuse = |why: &'static str| {
            if first {
                Sniff::NotTls(why)
            } else {
                Sniff::Malformed(HelloError::Record(why))
            }
        };
        if rest.first().is_some_and(|&t| t != HANDSHAKE) {
            return Err(refuse("not a handshake record"));
        }
        if rest.get(1).is_some_and(|&major| major != 3) {
            return Err(refuse("record version is not TLS"));
        }
        if rest.get(2).is_some_and(|&minor| !(1..=4).contains(&minor)) {
            return Err(refuse("record version is not TLS"));
        }
        let (Some(&hi), Some(&lo)) = (rest.get(3), rest.get(4)) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 || len > MAX_FRAGMENT {
            return Err(refuse("record length 0 or over 2^14"));
        }
        if self.records == MAX_RECORDS {
            return Err(Sniff::Malformed(HelloError::TooManyRecords));
        }
        self.records += 1;
        Ok(Some(len))
    }

    /// The ClientHello's whole length (header included) once its header is
    /// in, checked against [`MAX_HELLO`]; its type checked as soon as known.
    fn hello_len(&self) -> Result<Option<usize>, HelloError> {
        if let Some(&t) = self.msg.first() {
            if t != CLIENT_HELLO {
                return Err(HelloError::NotClientHello(t));
            }
        }
        let (Some(&a), Some(&b), Some(&c)) = (self.msg.get(1), self.msg.get(2), self.msg.get(3))
        else {
            return Ok(None);
        };
        let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        let total = 4 + len;
        if total > MAX_HELLO {
            return Err(HelloError::TooLarge(total));
        }
        Ok(Some(total))
    }
}

/// What a one-shot read of `input` says (a fresh [`HelloReader`]).
pub fn sniff(input: &[u8]) -> Sniff {
    HelloReader::new().read(input)
}

/// Reads big-endian integers and length-prefixed vectors from a slice,
/// checking every length: never panics, whatever the bytes.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    buf: &'a [u8],
}

impl fmt::Debug for Cursor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({} bytes left)", self.buf.len())
    }
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or(HelloError::Truncated(what))?;
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        match self.take(1, what)? {
            [b] => Ok(*b),
            _ => Err(HelloError::Truncated(what)),
        }
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        match self.take(2, what)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(HelloError::Truncated(what)),
        }
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<Cursor<'a>, HelloError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what).map(Cursor::new)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<Cursor<'a>, HelloError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what).map(Cursor::new)
    }

    /// Nothing may follow `what`.
    fn end(&self, what: &'static str) -> Result<(), HelloError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(HelloError::Trailing(what))
        }
    }
}

/// The ClientHello's body (after its 4-byte header).
fn parse_hello(body: &[u8]) -> Result<ClientHello, HelloError> {
    let mut c = Cursor::new(body);
    let version = c.u16("legacy_version")?;
    if version >> 8 != 3 {
        return Err(HelloError::Invalid("legacy_version is not TLS"));
    }
    c.take(32, "random")?;
    if c.vec8("legacy_session_id")?.buf.len() > 32 {
        return Err(HelloError::Invalid("legacy_session_id over 32 bytes"));
    }
    let suites = c.vec16("cipher_suites")?;
    if suites.is_empty() || suites.buf.len() % 2 != 0 {
        return Err(HelloError::Invalid(
            "cipher_suites empty or of an odd length",
        ));
    }
    if c.vec8("legacy_compression_methods")?.is_empty() {
        return Err(HelloError::Invalid("legacy_compression_methods empty"));
    }
    let mut hello = ClientHello {
        server_name: None,
        alpn: Vec::new(),
    };
    if c.is_empty() {
        // No extensions block (allowed before TLS 1.3).
        return Ok(hello);
    }
    let mut exts = c.vec16("extensions")?;
    c.end("extensions")?;
    let mut types = Vec::new();
    while !exts.is_empty() {
        let ty = exts.u16("extension type")?;
        let mut data = exts.vec16("extension data")?;
        types.push(ty);
        match ty {
            EXT_SERVER_NAME => {
                hello.server_name = server_name(&mut data)?;
                data.end("server_name")?;
            }
            EXT_ALPN => {
                hello.alpn = alpn(&mut data)?;
                data.end("application_layer_protocol_negotiation")?;
            }
            _ => {}
        }
    }
    types.sort_unstable();
    if types.windows(2).any(|w| w[0] == w[1]) {
        return Err(HelloError::Invalid("an extension appears twice"));
    }
    Ok(hello)
}

/// The server_name extension's data: its host name, if it has one.
fn server_name(data: &mut Cursor<'_>) -> Result<Option<String>, HelloError> {
    let mut list = data.vec16("server_name_list")?;
    if list.is_empty() {
        return Err(HelloError::Invalid("empty server_name_list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8("name_type")?;
        let name = list.vec16("server name")?;
        if kind == 0 {
            if host.is_some() {
                return Err(HelloError::Invalid("two host names"));
            }
            host = Some(host_name(name.buf)?);
        }
    }
    Ok(host)
}

/// The ALPN extension's data: its protocols, GREASE values dropped.
fn alpn(data: &mut Cursor<'_>) -> Result<Vec<Vec<u8>>, HelloError> {
    let mut list = data.vec16("protocol_name_list")?;
    if list.is_empty() {
        return Err(HelloError::Invalid("empty protocol_name_list"));
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let name = list.vec8("protocol name")?;
        if name.is_empty() {
            return Err(HelloError::Invalid("empty protocol name"));
        }
        if !is_grease(name.buf) {
            out.push(name.buf.to_vec());
        }
    }
    Ok(out)
}

/// An RFC 8701 GREASE value: two equal bytes of the form 0x?A.
fn is_grease(v: &[u8]) -> bool {
    matches!(v, [a, b] if a == b && a & 0x0f == 0x0a)
}

#[cfg(test)]
mod tests;
