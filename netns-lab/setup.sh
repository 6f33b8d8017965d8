#!/usr/bin/env bash
# Prepares a Debian 12 machine for the lab, the demo and the tests: installs the packages that
# are missing (nothing when all are there), checks the Rust toolchain, and checks that this
# kernel can build the lab (network namespaces, veth, bridges). Run as root.
set -euo pipefail

PACKAGES=(
    iproute2 nftables conntrack conntrackd # the lab, netfilter, conntrack sync
    keepalived frr bird2                   # independent VRRP peers, BGP daemons
    tshark tcpdump                         # captures and VRRP dissection
    iputils-ping procps psmisc stress-ng   # ping, sysctl/pkill, killall, load
    python3-minimal                        # conntrack lab test: junk sent to the sync port
)
MIN_RUST="1.85" # edition 2024

die() { echo "setup.sh: $*" >&2; exit 1; }

installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done
# Rust links through the system C compiler.
command -v cc >/dev/null || missing+=(gcc libc6-dev)

if ((${#missing[@]})); then
    [[ $EUID -eq 0 ]] || die "run as root to install: ${missing[*]}"
    echo "setup.sh: installing ${missing[*]}"
    # tshark would ask whether non-root users may capture.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
    echo "setup.sh: all packages present"
fi

if ! command -v cargo >/dev/null; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        die "cargo is in ~/.cargo/bin but not on PATH: run  . \"\$HOME/.cargo/env\"  first"
    fi
    die "no Rust toolchain: install one (>= $MIN_RUST), e.g.
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\""
fi
version="$(cargo --version | awk '{ print $2 }')"
if [[ "$(printf '%s\n%s\n' "$MIN_RUST" "$version" | sort -V | head -n 1)" != "$MIN_RUST" ]]; then
    die "cargo $version is too old: the crate needs Rust >= $MIN_RUST (rustup update)"
fi
echo "setup.sh: cargo $version"

if [[ $EUID -ne 0 ]]; then
    echo "setup.sh: note: the lab, the demo and the lab tests need root" >&2
    exit 0
fi

# Can this kernel build the lab? A throwaway namespace with a bridge and a veth pair.
probe="vrrpd-setup-$$"
cleanup_probe() { ip netns delete "$probe" 2>/dev/null || true; }
trap cleanup_probe EXIT
ip netns add "$probe" || die "cannot create network namespaces"
ip -n "$probe" link add br0 type bridge mcast_snooping 0 \
    || die "no bridge support in this kernel"
ip -n "$probe" link add v0 type veth peer name v1 || die "no veth support in this kernel"
ip -n "$probe" link add m0 link v0 type macvlan mode bridge \
    || echo "setup.sh: warning: no macvlan support (needed for vmac = true and the FRR interop tests)" >&2
echo "setup.sh: kernel $(uname -r): network namespaces, bridges and veth work"
