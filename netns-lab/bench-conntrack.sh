#!/usr/bin/env bash
# Conntrack replication benchmark in the netns lab (root): vrrpd's conntrack-sync at scale.
#
#   netns-lab/bench-conntrack.sh [RUNS]     (default 3 runs; prints every RESULT line)
#
# Each run builds its own lab (tests/bench_conntrack.rs): both routers with the stateful
# firewall and SNAT to the VIP; 100,000 synthetic UDP entries created over netlink on the master
# (time until the backup holds every entry, records/s, master CPU per entry, memory per entry);
# 240,000 entries then flushed on the master (divergence 1 s later, time until the backup is
# correct); 200 TCP flows sending every 10 ms plus 100,000 entries through a failover by router
# loss (stall per flow). keepalived + conntrackd are NOT run by this script yet: the baseline
# numbers in BENCHMARKS-CONNTRACK.md come from the issue.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-3}"
cargo test --release --test bench_conntrack --no-run >/dev/null 2>&1
for i in $(seq "$runs"); do
    echo "== run $i"
    cargo test --release --test bench_conntrack -- --ignored --nocapture 2>&1 | grep '^RESULT' || {
        echo "run $i failed" >&2
        exit 1
    }
done
