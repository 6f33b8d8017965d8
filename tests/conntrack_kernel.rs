//! The kernel side of conntrack replication against real kernel tables in namespaces: entries
//! dumped from one namespace, sent through the wire form and installed into another come out
//! the same (tuples, NAT, status, mark, zone, labels, sequence adjustment, TCP state, flags per
//! direction, window scales, timeout); events arrive for NEW/UPDATE/DESTROY; a TCP flow started
//! through router a continues through router b under strict window tracking once b holds a's
//! entries; decoding never panics. Needs root.

mod lab;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lab::netns::{Netns, in_ns};
use lab::*;
use proptest::prelude::*;
use vrrpd::conntrack::entry::{RawAttr, RawPlace, ReplyTuple, TcpInfo, status};
use vrrpd::conntrack::kernel::{decode_kernel_message, encode_create_request};
use vrrpd::conntrack::{Conntrack, Entry, EventStream, FlowKey, KernelEvent};
use vrrpd::proto::Family;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open_ct(ns: &str, rt: &tokio::runtime::Runtime) -> Conntrack {
    in_ns(ns, Some(rt.handle()), || {
        Conntrack::open().expect("open conntrack")
    })
}

fn wire_round_trip(e: &Entry) -> Entry {
    let mut buf = Vec::new();
    e.encode(&mut buf);
    let d = Entry::decode(&buf).expect("decode own encoding");
    assert_eq!(&d, e);
    d
}

const CTA_SEQ_ADJ_ORIG: u16 = 15;
const CTA_LABELS: u16 = 22;
const CTA_HELP: u16 = 5;
const CTA_TUPLE_MASTER: u16 = 14;
const NESTED: u16 = 0x8000;

fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP entry with SNAT+mark+zone+labels+seq-adj as a router would hold it.
fn synthetic_tcp(i: u16) -> Entry {
    let mut seqadj = nla(1, &1000u32.to_be_bytes()); // CTA_SEQADJ_CORRECTION_POS
    seqadj.extend(nla(2, &(-4i32 as u32).to_be_bytes())); // OFFSET_BEFORE
    seqadj.extend(nla(3, &8u32.to_be_bytes())); // OFFSET_AFTER
    let mut labels = vec![0u8; 16];
    labels[0] = 0b101;
    Entry {
        key: FlowKey {
            family: Family::Ipv4,
            protocol: 6,
            src: addr("10.76.2.10"),
            dst: addr("10.76.4.10"),
            src_port: 40000 + i,
            dst_port: 80,
            zone: 5,
        },
        reply: ReplyTuple {
            src: addr("10.76.4.10"),
            dst: addr("10.76.4.1"),
            src_port: 80,
            dst_port: 50000 + i,
        },
        status: status::SEEN_REPLY | status::ASSURED | status::CONFIRMED,
        timeout: Some(3000),
        mark: Some(0x2a),
        // ESTABLISHED; flags: WINDOW_SCALE|SACK_PERM|MAXACK_SET (0x01|0x02|0x20)
        tcp: Some(TcpInfo {
            state: 3,
            wscale: Some((7, 9)),
            flags: Some((0x23, 0x23)),
        }),
        raw: vec![
            RawAttr {
                place: RawPlace::Top,
                kind: CTA_LABELS,
                value: labels,
            },
            RawAttr {
                place: RawPlace::Top,
                kind: CTA_SEQ_ADJ_ORIG | NESTED,
                value: seqadj,
            },
        ],
    }
}

fn synthetic_others() -> Vec<Entry> {
    let udp6 = Entry {
        key: FlowKey {
            family: Family::Ipv6,
            protocol: 17,
            src: addr("2001:db8:5:416::10"),
            dst: addr("2001:db8:5:34cd::10"),
            src_port: 5353,
            dst_port: 53,
            zone: 0,
        },
        reply: ReplyTuple {
            src: addr("2001:db8:5:34cd::10"),
            dst: addr("2001:db8:5:416::10"),
            src_port: 53,
            dst_port: 5353,
        },
        status: status::SEEN_REPLY | status::CONFIRMED,
        timeout: Some(100),
        mark: Some(0),
        tcp: None,
        raw: vec![],
    };
    // ICMP echo with SNAT (the id is rewritten too) and DNAT+SNAT UDP.
    let icmp = Entry {
        key: FlowKey {
            family: Family::Ipv4,
            protocol: 1,
            src: addr("10.76.2.10"),
            dst: addr("10.76.4.10"),
            src_port: 0x1234,
            dst_port: 8 << 8,
            zone: 0,
        },
        reply: ReplyTuple {
            src: addr("10.76.4.10"),
            dst: addr("10.76.4.1"),
            src_port: 0x4321,
            dst_port: 0,
        },
        status: status::SEEN_REPLY | status::CONFIRMED,
        timeout: Some(30),
        mark: Some(0),
        tcp: None,
        raw: vec![],
    };
    let dnat = Entry {
        key: FlowKey {
            family: Family::Ipv4,
            protocol: 17,
            src: addr("198.51.100.7"),
            dst: addr("10.76.4.1"),
            src_port: 4000,
            dst_port: 8053,
            zone: 0,
        },
        reply: ReplyTuple {
            src: addr("10.76.2.10"),
            dst: addr("10.76.2.1"),
            src_port: 53,
            dst_port: 4001,
        },
        status: status::SEEN_REPLY | status::ASSURED | status::CONFIRMED,
        timeout: Some(170),
        mark: Some(7),
        tcp: None,
        raw: vec![],
    };
    // An FTP control connection through SNAT with the ftp helper attached (CTA_HELP).
    let mut ftp = synthetic_tcp(3);
    ftp.key.dst_port = 21;
    ftp.reply.src_port = 21;
    ftp.key.zone = 0;
    ftp.raw = vec![RawAttr {
        place: RawPlace::Top,
        kind: CTA_HELP | NESTED,
        value: nla(1, b"ftp\0"),
    }];
    // Its data connection, created by the helper's expectation: CTA_TUPLE_MASTER names the
    // control connection. Listed first: install() must still put the master in first.
    let mut master = nla(
        1 | NESTED,
        &[nla(1, &[10, 76, 2, 10]), nla(2, &[10, 76, 4, 10])].concat(),
    );
    master.extend(nla(
        2 | NESTED,
        &[
            nla(1, &[6]),
            nla(2, &ftp.key.src_port.to_be_bytes()),
            nla(3, &21u16.to_be_bytes()),
        ]
        .concat(),
    ));
    let mut data = synthetic_tcp(100);
    data.key.zone = 0;
    data.key.dst_port = 30000;
    data.reply.src_port = 30000;
    data.raw = vec![RawAttr {
        place: RawPlace::Top,
        kind: CTA_TUPLE_MASTER | NESTED,
        value: master,
    }];
    assert!(data.is_related());
    // IPv6 with SNAT (address and port).
    let mut udp6_snat = udp6.clone();
    udp6_snat.key.src_port = 5354;
    udp6_snat.reply.dst = addr("2001:db8:5:34cd::1");
    udp6_snat.reply.dst_port = 61000;
    vec![data, udp6, udp6_snat, icmp, dnat, ftp]
}

/// `conntrack -L -o extended` lines without timeout and use count, keyed by the original
/// tuple, plus the timeouts.
fn conntrack_list(ns: &str, extra: &[&str]) -> BTreeMap<String, (String, u32)> {
    let mut args = vec!["netns", "exec", ns, "conntrack", "-L", "-o", "extended"];
    args.extend_from_slice(extra);
    let out = std::process::Command::new("ip")
        .args(&args)
        .output()
        .unwrap();
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.len() < 6 {
            continue;
        }
        let timeout: u32 = toks[4].parse().unwrap_or(0);
        let rest: Vec<&str> = toks
            .iter()
            .enumerate()
            .filter(|(i, t)| *i != 4 && !t.starts_with("use="))
            .map(|(_, t)| *t)
            .collect();
        let key: Vec<&str> = rest
            .iter()
            .filter(|t| t.contains('='))
            .take(4)
            .copied()
            .collect();
        map.insert(
            format!("{} {}", rest[2], key.join(" ")),
            (rest.join(" "), timeout),
        );
    }
    map
}

fn assert_same_listing(
    a: &BTreeMap<String, (String, u32)>,
    b: &BTreeMap<String, (String, u32)>,
    what: &str,
) {
    for (k, (line_a, t_a)) in a {
        let Some((line_b, t_b)) = b.get(k) else {
            panic!("{what}: {k} missing in the target table; target has {b:#?}");
        };
        assert_eq!(line_a, line_b, "{what}: conntrack -L differs");
        assert!(
            t_a.abs_diff(*t_b) <= 2,
            "{what}: timeout {t_a} vs {t_b} for {k}"
        );
    }
}

/// Entries as compared between two kernels: the timeout within 2 s, the rest exactly.
fn same_entry(a: &Entry, b: &Entry) -> bool {
    let (mut a2, mut b2) = (a.clone(), b.clone());
    let close = match (a.timeout, b.timeout) {
        (Some(x), Some(y)) => x.abs_diff(y) <= 2,
        (x, y) => x == y,
    };
    a2.timeout = None;
    b2.timeout = None;
    close && a2 == b2
}

#[test]
fn synthetic_entries_round_trip_between_kernels() -> Result<()> {
    require_root()?;
    let rt = runtime();
    let x = Netns::new("x")?;
    let y = Netns::new("y")?;
    // NAT setup on install needs the NAT core (a nat chain), labels need a rule that uses
    // labels (the kernel drops CTA_LABELS otherwise).
    for ns in [&x, &y] {
        nft_in(
            &ns.name,
            "table ip ctk {\n chain post { type nat hook postrouting priority srcnat; policy accept; }\n \
                chain out { type filter hook output priority 0; policy accept; ct label 127 counter; }\n}\n\
                table ip6 ctk6 {\n chain post { type nat hook postrouting priority srcnat; policy accept; }\n}\n",
        )?;
    }
    let ct_x = open_ct(&x.name, &rt);
    let ct_y = open_ct(&y.name, &rt);
    let mut wanted = vec![synthetic_tcp(1), synthetic_tcp(2)];
    wanted.extend(synthetic_others());
    let report = rt.block_on(ct_x.install(&wanted))?;
    assert_eq!(report.created, wanted.len(), "{report:?}");

    let dumped_x = rt.block_on(ct_x.dump())?;
    assert_eq!(dumped_x.len(), wanted.len(), "{dumped_x:#?}");
    for w in &wanted {
        let got = dumped_x
            .iter()
            .find(|e| e.key == w.key)
            .unwrap_or_else(|| panic!("{w:?} missing"));
        // The kernel adds the NAT bits (and NAT_DONE) from the NAT setup we asked for, and
        // SEQ_ADJUST with zeroed reply-direction adjustment and synproxy attributes when a
        // sequence adjustment was given.
        let mut expect = w.clone();
        let nat_bits =
            ((w.is_snat() as u32) * status::SRC_NAT) | ((w.is_dnat() as u32) * status::DST_NAT);
        if nat_bits != 0 {
            expect.status |= nat_bits | (3 << 7);
        }
        let mut got_typed = got.clone();
        if w.raw.iter().any(|a| a.type_id() == CTA_SEQ_ADJ_ORIG) {
            expect.status |= 1 << 6;
        }
        if w.is_related() {
            expect.status |= status::EXPECTED;
        }
        if w.raw.iter().any(|a| a.type_id() == CTA_HELP) {
            expect.status |= 1 << 13; // IPS_HELPER: explicitly assigned
        }
        for a in &w.raw {
            assert!(got.raw.contains(a), "{a:?} lost: {got:?}");
        }
        got_typed.raw.clear();
        expect.raw.clear();
        assert!(
            same_entry(&got_typed, &expect),
            "installed differs:\nwant {expect:?}\ngot  {got:?}"
        );
    }

    // Through the wire form into the second kernel.
    let shipped: Vec<Entry> = dumped_x.iter().map(wire_round_trip).collect();
    let report = rt.block_on(ct_y.install(&shipped))?;
    assert_eq!(report.created, shipped.len(), "{report:?}");
    let dumped_y = rt.block_on(ct_y.dump())?;
    for e in &dumped_x {
        let got = dumped_y
            .iter()
            .find(|g| g.key == e.key)
            .expect("present in y");
        assert!(same_entry(e, got), "y differs:\nx {e:?}\ny {got:?}");
    }
    assert_same_listing(
        &conntrack_list(&x.name, &[]),
        &conntrack_list(&y.name, &[]),
        "x -> y",
    );
    // SRC_NAT status really set (conntrack filters on the status bit).
    assert_eq!(conntrack_list(&y.name, &["--src-nat"]).len(), 7);
    for e in &dumped_y {
        assert_eq!(e.status & status::SRC_NAT != 0, e.is_snat(), "{e:?}");
        assert_eq!(e.status & status::DST_NAT != 0, e.is_dnat(), "{e:?}");
    }

    // Installing again updates in place.
    let mut again = shipped.clone();
    for e in &mut again {
        e.set_timeout_secs(1234);
        e.mark = Some(99);
    }
    let report = rt.block_on(ct_y.install(&again))?;
    assert_eq!(
        (report.created, report.updated, report.failed),
        (0, again.len(), 0),
        "{report:?}"
    );
    let dumped_y = rt.block_on(ct_y.dump())?;
    assert!(
        dumped_y
            .iter()
            .all(|e| e.mark == Some(99) && e.timeout.unwrap() > 1230)
    );

    // Refresh and removal.
    let keys: Vec<FlowKey> = dumped_y.iter().map(|e| e.key.clone()).collect();
    rt.block_on(ct_y.set_timeouts(&keys.iter().map(|k| (k.clone(), 4000)).collect::<Vec<_>>()))?;
    assert!(
        rt.block_on(ct_y.dump())?
            .iter()
            .all(|e| e.timeout.unwrap() > 3990)
    );
    assert_eq!(rt.block_on(ct_y.remove(&keys[..2]))?, 2);
    assert_eq!(
        rt.block_on(ct_y.remove(&keys[..2]))?,
        0,
        "ENOENT is not an error"
    );
    assert_eq!(rt.block_on(ct_y.dump())?.len(), keys.len() - 2);
    rt.block_on(ct_y.flush())?;
    assert!(rt.block_on(ct_y.dump())?.is_empty());
    Ok(())
}

fn nft_in(ns: &str, ruleset: &str) -> Result<()> {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(ruleset.as_bytes())?;
    if !child.wait()?.success() {
        bail!("nft failed in {ns}");
    }
    Ok(())
}

#[test]
fn events_for_new_update_destroy() -> Result<()> {
    require_root()?;
    let rt = runtime();
    let ns = Netns::new("ev")?;
    ns.sysctl("net.netfilter.nf_conntrack_events=1")?;
    // Conntrack on locally generated traffic needs a ruleset that uses it.
    nft_in(
        &ns.name,
        "table inet ctk {\n chain out { type filter hook output priority 0; policy accept; ct state new counter; }\n}\n",
    )?;
    let mut events = in_ns(&ns.name, Some(rt.handle()), || {
        EventStream::open().expect("events")
    });
    let ct = open_ct(&ns.name, &rt);

    let e = synthetic_others()
        .into_iter()
        .find(|e| e.key.family == Family::Ipv6)
        .unwrap();
    assert_eq!(
        rt.block_on(ct.install(std::slice::from_ref(&e)))?.created,
        1
    );
    rt.block_on(ct.set_timeouts(&[(e.key.clone(), 500)]))?;
    rt.block_on(ct.remove(std::slice::from_ref(&e.key)))?;
    // A real flow: ping on loopback (ICMP echo, id/type/code in the key).
    ns.exec_ok(&["ping", "-c", "1", "-W", "2", "127.0.0.1"])?;

    let mut seen = Vec::new();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.len() < 4 {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(ev) => seen.push(ev.expect("event")),
                Err(_) => break,
            }
        }
    });
    assert!(seen.len() >= 4, "{seen:#?}");
    let kinds: Vec<(&str, &FlowKey)> = seen
        .iter()
        .map(|ev| match ev {
            KernelEvent::New(e) => ("new", &e.key),
            KernelEvent::Update(e) => ("update", &e.key),
            KernelEvent::Destroy(e) => ("destroy", &e.key),
            KernelEvent::Overrun => panic!("overrun"),
        })
        .collect();
    assert_eq!(
        kinds[..3],
        [("new", &e.key), ("update", &e.key), ("destroy", &e.key)],
        "{seen:#?}"
    );
    let KernelEvent::New(first) = &seen[0] else {
        unreachable!()
    };
    assert_eq!(first.reply, e.reply);
    let (kind, icmp) = kinds[3];
    assert_eq!(kind, "new");
    assert_eq!(
        (icmp.protocol, icmp.dst_port, icmp.dst),
        (1, 8 << 8, addr("127.0.0.1"))
    );
    if let KernelEvent::Update(u) = &seen[1] {
        assert!(u.timeout.unwrap() > 490);
    }

    // Events caused by our own requests can be told apart (and dropped): the backup must not
    // take its own installs for local changes.
    events.ignore_origin(ct.port_id());
    rt.block_on(ct.install(std::slice::from_ref(&e)))?;
    rt.block_on(ct.remove(std::slice::from_ref(&e.key)))?;
    ns.exec_ok(&["ping", "-c", "1", "-W", "2", "127.0.0.1"])?;
    let mut later = Vec::new();
    rt.block_on(async {
        while let Ok(ev) = tokio::time::timeout(Duration::from_secs(1), events.next()).await {
            later.push(ev.expect("event"));
        }
    });
    let ours = |ev: &KernelEvent| match ev {
        KernelEvent::New(x) | KernelEvent::Update(x) | KernelEvent::Destroy(x) => x.key == e.key,
        KernelEvent::Overrun => false,
    };
    assert!(!later.iter().any(ours), "{later:#?}");
    assert!(
        later
            .iter()
            .any(|ev| matches!(ev, KernelEvent::New(x) if x.key.protocol == 1)),
        "the second ping's NEW event: {later:#?}"
    );
    assert_eq!(events.ignored, 2, "our install and remove");
    Ok(())
}

#[test]
fn event_overrun_is_reported() -> Result<()> {
    require_root()?;
    let rt = runtime();
    let ns = Netns::new("ovr")?;
    ns.sysctl("net.netfilter.nf_conntrack_events=1")?;
    // A small buffer that nobody reads while 5,000 entries are created: the kernel must drop
    // events, and the stream must say so.
    let mut events = in_ns(&ns.name, Some(rt.handle()), || {
        EventStream::open_with_buffer(64 * 1024).unwrap()
    });
    let ct = open_ct(&ns.name, &rt);
    let entries: Vec<Entry> = (0..5000).map(synthetic_udp).collect();
    assert_eq!(rt.block_on(ct.install(&entries))?.created, 5000);
    let (mut news, mut overruns) = (0, 0);
    rt.block_on(async {
        let mut batch = Vec::new();
        while let Ok(r) =
            tokio::time::timeout(Duration::from_millis(500), events.next_batch(&mut batch)).await
        {
            r.unwrap();
            for ev in batch.drain(..) {
                match ev {
                    KernelEvent::New(_) => news += 1,
                    KernelEvent::Overrun => overruns += 1,
                    _ => {}
                }
            }
        }
    });
    eprintln!("small buffer: {news} NEW events read, {overruns} overruns reported");
    assert!(news < 5000, "the buffer was meant to overflow");
    assert!(overruns >= 1, "lost events without an Overrun");
    assert_eq!(events.overruns, overruns as u64);
    Ok(())
}

#[test]
fn an_unsubscribed_stream_gets_no_events_until_it_joins_again() -> Result<()> {
    require_root()?;
    let rt = runtime();
    let ns = Netns::new("sub")?;
    ns.sysctl("net.netfilter.nf_conntrack_events=1")?;
    let mut events = in_ns(&ns.name, Some(rt.handle()), || {
        EventStream::open().expect("events")
    });
    let ct = open_ct(&ns.name, &rt);
    let count_news = |events: &mut EventStream| -> usize {
        rt.block_on(async {
            let mut batch = Vec::new();
            let mut news = 0;
            while let Ok(r) =
                tokio::time::timeout(Duration::from_millis(300), events.next_batch(&mut batch))
                    .await
            {
                r.unwrap();
                news += batch
                    .drain(..)
                    .filter(|ev| matches!(ev, KernelEvent::New(_)))
                    .count();
            }
            news
        })
    };
    // A BACKUP's stream: out of the groups, 100 installs reach nobody.
    events.set_subscribed(false).expect("leave the groups");
    let first: Vec<Entry> = (0..100).map(synthetic_udp).collect();
    assert_eq!(rt.block_on(ct.install(&first))?.created, 100);
    assert_eq!(count_news(&mut events), 0, "events while unsubscribed");
    // Becoming MASTER: in again, and the next installs are seen.
    events.set_subscribed(true).expect("join the groups");
    events.set_subscribed(true).expect("idempotent");
    let second: Vec<Entry> = (100..150).map(synthetic_udp).collect();
    assert_eq!(rt.block_on(ct.install(&second))?.created, 50);
    assert_eq!(count_news(&mut events), 50);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The kernel fact: a TCP flow started through router a continues through router b.

/// The routers' firewall: stateful forward chain admitting only SYN as new, SNAT to the WAN
/// VIP, a mark on new flows and every flow in zone 7 (so both are replicated and checked).
const ROUTER_RULES: &str = r#"
table inet ctk {
    counter invalid { }
    chain raw_pre { type filter hook prerouting priority raw; policy accept; ct zone set 7; }
    chain raw_out { type filter hook output priority raw; policy accept; ct zone set 7; }
    chain filter_forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid counter name invalid drop
        ct state new tcp flags & (syn | ack) == syn ct mark set 0x2a accept
    }
    chain nat_postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        meta nfproto ipv4 oifname "eth2" snat ip to 10.76.4.1
    }
}
"#;

/// An echo server in the server namespace: one thread per accepted connection.
fn echo_server(lab: &Lab, connections: usize) -> u16 {
    let listener = in_ns(&lab.ns("server"), None, || {
        TcpListener::bind("0.0.0.0:0").unwrap()
    });
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

struct Flow {
    stream: TcpStream,
    local_port: u16,
}

impl Flow {
    fn connect(lab: &Lab, port: u16) -> Flow {
        let stream = in_ns(&lab.ns("client"), None, || {
            let to: SocketAddr = format!("{SERVER4}:{port}").parse().unwrap();
            TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect through a")
        });
        let local_port = stream.local_addr().unwrap().port();
        Flow { stream, local_port }
    }

    /// Sends `size` bytes and reads them back within `timeout`. Large sizes need the scaled
    /// window (> 64 KiB in flight).
    fn exchange(&mut self, size: usize, timeout: Duration) -> bool {
        let data: Vec<u8> = (0..size)
            .map(|i| (i * 7 + self.local_port as usize) as u8)
            .collect();
        let mut writer = self.stream.try_clone().unwrap();
        let out = data.clone();
        let w = std::thread::spawn(move || writer.write_all(&out).is_ok());
        let deadline = Instant::now() + timeout;
        let mut got = Vec::with_capacity(size);
        let mut buf = vec![0u8; 65536];
        while got.len() < size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let complete = got == data;
        if !complete {
            // Unblock the writer for good: the flow is dead anyway.
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = w.join();
        complete
    }
}

fn router_setup(lab: &Lab, router: &str) {
    lab.nft(router, ROUTER_RULES);
    for kv in [
        "net.netfilter.nf_conntrack_tcp_loose=0",
        "net.netfilter.nf_conntrack_tcp_be_liberal=0",
    ] {
        lab.exec_ok(router, &["sysctl", "-qw", kv]);
    }
}

fn invalid_count(lab: &Lab, router: &str) -> u64 {
    let out = lab.exec_ok(
        router,
        &["nft", "list", "counter", "inet", "ctk", "invalid"],
    );
    out.split_whitespace()
        .skip_while(|t| *t != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn vips(lab: &Lab, router: &str, op: &str) {
    lab.exec_ok(router, &["ip", "addr", op, "10.76.2.1/24", "dev", "eth1"]);
    lab.exec_ok(router, &["ip", "addr", op, "10.76.4.1/24", "dev", "eth2"]);
}

/// The entries of these client ports in `entries`.
fn flow_entries<'a>(entries: &'a [Entry], ports: &[u16]) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.key.protocol == 6 && ports.contains(&e.key.src_port))
        .collect()
}

#[test]
fn tcp_flow_continues_through_the_other_router_with_strict_window_tracking() -> Result<()> {
    let lab = Lab::up("ctkflow")?;
    let rt = runtime();
    router_setup(&lab, "a");
    router_setup(&lab, "b");
    vips(&lab, "a", "add");
    let port = echo_server(&lab, 3);
    // Flow 1 is replicated with everything; flow 2 the way conntrackd does it (TCP flags and
    // window scales dropped); flow 3 not at all (the control that shows the test can fail).
    let mut flows: Vec<Flow> = (0..3).map(|_| Flow::connect(&lab, port)).collect();
    for f in &mut flows {
        assert!(
            f.exchange(1 << 20, Duration::from_secs(20)),
            "flow through a"
        );
    }
    let ports: Vec<u16> = flows.iter().map(|f| f.local_port).collect();
    // Let the last ACKs pass: an entry with unacknowledged data has a short timeout that the
    // final ACK replaces, which would make a's and b's timeouts differ for a reason of a's own.
    std::thread::sleep(Duration::from_millis(500));

    let ct_a = open_ct(&lab.ns("a"), &rt);
    let ct_b = open_ct(&lab.ns("b"), &rt);
    let dumped = rt.block_on(ct_a.dump())?;
    let on_a: Vec<Entry> = flow_entries(&dumped, &ports).into_iter().cloned().collect();
    assert_eq!(on_a.len(), 3, "{dumped:#?}");
    let of = |p: u16| on_a.iter().find(|e| e.key.src_port == p).unwrap().clone();
    let full = wire_round_trip(&of(ports[0]));
    let tcp = full.tcp.expect("tcp info");
    assert_eq!(tcp.state, 3, "ESTABLISHED");
    let (ws_o, ws_r) = tcp.wscale.expect("window scales");
    let (fl_o, fl_r) = tcp.flags.expect("flags");
    assert!(ws_o > 0 && ws_r > 0, "window scaling in use: {tcp:?}");
    assert!(
        fl_o & fl_r & 0x03 == 0x03,
        "WINDOW_SCALE and SACK_PERM both ways: {tcp:?}"
    );
    assert_eq!((full.key.zone, full.mark), (7, Some(0x2a)));
    assert_eq!(full.reply.dst, addr(WAN_VIP4), "SNAT to the VIP");
    let mut stripped = wire_round_trip(&of(ports[1]));
    stripped.tcp = Some(TcpInfo {
        wscale: None,
        flags: None,
        ..stripped.tcp.unwrap()
    });

    let report = rt.block_on(ct_b.install(&[full.clone(), stripped]))?;
    assert_eq!(report.created, 2, "{report:?}");

    // What b holds now, seen by conntrack(8) and by a dump, against a.
    let list_a = conntrack_list(
        &lab.ns("a"),
        &["-p", "tcp", "--sport", &ports[0].to_string()],
    );
    let list_b = conntrack_list(
        &lab.ns("b"),
        &["-p", "tcp", "--sport", &ports[0].to_string()],
    );
    assert_eq!(list_a.len(), 1);
    assert_same_listing(&list_a, &list_b, "a -> b");
    assert_eq!(
        conntrack_list(
            &lab.ns("b"),
            &["--src-nat", "-p", "tcp", "--sport", &ports[0].to_string()]
        )
        .len(),
        1,
        "SRC_NAT status on b"
    );
    let on_b = rt.block_on(ct_b.dump())?;
    let b_full = on_b.iter().find(|e| e.key == full.key).expect("on b");
    assert!(same_entry(&full, b_full), "a {full:?}\nb {b_full:?}");

    // Router a goes away; b takes the VIPs; the hosts learn b's MAC.
    lab.cut("a", "all");
    vips(&lab, "a", "del");
    vips(&lab, "b", "add");
    for host in ["client", "server"] {
        lab.exec_ok(host, &["ip", "neigh", "flush", "dev", "eth0"]);
    }

    // Per flow: did 1 MiB each way get through b, and how many packets did b find invalid
    // (out of window) meanwhile.
    let mut survived = Vec::new();
    let mut invalid = Vec::new();
    for f in flows.iter_mut() {
        let before = invalid_count(&lab, "b");
        survived.push(f.exchange(1 << 20, Duration::from_secs(8)));
        invalid.push(invalid_count(&lab, "b") - before);
    }
    eprintln!("invalid packets on b per flow (full, conntrackd-like, none): {invalid:?}");
    let on_b = rt.block_on(ct_b.dump())?;
    let b_after: Vec<&Entry> = flow_entries(&on_b, &ports);
    eprintln!("survived (full, conntrackd-like, none): {survived:?}; b after: {b_after:#?}");
    assert!(survived[0], "the fully replicated flow continues through b");
    assert!(!survived[2], "control: without replication the flow dies");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Decoders never panic.

fn arb_entry() -> impl Strategy<Value = Entry> {
    let addr4 = any::<[u8; 4]>().prop_map(IpAddr::from);
    let addr6 = any::<[u8; 16]>().prop_map(IpAddr::from);
    let raw = (
        0u8..9,
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(p, kind, value)| RawAttr {
            place: [
                RawPlace::Top,
                RawPlace::OrigTuple,
                RawPlace::ReplyTuple,
                RawPlace::OrigProto,
                RawPlace::ReplyProto,
                RawPlace::ProtoInfo,
                RawPlace::ProtoInfoTcp,
                RawPlace::OrigIp,
                RawPlace::ReplyIp,
            ][p as usize],
            kind,
            value,
        });
    (
        any::<bool>(),
        proptest::collection::vec(addr4, 4),
        proptest::collection::vec(addr6, 4),
        any::<[u16; 5]>(),
        any::<(u8, u32, Option<u32>, Option<u32>)>(),
        proptest::option::of(any::<(u8, Option<(u8, u8)>, Option<(u8, u8)>)>()),
        proptest::collection::vec(raw, 0..4),
    )
        .prop_map(
            |(v6, a4, a6, ports, (proto, status, timeout, mark), tcp, raw)| {
                let a = if v6 { a6 } else { a4 };
                let protocol = if tcp.is_some() { 6 } else { proto };
                Entry {
                    key: FlowKey {
                        family: if v6 { Family::Ipv6 } else { Family::Ipv4 },
                        protocol,
                        src: a[0],
                        dst: a[1],
                        src_port: ports[0],
                        dst_port: ports[1],
                        zone: ports[4],
                    },
                    reply: ReplyTuple {
                        src: a[2],
                        dst: a[3],
                        src_port: ports[2],
                        dst_port: ports[3],
                    },
                    status,
                    timeout,
                    mark,
                    tcp: tcp.map(|(state, wscale, flags)| TcpInfo {
                        state,
                        wscale,
                        flags,
                    }),
                    raw,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn wire_form_round_trips(e in arb_entry()) {
        let mut buf = Vec::new();
        e.encode(&mut buf);
        prop_assert_eq!(Entry::decode(&buf).unwrap(), e);
    }

    #[test]
    fn wire_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Entry::decode(&bytes);
        let mut with_version = vec![1u8];
        with_version.extend_from_slice(&bytes);
        let _ = Entry::decode(&with_version);
    }

    #[test]
    fn wire_decode_of_mutated_records_never_panics(
        e in arb_entry(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut buf = Vec::new();
        e.encode(&mut buf);
        for (i, x) in flips {
            let n = buf.len();
            buf[i % n] ^= x;
        }
        let n = buf.len();
        let _ = Entry::decode(&buf[..cut % (n + 1)]);
        let _ = Entry::decode(&buf);
    }

    #[test]
    fn kernel_decode_never_panics(
        e in arb_entry(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(), garbage in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // A real ctnetlink message (our create request has the same layout as an event), mutated.
        let mut msg = encode_create_request(&e);
        for (i, x) in flips {
            let n = msg.len();
            msg[i % n] ^= x;
        }
        let n = msg.len();
        let _ = decode_kernel_message(&msg[..cut % (n + 1)]);
        let _ = decode_kernel_message(&msg);
        let _ = decode_kernel_message(&garbage);
    }
}

#[test]
fn kernel_message_parser_reads_what_the_encoder_writes() {
    for e in std::iter::once(synthetic_tcp(1)).chain(synthetic_others()) {
        if e.is_snat() || e.is_dnat() {
            continue; // create requests carry the un-NATed reply tuple
        }
        let msg = encode_create_request(&e);
        let mut back = decode_kernel_message(&msg).unwrap().unwrap();
        back.status = e.status;
        assert_eq!(back, e);
    }
}

// ---------------------------------------------------------------------------------------------
// Scale: 100,000 synthetic entries (measured, printed; asserts only completeness).

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn synthetic_udp(i: u32) -> Entry {
    let src = IpAddr::from([10, 200 + (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    let dst = addr("10.201.0.1");
    Entry {
        key: FlowKey {
            family: Family::Ipv4,
            protocol: 17,
            src,
            dst,
            src_port: 1024 + (i % 60000) as u16,
            dst_port: 53,
            zone: 0,
        },
        reply: ReplyTuple {
            src: dst,
            dst: src,
            src_port: 53,
            dst_port: 1024 + (i % 60000) as u16,
        },
        status: status::SEEN_REPLY | status::ASSURED | status::CONFIRMED,
        timeout: Some(600),
        mark: None,
        tcp: None,
        raw: vec![],
    }
}

#[derive(Default, Debug)]
struct EventTally {
    new: usize,
    update: usize,
    destroy: usize,
    overruns: usize,
    cpu: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Reads events in `ns` on its own thread until `stop` says so and nothing arrived for 1 s.
fn event_reader(
    ns: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<EventTally> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        lab::netns::enter(&ns).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut events = EventStream::open().unwrap();
            tx.send(()).unwrap();
            let mut t = EventTally::default();
            let cpu0 = thread_cpu();
            let mut batch = Vec::new();
            loop {
                batch.clear();
                let r = tokio::time::timeout(Duration::from_secs(1), events.next_batch(&mut batch))
                    .await;
                match r {
                    Err(_) if stop.load(std::sync::atomic::Ordering::SeqCst) => break,
                    Err(_) => continue,
                    Ok(r) => {
                        r.unwrap();
                    }
                }
                let now = Instant::now();
                t.first.get_or_insert(now);
                t.last = Some(now);
                for ev in &batch {
                    match ev {
                        KernelEvent::New(_) => t.new += 1,
                        KernelEvent::Update(_) => t.update += 1,
                        KernelEvent::Destroy(_) => t.destroy += 1,
                        KernelEvent::Overrun => t.overruns += 1,
                    }
                }
            }
            t.cpu = thread_cpu() - cpu0;
            t
        })
    });
    rx.recv().unwrap();
    h
}

#[test]
fn scale_100k_install_dump_events() -> Result<()> {
    require_root()?;
    const N: u32 = 100_000;
    let rt = runtime();
    let ns = Netns::new("scale")?;
    ns.sysctl("net.netfilter.nf_conntrack_events=1")?;
    let entries: Vec<Entry> = (0..N).map(synthetic_udp).collect();
    let mut wire = Vec::new();
    entries[0].encode(&mut wire);
    eprintln!(
        "memory per Entry: {} bytes (UDP, no raw attributes; size_of::<Entry>() = {}); wire form {} bytes",
        entries[0].memory_size(),
        std::mem::size_of::<Entry>(),
        wire.len()
    );
    let ct = open_ct(&ns.name, &rt);
    // Userspace share of an install: building the netlink requests.
    let t = Instant::now();
    let bytes: usize = entries.iter().map(|e| encode_create_request(e).len()).sum();
    eprintln!(
        "building {N} create requests ({} bytes each): {:?}",
        bytes / N as usize,
        t.elapsed()
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = event_reader(ns.name.clone(), stop.clone());
    let t = Instant::now();
    let report = rt.block_on(ct.install(&entries))?;
    let install = t.elapsed();
    assert_eq!(report.created, N as usize, "{report:?}");
    let t = Instant::now();
    let dumped = rt.block_on(ct.dump())?;
    let dump = t.elapsed();
    assert_eq!(dumped.len(), N as usize);
    let t = Instant::now();
    let report = rt.block_on(ct.install(&entries))?;
    let update = t.elapsed();
    assert_eq!(report.updated, N as usize, "{report:?}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let tally_create = reader.join().unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = event_reader(ns.name.clone(), stop.clone());
    let t = Instant::now();
    rt.block_on(ct.flush())?;
    let flush = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let tally_flush = reader.join().unwrap();

    let rate = |n: u32, d: Duration| n as f64 / d.as_secs_f64();
    eprintln!(
        "install (create) {N}: {install:?} = {:.0} entries/s",
        rate(N, install)
    );
    eprintln!(
        "install (update, EEXIST path) {N}: {update:?} = {:.0} entries/s",
        rate(N, update)
    );
    eprintln!("dump {N}: {dump:?} = {:.0} entries/s", rate(N, dump));
    eprintln!("flush {N}: {flush:?}");
    for (what, t) in [("create+update", &tally_create), ("flush", &tally_flush)] {
        let n = t.new + t.update + t.destroy;
        let span = t.last.zip(t.first).map(|(l, f)| l - f).unwrap_or_default();
        eprintln!(
            "events during {what}: new {} update {} destroy {} overruns {}; {:.0} events/s over {span:?}; reader CPU {:.2} us/event",
            t.new,
            t.update,
            t.destroy,
            t.overruns,
            n as f64 / span.as_secs_f64().max(1e-9),
            t.cpu.as_secs_f64() * 1e6 / n.max(1) as f64
        );
    }
    // Nothing lost silently: every event arrived, or an overrun said some did not.
    assert!(
        tally_create.new == N as usize || tally_create.overruns > 0,
        "{tally_create:?}"
    );
    assert!(
        tally_flush.destroy == N as usize || tally_flush.overruns > 0,
        "{tally_flush:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Expectations (FTP): a pending expectation moves with its master.

fn tuple_v4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = nla(1 | NESTED, &[nla(1, &src), nla(2, &dst)].concat());
    t.extend(nla(
        2 | NESTED,
        &[
            nla(1, &[proto]),
            nla(2, &sport.to_be_bytes()),
            nla(3, &dport.to_be_bytes()),
        ]
        .concat(),
    ));
    t
}

fn raw_top(kind: u16, value: Vec<u8>) -> RawAttr {
    RawAttr {
        place: RawPlace::Top,
        kind,
        value,
    }
}

#[test]
fn ftp_expectation_round_trips_between_kernels() -> Result<()> {
    require_root()?;
    let rt = runtime();
    let x = Netns::new("ex")?;
    let y = Netns::new("ey")?;
    for ns in [&x, &y] {
        nft_in(
            &ns.name,
            "table ip ctk {\n chain post { type nat hook postrouting priority srcnat; policy accept; }\n}\n",
        )?;
    }
    let ct_x = open_ct(&x.name, &rt);
    let ct_y = open_ct(&y.name, &rt);
    let ftp = synthetic_others()
        .into_iter()
        .find(|e| e.key.dst_port == 21)
        .unwrap();
    // Expectation events depend on the master's event cache, set up when it is created.
    x.sysctl("net.netfilter.nf_conntrack_events=1")?;
    let mut exp_events = in_ns(&x.name, Some(rt.handle()), || {
        vrrpd::conntrack::ExpectationStream::open().unwrap()
    });
    assert_eq!(
        rt.block_on(ct_x.install(std::slice::from_ref(&ftp)))?
            .created,
        1
    );
    // The passive-mode data connection the control connection announced: client -> server:30000.
    let exp = vrrpd::conntrack::Expectation {
        family: Family::Ipv4,
        raw: vec![
            raw_top(
                1 | NESTED,
                tuple_v4([10, 76, 2, 10], [10, 76, 4, 10], 6, ftp.key.src_port, 21),
            ),
            raw_top(
                2 | NESTED,
                tuple_v4([10, 76, 2, 10], [10, 76, 4, 10], 6, 0, 30000),
            ),
            raw_top(3 | NESTED, tuple_v4([255; 4], [255; 4], 6, 0, 0xffff)),
            raw_top(4, 300u32.to_be_bytes().to_vec()),
            raw_top(6, b"ftp\0".to_vec()),
        ],
    };
    let report = rt.block_on(ct_x.install_expectations(std::slice::from_ref(&exp)))?;
    assert_eq!(report.created, 1, "{report:?}");
    let on_x = rt.block_on(ct_x.dump_expectations())?;
    assert_eq!(on_x.len(), 1, "{on_x:#?}");

    // Ship master and expectation (through the wire forms) to y.
    let masters: Vec<Entry> = rt
        .block_on(ct_x.dump())?
        .iter()
        .map(wire_round_trip)
        .collect();
    let mut buf = Vec::new();
    on_x[0].encode(&mut buf);
    let shipped = vrrpd::conntrack::Expectation::decode(&buf).unwrap();
    assert_eq!(shipped, on_x[0]);
    assert_eq!(rt.block_on(ct_y.install(&masters))?.created, 1);
    let report = rt.block_on(ct_y.install_expectations(std::slice::from_ref(&shipped)))?;
    assert_eq!(report.created, 1, "{report:?}");
    let on_y = rt.block_on(ct_y.dump_expectations())?;
    assert_eq!(on_y.len(), 1, "{on_y:#?}");
    let without_timeout = |e: &vrrpd::conntrack::Expectation| {
        e.raw
            .iter()
            .filter(|a| a.type_id() != 4)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(without_timeout(&on_x[0]), without_timeout(&on_y[0]));
    assert!(
        on_x[0]
            .timeout_secs()
            .unwrap()
            .abs_diff(on_y[0].timeout_secs().unwrap())
            <= 2
    );
    let list = |ns: &Netns| -> String {
        let out = ns.exec_ok(&["conntrack", "-L", "expect"]).unwrap();
        out.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    };
    eprintln!("conntrack -L expect in y: {}", list(&y));
    assert!(list(&y).contains("dport=30000"));
    assert_eq!(list(&x), list(&y), "conntrack -L expect");

    // Events: NEW when created, DESTROY when removed; remove is idempotent.
    assert_eq!(rt.block_on(ct_x.remove_expectations(&on_x))?, 1);
    assert_eq!(rt.block_on(ct_x.remove_expectations(&on_x))?, 0);
    assert!(rt.block_on(ct_x.dump_expectations())?.is_empty());
    let evs = rt.block_on(async {
        let mut evs = Vec::new();
        while let Ok(ev) = tokio::time::timeout(Duration::from_secs(1), exp_events.next()).await {
            evs.push(ev.unwrap());
        }
        evs
    });
    use vrrpd::conntrack::ExpectEvent;
    assert!(
        matches!(&evs[..], [ExpectEvent::New(n), ExpectEvent::Destroy(d)]
            if without_timeout(n) == without_timeout(&on_x[0]) && without_timeout(d) == without_timeout(&on_x[0])),
        "{evs:#?}"
    );
    Ok(())
}
