//! The on-disk format: the file header, record framing and the record payloads
//! (a small hand-written binary encoding; see the module doc of [`super`]).

use std::{fmt, sync::Arc};

use super::crc::{crc32, Crc32};

/// The first 8 bytes of every partition file.
pub const MAGIC: [u8; 8] = *b"SLCHATST";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Header: magic, version (u32), partition (u16), partition count (u16), CRC-32
/// of those 16 bytes (u32); little-endian.
pub const HEADER_LEN: usize = 20;
/// Frame header: payload length (u32) and CRC-32 (u32) of the length's 4 bytes
/// followed by the payload.
pub const FRAME_HEADER: usize = 8;
/// The largest payload a frame may carry. Bigger ones are refused when written
/// and taken as damage when read.
pub const MAX_PAYLOAD: usize = 64 * 1024;

const KIND_ACCOUNT_PUT: u8 = 1;
const KIND_ACCOUNT_DELETE: u8 = 2;
const KIND_MESSAGE: u8 = 3;

/// A registered account, as stored. `Debug` leaves the password hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The name as registered (display form; the key is its casefold).
    pub name: String,
    /// The password hash, a PHC string (`$argon2id$...`); empty if the account
    /// has no password (certificate only).
    pub password_hash: String,
    /// When it was registered, milliseconds since the Unix epoch.
    pub created: u64,
    /// TLS client certificate fingerprints that log in as this account.
    pub cert_fingerprints: Vec<String>,
    /// Flags for the chat to define (operator, suspended, ...); stored as is.
    pub flags: u64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("created", &self.created)
            .field("cert_fingerprints", &self.cert_fingerprints)
            .field("flags", &self.flags)
            .finish()
    }
}

/// The command a stored message was sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `PRIVMSG`.
    Privmsg,
    /// `NOTICE`.
    Notice,
    /// `TAGMSG` (no text).
    Tagmsg,
}

impl MessageKind {
    /// The IRC command.
    pub fn command(self) -> &'static str {
        match self {
            MessageKind::Privmsg => "PRIVMSG",
            MessageKind::Notice => "NOTICE",
            MessageKind::Tagmsg => "TAGMSG",
        }
    }

    fn code(self) -> u8 {
        match self {
            MessageKind::Privmsg => 0,
            MessageKind::Notice => 1,
            MessageKind::Tagmsg => 2,
        }
    }

    fn from_code(c: u8) -> Option<MessageKind> {
        Some(match c {
            0 => MessageKind::Privmsg,
            1 => MessageKind::Notice,
            2 => MessageKind::Tagmsg,
            _ => return None,
        })
    }
}

/// One message of a channel's or a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The history it belongs to: a [`super::channel_key`] or a
    /// [`super::conversation_key`].
    pub target: Arc<str>,
    /// The target as the sender wrote it (channel name or recipient nick), for
    /// replaying the line.
    pub to: String,
    /// The `msgid` tag it was delivered with.
    pub msgid: String,
    /// Server time, milliseconds since the Unix epoch (the `time` tag).
    pub time: u64,
    /// The sender, `nick!user@host`.
    pub source: String,
    /// The sender's account, empty if none.
    pub account: String,
    /// PRIVMSG, NOTICE or TAGMSG.
    pub kind: MessageKind,
    /// Client tags to replay, in IRC wire form without the leading `@` (empty if
    /// none).
    pub tags: String,
    /// The text (empty for TAGMSG).
    pub text: String,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An account created or changed: replaces any account of the same key.
    AccountPut(Account),
    /// An account removed, by name (any casing).
    AccountDelete(String),
    /// A message appended to a history.
    Message(Message),
    /// A message placed in its history by its time (see
    /// `Memory::insert_message`): one another node kept while this one
    /// missed it. Encoded as a `Message` record with one more field, `1`
    /// (so a reader from before it takes it as a plain append).
    CaughtUp(Message),
}

/// A record whose encoding would exceed [`MAX_PAYLOAD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge(pub usize);

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The header of partition `partition`'s file.
pub fn header(partition: u16) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..14].copy_from_slice(&partition.to_le_bytes());
    h[14..16].copy_from_slice(&super::key::PARTITIONS.to_le_bytes());
    let crc = crc32(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What is wrong with a file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Shorter than a header but a prefix of the right one: a file whose
    /// creation was cut short, holding no record.
    Partial,
    /// Not a store file, another version, or another partition's file.
    Invalid(String),
}

/// Checks the first bytes of partition `partition`'s file.
pub fn check_header(bytes: &[u8], partition: u16) -> Result<(), HeaderProblem> {
    let want = header(partition);
    if bytes.len() < HEADER_LEN {
        return if want.starts_with(bytes) {
            Err(HeaderProblem::Partial)
        } else {
            Err(HeaderProblem::Invalid(
                "too short for a header and not the start of one".into(),
            ))
        };
    }
    let h = &bytes[..HEADER_LEN];
    if h[..8] != MAGIC {
        return Err(HeaderProblem::Invalid(
            "bad magic: not a shardline-chat store file".into(),
        ));
    }
    if crc32(&h[..16]).to_le_bytes() != h[16..20] {
        return Err(HeaderProblem::Invalid("header checksum mismatch".into()));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(HeaderProblem::Invalid(format!(
            "format version {version}, this server reads version {VERSION}"
        )));
    }
    let part = u16::from_le_bytes([h[12], h[13]]);
    let parts = u16::from_le_bytes([h[14], h[15]]);
    if parts != super::key::PARTITIONS || part != partition {
        return Err(HeaderProblem::Invalid(format!(
            "header says partition {part} of {parts}, expected {partition} of {}",
            super::key::PARTITIONS
        )));
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends one frame to `out`, its payload written by `body`; on
/// [`TooLarge`] `out` is left as it was. Returns the frame's size.
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) -> Result<usize, TooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    body(out);
    let len = out.len() - start - FRAME_HEADER;
    if len > MAX_PAYLOAD {
        out.truncate(start);
        return Err(TooLarge(len));
    }
    let len_bytes = (len as u32).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len_bytes);
    let mut crc = Crc32::new();
    crc.update(&len_bytes);
    crc.update(&out[start + FRAME_HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.finish().to_le_bytes());
    Ok(out.len() - start)
}

/// Appends an `AccountPut` frame.
pub fn encode_account_put(out: &mut Vec<u8>, a: &Account) -> Result<usize, TooLarge> {
    frame(out, |o| {
        o.push(KIND_ACCOUNT_PUT);
        put_str(o, &a.name);
        put_str(o, &a.password_hash);
        put_varint(o, a.created);
        put_varint(o, a.flags);
        put_varint(o, a.cert_fingerprints.len() as u64);
        for fp in &a.cert_fingerprints {
            put_str(o, fp);
        }
    })
}

/// Appends an `AccountDelete` frame.
pub fn encode_account_delete(out: &mut Vec<u8>, name: &str) -> Result<usize, TooLarge> {
    frame(out, |o| {
        o.push(KIND_ACCOUNT_DELETE);
        put_str(o, name);
    })
}

/// Appends a `Message` frame.
pub fn encode_message(out: &mut Vec<u8>, m: &Message) -> Result<usize, TooLarge> {
    encode_placed(out, m, false)
}

/// Appends a `Message` frame, placed by its time if `caught_up`
/// ([`Record::CaughtUp`]).
pub fn encode_placed(out: &mut Vec<u8>, m: &Message, caught_up: bool) -> Result<usize, TooLarge> {
    frame(out, |o| {
        o.push(KIND_MESSAGE);
        put_str(o, &m.target);
        put_str(o, &m.to);
        put_str(o, &m.msgid);
        put_varint(o, m.time);
        put_str(o, &m.source);
        put_str(o, &m.account);
        o.push(m.kind.code());
        put_str(o, &m.tags);
        put_str(o, &m.text);
        if caught_up {
            put_varint(o, 1);
        }
    })
}

/// Appends the frame of any record.
#[cfg(test)]
pub fn encode(out: &mut Vec<u8>, r: &Record) -> Result<usize, TooLarge> {
    match r {
        Record::AccountPut(a) => encode_account_put(out, a),
        Record::AccountDelete(name) => encode_account_delete(out, name),
        Record::Message(m) => encode_message(out, m),
        Record::CaughtUp(m) => encode_placed(out, m, true),
    }
}

/// The size of a record's frame.
#[cfg(test)]
pub fn frame_size(r: &Record) -> usize {
    let mut v = Vec::new();
    encode(&mut v, r).unwrap_or(0)
}

/// A frame found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole frame with a valid checksum: payload at `offset + FRAME_HEADER`,
    /// `len` bytes.
    Valid {
        /// Payload length.
        len: usize,
    },
    /// The frame header or payload runs past the end of the buffer.
    Truncated,
    /// A length out of range or a checksum that does not match.
    Bad,
}

/// Reads the frame starting at `off` in `buf`.
pub fn frame_at(buf: &[u8], off: usize) -> Frame {
    let Some(head) = buf.get(off..off.saturating_add(FRAME_HEADER)) else {
        return Frame::Truncated;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    // Every payload holds at least its kind byte.
    if len == 0 || len > MAX_PAYLOAD {
        return Frame::Bad;
    }
    let start = off + FRAME_HEADER;
    let Some(payload) = buf.get(start..start + len) else {
        return Frame::Truncated;
    };
    let mut c = Crc32::new();
    c.update(&head[..4]);
    c.update(payload);
    if c.finish() == crc {
        Frame::Valid { len }
    } else {
        Frame::Bad
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError("payload ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError("integer overflows 64 bits"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("integer overflows 64 bits"))
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| DecodeError("string length"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError("string runs past the payload"))?;
        let s = std::str::from_utf8(&self.buf[self.pos..end])
            .map_err(|_| DecodeError("string is not UTF-8"))?;
        self.pos = end;
        Ok(s)
    }
}

/// Decodes a payload. Bytes after the fields this version knows are ignored, so
/// a later version may add fields at the end of a record without a new format
/// version.
pub fn decode(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    match r.u8()? {
        KIND_ACCOUNT_PUT => {
            let name = r.str()?.to_owned();
            let password_hash = r.str()?.to_owned();
            let created = r.varint()?;
            let flags = r.varint()?;
            let n = r.varint()?;
            let mut cert_fingerprints = Vec::new();
            for _ in 0..n {
                cert_fingerprints.push(r.str()?.to_owned());
            }
            Ok(Record::AccountPut(Account {
                name,
                password_hash,
                created,
                cert_fingerprints,
                flags,
            }))
        }
        KIND_ACCOUNT_DELETE => Ok(Record::AccountDelete(r.str()?.to_owned())),
        KIND_MESSAGE => {
            let target: Arc<str> = r.str()?.into();
            let to = r.str()?.to_owned();
            let msgid = r.str()?.to_owned();
            let time = r.varint()?;
            let source = r.str()?.to_owned();
            let account = r.str()?.to_owned();
            let kind = MessageKind::from_code(r.u8()?).ok_or(DecodeError("unknown command"))?;
            let tags = r.str()?.to_owned();
            let text = r.str()?.to_owned();
            let m = Message {
                target,
                to,
                msgid,
                time,
                source,
                account,
                kind,
                tags,
                text,
            };
            // The placement, if given (later fields are ignored).
            if r.pos < r.buf.len() && r.varint()? == 1 {
                Ok(Record::CaughtUp(m))
            } else {
                Ok(Record::Message(m))
            }
        }
        _ => Err(DecodeError("unknown record kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,20}", "[a-z#!@ ]{0,12}"]
    }

    fn account() -> impl Strategy<Value = Account> {
        (
            text(),
            text(),
            any::<u64>(),
            proptest::collection::vec(text(), 0..4),
            any::<u64>(),
        )
            .prop_map(
                |(name, password_hash, created, cert_fingerprints, flags)| Account {
                    name,
                    password_hash,
                    created,
                    cert_fingerprints,
                    flags,
                },
            )
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            (text(), text(), text(), any::<u64>()),
            (text(), text(), 0u8..3, text(), text()),
        )
            .prop_map(
                |((target, to, msgid, time), (source, account, k, tags, text))| Message {
                    target: target.into(),
                    to,
                    msgid,
                    time,
                    source,
                    account,
                    kind: MessageKind::from_code(k).unwrap_or(MessageKind::Privmsg),
                    tags,
                    text,
                },
            )
    }

    pub(crate) fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            account().prop_map(Record::AccountPut),
            text().prop_map(Record::AccountDelete),
            message().prop_map(Record::Message),
            message().prop_map(Record::CaughtUp),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(records in proptest::collection::vec(record(), 0..8)) {
            let mut buf = Vec::new();
            for r in &records {
                encode(&mut buf, r).unwrap();
            }
            let mut off = 0;
            for r in &records {
                let Frame::Valid { len } = frame_at(&buf, off) else {
                    panic!("frame at {off} does not read back");
                };
                let payload = &buf[off + FRAME_HEADER..off + FRAME_HEADER + len];
                prop_assert_eq!(&decode(payload).unwrap(), r);
                prop_assert_eq!(frame_size(r), FRAME_HEADER + len);
                off += FRAME_HEADER + len;
            }
            prop_assert_eq!(off, buf.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            for off in 0..bytes.len() + 2 {
                let _ = frame_at(&bytes, off);
            }
            let _ = check_header(&bytes, 3);
        }

        #[test]
        fn any_flipped_bit_is_caught(r in record(), bit in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            encode(&mut buf, &r).unwrap();
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert_ne!(frame_at(&buf, 0), Frame::Valid { len: buf.len() - FRAME_HEADER });
        }
    }

    #[test]
    fn oversized_records_are_refused_and_leave_the_buffer_alone() {
        let mut buf = vec![1, 2, 3];
        let m = Message {
            target: "#a".into(),
            to: "#a".into(),
            msgid: "x".into(),
            time: 1,
            source: "n!u@h".into(),
            account: String::new(),
            kind: MessageKind::Privmsg,
            tags: String::new(),
            text: "y".repeat(MAX_PAYLOAD),
        };
        assert!(matches!(encode_message(&mut buf, &m), Err(TooLarge(_))));
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn headers() {
        let h = header(7);
        assert_eq!(check_header(&h, 7), Ok(()));
        assert!(matches!(
            check_header(&h, 8),
            Err(HeaderProblem::Invalid(e)) if e.contains("partition 7")
        ));
        assert_eq!(check_header(&h[..5], 7), Err(HeaderProblem::Partial));
        assert_eq!(check_header(&[], 7), Err(HeaderProblem::Partial));
        assert!(matches!(
            check_header(b"GARBAGE", 7),
            Err(HeaderProblem::Invalid(_))
        ));
        let mut v2 = h;
        v2[8] = 2;
        let crc = crc32(&v2[..16]);
        v2[16..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_header(&v2, 7),
            Err(HeaderProblem::Invalid(e)) if e.contains("version 2")
        ));
    }
}
