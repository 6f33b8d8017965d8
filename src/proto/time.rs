//! Time in VRRPv3's own unit.
//!
//! VRRPv3 carries intervals as a 12-bit count of centiseconds (RFC 5798 §5.2.7). Keeping them in
//! a newtype avoids the unit bugs other implementations carry (treating v3 intervals as seconds,
//! truncating the skew to whole centiseconds). Derived timers (Skew_Time, Master_Down_Interval)
//! are kept as exact [`Duration`]s: at a 10 ms interval the skew is a fraction of a centisecond,
//! and rounding it away would make every backup time out at the same instant.

use std::fmt;
use std::time::Duration;

/// An advertisement interval in centiseconds, 1..=4095 (the 12-bit field of the VRRPv3 header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Centis(u16);

impl Centis {
    /// The largest value the 12-bit Max Adver Int field can carry (40.95 s).
    pub const MAX: Centis = Centis(4095);
    /// RFC 5798 §5.2.7 default: 100 centiseconds.
    pub const DEFAULT_ADVERT: Centis = Centis(100);

    /// A non-zero value that fits in 12 bits.
    pub const fn new(cs: u16) -> Option<Centis> {
        if cs == 0 || cs > 4095 {
            None
        } else {
            Some(Centis(cs))
        }
    }

    /// The value as received on the wire. The codec drops a zero (RFC 9568 erratum 8301); should
    /// one get here anyway it is clamped to 1 so timers stay finite.
    pub const fn from_wire(field: u16) -> Centis {
        let v = field & 0x0fff;
        Centis(if v == 0 { 1 } else { v })
    }

    /// Converts a duration that is an exact multiple of 10 ms within 10 ms..=40.95 s.
    pub fn from_duration(d: Duration) -> Result<Centis, CentisError> {
        let nanos = d.as_nanos();
        if nanos % 10_000_000 != 0 {
            return Err(CentisError::NotMultiple);
        }
        let cs = nanos / 10_000_000;
        if cs == 0 || cs > 4095 {
            return Err(CentisError::OutOfRange);
        }
        Ok(Centis(cs as u16))
    }

    pub const fn get(self) -> u16 {
        self.0
    }

    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.0 as u64 * 10)
    }

    pub const fn as_millis(self) -> u64 {
        self.0 as u64 * 10
    }
}

impl fmt::Display for Centis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.as_millis())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CentisError {
    #[error("must be a multiple of 10ms")]
    NotMultiple,
    #[error("must be within 10ms..=40.95s")]
    OutOfRange,
}

/// RFC 5798 §6.1 / RFC 9568 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256,
/// in centiseconds. Computed exactly in nanoseconds (the fraction is kept, see module docs).
pub fn skew_time(priority: u8, master_adver_interval: Centis) -> Duration {
    let ns = (256 - priority as u64) * master_adver_interval.get() as u64 * 10_000_000 / 256;
    Duration::from_nanos(ns)
}

/// RFC 5798 §6.1: Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time.
pub fn master_down_interval(priority: u8, master_adver_interval: Centis) -> Duration {
    master_adver_interval.as_duration() * 3 + skew_time(priority, master_adver_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5798_6_1_skew_time_is_exact() {
        // priority 100 at 1 s: (256-100)*100/256 = 60.9375 cs
        let skew = skew_time(100, Centis::new(100).unwrap());
        assert_eq!(skew, Duration::from_micros(609_375));
        // priority 200 at 10 ms: (56 * 1) / 256 cs = 2.1875 ms, not truncated to 0
        assert_eq!(
            skew_time(200, Centis::new(1).unwrap()),
            Duration::from_nanos(2_187_500)
        );
        // priority 255: 1/256 of the interval
        assert_eq!(
            skew_time(255, Centis::new(100).unwrap()),
            Duration::from_nanos(3_906_250)
        );
    }

    #[test]
    fn rfc5798_6_1_master_down_interval() {
        let mdi = master_down_interval(100, Centis::new(100).unwrap());
        assert_eq!(mdi, Duration::from_micros(3_609_375));
        // A higher priority times out sooner: the skew makes the best backup win.
        assert!(
            master_down_interval(200, Centis::new(10).unwrap())
                < master_down_interval(100, Centis::new(10).unwrap())
        );
    }

    #[test]
    fn centis_conversions() {
        assert_eq!(
            Centis::from_duration(Duration::from_millis(10)),
            Ok(Centis(1))
        );
        assert_eq!(
            Centis::from_duration(Duration::from_millis(5)),
            Err(CentisError::NotMultiple)
        );
        assert_eq!(
            Centis::from_duration(Duration::from_millis(15)),
            Err(CentisError::NotMultiple)
        );
        assert_eq!(
            Centis::from_duration(Duration::ZERO),
            Err(CentisError::OutOfRange)
        );
        assert_eq!(
            Centis::from_duration(Duration::from_millis(40_950)),
            Ok(Centis::MAX)
        );
        assert_eq!(
            Centis::from_duration(Duration::from_millis(40_960)),
            Err(CentisError::OutOfRange)
        );
        assert_eq!(Centis::from_wire(0xf064), Centis(100));
        assert_eq!(Centis::from_wire(0), Centis(1));
        assert_eq!(Centis::new(4096), None);
    }
}
