//! `shardline-proxy`: an L4 (TCP) and HTTP/1.1 load-balancing reverse proxy on
//! Shardline.
//!
//! # Architecture
//!
//! Every listener of the configuration is served by shards, each a pinned thread
//! running one handler instance ([`shard::ProxyShard`], with an L4 side, [`tcp`],
//! and an HTTP side, [`http`]). A shard
//! owns everything a proxied connection touches:
//!
//! - **Client connections**: accepted by this shard's listener (or handed to it);
//!   they never move.
//! - **Upstream connections**: opened by this shard with `Ctx::connect`, to a
//!   backend its balancer picked. A client connection and its upstream
//!   connection are always on the same shard, so pairing them needs no map:
//!   each connection's framework-kept state (`Handler::Conn`,
//!   [`shard::ProxyConn`]) is its role (client of session *k*, upstream *u*,
//!   health probe) and every event is routed on it; the session's / upstream's
//!   record names the other side's `ConnId`. No lock, no atomic, no
//!   cross-shard message is on the data path.
//! - **Keep-alive pools** (HTTP): each shard keeps its own idle upstream
//!   connections per backend (LIFO, bounded by `max_idle_per_backend`, closed after
//!   `upstream_idle_ms`). A pooled connection is only ever reused by the shard that
//!   opened it; pools are never shared, so there is nothing to synchronise and an
//!   idle connection costs one fd and a few words.
//! - **Balancer state** ([`balance`]: cursors, smooth-WRR weights, the
//!   per-backend active counts least-connections and power-of-two-choices use,
//!   the hash ring) is per shard too: each shard balances its own traffic, and
//!   shards start at different offsets so they do not move in lockstep. Only
//!   backend health is decided once for the server (below).
//!
//! # Backpressure, both ways
//!
//! The framework bounds every outbound queue and tells the handler when a queue
//! passes its high-water mark (`on_backpressure`) and when it falls below its
//! low-water mark (`on_drained`). The proxy turns that into flow control across
//! the pair: when the queue *to the upstream* is backpressured it pauses reading
//! the *client* (the client's bytes stay in the kernel, and TCP slows the client
//! down), and resumes on drained; symmetrically, a backpressured queue *to the
//! client* pauses reading the *upstream*. So what the proxy holds per connection
//! is bounded by the high-water mark plus one read, whatever the speeds of the
//! two peers. The HTTP side also bounds its own buffer of not-yet-processed client
//! bytes (pipelined requests wait there): past `max_header_bytes` + 64 KiB it stops
//! reading the client until the current exchange is done.
//!
//! While an upstream connection is being established the client is not read
//! (L4), or its body is not forwarded (HTTP): bytes queued to a connect that then
//! fails would be lost, and a retry on another backend must start clean.
//!
//! # HTTP exchanges
//!
//! One exchange per client connection at a time: a request is parsed strictly
//! ([`http::head`]), routed (host + longest path prefix → pool), given an upstream
//! connection (pooled, or a new connect), its head rewritten (hop-by-hop headers
//! removed, `X-Forwarded-For` / `X-Forwarded-Proto` added, framing regenerated)
//! and its body streamed through: Content-Length bodies as they come, chunked
//! bodies through our own streaming decoder ([`http::chunked`]), re-encoded, never
//! buffered whole. Pipelined requests wait in the client's input buffer until the
//! response before them is complete, so responses go back in order. A request
//! whose framing is ambiguous is answered 400 and the connection closed before any
//! upstream connection is chosen for it.
//!
//! An upgrade request (`Connection: upgrade` + `Upgrade`, no content, not
//! `h2c`) keeps those fields and gets a fresh upstream connection; a `101
//! Switching Protocols` to it hands the client and that upstream to the L4
//! side as a relaying session (both connections' states are rewritten in
//! place: the client's through `Ctx::conn_state`, the upstream's once the
//! callback that got the 101 returns), so an upgraded connection is relayed,
//! spliced, half-closed and shut down exactly as an L4 session, with
//! `upgrade_idle_ms` as its idle timeout.
//!
//! # Idle timeouts of relayed connections
//!
//! L4 sessions (`tcp_idle_ms`) and upgraded connections (`upgrade_idle_ms`)
//! are closed after that long without a byte from either side. Spliced bytes
//! never reach the handler, so nothing is stamped on the data path: one timer
//! per session looks, every quarter timeout (at most every minute), at the
//! bytes the framework received from both sockets (`Ctx::bytes_received`,
//! spliced ones included); unchanged for a whole timeout, the session is
//! closed ([`tcp`]).
//!
//! # Health: one checker per pool, state through the mailboxes
//!
//! Only pools with a `[pool.NAME.health]` section are checked; the backends of
//! other pools are always up. The protocol ([`health`]):
//!
//! - **One checker.** A pool is checked by one shard, chosen by a hash of its
//!   name (its *checker*; [`health::checker_of`]),
//!   once for the whole server, not once per shard. The checker alone decides
//!   whether a backend is up: it keeps, per backend, the state and the counts of
//!   consecutive successes and failures. Every `interval_ms` it probes each
//!   backend (a TCP connect, or an HTTP `GET path` whose status must be 2xx,
//!   within `timeout_ms`); a probe still in flight is not doubled.
//! - **Transitions.** An up backend goes down after `fall` consecutive failures
//!   (probes or passive reports); a down backend comes up after `rise`
//!   consecutive successful probes (only probes: a down backend gets no traffic
//!   to judge it by). A success resets the failure count and vice versa. Every
//!   shard starts with every backend up (serving at once; a dead backend is
//!   found within `fall` probes or failed requests).
//! - **Broadcast.** On a transition the checker applies it to its own view and
//!   posts `Health { pool, backend, up }` to every other shard. Each shard's
//!   balancers skip the backends its view says are down.
//! - **Passive reports.** Every shard watches its own traffic: a failed or
//!   timed-out connect, a response timeout (which runs only once the whole
//!   request was sent), a backend that stops reading the request body, an
//!   upstream that dies before answering, or a 5xx response is a failure; a
//!   client slow with its body is never one (it gets 408 at `client_body_ms`); a response below 500 (or an
//!   established TCP relay) a success. Failures are posted to the checker as
//!   `Passive { ok: false }`. To keep the data path free of messages, a success
//!   is posted only when it follows a failure this shard reported for that
//!   backend (it resets the checker's count); so "consecutive" is as the checker
//!   hears it: one shard's failures count even while another shard, which never
//!   failed, succeeds unheard.
//! - **Never dropped.** A full mailbox hands the message back (`Full`): it is
//!   kept in a per-destination FIFO outbox (`shardline::Outbox`) and retried from `on_mailbox_ready`
//!   (and on the next tick); while a destination has queued messages, new ones
//!   go behind them, so each shard sees a backend's transitions in order and
//!   ends with the checker's latest state. Messages are posted shard by shard
//!   (`Ctx::post`) rather than with `Ctx::broadcast`, so that the copies that
//!   did fit and the ones that did not keep one order per destination.
//! - **Fail-open.** When a shard's view has every backend of a pool down, the
//!   pool uses all of them if `fail_open = true`, else requests get 503 (TCP
//!   clients are closed).
//!
//! - **Generations.** Messages name backends by index, which a reload can
//!   change: each carries its configuration generation; a shard still on an
//!   older one keeps it until it switches, one on a newer one drops it
//!   ([`reload`]).
//!
//! Data never crosses shards; only these small messages do.
//!
//! # Listeners and servers
//!
//! One Shardline `Server` serves every listener of the configuration: its shards
//! listen on every address, each listener carrying its index in the
//! configuration (`ServerBuilder::listen_with`), and each shard's handler
//! ([`shard::ProxyShard`]) serves a connection as the listener that took it
//! says (L4 or HTTP, with its routes). So there is one thread per CPU
//! whatever the number of listeners, and each pool is balanced by one set of
//! per-shard balancers and health-checked once for the process, even when
//! several listeners use it. Listeners are fixed at start: a reload cannot
//! change them.
//!
//! # TLS passthrough
//!
//! A TCP listener with `tls_passthrough = true` picks each connection's pool by
//! the server name in its TLS ClientHello, which [`sni`] reads without
//! terminating TLS; until the hello is complete the client's bytes stay in the
//! framework's input buffer (`on_data` consumes nothing), then they go to the
//! chosen backend untouched and the session is an ordinary L4 one ([`tcp`]).
//!
//! # PROXY protocol and the access log
//!
//! A listener with `proxy_protocol = true` answers the framework's
//! `Handler::on_preamble` (in [`shard`]): a source in
//! `proxy_protocol_trusted` must send a PROXY header, read by the framework
//! before TLS; anyone else is refused. The header's source is then the `peer`
//! the connection is accepted with, so everything that names the client uses
//! it. A pool with `send_proxy_protocol` sends a header first on every new
//! upstream connection ([`pools::proxy_header`]), and in HTTP mode keeps none
//! of them for reuse. The access log's formats are in [`access`].
//!
//! # Rate limiting
//!
//! A listener's `rate_limit` is enforced per client address by each shard on
//! its own traffic ([`limit`]: GCRA, one bounded table per listener per
//! shard): HTTP requests over it get 429 with `Retry-After`, TCP connections
//! over it are closed at accept. Per shard, so approximate: a client spread
//! over several shards can get up to `shards ×` the limit.
//!
//! # Outlier ejection
//!
//! A pool's `[pool.NAME.outlier]` lets each shard take a backend out of its
//! own balancing after consecutive failures of its own traffic, for a growing
//! period ([`pools`]); independent of the health checker's verdicts, and
//! never emptying a pool.
//!
//! # Connection caps
//!
//! A pool's `max_connections_per_backend` caps each backend's upstream
//! connections in use at `ceil(N / shards)` per shard; HTTP requests beyond
//! wait in a bounded per-shard FIFO queue with a deadline (`http::proxy`'s
//! `queue`), TCP clients are closed.
//!
//! # Metrics
//!
//! With `[admin] listen` (or `--admin`), the framework's admin endpoint serves
//! `/metrics`: the framework's per-shard counters, then the proxy's
//! ([`stats`]): responses by status class per shard, a latency histogram,
//! client connections per shard, and per backend its health (as its checker
//! sees it) and active upstream connections. Each shard writes only its own
//! single-writer counters; the admin thread reads them.
//!
//! # Reload
//!
//! SIGHUP re-reads the `--config` file on the binary's signal thread; a valid
//! one is posted to every shard through the framework's `Remote`
//! ([`Reloader`]) and each shard switches to it in `on_message`
//! (`Origin::Remote`), with nothing polled: new connections and requests use
//! it, established connections finish on the old one. The reload returns once
//! every shard switched; a refused file posts nothing. Health messages carry
//! the generation of their indices; a shard keeps those of a newer one until it
//! switches too, drops those of an older one, and after a reload each checker
//! announces all its verdicts again. Details in [`reload`].
//!
//! # Shutdown
//!
//! At shutdown (`Handler::on_shutdown`) idle clients and idle pooled upstreams
//! are closed; an HTTP exchange in flight keeps its client and upstream open
//! (`Ctx::keep_open_on_shutdown`) and finishes with `Connection: close`, then
//! both are closed and no pipelined request behind it starts; a relaying L4
//! session stays open until either side finishes. The framework's shutdown
//! deadline bounds all of it.
//!
//! # Must never
//!
//! Panic or touch another connection on bad input, buffer a body whole, forward a
//! request whose framing is ambiguous, or share a connection between shards.

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod access;
pub mod balance;
pub mod config;
pub mod health;
pub mod http;
pub mod limit;
pub mod pools;
pub mod reload;
pub mod server;
pub mod shard;
pub mod sni;
pub mod stats;
pub mod tcp;
pub mod tls;

pub use config::{Config, ConfigError, Mode};
pub use reload::{ReloadError, Reloader};
pub use server::{build, framework_limits, Proxy, RunningProxy, Shared};
pub use shard::ProxyShard;
