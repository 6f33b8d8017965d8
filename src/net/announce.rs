//! Gratuitous ARP and unsolicited neighbour advertisements for virtual addresses.
//!
//! A new master announces each virtual address so that hosts and switches learn the virtual
//! MAC at once (RFC 5798 §6.4.2, RFC 4861 §7.2.6). The frames are built with `pnet_packet` by
//! pure functions, so they can be checked byte by byte, and sent whole over an `AF_PACKET`
//! socket bound to the interface.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_base::MacAddr;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherType, EtherTypes, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags,
};
use pnet_packet::icmpv6::{Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::MutableIpv6Packet;
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

const ETHERNET_HEADER: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER: usize = 40;
/// ICMPv6 NA header (4) + flags/reserved (4) + target (16) + one 8-byte TLLA option.
const NA_LEN: usize = 32;

/// Ethernet broadcast, the destination of a gratuitous ARP.
const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1, the all-nodes group an unsolicited NA goes to.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The Ethernet address of ff02::1 (RFC 2464 §7).
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// Why an announcement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(
        "opening the AF_PACKET announcement socket on interface index {ifindex}: {step}: {source}"
    )]
    Open {
        ifindex: u32,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("sending a {what} for {address} on interface index {ifindex}: {source}")]
    Send {
        what: &'static str,
        address: IpAddr,
        ifindex: u32,
        #[source]
        source: io::Error,
    },
}

/// Sends gratuitous ARPs and unsolicited NAs on one interface.
///
/// The socket is opened with protocol 0, so it never receives (nothing queues up on it), and
/// it is non-blocking: a full transmit queue is reported as an error rather than stalling the
/// runtime.
#[derive(Debug)]
pub struct Announcer {
    socket: Socket,
    ifindex: u32,
}

impl Announcer {
    /// Opens an `AF_PACKET` raw socket bound to `ifindex`.
    pub fn open(ifindex: u32) -> Result<Announcer, AnnounceError> {
        let fail = |step: &'static str| {
            move |source: io::Error| AnnounceError::Open {
                ifindex,
                step,
                source,
            }
        };
        let index = i32::try_from(ifindex)
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| {
                fail("checking the interface index")(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{ifindex} is not a valid interface index"),
                ))
            })?;
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW.nonblocking().cloexec(),
            Some(Protocol::from(0)),
        )
        .map_err(fail("creating the socket"))?;
        socket
            .bind(&link_address(index, 0, [0; 6]))
            .map_err(fail("binding to the interface"))?;
        Ok(Announcer { socket, ifindex })
    }

    /// The interface this announcer sends on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends a gratuitous ARP for `vip` from `mac`: see [`build_gratuitous_arp`].
    pub fn gratuitous_arp(&self, mac: [u8; 6], vip: Ipv4Addr) -> Result<(), AnnounceError> {
        let frame = build_gratuitous_arp(mac, vip);
        self.send(&frame, EtherTypes::Arp, BROADCAST)
            .map_err(|source| AnnounceError::Send {
                what: "gratuitous ARP",
                address: IpAddr::V4(vip),
                ifindex: self.ifindex,
                source,
            })
    }

    /// Sends an unsolicited neighbour advertisement for `vip` from `mac` and `source` (the
    /// interface's link-local address): see [`build_unsolicited_na`].
    pub fn unsolicited_na(
        &self,
        mac: [u8; 6],
        source: Ipv6Addr,
        vip: Ipv6Addr,
    ) -> Result<(), AnnounceError> {
        let frame = build_unsolicited_na(mac, source, vip);
        self.send(&frame, EtherTypes::Ipv6, ALL_NODES_MAC)
            .map_err(|source| AnnounceError::Send {
                what: "unsolicited neighbour advertisement",
                address: IpAddr::V6(vip),
                ifindex: self.ifindex,
                source,
            })
    }

    fn send(&self, frame: &[u8], ethertype: EtherType, destination: [u8; 6]) -> io::Result<()> {
        // `open` checked that the index fits.
        let index = i32::try_from(self.ifindex).unwrap_or(0);
        let address = link_address(index, ethertype.0, destination);
        loop {
            match self.socket.send_to(frame, &address) {
                Ok(sent) if sent == frame.len() => return Ok(()),
                Ok(sent) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("only {sent} of {} bytes were sent", frame.len()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A `sockaddr_ll` for `ifindex`, Ethernet protocol `ethertype` (host order) and hardware
/// destination `destination`.
fn link_address(ifindex: i32, ethertype: u16, destination: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is a platform sockaddr type no larger than `sockaddr_storage`.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = ethertype.to_be();
    ll.sll_ifindex = ifindex;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&destination);
    // SAFETY: the storage holds an initialised `sockaddr_ll` of exactly this length.
    unsafe {
        SockAddr::new(
            storage,
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}

/// Builds a gratuitous ARP frame (42 bytes, unpadded): an ARP request with sender IP = target
/// IP = `vip`, sender MAC = `mac`, target MAC 00:00:00:00:00:00, sent from `mac` to the
/// Ethernet broadcast address.
pub fn build_gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; ETHERNET_HEADER + ARP_LEN];
    {
        // The buffer is sized for the header, so `new` cannot fail.
        let mut eth = MutableEthernetPacket::new(&mut frame).expect("frame sized for Ethernet");
        eth.set_destination(MacAddr::from(BROADCAST));
        eth.set_source(MacAddr::from(mac));
        eth.set_ethertype(EtherTypes::Arp);
    }
    let mut arp =
        MutableArpPacket::new(&mut frame[ETHERNET_HEADER..]).expect("frame sized for ARP");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(ArpOperations::Request);
    arp.set_sender_hw_addr(MacAddr::from(mac));
    arp.set_sender_proto_addr(vip);
    arp.set_target_hw_addr(MacAddr::zero());
    arp.set_target_proto_addr(vip);
    frame
}

/// Builds an unsolicited neighbour advertisement frame (86 bytes, RFC 4861 §7.2.6): ICMPv6
/// type 136 with the Router and Override flags set and Solicited clear, target `vip`, a
/// Target Link-Layer Address option carrying `mac`; IPv6 from `source` to ff02::1 with hop
/// limit 255; Ethernet from `mac` to 33:33:00:00:00:01. The ICMPv6 checksum covers the IPv6
/// pseudo-header.
pub fn build_unsolicited_na(mac: [u8; 6], source: Ipv6Addr, vip: Ipv6Addr) -> Vec<u8> {
    let mut frame = vec![0u8; ETHERNET_HEADER + IPV6_HEADER + NA_LEN];
    {
        let mut eth = MutableEthernetPacket::new(&mut frame).expect("frame sized for Ethernet");
        eth.set_destination(MacAddr::from(ALL_NODES_MAC));
        eth.set_source(MacAddr::from(mac));
        eth.set_ethertype(EtherTypes::Ipv6);
    }
    {
        let mut ip =
            MutableIpv6Packet::new(&mut frame[ETHERNET_HEADER..]).expect("frame sized for IPv6");
        ip.set_version(6);
        ip.set_traffic_class(0);
        ip.set_flow_label(0);
        ip.set_payload_length(NA_LEN as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(255);
        ip.set_source(source);
        ip.set_destination(ALL_NODES);
    }
    let icmp = &mut frame[ETHERNET_HEADER + IPV6_HEADER..];
    {
        let mut na = MutableNeighborAdvertPacket::new(icmp).expect("frame sized for an NA");
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(Icmpv6Code(0));
        na.set_flags(NeighborAdvertFlags::Router | NeighborAdvertFlags::Override);
        na.set_reserved(0);
        na.set_target_addr(vip);
        na.set_options(&[NdpOption {
            option_type: NdpOptionTypes::TargetLLAddr,
            length: 1, // in units of 8 bytes: type, length and the 6-byte MAC
            data: mac.to_vec(),
        }]);
    }
    let checksum = pnet_packet::icmpv6::checksum(
        &Icmpv6Packet::new(icmp).expect("frame sized for ICMPv6"),
        &source,
        &ALL_NODES,
    );
    MutableNeighborAdvertPacket::new(icmp)
        .expect("frame sized for an NA")
        .set_checksum(checksum);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x02, 0x07];

    #[test]
    fn gratuitous_arp_bytes() {
        let frame = build_gratuitous_arp(
            [0x00, 0x00, 0x5e, 0x00, 0x01, 0x07],
            Ipv4Addr::new(192, 0, 2, 7),
        );
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            // Ethernet: broadcast <- 00:00:5e:00:01:07, ARP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x00, 0x00, 0x5e, 0x00, 0x01, 0x07,
            0x08, 0x06,
            // ARP: Ethernet / IPv4, hlen 6, plen 4, request
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
            // sender MAC, sender IP
            0x00, 0x00, 0x5e, 0x00, 0x01, 0x07, 192, 0, 2, 7,
            // target MAC (zero), target IP (= sender IP)
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 7,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn unsolicited_na_bytes() {
        let frame = build_unsolicited_na(
            MAC,
            "fe80::1234".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        );
        #[rustfmt::skip]
        let expected: [u8; 86] = [
            // Ethernet: 33:33:00:00:00:01 <- 00:00:5e:00:02:07, IPv6
            0x33, 0x33, 0x00, 0x00, 0x00, 0x01,
            0x00, 0x00, 0x5e, 0x00, 0x02, 0x07,
            0x86, 0xdd,
            // IPv6: version 6, no class/flow, payload 32, next header ICMPv6, hop limit 255
            0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 58, 255,
            // source fe80::1234
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34,
            // destination ff02::1
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
            // ICMPv6 NA, code 0, checksum (computed independently), R|O, reserved
            136, 0, 0x38, 0x23, 0xa0, 0, 0, 0,
            // target 2001:db8::7
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
            // option: Target Link-Layer Address, length 1 (8 bytes), MAC
            2, 1, 0x00, 0x00, 0x5e, 0x00, 0x02, 0x07,
        ];
        assert_eq!(frame, expected);
    }

    /// An independent RFC 1071 checksum over the pseudo-header and message: summing a correct
    /// message with its checksum in place gives zero.
    #[test]
    fn na_checksum_verifies() {
        let source: Ipv6Addr = "fe80::200:5eff:fe00:207".parse().unwrap();
        let vip: Ipv6Addr = "fe80::1".parse().unwrap();
        let frame = build_unsolicited_na(MAC, source, vip);
        let icmp = &frame[ETHERNET_HEADER + IPV6_HEADER..];
        let mut data = Vec::new();
        data.extend_from_slice(&source.octets());
        data.extend_from_slice(&ALL_NODES.octets());
        data.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 58]);
        data.extend_from_slice(icmp);
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn open_rejects_bad_index() {
        assert!(matches!(
            Announcer::open(0),
            Err(AnnounceError::Open { ifindex: 0, .. })
        ));
        assert!(matches!(
            Announcer::open(u32::MAX),
            Err(AnnounceError::Open { .. })
        ));
    }
}
