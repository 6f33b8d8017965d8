//! vrrpd on router a against FRR 8.4's vrrpd (Debian) on router b: VRRPv3, IPv4 and IPv6 (the
//! LAN groups, VRIDs 21 and 22), 100 ms adverts. FRR runs zebra and vrrpd with their own
//! pathspace and macvlans carrying the virtual MACs; its state comes from `vtysh show vrrp json`.
//! Findings are summed up in netns-lab/INTEROP.md. Root only.

mod lab;

use std::time::Duration;

use lab::interop::{
    Checksum, GROUPS, SETTLE, Side, equal_priority_tie_break, failover_and_back, pair, pair_with,
    peer_graceful_stop, rfc9568_findings, start_vrrpd, vrrpd_config_with_v4_source,
    vrrpd_graceful_stop, vrrpd_group, vrrpd_stat, vrrpd_state, wait_master,
};
use lab::peers::{Frr, Peer};

#[test]
fn frr_backup_takes_over_when_vrrpd_is_cut_off_and_vrrpd_wins_back() {
    let p = pair("frhi", 200, 100, Checksum::PseudoHeader, Frr::start);
    failover_and_back(&p, Side::Vrrpd).unwrap();
}

#[test]
fn vrrpd_backup_takes_over_when_frr_is_cut_off_and_frr_wins_back() {
    let p = pair("frlo", 100, 200, Checksum::PseudoHeader, Frr::start);
    failover_and_back(&p, Side::Peer).unwrap();
}

/// FRR counts no priority-0 adverts; its packet log (`debug vrrp packets`) shows them.
#[test]
fn vrrpd_sigterm_hands_over_to_frr_with_priority_zero_and_restart_preempts() {
    let p = pair("frterm", 200, 100, Checksum::PseudoHeader, Frr::start);
    vrrpd_graceful_stop(&p).unwrap();
    let log = p.peer.log();
    for g in &GROUPS {
        let zero = log
            .lines()
            .filter(|l| {
                l.contains(&format!("[VRID {}]", g.vrid))
                    && l.contains("Received VRRP Advertisement")
                    && l.contains("priority 0,")
            })
            .count();
        eprintln!(
            "measured: FRR {} logged {zero} priority-0 adverts received",
            g.name
        );
        assert!(
            zero >= 1,
            "FRR logged vrrpd's priority-0 advert on {}",
            g.name
        );
    }
    start_vrrpd(&p.lab, 200, Checksum::PseudoHeader);
    let took = wait_master(&p, Side::Vrrpd, SETTLE).unwrap();
    eprintln!("measured: restarted vrrpd preempted FRR after {took:?}");
}

/// `no vrrp N` on FRR's master.
#[test]
fn frr_no_vrrp_hands_over_to_vrrpd_with_priority_zero() {
    let p = pair("frnov", 100, 200, Checksum::PseudoHeader, Frr::start);
    peer_graceful_stop(&p).unwrap();
}

/// Stopping FRR's vrrpd daemon (SIGTERM) on the master.
#[test]
fn frr_daemon_stop_hands_over_to_vrrpd_with_priority_zero() {
    let p = pair("frkill", 100, 200, Checksum::PseudoHeader, Frr::start);
    wait_master(&p, Side::Peer, SETTLE).unwrap();
    p.peer.sigterm_vrrpd();
    let took = p
        .lab
        .wait_until(SETTLE, || {
            GROUPS
                .iter()
                .all(|g| vrrpd_state(&p.lab, g).as_deref() == Some("MASTER"))
        })
        .unwrap();
    assert!(
        p.peer.wait_vrrpd_exit(Duration::from_secs(5)),
        "FRR vrrpd exits"
    );
    for g in &GROUPS {
        let n = vrrpd_stat(&p.lab, g, "priority-zero-rx");
        eprintln!(
            "measured: vrrpd took over {} {took:?} after FRR's SIGTERM; priority-zero-rx {n}",
            g.name
        );
        assert!(n >= 1, "{}", vrrpd_group(&p.lab, g).unwrap());
    }
}

/// FRR 8.4 computes the IPv4 VRRPv3 checksum over the pseudo-header only: it drops vrrpd's
/// RFC 9568 adverts (logged with `debug vrrp packets` as "Bad VRRP checksum", not counted in its
/// stats), so on IPv4 it becomes MASTER beside vrrpd. IPv6 is unaffected. vrrpd accepts FRR's
/// adverts and counts them as pseudo-header.
#[test]
fn frr_drops_rfc9568_ipv4_checksums() {
    let p = pair("frnew", 200, 100, Checksum::Rfc9568, Frr::start);
    rfc9568_findings(&p)
        .unwrap()
        .assert_peer_drops_rfc9568_ipv4();
}

#[test]
fn equal_priority_tie_break_agrees_with_frr() {
    let p = pair("frtie", 100, 100, Checksum::PseudoHeader, Frr::start);
    let winners = equal_priority_tie_break(&p).unwrap();
    // IPv4: FRR advertises from router b's 10.76.2.3, above vrrpd's 10.76.2.2.
    assert_eq!(winners[0].1, Side::Peer);
}

/// The other way round on IPv4: vrrpd advertises from 10.76.2.4 (`hello-source-address`),
/// above the peer's 10.76.2.3.
#[test]
fn equal_priority_tie_break_agrees_with_frr_when_vrrpd_has_the_higher_address() {
    let p = pair_with(
        "frtieb",
        |lab| vrrpd_config_with_v4_source(lab, "10.76.2.4"),
        100,
        Frr::start,
    );
    let winners = equal_priority_tie_break(&p).unwrap();
    assert_eq!(winners[0].1, Side::Vrrpd);
}
