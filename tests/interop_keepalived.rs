//! vrrpd on router a against Debian's keepalived (2.2.7) on router b: VRRPv3, IPv4 and IPv6
//! (the LAN groups, VRIDs 21 and 22), 100 ms adverts. keepalived's state comes from its own
//! JSON dump. Findings are summed up in netns-lab/INTEROP.md. Root only.

mod lab;

use std::time::Duration;

use lab::interop::{
    Checksum, GROUPS, SETTLE, Side, equal_priority_tie_break, failover_and_back, pair, pair_with,
    peer_graceful_stop, rfc9568_findings, start_vrrpd, vrrpd_config_with_v4_source,
    vrrpd_graceful_stop, wait_master,
};
use lab::peers::{Keepalived, Peer};

#[test]
fn keepalived_backup_takes_over_when_vrrpd_is_cut_off_and_vrrpd_wins_back() {
    let p = pair("kahi", 200, 100, Checksum::PseudoHeader, Keepalived::start);
    failover_and_back(&p, Side::Vrrpd).unwrap();
}

#[test]
fn vrrpd_backup_takes_over_when_keepalived_is_cut_off_and_keepalived_wins_back() {
    let p = pair("kalo", 100, 200, Checksum::PseudoHeader, Keepalived::start);
    failover_and_back(&p, Side::Peer).unwrap();
}

#[test]
fn vrrpd_sigterm_hands_over_to_keepalived_with_priority_zero_and_restart_preempts() {
    let p = pair(
        "katerm",
        200,
        100,
        Checksum::PseudoHeader,
        Keepalived::start,
    );
    vrrpd_graceful_stop(&p).unwrap();
    for g in &GROUPS {
        let inst = p.peer.instance(g).unwrap();
        eprintln!(
            "measured: keepalived {}: pri_zero_rcvd {:?}",
            g.name, inst.priority_zero_rx
        );
        assert!(
            inst.priority_zero_rx.unwrap() >= 1,
            "keepalived counted vrrpd's priority-0 advert on {}: {inst:?}",
            g.name
        );
    }
    assert!(
        p.peer
            .log()
            .contains("Backup received priority 0 advertisement")
    );
    // vrrpd comes back at the higher priority: it starts as BACKUP and preempts keepalived.
    start_vrrpd(&p.lab, 200, Checksum::PseudoHeader);
    let took = wait_master(&p, Side::Vrrpd, SETTLE).unwrap();
    eprintln!("measured: restarted vrrpd preempted keepalived after {took:?}");
}

#[test]
fn keepalived_sigterm_hands_over_to_vrrpd_with_priority_zero() {
    let p = pair(
        "kastop",
        100,
        200,
        Checksum::PseudoHeader,
        Keepalived::start,
    );
    peer_graceful_stop(&p).unwrap();
    assert!(p.peer.wait_exit(Duration::from_secs(5)), "keepalived exits");
    let log = p.peer.log();
    for g in &GROUPS {
        let family = if g.ipv6 { "v6" } else { "v4" };
        let line = format!("(vrid{}_{family}) sent 0 priority", g.vrid);
        assert!(log.contains(&line), "keepalived logged {line:?}");
    }
}

/// keepalived 2.2.7 computes the IPv4 VRRPv3 checksum over the pseudo-header only: it drops
/// vrrpd's RFC 9568 adverts ("Invalid VRRPv3 checksum", not counted in its JSON stats), so on
/// IPv4 it becomes MASTER beside vrrpd. IPv6 (always with the pseudo-header) is unaffected.
/// vrrpd accepts keepalived's adverts and counts them as pseudo-header.
#[test]
fn keepalived_drops_rfc9568_ipv4_checksums() {
    let p = pair("kanew", 200, 100, Checksum::Rfc9568, Keepalived::start);
    rfc9568_findings(&p)
        .unwrap()
        .assert_peer_drops_rfc9568_ipv4();
}

#[test]
fn equal_priority_tie_break_agrees_with_keepalived() {
    let p = pair("katie", 100, 100, Checksum::PseudoHeader, Keepalived::start);
    let winners = equal_priority_tie_break(&p).unwrap();
    // IPv4: keepalived's 10.76.2.3 is above vrrpd's 10.76.2.2.
    assert_eq!(winners[0].1, Side::Peer);
}

/// The other way round on IPv4: vrrpd advertises from 10.76.2.4 (`hello-source-address`),
/// above the peer's 10.76.2.3.
#[test]
fn equal_priority_tie_break_agrees_with_keepalived_when_vrrpd_has_the_higher_address() {
    let p = pair_with(
        "katieb",
        |lab| vrrpd_config_with_v4_source(lab, "10.76.2.4"),
        100,
        Keepalived::start,
    );
    let winners = equal_priority_tie_break(&p).unwrap();
    assert_eq!(winners[0].1, Side::Vrrpd);
}
