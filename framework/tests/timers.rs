//! Timers fire in deadline order, cancelled timers never fire, intervals repeat until
//! cancelled — on both backends (the loop's wait timeout is the next timer).

mod common;

use std::{sync::mpsc, time::Duration};

use shardline::{ConnId, Ctx, Handler, Server, TimerId};

struct Timers {
    fired: mpsc::Sender<u64>,
    interval: Option<TimerId>,
    ticks: u32,
}

const TICK: u64 = 100;
const DONE: u64 = 999;

impl Handler for Timers {
    type Msg = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        ctx.set_timer(Duration::from_millis(60), 3);
        ctx.set_timer(Duration::from_millis(20), 1);
        let cancelled = ctx.set_timer(Duration::from_millis(30), 77);
        ctx.set_timer(Duration::from_millis(40), 2);
        assert!(ctx.cancel_timer(cancelled));
        assert!(!ctx.cancel_timer(cancelled), "second cancel is a no-op");
        self.interval = Some(ctx.set_interval(Duration::from_millis(5), TICK));
        ctx.set_timer(Duration::from_millis(300), DONE);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: TimerId, token: u64) {
        if token == TICK {
            assert_eq!(Some(timer), self.interval);
            self.ticks += 1;
            if self.ticks == 5 {
                assert!(ctx.cancel_timer(timer));
            }
        }
        let _ = self.fired.send(token);
    }

    fn on_data(&mut self, _ctx: &mut Ctx<'_>, _conn: ConnId, data: &[u8]) -> usize {
        data.len()
    }
}

#[test]
fn timers_fire_in_order_and_cancelled_never_fire() {
    for io in common::BACKENDS {
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
}
