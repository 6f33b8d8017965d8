//! The per-advert cost of the protocol core on one core: what a backup does with each advert
//! of its master (decode + validate + state-machine step), and what a master does to build one
//! (encode). Criterion prints adverts per second (`thrpt`); compare them across commits with
//! `cargo bench --bench advert -- --save-baseline before` and `--baseline before`.
//!
//! Kept short (about 20 s for the whole file) so it can run on every change.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vrrpd::proto::engine::{Engine, GroupSpec};
use vrrpd::proto::packet::{Advert, VRRP_MCAST_V4, VRRP_MCAST_V6};
use vrrpd::proto::router::{RouterParams, State};
use vrrpd::proto::{Centis, ChecksumForm, Family};

const MASTER_V4: Ipv4Addr = Ipv4Addr::new(10, 76, 2, 2);
const BACKUP_V4: Ipv4Addr = Ipv4Addr::new(10, 76, 2, 3);
const VIP_V4: Ipv4Addr = Ipv4Addr::new(10, 76, 2, 1);
const MASTER_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const BACKUP_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3);
const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0x416, 0, 0, 0, 1);

/// The lab's group: VRID 21, 10 ms adverts, one virtual address.
fn advert(vip: IpAddr, priority: u8) -> Advert {
    Advert {
        vrid: 21,
        priority,
        max_advert_interval: Centis::new(1).unwrap(),
        addresses: vec![vip],
    }
}

/// A started engine with one group in BACKUP, as router b of the lab.
fn backup(family: Family, vip: IpAddr, own: IpAddr, now: Instant) -> Engine {
    let params = RouterParams {
        name: "lan".into(),
        vrid: 21,
        family,
        priority: 100,
        advertise_interval: Centis::new(1).unwrap(),
        preempt: true,
        preempt_delay: Duration::ZERO,
        accept: false,
        addresses: vec![vip],
        primary_address: own,
    };
    let mut engine = Engine::new(
        vec![GroupSpec {
            params,
            sync_group: None,
        }],
        vec![],
    );
    engine.start(now);
    while engine.poll_action().is_some() {}
    assert_eq!(engine.router(0).state(), State::Backup);
    engine
}

/// The IPv4 datagram a raw socket delivers: a 20-byte header (TTL 255, protocol 112) + VRRP.
fn ipv4_datagram(vrrp: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let total = (20 + vrrp.len()) as u16;
    let mut d = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 255, 112, 0, 0];
    d[2..4].copy_from_slice(&total.to_be_bytes());
    d.extend_from_slice(&src.octets());
    d.extend_from_slice(&dst.octets());
    d.extend_from_slice(vrrp);
    d
}

fn receive(c: &mut Criterion) {
    let mut group = c.benchmark_group("backup-receives-advert");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();

    let mut vrrp = Vec::new();
    advert(IpAddr::V4(VIP_V4), 200)
        .encode(
            IpAddr::V4(MASTER_V4),
            IpAddr::V4(VRRP_MCAST_V4),
            ChecksumForm::PseudoHeader,
            &mut vrrp,
        )
        .unwrap();
    let datagram = ipv4_datagram(&vrrp, MASTER_V4, VRRP_MCAST_V4);
    let mut engine = backup(Family::Ipv4, IpAddr::V4(VIP_V4), IpAddr::V4(BACKUP_V4), now);
    group.bench_function("ipv4", |b| {
        b.iter(|| {
            let rx = Advert::decode_ipv4(black_box(&datagram)).unwrap();
            engine.handle_advert(now, 0, &rx);
            black_box(engine.poll_action())
        })
    });
    assert_eq!(engine.router(0).state(), State::Backup);

    advert(IpAddr::V6(VIP_V6), 200)
        .encode(
            IpAddr::V6(MASTER_V6),
            IpAddr::V6(VRRP_MCAST_V6),
            ChecksumForm::PseudoHeader,
            &mut vrrp,
        )
        .unwrap();
    let mut engine = backup(Family::Ipv6, IpAddr::V6(VIP_V6), IpAddr::V6(BACKUP_V6), now);
    group.bench_function("ipv6", |b| {
        b.iter(|| {
            let rx = Advert::decode_ipv6(black_box(&vrrp), MASTER_V6, VRRP_MCAST_V6, 255).unwrap();
            engine.handle_advert(now, 0, &rx);
            black_box(engine.poll_action())
        })
    });
    assert_eq!(engine.router(0).state(), State::Backup);
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("master-encodes-advert");
    group.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(64);
    let v4 = advert(IpAddr::V4(VIP_V4), 200);
    group.bench_function("ipv4", |b| {
        b.iter(|| {
            black_box(&v4)
                .encode(
                    IpAddr::V4(MASTER_V4),
                    IpAddr::V4(VRRP_MCAST_V4),
                    ChecksumForm::PseudoHeader,
                    &mut buf,
                )
                .unwrap();
            black_box(buf.len())
        })
    });
    let v6 = advert(IpAddr::V6(VIP_V6), 200);
    group.bench_function("ipv6", |b| {
        b.iter(|| {
            black_box(&v6)
                .encode(
                    IpAddr::V6(MASTER_V6),
                    IpAddr::V6(VRRP_MCAST_V6),
                    ChecksumForm::PseudoHeader,
                    &mut buf,
                )
                .unwrap();
            black_box(buf.len())
        })
    });
    group.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = quick();
    targets = receive, encode
}
criterion_main!(benches);
