#!/usr/bin/env bash
# The vrrpd demo: two routers elect a master, the client reaches the server through the VIPs,
# router a is cut off and b takes over, a comes back and is master again.
#
# Run as root from anywhere: netns-lab/demo.sh. Builds the release binary first (or uses
# $VRRPD_BIN), then takes at most about a minute; everything it made is removed on exit except
# the configs and logs in /tmp/vrrpd-lab-<prefix>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB="$ROOT/netns-lab/lab.sh"
P="vdemo$$"
WORK="/tmp/vrrpd-lab-$P" # configs, logs and control sockets (the socket path of `lab.sh config`)
BUDGET=60                # seconds, from the lab going up to the end
declare -A PID=()
LAB_UP=0

die() { echo "demo.sh: $*" >&2; exit 1; }
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

[[ $EUID -eq 0 ]] || die "run as root (it creates network namespaces)"

cleanup() {
    local rc=$? r
    trap - EXIT INT TERM
    for r in "${!PID[@]}"; do
        kill -TERM "${PID[$r]}" 2>/dev/null || true
    done
    for r in "${!PID[@]}"; do
        for _ in $(seq 30); do kill -0 "${PID[$r]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${PID[$r]}" 2>/dev/null || true
        wait "${PID[$r]}" 2>/dev/null || true
    done
    if ((LAB_UP)); then
        "$LAB" down "$P" || echo "demo.sh: lab.sh down $P failed; run it again" >&2
    fi
    if [[ -d "$WORK" ]]; then
        echo
        echo "logs: $WORK/a.log $WORK/b.log (configs next to them)"
    fi
    ((rc == 0)) && echo "demo finished" || echo "demo failed (exit $rc)" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n "${VRRPD_BIN:-}" ]]; then
    BIN="$VRRPD_BIN" # a vrrpd built or installed elsewhere: no build
else
    step "cargo build --release"
    (cd "$ROOT" && cargo build --release)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/vrrpd"
fi
[[ -x "$BIN" ]] || die "no vrrpd binary at $BIN"

DEADLINE=$((SECONDS + BUDGET))
remaining() { echo $((DEADLINE - SECONDS)); }

step "lab up ($P)"
LAB_UP=1
"$LAB" up "$P"
mkdir -p "$WORK"

step "start vrrpd on router a (priority 200) and router b (priority 100)"
for r in a b; do
    prio=$([[ $r == a ]] && echo 200 || echo 100)
    "$LAB" config "$P" "$r" "$prio" >"$WORK/$r.toml"
    RUST_LOG="${RUST_LOG:-info}" ip netns exec "$P-$r" "$BIN" run -c "$WORK/$r.toml" \
        >"$WORK/$r.log" 2>&1 &
    PID[$r]=$! # `ip netns exec` execs vrrpd: this is the daemon's pid
    echo "router $r: pid ${PID[$r]}, config $WORK/$r.toml, log $WORK/$r.log"
done

show() { # ROUTER [--json]
    ip netns exec "$P-$1" "$BIN" show groups "${@:2}" -s "$WORK/$1.sock"
}

# How many groups on ROUTER are in STATE (0 when the daemon does not answer).
count_state() {
    local json
    json="$(timeout 2 ip netns exec "$P-$1" "$BIN" show groups --json -s "$WORK/$1.sock" 2>/dev/null)" || {
        echo 0
        return
    }
    tr -d ' \t\n' <<<"$json" | grep -o "\"state\":\"$2\"" | wc -l
}

# wait_for DESCRIPTION SECONDS CONDITION...
wait_for() {
    local what="$1" limit="$2" start=$SECONDS r
    shift 2
    ((limit <= $(remaining))) || limit=$(remaining)
    while ! "$@"; do
        for r in "${!PID[@]}"; do
            kill -0 "${PID[$r]}" 2>/dev/null || {
                tail -n 20 "$WORK/$r.log" >&2
                die "vrrpd on router $r exited while waiting for: $what"
            }
        done
        if ((SECONDS - start >= limit)); then
            for r in a b; do
                echo "--- last lines of $WORK/$r.log" >&2
                tail -n 10 "$WORK/$r.log" >&2 || true
            done
            die "timed out after ${limit}s waiting for: $what"
        fi
        sleep 0.1
    done
    echo "ok after $((SECONDS - start))s: $what"
}

all_in() { [[ "$(count_state "$1" "$2")" == 4 ]]; }
a_master_b_backup() { all_in a MASTER && all_in b BACKUP; }

ping_through_vips() {
    local limit addr out
    for addr in 10.76.4.10 2001:db8:5:34cd::10; do
        limit=$(remaining)
        ((limit > 5)) && limit=5
        ((limit >= 1)) || die "out of time"
        echo "client -> server $addr"
        if ! out="$("$LAB" exec "$P" client -- ping -n -c 3 -i 0.2 -w "$limit" "$addr")"; then
            echo "$out"
            die "no replies from $addr within ${limit}s"
        fi
        tail -n 2 <<<"$out"
    done
}

step "wait until the routers have elected a (all four groups, sync group MAIN)"
wait_for "a MASTER, b BACKUP" 10 a_master_b_backup
echo "--- router a"; show a
echo "--- router b"; show b

step "the client reaches the server through the VIPs (via a)"
ping_through_vips

step "cut router a off every segment (its links stay up: it cannot tell)"
"$LAB" cut "$P" a all
wait_for "b MASTER" 10 all_in b MASTER
echo "--- router b"; show b
echo "--- router a (hears nobody, so it still believes it is master)"; show a

step "the client reaches the server through the VIPs (via b)"
ping_through_vips

step "restore router a: it has the higher priority and becomes master again"
"$LAB" restore "$P" a all
wait_for "a MASTER, b BACKUP" 10 a_master_b_backup
echo "--- router a"; show a
echo "--- router b"; show b

step "the client reaches the server through the VIPs (via a again)"
ping_through_vips
