//! Arbitrary bytes through the PROXY protocol parser
//! (`shardline::proxy_protocol::parse`), which the framework runs on the
//! first bytes of every connection of a listener with PROXY protocol on
//! (the proxy's and the chat's). Invariants checked:
//!
//! - nothing panics;
//! - a complete header is at most 107 bytes (v1) or `MAX_HEADER_LEN` (v2),
//!   and within the input;
//! - incremental: every prefix shorter than a complete header is
//!   `Incomplete`, every longer input gives the same header and length (the
//!   framework re-parses what it holds after each read); an input that is
//!   refused is refused with every byte added, and a prefix of an
//!   undecided input is undecided too;
//! - a header with addresses, encoded again as v1 and v2, parses back to the
//!   same addresses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline::proxy_protocol::{
    encode_v1, encode_v2, parse, Parsed, Version, MAX_HEADER_LEN, V1_MAX_LEN,
};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    // Each prefix (at most the first 300 lengths, to stay fast on long inputs).
    for k in 0..data.len().min(300) {
        let part = parse(&data[..k]);
        match (&whole, &part) {
            (Ok(Parsed::Complete { len, .. }), _) if k < *len => {
                assert_eq!(
                    part,
                    Ok(Parsed::Incomplete),
                    "prefix {k} of a header of {len}"
                )
            }
            (Ok(Parsed::Complete { .. }), _) => assert_eq!(part, whole, "prefix {k}"),
            (Ok(Parsed::Incomplete), _) => assert_eq!(part, Ok(Parsed::Incomplete), "prefix {k}"),
            // Refused in the end: a prefix is undecided or refused.
            (Err(_), Ok(Parsed::Complete { .. })) => panic!("prefix {k} complete, whole refused"),
            (Err(_), _) => {}
        }
    }
    let Ok(Parsed::Complete { header, len }) = whole else {
        return;
    };
    assert!(len <= data.len());
    match header.version {
        Version::V1 => assert!(len <= V1_MAX_LEN),
        Version::V2 => assert!(len <= MAX_HEADER_LEN && len >= 16),
    }
    // The payload after it does not change the header.
    let mut more = data[..len].to_vec();
    more.extend_from_slice(b"payload");
    assert_eq!(parse(&more), Ok(Parsed::Complete { header, len }));
    if let Some(a) = header.addresses {
        for v2 in [false, true] {
            let mut out = Vec::new();
            if v2 {
                encode_v2(a.source, a.destination, &mut out);
            } else {
                encode_v1(a.source, a.destination, &mut out);
            }
            match parse(&out) {
                Ok(Parsed::Complete { header: h, len: n }) => {
                    assert_eq!(n, out.len());
                    assert_eq!(h.addresses, Some(a));
                }
                other => panic!("re-encoded {a:?}: {other:?}"),
            }
        }
    }
});
