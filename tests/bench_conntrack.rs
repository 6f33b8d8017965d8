//! Conntrack replication benchmark in the lab (ignored by default; run by
//! netns-lab/bench-conntrack.sh): vrrpd's conntrack-sync against Debian's keepalived +
//! conntrackd (FTFW over UDP, commit from primary-backup.sh), in the same run, each in a lab of
//! its own with the same firewall, SNAT and strict TCP tracking. For each: scale with synthetic
//! entries created over netlink on the master, a mass deletion, and a failover by router loss
//! with 10 ms flows on top of the synthetic entries. Medians over the runs, and the ratio.
//!
//! Parameters (environment): CTBENCH_RUNS (3), CTBENCH_SCALE (100000), CTBENCH_FLUSH (240000),
//! CTBENCH_FLOWS (200 TCP flows), CTBENCH_SYSTEMS ("vrrpd,conntrackd").

#[path = "lab/conntrackd.rs"]
mod conntrackd;
mod lab;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use lab::conntrack::{
    Traffic, alive_since, in_router, listed_ipv4, process_cpu_secs, reset_gaps, router_with_sync,
    show_sync, stateful_routers, summary, synthetic_udp,
};
use lab::{Daemon, Lab, SERVER4};
use vrrpd::conntrack::entry::Entry;
use vrrpd::conntrack::kernel::Conntrack;

const UDP_FLOWS: usize = 10;

/// With CTBENCH_INPUT_DROP=1, both systems' routers also drop unsolicited packets to their own
/// addresses (the VIPs included) instead of answering them with RST / port unreachable.
const INPUT_DROP: &str = r#"
table inet ctbinput {
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        iifname "lo" accept
        iifname "eth3" accept
        meta l4proto { 112, icmp, ipv6-icmp } accept
    }
}
"#;

fn firewall(lab: &Lab) {
    stateful_routers(lab);
    if std::env::var("CTBENCH_INPUT_DROP").is_ok_and(|v| v == "1") {
        for r in ["a", "b"] {
            lab.nft(r, INPUT_DROP);
        }
    }
}

fn param(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
struct Params {
    scale: usize,
    flush: usize,
    flows: usize,
}

fn install(lab: &Lab, node: &str, range: std::ops::Range<usize>) -> Duration {
    in_router(lab, node, move |rt| {
        rt.block_on(async move {
            let ct = Conntrack::open().expect("conntrack");
            let start = Instant::now();
            let all: Vec<Entry> = range.map(synthetic_udp).collect();
            for chunk in all.chunks(5000) {
                let r = ct.install(chunk).await.expect("install");
                assert_eq!(r.failed, 0, "{r:?}");
            }
            start.elapsed()
        })
    })
}

fn flush(lab: &Lab, node: &str) {
    in_router(lab, node, |rt| {
        rt.block_on(async { Conntrack::open().unwrap().flush().await.unwrap() })
    });
}

fn count(lab: &Lab, node: &str) -> usize {
    let out = lab.exec(node, &["conntrack", "-C"]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Median, 90th percentile and maximum of the flows' longest gaps.
/// Median, 90th percentile and maximum of the longest gaps of the flows `which`.
fn stall_distribution(
    stats: &lab::conntrack::Stats,
    which: &[usize],
) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    let mut gaps: Vec<Duration> = which
        .iter()
        .map(|&i| stats[i].lock().unwrap().max_gap)
        .collect();
    gaps.sort();
    let at = |q: f64| (!gaps.is_empty()).then(|| gaps[((gaps.len() - 1) as f64 * q) as usize]);
    (at(0.5), at(0.9), at(1.0))
}

/// The flows of `stats` without an error that exchanged data after `since`.
fn survivors(stats: &lab::conntrack::Stats, since: Instant) -> Vec<usize> {
    (0..stats.len())
        .filter(|&i| {
            let s = stats[i].lock().unwrap();
            s.error.is_none() && s.last_ok.is_some_and(|t| t > since)
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn sync_u64(lab: &Lab, router: &str, key: &str) -> u64 {
    show_sync(lab, router)
        .ok()
        .and_then(|s| s[key].as_u64())
        .unwrap_or(0)
}

fn since(t: SystemTime, from: SystemTime) -> f64 {
    t.duration_since(from).unwrap_or_default().as_secs_f64()
}

/// The system under test in one lab: how to read what the benchmark compares.
enum System {
    Vrrpd { a: Daemon, b: Daemon },
    Conntrackd(Box<conntrackd::Baseline>),
}

impl System {
    fn name(&self) -> &'static str {
        match self {
            System::Vrrpd { .. } => "vrrpd",
            System::Conntrackd(_) => "conntrackd",
        }
    }

    /// The replicating processes of (master, backup).
    fn pids(&self) -> (u32, u32) {
        match self {
            System::Vrrpd { a, b } => (a.pid(), b.pid()),
            System::Conntrackd(c) => (c.a.conntrackd_pid(), c.b.conntrackd_pid()),
        }
    }

    /// What the backup holds of the master's entries: vrrpd installs them into its kernel table
    /// (nf_conntrack_count minus what was there before); conntrackd keeps them in its external
    /// cache until the commit at takeover.
    fn backup_holds(&self, lab: &Lab, base_b: usize) -> usize {
        match self {
            System::Vrrpd { .. } => count(lab, "b").saturating_sub(base_b),
            System::Conntrackd(c) => c.b.external() as usize,
        }
    }

    /// What the backup lists after a flush (vrrpd: `conntrack -L`; conntrackd: external cache).
    fn backup_lists(&self, lab: &Lab) -> usize {
        match self {
            System::Vrrpd { .. } => listed_ipv4(lab, "b"),
            System::Conntrackd(c) => c.b.external() as usize,
        }
    }

    fn master_overruns(&self, lab: &Lab) -> Option<u64> {
        match self {
            System::Vrrpd { .. } => Some(sync_u64(lab, "a", "overruns")),
            System::Conntrackd(c) => c.a.overruns(),
        }
    }
}

type Metrics = BTreeMap<&'static str, f64>;

/// The rows of the table: (metric key, label with unit).
const ROWS: &[(&str, &str)] = &[
    (
        "survived_tcp",
        "TCP flows (10 ms) that survived the failover, %",
    ),
    (
        "survived_udp",
        "UDP flows (10 ms, server-pushed) that survived the failover, %",
    ),
    (
        "stall_tcp_max",
        "longest stall of a surviving 10 ms TCP flow, s",
    ),
    (
        "stall_tcp_med",
        "median stall over the surviving 10 ms TCP flows, s",
    ),
    (
        "stall_udp_max",
        "longest stall of a surviving 10 ms UDP flow, s",
    ),
    (
        "takeover",
        "takeover: cut until the backup acts (vrrpd MASTER seen / notify script starts), s",
    ),
    ("commit", "commit step at takeover (conntrackd -c), s"),
    (
        "created_rate",
        "synthetic entries created on the master, entries/s",
    ),
    (
        "held",
        "time until the backup holds every synthetic entry, s",
    ),
    (
        "held_lag",
        "... of which after the last entry was created, s",
    ),
    (
        "events_rate",
        "replicated entries/s (scale / time until the backup holds all)",
    ),
    ("cpu_us", "master CPU per replicated entry, us"),
    ("overruns", "master netlink overruns during scale + flush"),
    (
        "mem_master",
        "master memory per entry (RSS growth / scale), B",
    ),
    (
        "mem_backup",
        "backup memory per entry (RSS growth / scale), B",
    ),
    (
        "flush_divergence",
        "divergence ~1 s after the flush (backup - master entries)",
    ),
    (
        "flush_converged",
        "time until the backup is within 10 entries of the master after the flush, s",
    ),
];

fn run_system(lab: &Lab, sys: &System, p: Params, m: &mut Metrics) {
    let name = sys.name();
    let (pa, pb) = sys.pids();
    // 1. Scale: new entries on the master, as fast as the kernel creates them.
    let (cpu_a0, rss_a0, rss_b0) = (process_cpu_secs(pa), rss_kib(pa), rss_kib(pb));
    let overruns0 = sys.master_overruns(lab);
    let base_b = count(lab, "b");
    let t0 = Instant::now();
    let created = install(lab, "a", 0..p.scale);
    m.insert("created_rate", p.scale as f64 / created.as_secs_f64());
    let held = lab
        .wait_until(Duration::from_secs(60), || {
            sys.backup_holds(lab, base_b) >= p.scale
        })
        .map(|_| t0.elapsed());
    let cpu = process_cpu_secs(pa) - cpu_a0;
    m.insert("cpu_us", cpu * 1e6 / p.scale as f64);
    match &held {
        Ok(h) => {
            m.insert("held", h.as_secs_f64());
            m.insert("held_lag", (*h - created).as_secs_f64());
            m.insert("events_rate", p.scale as f64 / h.as_secs_f64());
        }
        Err(_) => eprintln!(
            "RESULT {name}: backup holds only {} of {} after 60 s",
            sys.backup_holds(lab, base_b),
            p.scale
        ),
    }
    eprintln!(
        "RESULT {name} scale: {} entries created on the master in {created:.2?}; backup holds every entry after {held:.2?}; master CPU {cpu:.2} s",
        p.scale
    );
    std::thread::sleep(Duration::from_secs(1));
    let (rss_a1, rss_b1) = (rss_kib(pa), rss_kib(pb));
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 * 1024.0 / p.scale as f64;
    m.insert("mem_master", per(rss_a1, rss_a0));
    m.insert("mem_backup", per(rss_b1, rss_b0));

    // 2. Mass deletion: FLUSH entries flushed on the master at once.
    install(lab, "a", p.scale..p.flush);
    let setup = lab.wait_until(Duration::from_secs(60), || {
        sys.backup_holds(lab, base_b) >= p.flush
    });
    eprintln!(
        "RESULT {name} flush setup: backup holds {} of {} ({setup:.2?})",
        sys.backup_holds(lab, base_b),
        p.flush
    );
    let t_flush = Instant::now();
    flush(lab, "a");
    std::thread::sleep(Duration::from_secs(1).saturating_sub(t_flush.elapsed()));
    let (a1, b1) = (listed_ipv4(lab, "a"), sys.backup_lists(lab));
    let t_list = t_flush.elapsed();
    m.insert("flush_divergence", b1.saturating_sub(a1) as f64);
    let converged = lab
        .wait_until(Duration::from_secs(45), || {
            sys.backup_lists(lab) <= listed_ipv4(lab, "a") + 10
        })
        .map(|_| t_flush.elapsed());
    if let Ok(c) = converged {
        m.insert("flush_converged", c.as_secs_f64());
    }
    let overruns = match (overruns0, sys.master_overruns(lab)) {
        (Some(o0), Some(o1)) => {
            m.insert("overruns", o1.saturating_sub(o0) as f64);
            format!("{}", o1.saturating_sub(o0))
        }
        _ => "not reported".into(),
    };
    eprintln!(
        "RESULT {name} flush of {}: {t_list:.2?} later master lists {a1}, backup {b1}; backup within 10 entries of the master after {converged:.2?} (limit 45 s); master overruns {overruns}",
        p.flush
    );

    // 3. Failover by router loss with SCALE entries and FLOWS TCP flows sending every 10 ms.
    let traffic = Traffic::start(
        lab,
        &[SERVER4],
        p.flows,
        UDP_FLOWS,
        Duration::from_millis(10),
        Duration::from_secs(8),
    );
    let t = Instant::now();
    lab.wait_until(Duration::from_secs(60), || {
        alive_since(&traffic.tcp, t) == p.flows && alive_since(&traffic.udp, t) == UDP_FLOWS
    })
    .expect("flows up");
    install(lab, "a", 0..p.scale);
    let ready = lab.wait_until(Duration::from_secs(60), || {
        sys.backup_holds(lab, base_b) >= p.scale + p.flows
    });
    std::thread::sleep(Duration::from_secs(2));
    let before = sys.backup_holds(lab, base_b);
    reset_gaps(&traffic.tcp);
    reset_gaps(&traffic.udp);
    if std::env::var_os("CTBENCH_DEBUG").is_some() {
        eprintln!(
            "DEBUG b eth2 {:?} a eth2 {:?}",
            lab.addresses("b", "eth2"),
            lab.addresses("a", "eth2")
        );
        eprintln!(
            "DEBUG server neigh {}",
            lab.exec_ok("server", &["ip", "neigh"])
        );
        eprintln!(
            "DEBUG client neigh {}",
            lab.exec_ok("client", &["ip", "neigh"])
        );
        eprintln!(
            "DEBUG b ct udp {}",
            lab.exec_ok("b", &["conntrack", "-L", "-p", "udp", "--dport", "5002"])
        );
    }
    let wall_fail = SystemTime::now();
    lab.cut("a", "all");
    // Every exchange from here on went through router b.
    let t_cut = Instant::now();
    let (takeover, commit) = match sys {
        System::Vrrpd { .. } => (
            lab.wait_until(Duration::from_secs(10), || lab.all_in_state("b", "MASTER"))
                .map(|_| since(SystemTime::now(), wall_fail))
                .ok(),
            None,
        ),
        System::Conntrackd(c) => {
            let _ = lab.wait_until(Duration::from_secs(20), || {
                c.b.notified("primary-done", wall_fail).is_some()
            });
            let start = c.b.notified("primary-start", wall_fail);
            let done = c.b.notified("commit-done", wall_fail);
            (
                start.map(|s| since(s, wall_fail)),
                start.zip(done).map(|(s, d)| since(d, s)),
            )
        }
    };
    if let Some(t) = takeover {
        m.insert("takeover", t);
    }
    if let Some(c) = commit {
        m.insert("commit", c);
    }
    // A flow survived when it exchanged data through the new master and was still working at
    // the end: no error (a reset kills it) and data in the last half second.
    let decided = |stats: &lab::conntrack::Stats| {
        stats.iter().all(|s| {
            let s = s.lock().unwrap();
            s.error.is_some() || s.last_ok.is_some_and(|t| t > t_cut)
        })
    };
    let decided = lab.wait_until(Duration::from_secs(20), || {
        decided(&traffic.tcp) && decided(&traffic.udp)
    });
    std::thread::sleep(Duration::from_secs(1));
    let t_end = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let (tcp_ok, udp_ok) = (
        survivors(&traffic.tcp, t_end),
        survivors(&traffic.udp, t_end),
    );
    let (_, tcp_err) = summary(&traffic.tcp);
    let (tcp_med, tcp_p90, tcp_max) = stall_distribution(&traffic.tcp, &tcp_ok);
    let (_, _, udp_max) = stall_distribution(&traffic.udp, &udp_ok);
    m.insert("survived_tcp", 100.0 * tcp_ok.len() as f64 / p.flows as f64);
    m.insert(
        "survived_udp",
        100.0 * udp_ok.len() as f64 / UDP_FLOWS as f64,
    );
    // A dead flow has no stall: gaps are measured over the flows that survived.
    if let Some(max) = tcp_max {
        m.insert("stall_tcp_max", max.as_secs_f64());
    }
    if let Some(med) = tcp_med {
        m.insert("stall_tcp_med", med.as_secs_f64());
    }
    if let Some(max) = udp_max {
        m.insert("stall_udp_max", max.as_secs_f64());
    }
    let (tcp_alive, udp_alive) = (tcp_ok.len(), udp_ok.len());
    let alive = match decided {
        Ok(d) => format!("after {d:.2?}"),
        Err(_) => "not within 20 s".into(),
    };
    if std::env::var_os("CTBENCH_DEBUG").is_some() {
        let udp = lab.exec_ok("b", &["conntrack", "-L", "-p", "udp"]);
        let udp: Vec<&str> = udp.lines().filter(|l| l.contains("5002")).take(4).collect();
        eprintln!("DEBUG b udp entries of the pushed flows after the failover: {udp:#?}");
    }
    eprintln!(
        "RESULT {name} failover at {} entries (backup held {before}, {ready:.2?}): takeover {takeover:.3?} s, commit {commit:.3?} s; survived {tcp_alive}/{} TCP, {udp_alive}/{UDP_FLOWS} UDP (all decided: {alive}); TCP stall median {tcp_med:.2?} p90 {tcp_p90:.2?} max {tcp_max:.2?}; UDP max {udp_max:.2?}; TCP errors {}{}",
        p.scale,
        p.flows,
        tcp_err.len(),
        tcp_err
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    traffic.stop();
}

fn bench_vrrpd(p: Params) -> Metrics {
    let lab = Lab::up("ctbvr").expect("lab up");
    firewall(&lab);
    let a = lab.start_router(&router_with_sync(&lab, "a", 200));
    let b = lab.start_router(&router_with_sync(&lab, "b", 100));
    lab.wait_until(Duration::from_secs(20), || {
        lab.all_in_state("a", "MASTER")
            && lab.all_in_state("b", "BACKUP")
            && show_sync(&lab, "a").is_ok_and(|s| s["connected"] == true)
    })
    .expect("a MASTER, connected");
    std::thread::sleep(Duration::from_secs(1));
    let mut m = Metrics::new();
    run_system(&lab, &System::Vrrpd { a, b }, p, &mut m);
    m
}

fn bench_conntrackd(p: Params) -> Metrics {
    let lab = Lab::up("ctbcd").expect("lab up");
    firewall(&lab);
    // conntrackd's caches must hold the flush's entries plus the flows.
    let base = conntrackd::Baseline::start(&lab, (p.flush + p.flush / 4).next_power_of_two())
        .expect("keepalived + conntrackd");
    let ok = lab.wait_until(Duration::from_secs(20), || {
        base.a
            .notified("primary-done", SystemTime::UNIX_EPOCH)
            .is_some()
            && base
                .b
                .notified("backup-done", SystemTime::UNIX_EPOCH)
                .is_some()
            && lab
                .addresses("a", "eth1")
                .iter()
                .any(|a| a.starts_with("10.76.2.1/"))
    });
    if ok.is_err() {
        panic!("keepalived: a not MASTER with b BACKUP:\n{}", base.logs());
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut m = Metrics::new();
    let sys = System::Conntrackd(Box::new(base));
    run_system(&lab, &sys, p, &mut m);
    if let System::Conntrackd(base) = &sys {
        assert!(
            base.a.conntrackd_running() && base.b.conntrackd_running(),
            "a conntrackd died:\n{}",
            base.logs()
        );
        if std::env::var_os("CTBENCH_LOGS").is_some() {
            eprintln!("{}", base.logs());
        }
    }
    drop(sys); // keepalived and conntrackd stopped before the lab goes
    m
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn cell(runs: &[Metrics], key: &str) -> (Option<f64>, String) {
    let vals: Vec<f64> = runs.iter().filter_map(|m| m.get(key).copied()).collect();
    let med = median(vals.clone());
    let range = if vals.len() > 1 {
        let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        format!(" ({}-{}, n={})", fmt(Some(lo)), fmt(Some(hi)), vals.len())
    } else {
        String::new()
    };
    (med, format!("{}{range}", fmt(med)))
}

#[test]
#[ignore = "benchmark: run netns-lab/bench-conntrack.sh"]
fn bench_conntrack_sync_vs_conntrackd() {
    let p = Params {
        scale: param("CTBENCH_SCALE", 100_000),
        flush: param("CTBENCH_FLUSH", 240_000),
        flows: param("CTBENCH_FLOWS", 200),
    };
    assert!(p.flush >= p.scale, "CTBENCH_FLUSH must be >= CTBENCH_SCALE");
    let runs = param("CTBENCH_RUNS", 3);
    let systems = std::env::var("CTBENCH_SYSTEMS").unwrap_or_else(|_| "vrrpd,conntrackd".into());
    let systems: Vec<&str> = systems.split(',').map(str::trim).collect();
    let mut results: BTreeMap<&str, Vec<Metrics>> = BTreeMap::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for run in 1..=runs {
        for &s in &systems {
            eprintln!(
                "== run {run}/{runs}: {s} ({:.0?} elapsed)",
                started.elapsed()
            );
            let outcome = std::panic::catch_unwind(|| match s {
                "vrrpd" => bench_vrrpd(p),
                "conntrackd" => bench_conntrackd(p),
                other => panic!("unknown system {other:?}"),
            });
            match outcome {
                Ok(m) => results.entry(s).or_default().push(m),
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    eprintln!("RESULT {s} run {run} FAILED: {msg}");
                    failures.push(format!("{s} run {run}"));
                }
            }
        }
    }
    let empty = Vec::new();
    let vr = results.get("vrrpd").unwrap_or(&empty);
    let cd = results.get("conntrackd").unwrap_or(&empty);
    println!(
        "\nconntrack benchmark: {} runs, scale {} entries, flush {} entries, {} TCP + {UDP_FLOWS} UDP flows at 10 ms; {:.0?} in all; medians (range, runs measured)\n",
        runs,
        p.scale,
        p.flush,
        p.flows,
        started.elapsed()
    );
    println!("| measure | vrrpd | conntrackd | vrrpd / conntrackd |");
    println!("|---|---|---|---|");
    for &(key, label) in ROWS {
        let (v, vs) = cell(vr, key);
        let (c, cs) = cell(cd, key);
        let ratio = match (v, c) {
            (Some(v), Some(c)) if c != 0.0 => format!("{:.2}", v / c),
            _ => "-".into(),
        };
        println!("| {label} | {vs} | {cs} | {ratio} |");
    }
    assert!(failures.is_empty(), "failed runs: {failures:?}");
}
