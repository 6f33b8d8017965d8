//! Conntrack replication: netfilter conntrack entries copied to the peer router so that stateful
//! firewall and NAT sessions survive a failover.
//!
//! - [`entry`], [`kernel`]: the replicated entry with its wire form, and the kernel table over
//!   ctnetlink (events, dump, batched install/remove).
//! - [`channel`]: the replication channel to the peer (TCP on the sync link; authenticated,
//!   encrypted, ordered, with back-pressure), built on [`wire`] (framing and batching) and
//!   [`noise`] (key-file, Noise handshake, frame sealing).
//! - [`sync`], [`messages`], [`filter`]: the replication logic without I/O.

pub mod channel;
pub mod entry;
pub mod filter;
pub mod kernel;
pub mod messages;
pub mod noise;
pub mod preflight;
pub mod sync;
pub mod task;
pub mod wire;

pub use entry::{Entry, EntryError, FlowKey};
pub use kernel::{Conntrack, EventStream, InstallReport, KernelError, KernelEvent};
