//! VERSION, TIME, INFO, ADMIN, LINKS and HELP: facts about this server, answered
//! from its [`ServerInfo`](crate::info::ServerInfo) on the client's own shard.
//! There is one server: a target naming another draws 402.

use shardline::Ctx;

use super::Flow;
use crate::{
    clock,
    info::VERSION,
    mask::matches,
    reply::{code::*, write_numeric},
    shard::ChatShard,
};

/// A short help text per command (HELP `<subject>`); the first entry is the
/// index (HELP with no subject).
const HELP: &[(&str, &[&str])] = &[
    (
        "*",
        &[
            "shardline-chat help. Commands:",
            "ADMIN AWAY CAP CHATHISTORY HELP INFO INVITE ISON JOIN KICK LINKS",
            "LIST LUSERS MODE MOTD NAMES NICK NOTICE OPER PART PASS PING PONG",
            "PRIVMSG QUIT STATS TAGMSG TIME TOPIC USER USERHOST VERSION WHO WHOIS",
            "MONITOR SETNAME WHOWAS; operators: CHGHOST KILL WALLOPS",
            "HELP <command> for more.",
        ],
    ),
    ("ADMIN", &["ADMIN [server]", "Who runs this server."]),
    (
        "AWAY",
        &[
            "AWAY [message]",
            "Marks you away with message, or back without.",
        ],
    ),
    (
        "CAP",
        &[
            "CAP LS [302]|LIST|REQ :[-]<cap>...|END",
            "IRCv3 capability negotiation.",
        ],
    ),
    (
        "CHATHISTORY",
        &["CHATHISTORY <subcommand> <target> ...", "Message history."],
    ),
    (
        "CHGHOST",
        &[
            "CHGHOST <nick> <user> <host>",
            "Operators: changes a user's user name and host.",
        ],
    ),
    (
        "FILEHOST",
        &[
            "FILEHOST TOKEN",
            "A token for uploads to soju.im/FILEHOST (logged in).",
        ],
    ),
    ("HELP", &["HELP [subject]", "Help on a command."]),
    ("INFO", &["INFO [server]", "About this server's software."]),
    (
        "INVITE",
        &["INVITE <nick> <channel>", "Invites nick to channel."],
    ),
    (
        "ISON",
        &["ISON <nick>{ <nick>}", "Which of the nicks are online."],
    ),
    (
        "JOIN",
        &[
            "JOIN <channel>{,<channel>} [<key>{,<key>}]",
            "Joins channels.",
        ],
    ),
    (
        "KICK",
        &[
            "KICK <channel> <nick> [reason]",
            "Removes nick from channel.",
        ],
    ),
    (
        "KILL",
        &["KILL <nick> <reason>", "Operators: disconnects a user."],
    ),
    (
        "LINKS",
        &["LINKS [[server] mask]", "The servers of the network."],
    ),
    (
        "LIST",
        &["LIST [channel{,channel}]", "Channels and their topics."],
    ),
    ("LUSERS", &["LUSERS", "User and channel counts."]),
    (
        "MODE",
        &["MODE <target> [modes [params]]", "Shows or changes modes."],
    ),
    (
        "MONITOR",
        &[
            "MONITOR +|- <nick>{,<nick>}, MONITOR C|L|S",
            "Online/offline notices for nicks: add, remove, clear, list, status.",
        ],
    ),
    ("MOTD", &["MOTD [server]", "The message of the day."]),
    ("NAMES", &["NAMES <channel>", "Who is on a channel."]),
    ("NICK", &["NICK <nick>", "Sets or changes your nick."]),
    (
        "NOTICE",
        &[
            "NOTICE <target> <text>",
            "Like PRIVMSG, never answered automatically.",
        ],
    ),
    (
        "OPER",
        &["OPER <name> <password>", "Become a server operator."],
    ),
    (
        "PART",
        &["PART <channel>{,<channel>} [reason]", "Leaves channels."],
    ),
    (
        "PASS",
        &[
            "PASS <password>",
            "The server password, before registering.",
        ],
    ),
    (
        "PING",
        &["PING <token>", "The server answers PONG <token>."],
    ),
    ("PONG", &["PONG <token>", "Answers the server's PING."]),
    (
        "PRIVMSG",
        &["PRIVMSG <target>{,<target>} <text>", "Sends a message."],
    ),
    ("QUIT", &["QUIT [reason]", "Disconnects."]),
    (
        "SETNAME",
        &["SETNAME :<realname>", "Changes your real name."],
    ),
    (
        "STATS",
        &["STATS <u|m|L>", "Uptime, command counts, shard load."],
    ),
    ("TAGMSG", &["TAGMSG <target>", "A message of tags only."]),
    ("TIME", &["TIME [server]", "The server's time."]),
    (
        "TOPIC",
        &["TOPIC <channel> [topic]", "Shows or sets a topic."],
    ),
    (
        "USER",
        &[
            "USER <user> 0 * <realname>",
            "Your user name and real name.",
        ],
    ),
    (
        "USERHOST",
        &["USERHOST <nick>{ <nick>}", "user@host of up to 5 nicks."],
    ),
    (
        "VERSION",
        &["VERSION [server]", "This server's version and features."],
    ),
    (
        "WALLOPS",
        &[
            "WALLOPS <text>",
            "Operators: a message to every user with +w.",
        ],
    ),
    (
        "WHO",
        &["WHO <mask> [o]", "Users matching a mask or on a channel."],
    ),
    ("WHOIS", &["WHOIS <nick>", "About a user."]),
    (
        "WHOWAS",
        &[
            "WHOWAS <nick> [count]",
            "Who recently used a nick, newest first.",
        ],
    ),
];

/// INFO's lines.
const INFO: &[&str] = &[
    VERSION,
    "An IRC server built on Shardline, a thread-per-core framework:",
    "clients are spread over shards, each name owned by one shard.",
];

impl ChatShard {
    /// 402 if `target` (a server parameter) names a server other than this one.
    fn elsewhere(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64, target: Option<&str>) -> bool {
        let Some(t) = target.filter(|t| !t.is_empty()) else {
            return false;
        };
        let me = self.info.name();
        if matches(t, me) {
            return false;
        }
        let t = crate::reply::truncate(t, 64);
        self.numeric(ctx, id, ERR_NOSUCHSERVER, &[t, "No such server"]);
        true
    }

    /// Sends lines built by `f` (with the server's name and the client's nick).
    fn send_built(
        &self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        f: impl FnOnce(&mut Vec<u8>, &str, &str),
    ) {
        let Some(c) = self.clients.get(&id) else {
            return;
        };
        let mut out = Vec::with_capacity(512);
        f(&mut out, self.info.name(), c.nick_or_star());
        self.send_line(ctx, id, &out);
    }

    /// VERSION [server]: 351, then the 005 lines as in the welcome.
    pub(super) fn cmd_version(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        if !self.elsewhere(ctx, id, p.first().copied()) {
            let info = &self.info;
            let filehost = self.filehost_url();
            self.send_built(ctx, id, |out, server, nick| {
                let comments = format!("{} shards", self.shards);
                write_numeric(
                    out,
                    server,
                    RPL_VERSION,
                    nick,
                    &[VERSION, server, &comments],
                );
                info.write_isupport(out, nick, filehost.as_deref());
            });
        }
        Flow::Next
    }

    /// TIME [server]: 391 with the Unix time, offset 0 and the UTC time.
    pub(super) fn cmd_time(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        if !self.elsewhere(ctx, id, p.first().copied()) {
            let ms = clock::now_millis();
            let secs = (ms / 1000).to_string();
            let human = clock::format_server_time(ms);
            let server = self.info.name().to_string();
            self.numeric(ctx, id, RPL_TIME, &[&server, &secs, "0", &human]);
        }
        Flow::Next
    }

    /// INFO [server]: 371 lines, 374.
    pub(super) fn cmd_info(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        if !self.elsewhere(ctx, id, p.first().copied()) {
            let started = format!("Started {}", self.info.created);
            self.send_built(ctx, id, |out, server, nick| {
                for l in INFO.iter().copied().chain([started.as_str()]) {
                    write_numeric(out, server, RPL_INFO, nick, &[l]);
                }
                write_numeric(out, server, RPL_ENDOFINFO, nick, &["End of INFO list"]);
            });
        }
        Flow::Next
    }

    /// ADMIN [server]: 256–259 from `[server]`.
    pub(super) fn cmd_admin(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        if !self.elsewhere(ctx, id, p.first().copied()) {
            let s = &self.info.config.server;
            self.send_built(ctx, id, |out, server, nick| {
                write_numeric(
                    out,
                    server,
                    RPL_ADMINME,
                    nick,
                    &[server, "Administrative info"],
                );
                write_numeric(out, server, RPL_ADMINLOC1, nick, &[&s.admin_info1]);
                write_numeric(out, server, RPL_ADMINLOC2, nick, &[&s.admin_info2]);
                write_numeric(out, server, RPL_ADMINEMAIL, nick, &[&s.admin_email]);
            });
        }
        Flow::Next
    }

    /// LINKS [[server] mask]: 364 for this server if the mask matches it, 365.
    pub(super) fn cmd_links(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        if p.len() >= 2 && self.elsewhere(ctx, id, p.first().copied()) {
            return Flow::Next;
        }
        let mask = crate::reply::truncate(p.last().copied().unwrap_or("*"), 64);
        let mask = if mask.is_empty() { "*" } else { mask };
        let network = &self.info.config.server.network;
        // A cluster's other nodes up, one hop away.
        let nodes = self.cluster_servers();
        self.send_built(ctx, id, |out, server, nick| {
            if matches(mask, server) {
                let text = format!("0 {network} IRC server");
                write_numeric(out, server, RPL_LINKS, nick, &[server, server, &text]);
            }
            for (node, other) in &nodes {
                if matches(mask, other) {
                    let text = format!("1 {network} cluster node {node}");
                    write_numeric(out, server, RPL_LINKS, nick, &[other, server, &text]);
                }
            }
            write_numeric(
                out,
                server,
                RPL_ENDOFLINKS,
                nick,
                &[mask, "End of /LINKS list"],
            );
        });
        Flow::Next
    }

    /// HELP/HELPOP [subject]: 704, 705…, 706; 524 for an unknown subject.
    pub(super) fn cmd_help(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let asked = p.first().copied().filter(|s| !s.is_empty());
        let key = asked.map_or_else(|| "*".to_string(), str::to_ascii_uppercase);
        let Some((_, text)) = HELP.iter().find(|(k, _)| *k == key) else {
            let shown = crate::reply::truncate(asked.unwrap_or("*"), 32);
            self.numeric(
                ctx,
                id,
                ERR_HELPNOTFOUND,
                &[shown, "No help available on this topic"],
            );
            return Flow::Next;
        };
        let subject = asked.map_or("*", |_| key.as_str());
        self.send_built(ctx, id, |out, server, nick| {
            let last = text.len() - 1;
            for (i, l) in text.iter().enumerate() {
                let code = match i {
                    0 => RPL_HELPSTART,
                    i if i == last => RPL_ENDOFHELP,
                    _ => RPL_HELPTXT,
                };
                write_numeric(out, server, code, nick, &[subject, l]);
            }
        });
        Flow::Next
    }
}

#[cfg(test)]
mod tests {
    use super::HELP;
    use crate::commands::KNOWN;

    #[test]
    fn help_covers_every_command() {
        for cmd in KNOWN {
            if matches!(*cmd, "TESTACCOUNT" | "AUTHENTICATE" | "REGISTER" | "HELPOP") {
                continue;
            }
            let entry = HELP.iter().find(|(k, _)| k == cmd);
            assert!(entry.is_some_and(|(_, t)| t.len() >= 2), "{cmd}");
        }
    }
}
