//! Raw VRRP sockets (IP protocol 112), one per (interface, family).
//!
//! Several virtual routers on the same interface share one socket: the driver demultiplexes
//! received adverts by VRID after the codec has decoded them.
//!
//! What the kernel hands back differs by family, and [`RxPacket`] keeps that difference rather
//! than hiding it, because the codec needs the IPv4 header to check the TTL and the checksum
//! pseudo-header:
//!
//! - IPv4 raw sockets deliver the whole datagram, IP header included; source, destination and
//!   TTL are read from that header.
//! - IPv6 raw sockets deliver the payload only; the source comes from the socket address, the
//!   destination from an `IPV6_PKTINFO` control message and the hop limit from an
//!   `IPV6_HOPLIMIT` control message.
//!
//! On send the kernel builds the IP header (no `IP_HDRINCL`); the TTL / hop limit is 255 for
//! multicast and unicast alike (RFC 5798 §5.1.1.3), and `IPV6_CHECKSUM` is left off because the
//! codec computes the VRRP checksum itself.
//!
//! The source address is chosen per packet with an `IP_PKTINFO` / `IPV6_PKTINFO` control
//! message, not by `bind`: an IPv4 raw socket bound to a unicast address only receives
//! packets *destined* to that address, so it would never see an advert sent to 224.0.0.18
//! (and a bound IPv6 socket would miss unicast adverts sent to the interface's other
//! addresses).

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Mutex;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvmsg, sendmsg,
    setsockopt, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::ready::ReadySet;
use crate::proto::Family;

/// The IP protocol number of VRRP.
pub const VRRP_PROTOCOL: i32 = 112;
/// The IPv4 multicast group VRRP adverts are sent to (RFC 5798 §5.1.1.2).
pub const VRRP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group VRRP adverts are sent to (RFC 5798 §5.1.2.2).
pub const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// The TTL / hop limit every VRRP packet is sent with and must be received with.
const HOP_LIMIT: u32 = 255;

/// Receive buffer size: the largest IP datagram, so nothing is ever truncated silently.
const RECV_BUFFER: usize = 65_536;

/// A packet received on a [`VrrpSocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxPacket {
    /// IPv4: the whole datagram, IP header included. IPv6: the VRRP message only.
    pub data: Vec<u8>,
    /// The sender's address.
    pub source: IpAddr,
    /// The address the packet was sent to (the VRRP group, or ours for unicast peers).
    pub destination: IpAddr,
    /// IPv4: the TTL from the header. IPv6: the hop limit from the `IPV6_HOPLIMIT` cmsg.
    pub hop_limit: u8,
}

/// Why an operation on a [`VrrpSocket`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("opening the {family} VRRP socket on {ifname}: {step}: {source}")]
    Open {
        ifname: String,
        family: Family,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "opening the {family} VRRP socket on {ifname}: source address {address} is not an {family} address"
    )]
    SourceFamily {
        ifname: String,
        family: Family,
        address: IpAddr,
    },
    #[error("receiving on the {family} VRRP socket on {ifname}: {source}")]
    Recv {
        ifname: String,
        family: Family,
        #[source]
        source: io::Error,
    },
    /// A packet arrived but could not be turned into an [`RxPacket`]; it was dropped. The
    /// socket stays usable.
    #[error("receiving on the {family} VRRP socket on {ifname}: dropped a packet: {reason}")]
    Malformed {
        ifname: String,
        family: Family,
        reason: String,
    },
    #[error("sending {len} bytes to {destination} on the VRRP socket on {ifname}: {source}")]
    Send {
        ifname: String,
        destination: IpAddr,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error(
        "sending to {destination} on the {family} VRRP socket on {ifname}: the destination is not an {family} address"
    )]
    DestinationFamily {
        ifname: String,
        family: Family,
        destination: IpAddr,
    },
}

/// A raw VRRP socket bound to one interface for one address family.
///
/// Errors from [`recv`](VrrpSocket::recv) concern one packet (or one queued ICMP error): the
/// socket stays usable and the caller should count the error and carry on.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifname: String,
    ifindex: u32,
    family: Family,
    source: Mutex<Option<IpAddr>>,
    /// Receive scratch space, allocated once: a fresh zeroed 64 KiB buffer per packet cost more
    /// than everything else a backup does with an advert. Only the packet is copied out.
    rx_buffer: Mutex<Box<[u8]>>,
    /// Read readiness for [`VrrpSocket::recv`], made on first use.
    own_ready_set: std::sync::OnceLock<ReadySet>,
}

impl VrrpSocket {
    /// Opens a raw socket for `family` bound to interface `ifname` (`SO_BINDTODEVICE`), joins
    /// 224.0.0.18 / ff02::12 on it by `ifindex`, and sets the multicast and unicast TTL / hop
    /// limit to 255, multicast loop off, `IP_MULTICAST_IF` / `IPV6_MULTICAST_IF` to `ifindex`,
    /// `IP(V6)_MULTICAST_ALL` off (only the groups this socket joined), and for IPv6
    /// `IPV6_RECVHOPLIMIT` and `IPV6_RECVPKTINFO` on. Non-blocking and close-on-exec.
    ///
    /// `source`: if given, adverts leave from that address (see [`set_source`]). It is set per
    /// packet with `IP_PKTINFO` / `IPV6_PKTINFO` rather than bound, so the socket still
    /// receives multicast and unicast to any of the interface's addresses. The kernel checks
    /// it on each send: it must be assigned to the host and, for IPv6, not tentative
    /// (otherwise `send_to` fails, e.g. `ENETUNREACH` for IPv4, `EINVAL` for IPv6).
    ///
    /// [`set_source`]: VrrpSocket::set_source
    ///
    /// Must be called from within a tokio runtime with I/O enabled.
    pub fn open(
        ifname: &str,
        ifindex: u32,
        family: Family,
        source: Option<IpAddr>,
    ) -> Result<VrrpSocket, SocketError> {
        let fail = |step: &'static str| {
            let ifname = ifname.to_owned();
            move |source: io::Error| SocketError::Open {
                ifname,
                family,
                step,
                source,
            }
        };
        if ifindex == 0 || i32::try_from(ifindex).is_err() {
            return Err(fail("checking the interface index")(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ifindex} is not a valid interface index"),
            )));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(fail("registering with the tokio reactor")(
                io::Error::other("no tokio runtime is running"),
            ));
        }
        if let Some(address) = source
            && Family::of(&address) != family
        {
            return Err(SocketError::SourceFamily {
                ifname: ifname.to_owned(),
                family,
                address,
            });
        }

        let domain = match family {
            Family::Ipv4 => Domain::IPV4,
            Family::Ipv6 => Domain::IPV6,
        };
        let socket = Socket::new(
            domain,
            Type::RAW.nonblocking().cloexec(),
            Some(Protocol::from(VRRP_PROTOCOL)),
        )
        .map_err(fail("creating the raw socket"))?;
        socket
            .bind_device(Some(ifname.as_bytes()))
            .map_err(fail("binding to the interface (SO_BINDTODEVICE)"))?;

        match family {
            Family::Ipv4 => {
                socket
                    .join_multicast_v4_n(&VRRP_GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))
                    .map_err(fail("joining 224.0.0.18"))?;
                set_multicast_if_v4_index(&socket, ifindex)
                    .map_err(fail("setting IP_MULTICAST_IF"))?;
                socket
                    .set_multicast_ttl_v4(HOP_LIMIT)
                    .map_err(fail("setting IP_MULTICAST_TTL"))?;
                socket
                    .set_ttl_v4(HOP_LIMIT)
                    .map_err(fail("setting IP_TTL"))?;
                socket
                    .set_multicast_loop_v4(false)
                    .map_err(fail("clearing IP_MULTICAST_LOOP"))?;
                socket
                    .set_multicast_all_v4(false)
                    .map_err(fail("clearing IP_MULTICAST_ALL"))?;
            }
            Family::Ipv6 => {
                socket
                    .join_multicast_v6(&VRRP_GROUP_V6, ifindex)
                    .map_err(fail("joining ff02::12"))?;
                socket
                    .set_multicast_if_v6(ifindex)
                    .map_err(fail("setting IPV6_MULTICAST_IF"))?;
                socket
                    .set_multicast_hops_v6(HOP_LIMIT)
                    .map_err(fail("setting IPV6_MULTICAST_HOPS"))?;
                socket
                    .set_unicast_hops_v6(HOP_LIMIT)
                    .map_err(fail("setting IPV6_UNICAST_HOPS"))?;
                socket
                    .set_multicast_loop_v6(false)
                    .map_err(fail("clearing IPV6_MULTICAST_LOOP"))?;
                socket
                    .set_multicast_all_v6(false)
                    .map_err(fail("clearing IPV6_MULTICAST_ALL"))?;
                socket
                    .set_recv_hoplimit_v6(true)
                    .map_err(fail("setting IPV6_RECVHOPLIMIT"))?;
                setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                    .map_err(|errno| fail("setting IPV6_RECVPKTINFO")(errno.into()))?;
            }
        }

        // Write interest only: reads are watched one-shot through a ReadySet, so that a burst of
        // adverts does not wake the reactor once per datagram.
        // SAFETY: `Socket` owns its descriptor, keeps it open until it is dropped and always
        // returns that same descriptor from `as_raw_fd`.
        let fd = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::WRITABLE) }
            .map_err(|e| fail("registering with the tokio reactor")(e.into()))?;
        Ok(VrrpSocket {
            fd,
            ifname: ifname.to_owned(),
            ifindex,
            family,
            source: Mutex::new(source),
            rx_buffer: Mutex::new(vec![0u8; RECV_BUFFER].into_boxed_slice()),
            own_ready_set: std::sync::OnceLock::new(),
        })
    }

    /// Changes the source address of the adverts sent from now on (`None`: let the kernel
    /// choose). Use it when the interface's primary or link-local address changes, or once
    /// the link-local address has left the tentative state.
    pub fn set_source(&self, source: Option<IpAddr>) -> Result<(), SocketError> {
        if let Some(address) = source
            && Family::of(&address) != self.family
        {
            return Err(SocketError::SourceFamily {
                ifname: self.ifname.clone(),
                family: self.family,
                address,
            });
        }
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = source;
        Ok(())
    }

    /// The source address adverts are sent from, if one was chosen.
    pub fn source(&self) -> Option<IpAddr> {
        *self.source.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The interface this socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The index of the interface this socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The address family of this socket.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Receives the next packet (for a driver with one socket; the daemon watches all of its
    /// sockets with one [`ReadySet`] and calls [`VrrpSocket::try_recv`]).
    pub async fn recv(&self) -> Result<RxPacket, SocketError> {
        let set = match self.own_ready_set.get() {
            Some(set) => set,
            None => {
                let set = ReadySet::new(&[self.as_fd()]).map_err(|e| self.recv_error(e))?;
                self.own_ready_set.get_or_init(|| set)
            }
        };
        loop {
            if let Some(result) = self.try_recv() {
                return result;
            }
            set.arm(0, self.as_fd()).map_err(|e| self.recv_error(e))?;
            let mut ready = Vec::new();
            std::future::poll_fn(|cx| set.poll_ready(cx, &mut ready))
                .await
                .map_err(|e| self.recv_error(e))?;
        }
    }

    /// Receives a packet if one is queued, without waiting: `None` when the socket is empty.
    /// An error concerns one datagram (or a queued ICMP error); the socket stays usable.
    pub fn try_recv(&self) -> Option<Result<RxPacket, SocketError>> {
        loop {
            let mut buf = self.rx_buffer.lock().unwrap_or_else(|p| p.into_inner());
            let socket = self.fd.get_ref();
            let result = match self.family {
                Family::Ipv4 => recv_v4(socket, &mut buf),
                Family::Ipv6 => recv_v6(socket, &mut buf),
            };
            return Some(match result {
                Ok(Ok(packet)) => Ok(packet),
                Ok(Err(reason)) => Err(SocketError::Malformed {
                    ifname: self.ifname.clone(),
                    family: self.family,
                    reason,
                }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.recv_error(e)),
            });
        }
    }

    /// The socket's descriptor, for a [`ReadySet`].
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }

    /// Sends `payload` (a VRRP message) to `destination` from the [`source`] address; the
    /// kernel adds the IP header.
    ///
    /// [`source`]: VrrpSocket::source
    pub async fn send_to(&self, payload: &[u8], destination: IpAddr) -> Result<(), SocketError> {
        if Family::of(&destination) != self.family {
            return Err(SocketError::DestinationFamily {
                ifname: self.ifname.clone(),
                family: self.family,
                destination,
            });
        }
        let source = self.source();
        let fail = |source: io::Error| SocketError::Send {
            ifname: self.ifname.clone(),
            destination,
            len: payload.len(),
            source,
        };
        loop {
            let mut guard = self.fd.writable().await.map_err(fail)?;
            match guard.try_io(|inner| {
                send_one(inner.get_ref(), payload, destination, source, self.ifindex)
            }) {
                Ok(Ok(sent)) if sent == payload.len() => return Ok(()),
                Ok(Ok(sent)) => {
                    return Err(fail(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("only {sent} bytes were sent"),
                    )));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(fail(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn recv_error(&self, source: io::Error) -> SocketError {
        SocketError::Recv {
            ifname: self.ifname.clone(),
            family: self.family,
            source,
        }
    }
}

/// One `sendmsg`, with a pktinfo control message when a source address is set.
fn send_one(
    socket: &Socket,
    payload: &[u8],
    destination: IpAddr,
    source: Option<IpAddr>,
    ifindex: u32,
) -> io::Result<usize> {
    let iov = [io::IoSlice::new(payload)];
    let fd = socket.as_raw_fd();
    let flags = MsgFlags::empty();
    match destination {
        IpAddr::V4(d) => {
            let to = SockaddrIn::from(SocketAddrV4::new(d, 0));
            let info = match source {
                Some(IpAddr::V4(s)) => Some(libc::in_pktinfo {
                    ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(s).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                }),
                _ => None,
            };
            match &info {
                Some(info) => sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(info)],
                    flags,
                    Some(&to),
                ),
                None => sendmsg(fd, &iov, &[], flags, Some(&to)),
            }
        }
        IpAddr::V6(d) => {
            let to = SockaddrIn6::from(SocketAddrV6::new(d, 0, 0, scope_for(&d, ifindex)));
            let info = match source {
                Some(IpAddr::V6(s)) => Some(libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: s.octets(),
                    },
                    ipi6_ifindex: ifindex,
                }),
                _ => None,
            };
            match &info {
                Some(info) => sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(info)],
                    flags,
                    Some(&to),
                ),
                None => sendmsg(fd, &iov, &[], flags, Some(&to)),
            }
        }
    }
    .map_err(io::Error::from)
}

/// The scope id an IPv6 destination or source needs: the interface for link-local unicast and
/// for multicast, none otherwise (the kernel ignores it for global addresses anyway).
fn scope_for(address: &Ipv6Addr, ifindex: u32) -> u32 {
    if address.is_unicast_link_local() || address.is_multicast() {
        ifindex
    } else {
        0
    }
}

/// `IP_MULTICAST_IF` by interface index (`struct ip_mreqn`), which socket2 only offers by
/// address.
fn set_multicast_if_v4_index(socket: &Socket, ifindex: u32) -> io::Result<()> {
    let index = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index,
    };
    // SAFETY: the pointer and length describe a live, initialised `ip_mreqn`, which is what
    // the kernel expects for IP_MULTICAST_IF.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&mreqn as *const libc::ip_mreqn).cast(),
            mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One receive on an IPv4 raw socket. The outer `io::Result` is the system call, the inner
/// `Result` whether the datagram was usable.
fn recv_v4(socket: &Socket, buf: &mut [u8]) -> io::Result<Result<RxPacket, String>> {
    let (len, flags) = {
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrIn>(socket.as_raw_fd(), &mut iov, None, MsgFlags::empty())
            .map_err(io::Error::from)?;
        (msg.bytes, msg.flags)
    };
    if flags.contains(MsgFlags::MSG_TRUNC) {
        return Ok(Err(format!(
            "datagram longer than the {RECV_BUFFER}-byte buffer"
        )));
    }
    let datagram = &buf[..len];
    Ok(
        parse_v4_header(datagram).map(|(source, destination, hop_limit)| RxPacket {
            data: datagram.to_vec(),
            source: IpAddr::V4(source),
            destination: IpAddr::V4(destination),
            hop_limit,
        }),
    )
}

/// Source, destination and TTL from an IPv4 header, checked enough not to misread it.
fn parse_v4_header(datagram: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr, u8), String> {
    let Some(header) = datagram.get(..20) else {
        return Err(format!(
            "{}-byte datagram is shorter than an IPv4 header",
            datagram.len()
        ));
    };
    let version = header[0] >> 4;
    if version != 4 {
        return Err(format!("IP version {version} on an IPv4 socket"));
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < 20 || header_len > datagram.len() {
        return Err(format!(
            "IPv4 header length {header_len} does not fit a {}-byte datagram",
            datagram.len()
        ));
    }
    let source = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let destination = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    Ok((source, destination, header[8]))
}

/// One receive on an IPv6 raw socket, with the pktinfo and hop-limit control messages.
fn recv_v6(socket: &Socket, buf: &mut [u8]) -> io::Result<Result<RxPacket, String>> {
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let (len, source, destination, hop_limit) = {
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrIn6>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Ok(Err(format!(
                "datagram longer than the {RECV_BUFFER}-byte buffer"
            )));
        }
        let Ok(cmsgs) = msg.cmsgs() else {
            return Ok(Err("control messages were truncated".to_owned()));
        };
        let mut destination = None;
        let mut hop_limit = None;
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    destination = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                ControlMessageOwned::Ipv6HopLimit(h) => hop_limit = Some(h),
                _ => {}
            }
        }
        let source = msg.address.map(|a| a.ip());
        (msg.bytes, source, destination, hop_limit)
    };
    let Some(source) = source else {
        return Ok(Err("no IPv6 source address".to_owned()));
    };
    let Some(destination) = destination else {
        return Ok(Err("no IPV6_PKTINFO control message".to_owned()));
    };
    let hop_limit = match hop_limit.map(u8::try_from) {
        Some(Ok(h)) => h,
        Some(Err(_)) => return Ok(Err("IPV6_HOPLIMIT out of range".to_owned())),
        None => return Ok(Err("no IPV6_HOPLIMIT control message".to_owned())),
    };
    Ok(Ok(RxPacket {
        data: buf[..len].to_vec(),
        source: IpAddr::V6(source),
        destination: IpAddr::V6(destination),
        hop_limit,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_header_fields() {
        let mut d = vec![0u8; 28];
        d[0] = 0x45;
        d[8] = 255;
        d[9] = 112;
        d[12..16].copy_from_slice(&[192, 0, 2, 1]);
        d[16..20].copy_from_slice(&[224, 0, 0, 18]);
        assert_eq!(
            parse_v4_header(&d),
            Ok((Ipv4Addr::new(192, 0, 2, 1), VRRP_GROUP_V4, 255))
        );
    }

    #[test]
    fn v4_header_rejects_short_and_bad_lengths() {
        assert!(parse_v4_header(&[]).is_err());
        assert!(parse_v4_header(&[0x45; 19]).is_err());
        let mut d = vec![0u8; 20];
        d[0] = 0x46; // 24-byte header in a 20-byte datagram
        assert!(parse_v4_header(&d).is_err());
        d[0] = 0x44; // 16-byte header: below the minimum
        assert!(parse_v4_header(&d).is_err());
        d[0] = 0x65; // version 6
        assert!(parse_v4_header(&d).is_err());
    }

    #[test]
    fn scope_only_for_link_scoped_addresses() {
        assert_eq!(scope_for(&"fe80::1".parse().unwrap(), 7), 7);
        assert_eq!(scope_for(&VRRP_GROUP_V6, 7), 7);
        assert_eq!(scope_for(&"2001:db8::1".parse().unwrap(), 7), 0);
    }

    #[tokio::test]
    async fn open_rejects_mismatched_source_and_bad_index() {
        let e = VrrpSocket::open("lo", 1, Family::Ipv4, Some("::1".parse().unwrap()))
            .expect_err("an IPv6 source on an IPv4 socket");
        assert!(matches!(e, SocketError::SourceFamily { .. }), "{e}");
        let e = VrrpSocket::open("lo", 0, Family::Ipv4, None).expect_err("ifindex 0");
        assert!(matches!(e, SocketError::Open { .. }), "{e}");
    }

    #[test]
    fn open_outside_a_runtime_is_an_error() {
        let e = VrrpSocket::open("lo", 1, Family::Ipv4, None).expect_err("no runtime");
        assert!(e.to_string().contains("tokio"), "{e}");
    }
}
