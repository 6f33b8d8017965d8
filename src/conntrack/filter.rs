//! Which conntrack entries are replicated.
//!
//! Never replicated: flows from or to the routers' own addresses (the sync channel itself, SSH to
//! a router, BGP sessions), the sync link's subnet, `ignore-address`, link-local and multicast
//! addresses, and protocols other than TCP, UDP, ICMP, ICMPv6, SCTP and GRE. Every address of
//! both tuples is checked, so a SNATed flow is judged by its translated addresses as well.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

const REPLICATED_PROTOCOLS: [u8; 6] = [
    PROTO_TCP,
    PROTO_UDP,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_SCTP,
    PROTO_GRE,
];

/// Why an entry is not replicated (for debug logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Protocol,
    OwnAddress,
    IgnoredNetwork,
    LinkLocalOrMulticast,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The routers' own (non-virtual) addresses: ours and the peer's known ones.
    own: HashSet<IpAddr>,
    /// The sync link's subnet and `ignore-address`.
    ignored: Vec<IpNet>,
}

impl Filter {
    pub fn new(own: impl IntoIterator<Item = IpAddr>, ignored: Vec<IpNet>) -> Filter {
        Filter {
            own: own.into_iter().collect(),
            ignored,
        }
    }

    /// Replaces the set of own addresses (they change when links or addresses do).
    pub fn set_own(&mut self, own: impl IntoIterator<Item = IpAddr>) {
        self.own = own.into_iter().collect();
    }

    pub fn own(&self) -> &HashSet<IpAddr> {
        &self.own
    }

    /// `None` when the flow is replicated; else why not. `addresses` are both tuples' sources
    /// and destinations.
    pub fn check(&self, protocol: u8, addresses: [IpAddr; 4]) -> Option<Skip> {
        if !REPLICATED_PROTOCOLS.contains(&protocol) {
            return Some(Skip::Protocol);
        }
        for addr in addresses {
            let addr = canonical(addr);
            if self.own.contains(&addr) {
                return Some(Skip::OwnAddress);
            }
            if self.ignored.iter().any(|net| net.contains(&addr)) {
                return Some(Skip::IgnoredNetwork);
            }
            if is_link_local_or_multicast(addr) {
                return Some(Skip::LinkLocalOrMulticast);
            }
        }
        None
    }

    pub fn passes(&self, protocol: u8, addresses: [IpAddr; 4]) -> bool {
        self.check(protocol, addresses).is_none()
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn is_link_local_or_multicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unicast_link_local() || a.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lab_filter() -> Filter {
        Filter::new(
            [
                ip("10.76.2.2"),
                ip("10.76.4.2"),
                ip("10.76.9.1"),
                ip("10.76.9.2"),
            ],
            vec![
                "10.76.9.0/30".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn a_snated_forwarded_flow_is_replicated() {
        // client -> server, SNAT to the WAN VIP: the reply goes to the VIP, which is not "own".
        let f = lab_filter();
        let addrs = [
            ip("10.76.2.10"),
            ip("10.76.4.10"),
            ip("10.76.4.10"),
            ip("10.76.4.1"),
        ];
        assert_eq!(f.check(PROTO_TCP, addrs), None);
        assert_eq!(f.check(PROTO_GRE, addrs), None);
    }

    #[test]
    fn own_addresses_sync_link_and_ignored_networks_are_not() {
        let f = lab_filter();
        // SSH to the router itself.
        let to_router = [
            ip("10.76.2.10"),
            ip("10.76.2.2"),
            ip("10.76.2.2"),
            ip("10.76.2.10"),
        ];
        assert_eq!(f.check(PROTO_TCP, to_router), Some(Skip::OwnAddress));
        // A flow SNATed to a router's own address is judged by the reply tuple too.
        let snat_own = [
            ip("10.76.2.10"),
            ip("10.76.4.10"),
            ip("10.76.4.10"),
            ip("10.76.4.2"),
        ];
        assert_eq!(f.check(PROTO_UDP, snat_own), Some(Skip::OwnAddress));
        let ignored = [
            ip("192.0.2.7"),
            ip("10.76.4.10"),
            ip("10.76.4.10"),
            ip("192.0.2.7"),
        ];
        assert_eq!(f.check(PROTO_UDP, ignored), Some(Skip::IgnoredNetwork));
        let v6ll = [
            ip("fe80::1"),
            ip("2001:db8::1"),
            ip("2001:db8::1"),
            ip("fe80::1"),
        ];
        assert_eq!(
            f.check(PROTO_ICMPV6, v6ll),
            Some(Skip::LinkLocalOrMulticast)
        );
    }

    #[test]
    fn only_the_listed_protocols_are_replicated() {
        let f = lab_filter();
        let addrs = [
            ip("10.76.2.10"),
            ip("10.76.4.10"),
            ip("10.76.4.10"),
            ip("10.76.4.1"),
        ];
        for p in [
            PROTO_TCP,
            PROTO_UDP,
            PROTO_ICMP,
            PROTO_ICMPV6,
            PROTO_SCTP,
            PROTO_GRE,
        ] {
            assert!(f.passes(p, addrs), "{p}");
        }
        for p in [0, 2, 41, 50, 112, 255] {
            assert_eq!(f.check(p, addrs), Some(Skip::Protocol), "{p}");
        }
    }
}
