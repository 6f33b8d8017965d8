//! Links: lookups, the VRRP virtual-MAC macvlan, deletion.

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkInfo as NlLinkInfo, LinkMessage,
    MacVlanMode,
};
use rtnetlink::{LinkMacVlan, LinkUnspec};

use super::sysctl::set_sysctl_if_present;
use super::{LinkInfo, Netlink, NetlinkError, check_ifname, errno, set_sysctl};

/// What an existing link with the macvlan's name looks like.
#[derive(Debug, PartialEq, Eq)]
struct MacvlanState {
    is_macvlan: bool,
    parent: Option<u32>,
    mode: Option<MacVlanMode>,
    mac: Option<[u8; 6]>,
}

impl MacvlanState {
    fn from_message(message: &LinkMessage) -> MacvlanState {
        let mut state = MacvlanState {
            is_macvlan: false,
            parent: None,
            mode: None,
            mac: None,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::Link(p) => state.parent = Some(*p),
                LinkAttribute::Address(a) => state.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            NlLinkInfo::Kind(InfoKind::MacVlan) => state.is_macvlan = true,
                            NlLinkInfo::Data(InfoData::MacVlan(data)) => {
                                for d in data {
                                    if let InfoMacVlan::Mode(m) = d {
                                        state.mode = Some(*m);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        state
    }

    fn matches(&self, parent: u32, mac: [u8; 6]) -> bool {
        self.is_macvlan
            && self.parent == Some(parent)
            && self.mac == Some(mac)
            && self.mode == Some(MacVlanMode::Bridge)
    }
}

fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Netlink {
    async fn link_message(
        &self,
        request: rtnetlink::LinkGetRequest,
        what: String,
    ) -> Result<LinkMessage, NetlinkError> {
        let mut stream = std::pin::pin!(request.execute());
        match stream.try_next().await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(NetlinkError::NoAnswer { name: what }),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(NetlinkError::LinkNotFound(what)),
            Err(source) => Err(NetlinkError::Request {
                action: "looking up link",
                target: what,
                source,
            }),
        }
    }

    async fn link_message_by_name(&self, name: &str) -> Result<LinkMessage, NetlinkError> {
        check_ifname(name)?;
        self.link_message(self.handle.link().get().match_name(name), name.to_owned())
            .await
    }

    /// The link named `name`; [`NetlinkError::LinkNotFound`] if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<LinkInfo, NetlinkError> {
        Ok(LinkInfo::from_message(
            &self.link_message_by_name(name).await?,
        ))
    }

    /// The link with index `index`; [`NetlinkError::LinkNotFound`] if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<LinkInfo, NetlinkError> {
        let message = self
            .link_message(
                self.handle.link().get().match_index(index),
                format!("#{index}"),
            )
            .await?;
        Ok(LinkInfo::from_message(&message))
    }

    /// All links (for a resync after a monitor overrun).
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let mut stream = std::pin::pin!(self.handle.link().get().execute());
        let mut links = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(message)) => links.push(LinkInfo::from_message(&message)),
                Ok(None) => return Ok(links),
                Err(source) => {
                    return Err(NetlinkError::Request {
                        action: "listing",
                        target: "all links".to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Brings link `index` administratively up.
    pub async fn set_link_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.set_link_state(index, true).await
    }

    /// Sets the administrative state of link `index`.
    pub async fn set_link_state(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index);
        let message = if up { message.up() } else { message.down() };
        self.handle
            .link()
            .set(message.build())
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                action: if up { "bringing up" } else { "bringing down" },
                target: format!("link {index}"),
                source,
            })
    }

    /// Deletes link `index`. An absent link is Ok (`ENODEV`).
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                action: "deleting",
                target: format!("link {index}"),
                source,
            }),
        }
    }

    /// Ensures the VRRP virtual-MAC interface: a macvlan `name` on link `parent` in bridge
    /// mode with address `mac`, left administratively DOWN: the daemon brings it up only
    /// while MASTER, so a Backup never accepts frames for the virtual MAC (RFC 5798 §6.4.2).
    /// Returns its index.
    ///
    /// An existing macvlan with that name, parent, MAC and mode is reused. A macvlan with that
    /// name but another parent, MAC or mode (a stale one from an earlier configuration) is
    /// deleted and recreated. A link with that name that is not a macvlan is left alone and
    /// reported as an error.
    ///
    /// It is configured like keepalived configures its vmacs: no IPv6 link-local derived from
    /// the shared virtual MAC (`addr_gen_mode = 1`; IPv6 adverts and NAs come from the
    /// parent's link-local), `accept_dad = 0` (both skipped if IPv6 is disabled),
    /// `net.ipv4.conf.<name>.arp_ignore = 1` (answer ARP only for addresses on the vmac),
    /// `accept_local = 1` and `rp_filter = 0`. The parent's settings are not touched: see
    /// [`configure_vmac_parent`](super::sysctl::configure_vmac_parent).
    pub async fn ensure_macvlan(
        &self,
        parent: u32,
        name: &str,
        mac: [u8; 6],
    ) -> Result<u32, NetlinkError> {
        check_ifname(name)?;
        // Three rounds are enough: one may delete a stale link, one may lose a creation race
        // to a concurrent creator, whose link the next one then finds.
        for _ in 0..3 {
            match self.link_message_by_name(name).await {
                Ok(message) => {
                    let index = message.header.index;
                    let state = MacvlanState::from_message(&message);
                    if !state.is_macvlan {
                        return Err(NetlinkError::Macvlan {
                            name: name.to_owned(),
                            parent,
                            reason: format!(
                                "a link with that name (index {index}) exists and is not a macvlan"
                            ),
                        });
                    }
                    if state.matches(parent, mac) {
                        self.configure_vmac(name)?;
                        self.set_link_state(index, false).await?;
                        return Ok(index);
                    }
                    tracing::warn!(
                        name,
                        index,
                        ?state,
                        parent,
                        mac = %format_mac(&mac),
                        "replacing a macvlan with the wrong parent, MAC or mode"
                    );
                    self.delete_link(index).await?;
                }
                Err(NetlinkError::LinkNotFound(_)) => {
                    let message = LinkMacVlan::new(name, parent, MacVlanMode::Bridge)
                        .address(mac.to_vec())
                        .build();
                    match self.handle.link().add(message).execute().await {
                        Ok(()) => {}
                        // Someone created it between the lookup and now: look again.
                        Err(e) if errno(&e) == Some(libc::EEXIST) => continue,
                        Err(source) => {
                            return Err(NetlinkError::Request {
                                action: "creating macvlan",
                                target: format!(
                                    "{name} on link {parent} with MAC {}",
                                    format_mac(&mac)
                                ),
                                source,
                            });
                        }
                    }
                    let index = self.link_message_by_name(name).await?.header.index;
                    self.configure_vmac(name)?;
                    return Ok(index);
                }
                Err(e) => return Err(e),
            }
        }
        Err(NetlinkError::Macvlan {
            name: name.to_owned(),
            parent,
            reason: "the link kept changing under us (created or replaced concurrently)".to_owned(),
        })
    }

    fn configure_vmac(&self, name: &str) -> Result<(), NetlinkError> {
        // Both routers carry the same virtual MAC: no link-local may be derived from it
        // (RFC 5798 §7.4), or the pair would share one. 1 = IN6_ADDR_GEN_MODE_NONE.
        set_sysctl_if_present(&format!("net/ipv6/conf/{name}/addr_gen_mode"), "1")?;
        set_sysctl_if_present(&format!("net/ipv6/conf/{name}/accept_dad"), "0")?;
        set_sysctl(&format!("net/ipv4/conf/{name}/arp_ignore"), "1")?;
        set_sysctl(&format!("net/ipv4/conf/{name}/accept_local"), "1")?;
        set_sysctl(&format!("net/ipv4/conf/{name}/rp_filter"), "0")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macvlan_state_from_message() {
        let mut m = LinkMessage::default();
        m.header.index = 9;
        m.attributes.push(LinkAttribute::Link(3));
        m.attributes
            .push(LinkAttribute::Address(vec![0, 0, 0x5e, 0, 1, 7]));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::MacVlan),
            NlLinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Bridge,
            )])),
        ]));
        let s = MacvlanState::from_message(&m);
        assert!(s.matches(3, [0, 0, 0x5e, 0, 1, 7]));
        assert!(!s.matches(4, [0, 0, 0x5e, 0, 1, 7]));
        assert!(!s.matches(3, [0, 0, 0x5e, 0, 1, 8]));

        let mut m = LinkMessage::default();
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(
                InfoKind::Veth,
            )]));
        assert!(!MacvlanState::from_message(&m).is_macvlan);
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(format_mac(&[0, 0, 0x5e, 0, 1, 0xff]), "00:00:5e:00:01:ff");
    }
}
