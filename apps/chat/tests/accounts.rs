//! Accounts: SASL (`PLAIN`, `SCRAM-SHA-256`, `EXTERNAL` over TLS with a
//! client certificate attached by the offline tool), in-band registration
//! (`draft/account-registration`, open and closed, the name unique across
//! shards), the `sasl` and registration caps, refusals (wrong password,
//! retries bounded, abort, oversize payloads, unknown mechanism), and the
//! `account` command of the binary on a data directory the server then uses.
//! Both backends, 1 and 4 shards. (kill -9 and restart: `history.rs`. A real
//! client library's SASL PLAIN: `client_library.rs`.)

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use common::{
    certs::fingerprint_hex, each_server_with, test_config, Client, Line, TempDir, TestServer,
    SHARD_COUNTS,
};
use ring::{digest, hmac, pbkdf2};
use shardline::{tls::CertFiles, Io};
use shardline_chat::{
    auth::cli::{run_account_command_with, AccountCommandOptions},
    config::Registration,
    Config,
};

const PASSWORD: &str = "correct horse battery";

/// Registration open (or not), cheap hashes.
fn accounts(open: bool) -> impl Fn(&mut Config) {
    move |c: &mut Config| {
        c.accounts.test_cheap_hashes = true;
        c.accounts.registration = if open {
            Registration::Open
        } else {
            Registration::Closed
        };
    }
}

/// The `CAP * LS` tokens for `CAP LS 302`.
fn cap_ls(c: &mut Client) -> Vec<String> {
    c.send("CAP LS 302");
    let (ls, _) = c.until("CAP LS", |l| {
        l.is("CAP") && l.params.get(1).is_some_and(|s| s == "LS")
    });
    ls.last().split(' ').map(str::to_string).collect()
}

/// A client on `shard` that sent NICK and USER and negotiated `sasl`, not yet
/// registered (CAP END not sent).
fn sasl_client(srv: &TestServer, shard: usize, nick: &str) -> Client {
    let c = srv.connect_on(shard);
    sasl_negotiate(c, nick)
}

fn sasl_negotiate(mut c: Client, nick: &str) -> Client {
    c.nick = nick.to_string();
    c.send("CAP LS 302");
    c.send(&format!("NICK {nick}"));
    c.send(&format!("USER {nick} 0 * :Test {nick}"));
    c.send("CAP REQ :sasl");
    let (ack, _) = c.until("CAP ACK", |l| {
        l.is("CAP") && l.params.get(1).is_some_and(|s| s == "ACK" || s == "NAK")
    });
    assert_eq!(ack.params[1], "ACK", "{}", ack.raw);
    c
}

/// Reads until a SASL end numeric (903..=907); returns it and what came
/// before.
fn sasl_end(c: &mut Client) -> (Line, Vec<Line>) {
    c.until("a SASL result", |l| {
        ["902", "903", "904", "905", "906", "907"]
            .iter()
            .any(|n| l.is(n))
    })
}

/// Expects `AUTHENTICATE +`.
fn expect_continue(c: &mut Client) {
    let l = c.expect("AUTHENTICATE");
    assert_eq!(l.params, ["+"], "{}", l.raw);
}

fn b64(s: &[u8]) -> String {
    STANDARD.encode(s)
}

/// PLAIN with `account` / `password`: the result numeric and what came
/// before it (900 on success).
fn plain(c: &mut Client, account: &str, password: &str) -> (Line, Vec<Line>) {
    c.send("AUTHENTICATE PLAIN");
    expect_continue(c);
    c.send(&format!(
        "AUTHENTICATE {}",
        b64(format!("\0{account}\0{password}").as_bytes())
    ));
    sasl_end(c)
}

/// Asserts a successful login as `account`: 900 with it, then 903.
fn assert_logged_in(result: &(Line, Vec<Line>), account: &str, what: &str) {
    let (end, before) = result;
    assert!(end.is("903"), "{what}: {end:?} after {before:?}");
    let l900 = before
        .iter()
        .find(|l| l.is("900"))
        .unwrap_or_else(|| panic!("{what}: no 900: {before:?}"));
    assert_eq!(l900.params[2], account, "{what}: {}", l900.raw);
}

/// CAP END, then the burst.
fn finish_registration(c: &mut Client) {
    c.send("CAP END");
    c.expect("001");
    c.until("end of MOTD", |l| l.is("376") || l.is("422"));
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// SCRAM-SHA-256 (RFC 5802/7677), the client side, from scratch with ring:
/// the result numeric and what came before.
fn scram(c: &mut Client, account: &str, password: &str) -> (Line, Vec<Line>) {
    c.send("AUTHENTICATE SCRAM-SHA-256");
    expect_continue(c);
    let nonce = "fyko+d2lbbFgONRv9qkxdawL";
    let first_bare = format!("n={account},r={nonce}");
    c.send(&format!(
        "AUTHENTICATE {}",
        b64(format!("n,,{first_bare}").as_bytes())
    ));
    let (l, before) = c.until("server-first or a result", |l| {
        l.is("AUTHENTICATE") || l.is("904") || l.is("905")
    });
    if !l.is("AUTHENTICATE") {
        return (l, before);
    }
    let server_first = String::from_utf8(STANDARD.decode(&l.params[0]).expect("base64"))
        .expect("server-first is UTF-8");
    let mut server_nonce = "";
    let mut salt = Vec::new();
    let mut iterations = 0u32;
    for f in server_first.split(',') {
        if let Some(v) = f.strip_prefix("r=") {
            server_nonce = v;
        } else if let Some(v) = f.strip_prefix("s=") {
            salt = STANDARD.decode(v).expect("salt");
        } else if let Some(v) = f.strip_prefix("i=") {
            iterations = v.parse().expect("iterations");
        }
    }
    assert!(server_nonce.starts_with(nonce), "{server_first}");
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iterations).expect("iterations > 0"),
        &salt,
        password.as_bytes(),
        &mut salted,
    );
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    let without_proof = format!("c=biws,r={server_nonce}");
    let auth = format!("{first_bare},{server_first},{without_proof}");
    let sig = hmac_sha256(stored_key.as_ref(), auth.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
    c.send(&format!(
        "AUTHENTICATE {}",
        b64(format!("{without_proof},p={}", b64(&proof)).as_bytes())
    ));
    let l = c.until("server-final or a result", |l| {
        l.is("AUTHENTICATE") || l.is("904") || l.is("905")
    });
    if !l.0.is("AUTHENTICATE") {
        return l;
    }
    let server_final =
        String::from_utf8(STANDARD.decode(&l.0.params[0]).expect("base64")).expect("UTF-8");
    let server_key = hmac_sha256(&salted, b"Server Key");
    let want = format!("v={}", b64(&hmac_sha256(&server_key, auth.as_bytes())));
    assert_eq!(server_final, want, "the server proved it knows the key");
    c.send("AUTHENTICATE +");
    sasl_end(c)
}

/// `REGISTER <account> <email> <password>`: the SUCCESS or FAIL line, and
/// what came before.
fn register(c: &mut Client, account: &str, password: &str) -> (Line, Vec<Line>) {
    c.send(&format!("REGISTER {account} * :{password}"));
    c.until("REGISTER SUCCESS or FAIL", |l| {
        (l.is("REGISTER") && l.params.first().is_some_and(|p| p == "SUCCESS"))
            || (l.is("FAIL") && l.params.first().is_some_and(|p| p == "REGISTER"))
    })
}

fn sasl_plain_and_scram_after_register(io: Io) {
    each_server_with(io, accounts(true), |srv| {
        let label = srv.label();
        // The caps and their values.
        let mut c = srv.connect_on(0);
        let ls = cap_ls(&mut c);
        assert!(
            ls.contains(&"sasl=PLAIN,SCRAM-SHA-256".to_string()),
            "{label}: {ls:?}"
        );
        assert!(
            ls.contains(&"draft/account-registration=before-connect".to_string()),
            "{label}: {ls:?}"
        );

        // REGISTER before connection registration, on shard 0: SUCCESS, 900.
        c.nick = "alice".into();
        c.send("NICK alice");
        c.send("USER alice 0 * :Alice");
        let (ok, before) = register(&mut c, "*", PASSWORD);
        assert_eq!(
            ok.raw, ":irc.test REGISTER SUCCESS alice :Account successfully registered",
            "{label}: {before:?}"
        );
        let l900 = c.expect("900");
        assert_eq!(
            l900.params[..3],
            ["alice", "alice!~alice@127.0.0.1", "alice"],
            "{label}: {}",
            l900.raw
        );
        finish_registration(&mut c);
        // Registered: a second REGISTER is refused.
        let (fail, _) = register(&mut c, "*", PASSWORD);
        assert_eq!(
            fail.params[..3],
            ["REGISTER", "ALREADY_AUTHENTICATED", "alice"],
            "{label}"
        );

        // PLAIN on a fresh connection on another shard (casing is free).
        let mut p = sasl_client(srv, 1, "plainer");
        let r = plain(&mut p, "ALICE", PASSWORD);
        assert_logged_in(&r, "alice", &format!("{label}: PLAIN"));
        // Logged in: a second exchange gets 907.
        p.send("AUTHENTICATE PLAIN");
        assert!(sasl_end(&mut p).0.is("907"), "{label}");
        finish_registration(&mut p);

        // SCRAM-SHA-256 on yet another shard.
        let mut s = sasl_client(srv, 2, "scrammer");
        assert_logged_in(
            &scram(&mut s, "alice", PASSWORD),
            "alice",
            &format!("{label}: SCRAM"),
        );
        finish_registration(&mut s);
        // A wrong password fails SCRAM too (the proof does not verify).
        let mut s = sasl_client(srv, 3, "scrambad");
        let (end, _) = scram(&mut s, "alice", "wrong horse battery");
        assert!(end.is("904"), "{label}: {end:?}");
        // ... and an unknown account.
        let (end, _) = scram(&mut s, "nobody", PASSWORD);
        assert!(end.is("904"), "{label}: {end:?}");
    });
}

fn sasl_refusals(io: Io) {
    each_server_with(io, accounts(true), |srv| {
        let label = srv.label();
        let mut owner = srv.connect_on(0);
        owner.nick = "bob".into();
        owner.send("NICK bob");
        assert!(
            register(&mut owner, "*", PASSWORD).0.is("REGISTER"),
            "{label}"
        );

        // Without the cap: 904.
        let mut c = srv.connect_on(1);
        c.send("AUTHENTICATE PLAIN");
        assert!(sasl_end(&mut c).0.is("904"), "{label}: no cap");

        let mut c = sasl_client(srv, 1, "tester");
        // An unknown mechanism: 908 with the list, then 904 (not counted).
        c.send("AUTHENTICATE FOO");
        let (end, before) = sasl_end(&mut c);
        assert!(end.is("904"), "{label}");
        let l908 = before.iter().find(|l| l.is("908")).expect("908");
        assert_eq!(l908.params[1], "PLAIN,SCRAM-SHA-256", "{label}");
        // Abort: 906.
        c.send("AUTHENTICATE PLAIN");
        expect_continue(&mut c);
        c.send("AUTHENTICATE *");
        assert!(sasl_end(&mut c).0.is("906"), "{label}: abort");
        // A chunk over 400 bytes: 905.
        c.send("AUTHENTICATE PLAIN");
        expect_continue(&mut c);
        c.send(&format!("AUTHENTICATE {}", "A".repeat(401)));
        assert!(sasl_end(&mut c).0.is("905"), "{label}: chunk");
        // More than 8 KiB in 400-byte chunks: 905 at the chunk past it.
        c.send("AUTHENTICATE PLAIN");
        expect_continue(&mut c);
        for _ in 0..21 {
            c.send(&format!("AUTHENTICATE {}", "A".repeat(400)));
        }
        assert!(sasl_end(&mut c).0.is("905"), "{label}: total");
        // A missing parameter: 461.
        c.send("AUTHENTICATE");
        c.expect_about("461", "AUTHENTICATE");
        // Wrong passwords: 904, 904, then 904 and the connection closes.
        for i in 0..2 {
            let (end, _) = plain(&mut c, "bob", "wrong horse battery");
            assert!(end.is("904"), "{label}: wrong password {i}");
        }
        c.send("AUTHENTICATE PLAIN");
        expect_continue(&mut c);
        c.send(&format!(
            "AUTHENTICATE {}",
            b64(b"\0bob\0wrong horse battery")
        ));
        let lines = c.expect_error_close("Too many SASL authentication failures");
        assert!(lines.iter().any(|l| l.is("904")), "{label}: {lines:?}");

        // CAP END mid-exchange: 906, and registration completes without an
        // account.
        let mut c = sasl_client(srv, 2, "quitter");
        c.send("AUTHENTICATE PLAIN");
        expect_continue(&mut c);
        c.send("CAP END");
        assert!(sasl_end(&mut c).0.is("906"), "{label}: CAP END");
        c.expect("001");
    });
}

fn register_closed_and_refused(io: Io) {
    each_server_with(io, accounts(false), |srv| {
        let label = srv.label();
        let mut c = srv.connect_on(0);
        let ls = cap_ls(&mut c);
        assert!(
            !ls.iter()
                .any(|t| t.starts_with("draft/account-registration")),
            "{label}: closed registration is not advertised: {ls:?}"
        );
        assert!(ls.iter().any(|t| t.starts_with("sasl=")), "{label}: {ls:?}");
        c.nick = "carol".into();
        c.send("NICK carol");
        let (fail, _) = register(&mut c, "*", PASSWORD);
        assert_eq!(
            fail.params[..3],
            ["REGISTER", "TEMPORARILY_UNAVAILABLE", "carol"],
            "{label}: {}",
            fail.raw
        );
    });
    each_server_with(io, accounts(true), |srv| {
        let label = srv.label();
        let mut c = srv.connect_on(0);
        c.nick = "dave".into();
        c.send("NICK dave");
        for (account, password, code) in [
            ("*", "short", "WEAK_PASSWORD"),
            ("other", PASSWORD, "ACCOUNT_NAME_MUST_BE_NICK"),
        ] {
            let (fail, _) = register(&mut c, account, password);
            assert_eq!(fail.params[1], code, "{label}: {}", fail.raw);
        }
        c.send("REGISTER dave *");
        c.expect_about("461", "REGISTER");
        assert!(register(&mut c, "*", PASSWORD).0.is("REGISTER"), "{label}");
        c.send("QUIT");
        c.until_closed();
        // The name is taken now, also for the next holder of the nick, on
        // another shard. (Its release may still be on its way: retry.)
        let mut d = srv.connect_on(1);
        d.nick = "dave".into();
        for attempt in 0.. {
            d.send("NICK DAVE");
            d.send("PING :claimed");
            let (_, seen) = d.until("PONG", |l| l.is("PONG"));
            if !seen.iter().any(|l| l.is("433")) {
                break;
            }
            assert!(attempt < 100, "{label}: the nick was never released");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (fail, _) = register(&mut d, "*", PASSWORD);
        assert_eq!(
            fail.params[..3],
            ["REGISTER", "ACCOUNT_EXISTS", "DAVE"],
            "{label}: {}",
            fail.raw
        );
    });
}

fn one_of_concurrent_registrations_wins(io: Io) {
    let configure = |c: &mut Config| {
        accounts(true)(c);
        c.accounts.custom_account_name = true;
    };
    each_server_with(io, configure, |srv| {
        let label = srv.label();
        for round in 0..3 {
            let name = format!("zed{round}");
            let mut clients: Vec<Client> = (0..4)
                .map(|i| {
                    let mut c = srv.connect_on(i);
                    c.register(&format!("r{round}x{i}"));
                    c
                })
                .collect();
            for c in &mut clients {
                c.send(&format!("REGISTER {name} * :{PASSWORD}"));
            }
            let mut won = 0;
            for c in &mut clients {
                let (l, _) = c.until("REGISTER SUCCESS or FAIL", |l| {
                    l.is("REGISTER") || l.is("FAIL")
                });
                if l.is("REGISTER") {
                    won += 1;
                } else {
                    assert_eq!(l.params[1], "ACCOUNT_EXISTS", "{label}: {}", l.raw);
                }
            }
            assert_eq!(won, 1, "{label}: round {round}: exactly one registration");
            // Every client logs in with it.
            let mut s = sasl_client(srv, round + 1, &format!("z{round}"));
            assert_logged_in(&plain(&mut s, &name, PASSWORD), &name, &label);
        }
    });
}

/// The offline tool on `dir`, cheap hashes, password `stdin`.
fn offline(dir: &Path, args: &[&str], stdin: &str) -> String {
    let options = AccountCommandOptions {
        cheap_hashes: true,
        ..AccountCommandOptions::default()
    };
    run_account_command_with(dir, args, &mut stdin.as_bytes(), &options)
        .unwrap_or_else(|e| panic!("account {args:?}: {e}"))
}

fn sasl_external_with_an_attached_certificate(io: Io) {
    for shards in SHARD_COUNTS {
        let data = TempDir::new("external");
        let cert: Arc<Mutex<Option<CertFiles>>> = Arc::default();
        let kept = cert.clone();
        let dir = data.path().to_path_buf();
        let srv = TestServer::start_tls(io, shards, move |config, ca| {
            accounts(false)(config);
            config.tls.client_ca = Some(ca.ca_pem.clone());
            config.storage.dir = Some(dir.clone());
            // Before the server locks the directory: the account and its
            // certificate, with the offline tool.
            let files = ca.client("frank");
            let fp = fingerprint_hex(&files.cert);
            offline(&dir, &["add", "frank"], &format!("{PASSWORD}\n"));
            let out = offline(&dir, &["cert", "add", "frank", &fp.to_uppercase()], "");
            assert!(out.contains("added"), "{out}");
            *kept.lock().expect("lock") = Some(files);
        });
        let label = srv.label();
        let ca = srv.ca.as_ref().expect("CA");
        let files = cert.lock().expect("lock").take().expect("client cert");
        let with_cert = Arc::new(common::certs::client_config(&ca.ca_pem, Some(&files)));
        for shard in 0..shards {
            let mut c = srv.connect_tls_on(shard, with_cert.clone());
            let ls = cap_ls(&mut c);
            assert!(
                ls.contains(&"sasl=PLAIN,SCRAM-SHA-256,EXTERNAL".to_string()),
                "{label}: {ls:?}"
            );
            let mut c = sasl_negotiate(c, &format!("frank{shard}"));
            c.send("AUTHENTICATE EXTERNAL");
            expect_continue(&mut c);
            c.send("AUTHENTICATE +");
            assert_logged_in(&sasl_end(&mut c), "frank", &format!("{label}: EXTERNAL"));
            finish_registration(&mut c);
        }
        // The account's password works too; EXTERNAL without a certificate
        // fails.
        let mut c = srv.connect_tls_on(0, ca.client_config());
        let mut c = {
            cap_ls(&mut c);
            sasl_negotiate(c, "nocert")
        };
        c.send("AUTHENTICATE EXTERNAL");
        assert!(sasl_end(&mut c).0.is("904"), "{label}: no certificate");
        assert_logged_in(&plain(&mut c, "frank", PASSWORD), "frank", &label);
        // Plaintext clients are not offered EXTERNAL.
        let mut p = srv.connect();
        let ls = cap_ls(&mut p);
        assert!(
            ls.contains(&"sasl=PLAIN,SCRAM-SHA-256".to_string()),
            "{label}: {ls:?}"
        );
        srv.stop();
    }
}

/// The `shardline-chat` binary's `account` command on `dir`.
fn account_cli(dir: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardline-chat"))
        .arg("--data-dir")
        .arg(dir)
        .arg("account")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shardline-chat account");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn account_command_round_trip_then_the_server_sees_it(io: Io) {
    let data = TempDir::new("cli");
    let dir = data.path().join("data");
    let pw1 = format!("{PASSWORD}\n");
    let pw2 = "another horse staple\n";
    let (code, out, err) = account_cli(&dir, &["add", "gina"], &pw1);
    assert_eq!((code, out.as_str()), (0, "account gina added\n"), "{err}");
    let (code, _, err) = account_cli(&dir, &["add", "GINA"], &pw1);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = account_cli(&dir, &["add", "hal"], "short\n");
    assert_eq!(code, 1);
    assert!(err.contains("at least 8 bytes"), "{err}");
    let (code, _, err) = account_cli(&dir, &["frobnicate"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("usage"), "{err}");
    let (code, out, _) = account_cli(&dir, &["add", "hal"], &pw1);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = account_cli(&dir, &["passwd", "gina"], pw2);
    assert_eq!((code, out.as_str()), (0, "password of gina changed\n"));
    let (code, out, _) = account_cli(&dir, &["del", "hal"], "");
    assert_eq!((code, out.as_str()), (0, "account hal deleted\n"));
    let (code, out, _) = account_cli(&dir, &["list"], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("gina  created "), "{out}");
    assert!(out.ends_with("1 account\n"), "{out}");

    let mut config = test_config();
    config.storage.dir = Some(dir.clone());
    let srv = TestServer::start_with(io, 4, config);
    let label = srv.label();
    // While it runs the tool refuses, naming the holder.
    let (code, _, err) = account_cli(&dir, &["list"], "");
    assert_eq!(code, 1, "{label}");
    assert!(
        err.contains("is in use by process") && err.contains(&std::process::id().to_string()),
        "{label}: {err}"
    );
    let mut c = sasl_client(&srv, 1, "gina");
    let (end, _) = plain(&mut c, "gina", PASSWORD);
    assert!(end.is("904"), "{label}: the old password");
    assert_logged_in(&plain(&mut c, "gina", pw2.trim_end()), "gina", &label);
    let mut c = sasl_client(&srv, 2, "hal");
    let (end, _) = plain(&mut c, "hal", PASSWORD);
    assert!(end.is("904"), "{label}: a deleted account");
    srv.stop();
}

fn no_store_means_no_accounts(io: Io) {
    let configure = |c: &mut Config| {
        accounts(true)(c);
        c.history.enabled = false;
    };
    each_server_with(io, configure, |srv| {
        let label = srv.label();
        let mut c = srv.connect();
        let ls = cap_ls(&mut c);
        assert!(
            !ls.iter()
                .any(|t| t.starts_with("sasl") || t.contains("account-registration")),
            "{label}: {ls:?}"
        );
        c.send("AUTHENTICATE PLAIN");
        c.expect_about("421", "AUTHENTICATE");
        c.send("REGISTER * * password");
        c.expect_about("421", "REGISTER");
    });
}

/// A flood of REGISTERs meets the bounded hashing queue: one thread, one
/// queued job; the rest are refused at once (TEMPORARILY_UNAVAILABLE) and
/// counted in `/metrics`, and the accepted ones still complete.
fn a_full_hashing_queue_refuses_at_once(io: Io) {
    let configure = |c: &mut Config| {
        accounts(true)(c);
        // Real cost: each job keeps the thread busy for a while.
        c.accounts.test_cheap_hashes = false;
        c.accounts.hash_threads = 1;
        c.accounts.hash_queue = 1;
        c.server.admin_listen = Some("127.0.0.1:0".parse().expect("literal"));
    };
    each_server_with(io, configure, |srv| {
        let label = srv.label();
        const N: usize = 6;
        let mut clients: Vec<Client> = (0..N)
            .map(|i| {
                let mut c = srv.connect_on(i);
                c.nick = format!("q{i}");
                c.send(&format!("NICK q{i}"));
                c
            })
            .collect();
        for c in &mut clients {
            c.send(&format!("REGISTER * * :{PASSWORD}"));
        }
        let (mut ok, mut refused) = (0, 0);
        for c in &mut clients {
            let (l, _) = c.until("REGISTER SUCCESS or FAIL", |l| {
                l.is("REGISTER") || l.is("FAIL")
            });
            if l.is("REGISTER") {
                ok += 1;
            } else {
                assert_eq!(l.params[1], "TEMPORARILY_UNAVAILABLE", "{label}: {}", l.raw);
                refused += 1;
            }
        }
        assert!((1..=2).contains(&ok), "{label}: {ok} accepted");
        assert_eq!(ok + refused, N, "{label}");
        let admin = srv.admin_addr().expect("admin_listen set");
        let m = common::scrape(admin, &label);
        let full: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("shardline_chat_hash_queue_full_total"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(full as usize, refused, "{label}: {m:?}");
        let registered: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("shardline_chat_accounts_registered_total"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(registered as usize, ok, "{label}");
    });
}

shardline::per_backend! {
    a_full_hashing_queue_refuses_at_once => a_full_hashing_queue_refuses_at_once;
    sasl_plain_and_scram_after_register => sasl_plain_and_scram_after_register;
    sasl_refusals => sasl_refusals;
    register_closed_and_refused => register_closed_and_refused;
    one_of_concurrent_registrations_wins => one_of_concurrent_registrations_wins;
    sasl_external_with_an_attached_certificate => sasl_external_with_an_attached_certificate;
    account_command_round_trip_then_the_server_sees_it => account_command_round_trip_then_the_server_sees_it;
    no_store_means_no_accounts => no_store_means_no_accounts;
}
