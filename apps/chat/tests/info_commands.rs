//! Informational commands, over raw TCP: VERSION (351 then the welcome's 005
//! lines), TIME, INFO, ADMIN (from `[server]`), LINKS, HELP/HELPOP, 402 for
//! another server; USERHOST and ISON (one 302/303 in the order asked, nicks
//! held on other shards than the asker's). Both backends, 1 and 4 shards.

mod common;

use common::{each_server, each_server_with, Client, Line};
use shardline::Io;
use shardline_chat::{config::Operator, Config};

/// The lines a command answers with (up to a PING's PONG).
fn answer(c: &mut Client, command: &str) -> Vec<Line> {
    c.send(command);
    c.sync()
}

fn version_repeats_isupport(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = srv.connect();
        a.send("NICK alice");
        a.send("USER alice 0 * :Test alice");
        let (_, burst) = a.until("end of MOTD", |l| l.is("376") || l.is("422"));
        let welcome: Vec<String> = burst
            .iter()
            .filter(|l| l.is("005"))
            .map(|l| l.raw.clone())
            .collect();
        assert!(!welcome.is_empty(), "{label}");
        let lines = answer(&mut a, "VERSION");
        assert_eq!(lines[0].command, "351", "{label}: {lines:?}");
        assert_eq!(lines[0].params[0], "alice");
        assert!(lines[0].params[1].starts_with("shardline-chat-"), "{label}");
        assert_eq!(lines[0].params[2], "irc.test", "{label}");
        let isupport: Vec<String> = lines[1..].iter().map(|l| l.raw.clone()).collect();
        assert_eq!(isupport, welcome, "{label}");
        // Our own name (any case, or a mask of it) is fine; another is 402.
        assert_eq!(answer(&mut a, "VERSION IRC.test")[0].command, "351");
        assert_eq!(answer(&mut a, "VERSION irc.*")[0].command, "351");
        let lines = answer(&mut a, "VERSION other.server");
        assert_eq!(lines.len(), 1, "{label}: {lines:?}");
        assert_eq!(lines[0].command, "402");
        assert_eq!(lines[0].params, ["alice", "other.server", "No such server"]);
    });
}

fn time_info_links(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = srv.register_on(srv.shards - 1, "alice");
        let lines = answer(&mut a, "TIME");
        assert_eq!(lines.len(), 1, "{label}: {lines:?}");
        let t = &lines[0];
        assert_eq!(t.command, "391");
        assert_eq!(t.params.len(), 5, "{label}: {t:?}");
        assert_eq!(t.params[..2], ["alice", "irc.test"]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ts: u64 = t.params[2].parse().expect("a Unix timestamp");
        assert!(ts.abs_diff(now) < 60, "{label}: {ts} vs {now}");
        assert_eq!(t.params[3], "0");
        assert!(!t.params[4].is_empty());
        assert_eq!(answer(&mut a, "TIME elsewhere")[0].command, "402");

        let lines = answer(&mut a, "INFO");
        let (last, info) = lines.split_last().expect("lines");
        assert_eq!(last.command, "374", "{label}: {lines:?}");
        assert!(!info.is_empty());
        assert!(info.iter().all(|l| l.is("371") && l.params.len() == 2));
        assert_eq!(answer(&mut a, "INFO elsewhere")[0].command, "402");

        let lines = answer(&mut a, "LINKS");
        assert_eq!(lines.len(), 2, "{label}: {lines:?}");
        assert_eq!(lines[0].command, "364");
        assert_eq!(lines[0].params[..3], ["alice", "irc.test", "irc.test"]);
        assert!(lines[0].params[3].starts_with("0 "), "hop count 0");
        assert_eq!(lines[1].command, "365");
        assert_eq!(lines[1].params[..2], ["alice", "*"]);
        // A mask matching nothing: only the end.
        let lines = answer(&mut a, "LINKS *.elsewhere");
        assert_eq!(lines.len(), 1, "{label}: {lines:?}");
        assert_eq!(lines[0].params[..2], ["alice", "*.elsewhere"]);
    });
}

fn admin_from_config(io: Io) {
    let configure = |c: &mut shardline_chat::Config| {
        c.server.admin_info1 = "Test lab".into();
        c.server.admin_info2 = "The test team".into();
        c.server.admin_email = "admin@irc.test".into();
    };
    each_server_with(io, configure, |srv| {
        let label = srv.label();
        let mut a = srv.register_on(1, "alice");
        let lines = answer(&mut a, "ADMIN");
        let got: Vec<(&str, &[String])> = lines
            .iter()
            .map(|l| (l.command.as_str(), &l.params[..]))
            .collect();
        assert_eq!(got.len(), 4, "{label}: {lines:?}");
        assert_eq!(got[0].0, "256");
        assert_eq!(got[0].1[..2], ["alice", "irc.test"]);
        assert_eq!(got[1], ("257", &["alice".into(), "Test lab".into()][..]));
        assert_eq!(
            got[2],
            ("258", &["alice".into(), "The test team".into()][..])
        );
        assert_eq!(
            got[3],
            ("259", &["alice".into(), "admin@irc.test".into()][..])
        );
        let lines = answer(&mut a, "ADMIN irc.elsewhere");
        assert_eq!(
            lines[0].params,
            ["alice", "irc.elsewhere", "No such server"]
        );
    });
}

fn help_texts(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let mut a = srv.register_on(0, "alice");
        for cmd in ["HELP", "HELPOP"] {
            // The index.
            let lines = answer(&mut a, cmd);
            let (first, rest) = lines.split_first().expect("lines");
            assert_eq!(first.command, "704", "{label}: {lines:?}");
            assert_eq!(first.params[..2], ["alice", "*"]);
            let (last, middle) = rest.split_last().expect("more lines");
            assert_eq!(last.command, "706");
            assert!(middle.iter().all(|l| l.is("705") && l.params[1] == "*"));
            // One command, any case.
            let lines = answer(&mut a, &format!("{cmd} privmsg"));
            let codes: Vec<&str> = lines.iter().map(|l| l.command.as_str()).collect();
            assert_eq!(codes, ["704", "706"], "{label}: {lines:?}");
            assert!(lines.iter().all(|l| l.params[1] == "PRIVMSG"));
            assert!(lines[0].params[2].starts_with("PRIVMSG <target>"));
            // Unknown.
            let lines = answer(&mut a, &format!("{cmd} frobnicate"));
            assert_eq!(lines.len(), 1, "{label}: {lines:?}");
            assert_eq!(lines[0].command, "524");
            assert_eq!(lines[0].params[..2], ["alice", "frobnicate"]);
        }
    });
}

fn need_registration(io: Io) {
    each_server(io, |srv| {
        let mut a = srv.connect();
        let cmds = ["VERSION", "TIME", "INFO", "ADMIN", "LINKS", "HELP"];
        for cmd in cmds.into_iter().chain(["USERHOST alice", "ISON alice"]) {
            a.send(cmd);
            assert_eq!(a.expect("451").params[0], "*", "{cmd}");
        }
    });
}

fn with_operator(config: &mut Config) {
    config.operators = vec![Operator {
        name: "admin".into(),
        password: "hunter2".into(),
        host: "*".into(),
    }];
}

/// The one line a command answers with: its parameters after the nick.
fn one(c: &mut Client, command: &str, code: &str) -> Vec<String> {
    let lines = answer(c, command);
    assert_eq!(lines.len(), 1, "{command}: {lines:?}");
    assert_eq!(lines[0].command, code, "{command}: {lines:?}");
    assert_eq!(lines[0].params[0], c.nick);
    lines[0].params[1..].to_vec()
}

fn userhost_across_shards(io: Io) {
    each_server_with(io, with_operator, |srv| {
        let label = srv.label();
        // Each on its own shard (at 4 shards), the asker on shard 0.
        let [mut a, mut b, mut c, mut d] = srv.register_each(["alice", "Bob", "carol", "dave"]);
        b.send("OPER admin hunter2");
        b.expect("381");
        c.send("AWAY :lunch");
        c.expect("306");
        let h = "127.0.0.1";
        assert_eq!(
            one(&mut a, "USERHOST bob CAROL nobody dave", "302"),
            [format!("Bob*=+~Bob@{h} carol=-~carol@{h} dave=+~dave@{h}")],
            "{label}"
        );
        assert_eq!(
            one(&mut a, "USERHOST dave alice", "302"),
            [format!("dave=+~dave@{h} alice=+~alice@{h}")],
            "{label}"
        );
        // Only the first five nicks count.
        assert_eq!(
            one(&mut a, "USERHOST n1 n2 n3 n4 n5 bob", "302"),
            [""],
            "{label}"
        );
        assert_eq!(
            one(&mut a, "USERHOST n1 n2 n3 n4 carol bob", "302"),
            [format!("carol=-~carol@{h}")],
            "{label}"
        );
        // Back, no longer away.
        c.send("AWAY");
        c.expect("305");
        assert_eq!(
            one(&mut d, "USERHOST carol", "302"),
            [format!("carol=+~carol@{h}")]
        );
        assert_eq!(
            one(&mut a, "USERHOST", "461"),
            ["USERHOST", "Not enough parameters"]
        );
    });
}

fn ison_across_shards(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, _b, _c, mut d] = srv.register_each(["alice", "Bob", "carol", "dave"]);
        assert_eq!(
            one(&mut a, "ISON dave nobody BOB alice", "303"),
            ["dave Bob alice"],
            "{label}"
        );
        // The list as one trailing parameter.
        assert_eq!(
            one(&mut a, "ISON :carol  nobody dave", "303"),
            ["carol dave"],
            "{label}"
        );
        assert_eq!(one(&mut a, "ISON nobody x", "303"), [""], "{label}");
        // Many nicks, owned by every shard, in the order asked.
        let many: Vec<String> = (0..30).map(|i| format!("n{i}")).collect();
        let line = format!("ISON {} bob {} carol", many.join(" "), many.join(" "));
        assert_eq!(one(&mut a, &line, "303"), ["Bob carol"], "{label}");
        d.send("QUIT");
        d.until_closed();
        assert_eq!(one(&mut a, "ISON dave carol", "303"), ["carol"], "{label}");
        assert_eq!(
            one(&mut a, "ISON", "461"),
            ["ISON", "Not enough parameters"]
        );
    });
}

fn answers_stay_in_order(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, _b, _c, _d] = srv.register_each(["alice", "bob", "carol", "dave"]);
        // Pipelined: each answer is one line, in the order asked.
        a.send("ISON dave");
        a.send("USERHOST carol");
        a.send("ISON bob nobody carol");
        a.send("ISON nobody");
        a.send("USERHOST bob dave");
        let lines = a.sync();
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.command.as_str(), l.last()))
            .collect();
        assert_eq!(
            got,
            [
                ("303", "dave"),
                ("302", "carol=+~carol@127.0.0.1"),
                ("303", "bob carol"),
                ("303", ""),
                ("302", "bob=+~bob@127.0.0.1 dave=+~dave@127.0.0.1"),
            ],
            "{label}"
        );
    });
}

shardline::per_backend! {
    userhost_across_shards => userhost_across_shards;
    ison_across_shards => ison_across_shards;
    answers_stay_in_order => answers_stay_in_order;
    version_repeats_isupport => version_repeats_isupport;
    time_info_links => time_info_links;
    admin_from_config => admin_from_config;
    help_texts => help_texts;
    need_registration => need_registration;
}
