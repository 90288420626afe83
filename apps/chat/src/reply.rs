//! Formatting server-originated lines: numerics and commands, each ending in CR LF
//! and never longer than 512 bytes (text parameters are cut to fit).

use crate::message::{is_middle, MAX_BODY};

/// Numeric codes we send, by their conventional names.
#[allow(missing_docs)]
pub mod code {
    pub const RPL_WELCOME: u16 = 1;
    pub const RPL_YOURHOST: u16 = 2;
    pub const RPL_CREATED: u16 = 3;
    pub const RPL_MYINFO: u16 = 4;
    pub const RPL_ISUPPORT: u16 = 5;
    pub const RPL_STATSCOMMANDS: u16 = 212;
    pub const RPL_ENDOFSTATS: u16 = 219;
    pub const RPL_UMODEIS: u16 = 221;
    pub const RPL_STATSUPTIME: u16 = 242;
    pub const RPL_STATSDEBUG: u16 = 249;
    pub const RPL_LUSERCLIENT: u16 = 251;
    pub const RPL_LUSEROP: u16 = 252;
    pub const RPL_LUSERUNKNOWN: u16 = 253;
    pub const RPL_LUSERCHANNELS: u16 = 254;
    pub const RPL_LUSERME: u16 = 255;
    pub const RPL_TRYAGAIN: u16 = 263;
    pub const RPL_LOCALUSERS: u16 = 265;
    pub const RPL_WHOISCERTFP: u16 = 276;
    pub const RPL_WHOWASUSER: u16 = 314;
    pub const RPL_ENDOFWHOWAS: u16 = 369;
    pub const ERR_WASNOSUCHNICK: u16 = 406;
    pub const RPL_WHOISBOT: u16 = 335;
    pub const ERR_NOPRIVILEGES: u16 = 481;
    pub const RPL_GLOBALUSERS: u16 = 266;
    pub const RPL_AWAY: u16 = 301;
    pub const RPL_UNAWAY: u16 = 305;
    pub const RPL_NOWAWAY: u16 = 306;
    pub const RPL_WHOISUSER: u16 = 311;
    pub const RPL_WHOISSERVER: u16 = 312;
    pub const RPL_WHOISOPERATOR: u16 = 313;
    pub const RPL_ENDOFWHO: u16 = 315;
    pub const RPL_WHOISIDLE: u16 = 317;
    pub const RPL_ENDOFWHOIS: u16 = 318;
    pub const RPL_WHOISCHANNELS: u16 = 319;
    pub const RPL_LISTSTART: u16 = 321;
    pub const RPL_LIST: u16 = 322;
    pub const RPL_LISTEND: u16 = 323;
    pub const RPL_CHANNELMODEIS: u16 = 324;
    pub const RPL_CREATIONTIME: u16 = 329;
    pub const RPL_WHOISACCOUNT: u16 = 330;
    pub const RPL_NOTOPIC: u16 = 331;
    pub const RPL_TOPIC: u16 = 332;
    pub const RPL_TOPICWHOTIME: u16 = 333;
    pub const RPL_INVITING: u16 = 341;
    pub const RPL_WHOREPLY: u16 = 352;
    pub const RPL_NAMREPLY: u16 = 353;
    pub const RPL_ENDOFNAMES: u16 = 366;
    pub const RPL_BANLIST: u16 = 367;
    pub const RPL_ENDOFBANLIST: u16 = 368;
    pub const RPL_MOTD: u16 = 372;
    pub const RPL_MOTDSTART: u16 = 375;
    pub const RPL_ENDOFMOTD: u16 = 376;
    pub const RPL_YOUREOPER: u16 = 381;
    pub const RPL_WHOISSECURE: u16 = 671;
    pub const ERR_UNKNOWNERROR: u16 = 400;
    pub const ERR_NOSUCHNICK: u16 = 401;
    pub const ERR_NOSUCHCHANNEL: u16 = 403;
    pub const ERR_CANNOTSENDTOCHAN: u16 = 404;
    pub const ERR_TOOMANYCHANNELS: u16 = 405;
    pub const ERR_TOOMANYTARGETS: u16 = 407;
    pub const ERR_INVALIDCAPCMD: u16 = 410;
    pub const ERR_NORECIPIENT: u16 = 411;
    pub const ERR_NOTEXTTOSEND: u16 = 412;
    pub const ERR_INPUTTOOLONG: u16 = 417;
    pub const ERR_UNKNOWNCOMMAND: u16 = 421;
    pub const ERR_NOMOTD: u16 = 422;
    pub const ERR_NONICKNAMEGIVEN: u16 = 431;
    pub const ERR_ERRONEUSNICKNAME: u16 = 432;
    pub const ERR_NICKNAMEINUSE: u16 = 433;
    pub const ERR_USERNOTINCHANNEL: u16 = 441;
    pub const ERR_NOTONCHANNEL: u16 = 442;
    pub const ERR_USERONCHANNEL: u16 = 443;
    pub const ERR_NOTREGISTERED: u16 = 451;
    pub const ERR_NEEDMOREPARAMS: u16 = 461;
    pub const ERR_ALREADYREGISTERED: u16 = 462;
    pub const ERR_PASSWDMISMATCH: u16 = 464;
    pub const ERR_KEYSET: u16 = 467;
    pub const ERR_CHANNELISFULL: u16 = 471;
    pub const ERR_UNKNOWNMODE: u16 = 472;
    pub const ERR_INVITEONLYCHAN: u16 = 473;
    pub const ERR_BANNEDFROMCHAN: u16 = 474;
    pub const ERR_BADCHANNELKEY: u16 = 475;
    pub const ERR_BANLISTFULL: u16 = 478;
    pub const ERR_CHANOPRIVSNEEDED: u16 = 482;
    pub const ERR_NOOPERHOST: u16 = 491;
    pub const ERR_UMODEUNKNOWNFLAG: u16 = 501;
    pub const ERR_USERSDONTMATCH: u16 = 502;
    pub const ERR_INVALIDMODEPARAM: u16 = 696;
    pub const RPL_ADMINME: u16 = 256;
    pub const RPL_ADMINLOC1: u16 = 257;
    pub const RPL_ADMINLOC2: u16 = 258;
    pub const RPL_ADMINEMAIL: u16 = 259;
    pub const RPL_USERHOST: u16 = 302;
    pub const RPL_ISON: u16 = 303;
    pub const RPL_VERSION: u16 = 351;
    pub const RPL_LINKS: u16 = 364;
    pub const RPL_ENDOFLINKS: u16 = 365;
    pub const RPL_INFO: u16 = 371;
    pub const RPL_ENDOFINFO: u16 = 374;
    pub const RPL_TIME: u16 = 391;
    pub const ERR_NOSUCHSERVER: u16 = 402;
    pub const ERR_HELPNOTFOUND: u16 = 524;
    pub const RPL_HELPSTART: u16 = 704;
    pub const RPL_HELPTXT: u16 = 705;
    pub const RPL_ENDOFHELP: u16 = 706;
    pub const RPL_MONONLINE: u16 = 730;
    pub const RPL_MONOFFLINE: u16 = 731;
    pub const RPL_MONLIST: u16 = 732;
    pub const RPL_ENDOFMONLIST: u16 = 733;
    pub const ERR_MONLISTFULL: u16 = 734;
}

/// The longest prefix of `s` that fits in `max` bytes without splitting a char.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends `:source COMMAND p1 p2 :last\r\n`. The last parameter is written as
/// trailing when `trailing` is set or when it must be; it is cut so the line stays
/// within 512 bytes. Earlier parameters must be middles.
pub fn write_line(out: &mut Vec<u8>, source: &str, command: &str, params: &[&str], trailing: bool) {
    let start = out.len();
    out.push(b':');
    out.extend_from_slice(source.as_bytes());
    out.push(b' ');
    out.extend_from_slice(command.as_bytes());
    let last = params.len().saturating_sub(1);
    for (i, p) in params.iter().enumerate() {
        out.push(b' ');
        if i == last {
            if trailing || !is_middle(p) {
                out.push(b':');
            }
            let room = MAX_BODY.saturating_sub(out.len() - start);
            out.extend_from_slice(truncate(p, room).as_bytes());
        } else {
            out.extend_from_slice(p.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The kind of an IRCv3 standard reply (`FAIL`, `WARN` or `NOTE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standard {
    /// The command failed.
    Fail,
    /// The command went through, with a warning.
    Warn,
    /// Information about the command or the connection.
    Note,
}

impl Standard {
    /// The reply's command word.
    pub fn word(self) -> &'static str {
        match self {
            Standard::Fail => "FAIL",
            Standard::Warn => "WARN",
            Standard::Note => "NOTE",
        }
    }
}

/// Appends the standard reply `:server FAIL|WARN|NOTE <command> <code>
/// [<context>...] :<description>`. `command` is the command it is about (`*`
/// for none); a context parameter that cannot be a middle parameter (empty,
/// with a space, starting with `:`) is written as `*`.
pub fn write_standard(
    out: &mut Vec<u8>,
    server: &str,
    kind: Standard,
    command: &str,
    code: &str,
    context: &[&str],
    description: &str,
) {
    let mut params = Vec::with_capacity(context.len() + 3);
    params.push(if is_middle(command) { command } else { "*" });
    params.push(code);
    params.extend(context.iter().map(|&c| if is_middle(c) { c } else { "*" }));
    params.push(description);
    write_line(out, server, kind.word(), &params, true);
}

/// A line from `source` (a command: JOIN, PRIVMSG, ...), last parameter trailing
/// when `trailing` is set or needed.
pub fn line(source: &str, command: &str, params: &[&str], trailing: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_line(&mut out, source, command, params, trailing);
    out
}

/// Appends the numeric `code` from `server` to `nick` (`*` before it has one),
/// the last parameter as trailing.
pub fn write_numeric(out: &mut Vec<u8>, server: &str, code: u16, nick: &str, params: &[&str]) {
    let code = format!("{code:03}");
    let mut all = Vec::with_capacity(params.len() + 1);
    all.push(nick);
    all.extend_from_slice(params);
    write_line(out, server, &code, &all, !params.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics() {
        let mut out = Vec::new();
        write_numeric(&mut out, "srv.test", 1, "al", &["Welcome home"]);
        assert_eq!(out, b":srv.test 001 al :Welcome home\r\n");
        out.clear();
        write_numeric(
            &mut out,
            "srv.test",
            366,
            "al",
            &["#a", "End of /NAMES list."],
        );
        assert_eq!(out, b":srv.test 366 al #a :End of /NAMES list.\r\n");
    }

    #[test]
    fn lines_fit_512() {
        let text = "é".repeat(400);
        let l = line("nick!user@host", "PRIVMSG", &["#chan", &text], true);
        assert!(l.len() <= 512);
        assert!(std::str::from_utf8(&l).is_ok(), "cut on a char boundary");
        assert!(l.ends_with(b"\r\n"));
    }

    #[test]
    fn standard_replies() {
        let mut out = Vec::new();
        write_standard(
            &mut out,
            "srv",
            Standard::Fail,
            "CHATHISTORY",
            "INVALID_TARGET",
            &["LATEST", "#c"],
            "No such target",
        );
        assert_eq!(
            out,
            b":srv FAIL CHATHISTORY INVALID_TARGET LATEST #c :No such target\r\n"
        );
        out.clear();
        write_standard(&mut out, "srv", Standard::Warn, "", "X", &["a b", ""], "d");
        assert_eq!(out, b":srv WARN * X * * :d\r\n");
        out.clear();
        write_standard(&mut out, "srv", Standard::Note, "*", "Y", &[], "");
        assert_eq!(out, b":srv NOTE * Y :\r\n");
    }

    #[test]
    fn trailing_only_when_asked_or_needed() {
        assert_eq!(line("n!u@h", "JOIN", &["#a"], false), b":n!u@h JOIN #a\r\n");
        assert_eq!(
            line("n!u@h", "PART", &["#a", ""], false),
            b":n!u@h PART #a :\r\n"
        );
    }
}
