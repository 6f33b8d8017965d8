#!/usr/bin/env bash
# vrrpd network-namespace lab: two edge routers between a LAN and a WAN, plus a sync link.
#
#   lab.sh up      PREFIX                    build the lab (removes what it built on failure)
#   lab.sh down    PREFIX                    remove every namespace named PREFIX-* (idempotent)
#   lab.sh cut     PREFIX ROUTER SEGMENT     detach ROUTER (a|b) from SEGMENT (lan|wan|sync|all)
#                                            at the bridge; the router's own link stays up
#   lab.sh restore PREFIX ROUTER SEGMENT     re-attach it
#   lab.sh exec    PREFIX NODE -- CMD...     run CMD in NODE (a|b|client|server|br)
#   lab.sh config  PREFIX ROUTER PRIORITY    print a demo vrrpd config for ROUTER
#   lab.sh help
#
# See netns-lab/README.md for the topology and the addressing.
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODES=(br a b client server)
ROUTERS=(a b)
SEGMENTS=(lan wan sync)

die() { echo "lab.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# PREFIX is letters, digits and underscores only: no '-', so "PREFIX-" can never be the start of
# another lab's namespace names, and `down` can safely delete "PREFIX-*".
check_prefix() {
    [[ "${1:-}" =~ ^[A-Za-z0-9_]{1,32}$ ]] \
        || die "PREFIX must be 1-32 characters of [A-Za-z0-9_], got '${1:-}'"
}

check_router() {
    [[ "${1:-}" == a || "${1:-}" == b ]] || die "ROUTER must be a or b, got '${1:-}'"
}

# Namespaces whose name starts with "$1-".
lab_namespaces() {
    ip netns list 2>/dev/null | awk -v p="$1-" 'index($1, p) == 1 { print $1 }'
}

ns_exists() {
    ip netns list 2>/dev/null | awk '{ print $1 }' | grep -qxF -- "$1"
}

nsysctl() { # NS KEY=VALUE...
    local ns="$1"; shift
    ip netns exec "$ns" sysctl -qw "$@" >/dev/null
}

# Test hook: LAB_FAIL_AT=<stage> makes `up` fail at that stage, to prove the cleanup trap.
fail_point() {
    if [[ "${LAB_FAIL_AT:-}" == "$1" ]]; then
        echo "lab.sh: injected failure at stage '$1' (LAB_FAIL_AT)" >&2
        return 1
    fi
}

cmd_down() {
    check_prefix "$1"
    local p="$1" ns pids
    local -a all
    mapfile -t all < <(lab_namespaces "$p")
    ((${#all[@]})) || return 0
    # Processes still running inside would keep a namespace (and its veths) alive after
    # `ip netns delete`: stop them first. They live in this lab's namespaces, nowhere else.
    for sig in TERM KILL; do
        pids=""
        for ns in "${all[@]}"; do
            pids+=" $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)"
        done
        [[ -n "${pids// /}" ]] || break
        pids="$(tr ' ' '\n' <<<"$pids" | grep -vxF -e "$$" -e '' || true)" # never ourselves
        [[ -n "$pids" ]] || break
        # shellcheck disable=SC2086
        kill -s "$sig" $pids 2>/dev/null || true
        [[ "$sig" == KILL ]] && break
        for _ in $(seq 20); do # up to 2 s for a clean exit
            pids=""
            for ns in "${all[@]}"; do
                pids+="$(ip netns pids "$ns" 2>/dev/null || true)"
            done
            [[ -z "$pids" ]] && break
            sleep 0.1
        done
    done
    # Routers, client and server first, the bridges last.
    for ns in "${all[@]}"; do
        [[ "$ns" == "$p-br" ]] && continue
        ip netns delete "$ns" 2>/dev/null || true
    done
    ip netns delete "$p-br" 2>/dev/null || true
    local left
    left="$(lab_namespaces "$p")"
    [[ -z "$left" ]] || { echo "lab.sh: could not delete: $left" >&2; return 1; }
}

print_addressing() {
    local p="$1"
    cat <<EOF
lab $p is up. Namespaces: $p-br (bridges), $p-a, $p-b (routers), $p-client, $p-server

  segment  bridge   subnet                             VIP                      a          b          host
  LAN      br-lan   10.76.2.0/24  2001:db8:5:416::/64  10.76.2.1  ...:416::1    .2  ::2    .3  ::3    client eth0 .10 ::10
  WAN      br-wan   10.76.4.0/24  2001:db8:5:34cd::/64 10.76.4.1  ...:34cd::1   .2  ::2    .3  ::3    server eth0 .10 ::10
  sync     br-sync  10.76.9.0/30                       -                        .1         .2

  routers: eth1 = LAN, eth2 = WAN, eth3 = sync (veth peers a-lan, a-wan, a-sync, b-lan, ... in $p-br)
  client default routes via 10.76.2.1 and 2001:db8:5:416::1 (the LAN VIPs)
  server default routes via 10.76.4.1 and 2001:db8:5:34cd::1 (the WAN VIPs)
  The VIPs are on nobody until a VRRP daemon (or a test) puts them somewhere.
EOF
}

up_exit() {
    local rc=$?
    if [[ "$UP_DONE" != 1 ]]; then
        echo "lab.sh: up $UP_PREFIX failed (exit $rc); removing what was built" >&2
        cmd_down "$UP_PREFIX" || true
        ((rc != 0)) || rc=1
    fi
    exit "$rc"
}

cmd_up() {
    check_prefix "$1"
    local p="$1" node ns r seg
    for node in "${NODES[@]}"; do
        ns_exists "$p-$node" && die "namespace $p-$node already exists (lab $p is up? run: $0 down $p)"
    done
    # From here on, everything made is removed again if anything fails or we are interrupted.
    UP_PREFIX="$p"
    UP_DONE=0
    trap up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    for node in "${NODES[@]}"; do
        ns="$p-$node"
        ip netns add "$ns"
        # No DAD delay, so addresses are usable at once (set before any interface exists).
        nsysctl "$ns" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
        ip -n "$ns" link set lo up
    done
    fail_point namespaces

    # The bridge namespace switches frames and nothing else: no IPv6 on its ports (no
    # link-local addresses, MLD or ND of its own in captures), and bridged frames bypass
    # that namespace's netfilter (br_netfilter is built into this kernel and defaults to on).
    nsysctl "$p-br" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    for key in bridge-nf-call-iptables bridge-nf-call-ip6tables bridge-nf-call-arptables; do
        if ip netns exec "$p-br" test -e "/proc/sys/net/bridge/$key"; then
            nsysctl "$p-br" "net.bridge.$key=0"
        fi
    done

    for r in "${ROUTERS[@]}"; do
        ns="$p-$r"
        nsysctl "$ns" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
        # Keep the lab's static IPv6 addresses when a test takes a link down and up again
        # (IPv4 addresses are always kept); a daemon must remove its VIPs itself.
        nsysctl "$ns" net.ipv6.conf.all.keep_addr_on_down=1 net.ipv6.conf.default.keep_addr_on_down=1
        # This kernel defaults to 2 ("only while a listener exists"): entries created before a
        # listener subscribed never report events, so conntrack sync would miss their updates
        # and destruction. 1 = events for every entry.
        if ip netns exec "$ns" test -e /proc/sys/net/netfilter/nf_conntrack_events; then
            nsysctl "$ns" net.netfilter.nf_conntrack_events=1
        fi
    done
    for node in client server; do
        # Static default routes only; nothing in the lab sends router advertisements.
        nsysctl "$p-$node" net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
    done

    for seg in "${SEGMENTS[@]}"; do
        ip -n "$p-br" link add "br-$seg" type bridge \
            stp_state 0 forward_delay 0 mcast_snooping 0
        ip -n "$p-br" link set "br-$seg" up
    done
    fail_point bridges

    local -A ifname=([lan]=eth1 [wan]=eth2 [sync]=eth3)
    for r in "${ROUTERS[@]}"; do
        for seg in "${SEGMENTS[@]}"; do
            ip link add "${ifname[$seg]}" netns "$p-$r" type veth peer name "$r-$seg" netns "$p-br"
            ip -n "$p-br" link set "$r-$seg" master "br-$seg" up
            ip -n "$p-$r" link set "${ifname[$seg]}" up
        done
    done
    ip link add eth0 netns "$p-client" type veth peer name client-lan netns "$p-br"
    ip -n "$p-br" link set client-lan master br-lan up
    ip -n "$p-client" link set eth0 up
    ip link add eth0 netns "$p-server" type veth peer name server-wan netns "$p-br"
    ip -n "$p-br" link set server-wan master br-wan up
    ip -n "$p-server" link set eth0 up
    fail_point links

    local -A host=([a]=2 [b]=3)
    local -A sync=([a]=1 [b]=2)
    for r in "${ROUTERS[@]}"; do
        ns="$p-$r"
        ip -n "$ns" addr add "10.76.2.${host[$r]}/24" dev eth1
        ip -n "$ns" addr add "2001:db8:5:416::${host[$r]}/64" dev eth1 nodad
        ip -n "$ns" addr add "10.76.4.${host[$r]}/24" dev eth2
        ip -n "$ns" addr add "2001:db8:5:34cd::${host[$r]}/64" dev eth2 nodad
        ip -n "$ns" addr add "10.76.9.${sync[$r]}/30" dev eth3
    done
    ip -n "$p-client" addr add 10.76.2.10/24 dev eth0
    ip -n "$p-client" addr add 2001:db8:5:416::10/64 dev eth0 nodad
    ip -n "$p-client" route add default via 10.76.2.1 dev eth0
    ip -n "$p-client" -6 route add default via 2001:db8:5:416::1 dev eth0
    ip -n "$p-server" addr add 10.76.4.10/24 dev eth0
    ip -n "$p-server" addr add 2001:db8:5:34cd::10/64 dev eth0 nodad
    ip -n "$p-server" route add default via 10.76.4.1 dev eth0
    ip -n "$p-server" -6 route add default via 2001:db8:5:34cd::1 dev eth0
    fail_point addresses

    UP_DONE=1
    trap - EXIT INT TERM
    print_addressing "$p"
}

# ROUTER SEGMENT -> "a-lan a-wan a-sync" etc.
ports_of() {
    local r="$1" seg="$2"
    check_router "$r"
    case "$seg" in
        lan|wan|sync) echo "$r-$seg" ;;
        all) echo "$r-lan $r-wan $r-sync" ;;
        *) die "SEGMENT must be lan, wan, sync or all, got '$seg'" ;;
    esac
}

# The router end of a bridge port must still be UP with carrier: the router cannot tell.
check_router_link_up() {
    local p="$1" port="$2" r seg dev flags
    r="${port%%-*}"; seg="${port#*-}"
    case "$seg" in lan) dev=eth1 ;; wan) dev=eth2 ;; sync) dev=eth3 ;; esac
    flags="$(ip -n "$p-$r" -o link show dev "$dev")"
    [[ "$flags" == *"LOWER_UP"* && "$flags" == *"state UP"* ]] \
        || die "after cut, $p-$r $dev is no longer UP with carrier: $flags"
}

cmd_cut() {
    check_prefix "$1"
    local p="$1" port
    ns_exists "$p-br" || die "lab $p is not up"
    for port in $(ports_of "$2" "$3"); do
        ip -n "$p-br" link set "$port" nomaster
        check_router_link_up "$p" "$port"
    done
}

cmd_restore() {
    check_prefix "$1"
    local p="$1" port
    ns_exists "$p-br" || die "lab $p is not up"
    for port in $(ports_of "$2" "$3"); do
        ip -n "$p-br" link set "$port" master "br-${port#*-}"
        ip -n "$p-br" link set "$port" up
    done
}

cmd_exec() {
    check_prefix "$1"
    local p="$1" node="$2"
    shift 2
    [[ "${1:-}" == "--" ]] && shift
    (($#)) || die "exec: no command given"
    [[ " ${NODES[*]} " == *" $node "* ]] || die "NODE must be one of: ${NODES[*]}, got '$node'"
    exec ip netns exec "$p-$node" "$@"
}

cmd_config() {
    check_prefix "$1"
    check_router "$2"
    local p="$1" r="$2" prio="$3"
    [[ "$prio" =~ ^[0-9]+$ ]] && ((prio >= 1 && prio <= 255)) \
        || die "PRIORITY must be 1..=255, got '$prio'"
    sed -e "s|@ROUTER_ID@|edge-$r|g" \
        -e "s|@SOCKET@|/tmp/vrrpd-lab-$p/$r.sock|g" \
        -e "s|@PRIORITY@|$prio|g" \
        "$LAB_DIR/configs/router.toml.in"
}

main() {
    local cmd="${1:-help}"
    (($#)) && shift
    case "$cmd" in
        up)      (($# == 1)) || die "usage: lab.sh up PREFIX"; cmd_up "$1" ;;
        down)    (($# == 1)) || die "usage: lab.sh down PREFIX"; cmd_down "$1" ;;
        cut)     (($# == 3)) || die "usage: lab.sh cut PREFIX ROUTER SEGMENT"; cmd_cut "$@" ;;
        restore) (($# == 3)) || die "usage: lab.sh restore PREFIX ROUTER SEGMENT"; cmd_restore "$@" ;;
        exec)    (($# >= 3)) || die "usage: lab.sh exec PREFIX NODE -- CMD..."; cmd_exec "$@" ;;
        config)  (($# == 3)) || die "usage: lab.sh config PREFIX ROUTER PRIORITY"; cmd_config "$@" ;;
        help|-h|--help) usage ;;
        *) usage >&2; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
