//! The kernel's conntrack table over ctnetlink (NETLINK_NETFILTER, subsystem CTNETLINK).
//!
//! - [`EventStream`]: NEW/UPDATE/DESTROY events with a large receive buffer; an overrun
//!   (ENOBUFS: the kernel dropped events) is reported as [`KernelEvent::Overrun`], never hidden.
//! - [`Conntrack`]: dump, install (create, or update when the flow exists), remove, refresh
//!   timeouts, flush. Requests are batched: many messages per `send`, only the last one asks for
//!   an ACK, and the kernel reports each failure on its own (netlink acks errors regardless).
//!
//! How an entry is re-created so that the flow continues through this router
//! (net/netfilter/nf_conntrack_netlink.c, ctnetlink_create_conntrack):
//! - NAT: the kernel sets IPS_SRC_NAT/IPS_DST_NAT (without which no packet is rewritten) only
//!   through its own NAT setup, and CTA_STATUS cannot change those bits (IPS_UNCHANGEABLE_MASK).
//!   So a NATed entry is sent with the un-NATed reply tuple and CTA_NAT_SRC/CTA_NAT_DST ranges of
//!   exactly the address and port the master chose; the kernel then derives the same reply tuple.
//! - Status: the kernel sets IPS_CONFIRMED before applying CTA_STATUS and refuses (EBUSY) any
//!   difference in EXPECTED/CONFIRMED/DYING, so we send CONFIRMED and never EXPECTED/DYING on
//!   create (a related entry gets EXPECTED from its CTA_TUPLE_MASTER).
//! - TCP: dumps report the per-direction flags with a zero mask; we send mask 0xff so they are
//!   applied, and the window scales (applied only when both directions have
//!   IP_CT_TCP_FLAG_WINDOW_SCALE). td_maxwin stays 0, so the kernel learns the windows from the
//!   next packet in each direction and strict window tracking keeps working.
//! - Update of an existing entry (EEXIST on create): NAT, master and helper cannot change, so
//!   the update carries only tuple, zone, status, timeout, mark, protocol info, labels and
//!   sequence adjustment.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    DefaultNla, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol,
    Status, TCPFlags, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_NETFILTER;
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

use super::entry::{
    CTA_TUPLE_MASTER, Entry, Expectation, FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    RawAttr, RawPlace, ReplyTuple, TcpInfo, protocol_has_ports, status,
};
use crate::proto::Family;

// include/uapi/linux/netfilter/nfnetlink_conntrack.h
// Expectations: subsystem CTNETLINK_EXP, enum ctattr_expect.
const NFNL_SUBSYS_CTNETLINK_EXP: u8 = 2;
const IPCTNL_MSG_EXP_NEW: u8 = 0;
const IPCTNL_MSG_EXP_GET: u8 = 1;
const IPCTNL_MSG_EXP_DELETE: u8 = 2;
const CTA_EXPECT_TUPLE: u16 = 2;
const CTA_EXPECT_ZONE: u16 = 7;
const NFNLGRP_CONNTRACK_EXP_NEW: u32 = 4;
const NFNLGRP_CONNTRACK_EXP_DESTROY: u32 = 6;
const CTA_EXPECT_ID: u16 = 5;

const CTA_HELP: u16 = 5;
const CTA_NAT_SRC: u16 = 6;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_USE: u16 = 11;
const CTA_ID: u16 = 12;
const CTA_NAT_DST: u16 = 13;
const CTA_SECMARK: u16 = 17;
const CTA_ZONE: u16 = 18;
const CTA_SECCTX: u16 = 19;
const CTA_TIMESTAMP: u16 = 20;
const CTA_MARK_MASK: u16 = 21;
const CTA_LABELS_MASK: u16 = 23;
const CTA_SYNPROXY: u16 = 24;
const CTA_FILTER: u16 = 25;
const CTA_STATUS_MASK: u16 = 26;
const CTA_TIMESTAMP_EVENT: u16 = 27;

/// Attributes that describe this kernel's bookkeeping, not the flow: never replayed.
const NOT_REPLAYED: &[u16] = &[
    CTA_NAT_SRC,
    CTA_COUNTERS_ORIG,
    CTA_COUNTERS_REPLY,
    CTA_USE,
    CTA_ID,
    CTA_NAT_DST,
    CTA_SECMARK,
    CTA_SECCTX,
    CTA_TIMESTAMP,
    CTA_MARK_MASK,
    CTA_LABELS_MASK,
    CTA_FILTER,
    CTA_STATUS_MASK,
    CTA_TIMESTAMP_EVENT,
];

/// Top-level attributes the kernel refuses to change on an existing entry (EOPNOTSUPP/EBUSY).
const CREATE_ONLY: &[u16] = &[CTA_HELP, CTA_TUPLE_MASTER];

const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

const CTA_NAT_V4_MINIP: u16 = 1;
const CTA_NAT_V4_MAXIP: u16 = 2;
const CTA_NAT_PROTO: u16 = 3;
const CTA_NAT_V6_MINIP: u16 = 4;
const CTA_NAT_V6_MAXIP: u16 = 5;
const CTA_PROTONAT_PORT_MIN: u16 = 1;
const CTA_PROTONAT_PORT_MAX: u16 = 2;

const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// Bytes of requests per `send` (well below the default socket send buffer).
const BATCH_BYTES: usize = 64 * 1024;
/// Receive buffer for one `recv`: the kernel sizes dump datagrams up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;
/// Socket receive buffer of the event socket (SO_RCVBUFFORCE; needs CAP_NET_ADMIN).
const EVENT_RCVBUF: usize = 64 * 1024 * 1024;
const REQUEST_RCVBUF: usize = 4 * 1024 * 1024;

/// Errors of the kernel side.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{what}: kernel answered {}", io::Error::from_raw_os_error(*.errno))]
    Kernel { what: &'static str, errno: i32 },
    #[error("undecodable netlink message: {0}")]
    Decode(String),
}

impl KernelError {
    fn io(what: &'static str) -> impl FnOnce(io::Error) -> KernelError {
        move |source| KernelError::Io { what, source }
    }

    /// The errno of a kernel refusal or a failed syscall.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KernelError::Kernel { errno, .. } => Some(*errno),
            KernelError::Io { source, .. } => source.raw_os_error(),
            KernelError::Decode(_) => None,
        }
    }
}

/// Why a kernel message could not be turned into an [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no CTA_TUPLE_ORIG")]
    NoOrigTuple,
    #[error("no CTA_TUPLE_REPLY")]
    NoReplyTuple,
    #[error("tuple without addresses or protocol")]
    IncompleteTuple,
    #[error("addresses of different families")]
    MixedFamilies,
    #[error("malformed attribute {0}")]
    Malformed(&'static str),
}

/// One event of the kernel's conntrack table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    New(Entry),
    Update(Entry),
    Destroy(Entry),
    /// The kernel dropped events (ENOBUFS): the table must be resynchronised.
    Overrun,
}

/// The outcome of [`Conntrack::install`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallReport {
    pub created: usize,
    pub updated: usize,
    pub failed: usize,
    /// Failures by errno name (e.g. "EINVAL", "EOPNOTSUPP", "no-timeout").
    pub errors: BTreeMap<String, usize>,
}

impl InstallReport {
    fn fail(&mut self, reason: String) {
        self.failed += 1;
        *self.errors.entry(reason).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel message -> Entry

/// Builds an entry from the attributes of a ctnetlink NEW/DELETE message.
pub fn entry_from_attributes(attrs: &[ConntrackAttribute]) -> Result<Entry, ParseError> {
    let mut orig = None;
    let mut reply = None;
    let mut status = 0u32;
    let mut timeout = None;
    let mut mark = None;
    let mut tcp = None;
    let mut zone = 0u16;
    let mut raw = Vec::new();
    for attr in attrs {
        match attr {
            ConntrackAttribute::CtaTupleOrig(t) => {
                orig = Some(parse_tuple(t, Direction::Orig, &mut raw)?)
            }
            ConntrackAttribute::CtaTupleReply(t) => {
                reply = Some(parse_tuple(t, Direction::Reply, &mut raw)?)
            }
            ConntrackAttribute::CtaStatus(s) => status = s.bits(),
            ConntrackAttribute::CtaTimeout(t) => timeout = Some(*t),
            ConntrackAttribute::CtaMark(m) => mark = Some(*m),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    match info {
                        ProtoInfo::TCP(items) => tcp = Some(parse_tcp(items, &mut raw)),
                        ProtoInfo::Other(nla) => raw.push(raw_of(RawPlace::ProtoInfo, nla)),
                        other => raw.push(raw_of(RawPlace::ProtoInfo, other)),
                    }
                }
            }
            ConntrackAttribute::Other(nla) => {
                let kind = nla.kind() & netlink_packet_core::NLA_TYPE_MASK;
                if kind == CTA_ZONE {
                    zone = be16(&raw_of(RawPlace::Top, nla).value)
                        .ok_or(ParseError::Malformed("CTA_ZONE"))?;
                } else if NOT_REPLAYED.contains(&kind) {
                } else {
                    let attr = raw_of(RawPlace::Top, nla);
                    // ctnetlink adds a synproxy extension to every entry it creates and dumps
                    // it zeroed: it says nothing, and replicating it would only cost bytes.
                    if !(kind == CTA_SYNPROXY && nested_values_all_zero(&attr.value)) {
                        raw.push(attr);
                    }
                }
            }
            // A newer crate may type more attributes: carry them raw.
            other => raw.push(raw_of(RawPlace::Top, other)),
        }
    }
    let orig = orig.ok_or(ParseError::NoOrigTuple)?;
    let reply = reply.ok_or(ParseError::NoReplyTuple)?;
    if Family::of(&orig.src) != Family::of(&orig.dst)
        || Family::of(&reply.src) != Family::of(&orig.src)
        || Family::of(&reply.dst) != Family::of(&orig.src)
    {
        return Err(ParseError::MixedFamilies);
    }
    if orig.protocol != IPPROTO_TCP {
        tcp = None;
    }
    Ok(Entry {
        key: FlowKey {
            family: Family::of(&orig.src),
            protocol: orig.protocol,
            src: orig.src,
            dst: orig.dst,
            src_port: orig.src_port,
            dst_port: orig.dst_port,
            zone,
        },
        reply: ReplyTuple {
            src: reply.src,
            dst: reply.dst,
            src_port: reply.src_port,
            dst_port: reply.dst_port,
        },
        status,
        timeout,
        mark,
        tcp,
        raw,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Orig,
    Reply,
}

struct ParsedTuple {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
}

fn parse_tuple(
    items: &[Tuple],
    dir: Direction,
    raw: &mut Vec<RawAttr>,
) -> Result<ParsedTuple, ParseError> {
    let (place_tuple, place_ip, place_proto) = match dir {
        Direction::Orig => (RawPlace::OrigTuple, RawPlace::OrigIp, RawPlace::OrigProto),
        Direction::Reply => (
            RawPlace::ReplyTuple,
            RawPlace::ReplyIp,
            RawPlace::ReplyProto,
        ),
    };
    let (mut src, mut dst, mut protocol) = (None, None, None);
    let (mut src_port, mut dst_port) = (0u16, 0u16);
    let (mut icmp_type, mut icmp_code) = (0u8, 0u8);
    for item in items {
        match item {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        IPTuple::Other(nla) => raw.push(raw_of(place_ip, nla)),
                        other => raw.push(raw_of(place_ip, other)),
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(num) => protocol = Some(u8::from(*num)),
                        ProtoTuple::SourcePort(port) => src_port = *port,
                        ProtoTuple::DestinationPort(port) => dst_port = *port,
                        ProtoTuple::Other(nla) => {
                            let v = &raw_of(place_proto, nla).value;
                            match nla.kind() & netlink_packet_core::NLA_TYPE_MASK {
                                CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                                    src_port =
                                        be16(v).ok_or(ParseError::Malformed("CTA_PROTO_ICMP_ID"))?
                                }
                                CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                                    icmp_type = *v
                                        .first()
                                        .ok_or(ParseError::Malformed("CTA_PROTO_ICMP_TYPE"))?
                                }
                                CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                                    icmp_code = *v
                                        .first()
                                        .ok_or(ParseError::Malformed("CTA_PROTO_ICMP_CODE"))?
                                }
                                _ => raw.push(raw_of(place_proto, nla)),
                            }
                        }
                        other => raw.push(raw_of(place_proto, other)),
                    }
                }
            }
            Tuple::Other(nla) => raw.push(raw_of(place_tuple, nla)),
            other => raw.push(raw_of(place_tuple, other)),
        }
    }
    let (Some(src), Some(dst), Some(protocol)) = (src, dst, protocol) else {
        return Err(ParseError::IncompleteTuple);
    };
    if matches!(protocol, IPPROTO_ICMP | IPPROTO_ICMPV6) {
        dst_port = u16::from(icmp_type) << 8 | u16::from(icmp_code);
    }
    Ok(ParsedTuple {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
    })
}

fn parse_tcp(items: &[ProtoInfoTCP], raw: &mut Vec<RawAttr>) -> TcpInfo {
    let mut info = TcpInfo {
        state: 0,
        wscale: None,
        flags: None,
    };
    let (mut ws_o, mut ws_r, mut fl_o, mut fl_r) = (None, None, None, None);
    for item in items {
        match item {
            ProtoInfoTCP::State(s) => info.state = *s,
            ProtoInfoTCP::OriginalWindowScale(w) => ws_o = Some(*w),
            ProtoInfoTCP::ReplyWindowScale(w) => ws_r = Some(*w),
            ProtoInfoTCP::OriginalFlags(f) => fl_o = Some(f.flags),
            ProtoInfoTCP::ReplyFlags(f) => fl_r = Some(f.flags),
            ProtoInfoTCP::Other(nla) => raw.push(raw_of(RawPlace::ProtoInfoTcp, nla)),
            other => raw.push(raw_of(RawPlace::ProtoInfoTcp, other)),
        }
    }
    if let (Some(o), Some(r)) = (ws_o, ws_r) {
        info.wscale = Some((o, r));
    }
    if let (Some(o), Some(r)) = (fl_o, fl_r) {
        info.flags = Some((o, r));
    }
    info
}

/// Any attribute as the raw bytes the kernel would see.
fn raw_of(place: RawPlace, nla: &impl Nla) -> RawAttr {
    let mut kind = nla.kind();
    if nla.is_nested() {
        kind |= NLA_F_NESTED;
    }
    let mut value = vec![0u8; nla.value_len()];
    nla.emit_value(&mut value);
    RawAttr { place, kind, value }
}

/// True when `value` is a well-formed list of attributes whose payloads are all zero.
fn nested_values_all_zero(value: &[u8]) -> bool {
    let mut off = 0;
    while off < value.len() {
        let Some(len) = value
            .get(off..off + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]) as usize)
        else {
            return false;
        };
        if len < 4 || off + len > value.len() {
            return false;
        }
        if value[off + 4..off + len].iter().any(|&b| b != 0) {
            return false;
        }
        off += (len + 3) & !3;
    }
    true
}

fn be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

// ---------------------------------------------------------------------------------------------
// Entry -> kernel message

#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Create,
    Update,
}

fn raws(entry: &Entry, place: RawPlace) -> impl Iterator<Item = DefaultNla> + '_ {
    entry
        .raw
        .iter()
        .filter(move |a| a.place == place)
        .map(RawAttr::nla)
}

fn tuple_attr(
    entry: &Entry,
    dir: Direction,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
) -> Vec<Tuple> {
    let (place_tuple, place_ip, place_proto) = match dir {
        Direction::Orig => (RawPlace::OrigTuple, RawPlace::OrigIp, RawPlace::OrigProto),
        Direction::Reply => (
            RawPlace::ReplyTuple,
            RawPlace::ReplyIp,
            RawPlace::ReplyProto,
        ),
    };
    let mut ip = vec![
        IPTuple::SourceAddress(src),
        IPTuple::DestinationAddress(dst),
    ];
    ip.extend(raws(entry, place_ip).map(IPTuple::Other));
    let protocol = entry.key.protocol;
    let mut proto = vec![ProtoTuple::Protocol(Protocol::from(protocol))];
    if protocol_has_ports(protocol) {
        proto.push(ProtoTuple::SourcePort(src_port));
        proto.push(ProtoTuple::DestinationPort(dst_port));
    } else if entry.key.is_icmp() {
        let (id, ty, code) = if protocol == IPPROTO_ICMP {
            (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE)
        } else {
            (
                CTA_PROTO_ICMPV6_ID,
                CTA_PROTO_ICMPV6_TYPE,
                CTA_PROTO_ICMPV6_CODE,
            )
        };
        proto.push(ProtoTuple::Other(DefaultNla::new(
            id,
            src_port.to_be_bytes().to_vec(),
        )));
        proto.push(ProtoTuple::Other(DefaultNla::new(
            ty,
            vec![(dst_port >> 8) as u8],
        )));
        proto.push(ProtoTuple::Other(DefaultNla::new(
            code,
            vec![dst_port as u8],
        )));
    }
    proto.extend(raws(entry, place_proto).map(ProtoTuple::Other));
    let mut tuple = vec![Tuple::Ip(ip), Tuple::Proto(proto)];
    tuple.extend(raws(entry, place_tuple).map(Tuple::Other));
    tuple
}

fn orig_tuple(entry: &Entry) -> Vec<Tuple> {
    let k = &entry.key;
    tuple_attr(entry, Direction::Orig, k.src, k.dst, k.src_port, k.dst_port)
}

/// The reply tuple to send on create: the un-NATed inverse of the original tuple when NAT
/// applies (the kernel's NAT setup then derives the NATed one), else the reply tuple as dumped.
fn reply_tuple_for_create(entry: &Entry) -> Vec<Tuple> {
    let k = &entry.key;
    let r = &entry.reply;
    if !entry.is_snat() && !entry.is_dnat() {
        return tuple_attr(
            entry,
            Direction::Reply,
            r.src,
            r.dst,
            r.src_port,
            r.dst_port,
        );
    }
    if k.is_icmp() {
        // ICMP keeps the id in the source position in both directions; type/code of the reply.
        tuple_attr(
            entry,
            Direction::Reply,
            k.dst,
            k.src,
            k.src_port,
            r.dst_port,
        )
    } else {
        tuple_attr(
            entry,
            Direction::Reply,
            k.dst,
            k.src,
            k.dst_port,
            k.src_port,
        )
    }
}

/// CTA_NAT_SRC/CTA_NAT_DST: a range of exactly one address (and port) — the master's choice.
fn nat_attr(kind: u16, addr: IpAddr, port: Option<u16>) -> ConntrackAttribute {
    let (min, max, bytes) = match addr {
        IpAddr::V4(a) => (CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP, a.octets().to_vec()),
        IpAddr::V6(a) => (CTA_NAT_V6_MINIP, CTA_NAT_V6_MAXIP, a.octets().to_vec()),
    };
    let mut value = Vec::new();
    push_nla(&mut value, min, &bytes);
    push_nla(&mut value, max, &bytes);
    if let Some(port) = port {
        let mut proto = Vec::new();
        push_nla(&mut proto, CTA_PROTONAT_PORT_MIN, &port.to_be_bytes());
        push_nla(&mut proto, CTA_PROTONAT_PORT_MAX, &port.to_be_bytes());
        push_nla(&mut value, CTA_NAT_PROTO | NLA_F_NESTED, &proto);
    }
    ConntrackAttribute::Other(DefaultNla::new(kind | NLA_F_NESTED, value))
}

fn push_nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

fn zone_attr(zone: u16) -> ConntrackAttribute {
    ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, zone.to_be_bytes().to_vec()))
}

fn protoinfo_attr(entry: &Entry) -> Option<ConntrackAttribute> {
    let mut infos = Vec::new();
    if let Some(tcp) = &entry.tcp {
        let mut items = vec![ProtoInfoTCP::State(tcp.state)];
        // Flags before window scales: the kernel applies the scales only when both
        // directions carry IP_CT_TCP_FLAG_WINDOW_SCALE.
        if let Some((o, r)) = tcp.flags {
            items.push(ProtoInfoTCP::OriginalFlags(tcp_flags(o)));
            items.push(ProtoInfoTCP::ReplyFlags(tcp_flags(r)));
        }
        if let Some((o, r)) = tcp.wscale {
            items.push(ProtoInfoTCP::OriginalWindowScale(o));
            items.push(ProtoInfoTCP::ReplyWindowScale(r));
        }
        items.extend(raws(entry, RawPlace::ProtoInfoTcp).map(ProtoInfoTCP::Other));
        infos.push(ProtoInfo::TCP(items));
    }
    infos.extend(raws(entry, RawPlace::ProtoInfo).map(ProtoInfo::Other));
    (!infos.is_empty()).then_some(ConntrackAttribute::CtaProtoInfo(infos))
}

fn tcp_flags(flags: u8) -> TCPFlags {
    // TCPFlags is non_exhaustive: build it through its parser.
    TCPFlags::parse(&[flags, 0xff]).expect("two bytes parse")
}

fn entry_attributes(entry: &Entry, purpose: Purpose) -> Vec<ConntrackAttribute> {
    let mut attrs = vec![ConntrackAttribute::CtaTupleOrig(orig_tuple(entry))];
    if purpose == Purpose::Create {
        attrs.push(ConntrackAttribute::CtaTupleReply(reply_tuple_for_create(
            entry,
        )));
    }
    if entry.key.zone != 0 {
        attrs.push(zone_attr(entry.key.zone));
    }
    let mut st = (entry.status & !status::DYING) | status::CONFIRMED;
    if purpose == Purpose::Create {
        st &= !status::EXPECTED;
    }
    attrs.push(ConntrackAttribute::CtaStatus(Status::from_bits_retain(st)));
    if let Some(t) = entry.timeout {
        attrs.push(ConntrackAttribute::CtaTimeout(t));
    }
    if let Some(m) = entry.mark {
        attrs.push(ConntrackAttribute::CtaMark(m));
    }
    if let Some(p) = protoinfo_attr(entry) {
        attrs.push(p);
    }
    if purpose == Purpose::Create {
        let k = &entry.key;
        let r = &entry.reply;
        let ports = k.has_ports();
        if entry.is_dnat() {
            attrs.push(nat_attr(CTA_NAT_DST, r.src, ports.then_some(r.src_port)));
        }
        if entry.is_snat() {
            let port = if ports {
                Some(r.dst_port)
            } else if k.is_icmp() {
                Some(r.src_port)
            } else {
                None
            };
            attrs.push(nat_attr(CTA_NAT_SRC, r.dst, port));
        }
    }
    for a in entry.raw.iter().filter(|a| a.place == RawPlace::Top) {
        if purpose == Purpose::Update && CREATE_ONLY.contains(&a.type_id()) {
            continue;
        }
        attrs.push(ConntrackAttribute::Other(a.nla()));
    }
    attrs
}

fn key_attributes(key: &FlowKey, timeout: Option<u32>) -> Vec<ConntrackAttribute> {
    let probe = Entry {
        key: key.clone(),
        reply: ReplyTuple {
            src: key.dst,
            dst: key.src,
            src_port: 0,
            dst_port: 0,
        },
        status: 0,
        timeout: None,
        mark: None,
        tcp: None,
        raw: Vec::new(),
    };
    let mut attrs = vec![ConntrackAttribute::CtaTupleOrig(orig_tuple(&probe))];
    if key.zone != 0 {
        attrs.push(zone_attr(key.zone));
    }
    if let Some(t) = timeout {
        attrs.push(ConntrackAttribute::CtaTimeout(t));
    }
    attrs
}

fn nf_family(family: Option<Family>) -> NetfilterProtoFamily {
    match family {
        None => NetfilterProtoFamily::Unspec,
        Some(Family::Ipv4) => NetfilterProtoFamily::IPv4,
        Some(Family::Ipv6) => NetfilterProtoFamily::IPv6,
    }
}

/// Appends one serialized ctnetlink request to `out`.
fn push_request(
    out: &mut Vec<u8>,
    msg: impl Into<NetfilterMessageInner>,
    family: Option<Family>,
    flags: u16,
    seq: u32,
) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(nf_family(family), 0, 0),
            msg,
        )),
    );
    packet.finalize();
    let start = out.len();
    out.resize(start + packet.buffer_len(), 0);
    packet.serialize(&mut out[start..]);
}

// ---------------------------------------------------------------------------------------------
// Sockets

struct NlSocket {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
    /// The netlink port id the kernel assigned to this socket.
    port: u32,
}

fn open_socket(groups: &[u32], rcvbuf: usize) -> Result<NlSocket, KernelError> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(KernelError::io("netlink socket"))?;
    let port = sock
        .bind_auto()
        .map_err(KernelError::io("binding the netlink socket"))?
        .port_number();
    for g in groups {
        sock.add_membership(*g)
            .map_err(KernelError::io("joining a conntrack event group"))?;
    }
    // Failures are acked with the request header only, not the whole request.
    let _ = sock.set_cap_ack(true);
    set_rcvbuf(&sock, rcvbuf)?;
    sock.set_non_blocking(true)
        .map_err(KernelError::io("non-blocking netlink socket"))?;
    // SAFETY: the Socket owns its descriptor, which nothing else closes or replaces while the
    // AsyncFd holds it.
    let fd = unsafe { AsyncFd::register(sock) }
        .map_err(|e| KernelError::io("registering the netlink socket")(e.into_parts().1))?;
    Ok(NlSocket {
        fd,
        buf: vec![0; RECV_BUF],
        port,
    })
}

/// SO_RCVBUFFORCE (ignores rmem_max with CAP_NET_ADMIN), else SO_RCVBUF.
fn set_rcvbuf(sock: &Socket, size: usize) -> Result<(), KernelError> {
    let val = size.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        sock.set_rx_buf_sz(val)
            .map_err(KernelError::io("setting the receive buffer"))?;
    }
    Ok(())
}

impl NlSocket {
    async fn send(&self, data: &[u8]) -> Result<(), KernelError> {
        loop {
            let mut guard = self
                .fd
                .writable()
                .await
                .map_err(KernelError::io("waiting to send"))?;
            match guard.try_io(|s| s.get_ref().send(data, 0)) {
                Ok(Ok(n)) if n == data.len() => return Ok(()),
                Ok(Ok(_)) => {
                    return Err(KernelError::Io {
                        what: "sending to the kernel",
                        source: io::Error::other("short netlink send"),
                    });
                }
                Ok(Err(e)) => return Err(KernelError::io("sending to the kernel")(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram into `self.buf`; returns its length. ENOBUFS is returned as an
    /// error with that errno.
    async fn recv(&mut self) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let buf = &mut self.buf;
            match guard.try_io(|s| recv_raw(s.get_ref().as_raw_fd(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one datagram if one is queued.
    fn try_recv(&mut self) -> io::Result<Option<usize>> {
        match recv_raw(self.fd.get_ref().as_raw_fd(), &mut self.buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn recv_raw(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv into a buffer we own, with its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((n as usize).min(buf.len()))
    }
}

/// Splits a datagram into netlink messages (header length checked; garbage stops the walk).
fn messages(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let rest = datagram.get(off..)?;
        let nl = NetlinkBuffer::new_checked(rest).ok()?;
        let len = nl.length() as usize;
        if len < 16 {
            return None;
        }
        off += (len + 3) & !3;
        rest.get(..len)
    })
}

/// What one received netlink message says.
enum Reply {
    /// A conntrack message: the nfgenmsg family, whether it is a DELETE, its netlink flags.
    Conntrack {
        delete: bool,
        flags: u16,
        attrs: Vec<ConntrackAttribute>,
    },
    /// ACK (errno 0) or failure of the request with this sequence number.
    Ack {
        seq: u32,
        errno: i32,
    },
    Done {
        errno: i32,
    },
    /// An expectation (subsystem CTNETLINK_EXP), attributes raw.
    Expect {
        delete: bool,
        attrs: Vec<DefaultNla>,
    },
    Other,
}

fn parse_reply(msg: &[u8]) -> Result<Reply, KernelError> {
    let parsed = NetlinkMessage::<NetfilterMessage>::deserialize(msg)
        .map_err(|e| KernelError::Decode(e.to_string()))?;
    let flags = parsed.header.flags;
    Ok(match parsed.payload {
        NetlinkPayload::Error(e) => Reply::Ack {
            seq: parsed.header.sequence_number,
            errno: e.code.map(|c| -c.get()).unwrap_or(0),
        },
        NetlinkPayload::Done(d) => Reply::Done { errno: -d.code },
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ct),
            ..
        }) => match ct {
            ConntrackMessage::New(attrs) => Reply::Conntrack {
                delete: false,
                flags,
                attrs,
            },
            ConntrackMessage::Delete(attrs) => Reply::Conntrack {
                delete: true,
                flags,
                attrs,
            },
            _ => Reply::Other,
        },
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner:
                NetfilterMessageInner::Other {
                    subsys: NetfilterSubsystem::Other(NFNL_SUBSYS_CTNETLINK_EXP),
                    message_type: message_type @ (IPCTNL_MSG_EXP_NEW | IPCTNL_MSG_EXP_DELETE),
                    attributes,
                },
            ..
        }) => Reply::Expect {
            delete: message_type == IPCTNL_MSG_EXP_DELETE,
            attrs: attributes,
        },
        _ => Reply::Other,
    })
}

pub(crate) fn errno_name(errno: i32) -> String {
    match errno {
        libc::ENOENT => "ENOENT".into(),
        libc::EEXIST => "EEXIST".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EPERM => "EPERM".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::ETIME => "ETIME".into(),
        n => format!("errno {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// One event of the kernel's expectation table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectEvent {
    New(Expectation),
    Destroy(Expectation),
    /// The kernel dropped events (ENOBUFS).
    Overrun,
}

/// Subscription to the expectation events (NFNLGRP_CONNTRACK_EXP_NEW/DESTROY) of the current
/// network namespace.
pub struct ExpectationStream {
    sock: NlSocket,
    pending: VecDeque<ExpectEvent>,
    pub overruns: u64,
    /// Events caused by the ignored origin, dropped (see [`EventStream::ignore_origin`]).
    pub ignored: u64,
    ignore_port: Option<u32>,
}

impl ExpectationStream {
    pub fn open() -> Result<Self, KernelError> {
        let sock = open_socket(
            &[NFNLGRP_CONNTRACK_EXP_NEW, NFNLGRP_CONNTRACK_EXP_DESTROY],
            EVENT_RCVBUF / 16,
        )?;
        Ok(ExpectationStream {
            sock,
            pending: VecDeque::new(),
            overruns: 0,
            ignored: 0,
            ignore_port: None,
        })
    }

    /// Drops events caused by requests of the socket with this port id.
    pub fn ignore_origin(&mut self, port_id: u32) {
        self.ignore_port = Some(port_id);
    }

    /// The next event (waits for one).
    pub async fn next(&mut self) -> Result<ExpectEvent, KernelError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            let received = self.sock.recv().await;
            let n = match received {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.overruns += 1;
                    return Ok(ExpectEvent::Overrun);
                }
                Err(e) => return Err(KernelError::io("reading expectation events")(e)),
            };
            for msg in messages(&self.sock.buf[..n]) {
                let hdr = NetlinkBuffer::new(msg);
                if self.ignore_port.is_some() && self.ignore_port == Some(hdr.port_number()) {
                    self.ignored += 1;
                    continue;
                }
                let family = msg.get(16).copied().unwrap_or(0);
                if let Ok(Reply::Expect { delete, attrs }) = parse_reply(msg) {
                    let exp = expectation_from(family, &attrs);
                    self.pending.push_back(if delete {
                        ExpectEvent::Destroy(exp)
                    } else {
                        ExpectEvent::New(exp)
                    });
                }
            }
        }
    }
}

/// Subscription to the conntrack events of the current network namespace. Open it BEFORE
/// dumping, so that nothing falls between the dump and the first event.
pub struct EventStream {
    sock: NlSocket,
    pending: VecDeque<KernelEvent>,
    /// Messages that could not be decoded into an entry (counted, not fatal).
    pub undecodable: u64,
    /// ENOBUFS seen (each also delivered as [`KernelEvent::Overrun`]).
    pub overruns: u64,
    /// Events caused by the ignored origin (see [`EventStream::ignore_origin`]), dropped.
    pub ignored: u64,
    ignore_port: Option<u32>,
    /// Whether the socket is in the event groups (see [`EventStream::set_subscribed`]).
    subscribed: bool,
}

/// The conntrack event groups an [`EventStream`] listens to.
const EVENT_GROUPS: [u32; 3] = [
    NFNLGRP_CONNTRACK_NEW,
    NFNLGRP_CONNTRACK_UPDATE,
    NFNLGRP_CONNTRACK_DESTROY,
];

impl EventStream {
    pub fn open() -> Result<Self, KernelError> {
        Self::open_with_buffer(EVENT_RCVBUF)
    }

    /// [`EventStream::open`] with a socket receive buffer of `bytes` (the default is 64 MiB).
    pub fn open_with_buffer(bytes: usize) -> Result<Self, KernelError> {
        let sock = open_socket(&EVENT_GROUPS, bytes)?;
        Ok(EventStream {
            sock,
            pending: VecDeque::new(),
            undecodable: 0,
            overruns: 0,
            ignored: 0,
            ignore_port: None,
            subscribed: true,
        })
    }

    /// Leaves (`false`) or joins again (`true`) the event groups; idempotent. While out, the
    /// kernel delivers nothing to this socket: events of that time are lost for good, so the
    /// caller dumps the table after joining again (joining first, so nothing falls between).
    pub fn set_subscribed(&mut self, on: bool) -> Result<(), KernelError> {
        if self.subscribed == on {
            return Ok(());
        }
        let sock = self.sock.fd.get_ref();
        for g in EVENT_GROUPS {
            let result = if on {
                sock.add_membership(g)
            } else {
                sock.drop_membership(g)
            };
            result.map_err(KernelError::io("changing the conntrack event groups"))?;
        }
        self.subscribed = on;
        Ok(())
    }

    /// Drops events caused by requests of the socket with this port id (the kernel stamps an
    /// event with the port of the ctnetlink request that caused it): give it
    /// [`Conntrack::port_id`] of the socket that installs replicated entries, so that the
    /// backup does not see its own installs and refreshes as local changes.
    pub fn ignore_origin(&mut self, port_id: u32) {
        self.ignore_port = Some(port_id);
    }

    /// The next event (waits for one).
    pub async fn next(&mut self) -> Result<KernelEvent, KernelError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            let mut batch = Vec::new();
            self.next_batch(&mut batch).await?;
            self.pending.extend(batch);
        }
    }

    /// Waits for at least one event, then appends every event already queued in the socket
    /// (bounded) to `out`. Returns how many were appended.
    pub async fn next_batch(&mut self, out: &mut Vec<KernelEvent>) -> Result<usize, KernelError> {
        let before = out.len();
        out.extend(self.pending.drain(..));
        while out.len() == before {
            let first = self.sock.recv().await;
            self.absorb(first, out)?;
            // Drain what is already queued, without waiting.
            for _ in 0..1024 {
                match self.sock.try_recv() {
                    Ok(None) => break,
                    Ok(Some(n)) => self.absorb(Ok(n), out)?,
                    Err(e) => self.absorb(Err(e), out)?,
                }
            }
        }
        Ok(out.len() - before)
    }

    fn absorb(
        &mut self,
        received: io::Result<usize>,
        out: &mut Vec<KernelEvent>,
    ) -> Result<(), KernelError> {
        let n = match received {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.overruns += 1;
                out.push(KernelEvent::Overrun);
                return Ok(());
            }
            Err(e) => return Err(KernelError::io("reading conntrack events")(e)),
        };
        let datagram = &self.sock.buf[..n];
        for msg in messages(datagram) {
            if self.ignore_port.is_some()
                && self.ignore_port == Some(NetlinkBuffer::new(msg).port_number())
            {
                self.ignored += 1;
                continue;
            }
            match parse_reply(msg) {
                Ok(Reply::Conntrack {
                    delete,
                    flags,
                    attrs,
                }) => match entry_from_attributes(&attrs) {
                    Ok(e) if delete => out.push(KernelEvent::Destroy(e)),
                    Ok(e) if flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 => {
                        out.push(KernelEvent::New(e))
                    }
                    Ok(e) => out.push(KernelEvent::Update(e)),
                    Err(_) => self.undecodable += 1,
                },
                Ok(_) => {}
                Err(_) => self.undecodable += 1,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Requests to the conntrack table of the current network namespace.
pub struct Conntrack {
    inner: Mutex<Requests>,
    port: u32,
}

struct Requests {
    sock: NlSocket,
    seq: u32,
}

/// One request of a batch and what to do with its outcome.
struct Pending<T> {
    seq: u32,
    tag: T,
}

impl Requests {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends the requests built by `build` (called once per item, in batches of about
    /// BATCH_BYTES), the last of each batch with NLM_F_ACK, and returns the errno of every
    /// request that failed (netlink reports failures even without NLM_F_ACK).
    async fn batch<I, T: Copy>(
        &mut self,
        items: I,
        mut build: impl FnMut(&mut Vec<u8>, &I::Item, u16, u32),
        mut tag: impl FnMut(&I::Item) -> T,
        mut on_result: impl FnMut(T, i32),
    ) -> Result<(), KernelError>
    where
        I: IntoIterator,
    {
        let mut items = items.into_iter().peekable();
        let mut buf = Vec::with_capacity(BATCH_BYTES + 4096);
        let mut sent: Vec<Pending<T>> = Vec::new();
        while items.peek().is_some() {
            buf.clear();
            sent.clear();
            while let Some(item) = items.next() {
                let seq = self.next_seq();
                let last = items.peek().is_none() || buf.len() >= BATCH_BYTES;
                let flags = if last {
                    NLM_F_REQUEST | NLM_F_ACK
                } else {
                    NLM_F_REQUEST
                };
                build(&mut buf, &item, flags, seq);
                sent.push(Pending {
                    seq,
                    tag: tag(&item),
                });
                if last {
                    break;
                }
            }
            self.sock.send(&buf).await?;
            let last_seq = sent.last().map(|p| p.seq).unwrap_or(0);
            let first_seq = sent.first().map(|p| p.seq).unwrap_or(0);
            let mut failed: Vec<(u32, i32)> = Vec::new();
            'wait: loop {
                let n = self
                    .sock
                    .recv()
                    .await
                    .map_err(KernelError::io("reading acks"))?;
                for msg in messages(&self.sock.buf[..n]) {
                    if let Ok(Reply::Ack { seq, errno }) = parse_reply(msg) {
                        let in_batch =
                            seq.wrapping_sub(first_seq) <= last_seq.wrapping_sub(first_seq);
                        if !in_batch {
                            continue;
                        }
                        if errno != 0 {
                            failed.push((seq, errno));
                        }
                        if seq == last_seq {
                            break 'wait;
                        }
                    }
                }
            }
            let mut failed = failed.into_iter().peekable();
            for p in &sent {
                let errno = match failed.peek() {
                    Some((seq, errno)) if *seq == p.seq => {
                        let e = *errno;
                        failed.next();
                        e
                    }
                    _ => 0,
                };
                on_result(p.tag, errno);
            }
        }
        Ok(())
    }
}

impl Conntrack {
    /// The netlink port id of this socket (see [`EventStream::ignore_origin`]).
    pub fn port_id(&self) -> u32 {
        self.port
    }

    pub fn open() -> Result<Self, KernelError> {
        let sock = open_socket(&[], REQUEST_RCVBUF)?;
        Ok(Conntrack {
            port: sock.port,
            inner: Mutex::new(Requests { sock, seq: 0 }),
        })
    }

    /// Every entry of both families. Entries the kernel reports that cannot be decoded are
    /// skipped and counted in the second value.
    pub async fn dump(&self) -> Result<Vec<Entry>, KernelError> {
        Ok(self.dump_counted().await?.0)
    }

    /// [`Conntrack::dump`] plus the number of undecodable messages.
    pub async fn dump_counted(&self) -> Result<(Vec<Entry>, usize), KernelError> {
        let mut req = self.inner.lock().await;
        let seq = req.next_seq();
        let mut buf = Vec::new();
        push_request(
            &mut buf,
            ConntrackMessage::Get(vec![]),
            None,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
        );
        // The request type must be GET: ConntrackMessage::Get serializes as IPCTNL_MSG_CT_GET.
        req.sock.send(&buf).await?;
        let mut entries = Vec::new();
        let mut bad = 0usize;
        loop {
            let n = req
                .sock
                .recv()
                .await
                .map_err(KernelError::io("reading the dump"))?;
            for msg in messages(&req.sock.buf[..n]) {
                let hdr = NetlinkBuffer::new(msg);
                if hdr.sequence_number() != seq {
                    continue;
                }
                match parse_reply(msg) {
                    Ok(Reply::Conntrack { attrs, .. }) => match entry_from_attributes(&attrs) {
                        Ok(e) => entries.push(e),
                        Err(_) => bad += 1,
                    },
                    Ok(Reply::Done { errno }) => {
                        if errno != 0 {
                            return Err(KernelError::Kernel {
                                what: "dumping conntrack",
                                errno,
                            });
                        }
                        return Ok((entries, bad));
                    }
                    Ok(Reply::Ack { errno, .. }) if errno != 0 => {
                        return Err(KernelError::Kernel {
                            what: "dumping conntrack",
                            errno,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => bad += 1,
                }
            }
        }
    }

    /// Every pending expectation of both families (e.g. an FTP data connection announced on
    /// the control connection but not opened yet).
    pub async fn dump_expectations(&self) -> Result<Vec<Expectation>, KernelError> {
        let mut req = self.inner.lock().await;
        let seq = req.next_seq();
        let mut buf = Vec::new();
        push_request(
            &mut buf,
            exp_message(IPCTNL_MSG_EXP_GET, vec![]),
            None,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
        );
        req.sock.send(&buf).await?;
        let mut out = Vec::new();
        loop {
            let n = req
                .sock
                .recv()
                .await
                .map_err(KernelError::io("reading the expectation dump"))?;
            for msg in messages(&req.sock.buf[..n]) {
                if NetlinkBuffer::new(msg).sequence_number() != seq {
                    continue;
                }
                let family = msg.get(16).copied().unwrap_or(0);
                match parse_reply(msg) {
                    Ok(Reply::Expect { attrs, .. }) => out.push(expectation_from(family, &attrs)),
                    Ok(Reply::Done { errno: 0 }) => return Ok(out),
                    Ok(Reply::Done { errno }) | Ok(Reply::Ack { errno, .. }) if errno != 0 => {
                        return Err(KernelError::Kernel {
                            what: "dumping expectations",
                            errno,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// Creates expectations (their master entries must be installed first).
    pub async fn install_expectations(
        &self,
        exps: &[Expectation],
    ) -> Result<InstallReport, KernelError> {
        let mut report = InstallReport::default();
        let mut req = self.inner.lock().await;
        req.batch(
            exps.iter(),
            |buf, e, flags, seq| {
                let attrs = e.raw.iter().map(RawAttr::nla).collect();
                push_request(
                    buf,
                    exp_message(IPCTNL_MSG_EXP_NEW, attrs),
                    Some(e.family),
                    flags | NLM_F_CREATE,
                    seq,
                )
            },
            |_| (),
            |_, errno| match errno {
                0 => report.created += 1,
                e => report.fail(errno_name(e)),
            },
        )
        .await?;
        Ok(report)
    }

    /// Deletes these expectations (found by tuple and zone); returns how many existed.
    pub async fn remove_expectations(&self, exps: &[Expectation]) -> Result<usize, KernelError> {
        let mut req = self.inner.lock().await;
        let mut tally = AckTally::default();
        req.batch(
            exps.iter(),
            |buf, e, flags, seq| {
                let attrs = e
                    .raw
                    .iter()
                    .filter(|a| matches!(a.type_id(), CTA_EXPECT_TUPLE | CTA_EXPECT_ZONE))
                    .map(RawAttr::nla)
                    .collect();
                push_request(
                    buf,
                    exp_message(IPCTNL_MSG_EXP_DELETE, attrs),
                    Some(e.family),
                    flags,
                    seq,
                )
            },
            |_| (),
            |_, errno| tally.ack(errno),
        )
        .await?;
        tally.result("deleting expectations")
    }

    /// Creates the entries; an entry that exists already is updated instead (without the
    /// attributes the kernel refuses to change). Masters go before related entries.
    pub async fn install(&self, entries: &[Entry]) -> Result<InstallReport, KernelError> {
        let mut report = InstallReport::default();
        let mut req = self.inner.lock().await;
        let masters: Vec<usize> = (0..entries.len())
            .filter(|&i| !entries[i].is_related())
            .collect();
        let related: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].is_related())
            .collect();
        for phase in [masters, related] {
            let mut to_update: Vec<usize> = Vec::new();
            let phase: Vec<usize> = phase
                .into_iter()
                .filter(|&i| {
                    let ok = entries[i].timeout.is_some();
                    if !ok {
                        report.fail("no-timeout".into());
                    }
                    ok
                })
                .collect();
            req.batch(
                phase.iter().copied(),
                |buf, &i, flags, seq| {
                    let e = &entries[i];
                    push_request(
                        buf,
                        ConntrackMessage::New(entry_attributes(e, Purpose::Create)),
                        Some(e.key.family),
                        flags | NLM_F_CREATE | NLM_F_EXCL,
                        seq,
                    )
                },
                |&i| i,
                |i, errno| match errno {
                    0 => report.created += 1,
                    libc::EEXIST => to_update.push(i),
                    e => report.fail(errno_name(e)),
                },
            )
            .await?;
            req.batch(
                to_update.iter().copied(),
                |buf, &i, flags, seq| {
                    let e = &entries[i];
                    push_request(
                        buf,
                        ConntrackMessage::New(entry_attributes(e, Purpose::Update)),
                        Some(e.key.family),
                        flags,
                        seq,
                    )
                },
                |&i| i,
                |_, errno| match errno {
                    0 => report.updated += 1,
                    e => report.fail(errno_name(e)),
                },
            )
            .await?;
        }
        Ok(report)
    }

    /// Deletes the entries with these keys; returns how many existed. ENOENT is not an error.
    pub async fn remove(&self, keys: &[FlowKey]) -> Result<usize, KernelError> {
        let mut req = self.inner.lock().await;
        let mut tally = AckTally::default();
        req.batch(
            keys.iter(),
            |buf, key, flags, seq| {
                push_request(
                    buf,
                    ConntrackMessage::Delete(key_attributes(key, None)),
                    Some(key.family),
                    flags,
                    seq,
                )
            },
            |_| (),
            |_, errno| tally.ack(errno),
        )
        .await?;
        tally.result("deleting conntrack entries")
    }

    /// Sets the remaining timeout of existing entries (refresh on the backup). Entries that do
    /// not exist (any more) are skipped.
    pub async fn set_timeouts(&self, entries: &[(FlowKey, u32)]) -> Result<(), KernelError> {
        let mut req = self.inner.lock().await;
        let mut tally = AckTally::default();
        req.batch(
            entries.iter(),
            |buf, (key, secs), flags, seq| {
                push_request(
                    buf,
                    ConntrackMessage::New(key_attributes(key, Some(*secs))),
                    Some(key.family),
                    flags,
                    seq,
                )
            },
            |_| (),
            |_, errno| tally.ack(errno),
        )
        .await?;
        tally.result("refreshing timeouts").map(|_| ())
    }

    /// Deletes every entry of both families.
    pub async fn flush(&self) -> Result<(), KernelError> {
        let mut req = self.inner.lock().await;
        let mut failure = None;
        req.batch(
            [()],
            |buf, _, flags, seq| {
                push_request(buf, ConntrackMessage::Delete(vec![]), None, flags, seq)
            },
            |_| (),
            |_, errno| {
                if errno != 0 {
                    failure = Some(errno)
                }
            },
        )
        .await?;
        match failure {
            Some(errno) => Err(KernelError::Kernel {
                what: "flushing conntrack",
                errno,
            }),
            None => Ok(()),
        }
    }
}

/// The ACKs of a batch of requests aimed at entries that may be gone already: how many took
/// effect, and the first real failure (ENOENT is none).
#[derive(Default)]
struct AckTally {
    applied: usize,
    failure: Option<i32>,
}

impl AckTally {
    fn ack(&mut self, errno: i32) {
        match errno {
            0 => self.applied += 1,
            libc::ENOENT => {}
            e => self.failure = self.failure.or(Some(e)),
        }
    }

    fn result(self, what: &'static str) -> Result<usize, KernelError> {
        match self.failure {
            Some(errno) => Err(KernelError::Kernel { what, errno }),
            None => Ok(self.applied),
        }
    }
}

/// Decodes one ctnetlink message (netlink header included) into an entry; for tests and fuzzing
/// of the kernel-facing parser. Never panics.
pub fn decode_kernel_message(msg: &[u8]) -> Result<Option<Entry>, KernelError> {
    match parse_reply(msg)? {
        Reply::Conntrack { attrs, .. } => entry_from_attributes(&attrs)
            .map(Some)
            .map_err(|e| KernelError::Decode(e.to_string())),
        _ => Ok(None),
    }
}

/// Serializes the create request for `entry` (netlink header included); for tests.
pub fn encode_create_request(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    push_request(
        &mut out,
        ConntrackMessage::New(entry_attributes(entry, Purpose::Create)),
        Some(entry.key.family),
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
        1,
    );
    out
}

fn exp_message(message_type: u8, attributes: Vec<DefaultNla>) -> NetfilterMessageInner {
    NetfilterMessageInner::Other {
        subsys: NetfilterSubsystem::Other(NFNL_SUBSYS_CTNETLINK_EXP),
        message_type,
        attributes,
    }
}

fn expectation_from(family: u8, attrs: &[DefaultNla]) -> Expectation {
    Expectation {
        family: if family == libc::AF_INET6 as u8 {
            Family::Ipv6
        } else {
            Family::Ipv4
        },
        raw: attrs
            .iter()
            .filter(|a| a.kind() & netlink_packet_core::NLA_TYPE_MASK != CTA_EXPECT_ID)
            .map(|a| raw_of(RawPlace::Top, a))
            .collect(),
    }
}
