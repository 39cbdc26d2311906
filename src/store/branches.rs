//! A conversation's branches: editing a question or regenerating an answer
//! keeps the earlier version of the conversation from that message on, as
//! llama-server's web UI keeps its message tree. The conversation's
//! `messages` stay the active path (what the model is sent, what the window
//! shows and streams into); every other version of a suffix is a `Fork`
//! beside it, holding that suffix and the forks further along it. Versions
//! at one message are numbered in the order they were made ("‹ 2/3 ›").

use super::conversations::ChatMessage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The inactive versions along one path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Branches {
    /// Other versions of the path from a message on, in the order they were made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forks: Vec<Fork>,
    /// Where the path's own version sits among the versions at a message
    /// (by the message's index); absent: after the forks (the newest).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<usize, usize>,
}

/// Another version of a path from message `at` on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fork {
    pub at: usize,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Branches::is_empty")]
    pub branches: Branches,
}

impl Branches {
    pub fn is_empty(&self) -> bool {
        self.forks.is_empty() && self.slots.is_empty()
    }

    /// (this path's version, how many) at message `i`, both from 1.
    pub fn version_at(&self, i: usize) -> (usize, usize) {
        let others = self.forks.iter().filter(|f| f.at == i).count();
        (self.slot(i, others) + 1, others + 1)
    }

    fn slot(&self, i: usize, others: usize) -> usize {
        self.slots.get(&i).copied().unwrap_or(others).min(others)
    }

    /// Keeps `path[at..]` as a version beside the one the caller writes next
    /// (which becomes the newest, shown last): `path` is cut to `at`.
    pub fn fork(&mut self, path: &mut Vec<ChatMessage>, at: usize) {
        if at >= path.len() {
            return;
        }
        let others = self.forks.iter().filter(|f| f.at == at).count();
        let slot = self.slot(at, others);
        let old = self.take_suffix(path, at);
        insert_at_slot(&mut self.forks, old, at, slot);
        self.slots.remove(&at);
    }

    /// Makes version `to` (from 0) the path's at message `at`: the path's own
    /// suffix goes back among the versions in its place.
    pub fn switch(&mut self, path: &mut Vec<ChatMessage>, at: usize, to: usize) {
        let others = self.forks.iter().filter(|f| f.at == at).count();
        let mine = self.slot(at, others);
        if to == mine || to > others || at > path.len() {
            return;
        }
        // The versions at `at` in order, ours among them.
        let mut versions: Vec<Fork> = Vec::with_capacity(others + 1);
        let mut i = 0;
        while i < self.forks.len() {
            if self.forks[i].at == at {
                versions.push(self.forks.remove(i));
            } else {
                i += 1;
            }
        }
        let own = self.take_suffix(path, at);
        versions.insert(mine, own);
        let chosen = versions.remove(to);
        path.extend(chosen.messages);
        self.forks.extend(chosen.branches.forks);
        self.slots.extend(chosen.branches.slots);
        // The others go back in their order (forks of other messages keep theirs).
        self.forks.extend(versions);
        self.slots.insert(at, to);
    }

    /// `path[at..]` with the forks and slots further along it, taken off the path.
    fn take_suffix(&mut self, path: &mut Vec<ChatMessage>, at: usize) -> Fork {
        let messages = path.split_off(at.min(path.len()));
        let (nested, kept): (Vec<Fork>, Vec<Fork>) = std::mem::take(&mut self.forks).into_iter().partition(|f| f.at > at);
        self.forks = kept;
        let slots = self.slots.split_off(&(at + 1));
        Fork { at, messages, branches: Branches { forks: nested, slots } }
    }

    /// Drops what a hand-edited or damaged file got wrong (a fork past the
    /// end of its path, slots past the versions there), so nothing indexes
    /// out of range; `len` is the path's length.
    pub fn sanitize(&mut self, start: usize, len: usize) {
        self.forks.retain(|f| f.at >= start && f.at <= len);
        for f in &mut self.forks {
            let end = f.at + f.messages.len();
            f.branches.sanitize(f.at + 1, end);
        }
        let forks = &self.forks;
        self.slots.retain(|at, slot| *at >= start && *at <= len && *slot <= forks.iter().filter(|f| f.at == *at).count());
    }
}

/// Puts `fork` among `forks` so that it is version `slot` (from 0) of those at `at`.
fn insert_at_slot(forks: &mut Vec<Fork>, fork: Fork, at: usize, slot: usize) {
    let mut seen = 0;
    for (i, f) in forks.iter().enumerate() {
        if f.at == at {
            if seen == slot {
                forks.insert(i, fork);
                return;
            }
            seen += 1;
        }
    }
    forks.push(fork);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;

    fn path(words: &[&str]) -> Vec<ChatMessage> {
        words.iter().enumerate().map(|(i, w)| ChatMessage::new(if i % 2 == 0 { Role::User } else { Role::Assistant }, *w)).collect()
    }

    fn texts(p: &[ChatMessage]) -> Vec<&str> {
        p.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn versions_are_kept_numbered_and_switched_with_their_own_branches() {
        let mut b = Branches::default();
        let mut p = path(&["q1", "a1", "q2", "a2"]);
        // Regenerate a2, twice: three versions at message 3, the newest shown.
        b.fork(&mut p, 3);
        p.push(ChatMessage::new(Role::Assistant, "a2'"));
        b.fork(&mut p, 3);
        p.push(ChatMessage::new(Role::Assistant, "a2''"));
        assert_eq!(b.version_at(3), (3, 3));
        b.switch(&mut p, 3, 0);
        assert_eq!((texts(&p), b.version_at(3)), (vec!["q1", "a1", "q2", "a2"], (1, 3)));
        b.switch(&mut p, 3, 1);
        assert_eq!((texts(&p), b.version_at(3)), (vec!["q1", "a1", "q2", "a2'"], (2, 3)));
        // Edit q2 on this version: its answers at 3 go with the old q2.
        b.fork(&mut p, 2);
        p.extend(path(&["q2 edited", "a3"]));
        assert_eq!(b.version_at(2), (2, 2));
        assert_eq!(b.version_at(3), (1, 1), "the new question has one answer");
        b.switch(&mut p, 2, 0);
        assert_eq!(texts(&p), vec!["q1", "a1", "q2", "a2'"], "back to the old question, on the answer it showed");
        assert_eq!(b.version_at(3), (2, 3), "with its three answers");
        b.switch(&mut p, 3, 2);
        assert_eq!(texts(&p), vec!["q1", "a1", "q2", "a2''"]);
        b.switch(&mut p, 2, 1);
        assert_eq!((texts(&p), b.version_at(2), b.version_at(3)), (vec!["q1", "a1", "q2 edited", "a3"], (2, 2), (1, 1)));
        // Out of range does nothing.
        let before = (p.clone(), b.clone());
        b.switch(&mut p, 2, 5);
        b.switch(&mut p, 9, 0);
        assert_eq!((p, b), before);
    }

    #[test]
    fn a_damaged_tree_is_cut_to_what_indexes() {
        let mut b = Branches::default();
        let mut p = path(&["q1", "a1"]);
        b.fork(&mut p, 1);
        p.push(ChatMessage::new(Role::Assistant, "a1'"));
        b.forks.push(Fork { at: 40, messages: path(&["x"]), branches: Branches::default() });
        b.slots.insert(1, 7);
        b.slots.insert(30, 0);
        b.sanitize(0, p.len());
        assert_eq!(b.forks.len(), 1);
        assert!(b.slots.is_empty());
        assert_eq!(b.version_at(1), (2, 2));
    }
}
