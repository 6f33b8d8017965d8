//! The engine's timer queue: each virtual router's next deadline, earliest first.
//!
//! A backup resets its Master_Down_Timer on every advert, so with hundreds of groups the queue
//! is updated thousands of times a second and asked for its earliest deadline after every
//! batch. A binary heap with lazy deletion keeps both cheap: an update pushes one entry, and an
//! entry that no longer matches its router's current deadline is dropped when it reaches the
//! top. The top is always current, so [`TimerQueue::earliest`] is O(1) and needs no `&mut`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Index of the router a deadline belongs to.
type Id = usize;

#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, Id)>>,
    /// Each router's current deadline: the heap entries that match it are live.
    current: Vec<Option<Instant>>,
}

impl TimerQueue {
    pub(crate) fn new(routers: usize) -> TimerQueue {
        TimerQueue {
            heap: BinaryHeap::new(),
            current: vec![None; routers],
        }
    }

    /// Router `id`'s next deadline is now `deadline` (None: no timer running).
    pub(crate) fn set(&mut self, id: Id, deadline: Option<Instant>) {
        if self.current[id] == deadline {
            return;
        }
        self.current[id] = deadline;
        if let Some(t) = deadline {
            self.heap.push(Reverse((t, id)));
        }
        // Superseded entries pile up only when timers move away faster than they expire.
        if self.heap.len() > 4 * self.current.len() + 64 {
            self.rebuild();
        }
        self.settle();
    }

    /// The earliest current deadline.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes the router whose deadline is earliest if it is due by `now`. Its deadline is
    /// forgotten: the caller fires its timers and then calls [`TimerQueue::set`] again.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Id> {
        let &Reverse((t, id)) = self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        self.current[id] = None;
        self.settle();
        Some(id)
    }

    /// Drops superseded entries from the top, so the top is current.
    fn settle(&mut self) {
        while let Some(&Reverse((t, id))) = self.heap.peek() {
            if self.current[id] == Some(t) {
                return;
            }
            self.heap.pop();
        }
    }

    fn rebuild(&mut self) {
        self.heap = (self.current.iter().enumerate())
            .filter_map(|(id, t)| t.map(|t| Reverse((t, id))))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn earliest_follows_updates_and_ignores_superseded_entries() {
        let t = Instant::now();
        let mut q = TimerQueue::new(3);
        assert_eq!(q.earliest(), None);
        q.set(0, Some(ms(t, 30)));
        q.set(1, Some(ms(t, 10)));
        q.set(2, Some(ms(t, 20)));
        assert_eq!(q.earliest(), Some(ms(t, 10)));
        q.set(1, Some(ms(t, 40))); // the 10 ms entry is now stale
        assert_eq!(q.earliest(), Some(ms(t, 20)));
        q.set(2, None);
        assert_eq!(q.earliest(), Some(ms(t, 30)));
        q.set(0, None);
        q.set(1, None);
        assert_eq!(q.earliest(), None);
    }

    #[test]
    fn pop_due_takes_routers_in_deadline_order_and_only_when_due() {
        let t = Instant::now();
        let mut q = TimerQueue::new(3);
        q.set(0, Some(ms(t, 5)));
        q.set(1, Some(ms(t, 1)));
        q.set(2, Some(ms(t, 50)));
        assert_eq!(q.pop_due(ms(t, 0)), None);
        assert_eq!(q.pop_due(ms(t, 10)), Some(1));
        assert_eq!(q.pop_due(ms(t, 10)), Some(0));
        assert_eq!(q.pop_due(ms(t, 10)), None);
        assert_eq!(q.earliest(), Some(ms(t, 50)));
        // A popped router re-armed with the same deadline is queued again.
        q.set(1, Some(ms(t, 1)));
        assert_eq!(q.pop_due(ms(t, 10)), Some(1));
    }

    #[test]
    fn stays_bounded_when_one_timer_keeps_moving_forward() {
        let t = Instant::now();
        let mut q = TimerQueue::new(2);
        q.set(0, Some(ms(t, 1)));
        for n in 0..10_000 {
            q.set(1, Some(ms(t, 100 + n)));
        }
        assert!(q.heap.len() <= 4 * 2 + 64 + 1, "{} entries", q.heap.len());
        assert_eq!(q.pop_due(ms(t, 1)), Some(0));
        assert_eq!(q.earliest(), Some(ms(t, 100 + 9_999)));
    }
}
