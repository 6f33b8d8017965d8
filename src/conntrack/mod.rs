//! Conntrack replication: the kernel table over ctnetlink ([`kernel`]) and the replicated
//! entry with its wire form ([`entry`]).

pub mod entry;
pub mod kernel;

pub use entry::{Entry, EntryError, Expectation, FlowKey};
pub use kernel::{
    Conntrack, EventStream, ExpectEvent, ExpectationStream, InstallReport, KernelError, KernelEvent,
};
