//! What every shard knows about the server: the configuration, the server's name,
//! and the lines of the welcome burst that do not depend on the client. Read-only;
//! a rehash (SIGHUP) gives every shard a new one ([`ServerInfo::rehashed`]).

use std::{sync::Arc, time::Instant};

use crate::{clock, config::Config, stats::ChatStats};

/// Mode changes with a parameter one MODE command may make (`MODES`).
pub const MAX_MODES: usize = 4;

/// The longest real name (USER, SETNAME): ISUPPORT `NAMELEN`.
pub const NAMELEN: usize = 128;

/// The version string shown in 002 and 004.
pub const VERSION: &str = concat!("shardline-chat-", env!("CARGO_PKG_VERSION"));

/// Read-only server facts, shared by every shard.
#[derive(Debug)]
pub struct ServerInfo {
    /// The configuration.
    pub config: Config,
    /// When the server started, for 003.
    pub created: String,
    /// The ISUPPORT tokens, at most 13 per 005 line.
    pub isupport: Vec<Vec<String>>,
    /// The message of the day, if any.
    pub motd: Option<Vec<String>>,
    /// When the server started, for STATS u.
    pub started: Instant,
    /// Every shard's counters, for the admin endpoint (the same across rehashes).
    pub stats: Arc<ChatStats>,
    /// This process's incarnation in a cluster ([`crate::cluster`]): random,
    /// the same across rehashes.
    pub incarnation: String,
}

impl ServerInfo {
    /// Facts for a server starting now with `config`.
    pub fn new(config: Config) -> ServerInfo {
        let l = &config.limits;
        let t = l.max_targets;
        // Only tokens we honour: see the crate docs.
        let mut tokens = vec![
            "CASEMAPPING=rfc1459".to_string(),
            "CHANTYPES=#".into(),
            "PREFIX=(ov)@+".into(),
            "CHANMODES=b,k,l,imnst".into(),
            format!("MODES={MAX_MODES}"),
            format!("MAXLIST=b:{}", crate::owner::MAX_BANS),
            format!("KEYLEN={}", crate::owner::KEYLEN),
            format!("CHANLIMIT=#:{}", l.max_channels),
            format!("NICKLEN={}", l.nicklen),
            format!("CHANNELLEN={}", l.channellen),
            format!("TOPICLEN={}", l.topiclen),
            format!("KICKLEN={}", l.kicklen),
            format!("AWAYLEN={}", l.awaylen),
            format!("NAMELEN={NAMELEN}"),
            format!("TARGMAX=PRIVMSG:{t},NOTICE:{t},JOIN:,PART:,NAMES:,LIST:,KICK:{t},WHOIS:1"),
            format!("NETWORK={}", config.server.network),
            "BOT=B".into(),
        ];
        if l.monitor > 0 {
            tokens.push(format!("MONITOR={}", l.monitor));
        }
        if config.history.enabled {
            tokens.push(format!("CHATHISTORY={}", config.history.max_request));
            tokens.push("MSGREFTYPES=msgid,timestamp".into());
        }
        let isupport = tokens.chunks(13).map(<[String]>::to_vec).collect();
        let motd = config.motd_lines();
        ServerInfo {
            created: clock::format_server_time(clock::now_millis()),
            isupport,
            motd,
            started: Instant::now(),
            stats: Arc::new(ChatStats::new()),
            incarnation: crate::cluster::incarnation(),
            config,
        }
    }

    /// The facts after a rehash to `new` (see [`Config::rehash`]): the same start
    /// time and counters, the changeable settings from `new`. Also returns the
    /// restart-only settings `new` would have changed.
    pub fn rehashed(&self, new: Config) -> (ServerInfo, Vec<&'static str>) {
        let (config, kept) = self.config.rehash(new);
        let mut info = ServerInfo::new(config);
        info.created = self.created.clone();
        info.started = self.started;
        info.stats = self.stats.clone();
        info.incarnation = self.incarnation.clone();
        (info, kept)
    }

    /// The value of the IRCv3 `sts` capability for a client connected over TLS
    /// (`secure`: the persistence policy, `duration=<secs>`) or over plaintext
    /// (the upgrade policy, `port=<tls port>`); `None` when STS is not
    /// advertised (TLS or `tls.sts` off, or no known TLS port for a plaintext
    /// client). `bound_port`: the port the first TLS listener is bound to, used
    /// when the configuration names none (`tls.sts_port` absent, listen port 0).
    pub fn sts_value(&self, secure: bool, bound_port: Option<u16>) -> Option<String> {
        let tls = &self.config.tls;
        if !tls.enabled() || !tls.sts {
            return None;
        }
        if secure {
            Some(format!("duration={}", tls.sts_duration_secs))
        } else {
            tls.upgrade_port()
                .or(bound_port)
                .map(|port| format!("port={port}"))
        }
    }

    /// Appends the 005 (ISUPPORT) lines to `nick`: sent in the welcome and
    /// after VERSION's 351.
    /// `filehost`: the upload URL of `soju.im/FILEHOST` (known to the shards
    /// once their listeners are bound, see [`crate::filehost`]), if on.
    pub fn write_isupport(&self, out: &mut Vec<u8>, nick: &str, filehost: Option<&str>) {
        let token = filehost.map(|url| format!("soju.im/FILEHOST={url}"));
        let n = self.isupport.len();
        let extra_line = token.is_some() && self.isupport.last().is_none_or(|t| t.len() >= 13);
        let lines = self
            .isupport
            .iter()
            .map(Some)
            .chain(extra_line.then_some(None));
        for (i, tokens) in lines.enumerate() {
            let mut params: Vec<&str> = tokens.into_iter().flatten().map(String::as_str).collect();
            let last = if extra_line { i == n } else { i + 1 == n };
            if let (true, Some(t)) = (last, &token) {
                params.push(t);
            }
            params.push("are supported by this server");
            crate::reply::write_numeric(
                out,
                self.name(),
                crate::reply::code::RPL_ISUPPORT,
                nick,
                &params,
            );
        }
    }

    /// The server's name (source of numerics).
    pub fn name(&self) -> &str {
        &self.config.server.name
    }
}
