//! Pending units, one queue per caller, handed out round-robin: several `get`, `map` and
//! submitted calls on one pool share its workers fairly, unit by unit, whatever order they
//! submitted in. Within a caller, units keep their order. Every operation but taking a
//! caller's units out (cancellation) and putting a unit back in front (a re-run) is O(1).

use std::collections::{HashMap, VecDeque};

use super::PUnit;

/// The pending units of every caller.
#[derive(Default)]
pub(crate) struct Queues {
    /// Non-empty queues by caller.
    queues: HashMap<u64, VecDeque<PUnit>>,
    /// Callers with units pending, the one whose turn it is first.
    turns: VecDeque<u64>,
    len: usize,
    /// Emptied queues kept for the next caller (most callers, submitted calls, have one unit:
    /// no allocation each).
    spare: Vec<VecDeque<PUnit>>,
}

/// Most emptied queues kept.
const SPARE: usize = 64;

impl Queues {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The unit handed out next.
    pub(crate) fn front(&self) -> Option<&PUnit> {
        let c = self.turns.front()?;
        self.queues.get(c).and_then(VecDeque::front)
    }

    /// Takes the unit handed out next; the turn passes to the next caller.
    pub(crate) fn pop_front(&mut self) -> Option<PUnit> {
        let c = self.turns.pop_front()?;
        let q = self
            .queues
            .get_mut(&c)
            .expect("a caller with a turn has units");
        let u = q.pop_front().expect("queues are not empty");
        self.len -= 1;
        if q.is_empty() {
            if let Some(q) = self.queues.remove(&c) {
                if self.spare.len() < SPARE {
                    self.spare.push(q);
                }
            }
        } else {
            self.turns.push_back(c);
        }
        Some(u)
    }

    /// Queues a unit behind its caller's others.
    pub(crate) fn push_back(&mut self, u: PUnit) {
        self.len += 1;
        let c = u.caller;
        let spare = &mut self.spare;
        let q = self.queues.entry(c).or_insert_with(|| {
            self.turns.push_back(c);
            spare.pop().unwrap_or_default()
        });
        q.push_back(u);
    }

    /// Puts a unit back in front of its caller's others (a unit run again); it becomes the
    /// next unit handed out.
    pub(crate) fn push_front(&mut self, u: PUnit) {
        self.len += 1;
        let c = u.caller;
        match self.queues.get_mut(&c) {
            Some(q) => {
                q.push_front(u);
                if let Some(i) = self.turns.iter().position(|&t| t == c) {
                    self.turns.remove(i);
                }
            }
            None => {
                self.queues.insert(c, VecDeque::from([u]));
            }
        }
        self.turns.push_front(c);
    }

    /// Takes every pending unit of `caller`.
    pub(crate) fn remove_caller(&mut self, caller: u64) -> Vec<PUnit> {
        let Some(q) = self.queues.remove(&caller) else {
            return Vec::new();
        };
        self.len -= q.len();
        self.turns.retain(|&t| t != caller);
        q.into()
    }
}
