//! Accounts on the client's side: `AUTHENTICATE` (SASL) and `REGISTER`
//! (`draft/account-registration`), wired as `auth/mod.rs` describes.
//!
//! The client's [`Sasl`] machine decides every reply; this file carries out
//! what it asks. An account lookup is a request to the account's owner shard,
//! an EXTERNAL lookup a request to every shard (merged here), a password check
//! a job for the hashing pool ([`crate::auth::pool`]). Each of them counts as
//! an unanswered request of the client (`unreplied`, the PING barrier), and the
//! command parks the client's input until it is answered: the next line —
//! another `AUTHENTICATE`, `CAP END`, a `PING` — runs only after the answer
//! was applied, so the exchange is never raced by the client's own lines, and
//! each connection has at most one hashing job at a time.
//!
//! `REGISTER` validates on the spot ([`register::validate`]), has the pool make
//! the credentials (argon2 and SCRAM: the slow part), then asks the account's
//! owner to create it; the owner answers once the record is durable. Success
//! logs the client in, as if by SASL (900, and [`ChatShard::set_account`]).

use shardline::Ctx;
use tracing::warn;

use super::Flow;
use crate::{
    auth::{
        password::{HashError, VerifyJob},
        pool::{HashDone, Job, Outcome, Work},
        record::Credentials,
        register::{self, Fail, Refusal, RegisterContext},
        sasl::{self, AccountInfo, Output, Query, Reply, Sasl, SaslConfig},
    },
    casemap::owner_of,
    client::{CertGather, Client},
    mail::{Caps, RegisterError, Request},
    shard::ChatShard,
};

/// The `nick!user@host` that 900 shows: the mask once registered, else what
/// is known so far (`*` for what is not).
fn login_mask(c: &Client) -> String {
    if !c.mask.is_empty() {
        return c.mask.to_string();
    }
    format!(
        "{}!{}@{}",
        c.nick_or_star(),
        c.user.as_deref().unwrap_or("*"),
        c.host
    )
}

impl ChatShard {
    /// Whether EXTERNAL can work for `c`: a TLS client on a server that asks
    /// for client certificates.
    fn external_possible(&self, c: &Client) -> bool {
        c.tls.is_some() && self.info.config.tls.client_ca.is_some()
    }

    /// The value of `cap` in `CAP LS 302` for client `c`, if it has one.
    pub(crate) fn cap_value(&self, cap: Caps, c: &Client) -> Option<String> {
        if cap == Caps::SASL {
            Some(sasl::cap_value(self.external_possible(c)))
        } else if cap == Caps::ACCOUNT_REGISTRATION {
            register::cap_value(&self.info.config.accounts.register_config())
                .filter(|v| !v.is_empty())
        } else {
            None
        }
    }

    /// Whether `cap` is offered now.
    pub(crate) fn cap_offered(&self, cap: Caps) -> bool {
        if cap == Caps::CHATHISTORY {
            self.history_on()
        } else if cap == Caps::SASL {
            self.accounts_on()
        } else if cap == Caps::ACCOUNT_REGISTRATION {
            self.accounts_on() && self.info.config.accounts.register_config().open
        } else {
            true
        }
    }

    /// `AUTHENTICATE <param>`.
    pub(super) fn cmd_authenticate(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        let Some(param) = p.first().filter(|p| !p.is_empty()) else {
            return self.need_more_params(ctx, id, "AUTHENTICATE");
        };
        let external = self
            .clients
            .get(&id)
            .is_some_and(|c| self.external_possible(c));
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        if !c.caps.has(Caps::SASL) {
            // SASL is negotiated first (sasl-3.1): without the cap, a failure.
            let out = Reply::Fail.render(self.info.name(), c.nick_or_star(), &login_mask(c));
            self.send_line(ctx, id, &out);
            return Flow::Next;
        }
        let certfp = c.tls.as_ref().and_then(|t| t.certfp.clone());
        let sasl = c
            .auth
            .sasl
            .get_or_insert_with(|| Box::new(Sasl::new(SaslConfig::new(external), certfp)));
        let outs = sasl.authenticate(param);
        self.sasl_outputs(ctx, id, outs);
        Flow::Park
    }

    /// Carries out what the client's SASL machine asked, in order.
    pub(crate) fn sasl_outputs(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        outs: Vec<Output>,
    ) {
        for o in outs {
            // A FILEHOST upload's Basic credentials (see `filehost`).
            let Some(o) = self.filehost_sasl(ctx, id, o) else {
                continue;
            };
            let Some(c) = self.clients.get(&id) else {
                return;
            };
            if c.quitting.is_some() {
                return;
            }
            match o {
                Output::Reply(r) => {
                    match r {
                        Reply::Success => self.stats.sasl_success.add(1),
                        Reply::Fail => self.stats.sasl_failure.add(1),
                        _ => {}
                    }
                    let out = r.render(self.info.name(), c.nick_or_star(), &login_mask(c));
                    self.send_line(ctx, id, &out);
                }
                Output::LookupAccount { query, name } => {
                    let to = owner_of(&name, self.shards);
                    let req = Request::AccountLookup {
                        name,
                        query: query.0,
                    };
                    if !self.request(ctx, id, to, req) {
                        return;
                    }
                }
                Output::LookupByFingerprint { query, fingerprint } => {
                    let shards = self.shards;
                    if let Some(c) = self.clients.get_mut(&id) {
                        c.auth.cert_lookup = Some(CertGather {
                            query: query.0,
                            remaining: shards,
                            found: Vec::new(),
                        });
                    }
                    for s in 0..shards {
                        let req = Request::CertLookup {
                            fingerprint: fingerprint.clone(),
                            query: query.0,
                        };
                        if !self.request(ctx, id, s, req) {
                            return;
                        }
                    }
                }
                Output::VerifyPassword { query, job } => self.submit_verify(ctx, id, query, job),
                Output::LoggedIn { account } => {
                    self.set_account(ctx, id, Some(account));
                }
                Output::Disconnect { reason } => {
                    self.begin_quit(ctx, id, reason.to_string());
                    return;
                }
            }
        }
    }

    /// Hands a password check to the pool; a full queue fails the exchange
    /// (904, not counted against the client).
    fn submit_verify(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        query: Query,
        job: VerifyJob,
    ) {
        let job = Job {
            shard: self.me,
            client: id,
            query: query.0,
            work: Work::Verify(job),
        };
        let submitted = match self.hasher() {
            Some(pool) => pool.submit(job).is_ok(),
            None => false,
        };
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if submitted {
            // Answered by a HashDone: the client waits for it like for a reply.
            c.unreplied += 1;
            return;
        }
        self.stats.hash_queue_full.add(1);
        let outs = match c.auth.sasl.as_mut() {
            Some(s) => s.check_unavailable(query),
            None => return,
        };
        self.sasl_outputs(ctx, id, outs);
    }

    /// The owner answered an account lookup.
    pub(crate) fn sasl_account_found(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        query: u64,
        info: Option<AccountInfo>,
    ) {
        let Some(sasl) = self.clients.get_mut(&id).and_then(|c| c.auth.sasl.as_mut()) else {
            return;
        };
        let outs = sasl.account_found(Query(query), info);
        self.sasl_outputs(ctx, id, outs);
    }

    /// One shard answered an EXTERNAL lookup; the last answer decides. Two
    /// accounts with the same certificate are ambiguous: no account.
    pub(crate) fn sasl_cert_found(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        query: u64,
        found: Vec<AccountInfo>,
    ) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let Some(g) = c.auth.cert_lookup.as_mut().filter(|g| g.query == query) else {
            return;
        };
        g.remaining = g.remaining.saturating_sub(1);
        g.found.extend(found);
        if g.remaining > 0 {
            return;
        }
        let Some(mut g) = c.auth.cert_lookup.take() else {
            return;
        };
        let info = if g.found.len() > 1 {
            let names: Vec<&str> = g.found.iter().map(|a| a.name.as_str()).collect();
            warn!(shard = self.me, client = id, accounts = ?names, "one certificate fingerprint is attached to several accounts: EXTERNAL refused");
            None
        } else {
            g.found.pop()
        };
        self.sasl_account_found(ctx, id, query, info);
    }

    /// A job of the hashing pool finished (posted back through a `Remote`).
    pub(crate) fn hash_done(&mut self, ctx: &mut Ctx<'_, ChatShard>, done: HashDone) {
        let HashDone {
            client: id,
            query,
            outcome,
        } = done;
        let Some(c) = self.clients.get_mut(&id) else {
            // It left (ids are never reused): nobody to answer.
            return;
        };
        c.unreplied = c.unreplied.saturating_sub(1);
        if c.quitting.is_none() {
            match outcome {
                Outcome::Verified(result) => {
                    if let Some(sasl) = c.auth.sasl.as_mut() {
                        let outs = sasl.password_checked(Query(query), result);
                        self.sasl_outputs(ctx, id, outs);
                    }
                }
                Outcome::Credentials(result) => self.register_hashed(ctx, id, query, result),
            }
        }
        self.settle(ctx, id);
    }

    /// `REGISTER <account> <email> <password>`.
    pub(super) fn cmd_register(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        let accounts = &self.info.config.accounts;
        let mut config = accounts.register_config();
        // No store, no accounts: registration is closed whatever the file says.
        config.open &= self.accounts_on();
        let cheap = accounts.test_cheap_hashes;
        let nicklen = self.info.config.limits.nicklen;
        let server = self.info.name().to_string();
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let rctx = RegisterContext {
            nick: c.nick.as_deref(),
            connected: c.registered,
            account: c.account.as_deref(),
            nicklen,
        };
        let reg = match register::validate(p, &rctx, &config) {
            Ok(reg) => reg,
            Err(Refusal::NeedMoreParams) => return self.need_more_params(ctx, id, "REGISTER"),
            Err(Refusal::Fail(f)) => {
                self.send_line(ctx, id, &f.render(&server));
                return Flow::Next;
            }
        };
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        c.auth.next_query += 1;
        let query = c.auth.next_query;
        let job = Job {
            shard: self.me,
            client: id,
            query,
            work: Work::Credentials {
                password: reg.password,
                cheap,
            },
        };
        let submitted = match self.hasher() {
            Some(pool) => pool.submit(job).is_ok(),
            None => false,
        };
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        if !submitted {
            self.stats.hash_queue_full.add(1);
            let fail = Fail::temporarily_unavailable(&reg.account);
            self.send_line(ctx, id, &fail.render(&server));
            return Flow::Next;
        }
        c.unreplied += 1;
        c.auth.registering = Some((query, reg.account));
        Flow::Park
    }

    /// The pool made a registration's credentials: ask the account's owner.
    fn register_hashed(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        query: u64,
        result: Result<Credentials, HashError>,
    ) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let Some((_, name)) = c.auth.registering.take_if(|(q, _)| *q == query) else {
            return;
        };
        match result {
            Ok(credentials) => {
                let to = owner_of(&name, self.shards);
                let req = Request::RegisterAccount {
                    name,
                    credentials: Box::new(credentials),
                };
                self.request(ctx, id, to, req);
            }
            Err(_) => {
                let fail = Fail::temporarily_unavailable(&name);
                self.send_line(ctx, id, &fail.render(self.info.name()));
            }
        }
    }

    /// The owner created the account (durably) or refused.
    pub(crate) fn account_registered(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        name: String,
        result: Result<(), RegisterError>,
    ) {
        let server = self.info.name().to_string();
        if result.is_ok() {
            // Counted even if the client is leaving: the account exists.
            self.stats.accounts_registered.add(1);
        }
        let Some(c) = self.clients.get_mut(&id).filter(|c| c.quitting.is_none()) else {
            return;
        };
        match result {
            Ok(()) => {
                let mut out = register::success(&server, &name);
                // Logged in "as if it used SASL": 900, and the account set.
                Reply::LoggedIn {
                    account: name.clone(),
                }
                .write(&mut out, &server, c.nick_or_star(), &login_mask(c));
                if let Some(sasl) = c.auth.sasl.as_mut() {
                    sasl.set_account(Some(name.clone()));
                } else {
                    let mut sasl = Sasl::new(SaslConfig::new(false), None);
                    sasl.set_account(Some(name.clone()));
                    c.auth.sasl = Some(Box::new(sasl));
                }
                self.send_line(ctx, id, &out);
                self.set_account(ctx, id, Some(name));
            }
            Err(e) => {
                let fail = match e {
                    RegisterError::Exists => Fail::account_exists(&name),
                    RegisterError::Unavailable => Fail::temporarily_unavailable(&name),
                };
                self.send_line(ctx, id, &fail.render(&server));
            }
        }
    }

    /// `CAP END` (or registration without CAP) while an exchange is under
    /// way: it is aborted (906).
    pub(crate) fn sasl_registration_completed(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(sasl) = self.clients.get_mut(&id).and_then(|c| c.auth.sasl.as_mut()) else {
            return;
        };
        let outs = sasl.registration_completed();
        self.sasl_outputs(ctx, id, outs);
    }
}
