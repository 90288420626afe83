//! Masks: IRC wildcard patterns (`*` any run, `?` any one character) matched
//! under the rfc1459 casemapping, and ban masks in their `nick!user@host` form.
//!
//! Matching is iterative with one backtrack point, so no pattern a client sends
//! can make it take more than `pattern × text` steps.

use crate::casemap::casefold;

/// Whether `text` matches the wildcard `pattern`; both must already be casefolded
/// (see [`casefold`]).
pub fn matches_folded(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether `text` matches `pattern`, ignoring case (rfc1459).
pub fn matches(pattern: &str, text: &str) -> bool {
    matches_folded(&casefold(pattern), &casefold(text))
}

/// Whether `s` has wildcards.
pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// The longest ban mask kept, bytes.
pub const MAX_BAN_MASK: usize = 120;

/// Completes a ban mask to `nick!user@host`: `nick` alone becomes `nick!*@*`,
/// `user@host` becomes `*!user@host`, `nick!user` becomes `nick!user@*`, and
/// empty parts become `*`. `None` if nothing usable is left.
pub fn normalize_ban(mask: &str) -> Option<String> {
    let mask = mask.trim_start_matches(':');
    if mask.is_empty() || mask.len() > MAX_BAN_MASK || mask.contains([',', ' ']) {
        return None;
    }
    let (nick, rest) = match mask.split_once('!') {
        Some((n, r)) => (n, Some(r)),
        None => (mask, None),
    };
    let (nick, user, host) = match rest {
        Some(r) => match r.split_once('@') {
            Some((u, h)) => (nick, u, h),
            None => (nick, r, ""),
        },
        None => match nick.split_once('@') {
            Some((u, h)) => ("", u, h),
            None => (nick, "", ""),
        },
    };
    let part = |s: &str| {
        if s.is_empty() {
            "*".to_string()
        } else {
            s.replace(['!', '@'], "")
        }
    };
    Some(format!("{}!{}@{}", part(nick), part(user), part(host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("*", ""));
        assert!(matches("a*", "abc"));
        assert!(matches("*!*@127.0.0.1", "bob!~bob@127.0.0.1"));
        assert!(matches("B?B!*", "bob!x@y"));
        assert!(matches("*c", "abcbc"));
        assert!(!matches("a?", "a"));
        assert!(!matches("*!*@10.*", "bob!~bob@127.0.0.1"));
        assert!(matches("[x]*", "{X}y"), "rfc1459 folding");
        let long = "a".repeat(2000);
        assert!(!matches(&"*a".repeat(50).replace("a", "*b"), &long));
    }

    #[test]
    fn ban_masks_are_completed() {
        assert_eq!(normalize_ban("bob").as_deref(), Some("bob!*@*"));
        assert_eq!(normalize_ban("*@host").as_deref(), Some("*!*@host"));
        assert_eq!(normalize_ban("bob!~b").as_deref(), Some("bob!~b@*"));
        assert_eq!(normalize_ban("a!b@c").as_deref(), Some("a!b@c"));
        assert_eq!(normalize_ban("!@").as_deref(), Some("*!*@*"));
        assert_eq!(normalize_ban(""), None);
        assert_eq!(normalize_ban("a,b"), None);
    }
}
