//! Flush convergence only (ignored; a shorter cut of the benchmark's flush scenario): 240,000
//! synthetic entries replicated to the backup, flushed on the master, and the time until the
//! backup lists no more than the master (+10). Run:
//! `cargo test --release --test bench_flush -- --ignored --nocapture`

mod lab;

use std::time::{Duration, Instant};

use lab::Lab;
use lab::conntrack::{in_router, listed_ipv4, replicate, show_sync, synced_pair, synthetic_udp};
use vrrpd::conntrack::kernel::Conntrack;

const FLUSH: usize = 240_000;

#[test]
#[ignore = "benchmark"]
fn bench_flush_convergence() {
    let lab = Lab::up("ctflush").expect("lab up");
    let (da, db) = synced_pair(&lab);
    let base = listed_ipv4(&lab, "b");
    replicate(&lab, (0..FLUSH).map(synthetic_udp).collect(), base);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    eprintln!("flush starts at {:?}", std::time::SystemTime::now());
    in_router(&lab, "a", |rt| {
        rt.block_on(async { Conntrack::open().unwrap().flush().await.unwrap() })
    });
    let flushed = t.elapsed();
    let converged = lab
        .wait_until(Duration::from_secs(60), || {
            listed_ipv4(&lab, "b") <= listed_ipv4(&lab, "a") + 10
        })
        .map(|_| t.elapsed());
    let sa = show_sync(&lab, "a").unwrap();
    let sb = show_sync(&lab, "b").unwrap();
    eprintln!("show sync a: {sa}\nshow sync b: {sb}");
    for (name, d) in [("a", &da), ("b", &db)] {
        for line in d
            .log()
            .lines()
            .filter(|l| l.contains("resync") || l.contains("mass"))
        {
            eprintln!("log {name}: {line}");
        }
    }
    eprintln!(
        "RESULT flush of {FLUSH}: flush call {flushed:.2?}; backup lists within 10 of the master after {converged:.2?}"
    );
}
