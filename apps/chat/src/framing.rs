//! Cuts a connection's byte stream into lines.
//!
//! A line ends at CR, at LF, or at CR LF; empty lines (so also the LF of a CR LF
//! split across reads, and bare CR/LF runs) are skipped. A line longer than the
//! limit is reported once as [`Frame::TooLong`] and its bytes are discarded up to
//! the next terminator, so a client that never sends a newline costs at most the
//! limit in buffered input.

use std::ops::Range;

/// What the next bytes of a stream hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, non-empty line: its range in the buffer given, without the
    /// terminator.
    Line(Range<usize>),
    /// A line longer than the limit (discarded).
    TooLong,
}

/// Per-connection framing state.
#[derive(Debug, Default, Clone)]
pub struct LineReader {
    /// Discarding the rest of an over-long line.
    skipping: bool,
}

impl LineReader {
    /// Finds the next frame in `buf`, lines being at most `max` bytes. Returns the
    /// frame (`None` when `buf` holds no complete one) and how many leading bytes of
    /// `buf` are used up and must be dropped before the next call (with `None`: the
    /// skipped terminators and discarded over-long bytes).
    pub fn next_frame(&mut self, buf: &[u8], max: usize) -> (Option<Frame>, usize) {
        let mut start = 0;
        loop {
            let rest = &buf[start..];
            let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                if self.skipping {
                    return (None, buf.len());
                }
                if rest.len() > max {
                    self.skipping = true;
                    return (Some(Frame::TooLong), buf.len());
                }
                return (None, start);
            };
            let used = start + end + 1;
            if self.skipping {
                self.skipping = false;
                start = used;
                continue;
            }
            if end == 0 {
                start = used;
                continue;
            }
            if end > max {
                return (Some(Frame::TooLong), used);
            }
            return (Some(Frame::Line(start..start + end)), used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, ()>> {
        let mut r = LineReader::default();
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let (frame, used) = r.next_frame(&input[pos..], max);
            match frame {
                Some(Frame::Line(range)) => {
                    out.push(Ok(input[pos + range.start..pos + range.end].to_vec()))
                }
                Some(Frame::TooLong) => out.push(Err(())),
                None => break,
            }
            pos += used;
        }
        out
    }

    #[test]
    fn terminators() {
        assert_eq!(
            lines(b"A\r\nB\nC\rD\r\n\r\n\nE", 10),
            vec![
                Ok(b"A".to_vec()),
                Ok(b"B".to_vec()),
                Ok(b"C".to_vec()),
                Ok(b"D".to_vec())
            ]
        );
    }

    #[test]
    fn too_long_is_reported_once_and_skipped() {
        assert_eq!(
            lines(b"0123456789ABC\r\nok\r\n", 10),
            vec![Err(()), Ok(b"ok".to_vec())]
        );
        let mut r = LineReader::default();
        let (f, used) = r.next_frame(b"0123456789ABC", 10);
        assert_eq!((f, used), (Some(Frame::TooLong), 13));
        let (f, used) = r.next_frame(b"DEF", 10);
        assert_eq!((f, used), (None, 3), "still skipping");
        let (f, used) = r.next_frame(b"GH\nok\n", 10);
        assert_eq!((f, used), (Some(Frame::Line(3..5)), 6));
    }

    #[test]
    fn partial_line_waits() {
        let mut r = LineReader::default();
        assert_eq!(r.next_frame(b"\r\nNICK a", 10), (None, 2));
    }
}
