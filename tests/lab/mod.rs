//! The network-namespace lab for integration tests (`mod lab;` from a file in `tests/`).
//!
//! [`Lab::up`] builds the two-router topology of `netns-lab/lab.sh` under a prefix unique to this
//! process and test, and removing it is tied to the value: dropping the [`Lab`] (also while the
//! test panics) kills every daemon it started and runs `lab.sh down`. The daemons' logs go to
//! stderr on drop; the test harness shows them only for a failing test (or with `--nocapture`).
//!
//! Lab tests need root. Without it [`Lab::up`] fails with a message saying so: a lab test never
//! passes without having run.
//!
//! Environment:
//! - `VRRPD_LAB_BIN`: run this vrrpd binary instead of the one cargo built for the tests.
//! - `VRRPD_LAB_RUST_LOG`: `RUST_LOG` for the daemons (default `vrrpd=debug,info`).
//! - `VRRPD_LAB_KEEP=1`: keep the directory with configs and logs (also kept when a test panics).

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod interop;
pub mod peers;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub mod conntrack;
use serde_json::Value;

pub mod netns;

/// The routers of the lab.
pub const ROUTERS: [&str; 2] = ["a", "b"];
/// Every node (namespace suffix) of the lab.
pub const NODES: [&str; 5] = ["br", "a", "b", "client", "server"];

/// LAN: VIPs, routers a and b, client (see netns-lab/README.md).
pub const LAN_VIP4: &str = "10.76.2.1";
pub const LAN_VIP6: &str = "2001:db8:5:416::1";
pub const WAN_VIP4: &str = "10.76.4.1";
pub const WAN_VIP6: &str = "2001:db8:5:34cd::1";
pub const CLIENT4: &str = "10.76.2.10";
pub const CLIENT6: &str = "2001:db8:5:416::10";
pub const SERVER4: &str = "10.76.4.10";
pub const SERVER6: &str = "2001:db8:5:34cd::10";

/// How often [`wait_until`] polls.
pub const POLL: Duration = Duration::from_millis(10);

/// `netns-lab/lab.sh` of this checkout.
pub fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("netns-lab/lab.sh")
}

/// The vrrpd binary under test: `VRRPD_LAB_BIN`, else the one cargo built for this test run.
///
/// `CARGO_BIN_EXE_vrrpd` is set while cargo compiles the package's integration tests, and this
/// module is compiled as part of each of them (`mod lab;`), so it resolves here.
pub fn vrrpd_bin() -> PathBuf {
    match std::env::var_os("VRRPD_LAB_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_vrrpd")),
    }
}

/// Fails unless the effective user is root, saying why the lab needs it.
pub fn require_root() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| anyhow!("no Uid line in /proc/self/status"))?;
    if euid != "0" {
        bail!(
            "the lab tests need root (network namespaces, veth, bridges, raw sockets); \
             effective uid is {euid}. Run them as root, e.g. `sudo -E cargo test --release`"
        );
    }
    Ok(())
}

/// Polls `cond` every 10 ms until it holds; returns how long that took, or an error after
/// `timeout`. `cond` is evaluated at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(POLL.min(timeout - elapsed));
    }
}

/// A lab prefix unique among running processes and within this one: `vl<hint><pid>p<n>`, the
/// hint being the first six ASCII letters of `name_hint`, lowercased.
pub fn unique_prefix(name_hint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let hint: String = name_hint
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .take(6)
        .collect();
    format!(
        "vl{hint}{}p{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The namespaces whose name starts with `<prefix>-`.
pub fn namespaces_of(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.strip_prefix(prefix).is_some_and(|r| r.starts_with('-')))
        .map(str::to_string)
        .collect()
}

/// A running lab: namespaces `<prefix>-br`, `-a`, `-b`, `-client`, `-server`.
pub struct Lab {
    prefix: String,
    dir: Option<tempfile::TempDir>,
    daemons: Mutex<Vec<Daemon>>,
    starts: AtomicU32,
    torn_down: bool,
}

impl Lab {
    /// Builds a lab. `name_hint` (its first six ASCII letters) goes into the prefix, which is
    /// `vl<hint><pid>p<n>`: unique among running processes and within this one. Labs left by
    /// test processes that no longer exist are removed first.
    pub fn up(name_hint: &str) -> Result<Lab> {
        require_root()?;
        let prefix = unique_prefix(name_hint);
        remove_stale_labs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("vrrpd-lab-{prefix}-"))
            .tempdir()
            .context("creating the lab's directory")?;
        let out = Command::new(lab_script())
            .args(["up", &prefix])
            .output()
            .with_context(|| format!("running {}", lab_script().display()))?;
        if !out.status.success() {
            bail!(
                "lab.sh up {prefix} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Lab {
            prefix,
            dir: Some(dir),
            daemons: Mutex::new(Vec::new()),
            starts: AtomicU32::new(0),
            torn_down: false,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace of `node` (`a`, `b`, `client`, `server`, `br`).
    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// The directory holding this lab's configs, logs and control sockets.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lab directory").path()
    }

    /// The control socket vrrpd uses on `router` when started by [`Lab::start_vrrpd`].
    pub fn socket_path(&self, router: &str) -> PathBuf {
        self.dir().join(format!("{router}.sock"))
    }

    /// Runs `args` in `node`'s namespace and returns what it did (never fails on a non-zero exit).
    pub fn exec<S: AsRef<OsStr>>(&self, node: &str, args: &[S]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawning `ip netns exec {}`: {e}", self.ns(node)))
    }

    /// Like [`Lab::exec`], but panics unless the command succeeds; returns its stdout.
    pub fn exec_ok<S: AsRef<OsStr>>(&self, node: &str, args: &[S]) -> String {
        let out = self.exec(node, args);
        if !out.status.success() {
            panic!(
                "in {}: `{}` failed ({}): {}{}",
                self.ns(node),
                join(args),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn lab_sh(&self, args: &[&str]) {
        let out = Command::new(lab_script())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running lab.sh: {e}"));
        if !out.status.success() {
            panic!(
                "lab.sh {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Detaches `router` from `segment` (`lan`, `wan`, `sync` or `all`) at the bridge. The
    /// router's interface stays up with carrier: it cannot tell it was cut off.
    pub fn cut(&self, router: &str, segment: &str) {
        self.lab_sh(&["cut", &self.prefix, router, segment]);
    }

    /// Re-attaches what [`Lab::cut`] detached.
    pub fn restore(&self, router: &str, segment: &str) {
        self.lab_sh(&["restore", &self.prefix, router, segment]);
    }

    /// True when `count` echo replies from `addr` arrive at `from` within `timeout` (rounded up
    /// to whole seconds, at least 1; requests go out every 100 ms until then).
    pub fn ping(&self, from: &str, addr: &str, count: u32, timeout: Duration) -> bool {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let out = self.exec(
            from,
            &[
                "ping",
                "-n",
                "-q",
                "-i",
                "0.1",
                "-c",
                &count.to_string(),
                "-w",
                &secs.max(1).to_string(),
                addr,
            ],
        );
        out.status.success()
    }

    /// The addresses on `ifname` in `node`, as `address/prefixlen`, in the kernel's order.
    pub fn addresses(&self, node: &str, ifname: &str) -> Vec<String> {
        let json = self.exec_ok(node, &["ip", "-j", "addr", "show", "dev", ifname]);
        let v: Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("parsing `ip -j addr show dev {ifname}`: {e}: {json}"));
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|link| link["addr_info"].as_array().into_iter().flatten())
            .filter_map(|a| {
                Some(format!(
                    "{}/{}",
                    a["local"].as_str()?,
                    a["prefixlen"].as_u64()?
                ))
            })
            .collect()
    }

    /// `ip -j -d link show dev IFNAME` in `node`: the link's JSON object.
    pub fn link(&self, node: &str, ifname: &str) -> Value {
        let json = self.exec_ok(node, &["ip", "-j", "-d", "link", "show", "dev", ifname]);
        let v: Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("parsing `ip -j link show dev {ifname}`: {e}: {json}"));
        v.get(0).cloned().unwrap_or(Value::Null)
    }

    /// True when `ifname` in `node` is administratively up, has carrier and operstate UP.
    pub fn link_up_with_carrier(&self, node: &str, ifname: &str) -> bool {
        let link = self.link(node, ifname);
        let flags: Vec<&str> = link["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        flags.contains(&"UP") && flags.contains(&"LOWER_UP") && link["operstate"] == "UP"
    }

    /// Loads an nftables ruleset (`nft -f -`) in `node`; panics with nft's message on failure.
    pub fn nft(&self, node: &str, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning nft in {}: {e}", self.ns(node)));
        child
            .stdin
            .take()
            .expect("nft stdin")
            .write_all(ruleset.as_bytes())
            .expect("writing the ruleset to nft");
        let out = child.wait_with_output().expect("waiting for nft");
        if !out.status.success() {
            panic!(
                "nft -f in {} failed ({}): {}\nruleset:\n{ruleset}",
                self.ns(node),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Renders `cfg` with this lab's control socket for its router.
    pub fn router_config(&self, cfg: &RouterConfig) -> String {
        cfg.render(&self.socket_path(&cfg.router))
    }

    /// Starts `vrrpd run -c FILE` in `router`'s namespace with `config_text` (in which
    /// `@SOCKET@` is replaced by [`Lab::socket_path`]). stdout and stderr go to a log file in
    /// [`Lab::dir`], one per start. Does not wait for the daemon to be ready (see
    /// [`Lab::wait_ready`]).
    pub fn start_vrrpd(&self, router: &str, config_text: &str) -> Daemon {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let socket = self.socket_path(router);
        let config = self.dir().join(format!("{router}-{n}.toml"));
        let log = self.dir().join(format!("{router}-{n}.log"));
        let text = config_text.replace("@SOCKET@", &socket.to_string_lossy());
        fs::write(&config, text).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log_file =
            File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let log_file2 = log_file.try_clone().expect("cloning the log file handle");
        let rust_log =
            std::env::var("VRRPD_LAB_RUST_LOG").unwrap_or_else(|_| "vrrpd=debug,info".to_string());
        let bin = vrrpd_bin();
        // `ip netns exec` execs the command: the child's pid is vrrpd's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(router)])
            .arg(&bin)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file2)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} in {}: {e}", bin.display(), self.ns(router)));
        let daemon = Daemon(Arc::new(DaemonInner {
            router: router.to_string(),
            pid: child.id(),
            child: Mutex::new(child),
            log,
            config,
            socket,
        }));
        lock(&self.daemons).push(daemon.clone());
        daemon
    }

    /// [`Lab::start_vrrpd`] with [`Lab::router_config`].
    pub fn start_router(&self, cfg: &RouterConfig) -> Daemon {
        self.start_vrrpd(&cfg.router, &self.router_config(cfg))
    }

    /// `vrrpd show groups --json -s SOCKET`, run in `router`'s namespace.
    pub fn try_show_groups(&self, router: &str) -> Result<Value> {
        let socket = self.socket_path(router);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(router)])
            .arg(vrrpd_bin())
            .args(["show", "groups", "--json", "-s"])
            .arg(&socket)
            .stdin(Stdio::null())
            .output()
            .context("spawning vrrpd show groups")?;
        if !out.status.success() {
            bail!(
                "vrrpd show groups on {router} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "parsing `vrrpd show groups --json` on {router}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// [`Lab::try_show_groups`], panicking on failure.
    pub fn show_groups(&self, router: &str) -> Value {
        self.try_show_groups(router)
            .unwrap_or_else(|e| panic!("show groups on {router}: {e:#}"))
    }

    /// Group name -> state (`"MASTER"`, ...) from `show groups` on `router`.
    pub fn group_states(&self, router: &str) -> Result<BTreeMap<String, String>> {
        let groups = self.try_show_groups(router)?;
        let list = groups
            .as_array()
            .ok_or_else(|| anyhow!("show groups on {router} is not an array: {groups}"))?;
        list.iter()
            .map(|g| {
                let name = g["name"]
                    .as_str()
                    .ok_or_else(|| anyhow!("group without name: {g}"))?;
                let state = g["state"]
                    .as_str()
                    .ok_or_else(|| anyhow!("group without state: {g}"))?;
                Ok((name.to_string(), state.to_string()))
            })
            .collect()
    }

    /// True when `router`'s daemon answers and has at least one group, all in `state`.
    pub fn all_in_state(&self, router: &str, state: &str) -> bool {
        self.group_states(router)
            .is_ok_and(|s| !s.is_empty() && s.values().all(|v| v == state))
    }

    /// Waits until `router`'s daemon answers `show groups`.
    pub fn wait_ready(&self, router: &str, timeout: Duration) -> Result<Duration> {
        wait_until(timeout, || self.try_show_groups(router).is_ok()).map_err(|e| {
            let last = self.try_show_groups(router).err().map(|e| format!("{e:#}"));
            anyhow!("vrrpd on {router} not answering: {e}; last error: {last:?}")
        })
    }

    /// See [`wait_until`].
    pub fn wait_until(&self, timeout: Duration, cond: impl FnMut() -> bool) -> Result<Duration> {
        wait_until(timeout, cond)
    }

    /// Every daemon started so far.
    pub fn daemons(&self) -> Vec<Daemon> {
        lock(&self.daemons).clone()
    }

    /// Tears the lab down now and reports a failure to do so (dropping does the same, silently).
    pub fn down(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let daemons = std::mem::take(&mut *lock(&self.daemons));
        for d in &daemons {
            d.sigkill();
            if d.wait_exit(Duration::from_secs(5)).is_none() {
                eprintln!(
                    "lab {}: vrrpd pid {} did not exit after SIGKILL",
                    self.prefix,
                    d.pid()
                );
            }
        }
        // Captured by the test harness: shown only when the test fails (or with --nocapture).
        for d in &daemons {
            eprintln!(
                "===== vrrpd on {} (pid {}, {}), last {LOG_LINES} lines of {} =====\n{}",
                d.router(),
                d.pid(),
                d.config_path().display(),
                d.log_path().display(),
                tail(&d.log(), LOG_LINES)
            );
        }
        let out = Command::new(lab_script())
            .args(["down", &self.prefix])
            .output();
        let keep = std::thread::panicking() || std::env::var_os("VRRPD_LAB_KEEP").is_some();
        if let Some(dir) = self.dir.take()
            && keep
        {
            eprintln!("lab {}: kept {}", self.prefix, dir.keep().display());
        }
        let out = out.context("running lab.sh down")?;
        if !out.status.success() {
            bail!(
                "lab.sh down {} failed ({}): {}",
                self.prefix,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

const LOG_LINES: usize = 300;

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("lab {}: teardown: {e:#}", self.prefix);
        }
    }
}

/// A vrrpd process started by [`Lab::start_vrrpd`]. Clones share the process. Dropping it does
/// not stop the daemon; dropping the [`Lab`] does.
#[derive(Clone)]
pub struct Daemon(Arc<DaemonInner>);

struct DaemonInner {
    router: String,
    pid: u32,
    child: Mutex<Child>,
    log: PathBuf,
    config: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    pub fn router(&self) -> &str {
        &self.0.router
    }

    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.0.log
    }

    pub fn config_path(&self) -> &Path {
        &self.0.config
    }

    pub fn socket(&self) -> &Path {
        &self.0.socket
    }

    /// Sends `sig` (a name for `kill -s`) unless the process has already been reaped (so never
    /// to a reused pid).
    pub fn signal(&self, sig: &str) {
        let mut child = lock(&self.0.child);
        if matches!(child.try_wait(), Ok(None)) {
            // Not reaped while we hold the lock, so the pid is still this process.
            let status = Command::new("kill")
                .args(["-s", sig, &self.0.pid.to_string()])
                .status()
                .expect("running kill");
            assert!(status.success(), "kill -s {sig} {} failed", self.0.pid);
        }
    }

    /// Asks for a clean shutdown (priority-0 advert, VIPs removed, hooks run).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Kills the daemon at once: it cannot clean up.
    pub fn sigkill(&self) {
        let _ = lock(&self.0.child).kill(); // a no-op once the child has been reaped
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = lock(&self.0.child).try_wait() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(lock(&self.0.child).try_wait(), Ok(None))
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.0.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.0.log.display()))
    }
}

/// One of the lab's four standard VRRP groups (the demo config of netns-lab/configs/).
#[derive(Clone, Copy, Debug)]
pub struct StdGroup {
    pub name: &'static str,
    pub interface: &'static str,
    pub vrid: u8,
    pub ipv6: bool,
    pub vip: &'static str,
    /// The routers' own addresses on the segment: `[a, b]`.
    pub routers: [&'static str; 2],
}

pub const STD_GROUPS: [StdGroup; 4] = [
    StdGroup {
        name: "lan-v4",
        interface: "eth1",
        vrid: 21,
        ipv6: false,
        vip: "10.76.2.1/24",
        routers: ["10.76.2.2", "10.76.2.3"],
    },
    StdGroup {
        name: "lan-v6",
        interface: "eth1",
        vrid: 22,
        ipv6: true,
        vip: "2001:db8:5:416::1/64",
        routers: ["2001:db8:5:416::2", "2001:db8:5:416::3"],
    },
    StdGroup {
        name: "wan-v4",
        interface: "eth2",
        vrid: 41,
        ipv6: false,
        vip: "10.76.4.1/24",
        routers: ["10.76.4.2", "10.76.4.3"],
    },
    StdGroup {
        name: "wan-v6",
        interface: "eth2",
        vrid: 42,
        ipv6: true,
        vip: "2001:db8:5:34cd::1/64",
        routers: ["2001:db8:5:34cd::2", "2001:db8:5:34cd::3"],
    },
];

/// A router config built from parameters; [`RouterConfig::render`] writes the TOML of the spec.
/// Options left at `None` are not written, so the daemon's defaults apply.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// `a` or `b`; the router id is `edge-<router>`.
    pub router: String,
    pub priority: u8,
    pub advertise_interval: Option<Duration>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<Duration>,
    pub accept: Option<bool>,
    /// Unicast adverts: `peer-address` = the other router's address on each group's segment.
    pub unicast: bool,
    pub track_interface: Vec<String>,
    /// Names from [`STD_GROUPS`]; all four by default.
    pub groups: Vec<String>,
    /// The sync group holding all the groups (`MAIN` by default); `None` for independent groups.
    pub sync_group: Option<String>,
    /// Appended verbatim (e.g. `[conntrack-sync]`, `[bgp]`).
    pub extra: String,
}

impl RouterConfig {
    /// The demo config: all four groups in sync group `MAIN`, adverts every 100 ms.
    pub fn new(router: &str, priority: u8) -> RouterConfig {
        assert!(
            ROUTERS.contains(&router),
            "router must be a or b, got {router:?}"
        );
        RouterConfig {
            router: router.to_string(),
            priority,
            advertise_interval: Some(Duration::from_millis(100)),
            preempt: None,
            preempt_delay: None,
            accept: None,
            unicast: false,
            track_interface: Vec::new(),
            groups: STD_GROUPS.iter().map(|g| g.name.to_string()).collect(),
            sync_group: Some("MAIN".to_string()),
            extra: String::new(),
        }
    }

    pub fn interval(mut self, interval: Duration) -> Self {
        self.advertise_interval = Some(interval);
        self
    }

    pub fn preempt(mut self, preempt: bool) -> Self {
        self.preempt = Some(preempt);
        self
    }

    pub fn preempt_delay(mut self, delay: Duration) -> Self {
        self.preempt_delay = Some(delay);
        self
    }

    pub fn accept(mut self, accept: bool) -> Self {
        self.accept = Some(accept);
        self
    }

    pub fn unicast(mut self) -> Self {
        self.unicast = true;
        self
    }

    pub fn track(mut self, interfaces: &[&str]) -> Self {
        self.track_interface = interfaces.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn groups(mut self, names: &[&str]) -> Self {
        for n in names {
            assert!(
                STD_GROUPS.iter().any(|g| g.name == *n),
                "unknown lab group {n:?}"
            );
        }
        self.groups = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn no_sync_group(mut self) -> Self {
        self.sync_group = None;
        self
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }

    /// The TOML text, with `socket` as the control socket.
    pub fn render(&self, socket: &Path) -> String {
        let peer = usize::from(self.router == "a"); // index of the other router
        let mut s = String::new();
        let _ = writeln!(s, "[daemon]");
        let _ = writeln!(
            s,
            "router-id = {}",
            toml_str(&format!("edge-{}", self.router))
        );
        let _ = writeln!(s, "socket = {}", toml_str(&socket.to_string_lossy()));
        for g in STD_GROUPS
            .iter()
            .filter(|g| self.groups.iter().any(|n| n == g.name))
        {
            let _ = writeln!(s, "\n[group.{}]", g.name);
            let _ = writeln!(s, "interface = {}", toml_str(g.interface));
            let _ = writeln!(s, "vrid = {}", g.vrid);
            let _ = writeln!(s, "priority = {}", self.priority);
            let _ = writeln!(s, "address = [{}]", toml_str(g.vip));
            if let Some(d) = self.advertise_interval {
                let _ = writeln!(s, "advertise-interval = {}", toml_duration(d));
            }
            if let Some(p) = self.preempt {
                let _ = writeln!(s, "preempt = {p}");
            }
            if let Some(d) = self.preempt_delay {
                let _ = writeln!(s, "preempt-delay = {}", toml_duration(d));
            }
            if let Some(a) = self.accept {
                let _ = writeln!(s, "accept = {a}");
            }
            if self.unicast {
                let _ = writeln!(s, "peer-address = [{}]", toml_str(g.routers[peer]));
            }
            if !self.track_interface.is_empty() {
                let list: Vec<String> = self.track_interface.iter().map(|t| toml_str(t)).collect();
                let _ = writeln!(s, "track-interface = [{}]", list.join(", "));
            }
        }
        if let Some(sg) = &self.sync_group {
            let members: Vec<String> = STD_GROUPS
                .iter()
                .filter(|g| self.groups.iter().any(|n| n == g.name))
                .map(|g| toml_str(g.name))
                .collect();
            let _ = writeln!(s, "\n[sync-group.{sg}]");
            let _ = writeln!(s, "member = [{}]", members.join(", "));
        }
        if !self.extra.is_empty() {
            let _ = writeln!(s, "\n{}", self.extra.trim_end());
        }
        s
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration as the config writes it, in milliseconds (`"100ms"`).
fn toml_duration(d: Duration) -> String {
    format!("\"{}ms\"", d.as_millis())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn join<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes labs (`vl<letters><pid>p<n>-*`) whose test process no longer exists.
fn remove_stale_labs() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    let mut stale = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((prefix, _node)) = name.split_once('-') else {
            continue;
        };
        let Some(pid) = lab_prefix_pid(prefix) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            stale.insert(prefix.to_string());
        }
    }
    for prefix in stale {
        let _ = Command::new(lab_script())
            .args(["down", &prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The pid in a prefix made by [`Lab::up`]: `vl` + letters + pid digits + `p` + digits.
fn lab_prefix_pid(prefix: &str) -> Option<u32> {
    let rest = prefix.strip_prefix("vl")?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let (pid, n) = rest.split_once('p')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(pid) && digits(n) {
        pid.parse().ok()
    } else {
        None
    }
}

/// The BGP provider and the routers' BGP speakers (BIRD 2, FRR) for the `[bgp]` tests.
pub mod bgp;
