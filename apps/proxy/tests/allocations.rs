//! Heap allocations per proxied keep-alive request (a counting global
//! allocator): N requests through the proxy minus N requests straight to the
//! backend, divided by N. Client and backend reuse their buffers, so what is
//! left is the proxy's own work per request. Both I/O backends, one shard.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    thread,
};

use common::{http_config, TestProxy, WAIT};
use shardline::Io;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world\n";
const REQUEST: &[u8] =
    b"GET /index.html?q=1 HTTP/1.1\r\nHost: test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";

fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Ok(n) => return n,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Answers every request head with [`RESPONSE`], allocating nothing per request.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                loop {
                    let n = match s.read(&mut buf[have..]) {
                        Ok(0) => return,
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    have += n;
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        if s.write_all(RESPONSE).is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                }
            });
        }
    });
    addr
}

/// Allocations (whole process) during `n` keep-alive requests to `addr`.
fn run(addr: SocketAddr, n: u64) -> u64 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; 4096];
    let mut one = |s: &mut TcpStream| {
        s.write_all(REQUEST).expect("write");
        let mut got = 0;
        while got < RESPONSE.len() {
            let n = read_some(s, &mut buf[got..]);
            assert!(n > 0, "connection closed after {got} bytes");
            got += n;
        }
    };
    // Warm up: pooled upstream, buffers grown.
    for _ in 0..50 {
        one(&mut s);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        one(&mut s);
    }
    ALLOCS.load(Ordering::Relaxed) - before
}

/// The allocation count is process-wide: the backends' tests (which the
/// harness runs in parallel) measure one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Allocations per request, measured and bounded.
fn allocations_per_proxied_request(io: Io) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const N: u64 = 2000;
    let b = backend();
    let direct = run(b, N);
    let proxy = TestProxy::start(io, 1, &http_config(&[b], ""));
    let through = run(proxy.addr, N);
    let per = through.saturating_sub(direct) as f64 / N as f64;
    println!("{io}: {per:.2} allocations per request (direct: {direct} in {N})");
    // Two: the request's and the response's header lists (before the
    // head parsing borrowed from the buffers it was 33).
    assert!(per <= 4.0, "{io}: {per:.2} allocations per request");
}

shardline::per_backend! {
    allocations_per_proxied_request => allocations_per_proxied_request;
}
