//! Start-up: turns the configuration into the core's parameters and the driver's per-group
//! runtime (links, addresses, sockets), asking the kernel what it needs to know.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::config::{Config, GroupConfig};
use crate::netlink::Netlink;
use crate::proto::Family;
use crate::proto::engine::{GroupSpec, SyncGroup};

/// What the driver keeps per group besides the core's state.
pub struct GroupRuntime {
    pub config: GroupConfig,
    /// The link that carries the virtual addresses: the vmac macvlan, or the interface itself.
    pub vip_link: u32,
    pub vip_link_name: String,
    /// Source MAC of gratuitous ARP / NA.
    pub mac: [u8; 6],
    /// Source of unsolicited NAs.
    pub link_local: Option<Ipv6Addr>,
    pub socket: usize,
    pub announcer: usize,
    pub last_transition: Option<SystemTime>,
    pub last_reason: Option<String>,
}

/// One raw socket per (interface, family), shared by the VRIDs on it.
pub struct SocketSpec {
    pub ifname: String,
    pub ifindex: u32,
    pub family: Family,
    pub source: Option<IpAddr>,
}

pub struct Resolved {
    pub specs: Vec<GroupSpec>,
    pub sync_groups: Vec<SyncGroup>,
    pub groups: Vec<GroupRuntime>,
    pub sockets: Vec<SocketSpec>,
    pub links: HashMap<String, bool>,
}

/// The virtual MAC of RFC 5798 §7.3: 00-00-5E-00-01-{VRID} for IPv4, 00-00-5E-00-02-{VRID} for IPv6.
pub fn virtual_mac(family: Family, vrid: u8) -> [u8; 6] {
    let kind = match family {
        Family::Ipv4 => 1,
        Family::Ipv6 => 2,
    };
    [0x00, 0x00, 0x5e, 0x00, kind, vrid]
}

pub async fn resolve(config: &Config, netlink: &Netlink) -> anyhow::Result<Resolved> {
    let mut links = HashMap::new();
    let mut groups = Vec::new();
    let mut specs = Vec::new();
    let mut sockets: Vec<SocketSpec> = Vec::new();

    for cfg in &config.groups {
        let link = netlink
            .link_by_name(&cfg.interface)
            .await
            .with_context(|| {
                format!(
                    "group.{}.interface: no link named {:?}",
                    cfg.name, cfg.interface
                )
            })?;
        links.insert(link.name.clone(), link.up);
        for tracked in &cfg.track_interfaces {
            let up = match netlink.link_by_name(tracked).await {
                Ok(l) => l.up,
                Err(_) => {
                    tracing::warn!(group = %cfg.name, link = %tracked, "tracked interface does not exist: group stays in FAULT until it appears");
                    false
                }
            };
            links.insert(tracked.clone(), up);
        }

        // The primary address is the interface's own, never a virtual one; IPv6 adverts and NAs
        // come from its link-local address (RFC 5798 §5.1.2.1), once DAD has finished with it.
        let vips: Vec<IpAddr> = cfg.addresses.iter().map(|a| a.addr()).collect();
        let link_local = netlink
            .link_local_ipv6(link.index, &vips)
            .await
            .with_context(|| format!("reading the addresses of {}", cfg.interface))?;
        let primary = match (cfg.hello_source_address, cfg.family) {
            (Some(a), _) => a,
            (None, Family::Ipv4) => IpAddr::V4(
                netlink
                    .primary_ipv4(link.index, &vips)
                    .await
                    .with_context(|| format!("reading the addresses of {}", cfg.interface))?
                    .with_context(|| {
                        format!("group.{}: {} has no IPv4 address to send adverts from; set hello-source-address", cfg.name, cfg.interface)
                    })?,
            ),
            (None, Family::Ipv6) => IpAddr::V6(link_local.with_context(|| {
                format!("group.{}: {} has no usable IPv6 link-local address to send adverts from", cfg.name, cfg.interface)
            })?),
        };

        let (vip_link, vip_link_name, mac) = if cfg.vmac {
            let name = format!(
                "vrrp{}.{}",
                if cfg.family == Family::Ipv4 { 4 } else { 6 },
                cfg.vrid
            );
            let mac = virtual_mac(cfg.family, cfg.vrid);
            crate::netlink::sysctl::configure_vmac_parent(&cfg.interface).with_context(|| {
                format!(
                    "group.{}.vmac: preparing {} for a macvlan",
                    cfg.name, cfg.interface
                )
            })?;
            let index = netlink
                .ensure_macvlan(link.index, &name, mac)
                .await
                .with_context(|| {
                    format!(
                        "group.{}.vmac: creating macvlan {name} on {}",
                        cfg.name, cfg.interface
                    )
                })?;
            (index, name, mac)
        } else {
            let Some(mac) = link.mac else {
                bail!(
                    "group.{}.interface: {} has no MAC address for gratuitous ARP / NA",
                    cfg.name,
                    cfg.interface
                );
            };
            (link.index, link.name.clone(), mac)
        };

        let socket = match sockets
            .iter()
            .position(|s| s.ifname == cfg.interface && s.family == cfg.family)
        {
            Some(i) => i,
            None => {
                sockets.push(SocketSpec {
                    ifname: cfg.interface.clone(),
                    ifindex: link.index,
                    family: cfg.family,
                    // Pinned: the checksum pseudo-header must name the address the packet really leaves from.
                    source: Some(primary),
                });
                sockets.len() - 1
            }
        };

        specs.push(config.group_spec(cfg, primary));
        groups.push(GroupRuntime {
            config: cfg.clone(),
            vip_link,
            vip_link_name,
            mac,
            link_local,
            socket,
            announcer: 0,
            last_transition: None,
            last_reason: None,
        });
    }

    let sync_groups = config.engine_sync_groups();
    Ok(Resolved {
        specs,
        sync_groups,
        groups,
        sockets,
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5798_7_3_virtual_mac() {
        assert_eq!(virtual_mac(Family::Ipv4, 21), [0, 0, 0x5e, 0, 1, 21]);
        assert_eq!(virtual_mac(Family::Ipv6, 255), [0, 0, 0x5e, 0, 2, 255]);
    }
}
