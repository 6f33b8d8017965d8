//! Conntrack-sync lab: a stateful firewall with SNAT to the WAN VIP on both routers, and live
//! traffic (TCP echo flows, server-pushed UDP flows) run by threads of the test process that
//! entered the client's and the server's network namespaces.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use vrrpd::conntrack::entry::{Entry, FlowKey, ReplyTuple, status};
use vrrpd::proto::Family;

use super::{Lab, RouterConfig, SERVER4, vrrpd_bin};

pub const TCP_PORT: u16 = 5001;
pub const UDP_PORT: u16 = 5002;
pub const SLOW_UDP_PORT: u16 = 5003;

/// Stateful forward chain: only a TCP SYN (or a UDP/ICMP packet from the LAN) creates a flow;
/// everything else must match an entry. SNAT from the LAN to the WAN VIPs.
pub const FIREWALL: &str = r#"
table inet ctlab {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "eth1" tcp flags & (syn | ack | fin | rst) == syn ct state new accept
        iifname "eth1" meta l4proto { udp, icmp, ipv6-icmp } ct state new accept
        counter
    }
    chain postrouting {
        type nat hook postrouting priority 100;
        oifname "eth2" ip saddr 10.76.2.0/24 snat ip to 10.76.4.1
        oifname "eth2" ip6 saddr 2001:db8:5:416::/64 snat ip6 to 2001:db8:5:34cd::1
    }
}
"#;

/// Sysctls of the routers: strict TCP window tracking, every conntrack event, short UDP
/// timeouts (so a quiet UDP flow outlives its timeout during the test).
pub const ROUTER_SYSCTLS: [&str; 5] = [
    "net.netfilter.nf_conntrack_tcp_loose=0",
    "net.netfilter.nf_conntrack_tcp_be_liberal=0",
    "net.netfilter.nf_conntrack_events=1",
    "net.netfilter.nf_conntrack_udp_timeout=10",
    "net.netfilter.nf_conntrack_udp_timeout_stream=15",
];

/// Firewall and sysctls on both routers.
pub fn stateful_routers(lab: &Lab) {
    for r in ["a", "b"] {
        // The sysctls exist once nf_conntrack is in use in the namespace: load the ruleset first.
        lab.nft(r, FIREWALL);
        for s in ROUTER_SYSCTLS {
            lab.exec_ok(r, &["sysctl", "-qw", s]);
        }
    }
}

/// The `[conntrack-sync]` section for `router`, with a key file in the lab directory.
pub fn sync_section(lab: &Lab, router: &str) -> String {
    let key = lab.dir().join("sync.key");
    if !key.exists() {
        let bytes: Vec<u8> = (0..48).map(|i| (i * 37 + 11) as u8).collect();
        std::fs::write(&key, bytes).expect("writing the key file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 the key file");
    }
    let peer = if router == "a" {
        "10.76.9.2"
    } else {
        "10.76.9.1"
    };
    format!(
        "[conntrack-sync]\nsync-group = \"MAIN\"\ninterface = \"eth3\"\npeer = \"{peer}\"\nkey-file = \"{}\"\n",
        key.display()
    )
}

pub fn router_with_sync(lab: &Lab, router: &str, priority: u8) -> RouterConfig {
    RouterConfig::new(router, priority).extra(&sync_section(lab, router))
}

/// `vrrpd show sync --json` on `router`.
pub fn show_sync(lab: &Lab, router: &str) -> Result<Value> {
    let out = lab.exec(
        router,
        &[
            vrrpd_bin().to_string_lossy().as_ref(),
            "show",
            "sync",
            "--json",
            "-s",
            lab.socket_path(router).to_string_lossy().as_ref(),
        ],
    );
    if !out.status.success() {
        bail!(
            "show sync on {router}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing show sync")
}

/// The benchmarks' pair: firewall and replication on both routers, a MASTER, b BACKUP, the
/// channel up.
pub fn synced_pair(lab: &Lab) -> (super::Daemon, super::Daemon) {
    stateful_routers(lab);
    let a = lab.start_router(&router_with_sync(lab, "a", 200));
    let b = lab.start_router(&router_with_sync(lab, "b", 100));
    lab.wait_until(Duration::from_secs(20), || {
        lab.all_in_state("a", "MASTER")
            && lab.all_in_state("b", "BACKUP")
            && show_sync(lab, "a").is_ok_and(|s| s["connected"] == true)
    })
    .expect("a MASTER, connected");
    (a, b)
}

/// Creates `entries` on the master a (netlink batches of 5,000) and waits until the backup
/// lists them all (on top of the `base` it listed before).
pub fn replicate(lab: &Lab, entries: Vec<Entry>, base: usize) {
    let n = entries.len();
    in_router(lab, "a", move |rt| {
        rt.block_on(async {
            let ct = vrrpd::conntrack::kernel::Conntrack::open().unwrap();
            for chunk in entries.chunks(5000) {
                ct.install(chunk).await.unwrap();
            }
        })
    });
    lab.wait_until(Duration::from_secs(120), || {
        listed_ipv4(lab, "b") >= base + n
    })
    .expect("backup holds every entry");
}

/// Number of conntrack entries in `node` matching `conntrack -L` filter arguments.
/// Both families are counted.
pub fn conntrack_count(lab: &Lab, node: &str, args: &[&str]) -> usize {
    ["ipv4", "ipv6"]
        .iter()
        .map(|family| {
            let mut cmd = vec!["conntrack", "-L", "-f", family];
            cmd.extend_from_slice(args);
            let out = lab.exec(node, &cmd);
            String::from_utf8_lossy(&out.stdout).lines().count()
        })
        .sum()
}

/// Runs `f` on a new thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        super::netns::enter(&ns).expect("entering the namespace");
        f()
    })
}

/// Runs `f` with a tokio runtime on a thread inside `node`'s namespace, and waits for it.
pub fn in_router<T: Send + 'static>(
    lab: &Lab,
    node: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    in_netns(&lab.ns(node), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        f(&rt)
    })
    .join()
    .expect("thread in namespace")
}

/// Synthetic entry `i` of the benchmarks: an assured UDP flow 10.200.x.y:20000 -> the lab's
/// server :9999 (distinct for i < 2^24), with an hour to live.
pub fn synthetic_udp(i: usize) -> Entry {
    let src = IpAddr::V4(Ipv4Addr::new(
        10,
        200 + (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ));
    let server: IpAddr = SERVER4.parse().unwrap();
    Entry {
        key: FlowKey {
            family: Family::Ipv4,
            protocol: 17,
            src,
            dst: server,
            src_port: 20000,
            dst_port: 9999,
            zone: 0,
        },
        reply: ReplyTuple {
            src: server,
            dst: src,
            src_port: 9999,
            dst_port: 20000,
        },
        status: status::SEEN_REPLY | status::ASSURED,
        timeout: Some(3600),
        mark: None,
        tcp: None,
        raw: Vec::new(),
    }
}

/// CPU time of every thread of process `pid` so far, in seconds, from schedstat: exact, where
/// stat's utime + stime are sampled at the tick and miss a daemon that runs between ticks.
pub fn process_cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// Entries in the table (`conntrack -L`, IPv4): what lookups find. nf_conntrack_count (`-C`)
/// also counts deleted entries whose destroy event the kernel has not delivered yet (it retries
/// slowly when a listener's socket is full).
pub fn listed_ipv4(lab: &Lab, node: &str) -> usize {
    let out = lab.exec(node, &["conntrack", "-L", "-f", "ipv4"]);
    out.stdout.iter().filter(|b| **b == b'\n').count()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// What one flow saw: successful exchanges and the longest gap between two of them.
#[derive(Debug, Default)]
pub struct FlowStat {
    pub last_ok: Option<Instant>,
    pub max_gap: Duration,
    pub oks: u64,
    pub error: Option<String>,
}

impl FlowStat {
    fn ok(&mut self, now: Instant) {
        if let Some(last) = self.last_ok {
            self.max_gap = self.max_gap.max(now - last);
        }
        self.last_ok = Some(now);
        self.oks += 1;
    }
}

pub type Stats = Arc<Vec<Mutex<FlowStat>>>;

fn new_stats(n: usize) -> Stats {
    Arc::new((0..n).map(|_| Mutex::new(FlowStat::default())).collect())
}

/// Traffic between the client and the server, running until dropped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub tcp: Stats,
    pub udp: Stats,
    pub slow: Stats,
    pub tcp_connected: Arc<AtomicU64>,
}

impl Traffic {
    /// `tcp` echo flows (a message every `period`), `udp` flows the server pushes to every
    /// `period`, one slow UDP flow the server pushes to every `slow_period`.
    pub fn start(
        lab: &Lab,
        servers: &[&str],
        tcp: usize,
        udp: usize,
        period: Duration,
        slow_period: Duration,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let server_addrs: Vec<std::net::IpAddr> = servers
            .iter()
            .map(|s| s.parse().expect("server address"))
            .collect();
        let ready = Arc::new(AtomicU64::new(0));
        {
            let stop = stop.clone();
            let ready = ready.clone();
            threads.push(in_netns(&lab.ns("server"), move || {
                runtime().block_on(serve(stop, ready, period, slow_period))
            }));
        }
        wait(Duration::from_secs(5), || ready.load(Ordering::SeqCst) == 1)
            .expect("servers listening");
        let (tcp_stats, udp_stats, slow_stats) = (new_stats(tcp), new_stats(udp), new_stats(1));
        let tcp_connected = Arc::new(AtomicU64::new(0));
        {
            let stop = stop.clone();
            let (t, u, s, c) = (
                tcp_stats.clone(),
                udp_stats.clone(),
                slow_stats.clone(),
                tcp_connected.clone(),
            );
            threads.push(in_netns(&lab.ns("client"), move || {
                runtime().block_on(clients(stop, server_addrs, period, t, u, s, c))
            }));
        }
        Traffic {
            stop,
            threads,
            tcp: tcp_stats,
            udp: udp_stats,
            slow: slow_stats,
            tcp_connected,
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            bail!("not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Flows of `stats` that had a successful exchange after `since`.
pub fn alive_since(stats: &Stats, since: Instant) -> usize {
    stats
        .iter()
        .filter(|s| s.lock().unwrap().last_ok.is_some_and(|t| t > since))
        .count()
}

/// The longest gap of any flow, and the flows that reported an error.
pub fn summary(stats: &Stats) -> (Duration, Vec<String>) {
    let mut max = Duration::ZERO;
    let mut errors = Vec::new();
    for s in stats.iter() {
        let s = s.lock().unwrap();
        max = max.max(s.max_gap);
        if let Some(e) = &s.error {
            errors.push(e.clone());
        }
    }
    (max, errors)
}

/// Resets the gap measurement (e.g. after the warm-up).
pub fn reset_gaps(stats: &Stats) {
    for s in stats.iter() {
        s.lock().unwrap().max_gap = Duration::ZERO;
    }
}

async fn serve(
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicU64>,
    period: Duration,
    slow_period: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpListener::bind(("::", TCP_PORT))
        .await
        .expect("tcp listen");
    let udp = Arc::new(
        tokio::net::UdpSocket::bind(("::", UDP_PORT))
            .await
            .expect("udp bind"),
    );
    let slow = Arc::new(
        tokio::net::UdpSocket::bind(("::", SLOW_UDP_PORT))
            .await
            .expect("udp bind"),
    );
    ready.store(1, Ordering::SeqCst);
    // TCP echo.
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    // UDP: remember who said hello, push to them.
    for (sock, every) in [(udp, period), (slow, slow_period)] {
        let peers: Arc<Mutex<HashMap<SocketAddr, u64>>> = Default::default();
        let rx = sock.clone();
        let p = peers.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = rx.recv_from(&mut buf).await {
                p.lock().unwrap().entry(from).or_insert(0);
            }
        });
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let list: Vec<(SocketAddr, u64)> = {
                    let mut p = peers.lock().unwrap();
                    p.iter_mut()
                        .map(|(a, n)| {
                            *n += 1;
                            (*a, *n)
                        })
                        .collect()
                };
                for (addr, n) in list {
                    let _ = sock.send_to(&n.to_be_bytes(), addr).await;
                }
            }
        });
    }
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn clients(
    stop: Arc<AtomicBool>,
    servers: Vec<std::net::IpAddr>,
    period: Duration,
    tcp: Stats,
    udp: Stats,
    slow: Stats,
    connected: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for i in 0..tcp.len() {
        let stats = tcp.clone();
        let stop = stop.clone();
        let connected = connected.clone();
        let server = servers[i % servers.len()];
        tokio::spawn(async move {
            let fail =
                |e: String| stats[i].lock().unwrap().error = Some(format!("tcp flow {i}: {e}"));
            let mut s = match tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect((server, TCP_PORT)),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return fail(format!("connect: {e}")),
                Err(_) => return fail("connect timed out".into()),
            };
            connected.fetch_add(1, Ordering::SeqCst);
            let mut n: u64 = 0;
            // Spread the flows over the period.
            tokio::time::sleep(period * (i as u32 % 100) / 100).await;
            let mut tick = tokio::time::interval(period);
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                if let Err(e) = s.write_all(&n.to_be_bytes()).await {
                    return fail(format!("write: {e}"));
                }
                let mut buf = [0u8; 8];
                // TCP retransmits what was lost during a takeover; wait for it.
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut buf))
                        .await
                    {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => return fail(format!("read: {e}")),
                        Err(_) => continue,
                    }
                }
                if u64::from_be_bytes(buf) != n {
                    return fail(format!("echo {} for {n}", u64::from_be_bytes(buf)));
                }
                stats[i].lock().unwrap().ok(Instant::now());
            }
        });
    }
    let udp_flows = [(udp, UDP_PORT), (slow, SLOW_UDP_PORT)];
    for (stats, port) in udp_flows {
        for i in 0..stats.len() {
            let stats = stats.clone();
            let server = servers[i % servers.len()];
            tokio::spawn(async move {
                let any: std::net::IpAddr = if server.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
                let std_sock = UdpSocket::bind((any, 0)).expect("udp bind");
                std_sock.set_nonblocking(true).expect("nonblocking");
                let sock = tokio::net::UdpSocket::from_std(std_sock).expect("tokio udp");
                sock.connect((server, port)).await.expect("udp connect");
                // Hello until the server answers; then only the server talks.
                let mut buf = [0u8; 64];
                loop {
                    let _ = sock.send(b"hello").await;
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(Duration::from_secs(20), sock.recv(&mut buf)).await
                    {
                        stats[i].lock().unwrap().ok(Instant::now());
                        break;
                    }
                }
                loop {
                    match sock.recv(&mut buf).await {
                        Ok(_) => stats[i].lock().unwrap().ok(Instant::now()),
                        // ICMP port unreachable from a router without the entry: counted as silence.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            });
        }
    }
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
