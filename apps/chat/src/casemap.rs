//! Names: rfc1459 casefolding, nick and channel syntax, and which shard owns a name.
//!
//! Ownership must be a pure function of the casefolded name and the shard count, so
//! that every shard computes the same owner without asking anyone: FNV-1a over the
//! casefolded bytes, modulo the number of shards. Never use a randomly seeded hasher
//! here (std's `HashMap` hasher would give each shard a different answer).

use std::sync::Arc;

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

/// The shard that owns an already casefolded name.
pub fn owner_of_key(key: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
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
