//! AWAY (305/306, 301 to senders), OPER (381, 464, 491, 461; user mode +o seen by
//! WHOIS, WHO and LUSERS) and STATS (u, m, L; 219) over raw TCP, with clients on
//! different shards whenever there are several. Both backends, 1 and 4 shards.

mod common;

use common::{each_server, each_server_with};
use shardline::Io;
use shardline_chat::{config::Operator, Config};

fn away_answers_senders_with_301(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b] = srv.register_each(["alice", "bob"]);
        b.send("AWAY :gone fishing");
        let set = b.expect("306");
        assert_eq!(set.params, ["bob", "You have been marked as being away"]);
        a.send("PRIVMSG bob :are you there?");
        let away = a.expect("301");
        assert_eq!(away.params, ["alice", "bob", "gone fishing"], "{label}");
        // The message is still delivered.
        let m = b.expect("PRIVMSG");
        assert_eq!(m.last(), "are you there?");
        // NOTICE never draws an automatic reply.
        a.send("NOTICE bob :fyi");
        a.sync_without("301");
        // Over-long messages are cut to AWAYLEN.
        b.send(&format!("AWAY :{}", "z".repeat(300)));
        b.expect("306");
        a.send("PRIVMSG bob :again");
        assert_eq!(a.expect("301").last().len(), 200, "{label}");
        b.send("AWAY");
        let unset = b.expect("305");
        assert_eq!(unset.params[1], "You are no longer marked as being away");
        a.send("PRIVMSG bob :back?");
        a.sync_without("301");
    });
}

/// Adds the operators the tests log in as.
fn add_operators(config: &mut Config) {
    config.operators = vec![
        Operator {
            name: "admin".into(),
            password: "hunter2".into(),
            host: "127.0.0.*".into(),
        },
        Operator {
            name: "remote".into(),
            password: "pw".into(),
            host: "10.*".into(),
        },
    ];
}

fn oper_from_config(io: Io) {
    each_server_with(io, add_operators, |srv| {
        let label = srv.label();
        let [mut a, mut b] = srv.register_each(["alice", "bob"]);
        a.send_expect("OPER admin", "461", "OPER");
        a.send("OPER admin wrong");
        a.expect("464");
        a.send("OPER nobody hunter2");
        a.expect("491");
        a.send("OPER remote pw");
        assert_eq!(a.expect("491").params[0], "alice", "{label}: host mask");
        a.send("OPER admin hunter2");
        assert_eq!(a.expect("381").params[0], "alice");
        let mode = a.expect("MODE");
        assert_eq!(mode.params, ["alice", "+o"], "{label}");
        a.send_expect("MODE alice", "221", "+o");
        b.send("WHOIS alice");
        let op = b.expect("313");
        assert_eq!(op.params[1..], ["alice", "is an IRC operator"], "{label}");
        b.expect("318");
        b.send("WHO alice");
        assert_eq!(b.expect("352").params[6], "H*", "{label}");
        b.send_expect("LUSERS", "252", "1");
        // MODE +o does not make an operator; -o ends it.
        b.send("MODE bob +o");
        b.sync_without("MODE");
        a.send("MODE alice -o");
        assert_eq!(a.expect("MODE").params, ["alice", "-o"]);
        b.send_expect("LUSERS", "252", "0");
    });
}

fn stats_uptime_commands_and_shard_load(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b] = srv.register_each(["alice", "bob"]);
        a.join("#s");
        b.send("PRIVMSG alice :one");
        b.send("PRIVMSG alice :two");
        b.sync();
        a.send("STATS u");
        let up = a.expect("242");
        assert!(
            up.last().starts_with("Server Up 0 days 0:00:"),
            "{}",
            up.raw
        );
        assert_eq!(a.expect("219").params[1..], ["u", "End of /STATS report"]);
        a.send("STATS m");
        let (end, lines) = a.until_command("219");
        assert_eq!(end.params[1], "m");
        let count = |cmd: &str| {
            lines
                .iter()
                .find(|l| l.is("212") && l.params[1] == cmd)
                .map(|l| l.params[2].parse::<u64>().expect("a count"))
        };
        // Summed over shards: both clients' NICK and USER, bob's two PRIVMSGs.
        assert_eq!(count("PRIVMSG"), Some(2), "{label}: {lines:?}");
        assert_eq!(count("NICK"), Some(2), "{label}");
        assert_eq!(count("JOIN"), Some(1), "{label}");
        assert_eq!(count("KICK"), None, "{label}: unused commands are left out");
        a.send("STATS L");
        let (end, lines) = a.until_command("219");
        assert_eq!(end.params[1], "L");
        let mut load: Vec<String> = lines
            .iter()
            .filter(|l| l.is("249"))
            .map(|l| {
                assert_eq!(l.params[1], "L");
                l.last().to_string()
            })
            .collect();
        load.sort();
        assert_eq!(
            load.len(),
            srv.shards,
            "{label}: one line per shard: {load:?}"
        );
        let users: usize = load
            .iter()
            .map(|t| {
                let n = t.split(", ").nth(1).and_then(|u| u.split(' ').next());
                n.and_then(|n| n.parse::<usize>().ok()).expect("users")
            })
            .sum();
        assert_eq!(users, 2, "{label}: {load:?}");
        assert!(load[0].starts_with("shard 0: "), "{load:?}");
        a.send_expect("STATS x", "219", "x");
        a.send_expect("STATS", "461", "STATS");
    });
}

shardline::per_backend! {
    away_answers_senders_with_301 => away_answers_senders_with_301;
    oper_from_config => oper_from_config;
    stats_uptime_commands_and_shard_load => stats_uptime_commands_and_shard_load;
}
