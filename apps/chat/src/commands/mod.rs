//! Client commands: parse one line and act on it.
//!
//! A command handler either finishes at once ([`Flow::Next`]), sends requests whose
//! results later commands depend on ([`Flow::Park`]: the client's next line waits
//! until every request is answered and acknowledged), or finds it must not start
//! before earlier commands' effects are complete ([`Flow::Retry`]: the line is kept
//! and run again then). PING, NICK and JOIN 0 are such barrier commands.

mod account;
mod cap;
mod channel;
mod history;
mod info;
mod messaging;
mod modes;
mod notify;
mod operator;
mod queries;
mod registration;

use shardline::Ctx;

use crate::{
    message::{parse, ParseError},
    reply::code::*,
    shard::ChatShard,
    store::MessageKind,
};

/// What the client's input pump does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next line.
    Next,
    /// Done with this line; wait for its requests before the next one.
    Park,
    /// Not done: wait for earlier requests, then run this line again.
    Retry,
}

/// Commands this server knows, whether or not they need registration.
pub(crate) const KNOWN: &[&str] = &[
    "CAP",
    "NICK",
    "USER",
    "PASS",
    "PING",
    "PONG",
    "QUIT",
    "JOIN",
    "PART",
    "TOPIC",
    "NAMES",
    "PRIVMSG",
    "NOTICE",
    "MODE",
    "LUSERS",
    "MOTD",
    "KICK",
    "INVITE",
    "WHO",
    "WHOIS",
    "LIST",
    "AWAY",
    "OPER",
    "STATS",
    "TAGMSG",
    "CHATHISTORY",
    "TESTACCOUNT",
    "AUTHENTICATE",
    "REGISTER",
    "VERSION",
    "TIME",
    "INFO",
    "ADMIN",
    "LINKS",
    "HELP",
    "HELPOP",
    "USERHOST",
    "ISON",
    "SETNAME",
    "CHGHOST",
    "MONITOR",
    "WHOWAS",
    "KILL",
    "WALLOPS",
    "FILEHOST",
];

impl ChatShard {
    /// Handles one line from client `id`.
    pub(crate) fn handle_line(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        raw: &[u8],
    ) -> Flow {
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        c.last_active = std::time::Instant::now();
        c.ping_sent = false;
        let registered = c.registered;
        let text = String::from_utf8_lossy(raw);
        let msg = match parse(&text) {
            Ok(m) => m,
            Err(ParseError::Empty) => return Flow::Next,
            Err(ParseError::LineTooLong | ParseError::TagsTooLong) => {
                self.numeric(ctx, id, ERR_INPUTTOOLONG, &["Input line was too long"]);
                return Flow::Next;
            }
            Err(ParseError::BadCommand) => {
                let word = text
                    .split(' ')
                    .find(|w| !w.starts_with(['@', ':']) && !w.is_empty());
                let word = crate::reply::truncate(word.unwrap_or("*"), 32).to_string();
                self.numeric(ctx, id, ERR_UNKNOWNCOMMAND, &[&word, "Unknown command"]);
                return Flow::Next;
            }
            Err(e) => {
                self.numeric(
                    ctx,
                    id,
                    ERR_UNKNOWNERROR,
                    &["*", &format!("Malformed message: {e}")],
                );
                return Flow::Next;
            }
        };
        if let Some(flow) = self.label_begin(id, &msg) {
            return flow;
        }
        let cmd = msg.command.to_ascii_uppercase();
        // Commands that exist only with history on, or only in tests.
        let hidden = match cmd.as_str() {
            "CHATHISTORY" => !self.history_on(),
            // Accounts live in the store.
            "AUTHENTICATE" | "REGISTER" => !self.accounts_on(),
            "TESTACCOUNT" => !self.info.config.test_account_command,
            "MONITOR" => self.info.config.limits.monitor == 0,
            "FILEHOST" => self.filehost_url().is_none(),
            _ => false,
        };
        let Some(index) = KNOWN.iter().position(|k| *k == cmd).filter(|_| !hidden) else {
            self.numeric(
                ctx,
                id,
                ERR_UNKNOWNCOMMAND,
                &[msg.command, "Unknown command"],
            );
            return Flow::Next;
        };
        self.command_counts[index] += 1;
        let p = &msg.params;
        match cmd.as_str() {
            "CAP" => return self.cmd_cap(ctx, id, p),
            "NICK" => return self.cmd_nick(ctx, id, p),
            "USER" => return self.cmd_user(ctx, id, p),
            "PASS" => {
                // Kept until registration compares it with `[server] password`
                // (ignored when none is set).
                if registered {
                    self.numeric(ctx, id, ERR_ALREADYREGISTERED, &["You may not reregister"]);
                } else if let Some(pass) = p.first() {
                    if let Some(c) = self.clients.get_mut(&id) {
                        c.pass = Some((*pass).to_string());
                    }
                } else {
                    self.numeric(
                        ctx,
                        id,
                        ERR_NEEDMOREPARAMS,
                        &["PASS", "Not enough parameters"],
                    );
                }
                return Flow::Next;
            }
            "PING" => return self.cmd_ping(ctx, id, p),
            "TESTACCOUNT" => return self.cmd_testaccount(ctx, id, p),
            "AUTHENTICATE" => return self.cmd_authenticate(ctx, id, p),
            "REGISTER" => return self.cmd_register(ctx, id, p),
            "PONG" => return Flow::Next,
            "QUIT" => return self.cmd_quit(ctx, id, p),
            _ => {}
        }
        if !registered {
            self.numeric(ctx, id, ERR_NOTREGISTERED, &["You have not registered"]);
            return Flow::Next;
        }
        match cmd.as_str() {
            "JOIN" => self.cmd_join(ctx, id, p),
            "PART" => self.cmd_part(ctx, id, p),
            "TOPIC" => self.cmd_topic(ctx, id, p),
            "NAMES" => self.cmd_names(ctx, id, p),
            "PRIVMSG" => self.cmd_message(ctx, id, &msg, MessageKind::Privmsg),
            "NOTICE" => self.cmd_message(ctx, id, &msg, MessageKind::Notice),
            "TAGMSG" => self.cmd_message(ctx, id, &msg, MessageKind::Tagmsg),
            "CHATHISTORY" => self.cmd_chathistory(ctx, id, p),
            "MODE" => self.cmd_mode(ctx, id, p),
            "KICK" => self.cmd_kick(ctx, id, p),
            "INVITE" => self.cmd_invite(ctx, id, p),
            "WHO" => self.cmd_who(ctx, id, p),
            "WHOIS" => self.cmd_whois(ctx, id, p),
            "WHOWAS" => self.cmd_whowas(ctx, id, p),
            "USERHOST" => self.cmd_userhost(ctx, id, p),
            "ISON" => self.cmd_ison(ctx, id, p),
            "SETNAME" => self.cmd_setname(ctx, id, p),
            "CHGHOST" => self.cmd_chghost(ctx, id, p),
            "MONITOR" => self.cmd_monitor(ctx, id, p),
            "LIST" => self.cmd_list(ctx, id, p),
            "AWAY" => self.cmd_away(ctx, id, p),
            "OPER" => self.cmd_oper(ctx, id, p),
            "KILL" => self.cmd_kill(ctx, id, p),
            "WALLOPS" => self.cmd_wallops(ctx, id, p),
            "FILEHOST" => self.cmd_filehost(ctx, id, p),
            "STATS" => self.cmd_stats(ctx, id, p),
            "LUSERS" => self.cmd_lusers(ctx, id),
            "VERSION" => self.cmd_version(ctx, id, p),
            "TIME" => self.cmd_time(ctx, id, p),
            "INFO" => self.cmd_info(ctx, id, p),
            "ADMIN" => self.cmd_admin(ctx, id, p),
            "LINKS" => self.cmd_links(ctx, id, p),
            "HELP" | "HELPOP" => self.cmd_help(ctx, id, p),
            "MOTD" => {
                self.send_motd(ctx, id);
                Flow::Next
            }
            _ => Flow::Next,
        }
    }

    /// 461 for `command`.
    pub(crate) fn need_more_params(
        &self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        command: &str,
    ) -> Flow {
        self.numeric(
            ctx,
            id,
            ERR_NEEDMOREPARAMS,
            &[command, "Not enough parameters"],
        );
        Flow::Next
    }
}
