//! vrrpd's adverts as the wire carries them: captured with tcpdump on router b's LAN interface
//! (b runs nothing), decoded by tshark's VRRP dissector. For each IPv4 checksum form vrrpd can
//! send, tshark validates every advert (IPv4 and IPv6) as good with the matching preference
//! (`vrrp.v3_checksum_as_in_v2`: FALSE = RFC 5798 pseudo-header, TRUE = RFC 9568 message only),
//! with no malformed packet and no expert warning; with the other preference it flags exactly
//! the IPv4 adverts as bad (the preference does not apply to IPv6, where the pseudo-header is
//! always part of the sum). Root only.

mod lab;

use std::path::{Path, PathBuf};
use std::process::Command;

use lab::Lab;
use lab::interop::{Checksum, GROUPS, SETTLE, start_vrrpd, vrrpd_state};

/// tshark's `vrrp.checksum.status` values (epan's proto_checksum_enum_e).
const CHECKSUM_BAD: &str = "0";
const CHECKSUM_GOOD: &str = "1";

/// One advert as tshark decodes it.
#[derive(Debug)]
struct Decoded {
    ipv6: bool,
    source: String,
    hop_limit: String,
    version: String,
    kind: String,
    vrid: String,
    priority: String,
    interval: String,
    addresses: String,
    checksum_status: String,
    malformed: String,
    expert: String,
}

const FIELDS: [&str; 14] = [
    "ip.src",
    "ipv6.src",
    "ip.ttl",
    "ipv6.hlim",
    "vrrp.version",
    "vrrp.type",
    "vrrp.virt_rtr_id",
    "vrrp.prio",
    "vrrp.short_adver_int",
    "vrrp.ip_addr",
    "vrrp.ipv6_addr",
    "vrrp.checksum.status",
    "_ws.malformed",
    "_ws.expert.message",
];

/// Captures `count` VRRP packets (IPv4 and IPv6) on router b's eth1 into a pcap in the lab's
/// directory.
fn capture(lab: &Lab, name: &str, count: usize) -> PathBuf {
    let pcap = lab.dir().join(format!("{name}.pcap"));
    let out = lab.exec(
        "b",
        &[
            "timeout",
            "20",
            "tcpdump",
            "-i",
            "eth1",
            "-n",
            "-U",
            "-c",
            &count.to_string(),
            "-w",
            &pcap.to_string_lossy(),
            "ip proto 112 or ip6 proto 112",
        ],
    );
    assert!(
        out.status.success(),
        "tcpdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pcap
}

/// Decodes every packet of `pcap` with tshark, the v3 IPv4 checksum computed as in v2 (message
/// only, RFC 9568) when `as_in_v2`, else with the pseudo-header (RFC 5798).
fn decode(pcap: &Path, as_in_v2: bool) -> Vec<Decoded> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-n")
        .arg("-r")
        .arg(pcap)
        .args([
            "-o",
            &format!(
                "vrrp.v3_checksum_as_in_v2:{}",
                if as_in_v2 { "TRUE" } else { "FALSE" }
            ),
        ])
        .args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("running tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f.len(), FIELDS.len(), "tshark line {line:?}");
            let ipv6 = !f[1].is_empty();
            Decoded {
                ipv6,
                source: if ipv6 { f[1] } else { f[0] }.to_string(),
                hop_limit: if ipv6 { f[3] } else { f[2] }.to_string(),
                version: f[4].to_string(),
                kind: f[5].to_string(),
                vrid: f[6].to_string(),
                priority: f[7].to_string(),
                interval: f[8].to_string(),
                addresses: if ipv6 { f[10] } else { f[9] }.to_string(),
                checksum_status: f[11].to_string(),
                malformed: f[12].to_string(),
                expert: f[13].to_string(),
            }
        })
        .collect()
}

/// Starts vrrpd alone on router a with `checksum`, waits until it is MASTER of lan-v4 and
/// lan-v6, captures 30 of its adverts on b and checks tshark's verdict under both preferences.
fn adverts_decode_cleanly(hint: &str, checksum: Checksum) {
    let lab = Lab::up(hint).expect("lab up");
    start_vrrpd(&lab, 200, checksum);
    lab.wait_until(SETTLE, || {
        GROUPS
            .iter()
            .all(|g| vrrpd_state(&lab, g).as_deref() == Some("MASTER"))
    })
    .expect("vrrpd MASTER");
    let pcap = capture(&lab, "adverts", 30);

    let matching = checksum == Checksum::Rfc9568;
    let good = decode(&pcap, matching);
    assert_eq!(good.len(), 30, "{good:#?}");
    for family_v6 in [false, true] {
        let n = good.iter().filter(|d| d.ipv6 == family_v6).count();
        assert!(n >= 5, "{n} adverts of ipv6={family_v6} in {good:#?}");
    }
    for d in &good {
        let group = GROUPS
            .iter()
            .find(|g| g.ipv6 == d.ipv6)
            .expect("a group of the family");
        assert_eq!(d.version, "3", "{d:?}");
        assert_eq!(d.kind, "1", "advertisement: {d:?}");
        assert_eq!(d.vrid, group.vrid.to_string(), "{d:?}");
        assert_eq!(d.priority, "200", "{d:?}");
        assert_eq!(d.interval, "10", "centiseconds: {d:?}");
        assert_eq!(d.addresses, group.vip.split('/').next().unwrap(), "{d:?}");
        assert_eq!(d.hop_limit, "255", "{d:?}");
        if d.ipv6 {
            assert!(d.source.starts_with("fe80:"), "{d:?}");
        } else {
            assert_eq!(d.source, group.routers[0], "{d:?}");
        }
        assert_eq!(d.checksum_status, CHECKSUM_GOOD, "{checksum:?}: {d:?}");
        assert!(d.malformed.is_empty(), "malformed: {d:?}");
        assert!(d.expert.is_empty(), "expert info: {d:?}");
    }

    // The other reading of the IPv4 checksum: every IPv4 advert is bad, IPv6 ones stay good.
    let other = decode(&pcap, !matching);
    assert_eq!(other.len(), good.len());
    for d in &other {
        if d.ipv6 {
            assert_eq!(d.checksum_status, CHECKSUM_GOOD, "{d:?}");
            assert!(d.expert.is_empty(), "{d:?}");
        } else {
            assert_eq!(
                d.checksum_status, CHECKSUM_BAD,
                "{checksum:?}, other preference: {d:?}"
            );
            assert!(d.expert.contains("Bad checksum"), "{d:?}");
        }
    }
    eprintln!(
        "measured: {checksum:?}: {} adverts ({} IPv4) good under vrrp.v3_checksum_as_in_v2={}, IPv4 ones bad under {}",
        good.len(),
        good.iter().filter(|d| !d.ipv6).count(),
        matching,
        !matching
    );
}

#[test]
fn pseudo_header_adverts_decode_cleanly_in_tshark() {
    adverts_decode_cleanly("cappse", Checksum::PseudoHeader);
}

#[test]
fn rfc9568_adverts_decode_cleanly_in_tshark() {
    adverts_decode_cleanly("capnew", Checksum::Rfc9568);
}
