//! Flush convergence only (ignored; a shorter cut of the benchmark's flush scenario): 240,000
//! synthetic entries replicated to the backup, flushed on the master, and the time until the
//! backup lists no more than the master (+10). Run:
//! `cargo test --release --test bench_flush -- --ignored --nocapture`

mod lab;

use std::time::{Duration, Instant};

use lab::Lab;
use lab::conntrack::{
    in_router, listed_ipv4, router_with_sync, show_sync, stateful_routers, synthetic_udp,
};
use vrrpd::conntrack::entry::Entry;
use vrrpd::conntrack::kernel::Conntrack;

const FLUSH: usize = 240_000;

#[test]
#[ignore = "benchmark"]
fn bench_flush_convergence() {
    let lab = Lab::up("ctflush").expect("lab up");
    stateful_routers(&lab);
    let da = lab.start_router(&router_with_sync(&lab, "a", 200));
    let db = lab.start_router(&router_with_sync(&lab, "b", 100));
    lab.wait_until(Duration::from_secs(20), || {
        lab.all_in_state("a", "MASTER")
            && lab.all_in_state("b", "BACKUP")
            && show_sync(&lab, "a").is_ok_and(|s| s["connected"] == true)
    })
    .expect("a MASTER, connected");
    let base = listed_ipv4(&lab, "b");
    in_router(&lab, "a", |rt| {
        rt.block_on(async {
            let ct = Conntrack::open().unwrap();
            let all: Vec<Entry> = (0..FLUSH).map(synthetic_udp).collect();
            for chunk in all.chunks(5000) {
                ct.install(chunk).await.unwrap();
            }
        })
    });
    lab.wait_until(Duration::from_secs(120), || {
        listed_ipv4(&lab, "b") >= base + FLUSH
    })
    .expect("backup holds every entry");
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
