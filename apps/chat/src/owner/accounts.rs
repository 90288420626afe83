//! Accounts on the owner's side: an account lives in its owner shard's store
//! (the owner of `store::account_key(name)`, the same shard that owns the nick
//! of that name), so it is looked up, created and made unique there.
//!
//! - **Lookup** (SASL PLAIN, SCRAM): the owner answers with
//!   [`AccountInfo`] — the name, the argon2 PHC string and the SCRAM
//!   credential, what the client's SASL machine needs; the record's other
//!   fields stay here.
//! - **Registration**: the owner checks the name is free and puts the record
//!   (memory at once, so a second `REGISTER` of the name, from any shard,
//!   finds it taken: the owner's queue orders them); the reply waits for the
//!   record's store ticket, so `REGISTER SUCCESS` means durable. A failed
//!   write is reverted by the store and answered `TEMPORARILY_UNAVAILABLE`.
//! - **Certificate fingerprints** (SASL EXTERNAL): each owner indexes the
//!   fingerprints of its own accounts — built from the store at start, kept
//!   current when it puts an account — and a lookup asks every shard, which
//!   the client's shard merges. Keying fingerprints to an owner of their own
//!   would save the fan-out, but its index would then have to follow changes
//!   to accounts on other shards (at start too, where every store would have
//!   to tell every fingerprint owner); EXTERNAL happens once per connection,
//!   and asking every shard is one small request each. Fingerprints are only
//!   attached offline (`shardline-chat account cert add`), so the index never
//!   races a running change.

use std::collections::HashMap;

use shardline::{Ctx, ShardId};
use tracing::{error, info, warn};

use super::{reply, Answer, Owner};
use crate::{
    auth::{
        record::{has_fingerprint, new_account, normalize_fingerprint},
        sasl::AccountInfo,
    },
    clock,
    mail::{ChatMsg, ClientRef, RegisterError, ReplyBody, Request},
    shard::{ChatShard, Outbox},
    store::{account_key, Completed, Ticket},
};

/// A registration or lookup waiting for the cluster's engine.
#[derive(Debug)]
pub(crate) enum AccountWait {
    /// `REGISTER`: the name is free here; is it free in the cluster?
    Register {
        /// Who asked.
        from: ClientRef,
        /// The name.
        name: String,
        /// Its credentials.
        credentials: Box<crate::auth::record::Credentials>,
    },
    /// A SASL lookup of an account this node's store does not have.
    Lookup {
        /// Who asked.
        from: ClientRef,
        /// The query to answer.
        query: u64,
    },
}

/// The engine's value for an account: `<name>\n<credentials>`.
pub(crate) fn engine_value(name: &str, credentials: &crate::auth::record::Credentials) -> String {
    format!("{name}\n{}", credentials.encode())
}

/// An account from its engine value.
pub(crate) fn from_engine_value(value: &str) -> Option<AccountInfo> {
    let (name, creds) = value.split_once('\n')?;
    (!name.is_empty()).then(|| AccountInfo {
        name: name.to_string(),
        credentials: crate::auth::record::Credentials::parse(creds),
        locked: false,
    })
}

/// The owner's account state beyond the store.
#[derive(Debug, Default)]
pub(crate) struct OwnerAccounts {
    /// Fingerprint -> keys of the accounts here that list it.
    certs: HashMap<String, Vec<String>>,
    /// Registrations whose record is not durable yet: who asked, the name.
    pending: HashMap<Ticket, (ClientRef, String)>,
}

impl Owner {
    /// Indexes the certificate fingerprints of this shard's accounts (after
    /// its store opened).
    pub(crate) fn index_certs(&mut self) {
        let Some(store) = self.history.store() else {
            return;
        };
        let mut certs: HashMap<String, Vec<String>> = HashMap::new();
        for a in store.accounts() {
            for fp in a
                .cert_fingerprints
                .iter()
                .filter_map(|f| normalize_fingerprint(f))
            {
                certs.entry(fp).or_default().push(account_key(&a.name));
            }
        }
        self.accounts.certs = certs;
    }

    /// Brings the index up to date for account `key` after a change.
    fn reindex(&mut self, key: &str) {
        self.accounts.certs.retain(|_, keys| {
            keys.retain(|k| k != key);
            !keys.is_empty()
        });
        let Some(a) = self.history.store().and_then(|s| s.account(key)) else {
            return;
        };
        for fp in a
            .cert_fingerprints
            .iter()
            .filter_map(|f| normalize_fingerprint(f))
        {
            self.accounts
                .certs
                .entry(fp)
                .or_default()
                .push(key.to_string());
        }
    }

    /// The engine answered a registration's claim of its name: free in the
    /// cluster (`Some(true)`: stored here now), registered on another node
    /// (`Some(false)`), or the engine could not be asked (`None`: uniqueness
    /// cannot be promised, so `TEMPORARILY_UNAVAILABLE`).
    pub(crate) fn engine_account_claimed(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        token: u64,
        result: Option<bool>,
    ) {
        let Some(AccountWait::Register {
            from,
            name,
            credentials,
        }) = self.account_waits.remove(&token)
        else {
            return;
        };
        let refuse = |name, e| {
            reply(ReplyBody::AccountRegistered {
                name,
                result: Err(e),
            })
        };
        let here = self
            .history
            .store()
            .is_some_and(|s| s.account(&name).is_some());
        let (_, body) = match result {
            Some(true) if !here => self.register_here(ctx, from, name, &credentials),
            Some(_) => refuse(name, RegisterError::Exists),
            None => refuse(name, RegisterError::Unavailable),
        };
        if let Some(body) = body {
            outbox.post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
        }
    }

    /// The engine answered a lookup of an account this node does not have.
    pub(crate) fn engine_account_found(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        token: u64,
        value: Option<&str>,
    ) {
        let Some(AccountWait::Lookup { from, query }) = self.account_waits.remove(&token) else {
            return;
        };
        let info = value.and_then(from_engine_value).map(Box::new);
        let body = ReplyBody::AccountFound { query, info };
        outbox.post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
    }

    /// This shard's accounts as the engine keeps them (to claim again when
    /// the link comes back): (key, value).
    pub(crate) fn engine_accounts(&self) -> Vec<(String, String)> {
        let Some(store) = self.history.store() else {
            return Vec::new();
        };
        store
            .accounts()
            .map(|a| {
                (
                    account_key(&a.name),
                    format!("{}\n{}", a.name, a.password_hash),
                )
            })
            .collect()
    }

    /// Puts a new account in this shard's store; answered when the record
    /// is durable (`None` here) or at once when it cannot be stored.
    fn register_here(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        from: ClientRef,
        name: String,
        credentials: &crate::auth::record::Credentials,
    ) -> Answer {
        let record = new_account(&name, credentials, clock::now_millis());
        match self.history.put_account(ctx, record) {
            Ok(ticket) => {
                self.reindex(&account_key(&name));
                self.accounts.pending.insert(ticket, (from, name));
                // Answered when the ticket completes.
                (0, None)
            }
            Err(crate::store::StoreError::Detached) => {
                info!(shard = ctx.shard_id().0, account = %name,
                    "REGISTER refused: the data directory was handed to a new process (an upgrade)");
                reply(ReplyBody::AccountRegistered {
                    name,
                    result: Err(RegisterError::Unavailable),
                })
            }
            Err(e) => {
                error!(shard = ctx.shard_id().0, error = %e, "cannot store a new account");
                reply(ReplyBody::AccountRegistered {
                    name,
                    result: Err(RegisterError::Unavailable),
                })
            }
        }
    }

    pub(super) fn account_request(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        from: ClientRef,
        req: Request,
    ) -> Answer {
        match req {
            Request::AccountLookup { name, query } => {
                let info = self
                    .history
                    .store()
                    .and_then(|s| s.account(&name))
                    .map(|a| Box::new(AccountInfo::from_account(a)));
                if info.is_none() && self.cluster {
                    // Registered on another node: the engine has it.
                    self.claim_seq += 1;
                    let token = self.claim_seq;
                    self.account_waits
                        .insert(token, AccountWait::Lookup { from, query });
                    let key = account_key(&name);
                    self.engine_out
                        .push(super::EngineOp::AccountGet { token, key });
                    return (0, None);
                }
                reply(ReplyBody::AccountFound { query, info })
            }
            Request::CertLookup { fingerprint, query } => {
                let found = match (self.history.store(), self.accounts.certs.get(&fingerprint)) {
                    (Some(store), Some(keys)) => keys
                        .iter()
                        .filter_map(|k| store.account(k))
                        .filter(|a| has_fingerprint(a, &fingerprint))
                        .map(AccountInfo::from_account)
                        .collect(),
                    _ => Vec::new(),
                };
                reply(ReplyBody::CertFound { query, found })
            }
            Request::RegisterAccount { name, credentials } => {
                let taken = match self.history.store() {
                    Some(store) => store.account(&name).is_some(),
                    None => {
                        return reply(ReplyBody::AccountRegistered {
                            name,
                            result: Err(RegisterError::Unavailable),
                        })
                    }
                };
                if taken {
                    return reply(ReplyBody::AccountRegistered {
                        name,
                        result: Err(RegisterError::Exists),
                    });
                }
                if self.cluster {
                    // Free here; the engine says whether it is in the cluster.
                    self.claim_seq += 1;
                    let token = self.claim_seq;
                    let key = account_key(&name);
                    let value = engine_value(&name, &credentials);
                    self.account_waits.insert(
                        token,
                        AccountWait::Register {
                            from,
                            name,
                            credentials,
                        },
                    );
                    self.engine_out
                        .push(super::EngineOp::AccountClaim { token, key, value });
                    return (0, None);
                }
                self.register_here(ctx, from, name, &credentials)
            }
            _ => reply(ReplyBody::Done),
        }
    }

    /// Account tickets that completed: answers the registrations waiting for
    /// them.
    pub(crate) fn tickets_done(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        done: Vec<Completed>,
    ) {
        for c in done {
            let Some((from, name)) = self.accounts.pending.remove(&c.ticket) else {
                continue;
            };
            let result = match c.result {
                Ok(()) => Ok(()),
                Err(e) => {
                    // The store put the account back as it was on disk.
                    warn!(shard = ctx.shard_id().0, account = %name, error = %e, "a new account was not written");
                    self.reindex(&account_key(&name));
                    Err(RegisterError::Unavailable)
                }
            };
            let body = ReplyBody::AccountRegistered { name, result };
            outbox.post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
        }
    }
}
