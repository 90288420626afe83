//! Measures what account logins and registrations cost the server, for the
//! figures in `src/auth/password.rs` and `src/auth/scram.rs`. Run in release:
//!
//! ```sh
//! cargo run --release -p shardline-chat --example auth_bench [-- ROUNDS]
//! ```
//!
//! Prints the median, minimum and maximum of ROUNDS (default 20) runs of: an
//! argon2id hash with the production parameters, a verification of it, the
//! PBKDF2 of a new SCRAM-SHA-256 credential (the count a client also pays at
//! each login), and a whole SCRAM exchange on the server side (what a login
//! costs the shard's loop).

use std::time::{Duration, Instant};

use shardline_chat::auth::{
    password::{hash_password, verify_password, ARGON2_PARAMS},
    scram::{ClientFirst, ScramCredential, DEFAULT_ITERATIONS},
};

fn measure(name: &str, rounds: usize, mut f: impl FnMut()) {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "{name}: median {:.3} ms, min {:.3} ms, max {:.3} ms ({rounds} rounds)",
        times[rounds / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[rounds - 1].as_secs_f64() * 1e3,
    );
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1);
    let pw = b"correct horse battery staple";
    let phc = hash_password(pw).expect("hash");
    measure(&format!("argon2 hash ({ARGON2_PARAMS})"), rounds, || {
        hash_password(pw).expect("hash");
    });
    measure("argon2 verify", rounds, || {
        assert_eq!(verify_password(pw, &phc), Ok(true));
    });
    measure(
        &format!("SCRAM credential, PBKDF2 i={DEFAULT_ITERATIONS}"),
        rounds,
        || {
            ScramCredential::new(pw).expect("scram");
        },
    );
    let cred = ScramCredential::new(pw).expect("scram");
    measure(
        "SCRAM server side of one exchange (wrong proof)",
        rounds.max(1000),
        || {
            let first = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("first");
            let (state, server_first) = first.challenge(&cred).expect("challenge");
            let nonce = server_first.split(',').next().unwrap_or_default();
            let last = format!("c=biws,{nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
            assert!(state.finish(last.as_bytes()).is_err());
        },
    );
}
