//! Accounts and SASL as pure logic with no I/O, to be wired into the session:
//!
//! - [`password`]: the password policy, argon2id hashing and verification
//!   (PHC strings), the measured cost and how to keep it off the event loop,
//!   and operator passwords from the configuration (hash or plaintext).
//! - [`scram`]: SCRAM-SHA-256 (RFC 5802/7677), server side: the stored
//!   credential, its text form, and the exchange as a state machine.
//! - [`record`]: what an account record holds for logging in — the argon2
//!   hash and the SCRAM credential in the store's `password_hash` field — and
//!   certificate fingerprints.
//! - [`sasl`]: `AUTHENTICATE` per client (PLAIN, SCRAM-SHA-256, EXTERNAL):
//!   chunking, limits, abort, bounded retries, numerics 900–908, and the `sasl`
//!   cap value. It never touches the store: it asks (look an account up, check
//!   a password) and takes the answers whenever they arrive.
//! - [`register`]: `draft/account-registration`'s `REGISTER` checks, `FAIL`
//!   codes, success reply and cap value.
//! - [`cli`]: the offline `account add|passwd|del|list|cert` commands.
//! - [`oper`]: OPER against argon2 hashes on a helper thread, and
//!   `--hash-password`.
//! - [`pool`]: the helper threads that hash and check passwords for the
//!   shards, with a bounded queue; results come back through a `Remote`.
//!
//! # Wiring (for the session)
//!
//! (Done: `commands/account.rs` on the client's shard, `owner/accounts.rs`
//! on the account's owner, [`pool`] for the hashing; see the crate doc's
//! "Accounts and SASL".)
//!
//! A client gets a [`sasl::Sasl`] (with its TLS client certificate's
//! fingerprint, `TlsInfo::peer_cert_sha256_hex`). On `AUTHENTICATE <p>` (with
//! the `sasl` cap enabled; 461 without a parameter) the shard calls
//! `authenticate(p)` and carries out the [`sasl::Output`]s in order:
//!
//! - `Reply(r)`: `r.write(out, server, nick, mask)`.
//! - `LookupAccount { query, name }`: ask the owner shard of
//!   `store::account_key(name)`; its answer, an [`sasl::AccountInfo`] built
//!   with `AccountInfo::from_account` (or `None`), goes to
//!   `account_found(query, ..)`. `LookupByFingerprint`: the store has no
//!   fingerprint index, so the chat needs one (each shard can index the
//!   fingerprints of its own partitions' accounts and the lookup asks every
//!   shard, or a fingerprint gets its own key).
//! - `VerifyPassword { query, job }`: run `job.run()` on a helper thread (see
//!   [`password`]: ~50 ms) and post the result back, then
//!   `password_checked(query, result)`.
//! - `LoggedIn { account }`: set the client's account (account-notify,
//!   account-tag, extended-join, WHOIS 330).
//! - `Disconnect { reason }`: `ERROR :reason` and close.
//!
//! `CAP END` (or registration without CAP) while `in_progress()` calls
//! `registration_completed()`.
//!
//! # Secrets
//!
//! Passwords live in [`password::Password`] (wiped on drop); no `Debug` in
//! this module shows a password, a hash, a SCRAM key or a payload, and nothing
//! here logs. Secrets are compared in constant time (`subtle`; argon2's own
//! output comparison is constant-time too).

pub mod cli;
pub mod oper;
pub mod password;
pub mod pool;
pub mod record;
pub mod register;
pub mod sasl;
pub mod scram;
