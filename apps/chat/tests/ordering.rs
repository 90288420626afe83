//! Channel ordering: one channel with members on every shard, several senders
//! writing as fast as they can; every member sees every message, all in the same
//! order, and each sender's messages in the order it sent them. Both backends, at 1
//! and 4 shards.

mod common;

use std::thread;

use common::each_server;
use shardline::Io;

fn total() -> usize {
    if cfg!(debug_assertions) {
        2_000
    } else {
        10_000
    }
}

const MEMBERS: usize = 8;
const SENDERS: usize = 4;

fn every_member_sees_one_order(io: Io) {
    each_server(io, |srv| {
        // Members on every shard: member i lands on shard i % shards.
        let members = srv.members(MEMBERS, "echo-message", "#order");
        let mut on: Vec<usize> = members.iter().map(|m| m.shard).collect();
        on.sort_unstable();
        on.dedup();
        assert_eq!(on.len(), srv.shards, "members on every shard");
        let per_sender = total() / SENDERS;
        let label = srv.label();
        let handles: Vec<_> = members
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                thread::spawn(move || {
                    if i < SENDERS {
                        // Write everything in a few big writes while reading.
                        let mut batch = String::new();
                        for n in 0..per_sender {
                            batch.push_str(&format!("PRIVMSG #order :{i}:{n}\r\n"));
                        }
                        let mut writer = m.try_clone_stream();
                        let w = thread::spawn(move || {
                            use std::io::Write;
                            writer.write_all(batch.as_bytes()).expect("send burst");
                        });
                        let got = m.privmsg_texts(per_sender * SENDERS);
                        w.join().expect("writer");
                        got
                    } else {
                        m.privmsg_texts(per_sender * SENDERS)
                    }
                })
            })
            .collect();
        let seen: Vec<Vec<String>> = handles
            .into_iter()
            .map(|h| h.join().expect("member thread"))
            .collect();
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s.len(), per_sender * SENDERS, "{label}: member {i}");
            assert_eq!(s, &seen[0], "{label}: member {i} saw another order");
        }
        // Each sender's own order is kept.
        for sender in 0..SENDERS {
            let mine: Vec<usize> = seen[0]
                .iter()
                .filter_map(|t| t.split_once(':'))
                .filter(|(s, _)| *s == sender.to_string())
                .map(|(_, n)| n.parse().expect("number"))
                .collect();
            assert_eq!(
                mine,
                (0..per_sender).collect::<Vec<_>>(),
                "{label}: sender {sender}"
            );
        }
    });
}

shardline::per_backend! {
    every_member_sees_one_order => every_member_sees_one_order;
}
