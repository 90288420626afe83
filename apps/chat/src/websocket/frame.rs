//! The WebSocket frame codec (RFC 6455 section 5), server side: a strict
//! decoder of client frames and an encoder of unmasked server frames.
//!
//! The decoder works on the bytes the framework hands to `on_data` and says
//! how many it used; a frame that is not complete yet is left unconsumed (the
//! framework keeps it and presents it again with the next bytes). It never
//! holds more than one message being reassembled, bounded by `max_message`,
//! and it refuses a frame whose *header* already announces too much, before
//! any of its payload arrives.
//!
//! Strictness (each failure is a [`WsError`] naming the close code to send):
//! client frames must be masked; reserved bits must be clear and the opcode
//! known; lengths must use the shortest encoding (and the 64-bit form its
//! top bit clear); control frames (close, ping, pong) carry at most 125 bytes
//! and are never fragmented; a continuation needs a message in progress and a
//! new text or binary frame needs none; a close frame's status is absent or a
//! code an endpoint may send, and its reason is UTF-8 (1002 / 1007); a text
//! message is UTF-8, checked as each fragment arrives (1007); a message over
//! `max_message` bytes is 1009.

/// Frame opcodes.
pub mod opcode {
    /// A continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text message (UTF-8).
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// The closing handshake.
    pub const CLOSE: u8 = 0x8;
    /// A ping (answered with a pong carrying the same payload).
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// Close status codes this server sends.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutting down).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data inconsistent with the message type (text that is not UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// A policy violation.
    pub const POLICY: u16 = 1008;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
}

/// The most payload a control frame may carry.
pub const MAX_CONTROL: usize = 125;

/// Why the decoder gave up on a connection: the close code to send and a
/// short reason (sent in the close frame, at most 123 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsError {
    /// The close status code.
    pub code: u16,
    /// What was wrong.
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> WsError {
    WsError {
        code: close_code::PROTOCOL,
        reason,
    }
}

/// What one complete frame (or the end of a fragmented message) means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message (fragments joined), unmasked; `text` if it was a text
    /// message (then valid UTF-8).
    Message {
        /// A text message (else binary).
        text: bool,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A ping: answer with a pong carrying `payload`.
    Ping(Vec<u8>),
    /// A pong (unsolicited ones are allowed; nothing to do).
    Pong,
    /// The peer starts or answers the closing handshake, with its status code
    /// if it gave one.
    Close(Option<u16>),
    /// A fragment of a message that is not complete yet was taken in.
    Fragment,
}

/// The decoder's state for one connection: the message being reassembled.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_message: usize,
    /// A fragmented message in progress: text or not.
    partial: Option<bool>,
    buf: Vec<u8>,
}

/// Whether `code` is a status an endpoint may put in a close frame
/// (RFC 6455 7.4: 1000-1003, 1007-1011, and the registered and private
/// ranges 3000-4999).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

impl Decoder {
    /// A decoder taking messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            partial: None,
            buf: Vec::new(),
        }
    }

    /// The most a message may carry.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Bytes of a fragmented message held so far.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Decodes the next frame at the start of `input`. Returns the event and
    /// how many bytes it used, or `(None, 0)` when `input` does not hold a
    /// whole frame yet (keep it and call again with more). An error is final:
    /// close the connection with its code.
    pub fn next(&mut self, input: &[u8]) -> Result<(Option<Event>, usize), WsError> {
        let [b0, b1, ..] = *input else {
            return Ok((None, 0));
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(protocol("reserved bits set"));
        }
        let op = b0 & 0x0f;
        let control = op & 0x8 != 0;
        match op {
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
            opcode::CLOSE | opcode::PING | opcode::PONG => {}
            _ => return Err(protocol("unknown opcode")),
        }
        if b1 & 0x80 == 0 {
            return Err(protocol("client frames must be masked"));
        }
        if control && !fin {
            return Err(protocol("fragmented control frame"));
        }
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                let Some(b) = input.get(2..4) else {
                    return Ok((None, 0));
                };
                let len = u16::from_be_bytes([b[0], b[1]]) as u64;
                if len < 126 {
                    return Err(protocol("length not in its shortest form"));
                }
                (len, 4)
            }
            127 => {
                let Some(b) = input.get(2..10) else {
                    return Ok((None, 0));
                };
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let len = u64::from_be_bytes(a);
                if len >> 63 != 0 {
                    return Err(protocol("length with its top bit set"));
                }
                if len <= 0xffff {
                    return Err(protocol("length not in its shortest form"));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        if control && len > MAX_CONTROL as u64 {
            return Err(protocol("control frame over 125 bytes"));
        }
        if !control {
            match (op, self.partial) {
                (opcode::CONTINUATION, None) => {
                    return Err(protocol("continuation without a message"))
                }
                (opcode::TEXT | opcode::BINARY, Some(_)) => {
                    return Err(protocol("new message inside a fragmented one"))
                }
                _ => {}
            }
            // Refused on the header alone: nothing of an oversize frame is
            // ever buffered.
            if (self.buf.len() as u64).saturating_add(len) > self.max_message as u64 {
                return Err(WsError {
                    code: close_code::TOO_BIG,
                    reason: "message too big",
                });
            }
        }
        let Some(key) = input.get(at..at + 4) else {
            return Ok((None, 0));
        };
        let key = [key[0], key[1], key[2], key[3]];
        at += 4;
        // `len` is bounded above (control: 125; data: max_message).
        let len = len as usize;
        let Some(masked) = input.get(at..at + len) else {
            return Ok((None, 0));
        };
        let used = at + len;
        if control {
            let payload = unmask(masked, key, 0);
            let event = match op {
                opcode::PING => Event::Ping(payload),
                opcode::PONG => Event::Pong,
                _ => close_event(&payload)?,
            };
            return Ok((Some(event), used));
        }
        let text = match op {
            opcode::CONTINUATION => self.partial.unwrap_or(false),
            o => o == opcode::TEXT,
        };
        let start = self.buf.len();
        self.buf.reserve(len);
        self.buf
            .extend(masked.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        if text {
            // Checked as it comes: from a little before this fragment (a
            // character may straddle the cut); an incomplete last character
            // is fine until the message ends.
            let from = start.saturating_sub(3);
            let from = (from..start)
                .find(|&i| i == 0 || !is_continuation(self.buf[i]))
                .unwrap_or(start);
            if let Err(e) = std::str::from_utf8(&self.buf[from..]) {
                if e.error_len().is_some() || fin {
                    return Err(WsError {
                        code: close_code::INVALID_DATA,
                        reason: "text message is not UTF-8",
                    });
                }
            }
        }
        if !fin {
            self.partial = Some(text);
            return Ok((Some(Event::Fragment), used));
        }
        self.partial = None;
        let payload = std::mem::take(&mut self.buf);
        Ok((Some(Event::Message { text, payload }), used))
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

fn unmask(masked: &[u8], key: [u8; 4], offset: usize) -> Vec<u8> {
    masked
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[(offset + i) & 3])
        .collect()
}

fn close_event(payload: &[u8]) -> Result<Event, WsError> {
    match payload {
        [] => Ok(Event::Close(None)),
        [_] => Err(protocol("close frame of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(WsError {
                    code: close_code::INVALID_DATA,
                    reason: "close reason is not UTF-8",
                });
            }
            Ok(Event::Close(Some(code)))
        }
    }
}

/// Appends one unmasked server frame (`fin` set) with `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, op: u8, payload: &[u8]) {
    out.push(0x80 | op);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit 125 bytes, at a
/// character boundary) to `out`.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut cut = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(out, opcode::CLOSE, &payload);
}

/// Appends one frame per IRC line of `lines` to `out`: the lines end at LF
/// (a CR before it is dropped, as is an empty line); a last line without a
/// terminator is a line too. Text frames (`text`) carry valid UTF-8: bytes
/// that are not are replaced with U+FFFD, as the IRCv3 WebSocket
/// specification allows (a browser would drop the connection otherwise).
pub fn encode_lines(out: &mut Vec<u8>, text: bool, lines: &[u8]) {
    for line in lines.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if text {
            let s = String::from_utf8_lossy(line);
            encode(out, opcode::TEXT, s.as_bytes());
        } else {
            encode(out, opcode::BINARY, line);
        }
    }
}

/// A client frame (masked with `key`), for tests and fuzzing.
pub fn encode_client(out: &mut Vec<u8>, fin: bool, op: u8, key: [u8; 4], payload: &[u8]) {
    let start = out.len();
    encode(out, op, payload);
    if !fin {
        out[start] &= 0x7f;
    }
    out[start + 1] |= 0x80;
    let header_end = out.len() - payload.len();
    out.splice(header_end..header_end, key);
    let body = header_end + 4;
    for (i, b) in out[body..].iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_client(&mut v, fin, op, KEY, payload);
        v
    }

    fn all(d: &mut Decoder, mut input: &[u8]) -> Result<Vec<Event>, WsError> {
        let mut out = Vec::new();
        loop {
            let (e, used) = d.next(input)?;
            match e {
                Some(e) => out.push(e),
                None => {
                    assert_eq!(used, 0);
                    return Ok(out);
                }
            }
            input = &input[used..];
        }
    }

    #[test]
    fn masked_text_and_binary_messages() {
        let mut d = Decoder::new(100);
        let mut input = frame(true, opcode::TEXT, "NICK é".as_bytes());
        input.extend(frame(true, opcode::BINARY, b"\xff\x00"));
        let events = all(&mut d, &input).unwrap();
        assert_eq!(
            events,
            [
                Event::Message {
                    text: true,
                    payload: "NICK é".as_bytes().to_vec()
                },
                Event::Message {
                    text: false,
                    payload: b"\xff\x00".to_vec()
                }
            ]
        );
    }

    #[test]
    fn partial_frames_wait_at_every_cut() {
        let input = frame(true, opcode::TEXT, &[b'a'; 300]);
        for cut in 0..input.len() {
            let mut d = Decoder::new(1000);
            assert_eq!(d.next(&input[..cut]), Ok((None, 0)), "cut {cut}");
        }
        let mut d = Decoder::new(1000);
        let (e, used) = d.next(&input).unwrap();
        assert_eq!(used, input.len());
        assert!(
            matches!(e, Some(Event::Message { text: true, payload }) if payload == [b'a'; 300])
        );
    }

    #[test]
    fn fragments_with_control_frames_between() {
        let mut d = Decoder::new(100);
        let mut input = frame(false, opcode::TEXT, b"PRIV");
        input.extend(frame(true, opcode::PING, b"p"));
        input.extend(frame(false, opcode::CONTINUATION, b"MSG #a"));
        input.extend(frame(true, opcode::CONTINUATION, b" :hi"));
        let events = all(&mut d, &input).unwrap();
        assert_eq!(
            events,
            [
                Event::Fragment,
                Event::Ping(b"p".to_vec()),
                Event::Fragment,
                Event::Message {
                    text: true,
                    payload: b"PRIVMSG #a :hi".to_vec()
                }
            ]
        );
    }

    #[test]
    fn protocol_errors() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            // Unmasked.
            (vec![0x81, 0x02, b'h', b'i'], 1002),
            // RSV1.
            (
                {
                    let mut f = frame(true, opcode::TEXT, b"x");
                    f[0] |= 0x40;
                    f
                },
                1002,
            ),
            // Opcodes 3 and 0xB.
            (
                {
                    let mut f = frame(true, opcode::TEXT, b"x");
                    f[0] = 0x83;
                    f
                },
                1002,
            ),
            (
                {
                    let mut f = frame(true, opcode::TEXT, b"x");
                    f[0] = 0x8B;
                    f
                },
                1002,
            ),
            (frame(false, opcode::PING, b""), 1002),
            (frame(true, opcode::PING, &[0; 126]), 1002),
            (frame(true, opcode::CONTINUATION, b"x"), 1002),
            (frame(true, opcode::CLOSE, b"\x03"), 1002),
            (frame(true, opcode::CLOSE, &1005u16.to_be_bytes()), 1002),
            (frame(true, opcode::CLOSE, b"\x03\xe8\xff"), 1007),
            (frame(true, opcode::TEXT, b"\xc3\x28"), 1007),
            // A truncated character at the end of a text message.
            (frame(true, opcode::TEXT, b"ok\xc3"), 1007),
            (frame(true, opcode::BINARY, &[0; 101]), 1009),
            // Length 5 in the 16-bit form.
            (vec![0x81, 0xFE, 0, 5, 1, 2, 3, 4, 0, 0, 0, 0, 0], 1002),
            // Top bit of the 64-bit length.
            (vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1], 1002),
        ];
        for (input, code) in cases {
            let mut d = Decoder::new(100);
            let got = all(&mut d, &input);
            assert_eq!(got.map_err(|e| e.code), Err(code), "{input:x?}");
        }
        // A new message while one is fragmented.
        let mut d = Decoder::new(100);
        let mut input = frame(false, opcode::TEXT, b"a");
        input.extend(frame(true, opcode::TEXT, b"b"));
        assert_eq!(all(&mut d, &input).map_err(|e| e.code), Err(1002));
    }

    #[test]
    fn oversize_is_refused_on_the_header_and_across_fragments() {
        // Only the header of a huge frame: refused before its payload.
        let mut d = Decoder::new(100);
        let header = [0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(d.next(&header).map_err(|e| e.code), Err(1009));
        let mut d = Decoder::new(100);
        let mut input = frame(false, opcode::BINARY, &[0; 60]);
        input.extend(frame(true, opcode::CONTINUATION, &[0; 41]));
        assert_eq!(all(&mut d, &input).map_err(|e| e.code), Err(1009));
        let mut d = Decoder::new(101);
        assert_eq!(all(&mut d, &input).unwrap().len(), 2, "exactly the limit");
    }

    #[test]
    fn utf8_split_across_fragments_is_fine_and_bad_utf8_fails_early() {
        let mut d = Decoder::new(100);
        let mut input = frame(false, opcode::TEXT, b"a\xc3");
        input.extend(frame(true, opcode::CONTINUATION, b"\xa9b"));
        let events = all(&mut d, &input).unwrap();
        assert_eq!(
            events.last(),
            Some(&Event::Message {
                text: true,
                payload: "aéb".as_bytes().to_vec()
            })
        );
        // Invalid in the first fragment: refused before the message ends.
        let mut d = Decoder::new(100);
        let input = frame(false, opcode::TEXT, b"a\xff");
        assert_eq!(d.next(&input).map_err(|e| e.code), Err(1007));
    }

    #[test]
    fn close_frames() {
        let mut d = Decoder::new(100);
        assert_eq!(
            all(&mut d, &frame(true, opcode::CLOSE, b"")).unwrap(),
            [Event::Close(None)]
        );
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        assert_eq!(
            all(&mut d, &frame(true, opcode::CLOSE, &payload)).unwrap(),
            [Event::Close(Some(1000))]
        );
    }

    #[test]
    fn encoder_lengths_and_lines() {
        for len in [0, 125, 126, 65535, 65536] {
            let mut out = Vec::new();
            encode(&mut out, opcode::BINARY, &vec![7; len]);
            let header = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(out.len(), header + len);
            assert_eq!(out[0], 0x82);
        }
        let mut out = Vec::new();
        encode_lines(&mut out, true, b":a 001 x :hi\r\n:a PING \xff\r\n\r\n");
        assert_eq!(out[0], 0x81);
        assert_eq!(&out[2..2 + out[1] as usize], b":a 001 x :hi");
        let second = 2 + out[1] as usize;
        let payload = &out[second + 2..];
        assert_eq!(payload, ":a PING \u{fffd}".as_bytes());
        let mut out = Vec::new();
        encode_close(&mut out, 1000, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= MAX_CONTROL);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
