//! Queries merged across shards, over raw TCP: WHO (channels and masks, `+i` and
//! `+s` respected), WHOIS, LIST (masks, `+s`) and LUSERS 265/266. Clients sit on
//! different shards whenever there are several. Both backends, 1 and 4 shards.

mod common;

use common::{each_server, join_all, Client, Line};
use shardline::Io;

/// Sends `command` and returns the lines with numeric `code` before `end`.
fn rows(c: &mut Client, command: &str, code: &str, end: &str) -> (Vec<Line>, Line) {
    c.send(command);
    let (last, seen) = c.until_command(end);
    (seen.into_iter().filter(|l| l.is(code)).collect(), last)
}

/// WHO rows as "nick flags", sorted.
fn who(c: &mut Client, mask: &str) -> Vec<String> {
    let (rows, end) = rows(c, &format!("WHO {mask}"), "352", "315");
    assert_eq!(end.params[1], mask);
    let mut out: Vec<String> = rows
        .iter()
        .map(|l| format!("{} {}", l.params[5], l.params[6]))
        .collect();
    out.sort();
    out
}

fn who_merges_every_shard(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c, mut d] = srv.register_each(["alice", "bob", "carol", "dave"]);
        c.send("MODE carol +i");
        c.expect("MODE");
        join_all("#who", [&mut a, &mut b, &mut c]);
        a.send("MODE #who +v bob");
        b.expect("MODE");
        c.sync();
        // One row in full.
        let (rows, _) = rows(&mut d, "WHO #who", "352", "315");
        let row = rows.iter().find(|l| l.params[5] == "alice").expect("alice");
        assert_eq!(
            row.params,
            [
                "dave",
                "#who",
                "~alice",
                "127.0.0.1",
                "irc.test",
                "alice",
                "H@",
                "0 Test alice"
            ],
            "{label}"
        );
        // An outsider does not see the invisible member; a member does.
        assert_eq!(who(&mut d, "#who"), ["alice H@", "bob H+"], "{label}");
        assert_eq!(
            who(&mut b, "#WHO"),
            ["alice H@", "bob H+", "carol H"],
            "{label}"
        );
        a.send("AWAY :out");
        a.expect("306");
        assert_eq!(who(&mut d, "a*"), ["alice G"], "{label}");
        assert_eq!(who(&mut d, "*"), ["alice G", "bob H", "dave H"], "{label}");
        // A shared channel or an exact nick shows an invisible user.
        assert_eq!(who(&mut a, "*"), ["alice G", "bob H", "carol H", "dave H"]);
        assert_eq!(who(&mut d, "carol"), ["carol H"], "{label}");
        assert_eq!(who(&mut d, "*.0.0.*"), ["alice G", "bob H", "dave H"]);
        assert!(who(&mut d, "nobody").is_empty());
        // +s hides the channel from outsiders entirely.
        a.send("MODE #who +s");
        // Each member's shard applies +s when it delivers the MODE line.
        for x in [&mut a, &mut b, &mut c] {
            x.expect("MODE");
        }
        assert!(who(&mut d, "#who").is_empty(), "{label}");
        assert_eq!(who(&mut c, "#who").len(), 3, "{label}");
    });
}

fn whois_reports_from_the_target_shard(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        a.join("#pub");
        a.join("#sec");
        a.send("MODE #sec +s");
        a.expect("MODE");
        b.join("#sec");
        c.send("WHOIS Alice");
        let (end, lines) = c.until_command("318");
        let codes: Vec<&str> = lines.iter().map(|l| l.command.as_str()).collect();
        assert_eq!(codes, ["311", "319", "312", "317"], "{label}: {lines:?}");
        assert_eq!(
            lines[0].params,
            ["carol", "alice", "~alice", "127.0.0.1", "*", "Test alice"]
        );
        assert_eq!(lines[1].params[1..], ["alice", "@#pub"], "{label}");
        assert_eq!(lines[2].params[1..3], ["alice", "irc.test"]);
        assert_eq!(end.params[1], "alice");
        // A member of the +s channel sees it.
        b.send("WHOIS alice");
        let chans = b.expect("319");
        assert_eq!(chans.last(), "@#pub @#sec", "{label}");
        b.expect("318");
        a.send("AWAY :lunch");
        a.expect("306");
        c.send("WHOIS alice");
        let away = c.expect("301");
        assert_eq!(away.params[1..], ["alice", "lunch"], "{label}");
        c.expect("318");
        c.send_expect("WHOIS nobody", "401", "nobody");
        c.expect_about("318", "nobody");
        c.send("WHOIS");
        c.expect("431");
    });
}

fn list_merges_every_owner(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, mut b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        for chan in ["#one", "#two", "#three", "#four"] {
            a.join(chan);
        }
        b.join("#two");
        a.send("TOPIC #one :the first");
        a.expect("TOPIC");
        b.join("#hidden");
        b.send("MODE #hidden +s");
        b.expect("MODE");
        let list = |x: &mut Client, command: &str| {
            let (rows, _) = rows(x, command, "322", "323");
            let mut out: Vec<String> = rows
                .iter()
                .map(|l| format!("{} {} {}", l.params[1], l.params[2], l.last()))
                .collect();
            out.sort();
            out
        };
        c.send_expect("LIST", "321", "Channel");
        c.expect("323");
        assert_eq!(
            list(&mut c, "LIST"),
            ["#four 1 ", "#one 1 the first", "#three 1 ", "#two 2 "],
            "{label}"
        );
        assert_eq!(
            list(&mut b, "LIST").len(),
            5,
            "{label}: b sees its +s channel"
        );
        assert_eq!(
            list(&mut c, "LIST #t*"),
            ["#three 1 ", "#two 2 "],
            "{label}"
        );
        assert_eq!(
            list(&mut c, "LIST #ONE,#four,#hidden"),
            ["#four 1 ", "#one 1 the first"],
            "{label}"
        );
        assert!(list(&mut c, "LIST #none").is_empty());
    });
}

fn lusers_current_and_max_users(io: Io) {
    each_server(io, |srv| {
        let label = srv.label();
        let [mut a, _b, mut c] = srv.register_each(["alice", "bob", "carol"]);
        a.send("LUSERS");
        let local = a.expect("265");
        assert_eq!(local.params[1..3], ["3", "3"], "{label}");
        assert_eq!(local.last(), "Current local users 3, max 3");
        let global = a.expect("266");
        assert_eq!(global.params[1..3], ["3", "3"], "{label}");
        c.send("QUIT");
        c.until_closed();
        a.send("LUSERS");
        assert_eq!(a.expect("265").params[1..3], ["2", "3"], "{label}");
        assert_eq!(a.expect("266").params[1..3], ["2", "3"], "{label}");
    });
}

shardline::per_backend! {
    who_merges_every_shard => who_merges_every_shard;
    whois_reports_from_the_target_shard => whois_reports_from_the_target_shard;
    list_merges_every_owner => list_merges_every_owner;
    lusers_current_and_max_users => lusers_current_and_max_users;
}
