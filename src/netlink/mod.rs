//! Virtual addresses, links and link events over rtnetlink.
//!
//! - [`Netlink`]: the request connection (its task runs on the current tokio runtime), with
//!   address operations in [`addr`] and link operations, including the VRRP virtual-MAC
//!   macvlan, in [`link`].
//! - [`monitor`]: link events over a separate connection bound to `RTMGRP_LINK`; subscribe
//!   first, then dump, and treat an overrun as "resync now".
//! - [`sysctl`]: the per-interface `/proc/sys` knobs a virtual-MAC interface needs.
//!
//! Adding and removing addresses is idempotent, so the driver can re-apply its desired state
//! at any time (after a resync, a restart or a failed step) without special cases.

pub mod addr;
pub mod link;
pub mod monitor;
pub mod sysctl;

use std::io;

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

pub use addr::AddressEntry;
pub use monitor::{LinkMonitorEvent, link_monitor};
pub use sysctl::{get_sysctl, set_sysctl};

/// Why a netlink (or sysctl) operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{what}: no tokio runtime is running")]
    NoRuntime { what: &'static str },
    #[error("{what}: {source}")]
    Socket {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel (or the connection) refused a request. `target` names the object, e.g.
    /// `192.0.2.1/24 on link 3`.
    #[error("{action} {target}: {source}")]
    Request {
        action: &'static str,
        target: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("looking up link {0}: no such link")]
    LinkNotFound(String),
    #[error("looking up link {name}: the kernel answered without a link message")]
    NoAnswer { name: String },
    #[error("ensuring macvlan {name} on link {parent}: {reason}")]
    Macvlan {
        name: String,
        parent: u32,
        reason: String,
    },
    #[error("using interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("setting sysctl {path} to {value:?}: {reason}")]
    InvalidSysctl {
        path: String,
        value: String,
        reason: &'static str,
    },
    #[error("{action} sysctl /proc/sys/{path}: {source}")]
    Sysctl {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if this is a refused request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => errno(source),
            _ => None,
        }
    }
}

/// The positive errno of a netlink error answer.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// A link as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// The hardware address, if the link has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// Operationally up: administratively up (`IFF_UP`) and running (`IFF_RUNNING`, which the
    /// kernel sets when the operational state is up, i.e. carrier present and not dormant).
    pub up: bool,
}

impl LinkInfo {
    pub(crate) fn from_message(message: &LinkMessage) -> LinkInfo {
        let mut name = String::new();
        let mut mac = None;
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(n) => name.clone_from(n),
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                _ => {}
            }
        }
        let flags = message.header.flags;
        LinkInfo {
            index: message.header.index,
            name,
            mac,
            up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
        }
    }
}

/// The request side of rtnetlink. Cheap to clone; the connection task ends when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

impl Netlink {
    /// Opens a netlink route connection and spawns its task on the current tokio runtime.
    pub fn new() -> Result<Netlink, NetlinkError> {
        const WHAT: &str = "opening the rtnetlink request connection";
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| NetlinkError::NoRuntime { what: WHAT })?;
        let (connection, handle, _unsolicited) = rtnetlink::new_connection()
            .map_err(|source| NetlinkError::Socket { what: WHAT, source })?;
        runtime.spawn(connection);
        Ok(Netlink { handle })
    }
}

/// Checks that `name` can be an interface name (and a path component under /proc/sys).
pub(crate) fn check_ifname(name: &str) -> Result<(), NetlinkError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("it is a path component")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        Some("it contains '/', ':', whitespace or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetlinkError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["eth0", "vrrp4.7", "a", "123456789012345"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "eth0:1", "1234567890123456"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn new_outside_a_runtime_is_an_error() {
        assert!(matches!(
            Netlink::new(),
            Err(NetlinkError::NoRuntime { .. })
        ));
    }

    #[test]
    fn link_info_from_message() {
        let mut m = LinkMessage::default();
        m.header.index = 4;
        m.header.flags = LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp;
        m.attributes.push(LinkAttribute::IfName("va".into()));
        m.attributes
            .push(LinkAttribute::Address(vec![0, 0, 0x5e, 0, 1, 7]));
        let info = LinkInfo::from_message(&m);
        assert_eq!(
            info,
            LinkInfo {
                index: 4,
                name: "va".into(),
                mac: Some([0, 0, 0x5e, 0, 1, 7]),
                up: true
            }
        );
        m.header.flags = LinkFlags::Up;
        m.attributes[1] = LinkAttribute::Address(vec![1, 2, 3, 4]);
        let info = LinkInfo::from_message(&m);
        assert!(!info.up);
        assert_eq!(info.mac, None);
    }
}
