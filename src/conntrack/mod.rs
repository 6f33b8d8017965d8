//! Conntrack replication: netfilter conntrack entries copied to the peer router so that stateful
//! firewall and NAT sessions survive a failover.

pub mod filter;
pub mod messages;
pub mod sync;
