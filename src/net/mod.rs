//! Network I/O: raw VRRP sockets, gratuitous ARP and unsolicited neighbour advertisements.
//!
//! These modules deal in bytes: the VRRP codec lives in [`crate::proto::packet`] and the
//! driver moves its output through the sockets here.
//!
//! - [`socket`]: one raw IP-protocol-112 socket per (interface, family), shared by every
//!   virtual router on that interface.
//! - [`ready`]: one-shot read readiness for all of them, so a burst of adverts costs one
//!   wake-up.
//! - [`announce`]: gratuitous ARP and unsolicited NA frames, built with `pnet_packet` and sent
//!   over an `AF_PACKET` socket.

pub mod announce;
pub mod ready;
pub mod socket;

pub use announce::{AnnounceError, Announcer, build_gratuitous_arp, build_unsolicited_na};
pub use ready::ReadySet;
pub use socket::{RxPacket, SocketError, VRRP_GROUP_V4, VRRP_GROUP_V6, VRRP_PROTOCOL, VrrpSocket};
