//! A bounded per-destination queue in front of the mailboxes.
//!
//! `Ctx::post` hands a message back as `Full` when the pair queue is full. Order
//! matters (a client's requests, a channel's events), so once one message to a
//! shard waits here, every later one to that shard waits behind it, and
//! `on_mailbox_ready` drains the queue in order. The queue is bounded for what
//! clients *start*: [`Outbox::has_room`] is checked before a client's request or a
//! channel's fan-out is accepted, and a refusal disconnects that client ("Server
//! busy") — nothing is ever dropped silently. Consequences of work already accepted
//! (replies, acks, membership changes, quit notices) are always queued: each
//! accepted request produces a bounded number of them, so the queue stays bounded
//! by roughly `capacity × shards` even then.

use crate::shard::ChatShard;
use std::collections::VecDeque;

use shardline::{Ctx, Full, ShardId};

use crate::mail::ChatMsg;

/// Messages waiting for full mailboxes, one queue per destination shard.
#[derive(Debug)]
pub struct Outbox {
    queues: Vec<VecDeque<ChatMsg>>,
    capacity: usize,
}

impl Outbox {
    /// An empty outbox for `shards` destinations, each admitting new work while it
    /// holds fewer than `capacity` messages.
    pub fn new(shards: usize, capacity: usize) -> Outbox {
        Outbox {
            queues: (0..shards).map(|_| VecDeque::new()).collect(),
            capacity,
        }
    }

    /// Whether new work may be sent to `to`.
    pub fn has_room(&self, to: usize) -> bool {
        self.queues[to].len() < self.capacity
    }

    /// Messages waiting for `to`.
    pub fn waiting(&self, to: usize) -> usize {
        self.queues[to].len()
    }

    /// Posts `msg` to `to`, or queues it behind what already waits (order kept).
    pub fn send(&mut self, ctx: &mut Ctx<'_, ChatShard>, to: usize, msg: ChatMsg) {
        let queue = &mut self.queues[to];
        if !queue.is_empty() {
            queue.push_back(msg);
            return;
        }
        if let Err(Full(msg)) = ctx.post(ShardId(to), msg) {
            queue.push_back(msg);
        }
    }

    /// The mailbox to `to` has room again: post what waits, in order, until it is
    /// full again (another `on_mailbox_ready` follows then).
    pub fn drain(&mut self, ctx: &mut Ctx<'_, ChatShard>, to: usize) {
        let queue = &mut self.queues[to];
        while let Some(msg) = queue.pop_front() {
            if let Err(Full(msg)) = ctx.post(ShardId(to), msg) {
                queue.push_front(msg);
                return;
            }
        }
    }
}
