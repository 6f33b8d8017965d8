//! The replication driver: one tokio task that feeds [`SyncCore`] with kernel events, channel
//! messages, role changes and time, and carries out what it asks (kernel installs and removals,
//! table dumps, records to send). The daemon talks to it through a [`SyncHandle`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::channel::{self, ChannelConfig, ChannelEvent, ChannelReceiver, ChannelSender};
use super::entry::{Entry, FlowKey};
use super::filter::Filter;
use super::kernel::{Conntrack, EventStream, KernelEvent};
use super::sync::{LocalEvent, Op, Role, SyncConfig, SyncCore, SyncEntry};

impl SyncEntry for Entry {
    type Key = FlowKey;
    fn key(&self) -> FlowKey {
        Entry::key(self).clone()
    }
    fn protocol(&self) -> u8 {
        Entry::key(self).protocol
    }
    fn addresses(&self) -> [IpAddr; 4] {
        let k = Entry::key(self);
        [k.src, k.dst, self.reply_src(), self.reply_dst()]
    }
    fn timeout_secs(&self) -> Option<u32> {
        Entry::timeout_secs(self)
    }
    fn set_timeout_secs(&mut self, secs: u32) {
        Entry::set_timeout_secs(self, secs)
    }
    fn is_related(&self) -> bool {
        Entry::is_related(self)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        Entry::encode(self, out)
    }
    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        Entry::decode(bytes).map_err(|e| e.reason())
    }
    fn merge_update(&mut self, newer: &Self) {
        Entry::merge_update(self, newer)
    }
    fn tcp_state(&self) -> Option<(u8, bool)> {
        /// IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
        const DATA_UNACKNOWLEDGED: u8 = 0x10;
        self.tcp.map(|t| {
            let (o, r) = t.flags.unwrap_or((0, 0));
            (t.state, (o | r) & DATA_UNACKNOWLEDGED != 0)
        })
    }
}

/// Everything the task needs from the configuration and the daemon.
pub struct SyncSettings {
    pub sync_group: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub key: Option<Vec<u8>>,
    /// The sync link's subnet plus `ignore-address`.
    pub ignored: Vec<IpNet>,
    /// The virtual addresses: on our links, but not "own" (SNAT to a VIP is replicated).
    pub virtual_addresses: Vec<IpAddr>,
    pub core: SyncConfig,
}

/// Sent by the daemon.
enum Command {
    Role(Role),
    /// Install what has arrived, then become MASTER; answered when done.
    BeforeMaster(oneshot::Sender<()>),
    LinkDown,
    /// The sync group left FAULT for BACKUP.
    Rejoin,
    Shutdown(oneshot::Sender<()>),
}

/// The daemon's side of the task.
pub struct SyncHandle {
    commands: mpsc::Sender<Command>,
    status: Arc<Mutex<Value>>,
    pub sync_group: String,
}

/// How long BeforeMaster may delay a takeover.
pub const BEFORE_MASTER_BOUND: Duration = Duration::from_secs(1);
/// Kernel operations applied per netlink batch.
const OPS_BATCH: usize = 2048;
/// Channel messages drained without yielding.
const DRAIN_BATCH: usize = 4096;
const STATUS_EVERY: Duration = Duration::from_millis(100);
const OWN_ADDRESSES_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("conntrack netlink: {0}")]
    Kernel(#[from] super::kernel::KernelError),
    #[error("starting the conntrack-sync thread: {0}")]
    Thread(std::io::Error),
    #[error("sync channel on {local}: {source}")]
    Channel {
        local: SocketAddr,
        source: std::io::Error,
    },
}

impl SyncHandle {
    /// Subscribes to conntrack events, dumps the table, opens the channel and starts the task.
    /// `hold` receives the preempt hold whenever it changes (true first: a router that starts
    /// waits for its peer's table).
    ///
    /// The task runs on a thread of its own, so that a burst of conntrack work (a 240,000-entry
    /// flush, a resync) never delays the VRRP timers of the daemon's thread.
    pub async fn start(
        settings: SyncSettings,
        own: Vec<IpAddr>,
        hold: mpsc::UnboundedSender<bool>,
    ) -> Result<SyncHandle, SyncError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("conntrack-sync".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SyncError::Thread(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Self::open(settings, own, hold).await {
                        Ok((task, handle)) => {
                            let _ = ready_tx.send(Ok(handle));
                            task.run().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(SyncError::Thread)?;
        ready_rx.await.map_err(|_| {
            SyncError::Thread(std::io::Error::other("the conntrack-sync thread ended"))
        })?
    }

    /// Opens the kernel side and the channel (on the sync thread's runtime).
    async fn open(
        settings: SyncSettings,
        own: Vec<IpAddr>,
        hold: mpsc::UnboundedSender<bool>,
    ) -> Result<(Task, SyncHandle), SyncError> {
        let events = EventStream::open()?; // before the dump
        let kernel = Conntrack::open()?;
        let mut filter = Filter::new([], settings.ignored.clone());
        filter.set_own(own_addresses(&own, &settings));
        let mut core = SyncCore::new(settings.core.clone(), filter, Instant::now());
        let table = kernel.dump().await?;
        core.adopt(table);
        // Redial at least every second: after a split brain heals, the merge waits for the
        // channel while the higher-priority router already forwards with its stale table.
        let timing = channel::Timing {
            backoff_max: Duration::from_secs(1),
            ..channel::Timing::default()
        };
        let (sender, receiver) = channel::spawn_with_timing(
            ChannelConfig {
                local: settings.local,
                peer: settings.peer,
                key: settings.key.clone(),
                queue_limit: 65_536,
            },
            timing,
        )
        .map_err(|source| SyncError::Channel {
            local: settings.local,
            source,
        })?;
        let status = Arc::new(Mutex::new(Value::Null));
        let (commands, rx) = mpsc::channel(64);
        let mut task = Task {
            core,
            kernel,
            events,
            sender,
            receiver,
            commands: rx,
            hold,
            status: status.clone(),
            settings,
            stalled: None,
            last_full_sync: None,
            channel_open: true,
        };
        task.follow_role(); // BACKUP until the sync group says otherwise
        let sync_group = task.settings.sync_group.clone();
        task.publish();
        Ok((
            task,
            SyncHandle {
                commands,
                status,
                sync_group,
            },
        ))
    }

    /// The sync group moved to `role` (BACKUP, FAULT -> [`Role::Backup`]).
    pub async fn set_role(&self, role: Role) {
        let _ = self.commands.send(Command::Role(role)).await;
    }

    /// Before the addresses move to us: install what the old master sent (bounded).
    pub async fn before_master(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::BeforeMaster(tx)).await.is_ok() {
            let _ = tokio::time::timeout(BEFORE_MASTER_BOUND, rx).await;
        }
    }

    /// The sync group left FAULT for BACKUP: ask the master for its whole table and hold
    /// preemption until it has arrived.
    pub async fn rejoin(&self) {
        let _ = self.commands.send(Command::Rejoin).await;
    }

    /// A local link went down: the deletions it causes are not replicated.
    pub fn link_down(&self) {
        let _ = self.commands.try_send(Command::LinkDown);
    }

    /// Stops sending (our own VIP removal must not reach the peer) and ends the task.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }

    /// The `vrrpd show sync` object.
    pub fn status(&self) -> Value {
        self.status
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

fn own_addresses(own: &[IpAddr], settings: &SyncSettings) -> Vec<IpAddr> {
    own.iter()
        .copied()
        .filter(|a| !settings.virtual_addresses.contains(a))
        .chain([settings.local.ip(), settings.peer.ip()])
        .collect()
}

struct Task {
    core: SyncCore<Entry>,
    kernel: Conntrack,
    events: EventStream,
    sender: ChannelSender,
    receiver: ChannelReceiver,
    commands: mpsc::Receiver<Command>,
    hold: mpsc::UnboundedSender<bool>,
    status: Arc<Mutex<Value>>,
    settings: SyncSettings,
    /// A record the channel refused for now (queue full): sent first when there is room.
    stalled: Option<Vec<u8>>,
    last_full_sync: Option<SystemTime>,
    channel_open: bool,
}

impl Task {
    async fn run(mut self) {
        let mut batch = Vec::new();
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        let mut own_tick = tokio::time::interval(OWN_ADDRESSES_EVERY);
        own_tick.tick().await;
        loop {
            self.apply_ops().await;
            if let Some(epoch) = self.core.take_resync_request() {
                self.resync(epoch).await;
            }
            if self.core.take_merge_request() {
                self.merge().await;
                self.apply_ops().await;
            }
            self.transmit();
            while let Some(held) = self.core.poll_preempt_hold() {
                let _ = self.hold.send(held);
            }
            // The channel's tasks share this thread: never starve them with a stream of events.
            tokio::task::yield_now().await;
            let deadline = self
                .core
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                biased;
                cmd = self.commands.recv() => match cmd {
                    None => {
                        self.core.set_role(Role::Stopped, Instant::now());
                        return;
                    }
                    Some(Command::Shutdown(done)) => {
                        self.core.set_role(Role::Stopped, Instant::now());
                        self.publish();
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd).await,
                },
                event = self.receiver.recv(), if self.channel_open => match event {
                    Some(event) => self.channel_event(event).await,
                    None => {
                        tracing::error!("the sync channel ended: conntrack replication stopped");
                        self.channel_open = false;
                    }
                },
                got = self.events.next_batch(&mut batch) => match got {
                    Ok(_) => {
                        let now = Instant::now();
                        for event in batch.drain(..) {
                            self.core.on_local_event(local_event(event), now);
                        }
                        // A stream of events must not starve the timers (held deletions).
                        if self.core.poll_timeout().is_some_and(|t| now >= t) {
                            self.core.on_timer(now);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("conntrack events: {e}");
                        self.core.on_local_event(LocalEvent::Overrun, Instant::now());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => self.core.on_timer(Instant::now()),
                _ = tokio::time::sleep(Duration::from_millis(2)), if self.stalled.is_some() => {}
                _ = status_tick.tick() => self.publish(),
                _ = own_tick.tick() => self.refresh_own_addresses().await,
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Role(role) => {
                let was = self.core.role();
                self.core.set_role(role, now);
                self.follow_role();
                if role == Role::Backup && was != Role::Backup {
                    // Our table: what the new master does not confirm is swept at its resync.
                    match self.kernel.dump().await {
                        Ok(table) => self.core.adopt(table),
                        Err(e) => tracing::warn!("conntrack dump at BACKUP: {e}"),
                    }
                }
            }
            Command::BeforeMaster(done) => {
                // Whatever has already arrived is installed before the addresses move here.
                let start = Instant::now();
                while start.elapsed() < BEFORE_MASTER_BOUND {
                    let mut got = 0;
                    while got < DRAIN_BATCH {
                        match self.receiver.recv().now_or_never() {
                            Some(Some(event)) => {
                                self.channel_event_now(event);
                                got += 1;
                            }
                            _ => break,
                        }
                    }
                    self.apply_ops().await;
                    if got == 0 {
                        break;
                    }
                }
                self.core.set_role(Role::Master, Instant::now());
                self.follow_role();
                let _ = done.send(());
            }
            Command::LinkDown => self.core.on_link_down(now),
            Command::Rejoin => self.core.on_rejoin(now),
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
        self.publish();
    }

    /// A BACKUP replicates nothing, so the kernel's events (one per entry it installs or
    /// sweeps: 240,000 after a flush on the master) would only be parsed and dropped: listen
    /// while MASTER only. Becoming MASTER joins before the dump that starts its resync, so no
    /// change falls between the two.
    fn follow_role(&mut self) {
        let listen = self.core.role() == Role::Master;
        if let Err(e) = self.events.set_subscribed(listen) {
            tracing::warn!("conntrack events (listen: {listen}): {e}");
        }
    }

    async fn channel_event(&mut self, event: ChannelEvent) {
        self.channel_event_now(event);
        // Drain what is already there, so the kernel gets big batches.
        for _ in 0..DRAIN_BATCH {
            match self.receiver.recv().now_or_never() {
                Some(Some(event)) => self.channel_event_now(event),
                _ => break,
            }
            if self.core.pending_ops() >= OPS_BATCH {
                self.apply_ops().await;
            }
        }
    }

    fn channel_event_now(&mut self, event: ChannelEvent) {
        let now = Instant::now();
        match event {
            ChannelEvent::Connected => {
                tracing::info!(peer = %self.settings.peer, "sync peer connected");
                self.core.on_connected(now);
            }
            ChannelEvent::Disconnected { reason } => {
                tracing::warn!(peer = %self.settings.peer, %reason, "sync peer disconnected");
                self.core.on_disconnected();
                self.stalled = None;
            }
            ChannelEvent::Message(bytes) => {
                let before = self.core.counters().resyncs_received;
                self.core.on_message(&bytes, now);
                if self.core.counters().resyncs_received != before {
                    self.last_full_sync = Some(SystemTime::now());
                }
            }
        }
    }

    /// Installs and removes what the core asked for, in order, in batches.
    async fn apply_ops(&mut self) {
        let ops = self.core.take_ops();
        let mut installs: Vec<Entry> = Vec::new();
        let mut removals: Vec<FlowKey> = Vec::new();
        for op in ops {
            match op {
                Op::Install(e) => {
                    if !removals.is_empty() {
                        self.remove(std::mem::take(&mut removals)).await;
                    }
                    installs.push(e);
                    if installs.len() >= OPS_BATCH {
                        self.install(std::mem::take(&mut installs)).await;
                    }
                }
                Op::Remove(k) => {
                    if !installs.is_empty() {
                        self.install(std::mem::take(&mut installs)).await;
                    }
                    removals.push(k);
                }
            }
        }
        if !installs.is_empty() {
            self.install(installs).await;
        }
        if !removals.is_empty() {
            self.remove(removals).await;
        }
    }

    async fn install(&mut self, mut entries: Vec<Entry>) {
        // Masters before the entries their expectations created.
        entries.sort_by_key(|e| e.is_related());
        match self.kernel.install(&entries).await {
            Ok(report) => {
                let c = self.core.counters_mut();
                c.entries_installed += (report.created + report.updated) as u64;
                for (reason, n) in report.errors {
                    *c.errors.entry(format!("install-{reason}")).or_default() += n as u64;
                }
            }
            Err(e) => {
                tracing::warn!(
                    entries = entries.len(),
                    "installing replicated entries: {e}"
                );
                *self
                    .core
                    .counters_mut()
                    .errors
                    .entry("install-netlink".into())
                    .or_default() += 1;
            }
        }
    }

    async fn remove(&mut self, keys: Vec<FlowKey>) {
        let start = Instant::now();
        match self.kernel.remove(&keys).await {
            Ok(n) => {
                if keys.len() >= 10_000 {
                    tracing::info!(entries = n, took = ?start.elapsed(), "removed conntrack entries");
                }
                self.core.counters_mut().entries_removed += n as u64
            }
            Err(e) => {
                tracing::warn!(entries = keys.len(), "removing replicated entries: {e}");
                *self
                    .core
                    .counters_mut()
                    .errors
                    .entry("remove-netlink".into())
                    .or_default() += 1;
            }
        }
    }

    async fn resync(&mut self, epoch: u64) {
        match self.kernel.dump().await {
            Ok(table) => {
                tracing::info!(
                    entries = table.len(),
                    epoch,
                    "sending the conntrack table to the peer"
                );
                self.stalled = None;
                self.core.begin_resync(epoch, table);
            }
            Err(e) => {
                tracing::warn!("conntrack dump for a resync: {e}");
                self.core
                    .on_local_event(LocalEvent::Overrun, Instant::now());
            }
        }
    }

    /// After a split brain: our table against the peer's, fresher entries installed at once.
    async fn merge(&mut self) {
        match self.kernel.dump().await {
            Ok(table) => {
                self.core.merge(table);
            }
            Err(e) => {
                // Nothing merged: the peer's view is lost; ours stays the reference.
                tracing::warn!("conntrack dump for a split-brain merge: {e}");
                self.core.abandon_merge();
            }
        }
    }

    /// Hands records to the channel until it is full.
    fn transmit(&mut self) {
        loop {
            let Some(msg) = self.stalled.take().or_else(|| self.core.poll_transmit()) else {
                return;
            };
            match self.sender.try_send(msg) {
                Ok(()) => {}
                Err(channel::TrySendError::Full(msg)) => {
                    self.stalled = Some(msg);
                    return;
                }
                Err(channel::TrySendError::Closed(_)) => return,
            }
        }
    }

    async fn refresh_own_addresses(&mut self) {
        match crate::netlink::Netlink::new() {
            Ok(nl) => match all_addresses(&nl).await {
                Ok(own) => {
                    let own = own_addresses(&own, &self.settings);
                    self.core.filter_mut().set_own(own);
                }
                Err(e) => tracing::debug!("reading own addresses: {e}"),
            },
            Err(e) => tracing::debug!("rtnetlink: {e}"),
        }
    }

    fn publish(&self) {
        let c = self.core.counters();
        let ch = self.sender.stats();
        let mut errors = c.errors.clone();
        for (reason, n) in &ch.errors {
            *errors.entry(format!("channel-{reason}")).or_default() += n;
        }
        let rfc3339 = |t: SystemTime| {
            time::OffsetDateTime::from(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let value = json!({
            "sync-group": self.settings.sync_group,
            "local": self.settings.local.to_string(),
            "peer": self.settings.peer.to_string(),
            "connected": ch.connected,
            "authenticated": ch.authenticated,
            "encrypted": self.settings.key.is_some(),
            "role": self.core.role(),
            "preempt-held": self.core.preempt_held(),
            "entries-sent": c.entries_sent,
            "entries-received": c.entries_received,
            "entries-installed": c.entries_installed,
            "entries-removed": c.entries_removed,
            "replicated-entries": self.core.replicated_entries(),
            "events-filtered": c.events_filtered,
            "deletes-suppressed": c.deletes_suppressed,
            "queue-depth": self.core.queue_depth() + ch.queue_depth + usize::from(self.stalled.is_some()),
            "resyncs-sent": c.resyncs_sent,
            "resyncs-received": c.resyncs_received,
            "overruns": c.overruns,
            "last-divergence": c.last_divergence,
            "divergence-total": c.divergence_total,
            "merged": c.merged,
            "mass-deletions": c.mass_deletions,
            "split-brains": c.split_brains,
            "messages-sent": ch.messages_sent,
            "messages-received": ch.messages_received,
            "bytes-sent": ch.bytes_sent,
            "bytes-received": ch.bytes_received,
            "connects": ch.connects,
            "errors": errors,
            "last-connected": ch.last_connected.map(rfc3339),
            "last-full-sync": self.last_full_sync.map(rfc3339),
        });
        if let Ok(mut s) = self.status.lock() {
            *s = value;
        }
    }
}

fn local_event(event: KernelEvent) -> LocalEvent<Entry> {
    match event {
        KernelEvent::New(e) => LocalEvent::New(e),
        KernelEvent::Update(e) => LocalEvent::Update(e),
        KernelEvent::Destroy(e) => LocalEvent::Destroy(e),
        KernelEvent::Overrun => LocalEvent::Overrun,
    }
}

/// Every address on every link of this namespace.
pub async fn all_addresses(
    nl: &crate::netlink::Netlink,
) -> Result<Vec<IpAddr>, crate::netlink::NetlinkError> {
    let mut out = Vec::new();
    for link in nl.links().await? {
        for a in nl.addresses(link.index).await? {
            out.push(a.addr());
        }
    }
    Ok(out)
}
