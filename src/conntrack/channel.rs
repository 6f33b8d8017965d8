//! The replication channel: one authenticated, encrypted, replay-protected, ordered message
//! stream between the two routers, over TCP on the dedicated sync link.
//!
//! - **One connection.** Both routers listen on their `local` address; the one with the lower
//!   address dials, and redials with exponential back-off while there is no connection. A newer
//!   authenticated connection replaces an older one (a restarted peer is back at once, even when
//!   the old connection is still half-open). Connections from any address but the peer's are
//!   dropped. Heartbeats every [`Timing::heartbeat`] on an idle connection; a peer silent for
//!   [`Timing::dead_after`] is dropped.
//! - **Security** (when a key is configured): see [`super::noise`]. A peer without the key, a
//!   replayed recording, a forged, altered, replayed or reordered frame: the connection is
//!   dropped before anything of it is delivered, and the error counted by reason.
//! - **Order and delivery.** Messages are delivered whole, in order, at most once per
//!   connection, each frame only after it authenticated. Messages still queued when a connection
//!   ends, and messages sent while there is none, are discarded and counted in
//!   `messages_dropped`: the upper layer resyncs in bulk on [`ChannelEvent::Connected`]. A
//!   message sent after the upper layer has seen `Connected` goes out on that connection or, if it
//!   ends first, is discarded (and `Disconnected` follows).
//! - **Bounded memory, back-pressure.** At most `queue_limit` messages wait for sending
//!   ([`ChannelSender::send`] waits beyond that); at most `queue_limit` received events wait for
//!   [`ChannelReceiver::recv`] — beyond that the channel stops reading the socket and TCP pushes
//!   back on the peer's sender. Frames are at most 64 KiB; a message at most
//!   [`MAX_MESSAGE`](super::wire::MAX_MESSAGE) bytes. Keep receiving while sending (e.g. from
//!   separate tasks): two routers that only send into full queues would wait on each other.
//! - **Batching.** Many messages per frame and many frames per `write` — the sender drains its
//!   queue into up to [`WRITE_BATCH`] bytes per system call.
//! - UDP: nothing listens on UDP on the sync port; the kernel answers datagrams with ICMP
//!   port-unreachable and no vrrpd code sees them.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use super::noise::{self, HandshakeError, Initiator, KeyError, ReplayMemory, Responder, Sealer};
use super::wire::{
    self, Batcher, FRAME_HEADER_LEN, FrameDecoder, MAX_FRAME_BODY, MAX_MESSAGE, Mode, PREAMBLE_LEN,
    Reassembler, WireError,
};

/// Bytes of frames gathered for one `write` system call.
pub const WRITE_BATCH: usize = 256 * 1024;
/// Inbound handshakes in progress at once; more are refused (counted as `busy`).
const MAX_PENDING_HANDSHAKES: usize = 4;
/// The largest handshake message accepted (NNpsk0 messages are 48 bytes).
const MAX_HANDSHAKE_BODY: usize = 1024;
/// A session that lasted this long resets the dial back-off.
const STABLE_SESSION: Duration = Duration::from_secs(2);

/// What [`spawn`] needs.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Our address on the sync link and the port to listen on.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub peer: SocketAddr,
    /// The contents of the key-file (at least 32 bytes of secret, see [`load_key`]); `None`
    /// runs the channel plain: unauthenticated and unencrypted (a warning is logged).
    pub key: Option<Vec<u8>>,
    /// The most messages queued for sending; [`ChannelSender::send`] waits beyond it.
    pub queue_limit: usize,
}

/// Timers of the channel; the defaults suit a sync link, tests shorten them.
#[derive(Clone, Debug)]
pub struct Timing {
    /// An idle connection sends an empty frame this often.
    pub heartbeat: Duration,
    /// A peer that sends nothing for this long is dropped.
    pub dead_after: Duration,
    /// Connecting and authenticating must be done within this.
    pub handshake_timeout: Duration,
    /// First delay before redialling; doubles on each failure.
    pub backoff_min: Duration,
    /// Longest delay between dials.
    pub backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Errors of this module's setup functions.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Reads a key-file for [`ChannelConfig::key`]: its bytes without a trailing line break, at
/// least 32 of them; a clear error naming the file otherwise.
pub fn load_key(path: impl AsRef<Path>) -> Result<Vec<u8>, ChannelError> {
    Ok(noise::load_key(path.as_ref())?)
}

/// What the channel tells the upper layer, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    /// A connection to the peer is up and authenticated: time for a bulk resync.
    Connected,
    /// The connection ended (after `Connected`); a new one is being sought.
    Disconnected { reason: String },
    /// A message from the peer.
    Message(Vec<u8>),
}

/// The channel has shut down (its receiver was dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the conntrack sync channel is closed")]
pub struct ChannelClosed;

/// Why [`ChannelSender::try_send`] did not take a message; the message is handed back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    #[error("the conntrack sync send queue is full")]
    Full(Vec<u8>),
    #[error("the conntrack sync channel is closed")]
    Closed(Vec<u8>),
}

/// Counters and state, for `show sync` and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChannelStats {
    pub connected: bool,
    /// Connected with the key (false on a plain channel).
    pub authenticated: bool,
    /// Messages written to the socket.
    pub messages_sent: u64,
    /// Messages received and authenticated.
    pub messages_received: u64,
    /// Bytes of frames written (headers, tags and heartbeats included).
    pub bytes_sent: u64,
    /// Bytes of frames received and accepted.
    pub bytes_received: u64,
    /// Messages discarded: sent while disconnected, or queued when a connection ended.
    pub messages_dropped: u64,
    /// Messages waiting in the send queue.
    pub queue_depth: usize,
    /// Connections established (authenticated), over the channel's life.
    pub connects: u64,
    /// Failures by reason: auth, replay, sequence, truncated, garbage, oversize, version,
    /// timeout, closed, io, connect, peer, busy, handshake, too-large.
    pub errors: BTreeMap<String, u64>,
    pub last_connected: Option<SystemTime>,
}

#[derive(Default)]
struct Counters {
    connected: bool,
    authenticated: bool,
    messages_sent: u64,
    messages_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    messages_dropped: u64,
    connects: u64,
    errors: BTreeMap<&'static str, u64>,
    last_connected: Option<SystemTime>,
}

/// State shared by the handles and the channel's tasks.
#[derive(Default)]
struct Shared {
    counters: Mutex<Counters>,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        let mut guard = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn count_error(&self, reason: &'static str) {
        self.with(|c| *c.errors.entry(reason).or_default() += 1);
    }
}

/// The sending handle; cheap to clone.
#[derive(Clone)]
pub struct ChannelSender {
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl ChannelSender {
    /// Queues `msg`, waiting while the queue holds `queue_limit` messages. A message over
    /// [`MAX_MESSAGE`] bytes is a bug of the caller: it is dropped, logged and counted as
    /// `too-large`.
    pub async fn send(&self, msg: Vec<u8>) -> Result<(), ChannelClosed> {
        if self.too_large(&msg) {
            return Ok(());
        }
        self.tx.send(msg).await.map_err(|_| ChannelClosed)
    }

    /// Queues `msg` if there is room.
    pub fn try_send(&self, msg: Vec<u8>) -> Result<(), TrySendError> {
        if self.too_large(&msg) {
            return Ok(());
        }
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) => TrySendError::Full(m),
            mpsc::error::TrySendError::Closed(m) => TrySendError::Closed(m),
        })
    }

    fn too_large(&self, msg: &[u8]) -> bool {
        if msg.len() <= MAX_MESSAGE {
            return false;
        }
        tracing::error!(
            len = msg.len(),
            "conntrack sync message over {MAX_MESSAGE} bytes dropped"
        );
        self.shared.with(|c| {
            *c.errors.entry("too-large").or_default() += 1;
            c.messages_dropped += 1;
        });
        true
    }

    pub fn stats(&self) -> ChannelStats {
        let queue_depth = self.tx.max_capacity() - self.tx.capacity();
        self.shared.with(|c| ChannelStats {
            connected: c.connected,
            authenticated: c.authenticated,
            messages_sent: c.messages_sent,
            messages_received: c.messages_received,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            messages_dropped: c.messages_dropped,
            queue_depth,
            connects: c.connects,
            errors: c.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            last_connected: c.last_connected,
        })
    }
}

/// The receiving handle. Dropping it shuts the channel down.
pub struct ChannelReceiver {
    rx: mpsc::Receiver<ChannelEvent>,
    task: JoinHandle<()>,
}

impl ChannelReceiver {
    /// The next event; `None` once the channel has shut down.
    pub async fn recv(&mut self) -> Option<ChannelEvent> {
        self.rx.recv().await
    }

    /// Shuts the channel down and waits until its socket and listener are closed.
    pub async fn shutdown(self) {
        let ChannelReceiver { rx, task } = self;
        drop(rx);
        let _ = task.await;
    }
}

/// Starts the channel's tasks on the current tokio runtime; the listener is bound before this
/// returns (an error if it cannot be).
pub fn spawn(cfg: ChannelConfig) -> io::Result<(ChannelSender, ChannelReceiver)> {
    spawn_with_timing(cfg, Timing::default())
}

/// [`spawn`] with other timers.
pub fn spawn_with_timing(
    cfg: ChannelConfig,
    timing: Timing,
) -> io::Result<(ChannelSender, ChannelReceiver)> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if cfg.queue_limit == 0 {
        return Err(invalid(
            "conntrack sync queue limit must be at least 1".into(),
        ));
    }
    if cfg.local.ip() == cfg.peer.ip() || cfg.local.is_ipv4() != cfg.peer.is_ipv4() {
        return Err(invalid(format!(
            "conntrack sync: local {} and peer {} must be distinct addresses of one family",
            cfg.local, cfg.peer
        )));
    }
    let psk = match &cfg.key {
        Some(key) if key.len() < noise::MIN_KEY_LEN => {
            return Err(invalid(format!(
                "conntrack sync key: {} bytes, at least {} are required",
                key.len(),
                noise::MIN_KEY_LEN
            )));
        }
        Some(key) => Some(noise::derive_psk(key)),
        None => {
            tracing::warn!(
                "conntrack sync without key-file: the channel is neither authenticated nor encrypted"
            );
            None
        }
    };
    tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let listener = listen(cfg.local)?;
    let shared = Arc::new(Shared::default());
    let (tx, msgs) = mpsc::channel(cfg.queue_limit);
    let (events, rx) = mpsc::channel(cfg.queue_limit.max(16));
    let ctx = Arc::new(Ctx {
        local: cfg.local,
        peer: cfg.peer,
        psk,
        timing,
        shared: shared.clone(),
        replay: ReplayMemory::default(),
    });
    let task = tokio::spawn(supervise(ctx, listener, msgs, events));
    Ok((ChannelSender { tx, shared }, ChannelReceiver { rx, task }))
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted daemon must get its port back while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("conntrack sync: bind {addr}: {e}")))?;
    socket.listen(16)
}

/// Everything the channel's tasks share.
struct Ctx {
    local: SocketAddr,
    peer: SocketAddr,
    psk: Option<[u8; 32]>,
    timing: Timing,
    shared: Arc<Shared>,
    replay: ReplayMemory,
}

impl Ctx {
    fn mode(&self) -> Mode {
        if self.psk.is_some() {
            Mode::NoisePsk
        } else {
            Mode::Plain
        }
    }

    /// Counts a failed connection attempt (handshake or dial).
    fn attempt_failed(&self, what: &str, err: &LinkError) {
        self.shared.count_error(err.reason());
        tracing::debug!(peer = %self.peer, reason = err.reason(), "conntrack sync {what}: {err}");
    }
}

/// Why a connection could not be made or was dropped; [`reason`](LinkError::reason) is the
/// counter key.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("frame {seq} failed authentication (forged, altered or sealed with another key)")]
    Forged { seq: u64 },
    #[error("the peer announces {theirs:?} mode, we use {ours:?}: key-file set on one side only?")]
    ModeMismatch { ours: Mode, theirs: Mode },
    #[error("connection from {0}, not from the configured peer")]
    UnexpectedPeer(IpAddr),
    #[error("too many handshakes in progress")]
    Busy,
    #[error("peer silent for {0:?}")]
    Silent(Duration),
    #[error("not connected and authenticated within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("peer closed the connection")]
    Closed,
    #[error("connect to {peer}: {source}")]
    Connect { peer: SocketAddr, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl LinkError {
    fn reason(&self) -> &'static str {
        match self {
            LinkError::Wire(e) => e.reason(),
            LinkError::Handshake(e) => e.reason(),
            LinkError::Forged { .. } | LinkError::ModeMismatch { .. } => "auth",
            LinkError::UnexpectedPeer(_) => "peer",
            LinkError::Busy => "busy",
            LinkError::Silent(_) | LinkError::HandshakeTimeout(_) => "timeout",
            LinkError::Closed => "closed",
            LinkError::Connect { .. } => "connect",
            LinkError::Io(_) => "io",
        }
    }
}

/// An authenticated connection, ready for a session.
struct Link {
    stream: TcpStream,
    decoder: FrameDecoder,
    sealer: Sealer,
    send_seq: u64,
    recv_seq: u64,
    /// Dropped when the session on this link ends (the dialler waits for it).
    done: Option<oneshot::Sender<()>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Dialled,
    Accepted,
}

/// Runs the connections: owns the send queue between sessions, starts and replaces sessions.
async fn supervise(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    msgs: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<ChannelEvent>,
) {
    let (link_tx, mut links) = mpsc::channel::<Link>(2);
    let (connected_tx, connected_rx) = watch::channel(false);
    let acceptor = tokio::spawn(accept_loop(ctx.clone(), listener, link_tx.clone()));
    let dialler = (ctx.local < ctx.peer)
        .then(|| tokio::spawn(dial_loop(ctx.clone(), link_tx.clone(), connected_rx)));
    drop(link_tx);

    let mut msgs = Some(msgs);
    let mut session: Option<Session> = None;
    loop {
        match session.as_mut() {
            None => {
                let Some(queue) = msgs.as_mut() else { break };
                tokio::select! {
                    link = links.recv() => {
                        let Some(link) = link else { break };
                        let Some(queue) = msgs.take() else { break };
                        session = Session::start(&ctx, link, queue, &events).await;
                        if session.is_none() {
                            break;
                        }
                        connected_tx.send_replace(true);
                    }
                    msg = queue.recv() => {
                        if msg.is_none() {
                            break;
                        }
                        ctx.shared.with(|c| c.messages_dropped += 1);
                    }
                    _ = events.closed() => break,
                }
            }
            Some(current) => {
                tokio::select! {
                    link = links.recv() => {
                        let Some(link) = link else { break };
                        let Some(old) = session.take() else { break };
                        let (queue, _) = old.stop(&ctx).await;
                        msgs = queue;
                        tracing::info!(peer = %ctx.peer, "conntrack sync: a newer connection replaces the current one");
                        let reason = "replaced by a newer connection".to_string();
                        if events.send(ChannelEvent::Disconnected { reason }).await.is_err() {
                            break;
                        }
                        let Some(queue) = msgs.take() else { break };
                        session = Session::start(&ctx, link, queue, &events).await;
                        if session.is_none() {
                            break;
                        }
                    }
                    end = current.ended.recv() => {
                        let Some(old) = session.take() else { break };
                        let (queue, _) = old.stop(&ctx).await;
                        msgs = queue;
                        connected_tx.send_replace(false);
                        let Some(end) = end else { break };
                        let Some(reason) = end.disconnect_reason(&ctx) else { break };
                        tracing::warn!(peer = %ctx.peer, "conntrack sync disconnected: {reason}");
                        if events.send(ChannelEvent::Disconnected { reason }).await.is_err() {
                            break;
                        }
                    }
                    _ = events.closed() => break,
                }
            }
        }
    }
    if let Some(s) = session {
        s.stop(&ctx).await;
    }
    acceptor.abort();
    let _ = acceptor.await;
    if let Some(d) = dialler {
        d.abort();
        let _ = d.await;
    }
}

/// How one of a session's two tasks ended.
enum End {
    Read(ReadEnd),
    Write(WriteEnd),
}

enum ReadEnd {
    Failed(LinkError),
    PeerClosed,
    Stopped,
    /// The upper layer dropped the receiver: the channel shuts down.
    ReceiverGone,
}

enum WriteEnd {
    Failed(LinkError),
    Stopped,
    /// Every sender was dropped: the channel shuts down.
    SendersGone,
}

impl End {
    /// Counts the failure and says why, or `None` when the channel is shutting down.
    fn disconnect_reason(self, ctx: &Ctx) -> Option<String> {
        let err = match self {
            End::Read(ReadEnd::ReceiverGone) | End::Write(WriteEnd::SendersGone) => return None,
            End::Read(ReadEnd::Stopped) | End::Write(WriteEnd::Stopped) => {
                return Some("stopped".into());
            }
            End::Read(ReadEnd::PeerClosed) => LinkError::Closed,
            End::Read(ReadEnd::Failed(e)) | End::Write(WriteEnd::Failed(e)) => e,
        };
        ctx.shared.count_error(err.reason());
        Some(format!("{} ({})", err, err.reason()))
    }
}

/// A connection in use: a reader and a writer task.
struct Session {
    stop: watch::Sender<bool>,
    ended: mpsc::Receiver<End>,
    reader: JoinHandle<()>,
    writer: JoinHandle<mpsc::Receiver<Vec<u8>>>,
    done: Option<oneshot::Sender<()>>,
}

impl Session {
    /// Marks the channel connected, tells the upper layer, and starts the tasks (in this order,
    /// so that `Connected` comes before the first message and the stats agree with it). `None`
    /// when the upper layer is gone.
    async fn start(
        ctx: &Arc<Ctx>,
        link: Link,
        msgs: mpsc::Receiver<Vec<u8>>,
        events: &mpsc::Sender<ChannelEvent>,
    ) -> Option<Session> {
        let Link {
            stream,
            decoder,
            sealer,
            send_seq,
            recv_seq,
            done,
        } = link;
        let authenticated = matches!(sealer, Sealer::Noise(_));
        ctx.shared.with(|c| {
            c.connected = true;
            c.authenticated = authenticated;
            c.connects += 1;
            c.last_connected = Some(SystemTime::now());
        });
        tracing::info!(peer = %ctx.peer, authenticated, "conntrack sync connected");
        if events.send(ChannelEvent::Connected).await.is_err() {
            return None;
        }
        let (rd, wr) = stream.into_split();
        let sealer = Arc::new(sealer);
        let (stop, stop_rx) = watch::channel(false);
        let (end_tx, ended) = mpsc::channel(2);
        let events = events.clone();
        let reader = tokio::spawn(read_task(
            ctx.clone(),
            rd,
            decoder,
            sealer.clone(),
            recv_seq,
            events,
            stop_rx.clone(),
            end_tx.clone(),
        ));
        let writer = tokio::spawn(write_task(
            ctx.clone(),
            wr,
            msgs,
            sealer,
            send_seq,
            stop_rx,
            end_tx,
        ));
        Some(Session {
            stop,
            ended,
            reader,
            writer,
            done,
        })
    }

    /// Stops both tasks; returns the send queue (`None` if a task died) and the first end.
    async fn stop(mut self, ctx: &Ctx) -> (Option<mpsc::Receiver<Vec<u8>>>, Option<End>) {
        let _ = self.stop.send(true);
        let first = self.ended.try_recv().ok();
        let _ = self.reader.await;
        let queue = self.writer.await.ok();
        ctx.shared.with(|c| {
            c.connected = false;
            c.authenticated = false;
        });
        drop(self.done.take());
        (queue, first)
    }
}

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener, links: mpsc::Sender<Link>) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                ctx.attempt_failed("accept", &LinkError::Io(e));
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if from.ip() != ctx.peer.ip() {
            ctx.attempt_failed("accept", &LinkError::UnexpectedPeer(from.ip()));
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            ctx.attempt_failed("accept", &LinkError::Busy);
            continue;
        };
        let ctx = ctx.clone();
        let links = links.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let limit = ctx.timing.handshake_timeout;
            match timeout(limit, establish(&ctx, stream, Role::Accepted)).await {
                Ok(Ok(link)) => {
                    let _ = links.send(link).await;
                }
                Ok(Err(e)) => ctx.attempt_failed("inbound handshake", &e),
                Err(_) => {
                    ctx.attempt_failed("inbound handshake", &LinkError::HandshakeTimeout(limit))
                }
            }
        });
    }
}

async fn dial_loop(ctx: Arc<Ctx>, links: mpsc::Sender<Link>, mut connected: watch::Receiver<bool>) {
    let timing = &ctx.timing;
    let mut backoff = timing.backoff_min;
    let mut first = true;
    loop {
        if connected.wait_for(|c| !*c).await.is_err() {
            return;
        }
        if !first {
            sleep(backoff).await;
        }
        first = false;
        let attempt = async {
            let stream = connect(&ctx).await?;
            establish(&ctx, stream, Role::Dialled).await
        };
        let failure = match timeout(timing.handshake_timeout, attempt).await {
            Ok(Ok(mut link)) => {
                let (done, session_over) = oneshot::channel();
                link.done = Some(done);
                let started = Instant::now();
                if links.send(link).await.is_err() {
                    return;
                }
                let _ = session_over.await;
                if started.elapsed() >= STABLE_SESSION {
                    backoff = timing.backoff_min;
                    continue;
                }
                None
            }
            Ok(Err(e)) => Some(e),
            Err(_) => Some(LinkError::HandshakeTimeout(timing.handshake_timeout)),
        };
        if let Some(e) = failure {
            ctx.attempt_failed("dial", &e);
        }
        backoff = (backoff * 2).min(timing.backoff_max);
    }
}

async fn connect(ctx: &Ctx) -> Result<TcpStream, LinkError> {
    let peer = ctx.peer;
    let wrap = |source| LinkError::Connect { peer, source };
    let socket = if peer.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    let socket = socket.map_err(wrap)?;
    // From our sync-link address: the peer accepts connections from it only.
    socket
        .bind(SocketAddr::new(ctx.local.ip(), 0))
        .map_err(wrap)?;
    socket.connect(peer).await.map_err(wrap)
}

/// Preamble exchange and handshake, on a fresh connection.
async fn establish(ctx: &Ctx, mut stream: TcpStream, role: Role) -> Result<Link, LinkError> {
    stream.set_nodelay(true)?;
    let ours = ctx.mode();
    stream.write_all(&wire::encode_preamble(ours)).await?;
    let theirs = wire::decode_preamble(&read_preamble(&mut stream).await?)?;
    if theirs != ours {
        return Err(LinkError::ModeMismatch { ours, theirs });
    }
    let mut decoder = FrameDecoder::new(0, MAX_HANDSHAKE_BODY);
    let (sealer, send_seq, recv_seq) = match (ctx.psk.as_ref(), role) {
        (None, _) => (Sealer::Plain, 0, 0),
        (Some(psk), Role::Dialled) => {
            let mut hs = Initiator::new(psk)?;
            let first = hs.first_message()?;
            write_handshake(&mut stream, &first).await?;
            let reply = read_handshake(&mut stream, &mut decoder).await?;
            let sealer = hs.finish(&reply)?;
            // An empty first transport frame proves to the responder that we are live.
            let mut hello = Vec::new();
            sealer
                .seal(0, &[], &mut hello)
                .map_err(|e| LinkError::Handshake(HandshakeError::Internal(e)))?;
            stream.write_all(&hello).await?;
            (sealer, 1, 0)
        }
        (Some(psk), Role::Accepted) => {
            let first = read_handshake(&mut stream, &mut decoder).await?;
            let (reply, sealer) = Responder::respond(psk, &first, &ctx.replay)?;
            write_handshake(&mut stream, &reply).await?;
            decoder.set_limits(ours.min_body(), ours.max_body());
            let (seq, hello) = read_frame(&mut stream, &mut decoder).await?;
            wire::check_seq(0, seq)?;
            let mut scratch = vec![0u8; MAX_FRAME_BODY];
            let plain = sealer
                .open(seq, &hello, &mut scratch)
                .map_err(|_| LinkError::Forged { seq })?;
            if !plain.is_empty() {
                return Err(WireError::BadRecord {
                    len: plain.len(),
                    left: 0,
                }
                .into());
            }
            (sealer, 0, 1)
        }
    };
    decoder.set_limits(ours.min_body(), ours.max_body());
    Ok(Link {
        stream,
        decoder,
        sealer,
        send_seq,
        recv_seq,
        done: None,
    })
}

async fn read_preamble(stream: &mut TcpStream) -> Result<[u8; PREAMBLE_LEN], LinkError> {
    let mut p = [0u8; PREAMBLE_LEN];
    let mut got = 0;
    while got < PREAMBLE_LEN {
        match stream.read(&mut p[got..]).await? {
            0 if got == 0 => return Err(LinkError::Closed),
            0 => return Err(WireError::Truncated { buffered: got }.into()),
            n => got += n,
        }
    }
    Ok(p)
}

async fn write_handshake(stream: &mut TcpStream, body: &[u8]) -> Result<(), LinkError> {
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    wire::encode_frame_header(body.len(), 0, &mut frame);
    frame.extend_from_slice(body);
    stream.write_all(&frame).await?;
    Ok(())
}

async fn read_handshake(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
) -> Result<Vec<u8>, LinkError> {
    let (seq, body) = read_frame(stream, decoder).await?;
    wire::check_seq(0, seq)?;
    Ok(body)
}

/// One whole frame, during the handshake.
async fn read_frame(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
) -> Result<(u64, Vec<u8>), LinkError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok((frame.seq, frame.body.to_vec()));
        }
        let n = stream.read(decoder.space()).await?;
        if n == 0 {
            decoder.finish()?;
            return Err(LinkError::Closed);
        }
        decoder.filled(n);
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_task(
    ctx: Arc<Ctx>,
    mut rd: OwnedReadHalf,
    mut decoder: FrameDecoder,
    sealer: Arc<Sealer>,
    seq: u64,
    events: mpsc::Sender<ChannelEvent>,
    mut stop: watch::Receiver<bool>,
    end: mpsc::Sender<End>,
) {
    let result = tokio::select! {
        r = read_frames(&ctx, &mut rd, &mut decoder, &sealer, seq, &events) => r,
        _ = stop.wait_for(|s| *s) => ReadEnd::Stopped,
    };
    let _ = end.try_send(End::Read(result));
}

/// Reads, authenticates and delivers frames until the connection fails or ends.
async fn read_frames(
    ctx: &Ctx,
    rd: &mut OwnedReadHalf,
    decoder: &mut FrameDecoder,
    sealer: &Sealer,
    mut seq: u64,
    events: &mpsc::Sender<ChannelEvent>,
) -> ReadEnd {
    let mut scratch = vec![0u8; MAX_FRAME_BODY];
    let mut reassembler = Reassembler::new();
    let mut batch = Vec::new();
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return ReadEnd::Failed(e.into()),
            };
            if let Err(e) = wire::check_seq(seq, frame.seq) {
                return ReadEnd::Failed(e.into());
            }
            let wire_len = (FRAME_HEADER_LEN + frame.body.len()) as u64;
            let Ok(plain) = sealer.open(frame.seq, frame.body, &mut scratch) else {
                return ReadEnd::Failed(LinkError::Forged { seq });
            };
            if let Err(e) = reassembler.feed(plain, &mut batch) {
                return ReadEnd::Failed(e.into());
            }
            seq += 1;
            let count = batch.len() as u64;
            ctx.shared.with(|c| {
                c.bytes_received += wire_len;
                c.messages_received += count;
            });
            for msg in batch.drain(..) {
                if events.send(ChannelEvent::Message(msg)).await.is_err() {
                    return ReadEnd::ReceiverGone;
                }
            }
        }
        let limit = ctx.timing.dead_after;
        let n = match timeout(limit, rd.read(decoder.space())).await {
            Err(_) => return ReadEnd::Failed(LinkError::Silent(limit)),
            Ok(Err(e)) => return ReadEnd::Failed(e.into()),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return match decoder.finish() {
                Ok(()) => ReadEnd::PeerClosed,
                Err(e) => ReadEnd::Failed(e.into()),
            };
        }
        decoder.filled(n);
    }
}

async fn write_task(
    ctx: Arc<Ctx>,
    mut wr: OwnedWriteHalf,
    mut msgs: mpsc::Receiver<Vec<u8>>,
    sealer: Arc<Sealer>,
    seq: u64,
    mut stop: watch::Receiver<bool>,
    end: mpsc::Sender<End>,
) -> mpsc::Receiver<Vec<u8>> {
    let mut unsent = 0u64;
    let result = tokio::select! {
        r = write_frames(&ctx, &mut wr, &mut msgs, &sealer, seq, &mut unsent) => r,
        _ = stop.wait_for(|s| *s) => WriteEnd::Stopped,
    };
    if unsent > 0 {
        ctx.shared.with(|c| c.messages_dropped += unsent);
    }
    let _ = end.try_send(End::Write(result));
    msgs
}

/// Frames under construction for one `write`.
struct Outbox<'a> {
    sealer: &'a Sealer,
    seq: u64,
    out: Vec<u8>,
}

impl Outbox<'_> {
    fn seal(&mut self, plain: &[u8]) -> Result<(), LinkError> {
        self.sealer
            .seal(self.seq, plain, &mut self.out)
            .map_err(|e| LinkError::Handshake(HandshakeError::Internal(e)))?;
        self.seq += 1;
        Ok(())
    }
}

/// Drains the send queue into batches of frames; a heartbeat when idle.
async fn write_frames(
    ctx: &Ctx,
    wr: &mut OwnedWriteHalf,
    msgs: &mut mpsc::Receiver<Vec<u8>>,
    sealer: &Sealer,
    seq: u64,
    unsent: &mut u64,
) -> WriteEnd {
    let mut outbox = Outbox {
        sealer,
        seq,
        out: Vec::with_capacity(WRITE_BATCH + MAX_FRAME_BODY),
    };
    let mut batcher = Batcher::new();
    loop {
        let first = match timeout(ctx.timing.heartbeat, msgs.recv()).await {
            Err(_) => None,
            Ok(None) => return WriteEnd::SendersGone,
            Ok(Some(msg)) => Some(msg),
        };
        outbox.out.clear();
        let mut count = 0u64;
        let sealed = (|| {
            if let Some(msg) = first {
                batcher.push(&msg, &mut |p| outbox.seal(p))?;
                count += 1;
                while outbox.out.len() < WRITE_BATCH {
                    let Ok(msg) = msgs.try_recv() else { break };
                    batcher.push(&msg, &mut |p| outbox.seal(p))?;
                    count += 1;
                }
            }
            batcher.seal(&mut |p| outbox.seal(p))
        })();
        if let Err(e) = sealed {
            *unsent = count;
            return WriteEnd::Failed(e);
        }
        *unsent = count;
        if let Err(e) = wr.write_all(&outbox.out).await {
            return WriteEnd::Failed(e.into());
        }
        *unsent = 0;
        let bytes = outbox.out.len() as u64;
        ctx.shared.with(|c| {
            c.messages_sent += count;
            c.bytes_sent += bytes;
        });
    }
}
