//! SIGHUP on the `shardline-chat` binary: the configuration file is read again;
//! a valid one takes effect (new MOTD for the next client) while every client
//! stays connected, an invalid one is refused with a log line and changes
//! nothing. The TLS certificate files are read again too: new handshakes get the
//! new certificate, established TLS clients stay, a bad file is refused. On both
//! backends.

mod common;

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{binary::Binary, certs::TestCa, Client, WAIT};
use shardline::Io;

const SHARDS: usize = 2;

/// The running binary (killed if the test fails before it stops it), with
/// what these tests do to it.
struct Chat(Binary);

impl std::ops::Deref for Chat {
    type Target = Binary;
    fn deref(&self) -> &Binary {
        &self.0
    }
}

impl std::ops::DerefMut for Chat {
    fn deref_mut(&mut self) -> &mut Binary {
        &mut self.0
    }
}

impl Chat {
    fn start(io: Io, config: &Path) -> Chat {
        Chat::start_with(io, config, &[])
    }

    /// Like `start`, with more command-line arguments.
    fn start_with(io: Io, config: &Path, extra: &[&str]) -> Chat {
        let mut args: Vec<OsString> = vec!["--config".into(), config.into()];
        args.extend(extra.iter().map(OsString::from));
        let chat = Chat(Binary::spawn(io, SHARDS, common::free_port(), &args));
        chat.wait_log("chat shard ready", SHARDS);
        chat
    }

    fn count_log(&self, text: &str) -> usize {
        self.log().iter().filter(|l| l.contains(text)).count()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(
            status.is_none(),
            "{}: exited ({status:?}); log:\n{}",
            self.label,
            self.log().join("\n")
        );
    }

    /// A new client, registered as `nick`; returns its MOTD lines (372 texts).
    fn motd_of_new_client(&self, nick: &str) -> (Client, Vec<String>) {
        let mut c = Client::connect_to(self.addr, &self.label);
        c.nick = nick.to_string();
        c.send(&format!("NICK {nick}"));
        c.send(&format!("USER {nick} 0 * :Test {nick}"));
        let (_, lines) = c.until("end of MOTD", |l| l.is("376") || l.is("422"));
        let motd = lines
            .iter()
            .filter(|l| l.is("372"))
            .map(|l| l.last().to_string())
            .collect();
        (c, motd)
    }

    /// Like `motd_of_new_client`, for a server that may not listen yet.
    fn motd_of_new_client_retrying(&self, nick: &str) -> (Client, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "{}: never listened", self.label);
            thread::sleep(Duration::from_millis(10));
        }
        self.motd_of_new_client(nick)
    }

    fn stop(self) {
        self.0.stop();
    }
}

fn config_text(path: &Path, motd: &str) -> String {
    config_with(path, motd, "")
}

/// The test configuration with `motd`, the data directory next to the file at
/// `path`, and `extra` TOML at the end.
fn config_with(path: &Path, motd: &str, extra: &str) -> String {
    let data = path.with_file_name("data");
    format!(
        "[server]\nname = \"irc.rehash.test\"\nmotd = \"{motd}\"\n\n[flood]\nenabled = false\n\n\
         [storage]\ndir = \"{}\"\n{extra}",
        data.display()
    )
}

fn temp_config(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chat-rehash-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("chat.toml")
}

/// Writes `text` to `path` atomically (a rename), as an editor or a deploy would.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

fn sighup_rehashes(io: Io) {
    let path = temp_config(&io.to_string());
    write_config(&path, &config_text(&path, "old motd"));
    let mut chat = Chat::start(io, &path);

    let (mut first, motd) = chat.motd_of_new_client("first");
    assert_eq!(motd, ["- old motd"], "{}", chat.label);
    first.send("JOIN #stay");
    first.expect("366");

    // A valid new file: every shard swaps it in, nobody is disconnected. New
    // history bounds apply at once; a new sync policy needs a restart.
    // (`extra` goes on in the [storage] section.)
    let extra = "sync = \"always\"\n[history]\nchannel_messages = 7\n";
    write_config(&path, &config_with(&path, "new motd\\nsecond line", extra));
    let before = chat.count_log("configuration rehashed");
    chat.signal("-HUP");
    chat.wait_log("rehashed configuration", 1);
    chat.wait_log("configuration rehashed", before + SHARDS);
    let log = chat.wait_log("history bounds changed", SHARDS);
    assert!(
        log.iter()
            .any(|l| l.contains("need a restart") && l.contains("storage.sync")),
        "{}: the restart-only change is named:\n{}",
        chat.label,
        log.join("\n")
    );
    chat.assert_running();

    // The first client is still there and served.
    first.sync();
    first.send("MOTD");
    let (_, lines) = first.until_command("376");
    let shown: Vec<&str> = lines
        .iter()
        .filter(|l| l.is("372"))
        .map(|l| l.last())
        .collect();
    assert_eq!(shown, ["- new motd", "- second line"], "{}", chat.label);
    // New clients (on whichever shard) get the new MOTD and reach the first one.
    for i in 0..2 * SHARDS {
        let nick = format!("new{i}");
        let (mut c, motd) = chat.motd_of_new_client(&nick);
        assert_eq!(
            motd,
            ["- new motd", "- second line"],
            "{}: {nick}",
            chat.label
        );
        c.send("PRIVMSG first :hello after rehash");
        let (l, _) = first.until("PRIVMSG", |l| l.is("PRIVMSG"));
        assert_eq!(l.nick(), Some(nick.as_str()), "{}", chat.label);
        assert_eq!(l.last(), "hello after rehash", "{}", chat.label);
    }

    // An invalid file is refused: nothing changes, the server goes on.
    write_config(&path, "[server]\nname = \"no dot\"\nmotd = \"bad motd\"\n");
    let applied = chat.count_log("configuration rehashed");
    chat.signal("-HUP");
    let log = chat.wait_log("rehash refused", 1);
    assert!(
        log.iter()
            .any(|l| l.contains("rehash refused") && l.contains("server.name")),
        "{}: the refusal names the problem:\n{}",
        chat.label,
        log.join("\n")
    );
    // And a file that is not TOML at all.
    write_config(&path, "this is [not toml\n");
    chat.signal("-HUP");
    chat.wait_log("rehash refused", 2);
    chat.assert_running();
    first.sync();
    let (_, motd) = chat.motd_of_new_client("later");
    assert_eq!(motd, ["- new motd", "- second line"], "{}", chat.label);
    assert_eq!(
        chat.count_log("configuration rehashed"),
        applied,
        "{}: a refused file reached a shard",
        chat.label
    );
    first.send("MOTD");
    let (_, lines) = first.until_command("376");
    assert!(
        lines
            .iter()
            .filter(|l| l.is("372"))
            .all(|l| l.last() != "- bad motd"),
        "{}",
        chat.label
    );

    chat.stop();
    let _ = std::fs::remove_dir_all(path.parent().expect("temp dir"));
}

/// Whether process `pid` ignores or catches SIGHUP (`/proc/PID/status`).
fn sighup_ignored_or_caught(pid: libc::pid_t) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let bit = 1u64 << (libc::SIGHUP - 1);
    status.lines().any(|l| {
        ["SigIgn:", "SigCgt:"].iter().any(|k| {
            l.strip_prefix(k)
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .is_some_and(|mask| mask & bit != 0)
        })
    })
}

fn sighup_during_startup_is_harmless(io: Io) {
    let path = temp_config(&format!("startup-{io}"));
    write_config(&path, &config_text(&path, "startup motd"));
    let args: Vec<OsString> = vec!["--config".into(), path.clone().into()];
    let mut chat = Chat(Binary::spawn(io, 1, common::free_port(), &args));
    chat.label = format!("startup --io {io}");
    // Before `main` runs (the dynamic loader) SIGHUP has its default action,
    // which nothing in the binary can change; from its first statement on it is
    // ignored, then handled by Server::run. Signal from that moment, through the
    // configuration load and the shards' start.
    let pid = chat.child.id() as libc::pid_t;
    let wait = Instant::now() + WAIT;
    while !sighup_ignored_or_caught(pid) {
        assert!(Instant::now() < wait, "SIGHUP never ignored nor caught");
        thread::sleep(Duration::from_micros(200));
    }
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        // SAFETY: kill(2) on our own child, which is not reaped before `stop`.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
        thread::sleep(Duration::from_millis(1));
    }
    chat.assert_running();
    let (mut c, motd) = chat.motd_of_new_client_retrying("early");
    assert_eq!(motd, ["- startup motd"], "{}", chat.label);
    c.sync();
    chat.assert_running();
    chat.stop();
    let _ = std::fs::remove_dir_all(path.parent().expect("temp dir"));
}

fn sighup_without_a_config_file_is_harmless(io: Io) {
    let data = common::TempDir::new("no-config");
    let args: Vec<OsString> = vec!["--data-dir".into(), data.path().into()];
    let mut chat = Chat(Binary::spawn(io, 1, common::free_port(), &args));
    chat.label = format!("no config --io {io}");
    chat.wait_log("chat shard ready", 1);
    chat.signal("-HUP");
    chat.wait_log("nothing to reload", 1);
    chat.assert_running();
    let (mut c, _) = chat.motd_of_new_client("alice");
    c.sync();
    chat.stop();
}

/// A TLS client of `addr` trusting `ca`, registered as `nick`; and the
/// fingerprint of the certificate the server showed it.
fn tls_client(chat: &Chat, addr: SocketAddr, ca: &TestCa, nick: &str) -> (Client, String) {
    let mut c = Client::connect_tls_to(addr, &chat.label, ca.client_config());
    c.register(nick);
    let fp = c.server_cert_sha256().expect("a TLS client");
    (c, fp)
}

fn sighup_reloads_the_tls_certificate(io: Io) {
    let ca = TestCa::new(&format!("rehash-{io}"));
    // The files the server is started with, replaced in place later (as a
    // certificate renewal does).
    let served = ca.server("served", &["localhost"]);
    let first = common::certs::fingerprint_hex(&served.cert);
    let path = temp_config(&format!("tls-{io}"));
    write_config(&path, &config_text(&path, "tls motd"));
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let (cert, key) = (s(&served.cert), s(&served.key));
    // Like the plaintext port: free right now.
    let tls_addr = common::free_port();
    let addr = tls_addr.to_string();
    let extra = [
        "--tls-listen",
        &addr,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    let mut chat = Chat::start_with(io, &path, &extra);

    let (mut live, fp) = tls_client(&chat, tls_addr, &ca, "live");
    assert_eq!(fp, first, "{}", chat.label);
    live.send("JOIN #tls");
    live.expect("366");

    // New files in place of the old ones, then SIGHUP.
    let renewed = ca.server("renewed", &["localhost"]);
    let second = common::certs::fingerprint_hex(&renewed.cert);
    assert_ne!(first, second);
    std::fs::copy(&renewed.cert, &served.cert).expect("replace cert");
    std::fs::copy(&renewed.key, &served.key).expect("replace key");
    chat.signal("-HUP");
    chat.wait_log("TLS certificates reloaded", 1);
    chat.wait_log("rehashed configuration", 1);
    chat.assert_running();
    // New clients, on whichever shard, get the new certificate.
    for i in 0..2 * SHARDS {
        let (mut c, fp) = tls_client(&chat, tls_addr, &ca, &format!("new{i}"));
        assert_eq!(fp, second, "{}: client {i}", chat.label);
        c.send("JOIN #tls");
        c.expect("366");
        c.send("PRIVMSG #tls :hello over the new certificate");
        let (l, _) = live.until("PRIVMSG", |l| l.is("PRIVMSG"));
        assert_eq!(l.last(), "hello over the new certificate", "{}", chat.label);
    }
    // The client from before the reload is still connected and served.
    live.sync();
    assert_eq!(live.server_cert_sha256(), Some(first.clone()));

    // A broken certificate file is refused, with the file named; the running
    // certificate stays.
    std::fs::write(&served.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("break cert");
    chat.signal("-HUP");
    let log = chat.wait_log("TLS reload refused", 1);
    assert!(
        log.iter()
            .any(|l| l.contains("TLS reload refused") && l.contains("served.pem")),
        "{}: the refusal names the file:\n{}",
        chat.label,
        log.join("\n")
    );
    chat.assert_running();
    let (mut c, fp) = tls_client(&chat, tls_addr, &ca, "after");
    assert_eq!(fp, second, "{}: the old certificate stays", chat.label);
    c.sync();
    // The key of another certificate: refused too.
    std::fs::copy(&renewed.cert, &served.cert).expect("restore cert");
    std::fs::copy(&ca.server("stranger", &["localhost"]).key, &served.key).expect("wrong key");
    chat.signal("-HUP");
    chat.wait_log("TLS reload refused", 2);
    let (mut c, fp) = tls_client(&chat, tls_addr, &ca, "after2");
    assert_eq!(fp, second, "{}", chat.label);
    c.sync();
    live.sync();
    // Plaintext is served beside it all along.
    let (mut p, _) = chat.motd_of_new_client("plain");
    p.sync();

    chat.stop();
    let _ = std::fs::remove_dir_all(path.parent().expect("temp dir"));
}

/// A plaintext operator password works and is warned about at start (without
/// showing it); a rehash to an argon2 hash replaces it without a warning, and
/// OPER then checks the hash (on the OPER checker's thread).
fn operator_passwords_plaintext_warns_hash_after_rehash(io: Io) {
    let path = temp_config(&format!("oper-{io}"));
    let plain = "[[operators]]\nname = \"op\"\npassword = \"pl4intext\"\n";
    write_config(&path, &config_with(&path, "m", plain));
    let mut chat = Chat::start(io, &path);
    let log = chat.wait_log("the password is in plaintext", 1);
    assert!(
        log.iter().any(|l| l.contains("operator op")),
        "{}: {log:?}",
        chat.label
    );
    assert!(!log.iter().any(|l| l.contains("pl4intext")), "{log:?}");
    let (mut a, _) = chat.motd_of_new_client("alice");
    a.send("OPER op pl4intext");
    a.expect("381");

    let params = argon2::Params::new(8, 1, 1, Some(32)).expect("valid parameters");
    let phc =
        shardline_chat::auth::password::hash_password_with(b"h4shed pw", params).expect("hash");
    let hashed = format!("[[operators]]\nname = \"op\"\npassword = \"{phc}\"\n");
    write_config(&path, &config_with(&path, "m", &hashed));
    let before = chat.count_log("configuration rehashed");
    chat.signal("-HUP");
    chat.wait_log("configuration rehashed", before + SHARDS);
    assert_eq!(
        chat.count_log("the password is in plaintext"),
        1,
        "{}",
        chat.label
    );
    chat.assert_running();
    let (mut b, _) = chat.motd_of_new_client("bob");
    b.send("OPER op pl4intext");
    b.expect("464");
    b.send("OPER op :h4shed pw");
    b.expect("381");
    // A rehash back to plaintext warns again.
    write_config(&path, &config_with(&path, "m", plain));
    chat.signal("-HUP");
    chat.wait_log("rehash: operator op: the password is in plaintext", 1);
    chat.stop();
}

shardline::per_backend! {
    operator_passwords_plaintext_warns_hash_after_rehash =>
        operator_passwords_plaintext_warns_hash_after_rehash;
    sighup_rehashes => sighup_rehashes;
    sighup_during_startup_is_harmless => sighup_during_startup_is_harmless;
    sighup_without_a_config_file_is_harmless => sighup_without_a_config_file_is_harmless;
    sighup_reloads_the_tls_certificate => sighup_reloads_the_tls_certificate;
}
