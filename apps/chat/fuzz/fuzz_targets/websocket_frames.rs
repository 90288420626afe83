//! Arbitrary bytes through the WebSocket frame decoder
//! (`websocket::frame::Decoder`), as a client's stream after the upgrade.
//! Invariants checked:
//!
//! - nothing panics;
//! - `next` uses nothing when it returns no event, something when it returns
//!   one, never more than it was given;
//! - a message is at most `max_message` bytes, a text message is UTF-8, a ping
//!   payload at most 125 bytes, and the reassembly buffer never exceeds
//!   `max_message`;
//! - errors carry a close code an endpoint may send;
//! - the events and the error do not depend on how the stream is cut into
//!   reads (one read vs `chunk`-byte reads, unconsumed bytes kept and presented
//!   again as the framework does);
//! - each message, masked again with `encode_client` (whole or in two
//!   fragments), decodes to the same message.
//!
//! Input layout: byte 0 picks the read size (1..=64), byte 1 the message limit
//! (16 + 4 × byte), the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_chat::websocket::frame::{
    encode_client, opcode, valid_close_code, Decoder, Event, MAX_CONTROL,
};

type Outcome = (Vec<Event>, Option<u16>);

fn decode(stream: &[u8], chunk: usize, max: usize) -> Outcome {
    let mut d = Decoder::new(max);
    let mut held: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for piece in stream.chunks(chunk) {
        held.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            match d.next(&held[pos..]) {
                Ok((None, used)) => {
                    assert_eq!(used, 0);
                    break;
                }
                Ok((Some(e), used)) => {
                    assert!(used > 0 && used <= held.len() - pos);
                    pos += used;
                    check(&e, max);
                    events.push(e);
                }
                Err(e) => {
                    assert!(valid_close_code(e.code), "{e:?}");
                    assert!(e.reason.len() <= MAX_CONTROL - 2);
                    return (events, Some(e.code));
                }
            }
            assert!(d.buffered() <= max);
        }
        held.drain(..pos);
    }
    (events, None)
}

fn check(e: &Event, max: usize) {
    match e {
        Event::Message { text, payload } => {
            assert!(payload.len() <= max);
            if *text {
                assert!(std::str::from_utf8(payload).is_ok());
            }
        }
        Event::Ping(p) => assert!(p.len() <= MAX_CONTROL),
        Event::Close(Some(code)) => assert!(valid_close_code(*code)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [c, m, stream @ ..] = data else {
        return;
    };
    let chunk = usize::from(*c % 64) + 1;
    let max = 16 + 4 * usize::from(*m);
    let whole = decode(stream, stream.len().max(1), max);
    let cut = decode(stream, chunk, max);
    assert_eq!(whole, cut, "chunk {chunk}");
    for e in &whole.0 {
        let Event::Message { text, payload } = e else {
            continue;
        };
        let op = if *text { opcode::TEXT } else { opcode::BINARY };
        let mut again = Vec::new();
        let half = payload.len() / 2;
        encode_client(&mut again, false, op, [1, 2, 3, 4], &payload[..half]);
        encode_client(&mut again, true, opcode::CONTINUATION, [5, 6, 7, 8], &payload[half..]);
        encode_client(&mut again, true, op, [9, 9, 9, 9], payload);
        let (events, err) = decode(&again, again.len(), max);
        assert_eq!(err, None);
        let messages: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .collect();
        assert_eq!(messages, [e, e]);
    }
});
