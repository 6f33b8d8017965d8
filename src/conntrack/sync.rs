//! The replication logic, free of I/O: what the master sends, what the backup installs, bulk
//! resync bookkeeping (mark and sweep), delete suppression and the preempt hold.
//!
//! The driver ([`super::task`]) feeds it kernel events, channel messages, role changes, link
//! events and time, and carries out what it asks: records to send ([`SyncCore::poll_transmit`]),
//! kernel operations to apply ([`SyncCore::take_ops`]), a table dump for a resync
//! ([`SyncCore::take_resync_request`]) and the preempt hold ([`SyncCore::poll_preempt_hold`]).
//!
//! Roles follow the `[conntrack-sync]` sync group. MASTER sends; BACKUP and FAULT install what
//! arrives at once (no commit step at takeover). Replicated entries are installed with a
//! generous timeout (at least [`SyncConfig::replica_timeout_secs`]) because the master's kernel
//! sends no event when a packet refreshes a flow's timer: an idle-looking UDP flow that lives on
//! the master must not expire on the backup. After a takeover the kernel puts the protocol's own
//! timeout back on the first packet of each flow; flows that ended on the master are removed by
//! its Delete records, or by the sweep of the next resync.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::filter::Filter;
use super::messages::Record;

/// What the core needs to know about a conntrack entry (implemented by `entry::Entry`; tests use
/// a small fake).
pub trait SyncEntry: Clone + Debug {
    type Key: Clone + Eq + Hash + Debug;
    fn key(&self) -> Self::Key;
    fn protocol(&self) -> u8;
    /// Original source, original destination, reply source, reply destination.
    fn addresses(&self) -> [IpAddr; 4];
    fn timeout_secs(&self) -> Option<u32>;
    fn set_timeout_secs(&mut self, secs: u32);
    /// Created from an expectation: installed after the entries without a master.
    fn is_related(&self) -> bool;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Result<Self, &'static str>;
    /// Folds a newer, possibly partial view (an UPDATE event) into this one.
    fn merge_update(&mut self, newer: &Self) {
        *self = newer.clone();
    }
    /// TCP only: the conntrack state (enum tcp_conntrack) and whether either direction has data
    /// not yet acknowledged (IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED), which shortens the kernel's
    /// timeout to the "unacknowledged" one.
    fn tcp_state(&self) -> Option<(u8, bool)> {
        None
    }
}

const TCP_ESTABLISHED: u8 = 3;
/// A mass deletion has ended when no deletion came for this long...
const MASS_QUIET: Duration = Duration::from_millis(50);
/// ...or this long after its first deletion was released.
const MASS_WAIT: Duration = Duration::from_millis(500);
/// A MASTER that receives its peer's records after being MASTER itself this long takes it for a
/// split brain with the channel up (both served), not the trailing records of the master it
/// just replaced...
const SPLIT_EVIDENCE: Duration = Duration::from_secs(1);
/// ...and asks for the peer's table to merge at most this often while it lasts.
const MERGE_REQUEST_INTERVAL: Duration = Duration::from_secs(5);
/// tcp_conntrack values beyond CLOSE (SYN_SENT2 and internal ones) rank as SYN_SENT.
const TCP_CLOSE: u8 = 8;

/// Whether the peer's view of a flow is more recent than ours (after a split brain, both sides
/// forwarded for a while: per flow, keep the side that saw traffic last).
///
/// The kernel resets an entry's timeout on every packet, to the timeout of the state it is in,
/// so the remaining timeout tells how long ago traffic was seen, given the same state. TCP: a
/// later state wins (the flow moved on, e.g. was closed, where it was seen last); in the same
/// state the more recently refreshed entry wins. An ESTABLISHED entry refreshed while data was
/// unacknowledged (or retransmitted) got the short timeout (300 s by default): its age is
/// counted from that, not from the established one (5 days). Other protocols: the larger
/// remaining timeout. Ties keep ours.
pub fn peer_is_fresher<E: SyncEntry>(peer: &E, ours: &E, timeouts: &TcpTimeouts) -> bool {
    let remaining = |e: &E| e.timeout_secs().unwrap_or(0);
    match (peer.tcp_state(), ours.tcp_state()) {
        (Some((ps, _)), Some((os, _))) => {
            let rank = |s: u8| if s > TCP_CLOSE { 1 } else { s };
            if rank(ps) != rank(os) {
                return rank(ps) > rank(os);
            }
            // Seconds since the last packet, comparable across the two timeouts an ESTABLISHED
            // entry can be refreshed to (other states: only differences matter).
            let age = |e: &E, state: u8| -> u64 {
                let left = u64::from(remaining(e));
                let short = u64::from(timeouts.unacknowledged);
                if state == TCP_ESTABLISHED && left <= short {
                    short - left
                } else {
                    u64::from(timeouts.established).max(left) - left
                }
            };
            age(peer, ps) < age(ours, os)
        }
        _ => remaining(peer) > remaining(ours),
    }
}

/// The kernel's TCP timeouts the freshness of an entry is judged by (this namespace's
/// `nf_conntrack_tcp_timeout_*`; the peer is assumed to use the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTimeouts {
    /// `nf_conntrack_tcp_timeout_established`.
    pub established: u32,
    /// The larger of `nf_conntrack_tcp_timeout_unacknowledged` and `..._max_retrans`: an
    /// ESTABLISHED entry with at most this left was last refreshed with one of them.
    pub unacknowledged: u32,
}

impl Default for TcpTimeouts {
    /// The kernel's defaults: 5 days, 300 s.
    fn default() -> Self {
        TcpTimeouts {
            established: 432_000,
            unacknowledged: 300,
        }
    }
}

impl TcpTimeouts {
    /// This network namespace's values; the kernel's defaults where a sysctl cannot be read.
    pub fn from_sysctls() -> TcpTimeouts {
        let read = |name: &str| -> Option<u32> {
            std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let default = TcpTimeouts::default();
        let unack = read("nf_conntrack_tcp_timeout_unacknowledged");
        let retrans = read("nf_conntrack_tcp_timeout_max_retrans");
        TcpTimeouts {
            established: read("nf_conntrack_tcp_timeout_established")
                .unwrap_or(default.established),
            unacknowledged: match (unack, retrans) {
                (None, None) => default.unacknowledged,
                (a, b) => a.unwrap_or(0).max(b.unwrap_or(0)),
            },
        }
    }
}

/// This router's part in replication, following the sync group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// BACKUP or FAULT (or not started yet): install what the master sends.
    Backup,
    /// Send our table and its changes.
    Master,
    /// Shutting down: neither send nor install.
    Stopped,
}

/// A kernel event as the core sees it.
#[derive(Debug, Clone)]
pub enum LocalEvent<E> {
    New(E),
    Update(E),
    Destroy(E),
    /// The event socket overran (ENOBUFS): events were lost.
    Overrun,
}

/// A kernel operation for the driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<E: SyncEntry> {
    Install(E),
    Remove(E::Key),
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Flows queued for sending at most; beyond it the queue is dropped and a resync is sent.
    pub queue_limit: usize,
    /// Deletions wait this long before they are sent, so a local link-down that follows the
    /// flush it caused can still suppress them.
    pub delete_hold: Duration,
    /// After a local link went down, deletions are not replicated for this long.
    pub link_suppress: Duration,
    /// Upper bound of the preempt hold while waiting for a full resync.
    pub preempt_hold_timeout: Duration,
    /// Replicated entries are installed with at least this timeout.
    pub replica_timeout_secs: u32,
    /// A mass deletion (a flush): when this many deletions are released at once, the table is
    /// sent instead (a resync: the backup sweeps what is gone in big kernel batches) rather
    /// than one Delete record per flow.
    pub mass_delete: usize,
    /// For judging which side's entry is fresher after a split brain.
    pub tcp_timeouts: TcpTimeouts,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            queue_limit: 262_144,
            delete_hold: Duration::from_millis(500),
            link_suppress: Duration::from_secs(2),
            preempt_hold_timeout: Duration::from_secs(10),
            replica_timeout_secs: 3600,
            mass_delete: 4096,
            tcp_timeouts: TcpTimeouts::default(),
        }
    }
}

/// Counters for `vrrpd show sync` (keys are kebab-case in JSON).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SyncCounters {
    /// Upsert and Delete records handed to the channel.
    pub entries_sent: u64,
    /// Upsert and Delete records received.
    pub entries_received: u64,
    /// Entries the kernel accepted (filled in by the driver).
    pub entries_installed: u64,
    /// Entries removed on the peer's word or by a resync sweep (filled in by the driver).
    pub entries_removed: u64,
    /// Events not replicated because of the filter.
    pub events_filtered: u64,
    /// Deletions not replicated because a local link went down or we left MASTER.
    pub deletes_suppressed: u64,
    pub resyncs_sent: u64,
    pub resyncs_received: u64,
    /// Kernel event overruns (ENOBUFS) and send-queue overflows, each followed by a resync.
    pub overruns: u64,
    /// Entries the last completed resync found wrong on this backup (missing or stale).
    pub last_divergence: u64,
    pub divergence_total: u64,
    /// Entries taken from the peer's table after a split brain (fresher than ours).
    pub merged: u64,
    /// Mass deletions (flushes) replicated as a resync instead of one Delete per flow.
    pub mass_deletions: u64,
    /// Split brains found with the channel up (the peer sent as MASTER while we were): each
    /// asks for the peer's table to merge.
    pub split_brains: u64,
    /// Input dropped, by reason.
    pub errors: BTreeMap<String, u64>,
}

enum Pending<E> {
    Upsert(E),
    Delete(E),
}

#[derive(Debug, Clone, Copy)]
struct Replica {
    generation: u64,
    /// Found in our own table, not installed from the peer: it may carry our old window-tracking
    /// state (we forwarded it once), which an update would keep; it is replaced instead.
    adopted: bool,
}

struct ResyncIn {
    epoch: u64,
    received: u64,
    new_keys: u64,
}

pub struct SyncCore<E: SyncEntry> {
    cfg: SyncConfig,
    role: Role,
    filter: Filter,
    connected: bool,
    // Sending side (MASTER).
    order: VecDeque<E::Key>,
    pending: HashMap<E::Key, Pending<E>>,
    held_deletes: VecDeque<(Instant, E)>,
    /// Key -> when its newest held delete was taken; an older queue entry is stale.
    held_index: HashMap<E::Key, Instant>,
    suppress_deletes_until: Option<Instant>,
    resync_wanted: bool,
    epoch: u64,
    resync_out: VecDeque<Record<E>>,
    /// Records sent in any role (resync requests).
    control_out: VecDeque<Record<E>>,
    // Receiving side (BACKUP).
    /// Entries installed from the peer (or adopted from our table at BACKUP), with the resync
    /// generation that last confirmed them.
    replicated: HashMap<E::Key, Replica>,
    generation: u64,
    resync_in: Option<ResyncIn>,
    ops: Vec<Op<E>>,
    // Preempt hold.
    hold_until: Option<Instant>,
    hold_reported: Option<bool>,
    last_full_sync: Option<Instant>,
    counters: SyncCounters,
    // Split-brain merge.
    /// We were MASTER while the peer was unreachable: the peer may have been MASTER too. On the
    /// next connect both tables are exchanged and merged per flow.
    served_alone: bool,
    /// Send our table on this connection even when not MASTER (an offer for the peer's merge).
    offer_out: bool,
    /// The resync being handed to the channel is an offer: finish it even when we leave MASTER.
    offering: bool,
    /// We served alone: a table the peer sends while we are MASTER is merged, not dropped.
    merge_expected: bool,
    offer_in: Option<OfferIn<E>>,
    /// MASTER: entries in our table that pass the filter (the last dump, then events).
    table_estimate: usize,
    /// A complete offer waiting for our own table (see [`SyncCore::take_merge_request`]).
    merge_pending: Option<Vec<E>>,
    /// MASTER while the peer serves as MASTER too (we found it, see
    /// [`SyncCore::check_split_brain`], or the peer did and asked for our table): every table
    /// the peer sends is merged, not only the one asked for, and when we step down our table
    /// goes to the peer once more, with what we forwarded until then.
    split_suspected: bool,
    /// When we last became MASTER.
    master_since: Option<Instant>,
    /// When we last asked the peer for its table to merge.
    last_merge_request: Option<Instant>,
}

struct OfferIn<E> {
    epoch: u64,
    entries: Vec<E>,
}

impl<E: SyncEntry> SyncCore<E> {
    /// A router that starts holds preemption until a full resync arrived or the timeout ran out.
    pub fn new(cfg: SyncConfig, filter: Filter, now: Instant) -> Self {
        let hold_until = Some(now + cfg.preempt_hold_timeout);
        SyncCore {
            cfg,
            role: Role::Backup,
            filter,
            connected: false,
            order: VecDeque::new(),
            pending: HashMap::new(),
            held_deletes: VecDeque::new(),
            held_index: HashMap::new(),
            suppress_deletes_until: None,
            resync_wanted: false,
            epoch: 0,
            resync_out: VecDeque::new(),
            control_out: VecDeque::new(),
            replicated: HashMap::new(),
            generation: 0,
            resync_in: None,
            ops: Vec::new(),
            hold_until,
            hold_reported: None,
            last_full_sync: None,
            counters: SyncCounters::default(),
            served_alone: false,
            offer_out: false,
            offering: false,
            merge_expected: false,
            offer_in: None,
            merge_pending: None,
            table_estimate: 0,
            split_suspected: false,
            master_since: None,
            last_merge_request: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn connected(&self) -> bool {
        self.connected
    }
    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }
    pub fn counters_mut(&mut self) -> &mut SyncCounters {
        &mut self.counters
    }
    pub fn filter(&self) -> &Filter {
        &self.filter
    }
    pub fn filter_mut(&mut self) -> &mut Filter {
        &mut self.filter
    }
    /// Records waiting to be handed to the channel.
    pub fn queue_depth(&self) -> usize {
        self.order.len() + self.resync_out.len() + self.control_out.len()
    }
    pub fn replicated_entries(&self) -> usize {
        self.replicated.len()
    }
    pub fn last_full_sync(&self) -> Option<Instant> {
        self.last_full_sync
    }
    pub fn preempt_held(&self) -> bool {
        self.hold_until.is_some()
    }

    fn count_error(&mut self, reason: &str) {
        *self.counters.errors.entry(reason.to_string()).or_default() += 1;
    }

    /// The sync group moved. Before calling this with [`Role::Master`] the driver installs what
    /// it already received (BeforeMaster).
    pub fn set_role(&mut self, role: Role, now: Instant) {
        if role == self.role {
            return;
        }
        let from = self.role;
        self.role = role;
        self.master_since = (role == Role::Master).then_some(now);
        let offer = std::mem::take(&mut self.split_suspected);
        match role {
            Role::Master => {
                // Our table is now the reference; input from the old master is stale.
                self.replicated.clear();
                self.resync_in = None;
                self.ops.clear();
                self.hold_until = None;
                self.resync_wanted = self.connected;
                if !self.connected {
                    self.served_alone = true;
                }
            }
            Role::Backup | Role::Stopped => {
                // Leaving MASTER: nothing more is sent, in particular not the deletions our own
                // address removal may cause.
                let dropped = self.held_deletes.len() as u64;
                if from == Role::Master {
                    self.counters.deletes_suppressed += dropped;
                }
                // The peer is (or becomes) MASTER and merges what we offered; its table is the
                // reference for us now.
                self.offer_in = None;
                self.merge_pending = None;
                self.merge_expected = false;
                if offer && role == Role::Backup {
                    // A split brain ends with us stepping down: the master merges our table.
                    self.offer_out = true;
                }
                self.clear_outgoing();
                if from == Role::Master && role == Role::Backup {
                    // The new master's first records may have reached us while we were still
                    // MASTER and were dropped as stale: ask for its whole table.
                    self.request_resync();
                }
            }
        }
    }

    fn request_resync(&mut self) {
        if self.connected {
            self.control_out.push_back(Record::ResyncRequest);
        }
    }

    fn clear_outgoing(&mut self) {
        self.order.clear();
        self.pending.clear();
        self.held_deletes.clear();
        self.held_index.clear();
        if !self.offering {
            // An offer in progress is finished: the peer merges it.
            self.resync_out.clear();
        }
        self.resync_wanted = self.offer_out;
    }

    /// Entries found in our own table on becoming BACKUP: each is swept by the next resync
    /// unless the master confirms it. Local flows (failing the filter) are never touched.
    pub fn adopt(&mut self, entries: impl IntoIterator<Item = E>) {
        if self.role != Role::Backup {
            return;
        }
        // During a resync, adopted keys belong to the previous generation (swept unless refreshed).
        let generation = if self.resync_in.is_some() {
            self.generation.saturating_sub(1)
        } else {
            self.generation
        };
        for e in entries {
            if self.filter.passes(e.protocol(), e.addresses()) {
                self.replicated.entry(e.key()).or_insert(Replica {
                    generation,
                    adopted: true,
                });
            }
        }
    }

    /// The sync group left FAULT for BACKUP. What the master sent meanwhile may be missing (the
    /// router may have been cut off entirely): ask for the whole table, and hold preemption
    /// until it has arrived, as after a restart. Without the channel, [`SyncCore::on_connected`]
    /// does both when it is back.
    pub fn on_rejoin(&mut self, now: Instant) {
        if self.role != Role::Backup || !self.connected {
            return;
        }
        self.request_resync();
        self.hold_until = Some(now + self.cfg.preempt_hold_timeout);
        // Reported even if the resync completes before the driver asks.
        self.hold_reported = None;
    }

    pub fn on_connected(&mut self, now: Instant) {
        self.connected = true;
        if std::mem::take(&mut self.served_alone) {
            // A split brain may be healing: our table goes to the peer whatever our role, and
            // a table it sends while we are MASTER is merged into ours per flow.
            self.offer_out = true;
            self.merge_expected = true;
            self.resync_wanted = true;
        }
        match self.role {
            Role::Master => self.resync_wanted = true,
            // The peer came back: hold preemption until its table has reached us.
            Role::Backup => self.hold_until = Some(now + self.cfg.preempt_hold_timeout),
            Role::Stopped => {}
        }
    }

    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.resync_in = None;
        self.control_out.clear();
        self.offer_in = None;
        self.merge_expected = false;
        self.offer_out = false;
        self.offering = false;
        self.split_suspected = false;
        if self.role == Role::Master {
            self.served_alone = true;
            // Lost with the connection; the peer gets a full resync when it is back.
            self.clear_outgoing();
        } else {
            self.resync_out.clear();
            self.resync_wanted = false;
        }
    }

    /// A local link went down: deletions now and for a while are its fallout, not the peer's
    /// business.
    pub fn on_link_down(&mut self, now: Instant) {
        self.counters.deletes_suppressed += self.held_deletes.len() as u64;
        self.held_deletes.clear();
        self.held_index.clear();
        self.suppress_deletes_until = Some(now + self.cfg.link_suppress);
    }

    pub fn on_local_event(&mut self, event: LocalEvent<E>, now: Instant) {
        if self.role != Role::Master {
            return;
        }
        match event {
            LocalEvent::Overrun => {
                self.counters.overruns += 1;
                self.resync_wanted = self.connected;
            }
            LocalEvent::New(e) | LocalEvent::Update(e)
                if !self.filter.passes(e.protocol(), e.addresses()) =>
            {
                self.counters.events_filtered += 1;
            }
            LocalEvent::New(e) => {
                self.table_estimate += 1;
                // The flow exists (again): an older held delete must not overtake it.
                self.held_index.remove(&e.key());
                self.enqueue(e.key(), Pending::Upsert(e));
            }
            LocalEvent::Update(e) => {
                self.held_index.remove(&e.key());
                // An UPDATE carries only what changed: fold it into a queued full view.
                if let Some(Pending::Upsert(queued)) = self.pending.get_mut(&e.key()) {
                    queued.merge_update(&e);
                } else {
                    self.enqueue(e.key(), Pending::Upsert(e));
                }
            }
            LocalEvent::Destroy(e) => {
                if !self.filter.passes(e.protocol(), e.addresses()) {
                    self.counters.events_filtered += 1;
                    return;
                }
                self.table_estimate = self.table_estimate.saturating_sub(1);
                if self.suppress_deletes_until.is_some_and(|t| now < t) {
                    self.counters.deletes_suppressed += 1;
                    return;
                }
                self.held_index.insert(e.key(), now);
                self.held_deletes.push_back((now, e));
            }
        }
    }

    fn enqueue(&mut self, key: E::Key, what: Pending<E>) {
        if !self.connected {
            return; // the peer gets everything in the resync when it connects
        }
        if let Some(slot) = self.pending.get_mut(&key) {
            *slot = what; // latest state wins; the flow keeps its place in the queue
            return;
        }
        if self.order.len() >= self.cfg.queue_limit {
            // Bounded memory: forget the backlog and send the whole table instead.
            self.counters.overruns += 1;
            self.count_error("queue-overflow");
            self.order.clear();
            self.pending.clear();
            self.resync_wanted = true;
            return;
        }
        self.order.push_back(key.clone());
        self.pending.insert(key, what);
    }

    /// Time passed: held deletions are released, the preempt hold may run out.
    pub fn on_timer(&mut self, now: Instant) {
        if self.many_deletions() {
            // Most of the table gone: a flush, decided once the deletions are released; its
            // last events may still be coming (the kernel delivers 240,000 in about 0.3 s after
            // the flush itself), and any that land after the dump start another resync.
            let flush = self.held_deletes.len() >= self.table_estimate;
            let decided = flush && now >= self.mass_released();
            if now < self.mass_deadline() && !decided {
                return self.on_timer_rest(now); // still deleting: wait for the end of it
            }
            let held = self.held_deletes.len();
            if held >= self.table_estimate {
                // Most of the table went (a flush): our table after it says more, in far
                // fewer records, than each deletion.
                let oldest = self.held_deletes.front().map_or(now, |(at, _)| *at);
                tracing::info!(
                    deletions = held,
                    took = ?now.saturating_duration_since(oldest),
                    "mass deletion: replicating it as a resync of the table"
                );
                self.counters.mass_deletions += 1;
                self.held_deletes.clear();
                self.held_index.clear();
                self.resync_wanted = true;
            }
        }
        while let Some((at, _)) = self.held_deletes.front() {
            if now < *at + self.cfg.delete_hold {
                break;
            }
            let (at, e) = self.held_deletes.pop_front().expect("front exists");
            let key = e.key();
            if self.held_index.get(&key) == Some(&at) {
                self.held_index.remove(&key);
                self.enqueue(key, Pending::Delete(e));
            }
        }
        self.on_timer_rest(now);
    }

    fn on_timer_rest(&mut self, now: Instant) {
        if self.suppress_deletes_until.is_some_and(|t| now >= t) {
            self.suppress_deletes_until = None;
        }
        if self.hold_until.is_some_and(|t| now >= t) {
            tracing::warn!(
                "no full conntrack resync from the peer in time: preemption allowed again"
            );
            self.hold_until = None;
        }
    }

    /// Many deletions held: wait for the end of the burst, then replicate it as one resync if
    /// most of the table went (a flush), else one by one.
    fn many_deletions(&self) -> bool {
        self.connected && self.held_deletes.len() >= self.cfg.mass_delete
    }

    /// A mass deletion is replicated once its first deletion was held long enough and no
    /// deletion came for [`MASS_QUIET`] (bounded by [`MASS_WAIT`]).
    fn mass_deadline(&self) -> Instant {
        let Some((newest, _)) = self.held_deletes.back() else {
            return Instant::now();
        };
        let released = self.mass_released();
        released.max(*newest + MASS_QUIET).min(released + MASS_WAIT)
    }

    /// When the first held deletion of the burst is released.
    fn mass_released(&self) -> Instant {
        self.held_deletes
            .front()
            .map_or_else(Instant::now, |(oldest, _)| *oldest + self.cfg.delete_hold)
    }

    /// When [`SyncCore::on_timer`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let release = if self.many_deletions() {
            // A flush is decided when released; a smaller burst waits for its end.
            Some(if self.held_deletes.len() >= self.table_estimate {
                self.mass_released()
            } else {
                self.mass_deadline()
            })
        } else {
            self.held_deletes
                .front()
                .map(|(at, _)| *at + self.cfg.delete_hold)
        };
        [release, self.hold_until].into_iter().flatten().min()
    }

    /// `Some(held)` when the preempt hold changed since last asked.
    pub fn poll_preempt_hold(&mut self) -> Option<bool> {
        let held = self.preempt_held();
        if self.hold_reported == Some(held) {
            return None;
        }
        self.hold_reported = Some(held);
        Some(held)
    }

    /// `Some(epoch)` when the driver must dump the table and pass it to [`SyncCore::begin_resync`].
    pub fn take_resync_request(&mut self) -> Option<u64> {
        let may_send = self.role == Role::Master || (self.offer_out && self.role == Role::Backup);
        if !(self.resync_wanted && self.connected && may_send) {
            return None;
        }
        self.resync_wanted = false;
        self.epoch += 1;
        Some(self.epoch)
    }

    /// Queues a full table transfer. The dump supersedes every change queued before it; events
    /// read after the dump follow it.
    pub fn begin_resync(&mut self, epoch: u64, table: Vec<E>) {
        let offer = std::mem::take(&mut self.offer_out);
        if !self.connected || !(self.role == Role::Master || (offer && self.role == Role::Backup)) {
            return;
        }
        self.offering = offer;
        self.order.clear();
        self.pending.clear();
        self.resync_out.clear();
        self.counters.resyncs_sent += 1;
        self.resync_out.push_back(Record::ResyncBegin { epoch });
        let mut count = 0;
        // Masters before related entries, so the backup can attach expectations' children.
        let (related, plain): (Vec<E>, Vec<E>) = table
            .into_iter()
            .filter(|e| self.filter.passes(e.protocol(), e.addresses()))
            .partition(|e| e.is_related());
        self.table_estimate = plain.len() + related.len();
        for e in plain.into_iter().chain(related) {
            count += 1;
            self.resync_out.push_back(Record::Upsert(e));
        }
        self.resync_out
            .push_back(Record::ResyncEnd { epoch, count });
    }

    /// The next record for the channel.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.role == Role::Stopped {
            return None;
        }
        if let Some(r) = self.control_out.pop_front() {
            return Some(r.encode());
        }
        if self.offering && self.role != Role::Master {
            let r = self.resync_out.pop_front();
            if r.is_none() || self.resync_out.is_empty() {
                self.offering = false;
            }
            if matches!(r, Some(Record::Upsert(_))) {
                self.counters.entries_sent += 1;
            }
            return r.map(|r| r.encode());
        }
        if self.role != Role::Master {
            return None;
        }
        let record = if let Some(r) = self.resync_out.pop_front() {
            if self.resync_out.is_empty() {
                self.offering = false;
            }
            r
        } else {
            let key = self.order.pop_front()?;
            match self.pending.remove(&key)? {
                Pending::Upsert(e) => Record::Upsert(e),
                Pending::Delete(e) => Record::Delete(e),
            }
        };
        if matches!(record, Record::Upsert(_) | Record::Delete(_)) {
            self.counters.entries_sent += 1;
        }
        Some(record.encode())
    }

    /// A message from the peer.
    pub fn on_message(&mut self, bytes: &[u8], now: Instant) {
        let record = match Record::<E>::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("dropped a sync record: {e}");
                self.count_error(e.reason());
                return;
            }
        };
        match record {
            Record::ResyncRequest => {
                if self.role == Role::Master {
                    self.resync_wanted = self.connected;
                }
                return;
            }
            Record::MergeRequest => {
                // Our table goes to the peer whatever our role; it merges it per flow.
                self.offer_out = true;
                self.resync_wanted = self.connected;
                self.split_suspected |= self.role == Role::Master;
                return;
            }
            _ => {}
        }
        if self.role == Role::Master && (self.merge_expected || self.split_suspected) {
            self.merge_input(record);
            return;
        }
        if self.role != Role::Backup {
            // MASTER: our table is the reference now; whatever the old master still says is stale.
            self.count_error("stale-input");
            self.check_split_brain(now);
            return;
        }
        match record {
            Record::Upsert(mut e) => {
                self.counters.entries_received += 1;
                if !self.filter.passes(e.protocol(), e.addresses()) {
                    // Never let the peer overwrite our local flows (the sync link's own).
                    self.count_error("filtered-input");
                    return;
                }
                let timeout = e
                    .timeout_secs()
                    .unwrap_or(0)
                    .max(self.cfg.replica_timeout_secs);
                e.set_timeout_secs(timeout);
                let key = e.key();
                let previous = self.replicated.insert(
                    key.clone(),
                    Replica {
                        generation: self.generation,
                        adopted: false,
                    },
                );
                if let Some(r) = &mut self.resync_in {
                    r.received += 1;
                    r.new_keys += u64::from(previous.is_none());
                }
                if previous.is_some_and(|p| p.adopted) {
                    // Re-created, so the kernel picks the windows up from the next packets.
                    self.ops.push(Op::Remove(key));
                }
                self.ops.push(Op::Install(e));
            }
            Record::Delete(e) => {
                self.counters.entries_received += 1;
                if !self.filter.passes(e.protocol(), e.addresses()) {
                    self.count_error("filtered-input");
                    return;
                }
                let key = e.key();
                self.replicated.remove(&key);
                self.ops.push(Op::Remove(key));
            }
            Record::ResyncBegin { epoch } => {
                self.generation += 1;
                self.resync_in = Some(ResyncIn {
                    epoch,
                    received: 0,
                    new_keys: 0,
                });
            }
            Record::ResyncEnd { epoch, count } => {
                let Some(r) = self.resync_in.take() else {
                    // E.g. its ResyncBegin reached us while we were still MASTER: a resync we
                    // asked for follows.
                    self.count_error("resync-end-without-begin");
                    return;
                };
                if r.epoch != epoch || r.received != count {
                    tracing::warn!(
                        epoch,
                        expected = count,
                        received = r.received,
                        "incomplete conntrack resync: nothing swept"
                    );
                    self.count_error("resync-incomplete");
                    self.request_resync();
                    return;
                }
                let current = self.generation;
                let stale: Vec<E::Key> = self
                    .replicated
                    .iter()
                    .filter(|(_, r)| r.generation < current)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &stale {
                    self.replicated.remove(k);
                }
                let divergence = stale.len() as u64 + r.new_keys;
                self.ops.extend(stale.into_iter().map(Op::Remove));
                self.counters.resyncs_received += 1;
                self.counters.last_divergence = divergence;
                self.counters.divergence_total += divergence;
                if divergence > 0 {
                    tracing::warn!(
                        divergence,
                        entries = count,
                        "conntrack resync repaired entries this backup had wrong or missing"
                    );
                } else {
                    tracing::info!(entries = count, "conntrack resync complete, no divergence");
                }
                self.last_full_sync = Some(now);
                self.hold_until = None;
            }
            Record::ResyncRequest | Record::MergeRequest => {} // answered above
        }
    }

    /// MASTER, and the peer's records still come: past [`SPLIT_EVIDENCE`] they are not the
    /// trailing records of the master we replaced but a peer serving as MASTER at the same
    /// time, with the channel up (a cut too short to drop it). Both tables hold flows the
    /// other lacks: ask for the peer's, to merge it like after a reconnect.
    fn check_split_brain(&mut self, now: Instant) {
        let Some(since) = self.master_since else {
            return;
        };
        let asked_lately = self
            .last_merge_request
            .is_some_and(|t| now < t + MERGE_REQUEST_INTERVAL);
        if !self.connected || now < since + SPLIT_EVIDENCE || asked_lately {
            return;
        }
        tracing::warn!(
            "the conntrack-sync peer sends as MASTER too: split brain, merging its table"
        );
        self.counters.split_brains += 1;
        self.last_merge_request = Some(now);
        self.merge_expected = true;
        self.split_suspected = true;
        self.offer_in = None;
        self.control_out.push_back(Record::MergeRequest);
    }

    /// MASTER after a split brain: the peer's table is collected, then merged with ours.
    fn merge_input(&mut self, record: Record<E>) {
        match record {
            Record::ResyncBegin { epoch } => {
                self.offer_in = Some(OfferIn {
                    epoch,
                    entries: Vec::new(),
                });
            }
            Record::Upsert(e) => {
                self.counters.entries_received += 1;
                if !self.filter.passes(e.protocol(), e.addresses()) {
                    self.count_error("filtered-input");
                    return;
                }
                match &mut self.offer_in {
                    Some(o) => o.entries.push(e),
                    None => self.count_error("stale-input"),
                }
            }
            Record::ResyncEnd { epoch, count } => {
                let Some(o) = self.offer_in.take() else {
                    self.count_error("resync-end-without-begin");
                    return;
                };
                if o.epoch != epoch || o.entries.len() as u64 != count {
                    self.count_error("resync-incomplete");
                    return;
                }
                self.merge_expected = false;
                self.merge_pending = Some(o.entries);
            }
            Record::Delete(_) => self.count_error("stale-input"),
            Record::ResyncRequest | Record::MergeRequest => {}
        }
    }

    /// True when the driver must dump our table and pass it to [`SyncCore::merge`].
    pub fn take_merge_request(&mut self) -> bool {
        self.merge_pending.is_some() && self.role == Role::Master
    }

    /// The merge cannot be done (our table could not be read): ours stays the reference.
    pub fn abandon_merge(&mut self) {
        self.merge_pending = None;
    }

    /// Installs, per flow, the peer's entries that are fresher than ours (or that we lack),
    /// re-created so the kernel picks the windows up from the next packets. The kernel's events
    /// for them replicate the merged view back to the peer. Returns how many were taken.
    pub fn merge(&mut self, table: Vec<E>) -> usize {
        let Some(offered) = self.merge_pending.take() else {
            return 0;
        };
        if self.role != Role::Master {
            return 0;
        }
        let ours: HashMap<E::Key, E> = table.into_iter().map(|e| (e.key(), e)).collect();
        let (mut taken, mut related) = (Vec::new(), Vec::new());
        for e in offered {
            let key = e.key();
            match ours.get(&key) {
                Some(mine) if !peer_is_fresher(&e, mine, &self.cfg.tcp_timeouts) => continue,
                Some(_) => self.ops.push(Op::Remove(key)),
                None => {}
            }
            if e.is_related() {
                related.push(e);
            } else {
                taken.push(e);
            }
        }
        taken.extend(related);
        let n = taken.len();
        self.counters.merged += n as u64;
        self.ops.extend(taken.into_iter().map(Op::Install));
        tracing::info!(
            merged = n,
            "merged the peer's fresher conntrack entries after a split brain"
        );
        n
    }

    /// Kernel operations to apply, in order.
    pub fn take_ops(&mut self) -> Vec<Op<E>> {
        std::mem::take(&mut self.ops)
    }

    pub fn pending_ops(&self) -> usize {
        self.ops.len()
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
