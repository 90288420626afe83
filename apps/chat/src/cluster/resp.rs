//! RESP2 on a framework connection, through the `redis-protocol` codec
//! (sans-I/O: commands are encoded into the connection's send buffer,
//! replies decoded from what `on_data` offers).

use redis_protocol::resp2::{
    decode::decode,
    encode::encode_borrowed,
    types::{BorrowedFrame, OwnedFrame},
};

/// The most bytes one reply may take before the link calls the engine
/// broken (a reply this large is not one of ours).
pub const MAX_REPLY: usize = 16 << 20;

/// Appends `args` as one command (an array of bulk strings) to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let frames: Vec<BorrowedFrame<'_>> =
        args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&frames);
    let len = frame.encode_len(false);
    let start = out.len();
    out.resize(start + len, 0);
    // The buffer is exactly the frame's length: encoding cannot fail.
    let n = encode_borrowed(&mut out[start..], &frame, false).unwrap_or(0);
    out.truncate(start + n);
}

/// What decoding the bytes a link received gave.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A whole reply, and the bytes it took.
    Frame(OwnedFrame, usize),
    /// Not a whole reply yet.
    Incomplete,
    /// Not RESP2, or a reply over [`MAX_REPLY`]: the link is broken.
    Broken(String),
}

/// Decodes the first reply of `buf`.
pub fn decode_reply(buf: &[u8]) -> Decoded {
    match decode(buf) {
        Ok(Some((frame, used))) => Decoded::Frame(frame, used),
        Ok(None) if buf.len() > MAX_REPLY => {
            Decoded::Broken(format!("a reply over {MAX_REPLY} bytes"))
        }
        Ok(None) => Decoded::Incomplete,
        Err(e) => Decoded::Broken(format!("not RESP2: {e:?}")),
    }
}

/// A reply's text, for a bulk or simple string.
pub fn text(frame: &OwnedFrame) -> Option<&str> {
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"v a\r\nlue"]);
        encode_command(&mut out, &[b"PING"]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$8\r\nv a\r\nlue\r\n*1\r\n$4\r\nPING\r\n"
        );
        let replies = b"+OK\r\n$-1\r\n*2\r\n$1\r\na\r\n:5\r\n-ERR bad\r\n$3\r\nab";
        let mut at = 0;
        let mut got = Vec::new();
        while let Decoded::Frame(f, n) = decode_reply(&replies[at..]) {
            got.push(f);
            at += n;
        }
        assert_eq!(
            got,
            vec![
                OwnedFrame::SimpleString(b"OK".to_vec()),
                OwnedFrame::Null,
                OwnedFrame::Array(vec![
                    OwnedFrame::BulkString(b"a".to_vec()),
                    OwnedFrame::Integer(5)
                ]),
                OwnedFrame::Error("ERR bad".into()),
            ]
        );
        assert_eq!(decode_reply(&replies[at..]), Decoded::Incomplete);
        assert!(matches!(decode_reply(b"?junk\r\n"), Decoded::Broken(_)));
        assert_eq!(text(&got[0]), Some("OK"));
        assert_eq!(text(&got[1]), None);
    }
}
