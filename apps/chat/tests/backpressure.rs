//! Cross-shard backpressure: tiny mailboxes make `post` return `Full`; the outbox
//! keeps order and drains on `on_mailbox_ready`, so nothing is lost. A client's
//! in-flight window paces a burst (its input waits in the socket). When the
//! outbox itself is full the client whose command needed it is disconnected
//! ("Server busy") and every member still sees one and the same history. Both
//! backends, 1 and 4 shards.

mod common;

use std::thread;

use common::{matrix, test_config, Client, TestServer};

const MESSAGES: usize = 1_000;

fn flood(sender: &Client, n: usize) -> thread::JoinHandle<()> {
    let mut writer = sender.try_clone_stream();
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!("PRIVMSG #flood :{i}\r\n"));
    }
    thread::spawn(move || {
        use std::io::Write;
        // The server may hang up mid-burst (the second test): that's the point.
        let _ = writer.write_all(batch.as_bytes());
    })
}

fn members(srv: &TestServer, n: usize) -> Vec<Client> {
    let mut all: Vec<Client> = (0..n)
        .map(|i| {
            let mut c = srv.connect_on(i);
            c.register_with_caps(&format!("m{i}"), "echo-message");
            c
        })
        .collect();
    for c in &mut all {
        c.join("#flood");
    }
    for c in &mut all {
        c.sync();
    }
    all
}

#[test]
fn full_mailboxes_lose_nothing() {
    for (io, shards) in matrix() {
        let mut config = test_config();
        config.limits.mailbox_capacity = 8;
        let srv = TestServer::start_with(io, shards, config);
        let mut all = members(&srv, 4);
        let writer = flood(&all[0], MESSAGES);
        let label = srv.label();
        let seen: Vec<Vec<String>> = all
            .iter_mut()
            .map(|c| {
                let mut got = Vec::new();
                while got.len() < MESSAGES {
                    let l = c.next_line();
                    if l.is("PRIVMSG") {
                        got.push(l.last().to_string());
                    }
                }
                got
            })
            .collect();
        writer.join().expect("writer");
        let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s, &expected, "{label}: member {i}");
        }
        let t = srv.metrics().total();
        assert!(t.mailbox_full > 0, "{label}: the test must hit Full: {t:?}");
        srv.stop();
    }
}

/// One sender bursts far more than the mailboxes and outboxes hold; its window
/// (smaller than the outbox) paces it instead of disconnecting it.
#[test]
fn a_burst_is_paced_not_refused() {
    for (io, shards) in matrix() {
        let mut config = test_config();
        config.limits.mailbox_capacity = 16;
        config.limits.outbox_capacity = 64;
        config.limits.in_flight_per_client = 8;
        let srv = TestServer::start_with(io, shards, config);
        let mut all = members(&srv, 4);
        let n = MESSAGES * 5;
        let writer = flood(&all[0], n);
        let label = srv.label();
        let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        for (i, c) in all.iter_mut().enumerate() {
            let mut got = Vec::new();
            while got.len() < n {
                let l = c.next_line();
                assert!(
                    !l.is("ERROR") && !l.is("QUIT"),
                    "{label}: member {i}: {}",
                    l.raw
                );
                if l.is("PRIVMSG") {
                    got.push(l.last().to_string());
                }
            }
            assert!(
                got == expected,
                "{label}: member {i} lost or reordered messages"
            );
        }
        writer.join().expect("writer");
        srv.stop();
    }
}

#[test]
fn outbox_overflow_disconnects_the_sender() {
    for (io, shards) in matrix() {
        let mut config = test_config();
        config.limits.mailbox_capacity = 1;
        config.limits.outbox_capacity = 16;
        let srv = TestServer::start_with(io, shards, config);
        let mut all = members(&srv, 4);
        let label = srv.label();
        let writer = flood(&all[0], MESSAGES);
        let lines = all[0].until_closed();
        writer.join().expect("writer");
        let err = lines.last().expect("ERROR before close");
        assert!(
            err.is("ERROR") && err.last().contains("Server busy"),
            "{label}: {}",
            err.raw
        );
        // Everyone else saw the same prefix of the flood, then the QUIT.
        let mut histories = Vec::new();
        for c in &mut all[1..] {
            let (quit, before) = c.until("QUIT", |l| l.is("QUIT"));
            assert!(quit.last().contains("Server busy"), "{label}: {}", quit.raw);
            let got: Vec<String> = before
                .iter()
                .filter(|l| l.is("PRIVMSG"))
                .map(|l| l.last().to_string())
                .collect();
            let expected: Vec<String> = (0..got.len()).map(|i| i.to_string()).collect();
            assert_eq!(got, expected, "{label}: a prefix, in order");
            histories.push(got);
        }
        assert!(
            histories.windows(2).all(|w| w[0] == w[1]),
            "{label}: one history"
        );
        // The server goes on.
        all[1].send("PRIVMSG #flood :still here");
        assert_eq!(
            all[2].until("PRIVMSG", |l| l.is("PRIVMSG")).0.last(),
            "still here"
        );
        srv.stop();
    }
}
