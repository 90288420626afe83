//! CAP as the capability-negotiation spec says (LS with and without 302, LIST,
//! REQ all or nothing and verbatim, `-cap`, REQ after registration,
//! `cap-notify` implied by 302 and not removable, NEW/DEL on a rehash), and
//! the notifications: `away-notify` (once per recipient across shards, and
//! after the JOIN of someone away), `invite-notify`, `CHGHOST`/`chghost`,
//! `SETNAME`/`setname` (NAMELEN), `userhost-in-names`; with raw clients and
//! with the `irc` crate. Both backends, 1 and 4 shards (the rehash test runs
//! the binary with 1 and 4 shards).

mod common;

use std::path::Path;

use common::{binary::Binary, certs::TempDir, each_server, each_server_with, Client, Line};
use shardline::Io;
use shardline_chat::{config::Operator, Config};

/// The last CAP line's parameters after the target: `[sub, (*), list]`.
fn cap(c: &mut Client, line: &str) -> Line {
    c.send(line);
    c.expect("CAP")
}

fn list(c: &mut Client) -> String {
    let l = cap(c, "CAP LIST");
    assert_eq!(l.params[1], "LIST", "{}", l.raw);
    l.last().to_string()
}

fn cap_negotiation_rules(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        // Before 302: one line, no values, nothing implied.
        let mut old = srv.connect();
        let ls = cap(&mut old, "CAP LS");
        assert_eq!(ls.params[..2], ["*", "LS"], "{label}: {}", ls.raw);
        assert!(!ls.last().contains('='), "{label}: {}", ls.raw);
        assert_eq!(list(&mut old), "", "{label}");
        // A pre-302 client may ask for cap-notify, and drop it again.
        assert_eq!(cap(&mut old, "CAP REQ cap-notify").params[1], "ACK");
        assert_eq!(list(&mut old), "cap-notify", "{label}");
        assert_eq!(cap(&mut old, "CAP REQ :-cap-notify").params[1], "ACK");
        assert_eq!(list(&mut old), "", "{label}");

        let mut c = srv.connect();
        let ls = cap(&mut c, "CAP LS 302");
        assert_eq!(ls.params[..2], ["*", "LS"], "{label}: {}", ls.raw);
        let offered: Vec<&str> = ls.last().split(' ').collect();
        for name in [
            "away-notify",
            "invite-notify",
            "chghost",
            "setname",
            "userhost-in-names",
            "cap-notify",
        ] {
            assert!(offered.contains(&name), "{label}: {name} in {}", ls.raw);
        }
        // 302 implies cap-notify.
        assert_eq!(list(&mut c), "cap-notify", "{label}");
        c.send("NICK carol");
        c.send("USER carol 0 * :Carol");
        // All or nothing: one unknown, or one that cannot be removed, and the
        // whole list is NAKed as sent; nothing changes.
        for bad in [
            "away-notify bogus -setname",
            "away-notify -cap-notify",
            "setname sts",
            "SETNAME",
            "-bogus",
            "",
        ] {
            let l = cap(&mut c, &format!("CAP REQ :{bad}"));
            assert_eq!(l.params[1], "NAK", "{label}: {bad}: {}", l.raw);
            assert_eq!(l.last(), bad, "{label}: verbatim");
            assert_eq!(list(&mut c), "cap-notify", "{label}: {bad} changed nothing");
        }
        let l = cap(&mut c, "CAP REQ :away-notify setname");
        assert_eq!(
            (l.params[1].as_str(), l.last()),
            ("ACK", "away-notify setname"),
            "{label}"
        );
        assert_eq!(list(&mut c), "away-notify setname cap-notify", "{label}");
        let l = cap(&mut c, "CAP REQ :-away-notify chghost");
        assert_eq!(
            (l.params[1].as_str(), l.last()),
            ("ACK", "-away-notify chghost"),
            "{label}"
        );
        assert_eq!(list(&mut c), "chghost setname cap-notify", "{label}");
        // Still negotiating: no welcome until CAP END.
        let early = c.sync();
        assert!(!early.iter().any(|l| l.is("001")), "{label}: {early:?}");
        c.send("CAP END");
        c.expect("001");
        c.until("end of MOTD", |l| l.is("376") || l.is("422"));

        // After registration a REQ takes effect at once and suspends nothing.
        c.join("#caps");
        assert_eq!(c.names("#caps"), ["@carol"], "{label}");
        let l = cap(&mut c, "CAP REQ userhost-in-names");
        assert_eq!(l.params[..2], ["carol", "ACK"], "{label}: {}", l.raw);
        assert_eq!(c.names("#caps"), ["@carol!~carol@127.0.0.1"], "{label}");
        let after = c.sync();
        assert!(!after.iter().any(|l| l.is("001")), "{label}: {after:?}");
        let l = cap(&mut c, "CAP REQ -userhost-in-names");
        assert_eq!(l.params[1], "ACK", "{label}");
        assert_eq!(c.names("#caps"), ["@carol"], "{label}");
        // CAP END after registration does nothing.
        c.send("CAP END");
        let quiet = c.sync();
        assert!(quiet.is_empty(), "{label}: {quiet:?}");
    });
}

/// Registers `nick` on `shard` with `caps` (which may be empty: none asked).
fn with_caps(srv: &common::TestServer, shard: usize, nick: &str, caps: &str) -> Client {
    let mut c = srv.connect_on(shard);
    if caps.is_empty() {
        c.register(nick);
    } else {
        c.register_with_caps(nick, caps);
    }
    c
}

fn away_notify_across_shards(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = with_caps(srv, 0, "alice", "away-notify");
        let mut b = with_caps(srv, 1, "bob", "away-notify");
        let mut c = with_caps(srv, 2, "carol", "");
        // Two shared channels: each still gets one line.
        for ch in ["#x", "#y"] {
            for m in [&mut a, &mut b, &mut c] {
                m.join(ch);
            }
        }
        for m in [&mut a, &mut b, &mut c] {
            m.sync();
        }
        b.send("AWAY :out for lunch");
        b.expect("306");
        let own = b.sync();
        assert!(!own.iter().any(|l| l.is("AWAY")), "{label}: {own:?}");
        let seen: Vec<Line> = a.sync().into_iter().filter(|l| l.is("AWAY")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        assert!(seen[0].raw.starts_with(":bob!~bob@"), "{label}: {seen:?}");
        assert_eq!(seen[0].params, ["out for lunch"], "{label}");
        c.sync_without("AWAY");

        b.send("AWAY");
        b.expect("305");
        b.sync();
        let seen: Vec<Line> = a.sync().into_iter().filter(|l| l.is("AWAY")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        assert!(seen[0].params.is_empty(), "{label}: back: {seen:?}");
        c.sync_without("AWAY");

        // Someone away joins: members with the cap get AWAY right after the JOIN.
        let mut d = with_caps(srv, 3, "dave", "away-notify");
        d.send("AWAY :brb");
        d.expect("306");
        d.join("#x");
        let own = d.sync();
        assert!(!own.iter().any(|l| l.is("AWAY")), "{label}: {own:?}");
        let lines = a.sync();
        let join = lines
            .iter()
            .position(|l| l.is("JOIN") && l.nick() == Some("dave"))
            .unwrap_or_else(|| panic!("{label}: {lines:?}"));
        let next = &lines[join + 1];
        assert!(
            next.is("AWAY") && next.nick() == Some("dave"),
            "{label}: {lines:?}"
        );
        assert_eq!(next.params, ["brb"], "{label}");
        let plain = c.sync();
        assert!(plain.iter().any(|l| l.is("JOIN")), "{label}: {plain:?}");
        assert!(!plain.iter().any(|l| l.is("AWAY")), "{label}: {plain:?}");

        // A cap asked for after registration works at once.
        assert_eq!(cap(&mut c, "CAP REQ away-notify").params[1], "ACK");
        b.send("AWAY :again");
        b.expect("306");
        b.sync();
        let seen: Vec<Line> = c.sync().into_iter().filter(|l| l.is("AWAY")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        assert_eq!(seen[0].params, ["again"], "{label}");
    });
}

fn invite_notify(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut op = with_caps(srv, 0, "op", "invite-notify");
        let mut b = with_caps(srv, 1, "bob", "invite-notify");
        let mut c = with_caps(srv, 2, "carol", "");
        let mut t = with_caps(srv, 3, "target", "");
        op.join("#inv");
        b.join("#inv");
        c.join("#inv");
        op.send("INVITE target #inv");
        op.expect("341");
        let own = op.sync();
        assert!(!own.iter().any(|l| l.is("INVITE")), "{label}: {own:?}");
        let seen: Vec<Line> = b.sync().into_iter().filter(|l| l.is("INVITE")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        assert_eq!(seen[0].nick(), Some("op"), "{label}");
        assert_eq!(seen[0].params, ["target", "#inv"], "{label}");
        c.sync_without("INVITE");
        assert_eq!(t.expect("INVITE").params, ["target", "#inv"]);

        // +i: only those who could invite (operators) are told.
        op.send("MODE #inv +i");
        op.sync();
        op.send("INVITE carol2 #inv");
        op.expect("401");
        let mut u = with_caps(srv, 1, "user2", "");
        op.send("INVITE user2 #inv");
        op.expect("341");
        op.sync();
        b.sync_without("INVITE");
        u.expect("INVITE");
        op.send("MODE #inv +o bob");
        op.sync();
        let mut v = with_caps(srv, 2, "user3", "");
        op.send("INVITE user3 #inv");
        op.expect("341");
        op.sync();
        let seen: Vec<Line> = b.sync().into_iter().filter(|l| l.is("INVITE")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        assert_eq!(seen[0].params, ["user3", "#inv"], "{label}");
        v.expect("INVITE");
    });
}

fn add_operator(config: &mut Config) {
    config.operators = vec![
        Operator {
            name: "admin".into(),
            password: "hunter2".into(),
            host: "127.0.0.*".into(),
        },
        Operator {
            name: "staff".into(),
            password: "pw".into(),
            host: "*.staff.example".into(),
        },
    ];
}

fn chghost(io: Io) {
    each_server_with(io, add_operator, |srv| {
        let label = srv.label();
        let mut o = with_caps(srv, 0, "oper", "");
        let mut t = with_caps(srv, 1, "target", "chghost");
        let mut w = with_caps(srv, 2, "watcher", "chghost userhost-in-names");
        let mut p = with_caps(srv, 3, "plain", "");
        for m in [&mut t, &mut w, &mut p] {
            m.join("#h");
        }
        p.send("CHGHOST target new host.example");
        p.expect("481");
        o.send("OPER admin hunter2");
        o.expect("381");
        o.send_expect("CHGHOST target new", "461", "CHGHOST");
        for (user, host, code) in [
            ("b@d", "ok.example", "INVALID_USERNAME"),
            (&"u".repeat(17) as &str, "ok.example", "INVALID_USERNAME"),
            ("ok", "a!b", "INVALID_HOSTNAME"),
            ("ok", "-x", "INVALID_HOSTNAME"),
            ("ok", &"h".repeat(64) as &str, "INVALID_HOSTNAME"),
        ] {
            o.send(&format!("CHGHOST target {user} {host}"));
            let f = o.expect("FAIL");
            assert_eq!(f.params[..2], ["CHGHOST", code], "{label}: {}", f.raw);
        }
        o.send_expect("CHGHOST nobody ok ok.example", "401", "nobody");
        // Nothing changed so far.
        w.sync_without("CHGHOST");
        t.sync_without("CHGHOST");

        o.send("CHGHOST target newuser new.host.example");
        let answer = o.sync();
        assert!(answer.is_empty(), "{label}: {answer:?}");
        let l = t.expect("CHGHOST");
        assert!(
            l.raw.starts_with(":target!~target@127.0.0.1 "),
            "{label}: {}",
            l.raw
        );
        assert_eq!(l.params, ["newuser", "new.host.example"], "{label}");
        let seen: Vec<Line> = w.sync().into_iter().filter(|l| l.is("CHGHOST")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        assert_eq!(seen[0].raw, l.raw, "{label}");
        p.sync_without("CHGHOST");
        // Everything after it shows the new mask.
        o.send("WHOIS target");
        let (_, lines) = o.until_command("318");
        let user = lines.iter().find(|l| l.is("311")).expect("311");
        assert_eq!(user.params[1..4], ["target", "newuser", "new.host.example"]);
        // It created the channel: an operator.
        let names = w.names("#h");
        assert!(
            names.contains(&"@target!newuser@new.host.example".to_string()),
            "{label}: {names:?}"
        );
        t.send("PRIVMSG #h :hello");
        let m = p.expect("PRIVMSG");
        assert!(
            m.raw.starts_with(":target!newuser@new.host.example "),
            "{label}: {}",
            m.raw
        );
        // OPER host masks see the real address, not a host CHGHOST set.
        o.send("CHGHOST target newuser a.staff.example");
        o.sync();
        t.send("OPER staff pw");
        t.expect("491");
        t.send("OPER admin hunter2");
        t.expect("381");
    });
}

fn setname(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = srv.connect_on(0);
        a.nick = "alice".into();
        a.send("CAP LS 302");
        a.send("NICK alice");
        a.send("USER alice 0 * :Alice");
        a.send("CAP REQ setname");
        a.send("CAP END");
        let (_, burst) = a.until("end of MOTD", |l| l.is("376") || l.is("422"));
        assert!(
            burst
                .iter()
                .any(|l| l.is("005") && l.params.iter().any(|p| p == "NAMELEN=128")),
            "{label}: NAMELEN in 005"
        );
        let mut b = with_caps(srv, 1, "bob", "setname");
        let mut c = with_caps(srv, 2, "carol", "");
        for m in [&mut a, &mut b, &mut c] {
            m.join("#s");
        }
        a.send("SETNAME :Alice Liddell");
        let own = a.expect("SETNAME");
        assert!(
            own.raw.starts_with(":alice!~alice@"),
            "{label}: {}",
            own.raw
        );
        assert_eq!(own.params, ["Alice Liddell"]);
        a.sync();
        let seen: Vec<Line> = b.sync().into_iter().filter(|l| l.is("SETNAME")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        assert_eq!(seen[0].raw, own.raw, "{label}");
        c.sync_without("SETNAME");
        c.send("WHOIS alice");
        let (_, lines) = c.until_command("318");
        let user = lines.iter().find(|l| l.is("311")).expect("311");
        assert_eq!(user.last(), "Alice Liddell", "{label}");

        // Invalid: FAIL, nothing changes; exactly NAMELEN is fine.
        for bad in [String::new(), "n".repeat(129)] {
            a.send(&format!("SETNAME :{bad}"));
            let f = a.expect("FAIL");
            assert_eq!(f.params[..2], ["SETNAME", "INVALID_REALNAME"], "{label}");
        }
        a.send_expect("SETNAME", "461", "SETNAME");
        a.sync();
        b.sync_without("SETNAME");
        let long = "n".repeat(128);
        a.send(&format!("SETNAME :{long}"));
        assert_eq!(a.expect("SETNAME").params, std::slice::from_ref(&long));
        a.sync();
        let seen: Vec<Line> = b.sync().into_iter().filter(|l| l.is("SETNAME")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        c.send("WHOIS alice");
        let (_, lines) = c.until_command("318");
        let user = lines.iter().find(|l| l.is("311")).expect("311");
        assert_eq!(user.last(), long, "{label}");
        // USER's real name is cut to NAMELEN too.
        let mut d = srv.connect_on(3);
        d.nick = "dave".into();
        d.send("NICK dave");
        d.send(&format!("USER dave 0 * :{}", "r".repeat(300)));
        d.until("end of MOTD", |l| l.is("376") || l.is("422"));
        c.send("WHOIS dave");
        let (_, lines) = c.until_command("318");
        let user = lines.iter().find(|l| l.is("311")).expect("311");
        assert_eq!(user.last(), "r".repeat(128), "{label}");
        // Without the cap a client may still change it, and is not echoed.
        c.send("SETNAME :Carol C");
        c.sync_without("SETNAME");
        let seen: Vec<Line> = b.sync().into_iter().filter(|l| l.is("SETNAME")).collect();
        assert_eq!(seen.len(), 1, "{label}: {seen:?}");
        assert_eq!(seen[0].params, ["Carol C"]);
    });
}

fn userhost_in_names(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = with_caps(srv, 0, "alice", "userhost-in-names multi-prefix");
        let mut b = with_caps(srv, 1, "bob", "");
        a.send("JOIN #u");
        // The JOIN's own NAMES too.
        let (_, lines) = a.until_command("366");
        assert_eq!(common::names_in(&lines, "#u"), ["@alice!~alice@127.0.0.1"]);
        b.join("#u");
        a.send("MODE #u +v alice");
        a.sync();
        assert_eq!(
            a.names("#u"),
            ["@+alice!~alice@127.0.0.1", "bob!~bob@127.0.0.1"],
            "{label}"
        );
        assert_eq!(b.names("#u"), ["@alice", "bob"], "{label}");
        // Long entries: every 353 line stays within 512 bytes, nobody lost.
        let mut many = Vec::new();
        let mut clients = Vec::new();
        for i in 0..14 {
            let nick = format!("n{i:02}{}", "x".repeat(26));
            let mut m = srv.register_on(i, &nick);
            m.join("#u");
            many.push(nick);
            clients.push(m);
        }
        a.send("NAMES #u");
        let (_, lines) = a.until_command("366");
        let rows: Vec<&Line> = lines.iter().filter(|l| l.is("353")).collect();
        assert!(rows.len() > 1, "{label}: {rows:?}");
        assert!(rows.iter().all(|l| l.raw.len() + 2 <= 512), "{label}");
        let names = common::names_in(&lines, "#u");
        assert_eq!(names.len(), 16, "{label}: {names:?}");
        for nick in many {
            let entry = format!("{nick}!~{}@127.0.0.1", &nick[..10]);
            assert!(names.contains(&entry), "{label}: {entry} in {names:?}");
        }
    });
}

/// A configuration file for the rehash test.
fn write_config(path: &Path, accounts: &str) {
    let text = format!("[server]\nname = \"irc.caps.test\"\n\n[flood]\nenabled = false\n\n[accounts]\n{accounts}\n");
    std::fs::write(path, text).expect("write config");
}

fn cap_notify_on_rehash(io: Io) {
    for shards in [1, 4] {
        let tmp = TempDir::new("capnotify");
        let config = tmp.path().join("chat.toml");
        write_config(&config, "registration = \"open\"");
        let run = Binary::start_with_data(io, shards, &config, &tmp.path().join("data"));
        let label = run.label.clone();
        // 302: cap-notify implied, values. Pre-302 with cap-notify: no values.
        // Neither: nothing.
        let mut a = run.client("alice", "draft/account-registration");
        let mut b = Client::connect_to(run.addr, &label);
        b.nick = "bob".into();
        b.send("CAP LS");
        b.send("NICK bob");
        b.send("USER bob 0 * :Bob");
        b.send("CAP REQ :cap-notify draft/account-registration");
        b.send("CAP END");
        assert_eq!(b.expect("CAP").params[1], "LS");
        assert_eq!(b.expect("CAP").params[1], "ACK");
        b.until("end of MOTD", |l| l.is("376") || l.is("422"));
        let mut c = Client::connect_to(run.addr, &label);
        c.register("carol");
        let rehash = |run: &Binary, n: usize| {
            // SAFETY: kill(2) on our own child.
            assert_eq!(
                unsafe { libc::kill(run.child.id() as i32, libc::SIGHUP) },
                0
            );
            run.wait_log("configuration rehashed", n * shards);
        };

        write_config(&config, "registration = \"closed\"");
        rehash(&run, 1);
        let l = a.expect("CAP");
        assert_eq!(
            l.params,
            ["alice", "DEL", "draft/account-registration"],
            "{label}"
        );
        let l = b.expect("CAP");
        assert_eq!(
            l.params,
            ["bob", "DEL", "draft/account-registration"],
            "{label}"
        );
        c.sync_without("CAP");
        // Deleted: disabled.
        assert_eq!(list(&mut a), "cap-notify", "{label}");
        assert_eq!(list(&mut b), "cap-notify", "{label}");
        a.sync_without("CAP");

        write_config(&config, "registration = \"open\"\nemail_required = true");
        rehash(&run, 2);
        let l = a.expect("CAP");
        assert_eq!(
            l.params,
            [
                "alice",
                "NEW",
                "draft/account-registration=before-connect,email-required"
            ],
            "{label}"
        );
        let l = b.expect("CAP");
        assert_eq!(
            l.params,
            ["bob", "NEW", "draft/account-registration"],
            "{label}"
        );
        c.sync_without("CAP");

        // Only the value changes: a 302 client hears of it, the other cannot.
        write_config(&config, "registration = \"open\"");
        rehash(&run, 3);
        let l = a.expect("CAP");
        assert_eq!(
            l.params,
            ["alice", "NEW", "draft/account-registration=before-connect"],
            "{label}"
        );
        b.sync_without("CAP");
        c.sync_without("CAP");
        assert_eq!(
            cap(&mut a, "CAP REQ draft/account-registration").params[1],
            "ACK",
            "{label}"
        );
        run.stop();
    }
}

/// One `irc` crate client, read directly (polling its stream also sends).
struct Lib {
    client: irc::client::Client,
    stream: irc::client::ClientStream,
    label: String,
}

impl Lib {
    async fn until(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&irc::proto::Message) -> bool,
    ) -> (irc::proto::Message, Vec<irc::proto::Message>) {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + common::WAIT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(m))) if pred(&m) => return (m, seen),
                Ok(Some(Ok(m))) => seen.push(m),
                other => panic!(
                    "{}: waiting for {what}: {other:?}; seen {seen:?}",
                    self.label
                ),
            }
        }
    }
}

/// The `irc` crate negotiates caps (REQ before registration, then its own
/// CAP END) and understands what they bring: NAMES entries with user and
/// host, AWAY from away-notify, INVITE from invite-notify, CHGHOST.
fn irc_crate_negotiates_caps(io: Io) {
    use irc::{
        client::prelude::{Capability, Command, Config as LibConfig, Prefix, Response},
        proto::CapSubCommand,
    };
    each_server_with(io, add_operator, |srv| {
        let label = srv.label();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let config = LibConfig {
                nickname: Some("lib".into()),
                username: Some("lib".into()),
                realname: Some("lib via the irc crate".into()),
                server: Some(srv.addr.ip().to_string()),
                port: Some(srv.addr.port()),
                ..LibConfig::default()
            };
            let mut client = irc::client::Client::from_config(config)
                .await
                .expect("connect");
            let stream = client.stream().expect("stream");
            let mut lib = Lib {
                client,
                stream,
                label: label.clone(),
            };
            lib.client
                .send_cap_req(&[
                    Capability::AwayNotify,
                    Capability::InviteNotify,
                    Capability::ChgHost,
                    Capability::UserhostInNames,
                ])
                .expect("CAP REQ");
            let (ack, _) = lib
                .until("CAP ACK", |m| matches!(m.command, Command::CAP(..)))
                .await;
            match &ack.command {
                Command::CAP(_, CapSubCommand::ACK, a, b) => {
                    let list = b.as_ref().or(a.as_ref()).expect("a list");
                    assert_eq!(
                        list.trim(),
                        "away-notify invite-notify chghost userhost-in-names",
                        "{label}"
                    );
                }
                other => panic!("{label}: not an ACK: {other:?}"),
            }
            lib.client.identify().expect("identify");
            let is = |r: Response| {
                move |m: &irc::proto::Message| matches!(m.command, Command::Response(x, _) if x == r)
            };
            lib.until("end of MOTD", |m| {
                is(Response::RPL_ENDOFMOTD)(m) || is(Response::ERR_NOMOTD)(m)
            })
            .await;
            lib.client.send_join("#lib").expect("JOIN");
            let (_, seen) = lib.until("366", is(Response::RPL_ENDOFNAMES)).await;
            let names = seen
                .iter()
                .find_map(|m| match &m.command {
                    Command::Response(Response::RPL_NAMREPLY, p) => p.last().cloned(),
                    _ => None,
                })
                .expect("353");
            assert_eq!(names, "@lib!~lib@127.0.0.1", "{label}");

            let mut raw = srv.register_on(1, "raw");
            raw.join("#lib");
            let _other = srv.register_on(2, "other");
            raw.send("AWAY :afk");
            raw.expect("306");
            let from_raw = |m: &irc::proto::Message| {
                matches!(&m.prefix, Some(Prefix::Nickname(n, _, _)) if n == "raw")
            };
            let (away, _) = lib
                .until("AWAY", |m| matches!(m.command, Command::AWAY(_)))
                .await;
            assert!(from_raw(&away), "{label}: {away:?}");
            assert_eq!(away.command, Command::AWAY(Some("afk".into())), "{label}");
            raw.send("INVITE other #lib");
            raw.expect("341");
            let (inv, _) = lib
                .until("INVITE", |m| matches!(m.command, Command::INVITE(..)))
                .await;
            assert!(from_raw(&inv), "{label}: {inv:?}");
            assert_eq!(inv.command, Command::INVITE("other".into(), "#lib".into()));
            let mut oper = srv.register_on(3, "oper");
            oper.send("OPER admin hunter2");
            oper.expect("381");
            oper.send("CHGHOST raw nu nh.example");
            oper.sync();
            let (ch, _) = lib
                .until("CHGHOST", |m| matches!(m.command, Command::CHGHOST(..)))
                .await;
            assert!(from_raw(&ch), "{label}: {ch:?}");
            assert_eq!(
                ch.command,
                Command::CHGHOST("nu".into(), "nh.example".into()),
                "{label}"
            );
            lib.client.send_quit("bye").expect("QUIT");
        });
    });
}

shardline::per_backend! {
    cap_negotiation_rules => cap_negotiation_rules;
    away_notify_across_shards => away_notify_across_shards;
    invite_notify => invite_notify;
    chghost => chghost;
    setname => setname;
    userhost_in_names => userhost_in_names;
    cap_notify_on_rehash => cap_notify_on_rehash;
    irc_crate_negotiates_caps => irc_crate_negotiates_caps;
}
