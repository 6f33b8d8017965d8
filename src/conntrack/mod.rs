//! Conntrack replication: netfilter conntrack entries copied to the peer router so that stateful
//! firewall and NAT sessions survive a failover.
//!
//! - [`entry`], [`kernel`]: the replicated entry with its wire form, and the kernel table over
//!   ctnetlink (events, dump, batched install/remove).
//! - [`channel`]: the encrypted, authenticated TCP channel to the peer.
//! - [`sync`], [`messages`], [`filter`]: the replication logic without I/O; [`task`] drives it.

pub mod entry;
pub mod filter;
pub mod kernel;
pub mod messages;
pub mod sync;

pub use entry::{Entry, EntryError, FlowKey};
pub use kernel::{Conntrack, EventStream, InstallReport, KernelError, KernelEvent};
