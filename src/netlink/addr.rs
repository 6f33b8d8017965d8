//! Addresses on links: listing, idempotent add and delete, and the VRRP source address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::AddressMessageBuilder;

use super::{Netlink, NetlinkError, errno};

/// An address on a link, with the state flags that matter to VRRP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressEntry {
    pub net: IpNet,
    /// IPv6: duplicate address detection has not finished; the address cannot be bound to or
    /// used as a source yet.
    pub tentative: bool,
    /// IPv6: duplicate address detection failed; the address is unusable.
    pub dad_failed: bool,
    /// IPv4: a secondary address (another address of the same subnet came first).
    pub secondary: bool,
    /// Added with `IFA_F_NODAD` (how this daemon adds IPv6 virtual addresses).
    pub nodad: bool,
}

impl AddressEntry {
    fn from_message(message: &AddressMessage) -> Option<AddressEntry> {
        let mut local = None;
        let mut address = None;
        // IFA_FLAGS (32 bits) supersedes the 8-bit header field when present.
        let mut flags = AddressFlags::from_bits_retain(u32::from(message.header.flags.bits()));
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Flags(f) => flags = *f,
                _ => {}
            }
        }
        // IFA_LOCAL is the local address; IFA_ADDRESS is the peer on point-to-point links and
        // the only one given for most IPv6 addresses.
        let ip = local.or(address)?;
        let net = IpNet::new(ip, message.header.prefix_len).ok()?;
        Some(AddressEntry {
            net,
            tentative: flags.contains(AddressFlags::Tentative),
            dad_failed: flags.contains(AddressFlags::Dadfailed),
            secondary: flags.contains(AddressFlags::Secondary),
            nodad: flags.contains(AddressFlags::Nodad),
        })
    }

    /// Whether the address can be used now (bound to, sent from).
    pub fn usable(&self) -> bool {
        !self.tentative && !self.dad_failed
    }
}

fn target(index: u32, addr: &IpNet) -> String {
    format!("{addr} on link {index}")
}

impl Netlink {
    /// The addresses on link `index`, both families, with their state flags.
    pub async fn address_entries(&self, index: u32) -> Result<Vec<AddressEntry>, NetlinkError> {
        let fail = |source| NetlinkError::Request {
            action: "listing the addresses of",
            target: format!("link {index}"),
            source,
        };
        let mut stream = std::pin::pin!(
            self.handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
        );
        let mut entries = Vec::new();
        while let Some(message) = stream.try_next().await.map_err(fail)? {
            if let Some(entry) = AddressEntry::from_message(&message) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The addresses on link `index`, both families.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        Ok(self
            .address_entries(index)
            .await?
            .into_iter()
            .map(|e| e.net)
            .collect())
    }

    /// Adds `addr` to link `index`. Idempotent: an address that is already there is Ok
    /// (`EEXIST`). IPv6 addresses are added with `IFA_F_NODAD`, so they are usable at once
    /// instead of tentative for the DAD period.
    pub async fn add_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        let mut request = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                action: "adding address",
                target: target(index, &addr),
                source,
            }),
        }
    }

    /// Removes `addr` (address and prefix length) from link `index`. Idempotent: an absent
    /// address is Ok (`EADDRNOTAVAIL`, `ENOENT`). A missing link is still an error (`ENODEV`).
    pub async fn del_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError> {
        let message = match addr.addr() {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(a, addr.prefix_len())
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(a, addr.prefix_len())
                .build(),
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                action: "removing address",
                target: target(index, &addr),
                source,
            }),
        }
    }

    /// The primary IPv4 address of link `index`, the VRRP source address: the first
    /// non-secondary IPv4 address in kernel order that is not in `exclude` (pass the virtual
    /// addresses, which may be primaries when they are in a subnet of their own).
    pub async fn primary_ipv4(
        &self,
        index: u32,
        exclude: &[IpAddr],
    ) -> Result<Option<Ipv4Addr>, NetlinkError> {
        Ok(self
            .address_entries(index)
            .await?
            .into_iter()
            .filter(|e| !e.secondary && !exclude.contains(&e.net.addr()))
            .find_map(|e| match e.net.addr() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }))
    }

    /// The usable IPv6 link-local address of link `index`, the VRRP source address: the first
    /// fe80::/10 address that is neither tentative nor failed DAD and is not in `exclude`
    /// (pass the virtual addresses: an IPv6 virtual router's first address is link-local).
    /// `None` while the link-local is still tentative (about a second after the link comes
    /// up, unless DAD is off): try again later.
    pub async fn link_local_ipv6(
        &self,
        index: u32,
        exclude: &[IpAddr],
    ) -> Result<Option<Ipv6Addr>, NetlinkError> {
        Ok(self
            .address_entries(index)
            .await?
            .into_iter()
            .filter(|e| e.usable() && !exclude.contains(&e.net.addr()))
            .find_map(|e| match e.net.addr() {
                IpAddr::V6(a) if a.is_unicast_link_local() => Some(a),
                _ => None,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;

    #[test]
    fn entry_prefers_local_and_reads_32_bit_flags() {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.header.prefix_len = 64;
        m.header.flags = AddressHeaderFlags::Permanent;
        m.attributes
            .push(AddressAttribute::Address("2001:db8::1".parse().unwrap()));
        m.attributes.push(AddressAttribute::Flags(
            AddressFlags::Tentative | AddressFlags::Nodad,
        ));
        let e = AddressEntry::from_message(&m).unwrap();
        assert_eq!(e.net, "2001:db8::1/64".parse::<IpNet>().unwrap());
        assert!(e.tentative && e.nodad && !e.usable());

        let mut m = AddressMessage::default();
        m.header.prefix_len = 32;
        m.header.flags = AddressHeaderFlags::Secondary;
        m.attributes
            .push(AddressAttribute::Address("10.0.0.2".parse().unwrap()));
        m.attributes
            .push(AddressAttribute::Local("10.0.0.1".parse().unwrap()));
        let e = AddressEntry::from_message(&m).unwrap();
        assert_eq!(e.net, "10.0.0.1/32".parse::<IpNet>().unwrap());
        assert!(e.secondary && e.usable());
    }

    #[test]
    fn entry_without_address_or_with_bad_prefix_is_skipped() {
        let mut m = AddressMessage::default();
        assert!(AddressEntry::from_message(&m).is_none());
        m.header.prefix_len = 33;
        m.attributes
            .push(AddressAttribute::Local("10.0.0.1".parse().unwrap()));
        assert!(AddressEntry::from_message(&m).is_none());
    }
}
