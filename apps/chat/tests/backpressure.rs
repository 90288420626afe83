//! Cross-shard backpressure: tiny mailboxes make `post` return `Full`; the outbox
//! keeps order and drains on `on_mailbox_ready`, so nothing is lost. A client's
//! in-flight window paces a burst (its input waits in the socket). When the
//! outbox itself is full the client whose command needed it is disconnected
//! ("Server busy") and every member still sees one and the same history. Both
//! backends, 1 and 4 shards.

mod common;

use std::thread;

use common::{each_server_with, numbered, numbered_privmsgs, Client};
use shardline::Io;

const MESSAGES: usize = 1_000;

fn flood(sender: &Client, n: usize) -> thread::JoinHandle<()> {
    let mut writer = sender.try_clone_stream();
    let batch = numbered_privmsgs("#flood", n);
    thread::spawn(move || {
        use std::io::Write;
        // The server may hang up mid-burst (the second test): that's the point.
        let _ = writer.write_all(batch.as_bytes());
    })
}

fn full_mailboxes_lose_nothing(io: Io) {
    each_server_with(
        io,
        |config| config.limits.mailbox_capacity = 8,
        |srv| {
            let mut all = srv.members(4, "echo-message", "#flood");
            let writer = flood(&all[0], MESSAGES);
            let label = srv.label();
            let seen: Vec<Vec<String>> =
                all.iter_mut().map(|c| c.privmsg_texts(MESSAGES)).collect();
            writer.join().expect("writer");
            let expected = numbered(MESSAGES);
            for (i, s) in seen.iter().enumerate() {
                assert_eq!(s, &expected, "{label}: member {i}");
            }
            let t = srv.metrics().total();
            assert!(t.mailbox_full > 0, "{label}: the test must hit Full: {t:?}");
        },
    );
}

/// One sender bursts far more than the mailboxes and outboxes hold; its window
/// (smaller than the outbox) paces it instead of disconnecting it.
fn a_burst_is_paced_not_refused(io: Io) {
    each_server_with(
        io,
        |config| {
            config.limits.mailbox_capacity = 16;
            config.limits.outbox_capacity = 64;
            config.limits.in_flight_per_client = 8;
        },
        |srv| {
            let mut all = srv.members(4, "echo-message", "#flood");
            let n = MESSAGES * 5;
            let writer = flood(&all[0], n);
            let label = srv.label();
            let expected = numbered(n);
            for (i, c) in all.iter_mut().enumerate() {
                let got = c.privmsg_texts_checking(n, |l| {
                    assert!(
                        !l.is("ERROR") && !l.is("QUIT"),
                        "{label}: member {i}: {}",
                        l.raw
                    );
                });
                assert!(
                    got == expected,
                    "{label}: member {i} lost or reordered messages"
                );
            }
            writer.join().expect("writer");
        },
    );
}

fn outbox_overflow_disconnects_the_sender(io: Io) {
    each_server_with(
        io,
        |config| {
            config.limits.mailbox_capacity = 1;
            config.limits.outbox_capacity = 16;
        },
        |srv| {
            let mut all = srv.members(4, "echo-message", "#flood");
            let label = srv.label();
            let writer = flood(&all[0], MESSAGES);
            all[0].expect_error_close("Server busy");
            writer.join().expect("writer");
            // Everyone else saw the same prefix of the flood, then the QUIT.
            let mut histories = Vec::new();
            for c in &mut all[1..] {
                let (quit, before) = c.until_command("QUIT");
                assert!(quit.last().contains("Server busy"), "{label}: {}", quit.raw);
                let got: Vec<String> = before
                    .iter()
                    .filter(|l| l.is("PRIVMSG"))
                    .map(|l| l.last().to_string())
                    .collect();
                assert_eq!(got, numbered(got.len()), "{label}: a prefix, in order");
                histories.push(got);
            }
            assert!(
                histories.windows(2).all(|w| w[0] == w[1]),
                "{label}: one history"
            );
            // The server goes on.
            all[1].send("PRIVMSG #flood :still here");
            assert_eq!(all[2].expect("PRIVMSG").last(), "still here");
        },
    );
}

shardline::per_backend! {
    full_mailboxes_lose_nothing => full_mailboxes_lose_nothing;
    a_burst_is_paced_not_refused => a_burst_is_paced_not_refused;
    outbox_overflow_disconnects_the_sender => outbox_overflow_disconnects_the_sender;
}
