//! BGP in the lab: a provider namespace (`PREFIX-prov`) on the WAN bridge running BIRD 2 as
//! AS 64515 with its session address 169.254.169.254 on `lo`, and a BGP speaker on each router
//! (BIRD 2 or FRR's bgpd + zebra) that announces the floating service addresses from `lo` with
//! the prepend vrrpd sets. Sessions are eBGP multihop 2 with TCP-MD5, as in the source design.
//!
//! Every daemon gets its own directory (config, control socket, log) under the lab's directory;
//! nothing under /run or /etc is touched. `lab.sh down` stops them with the namespaces.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::Lab;

pub const PROVIDER_AS: u32 = 64515;
pub const LOCAL_AS: u32 = 4_288_000_595;
pub const NEIGHBOR: &str = "169.254.169.254";
/// The provider's address on the WAN segment (the routers' route to [`NEIGHBOR`]).
pub const PROVIDER_WAN4: &str = "10.76.4.20";
pub const PROVIDER_WAN6: &str = "2001:db8:5:34cd::20";
pub const MD5_PASSWORD: &str = "vrrpd-lab-md5";
/// The floating service addresses both routers announce from `lo`.
pub const FLOAT4: &str = "198.51.100.1";
pub const FLOAT6: &str = "2001:db8:ffff::1";

/// The recommended depths for the pair (README "BGP alignment"): `(master, backup)`.
pub fn prepends(router: &str) -> (u8, u8) {
    if router == "a" { (0, 3) } else { (1, 2) }
}

pub fn router_wan4(router: &str) -> &'static str {
    if router == "a" {
        "10.76.4.2"
    } else {
        "10.76.4.3"
    }
}

pub fn router_wan6(router: &str) -> &'static str {
    if router == "a" {
        "2001:db8:5:34cd::2"
    } else {
        "2001:db8:5:34cd::3"
    }
}

/// Which BGP daemon the routers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaker {
    Bird,
    Frr,
}

/// The directory of one BGP daemon, readable by FRR's unprivileged user.
pub fn daemon_dir(lab: &Lab, name: &str) -> PathBuf {
    // The lab directory is private to root; FRR drops to the `frr` user and must traverse it.
    let _ = fs::set_permissions(lab.dir(), fs::Permissions::from_mode(0o755));
    let dir = lab.dir().join(name);
    fs::create_dir_all(&dir).expect("creating a BGP daemon directory");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawning a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// The provider: namespace `PREFIX-prov` on `br-wan`, BIRD with one session per router.
pub struct Provider {
    pub socket: PathBuf,
    pub dir: PathBuf,
}

impl Provider {
    pub fn up(lab: &Lab) -> Provider {
        let ns = lab.ns("prov");
        let br = lab.ns("br");
        ip(&["netns", "add", &ns]);
        for s in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            run(Command::new("ip").args(["netns", "exec", &ns, "sysctl", "-qw", s]));
        }
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", "prov-wan",
            "netns", &br,
        ]);
        ip(&[
            "-n", &br, "link", "set", "prov-wan", "master", "br-wan", "up",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{PROVIDER_WAN4}/24"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{PROVIDER_WAN6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{NEIGHBOR}/32"),
            "dev",
            "lo",
        ]);

        let dir = daemon_dir(lab, "bird-provider");
        let socket = dir.join("bird.ctl");
        let mut conf = format!(
            r#"router id {NEIGHBOR};
log "{log}" all;
protocol device {{}}
# The routers' next hops are on the WAN: resolve them through its direct routes.
protocol direct {{ ipv4; ipv6; interface "eth0"; }}
template bgp edge {{
  local {NEIGHBOR} as {PROVIDER_AS};
  multihop 2;
  password "{MD5_PASSWORD}";
  hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 3;
  ipv4 {{ import all; export none; }};
  ipv6 {{ import all; export none; }};
}}
"#,
            log = dir.join("bird.log").display()
        );
        for r in ["a", "b"] {
            conf.push_str(&format!(
                "protocol bgp r_{r} from edge {{ neighbor {} as {LOCAL_AS}; }}\n",
                router_wan4(r)
            ));
        }
        start_bird(lab, "prov", &dir, &conf);
        Provider { socket, dir }
    }

    /// `birdc show route for ADDR`: the router (`"a"`, `"b"`) of the best path, if any.
    pub fn best(&self, addr: &str) -> Option<String> {
        let out = birdc(&self.socket, &["show", "route", "for", addr]);
        best_of(&out)
    }

    /// The best path for both floating addresses, when they agree.
    pub fn best_both(&self) -> Option<String> {
        let v4 = self.best(FLOAT4)?;
        (self.best(FLOAT6)? == v4).then_some(v4)
    }

    /// The AS path of router `r`'s route for `addr` (e.g. `4288000595 4288000595`).
    pub fn as_path(&self, addr: &str, r: &str) -> Option<String> {
        let out = birdc(&self.socket, &["show", "route", "for", addr, "all"]);
        let mut proto = None;
        for line in out.lines() {
            if let Some(p) = proto_of(line) {
                proto = Some(p);
            }
            if proto.as_deref() == Some(&format!("r_{r}"))
                && let Some(path) = line.trim().strip_prefix("BGP.as_path:")
            {
                return Some(path.trim().to_owned());
            }
        }
        None
    }

    pub fn sessions_up(&self) -> bool {
        let out = birdc(&self.socket, &["show", "protocols"]);
        ["r_a", "r_b"].iter().all(|p| {
            out.lines()
                .any(|l| l.starts_with(p) && l.contains("Established"))
        })
    }
}

/// The protocol name in a `show route` line that starts a route (`... [r_a 12:00:00.000] ...`).
fn proto_of(line: &str) -> Option<String> {
    let open = line.find(" [")?;
    let rest = &line[open + 2..];
    let name = rest.split_whitespace().next()?;
    (line.contains("unicast") || line.contains("blackhole")).then(|| name.to_owned())
}

/// The router whose route is marked best (`*`) in `show route` output.
pub fn best_of(out: &str) -> Option<String> {
    out.lines()
        .filter(|l| l.contains(" * "))
        .find_map(proto_of)
        .and_then(|p| p.strip_prefix("r_").map(str::to_owned))
}

pub fn birdc(socket: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .expect("running birdc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts BIRD in `node`'s namespace with `conf` in `dir`; waits for its socket.
pub fn start_bird(lab: &Lab, node: &str, dir: &std::path::Path, conf: &str) {
    let conf_path = dir.join("bird.conf");
    fs::write(&conf_path, conf).expect("writing bird.conf");
    let socket = dir.join("bird.ctl");
    let out = lab.exec(
        node,
        &[
            "bird",
            "-c",
            &conf_path.to_string_lossy(),
            "-s",
            &socket.to_string_lossy(),
            "-P",
            &dir.join("bird.pid").to_string_lossy(),
        ],
    );
    assert!(
        out.status.success(),
        "bird in {node} did not start: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    super::wait_until(Duration::from_secs(5), || socket.exists()).expect("BIRD's socket");
}

/// Puts the floating addresses on the router's `lo` and a route to the provider's session
/// address through the WAN.
pub fn prepare_router(lab: &Lab, r: &str) {
    let ns = lab.ns(r);
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{FLOAT4}/32"),
        "dev",
        "lo",
    ]);
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{FLOAT6}/128"),
        "dev",
        "lo",
    ]);
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        &format!("{NEIGHBOR}/32"),
        "via",
        PROVIDER_WAN4,
        "dev",
        "eth2",
    ]);
}

/// The router's BGP speaker and the `[bgp]` section that makes vrrpd drive it.
pub struct RouterBgp {
    pub speaker: Speaker,
    pub dir: PathBuf,
    /// For BIRD: its control socket; for FRR: the vty socket directory.
    pub socket: PathBuf,
    pub include_file: PathBuf,
}

impl RouterBgp {
    /// The `[bgp]` TOML for vrrpd on this router.
    pub fn vrrpd_section(&self, r: &str) -> String {
        let (m, b) = prepends(r);
        let mut s = format!(
            "[bgp]\nsync-group = \"MAIN\"\nlocal-as = {LOCAL_AS}\nprepend-master = {m}\nprepend-backup = {b}\n"
        );
        match self.speaker {
            Speaker::Bird => s.push_str(&format!(
                "driver = \"bird\"\nbird.include-file = \"{}\"\nbird.socket = \"{}\"\n",
                self.include_file.display(),
                self.socket.display()
            )),
            Speaker::Frr => s.push_str(&format!(
                "driver = \"frr\"\nfrr.route-map = \"VRRPD-PREPEND\"\nfrr.sequence = 10\nfrr.vtysh = [\"/usr/bin/vtysh\", \"--vty_socket\", \"{}\"]\n",
                self.socket.display()
            )),
        }
        s
    }

    /// vtysh on this router's FRR.
    pub fn vtysh(&self, commands: &[&str]) -> String {
        let mut cmd = Command::new("vtysh");
        cmd.arg("--vty_socket").arg(&self.socket);
        for c in commands {
            cmd.args(["-c", c]);
        }
        String::from_utf8_lossy(&cmd.output().expect("vtysh").stdout).into_owned()
    }
}

/// Starts the router's BGP speaker announcing the floating addresses with prepend `initial`.
pub fn start_speaker(lab: &Lab, r: &str, speaker: Speaker, initial: u8) -> RouterBgp {
    prepare_router(lab, r);
    match speaker {
        Speaker::Bird => start_bird_router(lab, r, initial),
        Speaker::Frr => start_frr_router(lab, r, initial),
    }
}

/// The user's BIRD config of the README, with the lab's paths and addresses.
pub fn bird_router_conf(r: &str, include_file: &std::path::Path, log: &std::path::Path) -> String {
    format!(
        r#"router id {wan4};
log "{log}" all;
# vrrpd writes `define VRRPD_PREPEND = N;` here on every VRRP transition.
include "{include}";

protocol device {{}}
# The floating service addresses live on lo.
protocol direct floating {{
  interface "lo";
  ipv4 {{ import where net = {FLOAT4}/32; }};
  ipv6 {{ import where net = {FLOAT6}/128; }};
}}

# Prepends our AS n times (the eBGP export adds it once more).
function vrrpd_prepend(int n) {{
  if n > 0 then {{ bgp_path.prepend({LOCAL_AS}); vrrpd_prepend(n - 1); }}
}}

filter provider_out {{
  if proto != "floating" then reject;
  vrrpd_prepend(VRRPD_PREPEND);
  accept;
}}

protocol bgp provider {{
  local {wan4} as {LOCAL_AS};
  neighbor {NEIGHBOR} as {PROVIDER_AS};
  multihop 2;
  password "{MD5_PASSWORD}";
  # A lost router's routes must go with its session, not linger as graceful-restart stale.
  graceful restart off;
  hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 3;
  ipv4 {{ import none; export filter provider_out; }};
  ipv6 {{ import none; export filter provider_out; next hop address {wan6}; }};
}}
"#,
        wan4 = router_wan4(r),
        wan6 = router_wan6(r),
        log = log.display(),
        include = include_file.display(),
    )
}

fn start_bird_router(lab: &Lab, r: &str, initial: u8) -> RouterBgp {
    let dir = daemon_dir(lab, &format!("bird-{r}"));
    let include_file = dir.join("vrrpd-prepend.conf");
    fs::write(
        &include_file,
        format!("define VRRPD_PREPEND = {initial};\n"),
    )
    .unwrap();
    let conf = bird_router_conf(r, &include_file, &dir.join("bird.log"));
    start_bird(lab, r, &dir, &conf);
    RouterBgp {
        speaker: Speaker::Bird,
        socket: dir.join("bird.ctl"),
        dir,
        include_file,
    }
}

/// The user's FRR config of the README, with the lab's addresses.
pub fn frr_router_conf(r: &str, initial: u8, log: &std::path::Path) -> String {
    let prepend = if initial == 0 {
        String::new()
    } else {
        format!(
            " set as-path prepend {}\n",
            vec![LOCAL_AS.to_string(); usize::from(initial)].join(" ")
        )
    };
    format!(
        r#"frr defaults traditional
hostname edge-{r}
log file {log}
!
! vrrpd sets `set as-path prepend` on entry 10; the other set clauses are the user's.
route-map VRRPD-PREPEND permit 10
 set ipv6 next-hop global {wan6}
{prepend}exit
!
router bgp {LOCAL_AS}
 bgp router-id {wan4}
 ! A lost router's routes must go with its session, not linger as graceful-restart stale.
 bgp graceful-restart-disable
 no bgp ebgp-requires-policy
 timers bgp 1 3
 neighbor {NEIGHBOR} remote-as {PROVIDER_AS}
 neighbor {NEIGHBOR} ebgp-multihop 2
 neighbor {NEIGHBOR} update-source {wan4}
 neighbor {NEIGHBOR} password {MD5_PASSWORD}
 neighbor {NEIGHBOR} timers connect 1
 address-family ipv4 unicast
  network {FLOAT4}/32
  neighbor {NEIGHBOR} route-map VRRPD-PREPEND out
 exit-address-family
 address-family ipv6 unicast
  network {FLOAT6}/128
  neighbor {NEIGHBOR} activate
  neighbor {NEIGHBOR} route-map VRRPD-PREPEND out
 exit-address-family
exit
"#,
        wan4 = router_wan4(r),
        wan6 = router_wan6(r),
        log = log.display(),
    )
}

fn start_frr_router(lab: &Lab, r: &str, initial: u8) -> RouterBgp {
    let dir = daemon_dir(lab, &format!("frr-{r}"));
    let conf = dir.join("frr.conf");
    fs::write(&conf, frr_router_conf(r, initial, &dir.join("frr.log"))).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    let d = dir.to_string_lossy().into_owned();
    for daemon in ["zebra", "bgpd"] {
        let out = lab.exec(
            r,
            &[
                &format!("/usr/lib/frr/{daemon}"),
                "-d",
                "--vty_socket",
                &d,
                "-i",
                &format!("{d}/{daemon}.pid"),
                "-f",
                &conf.to_string_lossy(),
                "-z",
                &format!("{d}/zserv.api"),
            ],
        );
        assert!(
            out.status.success(),
            "{daemon} in {r} did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let vty = dir.join(format!("{daemon}.vty"));
        super::wait_until(Duration::from_secs(10), || vty.exists()).expect("FRR's vty socket");
    }
    RouterBgp {
        speaker: Speaker::Frr,
        socket: dir.clone(),
        dir,
        include_file: PathBuf::new(),
    }
}

/// Polls `f` every 10 ms until it returns `Some`, up to `timeout`; the value and when.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Instant)> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some((v, Instant::now()));
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(super::POLL);
    }
}

/// keepalived (VRRP only) on a router with the lab's four groups in sync group MAIN and a
/// notify script doing what vrrpd's BIRD driver does: the baseline of the BGP benchmark.
pub struct Keepalived {
    pub pid: u32,
    child: std::sync::Mutex<std::process::Child>,
    pub dir: PathBuf,
}

impl Keepalived {
    pub fn start(lab: &Lab, r: &str, priority: u8, speaker: &RouterBgp) -> Keepalived {
        assert_eq!(speaker.speaker, Speaker::Bird, "the baseline drives BIRD");
        let dir = daemon_dir(lab, &format!("keepalived-{r}"));
        let (m, b) = prepends(r);
        let notify = dir.join("notify.sh");
        let inc = speaker.include_file.display();
        fs::write(
            &notify,
            format!(
                "#!/bin/sh\n# keepalived notify: TYPE NAME STATE PRIORITY\n\
                 case \"$3\" in MASTER) n={m} ;; *) n={b} ;; esac\n\
                 printf 'define VRRPD_PREPEND = %s;\\n' \"$n\" > {inc}.tmp && mv {inc}.tmp {inc} && \
                 birdc -s {sock} configure >/dev/null\n",
                sock = speaker.socket.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&notify, fs::Permissions::from_mode(0o755)).unwrap();
        let mut conf = format!(
            "global_defs {{\n  router_id keepalived-{r}\n  vrrp_version 3\n  script_user root\n}}\n"
        );
        let mut names = Vec::new();
        for g in super::STD_GROUPS {
            let name = g.name.replace('-', "_");
            conf.push_str(&format!(
                "vrrp_instance {name} {{\n  interface {}\n  virtual_router_id {}\n  priority {priority}\n  advert_int 0.1\n  virtual_ipaddress {{\n    {}\n  }}\n}}\n",
                g.interface, g.vrid, g.vip
            ));
            names.push(name);
        }
        conf.push_str(&format!(
            "vrrp_sync_group MAIN {{\n  group {{\n    {}\n  }}\n  notify {}\n}}\n",
            names.join("\n    "),
            notify.display()
        ));
        let conf_path = dir.join("keepalived.conf");
        fs::write(&conf_path, conf).unwrap();
        let log = fs::File::create(dir.join("keepalived.log")).unwrap();
        let d = |f: &str| dir.join(f);
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(r), "keepalived"])
            .args(["--dont-fork", "--vrrp", "--log-console", "--no-syslog"])
            .arg("--use-file")
            .arg(&conf_path)
            .arg("--pid")
            .arg(d("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(d("vrrp.pid"))
            .arg("--checkers_pid")
            .arg(d("checkers.pid"))
            .arg("--bfd_pid")
            .arg(d("bfd.pid"))
            .env("TMPDIR", &dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting keepalived");
        Keepalived {
            pid: child.id(),
            child: std::sync::Mutex::new(child),
            dir,
        }
    }

    /// SIGTERM, only while the child is not reaped: its pid cannot belong to anyone else then.
    pub fn sigterm(&self) {
        let mut child = self.child.lock().unwrap();
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
        }
    }

    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.lock().unwrap().try_wait() {
                return true;
            }
            std::thread::sleep(super::POLL);
        }
        false
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.sigterm();
        if !self.wait_exit(Duration::from_secs(3)) {
            // std's kill does nothing once the child is reaped.
            let _ = self.child.lock().unwrap().kill();
        }
        let _ = self.child.lock().unwrap().wait();
    }
}
