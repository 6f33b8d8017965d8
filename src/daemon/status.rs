//! Snapshots of the daemon for the control socket.

use std::time::SystemTime;

use crate::control::{GroupStats, GroupStatus, PeerStatus};

use super::Daemon;

pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn groups(d: &Daemon) -> Vec<GroupStatus> {
    d.groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let r = d.engine.router(i);
            let p = r.params();
            let s = r.stats();
            GroupStatus {
                name: g.config.name.clone(),
                interface: g.config.interface.clone(),
                vrid: p.vrid,
                family: p.family.to_string(),
                state: r.state().as_str().to_string(),
                priority: p.priority,
                effective_priority: r.effective_priority(),
                master_address: r.master_address().map(|a| a.to_string()),
                advertise_interval_ms: p.advertise_interval.as_millis(),
                master_advertise_interval_ms: r.master_adver_interval().as_millis(),
                addresses: g.config.addresses.iter().map(|a| a.to_string()).collect(),
                sync_group: g.config.sync_group.clone(),
                transitions: r.transitions(),
                last_transition: rfc3339(g.last_transition.unwrap_or(d.started_at)),
                last_transition_reason: g.last_reason.clone(),
                preempt: p.preempt,
                accept: p.accept,
                master_down_interval_ms: r.master_down_interval().as_secs_f64() * 1000.0,
                peers: s
                    .peers
                    .iter()
                    .map(|(addr, ps)| PeerStatus {
                        address: addr.to_string(),
                        last_priority: ps.last_priority,
                        adverts: ps.adverts,
                        checksum_pseudo_header: ps.pseudo_header_checksum,
                        checksum_rfc9568: ps.rfc9568_checksum,
                    })
                    .collect(),
                stats: GroupStats {
                    adverts_rx: s.adverts_rx,
                    adverts_tx: s.adverts_tx,
                    priority_zero_rx: s.priority_zero_rx,
                    priority_zero_tx: s.priority_zero_tx,
                    invalid_rx: s.invalid_total(),
                    invalid_rx_by_reason: s
                        .invalid_rx
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect(),
                    address_mismatch_rx: s.address_mismatch_rx,
                    interval_mismatch_rx: s.interval_mismatch_rx,
                },
            }
        })
        .collect()
}
