//! The walk over the parsed TOML: every section, every key, then the checks across sections.
//!
//! Each section is read into a draft whose fields are `None` where the value was missing or
//! invalid (and reported); the cross-section checks use whatever is known, and the drafts
//! become a [`Config`] only when no error at all was found.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::{Table, Value};

use super::value::{
    Errors, Section, abs_path, array_of, boolean, check_ifname, duration, ifname, int_in, ip_addr,
    join, net_array, no_duplicates, non_empty_string, parse_ip, parse_net, string, string_array,
};
use super::{
    BgpConfig, BgpDriver, Config, ConfigError, ConfigErrors, ConntrackSyncConfig, DaemonConfig,
    GroupConfig, SyncGroupConfig, TransitionScripts,
};
use crate::proto::time::CentisError;
use crate::proto::{Centis, ChecksumForm, Family};

const TOP_KEYS: &[&str] = &["daemon", "group", "sync-group", "conntrack-sync", "bgp"];
const DAEMON_KEYS: &[&str] = &[
    "router-id",
    "socket",
    "metrics",
    "checksum",
    "realtime-priority",
];
const GROUP_KEYS: &[&str] = &[
    "interface",
    "vrid",
    "priority",
    "address",
    "advertise-interval",
    "preempt",
    "preempt-delay",
    "accept",
    "peer-address",
    "hello-source-address",
    "vmac",
    "track-interface",
];
const SYNC_GROUP_KEYS: &[&str] = &["member", "transition-script"];
const SCRIPT_KEYS: &[&str] = &["master", "backup", "fault", "stop"];
const CONNTRACK_KEYS: &[&str] = &[
    "sync-group",
    "interface",
    "peer",
    "port",
    "key-file",
    "ignore-address",
];
const BGP_KEYS: &[&str] = &[
    "sync-group",
    "driver",
    "local-as",
    "prepend-master",
    "prepend-backup",
    "bird",
    "frr",
    "exec",
];
const BIRD_KEYS: &[&str] = &["include-file", "socket"];
const FRR_KEYS: &[&str] = &["route-map", "sequence", "vtysh"];
const EXEC_KEYS: &[&str] = &["command"];

/// Validates a parsed document.
pub(super) fn config(root: &Table) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();
    let top = Section::new(&mut errs, String::new(), root, TOP_KEYS);

    let daemon = match top.get("daemon") {
        None => Some(DaemonConfig::default()),
        Some(v) => daemon(&mut errs, v),
    };

    let (group_names, mut groups) = groups(&mut errs, top.get("group"));
    check_across_groups(&mut errs, &groups);

    let (sync_names, syncs) = sync_groups(&mut errs, top.get("sync-group"), &group_names);
    let membership = check_membership(&mut errs, &syncs, &group_names);
    for g in &mut groups {
        g.sync_group = membership.get(g.name).map(|s| s.to_string());
    }

    let conntrack_sync = top
        .get("conntrack-sync")
        .map(|v| conntrack_sync(&mut errs, v, &sync_names));
    let bgp = top.get("bgp").map(|v| bgp(&mut errs, v, &sync_names));

    if !errs.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    let built = (|| {
        Some(Config {
            daemon: daemon?,
            groups: groups
                .into_iter()
                .map(GroupDraft::finish)
                .collect::<Option<_>>()?,
            sync_groups: syncs
                .into_iter()
                .map(SyncDraft::finish)
                .collect::<Option<_>>()?,
            conntrack_sync: match conntrack_sync {
                None => None,
                Some(c) => Some(c?),
            },
            bgp: match bgp {
                None => None,
                Some(b) => Some(b?),
            },
        })
    })();
    // Every `None` above comes with an error, so this cannot fail; keep it an error anyway.
    built.ok_or_else(|| {
        ConfigErrors(vec![ConfigError::new(
            "config",
            "internal error: incomplete configuration without a reported problem",
        )])
    })
}

fn daemon(errs: &mut Errors, v: &Value) -> Option<DaemonConfig> {
    let s = Section::of(errs, "daemon".into(), v, DAEMON_KEYS)?;
    let router_id = s.opt(errs, "router-id", non_empty_string);
    let socket = s.or(
        errs,
        "socket",
        PathBuf::from(super::DEFAULT_SOCKET),
        abs_path,
    );
    let metrics = s.opt(errs, "metrics", socket_addr);
    let checksum = s.or(errs, "checksum", ChecksumForm::PseudoHeader, checksum);
    let realtime_priority = s.or(
        errs,
        "realtime-priority",
        super::DEFAULT_REALTIME_PRIORITY,
        |e, p, v| int_in(e, p, v, 0, 99),
    );
    Some(DaemonConfig {
        router_id: router_id?.unwrap_or_else(super::hostname),
        socket: socket?,
        metrics: metrics?,
        checksum: checksum?,
        realtime_priority: realtime_priority?,
    })
}

fn socket_addr(errs: &mut Errors, path: &str, v: &Value) -> Option<SocketAddr> {
    let s = string(errs, path, v)?;
    match s.trim().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                path,
                format!(
                    "invalid socket address {s:?}; write e.g. \"127.0.0.1:9469\" or \"[::1]:9469\""
                ),
            );
            None
        }
    }
}

fn checksum(errs: &mut Errors, path: &str, v: &Value) -> Option<ChecksumForm> {
    match string(errs, path, v)? {
        "pseudo-header" => Some(ChecksumForm::PseudoHeader),
        "rfc9568" => Some(ChecksumForm::Rfc9568),
        other => {
            errs.push(
                path,
                format!("must be \"pseudo-header\" or \"rfc9568\", got {other:?}"),
            );
            None
        }
    }
}

/// Group and sync-group names: `[A-Za-z0-9_.-]+`.
fn check_name(errs: &mut Errors, path: &str, name: &str) {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        errs.push(
            path,
            "invalid name: use only letters, digits, '_', '.' and '-'",
        );
    }
}

/// The entries of `[group.*]` or `[sync-group.*]`: (name, path, value), sorted by name.
fn named_entries<'a>(
    errs: &mut Errors,
    section: &str,
    v: Option<&'a Value>,
) -> Vec<(&'a str, String, &'a Value)> {
    let Some(v) = v else { return Vec::new() };
    let Value::Table(t) = v else {
        errs.push(
            section,
            format!(
                "expected a table of named {section}s ([{section}.NAME]), got {}",
                super::value::kind(v)
            ),
        );
        return Vec::new();
    };
    let mut out: Vec<_> = t
        .iter()
        .map(|(name, v)| (name.as_str(), join(section, name), v))
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    for (name, path, _) in &out {
        check_name(errs, path, name);
    }
    out
}

struct GroupDraft<'a> {
    name: &'a str,
    path: String,
    interface: Option<String>,
    vrid: Option<u8>,
    priority: Option<u8>,
    /// The addresses that parsed, even when others did not (for the checks across groups).
    addresses: Vec<IpNet>,
    addresses_ok: bool,
    family: Option<Family>,
    advertise_interval: Option<Centis>,
    preempt: Option<bool>,
    preempt_delay: Option<Duration>,
    accept: Option<bool>,
    peer_addresses: Option<Vec<IpAddr>>,
    hello_source_address: Option<Option<IpAddr>>,
    vmac: Option<bool>,
    track_interfaces: Option<Vec<String>>,
    sync_group: Option<String>,
}

impl GroupDraft<'_> {
    fn finish(self) -> Option<GroupConfig> {
        Some(GroupConfig {
            name: self.name.to_owned(),
            interface: self.interface?,
            vrid: self.vrid?,
            priority: self.priority?,
            addresses: self.addresses_ok.then_some(self.addresses)?,
            family: self.family?,
            advertise_interval: self.advertise_interval?,
            preempt: self.preempt?,
            preempt_delay: self.preempt_delay?,
            accept: self.accept?,
            peer_addresses: self.peer_addresses?,
            hello_source_address: self.hello_source_address?,
            vmac: self.vmac?,
            track_interfaces: self.track_interfaces?,
            sync_group: self.sync_group,
        })
    }
}

/// `[group.*]`: the names present in the file (valid or not) and a draft per table.
fn groups<'a>(errs: &mut Errors, v: Option<&'a Value>) -> (BTreeSet<&'a str>, Vec<GroupDraft<'a>>) {
    let entries = named_entries(errs, "group", v);
    if entries.is_empty() && matches!(v, None | Some(Value::Table(_))) {
        errs.push(
            "group",
            "at least one group is required ([group.NAME] with interface, vrid, priority and address)",
        );
    }
    let names = entries.iter().map(|(n, _, _)| *n).collect();
    let drafts = entries
        .into_iter()
        .filter_map(|(name, path, v)| group(errs, name, path, v))
        .collect();
    (names, drafts)
}

fn group<'a>(
    errs: &mut Errors,
    name: &'a str,
    path: String,
    v: &'a Value,
) -> Option<GroupDraft<'a>> {
    let s = Section::of(errs, path, v, GROUP_KEYS)?;
    let interface = s.req(errs, "interface", ifname);
    let vrid = s.req(errs, "vrid", |e, p, v| int_in(e, p, v, 1, 255));
    let priority = s.req(errs, "priority", |e, p, v| int_in(e, p, v, 1, 255));
    let (addresses, addresses_ok, family) = match s.required(errs, "address") {
        Some(v) => virtual_addresses(errs, &s.key("address"), v),
        None => (Vec::new(), false, None),
    };
    let advertise_interval = s.or(
        errs,
        "advertise-interval",
        Centis::DEFAULT_ADVERT,
        advertise_interval,
    );
    let preempt = s.or(errs, "preempt", true, boolean);
    let preempt_delay = s.or(errs, "preempt-delay", Duration::ZERO, preempt_delay);
    let accept = s.or(errs, "accept", false, boolean);
    let peer_addresses = s.or(errs, "peer-address", Vec::new(), |e, p, v| {
        let addrs = array_of(e, p, v, |e, p, s| {
            let a = parse_ip(e, p, s)?;
            (unicast(e, p, &a) && same_family(e, p, &a, family)).then_some(a)
        })?;
        no_duplicates(e, p, &addrs, |a| a.to_string()).then_some(addrs)
    });
    let hello_source_address = s.opt(errs, "hello-source-address", |e, p, v| {
        let a = ip_addr(e, p, v)?;
        (unicast(e, p, &a) && same_family(e, p, &a, family)).then_some(a)
    });
    let vmac = s.or(errs, "vmac", false, boolean);
    let track_interfaces = s.or(errs, "track-interface", Vec::new(), |e, p, v| {
        let names = array_of(e, p, v, |e, p, s| {
            check_ifname(e, p, s).then(|| s.to_owned())
        })?;
        no_duplicates(e, p, &names, |n| n.clone()).then_some(names)
    });
    Some(GroupDraft {
        name,
        path: s.path.clone(),
        interface,
        vrid,
        priority,
        addresses,
        addresses_ok,
        family,
        advertise_interval,
        preempt,
        preempt_delay,
        accept,
        peer_addresses,
        hello_source_address,
        vmac,
        track_interfaces,
        sync_group: None,
    })
}

/// `address`: (the addresses that parsed, whether all is well, the family when it is one).
fn virtual_addresses(
    errs: &mut Errors,
    path: &str,
    v: &Value,
) -> (Vec<IpNet>, bool, Option<Family>) {
    let Some(strs) = string_array(errs, path, v) else {
        return (Vec::new(), false, None);
    };
    if strs.is_empty() {
        errs.push(path, "must list at least one virtual address");
        return (Vec::new(), false, None);
    }
    let mut ok = true;
    let mut parsed: Vec<(&str, IpNet)> = Vec::with_capacity(strs.len());
    for s in strs {
        match parse_net(errs, path, s) {
            Some(n) if unusable_vip(&n.addr()).is_some() => {
                let why = unusable_vip(&n.addr()).unwrap_or_default();
                errs.push(path, format!("{s:?} cannot be a virtual address ({why})"));
                ok = false;
            }
            Some(n) => parsed.push((s, n)),
            None => ok = false,
        }
    }
    let v4 = parsed.iter().find(|(_, n)| n.addr().is_ipv4());
    let v6 = parsed.iter().find(|(_, n)| n.addr().is_ipv6());
    let family = match (v4, v6) {
        (Some((a, _)), Some((b, _))) => {
            let (first, second) = if parsed[0].1.addr().is_ipv4() {
                (a, b)
            } else {
                (b, a)
            };
            errs.push(
                path,
                format!(
                    "mixes IPv4 and IPv6 addresses ({first:?}, {second:?}); use one group per family"
                ),
            );
            ok = false;
            None
        }
        (Some(_), None) => Some(Family::Ipv4),
        (None, Some(_)) => Some(Family::Ipv6),
        (None, None) => None,
    };
    let addrs: Vec<IpAddr> = parsed.iter().map(|(_, n)| n.addr()).collect();
    ok &= no_duplicates(errs, path, &addrs, |a| a.to_string());
    (parsed.into_iter().map(|(_, n)| n).collect(), ok, family)
}

fn unusable_vip(a: &IpAddr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("unspecified")
    } else if a.is_multicast() {
        Some("multicast")
    } else if a.is_loopback() {
        Some("loopback")
    } else if *a == IpAddr::from([255, 255, 255, 255]) {
        Some("broadcast")
    } else {
        None
    }
}

/// Peers and sources must be unicast.
fn unicast(errs: &mut Errors, path: &str, a: &IpAddr) -> bool {
    if a.is_unspecified() || a.is_multicast() || *a == IpAddr::from([255, 255, 255, 255]) {
        errs.push(path, format!("\"{a}\" is not a unicast address"));
        return false;
    }
    true
}

/// `a` is of `family` (when the group's family is known at all).
fn same_family(errs: &mut Errors, path: &str, a: &IpAddr, family: Option<Family>) -> bool {
    match family {
        Some(f) if Family::of(a) != f => {
            errs.push(
                path,
                format!(
                    "\"{a}\" is {} but the group's addresses are {}",
                    family_name(Family::of(a)),
                    family_name(f)
                ),
            );
            false
        }
        _ => true,
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "IPv4",
        Family::Ipv6 => "IPv6",
    }
}

fn advertise_interval(errs: &mut Errors, path: &str, v: &Value) -> Option<Centis> {
    let d = duration(errs, path, v)?;
    let shown = v.as_str().unwrap_or_default();
    match Centis::from_duration(d) {
        Ok(c) => Some(c),
        Err(CentisError::NotMultiple) => {
            errs.push(path, format!("must be a multiple of 10ms, got {shown:?}"));
            None
        }
        Err(CentisError::OutOfRange) => {
            errs.push(path, format!("must be within 10ms..=40.95s, got {shown:?}"));
            None
        }
    }
}

fn preempt_delay(errs: &mut Errors, path: &str, v: &Value) -> Option<Duration> {
    let d = duration(errs, path, v)?;
    if d > super::MAX_PREEMPT_DELAY {
        let shown = v.as_str().unwrap_or_default();
        errs.push(path, format!("must be within 0s..=1h, got {shown:?}"));
        return None;
    }
    Some(d)
}

/// Checks that need several groups: one virtual router per (interface, family, VRID), and a
/// virtual address in one group only. Reported on the later group by name.
fn check_across_groups(errs: &mut Errors, groups: &[GroupDraft<'_>]) {
    let mut routers: HashMap<(&str, Family, u8), &str> = HashMap::new();
    let mut vips: HashMap<IpAddr, &str> = HashMap::new();
    for g in groups {
        if let (Some(ifname), Some(family), Some(vrid)) = (&g.interface, g.family, g.vrid) {
            match routers.get(&(ifname.as_str(), family, vrid)) {
                Some(other) => errs.push(
                    join(&g.path, "vrid"),
                    format!(
                        "VRID {vrid} on {ifname} ({family}) is already used by group {other:?}"
                    ),
                ),
                None => {
                    routers.insert((ifname.as_str(), family, vrid), g.name);
                }
            }
        }
        let mut seen = HashSet::new();
        for a in g.addresses.iter().map(IpNet::addr) {
            if !seen.insert(a) {
                continue;
            }
            match vips.get(&a) {
                Some(other) => errs.push(
                    join(&g.path, "address"),
                    format!("\"{a}\" is already a virtual address of group {other:?}"),
                ),
                None => {
                    vips.insert(a, g.name);
                }
            }
        }
    }
}

struct SyncDraft<'a> {
    name: &'a str,
    path: String,
    members: Option<Vec<&'a str>>,
    scripts: Option<TransitionScripts>,
}

impl SyncDraft<'_> {
    fn finish(self) -> Option<SyncGroupConfig> {
        Some(SyncGroupConfig {
            name: self.name.to_owned(),
            members: self.members?.into_iter().map(str::to_owned).collect(),
            scripts: self.scripts?,
        })
    }
}

fn sync_groups<'a>(
    errs: &mut Errors,
    v: Option<&'a Value>,
    group_names: &BTreeSet<&str>,
) -> (BTreeSet<&'a str>, Vec<SyncDraft<'a>>) {
    let entries = named_entries(errs, "sync-group", v);
    let names = entries.iter().map(|(n, _, _)| *n).collect();
    let drafts = entries
        .into_iter()
        .filter_map(|(name, path, v)| sync_group(errs, name, path, v, group_names))
        .collect();
    (names, drafts)
}

fn sync_group<'a>(
    errs: &mut Errors,
    name: &'a str,
    path: String,
    v: &'a Value,
    group_names: &BTreeSet<&str>,
) -> Option<SyncDraft<'a>> {
    let s = Section::of(errs, path, v, SYNC_GROUP_KEYS)?;
    let members = s.req(errs, "member", |e, p, v| {
        let members = string_array(e, p, v)?;
        if members.is_empty() {
            e.push(p, "must list at least one group");
            return None;
        }
        let mut ok = true;
        for m in &members {
            if !group_names.contains(m) {
                e.push(p, format!("{m:?} names no group"));
                ok = false;
            }
        }
        ok &= no_duplicates(e, p, &members, |m| m.to_string());
        ok.then_some(members)
    });
    let scripts = s.or(
        errs,
        "transition-script",
        TransitionScripts::default(),
        |e, p, v| {
            let t = Section::of(e, p.to_owned(), v, SCRIPT_KEYS)?;
            let master = t.opt(e, "master", abs_path);
            let backup = t.opt(e, "backup", abs_path);
            let fault = t.opt(e, "fault", abs_path);
            let stop = t.opt(e, "stop", abs_path);
            Some(TransitionScripts {
                master: master?,
                backup: backup?,
                fault: fault?,
                stop: stop?,
            })
        },
    );
    Some(SyncDraft {
        name,
        path: s.path.clone(),
        members,
        scripts,
    })
}

/// A group belongs to at most one sync group; returns group name -> sync group name.
fn check_membership<'a>(
    errs: &mut Errors,
    syncs: &[SyncDraft<'a>],
    group_names: &BTreeSet<&str>,
) -> BTreeMap<&'a str, &'a str> {
    let mut of: BTreeMap<&str, &str> = BTreeMap::new();
    for s in syncs {
        let Some(members) = &s.members else { continue };
        let mut seen = HashSet::new();
        for &m in members {
            if !group_names.contains(m) || !seen.insert(m) {
                continue;
            }
            match of.get(m) {
                Some(other) => errs.push(
                    join(&s.path, "member"),
                    format!("group {m:?} is already a member of sync-group {other:?}"),
                ),
                None => {
                    of.insert(m, s.name);
                }
            }
        }
    }
    of
}

fn sync_group_ref(
    errs: &mut Errors,
    path: &str,
    v: &Value,
    sync_names: &BTreeSet<&str>,
) -> Option<String> {
    let name = string(errs, path, v)?;
    if !sync_names.contains(name) {
        errs.push(path, format!("{name:?} names no sync-group"));
        return None;
    }
    Some(name.to_owned())
}

fn conntrack_sync(
    errs: &mut Errors,
    v: &Value,
    sync_names: &BTreeSet<&str>,
) -> Option<ConntrackSyncConfig> {
    let s = Section::of(errs, "conntrack-sync".into(), v, CONNTRACK_KEYS)?;
    let sync_group = s.req(errs, "sync-group", |e, p, v| {
        sync_group_ref(e, p, v, sync_names)
    });
    let interface = s.req(errs, "interface", ifname);
    let peer = s.req(errs, "peer", |e, p, v| {
        let a = ip_addr(e, p, v)?;
        unicast(e, p, &a).then_some(a)
    });
    let port = s.or(
        errs,
        "port",
        super::DEFAULT_CONNTRACK_SYNC_PORT,
        |e, p, v| int_in(e, p, v, 1, 65535),
    );
    let key_file = s.opt(errs, "key-file", abs_path);
    let ignore_addresses = s.or(errs, "ignore-address", Vec::new(), net_array);
    Some(ConntrackSyncConfig {
        sync_group: sync_group?,
        interface: interface?,
        peer: peer?,
        port: port?,
        key_file: key_file?,
        ignore_addresses: ignore_addresses?,
    })
}

fn bgp(errs: &mut Errors, v: &Value, sync_names: &BTreeSet<&str>) -> Option<BgpConfig> {
    let s = Section::of(errs, "bgp".into(), v, BGP_KEYS)?;
    let sync_group = s.req(errs, "sync-group", |e, p, v| {
        sync_group_ref(e, p, v, sync_names)
    });
    let driver = s.req(errs, "driver", |e, p, v| match string(e, p, v)? {
        "bird" => Some(BgpDriver::Bird),
        "frr" => Some(BgpDriver::Frr),
        "exec" => Some(BgpDriver::Exec),
        other => {
            e.push(
                p,
                format!("must be \"bird\", \"frr\" or \"exec\", got {other:?}"),
            );
            None
        }
    });
    let local_as = s.req(errs, "local-as", |e, p, v| {
        int_in(e, p, v, 1, u32::MAX as i64)
    });
    let max = i64::from(super::MAX_PREPEND);
    let prepend_master = s.or(errs, "prepend-master", 0, |e, p, v| int_in(e, p, v, 0, max));
    let prepend_backup = s.req(errs, "prepend-backup", |e, p, v| int_in(e, p, v, 0, max));
    let prepend_backup = match (prepend_master, prepend_backup) {
        (Some(m), Some(b)) if b <= m => {
            errs.push(
                s.key("prepend-backup"),
                format!(
                    "must be greater than prepend-master ({m}) so that the master's routes are preferred, got {b}"
                ),
            );
            None
        }
        (_, b) => b,
    };

    let mut bird_include_file = Some(PathBuf::from(super::DEFAULT_BIRD_INCLUDE_FILE));
    let mut bird_socket = Some(PathBuf::from(super::DEFAULT_BIRD_SOCKET));
    let mut frr_route_map = Some(super::DEFAULT_FRR_ROUTE_MAP.to_owned());
    let mut frr_sequence = Some(super::DEFAULT_FRR_SEQUENCE);
    let mut frr_vtysh = Some(vec![super::DEFAULT_FRR_VTYSH.to_owned()]);
    let mut exec_command = Some(Vec::new());
    for (table, this, known) in [
        ("bird", BgpDriver::Bird, BIRD_KEYS),
        ("frr", BgpDriver::Frr, FRR_KEYS),
        ("exec", BgpDriver::Exec, EXEC_KEYS),
    ] {
        let Some(v) = s.get(table) else { continue };
        let path = s.key(table);
        if let Some(d) = driver.filter(|d| *d != this) {
            errs.push(
                &path,
                format!("only used with driver = \"{this}\", but driver is \"{d}\""),
            );
        }
        let Some(t) = Section::of(errs, path, v, known) else {
            continue;
        };
        if this == BgpDriver::Bird {
            bird_include_file = t.or(
                errs,
                "include-file",
                PathBuf::from(super::DEFAULT_BIRD_INCLUDE_FILE),
                abs_path,
            );
            bird_socket = t.or(
                errs,
                "socket",
                PathBuf::from(super::DEFAULT_BIRD_SOCKET),
                abs_path,
            );
        }
        if this == BgpDriver::Frr {
            frr_route_map = t.or(
                errs,
                "route-map",
                super::DEFAULT_FRR_ROUTE_MAP.to_owned(),
                route_map_name,
            );
            frr_sequence = t.or(errs, "sequence", super::DEFAULT_FRR_SEQUENCE, |e, p, v| {
                int_in(e, p, v, 1, 65535)
            });
            frr_vtysh = t.or(
                errs,
                "vtysh",
                vec![super::DEFAULT_FRR_VTYSH.to_owned()],
                argv,
            );
        }
        if this == BgpDriver::Exec {
            exec_command = t.opt(errs, "command", argv).map(|c| c.unwrap_or_default());
        }
    }
    let exec_command = match exec_command {
        Some(c) if c.is_empty() && driver == Some(BgpDriver::Exec) => {
            errs.push(
                join(&s.key("exec"), "command"),
                "is required with driver = \"exec\"",
            );
            None
        }
        c => c,
    };

    Some(BgpConfig {
        sync_group: sync_group?,
        driver: driver?,
        local_as: local_as?,
        prepend_master: prepend_master?,
        prepend_backup: prepend_backup?,
        bird_include_file: bird_include_file?,
        bird_socket: bird_socket?,
        frr_route_map: frr_route_map?,
        frr_sequence: frr_sequence?,
        frr_vtysh: frr_vtysh?,
        exec_command: exec_command?,
    })
}

/// A command as an argument vector: an absolute program path, then its arguments. Never a
/// shell string: nothing is split or interpreted.
fn argv(errs: &mut Errors, path: &str, v: &Value) -> Option<Vec<String>> {
    let items = string_array(errs, path, v)?;
    let Some(program) = items.first() else {
        errs.push(
            path,
            "must name a program: [\"/path/to/program\", \"arg\", ...]",
        );
        return None;
    };
    if !program.starts_with('/') {
        errs.push(
            path,
            format!("the program must be an absolute path, got {program:?}"),
        );
        return None;
    }
    Some(items.iter().map(|s| (*s).to_owned()).collect())
}

/// A route-map name as vtysh takes it: one word, since vtysh splits its commands on spaces.
fn route_map_name(errs: &mut Errors, path: &str, v: &Value) -> Option<String> {
    let s = string(errs, path, v)?;
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        errs.push(
            path,
            format!("must be 1-64 characters of A-Z a-z 0-9 - _ ., got {s:?}"),
        );
        return None;
    }
    Some(s.to_owned())
}
