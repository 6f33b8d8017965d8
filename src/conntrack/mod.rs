//! Conntrack replication: netfilter conntrack entries copied to the peer router so that stateful
//! firewall and NAT sessions survive a failover.
//!
//! - [`entry`], [`kernel`]: the replicated entry with its wire form, and the kernel table over
//!   ctnetlink (events, dump, batched install/remove).
//! - [`channel`]: the replication channel to the peer (TCP on the sync link; authenticated,
//!   encrypted, ordered, with back-pressure), built on [`wire`] (framing and batching) and
//!   [`noise`] (key-file, Noise handshake, frame sealing).
//! - [`sync`], [`messages`], [`filter`]: the replication logic without I/O.
//!
//! What the kernel side guarantees and expects (learned against kernel 6.18, see the tests in
//! `tests/conntrack_kernel.rs`):
//! - Open [`EventStream`] before [`Conntrack::dump`]. On the backup, call
//!   [`EventStream::ignore_origin`] with [`Conntrack::port_id`] of the installing socket: the
//!   kernel stamps every event with the port of the request that caused it, so the backup's own
//!   installs and refreshes are not mistaken for local changes.
//! - UPDATE events carry only what changed besides tuples, status, timeout, zone and mark (TCP
//!   info only on a state change, the master only in NEW): fold them into the cached entry with
//!   [`Entry::merge_update`]. DESTROY events carry no timeout and only the TCP state.
//! - [`Conntrack::install`] needs a timeout in every entry; masters go in before related
//!   entries (those with CTA_TUPLE_MASTER), also within one call.
//! - NATed entries are re-created through the kernel's own NAT setup (ranges of exactly the
//!   master's address and port), so IPS_SRC_NAT/IPS_DST_NAT are set and packets are rewritten.
//! - Labels are kept by the kernel only when some rule of that namespace uses `ct label`; a
//!   helper (CTA_HELP) must exist on the backup (else EOPNOTSUPP for that entry).
//! - Expectation events exist only for masters created while events were on
//!   (nf_conntrack_events = 1, or a listener subscribed).

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

pub use entry::{Entry, EntryError, Expectation, FlowKey};
pub use kernel::{
    Conntrack, EventStream, ExpectEvent, ExpectationStream, InstallReport, KernelError, KernelEvent,
};
