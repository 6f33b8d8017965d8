//! The driver: feeds the protocol core with packets, link events and time, and carries out the
//! actions it returns, in order, with sockets and netlink.

mod accept;
mod conntrack;
mod hooks;
mod ratelog;
mod setup;
mod status;

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::net::ReadySet;
use crate::net::announce::Announcer;
use crate::net::socket::{RxPacket, SocketError, VrrpSocket};
use crate::netlink::{LinkMonitorEvent, Netlink};
use crate::proto::engine::{Action, Engine, NotifyState, NotifyTarget};
use crate::proto::packet::{Advert, VRRP_MCAST_V4, VRRP_MCAST_V6};
use crate::proto::router::{Reason, State};
use crate::proto::{ChecksumForm, Family};

use hooks::{HookJob, HookWorker};
use setup::GroupRuntime;

/// Drops that cannot be put on a group: the packet names a VRID nobody here runs, or is too
/// broken to name one.
pub const UNKNOWN_VRID: &str = "unknown-vrid";

/// Packets the main loop takes from one socket per pass before it looks at the others and at
/// the timers: one flooded socket must not starve the rest.
const RX_BATCH_PER_SOCKET: usize = 256;

/// After a wake-up for packets, the sockets that had them stay unwatched this long while the
/// rest of the burst queues (a master sends every group's advert at once); one pass then takes
/// it. Only packets behind the first of a burst wait, at most this plus tokio's timer rounding
/// (1 ms). Before a Master_Down_Timer decides, every socket is read anyway.
const BURST_GAP: Duration = Duration::from_millis(1);

/// A question from the control socket or the metrics endpoint, with where to send the answer.
struct Event {
    request: Request,
    reply: oneshot::Sender<Response>,
}

/// What one pass over the sockets received: (socket index, packet or error).
type Received = Vec<(usize, Result<RxPacket, SocketError>)>;

pub struct Daemon {
    config: Config,
    engine: Engine,
    netlink: Netlink,
    groups: Vec<GroupRuntime>,
    sockets: Vec<SocketRuntime>,
    /// Read readiness of `sockets`, one-shot (see [`BURST_GAP`]).
    ready: ReadySet,
    announcers: Vec<Announcer>,
    hooks: Option<HookWorker>,
    /// The `[bgp]` worker: prepends follow its sync group's state.
    bgp: Option<crate::bgp::BgpWorker>,
    accept_filter: Option<accept::AcceptFilter>,
    /// Conntrack replication, when `[conntrack-sync]` is configured.
    sync: Option<conntrack::SyncRuntime>,
    /// Link state by interface name: own interfaces and tracked ones.
    links: std::collections::HashMap<String, bool>,
    /// The group of each (socket, VRID), instead of a search per packet.
    group_by_vrid: std::collections::HashMap<(usize, u8), usize>,
    /// Drops not attributable to a configured group, by reason.
    unattributed_drops: std::collections::BTreeMap<&'static str, u64>,
    /// RFC 5798 §7.1: dropped and mismatched adverts SHOULD be logged; a flood must not flood the log.
    input_log: ratelog::RateLimitedLog,
    started_at: SystemTime,
}

/// The counters of accepted-but-surprising adverts: (address list, interval) mismatches.
fn mismatches(stats: &crate::proto::router::Stats) -> (u64, u64) {
    (stats.address_mismatch_rx, stats.interval_mismatch_rx)
}

/// At most one log line per group and kind of bad input in this time.
const INPUT_LOG_INTERVAL: Duration = Duration::from_secs(60);

struct SocketRuntime {
    socket: VrrpSocket,
    family: Family,
    ifname: String,
}

/// Runs the daemon until SIGTERM or SIGINT, then shuts down cleanly.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    set_realtime_priority(config.daemon.realtime_priority);
    let netlink = Netlink::new().context("opening rtnetlink")?;
    // Subscribe to link events before reading link state, so no change falls between the two.
    let mut link_events = crate::netlink::link_monitor().context("subscribing to link events")?;
    let resolved = setup::resolve(&config, &netlink).await?;

    let (events_tx, mut events) = mpsc::channel::<Event>(1024);
    let listener = bind_control_socket(&config.daemon.socket)?;
    spawn_control_server(listener, events_tx.clone());
    if let Some(addr) = config.daemon.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("daemon.metrics: binding {addr}"))?;
        spawn_metrics_server(listener, events_tx.clone());
    }
    let mut daemon = Daemon {
        engine: Engine::new(resolved.specs, resolved.sync_groups),
        netlink,
        groups: resolved.groups,
        sockets: Vec::new(),
        ready: ReadySet::new(&[]).context("creating the VRRP sockets' epoll set")?,
        announcers: Vec::new(),
        hooks: Some(HookWorker::spawn()),
        bgp: config.bgp.as_ref().map(crate::bgp::BgpWorker::spawn),
        accept_filter: None,
        sync: None,
        links: resolved.links,
        group_by_vrid: Default::default(),
        unattributed_drops: Default::default(),
        input_log: ratelog::RateLimitedLog::new(INPUT_LOG_INTERVAL),
        started_at: SystemTime::now(),
        config,
    };
    daemon.remove_stale_addresses().await;
    let sync_group = daemon.config.conntrack_sync.as_ref().and_then(|cs| {
        let sgs = daemon.engine.sync_groups();
        sgs.iter().position(|sg| sg.name == cs.sync_group)
    });
    daemon.sync = conntrack::start(&daemon.config, &daemon.netlink, sync_group).await?;
    // A starting router waits for its peer's table before it preempts (released by the task).
    daemon.set_preempt_hold(daemon.sync.is_some());
    // RFC 5798 §6.4.3: without Accept_Mode a master that is not the owner drops traffic to the VIPs.
    let no_accept: Vec<ipnet::IpNet> = daemon
        .groups
        .iter()
        .filter(|g| !g.config.accept && g.config.priority != 255)
        .flat_map(|g| g.config.addresses.iter().copied())
        .collect();
    daemon.accept_filter = Some(accept::AcceptFilter::install(&no_accept).await);
    daemon.open_io(&resolved.sockets)?;
    drop(events_tx);
    daemon.group_by_vrid = (daemon.groups.iter().enumerate())
        .map(|(g, rt)| ((rt.socket, rt.config.vrid), g))
        .collect();

    // Before any election: announce as a backup, so a fresh start never draws traffic.
    daemon.bgp_follow(NotifyState::Backup).await;

    let now = Instant::now();
    for g in 0..daemon.groups.len() {
        let up = daemon.group_links_up(g);
        daemon.engine.handle_link(now, g, up);
    }
    daemon.engine.start(now);
    daemon.execute_actions().await;
    tracing::info!(groups = daemon.groups.len(), "vrrpd running");

    let mut received: Received = Vec::new();
    // Sockets that reported packets and are not watched again until the burst gap ends.
    let mut unwatched: Vec<usize> = Vec::new();
    let gap = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(gap);
    let mut in_gap = false;
    // One sleep for the core's timers, moved only when the earliest deadline changes.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        let deadline = daemon.engine.poll_timeout();
        if deadline != armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d.into());
            }
            armed = deadline;
        }
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break }
            result = std::future::poll_fn(|cx| daemon.ready.poll_ready(cx, &mut unwatched)) => {
                if let Err(e) = result {
                    // Not expected (an epoll_wait on our own descriptor); never spin on it.
                    tracing::error!("watching the VRRP sockets: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The first packet of a burst is handled now; the rest after the gap.
                if !in_gap {
                    daemon.receive(unwatched.iter().copied(), &mut received);
                    daemon.handle_received(&mut received);
                    in_gap = true;
                    gap.as_mut().reset((Instant::now() + BURST_GAP).into());
                }
            }
            () = &mut gap, if in_gap => {
                // The burst is in: take it, and watch again (a socket still receiving reports
                // at once and starts the next gap).
                daemon.receive(unwatched.iter().copied(), &mut received);
                daemon.handle_received(&mut received);
                daemon.watch_again(&mut unwatched);
                in_gap = false;
            }
            Some(event) = events.recv() => {
                let _ = event.reply.send(daemon.answer(&event.request));
            }
            Some(event) = link_events.recv() => daemon.handle_link_event(event).await,
            Some(held) = conntrack::next_hold(&mut daemon.sync) => daemon.set_preempt_hold(held),
            () = &mut timer, if armed.is_some() => {
                // Woken late (a loaded machine), the adverts that would have reset this timer
                // may be waiting in the sockets: take them first, and only then decide whether
                // the master is really down.
                daemon.receive(0..daemon.sockets.len(), &mut received);
                daemon.handle_received(&mut received);
                daemon.engine.handle_timeout(Instant::now());
                armed = None; // the sleep has completed: re-arm it whatever the next deadline
            }
        }
        daemon.execute_actions().await;
    }
    daemon.shutdown().await;
    Ok(())
}

/// SCHED_RR at `priority` for the daemon's thread (0: leave it alone). Children (hook scripts)
/// go back to normal scheduling (SCHED_RESET_ON_FORK). Failing (no CAP_SYS_NICE, a container
/// without real-time budget) is not fatal: timers just get less precise under load.
fn set_realtime_priority(priority: u8) {
    if priority == 0 {
        return;
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a live, initialised sched_param; pid 0 is the calling thread.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        tracing::info!(priority, "running with real-time scheduling (SCHED_RR)");
    } else {
        let e = std::io::Error::last_os_error();
        tracing::warn!(
            priority,
            "cannot switch to real-time scheduling ({e}); adverts may be late under load"
        );
    }
}

fn bind_control_socket(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by a killed daemon: only remove it when nobody answers on it.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another vrrpd is already answering on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("binding control socket {}", path.display()))
}

/// Hands a request to the main loop, which owns the state, and waits for its answer.
async fn ask(events: &mpsc::Sender<Event>, request: Request) -> Option<Response> {
    let (reply, answer) = oneshot::channel();
    events.send(Event { request, reply }).await.ok()?;
    answer.await.ok()
}

fn spawn_control_server(listener: UnixListener, events: mpsc::Sender<Event>) {
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let events = events.clone();
            tokio::spawn(async move {
                let request =
                    match control::read_frame::<Request>(&mut stream, control::MAX_REQUEST).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ =
                                control::write_frame(&mut stream, &Response::Error(e.to_string()))
                                    .await;
                            return;
                        }
                    };
                if let Some(response) = ask(&events, request).await {
                    let _ = control::write_frame(&mut stream, &response).await;
                }
            });
        }
    });
}

/// Prometheus text exposition over plain HTTP/1.0: every request gets the current counters.
fn spawn_metrics_server(listener: tokio::net::TcpListener, events: mpsc::Sender<Event>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let events = events.clone();
            tokio::spawn(async move {
                // The request itself does not matter; read what has arrived, bounded in size and time.
                let mut buf = [0u8; 2048];
                let _ = tokio::time::timeout(control::IO_TIMEOUT, stream.read(&mut buf)).await;

                let body = match ask(&events, Request::ShowGroups).await {
                    Some(Response::Groups(groups)) => control::render::prometheus(&groups),
                    _ => return,
                };
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let write = async {
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(body.as_bytes()).await?;
                    stream.shutdown().await
                };
                let _ = tokio::time::timeout(control::IO_TIMEOUT, write).await;
            });
        }
    });
}

impl Daemon {
    fn group_links_up(&self, g: usize) -> bool {
        let cfg = &self.groups[g].config;
        std::iter::once(&cfg.interface)
            .chain(&cfg.track_interfaces)
            .all(|name| self.links.get(name).copied().unwrap_or(false))
    }

    /// A daemon killed with SIGKILL leaves its addresses behind: nobody is MASTER at start, so
    /// every virtual address found on our links is stale.
    async fn remove_stale_addresses(&self) {
        for g in &self.groups {
            let present = self.netlink.addresses(g.vip_link).await.unwrap_or_default();
            for addr in &g.config.addresses {
                if present.contains(addr) {
                    tracing::warn!(group = %g.config.name, %addr, link = %g.vip_link_name, "removing stale virtual address");
                    if let Err(e) = self.netlink.del_address(g.vip_link, *addr).await {
                        tracing::error!(group = %g.config.name, %addr, "could not remove stale address: {e}");
                    }
                }
            }
        }
    }

    fn open_io(&mut self, sockets: &[setup::SocketSpec]) -> anyhow::Result<()> {
        for spec in sockets {
            let socket = VrrpSocket::open(&spec.ifname, spec.ifindex, spec.family, spec.source)
                .with_context(|| {
                    format!("opening the {} VRRP socket on {}", spec.family, spec.ifname)
                })?;
            self.sockets.push(SocketRuntime {
                socket,
                family: spec.family,
                ifname: spec.ifname.clone(),
            });
        }
        let fds: Vec<_> = self.sockets.iter().map(|s| s.socket.as_fd()).collect();
        self.ready = ReadySet::new(&fds).context("watching the VRRP sockets")?;
        for g in &mut self.groups {
            g.announcer = self.announcers.len();
            let a = Announcer::open(g.vip_link)
                .with_context(|| format!("opening a packet socket on {}", g.vip_link_name))?;
            self.announcers.push(a);
        }
        Ok(())
    }

    /// Takes up to [`RX_BATCH_PER_SOCKET`] queued packets from each of `sockets`, without
    /// waiting; returns how many it took.
    fn receive(&self, sockets: impl IntoIterator<Item = usize>, out: &mut Received) -> usize {
        let before = out.len();
        for idx in sockets {
            let socket = &self.sockets[idx].socket;
            for _ in 0..RX_BATCH_PER_SOCKET {
                match socket.try_recv() {
                    Some(result) => out.push((idx, result)),
                    None => break,
                }
            }
        }
        out.len() - before
    }

    /// Watches `sockets` for packets again (a socket with packets queued reports at once).
    fn watch_again(&self, sockets: &mut Vec<usize>) {
        for idx in sockets.drain(..) {
            if let Err(e) = self.ready.arm(idx, self.sockets[idx].socket.as_fd()) {
                tracing::error!(socket = %self.sockets[idx].ifname, "watching the VRRP socket again: {e}");
            }
        }
    }

    /// Feeds what [`Daemon::receive`] took to the core, in arrival order.
    fn handle_received(&mut self, received: &mut Received) {
        for (socket, result) in received.drain(..) {
            match result {
                Ok(packet) => self.handle_packet(socket, packet),
                Err(e) => {
                    // One bad datagram or a queued ICMP error: the socket stays usable.
                    *self.unattributed_drops.entry("socket-error").or_default() += 1;
                    if self.input_log.allow(Instant::now(), None, "socket-error") {
                        tracing::warn!(
                            "VRRP socket receive (counted; logged at most once a minute): {e}"
                        );
                    }
                }
            }
        }
    }

    fn handle_packet(&mut self, socket: usize, packet: RxPacket) {
        let family = self.sockets[socket].family;
        let now = Instant::now();
        let decoded = match (family, packet.destination, packet.source) {
            (Family::Ipv4, _, _) => Advert::decode_ipv4(&packet.data)
                .map_err(|e| (e, Advert::peek_vrid_ipv4(&packet.data))),
            (Family::Ipv6, IpAddr::V6(dst), IpAddr::V6(src)) => {
                Advert::decode_ipv6(&packet.data, src, dst, packet.hop_limit)
                    .map_err(|e| (e, Advert::peek_vrid_ipv6(&packet.data)))
            }
            (Family::Ipv6, _, _) => return,
        };
        let group_of = |vrid: u8| self.group_by_vrid.get(&(socket, vrid)).copied();
        match decoded {
            Ok(rx) => match group_of(rx.advert.vrid) {
                Some(g) => {
                    let before = mismatches(self.engine.router(g).stats());
                    self.engine.handle_advert(now, g, &rx);
                    self.log_surprises(now, g, &rx, before);
                }
                None => *self.unattributed_drops.entry(UNKNOWN_VRID).or_default() += 1,
            },
            Err((err, vrid)) => {
                let group = vrid.and_then(group_of);
                match group {
                    Some(g) => self.engine.count_invalid(g, err.reason()),
                    None => *self.unattributed_drops.entry(err.reason()).or_default() += 1,
                }
                if self.input_log.allow(now, group, err.reason()) {
                    let name = group.map(|g| self.groups[g].config.name.as_str());
                    tracing::warn!(socket = %self.sockets[socket].ifname, group = name, source = %packet.source, "dropped VRRP packet: {err} (counted; logged at most once a minute per group and reason)");
                }
            }
        }
    }

    /// RFC 5798 §7.1 / RFC 9568 §7.1: an accepted advert whose addresses or interval differ from
    /// ours points at a misconfigured peer: counted by the core, logged here (limited).
    fn log_surprises(
        &mut self,
        now: Instant,
        g: usize,
        rx: &crate::proto::packet::Received,
        (addresses_before, interval_before): (u64, u64),
    ) {
        let (addresses, interval) = mismatches(self.engine.router(g).stats());
        let params = self.engine.router(g).params();
        let name = &self.groups[g].config.name;
        if addresses > addresses_before && self.input_log.allow(now, Some(g), "address-mismatch") {
            tracing::warn!(group = %name, source = %rx.source, theirs = ?rx.advert.addresses, ours = ?params.addresses, "advert lists other virtual addresses than ours: misconfigured peer? (counted in address-mismatch-rx)");
        }
        if interval > interval_before && self.input_log.allow(now, Some(g), "interval-mismatch") {
            tracing::warn!(group = %name, source = %rx.source, theirs = %rx.advert.max_advert_interval, ours = %params.advertise_interval, "advert interval differs from ours (counted in interval-mismatch-rx)");
        }
    }

    async fn handle_link_event(&mut self, event: LinkMonitorEvent) {
        match event {
            LinkMonitorEvent::Link(info) => {
                let Some(known) = self.links.get_mut(&info.name) else {
                    return;
                };
                if *known == info.up {
                    return;
                }
                *known = info.up;
                tracing::info!(link = %info.name, up = info.up, "link state changed");
                if !info.up
                    && let Some(sync) = &self.sync
                {
                    sync.handle.link_down();
                }
            }
            LinkMonitorEvent::Deleted { name, .. } => {
                let Some(known) = self.links.get_mut(&name) else {
                    return;
                };
                *known = false;
                tracing::warn!(link = %name, "link deleted");
                if let Some(sync) = &self.sync {
                    sync.handle.link_down();
                }
            }
            LinkMonitorEvent::Resync => {
                tracing::warn!("link monitor overran: re-reading every link");
                let names: Vec<String> = self.links.keys().cloned().collect();
                for name in names {
                    let up = self
                        .netlink
                        .link_by_name(&name)
                        .await
                        .map(|l| l.up)
                        .unwrap_or(false);
                    self.links.insert(name, up);
                }
            }
        }
        let now = Instant::now();
        for g in 0..self.groups.len() {
            let up = self.group_links_up(g);
            self.engine.handle_link(now, g, up);
        }
    }

    /// Carries out the core's actions in the order it gave them.
    async fn execute_actions(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            match action {
                Action::Transition {
                    group,
                    from,
                    to,
                    reason,
                } => {
                    let g = &mut self.groups[group];
                    tracing::info!(group = %g.config.name, vrid = g.config.vrid, %from, %to, %reason, "state transition");
                    g.last_transition = Some(SystemTime::now());
                    g.last_reason = Some(reason.to_string());
                }
                Action::BeforeMaster { target } => {
                    // Conntrack entries already received are installed before the VIPs move.
                    if let Some(sync) = self.sync.as_ref().filter(|s| s.concerns(target)) {
                        sync.handle.before_master().await;
                    }
                }
                Action::AddAddresses { group } => {
                    self.set_vmac_link(group, true).await;
                    self.set_addresses(group, true).await
                }
                Action::RemoveAddresses { group } => {
                    self.set_addresses(group, false).await;
                    self.set_vmac_link(group, false).await
                }
                Action::SendAdvert { group, advert } => self.send_advert(group, &advert).await,
                Action::Announce { group } => self.announce(group),
                Action::Notify {
                    target,
                    state,
                    reason,
                } => {
                    if let Some(sync) = self.sync.as_mut().filter(|s| s.concerns(target)) {
                        sync.handle.set_role(conntrack::role_of(state)).await;
                        let from_fault = sync.last_state == Some(NotifyState::Fault);
                        if from_fault && state == NotifyState::Backup {
                            // Cut off meanwhile: wait for the master's table before preempting.
                            sync.handle.rejoin().await;
                        }
                        sync.last_state = Some(state);
                    }
                    if self.bgp_follows(target) {
                        self.bgp_follow(state).await;
                    }
                    self.notify(target, state, &reason)
                }
            }
        }
    }

    async fn set_addresses(&self, group: usize, add: bool) {
        let g = &self.groups[group];
        for addr in &g.config.addresses {
            let result = if add {
                self.netlink.add_address(g.vip_link, *addr).await
            } else {
                self.netlink.del_address(g.vip_link, *addr).await
            };
            if let Err(e) = result {
                let verb = if add { "add" } else { "remove" };
                tracing::error!(group = %g.config.name, %addr, link = %g.vip_link_name, "could not {verb} virtual address: {e}");
            }
        }
    }

    /// A vmac is up only while its group is MASTER: a Backup must not accept frames for the
    /// virtual MAC (RFC 5798 §6.4.2), and the macvlan would take them.
    async fn set_vmac_link(&self, group: usize, up: bool) {
        let g = &self.groups[group];
        if !g.config.vmac {
            return;
        }
        if let Err(e) = self.netlink.set_link_state(g.vip_link, up).await {
            tracing::error!(group = %g.config.name, link = %g.vip_link_name, up, "could not set the vmac's link state: {e}");
        }
    }

    async fn send_advert(&self, group: usize, advert: &Advert) {
        let g = &self.groups[group];
        let sock = &self.sockets[g.socket];
        let form = self.config.daemon.checksum;
        let multicast = [match sock.family {
            Family::Ipv4 => IpAddr::V4(VRRP_MCAST_V4),
            Family::Ipv6 => IpAddr::V6(VRRP_MCAST_V6),
        }];
        let destinations: &[IpAddr] = if g.config.peer_addresses.is_empty() {
            &multicast
        } else {
            &g.config.peer_addresses
        };
        let source = self.engine.router(group).params().primary_address;
        // Groups on one interface share the socket but may have their own hello-source-address.
        if sock.socket.source() != Some(source) {
            if let Err(e) = sock.socket.set_source(Some(source)) {
                tracing::error!(group = %g.config.name, %source, "cannot send adverts from this address: {e}");
                return;
            }
        }
        let mut buf = Vec::with_capacity(advert.buffer_len());
        for &dst in destinations {
            // IPv6 always uses the pseudo-header; the form only chooses IPv4's.
            let form = if sock.family == Family::Ipv6 {
                ChecksumForm::PseudoHeader
            } else {
                form
            };
            if let Err(e) = advert.encode(source, dst, form, &mut buf) {
                tracing::error!(group = %g.config.name, "cannot encode advert: {e}");
                return;
            }
            if let Err(e) = sock.socket.send_to(&buf, dst).await {
                tracing::warn!(group = %g.config.name, %dst, "advert not sent: {e}");
            }
        }
    }

    fn announce(&self, group: usize) {
        let g = &self.groups[group];
        let announcer = &self.announcers[g.announcer];
        for addr in &g.config.addresses {
            let result = match addr.addr() {
                IpAddr::V4(ip) => announcer.gratuitous_arp(g.mac, ip),
                IpAddr::V6(ip) => match g.link_local {
                    Some(src) => announcer.unsolicited_na(g.mac, src, ip),
                    None => continue,
                },
            };
            if let Err(e) = result {
                tracing::warn!(group = %g.config.name, %addr, "gratuitous ARP / NA not sent: {e}");
            }
        }
    }

    fn notify(&self, target: NotifyTarget, state: NotifyState, reason: &Reason) {
        let (name, script) = match target {
            NotifyTarget::SyncGroup(s) => {
                let name = &self.engine.sync_groups()[s].name;
                tracing::info!(sync_group = %name, state = state.as_str(), %reason, "sync group transition");
                let scripts = self
                    .config
                    .sync_groups
                    .iter()
                    .find(|sg| &sg.name == name)
                    .map(|sg| &sg.scripts);
                let script = scripts.and_then(|s| match state {
                    NotifyState::Master => s.master.clone(),
                    NotifyState::Backup => s.backup.clone(),
                    NotifyState::Fault => s.fault.clone(),
                    NotifyState::Stop => s.stop.clone(),
                });
                (name.clone(), script)
            }
            NotifyTarget::Group(g) => (self.groups[g].config.name.clone(), None),
        };
        if let (Some(script), Some(hooks)) = (script, &self.hooks) {
            hooks.submit(HookJob {
                script,
                args: vec![state.as_str().to_string(), name.clone()],
                env: vec![
                    ("VRRPD_STATE".into(), state.as_str().into()),
                    ("VRRPD_NAME".into(), name),
                    ("VRRPD_REASON".into(), reason.to_string()),
                ],
            });
        }
    }

    /// Whether `target` is the sync group named in `[bgp]`.
    fn bgp_follows(&self, target: NotifyTarget) -> bool {
        let (Some(bgp), NotifyTarget::SyncGroup(s)) = (&self.bgp, target) else {
            return false;
        };
        self.engine.sync_groups()[s].name == bgp.sync_group()
    }

    /// Hands the BGP worker its new state. Un-prepending (MASTER) comes after the addresses are
    /// in place and is not waited for; prepending (leaving MASTER, start, stop) is awaited, up
    /// to [`crate::bgp::LEAVE_MASTER_WAIT`], before the core's next actions remove addresses.
    async fn bgp_follow(&self, state: NotifyState) {
        let Some(bgp) = &self.bgp else { return };
        let seq = bgp.want(state);
        if state != NotifyState::Master && !bgp.wait(seq, crate::bgp::LEAVE_MASTER_WAIT).await {
            tracing::warn!(
                state = state.as_str(),
                "BGP prepend not confirmed within {:?}; going on (the worker keeps trying)",
                crate::bgp::LEAVE_MASTER_WAIT
            );
        }
    }

    /// Replication asks to hold (or release) preemption until the peer's table has arrived.
    fn set_preempt_hold(&mut self, held: bool) {
        if let Some(sync) = &self.sync {
            tracing::info!(held, "conntrack-sync: preempt hold");
            self.engine.set_preempt_hold(sync.sync_group, held);
        }
    }

    fn answer(&self, request: &Request) -> Response {
        match request {
            Request::ShowGroups => Response::Groups(status::groups(self)),
            Request::ShowSync => match &self.sync {
                Some(sync) => Response::Sync(sync.handle.status()),
                None => Response::Error("conntrack-sync is not configured in this daemon".into()),
            },
            Request::ShowBgp => match &self.bgp {
                Some(bgp) => Response::Bgp(Box::new(bgp.status())),
                None => Response::Error("no [bgp] section is configured in this daemon".into()),
            },
        }
    }

    async fn shutdown(mut self) {
        // Stop replicating first: our own VIP removal's fallout must not reach the peer.
        if let Some(sync) = &self.sync {
            sync.handle.shutdown().await;
        }
        let now = Instant::now();
        self.engine.shutdown(now);
        self.execute_actions().await;
        // Belt and braces: whatever state we were in, leave no virtual address behind.
        for g in 0..self.groups.len() {
            self.set_addresses(g, false).await;
        }
        for g in &self.groups {
            if g.config.vmac {
                if let Err(e) = self.netlink.delete_link(g.vip_link).await {
                    tracing::warn!(link = %g.vip_link_name, "could not delete the vmac link: {e}");
                }
            }
        }
        if let Some(filter) = self.accept_filter.take() {
            filter.remove().await;
        }
        if let Some(hooks) = self.hooks.take() {
            hooks.finish(Duration::from_secs(10)).await;
        }
        if let Some(bgp) = self.bgp.take() {
            bgp.stop();
        }
        let _ = std::fs::remove_file(&self.config.daemon.socket);
        let states: Vec<_> = self.engine.routers().iter().map(|r| r.state()).collect();
        debug_assert!(states.iter().all(|s| *s == State::Init));
        tracing::info!("vrrpd stopped");
    }
}
