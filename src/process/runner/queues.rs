//! Pending units, one queue per caller, handed out round-robin: several `get`, `map` and
//! submitted calls on one pool share its workers fairly, unit by unit, whatever order they
//! submitted in. Within a caller, units keep their order.

use std::collections::VecDeque;

use super::PUnit;

/// The pending units of every caller.
#[derive(Default)]
pub(crate) struct Queues {
    /// Non-empty queues, in the order their callers first had units pending.
    queues: Vec<(u64, VecDeque<PUnit>)>,
    /// The queue whose turn it is.
    turn: usize,
    len: usize,
}

impl Queues {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The unit handed out next.
    pub(crate) fn front(&self) -> Option<&PUnit> {
        self.queues.get(self.turn).and_then(|q| q.1.front())
    }

    /// Takes the unit handed out next; the turn passes to the next caller.
    pub(crate) fn pop_front(&mut self) -> Option<PUnit> {
        let q = self.queues.get_mut(self.turn)?;
        let u = q.1.pop_front()?;
        self.len -= 1;
        if q.1.is_empty() {
            self.queues.remove(self.turn);
        } else {
            self.turn += 1;
        }
        if self.turn >= self.queues.len() {
            self.turn = 0;
        }
        Some(u)
    }

    fn queue(&mut self, caller: u64) -> &mut VecDeque<PUnit> {
        let i = match self.queues.iter().position(|q| q.0 == caller) {
            Some(i) => i,
            None => {
                self.queues.push((caller, VecDeque::new()));
                self.queues.len() - 1
            }
        };
        &mut self.queues[i].1
    }

    /// Queues a unit behind its caller's others.
    pub(crate) fn push_back(&mut self, u: PUnit) {
        self.len += 1;
        self.queue(u.caller).push_back(u);
    }

    /// Puts a unit back in front of its caller's others (a unit run again); it becomes the
    /// next unit handed out.
    pub(crate) fn push_front(&mut self, u: PUnit) {
        self.len += 1;
        let caller = u.caller;
        self.queue(caller).push_front(u);
        self.turn = self
            .queues
            .iter()
            .position(|q| q.0 == caller)
            .expect("just queued");
    }

    /// Takes every pending unit of `caller`.
    pub(crate) fn remove_caller(&mut self, caller: u64) -> Vec<PUnit> {
        let Some(i) = self.queues.iter().position(|q| q.0 == caller) else {
            return Vec::new();
        };
        let (_, q) = self.queues.remove(i);
        self.len -= q.len();
        if i < self.turn {
            self.turn -= 1;
        }
        if self.turn >= self.queues.len() {
            self.turn = 0;
        }
        q.into()
    }
}
