//! Interop scenarios run against each independent peer ([`super::peers`]): vrrpd on router a,
//! the peer on router b, the LAN groups `lan-v4` (VRID 21) and `lan-v6` (VRID 22), 100 ms
//! adverts. Every scenario reads the peer's state from the peer itself and vrrpd's from
//! `show groups --json`, and prints what it measured (`measured:` lines, see `--nocapture`).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;

use super::peers::{Peer, PeerConfig, PeerInstance};
use super::{Daemon, Lab, RouterConfig, STD_GROUPS, StdGroup};

/// The groups both sides run: `lan-v4` and `lan-v6`.
pub const GROUPS: [StdGroup; 2] = [STD_GROUPS[0], STD_GROUPS[1]];
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Bound for anything that should happen within a few Master_Down_Intervals (0.36 s at 100 ms),
/// generous for a loaded 2-core machine.
pub const SETTLE: Duration = Duration::from_secs(10);

/// vrrpd on router a, the peer on router b. Fields drop in order: the peer is stopped before
/// the lab goes.
pub struct Pair<P: Peer> {
    pub peer: P,
    pub vrrpd: Daemon,
    pub lab: Lab,
}

/// Which side of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Vrrpd,
    Peer,
}

/// IPv4 checksum form vrrpd sends (`daemon.checksum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    PseudoHeader,
    Rfc9568,
}

/// vrrpd's config on router a: the two LAN groups, independent (no sync group), 100 ms.
pub fn vrrpd_config(lab: &Lab, priority: u8, checksum: Checksum) -> String {
    let cfg = RouterConfig::new("a", priority)
        .interval(INTERVAL)
        .groups(&["lan-v4", "lan-v6"])
        .no_sync_group();
    let text = lab.router_config(&cfg);
    match checksum {
        Checksum::PseudoHeader => text,
        Checksum::Rfc9568 => text.replacen("[daemon]\n", "[daemon]\nchecksum = \"rfc9568\"\n", 1),
    }
}

pub fn start_vrrpd(lab: &Lab, priority: u8, checksum: Checksum) -> Daemon {
    lab.start_vrrpd("a", &vrrpd_config(lab, priority, checksum))
}

/// Builds a lab, starts vrrpd on a and the peer (by `start`) on b.
pub fn pair<P: Peer>(
    hint: &str,
    vrrpd_priority: u8,
    peer_priority: u8,
    checksum: Checksum,
    start: impl FnOnce(&Lab, &str, &PeerConfig) -> Result<P>,
) -> Pair<P> {
    pair_with(
        hint,
        |lab| vrrpd_config(lab, vrrpd_priority, checksum),
        peer_priority,
        start,
    )
}

/// [`pair`] with vrrpd's config text made by `vrrpd_text` once the lab is up (it may also
/// prepare router a).
pub fn pair_with<P: Peer>(
    hint: &str,
    vrrpd_text: impl FnOnce(&Lab) -> String,
    peer_priority: u8,
    start: impl FnOnce(&Lab, &str, &PeerConfig) -> Result<P>,
) -> Pair<P> {
    let lab = Lab::up(hint).expect("lab up");
    let text = vrrpd_text(&lab);
    let vrrpd = lab.start_vrrpd("a", &text);
    let peer = start(
        &lab,
        "b",
        &PeerConfig::new(&GROUPS, peer_priority, INTERVAL),
    )
    .expect("starting the peer");
    Pair { peer, vrrpd, lab }
}

/// vrrpd's config (priority 100) with lan-v4's adverts sent from `source`, which is added to
/// router a's eth1 (as a secondary address).
pub fn vrrpd_config_with_v4_source(lab: &Lab, source: &str) -> String {
    lab.exec_ok(
        "a",
        &["ip", "addr", "add", &format!("{source}/24"), "dev", "eth1"],
    );
    vrrpd_config(lab, 100, Checksum::PseudoHeader).replacen(
        "[group.lan-v4]\n",
        &format!("[group.lan-v4]\nhello-source-address = \"{source}\"\n"),
        1,
    )
}

/// vrrpd's group object for `group`, from `show groups --json`.
pub fn vrrpd_group(lab: &Lab, group: &StdGroup) -> Result<Value> {
    let all = lab.try_show_groups("a")?;
    all.as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == group.name)
        .cloned()
        .ok_or_else(|| anyhow!("vrrpd has no group {}", group.name))
}

pub fn vrrpd_state(lab: &Lab, group: &StdGroup) -> Option<String> {
    vrrpd_group(lab, group)
        .ok()
        .and_then(|g| g["state"].as_str().map(str::to_string))
}

/// True when, for every group, vrrpd is in `vrrpd` and the peer (asked itself) in `peer`.
pub fn roles<P: Peer>(pair: &Pair<P>, vrrpd: &str, peer: &str) -> bool {
    GROUPS.iter().all(|g| {
        vrrpd_state(&pair.lab, g).as_deref() == Some(vrrpd)
            && pair.peer.state(g).as_deref() == Some(peer)
    })
}

/// Waits until every group has `master` as MASTER and the other side as BACKUP.
pub fn wait_master<P: Peer>(pair: &Pair<P>, master: Side, timeout: Duration) -> Result<Duration> {
    let (v, p) = match master {
        Side::Vrrpd => ("MASTER", "BACKUP"),
        Side::Peer => ("BACKUP", "MASTER"),
    };
    pair.lab
        .wait_until(timeout, || roles(pair, v, p))
        .map_err(|e| anyhow!("{e}: wanted {master:?} MASTER; {}", describe(pair)))
}

/// Both sides' view of every group, for failure messages.
pub fn describe<P: Peer>(pair: &Pair<P>) -> String {
    let mut s = String::new();
    for g in &GROUPS {
        s.push_str(&format!(
            "[{}: vrrpd {:?}, {} {:?}] ",
            g.name,
            vrrpd_state(&pair.lab, g),
            pair.peer.kind(),
            pair.peer.instance(g)
        ));
    }
    s
}

/// The router of a side.
fn router(side: Side) -> &'static str {
    match side {
        Side::Vrrpd => "a",
        Side::Peer => "b",
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Vrrpd => Side::Peer,
        Side::Peer => Side::Vrrpd,
    }
}

/// The state of `group` on `side`, read from that side.
fn state_of<P: Peer>(pair: &Pair<P>, side: Side, group: &StdGroup) -> Option<String> {
    match side {
        Side::Vrrpd => vrrpd_state(&pair.lab, group),
        Side::Peer => pair.peer.state(group),
    }
}

/// The source address of the peer's adverts for `group`: what it reports, else its router's
/// address on the interface (IPv4: the lab address, IPv6: the link-local).
pub fn peer_source<P: Peer>(pair: &Pair<P>, group: &StdGroup) -> Result<IpAddr> {
    let reported = pair
        .peer
        .instance(group)?
        .primary_address
        .filter(|a| !a.is_empty() && a != "::");
    if let Some(text) = reported {
        return text
            .parse()
            .with_context(|| format!("peer address {text:?}"));
    }
    // Not reported (FRR's IPv6 shows "::"): the one source vrrpd heard adverts from. FRR sends
    // those from its macvlan's random link-local, not from the interface's.
    let heard: Vec<IpAddr> = vrrpd_group(&pair.lab, group)?["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["address"].as_str()?.parse().ok())
        .collect();
    if let [only] = heard[..] {
        return Ok(only);
    }
    let text = interface_primary(&pair.lab, "b", group)?;
    text.parse()
        .with_context(|| format!("peer address {text:?}"))
}

/// `router`'s primary address on `group`'s interface (what a VRRP router advertises from):
/// its IPv4 lab address, or its IPv6 link-local.
pub fn interface_primary(lab: &Lab, router: &str, group: &StdGroup) -> Result<String> {
    let want_v6 = group.ipv6;
    lab.addresses(router, group.interface)
        .into_iter()
        .map(|a| a.split('/').next().unwrap_or_default().to_string())
        .find(|a| {
            if want_v6 {
                a.starts_with("fe80:")
            } else {
                a.parse::<std::net::Ipv4Addr>().is_ok()
            }
        })
        .ok_or_else(|| anyhow!("{router} has no primary address on {}", group.interface))
}

/// vrrpd's per-peer checksum counters for the adverts `group` received from `source`:
/// (pseudo-header, rfc9568).
pub fn vrrpd_checksum_forms(lab: &Lab, group: &StdGroup, source: IpAddr) -> Result<(u64, u64)> {
    let g = vrrpd_group(lab, group)?;
    let peer = g["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["address"].as_str().and_then(|a| a.parse::<IpAddr>().ok()) == Some(source))
        .ok_or_else(|| anyhow!("vrrpd's {} saw no adverts from {source}: {g}", group.name))?;
    Ok((
        peer["checksum-pseudo-header"].as_u64().unwrap_or_default(),
        peer["checksum-rfc9568"].as_u64().unwrap_or_default(),
    ))
}

pub fn vrrpd_stat(lab: &Lab, group: &StdGroup, key: &str) -> u64 {
    vrrpd_group(lab, group)
        .map(|g| g["stats"][key].as_u64().unwrap_or_default())
        .unwrap_or_default()
}

/// What a failover round measured.
#[derive(Debug)]
pub struct Failover {
    /// From cutting the master's router off until the other side was MASTER on every group.
    pub takeover: Duration,
    /// From restoring it until it was MASTER again and the other side BACKUP on every group.
    pub back: Duration,
}

/// `high` (vrrpd or the peer) has the higher priority: it is MASTER, the other BACKUP; cut its
/// router off the LAN: the other side takes over; restore: `high` is MASTER again. Both sides'
/// states are read from themselves. Afterwards every advert the two exchanged was accepted.
pub fn failover_and_back<P: Peer>(pair: &Pair<P>, high: Side) -> Result<Failover> {
    let low = other(high);
    wait_master(pair, high, SETTLE).context("initial election")?;
    pair.lab.cut(router(high), "lan");
    let takeover = pair
        .lab
        .wait_until(SETTLE, || {
            GROUPS
                .iter()
                .all(|g| state_of(pair, low, g).as_deref() == Some("MASTER"))
        })
        .map_err(|e| anyhow!("{low:?} did not take over: {e}; {}", describe(pair)))?;
    pair.lab.restore(router(high), "lan");
    let back = wait_master(pair, high, SETTLE).context("after restore")?;
    let m = Failover { takeover, back };
    eprintln!(
        "measured: {} with {high:?} at the higher priority: takeover by {low:?} {:?}, back to {high:?} {:?}",
        pair.peer.kind(),
        m.takeover,
        m.back
    );
    check_clean_exchange(pair, low)?;
    Ok(m)
}

/// Every advert that crossed was accepted, and the side that was BACKUP (`low`) heard the
/// master: the peer dropped no advert for its checksum and, as BACKUP, received adverts on each
/// instance; vrrpd counted no invalid packet and, as BACKUP, received the peer's, IPv4 ones in
/// the pseudo-header form. (The master that wins back a split brain may never hear the other
/// side, which resigns on the master's first advert.)
pub fn check_clean_exchange<P: Peer>(pair: &Pair<P>, low: Side) -> Result<()> {
    for g in &GROUPS {
        let inst = pair.peer.instance(g)?;
        ensure!(
            low == Side::Vrrpd || inst.adverts_rx > 0,
            "{} received no adverts: {inst:?}",
            pair.peer.kind()
        );
        let source = peer_source(pair, g)?;
        let forms = vrrpd_checksum_forms(&pair.lab, g, source);
        eprintln!(
            "measured: {} {}: peer rx {} tx {}; vrrpd from {source} (pseudo-header, rfc9568): {forms:?}",
            pair.peer.kind(),
            g.name,
            inst.adverts_rx,
            inst.adverts_tx
        );
        match forms {
            Ok((pseudo, rfc9568)) => ensure!(
                pseudo > 0 && rfc9568 == 0,
                "{}: checksum forms {pseudo}/{rfc9568}",
                g.name
            ),
            Err(e) if low == Side::Vrrpd => return Err(e),
            Err(_) => {}
        }
        ensure!(
            vrrpd_stat(&pair.lab, g, "invalid-rx") == 0
                && vrrpd_stat(&pair.lab, g, "address-mismatch-rx") == 0,
            "vrrpd dropped packets or saw other addresses: {}",
            vrrpd_group(&pair.lab, g)?
        );
    }
    ensure!(
        pair.peer.checksum_drops() == 0,
        "{} logged checksum drops",
        pair.peer.kind()
    );
    Ok(())
}

/// vrrpd (higher priority, MASTER) stops on SIGTERM: the peer takes over on its priority-0
/// advert; returns how long that took. `priority_zero` checks the peer saw it (keepalived
/// counts it; FRR is checked by its log).
pub fn vrrpd_graceful_stop<P: Peer>(pair: &Pair<P>) -> Result<Duration> {
    wait_master(pair, Side::Vrrpd, SETTLE).context("initial election")?;
    pair.vrrpd.sigterm();
    let took = pair
        .lab
        .wait_until(SETTLE, || {
            GROUPS
                .iter()
                .all(|g| pair.peer.state(g).as_deref() == Some("MASTER"))
        })
        .map_err(|e| {
            anyhow!(
                "{} did not take over: {e}; {}",
                pair.peer.kind(),
                describe(pair)
            )
        })?;
    let status = pair
        .vrrpd
        .wait_exit(Duration::from_secs(5))
        .ok_or_else(|| anyhow!("vrrpd did not exit after SIGTERM"))?;
    ensure!(status.success(), "vrrpd exit status {status}");
    eprintln!(
        "measured: {} took over {took:?} after vrrpd's SIGTERM",
        pair.peer.kind()
    );
    Ok(took)
}

/// The peer (higher priority, MASTER) stops the clean way: vrrpd takes over on its priority-0
/// advert, which vrrpd counts in `priority-zero-rx` on every group.
pub fn peer_graceful_stop<P: Peer>(pair: &Pair<P>) -> Result<Duration> {
    wait_master(pair, Side::Peer, SETTLE).context("initial election")?;
    for g in &GROUPS {
        ensure!(vrrpd_stat(&pair.lab, g, "priority-zero-rx") == 0);
    }
    pair.peer.stop_gracefully();
    let took = pair
        .lab
        .wait_until(SETTLE, || {
            GROUPS
                .iter()
                .all(|g| vrrpd_state(&pair.lab, g).as_deref() == Some("MASTER"))
        })
        .map_err(|e| anyhow!("vrrpd did not take over: {e}; {}", describe(pair)))?;
    for g in &GROUPS {
        let n = vrrpd_stat(&pair.lab, g, "priority-zero-rx");
        eprintln!(
            "measured: vrrpd took over {} {took:?} after the {} stop; priority-zero-rx {n}",
            g.name,
            pair.peer.kind()
        );
        ensure!(
            n >= 1,
            "vrrpd's {} counted no priority-0 advert: {}",
            g.name,
            vrrpd_group(&pair.lab, g)?
        );
    }
    Ok(took)
}

/// What happened with vrrpd sending RFC 9568 checksums at the higher priority.
#[derive(Debug)]
pub struct Rfc9568Findings {
    /// The peer's instance for lan-v4 and lan-v6 after 2 s.
    pub peer_v4: PeerInstance,
    pub peer_v6: PeerInstance,
    /// Adverts the peer logged as dropped for their checksum.
    pub peer_checksum_drops: usize,
    /// vrrpd's states for lan-v4 and lan-v6.
    pub vrrpd_v4: String,
    pub vrrpd_v6: String,
    /// vrrpd's counters for what it received from the peer on lan-v4: (pseudo-header, rfc9568).
    pub vrrpd_rx_forms_v4: (u64, u64),
}

impl Rfc9568Findings {
    /// What keepalived 2.2.7 and FRR 8.4 both do: drop every RFC 9568-form IPv4 advert (and go
    /// MASTER beside vrrpd on IPv4), keep IPv6, and send pseudo-header checksums vrrpd accepts.
    pub fn assert_peer_drops_rfc9568_ipv4(&self) {
        let f = self;
        assert!(f.peer_checksum_drops >= 10, "{f:#?}");
        assert_eq!(f.peer_v4.adverts_rx, 0, "{f:#?}");
        assert_eq!(f.peer_v4.state, "MASTER", "{f:#?}");
        assert_eq!(f.peer_v6.state, "BACKUP", "{f:#?}");
        assert!(f.peer_v6.adverts_rx > 0, "{f:#?}");
        assert_eq!(
            (f.vrrpd_v4.as_str(), f.vrrpd_v6.as_str()),
            ("MASTER", "MASTER")
        );
        assert!(
            f.vrrpd_rx_forms_v4.0 > 0 && f.vrrpd_rx_forms_v4.1 == 0,
            "{f:#?}"
        );
    }
}

/// vrrpd (priority 200) sends `rfc9568` IPv4 checksums; the peer runs at 100. Waits until
/// vrrpd is MASTER on both groups and the peer BACKUP on lan-v6 (where the form does not
/// matter), lets 2 s of adverts pass, and reports what each side made of the other.
pub fn rfc9568_findings<P: Peer>(pair: &Pair<P>) -> Result<Rfc9568Findings> {
    let v6 = &GROUPS[1];
    pair.lab
        .wait_until(SETTLE, || {
            GROUPS
                .iter()
                .all(|g| vrrpd_state(&pair.lab, g).as_deref() == Some("MASTER"))
                && pair.peer.state(v6).as_deref() == Some("BACKUP")
        })
        .map_err(|e| anyhow!("{e}: {}", describe(pair)))?;
    std::thread::sleep(Duration::from_secs(2));
    let v4 = &GROUPS[0];
    let source = peer_source(pair, v4)?;
    let f = Rfc9568Findings {
        peer_v4: pair.peer.instance(v4)?,
        peer_v6: pair.peer.instance(v6)?,
        peer_checksum_drops: pair.peer.checksum_drops(),
        vrrpd_v4: vrrpd_state(&pair.lab, v4).unwrap_or_default(),
        vrrpd_v6: vrrpd_state(&pair.lab, v6).unwrap_or_default(),
        vrrpd_rx_forms_v4: vrrpd_checksum_forms(&pair.lab, v4, source)?,
    };
    eprintln!(
        "measured: {} with rfc9568 checksums: {f:#?}",
        pair.peer.kind()
    );
    Ok(f)
}

/// Equal priorities: make both sides MASTER (cut vrrpd's router off), restore, and check that
/// on every group the side with the higher primary address (RFC 5798 6.4.3) stays MASTER and
/// the other becomes BACKUP, as both sides report. Returns the winner per group.
pub fn equal_priority_tie_break<P: Peer>(pair: &Pair<P>) -> Result<Vec<(StdGroup, Side)>> {
    // Whoever wins the start-up race, the tie-break only runs between two masters.
    pair.lab
        .wait_until(SETTLE, || {
            GROUPS.iter().all(|g| {
                let s = (vrrpd_state(&pair.lab, g), pair.peer.state(g));
                matches!(
                    (s.0.as_deref(), s.1.as_deref()),
                    (Some("MASTER"), Some("BACKUP")) | (Some("BACKUP"), Some("MASTER"))
                )
            })
        })
        .map_err(|e| anyhow!("no election: {e}; {}", describe(pair)))?;
    pair.lab.cut("a", "lan");
    pair.lab
        .wait_until(SETTLE, || roles(pair, "MASTER", "MASTER"))
        .map_err(|e| anyhow!("no split brain: {e}; {}", describe(pair)))?;
    // As MASTER, vrrpd reports its own primary address as the master's.
    let mut ours = Vec::new();
    for g in &GROUPS {
        let seen = vrrpd_group(&pair.lab, g)?["master-address"].clone();
        let addr: IpAddr = seen
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("vrrpd's {} master-address {seen}", g.name))?;
        ours.push(addr);
    }
    pair.lab.restore("a", "lan");

    let mut winners = Vec::new();
    for (g, ours) in GROUPS.iter().zip(ours) {
        let theirs = peer_source(pair, g)?;
        let winner = if theirs > ours {
            Side::Peer
        } else {
            Side::Vrrpd
        };
        let took = pair
            .lab
            .wait_until(SETTLE, || {
                state_of(pair, winner, g).as_deref() == Some("MASTER")
                    && state_of(pair, other(winner), g).as_deref() == Some("BACKUP")
            })
            .map_err(|e| {
                anyhow!(
                    "{}: vrrpd {ours}, {} {theirs}: expected {winner:?} to win: {e}; {}",
                    g.name,
                    pair.peer.kind(),
                    describe(pair)
                )
            })?;
        eprintln!(
            "measured: {} tie-break on {}: vrrpd {ours} vs {theirs}: {winner:?} MASTER after {took:?}",
            pair.peer.kind(),
            g.name
        );
        // vrrpd's view of the master when it lost.
        if winner == Side::Peer {
            let seen = vrrpd_group(&pair.lab, g)?["master-address"].clone();
            if seen.as_str().and_then(|s| s.parse::<IpAddr>().ok()) != Some(theirs) {
                bail!("vrrpd's {} master-address is {seen}, not {theirs}", g.name);
            }
        }
        winners.push((*g, winner));
    }
    // And it stays that way: no flapping over ten more Master_Down_Intervals.
    std::thread::sleep(Duration::from_secs(2));
    for (g, winner) in &winners {
        ensure!(
            state_of(pair, *winner, g).as_deref() == Some("MASTER")
                && state_of(pair, other(*winner), g).as_deref() == Some("BACKUP"),
            "{} changed after the tie-break: {}",
            g.name,
            describe(pair)
        );
    }
    Ok(winners)
}
