//! The IRC side of SASL (IRCv3 `sasl` 3.1/3.2): one [`Sasl`] per client, a
//! state machine with no I/O. The chat feeds it each `AUTHENTICATE` parameter
//! and the answers to what it asked; it returns [`Output`]s: replies to send,
//! and requests — look an account up, check a password — whose answers may
//! come much later (the account may live on another shard; a password check
//! runs off the loop).
//!
//! ```text
//! C: AUTHENTICATE PLAIN            → Reply(AUTHENTICATE +)
//! C: AUTHENTICATE <base64>         → LookupAccount { query, name }
//!    account_found(query, info)    → VerifyPassword { query, job }
//!    password_checked(query, ok)   → LoggedIn { account }, Reply(900), Reply(903)
//! ```
//!
//! # Wire rules
//!
//! - `AUTHENTICATE <mechanism>` (case-insensitive) starts an exchange: the
//!   server answers `AUTHENTICATE +` (every mechanism here is client-first).
//!   An unknown or disabled mechanism gets 908 (the list) then 904, and the
//!   client may try another; this does not count as a failure.
//! - A response is base64, sent in chunks of 400 bytes: a chunk of exactly 400
//!   means more follows, a shorter one ends it, and `+` alone is an empty
//!   chunk (an empty response, or the end after a 400-byte chunk). A chunk over
//!   400 bytes, or a response over [`SaslConfig::max_payload`] bytes of base64
//!   (8 KiB by default), gets 905 and ends the exchange. The server's own
//!   challenges are chunked the same way.
//! - `AUTHENTICATE *` aborts: 906, also while an answer is awaited (which is
//!   then ignored: every request carries a [`Query`] and answers to an older
//!   one are dropped). With nothing in progress it still gets 906.
//! - Once logged in, any `AUTHENTICATE` gets 907: this server does not
//!   re-authenticate (IRCv3 3.2 allows refusing it with 907).
//! - If connection registration completes mid-exchange the chat calls
//!   [`Sasl::registration_completed`]: 906, and the client registers without an
//!   account, as sasl-3.1 says.
//!
//! # Failures
//!
//! A failed exchange gets 904 and the client may start again. Failures that
//! tested a credential — wrong password, unknown account, a malformed response,
//! a bad SCRAM proof, an unknown certificate — count; after
//! [`SaslConfig::max_failures`] (3) of them on one connection the machine
//! answers 904 and then [`Output::Disconnect`]: the chat sends
//! `ERROR :Too many SASL authentication failures` and closes, as in the IRCv3
//! 3.2 example. Disconnecting (rather than refusing further attempts on a
//! live connection) ends a guessing session cheaply, and every guess costs the
//! server an argon2 verification, so bounding them per connection matters.
//! Failures that only tell the client to fall back do not count: SCRAM on an
//! account without SCRAM data, EXTERNAL without a client certificate.
//!
//! A locked account (the chat decides what that is: [`AccountInfo::locked`])
//! gets 902 after its credential checked out, and counts as no failure.
//!
//! # Mechanisms
//!
//! - `PLAIN` (RFC 4616): `authzid NUL authcid NUL password`; the authzid must
//!   be empty or the authcid (casefolded), since nobody may act as someone else.
//! - `EXTERNAL` (RFC 4422): the TLS client certificate's SHA-256 fingerprint,
//!   given to [`Sasl::new`], finds the account ([`Output::LookupByFingerprint`]).
//!   The response is empty (`+`) or names that same account.
//! - `SCRAM-SHA-256` (RFC 7677, [`super::scram`]): the account's SCRAM
//!   credential comes with the lookup; the proof is checked here, on the loop
//!   (two HMACs and a hash: microseconds). After the server-final message the
//!   client must send an empty response, and only then is it logged in.
//!
//! Account names are not treated as secret: an unknown account fails at once
//! and a known one after a password verification, and SCRAM answers an unknown
//! name without a fake challenge. On IRC account names are public anyway
//! (WHOIS 330, `account-tag`, `extended-join`).
//!
//! Nothing here logs; [`Output`] and [`Reply`] `Debug` hold no secret.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine};
use zeroize::Zeroizing;

use super::{
    password::{HashError, Password, VerifyJob},
    record::Credentials,
    scram::{self, AwaitingFinal, ClientFirst},
};
use crate::{
    casemap::casefold,
    reply::{write_line, write_numeric},
    store::Account,
};

/// The longest `AUTHENTICATE` chunk.
pub const CHUNK_LEN: usize = 400;
/// The default cap on one response, in base64 bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 8192;
/// The default number of counted failures before a disconnect.
pub const DEFAULT_MAX_FAILURES: u32 = 3;
/// The `ERROR` text after too many failures.
pub const TOO_MANY_FAILURES: &str = "Too many SASL authentication failures";

/// A SASL mechanism this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `PLAIN`.
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `EXTERNAL` (TLS client certificate).
    External,
}

impl Mechanism {
    /// Its IANA name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => scram::MECHANISM,
            Mechanism::External => "EXTERNAL",
        }
    }

    /// The mechanism named `s` (any case).
    pub fn parse(s: &str) -> Option<Mechanism> {
        [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::External,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(s))
    }
}

/// The `sasl` capability's value: `PLAIN,SCRAM-SHA-256`, with `,EXTERNAL` when
/// `external` — only where a client certificate can exist (a TLS listener
/// that asks for one).
pub fn cap_value(external: bool) -> String {
    SaslConfig::new(external).mechanism_list()
}

/// Settings of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConfig {
    /// The mechanisms offered, in the order advertised.
    pub mechanisms: Vec<Mechanism>,
    /// The most base64 bytes one response may have (905 past it).
    pub max_payload: usize,
    /// Counted failures before [`Output::Disconnect`] (at least 1).
    pub max_failures: u32,
}

impl SaslConfig {
    /// PLAIN and SCRAM-SHA-256, and EXTERNAL if `external`; default limits.
    pub fn new(external: bool) -> SaslConfig {
        let mut mechanisms = vec![Mechanism::Plain, Mechanism::ScramSha256];
        if external {
            mechanisms.push(Mechanism::External);
        }
        SaslConfig {
            mechanisms,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_failures: DEFAULT_MAX_FAILURES,
        }
    }

    /// The comma-separated mechanism list (the cap value and 908's list).
    pub fn mechanism_list(&self) -> String {
        self.mechanisms
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for SaslConfig {
    fn default() -> Self {
        SaslConfig::new(false)
    }
}

/// Names one request, so its answer can be matched (answers to requests of
/// an aborted exchange are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Query(pub u64);

/// An account as the chat found it, answering a lookup.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Its name as registered (what the client is logged in as).
    pub name: String,
    /// Its credentials.
    pub credentials: Credentials,
    /// Administratively unavailable (suspended, ...): 902 instead of a login.
    pub locked: bool,
}

impl AccountInfo {
    /// From a store record (not locked: the chat sets `locked` from its flags).
    pub fn from_account(a: &Account) -> AccountInfo {
        AccountInfo {
            name: a.name.clone(),
            credentials: Credentials::parse(&a.password_hash),
            locked: false,
        }
    }
}

impl fmt::Debug for AccountInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountInfo")
            .field("name", &self.name)
            .field("credentials", &self.credentials)
            .field("locked", &self.locked)
            .finish()
    }
}

/// A reply to the client. [`Reply::render`] writes the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `AUTHENTICATE <chunk>`: `+` or up to 400 bytes of base64.
    Authenticate(String),
    /// 900 RPL_LOGGEDIN.
    LoggedIn {
        /// The account.
        account: String,
    },
    /// 901 RPL_LOGGEDOUT.
    LoggedOut,
    /// 902 ERR_NICKLOCKED.
    NickLocked,
    /// 903 RPL_SASLSUCCESS.
    Success,
    /// 904 ERR_SASLFAIL.
    Fail,
    /// 905 ERR_SASLTOOLONG.
    TooLong,
    /// 906 ERR_SASLABORTED.
    Aborted,
    /// 907 ERR_SASLALREADY.
    Already,
    /// 908 RPL_SASLMECHS with the comma-separated list.
    Mechanisms(String),
}

/// 900 RPL_LOGGEDIN.
pub const RPL_LOGGEDIN: u16 = 900;
/// 901 RPL_LOGGEDOUT.
pub const RPL_LOGGEDOUT: u16 = 901;
/// 902 ERR_NICKLOCKED.
pub const ERR_NICKLOCKED: u16 = 902;
/// 903 RPL_SASLSUCCESS.
pub const RPL_SASLSUCCESS: u16 = 903;
/// 904 ERR_SASLFAIL.
pub const ERR_SASLFAIL: u16 = 904;
/// 905 ERR_SASLTOOLONG.
pub const ERR_SASLTOOLONG: u16 = 905;
/// 906 ERR_SASLABORTED.
pub const ERR_SASLABORTED: u16 = 906;
/// 907 ERR_SASLALREADY.
pub const ERR_SASLALREADY: u16 = 907;
/// 908 RPL_SASLMECHS.
pub const RPL_SASLMECHS: u16 = 908;

impl Reply {
    /// The numeric, or `None` for `AUTHENTICATE`.
    pub fn code(&self) -> Option<u16> {
        Some(match self {
            Reply::Authenticate(_) => return None,
            Reply::LoggedIn { .. } => RPL_LOGGEDIN,
            Reply::LoggedOut => RPL_LOGGEDOUT,
            Reply::NickLocked => ERR_NICKLOCKED,
            Reply::Success => RPL_SASLSUCCESS,
            Reply::Fail => ERR_SASLFAIL,
            Reply::TooLong => ERR_SASLTOOLONG,
            Reply::Aborted => ERR_SASLABORTED,
            Reply::Already => ERR_SASLALREADY,
            Reply::Mechanisms(_) => RPL_SASLMECHS,
        })
    }

    /// Appends the line from `server` to the client `nick` (`*` before it has
    /// one), whose full mask `nick!ident@host` is `mask` (900 and 901 show it).
    pub fn write(&self, out: &mut Vec<u8>, server: &str, nick: &str, mask: &str) {
        let code = match self.code() {
            Some(code) => code,
            None => {
                if let Reply::Authenticate(chunk) = self {
                    write_line(out, server, "AUTHENTICATE", &[chunk], false);
                }
                return;
            }
        };
        let params: Vec<&str> = match self {
            Reply::LoggedIn { account } => {
                let text = format!("You are now logged in as {account}");
                return write_numeric(out, server, code, nick, &[mask, account, &text]);
            }
            Reply::LoggedOut => vec![mask, "You are now logged out"],
            Reply::NickLocked => vec!["You must use a nick assigned to you"],
            Reply::Success => vec!["SASL authentication successful"],
            Reply::Fail => vec!["SASL authentication failed"],
            Reply::TooLong => vec!["SASL message too long"],
            Reply::Aborted => vec!["SASL authentication aborted"],
            Reply::Already => vec!["You have already authenticated using SASL"],
            Reply::Mechanisms(list) => vec![list, "are available SASL mechanisms"],
            Reply::Authenticate(_) => return,
        };
        write_numeric(out, server, code, nick, &params);
    }

    /// [`Reply::write`] into a new buffer.
    pub fn render(&self, server: &str, nick: &str, mask: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        self.write(&mut out, server, nick, mask);
        out
    }
}

/// What the machine asks the chat to do, in order.
#[derive(Debug)]
pub enum Output {
    /// Send this to the client.
    Reply(Reply),
    /// Find the account `name` (any casing; it lives on its owner shard) and
    /// answer with [`Sasl::account_found`].
    LookupAccount {
        /// Pass back with the answer.
        query: Query,
        /// The account name (authcid).
        name: String,
    },
    /// Find the account with this certificate fingerprint (64 lowercase hex
    /// digits) and answer with [`Sasl::account_found`].
    LookupByFingerprint {
        /// Pass back with the answer.
        query: Query,
        /// The fingerprint.
        fingerprint: String,
    },
    /// Run `job` (off the loop: tens of ms) and answer with
    /// [`Sasl::password_checked`].
    VerifyPassword {
        /// Pass back with the answer.
        query: Query,
        /// The verification.
        job: VerifyJob,
    },
    /// The client is now logged in as `account`: set it (account-notify,
    /// account-tag, WHOIS 330). The 900 and 903 replies follow.
    LoggedIn {
        /// The account's registered name.
        account: String,
    },
    /// Close the connection with `ERROR :<reason>`, after the replies before.
    Disconnect {
        /// The reason ([`TOO_MANY_FAILURES`]).
        reason: &'static str,
    },
}

/// What the next chunked response is for.
enum Step {
    Plain,
    External,
    ScramFirst,
    ScramFinal {
        state: Box<AwaitingFinal>,
        account: String,
        locked: bool,
    },
    ScramEnd {
        account: String,
        locked: bool,
    },
}

/// What an awaited answer is for.
enum Wait {
    PlainAccount { password: Password },
    PlainVerify { account: String, locked: bool },
    ExternalAccount { authzid: String },
    ScramAccount { first: Box<ClientFirst> },
}

enum State {
    Idle,
    Reading(Step),
    Waiting {
        query: Query,
        wait: Wait,
    },
    /// Too many failures: the chat is closing the connection.
    Closed,
}

/// One client's SASL state. `Debug` shows the state's name, the failure
/// count and the account, never a payload.
pub struct Sasl {
    config: SaslConfig,
    fingerprint: Option<String>,
    state: State,
    /// Base64 collected for the response being read.
    buf: Zeroizing<String>,
    failures: u32,
    account: Option<String>,
    next_query: u64,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Idle => "idle",
            State::Reading(_) => "reading",
            State::Waiting { .. } => "waiting",
            State::Closed => "closed",
        };
        f.debug_struct("Sasl")
            .field("state", &state)
            .field("failures", &self.failures)
            .field("account", &self.account)
            .field("certificate", &self.fingerprint.is_some())
            .finish()
    }
}

/// The base64 of `payload` as `AUTHENTICATE` replies: 400-byte chunks, and a
/// `+` after a last chunk of exactly 400 (or alone, for an empty payload).
pub fn chunk_response(payload: &[u8]) -> Vec<Reply> {
    let b64 = STANDARD.encode(payload);
    let mut out: Vec<Reply> = b64
        .as_bytes()
        .chunks(CHUNK_LEN)
        // Base64 is ASCII: every chunk is valid UTF-8.
        .map(|c| Reply::Authenticate(String::from_utf8_lossy(c).into_owned()))
        .collect();
    if b64.len() % CHUNK_LEN == 0 {
        out.push(Reply::Authenticate("+".into()));
    }
    out
}

impl Sasl {
    /// A machine for a client whose verified TLS client certificate has this
    /// SHA-256 fingerprint (64 lowercase hex digits), if any.
    pub fn new(config: SaslConfig, cert_fingerprint: Option<String>) -> Sasl {
        Sasl {
            config,
            fingerprint: cert_fingerprint,
            state: State::Idle,
            buf: Zeroizing::new(String::new()),
            failures: 0,
            account: None,
            next_query: 0,
        }
    }

    /// The account the client logged in as, if it has.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// Sets or clears the account from outside (a `REGISTER SUCCESS` logs the
    /// client in; a deleted account logs it out). Ends any exchange silently.
    pub fn set_account(&mut self, account: Option<String>) {
        self.account = account;
        self.reset();
    }

    /// Counted failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether an exchange is under way (the chat may hold `CAP END` back, or
    /// call [`Sasl::registration_completed`]).
    pub fn in_progress(&self) -> bool {
        matches!(self.state, State::Reading(_) | State::Waiting { .. })
    }

    fn reset(&mut self) {
        if !matches!(self.state, State::Closed) {
            self.state = State::Idle;
        }
        self.buf.clear();
    }

    fn query(&mut self) -> Query {
        self.next_query += 1;
        Query(self.next_query)
    }

    /// Ends the exchange with 904, counting the failure if `counted`; past the
    /// limit, disconnects.
    fn fail(&mut self, counted: bool, out: &mut Vec<Output>) {
        self.reset();
        out.push(Output::Reply(Reply::Fail));
        if counted {
            self.failures += 1;
            if self.failures >= self.config.max_failures.max(1) {
                self.state = State::Closed;
                out.push(Output::Disconnect {
                    reason: TOO_MANY_FAILURES,
                });
            }
        }
    }

    fn succeed(&mut self, account: String, locked: bool, out: &mut Vec<Output>) {
        self.reset();
        if locked {
            out.push(Output::Reply(Reply::NickLocked));
            return;
        }
        self.account = Some(account.clone());
        out.push(Output::LoggedIn {
            account: account.clone(),
        });
        out.push(Output::Reply(Reply::LoggedIn { account }));
        out.push(Output::Reply(Reply::Success));
    }

    /// The client sent `AUTHENTICATE <param>`.
    pub fn authenticate(&mut self, param: &str) -> Vec<Output> {
        let mut out = Vec::new();
        if matches!(self.state, State::Closed) {
            out.push(Output::Reply(Reply::Fail));
            return out;
        }
        if self.account.is_some() {
            out.push(Output::Reply(Reply::Already));
            return out;
        }
        if param == "*" {
            self.reset();
            out.push(Output::Reply(Reply::Aborted));
            return out;
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => self.start(param, &mut out),
            State::Reading(step) => self.chunk(step, param, &mut out),
            State::Waiting { .. } => {
                // Only `*` may interrupt a pending answer; anything else is a
                // protocol error. The answer, when it comes, is ignored.
                self.fail(true, &mut out);
            }
            State::Closed => {}
        }
        out
    }

    fn start(&mut self, name: &str, out: &mut Vec<Output>) {
        let mech = Mechanism::parse(name).filter(|m| self.config.mechanisms.contains(m));
        let Some(mech) = mech else {
            out.push(Output::Reply(Reply::Mechanisms(
                self.config.mechanism_list(),
            )));
            out.push(Output::Reply(Reply::Fail));
            return;
        };
        let step = match mech {
            Mechanism::Plain => Step::Plain,
            Mechanism::ScramSha256 => Step::ScramFirst,
            Mechanism::External => {
                if self.fingerprint.is_none() {
                    // No certificate: nothing to try; the client falls back.
                    self.fail(false, out);
                    return;
                }
                Step::External
            }
        };
        self.buf.clear();
        self.state = State::Reading(step);
        out.push(Output::Reply(Reply::Authenticate("+".into())));
    }

    fn chunk(&mut self, step: Step, chunk: &str, out: &mut Vec<Output>) {
        if chunk.len() > CHUNK_LEN {
            self.reset();
            out.push(Output::Reply(Reply::TooLong));
            return;
        }
        if chunk != "+" {
            if self.buf.len() + chunk.len() > self.config.max_payload {
                self.reset();
                out.push(Output::Reply(Reply::TooLong));
                return;
            }
            self.buf.push_str(chunk);
            if chunk.len() == CHUNK_LEN {
                self.state = State::Reading(step);
                return;
            }
        }
        let payload = match STANDARD.decode(self.buf.as_bytes()) {
            Ok(p) => Zeroizing::new(p),
            Err(_) => {
                self.fail(true, out);
                return;
            }
        };
        self.buf.clear();
        self.response(step, &payload, out);
    }

    fn response(&mut self, step: Step, payload: &[u8], out: &mut Vec<Output>) {
        match step {
            Step::Plain => self.plain(payload, out),
            Step::External => {
                let (Ok(authzid), Some(fp)) =
                    (std::str::from_utf8(payload), self.fingerprint.clone())
                else {
                    return self.fail(true, out);
                };
                let query = self.query();
                self.state = State::Waiting {
                    query,
                    wait: Wait::ExternalAccount {
                        authzid: authzid.to_string(),
                    },
                };
                out.push(Output::LookupByFingerprint {
                    query,
                    fingerprint: fp,
                });
            }
            Step::ScramFirst => match ClientFirst::parse(payload) {
                Ok(first) => {
                    let query = self.query();
                    let name = first.username().to_string();
                    self.state = State::Waiting {
                        query,
                        wait: Wait::ScramAccount {
                            first: Box::new(first),
                        },
                    };
                    out.push(Output::LookupAccount { query, name });
                }
                Err(_) => self.fail(true, out),
            },
            Step::ScramFinal {
                state,
                account,
                locked,
            } => match state.finish(payload) {
                Ok(server_final) => {
                    self.state = State::Reading(Step::ScramEnd { account, locked });
                    out.extend(
                        chunk_response(server_final.as_bytes())
                            .into_iter()
                            .map(Output::Reply),
                    );
                }
                Err(_) => self.fail(true, out),
            },
            Step::ScramEnd { account, locked } => {
                if payload.is_empty() {
                    self.succeed(account, locked, out);
                } else {
                    self.fail(true, out);
                }
            }
        }
    }

    fn plain(&mut self, payload: &[u8], out: &mut Vec<Output>) {
        let mut parts = payload.splitn(3, |&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return self.fail(true, out);
        };
        let (Ok(authzid), Ok(authcid)) =
            (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
        else {
            return self.fail(true, out);
        };
        if authcid.is_empty()
            || password.is_empty()
            || password.contains(&0)
            || (!authzid.is_empty() && casefold(authzid) != casefold(authcid))
        {
            return self.fail(true, out);
        }
        let query = self.query();
        self.state = State::Waiting {
            query,
            wait: Wait::PlainAccount {
                password: Password::from_slice(password),
            },
        };
        out.push(Output::LookupAccount {
            query,
            name: authcid.to_string(),
        });
    }

    /// Answers a [`Output::LookupAccount`] or [`Output::LookupByFingerprint`]:
    /// the account, or `None` if there is none. An answer to another query
    /// than the one awaited is ignored.
    pub fn account_found(&mut self, query: Query, found: Option<AccountInfo>) -> Vec<Output> {
        let mut out = Vec::new();
        let wait = match std::mem::replace(&mut self.state, State::Idle) {
            State::Waiting { query: q, wait } if q == query => wait,
            other => {
                self.state = other;
                return out;
            }
        };
        let Some(info) = found else {
            self.fail(true, &mut out);
            return out;
        };
        match wait {
            Wait::PlainAccount { password } => {
                if !info.credentials.has_password() {
                    self.fail(true, &mut out);
                    return out;
                }
                let query = self.query();
                self.state = State::Waiting {
                    query,
                    wait: Wait::PlainVerify {
                        account: info.name,
                        locked: info.locked,
                    },
                };
                out.push(Output::VerifyPassword {
                    query,
                    job: VerifyJob {
                        password,
                        phc: info.credentials.phc,
                    },
                });
            }
            Wait::ExternalAccount { authzid } => {
                if !authzid.is_empty() && casefold(&authzid) != casefold(&info.name) {
                    self.fail(true, &mut out);
                } else {
                    self.succeed(info.name, info.locked, &mut out);
                }
            }
            Wait::ScramAccount { first } => {
                let Some(cred) = &info.credentials.scram else {
                    // No SCRAM data: not a guess; the client falls back to PLAIN.
                    self.fail(false, &mut out);
                    return out;
                };
                match first.challenge(cred) {
                    Ok((state, server_first)) => {
                        self.state = State::Reading(Step::ScramFinal {
                            state: Box::new(state),
                            account: info.name,
                            locked: info.locked,
                        });
                        out.extend(
                            chunk_response(server_first.as_bytes())
                                .into_iter()
                                .map(Output::Reply),
                        );
                    }
                    Err(_) => self.fail(false, &mut out),
                }
            }
            Wait::PlainVerify { .. } => {
                // A lookup answer where a verification was awaited: the chat
                // mixed up its queries. Fail safe.
                self.fail(false, &mut out);
            }
        }
        out
    }

    /// Answers a [`Output::VerifyPassword`]: `Ok(true)` if the password
    /// matched. `Err` (an unusable stored hash: the chat should log it) fails
    /// like a wrong password. An answer to another query is ignored.
    pub fn password_checked(
        &mut self,
        query: Query,
        result: Result<bool, HashError>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Waiting {
                query: q,
                wait: Wait::PlainVerify { account, locked },
            } if q == query => {
                if result == Ok(true) {
                    self.succeed(account, locked, &mut out);
                } else {
                    self.fail(true, &mut out);
                }
            }
            other => self.state = other,
        }
        out
    }

    /// A [`Output::VerifyPassword`] could not be run (the chat's hashing queue
    /// is full): 904 as for a failure, but not counted — the client guessed
    /// nothing. An answer to another query is ignored.
    pub fn check_unavailable(&mut self, query: Query) -> Vec<Output> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Waiting { query: q, .. } if q == query => self.fail(false, &mut out),
            other => self.state = other,
        }
        out
    }

    /// Connection registration completed (CAP END, or NICK/USER without CAP
    /// negotiation): an exchange under way is aborted with 906, and any answer
    /// still coming is ignored.
    pub fn registration_completed(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.in_progress() {
            self.reset();
            out.push(Output::Reply(Reply::Aborted));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{client, ScramCredential};

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    fn replies(out: &[Output]) -> Vec<Reply> {
        out.iter()
            .filter_map(|o| match o {
                Output::Reply(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn codes(out: &[Output]) -> Vec<u16> {
        out.iter()
            .filter_map(|o| match o {
                Output::Reply(r) => r.code(),
                _ => None,
            })
            .collect()
    }

    fn alice(locked: bool) -> AccountInfo {
        AccountInfo {
            name: "Alice".into(),
            credentials: Credentials::from_password_cheap(&Password::from("correct horse"))
                .unwrap(),
            locked,
        }
    }

    fn lookup(out: &[Output]) -> (Query, String) {
        match out {
            [Output::LookupAccount { query, name }] => (*query, name.clone()),
            other => panic!("expected a lookup, got {other:?}"),
        }
    }

    fn verify(out: Vec<Output>) -> (Query, Result<bool, HashError>) {
        match out.as_slice() {
            [Output::VerifyPassword { query, job }] => (*query, job.clone().run()),
            other => panic!("expected a verification, got {other:?}"),
        }
    }

    fn plain_payload(authzid: &str, authcid: &str, pw: &str) -> String {
        b64(format!("{authzid}\0{authcid}\0{pw}").as_bytes())
    }

    /// PLAIN up to the lookup.
    fn start_plain(s: &mut Sasl, authzid: &str, authcid: &str, pw: &str) -> Vec<Output> {
        assert_eq!(
            replies(&s.authenticate("PLAIN")),
            [Reply::Authenticate("+".into())]
        );
        s.authenticate(&plain_payload(authzid, authcid, pw))
    }

    fn plain_login(s: &mut Sasl, authcid: &str, pw: &str) -> Vec<Output> {
        let out = start_plain(s, "", authcid, pw);
        let (q, name) = lookup(&out);
        assert_eq!(name, authcid);
        let (q, result) = verify(s.account_found(q, Some(alice(false))));
        s.password_checked(q, result)
    }

    #[test]
    fn plain_success_logs_in_with_900_903() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let out = plain_login(&mut s, "alice", "correct horse");
        assert!(matches!(&out[0], Output::LoggedIn { account } if account == "Alice"));
        assert_eq!(codes(&out), [900, 903]);
        assert_eq!(s.account(), Some("Alice"));
        assert!(!s.in_progress());
        // Then 907 for any further AUTHENTICATE.
        assert_eq!(codes(&s.authenticate("PLAIN")), [907]);
        assert_eq!(codes(&s.authenticate("*")), [907]);
    }

    #[test]
    fn plain_wrong_password_904_and_retry() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let out = plain_login(&mut s, "alice", "wrong horse");
        assert_eq!(codes(&out), [904]);
        assert_eq!(s.failures(), 1);
        assert_eq!(s.account(), None);
        let out = plain_login(&mut s, "alice", "correct horse");
        assert_eq!(codes(&out), [900, 903]);
    }

    #[test]
    fn a_verification_that_could_not_run_fails_uncounted() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let out = start_plain(&mut s, "", "alice", "correct horse");
        let (q, _) = lookup(&out);
        let (q, _) = verify(s.account_found(q, Some(alice(false))));
        // A stale query changes nothing.
        assert!(s.check_unavailable(Query(q.0 + 100)).is_empty());
        assert!(s.in_progress());
        assert_eq!(codes(&s.check_unavailable(q)), [904]);
        assert_eq!(s.failures(), 0);
        assert!(!s.in_progress());
        // The late answer to it is ignored.
        assert!(s.password_checked(q, Ok(true)).is_empty());
        assert_eq!(s.account(), None);
    }

    #[test]
    fn plain_authzid_must_be_empty_or_the_authcid() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        // Another identity: refused before any lookup.
        let out = start_plain(&mut s, "bob", "alice", "correct horse");
        assert_eq!(codes(&out), [904]);
        assert_eq!(s.failures(), 1);
        // The same identity in another casing is fine.
        let out = start_plain(&mut s, "ALICE", "alice", "correct horse");
        let (q, _) = lookup(&out);
        let (q, r) = verify(s.account_found(q, Some(alice(false))));
        assert_eq!(codes(&s.password_checked(q, r)), [900, 903]);
    }

    #[test]
    fn plain_malformed_payloads_fail() {
        for payload in [
            b64(b"alice\0correct horse"),  // one NUL
            b64(b"\0\0correct horse"),     // no authcid
            b64(b"\0alice\0"),             // no password
            b64(b"\0alice\0pass\0word"),   // NUL in password
            b64(b"\0\xffalice\0password"), // not UTF-8
            "!!!notbase64".into(),
        ] {
            let mut s = Sasl::new(SaslConfig::default(), None);
            s.authenticate("PLAIN");
            assert_eq!(codes(&s.authenticate(&payload)), [904], "{payload}");
        }
    }

    #[test]
    fn plain_unknown_account_and_no_password() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let (q, _) = lookup(&start_plain(&mut s, "", "nobody", "correct horse"));
        assert_eq!(codes(&s.account_found(q, None)), [904]);
        let (q, _) = lookup(&start_plain(&mut s, "", "certonly", "correct horse"));
        let mut info = alice(false);
        info.credentials = Credentials::default();
        assert_eq!(codes(&s.account_found(q, Some(info))), [904]);
        assert_eq!(s.failures(), 2);
    }

    #[test]
    fn locked_account_gets_902_after_the_password() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let (q, _) = lookup(&start_plain(&mut s, "", "alice", "correct horse"));
        let (q, r) = verify(s.account_found(q, Some(alice(true))));
        assert_eq!(codes(&s.password_checked(q, r)), [902]);
        assert_eq!(s.account(), None);
        assert_eq!(s.failures(), 0);
        // A wrong password on a locked account is a plain 904.
        let (q, _) = lookup(&start_plain(&mut s, "", "alice", "wrong"));
        let (q, r) = verify(s.account_found(q, Some(alice(true))));
        assert_eq!(codes(&s.password_checked(q, r)), [904]);
    }

    #[test]
    fn unknown_mechanism_908_then_904_uncounted() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let out = s.authenticate("DIGEST-MD5");
        assert_eq!(
            replies(&out),
            [Reply::Mechanisms("PLAIN,SCRAM-SHA-256".into()), Reply::Fail]
        );
        assert_eq!(s.failures(), 0);
        // EXTERNAL is unknown where it is not offered.
        assert_eq!(codes(&s.authenticate("EXTERNAL")), [908, 904]);
        assert_eq!(codes(&s.authenticate("+")), [908, 904]);
        // Names are case-insensitive.
        assert_eq!(
            replies(&s.authenticate("plain")),
            [Reply::Authenticate("+".into())]
        );
    }

    #[test]
    fn abort_at_every_stage() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        // Nothing in progress: still 906.
        assert_eq!(codes(&s.authenticate("*")), [906]);
        // After the mechanism.
        s.authenticate("PLAIN");
        assert!(s.in_progress());
        assert_eq!(codes(&s.authenticate("*")), [906]);
        assert!(!s.in_progress());
        // Mid-chunks.
        s.authenticate("PLAIN");
        assert!(s.authenticate(&"A".repeat(400)).is_empty());
        assert_eq!(codes(&s.authenticate("*")), [906]);
        // While the lookup is out: its answer is then ignored.
        let (q, _) = lookup(&start_plain(&mut s, "", "alice", "correct horse"));
        assert_eq!(codes(&s.authenticate("*")), [906]);
        assert!(s.account_found(q, Some(alice(false))).is_empty());
        // While the verification runs.
        let (q, _) = lookup(&start_plain(&mut s, "", "alice", "correct horse"));
        let (q, r) = verify(s.account_found(q, Some(alice(false))));
        assert_eq!(codes(&s.authenticate("*")), [906]);
        assert!(s.password_checked(q, r).is_empty());
        assert_eq!(s.account(), None);
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn stale_answers_are_ignored() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let (q1, _) = lookup(&start_plain(&mut s, "", "alice", "correct horse"));
        s.authenticate("*");
        let (q2, _) = lookup(&start_plain(&mut s, "", "alice", "wrong"));
        assert_ne!(q1, q2);
        assert!(s.account_found(q1, Some(alice(false))).is_empty());
        assert!(
            s.password_checked(q2, Ok(true)).is_empty(),
            "not a verify query"
        );
        let (q3, r) = verify(s.account_found(q2, Some(alice(false))));
        assert!(
            s.password_checked(q2, Ok(true)).is_empty(),
            "stale verify answer"
        );
        assert_eq!(codes(&s.password_checked(q3, r)), [904]);
    }

    #[test]
    fn chunking_at_exactly_400_bytes() {
        // A PLAIN payload whose base64 is exactly 400 bytes: 300 raw bytes.
        let pw = "p".repeat(300 - "\0alice\0".len());
        let payload = plain_payload("", "alice", &pw);
        assert_eq!(payload.len(), 400);
        let mut s = Sasl::new(SaslConfig::default(), None);
        s.authenticate("PLAIN");
        assert!(
            s.authenticate(&payload).is_empty(),
            "400 bytes: more follows"
        );
        let (_, name) = lookup(&s.authenticate("+"));
        assert_eq!(name, "alice");

        // 800 bytes: two full chunks and `+`.
        let pw = "p".repeat(600 - "\0alice\0".len());
        let payload = plain_payload("", "alice", &pw);
        assert_eq!(payload.len(), 800);
        let mut s = Sasl::new(SaslConfig::default(), None);
        s.authenticate("PLAIN");
        assert!(s.authenticate(&payload[..400]).is_empty());
        assert!(s.authenticate(&payload[400..]).is_empty());
        let out = s.authenticate("+");
        let (q, _) = lookup(&out);
        match s.account_found(q, Some(alice(false))).as_slice() {
            [Output::VerifyPassword { job, .. }] => {
                assert_eq!(job.password.as_bytes(), pw.as_bytes())
            }
            other => panic!("{other:?}"),
        }

        // 401 bytes: a full chunk then a 1-byte... here a 4-byte tail.
        let pw = "p".repeat(303 - "\0alice\0".len());
        let payload = plain_payload("", "alice", &pw);
        assert_eq!(payload.len(), 404);
        let mut s = Sasl::new(SaslConfig::default(), None);
        s.authenticate("PLAIN");
        assert!(s.authenticate(&payload[..400]).is_empty());
        lookup(&s.authenticate(&payload[400..]));
    }

    #[test]
    fn chunk_over_400_is_905() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        s.authenticate("PLAIN");
        assert_eq!(codes(&s.authenticate(&"A".repeat(401))), [905]);
        assert!(!s.in_progress());
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn oversize_payload_is_905() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        s.authenticate("PLAIN");
        for _ in 0..DEFAULT_MAX_PAYLOAD / CHUNK_LEN {
            assert!(s.authenticate(&"A".repeat(400)).is_empty());
        }
        // 8000 bytes so far; 192 more fit, 400 do not.
        assert_eq!(codes(&s.authenticate(&"A".repeat(400))), [905]);
        assert!(!s.in_progress());
        // Exactly at the cap is fine (then it must decode: it does not here).
        let mut s = Sasl::new(
            SaslConfig {
                max_payload: 800,
                ..SaslConfig::default()
            },
            None,
        );
        s.authenticate("PLAIN");
        assert!(s.authenticate(&"A".repeat(400)).is_empty());
        assert!(s.authenticate(&"A".repeat(400)).is_empty());
        assert_eq!(codes(&s.authenticate("A")), [905]);
    }

    #[test]
    fn three_failures_disconnect() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        for i in 1..=3u32 {
            let out = plain_login(&mut s, "alice", "wrong horse");
            assert_eq!(codes(&out), [904]);
            assert_eq!(s.failures(), i);
            if i < 3 {
                assert!(!out.iter().any(|o| matches!(o, Output::Disconnect { .. })));
            } else {
                assert!(matches!(
                    out.last(),
                    Some(Output::Disconnect { reason }) if *reason == TOO_MANY_FAILURES
                ));
            }
        }
        // Anything after is refused.
        assert_eq!(codes(&s.authenticate("PLAIN")), [904]);
        assert_eq!(codes(&s.authenticate("*")), [904]);
    }

    #[test]
    fn interrupting_a_pending_answer_fails() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let (q, _) = lookup(&start_plain(&mut s, "", "alice", "correct horse"));
        assert_eq!(codes(&s.authenticate("PLAIN")), [904]);
        assert!(s.account_found(q, Some(alice(false))).is_empty());
    }

    #[test]
    fn registration_completing_aborts() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        assert!(s.registration_completed().is_empty());
        let (q, _) = lookup(&start_plain(&mut s, "", "alice", "correct horse"));
        assert_eq!(codes(&s.registration_completed()), [906]);
        assert!(s.account_found(q, Some(alice(false))).is_empty());
    }

    fn fp() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn external_with_certificate() {
        let mut s = Sasl::new(SaslConfig::new(true), Some(fp()));
        assert_eq!(
            replies(&s.authenticate("EXTERNAL")),
            [Reply::Authenticate("+".into())]
        );
        let out = s.authenticate("+");
        let q = match out.as_slice() {
            [Output::LookupByFingerprint { query, fingerprint }] => {
                assert_eq!(*fingerprint, fp());
                *query
            }
            other => panic!("{other:?}"),
        };
        let out = s.account_found(q, Some(alice(false)));
        assert_eq!(codes(&out), [900, 903]);
        assert_eq!(s.account(), Some("Alice"));
    }

    #[test]
    fn external_authzid_must_match() {
        for (authzid, ok) in [("alice", true), ("ALICE", true), ("bob", false)] {
            let mut s = Sasl::new(SaslConfig::new(true), Some(fp()));
            s.authenticate("EXTERNAL");
            let out = s.authenticate(&b64(authzid.as_bytes()));
            let [Output::LookupByFingerprint { query, .. }] = out.as_slice() else {
                panic!("{out:?}");
            };
            let codes = codes(&s.account_found(*query, Some(alice(false))));
            assert_eq!(codes, if ok { vec![900, 903] } else { vec![904] });
        }
    }

    #[test]
    fn external_without_certificate_or_unknown_certificate() {
        // Offered (a TLS listener asks for certificates) but this client sent none.
        let mut s = Sasl::new(SaslConfig::new(true), None);
        assert_eq!(codes(&s.authenticate("EXTERNAL")), [904]);
        assert_eq!(s.failures(), 0);
        assert!(!s.in_progress());
        // A certificate no account lists.
        let mut s = Sasl::new(SaslConfig::new(true), Some(fp()));
        s.authenticate("EXTERNAL");
        let out = s.authenticate("+");
        let [Output::LookupByFingerprint { query, .. }] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert_eq!(codes(&s.account_found(*query, None)), [904]);
        assert_eq!(s.failures(), 1);
    }

    /// Runs SCRAM through the machine with a client that knows `password`.
    fn scram_login(s: &mut Sasl, info: AccountInfo, password: &str) -> Vec<Output> {
        assert_eq!(
            replies(&s.authenticate("SCRAM-SHA-256")),
            [Reply::Authenticate("+".into())]
        );
        let bare = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
        let out = s.authenticate(&b64(format!("n,,{bare}").as_bytes()));
        let (q, name) = lookup(&out);
        assert_eq!(name, "alice");
        let out = s.account_found(q, Some(info));
        let [Output::Reply(Reply::Authenticate(server_first))] = out.as_slice() else {
            return out;
        };
        let server_first = String::from_utf8(STANDARD.decode(server_first).unwrap()).unwrap();
        let fin = client::client_final(password, "n,,", bare, &server_first);
        let out = s.authenticate(&b64(fin.as_bytes()));
        let [Output::Reply(Reply::Authenticate(v))] = out.as_slice() else {
            return out;
        };
        let v = String::from_utf8(STANDARD.decode(v).unwrap()).unwrap();
        assert!(v.starts_with("v="));
        assert!(s.in_progress(), "logged in only after the empty response");
        s.authenticate("+")
    }

    #[test]
    fn scram_success() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let out = scram_login(&mut s, alice(false), "correct horse");
        assert!(matches!(&out[0], Output::LoggedIn { account } if account == "Alice"));
        assert_eq!(codes(&out), [900, 903]);
    }

    #[test]
    fn scram_wrong_password() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let out = scram_login(&mut s, alice(false), "wrong horse");
        assert_eq!(codes(&out), [904]);
        assert_eq!(s.failures(), 1);
    }

    #[test]
    fn scram_without_scram_data_fails_cleanly_for_fallback() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let mut info = alice(false);
        info.credentials.scram = None;
        let out = scram_login(&mut s, info, "correct horse");
        assert_eq!(codes(&out), [904]);
        assert_eq!(s.failures(), 0, "a fallback, not a guess");
        // PLAIN then works.
        assert_eq!(
            codes(&plain_login(&mut s, "alice", "correct horse")),
            [900, 903]
        );
    }

    #[test]
    fn scram_locked_and_unknown() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        assert_eq!(
            codes(&scram_login(&mut s, alice(true), "correct horse")),
            [902]
        );
        s.authenticate("SCRAM-SHA-256");
        let (q, _) = lookup(&s.authenticate(&b64(b"n,,n=alice,r=abc")));
        assert_eq!(codes(&s.account_found(q, None)), [904]);
    }

    #[test]
    fn scram_bad_messages_and_nonempty_end() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        s.authenticate("SCRAM-SHA-256");
        assert_eq!(
            codes(&s.authenticate(&b64(b"p=tls-unique,,n=alice,r=abc"))),
            [904]
        );
        s.authenticate("SCRAM-SHA-256");
        assert_eq!(
            codes(&s.authenticate(&b64(b"n,a=bob,n=alice,r=abc"))),
            [904]
        );
        s.authenticate("SCRAM-SHA-256");
        assert_eq!(codes(&s.authenticate("+")), [904], "empty client-first");
        // A client-final that is garbage.
        let mut s = Sasl::new(SaslConfig::default(), None);
        s.authenticate("SCRAM-SHA-256");
        let (q, _) = lookup(&s.authenticate(&b64(b"n,,n=alice,r=abc")));
        s.account_found(q, Some(alice(false)));
        assert_eq!(codes(&s.authenticate(&b64(b"garbage"))), [904]);
    }

    #[test]
    fn scram_long_client_nonce_gets_chunked_challenge() {
        // A 700-byte client nonce makes server-first longer than 400 bytes of
        // base64: the server chunks it.
        let mut s = Sasl::new(SaslConfig::default(), None);
        s.authenticate("SCRAM-SHA-256");
        let nonce = "x".repeat(700);
        let first = b64(format!("n,,n=alice,r={nonce}").as_bytes());
        let mut out = Vec::new();
        for c in first.as_bytes().chunks(400) {
            out = s.authenticate(std::str::from_utf8(c).unwrap());
        }
        if first.len() % 400 == 0 {
            out = s.authenticate("+");
        }
        let (q, _) = lookup(&out);
        let out = s.account_found(q, Some(alice(false)));
        let chunks = replies(&out);
        assert!(chunks.len() >= 2);
        let mut joined = String::new();
        for (i, c) in chunks.iter().enumerate() {
            let Reply::Authenticate(c) = c else { panic!() };
            if i + 1 < chunks.len() {
                assert_eq!(c.len(), 400);
            }
            if c != "+" {
                joined.push_str(c);
            }
        }
        let decoded = String::from_utf8(STANDARD.decode(joined).unwrap()).unwrap();
        assert!(decoded.starts_with(&format!("r={nonce}")));
    }

    #[test]
    fn chunk_response_boundaries() {
        assert_eq!(chunk_response(b""), [Reply::Authenticate("+".into())]);
        assert_eq!(chunk_response(b"abc"), [Reply::Authenticate("YWJj".into())]);
        let r = chunk_response(&[0u8; 300]); // 400 base64 bytes
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], Reply::Authenticate("+".into()));
        let r = chunk_response(&[0u8; 301]);
        assert_eq!(r.len(), 2);
        assert_ne!(r[1], Reply::Authenticate("+".into()));
    }

    #[test]
    fn cap_values() {
        assert_eq!(cap_value(false), "PLAIN,SCRAM-SHA-256");
        assert_eq!(cap_value(true), "PLAIN,SCRAM-SHA-256,EXTERNAL");
        assert_eq!(
            Mechanism::parse("scram-sha-256"),
            Some(Mechanism::ScramSha256)
        );
        assert_eq!(Mechanism::parse("SCRAM-SHA-1"), None);
    }

    #[test]
    fn numeric_formats() {
        let r = |reply: Reply| {
            String::from_utf8(reply.render(
                "srv.test",
                "jilles",
                "jilles!jilles@localhost.stack.nl",
            ))
            .unwrap()
        };
        assert_eq!(
            r(Reply::LoggedIn {
                account: "jilles".into()
            }),
            ":srv.test 900 jilles jilles!jilles@localhost.stack.nl jilles :You are now logged in as jilles\r\n"
        );
        assert_eq!(
            r(Reply::LoggedOut),
            ":srv.test 901 jilles jilles!jilles@localhost.stack.nl :You are now logged out\r\n"
        );
        assert_eq!(
            r(Reply::NickLocked),
            ":srv.test 902 jilles :You must use a nick assigned to you\r\n"
        );
        assert_eq!(
            r(Reply::Success),
            ":srv.test 903 jilles :SASL authentication successful\r\n"
        );
        assert_eq!(
            r(Reply::Fail),
            ":srv.test 904 jilles :SASL authentication failed\r\n"
        );
        assert_eq!(
            r(Reply::TooLong),
            ":srv.test 905 jilles :SASL message too long\r\n"
        );
        assert_eq!(
            r(Reply::Aborted),
            ":srv.test 906 jilles :SASL authentication aborted\r\n"
        );
        assert_eq!(
            r(Reply::Already),
            ":srv.test 907 jilles :You have already authenticated using SASL\r\n"
        );
        assert_eq!(
            r(Reply::Mechanisms("PLAIN,SCRAM-SHA-256".into())),
            ":srv.test 908 jilles PLAIN,SCRAM-SHA-256 :are available SASL mechanisms\r\n"
        );
        assert_eq!(
            r(Reply::Authenticate("+".into())),
            ":srv.test AUTHENTICATE +\r\n"
        );
        // Before registration the target is `*`.
        assert_eq!(
            String::from_utf8(Reply::Fail.render("srv.test", "*", "*")).unwrap(),
            ":srv.test 904 * :SASL authentication failed\r\n"
        );
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let mut s = Sasl::new(SaslConfig::default(), None);
        let out = start_plain(&mut s, "", "alice", "hunter2hunter2");
        let (q, _) = lookup(&out);
        let out = s.account_found(q, Some(alice(false)));
        let shown = format!("{out:?} {s:?} {:?}", alice(false));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("$argon2"), "{shown}");
        // A SCRAM state in progress neither.
        let cred = ScramCredential::with_iterations(b"hunter2", 4096).unwrap();
        assert!(!format!("{cred:?}").contains(&cred.encode()));
    }
}
