//! Link events over a dedicated netlink socket bound to `RTMGRP_LINK`.
//!
//! Subscribe before you dump: [`link_monitor`] binds the multicast group before it returns,
//! so a caller that then reads the current state (with [`Netlink::link_by_name`] or
//! [`Netlink::links`]) misses nothing; an event may arrive for a state it has already read,
//! which is harmless because events carry the full link state.
//!
//! When the kernel drops notifications because the socket buffer overflowed (`ENOBUFS`), or a
//! notification cannot be decoded, the monitor sends [`LinkMonitorEvent::Resync`]: the caller
//! must re-read every link it cares about. The channel to the caller is bounded: a caller that
//! falls behind stalls the reader, the kernel overruns the socket, and the caller gets a
//! `Resync` instead of unbounded memory growth.
//!
//! [`Netlink::link_by_name`]: super::Netlink::link_by_name
//! [`Netlink::links`]: super::Netlink::links

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sys::socket::MsgFlags;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::{LinkInfo, NetlinkError};

/// How many events may wait for the caller before the reader stalls.
const DEFAULT_CAPACITY: usize = 256;
/// The receive buffer asked for: enough for a burst of link changes (the kernel doubles it
/// and caps it at `net.core.rmem_max` unless we are privileged enough to force it).
const DEFAULT_RECV_BUFFER: usize = 1 << 20;
/// The largest notification datagram read in one go.
const READ_BUFFER: usize = 1 << 16;
/// The size of a netlink message header.
const HEADER_LEN: usize = 16;

/// One link notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMonitorEvent {
    /// A link was created or changed (`RTM_NEWLINK`); its full current state.
    Link(LinkInfo),
    /// A link was deleted (`RTM_DELLINK`). Its index may be reused later.
    Deleted { index: u32, name: String },
    /// Notifications were lost: re-read all links.
    Resync,
}

const WHAT: &str = "starting the link monitor";

/// Opens the link-event socket (subscribed to `RTMGRP_LINK` before this returns) and spawns
/// the task that reads it on the current tokio runtime. The task ends when the receiver is
/// dropped; the channel closes if the socket fails, which the caller should treat as fatal.
pub fn link_monitor() -> Result<mpsc::Receiver<LinkMonitorEvent>, NetlinkError> {
    link_monitor_with(DEFAULT_CAPACITY, DEFAULT_RECV_BUFFER)
}

/// [`link_monitor`] with a given channel capacity and socket receive buffer size (bytes).
pub fn link_monitor_with(
    capacity: usize,
    recv_buffer: usize,
) -> Result<mpsc::Receiver<LinkMonitorEvent>, NetlinkError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| NetlinkError::NoRuntime { what: WHAT })?;
    let fail = |source: io::Error| NetlinkError::Socket { what: WHAT, source };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(fail)?;
    socket
        .bind(&SocketAddr::new(0, libc::RTMGRP_LINK as u32))
        .map_err(fail)?;
    socket.set_rx_buf_sz(recv_buffer).map_err(fail)?;
    socket.set_non_blocking(true).map_err(fail)?;
    // SAFETY: the netlink `Socket` owns its descriptor, keeps it open until it is dropped and
    // always returns that same descriptor from `as_raw_fd`.
    let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| fail(e.into()))?;
    let (tx, rx) = mpsc::channel(capacity.max(1));
    runtime.spawn(run(fd, tx));
    Ok(rx)
}

/// What one read of the socket produced.
enum Read {
    Datagram(usize),
    Truncated,
    Overrun,
}

async fn run(fd: AsyncFd<Socket>, tx: mpsc::Sender<LinkMonitorEvent>) {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let ready = tokio::select! {
            _ = tx.closed() => return,
            ready = fd.readable() => ready,
        };
        let mut guard = match ready {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!(error = %e, "link monitor: waiting for the socket failed; stopping");
                return;
            }
        };
        let read = guard.try_io(|inner| {
            // MSG_TRUNC makes recv return the datagram's real length.
            match nix::sys::socket::recv(inner.get_ref().as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC)
            {
                Ok(n) if n > buf.len() => Ok(Read::Truncated),
                Ok(n) => Ok(Read::Datagram(n)),
                Err(nix::errno::Errno::ENOBUFS) => Ok(Read::Overrun),
                Err(e) => Err(io::Error::from(e)),
            }
        });
        drop(guard);
        let events = match read {
            Err(_would_block) => continue,
            Ok(Ok(Read::Datagram(n))) => parse(&buf[..n]),
            Ok(Ok(Read::Truncated)) => {
                tracing::warn!("link monitor: notification larger than the buffer; resyncing");
                vec![LinkMonitorEvent::Resync]
            }
            Ok(Ok(Read::Overrun)) => {
                tracing::warn!("link monitor: socket overrun, notifications lost; resyncing");
                vec![LinkMonitorEvent::Resync]
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "link monitor: reading the socket failed; stopping");
                return;
            }
        };
        for event in events {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// The link events in one datagram. Anything undecodable becomes a single `Resync`.
fn parse(datagram: &[u8]) -> Vec<LinkMonitorEvent> {
    let mut events = Vec::new();
    let mut resync = false;
    let mut offset = 0;
    while datagram.len() - offset >= HEADER_LEN {
        let rest = &datagram[offset..];
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < HEADER_LEN || len > rest.len() {
            tracing::warn!(len, "link monitor: bad netlink message length; resyncing");
            resync = true;
            break;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]) {
            Ok(message) => match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    events.push(LinkMonitorEvent::Link(LinkInfo::from_message(&link)));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    let info = LinkInfo::from_message(&link);
                    events.push(LinkMonitorEvent::Deleted {
                        index: info.index,
                        name: info.name,
                    });
                }
                NetlinkPayload::Overrun(_) => resync = true,
                _ => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, "link monitor: undecodable notification; resyncing");
                resync = true;
            }
        }
        // Messages are 4-byte aligned within a datagram.
        offset = offset.saturating_add((len + 3) & !3).min(datagram.len());
    }
    if resync {
        events.push(LinkMonitorEvent::Resync);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NLM_F_MULTIPART, NetlinkHeader};
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

    fn link_message(new: bool, index: u32, name: &str, up: bool) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        if up {
            link.header.flags = LinkFlags::Up | LinkFlags::Running;
        }
        link.attributes.push(LinkAttribute::IfName(name.into()));
        let inner = if new {
            RouteNetlinkMessage::NewLink(link)
        } else {
            RouteNetlinkMessage::DelLink(link)
        };
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        message.header.flags = NLM_F_MULTIPART;
        message.finalize();
        let mut buf = vec![0u8; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    #[test]
    fn parses_several_messages_in_one_datagram() {
        let mut d = link_message(true, 3, "va", false);
        d.extend(link_message(false, 4, "vb", false));
        d.extend(link_message(true, 3, "va", true));
        let events = parse(&d);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(&events[0], LinkMonitorEvent::Link(l) if l.index == 3 && !l.up));
        assert_eq!(
            events[1],
            LinkMonitorEvent::Deleted {
                index: 4,
                name: "vb".into()
            }
        );
        assert!(matches!(&events[2], LinkMonitorEvent::Link(l) if l.name == "va" && l.up));
    }

    #[test]
    fn garbage_means_resync_and_never_panics() {
        assert_eq!(parse(&[]), vec![]);
        assert_eq!(parse(&[0xff; 15]), vec![]);
        assert_eq!(parse(&[0xff; 64]), vec![LinkMonitorEvent::Resync]);
        let mut d = link_message(true, 3, "va", true);
        let n = d.len();
        d.truncate(n - 4);
        assert_eq!(parse(&d), vec![LinkMonitorEvent::Resync]);
        // A header that claims the minimum length but carries an RTM_NEWLINK with no body.
        let mut d = vec![0u8; 16];
        d[0] = 16;
        d[4] = 16; // RTM_NEWLINK
        let events = parse(&d);
        assert!(events.len() <= 1, "{events:?}");
        for len in 0..64 {
            let mut d = link_message(true, 3, "va", true);
            d.truncate(len.min(d.len()));
            let _ = parse(&d);
        }
    }

    /// Flipped bytes in a well-formed notification (xorshift, fixed seed): never a panic.
    #[test]
    fn corrupted_notifications_never_panic() {
        let good = link_message(true, 3, "va", true);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let mut d = good.clone();
            for _ in 0..(next() % 6 + 1) {
                // Keep the length word, so the corruption reaches the attribute parsers.
                let at = 4 + (next() as usize) % (d.len() - 4);
                d[at] = next() as u8;
            }
            let _ = parse(&d);
        }
    }
}
