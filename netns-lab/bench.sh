#!/usr/bin/env bash
# vrrpd vs keepalived on the netns lab, measured in the same run (see netns-lab/README.md).
#
#   bench.sh failover    outage after router loss at each of INTERVALS, next to Master_Down_Interval
#   bench.sh stability   STABILITY_SECONDS of 10 ms adverts under stress-ng: spurious transitions
#   bench.sh scale       200 groups at 100 ms and 20 groups at 10 ms: CPU ms/s and RSS
#   bench.sh syncgroup   router loss until every group of a 4-group sync group is MASTER
#   bench.sh all         all four
#
# Environment: RUNS (repeats, default 5), INTERVALS (default "1s 100ms 10ms"), STABILITY_SECONDS
# (default 300), SCALE_WINDOW (seconds per CPU sample, default 10), SYNC_INTERVAL (default 100ms),
# VRRPD_BIN (default: target/dist/vrrpd, the deployment profile, built or brought up to date
# first), KEEPALIVED_BIN (default
# keepalived), COMPARE=baseline with BASELINE_BIN=path (compare with another vrrpd build instead
# of keepalived), BENCH_KEEP=1 (keep configs and logs). Results: a Markdown table per benchmark on
# stdout, and raw numbers in the work directory it names.
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAB="$LAB_DIR/lab.sh"
ROOT="$(cd "$LAB_DIR/.." && pwd)"
RUNS="${RUNS:-5}"
INTERVALS="${INTERVALS:-1s 100ms 10ms}"
STABILITY_SECONDS="${STABILITY_SECONDS:-300}"
SCALE_WINDOW="${SCALE_WINDOW:-10}"
SYNC_INTERVAL="${SYNC_INTERVAL:-100ms}"
KEEPALIVED_BIN="${KEEPALIVED_BIN:-keepalived}"
BASE="vb$$"
WORK="/tmp/vrrpd-bench-$BASE"
# COMPARE=baseline BASELINE_BIN=path compares vrrpd with another vrrpd build instead of keepalived.
DAEMONS=(vrrpd "${COMPARE:-keepalived}")
export TZ=UTC LC_ALL=C

die() { echo "bench.sh: $*" >&2; exit 1; }
log() { echo "bench.sh: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Labs and daemons. Every lab this script builds is named $BASE<tag>; every daemon it starts is
# recorded in $WORK/pids and stopped by PID on exit.

# Called in $(...): the lab's name goes to a file, not a variable, so that cleanup sees it.
lab_up() { # TAG -> prefix on stdout
    local p="$BASE$1"
    echo "$p" >>"$WORK/labs"
    "$LAB" up "$p" >/dev/null
    echo "$p"
}

cleanup() {
    local pid
    if [[ -f "$WORK/pids" ]]; then
        while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$WORK/pids"
        sleep 0.5
        while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$WORK/pids"
    fi
    [[ -n "${STRESS_PID:-}" ]] && kill -TERM "$STRESS_PID" 2>/dev/null || true
    if [[ -f "$WORK/labs" ]]; then
        while read -r p; do "$LAB" down "$p" >/dev/null 2>&1 || true; done <"$WORK/labs"
    fi
    if [[ "${BENCH_KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}

# Interval string ("1s", "100ms", "10ms") to milliseconds.
interval_ms() {
    case "$1" in
        *ms) echo "${1%ms}" ;;
        *s) awk -v s="${1%s}" 'BEGIN { printf "%d", s * 1000 }' ;;
        *) die "bad interval $1" ;;
    esac
}

# Master_Down_Interval of a backup of PRIORITY (RFC 5798 §6.1): 3 * I + (256 - P) * I / 256, ms.
mdi_ms() { awk -v i="$1" -v p="$2" 'BEGIN { printf "%.1f", 3 * i + (256 - p) * i / 256 }'; }

# Group lists: one line per group, "NAME IFACE VRID ADDRESS/LEN".
groups_path() { # the lab's LAN and WAN, IPv4: what the client's pings go through
    printf 'lan4 eth1 21 10.76.2.1/24\nwan4 eth2 41 10.76.4.1/24\n'
}
groups_sync4() { # the demo's sync group: both families on LAN and WAN
    groups_path
    printf 'lan6 eth1 22 2001:db8:5:416::1/64\nwan6 eth2 42 2001:db8:5:34cd::1/64\n'
}
groups_scale() { # N groups spread over eth1, eth2 and eth3, one /32 each
    local n="$1" i
    for ((i = 0; i < n; i++)); do
        echo "g$i eth$((1 + i % 3)) $((i / 3 + 1)) 10.80.$((1 + i % 3)).$((i / 3 + 1))/32"
    done
}

# vrrpd config: ROUTER PRIORITY INTERVAL SYNC(0|1) SOCKET < groups
vrrpd_config() {
    local router="$1" prio="$2" interval="$3" sync="$4" socket="$5" name dev vrid addr
    local -a members=()
    printf '[daemon]\nrouter-id = "%s"\nsocket = "%s"\n' "$router" "$socket"
    while read -r name dev vrid addr; do
        printf '\n[group.%s]\ninterface = "%s"\nvrid = %s\npriority = %s\naddress = ["%s"]\nadvertise-interval = "%s"\n' \
            "$name" "$dev" "$vrid" "$prio" "$addr" "$interval"
        members+=("\"$name\"")
    done
    if [[ "$sync" == 1 ]]; then
        local IFS=,
        printf '\n[sync-group.MAIN]\nmember = [%s]\n' "${members[*]}"
    fi
}

# keepalived config, same arguments (no socket). VRRPv3, preemption, no scripts.
keepalived_config() {
    local router="$1" prio="$2" interval="$3" sync="$4" name dev vrid addr
    local -a members=()
    local secs
    secs="$(awk -v ms="$(interval_ms "$interval")" 'BEGIN { printf "%g", ms / 1000 }')"
    printf 'global_defs {\n  router_id %s\n  vrrp_version 3\n}\n' "$router"
    while read -r name dev vrid addr; do
        printf 'vrrp_instance %s {\n  state BACKUP\n  interface %s\n  virtual_router_id %s\n  priority %s\n  advert_int %s\n  virtual_ipaddress {\n    %s dev %s\n  }\n}\n' \
            "$name" "$dev" "$vrid" "$prio" "$secs" "$addr" "$dev"
        members+=("$name")
    done
    if [[ "$sync" == 1 ]]; then
        printf 'vrrp_sync_group MAIN {\n  group {\n    %s\n  }\n}\n' "${members[*]}"
    fi
}

# Starts DAEMON on ROUTER of lab PREFIX with the groups on stdin. Prints the main PID.
start_daemon() { # DAEMON PREFIX ROUTER PRIORITY INTERVAL SYNC
    local daemon="$1" p="$2" router="$3" prio="$4" interval="$5" sync="$6"
    local tag="$p-$router-$daemon" pid
    local groups
    groups="$(cat)"
    case "$daemon" in
        vrrpd | baseline)
            local bin="$VRRPD_BIN"
            [[ "$daemon" == baseline ]] && bin="$BASELINE_BIN"
            vrrpd_config "$router" "$prio" "$interval" "$sync" "$WORK/$p-$router.sock" \
                <<<"$groups" >"$WORK/$tag.toml"
            ip netns exec "$p-$router" "$bin" run -c "$WORK/$tag.toml" \
                >>"$WORK/$tag.log" 2>&1 &
            pid=$!
            ;;
        keepalived)
            keepalived_config "$router" "$prio" "$interval" "$sync" <<<"$groups" >"$WORK/$tag.conf"
            ip netns exec "$p-$router" "$KEEPALIVED_BIN" --dont-fork --log-console --log-detail \
                --vrrp -f "$WORK/$tag.conf" -p "$WORK/$tag.pid" -r "$WORK/$tag.vrrp.pid" \
                >>"$WORK/$tag.log" 2>&1 &
            pid=$!
            ;;
    esac
    echo "$pid" >>"$WORK/pids"
    echo "$pid"
}

# Stops a daemon started above and waits for it (up to 5 s, then SIGKILL).
stop_daemon() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# The PID and its children (keepalived's VRRP process), one per line.
pid_tree() { echo "$1"; pgrep -P "$1" || true; }

# The addresses ROUTER of PREFIX holds (without /LEN), sorted, one per line.
held() { ip -n "$1-$2" -o addr show 2>/dev/null | awk '{ sub("/.*", "", $4); print $4 }' | sort -u; }
holds() { held "$1" "$2" | grep -qxF "$3"; }

# Polls CMD... every 10 ms for up to SECONDS.
wait_for() {
    local seconds="$1"; shift
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.01
    done
}

# Router a (priority 200) holds every address given, b (100) none of them.
a_is_master() { # PREFIX ADDRESS...
    local p="$1"; shift
    local want
    want="$(printf '%s\n' "$@" | sort -u)"
    [[ -z "$(comm -23 <(echo "$want") <(held "$p" a))" ]] \
        && [[ -z "$(comm -12 <(echo "$want") <(held "$p" b))" ]]
}
b_holds_all() {
    local p="$1"; shift
    [[ -z "$(comm -23 <(printf '%s\n' "$@" | sort -u) <(held "$p" b))" ]]
}

addresses_of() { awk '{ sub("/.*", "", $4); print $4 }'; }

now() { date +%s.%N; }

# CPU of a set of PIDs: "run-ns user-ticks switches". run-ns: nanoseconds on a CPU, from each
# thread's schedstat (exact; stat's utime + stime are sampled at the tick, 10 ms units, +-1 ms/s
# per 10 s window). user-ticks: utime from stat (for the user/kernel split only). switches:
# voluntary + involuntary context switches (wake-ups).
cpu_sample() {
    local pid task ns=0 user=0 cs=0
    for pid in "$@"; do
        [[ -r "/proc/$pid/stat" ]] || continue
        for task in /proc/"$pid"/task/*; do
            ns=$((ns + $(cut -d' ' -f1 "$task/schedstat" 2>/dev/null || echo 0)))
            cs=$((cs + $(awk '/ctxt_switches/ { n += $2 } END { print n + 0 }' "$task/status" 2>/dev/null || echo 0)))
        done
        # Fields after the ")" of the command name: utime is the 12th.
        user=$((user + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 }')))
    done
    echo "$ns $user $cs"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

median() { # numbers on stdin
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit }
        if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "n/a" || b == "n/a") print "n/a"; else printf "%.2f", a / b }'; }

# vrrpd: the sum of every group's `transitions` counter.
vrrpd_transitions() { # PREFIX ROUTER
    ip netns exec "$1-$2" "$VRRPD_BIN" show groups --json -s "$WORK/$1-$2.sock" \
        | grep -o '"transitions": *[0-9]*' | awk -F: '{ s += $2 } END { print s + 0 }'
}
baseline_transitions() { vrrpd_transitions "$@"; }
# keepalived: its log's "Entering ... STATE" lines.
keepalived_transitions() { # PREFIX ROUTER
    grep -c 'Entering [A-Z]* STATE' "$WORK/$1-$2-keepalived.log" || true
}

load_note() {
    echo "load average $(cut -d' ' -f1-3 /proc/loadavg), $(ps -e --no-headers -o comm | grep -cE '^(rustc|cc1|ld|cargo)') compiler processes running"
}

# ---------------------------------------------------------------------------------------------
# failover: for each interval and run, vrrpd then keepalived, each freshly started.

# One measurement. Prints the outage in ms.
failover_once() { # DAEMON PREFIX INTERVAL
    local daemon="$1" p="$2" interval="$3" pa pb ping_pid t_cut
    local -a vips
    mapfile -t vips < <(groups_path | addresses_of)
    pa="$(groups_path | start_daemon "$daemon" "$p" a 200 "$interval" 1)"
    pb="$(groups_path | start_daemon "$daemon" "$p" b 100 "$interval" 1)"
    local ok=1
    wait_for 30 a_is_master "$p" "${vips[@]}" || ok=0
    # Let b hear a few adverts so it learns the master's interval; make sure traffic flows.
    sleep "$(awk -v ms="$(interval_ms "$interval")" 'BEGIN { printf "%.2f", 0.5 + 3 * ms / 1000 }')"
    ip netns exec "$p-client" ping -n -q -c 3 -i 0.05 -W 1 10.76.4.10 >/dev/null 2>&1 || ok=0
    if ((ok)); then
        # UDP probes every 1 ms to the server's echo, for 0.5 s before the cut and twice
        # Master_Down_Interval plus a second after it.
        ip netns exec "$p-client" chrt -r 20 "$PROBE_BIN" send 10.76.4.10:7 1000 \
            "$(awk -v ms="$(interval_ms "$interval")" 'BEGIN { printf "%.2f", 1.5 + 8 * ms / 1000 }')" \
            >"$WORK/probe.out" 2>&1 &
        ping_pid=$!
        sleep 0.5
        t_cut="$(now)"
        "$LAB" cut "$p" a all
        wait_for 30 b_holds_all "$p" "${vips[@]}" || ok=0
        wait "$ping_pid" 2>/dev/null || ok=0
    fi
    stop_daemon "$pa"
    stop_daemon "$pb"
    "$LAB" restore "$p" a all
    if ((ok)); then
        # The longest gap between two echoes, if it ended after the cut.
        awk -v cut="$t_cut" '{ if ($2 > cut) print $1; else print "n/a" }' "$WORK/probe.out"
    else
        echo "n/a"
    fi
}

bench_failover() {
    local p interval ms run daemon out
    p="$(lab_up f)"
    ip netns exec "$p-server" chrt -r 20 "$PROBE_BIN" echo 7 >/dev/null 2>&1 &
    echo $! >>"$WORK/pids"
    echo
    echo "### Failover: outage after router loss (median of $RUNS runs)"
    echo
    echo "The client sends a UDP probe to the server through the VIPs every 1 ms (examples/probe.rs, which
the server echoes; ping sends in ~10 ms steps once replies stop; both ends run SCHED_RR so the
instrument is not what is late on a loaded machine); router a (priority 200) is cut off at"
    echo "the bridge; outage = longest gap between echoes. b has priority 100. Start: $(load_note)."
    echo
    echo "| interval | Master_Down_Interval | floor (MDI - interval .. MDI) | vrrpd | ${DAEMONS[1]} | vrrpd / MDI | vrrpd / ${DAEMONS[1]} | vrrpd runs | ${DAEMONS[1]} runs |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for interval in $INTERVALS; do
        ms="$(interval_ms "$interval")"
        for daemon in "${DAEMONS[@]}"; do : >"$WORK/failover-$interval-$daemon"; done
        for ((run = 1; run <= RUNS; run++)); do
            for daemon in "${DAEMONS[@]}"; do
                out="$(failover_once "$daemon" "$p" "$interval")"
                log "failover $interval $daemon run $run: $out ms"
                echo "$out" >>"$WORK/failover-$interval-$daemon"
            done
        done
        local mdi lo v k
        mdi="$(mdi_ms "$ms" 100)"
        lo="$(awk -v m="$mdi" -v i="$ms" 'BEGIN { printf "%.1f", m - i }')"
        v="$(grep -v n/a "$WORK/failover-$interval-vrrpd" | median)"
        k="$(grep -v n/a "$WORK/failover-$interval-keepalived" | median)"
        echo "| $interval | $mdi ms | $lo .. $mdi ms | $v ms | $k ms | $(ratio "$v" "$mdi") | $(ratio "$v" "$k") | $(paste -sd' ' "$WORK/failover-$interval-vrrpd") | $(paste -sd' ' "$WORK/failover-$interval-keepalived") |"
    done
    echo
    echo "End: $(load_note)."
}

# ---------------------------------------------------------------------------------------------
# stability: both daemons at once, each in its own lab, under one stress-ng load.

bench_stability() {
    local pv pk daemon p r
    local -a vips
    mapfile -t vips < <(groups_sync4 | addresses_of)
    pv="$(lab_up s1)"
    pk="$(lab_up s2)"
    declare -A lab_of=([vrrpd]="$pv" [${DAEMONS[1]}]="$pk")
    for daemon in "${DAEMONS[@]}"; do
        p="${lab_of[$daemon]}"
        groups_sync4 | start_daemon "$daemon" "$p" a 200 10ms 1 >/dev/null
        groups_sync4 | start_daemon "$daemon" "$p" b 100 10ms 1 >/dev/null
    done
    for daemon in "${DAEMONS[@]}"; do
        wait_for 30 a_is_master "${lab_of[$daemon]}" "${vips[@]}" || die "stability: $daemon did not converge"
    done
    sleep 1
    declare -A before after
    for daemon in "${DAEMONS[@]}"; do
        for r in a b; do before[$daemon$r]="$("${daemon}_transitions" "${lab_of[$daemon]}" "$r")"; done
    done
    local load_before
    load_before="$(load_note)"
    stress-ng --cpu 2 --vm 1 --timeout "${STABILITY_SECONDS}s" --quiet &
    STRESS_PID=$!
    wait "$STRESS_PID" || true
    STRESS_PID=""
    sleep 1
    echo
    echo "### Stability: 10 ms adverts, 4-group sync group, ${STABILITY_SECONDS} s under stress-ng --cpu 2 --vm 1"
    echo
    echo "Both pairs ran at the same time, each in its own lab. Before: $load_before."
    echo
    echo "| daemon | spurious transitions on a | on b | a still MASTER of all 4 at the end |"
    echo "|---|---|---|---|"
    for daemon in "${DAEMONS[@]}"; do
        p="${lab_of[$daemon]}"
        for r in a b; do after[$daemon$r]="$("${daemon}_transitions" "$p" "$r")"; done
        local still=no
        a_is_master "$p" "${vips[@]}" && still=yes
        echo "| $daemon | $((after[${daemon}a] - before[${daemon}a])) | $((after[${daemon}b] - before[${daemon}b])) | $still |"
    done
    echo
    echo "End: $(load_note)."
    for p in "$pv" "$pk"; do "$LAB" down "$p" >/dev/null; done
}

# ---------------------------------------------------------------------------------------------
# scale: both daemons at once, each in its own lab; CPU over SCALE_WINDOW, RUNS windows.

scale_case() { # GROUPS INTERVAL
    local n="$1" interval="$2" daemon p r run
    local -a vips
    mapfile -t vips < <(groups_scale "$n" | addresses_of)
    local pv pk
    pv="$(lab_up "c$n")"
    pk="$(lab_up "k$n")"
    declare -A lab_of=([vrrpd]="$pv" [${DAEMONS[1]}]="$pk") pid_of
    # a first, b once a is MASTER of everything: started together, 200 keepalived groups can
    # fight for a long time on a loaded machine, and this measures the steady state.
    for daemon in "${DAEMONS[@]}"; do
        pid_of[${daemon}a]="$(groups_scale "$n" | start_daemon "$daemon" "${lab_of[$daemon]}" a 200 "$interval" 0)"
    done
    for daemon in "${DAEMONS[@]}"; do
        wait_for 60 a_is_master "${lab_of[$daemon]}" "${vips[@]}" \
            || log "scale: $daemon on a did not become MASTER of $n groups"
        pid_of[${daemon}b]="$(groups_scale "$n" | start_daemon "$daemon" "${lab_of[$daemon]}" b 100 "$interval" 0)"
    done
    sleep 3
    for daemon in "${DAEMONS[@]}"; do
        wait_for 60 a_is_master "${lab_of[$daemon]}" "${vips[@]}" \
            || log "scale: $daemon did not converge on $n groups"
    done
    sleep 2
    declare -A tr0
    for daemon in "${DAEMONS[@]}"; do for r in a b; do
        : >"$WORK/scale-$n-$daemon$r"
        tr0[$daemon$r]="$("${daemon}_transitions" "${lab_of[$daemon]}" "$r")"
    done; done
    for ((run = 1; run <= RUNS; run++)); do
        declare -A t0
        local w0 w1
        w0="$(now)"
        for daemon in "${DAEMONS[@]}"; do for r in a b; do
            # shellcheck disable=SC2046
            t0[$daemon$r]="$(cpu_sample $(pid_tree "${pid_of[$daemon$r]}"))"
        done; done
        sleep "$SCALE_WINDOW"
        w1="$(now)"
        for daemon in "${DAEMONS[@]}"; do for r in a b; do
            local t1
            # shellcheck disable=SC2046
            t1="$(cpu_sample $(pid_tree "${pid_of[$daemon$r]}"))"
            # "total user switches": ms of CPU per second of wall time, and wake-ups per second.
            awk -v a="${t0[$daemon$r]}" -v b="$t1" -v hz="$(getconf CLK_TCK)" -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" \
                'BEGIN { split(a, x, " "); split(b, y, " ")
                    printf "%.2f %.1f %.0f\n", (y[1] - x[1]) / 1e6 / w, (y[2] - x[2]) * 1000 / hz / w, (y[3] - x[3]) / w }' \
                >>"$WORK/scale-$n-$daemon$r"
        done; done
        log "scale $n@$interval window $run: $(for d in "${DAEMONS[@]}"; do for r in a b; do printf '%s%s=%s ' "$d" "$r" "$(tail -1 "$WORK/scale-$n-$d$r" | cut -d' ' -f1)"; done; done)"
    done
    local still
    for daemon in "${DAEMONS[@]}"; do
        for r in a b; do
            local pids rss_main rss_all nlwp cpu user wakeups
            pids="$(pid_tree "${pid_of[$daemon$r]}")"
            rss_main=0 rss_all=0 nlwp=0
            for pid in $pids; do
                local k
                k="$(rss_kb "$pid")"
                rss_all=$((rss_all + k))
                ((k > rss_main)) && rss_main=$k
                nlwp=$((nlwp + $(threads "$pid")))
            done
            cpu="$(cut -d' ' -f1 "$WORK/scale-$n-$daemon$r" | median)"
            user="$(cut -d' ' -f2 "$WORK/scale-$n-$daemon$r" | median)"
            wakeups="$(cut -d' ' -f3 "$WORK/scale-$n-$daemon$r" | median)"
            local flaps=$(($("${daemon}_transitions" "${lab_of[$daemon]}" "$r") - tr0[$daemon$r]))
            echo "$daemon $r $cpu $rss_main $rss_all $(wc -w <<<"$pids") $nlwp $flaps $user $wakeups" >>"$WORK/scale-$n-summary"
        done
        still=no
        a_is_master "${lab_of[$daemon]}" "${vips[@]}" && still=yes
        echo "$daemon $still" >>"$WORK/scale-$n-master"
    done
    for daemon in "${DAEMONS[@]}"; do for r in a b; do stop_daemon "${pid_of[$daemon$r]}"; done; done
    for p in "$pv" "$pk"; do "$LAB" down "$p" >/dev/null; done
}

bench_scale() {
    local n interval
    echo
    echo "### Scale: CPU and memory (median of $RUNS windows of ${SCALE_WINDOW} s)"
    echo
    echo "Groups spread over eth1, eth2 and eth3 (VRIDs 1..N/3 on each), one /32 VIP each, no sync"
    echo "group; a has priority 200 (MASTER of all), b 100. Both pairs ran at the same time, each in"
    echo "its own lab. CPU = time on a CPU of every thread of the daemon's processes (keepalived:"
    echo "parent + VRRP child), from /proc/PID/task/*/schedstat (exact), per second of wall time; user"
    echo "space in brackets, from stat's sampled utime (approximate); the rest is the kernel's sending"
    echo "and receiving of the adverts (for a sender, including their delivery to the bridge and the"
    echo "receivers). Wake-ups: context switches per second. RSS: largest process / all processes."
    echo "Start: $(load_note)."
    echo
    echo "| groups @ interval | router | vrrpd CPU ms/s | ${DAEMONS[1]} CPU ms/s | CPU ratio | wake-ups/s (vrrpd / ${DAEMONS[1]}) | vrrpd RSS | ${DAEMONS[1]} RSS | vrrpd procs/threads | ${DAEMONS[1]} procs/threads | transitions while measured (vrrpd / ${DAEMONS[1]}) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for spec in "200 100ms" "20 10ms"; do
        read -r n interval <<<"$spec"
        : >"$WORK/scale-$n-summary"
        : >"$WORK/scale-$n-master"
        scale_case "$n" "$interval"
        for r in a b; do
            local v k
            read -r _ _ vc vr va vp vt vf vu vw < <(grep "^vrrpd $r " "$WORK/scale-$n-summary")
            read -r _ _ kc kr ka kp kt kf ku kw < <(grep "^${DAEMONS[1]} $r " "$WORK/scale-$n-summary")
            local role=master
            [[ $r == b ]] && role=backup
            echo "| $n @ $interval | $r ($role) | $vc (user $vu) | $kc (user $ku) | $(ratio "$vc" "$kc") | $vw / $kw | $((vr / 1024)).$(((vr % 1024) * 10 / 1024)) MB / $((va / 1024)).$(((va % 1024) * 10 / 1024)) MB | $((kr / 1024)).$(((kr % 1024) * 10 / 1024)) MB / $((ka / 1024)).$(((ka % 1024) * 10 / 1024)) MB | $vp/$vt | $kp/$kt | $vf / $kf |"
        done
        echo "| $n @ $interval | a MASTER of all at the end | $(awk '$1 == "vrrpd" { print $2 }' "$WORK/scale-$n-master") | $(awk -v d="${DAEMONS[1]}" '$1 == d { print $2 }' "$WORK/scale-$n-master") | | | | | | | |"
    done
    echo
    echo "End: $(load_note)."
}

# ---------------------------------------------------------------------------------------------
# syncgroup: router loss until all four groups are MASTER on b, from b's address events.

# Seconds since midnight (UTC) of an `ip -ts monitor` line "[YYYY-MM-DDTHH:MM:SS.uuuuuu] ...".
syncgroup_once() { # DAEMON PREFIX -> "total spread"
    local daemon="$1" p="$2" pa pb mon_pid t_cut ok=1
    local -a vips
    mapfile -t vips < <(groups_sync4 | addresses_of)
    pa="$(groups_sync4 | start_daemon "$daemon" "$p" a 200 "$SYNC_INTERVAL" 1)"
    pb="$(groups_sync4 | start_daemon "$daemon" "$p" b 100 "$SYNC_INTERVAL" 1)"
    wait_for 30 a_is_master "$p" "${vips[@]}" || ok=0
    sleep "$(awk -v ms="$(interval_ms "$SYNC_INTERVAL")" 'BEGIN { printf "%.2f", 0.5 + 3 * ms / 1000 }')"
    if ((ok)); then
        ip -ts -n "$p-b" monitor address >"$WORK/monitor.log" 2>&1 &
        mon_pid=$!
        sleep 0.3
        t_cut="$(date +%H:%M:%S.%N)"
        "$LAB" cut "$p" a all
        wait_for 30 b_holds_all "$p" "${vips[@]}" || ok=0
        sleep 0.1
        kill "$mon_pid" 2>/dev/null || true
        wait "$mon_pid" 2>/dev/null || true
    fi
    stop_daemon "$pa"
    stop_daemon "$pb"
    "$LAB" restore "$p" a all
    if ((ok)); then
        local re
        re="$(printf '%s|' "${vips[@]}")"
        awk -v cut="$t_cut" -v re=" (${re%|})/" '
            function tod(s,  h) { split(s, h, ":"); return h[1] * 3600 + h[2] * 60 + h[3] }
            BEGIN { c = tod(cut) }
            $0 ~ re && $0 !~ /Deleted/ { t = tod(substr($1, 13, 15)); if (!first || t < first) first = t; if (t > last) last = t; n++ }
            END { if (n < 4) print "n/a n/a"; else printf "%.1f %.1f\n", (last - c) * 1000, (last - first) * 1000 }' \
            "$WORK/monitor.log"
    else
        echo "n/a n/a"
    fi
}

bench_syncgroup() {
    local p run daemon out ms
    p="$(lab_up g)"
    ms="$(interval_ms "$SYNC_INTERVAL")"
    for daemon in "${DAEMONS[@]}"; do : >"$WORK/sync-$daemon"; done
    for ((run = 1; run <= RUNS; run++)); do
        for daemon in "${DAEMONS[@]}"; do
            out="$(syncgroup_once "$daemon" "$p")"
            log "syncgroup $daemon run $run: $out (ms to all MASTER, spread)"
            echo "$out" >>"$WORK/sync-$daemon"
        done
    done
    echo
    echo "### Sync group: router loss until all 4 groups (LAN/WAN x IPv4/IPv6) are MASTER on b"
    echo
    echo "$SYNC_INTERVAL adverts, b priority 100 (Master_Down_Interval $(mdi_ms "$ms" 100) ms). Times from"
    echo "b's address events (ip -ts monitor). Spread = last VIP added - first VIP added. Median of"
    echo "$RUNS runs. $(load_note)."
    echo
    echo "| daemon | cut to all MASTER | spread | runs (total/spread) |"
    echo "|---|---|---|---|"
    for daemon in "${DAEMONS[@]}"; do
        local total spread
        total="$(awk '$1 != "n/a" { print $1 }' "$WORK/sync-$daemon" | median)"
        spread="$(awk '$2 != "n/a" { print $2 }' "$WORK/sync-$daemon" | median)"
        echo "| $daemon | $total ms | $spread ms | $(awk '{ printf "%s%s/%s", (NR > 1 ? ", " : ""), $1, $2 }' "$WORK/sync-$daemon") |"
    done
}

# ---------------------------------------------------------------------------------------------

main() {
    local what="${1:-}"
    case "$what" in
        failover | stability | scale | syncgroup | all) ;;
        *) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
    ((EUID == 0)) || die "needs root (network namespaces)"
    [[ "${COMPARE:-keepalived}" != keepalived ]] || command -v "$KEEPALIVED_BIN" >/dev/null || die "keepalived not found (netns-lab/setup.sh installs it)"
    if [[ "$what" == stability || "$what" == all ]]; then
        command -v stress-ng >/dev/null || die "stress-ng not found (netns-lab/setup.sh installs it)"
    fi
    PROBE_BIN="${PROBE_BIN:-$ROOT/target/release/examples/probe}"
    if [[ "$what" == failover || "$what" == all ]] && [[ ! -x "$PROBE_BIN" ]]; then
        (cd "$ROOT" && cargo build --release --example probe)
    fi
    if [[ -z "${VRRPD_BIN:-}" ]]; then
        VRRPD_BIN="$ROOT/target/dist/vrrpd"
        (cd "$ROOT" && cargo build --profile dist --bin vrrpd)
    fi
    mkdir -p "$WORK"
    : >"$WORK/pids"
    : >"$WORK/labs"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    log "work directory $WORK"
    echo "## Run of $(date -u +%Y-%m-%dT%H:%MZ): $("$VRRPD_BIN" --version), $("$KEEPALIVED_BIN" --version 2>&1 | head -1)"
    echo
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%d MB", $2 / 1024 }' /proc/meminfo), kernel $(uname -r)."
    case "$what" in
        all) bench_failover; bench_syncgroup; bench_scale; bench_stability ;;
        *) "bench_$what" ;;
    esac
}

# Sourcing the file (for experiments) defines the functions without running anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
