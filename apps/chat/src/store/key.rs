//! Keys and partitions: where a record lives, independent of the shard count.
//!
//! Every record belongs to one key — an account name, a channel, or a private
//! conversation — and every key to one of [`PARTITIONS`] partitions by a stable
//! hash of its bytes. The chat makes a key's owner shard `partition % shards`,
//! so a shard owns whole partitions, and the files never depend on how many
//! shards there are.

use crate::casemap::casefold;

/// The fixed number of partitions (one log file each).
pub const PARTITIONS: u16 = 64;

/// The partition of a key (as built by [`account_key`], [`channel_key`] or
/// [`conversation_key`]): FNV-1a 64 over its bytes, modulo [`PARTITIONS`]. The
/// chat's owner of a name ([`crate::casemap::owner_of_key`]) is
/// `partition_of(key) % shards`.
pub fn partition_of(key: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(PARTITIONS)) as u16
}

/// The shard that owns `partition` among `shards` shards.
pub fn shard_of_partition(partition: u16, shards: usize) -> usize {
    usize::from(partition) % shards.max(1)
}

/// The key of an account: its name casefolded (rfc1459).
pub fn account_key(name: &str) -> String {
    casefold(name)
}

/// The key of a channel's history: its name casefolded (rfc1459). Channel keys
/// start with `#`, which no account name does.
pub fn channel_key(name: &str) -> String {
    casefold(name)
}

/// The key of the private conversation between two accounts, the same from
/// both sides: the two casefolded names, sorted, joined by a space (which no
/// nick, account or channel name contains). A conversation with oneself is
/// `"name name"`.
pub fn conversation_key(a: &str, b: &str) -> String {
    let (a, b) = (casefold(a), casefold(b));
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{lo} {hi}")
}

/// Whether `key` is a channel's key (as opposed to a conversation's).
pub fn is_channel_key(key: &str) -> bool {
    key.starts_with('#')
}

/// The two account keys of a conversation key, or `None` if `key` is not one.
pub fn conversation_parties(key: &str) -> Option<(&str, &str)> {
    if is_channel_key(key) {
        return None;
    }
    key.split_once(' ')
}

/// The other party of conversation `key` as seen by `account_key` (casefolded),
/// or `None` if the conversation is not one of that account's.
pub fn conversation_peer<'k>(key: &'k str, account_key: &str) -> Option<&'k str> {
    let (a, b) = conversation_parties(key)?;
    if a == account_key {
        Some(b)
    } else if b == account_key {
        Some(a)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::casemap::owner_of_key;

    #[test]
    fn the_owner_shard_is_the_partition_modulo_the_shard_count() {
        for key in ["alice", "#rust", "alice bob", "", "ÄÖ"] {
            assert_eq!(usize::from(partition_of(key)), owner_of_key(key, 64));
            assert!(partition_of(key) < PARTITIONS);
            for shards in 1..=9 {
                assert_eq!(
                    owner_of_key(key, shards),
                    usize::from(partition_of(key)) % shards
                );
            }
        }
    }

    #[test]
    fn conversation_key_is_symmetric_and_casefolded() {
        assert_eq!(conversation_key("Bob", "alice"), "alice bob");
        assert_eq!(conversation_key("alice", "BOB"), "alice bob");
        assert_eq!(conversation_key("x[", "x{"), "x{ x{");
        let k = conversation_key("Zed", "amy");
        assert_eq!(conversation_peer(&k, "amy"), Some("zed"));
        assert_eq!(conversation_peer(&k, "zed"), Some("amy"));
        assert_eq!(conversation_peer(&k, "bob"), None);
        assert_eq!(conversation_peer("#chan", "amy"), None);
        assert!(is_channel_key(&channel_key("#Rust")));
        assert!(!is_channel_key(&k));
    }

    #[test]
    fn shards_own_whole_partitions() {
        for shards in 1..=8 {
            let owned: usize = (0..shards)
                .map(|s| {
                    (0..PARTITIONS)
                        .filter(|&p| shard_of_partition(p, shards) == s)
                        .count()
                })
                .sum();
            assert_eq!(owned, usize::from(PARTITIONS));
        }
    }
}
