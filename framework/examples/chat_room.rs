//! A line-based chat room over every shard: each line a client sends reaches every
//! client on every shard (the sender too). Shows per-connection state (`type Conn`:
//! nick, idle timer), typed timers (`type Timer`: an idle kick per connection, a
//! periodic "N users online" notice) and crossing shards through the mailboxes with
//! an [`Outbox`], which keeps lines in order behind a `Full` mailbox and re-posts
//! them from `on_mailbox_ready`.
//!
//! ```text
//! cargo run --release -p shardline --example chat_room -- --addr 127.0.0.1:7100 --shards 2
//! nc 127.0.0.1 7100   # first line is your nick, then chat; try two terminals
//! ```
//! With `--accept handoff` connections alternate between shards (the welcome says which).

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use shardline::{
    cli::ServerArgs, Bytes, CloseReason, ConnId, Ctx, Handler, Listener, Origin, Outbox, Server,
    ShardId, TimerId,
};

/// Shardline chat room: the first line is the nick, every later line goes to all.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7100")]
    addr: SocketAddr,
    /// Disconnect a client silent for this many seconds.
    #[arg(long, default_value_t = 300)]
    idle_secs: u64,
    /// Tell everyone how many users are online every this many seconds.
    #[arg(long, default_value_t = 30)]
    notice_secs: u64,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Clone)]
enum Msg {
    /// A line to show to every client of the receiving shard.
    Line(Bytes),
    /// How many named users a shard has now.
    Online { shard: ShardId, users: usize },
}

#[derive(Clone)]
enum Timer {
    Idle(ConnId),
    Notice,
}

struct Conn {
    nick: Option<String>,
    idle: TimerId,
}

#[derive(Default)]
struct Room {
    idle: Duration,
    notice: Duration,
    /// Local connections that have a nick.
    members: HashSet<ConnId>,
    /// Named users per shard, as last announced.
    online: Vec<usize>,
    outbox: Outbox<Msg>,
}

impl Room {
    /// Sends `line` to this shard's members and, through the outbox, to every other shard.
    fn say(&mut self, ctx: &mut Ctx<'_, Self>, line: String) {
        let line = Bytes::from(line);
        self.deliver(ctx, &line);
        self.outbox.broadcast(ctx, Msg::Line(line));
    }

    fn deliver(&self, ctx: &mut Ctx<'_, Self>, line: &Bytes) {
        for &c in &self.members {
            let _ = ctx.send_shared(c, line); // Err: that client is already closing
        }
    }
}

impl Handler for Room {
    type Msg = Msg;
    type Timer = Timer;
    type Conn = Conn;
    type Listener = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.online = vec![0; ctx.shards()];
        ctx.set_interval(self.notice, Timer::Notice);
    }

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _: Listener<'_, ()>,
        _: SocketAddr,
    ) -> Conn {
        let _ = ctx.send(conn, b"* nick?\n");
        let idle = ctx.set_timer(self.idle, Timer::Idle(conn));
        Conn { nick: None, idle }
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        state: &mut Conn,
        data: &[u8],
    ) -> usize {
        let mut used = 0;
        while let Some(n) = data[used..].iter().position(|&b| b == b'\n') {
            let raw = &data[used..used + n];
            used += n + 1;
            let text = String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(raw));
            ctx.cancel_timer(state.idle);
            state.idle = ctx.set_timer(self.idle, Timer::Idle(conn));
            match &state.nick {
                Some(nick) => self.say(ctx, format!("<{nick}> {text}\n")),
                None if text.trim().is_empty() => {} // still no nick
                None => {
                    let nick = text.trim().to_owned();
                    let hi = format!("* welcome {nick} (shard {})\n", ctx.shard_id());
                    let _ = ctx.send(conn, hi.as_bytes());
                    self.say(ctx, format!("* {nick} joined\n"));
                    self.members.insert(conn);
                    state.nick = Some(nick);
                }
            }
        }
        // The rest (no newline yet) is kept for the next call; a line longer than
        // `Limits::max_input` closes the connection (`CloseReason::InputBufferFull`).
        used
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, state: Conn, _: &CloseReason) {
        ctx.cancel_timer(state.idle);
        if let Some(nick) = state.nick {
            self.members.remove(&conn);
            self.say(ctx, format!("* {nick} left\n"));
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _: TimerId, timer: Timer) {
        match timer {
            Timer::Idle(conn) => {
                let _ = ctx.send(conn, b"* idle too long, bye\n");
                ctx.close(conn);
            }
            Timer::Notice => {
                // Tell the others how many are here; their counts are a period old.
                let (shard, users) = (ctx.shard_id(), self.members.len());
                self.online[shard.0] = users;
                self.outbox.broadcast(ctx, Msg::Online { shard, users });
                let total: usize = self.online.iter().sum();
                self.deliver(ctx, &Bytes::from(format!("* {total} users online\n")));
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, _: Origin, msg: Msg) {
        match msg {
            Msg::Line(line) => self.deliver(ctx, &line),
            Msg::Online { shard, users } => self.online[shard.0] = users,
        }
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, Self>, to: ShardId) {
        self.outbox.flush(ctx, to);
    }
}

fn main() -> anyhow::Result<()> {
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logger = tracing_subscriber::fmt().with_env_filter(log);
    logger.with_ansi(ansi).init();
    let args = Args::parse();
    let [idle, notice] = [args.idle_secs, args.notice_secs].map(|s| Duration::from_secs(s.max(1)));
    let server = args
        .server
        .apply(Server::builder().listen(args.addr))
        .build(move |_shard| Room {
            idle,
            notice,
            ..Room::default()
        })
        .context("configuring server")?;
    if args.server.print_plan_if_asked(&server)? {
        return Ok(());
    }
    server.run().context("running chat room")?;
    Ok(())
}
