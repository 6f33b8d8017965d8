//! One VRRPv3 virtual router (one VRID, one address family): the RFC 5798 §6.4 state machine
//! with the RFC 9568 updates.
//!
//! Event handlers never switch state by themselves: they return the transition they want
//! ([`Want`]) and the [`Engine`](super::engine::Engine) decides, because a member of a sync group
//! may only become MASTER when all its siblings can. Entering a state is [`VirtualRouter::enter`],
//! which performs the RFC's entry actions.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::{Advert, Received};
use super::time::{master_down_interval, skew_time};
use super::{Centis, ChecksumForm, Family};

/// RFC 5798 §6.4 states, plus FAULT (an interface the group depends on is down), which behaves
/// like Initialize but is entered and left by link events rather than by start and shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a state changed. Shown in logs and passed to hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Initialize → Backup at start-up (RFC 5798 §6.4.1).
    Startup,
    /// Priority 255: the address owner becomes Master at once (RFC 5798 §6.4.1).
    AddressOwner,
    /// Master_Down_Timer fired: no advert from a master for Master_Down_Interval (§6.4.2).
    MasterDown,
    /// Master_Down_Timer fired after the master resigned with priority 0 (Skew_Time, §6.4.2).
    PriorityZero {
        from: IpAddr,
    },
    /// A master heard a better advert and stepped down (§6.4.3).
    HigherPriority {
        from: IpAddr,
        priority: u8,
    },
    /// An interface the group depends on went down / came back.
    LinkDown,
    LinkUp,
    /// A sibling in the sync group moved, and this group followed it.
    SyncGroup {
        member: String,
        cause: Box<Reason>,
    },
    Shutdown,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Startup => f.write_str("startup"),
            Reason::AddressOwner => f.write_str("address owner (priority 255)"),
            Reason::MasterDown => f.write_str("master-down timer expired"),
            Reason::PriorityZero { from } => write!(f, "priority-0 advert from {from}"),
            Reason::HigherPriority { from, priority } => {
                write!(
                    f,
                    "higher-priority advert from {from} (priority {priority})"
                )
            }
            Reason::LinkDown => f.write_str("link down"),
            Reason::LinkUp => f.write_str("link up"),
            Reason::SyncGroup { member, cause } => write!(f, "sync group: {member}: {cause}"),
            Reason::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// A transition an event handler asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub to: State,
    pub reason: Reason,
}

/// What the core needs to know about one virtual router.
#[derive(Debug, Clone)]
pub struct RouterParams {
    pub name: String,
    pub vrid: u8,
    pub family: Family,
    /// 1..=255; 255 is the address owner.
    pub priority: u8,
    pub advertise_interval: Centis,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub accept: bool,
    /// The virtual addresses, as carried in adverts.
    pub addresses: Vec<IpAddr>,
    /// This router's primary address on the interface: advert source and tie-breaker.
    pub primary_address: IpAddr,
}

/// Per-peer receive bookkeeping: which checksum form each sender uses (RFC 5798 vs RFC 9568).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub adverts: u64,
    pub pseudo_header_checksum: u64,
    pub rfc9568_checksum: u64,
    pub last_priority: u8,
}

/// Counters shown by `vrrpd show groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub adverts_rx: u64,
    pub adverts_tx: u64,
    pub priority_zero_rx: u64,
    pub priority_zero_tx: u64,
    /// Every dropped packet, by reason (codec errors and the core's own checks).
    pub invalid_rx: BTreeMap<&'static str, u64>,
    /// Accepted adverts whose address list differs from ours (RFC 5798 §7.1 says log, not drop).
    pub address_mismatch_rx: u64,
    /// Accepted adverts whose Max Adver Int differs from our Advertisement_Interval (RFC 9568
    /// §7.1: SHOULD verify and log; the packet is still used, the interval learnt).
    pub interval_mismatch_rx: u64,
    pub peers: BTreeMap<IpAddr, PeerStats>,
}

impl Stats {
    pub fn invalid_total(&self) -> u64 {
        self.invalid_rx.values().sum()
    }

    pub fn count_invalid(&mut self, reason: &'static str) {
        *self.invalid_rx.entry(reason).or_default() += 1;
    }
}

/// Drops decided by the core after the codec accepted the packet (RFC 5798 §7.1).
pub mod drop_reason {
    /// The local router is the address owner: it discards adverts for its VRID.
    pub const LOCAL_OWNER: &str = "local-owner";
    /// The packet carries our own primary address as source (a looped-back copy).
    pub const OWN_ADVERT: &str = "own-advert";
    /// Address family of the packet differs from the group's.
    pub const FAMILY: &str = "family";
}

/// Side effects of entering a state, in the order they must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    AddAddresses,
    RemoveAddresses,
    SendAdvert(Advert),
    Announce,
}

#[derive(Debug, Clone)]
pub struct VirtualRouter {
    params: RouterParams,
    state: State,
    /// Own links and tracked links all up.
    link_ok: bool,
    master_adver_interval: Centis,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    /// Set when the master resigned (priority 0) so the takeover is reported as such.
    resigned_master: Option<IpAddr>,
    /// When a lower-priority master was first heard; preemption waits `preempt_delay` from here.
    lower_master_since: Option<Instant>,
    /// Preemption is held off by the driver (e.g. until the conntrack table is resynchronised).
    preempt_held: bool,
    /// Remaining gratuitous ARP / NA repeats after becoming master, and when the next is due.
    announce_timer: Option<Instant>,
    announces_left: u8,
    master_address: Option<IpAddr>,
    transitions: u64,
    last_transition: Option<Instant>,
    stats: Stats,
}

/// Gratuitous ARP / unsolicited NA repeats after the first one, and their spacing: enough to
/// survive a lost frame without flooding.
const ANNOUNCE_REPEATS: u8 = 2;
const ANNOUNCE_SPACING: Duration = Duration::from_millis(500);

impl VirtualRouter {
    pub fn new(params: RouterParams) -> VirtualRouter {
        VirtualRouter {
            master_adver_interval: params.advertise_interval,
            params,
            state: State::Init,
            link_ok: true,
            adver_timer: None,
            master_down_timer: None,
            resigned_master: None,
            lower_master_since: None,
            preempt_held: false,
            announce_timer: None,
            announces_left: 0,
            master_address: None,
            transitions: 0,
            last_transition: None,
            stats: Stats::default(),
        }
    }

    pub fn params(&self) -> &RouterParams {
        &self.params
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn link_ok(&self) -> bool {
        self.link_ok
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }
    pub fn master_adver_interval(&self) -> Centis {
        self.master_adver_interval
    }
    /// Primary address of the current master as last seen (our own while MASTER).
    pub fn master_address(&self) -> Option<IpAddr> {
        self.master_address
    }
    pub fn transitions(&self) -> u64 {
        self.transitions
    }
    pub fn last_transition(&self) -> Option<Instant> {
        self.last_transition
    }
    pub fn is_owner(&self) -> bool {
        self.params.priority == 255
    }
    pub fn preempt_held(&self) -> bool {
        self.preempt_held
    }
    /// While held, a Backup follows a lower-priority master instead of preempting it; it still
    /// takes over when Master_Down_Timer fires (nobody else is serving).
    pub fn set_preempt_held(&mut self, held: bool) {
        self.preempt_held = held;
    }

    /// Priority in effect: the configured one while running, 0 when not taking part.
    pub fn effective_priority(&self) -> u8 {
        match self.state {
            State::Fault => 0,
            _ => self.params.priority,
        }
    }

    pub fn skew_time(&self) -> Duration {
        skew_time(self.params.priority, self.master_adver_interval)
    }

    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(self.params.priority, self.master_adver_interval)
    }

    /// The earliest timer this router has armed.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.adver_timer,
            self.master_down_timer,
            self.announce_timer,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn set_link_ok(&mut self, ok: bool) {
        self.link_ok = ok;
    }

    fn advert(&self, priority: u8) -> Advert {
        Advert {
            vrid: self.params.vrid,
            priority,
            max_advert_interval: self.params.advertise_interval,
            addresses: self.params.addresses.clone(),
        }
    }

    fn send_advert(&mut self, priority: u8, effects: &mut Vec<Effect>) {
        self.stats.adverts_tx += 1;
        if priority == 0 {
            self.stats.priority_zero_tx += 1;
        }
        effects.push(Effect::SendAdvert(self.advert(priority)));
    }

    /// RFC 5798 §6.4.1: the Startup event in Initialize.
    pub fn startup_want(&self) -> Want {
        if self.is_owner() {
            Want {
                to: State::Master,
                reason: Reason::AddressOwner,
            }
        } else {
            Want {
                to: State::Backup,
                reason: Reason::Startup,
            }
        }
    }

    /// An advert accepted by the codec for this group's VRID and family.
    pub fn handle_advert(&mut self, now: Instant, rx: &Received) -> (Option<Want>, Vec<Effect>) {
        let mut effects = Vec::new();
        if Family::of(&rx.source) != self.params.family {
            self.stats.count_invalid(drop_reason::FAMILY);
            return (None, effects);
        }
        if rx.source == self.params.primary_address {
            self.stats.count_invalid(drop_reason::OWN_ADVERT);
            return (None, effects);
        }
        // RFC 5798 §7.1: the address owner discards adverts for its VRID.
        if self.is_owner() {
            self.stats.count_invalid(drop_reason::LOCAL_OWNER);
            return (None, effects);
        }
        let adv = &rx.advert;
        self.stats.adverts_rx += 1;
        let peer = self.stats.peers.entry(rx.source).or_default();
        peer.adverts += 1;
        peer.last_priority = adv.priority;
        match rx.checksum_form {
            ChecksumForm::PseudoHeader => peer.pseudo_header_checksum += 1,
            ChecksumForm::Rfc9568 => peer.rfc9568_checksum += 1,
        }
        if adv.priority == 0 {
            self.stats.priority_zero_rx += 1;
        } else if !same_addresses(&adv.addresses, &self.params.addresses) {
            // §7.1: MAY verify the addresses; a mismatch is logged, the packet is not dropped.
            self.stats.address_mismatch_rx += 1;
        }
        if adv.priority != 0 && adv.max_advert_interval != self.params.advertise_interval {
            self.stats.interval_mismatch_rx += 1;
        }

        let want = match self.state {
            State::Backup => {
                self.backup_receives(now, rx);
                None
            }
            State::Master => self.master_receives(now, rx, &mut effects),
            // Initialize and FAULT take no part in the protocol.
            State::Init | State::Fault => None,
        };
        (want, effects)
    }

    /// RFC 5798 §6.4.2 / RFC 9568 §6.4.2: Backup receives an ADVERTISEMENT.
    fn backup_receives(&mut self, now: Instant, rx: &Received) {
        let adv = &rx.advert;
        if adv.priority == 0 {
            // The master resigned: take over after Skew_Time so the best backup goes first.
            self.master_down_timer = Some(now + self.skew_time());
            self.resigned_master = Some(rx.source);
            return;
        }
        let local = self.params.priority;
        let accept = if !self.params.preempt || self.preempt_held || adv.priority >= local {
            self.lower_master_since = None;
            true
        } else {
            // A lower-priority master: preempt, after preempt-delay if one is set. Until it has
            // passed we follow the lower master as if it were better.
            let since = *self.lower_master_since.get_or_insert(now);
            now < since + self.params.preempt_delay
        };
        if accept {
            self.master_adver_interval = adv.max_advert_interval;
            self.master_down_timer = Some(now + self.master_down_interval());
            self.master_address = Some(rx.source);
            self.resigned_master = None;
        }
        // Otherwise discard: Master_Down_Timer runs out and we preempt (§6.4.2).
    }

    /// RFC 5798 §6.4.3 / RFC 9568 §6.4.3: Master receives an ADVERTISEMENT.
    fn master_receives(
        &mut self,
        now: Instant,
        rx: &Received,
        effects: &mut Vec<Effect>,
    ) -> Option<Want> {
        let adv = &rx.advert;
        if adv.priority == 0 {
            // Another router resigned: assert mastership at once.
            self.send_advert(self.params.priority, effects);
            self.adver_timer = Some(now + self.params.advertise_interval.as_duration());
            return None;
        }
        let local = self.params.priority;
        let better = adv.priority > local
            || (adv.priority == local && ip_greater(rx.source, self.params.primary_address));
        if better {
            self.master_adver_interval = adv.max_advert_interval;
            self.master_address = Some(rx.source);
            return Some(Want {
                to: State::Backup,
                reason: Reason::HigherPriority {
                    from: rx.source,
                    priority: adv.priority,
                },
            });
        }
        // RFC 9568 §6.4.3: discard, but answer at once so the lower-priority router (and any
        // learning bridge) learns who the master is without waiting for the Adver_Timer.
        self.send_advert(self.params.priority, effects);
        self.adver_timer = Some(now + self.params.advertise_interval.as_duration());
        // A lower-priority master means a split brain just healed: hosts may have the other
        // router's MAC for our addresses. Announce again (as keepalived does).
        self.reannounce(now, effects);
        None
    }

    /// As MASTER, gratuitous ARP / unsolicited NA again, one burst at a time: a split brain
    /// healed and hosts may still send to the other router. The engine also calls it for the
    /// sync-group siblings, whose own interfaces may never carry a lower-priority advert (the
    /// other router steps down on the first member that hears us).
    pub(crate) fn reannounce(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        if self.state != State::Master || self.announce_timer.is_some() {
            return;
        }
        effects.push(Effect::Announce);
        self.announces_left = ANNOUNCE_REPEATS;
        self.announce_timer = Some(now + ANNOUNCE_SPACING);
    }

    /// Timers that are due. Returns the transition a Master_Down_Timer asks for.
    pub fn handle_timeout(&mut self, now: Instant) -> (Option<Want>, Vec<Effect>) {
        let mut effects = Vec::new();
        let mut want = None;
        if self.adver_timer.is_some_and(|t| t <= now) && self.state == State::Master {
            // §6.4.3: Adver_Timer fired: send an advert and re-arm.
            self.send_advert(self.params.priority, &mut effects);
            self.adver_timer = Some(now + self.params.advertise_interval.as_duration());
        }
        if self.announce_timer.is_some_and(|t| t <= now) {
            if self.state == State::Master && self.announces_left > 0 {
                self.announces_left -= 1;
                effects.push(Effect::Announce);
            }
            self.announce_timer = (self.state == State::Master && self.announces_left > 0)
                .then(|| now + ANNOUNCE_SPACING);
        }
        if self.master_down_timer.is_some_and(|t| t <= now) && self.state == State::Backup {
            self.master_down_timer = None;
            let reason = match self.resigned_master.take() {
                Some(from) => Reason::PriorityZero { from },
                None => Reason::MasterDown,
            };
            want = Some(Want {
                to: State::Master,
                reason,
            });
        }
        (want, effects)
    }

    /// A Master_Down_Timer transition was refused (a sync-group sibling cannot be master):
    /// stay Backup and try again after another Master_Down_Interval.
    pub(crate) fn rearm_master_down(&mut self, now: Instant) {
        if self.state == State::Backup {
            self.master_down_timer = Some(now + self.master_down_interval());
        }
    }

    /// Enters `to`, performing the RFC's entry and exit actions. Returns false if already there.
    pub fn enter(&mut self, now: Instant, to: State, effects: &mut Vec<Effect>) -> bool {
        let from = self.state;
        if from == to {
            return false;
        }
        let leaving_master = from == State::Master;
        // Exit actions.
        self.adver_timer = None;
        self.master_down_timer = None;
        self.announce_timer = None;
        self.announces_left = 0;
        self.resigned_master = None;
        self.lower_master_since = None;
        if leaving_master {
            // §6.4.3 Shutdown: send priority 0 so a backup takes over after Skew_Time. A master
            // that faults on a tracked interface still has its own link, so it resigns the same
            // way. One that steps down to a better master stays silent.
            if matches!(to, State::Init | State::Fault) {
                self.send_advert(0, effects);
            }
            effects.push(Effect::RemoveAddresses);
        }
        // Entry actions.
        match to {
            State::Master => {
                // §6.4.1 / §6.4.2: send an advert, then gratuitous ARP / unsolicited NA.
                effects.push(Effect::AddAddresses);
                self.send_advert(self.params.priority, effects);
                effects.push(Effect::Announce);
                self.adver_timer = Some(now + self.params.advertise_interval.as_duration());
                self.announces_left = ANNOUNCE_REPEATS;
                self.announce_timer = Some(now + ANNOUNCE_SPACING);
                self.master_address = Some(self.params.primary_address);
            }
            State::Backup => {
                if from != State::Master {
                    // §6.4.1: from Initialize, assume the configured interval until a master
                    // tells us its own.
                    self.master_adver_interval = self.params.advertise_interval;
                    self.master_address = None;
                }
                self.master_down_timer = Some(now + self.master_down_interval());
            }
            State::Init | State::Fault => {
                if from == State::Master {
                    self.master_address = None;
                }
            }
        }
        self.state = to;
        self.transitions += 1;
        self.last_transition = Some(now);
        true
    }
}

/// RFC 5798 §6.4.3: addresses compare as unsigned integers in network byte order.
fn ip_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a > b,
        (IpAddr::V6(a), IpAddr::V6(b)) => a > b,
        _ => false,
    }
}

fn same_addresses(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}
