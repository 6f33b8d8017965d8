//! Byte-exact codec tests against advertisements captured from keepalived 2.2.7
//! (`tests/fixtures/keepalived-v{4,6}.hex`, made by `tests/fixtures/capture-keepalived.sh`),
//! plus a hand-computed RFC 9568 (message-only checksum) IPv4 vector.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vrrpd::proto::packet::*;
use vrrpd::proto::{Centis, ChecksumForm};

/// A fixture: `#` comment lines, `key: value` lines, and hex lines holding the captured packet.
struct Fixture {
    bytes: Vec<u8>,
    src: Option<Ipv6Addr>,
    dst: Option<Ipv6Addr>,
    hop_limit: Option<u8>,
}

fn load(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut f = Fixture {
        bytes: Vec::new(),
        src: None,
        dst: None,
        hop_limit: None,
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line
            .split_once(':')
            .filter(|(k, _)| k.chars().all(|c| c.is_ascii_alphabetic() || c == '-'))
        {
            let value = value.trim();
            match key {
                "src" => f.src = Some(value.parse().unwrap()),
                "dst" => f.dst = Some(value.parse().unwrap()),
                "hop-limit" => f.hop_limit = Some(value.parse().unwrap()),
                other => panic!("{path}: unknown key {other}"),
            }
            continue;
        }
        assert!(line.len() % 2 == 0, "{path}: odd hex line {line}");
        for i in (0..line.len()).step_by(2) {
            f.bytes
                .push(u8::from_str_radix(&line[i..i + 2], 16).unwrap());
        }
    }
    f
}

#[test]
fn keepalived_ipv4_advert_decodes() {
    let datagram = load("keepalived-v4.hex").bytes;
    assert_eq!(datagram.len(), 32);
    assert_eq!(datagram[8], 255, "keepalived sends TTL 255");
    let rx = Advert::decode_ipv4(&datagram).unwrap();
    assert_eq!(
        rx.advert,
        Advert {
            vrid: 51,
            priority: 150,
            max_advert_interval: Centis::new(100).unwrap(),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 99, 1, 100))],
        }
    );
    assert_eq!(rx.source, IpAddr::V4(Ipv4Addr::new(10, 99, 1, 2)));
    assert_eq!(rx.destination, IpAddr::V4(VRRP_MCAST_V4));
    // keepalived 2.2.7 uses the RFC 5798 pseudo-header checksum on IPv4.
    assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
    assert_eq!(Advert::peek_vrid_ipv4(&datagram), Some(51));
}

#[test]
fn keepalived_ipv4_advert_reencodes_byte_exact() {
    let datagram = load("keepalived-v4.hex").bytes;
    let rx = Advert::decode_ipv4(&datagram).unwrap();
    let mut buf = Vec::new();
    rx.advert
        .encode(
            rx.source,
            rx.destination,
            ChecksumForm::PseudoHeader,
            &mut buf,
        )
        .unwrap();
    assert_eq!(buf, datagram[20..]);
    assert_eq!(rx.advert.buffer_len(), datagram.len() - 20);
}

#[test]
fn keepalived_ipv6_advert_decodes() {
    let f = load("keepalived-v6.hex");
    let (src, dst, hop_limit) = (f.src.unwrap(), f.dst.unwrap(), f.hop_limit.unwrap());
    // The fixture holds the whole IPv6 packet; the header agrees with the recorded metadata.
    assert_eq!(f.bytes[0] >> 4, 6);
    assert_eq!(f.bytes[6], VRRP_PROTO, "next header");
    assert_eq!(f.bytes[7], hop_limit);
    assert_eq!(f.bytes[8..24], src.octets());
    assert_eq!(f.bytes[24..40], dst.octets());
    assert_eq!(hop_limit, 255, "keepalived sends hop limit 255");
    assert_eq!(dst, VRRP_MCAST_V6);
    assert!(
        src.is_unicast_link_local(),
        "sent from the link-local address"
    );

    let payload = &f.bytes[40..];
    assert_eq!(
        u16::from_be_bytes([f.bytes[4], f.bytes[5]]) as usize,
        payload.len()
    );
    let rx = Advert::decode_ipv6(payload, src, dst, hop_limit).unwrap();
    assert_eq!(
        rx.advert,
        Advert {
            vrid: 52,
            priority: 150,
            max_advert_interval: Centis::new(100).unwrap(),
            // Only the configured VIP: keepalived does not prepend a link-local address.
            addresses: vec![IpAddr::V6("2001:db8:99::100".parse().unwrap())],
        }
    );
    assert_eq!(rx.source, IpAddr::V6(src));
    assert_eq!(rx.destination, IpAddr::V6(dst));
    assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
    assert_eq!(Advert::peek_vrid_ipv6(payload), Some(52));
}

#[test]
fn keepalived_ipv6_advert_reencodes_byte_exact() {
    let f = load("keepalived-v6.hex");
    let (src, dst) = (f.src.unwrap(), f.dst.unwrap());
    let payload = &f.bytes[40..];
    let rx = Advert::decode_ipv6(payload, src, dst, 255).unwrap();
    let mut buf = Vec::new();
    rx.advert
        .encode(src.into(), dst.into(), ChecksumForm::PseudoHeader, &mut buf)
        .unwrap();
    assert_eq!(buf, payload);
}

#[test]
fn keepalived_captures_fail_with_the_wrong_addresses() {
    // The checksums really cover the pseudo-header: other addresses break them.
    let f = load("keepalived-v6.hex");
    let other: Ipv6Addr = "fe80::1".parse().unwrap();
    assert_eq!(
        Advert::decode_ipv6(&f.bytes[40..], other, f.dst.unwrap(), 255),
        Err(DecodeError::Checksum)
    );
    let mut datagram = load("keepalived-v4.hex").bytes;
    datagram[15] = 3; // source 10.99.1.3
    assert_eq!(Advert::decode_ipv4(&datagram), Err(DecodeError::Checksum));
}

/// The captured advert with its checksum recomputed by hand in the RFC 9568 §5.2.8 form
/// (VRRP message only, no pseudo-header):
///
/// ```text
///   3133 + 9601 + 0064 + 0a63 + 0164   (checksum field taken as 0000)
/// = d35f  (no carry)                   ->  checksum = !d35f = 2ca0
/// ```
///
/// For comparison keepalived's pseudo-header form adds 0a63 0102 e000 0012 0070 000c = ebf3:
/// d35f + ebf3 = 1bf52 -> bf53 -> checksum !bf53 = 40ac, the captured value.
const RFC9568_V4: [u8; 32] = [
    0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xcf, 0x35, 0x0a, 0x63, 0x01,
    0x02, // IPv4
    0xe0, 0x00, 0x00, 0x12, // 224.0.0.18
    0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0x2c,
    0xa0, // v3 type 1, VRID 51, prio 150, 1 addr, 100 cs
    0x0a, 0x63, 0x01, 0x64, // 10.99.1.100
];

#[test]
fn rfc9568_hand_computed_ipv4_vector() {
    let rx = Advert::decode_ipv4(&RFC9568_V4).unwrap();
    assert_eq!(rx.checksum_form, ChecksumForm::Rfc9568);
    assert_eq!(rx.advert.vrid, 51);
    assert_eq!(rx.advert.priority, 150);
    assert_eq!(rx.advert.max_advert_interval, Centis::DEFAULT_ADVERT);
    assert_eq!(
        rx.advert.addresses,
        vec![IpAddr::V4(Ipv4Addr::new(10, 99, 1, 100))]
    );

    let mut buf = Vec::new();
    rx.advert
        .encode(rx.source, rx.destination, ChecksumForm::Rfc9568, &mut buf)
        .unwrap();
    assert_eq!(buf, RFC9568_V4[20..]);

    // The same advert in the pseudo-header form is exactly what keepalived sent.
    rx.advert
        .encode(
            rx.source,
            rx.destination,
            ChecksumForm::PseudoHeader,
            &mut buf,
        )
        .unwrap();
    assert_eq!(buf, load("keepalived-v4.hex").bytes[20..]);
}

#[test]
fn constants() {
    assert_eq!(VRRP_PROTO, 112);
    assert_eq!(VRRP_MCAST_V4, Ipv4Addr::new(224, 0, 0, 18));
    assert_eq!(VRRP_MCAST_V6, "ff02::12".parse::<Ipv6Addr>().unwrap());
}
