//! BGP alignment in network namespaces: a provider (BIRD 2, AS 64515, 169.254.169.254 on its
//! `lo`, eBGP multihop 2 with TCP-MD5) and both routers announcing the floating /32 and /128
//! from `lo` through BIRD 2 or FRR, with vrrpd setting the prepend. The provider's best path
//! must point at the VRRP master: at start, after the master is lost, after preemption, and
//! after the master's vrrpd is stopped (before or with the VIPs). Root only.

mod lab;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::bgp::{self, FLOAT4, FLOAT6, LOCAL_AS, Provider, RouterBgp, Speaker, poll};
use lab::{Lab, RouterConfig};

fn has_wan_vip(lab: &Lab, r: &str) -> bool {
    lab.addresses(r, "eth2").iter().any(|a| a == "10.76.4.1/24")
}

fn all_in(lab: &Lab, r: &str, state: &str) -> bool {
    lab.group_states(r)
        .is_ok_and(|s| s.len() == 4 && s.values().all(|v| v == state))
}

fn show_bgp(lab: &Lab, r: &str) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns(r)])
        .arg(lab::vrrpd_bin())
        .args(["show", "bgp", "--json", "-s"])
        .arg(lab.socket_path(r))
        .stdin(Stdio::null())
        .output()
        .expect("vrrpd show bgp");
    assert!(
        out.status.success(),
        "show bgp on {r}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("show bgp JSON")
}

/// The prepend `r`'s vrrpd reports as applied, once it is in sync.
fn applied(lab: &Lab, r: &str) -> Option<u64> {
    let s = show_bgp(lab, r);
    if s["in-sync"] == true {
        s["applied-prepend"].as_u64()
    } else {
        None
    }
}

/// The provider's view of router `r`'s AS path for both floating addresses: how many times
/// our AS appears (1 + prepends), when both agree.
fn path_len(p: &Provider, r: &str) -> Option<usize> {
    let count = |addr| {
        p.as_path(addr, r)
            .map(|path| path.split_whitespace().filter(|a| *a == LOCAL_AS.to_string()).count())
    };
    let v4 = count(FLOAT4)?;
    (count(FLOAT6)? == v4).then_some(v4)
}

struct Setup {
    lab: Lab,
    provider: Provider,
    speakers: [RouterBgp; 2],
}

fn setup(hint: &str, speaker: Speaker) -> Setup {
    let lab = Lab::up(hint).expect("lab up");
    let provider = Provider::up(&lab);
    let speakers = ["a", "b"].map(|r| bgp::start_speaker(&lab, r, speaker, bgp::prepends(r).1));
    lab.wait_until(Duration::from_secs(30), || provider.sessions_up())
        .unwrap_or_else(|_| {
            panic!(
                "BGP sessions (multihop, TCP-MD5) not established:\n{}",
                bgp::birdc(&provider.socket, &["show", "protocols", "all"])
            )
        });
    Setup {
        lab,
        provider,
        speakers,
    }
}

fn best_is(p: &Provider, r: &str, timeout: Duration) -> Option<Instant> {
    poll(timeout, || (p.best_both().as_deref() == Some(r)).then_some(())).map(|(_, t)| t)
}

fn scenario(hint: &str, speaker: Speaker) {
    let Setup {
        lab,
        provider: p,
        speakers,
    } = setup(hint, speaker);

    // Both announce as backups before vrrpd runs: a 3, b 2, so b is the strict winner.
    assert!(
        best_is(&p, "b", Duration::from_secs(15)).is_some(),
        "both backup: b's shorter path wins; provider sees {:?}",
        p.best_both()
    );

    let cfg = |r: &str, prio| {
        RouterConfig::new(r, prio).extra(&speakers[usize::from(r == "b")].vrrpd_section(r))
    };
    let da = lab.start_router(&cfg("a", 200));
    let _db = lab.start_router(&cfg("b", 100));
    lab.wait_until(Duration::from_secs(15), || {
        all_in(&lab, "a", "MASTER") && all_in(&lab, "b", "BACKUP")
    })
    .expect("a MASTER, b BACKUP");
    assert!(
        best_is(&p, "a", Duration::from_secs(15)).is_some(),
        "the provider prefers the master a; sees {:?}",
        p.best_both()
    );
    lab.wait_until(Duration::from_secs(10), || {
        applied(&lab, "a") == Some(0) && applied(&lab, "b") == Some(2)
    })
    .unwrap_or_else(|_| panic!("show bgp: a {} b {}", show_bgp(&lab, "a"), show_bgp(&lab, "b")));
    // The provider sees exactly the configured depths: our AS once plus the prepends.
    assert_eq!(path_len(&p, "a"), Some(1));
    assert_eq!(path_len(&p, "b"), Some(3));
    let a_status = show_bgp(&lab, "a");
    assert_eq!(a_status["driver"], if speaker == Speaker::Bird { "bird" } else { "frr" });
    assert!(a_status["applied-at"].is_string(), "{a_status}");
    assert_eq!(a_status["last-error"], serde_json::Value::Null, "{a_status}");

    // Router loss: a is cut off everywhere (its BGP session dies with the hold timer).
    lab.cut("a", "all");
    lab.wait_until(Duration::from_secs(10), || all_in(&lab, "b", "MASTER"))
        .expect("b takes over");
    assert!(
        best_is(&p, "b", Duration::from_secs(20)).is_some(),
        "after losing a the provider prefers b; sees {:?}",
        p.best_both()
    );
    assert_eq!(applied(&lab, "b"), Some(1));

    // a comes back and preempts: the provider goes back to a.
    lab.restore("a", "all");
    lab.wait_until(Duration::from_secs(15), || {
        all_in(&lab, "a", "MASTER") && all_in(&lab, "b", "BACKUP")
    })
    .expect("a preempts");
    assert!(
        best_is(&p, "a", Duration::from_secs(30)).is_some(),
        "after preemption the provider prefers a again; sees {:?}",
        p.best_both()
    );
    lab.wait_until(Duration::from_secs(10), || applied(&lab, "b") == Some(2))
        .expect("b back to its backup prepend");

    // Planned stop of the master: the prepend goes out first; the path moves before or with
    // the VIPs.
    let t0 = Instant::now();
    da.sigterm();
    let mut t_best_b = None;
    let mut t_a_gone = None;
    let mut t_b_vip = None;
    let end = t0 + Duration::from_secs(15);
    while Instant::now() < end && (t_best_b.is_none() || t_a_gone.is_none() || t_b_vip.is_none())
    {
        let now = Instant::now();
        if t_best_b.is_none() && p.best_both().as_deref() == Some("b") {
            t_best_b = Some(now - t0);
        }
        if t_a_gone.is_none() && !has_wan_vip(&lab, "a") {
            t_a_gone = Some(now - t0);
        }
        if t_b_vip.is_none() && has_wan_vip(&lab, "b") {
            t_b_vip = Some(now - t0);
        }
        std::thread::sleep(lab::POLL);
    }
    eprintln!(
        "{speaker:?}: after SIGTERM of a's vrrpd: provider best path -> b at {t_best_b:?}, a's VIPs gone at {t_a_gone:?}, b holds the VIPs at {t_b_vip:?}"
    );
    let (best, b_vip) = (
        t_best_b.expect("the provider moves to b"),
        t_b_vip.expect("b takes the VIPs"),
    );
    assert!(t_a_gone.is_some(), "a removes its VIPs");
    assert!(
        best <= b_vip + Duration::from_secs(1),
        "the best path moves before or with the VIPs: best {best:?}, VIPs on b {b_vip:?}"
    );
    da.wait_exit(Duration::from_secs(10)).expect("a's vrrpd exits");
    // vrrpd prepended before it removed the VIPs.
    let log = da.log();
    let prepended = log
        .lines()
        .position(|l| l.contains("BGP prepend applied") && l.contains("stop"))
        .unwrap_or_else(|| panic!("no stop prepend in a's log:\n{log}"));
    let stepped_down = log
        .lines()
        .position(|l| l.contains("state transition") && l.contains("shutdown"))
        .expect("a's shutdown transitions");
    assert!(prepended < stepped_down, "prepend before the VIPs go:\n{log}");
    assert_eq!(path_len(&p, "a"), Some(4), "a announces its backup depth 3");
}

#[test]
fn bird_prepend_follows_the_master() {
    scenario("bgpbird", Speaker::Bird);
}

#[test]
fn frr_prepend_follows_the_master() {
    scenario("bgpfrr", Speaker::Frr);
}

/// vrrpd puts the prepend back when the BGP daemon was changed behind its back (here by hand:
/// as after a restart or a reload of an older config).
#[test]
fn bird_drift_is_repaired() {
    let Setup {
        lab,
        provider: p,
        speakers,
    } = setup("bgpdrift", Speaker::Bird);
    let _da = lab.start_router(&RouterConfig::new("a", 200).extra(&speakers[0].vrrpd_section("a")));
    lab.wait_until(Duration::from_secs(15), || all_in(&lab, "a", "MASTER"))
        .expect("a MASTER");
    lab.wait_until(Duration::from_secs(10), || applied(&lab, "a") == Some(0))
        .expect("prepend 0 applied");
    // Someone writes another value and reconfigures BIRD.
    std::fs::write(&speakers[0].include_file, "define VRRPD_PREPEND = 5;\n").unwrap();
    let out = bgp::birdc(&speakers[0].socket, &["configure"]);
    assert!(out.contains("Reconfigured"), "{out}");
    assert!(
        poll(Duration::from_secs(10), || (path_len(&p, "a") == Some(6)).then_some(())).is_some(),
        "the provider sees the hand-made prepend"
    );
    // The periodic check (every 30 s) finds it and applies 0 again.
    assert!(
        poll(Duration::from_secs(45), || (path_len(&p, "a") == Some(1)).then_some(())).is_some(),
        "vrrpd repaired the prepend: {}",
        show_bgp(&lab, "a")
    );
    assert!(show_bgp(&lab, "a")["repairs"].as_u64() >= Some(1));
}
