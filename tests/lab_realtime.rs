//! vrrpd's scheduling: `SCHED_RR` at `daemon.realtime-priority` (10 by default), normal
//! scheduling with 0. Root only; builds and removes its own lab.

mod lab;

use std::time::Duration;

use lab::{Lab, RouterConfig};

/// (policy, rt_priority) of a process, from /proc/PID/stat (fields 41 and 40).
fn scheduling(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    // Fields after the command name, which may hold spaces: field 3 (state) is index 0.
    let rest = &stat[stat.rfind(") ").expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    (
        fields[41 - 3].parse().expect("policy"),
        fields[40 - 3].parse().expect("rt_priority"),
    )
}

const SCHED_OTHER: u32 = 0;
const SCHED_RR: u32 = 2;

#[test]
fn runs_real_time_by_default_and_normal_with_zero() {
    lab::require_root().unwrap();
    let lab = Lab::up("rt").unwrap();

    let a = lab.start_router(&RouterConfig::new("a", 200));
    lab.wait_ready("a", Duration::from_secs(10)).unwrap();
    assert_eq!(scheduling(a.pid()), (SCHED_RR, 10), "default: SCHED_RR 10");

    let text = lab.router_config(&RouterConfig::new("b", 100)).replacen(
        "[daemon]\n",
        "[daemon]\nrealtime-priority = 0\n",
        1,
    );
    assert!(text.contains("realtime-priority = 0"), "config: {text}");
    let b = lab.start_vrrpd("b", &text);
    lab.wait_ready("b", Duration::from_secs(10)).unwrap();
    assert_eq!(
        scheduling(b.pid()),
        (SCHED_OTHER, 0),
        "realtime-priority = 0"
    );
}
