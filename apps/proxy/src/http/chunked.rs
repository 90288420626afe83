//! A streaming decoder for the chunked transfer coding (RFC 9112 §7.1), strict:
//! it holds no body bytes (data is handed out as slices of the input), only the
//! few bytes of state a chunk-size line needs, so a body of any size streams
//! through in constant memory.
//!
//! Rejected: a chunk size that is empty, not hexadecimal, longer than 16 digits
//! (overflow), preceded by whitespace or followed by anything but `;extensions`;
//! a line not ended by CR LF (bare LF, bare CR); chunk data not followed by CR LF;
//! control characters in extensions; trailer sections over 8 KiB. Trailer fields
//! are consumed and dropped (the proxy re-encodes the body without them).

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk-size line is not `1*HEXDIG [ext] CRLF`.
    #[error("bad chunk size line")]
    BadSize,
    /// The chunk size does not fit 64 bits.
    #[error("chunk size too large")]
    SizeOverflow,
    /// A line ended with LF alone, or CR was not followed by LF.
    #[error("bad line ending in chunked body")]
    BadLineEnd,
    /// Chunk data was not followed by CR LF.
    #[error("chunk data not followed by CRLF")]
    MissingDataEnd,
    /// The chunk-size line or the trailer section is too long.
    #[error("chunk line or trailer section too long")]
    TooLong,
}

/// Longest chunk-size line (with extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk-size digits (`digits` seen so far).
    Size { digits: u8 },
    /// In chunk extensions, after the size.
    Ext,
    /// Saw CR at the end of the size line; LF must follow.
    SizeLf,
    /// In chunk data.
    Data,
    /// After chunk data: CR must follow.
    DataCr,
    /// After chunk data and CR: LF must follow.
    DataLf,
    /// In the trailer section; `line` bytes into the current line.
    Trailer { line: usize },
    /// Saw CR in the trailer section.
    TrailerLf { line: usize },
    /// The last chunk and its trailers are done.
    Done,
}

/// Streaming chunked decoder. Feed it input with [`ChunkedDecoder::decode`].
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    /// Bytes of the current size line / trailer section (for the limits).
    line_bytes: usize,
    /// Body bytes decoded so far.
    total: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            line_bytes: 0,
            total: 0,
        }
    }

    /// Whether the whole body (last chunk and trailers) has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes decoded so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether the first chunk-size line has been read completely (so the body is
    /// known to start well-formed).
    pub fn past_first_size_line(&self) -> bool {
        !matches!(self.state, State::Size { .. } | State::Ext | State::SizeLf) || self.total > 0
    }

    /// Decodes as much of `input` as it can, calling `data` with each run of body
    /// bytes (slices of `input`). Returns how many bytes of `input` were consumed:
    /// all of it, unless the body ended inside it (the rest belongs to whatever
    /// follows the body).
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
        mut data: impl FnMut(&'a [u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(v) = hex(b) {
                        if digits >= 16 {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = (self.size << 4) | u64::from(v);
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError::BadSize);
                    } else if b == b';' {
                        self.state = State::Ext;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    } else {
                        return Err(ChunkError::BadSize);
                    }
                    self.count_line()?;
                    i += 1;
                }
                State::Ext => {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError::BadLineEnd),
                        b'\t' | b' '..=b'~' => {}
                        _ => return Err(ChunkError::BadSize),
                    }
                    self.count_line()?;
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    i += 1;
                    self.line_bytes = 0;
                    self.state = if self.size == 0 {
                        State::Trailer { line: 0 }
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    data(&input[i..i + n]);
                    i += n;
                    self.size -= n as u64;
                    self.total += n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::MissingDataEnd);
                    }
                    self.state = State::DataLf;
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::MissingDataEnd);
                    }
                    self.state = State::Size { digits: 0 };
                    self.size = 0;
                    self.line_bytes = 0;
                    i += 1;
                }
                State::Trailer { line } => {
                    match b {
                        b'\r' => self.state = State::TrailerLf { line },
                        b'\n' => return Err(ChunkError::BadLineEnd),
                        _ => self.state = State::Trailer { line: line + 1 },
                    }
                    self.count_trailer()?;
                    i += 1;
                }
                State::TrailerLf { line } => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnd);
                    }
                    i += 1;
                    self.count_trailer()?;
                    if line == 0 {
                        self.state = State::Done;
                        return Ok(i);
                    }
                    self.state = State::Trailer { line: 0 };
                }
                State::Done => return Ok(i),
            }
        }
        Ok(i)
    }

    fn count_line(&mut self) -> Result<(), ChunkError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_SIZE_LINE {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_TRAILERS {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Writes the chunk header for `len` bytes of data into `out`.
pub fn encode_chunk_header(len: usize, out: &mut Vec<u8>) {
    // Lower-case hex, no leading zeros, without the formatting machinery.
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            let n = d.decode(piece, |s| body.extend_from_slice(s))?;
            used += n;
            if d.is_done() {
                break;
            }
        }
        Ok((body, used, d.is_done()))
    }

    #[test]
    fn decodes_in_any_split() {
        let input = b"5\r\nhello\r\n7;name=val\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, used, done) = decode_all(input, step).expect("valid");
            assert_eq!(body, b"hello, world", "step {step}");
            assert!(done);
            assert_eq!(used, input.len() - 4, "stops before the next message");
        }
    }

    #[test]
    fn uppercase_hex_and_large_sizes() {
        let mut input = b"1A\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 26));
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let (body, _, done) = decode_all(&input, 7).expect("valid");
        assert_eq!(body.len(), 26);
        assert!(done);
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"\r\n", ChunkError::BadSize),
            (b"g\r\n", ChunkError::BadSize),
            (b" 5\r\nhello\r\n", ChunkError::BadSize),
            (b"5 \r\nhello\r\n", ChunkError::BadSize),
            (b"-5\r\n", ChunkError::BadSize),
            (b"0x5\r\nhello\r\n", ChunkError::BadSize),
            (b"5\nhello\r\n", ChunkError::BadLineEnd),
            (b"5\rhello\r\n", ChunkError::BadLineEnd),
            (b"5\r\nhelloX\r\n", ChunkError::MissingDataEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingDataEnd),
            (b"11111111111111111\r\n", ChunkError::SizeOverflow),
            (b"0\r\nX: 1\n\r\n", ChunkError::BadLineEnd),
            (b"5;a\x01\r\nhello\r\n", ChunkError::BadSize),
        ];
        for (input, want) in cases {
            for step in [1, 3, input.len()] {
                assert_eq!(
                    decode_all(input, step).map(|_| ()),
                    Err(*want),
                    "{:?} step {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn limits_line_and_trailer_lengths() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert_eq!(decode_all(&long, 100).map(|_| ()), Err(ChunkError::TooLong));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..1000 {
            trailers.extend_from_slice(b"X-Trailer: 1234\r\n");
        }
        assert_eq!(
            decode_all(&trailers, 100).map(|_| ()),
            Err(ChunkError::TooLong)
        );
    }

    #[test]
    fn first_size_line_is_known() {
        let mut d = ChunkedDecoder::new();
        d.decode(b"5", |_| {}).expect("partial");
        assert!(!d.past_first_size_line());
        d.decode(b"\r\n", |_| {}).expect("line");
        assert!(d.past_first_size_line());
    }
}
