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
                let record = new_account(&name, &credentials, clock::now_millis());
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
