//! Per-interface kernel settings under `/proc/sys`.
//!
//! `/proc/sys/net` is per network namespace: a write goes to the namespace of the writing
//! thread. The writes are small synchronous file writes on procfs, fine to make from async
//! code.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{NetlinkError, check_ifname};

const ROOT: &str = "/proc/sys";

/// Checks a path relative to /proc/sys, such as `net/ipv6/conf/vrrp4.7/accept_dad`, and joins
/// it to the root. Interface names may contain dots, so the path is slash-separated.
fn resolve(path: &str, value: &str) -> Result<PathBuf, NetlinkError> {
    let invalid = |reason| NetlinkError::InvalidSysctl {
        path: path.to_owned(),
        value: value.to_owned(),
        reason,
    };
    if path.is_empty() || path.starts_with('/') {
        return Err(invalid("the path must be relative to /proc/sys"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err(invalid("the path has an empty, '.', '..' or NUL component"));
    }
    if value.contains(['\n', '\0']) {
        return Err(invalid("the value contains a newline or NUL"));
    }
    Ok(PathBuf::from(ROOT).join(path))
}

/// Writes `value` to `/proc/sys/<path>`, e.g. `set_sysctl("net/ipv6/conf/eth0/accept_dad", "0")`.
pub fn set_sysctl(path: &str, value: &str) -> Result<(), NetlinkError> {
    let full = resolve(path, value)?;
    fs::OpenOptions::new()
        .write(true)
        .open(&full)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| NetlinkError::Sysctl {
            action: "writing",
            path: path.to_owned(),
            source,
        })
}

/// Like [`set_sysctl`], but a missing file (e.g. IPv6 disabled) is Ok: returns whether it was
/// written.
pub(crate) fn set_sysctl_if_present(path: &str, value: &str) -> Result<bool, NetlinkError> {
    match set_sysctl(path, value) {
        Ok(()) => Ok(true),
        Err(NetlinkError::Sysctl { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path, "sysctl absent; not set");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Reads `/proc/sys/<path>`, without the trailing newline.
pub fn get_sysctl(path: &str) -> Result<String, NetlinkError> {
    let full = resolve(path, "")?;
    fs::read_to_string(&full)
        .map(|s| s.trim_end_matches('\n').to_owned())
        .map_err(|source| NetlinkError::Sysctl {
            action: "reading",
            path: path.to_owned(),
            source,
        })
}

/// What keepalived sets on the parent of a virtual-MAC interface: `arp_ignore = 1` (do not
/// answer ARP for the virtual addresses, which live on the vmac, with the parent's MAC) and
/// `arp_filter = 1`. These change the parent's behaviour for all its addresses, so the daemon
/// decides whether to call this; [`Netlink::ensure_macvlan`](super::Netlink::ensure_macvlan)
/// does not.
pub fn configure_vmac_parent(parent: &str) -> Result<(), NetlinkError> {
    check_ifname(parent)?;
    set_sysctl(&format!("net/ipv4/conf/{parent}/arp_ignore"), "1")?;
    set_sysctl(&format!("net/ipv4/conf/{parent}/arp_filter"), "1")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined_to_proc_sys() {
        assert_eq!(
            resolve("net/ipv6/conf/vrrp4.7/accept_dad", "0").unwrap(),
            PathBuf::from("/proc/sys/net/ipv6/conf/vrrp4.7/accept_dad")
        );
        for bad in ["", "/etc/passwd", "net/../../etc", "net//x", "net/./x"] {
            assert!(resolve(bad, "0").is_err(), "{bad:?}");
        }
        assert!(resolve("net/x", "0\n1").is_err());
    }

    #[test]
    fn reads_a_sysctl() {
        let v = get_sysctl("net/ipv4/ip_forward").unwrap();
        assert!(v == "0" || v == "1", "{v:?}");
        assert!(matches!(
            get_sysctl("net/ipv4/conf/no-such-if/arp_ignore"),
            Err(NetlinkError::Sysctl { .. })
        ));
        assert!(!set_sysctl_if_present("net/ipv6/conf/no-such-if/accept_dad", "0").unwrap());
    }
}
