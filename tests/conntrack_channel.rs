//! The conntrack sync channel over loopback: delivery, back-pressure, reconnect, and every kind
//! of bad input (wrong key, replayed recording, altered, truncated, garbage, oversized frames),
//! with an in-test TCP proxy that records and tampers with the stream. Each test uses its own
//! 127.88.N.0/24 addresses. `throughput_report` prints messages/s, MB/s and CPU per message.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};
use vrrpd::conntrack::channel::{
    ChannelConfig, ChannelEvent, ChannelReceiver, ChannelSender, Timing, TrySendError, WRITE_BATCH,
    spawn_with_timing,
};
use vrrpd::conntrack::wire::{self, FRAME_HEADER_LEN, MAX_FRAME_BODY};

const PORT: u16 = 3780;
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-shared-sync-key";
const OTHER_KEY: &[u8] = b"fedcba9876543210fedcba9876543210-another-sync-key";

fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 88, net, host))
}

fn addr(net: u8, host: u8) -> SocketAddr {
    SocketAddr::new(ip(net, host), PORT)
}

fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(200),
        dead_after: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(3),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
    }
}

fn start(
    local: SocketAddr,
    peer: SocketAddr,
    key: Option<&[u8]>,
    queue_limit: usize,
) -> (ChannelSender, ChannelReceiver) {
    let cfg = ChannelConfig {
        local,
        peer,
        key: key.map(<[u8]>::to_vec),
        queue_limit,
    };
    spawn_with_timing(cfg, timing()).expect("spawn channel")
}

/// Spawns, retrying while the previous instance's port is still being released.
async fn restart(
    local: SocketAddr,
    peer: SocketAddr,
    key: Option<&[u8]>,
) -> (ChannelSender, ChannelReceiver) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cfg = ChannelConfig {
            local,
            peer,
            key: key.map(<[u8]>::to_vec),
            queue_limit: 1000,
        };
        match spawn_with_timing(cfg, timing()) {
            Ok(pair) => return pair,
            Err(e) if Instant::now() < deadline => {
                eprintln!("respawn {local}: {e}; retrying");
                sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("respawn {local}: {e}"),
        }
    }
}

/// A numbered test message of `len` bytes whose contents follow from its number.
fn message(n: u64, len: usize) -> Vec<u8> {
    let mut m = n.to_be_bytes().to_vec();
    m.extend((0..len.saturating_sub(8)).map(|i| (n as u8).wrapping_mul(31).wrapping_add(i as u8)));
    m
}

/// The number of an intact test message; panics on a corrupted one.
fn number(m: &[u8]) -> u64 {
    let n = u64::from_be_bytes(m[..8].try_into().expect("message shorter than 8 bytes"));
    assert_eq!(m, message(n, m.len()), "message {n} corrupted");
    n
}

async fn next_event(rx: &mut ChannelReceiver, within: Duration) -> Option<ChannelEvent> {
    timeout(within, rx.recv()).await.ok().flatten()
}

async fn expect_connected(rx: &mut ChannelReceiver) {
    match next_event(rx, Duration::from_secs(10)).await {
        Some(ChannelEvent::Connected) => {}
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// Waits for Disconnected and returns its reason.
async fn expect_disconnected(rx: &mut ChannelReceiver) -> String {
    loop {
        match next_event(rx, Duration::from_secs(10)).await {
            Some(ChannelEvent::Disconnected { reason }) => return reason,
            Some(ChannelEvent::Message(_)) => continue,
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
}

/// Asserts that nothing at all arrives for `during`.
async fn expect_silence(rx: &mut ChannelReceiver, during: Duration) {
    if let Some(ev) = next_event(rx, during).await {
        panic!("expected no event, got {ev:?}");
    }
}

fn errors(tx: &ChannelSender, reason: &str) -> u64 {
    tx.stats().errors.get(reason).copied().unwrap_or(0)
}

async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_100k_messages_in_order() {
    let (a, b) = (addr(1, 1), addr(1, 2));
    let (a_tx, mut a_rx) = start(a, b, Some(KEY), 4096);
    let (b_tx, mut b_rx) = start(b, a, Some(KEY), 4096);
    expect_connected(&mut a_rx).await;
    expect_connected(&mut b_rx).await;
    assert!(a_tx.stats().authenticated && b_tx.stats().authenticated);

    const N: u64 = 100_000;
    let sender = tokio::spawn(async move {
        for n in 0..N {
            a_tx.send(message(n, 150)).await.expect("send");
        }
        a_tx
    });
    for expected in 0..N {
        match next_event(&mut b_rx, Duration::from_secs(30)).await {
            Some(ChannelEvent::Message(m)) => assert_eq!(number(&m), expected),
            other => panic!("message {expected}: got {other:?}"),
        }
    }
    let a_tx = sender.await.unwrap();
    let (sent, received) = (a_tx.stats(), b_tx.stats());
    assert_eq!(sent.messages_sent, N);
    assert_eq!(received.messages_received, N);
    assert_eq!(sent.messages_dropped, 0);
    assert!(
        sent.errors.is_empty() && received.errors.is_empty(),
        "{sent:?} {received:?}"
    );
    // Batching: far fewer frames than messages (each frame costs a header and a tag).
    assert!(received.bytes_received < N * 160, "{received:?}");
    // Messages larger than a frame, and empty ones, arrive whole.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    a_tx.send(big.clone()).await.unwrap();
    a_tx.send(Vec::new()).await.unwrap();
    assert_eq!(
        next_event(&mut b_rx, Duration::from_secs(5)).await,
        Some(ChannelEvent::Message(big))
    );
    assert_eq!(
        next_event(&mut b_rx, Duration::from_secs(5)).await,
        Some(ChannelEvent::Message(Vec::new()))
    );
    // And the other direction works on the same connection.
    b_tx.send(b"pong".to_vec()).await.unwrap();
    assert_eq!(
        next_event(&mut a_rx, Duration::from_secs(5)).await,
        Some(ChannelEvent::Message(b"pong".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peer_pushes_back_and_memory_stays_bounded() {
    let (a, b) = (addr(2, 1), addr(2, 2));
    const LIMIT: usize = 1000;
    let (a_tx, mut a_rx) = start(a, b, Some(KEY), LIMIT);
    let (_b_tx, mut b_rx) = start(b, a, Some(KEY), LIMIT);
    expect_connected(&mut a_rx).await;
    expect_connected(&mut b_rx).await;

    // B's upper layer does not read: A may fill its queue, the kernel buffers and B's event
    // queue, and no more.
    let mut accepted = 0u64;
    let mut last_progress = Instant::now();
    let mut max_depth = 0;
    loop {
        match a_tx.try_send(message(accepted, 150)) {
            Ok(()) => {
                accepted += 1;
                last_progress = Instant::now();
            }
            Err(TrySendError::Full(_)) => {
                if last_progress.elapsed() > Duration::from_secs(1) {
                    break;
                }
                sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
        max_depth = max_depth.max(a_tx.stats().queue_depth);
        assert!(accepted < 2_000_000, "the sender never blocked");
    }
    let sysctl = |name: &str| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap();
        s.split_whitespace().last().unwrap().parse().unwrap()
    };
    let in_flight_bytes =
        sysctl("tcp_wmem") + sysctl("tcp_rmem") + (WRITE_BATCH + 3 * MAX_FRAME_BODY) as u64;
    let bound = 2 * LIMIT as u64 + in_flight_bytes / 150;
    eprintln!(
        "back-pressure: {accepted} messages accepted before the sender blocked (bound {bound}), \
         max queue depth {max_depth}"
    );
    assert!(accepted <= bound, "{accepted} > {bound}");
    assert!(max_depth <= LIMIT);
    assert_eq!(
        a_tx.stats().queue_depth,
        LIMIT,
        "queue full while the peer is stuck"
    );
    // send() waits instead of queueing beyond the limit.
    assert!(
        timeout(
            Duration::from_millis(500),
            a_tx.send(message(accepted, 150))
        )
        .await
        .is_err()
    );
    assert_eq!(a_tx.stats().queue_depth, LIMIT);

    // Once B reads, everything arrives, in order.
    for expected in 0..accepted {
        match next_event(&mut b_rx, Duration::from_secs(30)).await {
            Some(ChannelEvent::Message(m)) => assert_eq!(number(&m), expected),
            other => panic!("message {expected}: got {other:?}"),
        }
    }
    wait_until("A's queue drains", Duration::from_secs(5), || {
        a_tx.stats().queue_depth == 0
    })
    .await;
    assert_eq!(a_tx.stats().messages_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_either_peer_restarts() {
    let (a, b) = (addr(3, 1), addr(3, 2));
    let (a_tx, mut a_rx) = start(a, b, Some(KEY), 1000);
    let (b_tx, mut b_rx) = start(b, a, Some(KEY), 1000);
    expect_connected(&mut a_rx).await;
    expect_connected(&mut b_rx).await;

    // B (the listening side) restarts.
    b_rx.shutdown().await;
    drop(b_tx);
    let reason = expect_disconnected(&mut a_rx).await;
    eprintln!("A after B stopped: {reason}");
    assert!(!a_tx.stats().connected);
    let (b_tx, mut b_rx) = restart(b, a, Some(KEY)).await;
    expect_connected(&mut a_rx).await;
    expect_connected(&mut b_rx).await;
    a_tx.send(b"after B restart".to_vec()).await.unwrap();
    assert_eq!(
        next_event(&mut b_rx, Duration::from_secs(5)).await,
        Some(ChannelEvent::Message(b"after B restart".to_vec()))
    );
    assert_eq!(a_tx.stats().connects, 2);

    // A (the dialling side) restarts.
    a_rx.shutdown().await;
    drop(a_tx);
    let reason = expect_disconnected(&mut b_rx).await;
    eprintln!("B after A stopped: {reason}");
    let (a_tx, mut a_rx) = restart(a, b, Some(KEY)).await;
    expect_connected(&mut a_rx).await;
    expect_connected(&mut b_rx).await;
    b_tx.send(b"after A restart".to_vec()).await.unwrap();
    assert_eq!(
        next_event(&mut a_rx, Duration::from_secs(5)).await,
        Some(ChannelEvent::Message(b"after A restart".to_vec()))
    );
    assert_eq!(b_tx.stats().connects, 2);
    assert!(a_tx.stats().connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_or_missing_key_never_connects() {
    // Different keys: the responder cannot read the first handshake message.
    let (a, b) = (addr(4, 1), addr(4, 2));
    let (a_tx, mut a_rx) = start(a, b, Some(KEY), 100);
    let (b_tx, mut b_rx) = start(b, a, Some(OTHER_KEY), 100);
    wait_until("B counts auth failures", Duration::from_secs(10), || {
        errors(&b_tx, "auth") >= 2
    })
    .await;
    expect_silence(&mut a_rx, Duration::from_millis(300)).await;
    expect_silence(&mut b_rx, Duration::from_millis(300)).await;
    assert!(!a_tx.stats().connected && !b_tx.stats().connected);
    assert!(!a_tx.stats().authenticated);
    let _ = a_tx.send(b"secret".to_vec()).await;
    expect_silence(&mut b_rx, Duration::from_millis(300)).await;

    // Key on one side only: both refuse (no silent downgrade to plain).
    let (c, d) = (addr(4, 3), addr(4, 4));
    let (c_tx, mut c_rx) = start(c, d, Some(KEY), 100);
    let (d_tx, mut d_rx) = start(d, c, None, 100);
    wait_until(
        "both count the mode mismatch",
        Duration::from_secs(10),
        || errors(&c_tx, "auth") >= 1 && errors(&d_tx, "auth") >= 1,
    )
    .await;
    expect_silence(&mut c_rx, Duration::from_millis(300)).await;
    expect_silence(&mut d_rx, Duration::from_millis(300)).await;
}

/// What the proxy does to the client-to-server stream of its first connection. Frames are
/// numbered from 0: in keyed mode frame 0 is the handshake, 1 the empty hello, 2.. data.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    Nothing,
    /// Flip one bit in the middle of the frame's body.
    Flip(usize),
    /// Send the frame twice.
    Duplicate(usize),
    /// Send half the frame, then close.
    Truncate(usize),
    /// Before the frame, a header announcing a 1 MiB body.
    Oversize(usize),
    /// Before the frame, a frame too short to hold a tag.
    Undersize(usize),
    /// Before the frame, 300 random bytes.
    Random(usize),
    /// Forward server-to-client for half a second only, and never close the server side.
    Blackhole,
}

struct Proxy {
    recorded: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy from `listen` to `target`, connecting from `source` (the client's address, so
/// the server accepts it), recording and tampering with the first connection's
/// client-to-server bytes.
async fn proxy(listen: SocketAddr, target: SocketAddr, source: IpAddr, tamper: Tamper) -> Proxy {
    let listener = TcpListener::bind(listen).await.expect("proxy bind");
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (rec, conns) = (recorded.clone(), connections.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(source, 0)).unwrap();
            let Ok(server) = socket.connect(target).await else {
                continue;
            };
            // The first connection that reaches the server is the one to tamper with.
            let first = conns.fetch_add(1, Ordering::SeqCst) == 0;
            let (tamper, rec) = if first {
                (tamper, Some(rec.clone()))
            } else {
                (Tamper::Nothing, None)
            };
            tokio::spawn(relay(client, server, tamper, rec));
        }
    });
    Proxy {
        recorded,
        connections,
        task,
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    tamper: Tamper,
    rec: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let (c_rd, mut c_wr) = client.into_split();
    let (mut s_rd, mut s_wr) = server.into_split();
    let blackhole = matches!(tamper, Tamper::Blackhole);
    let back = tokio::spawn(async move {
        let copy = tokio::io::copy(&mut s_rd, &mut c_wr);
        if blackhole {
            let _ = timeout(Duration::from_millis(500), copy).await;
            sleep(Duration::from_secs(20)).await;
        } else {
            let _ = copy.await;
        }
    });
    let mut rd = BufReader::new(c_rd);
    let mut out = Vec::new();
    let mut pre = [0u8; wire::PREAMBLE_LEN];
    if rd.read_exact(&mut pre).await.is_ok() {
        out.extend_from_slice(&pre);
        let mut frame = 0usize;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        loop {
            let mut header = [0u8; FRAME_HEADER_LEN];
            if rd.read_exact(&mut header).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len];
            if rd.read_exact(&mut body).await.is_err() {
                break;
            }
            let mut stop = false;
            match tamper {
                Tamper::Flip(f) if f == frame => body[len / 2] ^= 0x04,
                Tamper::Duplicate(f) if f == frame => {
                    out.extend_from_slice(&header);
                    out.extend_from_slice(&body);
                }
                Tamper::Truncate(f) if f == frame => {
                    out.extend_from_slice(&header);
                    out.extend_from_slice(&body[..len / 2]);
                    stop = true;
                }
                Tamper::Oversize(f) if f == frame => {
                    out.extend_from_slice(&(1u32 << 20).to_be_bytes());
                    out.extend_from_slice(&header[4..]);
                    out.extend_from_slice(&[0u8; 100]);
                }
                Tamper::Undersize(f) if f == frame => {
                    out.extend_from_slice(&5u32.to_be_bytes());
                    out.extend_from_slice(&header[4..]);
                    out.extend_from_slice(&[1, 2, 3, 4, 5]);
                }
                Tamper::Random(f) if f == frame => {
                    for _ in 0..300 {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        out.push(rng as u8);
                    }
                }
                _ => {}
            }
            if !stop {
                out.extend_from_slice(&header);
                out.extend_from_slice(&body);
            }
            if let Some(rec) = &rec {
                rec.lock().unwrap().extend_from_slice(&out);
            }
            if s_wr.write_all(&out).await.is_err() || stop {
                break;
            }
            out.clear();
            frame += 1;
        }
    }
    if blackhole {
        sleep(Duration::from_secs(20)).await;
    }
    drop(s_wr);
    let _ = timeout(Duration::from_secs(10), back).await;
}

/// Sends numbered messages in small bursts (each burst about one frame) until stopped.
fn paced_sender(tx: ChannelSender, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for _ in 0..20 {
                if tx.send(message(n, 150)).await.is_err() {
                    return n;
                }
                n += 1;
            }
            sleep(Duration::from_millis(5)).await;
        }
        n
    })
}

/// Collects what B delivers across a tampered connection and the clean reconnect after it:
/// every message intact and in increasing order (gaps allowed at the reconnect). Returns the
/// disconnect reason and the counts of messages before and after it.
async fn through_tampering_proxy(net: u8, tamper: Tamper) -> (String, usize, usize, ChannelSender) {
    let (a, b, p) = (addr(net, 1), addr(net, 2), addr(net, 3));
    let _proxy = proxy(p, b, ip(net, 1), tamper).await;
    let (b_tx, mut b_rx) = start(b, a, Some(KEY), 1000);
    let (a_tx, a_rx) = start(a, p, Some(KEY), 1000);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = paced_sender(a_tx, stop.clone());
    expect_connected(&mut b_rx).await;
    let mut last: Option<u64> = None;
    let (mut before, mut after) = (0usize, 0usize);
    let mut reason = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while after < 100 {
        assert!(
            Instant::now() < deadline,
            "tamper {tamper:?}: {before} before, {after} after, disconnect {reason:?}, B {:?}",
            b_tx.stats()
        );
        match next_event(&mut b_rx, Duration::from_secs(10)).await {
            Some(ChannelEvent::Message(m)) => {
                let n = number(&m);
                assert!(last.is_none_or(|l| n > l), "message {n} after {last:?}");
                last = Some(n);
                if reason.is_none() {
                    before += 1
                } else {
                    after += 1
                }
            }
            Some(ChannelEvent::Disconnected { reason: r }) => {
                assert!(reason.is_none(), "second disconnect: {r}");
                reason = Some(r);
                match next_event(&mut b_rx, Duration::from_secs(10)).await {
                    Some(ChannelEvent::Connected) => {}
                    other => panic!("expected a reconnect, got {other:?}"),
                }
            }
            other => panic!("tamper {tamper:?}: got {other:?}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    drop(a_rx);
    let reason = reason.unwrap_or_else(|| panic!("tamper {tamper:?}: no disconnect"));
    eprintln!("{tamper:?}: {before} messages before, {after} after; disconnect: {reason}");
    (reason, before, after, b_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_is_rejected_and_counted() {
    let (reason, before, _, b_tx) = through_tampering_proxy(10, Tamper::Flip(6)).await;
    assert!(reason.contains("auth"), "{reason}");
    assert_eq!(errors(&b_tx, "auth"), 1);
    assert!(
        before > 0,
        "the frames before the altered one were delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_frame_is_rejected_as_replay() {
    let (reason, _, _, b_tx) = through_tampering_proxy(11, Tamper::Duplicate(5)).await;
    assert!(reason.contains("replay"), "{reason}");
    assert_eq!(errors(&b_tx, "replay"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_rejected_and_counted() {
    let (reason, _, _, b_tx) = through_tampering_proxy(12, Tamper::Truncate(5)).await;
    assert!(reason.contains("truncated"), "{reason}");
    assert_eq!(errors(&b_tx, "truncated"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_undersized_frames_are_rejected_and_counted() {
    let (reason, _, _, b_tx) = through_tampering_proxy(13, Tamper::Oversize(5)).await;
    assert!(reason.contains("oversize"), "{reason}");
    assert_eq!(errors(&b_tx, "oversize"), 1);
    let (reason, _, _, b_tx) = through_tampering_proxy(14, Tamper::Undersize(5)).await;
    assert!(reason.contains("garbage"), "{reason}");
    assert_eq!(errors(&b_tx, "garbage"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_mid_stream_are_rejected_and_counted() {
    let (reason, _, _, b_tx) = through_tampering_proxy(15, Tamper::Random(5)).await;
    let counted: u64 = ["oversize", "garbage", "auth", "replay", "sequence"]
        .iter()
        .map(|r| errors(&b_tx, r))
        .sum();
    assert_eq!(counted, 1, "{reason}: {:?}", b_tx.stats().errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_connection_replayed_is_rejected() {
    let (a, b, p) = (addr(16, 1), addr(16, 2), addr(16, 3));
    let proxy = proxy(p, b, ip(16, 1), Tamper::Nothing).await;
    let (b_tx, mut b_rx) = start(b, a, Some(KEY), 1000);
    let (a_tx, mut a_rx) = start(a, p, Some(KEY), 1000);
    expect_connected(&mut a_rx).await;
    expect_connected(&mut b_rx).await;
    for n in 0..100 {
        a_tx.send(message(n, 150)).await.unwrap();
    }
    for n in 0..100 {
        match next_event(&mut b_rx, Duration::from_secs(10)).await {
            Some(ChannelEvent::Message(m)) => assert_eq!(number(&m), n),
            other => panic!("{other:?}"),
        }
    }
    // Stop A; keep the recording of its connection.
    a_rx.shutdown().await;
    drop(a_tx);
    expect_disconnected(&mut b_rx).await;
    let recording = proxy.recorded.lock().unwrap().clone();
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);
    assert!(
        recording.len() > 100 * 150,
        "recorded {} bytes",
        recording.len()
    );

    let replay = |recording: Vec<u8>| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip(16, 1), 0)).unwrap();
        let mut stream = socket.connect(b).await.expect("connect to B");
        let _ = stream.write_all(&recording).await;
        // B closes the connection on its own.
        let mut sink = Vec::new();
        let closed = timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "B kept the replayed connection open");
    };

    // Replayed to the same B: the handshake is recognised as seen before.
    replay(recording.clone()).await;
    expect_silence(&mut b_rx, Duration::from_millis(500)).await;
    assert_eq!(errors(&b_tx, "replay"), 1, "{:?}", b_tx.stats().errors);
    assert_eq!(b_tx.stats().messages_received, 100);

    // Replayed to a restarted B that remembers nothing: B answers the handshake with a fresh
    // key, so the recorded frames do not authenticate.
    b_rx.shutdown().await;
    drop(b_tx);
    let (b_tx, mut b_rx) = restart(b, a, Some(KEY)).await;
    replay(recording).await;
    expect_silence(&mut b_rx, Duration::from_millis(500)).await;
    assert_eq!(errors(&b_tx, "auth"), 1, "{:?}", b_tx.stats().errors);
    assert_eq!(b_tx.stats().messages_received, 0);
    assert_eq!(b_tx.stats().connects, 0);
}

/// Raw connections to B from A's address, speaking nonsense: each counted by reason, B never
/// connects or delivers, and a well-behaved A still connects afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_port_is_counted_by_reason() {
    let (a, b) = (addr(17, 1), addr(17, 2));
    let (b_tx, mut b_rx) = start(b, a, Some(KEY), 100);
    let preamble = wire::encode_preamble(wire::Mode::NoisePsk);
    let handshake_header = |len: u32| {
        let mut h = preamble.to_vec();
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes());
        h
    };
    let mut forged = handshake_header(48);
    forged.extend_from_slice(&[0x5a; 48]);
    let mut truncated = handshake_header(48);
    truncated.extend_from_slice(&[0x5a; 20]);
    let mut old_version = preamble.to_vec();
    old_version[4] = 0;
    let cases: Vec<(&str, IpAddr, Vec<u8>)> = vec![
        (
            "garbage",
            ip(17, 1),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "garbage",
            ip(17, 1),
            (0..=255u8).cycle().take(4000).collect(),
        ),
        ("version", ip(17, 1), old_version),
        ("oversize", ip(17, 1), handshake_header(u32::MAX)),
        ("auth", ip(17, 1), forged),
        ("truncated", ip(17, 1), truncated),
        ("truncated", ip(17, 1), preamble[..5].to_vec()),
        ("peer", ip(17, 9), preamble.to_vec()),
    ];
    for (reason, from, bytes) in cases {
        let before = errors(&b_tx, reason);
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let mut stream = socket.connect(b).await.expect("connect to B");
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        let mut sink = Vec::new();
        let _ = timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
        wait_until(
            &format!("B counts {reason}"),
            Duration::from_secs(5),
            || errors(&b_tx, reason) == before + 1,
        )
        .await;
    }
    // Datagrams: nothing listens on UDP at the sync port; they reach no code.
    let udp = tokio::net::UdpSocket::bind(SocketAddr::new(ip(17, 1), 0))
        .await
        .unwrap();
    for _ in 0..100 {
        let _ = udp.send_to(&preamble, b).await;
    }
    expect_silence(&mut b_rx, Duration::from_millis(300)).await;
    let stats = b_tx.stats();
    assert_eq!(
        (stats.connects, stats.messages_received),
        (0, 0),
        "{stats:?}"
    );

    let (a_tx, mut a_rx) = start(a, b, Some(KEY), 100);
    expect_connected(&mut a_rx).await;
    expect_connected(&mut b_rx).await;
    a_tx.send(b"still fine".to_vec()).await.unwrap();
    assert_eq!(
        next_event(&mut b_rx, Duration::from_secs(5)).await,
        Some(ChannelEvent::Message(b"still fine".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_replaces_a_half_open_one() {
    // The proxy stops forwarding B's frames to A and never closes B's side: A finds B silent,
    // drops the connection and dials again, while B still holds the old, half-open one; the
    // new authenticated connection replaces it at once.
    let (a, b, p) = (addr(18, 1), addr(18, 2), addr(18, 3));
    let _proxy = proxy(p, b, ip(18, 1), Tamper::Blackhole).await;
    let (b_tx, mut b_rx) = start(b, a, Some(KEY), 100);
    let (a_tx, mut a_rx) = start(a, p, Some(KEY), 100);
    expect_connected(&mut a_rx).await;
    expect_connected(&mut b_rx).await;
    let a_reason = expect_disconnected(&mut a_rx).await;
    assert!(a_reason.contains("timeout"), "{a_reason}");
    expect_connected(&mut a_rx).await;
    let b_reason = expect_disconnected(&mut b_rx).await;
    assert!(b_reason.contains("replaced"), "{b_reason}");
    expect_connected(&mut b_rx).await;
    assert_eq!(b_tx.stats().connects, 2);
    a_tx.send(b"new".to_vec()).await.unwrap();
    assert_eq!(
        next_event(&mut b_rx, Duration::from_secs(5)).await,
        Some(ChannelEvent::Message(b"new".to_vec()))
    );
}

fn thread_cpu() -> Duration {
    let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Sends `n` messages of `len` bytes from A to B, each end on its own thread with its own
/// single-threaded runtime; returns (seconds, CPU seconds of the sender's thread, of the
/// receiver's).
fn run_throughput(net: u8, key: Option<&'static [u8]>, n: u64, len: usize) -> (f64, f64, f64) {
    let (a, b) = (addr(net, 1), addr(net, 2));
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let ready = Arc::new(std::sync::Barrier::new(2));
    let ready_b = ready.clone();
    // A stays up until B has everything (closing earlier could reset the connection).
    let (received_all, all_received) = tokio::sync::oneshot::channel::<()>();
    let receiver = std::thread::spawn(move || {
        runtime().block_on(async move {
            let (_b_tx, mut b_rx) = start(b, a, key, 8192);
            expect_connected(&mut b_rx).await;
            ready_b.wait();
            let cpu0 = thread_cpu();
            let mut received = 0u64;
            while received < n {
                match b_rx.recv().await {
                    Some(ChannelEvent::Message(m)) => {
                        assert_eq!(m.len(), len);
                        received += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
            let result = (Instant::now(), thread_cpu() - cpu0);
            let _ = received_all.send(());
            result
        })
    });
    let (t0, send_cpu) = runtime().block_on(async move {
        let (a_tx, mut a_rx) = start(a, b, key, 8192);
        expect_connected(&mut a_rx).await;
        let msgs: Vec<Vec<u8>> = (0..n).map(|i| message(i, len)).collect();
        ready.wait();
        let (t0, cpu0) = (Instant::now(), thread_cpu());
        for m in msgs {
            a_tx.send(m).await.unwrap();
        }
        while a_tx.stats().messages_sent < n {
            sleep(Duration::from_millis(1)).await;
        }
        let cpu = thread_cpu() - cpu0;
        let _ = all_received.await;
        (t0, cpu)
    });
    let (t1, recv_cpu) = receiver.join().unwrap();
    (
        (t1 - t0).as_secs_f64(),
        send_cpu.as_secs_f64(),
        recv_cpu.as_secs_f64(),
    )
}

/// Prints messages/s, MB/s and CPU per message with and without the key, median of 3 runs.
#[test]
fn throughput_report() {
    const N: u64 = 300_000;
    const LEN: usize = 150;
    for (net, label, key) in [(20u8, "noise", Some(KEY)), (21, "plain", None)] {
        let mut runs: Vec<(f64, f64, f64)> = (0..3u8)
            .map(|i| run_throughput(net + 10 * i, key, N, LEN))
            .collect();
        runs.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (secs, send_cpu, recv_cpu) = runs[1];
        eprintln!(
            "THROUGHPUT {label}: {N} x {LEN} B in {secs:.3} s (median of 3): {:.0} msg/s, \
             {:.1} MB/s; CPU per message: sender {:.2} us, receiver {:.2} us",
            N as f64 / secs,
            (N as usize * LEN) as f64 / secs / 1e6,
            send_cpu / N as f64 * 1e6,
            recv_cpu / N as f64 * 1e6,
        );
    }
}
