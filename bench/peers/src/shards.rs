//! Starting one server thread per `--threads`, each with its own listener, and
//! saying `listening on ADDR` once all of them accept.
//!
//! Threads start one after another: thread 0 binds the address asked for, and every
//! later thread binds the address thread 0 got (so `--addr 127.0.0.1:0` works with
//! SO_REUSEPORT). The line is printed only after the last thread has bound, so a
//! harness that waits for it never connects to a half-started server.
//!
//! Before that, the address is probed with a plain bind (no SO_REUSEPORT): a
//! leftover server of the same user with SO_REUSEPORT would otherwise let ours bind
//! beside it and silently take half the connections.

use std::{
    io::Write,
    net::SocketAddr,
    panic::{catch_unwind, AssertUnwindSafe},
    process::ExitCode,
    sync::{mpsc, Arc},
    thread,
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::Args;

/// What one server thread is given.
#[derive(Debug)]
pub struct Shard {
    /// Thread number, from 0.
    pub index: usize,
    /// Address to bind.
    pub addr: SocketAddr,
    /// CPU to pin to, if `--cpus` was given.
    pub cpu: Option<usize>,
    /// Tell the starter the listener is bound.
    pub ready: Ready,
}

/// Reports a shard's bound listener to the thread that started it.
#[derive(Debug)]
pub struct Ready {
    tx: mpsc::Sender<Event>,
}

impl Ready {
    /// Call once the listener is bound and listening, with its local address.
    pub fn bound(&self, local: SocketAddr) {
        // The starter only goes away when the process exits.
        let _ = self.tx.send(Event::Bound(local));
    }
}

enum Event {
    Bound(SocketAddr),
    Ended(usize, Result<(), String>),
}

/// Prints the one line a harness waits for, and flushes it.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // If stdout is gone nobody is waiting for the line; serving goes on regardless.
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        Err(format!("could not pin thread to CPU {cpu}"))
    }
}

/// Runs `serve` on `args.threads` threads named `name-i`, one after another (see
/// the module doc), announces the address, and returns only if a shard fails: it
/// must call `shard.ready.bound(..)` once listening, then serve until the process
/// ends. A shard that returns, errs or panics ends the process with code 1.
pub fn run_shards<F>(args: &Args, name: &str, serve: F) -> ExitCode
where
    F: Fn(Shard) -> Result<(), String> + Send + Sync + 'static,
{
    if let Err(e) = probe(args.addr) {
        eprintln!("{name}: cannot listen on {}: {e}", args.addr);
        return ExitCode::FAILURE;
    }
    let serve = Arc::new(serve);
    let (tx, rx) = mpsc::channel();
    let mut addr = args.addr;
    for index in 0..args.threads {
        let shard = Shard {
            index,
            addr,
            cpu: args.cpu_for(index),
            ready: Ready { tx: tx.clone() },
        };
        let serve = Arc::clone(&serve);
        let ended = tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(|| serve(shard)))
                    .unwrap_or_else(|_| Err("panicked".to_string()));
                let _ = ended.send(Event::Ended(index, result));
            });
        if let Err(e) = spawned {
            eprintln!("{name}: cannot start thread {index}: {e}");
            return ExitCode::FAILURE;
        }
        match rx.recv() {
            Ok(Event::Bound(local)) => addr = local,
            Ok(Event::Ended(i, result)) => return failed(name, i, result),
            Err(_) => unreachable!("this function holds a sender"),
        }
    }
    announce(addr);
    loop {
        match rx.recv() {
            Ok(Event::Ended(i, result)) => return failed(name, i, result),
            Ok(Event::Bound(_)) => {}
            Err(_) => unreachable!("this function holds a sender"),
        }
    }
}

/// Binds `addr` without SO_REUSEPORT and lets go: fails if anything listens there.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Only TIME_WAIT leftovers of closed connections are no reason to refuse.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

fn failed(name: &str, index: usize, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => eprintln!("{name}: thread {index} stopped serving"),
        Err(e) => eprintln!("{name}: thread {index}: {e}"),
    }
    ExitCode::FAILURE
}
