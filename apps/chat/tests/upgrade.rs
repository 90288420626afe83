//! Zero-downtime upgrade of the chat binary with a data directory, both
//! backends: the new process takes the listening sockets and the store (the
//! old one writes it out and unlocks it); accounts and history said before
//! the upgrade are there in the new process; the old process keeps its
//! sessions (talking among themselves, REGISTER refused) until they leave,
//! then exits. An upgrade whose new process fails after the store was handed
//! over gives the store back: the old process stores again, nothing lost.

mod common;

use std::{
    ffi::OsString,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
};

use common::{binary::Binary, free_port, Client, TempDir};
use shardline::Io;

const CAPS: &str =
    "batch server-time message-tags echo-message draft/chathistory draft/account-registration sasl";

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("chat.toml");
    std::fs::write(
        &path,
        "[flood]\nenabled = false\n[accounts]\nregistration = \"open\"\nhash_threads = 1\n",
    )
    .expect("write config");
    path
}

fn args(config: &Path, data: &Path, sock: &Path, from: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--config".into(),
        config.into(),
        "--data-dir".into(),
        data.into(),
        "--upgrade-socket".into(),
        sock.into(),
    ];
    if from {
        a.extend(["--upgrade-from".into(), sock.into()]);
    }
    a
}

/// `REGISTER name * :password`: whether it succeeded (and the FAIL code if not).
fn register(c: &mut Client, name: &str, password: &str) -> Result<(), String> {
    c.send(&format!("REGISTER {name} * :{password}"));
    let (l, _) = c.until("REGISTER SUCCESS or FAIL", |l| {
        (l.is("REGISTER") && l.params.first().is_some_and(|p| p == "SUCCESS"))
            || (l.is("FAIL") && l.params.first().is_some_and(|p| p == "REGISTER"))
    });
    if l.is("REGISTER") {
        Ok(())
    } else {
        Err(l.params.get(1).cloned().unwrap_or_default())
    }
}

/// SASL PLAIN before registration completes: whether it was accepted (903).
fn plain_login(c: &mut Client, nick: &str, account: &str, password: &str) -> bool {
    use base64::Engine;
    c.nick = nick.to_string();
    c.send("CAP LS 302");
    c.send(&format!("NICK {nick}"));
    c.send(&format!("USER {nick} 0 * :{nick}"));
    c.send(&format!("CAP REQ :{CAPS}"));
    c.until("CAP ACK", |l| {
        l.is("CAP") && l.params.get(1).is_some_and(|s| s == "ACK")
    });
    c.send("AUTHENTICATE PLAIN");
    c.expect("AUTHENTICATE");
    let payload = format!("\0{account}\0{password}");
    c.send(&format!(
        "AUTHENTICATE {}",
        base64::engine::general_purpose::STANDARD.encode(payload)
    ));
    let (end, _) = c.until("903 or 904", |l| l.is("903") || l.is("904"));
    c.send("CAP END");
    c.expect("001");
    c.until("end of MOTD", |l| l.is("376") || l.is("422"));
    end.is("903")
}

/// The texts of `chan`'s history as CHATHISTORY LATEST gives it.
fn history(c: &mut Client, chan: &str) -> Vec<String> {
    c.send(&format!("CHATHISTORY LATEST {chan} * 100"));
    let (_, lines) = c.until("the end of the history batch", |l| {
        l.is("BATCH") && l.params.first().is_some_and(|p| p.starts_with('-'))
    });
    lines
        .iter()
        .filter(|l| l.is("PRIVMSG"))
        .map(|l| l.last().to_string())
        .collect()
}

fn say(c: &mut Client, chan: &str, texts: &[&str]) {
    for t in texts {
        c.send(&format!("PRIVMSG {chan} :{t}"));
    }
    // echo-message: each came back, so the owner stamped and stored it.
    let mut left = texts.len();
    c.until("the echoes", |l| {
        if l.is("PRIVMSG") {
            left -= 1;
        }
        left == 0
    });
}

/// A first process serving upgrades on a fresh data directory, and where
/// its successors find everything.
struct First {
    tmp: TempDir,
    cfg: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    addr: SocketAddr,
    old: Binary,
    label: String,
}

impl First {
    fn start(io: Io, tag: &str) -> First {
        let tmp = TempDir::new(tag);
        let data = tmp.path().join("data");
        let sock = tmp.path().join("upgrade.sock");
        let cfg = config(tmp.path());
        let addr = free_port();
        let old = Binary::spawn(io, 2, addr, &args(&cfg, &data, &sock, false));
        old.wait_log("serving upgrades", 1);
        let label = old.label.clone();
        First {
            tmp,
            cfg,
            data,
            sock,
            addr,
            old,
            label,
        }
    }
}

fn an_upgrade_hands_over_the_store(io: Io) {
    let First {
        tmp: _tmp,
        cfg,
        data,
        sock,
        addr,
        old,
        label,
    } = First::start(io, "chat-upgrade");

    let mut alice = old.client("alice", CAPS);
    register(&mut alice, "alice", "sesame-1").expect("REGISTER on the old process");
    let mut bob = old.client("bob", CAPS);
    alice.join("#up");
    bob.join("#up");
    alice.drain();
    say(&mut alice, "#up", &["before 1", "before 2", "before 3"]);

    let new = Binary::spawn(io, 3, addr, &args(&cfg, &data, &sock, true));
    new.wait_log("upgrade complete", 1);
    old.wait_log("handed over: keeping these sessions", 1);
    old.wait_log("data directory written out and unlocked", 1);

    // The old process's sessions go on among themselves; nothing is stored
    // there any more, and accounts cannot change.
    bob.drain();
    say(&mut alice, "#up", &["during"]);
    let got = bob.privmsg_texts(1);
    assert_eq!(got, ["during"], "{label}: the old sessions still talk");
    assert_eq!(
        register(&mut bob, "bob", "sesame-2"),
        Err("TEMPORARILY_UNAVAILABLE".into()),
        "{label}: REGISTER on the old process after the handover"
    );
    assert_eq!(
        history(&mut bob, "#up"),
        ["before 1", "before 2", "before 3", "during"],
        "{label}: the old process answers from memory"
    );

    // A new connection reaches the new process: the account and the history
    // said before the upgrade are there.
    let mut carol = Client::connect_to(addr, &label);
    assert!(
        plain_login(&mut carol, "carol", "alice", "sesame-1"),
        "{label}: SASL with an account registered before the upgrade"
    );
    carol.join("#up");
    assert_eq!(
        history(&mut carol, "#up"),
        ["before 1", "before 2", "before 3"],
        "{label}: the new process has everything said before the upgrade"
    );
    let mut dave = Client::connect_to(addr, &label);
    dave.register_with_caps("dave", CAPS);
    register(&mut dave, "dave", "sesame-3").expect("REGISTER on the new process");

    // The old sessions leave; the old process exits by itself.
    alice.send("QUIT :bye");
    bob.send("QUIT :bye");
    let mut old = old;
    let status = old.wait_exit();
    assert!(status.success(), "{label}: old process exit {status}");
    let log = old.log().join("\n");
    assert!(
        log.contains("history store was handed to a new process"),
        "{label}: {log}"
    );
    drop(carol);
    drop(dave);
    new.stop();
}

fn a_failed_upgrade_gives_the_store_back(io: Io) {
    let First {
        tmp: _tmp,
        cfg,
        data,
        sock,
        addr,
        old,
        label,
    } = First::start(io, "chat-upgrade-fail");
    let mut alice = old.client("alice", CAPS);
    alice.join("#keep");
    say(&mut alice, "#keep", &["one"]);

    // A successor that takes the store, then cannot bind a second address.
    let busy = TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let mut a = args(&cfg, &data, &sock, true);
    a.extend([
        "--listen".into(),
        busy.local_addr().unwrap().to_string().into(),
    ]);
    let mut failed = Binary::spawn(io, 1, addr, &a);
    let status = failed.wait_exit();
    assert!(!status.success(), "{label}: the successor cannot start");
    assert!(
        failed.log().join("\n").contains("already in use"),
        "{label}: {}",
        failed.log().join("\n")
    );
    old.wait_log("data directory locked again", 1);
    old.wait_log("the data directory is back; storing again", 2);

    // The old process stores again, accounts included.
    say(&mut alice, "#keep", &["two"]);
    register(&mut alice, "alice", "sesame-1").expect("REGISTER after the failed upgrade");
    drop(alice);
    old.stop();
    let again = Binary::start_with_data(io, 2, &cfg, &data);
    let mut c = Client::connect_to(again.addr, &label);
    assert!(
        plain_login(&mut c, "dave", "alice", "sesame-1"),
        "{label}: the account registered after the failed upgrade"
    );
    c.join("#keep");
    assert_eq!(history(&mut c, "#keep"), ["one", "two"], "{label}");
    drop(c);
    again.stop();
}

shardline::per_backend! {
    an_upgrade_hands_over_the_store => an_upgrade_hands_over_the_store;
    a_failed_upgrade_gives_the_store_back => a_failed_upgrade_gives_the_store_back;
}
