//! Completeness and order: after a run, every member of a room must have received
//! every message of the other senders exactly once, and all in one order.

use super::irc::id_parts;

/// What [`check_room`] found in one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomVerdict {
    /// Each message × the other members.
    pub expected: u64,
    /// Distinct expected messages members received.
    pub received: u64,
    /// expected − received.
    pub lost: u64,
    /// Repeated receptions.
    pub duplicates: u64,
    /// Members whose order disagrees with the reference order.
    pub out_of_order: usize,
    /// Ids outside what was sent, or a sender's own messages.
    pub unexpected: u64,
    /// The first problems, in words.
    pub problems: Vec<String>,
}

/// Checks one room after a run. Member *i* < `sent.len()` is sender *i*, which
/// sent `sent[i]` messages (sequence numbers `0..sent[i]`); `views[m]` is what
/// member *m* received, in order. Every member must receive every message of the
/// other senders exactly once, and all members must agree on one order: the
/// reference is the order of the listener that received the most, and every
/// member's sequence must appear in it in increasing positions.
pub fn check_room(sent: &[u64], views: &[&[u32]]) -> RoomVerdict {
    let mut v = RoomVerdict::default();
    let senders = sent.len();
    let note = |v: &mut RoomVerdict, s: String| {
        if v.problems.len() < 3 {
            v.problems.push(s);
        }
    };
    // Reference: the listener (not a sender) with the longest view.
    let reference = views
        .iter()
        .enumerate()
        .filter(|(m, _)| *m >= senders)
        .max_by_key(|(_, view)| view.len())
        .map(|(_, view)| *view)
        .unwrap_or(&[]);
    let mut position: Vec<Vec<u32>> = sent.iter().map(|&n| vec![u32::MAX; n as usize]).collect();
    for (p, &id) in reference.iter().enumerate() {
        let (s, seq) = id_parts(id);
        if let Some(slot) = position.get_mut(s).and_then(|x| x.get_mut(seq as usize)) {
            if *slot == u32::MAX {
                *slot = p as u32;
            }
        }
    }
    let mut seen: Vec<Vec<bool>> = sent.iter().map(|&n| vec![false; n as usize]).collect();
    for (m, view) in views.iter().enumerate() {
        for x in &mut seen {
            x.fill(false);
        }
        let expected: u64 = (0..senders).filter(|&s| s != m).map(|s| sent[s]).sum();
        v.expected += expected;
        let mut got = 0u64;
        let mut last: Option<u32> = None;
        let mut disorder = false;
        for &id in view.iter() {
            let (s, seq) = id_parts(id);
            if s == m || s >= senders || seq >= sent[s] {
                v.unexpected += 1;
                continue;
            }
            let slot = &mut seen[s][seq as usize];
            if *slot {
                v.duplicates += 1;
                note(
                    &mut v,
                    format!("member {m} received message {s}/{seq} twice"),
                );
                continue;
            }
            *slot = true;
            got += 1;
            let p = position[s][seq as usize];
            if p == u32::MAX {
                continue; // the reference never got it: nothing to compare with
            }
            if let Some(l) = last {
                if p <= l && !disorder {
                    disorder = true;
                    let (ls, lseq) = id_parts(reference[l as usize]);
                    note(
                        &mut v,
                        format!(
                            "member {m} received {s}/{seq} after {ls}/{lseq}; the room's order has it before"
                        ),
                    );
                }
            }
            last = Some(last.map_or(p, |l| l.max(p)));
        }
        v.received += got;
        if got < expected {
            note(
                &mut v,
                format!("member {m} received {got} of {expected} messages"),
            );
        }
        v.out_of_order += usize::from(disorder);
    }
    v.lost = v.expected.saturating_sub(v.received);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::irc::message_id;

    fn ids(list: &[(usize, u64)]) -> Vec<u32> {
        list.iter().map(|&(s, q)| message_id(s, q)).collect()
    }

    #[test]
    fn a_complete_room_in_one_order_passes() {
        // Two senders (members 0 and 1), two listeners; each sender sent 2.
        let order = [(0, 0), (1, 0), (0, 1), (1, 1)];
        let all = ids(&order);
        let s0 = ids(&[(1, 0), (1, 1)]);
        let s1 = ids(&[(0, 0), (0, 1)]);
        let views: Vec<&[u32]> = vec![&s0, &s1, &all, &all];
        let v = check_room(&[2, 2], &views);
        assert_eq!(v.expected, 2 + 2 + 4 + 4);
        assert_eq!(v.received, v.expected);
        assert_eq!(
            (v.lost, v.duplicates, v.out_of_order, v.unexpected),
            (0, 0, 0, 0)
        );
        assert!(v.problems.is_empty(), "{:?}", v.problems);
    }

    #[test]
    fn loss_duplicates_disorder_and_strangers_are_found() {
        let reference = ids(&[(0, 0), (1, 0), (0, 1), (1, 1)]);
        // Listener 3 swapped two messages of different senders.
        let swapped = ids(&[(1, 0), (0, 0), (0, 1), (1, 1)]);
        // Sender 0 lost one message of sender 1 and got one twice.
        let s0 = ids(&[(1, 1), (1, 1)]);
        // Sender 1 received its own message and one that was never sent.
        let s1 = ids(&[(0, 0), (1, 0), (0, 1), (0, 9)]);
        let views: Vec<&[u32]> = vec![&s0, &s1, &reference, &swapped];
        let v = check_room(&[2, 2], &views);
        assert_eq!(v.expected, 12);
        assert_eq!(v.lost, 1, "{v:?}");
        assert_eq!(v.duplicates, 1, "{v:?}");
        assert_eq!(v.unexpected, 2, "{v:?}");
        assert_eq!(v.out_of_order, 1, "{v:?}");
        assert!(!v.problems.is_empty());
    }

    #[test]
    fn a_sender_order_differing_from_the_listeners_is_disorder() {
        let reference = ids(&[(0, 0), (1, 0), (2, 0)]);
        // Sender 0 sees 2/0 before 1/0.
        let s0 = ids(&[(2, 0), (1, 0)]);
        let s1 = ids(&[(0, 0), (2, 0)]);
        let s2 = ids(&[(0, 0), (1, 0)]);
        let views: Vec<&[u32]> = vec![&s0, &s1, &s2, &reference];
        let v = check_room(&[1, 1, 1], &views);
        assert_eq!((v.lost, v.out_of_order), (0, 1), "{v:?}");
    }

    #[test]
    fn loss_alone_is_not_disorder() {
        let reference = ids(&[(0, 0), (0, 1), (0, 2)]);
        let gappy = ids(&[(0, 0), (0, 2)]);
        let views: Vec<&[u32]> = vec![&[], &reference, &gappy];
        let v = check_room(&[3], &views);
        assert_eq!((v.lost, v.out_of_order, v.duplicates), (1, 0, 0), "{v:?}");
    }
}
