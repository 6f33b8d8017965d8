//! Conntrack replication benchmark in the lab (ignored by default; run by
//! netns-lab/bench-conntrack.sh): scale with synthetic entries created over netlink on the master,
//! a mass deletion, and a failover with 10 ms flows on top of 100,000 entries.

mod lab;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lab::conntrack::{
    Traffic, alive_since, reset_gaps, router_with_sync, show_sync, stateful_routers, summary,
};
use lab::{Lab, SERVER4};
use vrrpd::conntrack::entry::{Entry, FlowKey, ReplyTuple, status};
use vrrpd::conntrack::kernel::Conntrack;
use vrrpd::proto::Family;

const SCALE: usize = 100_000;
const FLUSH: usize = 240_000;

fn synthetic(i: usize) -> Entry {
    let src = IpAddr::V4(Ipv4Addr::new(
        10,
        200 + (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ));
    let server: IpAddr = SERVER4.parse().unwrap();
    Entry {
        key: FlowKey {
            family: Family::Ipv4,
            protocol: 17,
            src,
            dst: server,
            src_port: 20000,
            dst_port: 9999,
            zone: 0,
        },
        reply: ReplyTuple {
            src: server,
            dst: src,
            src_port: 9999,
            dst_port: 20000,
        },
        status: status::SEEN_REPLY | status::ASSURED,
        timeout: Some(3600),
        mark: None,
        tcp: None,
        raw: Vec::new(),
    }
}

/// Runs `f` with a tokio runtime on a thread inside `node`'s namespace.
fn in_router<T: Send + 'static>(
    lab: &Lab,
    node: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    lab::conntrack::in_netns(&lab.ns(node), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        f(&rt)
    })
    .join()
    .expect("thread in namespace")
}

fn install(lab: &Lab, node: &str, range: std::ops::Range<usize>) -> Duration {
    in_router(lab, node, move |rt| {
        rt.block_on(async move {
            let ct = Conntrack::open().expect("conntrack");
            let start = Instant::now();
            let all: Vec<Entry> = range.map(synthetic).collect();
            for chunk in all.chunks(5000) {
                let r = ct.install(chunk).await.expect("install");
                assert_eq!(r.failed, 0, "{r:?}");
            }
            start.elapsed()
        })
    })
}

fn count(lab: &Lab, node: &str) -> usize {
    let out = lab.exec(node, &["conntrack", "-C"]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Entries in the table (`conntrack -L`, IPv4): what lookups find. nf_conntrack_count (`-C`)
/// also counts deleted entries whose destroy event the kernel has not delivered yet (it retries
/// slowly when a listener's socket is full).
fn listed(lab: &Lab, node: &str) -> usize {
    let out = lab.exec(node, &["conntrack", "-L", "-f", "ipv4"]);
    out.stdout.iter().filter(|b| **b == b'\n').count()
}

/// Median, 90th percentile and maximum of the flows' longest gaps.
fn stall_distribution(stats: &lab::conntrack::Stats) -> (Duration, Duration, Duration) {
    let mut gaps: Vec<Duration> = stats.iter().map(|s| s.lock().unwrap().max_gap).collect();
    gaps.sort();
    let at = |q: f64| gaps[((gaps.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.9), at(1.0))
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
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

#[test]
#[ignore = "benchmark: run netns-lab/bench-conntrack.sh"]
fn bench_vrrpd_conntrack_sync() {
    let lab = Lab::up("ctbench").expect("lab up");
    stateful_routers(&lab);
    let da = lab.start_router(&router_with_sync(&lab, "a", 200));
    let db = lab.start_router(&router_with_sync(&lab, "b", 100));
    lab.wait_until(Duration::from_secs(20), || {
        lab.all_in_state("a", "MASTER")
            && lab.all_in_state("b", "BACKUP")
            && show_sync(&lab, "a").is_ok_and(|s| s["connected"] == true)
    })
    .expect("a MASTER, connected");
    std::thread::sleep(Duration::from_secs(1));
    let mut results = Vec::new();

    // 1. Scale: 100,000 new entries on the master, as fast as the kernel creates them.
    let (cpu_a0, rss_a0, rss_b0) = (cpu_secs(da.pid()), rss_kib(da.pid()), rss_kib(db.pid()));
    let sent0 = sync_u64(&lab, "a", "entries-sent");
    let base_b = count(&lab, "b");
    let t0 = Instant::now();
    let created = install(&lab, "a", 0..SCALE);
    let held = lab
        .wait_until(Duration::from_secs(120), || {
            count(&lab, "b") >= base_b + SCALE
        })
        .map(|_| t0.elapsed());
    let sent = sync_u64(&lab, "a", "entries-sent") - sent0;
    let cpu = cpu_secs(da.pid()) - cpu_a0;
    let overruns = sync_u64(&lab, "a", "overruns");
    results.push(format!(
        "scale: {SCALE} entries created on the master in {created:.2?} ({:.0}/s); backup holds every entry after {held:.2?}; records sent {sent}; master CPU {cpu:.2} s = {:.2} us/entry; overruns {overruns}",
        SCALE as f64 / created.as_secs_f64(),
        cpu * 1e6 / SCALE as f64
    ));
    std::thread::sleep(Duration::from_secs(1));
    let (rss_a1, rss_b1) = (rss_kib(da.pid()), rss_kib(db.pid()));
    results.push(format!(
        "memory: master +{} KiB ({:.0} B/entry), backup +{} KiB ({:.0} B/entry)",
        rss_a1.saturating_sub(rss_a0),
        rss_a1.saturating_sub(rss_a0) as f64 * 1024.0 / SCALE as f64,
        rss_b1.saturating_sub(rss_b0),
        rss_b1.saturating_sub(rss_b0) as f64 * 1024.0 / SCALE as f64
    ));

    // 2. Mass deletion: 240,000 entries flushed on the master at once.
    install(&lab, "a", SCALE..FLUSH);
    let held = lab.wait_until(Duration::from_secs(120), || {
        count(&lab, "b") >= base_b + FLUSH
    });
    results.push(format!(
        "flush setup: backup holds {FLUSH} entries: {held:?}"
    ));
    let overruns0 = sync_u64(&lab, "a", "overruns");
    let t_flush = Instant::now();
    in_router(&lab, "a", |rt| {
        rt.block_on(async { Conntrack::open().unwrap().flush().await.unwrap() })
    });
    std::thread::sleep(Duration::from_secs(1).saturating_sub(t_flush.elapsed()));
    let (a1, b1) = (listed(&lab, "a"), listed(&lab, "b"));
    let t_list = t_flush.elapsed();
    let converged = lab
        .wait_until(Duration::from_secs(60), || {
            listed(&lab, "b") <= listed(&lab, "a") + 10
        })
        .map(|_| t_flush.elapsed());
    let counted = lab
        .wait_until(Duration::from_secs(60), || {
            count(&lab, "b") <= count(&lab, "a") + 10
        })
        .map(|_| t_flush.elapsed());
    results.push(format!(
        "flush of {FLUSH}: {t_list:.2?} later master lists {a1} entries, backup {b1} (divergence {}); backup lists within 10 entries of the master after {converged:.2?}; its nf_conntrack_count after {counted:.2?}; master overruns {}",
        b1.saturating_sub(a1),
        sync_u64(&lab, "a", "overruns") - overruns0
    ));

    // 3. Failover with 100,000 entries and 200 TCP flows sending every 10 ms.
    let traffic = Traffic::start(
        &lab,
        &[SERVER4],
        200,
        10,
        Duration::from_millis(10),
        Duration::from_secs(8),
    );
    let t = Instant::now();
    lab.wait_until(Duration::from_secs(60), || {
        alive_since(&traffic.tcp, t) == 200
    })
    .expect("flows up");
    install(&lab, "a", 0..SCALE);
    lab.wait_until(Duration::from_secs(120), || {
        count(&lab, "b") >= base_b + SCALE
    })
    .expect("backup holds 100k");
    std::thread::sleep(Duration::from_secs(2));
    reset_gaps(&traffic.tcp);
    reset_gaps(&traffic.udp);
    let t_fail = Instant::now();
    lab.cut("a", "all");
    let takeover = lab
        .wait_until(Duration::from_secs(10), || lab.all_in_state("b", "MASTER"))
        .expect("b takes over");
    let alive = lab.wait_until(Duration::from_secs(30), || {
        alive_since(&traffic.tcp, t_fail) == 200 && alive_since(&traffic.udp, t_fail) == 10
    });
    std::thread::sleep(Duration::from_secs(1));
    let (_, tcp_err) = summary(&traffic.tcp);
    let (tcp_med, tcp_p90, tcp_max) = stall_distribution(&traffic.tcp);
    let (udp_med, _, udp_max) = stall_distribution(&traffic.udp);
    results.push(format!(
        "failover at {SCALE} entries: takeover seen after {takeover:.2?} (polling); flows alive {}/200 TCP, {}/10 UDP ({alive:?}); stall of a 10 ms TCP flow median {tcp_med:.2?} p90 {tcp_p90:.2?} max {tcp_max:.2?}; UDP median {udp_med:.2?} max {udp_max:.2?}; TCP errors {}",
        alive_since(&traffic.tcp, t_fail),
        alive_since(&traffic.udp, t_fail),
        tcp_err.len()
    ));
    traffic.stop();
    eprintln!("\n===== vrrpd conntrack-sync benchmark =====");
    for r in &results {
        eprintln!("RESULT {r}");
    }
}
