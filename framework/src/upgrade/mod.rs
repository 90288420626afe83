//! Zero-downtime upgrades: a new process takes over the listening sockets of the
//! running one, which stops accepting, finishes what it has and exits — no
//! connection refused or reset on the way.
//!
//! # Design
//!
//! The listening sockets themselves move, never a copy of their addresses: the
//! new process adopts the very same sockets (file descriptions), so every
//! connection the kernel has queued on them, or queues while the two processes
//! overlap, is accepted by one of them. The alternative — the new process
//! joining the old one's SO_REUSEPORT group with sockets of its own, then the old
//! one closing its sockets — resets every connection still queued on a closed
//! socket, and nothing short of a BPF program can stop the group from routing new
//! connections to the sockets about to close.
//!
//! Two ways to get the sockets, one way to use them:
//!
//! - **Handover over a Unix socket** (any supervisor, or none). The running
//!   process serves a control socket ([`UpgradeSocket::serve`], the apps'
//!   `--upgrade-socket PATH`). The new process connects to it
//!   ([`Takeover::connect`], the apps' `--upgrade-from PATH`), receives every
//!   listening socket (SCM_RIGHTS), starts with them
//!   ([`ServerBuilder::inherit_listeners`]) and, once every shard serves, says so
//!   ([`Takeover::finish`]). Only then does the old process stop accepting
//!   ([`ShutdownHandle::release_listeners`]): its shards and handoff acceptor stop
//!   watching, serve what their backlogs already held, and close their
//!   descriptors *without* shutting the sockets down (a `shutdown(2)` on a
//!   listening socket stops it for every process holding it). It confirms, and
//!   the application drains as it sees fit (the proxy: graceful shutdown; the
//!   chat: keeps its sessions until they leave or a deadline). If the new
//!   process fails before it says it is ready — a bad configuration, a port it
//!   cannot bind, a crash — the old one notices the closed connection and keeps
//!   serving as if nothing happened: an upgrade can be retried.
//! - **systemd socket activation** ([`InheritedListeners::from_systemd`]):
//!   `LISTEN_PID`/`LISTEN_FDS` (the `sd_listen_fds` protocol), one socket per
//!   `ListenStream=`. systemd keeps the sockets across restarts, so a restart
//!   refuses nothing either (connections wait in the backlog while no process
//!   accepts); the handover above on top of it gives an overlap instead of a
//!   gap. Sockets from systemd are never shut down by the server either.
//!
//! ## The handover protocol
//!
//! One `SOCK_SEQPACKET` Unix connection (message boundaries kept; one file
//! descriptor per message), text messages, version 1. The old process checks the
//! peer's credentials (`SO_PEERCRED`: same user, or root) and the control socket
//! file is mode 0600.
//!
//! ```text
//! new → old   shardline-upgrade 1 hello pid=<new pid>
//! old → new   shardline-upgrade 1 listeners pid=<old pid> count=<n>
//! old → new   listener <index> <address>          (n times, each with one fd)
//! new → old   release-state                        (optional, see below)
//!             … the old process lets go of its application state …
//! old → new   state-released
//!             … the new process starts its shards on them …
//! new → old   ready pid=<new pid>
//!             … the old process stops accepting (release) …
//! old → new   released <participants released>/<participants>
//! ```
//!
//! Either side may send `error <text>` instead and close.
//!
//! ### Application state
//!
//! Some state can be held by one process only: the chat's data directory is
//! locked by the process that writes it. The new process asks for it
//! (`release-state`, [`Takeover::request_state`]) after receiving the sockets
//! and before opening it; the old process runs the application's
//! [`HandoverState::release`] (the chat writes out and syncs every store, stops
//! its writers and unlocks the directory; its sessions go on from memory) and
//! answers `state-released`, or `error` to refuse. If the upgrade then fails
//! before `ready`, the old process runs [`HandoverState::reclaim`] and serves
//! as before. Every wait is bounded:
//! the old process waits [`UpgradeOptions::ready_timeout`] for `ready` (and keeps
//! serving if it never comes), the new one [`UpgradeOptions::io_timeout`] for
//! each of the old one's messages. One handover per old process: afterwards it
//! no longer serves the control socket. The new process, when it serves a
//! control socket itself, binds it under a temporary name and renames it over
//! the path — atomically, so the next upgrade finds the newest process; the old
//! process removes the path at exit only if it is still its own.
//!
//! ## Matching sockets to listeners
//!
//! Every socket arrives with the address it is bound to (checked against
//! `getsockname`; it must be a listening TCP socket). The new process's
//! configured addresses are matched *exactly* (`0.0.0.0:8080` takes the sockets
//! bound to `0.0.0.0:8080`); an address with no inherited socket is bound fresh
//! as usual; inherited sockets whose address is no longer configured are closed
//! (the old process still holds them until it stops accepting, so that address
//! goes away at the end of the upgrade, as configured).
//!
//! With [`AcceptMode::ReusePort`](crate::AcceptMode::ReusePort) the old process
//! has one socket per shard per address, each with its own accept queue; all of
//! them are handed over and all are adopted — a socket left behind would keep
//! receiving its share of connections and reset them when the old process exits.
//! The new process may have another shard count `m` than the `k` sockets per
//! address: with `k >= m` shard `s` accepts on sockets `s, s+m, s+2m, …`; with
//! `k < m` shard `s` shares socket `s mod k` with the others that map to it (they
//! race to accept; the loser sees EAGAIN). In
//! [`AcceptMode::Exclusive`](crate::AcceptMode::Exclusive) every shard watches
//! every inherited socket of the address; in
//! [`AcceptMode::Handoff`](crate::AcceptMode::Handoff) the acceptor accepts on all
//! of them. So the accept mode and shard count may change across an upgrade, and
//! the next upgrade hands over the same sockets again. Under systemd (one socket
//! per address) `--accept exclusive` or `handoff` fits best: reuseport would make
//! every shard share the one socket.
//!
//! ## What an upgrade does not do
//!
//! It moves listening sockets only. Established connections stay with the old
//! process until it closes them; state (a chat's channels, a proxy's pools) is
//! not transferred. Two processes run side by side for a while, each with its own
//! state.
//!
//! [`ServerBuilder::inherit_listeners`]: crate::ServerBuilder::inherit_listeners
//! [`ShutdownHandle::release_listeners`]: crate::ShutdownHandle::release_listeners

mod handover;
mod inherit;
mod msg;
mod systemd;

pub use self::{
    handover::{HandedOver, HandoverState, Takeover, UpgradeOptions, UpgradeSocket},
    inherit::InheritedListeners,
    systemd::notify,
};
