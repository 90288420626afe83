//! IRCv3 `labeled-response`: a client that negotiated it (and `batch`, which
//! the spec requires) and sends `@label=X CMD …` gets every response to that
//! command tagged: one line carries `label=X`; several come in a
//! `BATCH +ref labeled-response` whose opening line carries the label (each
//! line inside tagged `batch=ref`, a nested batch's own lines keeping theirs),
//! closed by `BATCH -ref`; none draws `@label=X ACK`.
//!
//! # Which lines are the response
//!
//! A command's answers can come from other shards, after it returned (a
//! request's reply, the client's own JOIN or echoed PRIVMSG delivered by a
//! channel's owner, a 301 from the recipient's shard). The client's own shard
//! knows when they are all in: when the client is *settled* — every request
//! answered and every delivery made on its behalf acknowledged (the PING
//! barrier, see the crate docs). So a labelled command is a barrier on both
//! sides:
//!
//! - it starts only once the client is settled (else `Flow::Retry`): nothing
//!   still coming belongs to an earlier command;
//! - once it has run, the client's next line waits (`Flow::Park`) until it is
//!   settled again; then the response is closed (the single line, `BATCH -`,
//!   or `ACK`) and the next line runs.
//!
//! In between, the lines sent *as answers to this client's commands* — the
//! numerics and lines of the command paths (`numeric`, `send_line`,
//! `send_numerics`), replies from owners, the `echo-message` and `setname`
//! echoes, and channel deliveries whose source is this client — go through
//! [`respond`]. Everything else — other users' messages, channel events they
//! caused, NICK/QUIT/ACCOUNT/AWAY/SETNAME/CHGHOST notices, MONITOR notices,
//! nick protection warnings, PING — is sent as usual: without the label and
//! outside the batch, even while it is open. A
//! private message to oneself is delivered unlabelled too; only its echo is the
//! response (as the spec asks).
//!
//! # Memory
//!
//! A client never sending a label costs one empty pointer. While a labelled
//! command runs, at most one line is held back (until a second one shows it
//! needs a batch, which is then opened and the rest streamed): never a whole
//! response. A label longer than 64 bytes (the spec's limit) or empty is
//! ignored: the command runs unlabelled.

use std::cell::RefCell;

use bytes::Bytes;
use shardline::{Ctx, SendError};

use crate::{
    client::Client,
    commands::Flow,
    mail::Caps,
    message::{escape_tag_value, Message},
    shard::ChatShard,
};

/// Longest label value honoured, bytes.
pub const MAX_LABEL: usize = 64;

/// What has gone out of a labelled response so far.
#[derive(Debug)]
enum Held {
    /// No line yet.
    Nothing,
    /// One line, held back: it is the whole response if no other comes.
    One(Vec<u8>),
    /// The batch is open; further lines go straight out tagged with it.
    Batch,
}

/// The response of a client's labelled command in progress.
#[derive(Debug)]
pub struct Labelled {
    /// `label=<value>`, escaped.
    tag: Box<str>,
    /// The batch reference, if the response needs a batch.
    batch: Box<str>,
    held: RefCell<Held>,
    /// The command has run: the response ends once the client is settled.
    ran: bool,
}

impl Labelled {
    fn new(value: &str, batch: String) -> Labelled {
        let mut tag = String::from("label=");
        escape_tag_value(value, &mut tag);
        Labelled {
            tag: tag.into(),
            batch: batch.into(),
            held: RefCell::new(Held::Nothing),
            ran: false,
        }
    }

    /// Takes `bytes` (whole lines) as part of the response: returns what to
    /// send now.
    fn take(&self, server: &str, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut held = self.held.borrow_mut();
        let batch_tag = format!("batch={}", self.batch);
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            match &mut *held {
                Held::Nothing => *held = Held::One(line.to_vec()),
                Held::One(first) => {
                    let open = format!(
                        "@{} :{server} BATCH +{} labeled-response\r\n",
                        self.tag, self.batch
                    );
                    out.extend_from_slice(open.as_bytes());
                    in_batch(&batch_tag, first, &mut out);
                    in_batch(&batch_tag, line, &mut out);
                    *held = Held::Batch;
                }
                Held::Batch => in_batch(&batch_tag, line, &mut out),
            }
        }
        out
    }

    /// What closes the response.
    fn finish(&self, server: &str) -> Vec<u8> {
        match &*self.held.borrow() {
            Held::Nothing => format!("@{} :{server} ACK\r\n", self.tag).into_bytes(),
            Held::One(line) => {
                let mut out = Vec::with_capacity(line.len() + self.tag.len() + 2);
                with_tag(&self.tag, line, &mut out);
                out
            }
            Held::Batch => format!(":{server} BATCH -{}\r\n", self.batch).into_bytes(),
        }
    }
}

/// Appends `line` with `tag` added first among its tags.
fn with_tag(tag: &str, line: &[u8], out: &mut Vec<u8>) {
    out.push(b'@');
    out.extend_from_slice(tag.as_bytes());
    match line.strip_prefix(b"@") {
        Some(rest) => {
            out.push(b';');
            out.extend_from_slice(rest);
        }
        None => {
            out.push(b' ');
            out.extend_from_slice(line);
        }
    }
}

/// Appends `line` tagged with the labelled response's batch, unless it
/// already belongs to a (nested) batch of its own.
fn in_batch(batch_tag: &str, line: &[u8], out: &mut Vec<u8>) {
    let own = line.strip_prefix(b"@").is_some_and(|rest| {
        let tags = rest.split(|&b| b == b' ').next().unwrap_or_default();
        tags.split(|&b| b == b';').any(|t| t.starts_with(b"batch="))
    });
    if own {
        out.extend_from_slice(line);
    } else {
        with_tag(batch_tag, line, out);
    }
}

/// Sends `bytes` (whole lines) to client `c` as a response to its current
/// command: part of its labelled response if one is in progress.
pub fn respond(
    ctx: &mut Ctx<'_, ChatShard>,
    c: &Client,
    server: &str,
    bytes: &[u8],
) -> Result<(), SendError> {
    match &c.label {
        None => crate::websocket::send(ctx, c, bytes),
        Some(l) => {
            let out = l.take(server, bytes);
            if out.is_empty() {
                Ok(())
            } else {
                crate::websocket::send(ctx, c, &out)
            }
        }
    }
}

/// [`respond`] for a shared rendering (sent shared when no label is in
/// progress).
pub fn respond_shared(
    ctx: &mut Ctx<'_, ChatShard>,
    c: &Client,
    server: &str,
    bytes: &Bytes,
) -> Result<(), SendError> {
    match &c.label {
        None => crate::websocket::send_shared(ctx, c, bytes),
        Some(_) => respond(ctx, c, server, bytes),
    }
}

impl ChatShard {
    /// Before client `id`'s command `msg` runs: starts its labelled response
    /// if it carries a label the client may use. `Some(Flow::Retry)`: wait
    /// until the client's earlier commands are done.
    pub(crate) fn label_begin(&mut self, id: u64, msg: &Message<'_>) -> Option<Flow> {
        let needs = Caps::LABELED_RESPONSE;
        let c = self.clients.get(&id)?;
        if !c.caps.has(needs) || !c.caps.has(Caps::BATCH) || c.label.is_some() {
            // Already begun: the line is being run again after a Retry.
            return None;
        }
        let value = msg.tags.iter().find(|t| t.key == "label")?.value.clone();
        if value.is_empty() || value.len() > MAX_LABEL {
            return None;
        }
        if !c.settled() {
            return Some(Flow::Retry);
        }
        let n = self.next_batch();
        let batch = format!("l{}x{n}", self.me);
        let c = self.clients.get_mut(&id)?;
        c.label = Some(Box::new(Labelled::new(&value, batch)));
        None
    }

    /// After client `id`'s command ran with `flow`: a labelled response ends
    /// now if everything the command started is done, else the client's next
    /// line waits for that (see [`ChatShard::label_end`]).
    pub(crate) fn label_ran(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, flow: Flow) -> Flow {
        let Some(c) = self.clients.get_mut(&id) else {
            return flow;
        };
        let Some(l) = c.label.as_mut() else {
            return flow;
        };
        if flow == Flow::Retry {
            return flow;
        }
        l.ran = true;
        if c.settled() {
            self.label_end(ctx, id);
            flow
        } else {
            Flow::Park
        }
    }

    /// Client `id` is settled: closes its labelled response if its command
    /// has run.
    pub(crate) fn label_end(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if !c.label.as_ref().is_some_and(|l| l.ran) {
            return;
        }
        let Some(l) = c.label.take() else {
            return;
        };
        if c.alive {
            let _ = crate::websocket::send(ctx, c, &l.finish(self.info.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(v: &str) -> Labelled {
        Labelled::new(v, "b1".into())
    }

    #[test]
    fn none_one_many() {
        let l = lab("x");
        assert_eq!(l.finish("srv"), b"@label=x :srv ACK\r\n");

        let l = lab("x y");
        assert!(l.take("srv", b":srv 001 a :hi\r\n").is_empty(), "held");
        assert_eq!(l.finish("srv"), b"@label=x\\sy :srv 001 a :hi\r\n");

        let l = lab("x");
        assert!(l.take("srv", b"@time=t :a!b@c JOIN #c\r\n").is_empty());
        let out = l.take("srv", b":srv 353 a = #c :a\r\n:srv 366 a #c :End\r\n");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "@label=x :srv BATCH +b1 labeled-response\r\n\
             @batch=b1;time=t :a!b@c JOIN #c\r\n\
             @batch=b1 :srv 353 a = #c :a\r\n\
             @batch=b1 :srv 366 a #c :End\r\n"
        );
        // A nested batch: its opening and closing lines join ours, its
        // content keeps its own.
        let out = l.take(
            "srv",
            b":srv BATCH +h1 chathistory #c\r\n@batch=h1;msgid=m :x PRIVMSG #c :hi\r\n:srv BATCH -h1\r\n",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "@batch=b1 :srv BATCH +h1 chathistory #c\r\n\
             @batch=h1;msgid=m :x PRIVMSG #c :hi\r\n\
             @batch=b1 :srv BATCH -h1\r\n"
        );
        assert_eq!(l.finish("srv"), b":srv BATCH -b1\r\n");
    }
}
