//! The VRRPv3 protocol core (RFC 5798 with the RFC 9568 updates), free of I/O.
//!
//! Nothing here reads a clock, opens a socket or touches netlink: the driver feeds inputs with
//! the current time and executes the actions the core returns.

pub mod engine;
pub mod packet;
pub mod router;
pub mod time;
mod timers;

use serde::{Deserialize, Serialize};

pub use time::Centis;

/// The address family of a virtual router. VRRPv3 treats IPv4 and IPv6 instances of the same
/// VRID as independent virtual routers (RFC 5798 §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: &std::net::IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// Which checksum form an IPv4 VRRPv3 advertisement carries.
///
/// RFC 5798 computes it over an IPv4 pseudo-header plus the VRRP message (what keepalived and
/// FRR send); RFC 9568 §5.2.8 covers the VRRP message only. IPv6 always uses the pseudo-header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumForm {
    PseudoHeader,
    Rfc9568,
}

#[cfg(test)]
mod tests;
