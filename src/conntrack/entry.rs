//! One conntrack entry as replicated between the routers, and its compact wire form.
//!
//! An [`Entry`] holds what the kernel needs to re-create a flow: both tuples (so NAT survives),
//! status, remaining timeout, mark, zone, TCP protocol info with the per-direction flags and window
//! scales. Attributes that `netlink-packet-netfilter` does not type (labels, sequence adjustment,
//! helper, master tuple, synproxy, and anything newer than this code) are carried raw, never
//! dropped. What must not be replayed (CTA_ID, CTA_USE, counters, timestamps, security context)
//! is left out when the entry is built from a kernel message (see `kernel.rs`).
//!
//! Wire form (version 1), all integers big-endian:
//! ```text
//! u8 version | u8 flags | u8 protocol | u16 zone
//! orig:  src, dst (4 or 16 bytes each, by flags.V6) | u16 src_port | u16 dst_port
//! reply: src, dst                                    | u16 src_port | u16 dst_port
//! u32 status | [u32 timeout] | [u32 mark] | [u8 tcp_state [u8 ws_orig u8 ws_reply] [u8 fl_orig u8 fl_reply]]
//! u16 raw_count | raw_count × (u8 place | u16 kind | u16 len | len bytes)
//! ```
//! The caller length-prefixes the whole record; [`Entry::decode`] rejects trailing bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::DefaultNla;

use crate::proto::Family;

/// Version byte of the wire form.
pub const WIRE_VERSION: u8 = 1;
/// Upper bound of one raw attribute value on the wire (netlink attributes are u16-sized anyway).
const MAX_RAW_LEN: usize = u16::MAX as usize;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DCCP: u8 = 33;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_UDPLITE: u8 = 136;

/// Conntrack status bits (uapi nf_conntrack_common.h) this code reasons about.
pub mod status {
    pub const EXPECTED: u32 = 1 << 0;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const DYING: u32 = 1 << 9;
}

/// The identity of a flow: the original-direction tuple and the zone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub family: Family,
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Port; ICMP/ICMPv6: the echo id; GRE: the key.
    pub src_port: u16,
    /// Port; ICMP/ICMPv6: `type << 8 | code`; GRE: the key.
    pub dst_port: u16,
    pub zone: u16,
}

impl FlowKey {
    /// Whether the protocol carries its layer-4 identity in CTA_PROTO_SRC_PORT/DST_PORT.
    pub fn has_ports(&self) -> bool {
        protocol_has_ports(self.protocol)
    }

    /// Whether the protocol is ICMP or ICMPv6 (id/type/code instead of ports).
    pub fn is_icmp(&self) -> bool {
        matches!(self.protocol, IPPROTO_ICMP | IPPROTO_ICMPV6)
    }
}

pub(crate) fn protocol_has_ports(protocol: u8) -> bool {
    matches!(
        protocol,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_DCCP | IPPROTO_GRE | IPPROTO_SCTP | IPPROTO_UDPLITE
    )
}

/// The reply-direction tuple (differs from the inverted original tuple when NAT applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplyTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// CTA_PROTOINFO_TCP. `wscale`/`flags` are absent in DESTROY events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpInfo {
    /// enum tcp_conntrack (ESTABLISHED = 3).
    pub state: u8,
    /// Window scale (original, reply).
    pub wscale: Option<(u8, u8)>,
    /// `ip_ct_tcp_state.flags` (IP_CT_TCP_FLAG_*) per direction (original, reply).
    pub flags: Option<(u8, u8)>,
}

/// Where a raw (untyped) attribute sits in the conntrack message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RawPlace {
    /// Top level (CTA_LABELS, CTA_SEQ_ADJ_*, CTA_HELP, CTA_TUPLE_MASTER, CTA_SYNPROXY, ...).
    Top = 0,
    /// Inside CTA_TUPLE_ORIG (e.g. CTA_TUPLE_ZONE).
    OrigTuple = 1,
    /// Inside CTA_TUPLE_REPLY.
    ReplyTuple = 2,
    /// Inside CTA_TUPLE_ORIG / CTA_TUPLE_PROTO, other than ports and ICMP id/type/code.
    OrigProto = 3,
    /// Inside CTA_TUPLE_REPLY / CTA_TUPLE_PROTO.
    ReplyProto = 4,
    /// Inside CTA_PROTOINFO, other than TCP (CTA_PROTOINFO_SCTP, CTA_PROTOINFO_DCCP).
    ProtoInfo = 5,
    /// Inside CTA_PROTOINFO / CTA_PROTOINFO_TCP, other than the typed fields.
    ProtoInfoTcp = 6,
    /// Inside CTA_TUPLE_ORIG / CTA_TUPLE_IP (unknown address kinds).
    OrigIp = 7,
    /// Inside CTA_TUPLE_REPLY / CTA_TUPLE_IP.
    ReplyIp = 8,
}

impl RawPlace {
    fn from_u8(v: u8) -> Option<RawPlace> {
        Some(match v {
            0 => RawPlace::Top,
            1 => RawPlace::OrigTuple,
            2 => RawPlace::ReplyTuple,
            3 => RawPlace::OrigProto,
            4 => RawPlace::ReplyProto,
            5 => RawPlace::ProtoInfo,
            6 => RawPlace::ProtoInfoTcp,
            7 => RawPlace::OrigIp,
            8 => RawPlace::ReplyIp,
            _ => return None,
        })
    }
}

/// An attribute carried as the kernel sent it. `kind` keeps the NLA_F_NESTED flag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawAttr {
    pub place: RawPlace,
    pub kind: u16,
    pub value: Vec<u8>,
}

impl RawAttr {
    pub fn nla(&self) -> DefaultNla {
        DefaultNla::new(self.kind, self.value.clone())
    }

    /// The attribute type without the nested/byte-order flags.
    pub fn type_id(&self) -> u16 {
        self.kind & netlink_packet_core::NLA_TYPE_MASK
    }
}

/// One conntrack entry as replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: FlowKey,
    pub reply: ReplyTuple,
    /// CTA_STATUS as the kernel reported it.
    pub status: u32,
    /// Remaining lifetime in seconds (CTA_TIMEOUT).
    pub timeout: Option<u32>,
    pub mark: Option<u32>,
    pub tcp: Option<TcpInfo>,
    /// Attributes carried raw (labels, sequence adjustment, helper, master, unknown ...).
    pub raw: Vec<RawAttr>,
}

/// CTA_TUPLE_MASTER: the entry was created by an expectation and needs its master first.
pub(crate) const CTA_TUPLE_MASTER: u16 = 14;

impl Entry {
    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// Source address of the reply direction (the server, or the DNAT target).
    pub fn reply_src(&self) -> IpAddr {
        self.reply.src
    }

    /// Destination address of the reply direction (the client, or the SNAT address).
    pub fn reply_dst(&self) -> IpAddr {
        self.reply.dst
    }

    pub fn timeout_secs(&self) -> Option<u32> {
        self.timeout
    }

    pub fn set_timeout_secs(&mut self, secs: u32) {
        self.timeout = Some(secs);
    }

    /// Has a master (created by an expectation, e.g. FTP data): install after the masters.
    pub fn is_related(&self) -> bool {
        self.raw
            .iter()
            .any(|a| a.place == RawPlace::Top && a.type_id() == CTA_TUPLE_MASTER)
    }

    /// Source NAT applied: the reply goes to another address/port than the original source.
    pub fn is_snat(&self) -> bool {
        // ICMP keeps the (possibly rewritten) id in the source position in both directions.
        let port_changed = if self.key.is_icmp() {
            self.reply.src_port != self.key.src_port
        } else {
            self.reply.dst_port != self.key.src_port
        };
        self.reply.dst != self.key.src || port_changed
    }

    /// Destination NAT applied: the reply comes from another address/port than the original
    /// destination.
    pub fn is_dnat(&self) -> bool {
        let port_changed = !self.key.is_icmp() && self.reply.src_port != self.key.dst_port;
        self.reply.src != self.key.dst || port_changed
    }

    /// Folds a newer view of the same flow into this one. UPDATE events carry only what
    /// changed besides tuples, status, timeout, zone and mark: TCP info only when the
    /// protocol state changed, the master only in NEW, sequence adjustment only when it
    /// changed (ctnetlink_conntrack_event). Fields the newer view lacks are kept.
    pub fn merge_update(&mut self, newer: &Entry) {
        self.reply = newer.reply;
        self.status = newer.status;
        if newer.timeout.is_some() {
            self.timeout = newer.timeout;
        }
        if newer.mark.is_some() {
            self.mark = newer.mark;
        }
        if newer.tcp.is_some() {
            self.tcp = newer.tcp;
        }
        for attr in &newer.raw {
            let same = |a: &RawAttr| a.place == attr.place && a.type_id() == attr.type_id();
            match self.raw.iter_mut().find(|a| same(a)) {
                Some(old) => old.clone_from(attr),
                None => self.raw.push(attr.clone()),
            }
        }
    }

    /// Bytes this entry occupies in memory (inline size plus heap of the raw attributes).
    pub fn memory_size(&self) -> usize {
        std::mem::size_of::<Entry>()
            + self.raw.capacity() * std::mem::size_of::<RawAttr>()
            + self.raw.iter().map(|a| a.value.capacity()).sum::<usize>()
    }

    /// Appends the wire form (see the module documentation).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let v6 = self.key.family == Family::Ipv6;
        let mut flags = 0u8;
        if v6 {
            flags |= FLAG_V6;
        }
        if self.timeout.is_some() {
            flags |= FLAG_TIMEOUT;
        }
        if self.mark.is_some() {
            flags |= FLAG_MARK;
        }
        if let Some(tcp) = &self.tcp {
            flags |= FLAG_TCP;
            if tcp.wscale.is_some() {
                flags |= FLAG_TCP_WSCALE;
            }
            if tcp.flags.is_some() {
                flags |= FLAG_TCP_FLAGS;
            }
        }
        out.push(WIRE_VERSION);
        out.push(flags);
        out.push(self.key.protocol);
        out.extend_from_slice(&self.key.zone.to_be_bytes());
        put_addr(out, &self.key.src);
        put_addr(out, &self.key.dst);
        out.extend_from_slice(&self.key.src_port.to_be_bytes());
        out.extend_from_slice(&self.key.dst_port.to_be_bytes());
        put_addr(out, &self.reply.src);
        put_addr(out, &self.reply.dst);
        out.extend_from_slice(&self.reply.src_port.to_be_bytes());
        out.extend_from_slice(&self.reply.dst_port.to_be_bytes());
        out.extend_from_slice(&self.status.to_be_bytes());
        if let Some(t) = self.timeout {
            out.extend_from_slice(&t.to_be_bytes());
        }
        if let Some(m) = self.mark {
            out.extend_from_slice(&m.to_be_bytes());
        }
        if let Some(tcp) = &self.tcp {
            out.push(tcp.state);
            if let Some((o, r)) = tcp.wscale {
                out.extend_from_slice(&[o, r]);
            }
            if let Some((o, r)) = tcp.flags {
                out.extend_from_slice(&[o, r]);
            }
        }
        encode_raws(&self.raw, RawForm::WithPlace, out);
    }

    /// Parses a wire-form record. Never panics; every failure is a typed [`EntryError`].
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(EntryError::Version(version));
        }
        let flags = r.u8()?;
        if flags & !FLAG_ALL != 0 {
            return Err(EntryError::Flags(flags));
        }
        let v6 = flags & FLAG_V6 != 0;
        let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
        let protocol = r.u8()?;
        let zone = r.u16()?;
        let src = r.addr(v6)?;
        let dst = r.addr(v6)?;
        let src_port = r.u16()?;
        let dst_port = r.u16()?;
        let reply = ReplyTuple {
            src: r.addr(v6)?,
            dst: r.addr(v6)?,
            src_port: r.u16()?,
            dst_port: r.u16()?,
        };
        let status = r.u32()?;
        let timeout = if flags & FLAG_TIMEOUT != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        let mark = if flags & FLAG_MARK != 0 {
            Some(r.u32()?)
        } else {
            None
        };
        let tcp = if flags & FLAG_TCP != 0 {
            let state = r.u8()?;
            let wscale = if flags & FLAG_TCP_WSCALE != 0 {
                Some((r.u8()?, r.u8()?))
            } else {
                None
            };
            let tflags = if flags & FLAG_TCP_FLAGS != 0 {
                Some((r.u8()?, r.u8()?))
            } else {
                None
            };
            Some(TcpInfo {
                state,
                wscale,
                flags: tflags,
            })
        } else if flags & (FLAG_TCP_WSCALE | FLAG_TCP_FLAGS) != 0 {
            return Err(EntryError::Flags(flags));
        } else {
            None
        };
        if tcp.is_some() && protocol != IPPROTO_TCP {
            return Err(EntryError::TcpInfoForOtherProtocol(protocol));
        }
        let count = r.u16()? as usize;
        // Each raw attribute takes at least 5 bytes: a count beyond the rest is a lie.
        if count > r.remaining() / 5 {
            return Err(EntryError::Truncated);
        }
        let mut raw = Vec::with_capacity(count);
        for _ in 0..count {
            let place = r.u8()?;
            let place = RawPlace::from_u8(place).ok_or(EntryError::RawPlace(place))?;
            let kind = r.u16()?;
            let len = r.u16()? as usize;
            let value = r.take(len)?.to_vec();
            raw.push(RawAttr { place, kind, value });
        }
        if r.remaining() != 0 {
            return Err(EntryError::TrailingBytes(r.remaining()));
        }
        Ok(Entry {
            key: FlowKey {
                family,
                protocol,
                src,
                dst,
                src_port,
                dst_port,
                zone,
            },
            reply,
            status,
            timeout,
            mark,
            tcp,
            raw,
        })
    }
}

const FLAG_V6: u8 = 1 << 0;
const FLAG_TIMEOUT: u8 = 1 << 1;
const FLAG_MARK: u8 = 1 << 2;
const FLAG_TCP: u8 = 1 << 3;
const FLAG_TCP_WSCALE: u8 = 1 << 4;
const FLAG_TCP_FLAGS: u8 = 1 << 5;
const FLAG_ALL: u8 = (1 << 6) - 1;

fn put_addr(out: &mut Vec<u8>, addr: &IpAddr) {
    match addr {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// Why a wire-form record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("record truncated")]
    Truncated,
    #[error("unknown wire version {0}")]
    Version(u8),
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("TCP info on a non-TCP entry (protocol {0})")]
    TcpInfoForOtherProtocol(u8),
    #[error("unknown raw attribute place {0}")]
    RawPlace(u8),
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

impl EntryError {
    /// A short stable name for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            EntryError::Truncated => "truncated",
            EntryError::Version(_) => "version",
            EntryError::Flags(_) => "flags",
            EntryError::TcpInfoForOtherProtocol(_) => "tcp-info",
            EntryError::RawPlace(_) => "raw-place",
            EntryError::TrailingBytes(_) => "trailing-bytes",
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        if self.remaining() < n {
            return Err(EntryError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, EntryError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, EntryError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, EntryError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn addr(&mut self, v6: bool) -> Result<IpAddr, EntryError> {
        if v6 {
            let b: [u8; 16] = self
                .take(16)?
                .try_into()
                .map_err(|_| EntryError::Truncated)?;
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        } else {
            let b: [u8; 4] = self
                .take(4)?
                .try_into()
                .map_err(|_| EntryError::Truncated)?;
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
    }
}

/// A pending expectation (ctnetlink CTNETLINK_EXP), carried as its attributes (master tuple,
/// tuple, mask, timeout, helper, zone, flags, class, NAT, function) without CTA_EXPECT_ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub family: Family,
    /// Top-level CTA_EXPECT_* attributes as the kernel sent them.
    pub raw: Vec<RawAttr>,
}

impl Expectation {
    /// CTA_EXPECT_TIMEOUT in seconds.
    pub fn timeout_secs(&self) -> Option<u32> {
        self.raw
            .iter()
            .find(|a| a.type_id() == 4)
            .and_then(|a| Some(u32::from_be_bytes(a.value.get(..4)?.try_into().ok()?)))
    }

    /// Wire form: u8 version | u8 family (4/6) | u16 count | count × (u16 kind | u16 len | bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(WIRE_VERSION);
        out.push(if self.family == Family::Ipv6 { 6 } else { 4 });
        encode_raws(&self.raw, RawForm::KindOnly, out);
    }

    /// Parses the wire form. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Expectation, EntryError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(EntryError::Version(version));
        }
        let family = match r.u8()? {
            4 => Family::Ipv4,
            6 => Family::Ipv6,
            f => return Err(EntryError::Flags(f)),
        };
        let count = r.u16()? as usize;
        if count > r.remaining() / 4 {
            return Err(EntryError::Truncated);
        }
        let mut raw = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = r.u16()?;
            let len = r.u16()? as usize;
            raw.push(RawAttr {
                place: RawPlace::Top,
                kind,
                value: r.take(len)?.to_vec(),
            });
        }
        if r.remaining() != 0 {
            return Err(EntryError::TrailingBytes(r.remaining()));
        }
        Ok(Expectation { family, raw })
    }
}

/// How a raw attribute is written: entries record where in the message it sat, expectations
/// only have top-level ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawForm {
    /// u8 place | u16 kind | u16 len | bytes
    WithPlace,
    /// u16 kind | u16 len | bytes
    KindOnly,
}

/// u16 count, then each raw attribute. Entries are built from netlink attributes whose lengths
/// fit u16; clamp defensively so that a hand-built one can never produce a record that decodes
/// differently.
fn encode_raws(raw: &[RawAttr], form: RawForm, out: &mut Vec<u8>) {
    let raws: Vec<&RawAttr> = raw
        .iter()
        .filter(|a| a.value.len() <= MAX_RAW_LEN)
        .take(u16::MAX as usize)
        .collect();
    out.extend_from_slice(&(raws.len() as u16).to_be_bytes());
    for a in raws {
        if form == RawForm::WithPlace {
            out.push(a.place as u8);
        }
        out.extend_from_slice(&a.kind.to_be_bytes());
        out.extend_from_slice(&(a.value.len() as u16).to_be_bytes());
        out.extend_from_slice(&a.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            key: FlowKey {
                family: Family::Ipv4,
                protocol: IPPROTO_TCP,
                src: "10.76.2.10".parse().unwrap(),
                dst: "10.76.4.10".parse().unwrap(),
                src_port: 40000,
                dst_port: 80,
                zone: 0,
            },
            reply: ReplyTuple {
                src: "10.76.4.10".parse().unwrap(),
                dst: "10.76.4.1".parse().unwrap(),
                src_port: 80,
                dst_port: 40000,
            },
            status: status::SEEN_REPLY | status::ASSURED | status::CONFIRMED | status::SRC_NAT,
            timeout: Some(431999),
            mark: Some(7),
            tcp: Some(TcpInfo {
                state: 3,
                wscale: Some((7, 7)),
                flags: Some((0x2b, 0x2b)),
            }),
            raw: vec![RawAttr {
                place: RawPlace::Top,
                kind: 22,
                value: vec![1; 16],
            }],
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let mut buf = Vec::new();
        e.encode(&mut buf);
        assert_eq!(Entry::decode(&buf).unwrap(), e);
        assert!(e.is_snat() && !e.is_dnat() && !e.is_related());
        // every proper prefix is rejected, never accepted as something else
        for n in 0..buf.len() {
            assert!(Entry::decode(&buf[..n]).is_err(), "prefix {n} accepted");
        }
        buf.push(0);
        assert_eq!(Entry::decode(&buf), Err(EntryError::TrailingBytes(1)));
    }

    #[test]
    fn merge_keeps_what_an_update_lacks() {
        let mut cached = sample();
        let mut update = sample();
        update.tcp = None;
        update.raw.clear();
        update.timeout = Some(10);
        update.status |= status::DYING;
        cached.merge_update(&update);
        assert_eq!(cached.tcp, sample().tcp);
        assert_eq!(cached.raw, sample().raw);
        assert_eq!((cached.timeout, cached.status), (Some(10), update.status));
        let mut relabelled = sample();
        relabelled.raw[0].value = vec![2; 16];
        cached.merge_update(&relabelled);
        assert_eq!(cached.raw, relabelled.raw);
    }

    #[test]
    fn compact() {
        let mut e = sample();
        e.raw.clear();
        let mut buf = Vec::new();
        e.encode(&mut buf);
        assert!(buf.len() <= 50, "{} bytes", buf.len());
    }
}
