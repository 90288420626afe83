//! A shard's local view of a channel its clients are in: the fan-out list, plus
//! what WHO and WHOIS need without asking the owner (the display name, `+s`, each
//! local member's prefixes). Changed only by the owner's deliveries, so it follows
//! the channel's event order.

use crate::mail::ViewUpdate;

/// One local member and its prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMember {
    /// The client's id on this shard.
    pub id: u64,
    /// `@`.
    pub op: bool,
    /// `+`.
    pub voice: bool,
}

impl LocalMember {
    /// Its prefix, see [`prefix`].
    pub fn prefix(&self, multi: bool) -> &'static str {
        prefix(self.op, self.voice, multi)
    }
}

/// The prefix NAMES, WHO and WHOIS show for a member: every one with
/// `multi-prefix`, else the highest.
pub fn prefix(op: bool, voice: bool, multi: bool) -> &'static str {
    match (op, voice) {
        (true, true) if multi => "@+",
        (true, _) => "@",
        (false, true) => "+",
        (false, false) => "",
    }
}

/// This shard's clients in one channel.
#[derive(Debug)]
pub struct LocalChan {
    /// The channel's display name.
    pub name: String,
    /// `+s`.
    pub secret: bool,
    /// The local members, in join order.
    pub members: Vec<LocalMember>,
}

impl LocalChan {
    /// The view of a channel first seen with `name`.
    pub fn new(name: String) -> LocalChan {
        LocalChan {
            name,
            secret: false,
            members: Vec::new(),
        }
    }

    /// Applies an owner's update; `me` is this shard.
    pub fn apply(&mut self, v: &ViewUpdate, me: usize) {
        if let Some(name) = &v.name {
            self.name.clone_from(name);
        }
        if let Some(secret) = v.secret {
            self.secret = secret;
        }
        for &(who, op, voice) in v.prefixes.iter().filter(|p| p.0.shard == me) {
            if let Some(m) = self.members.iter_mut().find(|m| m.id == who.id) {
                m.op = op;
                m.voice = voice;
            }
        }
    }

    /// The member with id `id`.
    pub fn member(&self, id: u64) -> Option<&LocalMember> {
        self.members.iter().find(|m| m.id == id)
    }
}
