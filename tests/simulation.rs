//! The protocol core in a simulated network, in virtual time.
//!
//! N = 2..8 routers run the real `Engine` for one VRID. A seeded scenario adds packet loss,
//! partitions that heal, and routers that stop (gracefully or by crashing) and start again.
//! After the chaos ends the network is left alone, and the properties are:
//! - once the network has been stable for Master_Down_Interval (plus delivery slack), there is
//!   exactly one master and it is the running router with the highest priority;
//! - no two routers hold the virtual address at once for longer than one Master_Down_Interval
//!   after the last partition healed.
//!
//! `VRRPD_SIM_SEEDS` sets the number of seeds (default 2000); `VRRPD_SIM_SEED` replays one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use vrrpd::proto::engine::{Action, Engine, GroupSpec};
use vrrpd::proto::packet::Received;
use vrrpd::proto::router::{RouterParams, State};
use vrrpd::proto::time::master_down_interval;
use vrrpd::proto::{Centis, ChecksumForm, Family};

/// SplitMix64: a tiny deterministic generator, enough for scenarios.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
const VRID: u8 = 7;

#[derive(Debug, Clone)]
enum Chaos {
    Partition(Vec<u8>), // side of each router
    Heal,
    Loss(u64),
    Stop { node: usize, graceful: bool },
    Start { node: usize },
}

struct Node {
    address: Ipv4Addr,
    priority: u8,
    engine: Option<Engine>,
}

impl Node {
    fn state(&self) -> State {
        self.engine
            .as_ref()
            .map_or(State::Init, |e| e.router(0).state())
    }
}

struct Sim {
    base: Instant,
    nodes: Vec<Node>,
    interval: Centis,
    side: Vec<u8>,
    loss: u64,
    rng: Rng,
    deliveries: BinaryHeap<Reverse<(Duration, u64)>>,
    pending: HashMap<u64, (usize, Received)>,
    seq: u64,
    /// Last virtual time at which two or more routers were MASTER.
    last_double_master: Option<Duration>,
    log: Vec<String>,
}

impl Sim {
    fn params(&self, i: usize) -> RouterParams {
        RouterParams {
            name: "g".into(),
            vrid: VRID,
            family: Family::Ipv4,
            priority: self.nodes[i].priority,
            advertise_interval: self.interval,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept: false,
            addresses: vec![VIP],
            primary_address: IpAddr::V4(self.nodes[i].address),
        }
    }

    fn start(&mut self, i: usize, t: Duration) {
        let mut e = Engine::new(
            vec![GroupSpec {
                params: self.params(i),
                sync_group: None,
            }],
            vec![],
        );
        e.start(self.base + t);
        self.nodes[i].engine = Some(e);
        self.flush(i, t);
    }

    /// Carries out a router's actions: adverts go to every router on its side of the network.
    fn flush(&mut self, i: usize, t: Duration) {
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        let mut sent = Vec::new();
        while let Some(a) = engine.poll_action() {
            if let Action::SendAdvert { advert, .. } = a {
                sent.push(advert);
            }
        }
        for advert in sent {
            for j in 0..self.nodes.len() {
                if j == i || self.side[i] != self.side[j] || self.rng.chance(self.loss) {
                    continue;
                }
                // 0.1..=1.1 ms on the wire.
                let latency = Duration::from_micros(100 + self.rng.below(1000));
                let rx = Received {
                    advert: advert.clone(),
                    source: IpAddr::V4(self.nodes[i].address),
                    destination: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
                    checksum_form: ChecksumForm::PseudoHeader,
                };
                self.seq += 1;
                self.deliveries.push(Reverse((t + latency, self.seq)));
                self.pending.insert(self.seq, (j, rx));
            }
        }
    }

    fn observe(&mut self, t: Duration) {
        let masters = self
            .nodes
            .iter()
            .filter(|n| n.state() == State::Master)
            .count();
        if masters > 1 {
            self.last_double_master = Some(t);
        }
    }

    fn apply(&mut self, t: Duration, c: &Chaos) {
        self.log.push(format!("{:>10.3?} {c:?}", t));
        match c {
            Chaos::Partition(side) => self.side = side.clone(),
            Chaos::Heal => self.side = vec![0; self.nodes.len()],
            Chaos::Loss(p) => self.loss = *p,
            Chaos::Stop { node, graceful } => {
                if *graceful {
                    if let Some(e) = self.nodes[*node].engine.as_mut() {
                        e.shutdown(self.base + t);
                    }
                    self.flush(*node, t);
                }
                self.nodes[*node].engine = None;
            }
            Chaos::Start { node } => {
                if self.nodes[*node].engine.is_none() {
                    self.start(*node, t);
                }
            }
        }
    }

    /// Runs until `end`, applying the scenario on the way.
    fn run(&mut self, scenario: &[(Duration, Chaos)], end: Duration) {
        let mut next = 0;
        loop {
            let chaos_at = scenario.get(next).map(|(t, _)| *t);
            let delivery_at = self.deliveries.peek().map(|Reverse((t, _))| *t);
            let timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    n.engine
                        .as_ref()?
                        .poll_timeout()
                        .map(|d| (d - self.base, i))
                })
                .min();
            let t = [chaos_at, delivery_at, timer.map(|(t, _)| t)]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = t.filter(|t| *t <= end) else {
                break;
            };
            if chaos_at == Some(t) {
                let c = scenario[next].1.clone();
                self.apply(t, &c);
                next += 1;
            } else if delivery_at == Some(t) {
                let Reverse((_, seq)) = self.deliveries.pop().unwrap();
                let (j, rx) = self.pending.remove(&seq).unwrap();
                if let Some(e) = self.nodes[j].engine.as_mut() {
                    e.handle_advert(self.base + t, 0, &rx);
                    self.flush(j, t);
                }
            } else if let Some((_, i)) = timer {
                self.nodes[i]
                    .engine
                    .as_mut()
                    .unwrap()
                    .handle_timeout(self.base + t);
                self.flush(i, t);
            }
            self.observe(t);
            for n in &self.nodes {
                if let Some(e) = &n.engine {
                    assert!(e.timers_consistent(), "timer queue out of step at {t:?}");
                }
            }
        }
    }
}

fn scenario(rng: &mut Rng, n: usize, interval: Duration) -> (Vec<(Duration, Chaos)>, Duration) {
    let mut out = Vec::new();
    let mut t = Duration::ZERO;
    let mut running = vec![true; n];
    let chaos_end = interval * 200;
    loop {
        t += interval * (1 + rng.below(8) as u32) + Duration::from_micros(rng.below(10_000));
        if t >= chaos_end {
            break;
        }
        let c = match rng.below(5) {
            0 => Chaos::Partition((0..n).map(|_| rng.below(2) as u8).collect()),
            1 => Chaos::Heal,
            2 => Chaos::Loss([0, 5, 20, 50][rng.below(4) as usize]),
            3 => {
                let node = rng.below(n as u64) as usize;
                if running[node] && running.iter().filter(|r| **r).count() > 1 {
                    running[node] = false;
                    Chaos::Stop {
                        node,
                        graceful: rng.chance(50),
                    }
                } else {
                    continue;
                }
            }
            _ => {
                let node = rng.below(n as u64) as usize;
                if running[node] {
                    continue;
                }
                running[node] = true;
                Chaos::Start { node }
            }
        };
        out.push((t, c));
    }
    out.push((chaos_end, Chaos::Heal));
    out.push((chaos_end, Chaos::Loss(0)));
    (out, chaos_end)
}

fn run_seed(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed);
    let n = 2 + rng.below(7) as usize;
    let interval = Centis::new([1, 5, 10, 100][rng.below(4) as usize]).unwrap();
    // Distinct priorities 1..=254, so "the best router" is well defined.
    let mut priorities: Vec<u8> = Vec::new();
    while priorities.len() < n {
        let p = 1 + rng.below(254) as u8;
        if !priorities.contains(&p) {
            priorities.push(p);
        }
    }
    let nodes = (0..n)
        .map(|i| Node {
            address: Ipv4Addr::new(10, 0, 0, 1 + i as u8),
            priority: priorities[i],
            engine: None,
        })
        .collect();
    let (chaos, heal) = scenario(&mut rng, n, interval.as_duration());
    let mut sim = Sim {
        base: Instant::now(),
        nodes,
        interval,
        side: vec![0; n],
        loss: 0,
        rng: Rng(seed ^ 0x5eed),
        deliveries: BinaryHeap::new(),
        pending: HashMap::new(),
        seq: 0,
        last_double_master: None,
        log: Vec::new(),
    };
    for i in 0..n {
        sim.start(i, Duration::ZERO);
    }
    let lowest_priority = *priorities.iter().min().unwrap();
    let mdi = master_down_interval(lowest_priority, interval);
    // Slack: one advert interval for the new master's first advert to be answered, plus latency.
    let settle = heal + mdi + interval.as_duration() + Duration::from_millis(5);
    sim.run(&chaos, settle);

    let running: Vec<usize> = (0..n).filter(|&i| sim.nodes[i].engine.is_some()).collect();
    let masters: Vec<usize> = running
        .iter()
        .copied()
        .filter(|&i| sim.nodes[i].state() == State::Master)
        .collect();
    let best = *running
        .iter()
        .max_by_key(|&&i| sim.nodes[i].priority)
        .unwrap();
    let fail = |sim: &Sim, what: String| {
        Err(format!(
            "seed {seed}: {what}\n n={n} interval={interval} priorities={priorities:?} running={running:?}\n states={:?}\n scenario:\n{}",
            sim.nodes.iter().map(|n| n.state()).collect::<Vec<_>>(),
            sim.log.join("\n")
        ))
    };
    if masters != [best] {
        return fail(
            &sim,
            format!("masters {masters:?} at {settle:?}, expected [{best}]"),
        );
    }
    if let Some(t) = sim.last_double_master {
        if t > heal + mdi {
            return fail(
                &sim,
                format!(
                    "two masters at {t:?}, more than Master_Down_Interval {mdi:?} after the heal at {heal:?}"
                ),
            );
        }
    }
    if std::env::var_os("VRRPD_SIM_STATS").is_some() {
        eprintln!(
            "seed {seed}: n={n} interval={interval} chaos events={} adverts delivered={}",
            chaos.len(),
            sim.seq
        );
    }
    // And it stays that way.
    sim.run(&[], settle + interval.as_duration() * 20);
    let masters: Vec<usize> = running
        .iter()
        .copied()
        .filter(|&i| sim.nodes[i].state() == State::Master)
        .collect();
    if masters != [best] {
        return fail(
            &sim,
            format!("masters {masters:?} after a quiet period, expected [{best}]"),
        );
    }
    Ok(())
}

#[test]
fn elections_converge_to_the_best_router_after_chaos() {
    if let Ok(seed) = std::env::var("VRRPD_SIM_SEED") {
        run_seed(seed.parse().expect("VRRPD_SIM_SEED is a number")).unwrap();
        return;
    }
    let seeds: u64 = std::env::var("VRRPD_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let failures: Vec<String> = (0..seeds).filter_map(|s| run_seed(s).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed; first:\n{}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn the_simulation_can_fail() {
    // A control: with every advert lost, nobody hears anybody and every router becomes master.
    let mut sim = Sim {
        base: Instant::now(),
        nodes: (0..3)
            .map(|i| Node {
                address: Ipv4Addr::new(10, 0, 0, 1 + i),
                priority: 100 + i,
                engine: None,
            })
            .collect(),
        interval: Centis::new(10).unwrap(),
        side: vec![0; 3],
        loss: 100,
        rng: Rng(1),
        deliveries: BinaryHeap::new(),
        pending: HashMap::new(),
        seq: 0,
        last_double_master: None,
        log: Vec::new(),
    };
    for i in 0..3 {
        sim.start(i, Duration::ZERO);
    }
    sim.run(&[], Duration::from_secs(5));
    assert_eq!(
        sim.nodes
            .iter()
            .filter(|n| n.state() == State::Master)
            .count(),
        3
    );
    assert!(sim.last_double_master.is_some());
}
