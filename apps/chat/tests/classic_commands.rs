//! Classic commands over raw TCP, against their modern.ircdocs.horse text:
//! WHOWAS (kept by each nick's owner shard, bounded), KILL and WALLOPS for
//! operators, NAMES without a channel, the `+B` bot mode, LUSERS' 253, and
//! what 004/005 advertise. Both backends, 1 and 4 shards.

mod common;

use std::time::{Duration, Instant};

use common::{each_server, each_server_with, Client, Line};
use shardline::Io;
use shardline_chat::{config::Operator, Config};

/// The lines a command answers with (up to a PING's PONG).
fn answer(c: &mut Client, command: &str) -> Vec<Line> {
    c.send(command);
    c.sync()
}

/// The numerics among `lines`, as (code, params after the nick).
fn numerics(lines: &[Line]) -> Vec<(String, Vec<String>)> {
    lines
        .iter()
        .filter(|l| l.command.len() == 3 && l.command.bytes().all(|b| b.is_ascii_digit()))
        .map(|l| (l.command.clone(), l.params[1..].to_vec()))
        .collect()
}

fn codes(lines: &[Line]) -> Vec<String> {
    numerics(lines).into_iter().map(|(c, _)| c).collect()
}

fn whowas_config(config: &mut Config) {
    config.test_account_command = true;
    config.limits.whowas_per_nick = 3;
}

fn whowas_history(io: Io) {
    each_server_with(io, whowas_config, |srv| {
        let label = srv.label();
        let last = srv.shards - 1;
        let mut asker = srv.register_on(last, "asker");
        // Errors and a nick nobody used.
        assert_eq!(codes(&answer(&mut asker, "WHOWAS")), ["461"], "{label}");
        assert_eq!(codes(&answer(&mut asker, "WHOWAS :")), ["431"], "{label}");
        let lines = answer(&mut asker, "WHOWAS nobody");
        assert_eq!(
            numerics(&lines),
            [
                (
                    "406".into(),
                    vec!["nobody".into(), "There was no such nickname".into()]
                ),
                ("369".into(), vec!["nobody".into(), "End of WHOWAS".into()]),
            ],
            "{label}"
        );
        assert_eq!(
            codes(&answer(&mut asker, "WHOWAS bad,nick")),
            ["406", "369"]
        );

        // A QUIT: the entry is there once the ERROR came.
        let before = now_ms();
        let mut ghost = srv.register_on(0, "ghost");
        ghost.send("QUIT :bye");
        ghost.until_command("ERROR");
        let lines = answer(&mut asker, "WHOWAS GHOST");
        let nums = numerics(&lines);
        assert_eq!(codes(&lines), ["314", "312", "369"], "{label}: {lines:?}");
        assert_eq!(
            nums[0].1,
            ["ghost", "~ghost", "127.0.0.1", "*", "Test ghost"],
            "{label}"
        );
        assert_eq!(nums[1].1[..2], ["ghost", "irc.test"], "{label}");
        let when = parse_time(&nums[1].1[2]);
        assert!(
            when + 1 >= before && when <= now_ms() + 1,
            "{label}: {}",
            nums[1].1[2]
        );
        assert_eq!(nums[2].1, ["GHOST", "End of WHOWAS"], "{label}");

        // A nick change, logged in: the old nick's entry has the account.
        let mut g2 = srv.register_on(1, "Ghost");
        assert_eq!(
            codes(&answer(&mut g2, "TESTACCOUNT acct")),
            Vec::<String>::new()
        );
        g2.send("NICK other");
        g2.expect("NICK");
        g2.sync();
        let lines = answer(&mut asker, "WHOWAS ghost");
        let nums = numerics(&lines);
        assert_eq!(
            codes(&lines),
            ["314", "312", "330", "314", "312", "369"],
            "{label}: {lines:?}"
        );
        assert_eq!(nums[0].1[..3], ["Ghost", "~Ghost", "127.0.0.1"], "{label}");
        assert_eq!(nums[2].1, ["Ghost", "acct", "was logged in as"], "{label}");
        assert_eq!(nums[3].1[0], "ghost", "{label}");
        // A count: at most that many, newest first; not positive: all.
        let lines = answer(&mut asker, "WHOWAS ghost 1");
        assert_eq!(codes(&lines), ["314", "312", "330", "369"], "{label}");
        assert_eq!(
            codes(&answer(&mut asker, "WHOWAS ghost 0")).len(),
            6,
            "{label}"
        );
        assert_eq!(
            codes(&answer(&mut asker, "WHOWAS ghost -2")).len(),
            6,
            "{label}"
        );
        assert_eq!(
            codes(&answer(&mut asker, "WHOWAS ghost x")).len(),
            6,
            "{label}"
        );

        // The per-nick bound: the oldest go.
        for i in 0..3 {
            let mut g = srv.register_on(i, "GHOST");
            g.send("QUIT");
            g.until_command("ERROR");
        }
        let lines = answer(&mut asker, "WHOWAS ghost");
        let users: Vec<String> = numerics(&lines)
            .into_iter()
            .filter(|(c, _)| c == "314")
            .map(|(_, p)| p[0].clone())
            .collect();
        assert_eq!(users, ["GHOST", "GHOST", "GHOST"], "{label}: {lines:?}");

        // A closed connection (no QUIT) leaves an entry too, once its shard
        // saw the close.
        let closer = srv.register_on(last, "closer");
        drop(closer);
        let deadline = Instant::now() + common::WAIT;
        loop {
            let lines = answer(&mut asker, "WHOWAS closer");
            if codes(&lines) == ["314", "312", "369"] {
                break;
            }
            assert_eq!(codes(&lines), ["406", "369"], "{label}");
            assert!(
                Instant::now() < deadline,
                "{label}: no WHOWAS entry after a close"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    // Kept nowhere with `whowas = 0`.
    each_server_with(
        io,
        |c| c.limits.whowas = 0,
        |srv| {
            let mut asker = srv.register_on(0, "asker");
            let mut g = srv.register_on(1, "ghost");
            g.send("QUIT");
            g.until_command("ERROR");
            assert_eq!(codes(&answer(&mut asker, "WHOWAS ghost")), ["406", "369"]);
        },
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `2026-01-02T03:04:05.678Z` as Unix milliseconds.
fn parse_time(s: &str) -> u64 {
    shardline_chat::clock::parse_server_time(s).unwrap_or_else(|| panic!("bad time {s:?}"))
}

fn oper_config(config: &mut Config) {
    config.operators = vec![Operator {
        name: "admin".into(),
        password: "hunter2".into(),
        host: "*".into(),
    }];
}

fn kill_by_operators(io: Io) {
    each_server_with(io, oper_config, |srv| {
        let label = srv.label();
        let last = srv.shards - 1;
        let mut killer = srv.register_on(0, "killer");
        let mut victim = srv.register_on(last, "victim");
        let mut watcher = srv.register_on(1, "watcher");
        victim.join("#k");
        watcher.join("#k");
        watcher.sync();
        assert_eq!(codes(&answer(&mut killer, "KILL")), ["461"], "{label}");
        assert_eq!(
            codes(&answer(&mut killer, "KILL victim")),
            ["461"],
            "{label}"
        );
        let lines = answer(&mut killer, "KILL victim :spam");
        assert_eq!(codes(&lines), ["481"], "{label}");
        assert_eq!(
            lines[0].last(),
            "Permission Denied- You're not an IRC operator"
        );
        assert_eq!(codes(&answer(&mut killer, "OPER admin hunter2")), ["381"]);
        let lines = answer(&mut killer, "KILL nobody :x");
        assert_eq!(
            numerics(&lines),
            [(
                "401".into(),
                vec!["nobody".into(), "No such nick/channel".into()]
            )]
        );
        let lines = answer(&mut killer, "KILL VICTIM :spam and eggs");
        assert!(codes(&lines).is_empty(), "{label}: {lines:?}");
        let kill = victim.expect("KILL");
        assert_eq!(
            kill.source.as_deref(),
            Some("killer!~killer@127.0.0.1"),
            "{label}"
        );
        assert_eq!(kill.params, ["victim", "spam and eggs"], "{label}");
        let error = victim.expect("ERROR");
        assert!(
            error.last().ends_with("(Killed (killer (spam and eggs)))"),
            "{label}: {}",
            error.raw
        );
        let quit = watcher.expect("QUIT");
        assert_eq!(quit.nick(), Some("victim"), "{label}");
        assert_eq!(quit.last(), "Killed (killer (spam and eggs))", "{label}");
        // The nick is soon free again.
        let mut again = srv.connect_on(last);
        again.register("victim");
        // Nobody else was touched.
        watcher.sync();
        assert_eq!(
            codes(&answer(&mut killer, "WHOIS watcher")).last().unwrap(),
            "318"
        );
    });
}

fn wallops_to_plus_w(io: Io) {
    each_server_with(io, oper_config, |srv| {
        let label = srv.label();
        let last = srv.shards - 1;
        let mut oper = srv.register_on(0, "oper");
        let mut w1 = srv.register_on(1, "w1");
        let mut w2 = srv.register_on(last, "w2");
        let mut plain = srv.register_on(last, "plain");
        for w in [&mut w1, &mut w2] {
            let nick = w.nick.clone();
            w.send(&format!("MODE {nick} +w"));
            let mode = w.expect("MODE");
            assert_eq!(mode.params, [nick.as_str(), "+w"], "{label}");
            let lines = answer(w, &format!("MODE {nick}"));
            assert_eq!(
                numerics(&lines),
                [("221".into(), vec!["+w".into()])],
                "{label}"
            );
        }
        assert_eq!(codes(&answer(&mut oper, "WALLOPS :hi")), ["481"], "{label}");
        assert_eq!(codes(&answer(&mut oper, "OPER admin hunter2")), ["381"]);
        assert_eq!(codes(&answer(&mut oper, "WALLOPS")), ["461"], "{label}");
        assert!(codes(&answer(&mut oper, "WALLOPS :hello all")).is_empty());
        for w in [&mut w1, &mut w2] {
            let line = w.expect("WALLOPS");
            assert_eq!(
                line.source.as_deref(),
                Some("oper!~oper@127.0.0.1"),
                "{label}"
            );
            assert_eq!(line.params, ["hello all"], "{label}");
        }
        plain.sync_without("WALLOPS");
        // -w: no more.
        w2.send("MODE w2 -w");
        w2.expect("MODE");
        assert!(codes(&answer(&mut oper, "WALLOPS :again")).is_empty());
        assert_eq!(w1.expect("WALLOPS").params, ["again"]);
        w2.sync_without("WALLOPS");
    });
}

/// NAMES without a channel: one 366 for `*` and nothing else, even with
/// channels around (modern.ircdocs.horse: servers SHOULD).
fn names_without_a_channel(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(srv.shards - 1, "bob");
        a.join("#one");
        b.join("#two");
        for c in [&mut a, &mut b] {
            let lines = answer(c, "NAMES");
            assert_eq!(lines.len(), 1, "{label}: {lines:?}");
            let nick = c.nick.clone();
            assert_eq!(lines[0].command, "366", "{label}");
            assert_eq!(lines[0].params, [nick.as_str(), "*", "End of /NAMES list."]);
            // An empty parameter is no channel either.
            assert_eq!(codes(&answer(c, "NAMES :")), ["366"], "{label}");
        }
    });
}

/// bot-mode (ircv3.net/specs/extensions/bot-mode): `+B`, the `bot` tag on
/// its messages for clients with `message-tags`, WHOIS 335, WHO flag `B`.
fn bot_mode(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let last = srv.shards - 1;
        let mut bot = srv.register_on(0, "bot");
        let mut tagged = srv.connect_on(last);
        tagged.register_with_caps("tagged", "message-tags");
        let mut plain = srv.register_on(1, "plain");
        for c in [&mut bot, &mut tagged, &mut plain] {
            c.join("#b");
        }
        bot.send("MODE bot +B");
        assert_eq!(bot.expect("MODE").params, ["bot", "+B"], "{label}");
        let lines = answer(&mut bot, "MODE bot");
        assert_eq!(numerics(&lines), [("221".into(), vec!["+B".into()])]);
        tagged.sync();
        plain.sync();

        bot.send("PRIVMSG #b :beep");
        let got = tagged.expect("PRIVMSG");
        assert_eq!(got.tag("bot"), Some(""), "{label}: {}", got.raw);
        let got = plain.expect("PRIVMSG");
        assert!(got.raw.starts_with(':'), "{label}: {}", got.raw);
        bot.send("@+x=1 PRIVMSG tagged :hi");
        let got = tagged.expect("PRIVMSG");
        assert_eq!(got.tag("bot"), Some(""), "{label}: {}", got.raw);
        assert_eq!(got.tag("+x"), Some("1"), "{label}: {}", got.raw);
        bot.send("TAGMSG #b");
        assert_eq!(tagged.expect("TAGMSG").tag("bot"), Some(""), "{label}");

        let lines = answer(&mut plain, "WHOIS bot");
        assert!(
            numerics(&lines).contains(&("335".into(), vec!["bot".into(), "is a bot".into()])),
            "{label}: {lines:?}"
        );
        let lines = answer(&mut plain, "WHOIS tagged");
        assert!(!codes(&lines).contains(&"335".to_string()), "{label}");
        let lines = answer(&mut plain, "WHO #b");
        for (code, p) in numerics(&lines).into_iter().filter(|(c, _)| c == "352") {
            assert_eq!(code, "352");
            assert_eq!(p[5].contains('B'), p[4] == "bot", "{label}: {p:?}");
        }

        // -B: plain messages again.
        bot.send("MODE bot -B");
        bot.expect("MODE");
        bot.send("PRIVMSG #b :plain now");
        let got = tagged.expect("PRIVMSG");
        assert_eq!(got.tag("bot"), None, "{label}: {}", got.raw);
        assert!(got.tag("msgid").is_some(), "{label}: {}", got.raw);
    });
}

/// Waits (bounded) until `cond` holds.
fn wait_for(label: &str, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{label}: waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// LUSERS' (251, 253) as (users, unknown connections).
fn lusers(c: &mut Client) -> (u64, u64) {
    let lines = answer(c, "LUSERS");
    let get = |code: &str| {
        lines
            .iter()
            .find(|l| l.is(code))
            .unwrap_or_else(|| panic!("no {code}: {lines:?}"))
            .clone()
    };
    let users: u64 = get("251")
        .last()
        .split(' ')
        .nth(2)
        .and_then(|n| n.parse().ok())
        .expect("251 count");
    let invisible: u64 = get("251")
        .last()
        .split(' ')
        .nth(5)
        .and_then(|n| n.parse().ok())
        .expect("251 invisible");
    let unknown = get("253").params[1].parse().expect("253 count");
    (users + invisible, unknown)
}

/// 253 counts the connections that have not completed registration, on
/// every shard, exactly: opened, some registering, some closing.
fn lusers_counts_unregistered_connections(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut asker = srv.register_on(0, "asker");
        wait_for(&label, "only the asker connected", || srv.live() == 1);
        assert_eq!(lusers(&mut asker), (1, 0), "{label}");
        const N: usize = 7;
        let mut pending: Vec<Client> = (0..N)
            .map(|i| {
                let mut c = srv.connect_on(i);
                // Half-way there: a nick, no USER.
                if i % 2 == 0 {
                    c.send(&format!("NICK half{i}"));
                }
                c
            })
            .collect();
        for c in &mut pending {
            c.sync();
        }
        wait_for(&label, "the probes closed", || srv.live() == 1 + N as u64);
        assert_eq!(lusers(&mut asker), (1, N as u64), "{label}");
        // Two complete registration, three leave.
        for (i, c) in pending.iter_mut().enumerate().take(2) {
            c.register(&format!("done{i}"));
        }
        pending.truncate(N - 3);
        wait_for(&label, "three closed", || srv.live() == 1 + N as u64 - 3);
        assert_eq!(lusers(&mut asker), (3, N as u64 - 5), "{label}");
    });
}

/// Channel key and limit validation (modern.ircdocs.horse: an invalid `+k`
/// draws 696; KEYLEN): empty, with a space, a comma, past KEYLEN, and limits
/// of zero, negative, not a number or too big are refused; what is refused
/// changes nothing.
fn key_and_limit_validation(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        let mut b = srv.register_on(srv.shards - 1, "bob");
        a.join("#v");
        let keylen: usize = 23;
        let long = "k".repeat(keylen + 1);
        for bad in ["", "a b", "a,b", ":x", long.as_str(), "caf\u{e9}"] {
            let lines = answer(&mut a, &format!("MODE #v +k :{bad}"));
            let nums = numerics(&lines);
            assert_eq!(nums.len(), 1, "{label}: key {bad:?}: {lines:?}");
            assert_eq!(nums[0].0, "696", "{label}: key {bad:?}");
            assert_eq!(nums[0].1[..2], ["#v", "k"], "{label}");
            assert!(!lines.iter().any(|l| l.is("MODE")), "{label}: {lines:?}");
        }
        for bad in ["0", "-1", "x", "4294967296", ""] {
            let lines = answer(&mut a, &format!("MODE #v +l :{bad}"));
            assert_eq!(codes(&lines), ["696"], "{label}: limit {bad:?}: {lines:?}");
        }
        // Nothing was set: bob joins without a key.
        b.join("#v");
        let lines = answer(&mut a, "MODE #v");
        assert_eq!(numerics(&lines)[0].1, ["#v", "+nt"], "{label}");
        // The longest key allowed works, and JOIN needs it exactly.
        let key = "k".repeat(keylen);
        a.send(&format!("MODE #v +k {key}"));
        assert_eq!(a.expect("MODE").params, ["#v", "+k", key.as_str()]);
        b.send("PART #v");
        b.expect("PART");
        b.send_expect(&format!("JOIN #v {long}"), "475", "#v");
        b.send(&format!("JOIN #v {key}"));
        b.expect("JOIN");
        a.send("MODE #v +l 1");
        assert_eq!(a.expect("MODE").params, ["#v", "+l", "1"]);
    });
}

/// The mode letters 004 advertises are the ones MODE takes, and CHANMODES
/// and PREFIX in 005 list the same channel modes; a letter not advertised
/// draws 472 (channel) or 501 (user).
fn advertised_modes_are_honoured(io: Io) {
    each_server_with(io, oper_config, |srv| {
        let label = srv.label();
        let mut a = srv.connect_on(0);
        a.send("NICK alice");
        a.send("USER alice 0 * :x");
        let (_, burst) = a.until("end of MOTD", |l| l.is("376") || l.is("422"));
        let myinfo = burst.iter().find(|l| l.is("004")).expect("004");
        let (umodes, cmodes, with_param) = (
            myinfo.params[3].clone(),
            myinfo.params[4].clone(),
            myinfo.params[5].clone(),
        );
        let token = |name: &str| -> String {
            burst
                .iter()
                .filter(|l| l.is("005"))
                .flat_map(|l| l.params.iter())
                .find_map(|p| p.strip_prefix(&format!("{name}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("{label}: no {name} in 005"))
        };
        // CHANMODES=A,B,C,D plus PREFIX's letters are 004's channel modes.
        let chanmodes = token("CHANMODES");
        let prefix = token("PREFIX");
        let prefix_modes: String = prefix[1..prefix.find(')').unwrap()].to_string();
        let mut listed: Vec<char> = chanmodes
            .chars()
            .filter(|c| *c != ',')
            .chain(prefix_modes.chars())
            .collect();
        listed.sort_unstable();
        let mut advertised: Vec<char> = cmodes.chars().collect();
        advertised.sort_unstable();
        assert_eq!(
            listed, advertised,
            "{label}: {chanmodes} {prefix} vs {cmodes}"
        );
        let types: Vec<&str> = chanmodes.split(',').collect();
        assert_eq!(types.len(), 4, "{label}");
        // Modes that always take a parameter are 004's third list.
        for m in with_param.chars() {
            assert!(
                types[0].contains(m)
                    || types[1].contains(m)
                    || types[2].contains(m)
                    || prefix_modes.contains(m),
                "{label}: {m}"
            );
        }
        assert_eq!(token("BOT"), "B", "{label}");
        assert!(umodes.contains('B'), "{label}");

        let mut b = srv.register_on(srv.shards - 1, "bob");
        a.join("#m");
        b.join("#m");
        a.sync();
        for m in cmodes.chars() {
            let param = match m {
                'b' => "x!*@*",
                'k' => "key",
                'l' => "5",
                'o' | 'v' => "bob",
                _ => "",
            };
            let unset_param = if "bov".contains(m) { param } else { "" };
            let off = answer(&mut a, &format!("MODE #m -{m} {unset_param}"));
            let on = answer(&mut a, &format!("MODE #m +{m} {param}"));
            let all: Vec<&Line> = off.iter().chain(on.iter()).collect();
            assert!(
                !all.iter()
                    .any(|l| l.command.starts_with('4') || l.command.starts_with('6')),
                "{label}: mode {m}: {all:?}"
            );
            let echoed = on
                .iter()
                .any(|l| l.is("MODE") && l.params[1].contains(m) && l.params[1].starts_with('+'));
            assert!(echoed, "{label}: +{m} not set: {on:?}");
        }
        assert_eq!(codes(&answer(&mut a, "MODE #m +z")), ["472"], "{label}");

        for m in umodes.chars() {
            if m == 'o' {
                assert_eq!(codes(&answer(&mut a, "OPER admin hunter2")), ["381"]);
                let lines = answer(&mut a, "MODE alice -o");
                assert!(
                    lines.iter().any(|l| l.is("MODE") && l.params[1] == "-o"),
                    "{label}: {lines:?}"
                );
                continue;
            }
            let lines = answer(&mut a, &format!("MODE alice +{m}"));
            assert!(
                lines
                    .iter()
                    .any(|l| l.is("MODE") && l.params[1] == format!("+{m}")),
                "{label}: user mode {m}: {lines:?}"
            );
        }
        let lines = answer(&mut a, "MODE alice");
        let mut shown: Vec<char> = numerics(&lines)[0].1[0].chars().skip(1).collect();
        shown.sort_unstable();
        let mut want: Vec<char> = umodes.chars().filter(|m| *m != 'o').collect();
        want.sort_unstable();
        assert_eq!(shown, want, "{label}: {lines:?}");
        assert_eq!(codes(&answer(&mut a, "MODE alice +x")), ["501"], "{label}");
    });
}

/// The shard-wide WHOWAS bound holds: with `whowas = 2`, of three nicks one
/// owner shard keeps, the oldest entry goes.
fn whowas_shard_limit(io: Io) {
    each_server_with(
        io,
        |c| c.limits.whowas = 2,
        |srv| {
            let label = srv.label();
            let mut asker = srv.register_on(0, "asker");
            let owner = |n: &str| shardline_chat::casemap::owner_of(n, srv.shards);
            let nicks: Vec<String> = (0..1000)
                .map(|i| format!("gone{i}"))
                .filter(|n| owner(n) == owner("gone0"))
                .take(3)
                .collect();
            assert_eq!(nicks.len(), 3, "{label}");
            for (i, nick) in nicks.iter().enumerate() {
                let mut c = srv.register_on(i, nick);
                c.send("QUIT");
                c.until_command("ERROR");
            }
            let kept: Vec<bool> = nicks
                .iter()
                .map(|n| codes(&answer(&mut asker, &format!("WHOWAS {n}")))[0] == "314")
                .collect();
            assert_eq!(kept, [false, true, true], "{label}");
        },
    );
}

/// KILL's reason and WALLOPS' text are cut to 300 bytes.
fn kill_and_wallops_text_is_bounded(io: Io) {
    each_server_with(io, oper_config, |srv| {
        let label = srv.label();
        let mut op = srv.register_on(0, "op");
        let mut v = srv.register_on(srv.shards - 1, "v");
        assert_eq!(codes(&answer(&mut op, "OPER admin hunter2")), ["381"]);
        v.send("MODE v +w");
        v.expect("MODE");
        let long = "x".repeat(400);
        op.send(&format!("WALLOPS :{long}"));
        assert_eq!(v.expect("WALLOPS").last().len(), 300, "{label}");
        op.send(&format!("KILL v :{long}"));
        assert_eq!(v.expect("KILL").last().len(), 300, "{label}");
        let error = v.expect("ERROR");
        assert!(error.last().contains(&"x".repeat(300)), "{label}");
        assert!(!error.last().contains(&"x".repeat(301)), "{label}");
    });
}

shardline::per_backend! {
    whowas_shard_limit => whowas_shard_limit;
    kill_and_wallops_text_is_bounded => kill_and_wallops_text_is_bounded;
    key_and_limit_validation => key_and_limit_validation;
    advertised_modes_are_honoured => advertised_modes_are_honoured;
    lusers_counts_unregistered_connections => lusers_counts_unregistered_connections;
    bot_mode => bot_mode;
    names_without_a_channel => names_without_a_channel;
    kill_by_operators => kill_by_operators;
    wallops_to_plus_w => wallops_to_plus_w;
    whowas_history => whowas_history;
}
