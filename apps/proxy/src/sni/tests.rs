//! The ClientHello reader: real ClientHellos from rustls, hand-built ones for
//! what rustls does not send (GREASE, odd name types, upper case), and every
//! way of cutting, splitting, truncating and overfilling them.
use std::sync::Arc;

use rand::{rngs::StdRng, Rng, RngCore, SeedableRng};
use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore};

use super::*;

/// rustls's *ring* provider (the one this crate's dev-dependency enables;
/// deprecated for its lack of post-quantum key exchange, which these tests do
/// not need).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The first flight of a rustls client (one ClientHello record) for `name`
/// (`None`: SNI off, the name still used for the connection), offering `alpn`.
fn rustls_hello(name: Option<&str>, alpn: &[&[u8]], tls12_only: bool) -> Vec<u8> {
    let builder = ClientConfig::builder_with_provider(provider());
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .expect("protocol versions");
    let mut config = builder
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = name.is_some();
    let server =
        ServerName::try_from(name.unwrap_or("unnamed.test").to_string()).expect("server name");
    let mut conn = ClientConnection::new(Arc::new(config), server).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

fn hello(name: Option<&str>, alpn: &[&[u8]]) -> Sniff {
    Sniff::Hello(ClientHello {
        server_name: name.map(str::to_string),
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
    })
}

/// A record header.
fn record_header(ty: u8, version: u16, len: usize) -> Vec<u8> {
    let mut h = vec![ty];
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&u16::try_from(len).expect("record length").to_be_bytes());
    h
}

fn u16_vec(data: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(data.len())
        .expect("u16 length")
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(data);
    v
}

fn u8_vec(data: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::try_from(data.len()).expect("u8 length")];
    v.extend_from_slice(data);
    v
}

/// A ClientHello body with the given extensions block (`None`: no block).
fn body_with(exts: Option<&[u8]>) -> Vec<u8> {
    let mut b = vec![0x03, 0x03];
    b.extend_from_slice(&[0x5a; 32]);
    b.extend(u8_vec(&[0x11; 32]));
    // A GREASE suite first, as browsers send.
    b.extend(u16_vec(&[0x3a, 0x3a, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]));
    b.extend(u8_vec(&[0]));
    if let Some(exts) = exts {
        b.extend(u16_vec(exts));
    }
    b
}

/// A handshake message of type `ty` around `body`.
fn handshake(ty: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("length").to_be_bytes();
    let mut m = vec![ty, len[1], len[2], len[3]];
    m.extend_from_slice(body);
    m
}

/// `msg` in records of at most `max` bytes each.
fn records(msg: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(max) {
        out.extend(record_header(22, 0x0301, chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut e = ty.to_be_bytes().to_vec();
    e.extend(u16_vec(data));
    e
}

fn sni_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend(u16_vec(name));
    }
    ext(0, &u16_vec(&list))
}

fn alpn_ext(protocols: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protocols {
        list.extend(u8_vec(p));
    }
    ext(16, &u16_vec(&list))
}

/// One record holding a ClientHello with `exts`.
fn built(exts: &[Vec<u8>]) -> Vec<u8> {
    let block: Vec<u8> = exts.concat();
    records(&handshake(1, &body_with(Some(&block))), MAX_FRAGMENT)
}

fn malformed(input: &[u8]) -> HelloError {
    match sniff(input) {
        Sniff::Malformed(e) => e,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn reads_rustls_tls13_hellos() {
    let input = rustls_hello(Some("a.test"), &[b"h2", b"http/1.1"], false);
    assert_eq!(sniff(&input), hello(Some("a.test"), &[b"h2", b"http/1.1"]));
    let input = rustls_hello(Some("Mixed.Case.Example"), &[], false);
    assert_eq!(sniff(&input), hello(Some("mixed.case.example"), &[]));
}

#[test]
fn reads_rustls_tls12_hellos_and_hellos_without_sni() {
    let input = rustls_hello(Some("b.test"), &[b"http/1.1"], true);
    assert_eq!(sniff(&input), hello(Some("b.test"), &[b"http/1.1"]));
    let input = rustls_hello(None, &[b"h2"], false);
    assert_eq!(sniff(&input), hello(None, &[b"h2"]));
}

#[test]
fn every_proper_prefix_needs_more_and_byte_by_byte_reads_decide_once() {
    let input = rustls_hello(Some("a.test"), &[b"h2"], false);
    for end in 0..input.len() {
        assert_eq!(sniff(&input[..end]), Sniff::NeedMore, "prefix of {end}");
    }
    let mut r = HelloReader::new();
    for end in 0..input.len() {
        assert_eq!(r.read(&input[..end]), Sniff::NeedMore, "read up to {end}");
    }
    assert_eq!(r.read(&input), hello(Some("a.test"), &[b"h2"]));
    assert_eq!(r.examined(), input.len());
    // Decided: the answer stays, whatever comes after.
    let mut more = input.clone();
    more.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
    assert_eq!(r.read(&more), hello(Some("a.test"), &[b"h2"]));
}

#[test]
fn what_follows_the_hello_is_not_looked_at() {
    // A TLS 1.3 client may send ChangeCipherSpec and early data right after.
    let mut input = rustls_hello(Some("a.test"), &[], false);
    let len = input.len();
    input.extend_from_slice(b"\x14\x03\x03\x00\x01\x01\x17\x03\x03\x00\x05hello");
    let mut r = HelloReader::new();
    assert_eq!(r.read(&input), hello(Some("a.test"), &[]));
    assert_eq!(r.examined(), len);
    // Also junk after the hello inside its own last record.
    let msg = handshake(1, &body_with(Some(&sni_ext(&[(0, b"a.test")]))));
    let mut padded = record_header(22, 0x0303, msg.len() + 3);
    padded.extend_from_slice(&msg);
    padded.extend_from_slice(b"xyz");
    assert_eq!(sniff(&padded), hello(Some("a.test"), &[]));
}

#[test]
fn a_hello_split_over_records_reads_the_same() {
    let one = rustls_hello(Some("split.example.org"), &[b"h2"], false);
    let msg = one.get(RECORD_HEADER..).expect("one record").to_vec();
    assert_eq!(
        one.len(),
        RECORD_HEADER + msg.len(),
        "rustls sent one record"
    );
    let want = hello(Some("split.example.org"), &[b"h2"]);
    for size in [1, 2, 3, 4, 5, 7, 100, msg.len() - 1] {
        let input = records(&msg, size.max(msg.len().div_ceil(MAX_RECORDS)));
        assert_eq!(sniff(&input), want, "records of {size}");
        // Fed in pieces that cut headers and fragments anywhere.
        let mut r = HelloReader::new();
        let mut end = 0;
        while end < input.len() {
            end = (end + 3).min(input.len());
            let got = r.read(&input[..end]);
            if end < input.len() {
                assert_eq!(got, Sniff::NeedMore, "records of {size}, read to {end}");
            } else {
                assert_eq!(got, want, "records of {size}, pieces");
            }
        }
    }
    // Two records, the split anywhere in the message header or body.
    for cut in 1..msg.len() {
        let mut input = record_header(22, 0x0301, cut);
        input.extend_from_slice(&msg[..cut]);
        input.extend(record_header(22, 0x0303, msg.len() - cut));
        input.extend_from_slice(&msg[cut..]);
        assert_eq!(sniff(&input), want, "cut at {cut}");
    }
}

#[test]
fn record_count_and_size_are_bounded() {
    let msg = handshake(1, &body_with(Some(&sni_ext(&[(0, b"a.test")]))));
    let per = msg.len().div_ceil(MAX_RECORDS);
    assert_eq!(sniff(&records(&msg, per)), hello(Some("a.test"), &[]));
    let per = msg.len().div_ceil(MAX_RECORDS + 1);
    assert_eq!(
        malformed(&records(&msg, per)),
        HelloError::TooManyRecords,
        "{MAX_RECORDS} records at most"
    );

    // The largest hello allowed (a padding extension, 21) over two records.
    let base = body_with(Some(&sni_ext(&[(0, b"big.test")]))).len() + 4;
    let pad = MAX_HELLO - base - 4;
    let exts = [sni_ext(&[(0, b"big.test")]), ext(21, &vec![0; pad])].concat();
    let msg = handshake(1, &body_with(Some(&exts)));
    assert_eq!(msg.len(), MAX_HELLO);
    let input = records(&msg, MAX_FRAGMENT);
    let mut r = HelloReader::new();
    assert_eq!(r.read(&input), hello(Some("big.test"), &[]));
    assert!(r.examined() <= MAX_INPUT);

    // One byte more is refused as soon as the message header says so.
    let exts = [sni_ext(&[(0, b"big.test")]), ext(21, &vec![0; pad + 1])].concat();
    let input = records(&handshake(1, &body_with(Some(&exts))), MAX_FRAGMENT);
    let err = HelloError::TooLarge(MAX_HELLO + 1);
    assert_eq!(malformed(&input[..RECORD_HEADER + 4]), err);

    // A 3-byte length far past anything.
    let input = [22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff];
    assert_eq!(malformed(&input), HelloError::TooLarge(4 + 0xff_ffff));
}

#[test]
fn grease_is_skipped_and_stripped_from_alpn() {
    let exts = [
        ext(0x0a0a, b""),
        sni_ext(&[(0, b"grease.test")]),
        alpn_ext(&[b"\x1a\x1a", b"h2", b"\xfa\xfa", b"http/1.1"]),
        ext(0x2b2b, b"\x00"),
        ext(0xfafa, b""),
    ];
    assert_eq!(
        sniff(&built(&exts)),
        hello(Some("grease.test"), &[b"h2", b"http/1.1"])
    );
    // Not GREASE: kept.
    let exts = [alpn_ext(&[b"\x1a\x1b", b"\x0b\x0b"])];
    assert_eq!(
        sniff(&built(&exts)),
        hello(None, &[b"\x1a\x1b", b"\x0b\x0b"])
    );
}

#[test]
fn names_are_lowercased_and_other_name_types_skipped() {
    let exts = [sni_ext(&[(7, b"\xff\x00junk"), (0, b"WWW.Example.COM")])];
    assert_eq!(sniff(&built(&exts)), hello(Some("www.example.com"), &[]));
    // Only an unknown name type: no host name.
    let exts = [sni_ext(&[(1, b"x")])];
    assert_eq!(sniff(&built(&exts)), hello(None, &[]));
    // Punycode and digits are fine.
    let exts = [sni_ext(&[(0, b"xn--bcher-kva.example.de")])];
    assert_eq!(
        sniff(&built(&exts)),
        hello(Some("xn--bcher-kva.example.de"), &[])
    );
    let exts = [sni_ext(&[(0, b"0.a1")])];
    assert_eq!(sniff(&built(&exts)), hello(Some("0.a1"), &[]));
}

#[test]
fn junk_names_are_refused() {
    let long_label = "a".repeat(64);
    let long_name = vec!["a".repeat(63); 4].join(".") + ".ab";
    let cases: &[(&[u8], NameError)] = &[
        (b"", NameError::Empty),
        (b"a..b", NameError::EmptyLabel),
        (b".a.b", NameError::EmptyLabel),
        (b"a.b.", NameError::EmptyLabel),
        (b"-a.b", NameError::Hyphen),
        (b"a-.b", NameError::Hyphen),
        (b"a_b.c", NameError::BadByte(b'_')),
        (b"a b", NameError::BadByte(b' ')),
        (b"a\0.b", NameError::BadByte(0)),
        (b"caf\xc3\xa9.fr", NameError::BadByte(0xc3)),
        (b"*.a.b", NameError::BadByte(b'*')),
        (b"127.0.0.1", NameError::Numeric),
        (b"::1", NameError::BadByte(b':')),
        (long_label.as_bytes(), NameError::LongLabel),
        (long_name.as_bytes(), NameError::TooLong),
    ];
    for (name, why) in cases {
        assert_eq!(host_name(name), Err(*why), "{name:?}");
        let input = built(&[sni_ext(&[(0, name)])]);
        assert_eq!(malformed(&input), HelloError::Name(*why), "{name:?}");
    }
    // 253 bytes is the limit.
    let max = vec!["a".repeat(63); 3].join(".") + "." + &"b".repeat(61);
    assert_eq!(max.len(), 253);
    assert_eq!(host_name(max.as_bytes()).as_deref(), Ok(max.as_str()));
}

#[test]
fn plaintext_and_other_protocols_are_not_tls_from_the_first_bytes() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        b"G",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        // SSLv2-compatible hello.
        b"\x80\x2e\x01\x00\x02",
        // Not a handshake record (alert, application data).
        b"\x15\x03\x03\x00\x02\x02\x28",
        b"\x17",
        // Record versions outside 0x0301..=0x0304.
        b"\x16\x02",
        b"\x16\x03\x00",
        b"\x16\x03\x05",
        b"\x16\x04\x01",
        // Record lengths 0 and over 2^14.
        b"\x16\x03\x01\x00\x00",
        b"\x16\x03\x01\x40\x01",
    ] {
        assert!(
            matches!(sniff(input), Sniff::NotTls(_)),
            "{input:?}: {:?}",
            sniff(input)
        );
    }
    assert_eq!(sniff(b""), Sniff::NeedMore);
    assert_eq!(sniff(b"\x16\x03\x03\x02"), Sniff::NeedMore);
}

#[test]
fn bad_later_records_and_handshake_types_are_malformed() {
    let msg = handshake(1, &body_with(Some(&sni_ext(&[(0, b"a.test")]))));
    let mut input = record_header(22, 0x0301, 10);
    input.extend_from_slice(&msg[..10]);
    for bad in [
        record_header(23, 0x0303, 5),
        record_header(22, 0x0300, 5),
        record_header(22, 0x0303, 0),
        record_header(22, 0x0303, MAX_FRAGMENT + 1),
    ] {
        let mut i = input.clone();
        i.extend(bad);
        assert!(
            matches!(malformed(&i), HelloError::Record(_)),
            "{:?}",
            sniff(&i)
        );
    }
    // A ServerHello (2) is not what a client starts with; known at once.
    assert_eq!(
        malformed(b"\x16\x03\x03\x00\x30\x02"),
        HelloError::NotClientHello(2)
    );
    // A zero-length ClientHello.
    assert!(matches!(
        malformed(b"\x16\x03\x03\x00\x04\x01\x00\x00\x00"),
        HelloError::Truncated(_)
    ));
}

#[test]
fn lengths_that_run_past_their_container_are_malformed() {
    let good = handshake(1, &body_with(Some(&sni_ext(&[(0, b"a.test")]))));
    // Cut the body (keeping the message length consistent) at every point
    // but the ends: each field's own length must notice.
    let body = &good[4..];
    for cut in 0..body.len() {
        let input = records(&handshake(1, &body[..cut]), MAX_FRAGMENT);
        let got = sniff(&input);
        if cut == body_with(None).len() {
            // Exactly the end of the compression methods: no extensions.
            assert_eq!(got, hello(None, &[]), "cut at {cut}");
        } else {
            assert!(matches!(got, Sniff::Malformed(_)), "cut at {cut}: {got:?}");
        }
    }
    // An extensions block shorter or longer than what follows.
    let exts = sni_ext(&[(0, b"a.test")]);
    let mut body = body_with(None);
    body.extend_from_slice(&u16::try_from(exts.len() - 1).unwrap().to_be_bytes());
    body.extend_from_slice(&exts);
    assert!(matches!(
        malformed(&records(&handshake(1, &body), MAX_FRAGMENT)),
        HelloError::Trailing(_) | HelloError::Truncated(_)
    ));
    let mut body = body_with(None);
    body.extend_from_slice(&u16::try_from(exts.len() + 1).unwrap().to_be_bytes());
    body.extend_from_slice(&exts);
    assert!(matches!(
        malformed(&records(&handshake(1, &body), MAX_FRAGMENT)),
        HelloError::Truncated(_)
    ));
    // A server_name extension whose list is shorter than its data.
    let mut list = vec![0];
    list.extend(u16_vec(b"a.test"));
    let mut data = u16_vec(&list);
    data.push(0);
    let input = built(&[ext(0, &data)]);
    assert_eq!(malformed(&input), HelloError::Trailing("server_name"));
    // A host name whose length runs past the list.
    let data = u16_vec(&[0, 0, 50, b'a']);
    assert!(matches!(
        malformed(&built(&[ext(0, &data)])),
        HelloError::Truncated(_)
    ));
}

#[test]
fn invalid_fields_are_malformed() {
    let two_names = sni_ext(&[(0, b"a.test"), (0, b"b.test")]);
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (vec![ext(0, b"")], "empty server_name extension"),
        (vec![ext(0, &u16_vec(b""))], "empty server_name list"),
        (vec![two_names], "two host names"),
        (
            vec![sni_ext(&[(0, b"a.test")]), sni_ext(&[(0, b"b.test")])],
            "two server_name extensions",
        ),
        (vec![ext(16, &u16_vec(b""))], "empty ALPN list"),
        (vec![alpn_ext(&[b"h2", b""])], "empty protocol name"),
        (
            vec![alpn_ext(&[b"h2"]), alpn_ext(&[b"h2"])],
            "two ALPN extensions",
        ),
        (vec![ext(5, b""), ext(5, b"")], "an unknown extension twice"),
    ];
    for (exts, what) in cases {
        let got = sniff(&built(&exts));
        assert!(matches!(got, Sniff::Malformed(_)), "{what}: {got:?}");
    }
    // Fields of the fixed part.
    let mut b = body_with(None);
    b[0] = 2;
    assert_eq!(
        malformed(&records(&handshake(1, &b), MAX_FRAGMENT)),
        HelloError::Invalid("legacy_version is not TLS")
    );
    let mut b = vec![3, 3];
    b.extend_from_slice(&[0; 32]);
    b.extend(u8_vec(&[0; 33]));
    b.extend(u16_vec(&[0x13, 0x01]));
    b.extend(u8_vec(&[0]));
    assert!(matches!(
        malformed(&records(&handshake(1, &b), MAX_FRAGMENT)),
        HelloError::Invalid(_)
    ));
    for (suites, methods) in [
        (&[][..], &[0u8][..]),
        (&[0x13, 0x01, 0x13], &[0]),
        (&[0x13, 0x01], &[]),
    ] {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[0; 32]);
        b.extend(u8_vec(&[]));
        b.extend(u16_vec(suites));
        b.extend(u8_vec(methods));
        assert!(
            matches!(
                malformed(&records(&handshake(1, &b), MAX_FRAGMENT)),
                HelloError::Invalid(_)
            ),
            "{suites:?} {methods:?}"
        );
    }
}

#[test]
fn a_reader_given_less_than_before_refuses() {
    let input = rustls_hello(Some("a.test"), &[], false);
    let mut r = HelloReader::new();
    assert_eq!(r.read(&input[..20]), Sniff::NeedMore);
    assert_eq!(
        r.read(&input[..10]),
        Sniff::Malformed(HelloError::InputShrank)
    );
}

/// Random mutations of a real hello, fed whole and in random pieces: never a
/// panic, and the same answer both ways (the fuzz target does more).
#[test]
fn mutated_hellos_answer_the_same_whole_and_in_pieces() {
    let base = rustls_hello(Some("mutant.test"), &[b"h2", b"http/1.1"], false);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..2000 {
        let mut input = base.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..input.len());
            input[i] = rng.random();
        }
        if rng.random_bool(0.2) {
            input.truncate(rng.random_range(0..input.len()));
        }
        let whole = sniff(&input);
        let mut r = HelloReader::new();
        let mut end = 0;
        let mut got = Sniff::NeedMore;
        while got == Sniff::NeedMore && end < input.len() {
            end = (end + rng.random_range(1..300)).min(input.len());
            got = r.read(&input[..end]);
        }
        assert_eq!(got, whole, "{input:?}");
        if let Sniff::Hello(ClientHello {
            server_name: Some(n),
            ..
        }) = &whole
        {
            assert_eq!(host_name(n.as_bytes()).as_deref(), Ok(n.as_str()));
        }
    }
    let mut junk = vec![0u8; 4096];
    for _ in 0..500 {
        rng.fill_bytes(&mut junk);
        junk[0] = 22;
        let _ = sniff(&junk);
    }
}

/// The fuzz target's seeds (`fuzz/seeds/client_hello/`) are real rustls
/// ClientHellos that read as expected (regenerate them with
/// `cargo test -p shardline-proxy --lib write_fuzz_seeds -- --ignored`).
#[test]
fn fuzz_seeds_are_real_hellos() {
    let seeds = seed_files();
    for (name, want) in &seeds {
        let path = seed_dir().join(name);
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run write_fuzz_seeds)", path.display()));
        // The fuzz input's first byte is the read size.
        let (_, stream) = data.split_first().expect("a seed is not empty");
        assert_eq!(&sniff(stream), want, "{name}");
    }
}

fn seed_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/client_hello")
}

/// Each seed: its file name and what it reads as.
fn seed_files() -> Vec<(&'static str, Sniff)> {
    vec![
        (
            "rustls_tls13_sni_alpn",
            hello(Some("a.test"), &[b"h2", b"http/1.1"]),
        ),
        ("rustls_tls12_sni", hello(Some("b.example.org"), &[])),
        ("rustls_no_sni", hello(None, &[b"h2"])),
        (
            "rustls_two_records",
            hello(Some("split.test"), &[b"http/1.1"]),
        ),
        ("grease", hello(Some("grease.test"), &[b"h2"])),
    ]
}

#[test]
#[ignore = "writes the fuzz seeds; run by hand"]
fn write_fuzz_seeds() {
    let dir = seed_dir();
    std::fs::create_dir_all(&dir).expect("seed dir");
    let split = {
        let one = rustls_hello(Some("split.test"), &[b"http/1.1"], false);
        let msg = &one[RECORD_HEADER..];
        records(msg, msg.len() / 2 + 1)
    };
    let grease = built(&[
        ext(0x0a0a, b""),
        sni_ext(&[(0, b"grease.test")]),
        alpn_ext(&[b"\x2a\x2a", b"h2"]),
        ext(0x1a1a, b"\x00"),
    ]);
    let streams = [
        (
            "rustls_tls13_sni_alpn",
            0u8,
            rustls_hello(Some("a.test"), &[b"h2", b"http/1.1"], false),
        ),
        (
            "rustls_tls12_sni",
            7,
            rustls_hello(Some("b.example.org"), &[], true),
        ),
        ("rustls_no_sni", 255, rustls_hello(None, &[b"h2"], false)),
        ("rustls_two_records", 31, split),
        ("grease", 2, grease),
    ];
    for (name, chunk, stream) in streams {
        let mut data = vec![chunk];
        data.extend(stream);
        std::fs::write(dir.join(name), data).expect("write seed");
    }
}
