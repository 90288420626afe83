//! Names: rfc1459 casefolding, nick and channel syntax, and which shard owns a name.
//!
//! Ownership must be a pure function of the casefolded name and the shard count, so
//! that every shard computes the same owner without asking anyone. It is the
//! store's: a name's **partition** is FNV-1a 64 over the casefolded bytes modulo
//! [`crate::store::PARTITIONS`] (64), and its owner shard is that partition modulo the number of
//! shards ([`crate::store::partition_of`], [`crate::store::shard_of_partition`]).
//! So a shard owns whole partitions, the store files of the names it owns are its
//! own (shared nothing), and a restart with another shard count hands the same
//! files to other shards. Never use a randomly seeded hasher here (std's `HashMap`
//! hasher would give each shard a different answer).
//!
//! With more than 64 shards the shards past the 64th own no names; below that,
//! a shard count that does not divide 64 gives some shards one partition more
//! than others (at 48 shards, 16 of them own two and 32 own one).

use std::sync::Arc;

use crate::store::{partition_of, shard_of_partition};

/// A casefolded name (nick or channel): the key under which its owner stores it.
pub type NameKey = Arc<str>;

/// Casefolds `name` with the rfc1459 casemapping: ASCII letters to lower case, and
/// `[]\~` to `{}|^`. Other bytes are kept.
pub fn casefold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            other => other,
        })
        .collect()
}

/// The shard that owns `name` (any casing) among `shards` shards.
pub fn owner_of(name: &str, shards: usize) -> usize {
    owner_of_key(&casefold(name), shards)
}

/// The shard that owns an already casefolded name (or a store key such as a
/// conversation's): its partition modulo the shard count.
pub fn owner_of_key(key: &str, shards: usize) -> usize {
    shard_of_partition(partition_of(key), shards)
}

fn is_special(c: char) -> bool {
    matches!(c, '[' | ']' | '\\' | '`' | '_' | '^' | '{' | '|' | '}')
}

/// Whether `nick` is a valid nickname of at most `max_len` bytes: a letter or
/// special first, then letters, digits, specials or `-`.
pub fn valid_nick(nick: &str, max_len: usize) -> bool {
    let mut chars = nick.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    nick.len() <= max_len
        && (first.is_ascii_alphabetic() || is_special(first))
        && chars.all(|c| c.is_ascii_alphanumeric() || is_special(c) || c == '-')
}

/// Whether `name` is a valid channel name of at most `max_len` bytes: `#` and then
/// anything but space, comma, colon, BEL, NUL, CR and LF.
pub fn valid_channel(name: &str, max_len: usize) -> bool {
    name.len() > 1
        && name.len() <= max_len
        && name.starts_with('#')
        && !name
            .chars()
            .any(|c| matches!(c, ' ' | ',' | ':' | '\x07' | '\0' | '\r' | '\n'))
}

/// Whether a message target names a channel (rather than a nick).
pub fn is_channel_name(target: &str) -> bool {
    target.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PARTITIONS;

    #[test]
    fn rfc1459_folds_brackets() {
        assert_eq!(casefold("Nick[A]\\~"), "nick{a}|^");
        assert_eq!(casefold("#Chan"), "#chan");
        assert_eq!(casefold("ÄB"), "Äb", "non-ASCII is kept");
    }

    #[test]
    fn owner_is_case_insensitive_and_in_range() {
        for shards in 1..8 {
            assert_eq!(owner_of("Foo[]", shards), owner_of("fOO{}", shards));
            assert!(owner_of("#x", shards) < shards);
        }
    }

    /// FNV-1a 64 of `key`, as written out in the store's format description.
    fn fnv1a(key: &str) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }

    #[test]
    fn owner_is_the_partition_modulo_the_shard_count() {
        let names: Vec<String> = (0..500).map(|i| format!("#name{i}")).collect();
        for shards in [1, 2, 3, 4, 5, 7, 8, 16, 48, 64] {
            let mut per_shard = vec![0usize; shards];
            for n in &names {
                let key = casefold(n);
                let p = fnv1a(&key) % u64::from(PARTITIONS);
                let owner = owner_of(n, shards);
                assert_eq!(owner, (p as usize) % shards, "{n} at {shards} shards");
                assert_eq!(owner, shard_of_partition(partition_of(&key), shards));
                per_shard[owner] += 1;
            }
            // Every shard owns names (500 names over at most 64 partitions).
            assert!(per_shard.iter().all(|&c| c > 0), "{shards}: {per_shard:?}");
        }
    }

    #[test]
    fn a_shard_owns_whole_partitions() {
        // Two names in one partition have one owner at every shard count: what
        // lets a restart with another count hand each store file to one shard.
        let key = casefold("#rust");
        let p = partition_of(&key);
        let twin = (0..)
            .map(|i| format!("#twin{i}"))
            .find(|n| partition_of(&casefold(n)) == p)
            .expect("some name shares the partition");
        for shards in 1..=70 {
            assert_eq!(owner_of("#rust", shards), owner_of(&twin, shards));
        }
        // Past 64 shards the later ones own nothing.
        assert!((0..PARTITIONS).all(|p| shard_of_partition(p, 70) < 64));
    }

    #[test]
    fn nick_syntax() {
        assert!(valid_nick("alice", 30));
        assert!(valid_nick("[bot]-1", 30));
        assert!(!valid_nick("1alice", 30));
        assert!(!valid_nick("", 30));
        assert!(!valid_nick("a b", 30));
        assert!(!valid_nick("#chan", 30));
        assert!(!valid_nick("abcdef", 5));
    }

    #[test]
    fn channel_syntax() {
        assert!(valid_channel("#rust", 50));
        assert!(!valid_channel("#", 50));
        assert!(!valid_channel("rust", 50));
        assert!(!valid_channel("#a,b", 50));
        assert!(!valid_channel("#a\x07", 50));
    }
}
