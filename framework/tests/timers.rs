//! Timers fire in deadline order, cancelled timers never fire, intervals repeat until
//! cancelled — on both backends (the loop's wait timeout is the next timer).

mod common;

use std::{sync::mpsc, time::Duration};

use shardline::{ConnId, Ctx, Handler, Io, Server, TimerId};

struct Timers {
    fired: mpsc::Sender<u64>,
    interval: Option<TimerId>,
    ticks: u32,
}

const TICK: u64 = 100;
const DONE: u64 = 999;

/// A typed payload that owns data (not `Copy`): one-shot timers hand it over,
/// intervals hand out clones, cancelling gives it back.
#[derive(Debug, Clone, PartialEq)]
enum Fire {
    Once(u64, String),
    Tick,
}

impl Handler for Timers {
    type Msg = ();
    type Timer = Fire;
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: shardline::Listener<'_, ()>,
        _: std::net::SocketAddr,
    ) {
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        let once = |n: u64| Fire::Once(n, format!("timer {n}"));
        ctx.set_timer(Duration::from_millis(60), once(3));
        ctx.set_timer(Duration::from_millis(20), once(1));
        let cancelled = ctx.set_timer(Duration::from_millis(30), once(77));
        ctx.set_timer(Duration::from_millis(40), once(2));
        assert_eq!(ctx.cancel_timer(cancelled), Some(once(77)));
        assert_eq!(
            ctx.cancel_timer(cancelled),
            None,
            "second cancel is a no-op"
        );
        self.interval = Some(ctx.set_interval(Duration::from_millis(5), Fire::Tick));
        ctx.set_timer(Duration::from_millis(300), once(DONE));
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, timer: TimerId, payload: Fire) {
        let token = match payload {
            Fire::Tick => {
                assert_eq!(Some(timer), self.interval);
                self.ticks += 1;
                if self.ticks == 5 {
                    assert_eq!(ctx.cancel_timer(timer), Some(Fire::Tick));
                }
                TICK
            }
            Fire::Once(n, text) => {
                assert_eq!(text, format!("timer {n}"), "the payload arrives intact");
                n
            }
        };
        let _ = self.fired.send(token);
    }

    fn on_data(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        data.len()
    }
}

fn timers_fire_in_order_and_cancelled_never_fire(io: Io) {
    common::init_tracing();
    let (tx, rx) = mpsc::channel();
    let server = Server::builder()
        .io(io)
        .shards(1)
        .pin(false)
        .build(move |_| Timers {
            fired: tx.clone(),
            interval: None,
            ticks: 0,
        })
        .expect("config")
        .start()
        .expect("start");
    let mut fired = Vec::new();
    loop {
        let t = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("timer fires");
        fired.push(t);
        if t == DONE {
            break;
        }
    }
    let one_shots: Vec<u64> = fired.iter().copied().filter(|&t| t != TICK).collect();
    assert_eq!(one_shots, [1, 2, 3, DONE], "{io}: {fired:?}");
    assert_eq!(
        fired.iter().filter(|&&t| t == TICK).count(),
        5,
        "{io}: {fired:?}"
    );
    assert!(!fired.contains(&77), "{io}");
    assert_eq!(server.metrics().total().handler_panics, 0, "{io}");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    timers_fire_in_order_and_cancelled_never_fire => timers_fire_in_order_and_cancelled_never_fire;
}
