//! [`Outbox`]: the messages a full mailbox handed back, kept in order until the
//! shard is told it may retry.

use std::collections::VecDeque;

use crate::{
    handler::{Ctx, Handler, ShardId},
    shard::mailbox::Full,
};

/// Per-destination queues of messages that met [`Full`], owned by a handler.
///
/// [`Ctx::post`] never drops a message: a full mailbox hands it back. A handler
/// that must deliver everything, in order, posts through an `Outbox` instead: a
/// message goes straight into the mailbox when nothing is waiting for that shard,
/// and otherwise queues behind what is, so per-destination order is kept. Call
/// [`flush`](Outbox::flush) from [`Handler::on_mailbox_ready`], which the
/// framework calls once the destination has room again.
///
/// The outbox itself is unbounded: [`len`](Outbox::len) and
/// [`pending`](Outbox::pending) let the handler apply its own limit (stop reading
/// from the connections that produce the messages, say) while a shard is behind.
#[derive(Debug)]
pub struct Outbox<M> {
    queues: Vec<VecDeque<M>>,
    len: usize,
}

impl<M> Default for Outbox<M> {
    fn default() -> Self {
        Outbox {
            queues: Vec::new(),
            len: 0,
        }
    }
}

impl<M: Send + 'static> Outbox<M> {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Posts `msg` to `to`, or keeps it (after anything already kept for `to`)
    /// if the mailbox is full or earlier messages are still waiting. Returns true
    /// if it went straight into the mailbox.
    pub fn post<H: Handler<Msg = M>>(&mut self, ctx: &mut Ctx<'_, H>, to: ShardId, msg: M) -> bool {
        if self.queues.get(to.0).is_some_and(|q| !q.is_empty()) {
            self.keep(to, msg);
            return false;
        }
        match ctx.post(to, msg) {
            Ok(()) => true,
            Err(Full(msg)) => {
                self.keep(to, msg);
                false
            }
        }
    }

    /// Posts a clone of `msg` to every other shard through [`post`](Outbox::post).
    pub fn broadcast<H: Handler<Msg = M>>(&mut self, ctx: &mut Ctx<'_, H>, msg: M)
    where
        M: Clone,
    {
        let me = ctx.shard_id();
        for to in (0..ctx.shards()).map(ShardId).filter(|&s| s != me) {
            self.post(ctx, to, msg.clone());
        }
    }

    /// Posts what is kept for `to`, in order, until the mailbox is full again.
    /// Returns how many went out. Call it from `on_mailbox_ready(to)`.
    pub fn flush<H: Handler<Msg = M>>(&mut self, ctx: &mut Ctx<'_, H>, to: ShardId) -> usize {
        let Some(queue) = self.queues.get_mut(to.0) else {
            return 0;
        };
        let mut sent = 0;
        while let Some(msg) = queue.pop_front() {
            if let Err(Full(msg)) = ctx.post(to, msg) {
                queue.push_front(msg);
                break;
            }
            sent += 1;
        }
        self.len -= sent;
        sent
    }

    /// Messages kept for every destination.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Messages kept for `to`.
    pub fn pending(&self, to: ShardId) -> usize {
        self.queues.get(to.0).map_or(0, VecDeque::len)
    }

    fn keep(&mut self, to: ShardId, msg: M) {
        if self.queues.len() <= to.0 {
            self.queues.resize_with(to.0 + 1, VecDeque::new);
        }
        self.queues[to.0].push_back(msg);
        self.len += 1;
    }
}
