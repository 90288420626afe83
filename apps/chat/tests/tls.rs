//! IRC over TLS beside plaintext: registration over TLS, the IRCv3 `sts`
//! capability (upgrade policy on plaintext, persistence policy on TLS, only with
//! `CAP LS 302`, never ACKed), WHOIS 671 / 276 across shards, hostile bytes on
//! the TLS port, and bad certificate files refused at start. Both backends; the
//! server's certificate comes from a CA made at test time (rcgen), the client is
//! rustls. SIGHUP reloading the certificate is in `rehash.rs`.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use common::{certs::TestCa, Client, Line, TestServer, SHARD_COUNTS};
use shardline::Io;

/// The `CAP * LS` reply to `CAP LS <version>` (or plain `CAP LS`), as tokens.
fn cap_ls(c: &mut Client, version: Option<&str>) -> Vec<String> {
    match version {
        Some(v) => c.send(&format!("CAP LS {v}")),
        None => c.send("CAP LS"),
    }
    let ls = c.until("CAP LS", |l| {
        l.is("CAP") && l.params.get(1).is_some_and(|s| s == "LS")
    });
    ls.0.last().split(' ').map(str::to_string).collect()
}

/// NICK + USER; returns the 001 line, then waits for the end of the burst.
fn register_expecting_001(c: &mut Client, nick: &str) -> Line {
    c.nick = nick.to_string();
    c.send(&format!("NICK {nick}"));
    c.send(&format!("USER {nick} 0 * :Test {nick}"));
    let welcome = c.expect("001");
    c.until("end of MOTD", |l| l.is("376") || l.is("422"));
    welcome
}

/// WHOIS `nick`: every line up to 318.
fn whois(c: &mut Client, nick: &str) -> Vec<Line> {
    c.send(&format!("WHOIS {nick}"));
    let (end, mut lines) = c.until_command("318");
    lines.push(end);
    lines
}

fn tls_clients_register_beside_plaintext(io: Io) {
    for shards in SHARD_COUNTS {
        let srv = TestServer::start_tls(io, shards, |_, _| {});
        let label = srv.label();
        let mut secure = srv.connect_tls();
        let welcome = register_expecting_001(&mut secure, "secure");
        assert_eq!(welcome.params[0], "secure", "{label}: {}", welcome.raw);
        assert!(
            welcome
                .last()
                .starts_with("Welcome to the TestNet IRC Network"),
            "{label}: {}",
            welcome.raw
        );
        // Plaintext works as before, and the two talk to each other.
        let mut plain = srv.connect();
        register_expecting_001(&mut plain, "plain");
        secure.join("#mixed");
        plain.join("#mixed");
        secure.sync();
        plain.send("PRIVMSG #mixed :over tcp");
        let got = secure.expect("PRIVMSG");
        assert_eq!(
            (got.nick(), got.last()),
            (Some("plain"), "over tcp"),
            "{label}"
        );
        secure.send("PRIVMSG #mixed :over tls");
        let got = plain.expect("PRIVMSG");
        assert_eq!(
            (got.nick(), got.last()),
            (Some("secure"), "over tls"),
            "{label}"
        );
        // Every TLS client, whichever shard took it.
        for i in 0..2 * shards {
            let mut c = srv.connect_tls();
            register_expecting_001(&mut c, &format!("t{i}"));
            c.send("PRIVMSG secure :hello");
            let got = secure.expect("PRIVMSG");
            assert_eq!(got.nick(), Some(format!("t{i}").as_str()), "{label}");
        }
        let total = srv.metrics().total();
        assert_eq!(total.tls_handshakes, 1 + 2 * shards as u64, "{label}");
        assert_eq!(total.tls_failed, 0, "{label}");
        srv.stop();
    }
}

fn cap_ls_carries_the_sts_policy(io: Io) {
    let srv = TestServer::start_tls(io, 2, |config, _| {
        config.tls.sts_duration_secs = 86_400;
    });
    let label = srv.label();
    let port = srv.tls_addr.expect("TLS").port();
    // Plaintext: the upgrade policy (the TLS port), with 302 only.
    let mut plain = srv.connect();
    let caps = cap_ls(&mut plain, Some("302"));
    assert!(
        caps.contains(&format!("sts=port={port}")),
        "{label}: {caps:?}"
    );
    assert!(!caps.iter().any(|c| c.contains("duration")), "{label}");
    assert!(caps.contains(&"server-time".to_string()), "{label}");
    let caps = cap_ls(&mut plain, None);
    assert!(
        !caps.iter().any(|c| c.starts_with("sts")),
        "{label}: no values before 302, and sts has no meaning without one: {caps:?}"
    );
    // Informational: a REQ is NAKed (alone or with others).
    for req in ["sts", "server-time sts"] {
        plain.send(&format!("CAP REQ :{req}"));
        let reply = plain.expect("CAP");
        assert_eq!(reply.params[1], "NAK", "{label}: {}", reply.raw);
        assert_eq!(reply.last(), req, "{label}");
    }
    plain.send("CAP LIST");
    assert_eq!(
        plain.expect("CAP").last(),
        "cap-notify",
        "{label}: nothing enabled but what 302 implies"
    );
    // Registration still waits for CAP END, then completes.
    plain.send("NICK plain");
    plain.send("USER plain 0 * :Plain");
    plain.send("CAP END");
    plain.expect("001");

    // TLS: the persistence policy, no port.
    let mut secure = srv.connect_tls();
    let caps = cap_ls(&mut secure, Some("302"));
    assert!(
        caps.contains(&"sts=duration=86400".to_string()),
        "{label}: {caps:?}"
    );
    assert!(!caps.iter().any(|c| c.contains("port=")), "{label}");
    assert!(
        !cap_ls(&mut secure, Some("301"))
            .iter()
            .any(|c| c.starts_with("sts")),
        "{label}"
    );
    secure.send("CAP REQ :sts");
    assert_eq!(secure.expect("CAP").params[1], "NAK", "{label}");
    srv.stop();

    // The defaults: duration 0 (no policy kept by clients), advertised.
    let srv = TestServer::start_tls(io, 1, |_, _| {});
    let mut secure = srv.connect_tls();
    let caps = cap_ls(&mut secure, Some("302"));
    assert!(
        caps.contains(&"sts=duration=0".to_string()),
        "{label}: {caps:?}"
    );
    // An explicit sts_port wins over the listener's (a port forward).
    srv.stop();
    let srv = TestServer::start_tls(io, 1, |config, _| config.tls.sts_port = Some(6697));
    let mut plain = srv.connect();
    assert!(
        cap_ls(&mut plain, Some("302")).contains(&"sts=port=6697".to_string()),
        "{label}"
    );
    srv.stop();

    // Turned off: neither side hears of it.
    let srv = TestServer::start_tls(io, 1, |config, _| config.tls.sts = false);
    let mut plain = srv.connect();
    let mut secure = srv.connect_tls();
    for c in [&mut plain, &mut secure] {
        let caps = cap_ls(c, Some("302"));
        assert!(
            !caps.iter().any(|c| c.starts_with("sts")),
            "{label}: {caps:?}"
        );
    }
    srv.stop();

    // No TLS at all: no sts.
    let srv = TestServer::start(io, 1);
    let mut plain = srv.connect();
    let caps = cap_ls(&mut plain, Some("302"));
    assert!(
        !caps.iter().any(|c| c.starts_with("sts")),
        "{label}: {caps:?}"
    );
    srv.stop();
}

/// The 671 line among `lines`, if any.
fn secure_line(lines: &[Line]) -> Option<&Line> {
    lines.iter().find(|l| l.is("671"))
}

fn whois_shows_tls_users_across_shards(io: Io) {
    // The TLS user on shard 1 and the asker on shard 0, then the other way round:
    // the answer is made on the target's shard and crosses to the asker's.
    for (secure_shard, plain_shard) in [(1, 0), (0, 1)] {
        let srv = TestServer::start_tls(io, 2, |config, ca| {
            config.tls.client_ca = Some(ca.ca_pem.clone());
            config.operators = vec![shardline_chat::config::Operator {
                name: "op".into(),
                password: "pw".into(),
                host: "*".into(),
            }];
        });
        let label = format!("{} secure on {secure_shard}", srv.label());
        let ca = srv.ca.as_ref().expect("CA");
        let alice = ca.client("alice");
        let alice_fp = common::certs::fingerprint_hex(&alice.cert);
        let mut secure = srv.connect_tls_on(secure_shard, ca.client_config());
        assert_eq!(secure.shard, secure_shard);
        register_expecting_001(&mut secure, "secure");
        let mut certy = srv.connect_tls_on(
            secure_shard,
            std::sync::Arc::new(common::certs::client_config(&ca.ca_pem, Some(&alice))),
        );
        register_expecting_001(&mut certy, "certy");
        let mut plain = srv.register_on(plain_shard, "plain");
        assert_eq!(plain.shard, plain_shard);

        // A plaintext user asks about a TLS user on the other shard.
        let lines = whois(&mut plain, "secure");
        let l = secure_line(&lines).unwrap_or_else(|| panic!("{label}: no 671: {lines:?}"));
        assert_eq!(
            l.params,
            ["plain", "secure", "is using a secure connection"],
            "{label}"
        );
        assert!(lines.iter().any(|l| l.is("311")), "{label}");
        // 671 comes before the end, in the same burst as the rest.
        assert!(lines.last().is_some_and(|l| l.is("318")), "{label}");
        // And not about a plaintext user, whoever asks.
        let lines = whois(&mut secure, "plain");
        assert!(lines.iter().any(|l| l.is("311")), "{label}: {lines:?}");
        assert!(secure_line(&lines).is_none(), "{label}: {lines:?}");
        let lines = whois(&mut plain, "plain");
        assert!(secure_line(&lines).is_none(), "{label}: {lines:?}");
        // A TLS user about itself.
        assert!(
            secure_line(&whois(&mut secure, "secure")).is_some(),
            "{label}"
        );

        // A verified client certificate: its fingerprint is kept with the
        // client, shown to itself and operators only.
        let lines = whois(&mut certy, "certy");
        let fp = lines.iter().find(|l| l.is("276"));
        assert_eq!(
            fp.map(|l| l.last().to_string()),
            Some(format!("has client certificate fingerprint {alice_fp}")),
            "{label}: {lines:?}"
        );
        assert!(secure_line(&lines).is_some(), "{label}");
        let lines = whois(&mut plain, "certy");
        assert!(secure_line(&lines).is_some(), "{label}");
        assert!(!lines.iter().any(|l| l.is("276")), "{label}: {lines:?}");
        // Without a certificate there is no fingerprint, even for itself.
        let lines = whois(&mut secure, "secure");
        assert!(!lines.iter().any(|l| l.is("276")), "{label}: {lines:?}");
        plain.send("OPER op pw");
        plain.expect("381");
        let lines = whois(&mut plain, "certy");
        assert!(
            lines
                .iter()
                .any(|l| l.is("276") && l.last().ends_with(&alice_fp)),
            "{label}: an operator sees it: {lines:?}"
        );
        srv.stop();
    }
}

fn hostile_bytes_on_the_tls_port_leave_tls_users_alone(io: Io) {
    let srv = TestServer::start_tls(io, 2, |_, _| {});
    let label = srv.label();
    let tls_addr = srv.tls_addr.expect("TLS");
    let mut secure = srv.connect_tls();
    register_expecting_001(&mut secure, "secure");
    let mut plain = srv.connect();
    register_expecting_001(&mut plain, "plain");
    secure.join("#calm");
    plain.join("#calm");

    // Plaintext IRC on the TLS port: at most an alert, then the close; no line
    // of IRC comes back and no client is made of it.
    let mut irc = TcpStream::connect(tls_addr).expect("connect");
    irc.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    irc.write_all(b"NICK intruder\r\nUSER intruder 0 * :x\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = irc.read_to_end(&mut got);
    assert!(
        got.is_empty() || got[0] == 0x15,
        "{label}: plaintext gets an alert record at most: {got:?}"
    );
    // Garbage, a lot of it (fixed pseudo-random bytes).
    let mut junk = TcpStream::connect(tls_addr).expect("connect");
    junk.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut x: u32 = 0x9e37_79b9;
    let bytes: Vec<u8> = (0..64 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let _ = junk.write_all(&bytes);
    let mut sink = Vec::new();
    let _ = junk.read_to_end(&mut sink);
    // A TLS record header claiming a huge handshake, then nothing more than
    // a few bytes: refused as soon as it is seen to be invalid, or timed out.
    let mut bogus = TcpStream::connect(tls_addr).expect("connect");
    bogus
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let _ = bogus.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff]);
    let mut rest = Vec::new();
    let _ = bogus.read_to_end(&mut rest);

    let total = srv.metrics().total();
    assert!(total.tls_failed >= 2, "{label}: {total:?}");
    assert_eq!(total.handler_panics, 0, "{label}");
    // The registered TLS user is served as before.
    secure.sync();
    plain.send("PRIVMSG #calm :still there?");
    let got = secure.expect("PRIVMSG");
    assert_eq!(got.last(), "still there?", "{label}");
    secure.send("PRIVMSG #calm :yes");
    assert_eq!(plain.expect("PRIVMSG").last(), "yes", "{label}");
    // Nobody called intruder ever registered.
    let lines = whois(&mut secure, "intruder");
    assert!(lines.iter().any(|l| l.is("401")), "{label}: {lines:?}");
    secure.send("LUSERS");
    let users = secure.expect("251");
    assert!(
        users.last().starts_with("There are 2 users"),
        "{label}: {}",
        users.raw
    );
    srv.stop();
}

/// Runs the binary with `args`; returns its exit status and stderr + stdout.
fn run_chat(args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardline-chat"))
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--no-pin"])
        .output()
        .expect("run shardline-chat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status, text)
}

#[test]
fn bad_certificate_files_stop_the_start_with_the_file_named() {
    let ca = TestCa::new("bad-files");
    let a = ca.server("a", &["localhost"]);
    let b = ca.server("b", &["localhost"]);
    let missing = ca.dir.path().join("missing.pem");
    let listen = ["--tls-listen", "127.0.0.1:0"];
    let s = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_string();
    let cases: [(Vec<String>, &str); 4] = [
        // A missing certificate file.
        (
            vec![
                "--tls-cert".into(),
                s(&missing),
                "--tls-key".into(),
                s(&a.key),
            ],
            "missing.pem",
        ),
        // The key of another certificate.
        (
            vec![
                "--tls-cert".into(),
                s(&a.cert),
                "--tls-key".into(),
                s(&b.key),
            ],
            "a.pem",
        ),
        // A "key" file without a key.
        (
            vec![
                "--tls-cert".into(),
                s(&a.cert),
                "--tls-key".into(),
                s(&a.cert),
            ],
            "private key",
        ),
        // No key at all.
        (vec!["--tls-cert".into(), s(&a.cert)], "tls.key"),
    ];
    for (args, named) in cases {
        let mut all: Vec<&str> = listen.to_vec();
        all.extend(args.iter().map(String::as_str));
        let (status, text) = run_chat(&all);
        assert!(!status.success(), "{args:?} started: {text}");
        assert!(
            text.contains(named),
            "{args:?}: the error names {named}: {text}"
        );
    }
    // A certificate without a TLS address is a mistake too.
    let (status, text) = run_chat(&["--tls-cert", &s(&a.cert), "--tls-key", &s(&a.key)]);
    assert!(!status.success(), "{text}");
    assert!(text.contains("tls.listen"), "{text}");
    // And --help documents the flags.
    let out = Command::new(env!("CARGO_BIN_EXE_shardline-chat"))
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--tls-listen <ADDR>",
        "--tls-cert <FILE>",
        "--tls-key <FILE>",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}: {help}");
    }
}

shardline::per_backend! {
    tls_clients_register_beside_plaintext => tls_clients_register_beside_plaintext;
    cap_ls_carries_the_sts_policy => cap_ls_carries_the_sts_policy;
    whois_shows_tls_users_across_shards => whois_shows_tls_users_across_shards;
    hostile_bytes_on_the_tls_port_leave_tls_users_alone => hostile_bytes_on_the_tls_port_leave_tls_users_alone;
}
