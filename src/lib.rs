//! vrrpd: a userspace VRRPv3 daemon for paired Linux edge routers.
//!
//! The layout follows the architecture:
//! - [`proto`]: the VRRPv3 protocol core, free of I/O (state machine, timers, packet codec).
//! - [`config`]: the TOML configuration and its validation.
//! - [`net`]: raw VRRP sockets, gratuitous ARP and unsolicited neighbour advertisements.
//! - [`netlink`]: virtual addresses, links and link events over rtnetlink.
//! - [`bgp`]: BGP AS-path prepends that follow a sync group's mastership (BIRD, FRR, exec).
//! - [`conntrack`]: conntrack replication to the peer router.
//! - [`control`]: the control socket protocol and the `show` renderings.
//! - [`daemon`]: the driver that wires the core to the I/O.

pub mod bgp;
pub mod config;
pub mod conntrack;
pub mod control;
pub mod daemon;
pub mod net;
pub mod netlink;
pub mod proto;
