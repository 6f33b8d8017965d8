//! Log lines about bad or surprising input, limited so that a flood of packets cannot flood
//! the log: the first of each kind is written, then at most one per interval. Every packet is
//! still counted (`show groups`, metrics); only the log lines are limited.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a line is about: the group (None when no group could be named) and the kind of event.
type Key = (Option<usize>, &'static str);

pub struct RateLimitedLog {
    interval: Duration,
    last: HashMap<Key, Instant>,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval,
            last: HashMap::new(),
        }
    }

    /// True when a line about `(group, kind)` may be written at `now`.
    pub fn allow(&mut self, now: Instant, group: Option<usize>, kind: &'static str) -> bool {
        match self.last.get(&(group, kind)) {
            Some(&t) if now.saturating_duration_since(t) < self.interval => false,
            _ => {
                self.last.insert((group, kind), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_then_one_per_interval_per_group_and_kind() {
        let mut log = RateLimitedLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(log.allow(t0, Some(1), "checksum"));
        assert!(!log.allow(t0 + Duration::from_secs(59), Some(1), "checksum"));
        // Another kind, another group, or no group: each has its own budget.
        assert!(log.allow(t0, Some(1), "ttl"));
        assert!(log.allow(t0, Some(2), "checksum"));
        assert!(log.allow(t0, None, "checksum"));
        assert!(log.allow(t0 + Duration::from_secs(60), Some(1), "checksum"));
        assert!(!log.allow(t0 + Duration::from_secs(61), Some(1), "checksum"));
    }
}
