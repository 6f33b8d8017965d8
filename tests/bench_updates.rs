//! Update events at 60,000/s (ignored benchmark): synthetic entries replicated to the backup,
//! then the mark of every entry changed on the master at a paced rate, so the kernel reports one
//! UPDATE event per entry. No event may be lost: the backup must end with every entry carrying
//! the new mark. Run:
//! `cargo test --release --test bench_updates -- --ignored --nocapture`
//! Environment: CTBENCH_UPDATES (entries, default 100000), CTBENCH_RATE (updates per second,
//! default 60000), CTBENCH_ROUNDS (mark changes per entry, default 3).

mod lab;

use std::time::{Duration, Instant};

use lab::Lab;
use lab::conntrack::{
    in_router, listed_ipv4, process_cpu_secs, replicate, show_sync, synced_pair, synthetic_udp,
};
use vrrpd::conntrack::entry::Entry;
use vrrpd::conntrack::kernel::Conntrack;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Entries of `node` (IPv4) whose mark is `mark`.
fn marked(lab: &Lab, node: &str, mark: u32) -> usize {
    let out = lab.exec(
        node,
        &["conntrack", "-L", "-f", "ipv4", "-m", &mark.to_string()],
    );
    out.stdout.iter().filter(|b| **b == b'\n').count()
}

#[test]
#[ignore = "benchmark"]
fn bench_update_events_reach_the_backup() {
    let entries = env_or("CTBENCH_UPDATES", 100_000);
    let rate = env_or("CTBENCH_RATE", 60_000);
    let rounds = env_or("CTBENCH_ROUNDS", 3);
    let lab = Lab::up("ctupd").expect("lab up");
    let (da, _db) = synced_pair(&lab);
    let base = listed_ipv4(&lab, "b");
    let created: Vec<Entry> = (0..entries).map(synthetic_udp).collect();
    replicate(&lab, created.clone(), base);
    std::thread::sleep(Duration::from_secs(1));

    let mut failed = Vec::new();
    for round in 1..=rounds {
        let mark = round as u32;
        let overruns0 = show_sync(&lab, "a").unwrap()["overruns"].as_u64();
        let cpu0 = process_cpu_secs(da.pid());
        let updates: Vec<Entry> = (created.iter().cloned())
            .map(|mut e| {
                e.mark = Some(mark);
                e
            })
            .collect();
        // Paced in chunks of 1,000: each chunk is one netlink batch, then a wait until the
        // chunk's due time, so the kernel emits events at `rate` on average.
        let took = in_router(&lab, "a", move |rt| {
            rt.block_on(async {
                let ct = Conntrack::open().unwrap();
                let start = tokio::time::Instant::now();
                for (i, chunk) in updates.chunks(1000).enumerate() {
                    ct.install(chunk).await.unwrap();
                    let due = start
                        + Duration::from_secs_f64(((i + 1) * chunk.len()) as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
                start.elapsed()
            })
        });
        let achieved = entries as f64 / took.as_secs_f64();
        let t = Instant::now();
        let converged = lab
            .wait_until(Duration::from_secs(30), || {
                marked(&lab, "b", mark) >= entries
            })
            .map(|_| t.elapsed());
        let cpu = process_cpu_secs(da.pid()) - cpu0;
        let on_backup = marked(&lab, "b", mark);
        let sa = show_sync(&lab, "a").unwrap();
        let overruns = sa["overruns"].as_u64().unwrap_or(0) - overruns0.unwrap_or(0);
        eprintln!(
            "RESULT round {round}: {entries} updates in {took:.2?} ({achieved:.0} events/s); \
             backup has all with mark {mark} {converged:.2?} after the last; on the backup \
             {on_backup}/{entries}; master overruns {overruns}; master CPU {:.2} us per event",
            cpu * 1e6 / entries as f64
        );
        if on_backup < entries || overruns > 0 {
            failed.push(round);
        }
    }
    eprintln!(
        "show sync a: {}\nshow sync b: {}",
        show_sync(&lab, "a").unwrap(),
        show_sync(&lab, "b").unwrap()
    );
    assert!(failed.is_empty(), "events lost in rounds {failed:?}");
}
