#!/usr/bin/env bash
# Conntrack replication benchmark in the netns lab (root): vrrpd's conntrack-sync against
# Debian's keepalived + conntrackd (FTFW over UDP, commit from primary-backup.sh), in one run.
#
#   netns-lab/bench-conntrack.sh [RUNS]     (default 3 runs of each system, interleaved)
#
# Parameters (environment, defaults): CTBENCH_SCALE=100000 synthetic entries for the scale part
# and the failover, CTBENCH_FLUSH=240000 entries flushed at once, CTBENCH_FLOWS=200 TCP flows
# sending every 10 ms (plus 10 UDP flows), CTBENCH_SYSTEMS=vrrpd,conntrackd; CTBENCH_LOGS=1
# prints conntrackd's, keepalived's and the notify script's logs, CTBENCH_DEBUG=1 the neighbour
# and address state before the failover.
#
# Each run of each system builds its own lab (tests/bench_conntrack.rs + tests/lab/conntrackd.rs):
# both routers with the stateful firewall, strict TCP tracking and SNAT to the VIP; synthetic
# UDP entries created over netlink on the master (time until the backup holds every entry,
# entries/s, master CPU per entry, memory per entry); FLUSH entries flushed on the master
# (divergence ~1 s later, time until the backup is correct); FLOWS TCP flows sending every
# 10 ms plus SCALE entries through a failover by router loss (flows survived, stall per flow).
# Prints RESULT lines per run, then a markdown table of medians with the ratio vrrpd/conntrackd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CTBENCH_RUNS="${1:-${CTBENCH_RUNS:-3}}"
cargo test --release --test bench_conntrack --no-run >/dev/null 2>&1
cargo test --release --test bench_conntrack -- --ignored --nocapture 2>&1 |
    grep -E '^(==|RESULT|DEBUG|\||conntrack benchmark|test result|thread .* panicked)'
