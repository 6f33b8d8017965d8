//! The replication logic without I/O: a fake entry, two cores wired back to back.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::conntrack::filter::{Filter, PROTO_TCP, PROTO_UDP};
use crate::conntrack::messages::Record;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fake {
    port: u16,
    protocol: u8,
    src: IpAddr,
    reply_dst: IpAddr,
    state: u8,
    timeout: u32,
    related: bool,
}

impl SyncEntry for Fake {
    type Key = (u8, u16);
    fn key(&self) -> (u8, u16) {
        (self.protocol, self.port)
    }
    fn protocol(&self) -> u8 {
        self.protocol
    }
    fn addresses(&self) -> [IpAddr; 4] {
        let server: IpAddr = "10.76.4.10".parse().unwrap();
        [self.src, server, server, self.reply_dst]
    }
    fn timeout_secs(&self) -> Option<u32> {
        Some(self.timeout)
    }
    fn set_timeout_secs(&mut self, secs: u32) {
        self.timeout = secs;
    }
    fn is_related(&self) -> bool {
        self.related
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(self.protocol);
        out.push(self.state);
        out.extend_from_slice(&self.timeout.to_be_bytes());
        out.push(u8::from(self.related));
        match (self.src, self.reply_dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
            }
            _ => unreachable!("tests use IPv4"),
        }
    }
    /// Like UPDATE events: state 0 means "not carried".
    fn merge_update(&mut self, newer: &Self) {
        let state = if newer.state == 0 {
            self.state
        } else {
            newer.state
        };
        *self = Fake {
            state,
            ..newer.clone()
        };
    }
    /// TCP state in the low bits, 0x80 = data unacknowledged.
    fn tcp_state(&self) -> Option<(u8, bool)> {
        (self.protocol == PROTO_TCP).then_some((self.state & 0x7f, self.state & 0x80 != 0))
    }
    fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() != 17 {
            return Err("length");
        }
        let v4 = |o: usize| IpAddr::from([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Ok(Fake {
            port: u16::from_be_bytes([b[0], b[1]]),
            protocol: b[2],
            state: b[3],
            timeout: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            related: b[8] != 0,
            src: v4(9),
            reply_dst: v4(13),
        })
    }
}

fn flow(port: u16, state: u8) -> Fake {
    Fake {
        port,
        protocol: PROTO_TCP,
        src: "10.76.2.10".parse().unwrap(),
        reply_dst: "10.76.4.1".parse().unwrap(), // SNAT to the WAN VIP
        state,
        timeout: 120,
        related: false,
    }
}

/// A flow of the router itself (e.g. the sync connection).
fn local_flow(port: u16) -> Fake {
    Fake {
        src: "10.76.9.1".parse().unwrap(),
        reply_dst: "10.76.9.1".parse().unwrap(),
        ..flow(port, 1)
    }
}

fn filter() -> Filter {
    Filter::new(
        ["10.76.9.1".parse().unwrap(), "10.76.2.2".parse().unwrap()],
        vec!["10.76.9.0/30".parse().unwrap()],
    )
}

fn core(now: Instant) -> SyncCore<Fake> {
    SyncCore::new(SyncConfig::default(), filter(), now)
}

fn master(now: Instant) -> SyncCore<Fake> {
    let mut c = core(now);
    c.on_connected(now);
    c.set_role(Role::Master, now);
    c
}

fn drain(c: &mut SyncCore<Fake>) -> Vec<Record<Fake>> {
    std::iter::from_fn(|| c.poll_transmit())
        .map(|b| Record::decode(&b).unwrap())
        .collect()
}

/// Master -> backup: everything the master has queued.
fn pump(m: &mut SyncCore<Fake>, b: &mut SyncCore<Fake>, now: Instant) {
    if let Some(epoch) = m.take_resync_request() {
        panic!("unexpected resync request {epoch}");
    }
    while let Some(bytes) = m.poll_transmit() {
        b.on_message(&bytes, now);
    }
}

#[test]
fn records_round_trip_and_bad_input_is_rejected_with_a_reason() {
    let recs = [
        Record::Upsert(flow(1, 2)),
        Record::Delete(flow(1, 2)),
        Record::ResyncBegin { epoch: 7 },
        Record::ResyncEnd { epoch: 7, count: 3 },
        Record::ResyncRequest,
    ];
    for r in recs {
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes), Ok(r.clone()));
        for cut in 0..bytes.len() {
            assert!(
                Record::<Fake>::decode(&bytes[..cut]).is_err(),
                "{r:?} cut at {cut}"
            );
        }
    }
    assert_eq!(
        Record::<Fake>::decode(&[9, 1]).unwrap_err().reason(),
        "record-version"
    );
    assert_eq!(
        Record::<Fake>::decode(&[1, 99]).unwrap_err().reason(),
        "record-kind"
    );
    let mut long = Record::<Fake>::ResyncBegin { epoch: 1 }.encode();
    long.push(0);
    assert_eq!(
        Record::<Fake>::decode(&long).unwrap_err().reason(),
        "record-trailing"
    );
}

#[test]
fn master_on_connect_sends_a_full_resync_and_coalesces_changes_per_flow() {
    let now = Instant::now();
    let mut m = master(now);
    let epoch = m.take_resync_request().expect("a resync on connect");
    m.begin_resync(epoch, vec![flow(1, 1), local_flow(2), flow(3, 1)]);
    // Events read after the dump: flow 1 changes twice, then flow 4 appears.
    m.on_local_event(LocalEvent::Update(flow(1, 2)), now);
    m.on_local_event(LocalEvent::Update(flow(1, 3)), now);
    m.on_local_event(LocalEvent::New(flow(4, 1)), now);
    m.on_local_event(LocalEvent::New(local_flow(5)), now);
    let recs = drain(&mut m);
    assert_eq!(
        recs,
        vec![
            Record::ResyncBegin { epoch },
            Record::Upsert(flow(1, 1)),
            Record::Upsert(flow(3, 1)),
            Record::ResyncEnd { epoch, count: 2 },
            Record::Upsert(flow(1, 3)), // latest state wins
            Record::Upsert(flow(4, 1)),
        ]
    );
    assert_eq!(m.counters().events_filtered, 1);
}

#[test]
fn backup_installs_at_once_with_a_generous_timeout_and_never_from_local_flows() {
    let now = Instant::now();
    let mut m = master(now);
    let mut b = core(now);
    m.take_resync_request();
    m.on_local_event(LocalEvent::New(flow(1, 1)), now);
    pump(&mut m, &mut b, now);
    let ops = b.take_ops();
    assert_eq!(ops.len(), 1);
    let Op::Install(e) = &ops[0] else {
        panic!("{ops:?}")
    };
    assert_eq!(e.timeout, SyncConfig::default().replica_timeout_secs);
    // A forged record for a local flow of ours is refused.
    b.on_message(&Record::Upsert(local_flow(9)).encode(), now);
    assert!(b.take_ops().is_empty());
    assert_eq!(b.counters().errors["filtered-input"], 1);
    b.on_message(b"\x01", now);
    b.on_message(b"garbage", now);
    assert_eq!(b.counters().errors["record-truncated"], 1);
    assert_eq!(b.counters().errors["record-version"], 1);
}

#[test]
fn resync_sweeps_only_stale_replicated_entries_and_reports_divergence() {
    let now = Instant::now();
    let mut b = core(now);
    // Leftovers in our own table when we became BACKUP: one forwarded flow, one local flow.
    b.adopt([flow(50, 1), flow(52, 1), local_flow(51)]);
    b.on_message(&Record::Upsert(flow(1, 1)).encode(), now);
    b.on_message(&Record::Upsert(flow(2, 1)).encode(), now);
    b.take_ops();
    // The master's table now holds flows 1, 3 and 52: 2 and 50 are stale, 3 was missing.
    for r in [
        Record::ResyncBegin { epoch: 1 },
        Record::Upsert(flow(1, 2)),
        Record::Upsert(flow(3, 1)),
        Record::Upsert(flow(52, 2)),
        Record::ResyncEnd { epoch: 1, count: 3 },
    ] {
        b.on_message(&r.encode(), now);
    }
    let installed = |p| {
        Op::Install(Fake {
            timeout: 3600,
            ..flow(p, 2)
        })
    };
    let ops = b.take_ops();
    assert_eq!(
        ops[..4],
        [
            installed(1), // installed from the peer before: updated in place
            Op::Install(Fake {
                timeout: 3600,
                ..flow(3, 1)
            }),
            Op::Remove((PROTO_TCP, 52)), // adopted from our own table: re-created
            installed(52),
        ][..],
    );
    let mut removed: Vec<(u8, u16)> = ops[4..]
        .iter()
        .filter_map(|op| match op {
            Op::Remove(k) => Some(*k),
            Op::Install(_) => None,
        })
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        vec![(PROTO_TCP, 2), (PROTO_TCP, 50)],
        "the local flow 51 is kept"
    );
    assert_eq!(b.counters().last_divergence, 3);
    assert!(b.last_full_sync().is_some());
}

#[test]
fn an_incomplete_resync_sweeps_nothing() {
    let now = Instant::now();
    let mut b = core(now);
    b.on_message(&Record::Upsert(flow(1, 1)).encode(), now);
    for r in [
        Record::<Fake>::ResyncBegin { epoch: 4 },
        Record::ResyncEnd { epoch: 4, count: 5 },
    ] {
        b.on_message(&r.encode(), now);
    }
    assert!(!b.take_ops().iter().any(|op| matches!(op, Op::Remove(_))));
    assert_eq!(b.counters().errors["resync-incomplete"], 1);
}

#[test]
fn deletes_are_held_and_dropped_when_a_local_link_goes_down() {
    let t0 = Instant::now();
    let hold = SyncConfig::default().delete_hold;
    let mut m = master(t0);
    m.take_resync_request();
    m.on_local_event(LocalEvent::Destroy(flow(1, 1)), t0);
    assert!(drain(&mut m).is_empty(), "held");
    m.on_timer(t0 + hold);
    assert_eq!(drain(&mut m), vec![Record::Delete(flow(1, 1))]);

    // A flush followed by the link-down that caused it: nothing goes out.
    let t1 = t0 + Duration::from_secs(5);
    for p in 10..20 {
        m.on_local_event(LocalEvent::Destroy(flow(p, 1)), t1);
    }
    m.on_link_down(t1 + Duration::from_millis(50));
    m.on_local_event(
        LocalEvent::Destroy(flow(30, 1)),
        t1 + Duration::from_millis(60),
    );
    m.on_timer(t1 + hold * 4);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.counters().deletes_suppressed, 11);
    // Later deletions are replicated again.
    let t2 = t1 + Duration::from_secs(10);
    m.on_timer(t2);
    m.on_local_event(LocalEvent::Destroy(flow(40, 1)), t2);
    m.on_timer(t2 + hold);
    assert_eq!(drain(&mut m), vec![Record::Delete(flow(40, 1))]);
}

#[test]
fn a_partial_update_is_folded_into_the_queued_full_view() {
    let now = Instant::now();
    let mut m = master(now);
    m.take_resync_request();
    m.on_local_event(LocalEvent::New(flow(1, 7)), now);
    let partial = Fake {
        state: 0,
        timeout: 99,
        ..flow(1, 0)
    };
    m.on_local_event(LocalEvent::Update(partial), now);
    assert_eq!(
        drain(&mut m),
        vec![Record::Upsert(Fake {
            timeout: 99,
            ..flow(1, 7)
        })]
    );
    // Nothing queued: the update goes as it is (the backup updates what it has).
    m.on_local_event(LocalEvent::Update(partial_of(2)), now);
    assert_eq!(drain(&mut m), vec![Record::Upsert(partial_of(2))]);
}

fn partial_of(port: u16) -> Fake {
    Fake {
        state: 0,
        ..flow(port, 0)
    }
}

#[test]
fn a_recreated_flow_is_not_overtaken_by_its_held_delete() {
    let t0 = Instant::now();
    let mut m = master(t0);
    m.take_resync_request();
    m.on_local_event(LocalEvent::Destroy(flow(1, 1)), t0);
    m.on_local_event(LocalEvent::New(flow(1, 5)), t0 + Duration::from_millis(10));
    m.on_timer(t0 + Duration::from_secs(3));
    assert_eq!(drain(&mut m), vec![Record::Upsert(flow(1, 5))]);
}

#[test]
fn leaving_master_sends_nothing_more() {
    let now = Instant::now();
    let mut m = master(now);
    m.take_resync_request();
    m.on_local_event(LocalEvent::New(flow(1, 1)), now);
    m.on_local_event(LocalEvent::Destroy(flow(2, 1)), now);
    m.set_role(Role::Backup, now);
    m.on_local_event(LocalEvent::Destroy(flow(3, 1)), now);
    m.on_timer(now + Duration::from_secs(5));
    // Only a request for the new master's table goes out.
    assert_eq!(drain(&mut m), vec![Record::ResyncRequest]);
    assert_eq!(m.counters().deletes_suppressed, 1);
}

#[test]
fn a_resync_request_is_answered_with_the_whole_table() {
    let now = Instant::now();
    let mut m = master(now);
    m.take_resync_request();
    assert!(m.take_resync_request().is_none());
    m.on_message(&Record::<Fake>::ResyncRequest.encode(), now);
    assert!(m.take_resync_request().is_some());
    // A backup ignores it.
    let mut b = core(now);
    b.on_connected(now);
    b.on_message(&Record::<Fake>::ResyncRequest.encode(), now);
    assert!(b.take_resync_request().is_none());
    assert!(b.counters().errors.is_empty());
}

#[test]
fn a_new_master_ignores_stale_input_and_resyncs_its_peer() {
    let now = Instant::now();
    let mut b = core(now);
    b.on_connected(now);
    b.on_message(&Record::Upsert(flow(1, 1)).encode(), now);
    b.take_ops();
    b.set_role(Role::Master, now);
    b.on_message(&Record::Upsert(flow(2, 1)).encode(), now);
    assert!(b.take_ops().is_empty());
    assert_eq!(b.counters().errors["stale-input"], 1);
    assert!(b.take_resync_request().is_some());
}

#[test]
fn the_queue_is_bounded_and_an_overflow_turns_into_a_resync() {
    let now = Instant::now();
    let cfg = SyncConfig {
        queue_limit: 10,
        ..SyncConfig::default()
    };
    let mut m = SyncCore::<Fake>::new(cfg, filter(), now);
    m.on_connected(now);
    m.set_role(Role::Master, now);
    m.take_resync_request();
    for p in 0..100 {
        m.on_local_event(LocalEvent::New(flow(p, 1)), now);
        assert!(m.queue_depth() <= 10);
    }
    assert!(m.counters().overruns >= 1);
    assert!(
        m.take_resync_request().is_some(),
        "the backlog becomes a resync"
    );
    // An overrun of the kernel's event socket too.
    m.on_local_event(LocalEvent::Overrun, now);
    assert!(m.take_resync_request().is_some());
}

#[test]
fn preempt_is_held_until_a_full_resync_or_the_timeout() {
    let t0 = Instant::now();
    let mut b = core(t0);
    assert_eq!(b.poll_preempt_hold(), Some(true));
    assert_eq!(b.poll_preempt_hold(), None);
    for r in [
        Record::ResyncBegin { epoch: 1 },
        Record::Upsert(flow(1, 1)),
        Record::ResyncEnd { epoch: 1, count: 1 },
    ] {
        b.on_message(&r.encode(), t0);
    }
    assert_eq!(b.poll_preempt_hold(), Some(false));

    // The peer reconnects but never sends a resync: released by the timeout.
    let t1 = t0 + Duration::from_secs(1);
    b.on_connected(t1);
    assert_eq!(b.poll_preempt_hold(), Some(true));
    b.on_timer(t1 + Duration::from_secs(9));
    assert_eq!(b.poll_preempt_hold(), None);
    let deadline = b.poll_timeout().expect("a deadline for the hold");
    b.on_timer(deadline);
    assert_eq!(b.poll_preempt_hold(), Some(false));
    let _ = PROTO_UDP;
}

fn fresher(peer: &Fake, ours: &Fake) -> bool {
    peer_is_fresher(peer, ours, &TcpTimeouts::default())
}

fn aged(port: u16, state: u8, timeout: u32) -> Fake {
    Fake {
        timeout,
        ..flow(port, state)
    }
}

#[test]
fn freshness_follows_the_state_and_the_time_since_the_last_packet() {
    const EST: u8 = 3;
    const UNACK: u8 = 0x80;
    // Same state: the entry refreshed more recently has more left.
    assert!(fresher(&aged(1, EST, 431_990), &aged(1, EST, 431_900)));
    assert!(!fresher(&aged(1, EST, 431_900), &aged(1, EST, 431_990)));
    // Ties keep ours.
    assert!(!fresher(&aged(1, EST, 100), &aged(1, EST, 100)));
    // Closed where it was seen last: a later state wins even with a short timeout.
    assert!(fresher(&aged(1, 7, 110), &aged(1, EST, 431_999)));
    assert!(!fresher(&aged(1, EST, 431_999), &aged(1, 7, 110)));
    // Refreshed 2 s ago with unacknowledged data (300 s timeout) beats one idle for 10 s.
    assert!(fresher(&aged(1, EST | UNACK, 298), &aged(1, EST, 431_990)));
    assert!(!fresher(&aged(1, EST | UNACK, 250), &aged(1, EST, 431_990)));
    // UDP: the larger remaining timeout.
    let udp = |t| Fake {
        protocol: PROTO_UDP,
        ..aged(9, 0, t)
    };
    assert!(fresher(&udp(30), &udp(12)));
    assert!(!fresher(&udp(12), &udp(30)));
}

/// Both routers were MASTER while the sync link was down (split brain); a, the higher priority,
/// stays MASTER when it heals, b steps back. b forwarded the flows meanwhile.
fn split_brain(now: Instant) -> (SyncCore<Fake>, SyncCore<Fake>) {
    let mut a = master(now);
    let mut b = core(now);
    b.on_connected(now);
    // a's table reaches b first.
    let epoch = a.take_resync_request().unwrap();
    a.begin_resync(epoch, vec![aged(1, 3, 431_999)]);
    pump(&mut a, &mut b, now);
    b.take_ops();
    a.on_disconnected();
    b.on_disconnected();
    b.set_role(Role::Master, now);
    (a, b)
}

#[test]
fn after_a_split_brain_the_master_takes_the_peers_fresher_entries() {
    let now = Instant::now();
    let (mut a, mut b) = split_brain(now);
    // The link heals: b hears a's higher priority before the channel is back.
    b.set_role(Role::Backup, now);
    a.on_connected(now);
    b.on_connected(now);
    // Both send their tables: a as MASTER, b (BACKUP now) as an offer.
    let ea = a.take_resync_request().expect("a sends its table");
    let eb = b
        .take_resync_request()
        .expect("b offers its table though BACKUP");
    // a's view is stale: flow 1 idle since the cut, flow 2 ended on b, flow 3 new on b.
    a.begin_resync(ea, vec![aged(1, 3, 431_900), aged(2, 3, 431_900)]);
    b.begin_resync(
        eb,
        vec![aged(1, 3, 431_999), aged(2, 7, 118), aged(3, 3, 431_998)],
    );
    // b asks for a's table on leaving MASTER too; the offer goes first.
    for bytes in std::iter::from_fn(|| b.poll_transmit()) {
        a.on_message(&bytes, now);
    }
    assert!(
        a.take_merge_request(),
        "a merges once b's whole table arrived"
    );
    a.merge(vec![
        aged(1, 3, 431_900),
        aged(2, 3, 431_900),
        aged(4, 3, 431_900),
    ]);
    assert_eq!(
        a.take_ops(),
        vec![
            Op::Remove((PROTO_TCP, 1)),
            Op::Remove((PROTO_TCP, 2)),
            Op::Install(aged(1, 3, 431_999)),
            Op::Install(aged(2, 7, 118)),
            Op::Install(aged(3, 3, 431_998)),
        ]
    );
    assert_eq!(a.counters().merged, 3);
    assert!(!a.take_merge_request());
    // The kernel's events for the merged entries go to b, after a's (stale) table.
    a.on_local_event(LocalEvent::New(aged(1, 3, 431_999)), now);
    for bytes in std::iter::from_fn(|| a.poll_transmit()) {
        b.on_message(&bytes, now);
    }
    let ops = b.take_ops();
    assert_eq!(ops.first(), Some(&Op::Install(aged(1, 3, 431_900))));
    assert_eq!(ops.last(), Some(&Op::Install(aged(1, 3, 431_999))));
}

#[test]
fn without_a_split_brain_a_master_still_ignores_its_peers_table() {
    let now = Instant::now();
    // a was MASTER with b connected all along; b restarts (it never served alone).
    let mut a = master(now);
    let e = a.take_resync_request().unwrap();
    a.begin_resync(e, vec![]);
    drain(&mut a);
    let mut b = core(now);
    b.on_connected(now);
    assert_eq!(
        b.take_resync_request(),
        None,
        "a plain BACKUP offers nothing"
    );
    // A table that arrives anyway (e.g. from an old master) is stale input.
    let mut old = master(now);
    let e = old.take_resync_request().unwrap();
    old.begin_resync(e, vec![aged(1, 3, 431_999)]);
    for bytes in std::iter::from_fn(|| old.poll_transmit()) {
        a.on_message(&bytes, now);
    }
    assert!(!a.take_merge_request());
    assert!(a.take_ops().is_empty());
    assert!(a.counters().errors["stale-input"] >= 1);
}

#[test]
fn an_offer_in_progress_is_finished_when_leaving_master() {
    let now = Instant::now();
    let (mut a, mut b) = split_brain(now);
    a.on_connected(now);
    b.on_connected(now);
    let eb = b.take_resync_request().unwrap();
    b.begin_resync(eb, vec![aged(1, 3, 431_999)]);
    let first = b.poll_transmit().unwrap();
    b.set_role(Role::Backup, now);
    let rest: Vec<Record<Fake>> = std::iter::once(first)
        .chain(std::iter::from_fn(|| b.poll_transmit()))
        .map(|x| Record::decode(&x).unwrap())
        .collect();
    // The request for a's table may overtake the rest of the offer (a answers it anyway).
    assert_eq!(
        rest,
        vec![
            Record::ResyncBegin { epoch: eb },
            Record::ResyncRequest,
            Record::Upsert(aged(1, 3, 431_999)),
            Record::ResyncEnd {
                epoch: eb,
                count: 1
            },
        ]
    );
}

#[test]
fn a_mass_deletion_is_replicated_as_a_resync_not_per_flow() {
    let now = Instant::now();
    let mut m = master(now);
    let e = m.take_resync_request().unwrap();
    m.begin_resync(e, vec![]);
    drain(&mut m);
    let n = SyncConfig::default().mass_delete as u16 + 10;
    for port in 1..=n {
        m.on_local_event(LocalEvent::Destroy(flow(port, 3)), now);
    }
    let hold = SyncConfig::default().delete_hold;
    m.on_timer(now + hold);
    assert!(drain(&mut m).is_empty(), "no Delete per flow");
    let epoch = m.take_resync_request().expect("the table is sent instead");
    m.begin_resync(epoch, vec![flow(9999, 3)]);
    assert_eq!(
        drain(&mut m),
        vec![
            Record::ResyncBegin { epoch },
            Record::Upsert(flow(9999, 3)),
            Record::ResyncEnd { epoch, count: 1 },
        ]
    );
    assert_eq!(m.counters().mass_deletions, 1);
    // A few deletions still go one by one.
    for port in 1..=3 {
        m.on_local_event(LocalEvent::Destroy(flow(port, 3)), now + hold);
    }
    m.on_timer(now + hold * 2);
    assert_eq!(drain(&mut m).len(), 3);
    assert_eq!(m.take_resync_request(), None);
}

#[test]
fn many_deletions_in_a_big_table_still_go_one_by_one() {
    let now = Instant::now();
    let mut m = master(now);
    let e = m.take_resync_request().unwrap();
    let n = SyncConfig::default().mass_delete as u16;
    m.begin_resync(e, (1..=3 * n).map(|p| flow(p, 3)).collect());
    drain(&mut m);
    for port in 1..=n {
        m.on_local_event(LocalEvent::Destroy(flow(port, 3)), now);
    }
    let hold = SyncConfig::default().delete_hold;
    m.on_timer(now + hold);
    assert_eq!(m.take_resync_request(), None);
    assert_eq!(
        drain(&mut m).len(),
        n as usize,
        "a third of the table: Delete records"
    );
    assert_eq!(m.counters().mass_deletions, 0);
}

#[test]
fn a_split_brain_with_the_channel_up_is_found_and_the_peers_table_merged() {
    let t0 = Instant::now();
    let mut a = master(t0);
    let mut b = core(t0);
    b.on_connected(t0);
    let e = a.take_resync_request().unwrap();
    a.begin_resync(e, vec![aged(1, 3, 431_900)]);
    pump(&mut a, &mut b, t0);
    b.take_ops();
    // A cut too short to drop the channel: b stops hearing a's adverts and serves too.
    let t1 = t0 + Duration::from_secs(5);
    b.set_role(Role::Master, t1);
    b.on_local_event(LocalEvent::New(aged(3, 3, 431_999)), t1);
    // Its records reach a, MASTER for 5 s already: not the trailing records of an old master.
    for bytes in std::iter::from_fn(|| b.poll_transmit()) {
        a.on_message(&bytes, t1);
    }
    assert_eq!(a.counters().split_brains, 1);
    assert_eq!(drain(&mut a), vec![Record::MergeRequest]);
    // b answers with its whole table (b is still MASTER; as BACKUP it would offer it).
    b.on_message(&Record::<Fake>::MergeRequest.encode(), t1);
    let e = b.take_resync_request().expect("b sends its table");
    b.begin_resync(e, vec![aged(1, 3, 431_999), aged(3, 3, 431_999)]);
    for bytes in std::iter::from_fn(|| b.poll_transmit()) {
        a.on_message(&bytes, t1);
    }
    assert!(a.take_merge_request());
    a.merge(vec![aged(1, 3, 431_900)]);
    assert_eq!(
        a.take_ops(),
        vec![
            Op::Remove((PROTO_TCP, 1)),
            Op::Install(aged(1, 3, 431_999)),
            Op::Install(aged(3, 3, 431_999)),
        ]
    );
    // More of b's records while the split lasts: one merge request per interval, not per record.
    b.on_local_event(LocalEvent::New(aged(4, 3, 431_999)), t1);
    for bytes in std::iter::from_fn(|| b.poll_transmit()) {
        a.on_message(&bytes, t1 + Duration::from_secs(1));
    }
    assert_eq!(a.counters().split_brains, 1);
    assert!(drain(&mut a).is_empty());
    // The split heals: b steps down and offers its table once more (with what it forwarded
    // since); a merges that too.
    let t2 = t1 + Duration::from_secs(2);
    b.set_role(Role::Backup, t2);
    let e = b
        .take_resync_request()
        .expect("b offers its table on stepping down");
    b.begin_resync(
        e,
        vec![
            aged(1, 3, 431_999),
            aged(3, 3, 431_999),
            aged(4, 3, 431_999),
        ],
    );
    let sent = drain(&mut b);
    assert_eq!(sent.first(), Some(&Record::ResyncRequest));
    for r in sent {
        a.on_message(&r.encode(), t2);
    }
    assert!(a.take_merge_request());
    a.merge(vec![aged(1, 3, 431_999), aged(3, 3, 431_999)]);
    assert_eq!(a.take_ops(), vec![Op::Install(aged(4, 3, 431_999))]);
}

#[test]
fn a_new_masters_trailing_input_is_no_split_brain() {
    let t0 = Instant::now();
    let mut b = core(t0);
    b.on_connected(t0);
    b.set_role(Role::Master, t0);
    // The old master's last records, half a second into our mastership.
    b.on_message(
        &Record::Upsert(flow(2, 1)).encode(),
        t0 + Duration::from_millis(500),
    );
    assert_eq!(b.counters().split_brains, 0);
    assert!(
        !drain(&mut b)
            .iter()
            .any(|r| matches!(r, Record::MergeRequest))
    );
}

#[test]
fn leaving_fault_holds_preemption_until_the_masters_table_arrives() {
    let t0 = Instant::now();
    let mut b = core(t0);
    b.on_connected(t0);
    let full = [
        Record::ResyncBegin { epoch: 1 },
        Record::Upsert(flow(1, 1)),
        Record::ResyncEnd { epoch: 1, count: 1 },
    ];
    for r in &full {
        b.on_message(&r.encode(), t0);
    }
    while b.poll_preempt_hold().is_some() {}
    assert!(!b.preempt_held());
    // FAULT -> BACKUP: the master's table is asked for and preemption held until it is in.
    let t1 = t0 + Duration::from_secs(30);
    b.on_rejoin(t1);
    assert_eq!(b.poll_preempt_hold(), Some(true));
    assert_eq!(drain(&mut b), vec![Record::ResyncRequest]);
    for r in [
        Record::ResyncBegin { epoch: 2 },
        Record::Upsert(flow(1, 1)),
        Record::ResyncEnd { epoch: 2, count: 1 },
    ] {
        b.on_message(&r.encode(), t1);
    }
    assert_eq!(b.poll_preempt_hold(), Some(false));
}

#[test]
fn freshness_uses_the_namespaces_tcp_timeouts() {
    const EST: u8 = 3;
    const UNACK: u8 = 0x80;
    // nf_conntrack_tcp_timeout_established = 7200: 7190 s left means idle for 10 s, fresher
    // than an entry refreshed 50 s ago with unacknowledged data (250 of 300 s left).
    let tuned = TcpTimeouts {
        established: 7_200,
        unacknowledged: 300,
    };
    let idle_10s = aged(1, EST, 7_190);
    let unack_50s = aged(1, EST | UNACK, 250);
    assert!(peer_is_fresher(&idle_10s, &unack_50s, &tuned));
    assert!(!peer_is_fresher(&unack_50s, &idle_10s, &tuned));
    // Judged with the 5-day default, the same entry would look idle for days.
    assert!(!peer_is_fresher(
        &idle_10s,
        &unack_50s,
        &TcpTimeouts::default()
    ));
}

#[test]
fn a_flush_is_replicated_when_released_without_waiting_for_its_last_events() {
    let t0 = Instant::now();
    let mut m = master(t0);
    let e = m.take_resync_request().unwrap();
    let n = SyncConfig::default().mass_delete as u16 * 8;
    m.begin_resync(e, (1..=n).map(|p| flow(p, 3)).collect());
    drain(&mut m);
    let hold = SyncConfig::default().delete_hold;
    // Three quarters of the table's DESTROY events have been read when the first is released;
    // the burst is still going on (a quarter of the table is still a mass deletion).
    let read = (u32::from(n) * 3 / 4) as u16;
    for port in 1..=read {
        m.on_local_event(LocalEvent::Destroy(flow(port, 3)), t0);
    }
    m.on_local_event(LocalEvent::Destroy(flow(read + 1, 3)), t0 + hold);
    assert_eq!(m.poll_timeout(), Some(t0 + hold), "decided when released");
    m.on_timer(t0 + hold);
    assert!(drain(&mut m).is_empty(), "no Delete per flow");
    let epoch = m.take_resync_request().expect("the table is sent at once");
    m.begin_resync(epoch, vec![]);
    drain(&mut m);
    assert_eq!(m.counters().mass_deletions, 1);
    // The rest of the burst: another resync, still no Delete per flow.
    let t1 = t0 + hold + Duration::from_millis(10);
    for port in read + 2..=n {
        m.on_local_event(LocalEvent::Destroy(flow(port, 3)), t1);
    }
    m.on_timer(t1 + hold + MASS_QUIET);
    assert!(drain(&mut m).is_empty(), "no Delete per flow");
    assert!(m.take_resync_request().is_some());
    assert_eq!(m.counters().mass_deletions, 2);
}
