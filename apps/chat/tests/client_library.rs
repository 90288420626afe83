//! A real IRC client library — the `irc` crate from crates.io, without TLS — against
//! the server: two library clients, on different shards at 4 shards, register, join
//! a channel, exchange channel and private messages, and quit; one logs in with
//! SASL PLAIN through the library's own SASL calls; and the library's own
//! OPER, user MODE `+w`, WALLOPS, KILL and WHOWAS commands work across shards
//! and their answers parse. Both backends, 1 and 4 shards.
//! Every wait is bounded by `WAIT`.

mod common;

use std::time::Instant;

use common::{each_server, each_server_with, TestServer, WAIT};
use futures_util::StreamExt;
use irc::{
    client::prelude::{
        Capability, Client, Command, Config, Message, Mode, Prefix, Response, UserMode,
    },
    proto::CapSubCommand,
};
use shardline::Io;
use tokio::{
    sync::mpsc::{unbounded_channel, UnboundedReceiver},
    time::{sleep, timeout, Duration},
};

const CHANNEL: &str = "#library";

/// What a client's stream task forwards: a message, or how the stream ended.
#[derive(Debug)]
enum Event {
    Msg(Box<Message>),
    Error(String),
    End,
}

/// One `irc` crate client; a task drives its stream (which also flushes what the
/// client sends) and forwards everything it reads.
struct LibClient {
    client: Client,
    events: UnboundedReceiver<Event>,
    shard: usize,
    nick: String,
    label: String,
}

/// Connects a library client (not yet registered) and finds out from the shards'
/// accept counters which shard took it. Connect one client at a time.
async fn connect(srv: &TestServer, nick: &str) -> LibClient {
    let before = srv.accepted();
    let config = Config {
        nickname: Some(nick.to_string()),
        username: Some(nick.to_string()),
        realname: Some(format!("{nick} via the irc crate")),
        server: Some(srv.addr.ip().to_string()),
        port: Some(srv.addr.port()),
        channels: vec![CHANNEL.to_string()],
        ..Config::default()
    };
    let mut client = timeout(WAIT, Client::from_config(config))
        .await
        .unwrap_or_else(|_| panic!("{}: connect timed out", srv.label()))
        .unwrap_or_else(|e| panic!("{}: connect: {e}", srv.label()));
    let deadline = Instant::now() + WAIT;
    let shard = loop {
        if let Some(s) = srv.newly_accepted(&before) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no shard accepted",
            srv.label()
        );
        sleep(Duration::from_millis(2)).await;
    };
    let mut stream = client.stream().expect("stream taken once");
    let (tx, events) = unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(m) => Event::Msg(Box::new(m)),
                Err(e) => Event::Error(e.to_string()),
            };
            if tx.send(event).is_err() {
                return;
            }
        }
        let _ = tx.send(Event::End);
    });
    LibClient {
        client,
        events,
        shard,
        nick: nick.to_string(),
        label: format!("{} {nick}", srv.label()),
    }
}

/// Connects until a client lands on a shard other than `not` (any shard at 1 shard).
async fn connect_elsewhere(srv: &TestServer, nick: &str, not: usize) -> LibClient {
    for _ in 0..500 {
        let c = connect(srv, nick).await;
        if srv.shards == 1 || c.shard != not {
            return c;
        }
    }
    panic!("{}: no connection landed off shard {not}", srv.label());
}

impl LibClient {
    /// Reads until a message matches `pred`; returns it and what came before.
    async fn until(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> (Message, Vec<Message>) {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Msg(m))) if pred(&m) => return (*m, seen),
                Ok(Some(Event::Msg(m))) => seen.push(*m),
                Ok(Some(Event::Error(e))) => panic!(
                    "{}: stream error {e} waiting for {what}; seen: {seen:?}",
                    self.label
                ),
                Ok(Some(Event::End) | None) => panic!(
                    "{}: connection closed waiting for {what}; seen: {seen:?}",
                    self.label
                ),
                Err(_) => panic!(
                    "{}: timed out waiting for {what}; seen: {seen:?}",
                    self.label
                ),
            }
        }
    }

    /// Reads until the stream ends (the server closed the connection); returns what
    /// came before.
    async fn until_end(&mut self) -> Vec<Message> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Event::Msg(m))) => seen.push(*m),
                Ok(Some(Event::Error(_) | Event::End) | None) => return seen,
                Err(_) => panic!("{}: connection not closed; seen: {seen:?}", self.label),
            }
        }
    }

    /// Sends the library's registration (CAP END, NICK, USER) and waits for the
    /// welcome and for the JOIN of the library's autojoin (sent at end of MOTD).
    async fn register_and_autojoin(&mut self) {
        self.client.identify().expect("identify");
        let (welcome, _) = self
            .until("001", |m| {
                matches!(m.command, Command::Response(Response::RPL_WELCOME, _))
            })
            .await;
        assert_eq!(
            welcome.prefix,
            Some(Prefix::ServerName("irc.test".into())),
            "{}",
            self.label
        );
        assert_eq!(self.client.current_nickname(), self.nick);
        let nick = self.nick.clone();
        let (join, _) = self
            .until("own JOIN", |m| {
                matches!(&m.command, Command::JOIN(c, _, _) if c == CHANNEL)
                    && m.source_nickname() == Some(nick.as_str())
            })
            .await;
        assert_eq!(join.prefix, Some(user_prefix(&nick)), "{}", self.label);
        self.until("366", |m| {
            matches!(m.command, Command::Response(Response::RPL_ENDOFNAMES, _))
        })
        .await;
    }

    /// The nicks the library tracks as members of `CHANNEL`.
    fn members(&self) -> Vec<String> {
        let mut nicks: Vec<String> = self
            .client
            .list_users(CHANNEL)
            .unwrap_or_default()
            .iter()
            .map(|u| u.get_nickname().to_string())
            .collect();
        nicks.sort();
        nicks
    }
}

/// The source the server gives a client registered with username `nick`.
fn user_prefix(nick: &str) -> Prefix {
    Prefix::Nickname(nick.into(), format!("~{nick}"), "127.0.0.1".into())
}

fn is_privmsg(m: &Message) -> bool {
    matches!(m.command, Command::PRIVMSG(..))
}

async fn session(srv: &TestServer) {
    let mut alice = connect(srv, "alice").await;
    let mut bob = connect_elsewhere(srv, "bob", alice.shard).await;
    if srv.shards > 1 {
        assert_ne!(alice.shard, bob.shard, "{}", srv.label());
    }

    // Alice registers and joins first, so she sees Bob's JOIN and he sees her in
    // NAMES; the library tracks both in its channel list.
    alice.register_and_autojoin().await;
    bob.register_and_autojoin().await;
    let (join, _) = alice
        .until("bob's JOIN", |m| matches!(m.command, Command::JOIN(..)))
        .await;
    assert_eq!(join.prefix, Some(user_prefix("bob")), "{}", srv.label());
    assert_eq!(alice.members(), ["alice", "bob"], "{}", srv.label());
    assert_eq!(bob.members(), ["alice", "bob"], "{}", srv.label());

    // Channel messages both ways, across shards.
    alice
        .client
        .send_privmsg(CHANNEL, "hello from alice")
        .expect("send");
    let (m, _) = bob.until("alice's PRIVMSG", is_privmsg).await;
    assert_eq!(m.prefix, Some(user_prefix("alice")), "{}", srv.label());
    assert_eq!(
        m.command,
        Command::PRIVMSG(CHANNEL.into(), "hello from alice".into())
    );
    assert_eq!(m.response_target(), Some(CHANNEL));
    bob.client
        .send_privmsg(CHANNEL, "hi alice, bob here: ünïcode too")
        .expect("send");
    let (m, _) = alice.until("bob's PRIVMSG", is_privmsg).await;
    assert_eq!(m.prefix, Some(user_prefix("bob")), "{}", srv.label());
    assert_eq!(
        m.command,
        Command::PRIVMSG(CHANNEL.into(), "hi alice, bob here: ünïcode too".into())
    );

    // A private message and a notice, nick to nick.
    bob.client
        .send_privmsg("Alice", "just between us")
        .expect("send");
    let (m, _) = alice.until("bob's private PRIVMSG", is_privmsg).await;
    assert_eq!(m.prefix, Some(user_prefix("bob")));
    assert_eq!(
        m.command,
        Command::PRIVMSG("Alice".into(), "just between us".into())
    );
    // The library answers a private message to the sender's nick.
    assert_eq!(m.response_target(), Some("bob"));
    alice.client.send_notice("bob", "noted").expect("send");
    let (m, _) = bob
        .until("alice's NOTICE", |m| {
            matches!(m.command, Command::NOTICE(..))
        })
        .await;
    assert_eq!(m.prefix, Some(user_prefix("alice")));
    assert_eq!(m.command, Command::NOTICE("bob".into(), "noted".into()));

    // Alice quits: Bob sees the QUIT with her reason, after her last message; she
    // gets ERROR and the connection closes.
    alice
        .client
        .send_privmsg(CHANNEL, "last words")
        .expect("send");
    alice.client.send_quit("see you").expect("send");
    let (m, _) = bob
        .until("alice's last PRIVMSG", |m| {
            is_privmsg(m) || matches!(m.command, Command::QUIT(_))
        })
        .await;
    assert_eq!(
        m.command,
        Command::PRIVMSG(CHANNEL.into(), "last words".into()),
        "{}: the message comes before the QUIT",
        srv.label()
    );
    let (quit, _) = bob
        .until("alice's QUIT", |m| matches!(m.command, Command::QUIT(_)))
        .await;
    assert_eq!(quit.prefix, Some(user_prefix("alice")), "{}", srv.label());
    assert_eq!(quit.command, Command::QUIT(Some("Quit: see you".into())));
    let rest = alice.until_end().await;
    assert!(
        rest.iter().any(|m| matches!(m.command, Command::ERROR(_))),
        "{}: no ERROR before close: {rest:?}",
        srv.label()
    );
    assert_eq!(bob.members(), ["bob"], "{}", srv.label());

    bob.client.send_quit("done").expect("send");
    bob.until_end().await;
}

fn irc_crate_clients_chat_across_shards(io: Io) {
    each_server(io, |srv| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(session(srv));
    });
}

/// SASL PLAIN driven by the library (`send_cap_req`, `send_sasl_plain`,
/// `send_sasl`) for an account registered with REGISTER on another shard: a
/// wrong password gets 904, the right one 900 and 903, then the library
/// registers (CAP END, NICK, USER) and chats as usual.
async fn sasl_session(srv: &TestServer) {
    use base64::Engine;
    let password = "library horse battery";
    let mut owner = srv.connect_on(0);
    owner.nick = "libuser".into();
    owner.send("NICK libuser");
    owner.send(&format!("REGISTER * * :{password}"));
    owner.until("REGISTER SUCCESS", |l| l.is("REGISTER"));
    owner.send("QUIT");
    owner.until_closed();

    let mut lib = connect_elsewhere(srv, "saslnick", 0).await;
    lib.client
        .send_cap_req(&[Capability::Sasl])
        .expect("CAP REQ");
    lib.until("CAP ACK", |m| {
        matches!(&m.command, Command::CAP(_, CapSubCommand::ACK, _, _))
    })
    .await;
    let plain = |user: &str, pw: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
    };
    let is =
        |r: Response| move |m: &Message| matches!(m.command, Command::Response(x, _) if x == r);
    let cont = |m: &Message| matches!(&m.command, Command::AUTHENTICATE(s) if s == "+");
    lib.client.send_sasl_plain().expect("AUTHENTICATE PLAIN");
    lib.until("AUTHENTICATE +", cont).await;
    lib.client
        .send_sasl(plain("libuser", "not the password"))
        .expect("AUTHENTICATE");
    lib.until("904", is(Response::ERR_SASLFAIL)).await;
    lib.client.send_sasl_plain().expect("AUTHENTICATE PLAIN");
    lib.until("AUTHENTICATE +", cont).await;
    lib.client
        .send_sasl(plain("libuser", password))
        .expect("AUTHENTICATE");
    let (_, before) = lib.until("903", is(Response::RPL_SASLSUCCESS)).await;
    let logged_in = before
        .iter()
        .find_map(|m| match &m.command {
            Command::Response(Response::RPL_LOGGEDIN, args) => args.get(2).cloned(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{}: no 900 before 903: {before:?}", lib.label));
    assert_eq!(logged_in, "libuser", "{}", lib.label);
    lib.register_and_autojoin().await;
    lib.client.send_quit("bye").expect("QUIT");
    lib.until_end().await;
}

fn irc_crate_logs_in_with_sasl_plain(io: Io) {
    let configure = |c: &mut shardline_chat::Config| {
        c.accounts.test_cheap_hashes = true;
        c.accounts.registration = shardline_chat::config::Registration::Open;
    };
    each_server_with(io, configure, |srv| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(sasl_session(srv));
    });
}

/// An operator and a `+w` user, both library clients on different shards:
/// WALLOPS reaches the `+w` user, KILL disconnects it (the library sees the
/// KILL line, then the end), and WHOWAS then shows it.
async fn operator_session(srv: &TestServer) {
    let mut op = connect(srv, "libop").await;
    op.register_and_autojoin().await;
    let mut user = connect_elsewhere(srv, "libwall", op.shard).await;
    user.register_and_autojoin().await;
    let is =
        |r: Response| move |m: &Message| matches!(m.command, Command::Response(x, _) if x == r);

    user.client
        .send(Command::UserMODE(
            "libwall".into(),
            vec![Mode::Plus(UserMode::Wallops, None)],
        ))
        .expect("MODE");
    let (mode, _) = user
        .until("MODE +w", |m| matches!(m.command, Command::UserMODE(..)))
        .await;
    assert_eq!(
        mode.command,
        Command::UserMODE("libwall".into(), vec![Mode::Plus(UserMode::Wallops, None)]),
        "{}",
        user.label
    );
    op.client
        .send(Command::OPER("admin".into(), "hunter2".into()))
        .expect("OPER");
    op.until("381", is(Response::RPL_YOUREOPER)).await;
    op.client
        .send(Command::WALLOPS("from the library".into()))
        .expect("WALLOPS");
    let (wallops, _) = user
        .until("WALLOPS", |m| matches!(m.command, Command::WALLOPS(_)))
        .await;
    assert_eq!(wallops.command, Command::WALLOPS("from the library".into()));
    assert_eq!(wallops.prefix, Some(user_prefix("libop")), "{}", user.label);

    op.client
        .send(Command::KILL("libwall".into(), "library test".into()))
        .expect("KILL");
    let (kill, _) = user
        .until("KILL", |m| matches!(m.command, Command::KILL(..)))
        .await;
    assert_eq!(
        kill.command,
        Command::KILL("libwall".into(), "library test".into())
    );
    let rest = user.until_end().await;
    let error = rest.iter().find_map(|m| match &m.command {
        Command::ERROR(text) => Some(text.clone()),
        _ => None,
    });
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("Killed (libop (library test))")),
        "{}: {rest:?}",
        user.label
    );
    let (quit, _) = op
        .until("QUIT", |m| matches!(m.command, Command::QUIT(_)))
        .await;
    assert_eq!(
        quit.command,
        Command::QUIT(Some("Killed (libop (library test))".into()))
    );

    op.client
        .send(Command::WHOWAS("libwall".into(), None, None))
        .expect("WHOWAS");
    let (end, before) = op.until("369", is(Response::RPL_ENDOFWHOWAS)).await;
    let user_line = before
        .iter()
        .find_map(|m| match &m.command {
            Command::Response(Response::RPL_WHOWASUSER, args) => Some(args.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{}: no 314: {before:?}", op.label));
    assert_eq!(
        user_line,
        [
            "libop",
            "libwall",
            "~libwall",
            "127.0.0.1",
            "*",
            "libwall via the irc crate"
        ],
        "{}",
        op.label
    );
    assert!(matches!(end.command, Command::Response(_, ref a) if a[1] == "libwall"));
    op.client.send_quit("done").expect("QUIT");
    op.until_end().await;
}

fn irc_crate_operator_commands(io: Io) {
    let configure = |c: &mut shardline_chat::Config| {
        c.operators = vec![shardline_chat::config::Operator {
            name: "admin".into(),
            password: "hunter2".into(),
            host: "*".into(),
        }];
    };
    each_server_with(io, configure, |srv| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(operator_session(srv));
    });
}

shardline::per_backend! {
    irc_crate_operator_commands => irc_crate_operator_commands;
    irc_crate_clients_chat_across_shards => irc_crate_clients_chat_across_shards;
    irc_crate_logs_in_with_sasl_plain => irc_crate_logs_in_with_sasl_plain;
}
