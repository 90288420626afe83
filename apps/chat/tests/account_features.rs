//! Accounts as other users see them (issue 14): `account-tag`,
//! `account-notify`, `extended-join`, WHOIS 330, nick protection
//! (`[accounts] enforce_nick`), and OPER against argon2 hashes. Clients log in
//! with the `TESTACCOUNT` hook; accounts that must exist in the store are made
//! with the offline account command before the server starts. Raw TCP, both
//! backends, 1 and 4 shards, clients spread over the shards.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{each_server_with, Client, Line, TempDir, TestServer};
use shardline::Io;
use shardline_chat::{
    auth::{
        cli::{run_account_command_with, AccountCommandOptions},
        password::hash_password_with,
    },
    config::Operator,
    Config,
};

fn accounts_config(c: &mut Config) {
    c.test_account_command = true;
}

/// A registered client on `shard` with `caps` (none if empty).
fn client(srv: &TestServer, shard: usize, nick: &str, caps: &str) -> Client {
    let mut c = srv.connect_on(shard);
    if caps.is_empty() {
        c.register(nick);
    } else {
        c.register_with_caps(nick, caps);
    }
    c
}

/// Logs `c` in to `account` (`*`: out) and waits until that is done.
fn login(c: &mut Client, account: &str) {
    c.send(&format!("TESTACCOUNT {account}"));
    c.sync();
}

/// The lines among `lines` that are `command`.
fn only<'a>(lines: &'a [Line], command: &str) -> Vec<&'a Line> {
    lines.iter().filter(|l| l.is(command)).collect()
}

fn account_tag_only_with_the_cap_and_only_for_logged_in_senders(io: Io) {
    each_server_with(io, accounts_config, |srv| {
        let label = srv.label();
        let mut tagged = client(srv, 0, "tagged", "account-tag");
        let mut plain = client(srv, 1, "plain", "message-tags server-time");
        let mut carol = client(srv, 2, "carol", "echo-message account-tag");
        let mut dave = client(srv, 3, "dave", "");
        for c in [&mut tagged, &mut plain, &mut carol, &mut dave] {
            c.join("#tags");
        }
        login(&mut carol, "CarolAcct");
        tagged.sync();
        plain.sync();

        carol.send("PRIVMSG #tags :from carol");
        let m = tagged.expect("PRIVMSG");
        assert_eq!(m.tag("account"), Some("CarolAcct"), "{label}: {}", m.raw);
        assert_eq!(m.last(), "from carol");
        let m = plain.expect("PRIVMSG");
        assert_eq!(m.tag("account"), None, "{label}: {}", m.raw);
        assert!(m.tag("msgid").is_some(), "{label}: {}", m.raw);
        let echo = carol.expect("PRIVMSG");
        assert_eq!(echo.tag("account"), Some("CarolAcct"), "{label}: echo");
        let m = dave.expect("PRIVMSG");
        assert!(m.tags.is_empty(), "{label}: {}", m.raw);

        // Not logged in: no tag, even for clients that asked for it.
        dave.send("PRIVMSG #tags :from dave");
        let m = tagged.expect("PRIVMSG");
        assert_eq!(
            (m.nick(), m.tag("account")),
            (Some("dave"), None),
            "{label}"
        );

        // Private messages and NOTICEs too.
        carol.send("PRIVMSG tagged :psst");
        let m = tagged.expect("PRIVMSG");
        assert_eq!(m.tag("account"), Some("CarolAcct"), "{label}: {}", m.raw);
        carol.send("NOTICE #tags :note");
        let m = tagged.expect("NOTICE");
        assert_eq!(m.tag("account"), Some("CarolAcct"), "{label}: {}", m.raw);

        // Other events of a logged-in member carry it: TOPIC (carol is not an
        // op; the channel's creator makes the topic free), NICK, PART.
        tagged.send("MODE #tags -t");
        tagged.sync();
        carol.sync();
        carol.send("TOPIC #tags :topic by carol");
        let t = tagged.expect("TOPIC");
        assert_eq!(t.tag("account"), Some("CarolAcct"), "{label}: {}", t.raw);
        carol.send("NICK carol2");
        let n = tagged.expect("NICK");
        assert_eq!(n.tag("account"), Some("CarolAcct"), "{label}: {}", n.raw);
        carol.send("PART #tags");
        let p = tagged.expect("PART");
        assert_eq!(p.tag("account"), Some("CarolAcct"), "{label}: {}", p.raw);

        // Logged out: no tag any more.
        login(&mut carol, "*");
        carol.send("PRIVMSG tagged :anonymous");
        let m = tagged.expect("PRIVMSG");
        assert_eq!(m.tag("account"), None, "{label}: {}", m.raw);
        tagged.sync_without("PRIVMSG");
    });
}

fn account_notify_reaches_each_peer_once(io: Io) {
    each_server_with(io, accounts_config, |srv| {
        let label = srv.label();
        // Peers on every shard; most share two channels with x.
        let mut peers: Vec<Client> = (0..4)
            .map(|i| client(srv, i, &format!("p{i}"), "account-notify"))
            .collect();
        let mut blind = client(srv, 1, "blind", "");
        let mut x = client(srv, 2, "xuser", "account-notify");
        let mut outsider = client(srv, 3, "outsider", "account-notify");
        x.join("#one");
        x.join("#two");
        for (i, p) in peers.iter_mut().enumerate() {
            p.join("#one");
            if i != 3 {
                p.join("#two");
            }
        }
        blind.join("#one");
        outsider.join("#elsewhere");
        for c in peers.iter_mut().chain([&mut blind, &mut outsider]) {
            c.sync();
        }

        login(&mut x, "Xacct");
        for (i, p) in peers.iter_mut().enumerate() {
            let seen = p.sync();
            let acct = only(&seen, "ACCOUNT");
            assert_eq!(acct.len(), 1, "{label}: p{i}: {seen:?}");
            assert_eq!(acct[0].nick(), Some("xuser"), "{label}");
            assert_eq!(acct[0].params, ["Xacct"], "{label}: {}", acct[0].raw);
        }
        blind.sync_without("ACCOUNT");
        outsider.sync_without("ACCOUNT");
        // Not to itself.
        x.sync_without("ACCOUNT");

        // The same account again changes nothing.
        login(&mut x, "Xacct");
        peers[0].sync_without("ACCOUNT");

        login(&mut x, "*");
        for (i, p) in peers.iter_mut().enumerate() {
            let seen = p.sync();
            let acct = only(&seen, "ACCOUNT");
            assert_eq!(acct.len(), 1, "{label}: p{i}: {seen:?}");
            assert_eq!(acct[0].params, ["*"], "{label}: {}", acct[0].raw);
        }
        blind.sync_without("ACCOUNT");

        // Logged in before registration: nothing to notify, but the account
        // is known everywhere it matters (WHOIS, JOIN, messages).
        let mut early = srv.connect_on(3);
        early.send("TESTACCOUNT Early");
        early.register("early");
        early.join("#one");
        for (i, p) in peers.iter_mut().enumerate() {
            let (join, before) = p.until_command("JOIN");
            assert_eq!(join.nick(), Some("early"), "{label}: p{i}");
            let seen = p.sync();
            assert!(
                only(&before, "ACCOUNT").is_empty(),
                "{label}: p{i}: {before:?}"
            );
            assert!(only(&seen, "ACCOUNT").is_empty(), "{label}: p{i}: {seen:?}");
        }
        peers[0].send("WHOIS early");
        let who = peers[0].expect("330");
        assert_eq!(
            who.params[1..],
            ["early", "Early", "is logged in as"],
            "{label}"
        );
        peers[0].expect("318");
    });
}

fn extended_join_both_ways(io: Io) {
    each_server_with(io, accounts_config, |srv| {
        let label = srv.label();
        let mut ext = client(srv, 0, "ext", "extended-join account-tag");
        let mut plain = client(srv, 1, "plain", "");
        ext.join("#ej");
        plain.join("#ej");
        // plain's JOIN reaches ext from another shard: wait for it (ext's own
        // PING barrier does not cover other clients' effects).
        ext.until("plain's JOIN", |l| {
            l.is("JOIN") && l.nick() == Some("plain")
        });

        let mut acct = srv.connect_on(2);
        acct.send("TESTACCOUNT TheAcct");
        register_collecting(&mut acct, "joiner");
        acct.send("JOIN #ej");
        let own = acct.expect("JOIN");
        assert_eq!(own.params, ["#ej"], "{label}: no cap, plain JOIN");
        let j = ext.expect("JOIN");
        assert_eq!(j.nick(), Some("joiner"), "{label}");
        assert_eq!(
            j.params,
            ["#ej", "TheAcct", "Test joiner"],
            "{label}: {}",
            j.raw
        );
        assert_eq!(j.tag("account"), Some("TheAcct"), "{label}: {}", j.raw);
        let j = plain.expect("JOIN");
        assert_eq!(j.params, ["#ej"], "{label}: {}", j.raw);
        assert!(j.tags.is_empty(), "{label}: {}", j.raw);

        let mut anon = client(srv, 3, "anon", "extended-join");
        anon.send("JOIN #ej");
        let own = anon.expect("JOIN");
        assert_eq!(
            own.params,
            ["#ej", "*", "Test anon"],
            "{label}: {}",
            own.raw
        );
        let j = ext.expect("JOIN");
        assert_eq!(j.params, ["#ej", "*", "Test anon"], "{label}: {}", j.raw);
        assert_eq!(j.tag("account"), None, "{label}");
        assert_eq!(plain.expect("JOIN").params, ["#ej"], "{label}");
    });
}

fn whois_shows_the_account_across_shards(io: Io) {
    each_server_with(io, accounts_config, |srv| {
        let label = srv.label();
        let mut a = client(srv, 0, "asker", "");
        let mut b = client(srv, 1, "target", "");
        let mut c = client(srv, 3, "other", "");
        login(&mut b, "TargetAcct");
        a.send("WHOIS target");
        let (end, lines) = a.until_command("318");
        let acct = only(&lines, "330");
        assert_eq!(acct.len(), 1, "{label}: {lines:?}");
        assert_eq!(
            acct[0].params,
            ["asker", "target", "TargetAcct", "is logged in as"],
            "{label}"
        );
        assert_eq!(end.params[1], "target");
        a.send("WHOIS other");
        let (_, lines) = a.until_command("318");
        assert!(only(&lines, "330").is_empty(), "{label}: {lines:?}");
        login(&mut b, "*");
        c.send("WHOIS target");
        let (_, lines) = c.until_command("318");
        assert!(only(&lines, "330").is_empty(), "{label}: {lines:?}");
    });
}

/// Makes the accounts `names` (password "password1", cheap hashes) in the
/// data directory `dir`, offline.
fn make_accounts(dir: &Path, names: &[&str]) {
    let options = AccountCommandOptions {
        cheap_hashes: true,
        ..AccountCommandOptions::default()
    };
    for name in names {
        let out = run_account_command_with(dir, &["add", name], &mut &b"password1\n"[..], &options)
            .unwrap_or_else(|e| panic!("account add {name}: {e}"));
        assert!(out.contains("added"), "{out}");
    }
}

/// Nick protection's grace period in these tests: long enough for a client
/// to join a channel or log in first on a loaded machine.
const GRACE_SECS: f64 = 1.0;

/// How long a test waits to see that nobody is renamed.
fn past_grace() {
    std::thread::sleep(Duration::from_secs_f64(GRACE_SECS * 2.5));
}

/// NICK, USER (and `then`, run as soon as registration completes) and the
/// burst up to the end of the MOTD; returns the burst.
fn register_then(c: &mut Client, nick: &str, then: &str) -> Vec<Line> {
    c.nick = nick.to_string();
    c.send(&format!("NICK {nick}"));
    c.send(&format!("USER {nick} 0 * :Test {nick}"));
    if !then.is_empty() {
        c.send(then);
    }
    let (_, burst) = c.until("end of MOTD", |l| l.is("376") || l.is("422"));
    burst
}

/// NICK, USER and the burst up to the end of the MOTD; returns the burst.
fn register_collecting(c: &mut Client, nick: &str) -> Vec<Line> {
    register_then(c, nick, "")
}

/// The nick protection warning among `lines`, if any.
fn warning(lines: &[Line]) -> Option<&Line> {
    lines
        .iter()
        .find(|l| l.is("NOTICE") && l.last().contains("is registered"))
}

fn enforce_nick_renames_after_the_grace_period_unless_logged_in(io: Io) {
    let data = TempDir::new("enforce");
    make_accounts(data.path(), &["alice", "Bob[x]"]);
    let dir = data.path().to_path_buf();
    let configure = move |c: &mut Config| {
        c.test_account_command = true;
        c.storage.dir = Some(dir.clone());
        c.accounts.enforce_nick = true;
        c.accounts.enforce_nick_grace_secs = GRACE_SECS;
    };
    each_server_with(io, configure, |srv| {
        let label = srv.label();
        let mut watcher = client(srv, 1, "watcher", "");
        watcher.join("#guard");

        // Not logged in: warned, then renamed, seen by a peer on another shard.
        // It joins as soon as it is registered: before the grace ends.
        let mut squatter = srv.connect_on(2);
        let burst = register_then(&mut squatter, "alice", "JOIN #guard");
        let warn = warning(&burst).unwrap_or_else(|| panic!("{label}: no warning: {burst:?}"));
        assert_eq!(warn.params[0], "alice", "{label}: {}", warn.raw);
        assert!(warn.last().contains("within 1 seconds"), "{}", warn.raw);
        let started = Instant::now();
        let nick = squatter.expect("NICK");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{label}: renamed late"
        );
        assert_eq!(nick.nick(), Some("alice"), "{label}: {}", nick.raw);
        let guest = nick.params[0].clone();
        assert!(guest.starts_with("Guest"), "{label}: {}", nick.raw);
        let seen = watcher.expect("NICK");
        assert_eq!(
            (seen.nick(), seen.params[0].as_str()),
            (Some("alice"), guest.as_str()),
            "{label}"
        );
        // The nick is free again (its release is done once the renamed
        // client's PING is answered), and the guest is who it was.
        squatter.sync();
        watcher.send("WHOIS alice");
        watcher.expect("401");
        watcher.send(&format!("WHOIS {guest}"));
        assert_eq!(watcher.expect("311").params[1], guest, "{label}");
        squatter.nick = guest;

        // Logging in within the grace period (any casing) keeps the nick.
        let mut owner = srv.connect_on(3);
        let burst = register_collecting(&mut owner, "ALICE");
        assert!(warning(&burst).is_some(), "{label}: {burst:?}");
        login(&mut owner, "Alice");
        past_grace();
        owner.sync_without("NICK");
        watcher.send("WHOIS alice");
        let who = watcher.expect("311");
        assert_eq!(who.params[1], "ALICE", "{label}");
        watcher.expect("318");

        // Logged in before registering: no warning at all. A nick that is no
        // account is left alone.
        let mut early = srv.connect_on(0);
        early.send("TESTACCOUNT bob[X]");
        let burst = register_collecting(&mut early, "bob{x}");
        assert!(warning(&burst).is_none(), "{label}: {burst:?}");
        let mut free = srv.connect_on(1);
        let burst = register_collecting(&mut free, "carol");
        assert!(warning(&burst).is_none(), "{label}: {burst:?}");

        // Logging out of it starts the protection over; changing nick ends it.
        early.send("TESTACCOUNT *");
        let seen = early.sync();
        assert!(warning(&seen).is_some(), "{label}: {seen:?}");
        early.send("NICK elsewhere");
        assert_eq!(early.expect("NICK").params[0], "elsewhere", "{label}");
        past_grace();
        early.sync_without("NICK");
        free.sync_without("NICK");
    });
}

fn enforce_nick_is_off_by_default(io: Io) {
    let data = TempDir::new("noenforce");
    make_accounts(data.path(), &["alice"]);
    let dir = data.path().to_path_buf();
    let configure = move |c: &mut Config| {
        c.storage.dir = Some(dir.clone());
        c.accounts.enforce_nick_grace_secs = GRACE_SECS;
    };
    each_server_with(io, configure, |srv| {
        let label = srv.label();
        let mut c = srv.connect_on(1);
        let burst = register_collecting(&mut c, "alice");
        assert!(warning(&burst).is_none(), "{label}: {burst:?}");
        past_grace();
        c.sync_without("NICK");
    });
}

/// An argon2 PHC string of `password` with the cheapest parameters.
fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(8, 1, 1, Some(32)).expect("valid parameters");
    hash_password_with(password.as_bytes(), params).expect("hash")
}

fn oper_with_an_argon2_hash(io: Io) {
    let hashed = cheap_hash("c0rrect horse");
    let configure = move |c: &mut Config| {
        c.operators = vec![
            Operator {
                name: "hashed".into(),
                password: hashed.clone(),
                host: "*".into(),
            },
            Operator {
                name: "plain".into(),
                password: "hunter2".into(),
                host: "*".into(),
            },
        ];
    };
    each_server_with(io, configure, |srv| {
        let label = srv.label();
        let [mut a, mut b] = srv.register_each(["alice", "bob"]);
        a.send("OPER hashed wrong");
        a.expect("464");
        a.send("OPER plain c0rrect horse");
        a.expect("464");
        // The hash itself is no password.
        a.send(&format!("OPER hashed {}", cheap_hash("x")));
        a.expect("464");
        // The next command waits for the check: +o is there when it runs.
        a.send("OPER hashed :c0rrect horse");
        a.send("MODE alice");
        let (ok, before) = a.until_command("381");
        assert!(only(&before, "221").is_empty(), "{label}: {before:?}");
        assert_eq!(ok.params[0], "alice", "{label}");
        assert_eq!(a.expect("MODE").params, ["alice", "+o"], "{label}");
        a.expect_about("221", "+o");
        // Plaintext still works.
        b.send("OPER plain hunter2");
        b.expect("381");
        b.send("WHOIS alice");
        b.expect("313");
        // A quit right after a hashed OPER still goes through.
        let mut c = srv.connect_on(2);
        c.register("carol");
        c.send("OPER hashed :c0rrect horse");
        c.send("QUIT :bye");
        c.until_closed();
    });
}

/// `shardline-chat --hash-password` reads the password from a pipe and prints
/// a hash that verifies it (and only it), with the current parameters.
#[test]
fn hash_password_flag_prints_a_usable_hash() {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardline-chat"))
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shardline-chat");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"op pass\n")
        .expect("write the password");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let phc = stdout.trim_end();
    assert!(
        phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stdout:?}"
    );
    assert!(!stdout.contains("op pass") && !stderr.contains("op pass"));
    use shardline_chat::auth::password::verify_password;
    assert_eq!(verify_password(b"op pass", phc), Ok(true));
    assert_eq!(verify_password(b"op pas", phc), Ok(false));
    // It is a password the configuration takes as a hash.
    let text = format!("[[operators]]\nname = \"o\"\npassword = \"{phc}\"\n");
    let config = Config::from_toml(&text).expect("valid");
    assert!(config.warnings().is_empty());
}

shardline::per_backend! {
    account_tag_only_with_the_cap_and_only_for_logged_in_senders =>
        account_tag_only_with_the_cap_and_only_for_logged_in_senders;
    account_notify_reaches_each_peer_once => account_notify_reaches_each_peer_once;
    extended_join_both_ways => extended_join_both_ways;
    whois_shows_the_account_across_shards => whois_shows_the_account_across_shards;
    enforce_nick_renames_after_the_grace_period_unless_logged_in =>
        enforce_nick_renames_after_the_grace_period_unless_logged_in;
    enforce_nick_is_off_by_default => enforce_nick_is_off_by_default;
    oper_with_an_argon2_hash => oper_with_an_argon2_hash;
}
