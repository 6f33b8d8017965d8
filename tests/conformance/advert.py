#!/usr/bin/env python3
"""Crafts VRRPv3 advertisements as hex for the conformance cases (tests/conformance/cases/).

Independent of vrrpd's codec on purpose: the bytes a case feeds the core must not come from
the code under test. IPv4 prints a whole datagram (IP header included, as a raw IPv4 socket
delivers it); IPv6 prints the VRRP payload only (a raw IPv6 socket delivers no IP header;
source, destination and hop limit go on the `rx` line).

    advert.py v4 --src 10.76.2.3 --vrid 51 --prio 150 --addr 10.76.2.1
    advert.py v6 --src fe80::3 --vrid 52 --prio 150 --addr 2001:db8:5:416::1
    advert.py v4 ... --form rfc9568        # RFC 9568 message-only checksum
    advert.py v4 ... --ttl 254 --version 2 --type 2 --count 0 --int 0 --bad-checksum
"""

import argparse
import ipaddress
import struct


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("family", choices=["v4", "v6"])
    p.add_argument("--src", required=True)
    p.add_argument("--dst")
    p.add_argument("--vrid", type=int, required=True)
    p.add_argument("--prio", type=int, required=True)
    p.add_argument("--int", dest="interval", type=int, default=100, help="centiseconds")
    p.add_argument("--addr", action="append", required=True)
    p.add_argument("--form", choices=["pseudo-header", "rfc9568"], default="pseudo-header")
    p.add_argument("--ttl", type=int, default=255)
    p.add_argument("--version", type=int, default=3)
    p.add_argument("--type", dest="mtype", type=int, default=1)
    p.add_argument("--count", type=int, help="Count IPvX Addrs as sent (default: the real count)")
    p.add_argument("--reserved", type=int, default=0, help="the 4 reserved bits")
    p.add_argument("--bad-checksum", action="store_true")
    p.add_argument("--truncate", type=int, help="drop this many bytes off the end of the VRRP message")
    a = p.parse_args()

    v6 = a.family == "v6"
    src = ipaddress.ip_address(a.src)
    dst = ipaddress.ip_address(a.dst or ("ff02::12" if v6 else "224.0.0.18"))
    addrs = b"".join(ipaddress.ip_address(x).packed for x in a.addr)
    count = len(a.addr) if a.count is None else a.count
    msg = bytearray(struct.pack("!BBBBHH", (a.version << 4) | a.mtype, a.vrid, a.prio, count,
                                (a.reserved << 12) | a.interval, 0) + addrs)
    if v6:
        pseudo = src.packed + dst.packed + struct.pack("!I", len(msg)) + b"\0\0\0" + bytes([112])
    elif a.form == "pseudo-header":
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 112, len(msg))
    else:
        pseudo = b""
    ck = csum(pseudo + bytes(msg))
    if a.bad_checksum:
        ck ^= 0x0101
    struct.pack_into("!H", msg, 6, ck)
    if a.truncate:
        msg = msg[: len(msg) - a.truncate]
    if v6:
        print(msg.hex())
        return
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(msg), 0, 0, a.ttl, 112, 0,
                                src.packed, dst.packed))
    struct.pack_into("!H", hdr, 10, csum(bytes(hdr)))
    print((hdr + msg).hex())


if __name__ == "__main__":
    main()
