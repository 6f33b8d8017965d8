//! The system I/O layer against the real kernel: raw VRRP sockets, gratuitous ARP and NA,
//! addresses, links, link events and the virtual-MAC macvlan.
//!
//! Needs root. Each test creates its own network namespace (`sysio-<pid>-<n>`), runs its body
//! on a thread that has entered it (with its own current-thread tokio runtime, so every socket
//! and netlink connection belongs to the namespace), bounds the body's time, and deletes the
//! namespace when it ends, failed or not.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use pnet_packet::Packet;
use pnet_packet::arp::{ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmpv6::ndp::{NeighborAdvertFlags, NeighborAdvertPacket};
use pnet_packet::icmpv6::{Icmpv6Packet, Icmpv6Types};
use pnet_packet::ipv6::Ipv6Packet;
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};
use tokio::time::timeout;
use vrrpd::net::{Announcer, SocketError, VRRP_GROUP_V4, VRRP_GROUP_V6, VrrpSocket};
use vrrpd::net::{build_gratuitous_arp, build_unsolicited_na};
use vrrpd::netlink::{
    LinkMonitorEvent, Netlink, NetlinkError, get_sysctl, link_monitor, monitor::link_monitor_with,
};
use vrrpd::proto::Family;

/// The longest a test body may run.
const BODY_LIMIT: Duration = Duration::from_secs(40);
/// The longest we wait for one expected packet or event.
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Namespace harness

/// A uniquely named network namespace, deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        assert_eq!(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() },
            0,
            "the sys_io tests need root (network namespaces, raw sockets)"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale_namespaces();
        let name = format!(
            "sysio-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_cmd("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// Runs `ip -n <ns> <args>` and asserts it succeeded.
    fn ip(&self, args: &str) {
        ip_in(&self.name, args);
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A veth pair with `a` here and `b` in `other`, both up.
    fn veth_to(&self, a: &str, other: &Netns, b: &str) {
        self.ip(&format!(
            "link add {a} type veth peer name {b} netns {}",
            other.name
        ));
        self.ip(&format!("link set {a} up"));
        other.ip(&format!("link set {b} up"));
    }

    /// A veth pair `a`/`b`, both up.
    fn veth(&self, a: &str, b: &str) {
        self.ip(&format!("link add {a} type veth peer name {b}"));
        self.ip(&format!("link set {a} up"));
        self.ip(&format!("link set {b} up"));
    }

    /// Runs `body` on a thread inside the namespace, on its own current-thread runtime,
    /// within [`BODY_LIMIT`]. A panic in the body is re-raised here.
    fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let path = self.path();
        let thread = std::thread::spawn(move || {
            enter_netns(&path);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build the test runtime");
            runtime.block_on(async move {
                timeout(BODY_LIMIT, body())
                    .await
                    .expect("the test body ran out of time");
            });
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Moves the calling thread (only) into the namespace at `path`.
fn enter_netns(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd affects only the calling thread's namespaces.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Deletes `sysio-<pid>-*` namespaces left behind by test processes that were killed.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("sysio-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run_cmd(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip -n <ns> <args>` and asserts it succeeded.
fn ip_in(ns: &str, args: &str) {
    let mut argv = vec!["-n", ns];
    argv.extend(args.split_whitespace());
    run_cmd("ip", &argv);
}

/// Runs `ip -n <ns> -batch -` with `script` on stdin and asserts it succeeded.
fn ip_batch(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn ip -batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write the ip batch");
    assert!(
        child.wait().expect("wait for ip -batch").success(),
        "ip -batch failed"
    );
}

fn ip_output(ns: &str, args: &str) -> String {
    let mut argv = vec!["-n", ns];
    argv.extend(args.split_whitespace());
    let out = Command::new("ip").args(&argv).output().expect("run ip");
    assert!(out.status.success(), "ip {argv:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`.
async fn eventually<T, Fut: Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The usable link-local address of link `index` (waits out DAD).
async fn link_local(nl: &Netlink, index: u32) -> Ipv6Addr {
    eventually(
        Duration::from_secs(10),
        "a usable link-local address",
        || async {
            nl.link_local_ipv6(index, &[])
                .await
                .expect("list addresses")
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// (a) raw VRRP sockets

/// IPv4 needs two namespaces: a packet whose source is an address of the receiving host is
/// dropped as a martian (`accept_local` is 0), so va and vb cannot share one.
#[test]
fn vrrp_socket_v4_multicast_and_unicast() {
    let ns_a = Netns::new();
    let ns_b = Netns::new();
    ns_a.veth_to("va", &ns_b, "vb");
    ns_a.veth_to("xa", &ns_b, "xb");
    // 192.0.2.50 is va's primary: the kernel's own choice of source, which the socket's
    // configured source (192.0.2.1, a secondary) must override.
    ns_a.ip("addr add 192.0.2.50/24 dev va");
    ns_a.ip("addr add 192.0.2.1/24 dev va");
    ns_b.ip("addr add 192.0.2.2/24 dev vb");
    ns_a.ip("addr add 198.51.100.1/24 dev xa");
    let path_b = ns_b.path();
    let path_a = ns_a.path();
    ns_a.run(move || async move {
        // Sockets and netlink connections belong to the namespace they were created in.
        enter_netns(&path_b);
        let nl_b = Netlink::new().unwrap();
        let vb = nl_b.link_by_name("vb").await.unwrap();
        let xb = nl_b.link_by_name("xb").await.unwrap();
        // With a source set, the socket still receives multicast (a bound IPv4 raw socket
        // would not).
        let b = VrrpSocket::open(
            "vb",
            vb.index,
            Family::Ipv4,
            Some("192.0.2.2".parse().unwrap()),
        )
        .unwrap();
        let bx = VrrpSocket::open("xb", xb.index, Family::Ipv4, None).unwrap();
        enter_netns(&path_a);
        let nl_a = Netlink::new().unwrap();
        let va = nl_a.link_by_name("va").await.unwrap();
        let xa = nl_a.link_by_name("xa").await.unwrap();
        let a = VrrpSocket::open(
            "va",
            va.index,
            Family::Ipv4,
            Some("192.0.2.1".parse().unwrap()),
        )
        .unwrap();
        let x = VrrpSocket::open("xa", xa.index, Family::Ipv4, None).unwrap();

        // Multicast to 224.0.0.18.
        let payload = [0x31, 7, 100, 1, 0, 100, 0xab, 0xcd, 192, 0, 2, 100];
        a.send_to(&payload, IpAddr::V4(VRRP_GROUP_V4))
            .await
            .unwrap();
        let rx = timeout(WAIT, b.recv())
            .await
            .expect("multicast advert")
            .unwrap();
        assert_eq!(rx.source, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(rx.destination, IpAddr::V4(VRRP_GROUP_V4));
        assert_eq!(rx.hop_limit, 255);
        let ihl = usize::from(rx.data[0] & 0x0f) * 4;
        assert_eq!(rx.data[9], 112, "IP protocol");
        assert_eq!(&rx.data[ihl..], &payload, "payload after the IP header");

        // Unicast to the peer's address, also with TTL 255.
        a.send_to(&payload, "192.0.2.2".parse().unwrap())
            .await
            .unwrap();
        let rx = timeout(WAIT, b.recv())
            .await
            .expect("unicast advert")
            .unwrap();
        assert_eq!(rx.source, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(rx.destination, "192.0.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(rx.hop_limit, 255);
        assert_eq!(&rx.data[ihl..], &payload);

        // Without a configured source the kernel picks the primary; the source can be changed
        // on an open socket; a source that is not ours is refused by the kernel on send.
        a.set_source(None).unwrap();
        a.send_to(&payload, IpAddr::V4(VRRP_GROUP_V4))
            .await
            .unwrap();
        let rx = timeout(WAIT, b.recv()).await.expect("advert").unwrap();
        assert_eq!(rx.source, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)));
        assert!(a.set_source(Some(IpAddr::V6(Ipv6Addr::LOCALHOST))).is_err());
        a.set_source(Some("203.0.113.9".parse().unwrap())).unwrap();
        let e = a
            .send_to(&payload, IpAddr::V4(VRRP_GROUP_V4))
            .await
            .expect_err("foreign source");
        // The kernel answers ENETUNREACH: no route from an address that is not ours.
        assert!(
            matches!(&e, SocketError::Send { source, .. } if source.raw_os_error().is_some()),
            "{e}"
        );
        a.set_source(Some("192.0.2.1".parse().unwrap())).unwrap();

        // Multicast arriving on xb reaches the socket bound to xb and not the one bound to
        // vb (SO_BINDTODEVICE, IP_MULTICAST_ALL off); the sender does not hear itself.
        x.send_to(&payload, IpAddr::V4(VRRP_GROUP_V4))
            .await
            .unwrap();
        let rx = timeout(WAIT, bx.recv())
            .await
            .expect("advert on xb")
            .unwrap();
        assert_eq!(rx.source, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
        assert!(
            timeout(Duration::from_millis(300), b.recv()).await.is_err(),
            "vb's socket heard a packet that arrived on xb"
        );
        assert!(
            timeout(Duration::from_millis(300), a.recv()).await.is_err(),
            "the sender heard its own multicast"
        );

        // A destination of the wrong family is refused without touching the socket.
        assert!(
            a.send_to(&payload, IpAddr::V6(VRRP_GROUP_V6))
                .await
                .is_err()
        );
    });
}

#[test]
fn vrrp_socket_v6_multicast_and_unicast() {
    let ns = Netns::new();
    ns.veth("va", "vb");
    ns.run(|| async {
        let nl = Netlink::new().unwrap();
        let va = nl.link_by_name("va").await.unwrap();
        let vb = nl.link_by_name("vb").await.unwrap();
        // The kernel refuses to bind to a tentative address: wait for DAD to finish.
        let ll_a = link_local(&nl, va.index).await;
        let ll_b = link_local(&nl, vb.index).await;

        let a = VrrpSocket::open("va", va.index, Family::Ipv6, Some(IpAddr::V6(ll_a))).unwrap();
        let b = VrrpSocket::open("vb", vb.index, Family::Ipv6, Some(IpAddr::V6(ll_b))).unwrap();

        // Arbitrary bytes, including a "checksum" field: they must arrive untouched, which
        // shows IPV6_CHECKSUM is off.
        let payload = [
            0x31, 9, 200, 1, 0, 100, 0x12, 0x34, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            1,
        ];
        a.send_to(&payload, IpAddr::V6(VRRP_GROUP_V6))
            .await
            .unwrap();
        let rx = timeout(WAIT, b.recv())
            .await
            .expect("multicast advert")
            .unwrap();
        assert_eq!(rx.source, IpAddr::V6(ll_a));
        assert_eq!(rx.destination, IpAddr::V6(VRRP_GROUP_V6));
        assert_eq!(rx.hop_limit, 255);
        assert_eq!(rx.data, payload, "IPv6 delivers the VRRP message only");

        // Unicast to the peer's global address still leaves from the configured link-local
        // source (the kernel would pick the global), and reaches a socket whose source is
        // the peer's link-local.
        let g_a: IpNet = "2001:db8::1/64".parse().unwrap();
        let g_b: IpNet = "2001:db8::2/64".parse().unwrap();
        nl.add_address(va.index, g_a).await.unwrap();
        nl.add_address(vb.index, g_b).await.unwrap();
        a.send_to(&payload, g_b.addr()).await.unwrap();
        let rx = timeout(WAIT, b.recv())
            .await
            .expect("unicast advert to a global")
            .unwrap();
        assert_eq!(rx.source, IpAddr::V6(ll_a));
        assert_eq!(rx.destination, g_b.addr());
        assert_eq!(rx.hop_limit, 255);

        // Unicast to the peer's link-local (needs the scope id).
        b.send_to(&payload, IpAddr::V6(ll_a)).await.unwrap();
        let rx = timeout(WAIT, a.recv())
            .await
            .expect("unicast advert")
            .unwrap();
        assert_eq!(rx.source, IpAddr::V6(ll_b));
        assert_eq!(rx.destination, IpAddr::V6(ll_a));
        assert_eq!(rx.hop_limit, 255);
        assert_eq!(rx.data, payload);

        assert!(
            timeout(Duration::from_millis(300), a.recv()).await.is_err(),
            "the sender heard its own multicast"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// (b) addresses

#[test]
fn addresses_are_idempotent_and_ipv6_vips_skip_dad() {
    let ns = Netns::new();
    ns.veth("va", "vb");
    ns.ip("addr add 192.0.2.1/24 dev va");
    let ns_name = ns.name.clone();
    ns.run(move || async move {
        let nl = Netlink::new().unwrap();
        let va = nl.link_by_name("va").await.unwrap().index;
        let v4: IpNet = "192.0.2.10/24".parse().unwrap();
        let v4_own: IpNet = "198.51.100.10/32".parse().unwrap();
        let v6: IpNet = "2001:db8::10/64".parse().unwrap();

        for vip in [v4, v4_own, v6] {
            nl.add_address(va, vip).await.unwrap();
            nl.add_address(va, vip)
                .await
                .expect("adding an existing address is Ok");
        }
        let addrs = nl.addresses(va).await.unwrap();
        for vip in [v4, v4_own, v6] {
            assert_eq!(
                addrs.iter().filter(|a| **a == vip).count(),
                1,
                "{vip} in {addrs:?}"
            );
        }

        // The IPv6 VIP is usable at once: flagged nodad, not tentative, and bindable (the
        // kernel refuses to bind to a tentative address).
        let entries = nl.address_entries(va).await.unwrap();
        let e = entries.iter().find(|e| e.net == v6).unwrap();
        assert!(e.nodad && !e.tentative && !e.dad_failed, "{e:?}");
        UdpSocket::bind(SocketAddr::new(v6.addr(), 0)).expect("bind to the IPv6 VIP at once");
        let shown = ip_output(&ns_name, "-6 addr show dev va");
        let line = shown.lines().find(|l| l.contains("2001:db8::10")).unwrap();
        assert!(!line.contains("tentative"), "{line}");
        // Control: an address added without NODAD is tentative, so the check above means
        // something.
        ip_in(&ns_name, "addr add 2001:db8::20/64 dev va");
        let entries = nl.address_entries(va).await.unwrap();
        let control = entries
            .iter()
            .find(|e| e.net.addr() == "2001:db8::20".parse::<IpAddr>().unwrap());
        assert!(control.unwrap().tentative, "{control:?}");

        // The VRRP source address: the primary, not the VIPs.
        assert_eq!(
            nl.primary_ipv4(va, &[v4.addr(), v4_own.addr()])
                .await
                .unwrap(),
            Some(Ipv4Addr::new(192, 0, 2, 1))
        );

        for vip in [v4, v4_own, v6] {
            nl.del_address(va, vip).await.unwrap();
            nl.del_address(va, vip)
                .await
                .expect("removing an absent address is Ok");
        }
        let addrs = nl.addresses(va).await.unwrap();
        for vip in [v4, v4_own, v6] {
            assert!(!addrs.contains(&vip), "{vip} still in {addrs:?}");
        }
        assert!(addrs.contains(&"192.0.2.1/24".parse().unwrap()));

        // A missing link is an error, not "absent".
        let e = nl.del_address(9999, v4).await.expect_err("no such link");
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
        assert!(matches!(
            nl.link_by_name("nope0").await,
            Err(NetlinkError::LinkNotFound(_))
        ));
        assert!(matches!(
            nl.link_by_index(9999).await,
            Err(NetlinkError::LinkNotFound(_))
        ));
    });
}

// ---------------------------------------------------------------------------------------------
// (c) gratuitous ARP and unsolicited NA

/// An AF_PACKET socket that sees every frame on `ifindex`.
fn capture(ifindex: u32) -> Socket {
    let all = i32::from((libc::ETH_P_ALL as u16).to_be());
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(all))).unwrap();
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_ll fits in the storage.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    ll.sll_ifindex = ifindex as i32;
    // SAFETY: an initialised sockaddr_ll of that length.
    let address =
        unsafe { SockAddr::new(storage, size_of::<libc::sockaddr_ll>() as libc::socklen_t) };
    socket.bind(&address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    socket
}

/// Reads frames until one satisfies `pick`, for at most [`WAIT`].
fn capture_frame(socket: &Socket, pick: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            // SAFETY: recv initialised the first n bytes.
            let frame: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            if pick(&frame) {
                return frame;
            }
        }
    }
    panic!("no matching frame captured");
}

/// Icmp6InNeighborAdvertisements of the calling thread's namespace.
fn received_neighbor_adverts() -> u64 {
    std::fs::read_to_string("/proc/thread-self/net/snmp6")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Icmp6InNeighborAdvertisements"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn gratuitous_arp_and_unsolicited_na_on_the_wire() {
    let ns = Netns::new();
    ns.veth("va", "vb");
    ns.run(|| async {
        let nl = Netlink::new().unwrap();
        let va = nl.link_by_name("va").await.unwrap();
        let vb = nl.link_by_name("vb").await.unwrap();
        let ll_a = link_local(&nl, va.index).await;
        let mac = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x07];
        let mac6 = [0x00, 0x00, 0x5e, 0x00, 0x02, 0x07];
        let vip4 = Ipv4Addr::new(192, 0, 2, 7);
        let vip6: Ipv6Addr = "2001:db8::7".parse().unwrap();

        let tap = capture(vb.index);
        let announcer = Announcer::open(va.index).unwrap();
        let before = received_neighbor_adverts();

        announcer.gratuitous_arp(mac, vip4).unwrap();
        let frame = capture_frame(&tap, |f| {
            EthernetPacket::new(f).is_some_and(|e| e.get_ethertype() == EtherTypes::Arp)
        });
        assert_eq!(
            frame,
            build_gratuitous_arp(mac, vip4),
            "the frame on the wire"
        );
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_destination().octets(), [0xff; 6]);
        assert_eq!(eth.get_source().octets(), mac);
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_operation(), ArpOperations::Request);
        assert_eq!(arp.get_sender_hw_addr().octets(), mac);
        assert_eq!(arp.get_sender_proto_addr(), vip4);
        assert_eq!(arp.get_target_hw_addr().octets(), [0; 6]);
        assert_eq!(arp.get_target_proto_addr(), vip4);

        announcer.unsolicited_na(mac6, ll_a, vip6).unwrap();
        let frame = capture_frame(&tap, |f| {
            EthernetPacket::new(f).is_some_and(|e| {
                e.get_ethertype() == EtherTypes::Ipv6
                    && Ipv6Packet::new(e.payload()).is_some_and(|ip| {
                        Icmpv6Packet::new(ip.payload())
                            .is_some_and(|i| i.get_icmpv6_type() == Icmpv6Types::NeighborAdvert)
                    })
            })
        });
        assert_eq!(
            frame,
            build_unsolicited_na(mac6, ll_a, vip6),
            "the frame on the wire"
        );
        let eth = EthernetPacket::new(&frame).unwrap();
        assert_eq!(eth.get_destination().octets(), [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(eth.get_source().octets(), mac6);
        let ip = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!(ip.get_source(), ll_a);
        assert_eq!(ip.get_destination(), "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.get_hop_limit(), 255);
        let icmp = Icmpv6Packet::new(ip.payload()).unwrap();
        assert_eq!(
            icmp.get_checksum(),
            pnet_packet::icmpv6::checksum(&icmp, &ip.get_source(), &ip.get_destination())
        );
        let na = NeighborAdvertPacket::new(ip.payload()).unwrap();
        assert_eq!(
            na.get_flags(),
            NeighborAdvertFlags::Router | NeighborAdvertFlags::Override
        );
        assert_eq!(na.get_target_addr(), vip6);
        assert_eq!(
            &ip.payload()[24..32],
            &[2, 1, 0, 0, 0x5e, 0, 2, 7],
            "TLLA option"
        );

        // vb's kernel accepted the NA: it passed the checksum and reached the NA counter.
        eventually(WAIT, "vb's kernel to count the NA", || async {
            (received_neighbor_adverts() > before).then_some(())
        })
        .await;
    });
}

// ---------------------------------------------------------------------------------------------
// (d) link events

async fn next_event(
    rx: &mut tokio::sync::mpsc::Receiver<LinkMonitorEvent>,
    what: &str,
    want: impl Fn(&LinkMonitorEvent) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) if want(&event) => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the link monitor stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[test]
fn link_monitor_reports_down_up_and_delete() {
    let ns = Netns::new();
    ns.veth("va", "vb");
    let ns_name = ns.name.clone();
    ns.run(move || async move {
        // Subscribe first, then dump.
        let mut rx = link_monitor().unwrap();
        let nl = Netlink::new().unwrap();
        let va = nl.link_by_name("va").await.unwrap();
        assert!(va.up);

        let ip = |args: &str| ip_in(&ns_name, args);
        ip("link set va down");
        next_event(&mut rx, "va down", |e| {
            matches!(e, LinkMonitorEvent::Link(l) if l.name == "va" && l.index == va.index && !l.up)
        })
        .await;
        ip("link set va up");
        next_event(&mut rx, "va up", |e| {
            matches!(e, LinkMonitorEvent::Link(l) if l.name == "va" && l.up)
        })
        .await;
        // The peer going down takes va's carrier away: va is no longer operationally up.
        ip("link set vb down");
        next_event(&mut rx, "va without carrier", |e| {
            matches!(e, LinkMonitorEvent::Link(l) if l.name == "va" && !l.up)
        })
        .await;
        ip("link del va");
        next_event(&mut rx, "va deleted", |e| {
            matches!(e, LinkMonitorEvent::Deleted { index, name } if *index == va.index && name == "va")
        })
        .await;
    });
}

#[test]
fn link_monitor_resyncs_after_an_overrun() {
    let ns = Netns::new();
    ns.veth("va", "vb");
    let ns_name = ns.name.clone();
    ns.run(move || async move {
        // A one-slot channel and the smallest socket buffer; nobody reads while the links churn,
        // so the kernel must drop notifications.
        let mut rx = link_monitor_with(1, 0).unwrap();
        let script: String = (0..300)
            .map(|i| format!("link set va mtu {}\n", 1300 + i % 100))
            .collect();
        ip_batch(&ns_name, &script);
        next_event(&mut rx, "Resync", |e| matches!(e, LinkMonitorEvent::Resync)).await;
    });
}

// ---------------------------------------------------------------------------------------------
// (e) the virtual-MAC macvlan

#[test]
fn macvlan_is_created_reused_replaced_and_deleted() {
    let ns = Netns::new();
    ns.veth("va", "vb");
    ns.run(|| async {
        let nl = Netlink::new().unwrap();
        let va = nl.link_by_name("va").await.unwrap().index;
        let mac = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x07];

        let index = nl.ensure_macvlan(va, "vrrp4.7", mac).await.unwrap();
        let link = nl.link_by_index(index).await.unwrap();
        assert_eq!(link.name, "vrrp4.7");
        assert_eq!(link.mac, Some(mac));
        // Created down: the daemon brings a vmac up only while its group is MASTER.
        assert!(!link.up, "{link:?}");
        assert_eq!(get_sysctl("net/ipv6/conf/vrrp4.7/accept_dad").unwrap(), "0");
        assert_eq!(get_sysctl("net/ipv4/conf/vrrp4.7/arp_ignore").unwrap(), "1");
        assert_eq!(
            get_sysctl("net/ipv6/conf/vrrp4.7/addr_gen_mode").unwrap(),
            "1"
        );
        // Up, it gets no link-local from the virtual MAC (RFC 5798 §7.4): the default mode
        // would have given fe80::200:5eff:fe00:107 at once (no DAD).
        nl.set_link_state(index, true).await.unwrap();
        assert!(nl.link_by_index(index).await.unwrap().up);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(nl.link_local_ipv6(index, &[]).await.unwrap(), None);

        // Twice: the same link.
        assert_eq!(nl.ensure_macvlan(va, "vrrp4.7", mac).await.unwrap(), index);

        // A stale one with another MAC is replaced.
        let other = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x08];
        let replaced = nl.ensure_macvlan(va, "vrrp4.7", other).await.unwrap();
        assert_eq!(nl.link_by_index(replaced).await.unwrap().mac, Some(other));
        assert_ne!(replaced, index, "a new link");
        assert!(matches!(
            nl.link_by_index(index).await,
            Err(NetlinkError::LinkNotFound(_))
        ));

        // A link of another kind with that name is left alone.
        let e = nl
            .ensure_macvlan(va, "vb", mac)
            .await
            .expect_err("vb is a veth");
        assert!(matches!(e, NetlinkError::Macvlan { .. }), "{e}");
        assert!(nl.link_by_name("vb").await.is_ok());

        nl.delete_link(replaced).await.unwrap();
        nl.delete_link(replaced)
            .await
            .expect("deleting an absent link is Ok");
        assert!(matches!(
            nl.link_by_name("vrrp4.7").await,
            Err(NetlinkError::LinkNotFound(_))
        ));
    });
}
