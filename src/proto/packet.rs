//! The VRRPv3 advertisement codec (RFC 5798 §5, with the RFC 9568 §5 updates), free of I/O.
//!
//! Receive: [`Advert::decode_ipv4`] takes a whole IPv4 datagram as a raw `IPPROTO_VRRP` socket
//! delivers it (IP header included); [`Advert::decode_ipv6`] takes the VRRP payload of a raw
//! IPv6 socket plus the addresses and hop limit from `recvmsg`. Every check of RFC 5798 §7.1 that
//! can be made without configuration is made here, and each failure is a distinct
//! [`DecodeError`] whose [`reason`](DecodeError::reason) is a stable counter key.
//!
//! Send: [`Advert::encode`] writes the VRRP message only; the kernel adds the IP header (TTL /
//! hop limit 255 is the socket's business).
//!
//! No function in this module panics, whatever bytes it is given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Centis, ChecksumForm, Family};

/// The IP protocol number of VRRP (RFC 5798 §5.1.1.4, §5.1.2.4).
pub const VRRP_PROTO: u8 = 112;
/// The IPv4 multicast group advertisements are sent to (RFC 5798 §5.1.1.2).
pub const VRRP_MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group advertisements are sent to (RFC 5798 §5.1.2.2).
pub const VRRP_MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The only VRRP version this codec speaks (RFC 5798 §5.2.1).
pub const VRRP_VERSION: u8 = 3;
/// The only VRRP message type (RFC 5798 §5.2.2).
pub const VRRP_TYPE_ADVERTISEMENT: u8 = 1;
/// The TTL / hop limit every advertisement is sent and must be received with (RFC 5798 §5.1.1.3).
pub const VRRP_TTL: u8 = 255;
/// Length of the fixed part of a VRRP message, before the addresses.
pub const HEADER_LEN: usize = 8;
/// The most addresses one advertisement can carry (the Count IPvX Addrs field is one byte).
pub const MAX_ADDRESSES: usize = 255;

const IPV4_MIN_HEADER_LEN: usize = 20;

mod field {
    pub type Field = core::ops::Range<usize>;

    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const RSVD_MAX_ADVER_INT: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Why a received packet was dropped. Each variant is one drop reason with its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the IPv4 header, before the length the IPv4 header announces, or
    /// before the fixed 8-byte VRRP header.
    #[error("packet truncated")]
    Truncated,
    /// The IPv4 header is not one a VRRP socket should deliver: IP version not 4, IHL below 5,
    /// total length shorter than the header or than the datagram, or protocol not 112.
    #[error("malformed IPv4 header")]
    IpHeader,
    /// The datagram is an IPv4 fragment (MF set or a non-zero fragment offset).
    #[error("IPv4 fragment")]
    Fragment,
    /// TTL (IPv4) or hop limit (IPv6) is not 255 (RFC 5798 §7.1): the sender is off-link.
    #[error("TTL or hop limit is not 255")]
    Ttl,
    /// The VRRP version is not 3 (RFC 5798 §5.2.1, §7.1).
    #[error("VRRP version is not 3")]
    Version,
    /// The VRRP type is not 1, ADVERTISEMENT (RFC 5798 §5.2.2).
    #[error("VRRP type is not ADVERTISEMENT")]
    Type,
    /// The Count IPvX Addrs field is zero; an advertisement carries at least one address
    /// (RFC 5798 §5.2.5).
    #[error("address count is zero")]
    AddressCount,
    /// The VRRP message is not exactly 8 bytes plus Count IPvX Addrs addresses of the family
    /// (RFC 5798 §7.1: the packet must contain the complete VRRP message, and nothing else).
    #[error("VRRP length does not match the address count")]
    Length,
    /// The checksum is wrong in every form this family allows (RFC 5798 §5.2.8, §7.1;
    /// RFC 9568 §5.2.8).
    #[error("bad checksum")]
    Checksum,
    /// Max Adver Int is zero (RFC 9568 erratum 8301: the receiver MUST verify it is non-zero;
    /// a zero would make every Backup time out at once).
    #[error("advertisement interval is zero")]
    AdvertInterval,
}

impl DecodeError {
    /// Every variant, for registering counters up front.
    pub const ALL: [DecodeError; 10] = [
        DecodeError::Truncated,
        DecodeError::IpHeader,
        DecodeError::Fragment,
        DecodeError::Ttl,
        DecodeError::Version,
        DecodeError::Type,
        DecodeError::AddressCount,
        DecodeError::Length,
        DecodeError::Checksum,
        DecodeError::AdvertInterval,
    ];

    /// A stable kebab-case key for the drop counter of this reason.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::IpHeader => "ip-header",
            DecodeError::Fragment => "fragment",
            DecodeError::Ttl => "ttl",
            DecodeError::Version => "version",
            DecodeError::Type => "type",
            DecodeError::AddressCount => "address-count",
            DecodeError::Length => "length",
            DecodeError::Checksum => "checksum",
            DecodeError::AdvertInterval => "advert-interval",
        }
    }
}

/// Why an [`Advert`] could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EncodeError {
    /// Source, destination and virtual addresses are not all of one family.
    #[error("source, destination and addresses must all be of one address family")]
    FamilyMismatch,
    /// An advertisement carries at least one address (RFC 5798 §5.2.5).
    #[error("an advertisement needs at least one address")]
    NoAddresses,
    /// More addresses than the one-byte count field can describe.
    #[error("{0} addresses, at most 255 fit in one advertisement")]
    TooManyAddresses(usize),
    /// VRID 0 is not a valid virtual router identifier (RFC 5798 §5.2.3: 1-255).
    #[error("VRID 0 is not valid")]
    InvalidVrid,
}

/// A read-only or read-write view of a VRRPv3 message (RFC 5798 §5.1), without the IP header.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    IPv4 Fields or IPv6 Fields                 |
/// ...                                                           ...
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |(rsvd) |     Max Adver Int     |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +                                                               +
/// |                       IPvX Address(es)                        |
/// +                                                               +
/// +                                                               +
/// +                                                               +
/// +                                                               +
/// |                                                               |
/// +                                                               +
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The only public constructor, [`Packet::new_checked`], guarantees the fixed header is present,
/// so no accessor can panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than
    /// [`HEADER_LEN`], which is why this is private: callers size the buffer first.
    const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer holding at least the fixed 8-byte header; [`DecodeError::Truncated`]
    /// otherwise. Whether the addresses are complete depends on the family, see
    /// [`Packet::check_addresses`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, DecodeError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        Ok(Packet::new_unchecked(buffer))
    }

    /// Checks that the message is exactly the header plus `count` addresses of `family`.
    pub fn check_addresses(&self, family: Family) -> Result<(), DecodeError> {
        if self.addr_count() == 0 {
            return Err(DecodeError::AddressCount);
        }
        let want = message_len(family, self.addr_count() as usize);
        if self.buffer.as_ref().len() != want {
            return Err(DecodeError::Length);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message, header and addresses.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The Version field (high nibble of byte 0).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// The Type field (low nibble of byte 0).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// The Count IPvX Addrs field.
    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// The 4 reserved bits before Max Adver Int (sent as 0, ignored on receive).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::RSVD_MAX_ADVER_INT.start] >> 4
    }

    /// The raw 12-bit Max Adver Int field in centiseconds; may be 0 on the wire.
    pub fn max_advert_int(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::RSVD_MAX_ADVER_INT];
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }

    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The bytes after the fixed header (the addresses, if the length checks passed).
    pub fn address_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum is valid with `pseudo` (the one's complement sum of a
    /// pseudo-header, or 0 for the RFC 9568 message-only form) added to the message.
    fn checksum_valid_with(&self, pseudo: u64) -> bool {
        fold(sum_words(pseudo, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_and_type(&mut self, version: u8, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (msg_type & 0x0f);
    }

    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    pub fn set_addr_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    /// Writes Max Adver Int with the reserved bits zero.
    pub fn set_max_advert_int(&mut self, centis: u16) {
        self.buffer.as_mut()[field::RSVD_MAX_ADVER_INT]
            .copy_from_slice(&(centis & 0x0fff).to_be_bytes());
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    pub fn address_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Zeroes the checksum field, then fills it in with `pseudo` (see
    /// [`Packet::checksum_valid_with`]) added.
    fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let sum = fold(sum_words(pseudo, self.buffer.as_ref()));
        self.set_checksum(!sum);
    }
}

/// One VRRPv3 advertisement, decoded. All addresses are of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub vrid: u8,
    pub priority: u8,
    pub max_advert_interval: Centis,
    pub addresses: Vec<IpAddr>,
}

/// What the receive path learnt besides the advert itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub advert: Advert,
    pub source: IpAddr,
    pub destination: IpAddr,
    /// For IPv6 always [`ChecksumForm::PseudoHeader`]. For IPv4, if both forms happen to
    /// verify (only when the pseudo-header sums to one's complement zero), `PseudoHeader`.
    pub checksum_form: ChecksumForm,
}

/// The parts of an IPv4 header the decoder needs.
struct Ipv4Parts<'a> {
    source: Ipv4Addr,
    destination: Ipv4Addr,
    ttl: u8,
    payload: &'a [u8],
}

/// Splits a raw-socket IPv4 datagram into its header fields and payload, checking the header is
/// one a VRRP socket should deliver. The header checksum is not checked: the kernel has.
fn split_ipv4(datagram: &[u8]) -> Result<Ipv4Parts<'_>, DecodeError> {
    let Some(fixed) = datagram.get(..IPV4_MIN_HEADER_LEN) else {
        return Err(DecodeError::Truncated);
    };
    if fixed[0] >> 4 != 4 {
        return Err(DecodeError::IpHeader);
    }
    let header_len = (fixed[0] & 0x0f) as usize * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(DecodeError::IpHeader);
    }
    let total_len = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
    if total_len < header_len {
        return Err(DecodeError::IpHeader);
    }
    if total_len > datagram.len() {
        return Err(DecodeError::Truncated);
    }
    if total_len < datagram.len() {
        // Linux raw sockets deliver exactly the datagram; bytes beyond it are not ours to guess at.
        return Err(DecodeError::IpHeader);
    }
    let Some(payload) = datagram.get(header_len..total_len) else {
        return Err(DecodeError::Truncated);
    };
    if fixed[9] != VRRP_PROTO {
        return Err(DecodeError::IpHeader);
    }
    let flags_fragment = u16::from_be_bytes([fixed[6], fixed[7]]);
    // MF (0x2000) or a fragment offset; DF (0x4000) and the reserved bit are fine.
    if flags_fragment & 0x3fff != 0 {
        return Err(DecodeError::Fragment);
    }
    Ok(Ipv4Parts {
        source: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
        destination: Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]),
        ttl: fixed[8],
        payload,
    })
}

/// RFC 9568 erratum 8301: a Max Adver Int of zero is dropped. Checked after the checksum so a
/// damaged packet counts as a checksum error.
fn check_interval(packet: &Packet<&[u8]>) -> Result<(), DecodeError> {
    if packet.max_advert_int() == 0 {
        return Err(DecodeError::AdvertInterval);
    }
    Ok(())
}

/// The VRRP payload of a raw-socket IPv4 datagram, if its header is sane enough to find it.
/// Useful with [`Packet::new_checked`] to look at fields of a packet that failed to decode.
pub fn ipv4_payload(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = (first & 0x0f) as usize * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return None;
    }
    datagram.get(header_len..)
}

/// Length of a VRRP message carrying `count` addresses of `family`.
fn message_len(family: Family, count: usize) -> usize {
    HEADER_LEN + count * address_len(family)
}

fn address_len(family: Family) -> usize {
    match family {
        Family::Ipv4 => 4,
        Family::Ipv6 => 16,
    }
}

/// Adds `data` as big-endian 16-bit words to `acc` (an odd last byte is padded with zero).
/// A u64 accumulator cannot overflow for any buffer that fits in memory.
fn sum_words(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = words.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

/// Folds the carries of a one's complement sum into 16 bits.
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The unfolded sum of the RFC 5798 §5.2.8 IPv4 pseudo-header: source, destination, a zero
/// byte, protocol 112 and the VRRP message length.
fn pseudo_sum_v4(source: Ipv4Addr, destination: Ipv4Addr, vrrp_len: usize) -> u64 {
    let mut acc = sum_words(0, &source.octets());
    acc = sum_words(acc, &destination.octets());
    acc += VRRP_PROTO as u64;
    acc += vrrp_len as u64 & 0xffff;
    acc
}

/// The unfolded sum of the RFC 8200 §8.1 (RFC 2460 §8.1) IPv6 upper-layer pseudo-header:
/// source, destination, 32-bit upper-layer length, three zero bytes and next header 112.
fn pseudo_sum_v6(source: Ipv6Addr, destination: Ipv6Addr, vrrp_len: usize) -> u64 {
    let mut acc = sum_words(0, &source.octets());
    acc = sum_words(acc, &destination.octets());
    acc = sum_words(acc, &(vrrp_len as u32).to_be_bytes());
    acc += VRRP_PROTO as u64;
    acc
}

/// Whether an IPv4 message of `vrrp_len` bytes between these addresses verifies in both checksum
/// forms whenever it verifies in one (the pseudo-header sums to one's complement zero), so the
/// form cannot be told from the packet.
pub fn ipv4_checksum_forms_ambiguous(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    vrrp_len: usize,
) -> bool {
    fold(pseudo_sum_v4(source, destination, vrrp_len)) == 0xffff
}

impl Advert {
    /// Decodes a whole IPv4 datagram as a raw `IPPROTO_VRRP` socket delivers it (IP header
    /// included).
    ///
    /// Checks, in order: the IPv4 header (version 4, IHL >= 5, total length equal to the
    /// datagram, protocol 112, not a fragment), TTL 255, VRRP version 3, type ADVERTISEMENT,
    /// a non-zero address count, a VRRP length of exactly 8 + 4 × count, and the checksum in
    /// either form (RFC 5798 pseudo-header, or RFC 9568 message only); the form that matched is
    /// reported, then a non-zero Max Adver Int (RFC 9568 erratum 8301). The reserved bits are
    /// ignored.
    pub fn decode_ipv4(datagram: &[u8]) -> Result<Received, DecodeError> {
        let ip = split_ipv4(datagram)?;
        if ip.ttl != VRRP_TTL {
            return Err(DecodeError::Ttl);
        }
        let packet = Packet::new_checked(ip.payload)?;
        Self::check_common(&packet, Family::Ipv4)?;
        let checksum_form = if packet.checksum_valid_with(pseudo_sum_v4(
            ip.source,
            ip.destination,
            ip.payload.len(),
        )) {
            ChecksumForm::PseudoHeader
        } else if packet.checksum_valid_with(0) {
            ChecksumForm::Rfc9568
        } else {
            return Err(DecodeError::Checksum);
        };
        check_interval(&packet)?;
        Ok(Received {
            advert: Self::parse(&packet, Family::Ipv4),
            source: IpAddr::V4(ip.source),
            destination: IpAddr::V4(ip.destination),
            checksum_form,
        })
    }

    /// Decodes an IPv6 VRRP payload (raw IPv6 sockets deliver no IP header). `source`,
    /// `destination` come from `recvmsg` and `hop_limit` from the `IPV6_HOPLIMIT` cmsg.
    ///
    /// Checks hop limit 255, version 3, type ADVERTISEMENT, a non-zero address count, a length
    /// of exactly 8 + 16 × count, and the checksum over the upper-layer pseudo-header (the only
    /// form IPv6 has).
    pub fn decode_ipv6(
        payload: &[u8],
        source: Ipv6Addr,
        destination: Ipv6Addr,
        hop_limit: u8,
    ) -> Result<Received, DecodeError> {
        if hop_limit != VRRP_TTL {
            return Err(DecodeError::Ttl);
        }
        let packet = Packet::new_checked(payload)?;
        Self::check_common(&packet, Family::Ipv6)?;
        if !packet.checksum_valid_with(pseudo_sum_v6(source, destination, payload.len())) {
            return Err(DecodeError::Checksum);
        }
        check_interval(&packet)?;
        Ok(Received {
            advert: Self::parse(&packet, Family::Ipv6),
            source: IpAddr::V6(source),
            destination: IpAddr::V6(destination),
            checksum_form: ChecksumForm::PseudoHeader,
        })
    }

    /// Version, type, count and length checks shared by both families.
    fn check_common(packet: &Packet<&[u8]>, family: Family) -> Result<(), DecodeError> {
        if packet.version() != VRRP_VERSION {
            return Err(DecodeError::Version);
        }
        if packet.msg_type() != VRRP_TYPE_ADVERTISEMENT {
            return Err(DecodeError::Type);
        }
        packet.check_addresses(family)
    }

    /// Builds the advert from a packet whose lengths have been checked (an unchecked one just
    /// yields fewer addresses).
    fn parse(packet: &Packet<&[u8]>, family: Family) -> Advert {
        let bytes = packet.address_bytes();
        let addresses = match family {
            Family::Ipv4 => bytes
                .chunks_exact(4)
                .map(|c| IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])))
                .collect(),
            Family::Ipv6 => bytes
                .chunks_exact(16)
                .map(|c| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(c);
                    IpAddr::V6(Ipv6Addr::from(o))
                })
                .collect(),
        };
        Advert {
            vrid: packet.vrid(),
            priority: packet.priority(),
            max_advert_interval: Centis::from_wire(packet.max_advert_int()),
            addresses,
        }
    }

    /// Best-effort VRID of an IPv4 datagram that failed to decode (pass the whole datagram), so
    /// the drop can be counted on the right group. `None` if the IPv4 header is too broken to
    /// find the VRRP message or the message has no VRID byte.
    pub fn peek_vrid_ipv4(datagram: &[u8]) -> Option<u8> {
        Self::peek_vrid_ipv6(ipv4_payload(datagram)?)
    }

    /// Best-effort VRID of an IPv6 VRRP payload that failed to decode.
    pub fn peek_vrid_ipv6(payload: &[u8]) -> Option<u8> {
        payload.get(field::VRID).copied()
    }

    /// The family of the addresses (that of the first; [`Advert::encode`] checks they agree).
    pub fn family(&self) -> Option<Family> {
        self.addresses.first().map(Family::of)
    }

    /// Length of the VRRP message (header + addresses).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self
                .addresses
                .iter()
                .map(|a| address_len(Family::of(a)))
                .sum::<usize>()
    }

    /// Encodes the VRRP message only (the kernel adds the IP header) into `buf`, which is
    /// cleared first.
    ///
    /// IPv4 uses the checksum `form` asked for (the pseudo-header needs `source` and
    /// `destination`); IPv6 always uses the pseudo-header and ignores `form`. The reserved bits
    /// are sent as zero. `buf` is left empty on error.
    pub fn encode(
        &self,
        source: IpAddr,
        destination: IpAddr,
        form: ChecksumForm,
        buf: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        buf.clear();
        if self.vrid == 0 {
            return Err(EncodeError::InvalidVrid);
        }
        if self.addresses.is_empty() {
            return Err(EncodeError::NoAddresses);
        }
        if self.addresses.len() > MAX_ADDRESSES {
            return Err(EncodeError::TooManyAddresses(self.addresses.len()));
        }
        let family = Family::of(&source);
        if Family::of(&destination) != family
            || self.addresses.iter().any(|a| Family::of(a) != family)
        {
            return Err(EncodeError::FamilyMismatch);
        }

        let len = message_len(family, self.addresses.len());
        buf.resize(len, 0);
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_version_and_type(VRRP_VERSION, VRRP_TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_addr_count(self.addresses.len() as u8);
        packet.set_max_advert_int(self.max_advert_interval.get());
        let step = address_len(family);
        for (slot, addr) in packet
            .address_bytes_mut()
            .chunks_exact_mut(step)
            .zip(&self.addresses)
        {
            match addr {
                IpAddr::V4(a) => slot.copy_from_slice(&a.octets()),
                IpAddr::V6(a) => slot.copy_from_slice(&a.octets()),
            }
        }
        let pseudo = match (source, destination, form) {
            (IpAddr::V4(s), IpAddr::V4(d), ChecksumForm::PseudoHeader) => pseudo_sum_v4(s, d, len),
            (IpAddr::V4(_), IpAddr::V4(_), ChecksumForm::Rfc9568) => 0,
            (IpAddr::V6(s), IpAddr::V6(d), _) => pseudo_sum_v6(s, d, len),
            // Families were checked to agree above.
            _ => {
                buf.clear();
                return Err(EncodeError::FamilyMismatch);
            }
        };
        packet.fill_checksum(pseudo);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC4: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 2);
    const VIP4: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 100);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x14aa, 0xe7ff, 0xfed3, 0xd0b9);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0x100);

    fn advert4() -> Advert {
        Advert {
            vrid: 51,
            priority: 150,
            max_advert_interval: Centis::DEFAULT_ADVERT,
            addresses: vec![IpAddr::V4(VIP4)],
        }
    }

    fn advert6() -> Advert {
        Advert {
            vrid: 52,
            priority: 150,
            max_advert_interval: Centis::DEFAULT_ADVERT,
            addresses: vec![IpAddr::V6(VIP6)],
        }
    }

    fn encode(advert: &Advert, src: IpAddr, dst: IpAddr, form: ChecksumForm) -> Vec<u8> {
        let mut buf = Vec::new();
        advert.encode(src, dst, form, &mut buf).unwrap();
        buf
    }

    /// Wraps a VRRP message in an IPv4 header as the kernel delivers it (header checksum left
    /// zero: the decoder does not check it).
    fn ipv4_datagram(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut d = vec![0x45, 0xc0];
        d.extend_from_slice(&total.to_be_bytes());
        d.extend_from_slice(&[0, 1, 0, 0, ttl, VRRP_PROTO, 0, 0]);
        d.extend_from_slice(&src.octets());
        d.extend_from_slice(&dst.octets());
        d.extend_from_slice(payload);
        d
    }

    fn datagram4(form: ChecksumForm) -> Vec<u8> {
        let msg = encode(&advert4(), SRC4.into(), VRRP_MCAST_V4.into(), form);
        ipv4_datagram(SRC4, VRRP_MCAST_V4, 255, &msg)
    }

    fn payload6() -> Vec<u8> {
        encode(
            &advert6(),
            SRC6.into(),
            VRRP_MCAST_V6.into(),
            ChecksumForm::PseudoHeader,
        )
    }

    /// Re-fills the checksum of the VRRP message inside an IPv4 datagram (pseudo-header form),
    /// so a test can corrupt one field without tripping the checksum check.
    fn refill_checksum4(d: &mut [u8]) {
        let ihl = (d[0] & 0x0f) as usize * 4;
        let (src, dst) = (
            Ipv4Addr::new(d[12], d[13], d[14], d[15]),
            Ipv4Addr::new(d[16], d[17], d[18], d[19]),
        );
        let msg = &mut d[ihl..];
        let pseudo = pseudo_sum_v4(src, dst, msg.len());
        Packet::new_unchecked(msg).fill_checksum(pseudo);
    }

    fn refill_checksum6(p: &mut [u8]) {
        let pseudo = pseudo_sum_v6(SRC6, VRRP_MCAST_V6, p.len());
        Packet::new_unchecked(p).fill_checksum(pseudo);
    }

    fn decode6(p: &[u8]) -> Result<Received, DecodeError> {
        Advert::decode_ipv6(p, SRC6, VRRP_MCAST_V6, 255)
    }

    #[test]
    fn rfc5798_5_1_round_trip_ipv4_pseudo_header() {
        let rx = Advert::decode_ipv4(&datagram4(ChecksumForm::PseudoHeader)).unwrap();
        assert_eq!(rx.advert, advert4());
        assert_eq!(rx.source, IpAddr::V4(SRC4));
        assert_eq!(rx.destination, IpAddr::V4(VRRP_MCAST_V4));
        assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
    }

    #[test]
    fn rfc9568_5_2_8_round_trip_ipv4_message_only_checksum() {
        let rx = Advert::decode_ipv4(&datagram4(ChecksumForm::Rfc9568)).unwrap();
        assert_eq!(rx.advert, advert4());
        assert_eq!(rx.checksum_form, ChecksumForm::Rfc9568);
    }

    #[test]
    fn rfc5798_5_1_round_trip_ipv6() {
        let rx = decode6(&payload6()).unwrap();
        assert_eq!(rx.advert, advert6());
        assert_eq!(rx.source, IpAddr::V6(SRC6));
        assert_eq!(rx.destination, IpAddr::V6(VRRP_MCAST_V6));
        assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
    }

    #[test]
    fn rfc5798_5_2_wire_layout() {
        let msg = encode(
            &advert4(),
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::Rfc9568,
        );
        // Version 3, type 1; VRID 51; priority 150; one address; rsvd 0, 100 cs; checksum; VIP.
        assert_eq!(
            msg,
            [0x31, 51, 150, 1, 0x00, 0x64, 0x2c, 0xa0, 10, 99, 1, 100]
        );
        assert_eq!(advert4().buffer_len(), 12);
        assert_eq!(advert6().buffer_len(), 24);
        assert_eq!(payload6().len(), 24);
    }

    #[test]
    fn rfc5798_5_2_8_ipv6_ignores_form_and_uses_pseudo_header() {
        let a = encode(
            &advert6(),
            SRC6.into(),
            VRRP_MCAST_V6.into(),
            ChecksumForm::Rfc9568,
        );
        assert_eq!(a, payload6());
    }

    #[test]
    fn rfc5798_7_1_drops_ttl_not_255() {
        let msg = encode(
            &advert4(),
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::PseudoHeader,
        );
        for ttl in [0, 1, 64, 254] {
            let d = ipv4_datagram(SRC4, VRRP_MCAST_V4, ttl, &msg);
            assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Ttl));
            assert_eq!(Advert::peek_vrid_ipv4(&d), Some(51));
        }
    }

    #[test]
    fn rfc5798_7_1_drops_hop_limit_not_255() {
        for hl in [0, 1, 64, 254] {
            assert_eq!(
                Advert::decode_ipv6(&payload6(), SRC6, VRRP_MCAST_V6, hl),
                Err(DecodeError::Ttl)
            );
        }
    }

    #[test]
    fn rfc5798_5_2_1_drops_version_not_3() {
        for version in [0u8, 2, 4, 15] {
            let mut d = datagram4(ChecksumForm::PseudoHeader);
            d[20] = (version << 4) | 1;
            refill_checksum4(&mut d);
            assert_eq!(
                Advert::decode_ipv4(&d),
                Err(DecodeError::Version),
                "v{version}"
            );
            assert_eq!(Advert::peek_vrid_ipv4(&d), Some(51));

            let mut p = payload6();
            p[0] = (version << 4) | 1;
            refill_checksum6(&mut p);
            assert_eq!(decode6(&p), Err(DecodeError::Version));
            assert_eq!(Advert::peek_vrid_ipv6(&p), Some(52));
        }
    }

    #[test]
    fn rfc5798_5_2_2_drops_type_not_advertisement() {
        for t in [0u8, 2, 15] {
            let mut d = datagram4(ChecksumForm::PseudoHeader);
            d[20] = 0x30 | t;
            refill_checksum4(&mut d);
            assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Type));

            let mut p = payload6();
            p[0] = 0x30 | t;
            refill_checksum6(&mut p);
            assert_eq!(decode6(&p), Err(DecodeError::Type));
        }
    }

    #[test]
    fn rfc5798_5_2_5_drops_zero_address_count() {
        let mut d = datagram4(ChecksumForm::PseudoHeader);
        d[23] = 0;
        refill_checksum4(&mut d);
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::AddressCount));

        // A bare 8-byte header with count 0 too.
        let mut d = datagram4(ChecksumForm::PseudoHeader);
        d.truncate(28);
        d[2..4].copy_from_slice(&28u16.to_be_bytes());
        d[23] = 0;
        refill_checksum4(&mut d);
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::AddressCount));

        let mut p = payload6();
        p[3] = 0;
        refill_checksum6(&mut p);
        assert_eq!(decode6(&p), Err(DecodeError::AddressCount));
    }

    #[test]
    fn rfc5798_7_1_drops_count_length_mismatch() {
        // Count says two addresses, one is present.
        let mut d = datagram4(ChecksumForm::PseudoHeader);
        d[23] = 2;
        refill_checksum4(&mut d);
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Length));

        let mut p = payload6();
        p[3] = 2;
        refill_checksum6(&mut p);
        assert_eq!(decode6(&p), Err(DecodeError::Length));

        // An IPv6 message read as IPv4 (count 1, 16 bytes of address) and vice versa.
        let mut d = ipv4_datagram(SRC4, VRRP_MCAST_V4, 255, &payload6());
        refill_checksum4(&mut d);
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Length));
        let msg4 = encode(
            &advert4(),
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::PseudoHeader,
        );
        assert_eq!(decode6(&msg4), Err(DecodeError::Length));
    }

    #[test]
    fn rfc5798_7_1_drops_trailing_bytes_after_addresses() {
        let mut msg = encode(
            &advert4(),
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::PseudoHeader,
        );
        msg.extend_from_slice(&[0, 0, 0, 0]);
        let mut d = ipv4_datagram(SRC4, VRRP_MCAST_V4, 255, &msg);
        refill_checksum4(&mut d);
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Length));

        let mut p = payload6();
        p.push(0);
        refill_checksum6(&mut p);
        assert_eq!(decode6(&p), Err(DecodeError::Length));
    }

    #[test]
    fn rfc5798_7_1_drops_bad_checksum() {
        for form in [ChecksumForm::PseudoHeader, ChecksumForm::Rfc9568] {
            let good = datagram4(form);
            for bit in 0..(12 * 8) {
                let mut d = good.clone();
                d[20 + bit / 8] ^= 1 << (bit % 8);
                let r = Advert::decode_ipv4(&d);
                assert!(
                    r.is_err(),
                    "{form:?} bit {bit} flipped still decodes: {r:?}"
                );
            }
            // Flipping a checksum bit specifically is a checksum drop.
            let mut d = good.clone();
            d[27] ^= 0x01;
            assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Checksum));
            // So is a changed priority with the old checksum.
            let mut d = good.clone();
            d[22] = 100;
            assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Checksum));
        }
        let mut p = payload6();
        p[2] = 100;
        assert_eq!(decode6(&p), Err(DecodeError::Checksum));
    }

    #[test]
    fn rfc5798_5_2_8_ipv4_pseudo_header_covers_addresses() {
        // A pseudo-header checksum verified against other IP addresses fails.
        let msg = encode(
            &advert4(),
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::PseudoHeader,
        );
        let d = ipv4_datagram(Ipv4Addr::new(10, 99, 1, 3), VRRP_MCAST_V4, 255, &msg);
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Checksum));
        // While the message-only form does not depend on them.
        let msg = encode(
            &advert4(),
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::Rfc9568,
        );
        let d = ipv4_datagram(Ipv4Addr::new(10, 99, 1, 3), VRRP_MCAST_V4, 255, &msg);
        assert_eq!(
            Advert::decode_ipv4(&d).unwrap().checksum_form,
            ChecksumForm::Rfc9568
        );
    }

    #[test]
    fn rfc9568_5_2_8_ipv6_rejects_message_only_checksum() {
        let mut p = payload6();
        Packet::new_unchecked(&mut p[..]).fill_checksum(0);
        assert_eq!(decode6(&p), Err(DecodeError::Checksum));
        // And the pseudo-header is bound to the addresses passed in.
        let other = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(
            Advert::decode_ipv6(&payload6(), other, VRRP_MCAST_V6, 255),
            Err(DecodeError::Checksum)
        );
    }

    #[test]
    fn rfc5798_5_2_6_reserved_bits_ignored_on_receive() {
        let mut d = datagram4(ChecksumForm::PseudoHeader);
        d[24] |= 0xf0;
        refill_checksum4(&mut d);
        let rx = Advert::decode_ipv4(&d).unwrap();
        assert_eq!(rx.advert, advert4());
        assert_eq!(Packet::new_checked(&d[20..]).unwrap().reserved(), 0xf);
        // And sent as zero.
        assert_eq!(datagram4(ChecksumForm::PseudoHeader)[24] >> 4, 0);
    }

    #[test]
    fn rfc9568_erratum_8301_zero_interval_is_dropped() {
        // With the reserved bits set, too: only the 12-bit field counts.
        for first in [0x00, 0xf0] {
            let mut d = datagram4(ChecksumForm::PseudoHeader);
            d[24] = first;
            d[25] = 0;
            refill_checksum4(&mut d);
            assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::AdvertInterval));
        }
        let mut p = payload6();
        p[4] = 0;
        p[5] = 0;
        refill_checksum6(&mut p);
        assert_eq!(decode6(&p), Err(DecodeError::AdvertInterval));
        // 1 cs is the smallest interval accepted.
        let mut d = datagram4(ChecksumForm::PseudoHeader);
        d[24] = 0;
        d[25] = 1;
        refill_checksum4(&mut d);
        assert_eq!(
            Advert::decode_ipv4(&d)
                .unwrap()
                .advert
                .max_advert_interval
                .get(),
            1
        );
    }

    #[test]
    fn rfc5798_5_2_7_max_interval_4095() {
        let a = Advert {
            max_advert_interval: Centis::MAX,
            ..advert4()
        };
        let msg = encode(
            &a,
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::PseudoHeader,
        );
        assert_eq!(&msg[4..6], &[0x0f, 0xff]);
        let d = ipv4_datagram(SRC4, VRRP_MCAST_V4, 255, &msg);
        assert_eq!(Advert::decode_ipv4(&d).unwrap().advert, a);
    }

    #[test]
    fn rfc791_drops_bad_ipv4_headers() {
        let good = datagram4(ChecksumForm::PseudoHeader);

        let mut d = good.clone();
        d[0] = 0x65; // IP version 6
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::IpHeader));
        assert_eq!(Advert::peek_vrid_ipv4(&d), None);

        let mut d = good.clone();
        d[0] = 0x44; // IHL 4
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::IpHeader));

        let mut d = good.clone();
        d[9] = 17; // UDP
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::IpHeader));

        let mut d = good.clone();
        d[2..4].copy_from_slice(&19u16.to_be_bytes()); // total length below the header
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::IpHeader));

        let mut d = good.clone();
        d[2..4].copy_from_slice(&28u16.to_be_bytes()); // total length below the datagram
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::IpHeader));

        let mut d = good.clone();
        d[2..4].copy_from_slice(&33u16.to_be_bytes()); // total length beyond the datagram
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::Truncated));

        let mut d = good.clone();
        d[0] = 0x4f; // IHL 15 = 60 bytes, longer than the 32-byte datagram
        assert_eq!(Advert::decode_ipv4(&d), Err(DecodeError::IpHeader));
    }

    #[test]
    fn rfc791_drops_fragments() {
        let good = datagram4(ChecksumForm::PseudoHeader);
        for flags in [0x2000u16, 0x0001, 0x2001, 0x1fff] {
            let mut d = good.clone();
            d[6..8].copy_from_slice(&flags.to_be_bytes());
            assert_eq!(
                Advert::decode_ipv4(&d),
                Err(DecodeError::Fragment),
                "{flags:#x}"
            );
        }
        // DF is fine.
        let mut d = good.clone();
        d[6] = 0x40;
        assert!(Advert::decode_ipv4(&d).is_ok());
    }

    #[test]
    fn rfc791_ipv4_options_are_skipped() {
        let msg = encode(
            &advert4(),
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::PseudoHeader,
        );
        let mut d = ipv4_datagram(SRC4, VRRP_MCAST_V4, 255, &msg);
        // Insert one 4-byte option word (router alert) after the fixed header: IHL 6.
        d.splice(20..20, [0x94, 0x04, 0x00, 0x00]);
        d[0] = 0x46;
        let total = d.len() as u16;
        d[2..4].copy_from_slice(&total.to_be_bytes());
        let rx = Advert::decode_ipv4(&d).unwrap();
        assert_eq!(rx.advert, advert4());
        assert_eq!(Advert::peek_vrid_ipv4(&d), Some(51));
    }

    #[test]
    fn truncation_at_every_length_errors_without_panicking() {
        for form in [ChecksumForm::PseudoHeader, ChecksumForm::Rfc9568] {
            let d = datagram4(form);
            for len in 0..d.len() {
                // Cut as-is (total length now lies) ...
                assert!(Advert::decode_ipv4(&d[..len]).is_err(), "len {len}");
                let _ = Advert::peek_vrid_ipv4(&d[..len]);
                // ... and with the total length fixed up, so the VRRP checks see the cut.
                let mut cut = d[..len].to_vec();
                if len >= 4 {
                    cut[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                }
                let r = Advert::decode_ipv4(&cut);
                assert!(r.is_err(), "len {len}");
                if (20..28).contains(&len) {
                    assert_eq!(r, Err(DecodeError::Truncated), "len {len}");
                }
            }
        }
        let p = payload6();
        for len in 0..p.len() {
            let r = decode6(&p[..len]);
            assert!(r.is_err(), "len {len}");
            if len < HEADER_LEN {
                assert_eq!(r, Err(DecodeError::Truncated));
            }
            let _ = Advert::peek_vrid_ipv6(&p[..len]);
        }
    }

    #[test]
    fn every_decode_error_has_a_distinct_kebab_case_reason() {
        let mut seen = std::collections::HashSet::new();
        for e in DecodeError::ALL {
            let r = e.reason();
            assert!(seen.insert(r), "duplicate reason {r}");
            assert!(
                !r.is_empty() && r.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{r}"
            );
        }
        assert_eq!(seen.len(), 10);
        assert_eq!(DecodeError::Ttl.reason(), "ttl");
        assert_eq!(DecodeError::AddressCount.reason(), "address-count");
        assert_eq!(DecodeError::IpHeader.reason(), "ip-header");
    }

    #[test]
    fn peek_vrid_best_effort() {
        assert_eq!(Advert::peek_vrid_ipv4(&[]), None);
        assert_eq!(
            Advert::peek_vrid_ipv4(&datagram4(ChecksumForm::PseudoHeader)[..21]),
            None
        );
        assert_eq!(
            Advert::peek_vrid_ipv4(&datagram4(ChecksumForm::PseudoHeader)[..22]),
            Some(51)
        );
        assert_eq!(Advert::peek_vrid_ipv6(&[0x31]), None);
        assert_eq!(Advert::peek_vrid_ipv6(&[0x21, 7]), Some(7));
        // A VRRPv2 packet still yields its VRID.
        let mut d = datagram4(ChecksumForm::PseudoHeader);
        d[20] = 0x21;
        assert_eq!(Advert::peek_vrid_ipv4(&d), Some(51));
    }

    #[test]
    fn encode_rejects_family_mismatch() {
        let mut buf = vec![1, 2, 3];
        let r = advert4().encode(
            SRC6.into(),
            VRRP_MCAST_V6.into(),
            ChecksumForm::PseudoHeader,
            &mut buf,
        );
        assert_eq!(r, Err(EncodeError::FamilyMismatch));
        assert!(buf.is_empty());
        let r = advert4().encode(
            SRC4.into(),
            VRRP_MCAST_V6.into(),
            ChecksumForm::PseudoHeader,
            &mut buf,
        );
        assert_eq!(r, Err(EncodeError::FamilyMismatch));
        let mut mixed = advert4();
        mixed.addresses.push(IpAddr::V6(VIP6));
        let r = mixed.encode(
            SRC4.into(),
            VRRP_MCAST_V4.into(),
            ChecksumForm::PseudoHeader,
            &mut buf,
        );
        assert_eq!(r, Err(EncodeError::FamilyMismatch));
    }

    #[test]
    fn rfc5798_5_2_5_encode_rejects_empty_and_oversized_address_lists() {
        let mut buf = Vec::new();
        let empty = Advert {
            addresses: vec![],
            ..advert4()
        };
        assert_eq!(
            empty.encode(
                SRC4.into(),
                VRRP_MCAST_V4.into(),
                ChecksumForm::PseudoHeader,
                &mut buf
            ),
            Err(EncodeError::NoAddresses)
        );
        let many = Advert {
            addresses: (0..256u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
                .collect(),
            ..advert4()
        };
        assert_eq!(
            many.encode(
                SRC4.into(),
                VRRP_MCAST_V4.into(),
                ChecksumForm::PseudoHeader,
                &mut buf
            ),
            Err(EncodeError::TooManyAddresses(256))
        );
        // 255 is the most, and it round-trips (IPv6: 4088 bytes).
        let most = Advert {
            addresses: (0..255u128)
                .map(|i| IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | i)))
                .collect(),
            ..advert6()
        };
        most.encode(
            SRC6.into(),
            VRRP_MCAST_V6.into(),
            ChecksumForm::PseudoHeader,
            &mut buf,
        )
        .unwrap();
        assert_eq!(buf.len(), 8 + 255 * 16);
        assert_eq!(buf.len(), most.buffer_len());
        assert_eq!(decode6(&buf).unwrap().advert, most);
    }

    #[test]
    fn rfc5798_5_2_3_encode_rejects_vrid_0() {
        let mut buf = Vec::new();
        let a = Advert {
            vrid: 0,
            ..advert4()
        };
        assert_eq!(
            a.encode(
                SRC4.into(),
                VRRP_MCAST_V4.into(),
                ChecksumForm::PseudoHeader,
                &mut buf
            ),
            Err(EncodeError::InvalidVrid)
        );
    }

    #[test]
    fn encode_replaces_buffer_contents() {
        let mut buf = vec![0xaa; 100];
        advert4()
            .encode(
                SRC4.into(),
                VRRP_MCAST_V4.into(),
                ChecksumForm::PseudoHeader,
                &mut buf,
            )
            .unwrap();
        assert_eq!(buf.len(), 12);
        assert_eq!(
            buf,
            encode(
                &advert4(),
                SRC4.into(),
                VRRP_MCAST_V4.into(),
                ChecksumForm::PseudoHeader
            )
        );
    }

    #[test]
    fn internet_checksum_odd_length_and_carries() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            fold(sum_words(
                0,
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
            )),
            0xddf2
        );
        assert_eq!(fold(sum_words(0, &[0xff])), 0xff00);
        assert_eq!(fold(sum_words(0, &[0xff; 4096])), 0xffff);
    }

    // ---- property tests ----

    fn arb_advert(family: Family) -> impl Strategy<Value = Advert> {
        let addr = match family {
            Family::Ipv4 => any::<u32>()
                .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .boxed(),
            Family::Ipv6 => any::<u128>()
                .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .boxed(),
        };
        (
            1u8..=255,
            any::<u8>(),
            1u16..=4095,
            prop::collection::vec(addr, 1..=24),
        )
            .prop_map(|(vrid, priority, cs, addresses)| Advert {
                vrid,
                priority,
                max_advert_interval: Centis::new(cs).unwrap(),
                addresses,
            })
    }

    fn arb_form() -> impl Strategy<Value = ChecksumForm> {
        prop_oneof![
            Just(ChecksumForm::PseudoHeader),
            Just(ChecksumForm::Rfc9568)
        ]
    }

    /// A valid VRRPv3 message built by hand (not by the encoder), with its checksum.
    fn hand_built(fields: (u8, u8, u16, &[u8]), addr_len: usize, pseudo: u64) -> Vec<u8> {
        let (vrid, priority, cs, addrs) = fields;
        let count = addrs.len() / addr_len;
        let mut m = vec![0x31, vrid, priority, count as u8];
        m.extend_from_slice(&cs.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&addrs[..count * addr_len]);
        let ck = !fold(sum_words(pseudo, &m));
        m[6..8].copy_from_slice(&ck.to_be_bytes());
        m
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), hl in any::<u8>()) {
            let _ = Advert::decode_ipv4(&bytes);
            let _ = Advert::decode_ipv6(&bytes, SRC6, VRRP_MCAST_V6, hl);
            let _ = Advert::decode_ipv6(&bytes, SRC6, VRRP_MCAST_V6, 255);
            let _ = Advert::peek_vrid_ipv4(&bytes);
            let _ = Advert::peek_vrid_ipv6(&bytes);
            let _ = ipv4_payload(&bytes);
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.version(), p.msg_type(), p.vrid(), p.priority(), p.addr_count());
                let _ = (p.reserved(), p.max_advert_int(), p.checksum(), p.address_bytes().len());
                let _ = p.check_addresses(Family::Ipv4);
                let _ = p.check_addresses(Family::Ipv6);
            }
        }

        #[test]
        fn arbitrary_vrrp_behind_a_valid_ip_header_never_panics(
            body in prop::collection::vec(any::<u8>(), 0..300),
            ihl in 0u8..16,
            ttl in prop_oneof![Just(255u8), any::<u8>()],
            frag in prop_oneof![Just(0u16), any::<u16>()],
        ) {
            let mut d = ipv4_datagram(SRC4, VRRP_MCAST_V4, ttl, &body);
            d[0] = 0x40 | ihl;
            d[6..8].copy_from_slice(&frag.to_be_bytes());
            let _ = Advert::decode_ipv4(&d);
            let _ = Advert::peek_vrid_ipv4(&d);
            // And with a valid v3 header and checksum, so the deeper checks run.
            if body.len() >= HEADER_LEN {
                let mut d = ipv4_datagram(SRC4, VRRP_MCAST_V4, 255, &body);
                d[20] = 0x31;
                refill_checksum4(&mut d);
                let r = Advert::decode_ipv4(&d);
                let count = body[3] as usize;
                let interval = u16::from_be_bytes([body[4], body[5]]) & 0x0fff;
                prop_assert_eq!(r.is_ok(), count > 0 && interval > 0 && body.len() == 8 + 4 * count);
                let mut p = body.clone();
                p[0] = 0x31;
                refill_checksum6(&mut p);
                let r = decode6(&p);
                prop_assert_eq!(r.is_ok(), count > 0 && interval > 0 && body.len() == 8 + 16 * count);
            }
        }

        #[test]
        fn encode_decode_is_identity_ipv4(
            advert in arb_advert(Family::Ipv4),
            src in any::<u32>().prop_map(Ipv4Addr::from),
            dst in prop_oneof![Just(VRRP_MCAST_V4), any::<u32>().prop_map(Ipv4Addr::from)],
            form in arb_form(),
        ) {
            let mut buf = Vec::new();
            advert.encode(src.into(), dst.into(), form, &mut buf).unwrap();
            prop_assert_eq!(buf.len(), advert.buffer_len());
            let rx = Advert::decode_ipv4(&ipv4_datagram(src, dst, 255, &buf)).unwrap();
            prop_assert_eq!(&rx.advert, &advert);
            prop_assert_eq!(rx.source, IpAddr::V4(src));
            prop_assert_eq!(rx.destination, IpAddr::V4(dst));
            if ipv4_checksum_forms_ambiguous(src, dst, buf.len()) {
                prop_assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
            } else {
                prop_assert_eq!(rx.checksum_form, form);
            }
        }

        #[test]
        fn encode_decode_is_identity_ipv6(
            advert in arb_advert(Family::Ipv6),
            src in any::<u128>().prop_map(Ipv6Addr::from),
            dst in prop_oneof![Just(VRRP_MCAST_V6), any::<u128>().prop_map(Ipv6Addr::from)],
            form in arb_form(),
        ) {
            let mut buf = Vec::new();
            advert.encode(src.into(), dst.into(), form, &mut buf).unwrap();
            prop_assert_eq!(buf.len(), advert.buffer_len());
            let rx = Advert::decode_ipv6(&buf, src, dst, 255).unwrap();
            prop_assert_eq!(&rx.advert, &advert);
            prop_assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
        }

        #[test]
        fn decode_encode_reproduces_bytes_ipv4(
            vrid in 1u8..=255, priority in any::<u8>(), cs in 1u16..=4095,
            addrs in prop::collection::vec(any::<u8>(), 4..=96),
            src in any::<u32>().prop_map(Ipv4Addr::from),
            pseudo_form in any::<bool>(),
        ) {
            let pseudo = if pseudo_form { pseudo_sum_v4(src, VRRP_MCAST_V4, 8 + addrs.len() / 4 * 4) } else { 0 };
            let msg = hand_built((vrid, priority, cs, &addrs), 4, pseudo);
            let rx = Advert::decode_ipv4(&ipv4_datagram(src, VRRP_MCAST_V4, 255, &msg)).unwrap();
            let mut buf = Vec::new();
            rx.advert.encode(rx.source, rx.destination, rx.checksum_form, &mut buf).unwrap();
            prop_assert_eq!(buf, msg);
        }

        #[test]
        fn decode_encode_reproduces_bytes_ipv6(
            vrid in 1u8..=255, priority in any::<u8>(), cs in 1u16..=4095,
            addrs in prop::collection::vec(any::<u8>(), 16..=160),
            src in any::<u128>().prop_map(Ipv6Addr::from),
        ) {
            let pseudo = pseudo_sum_v6(src, VRRP_MCAST_V6, 8 + addrs.len() / 16 * 16);
            let msg = hand_built((vrid, priority, cs, &addrs), 16, pseudo);
            let rx = Advert::decode_ipv6(&msg, src, VRRP_MCAST_V6, 255).unwrap();
            let mut buf = Vec::new();
            rx.advert.encode(rx.source, rx.destination, rx.checksum_form, &mut buf).unwrap();
            prop_assert_eq!(buf, msg);
        }
    }
}
