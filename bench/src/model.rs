//! `model`: the cross-shard cost of a chat channel's fan-out, projected to more
//! shards than this machine has, from two measurements: the CPU of one
//! cross-shard message (`mailbox`) and the server CPU of one delivery (`chat`).
//!
//! One message to a room of M members spread evenly over S shards (the sender
//! among them, on a shard other than the channel's owner with probability
//! (S−1)/S). The owner delivers to its M/S local members and posts one delivery
//! to each other shard that has members; each of those delivers to its M/S and
//! acknowledges to the sender's shard; the sender's shard sent the request to the
//! owner and gets a reply (see `apps/chat/src/lib.rs`). With k = min(S, M) − 1
//! other shards holding members:
//!
//! - local work: M · d (d = CPU per delivery, the same on every shard);
//! - cross-shard messages: X = k (deliveries only; the pattern as usually
//!   drawn) or X = 2k + 2(S−1)/S (deliveries, acks, request and reply: what the
//!   chat sends; acks are coalesced per loop turn, so this is the most);
//! - cross-shard work: X · x (x = CPU per cross-shard message, both sides);
//! - share = X·x / (M·d + X·x); it falls under t (10 %) for rooms larger than
//!   M* = X·x·(1−t) / (t·d).
//!
//! Two regimes, each pairing inputs measured under the same conditions: *idle*
//! (paced chat: shards sleep between messages, every cross-shard message wakes
//! its receiver: x = the wake run's CPU per message, d = paced CPU per
//! delivery, one send per member) and *busy* (burst: shards never sleep,
//! messages stream: x = the streaming CPU per message, d = burst CPU per
//! delivery, sends coalesced).
//!
//! The d measured by `chat` at S₀ shards with rooms of M₀ already contains that
//! run's own cross-shard messages; [`local_delivery_us`] takes them out (with x
//! an upper bound, the result is a lower bound on d, so the shares here are upper
//! bounds).

use std::path::Path;

use anyhow::{anyhow, Context as _};
use serde::Serialize;
use serde_json::Value;

/// Shard counts projected.
pub const SHARDS: [usize; 4] = [2, 8, 32, 64];
/// Room sizes projected.
pub const ROOMS: [usize; 4] = [10, 100, 1_000, 10_000];
/// Below this share the cross-shard cost counts as negligible.
pub const NEGLIGIBLE: f64 = 0.10;

/// Which messages count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Count {
    /// One delivery per other shard with members.
    Deliveries,
    /// Deliveries, acks, request and reply.
    Protocol,
}

/// Other shards holding members of a room of `m` spread over `s` shards.
pub fn other_shards(s: usize, m: usize) -> usize {
    s.min(m).max(1) - 1
}

/// Cross-shard messages per channel message.
pub fn cross_messages(s: usize, m: usize, count: Count) -> f64 {
    let k = other_shards(s, m) as f64;
    match count {
        Count::Deliveries => k,
        Count::Protocol => {
            let s = s.max(1) as f64;
            2.0 * k + 2.0 * (s - 1.0) / s
        }
    }
}

/// CPU per delivery without the cross-shard messages of the run that measured
/// it (`d_measured` at `s0` shards, rooms of `m0`, with `m0 − 1` deliveries per
/// message), at `x_us` per message. Never below zero.
pub fn local_delivery_us(d_measured: f64, s0: usize, m0: usize, x_us: f64) -> f64 {
    let deliveries = (m0.max(2) - 1) as f64;
    let per_message = d_measured * deliveries - cross_messages(s0, m0, Count::Protocol) * x_us;
    (per_message / deliveries).max(0.0)
}

/// One projected cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cell {
    /// Shards.
    pub shards: usize,
    /// Room size.
    pub room: usize,
    /// Cross-shard messages per channel message.
    pub cross_messages: f64,
    /// CPU of the local deliveries per channel message (µs, all shards).
    pub local_us: f64,
    /// CPU of the cross-shard messages per channel message (µs, all shards).
    pub cross_us: f64,
    /// cross ÷ (local + cross).
    pub share: f64,
}

/// One channel message to a room of `m` over `s` shards.
pub fn project(s: usize, m: usize, d_us: f64, x_us: f64, count: Count) -> Cell {
    let xm = cross_messages(s, m, count);
    let local = m as f64 * d_us;
    let cross = xm * x_us;
    Cell {
        shards: s,
        room: m,
        cross_messages: xm,
        local_us: local,
        cross_us: cross,
        share: if local + cross > 0.0 {
            cross / (local + cross)
        } else {
            0.0
        },
    }
}

/// The room size above which cross-shard work is under `t` of the message's
/// CPU, for rooms with members on every one of `s` shards.
pub fn negligible_above(s: usize, d_us: f64, x_us: f64, t: f64, count: Count) -> f64 {
    let xm = cross_messages(s, usize::MAX, count);
    if d_us <= 0.0 {
        return f64::INFINITY;
    }
    xm * x_us * (1.0 - t) / (t * d_us)
}

/// A regime: a d and an x measured under the same conditions.
#[derive(Debug, Clone, Serialize)]
pub struct Regime {
    /// `idle` or `busy`.
    pub name: String,
    /// CPU per delivery as measured (µs).
    pub d_measured_us: f64,
    /// The same without the measuring run's cross-shard messages (µs).
    pub d_us: f64,
    /// CPU per cross-shard message (µs).
    pub x_us: f64,
    /// Where each input came from.
    pub sources: Vec<String>,
}

/// The model's inputs, read from `mailbox --json` and `chat --json` files.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    /// Idle and busy.
    pub regimes: Vec<Regime>,
    /// Shards of the chat run.
    pub chat_shards: usize,
    /// Room size of the chat run.
    pub chat_room: usize,
}

fn read(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn num(v: &Value, what: &str) -> anyhow::Result<f64> {
    v.as_f64()
        .ok_or_else(|| anyhow!("{what}: missing or not a number"))
}

/// Reads `implementation` = `shardline-BACKEND` from the mailbox file and
/// `server` = `shardline-BACKEND` (paced and burst) from the chat file.
pub fn inputs(mailbox: &Path, chat: &Path, backend: &str) -> anyhow::Result<Inputs> {
    let mb = read(mailbox)?;
    let ch = read(chat)?;
    let name = format!("shardline-{backend}");
    let row = mb["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["implementation"] == name.as_str()))
        .ok_or_else(|| anyhow!("{}: no {name} row", mailbox.display()))?;
    let wake_us = num(
        &row["wake_cpu_us_per_msg"],
        "mailbox wake_cpu_us_per_msg (rerun `mailbox`)",
    )?;
    let stream_us = num(
        &row["stream_cpu_ns_per_msg"],
        "mailbox stream_cpu_ns_per_msg",
    )? / 1e3;
    let shape = |s: &str| -> anyhow::Result<f64> {
        let r = ch["results"]
            .as_array()
            .and_then(|rs| {
                rs.iter()
                    .find(|r| r["server"] == name.as_str() && r["shape"] == s)
            })
            .ok_or_else(|| anyhow!("{}: no {name} {s} row", chat.display()))?;
        num(
            &r["server_cpu_us_per_delivery"],
            "chat server_cpu_us_per_delivery",
        )
    };
    let s0 = ch["setup"]["shards"].as_u64().unwrap_or(2) as usize;
    let m0 = ch["setup"]["scenario"]["room_size"].as_u64().unwrap_or(100) as usize;
    let mdate = mb["machine"]["date"].as_str().unwrap_or("?").to_owned();
    let cdate = ch["machine"]["date"].as_str().unwrap_or("?").to_owned();
    let mk = |name: &str, d: f64, x: f64, dsrc: &str, xsrc: &str| Regime {
        name: name.into(),
        d_measured_us: d,
        d_us: local_delivery_us(d, s0, m0, x),
        x_us: x,
        sources: vec![
            format!("d: {} ({cdate}), {dsrc}", chat.display()),
            format!("x: {} ({mdate}), {xsrc}", mailbox.display()),
        ],
    };
    Ok(Inputs {
        regimes: vec![
            mk(
                "idle",
                shape("paced")?,
                wake_us,
                &format!("{name} paced server_cpu_us_per_delivery"),
                &format!("{name} wake_cpu_us_per_msg (upper bound)"),
            ),
            mk(
                "busy",
                shape("burst")?,
                stream_us,
                &format!("{name} burst server_cpu_us_per_delivery"),
                &format!("{name} stream_cpu_ns_per_msg"),
            ),
        ],
        chat_shards: s0,
        chat_room: m0,
    })
}

/// The model as Markdown: inputs, the projection table, the break-even rooms.
pub fn render(inp: &Inputs) -> String {
    let mut out = String::new();
    out.push_str(
        "| regime | d measured µs/delivery | d local µs/delivery | x µs/cross-shard msg |\n",
    );
    out.push_str("| --- | ---: | ---: | ---: |\n");
    for r in &inp.regimes {
        out.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} |\n",
            r.name, r.d_measured_us, r.d_us, r.x_us
        ));
    }
    out.push('\n');
    for r in &inp.regimes {
        for s in &r.sources {
            out.push_str(&format!("- {}: {s}\n", r.name));
        }
    }
    out.push_str(&format!(
        "- d local = d measured minus the {}-shard run's own cross-shard messages ({} per message of {} deliveries)\n\n",
        inp.chat_shards,
        cross_messages(inp.chat_shards, inp.chat_room, Count::Protocol),
        inp.chat_room - 1
    ));
    out.push_str(
        "Per channel message, all shards together; X counts deliveries, acks, request and reply:\n\n",
    );
    let names: Vec<&str> = inp.regimes.iter().map(|r| r.name.as_str()).collect();
    let mut head = String::from("| S | M | X |");
    let mut rule = String::from("| ---: | ---: | ---: |");
    for n in &names {
        head.push_str(&format!(
            " {n}: local µs | {n}: cross µs | {n}: cross share |"
        ));
        rule.push_str(" ---: | ---: | ---: |");
    }
    out.push_str(&format!("{head}\n{rule}\n"));
    for &s in &SHARDS {
        for &m in &ROOMS {
            let mut line = format!(
                "| {s} | {m} | {:.1} |",
                cross_messages(s, m, Count::Protocol)
            );
            for r in &inp.regimes {
                let c = project(s, m, r.d_us, r.x_us, Count::Protocol);
                line.push_str(&format!(
                    " {:.1} | {:.1} | {:.1} % |",
                    c.local_us,
                    c.cross_us,
                    c.share * 100.0
                ));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(&format!(
        "Room size above which the cross-shard share is under {:.0} % (rooms with members on every shard):\n\n",
        NEGLIGIBLE * 100.0
    ));
    out.push_str(
        "| regime | counting | S = 8 | S = 32 | S = 64 |\n| --- | --- | ---: | ---: | ---: |\n",
    );
    for r in &inp.regimes {
        for (count, what) in [
            (Count::Deliveries, "S−1 deliveries"),
            (Count::Protocol, "+ acks, request, reply"),
        ] {
            let cells: Vec<String> = [8, 32, 64]
                .iter()
                .map(|&s| {
                    format!(
                        "{:.0}",
                        negligible_above(s, r.d_us, r.x_us, NEGLIGIBLE, count)
                    )
                })
                .collect();
            out.push_str(&format!(
                "| {} | {what} | {} |\n",
                r.name,
                cells.join(" | ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn cross_messages_follow_the_fan_out() {
        // 64 shards, a big room: 63 deliveries; plus 63 acks and a request and a
        // reply 63 times in 64.
        assert!(close(cross_messages(64, 1_000, Count::Deliveries), 63.0));
        assert!(close(
            cross_messages(64, 1_000, Count::Protocol),
            126.0 + 2.0 * 63.0 / 64.0
        ));
        // A room of 10 on 64 shards touches at most 10 shards.
        assert!(close(cross_messages(64, 10, Count::Deliveries), 9.0));
        // One shard: nothing crosses.
        assert!(close(cross_messages(1, 1_000, Count::Protocol), 0.0));
        assert_eq!(other_shards(8, 0), 0);
    }

    #[test]
    fn projection_splits_local_and_cross_work() {
        // 8 shards, room of 800, 1 µs per delivery, 10 µs per message: 7 · 10 µs
        // against 800 µs.
        let c = project(8, 800, 1.0, 10.0, Count::Deliveries);
        assert!(close(c.local_us, 800.0));
        assert!(close(c.cross_us, 70.0));
        assert!(close(c.share, 70.0 / 870.0));
    }

    #[test]
    fn break_even_room_gives_exactly_the_threshold() {
        for count in [Count::Deliveries, Count::Protocol] {
            let m = negligible_above(32, 5.0, 20.0, 0.1, count);
            let xm = cross_messages(32, usize::MAX, count);
            let share = xm * 20.0 / (m * 5.0 + xm * 20.0);
            assert!(close(share, 0.1), "{count:?}: {share}");
        }
        // 8 shards, 7 deliveries × 10 µs = 70 µs; under 10 % needs M·d ≥ 630 µs.
        assert!(close(
            negligible_above(8, 1.0, 10.0, 0.1, Count::Deliveries),
            630.0
        ));
        assert!(negligible_above(8, 0.0, 1.0, 0.1, Count::Deliveries).is_infinite());
    }

    #[test]
    fn reads_the_committed_result_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let inp = inputs(
            &dir.join("mailbox-model.json"),
            &dir.join("chat-model.json"),
            "uring",
        )
        .expect("the model's inputs are in bench/results");
        let names: Vec<&str> = inp.regimes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["idle", "busy"]);
        assert_eq!((inp.chat_shards, inp.chat_room), (2, 100));
        for r in &inp.regimes {
            assert!(
                r.x_us > 0.0 && r.d_us > 0.0 && r.d_us <= r.d_measured_us,
                "{r:?}"
            );
        }
        let md = render(&inp);
        assert!(md.contains("| 64 | 1000 |"), "{md}");
        // The old mailbox file has no CPU fields: a clear error, not a zero.
        let e = inputs(
            &dir.join("mailbox.json"),
            &dir.join("chat-model.json"),
            "uring",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("wake_cpu_us_per_msg"), "{e}");
    }

    #[test]
    fn measured_delivery_cost_loses_its_own_cross_shard_part() {
        // 2 shards, rooms of 100: 99 deliveries and 2·1 + 2·½ = 3 cross-shard
        // messages per message. 99 · 5 µs − 3 · 11 µs = 462 µs → 4.667 µs.
        assert!(close(local_delivery_us(5.0, 2, 100, 11.0), 462.0 / 99.0));
        // Never negative.
        assert_eq!(local_delivery_us(0.01, 2, 100, 1_000.0), 0.0);
    }
}
