//! Independent VRRP peers for the interop tests: Debian's keepalived and FRR's vrrpd, run in one
//! router's namespace of a [`Lab`] with a generated config, their state read from the peer itself
//! (keepalived's JSON dump, `vtysh show vrrp json`), stopped by PID when dropped.
//!
//! Both peers run the lab's standard groups ([`StdGroup`]) with the same VRIDs and virtual
//! addresses as vrrpd, VRRPv3, at one priority and advertisement interval.
//!
//! - keepalived runs in the foreground (`--dont-fork`), logs to a file of its own (`-l -D -G`),
//!   and has its own pid files and its own `TMPDIR`, so its JSON dump (`keepalived.json`, written
//!   on SIGJSON) does not collide with other tests.
//! - FRR needs zebra and vrrpd; both run with their own pathspace (`-N`, so sockets live in
//!   `/var/run/frr/<name>/`) as FRR's `frr` user. FRR does not create the macvlan interfaces
//!   carrying the virtual MAC (00:00:5e:00:01:VRID for IPv4, 00:00:5e:00:02:VRID for IPv6): they
//!   are made here, in bridge mode, with a random IPv6 link-local (`addrgenmode random`; FRR sends
//!   IPv6 adverts from it) and the virtual address on them; FRR puts them in protodown while
//!   Backup.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::{Lab, StdGroup, lock, tail, wait_until};

/// Lines of a peer's log printed when it is dropped (shown for failing tests).
const LOG_LINES: usize = 80;

/// What the peer runs: the lab groups, all at one priority and advertisement interval.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub groups: Vec<StdGroup>,
    pub priority: u8,
    pub interval: Duration,
}

impl PeerConfig {
    pub fn new(groups: &[StdGroup], priority: u8, interval: Duration) -> PeerConfig {
        PeerConfig {
            groups: groups.to_vec(),
            priority,
            interval,
        }
    }
}

/// One VRRP instance as the peer reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInstance {
    pub vrid: u8,
    pub ipv6: bool,
    /// `INIT`, `BACKUP`, `MASTER` or `FAULT`, as vrrpd names them.
    pub state: String,
    pub adverts_rx: u64,
    pub adverts_tx: u64,
    /// Priority-0 adverts received, where the peer counts them (keepalived does, FRR does not).
    pub priority_zero_rx: Option<u64>,
    /// The source address of its adverts, where the peer reports it (FRR does).
    pub primary_address: Option<String>,
}

/// What the interop scenarios need from a peer.
pub trait Peer {
    /// `keepalived` or `frr`.
    fn kind(&self) -> &'static str;
    /// Every instance of the peer's config, read from the peer.
    fn instances(&self) -> Result<Vec<PeerInstance>>;
    /// Stops the peer the clean way, which should resign with priority 0 where it is master.
    fn stop_gracefully(&self);
    /// Everything the peer logged so far.
    fn log(&self) -> String;
    /// Adverts the peer logged as dropped for a bad checksum.
    fn checksum_drops(&self) -> usize;

    fn instance(&self, group: &StdGroup) -> Result<PeerInstance> {
        self.instances()?
            .into_iter()
            .find(|i| i.vrid == group.vrid && i.ipv6 == group.ipv6)
            .ok_or_else(|| anyhow!("{} has no instance for {}", self.kind(), group.name))
    }

    /// The state of `group`'s instance, `None` when the peer does not answer.
    fn state(&self, group: &StdGroup) -> Option<String> {
        self.instance(group).ok().map(|i| i.state)
    }
}

// ---------------------------------------------------------------------------------------------
// keepalived

/// keepalived (`-P`, VRRP only) in a router's namespace.
pub struct Keepalived {
    ns: String,
    dir: PathBuf,
    pid: u32,
    child: Mutex<Child>,
    log: PathBuf,
    vrrp_pid_file: PathBuf,
}

impl Keepalived {
    /// Starts keepalived in `router`'s namespace with the instances of `cfg` (one per group,
    /// named `vrid<N>_v4` / `vrid<N>_v6`); returns once its VRRP process is up.
    pub fn start(lab: &Lab, router: &str, cfg: &PeerConfig) -> Result<Keepalived> {
        let dir = lab.dir().join(format!("keepalived-{router}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("keepalived.conf");
        fs::write(&conf, keepalived_config(router, cfg))
            .with_context(|| format!("writing {}", conf.display()))?;
        let log = dir.join("keepalived.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let vrrp_pid_file = dir.join("vrrp.pid");
        let ns = lab.ns(router);
        // `ip netns exec` execs keepalived, and --dont-fork keeps it in the foreground: the
        // child's pid is keepalived's parent process, which takes its VRRP process along.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "keepalived"])
            .args([
                "--dont-fork",
                "--vrrp",
                "--log-console",
                "--log-detail",
                "--no-syslog",
            ])
            .arg("--use-file")
            .arg(&conf)
            .arg("--pid")
            .arg(dir.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(&vrrp_pid_file)
            .arg("--checkers_pid")
            .arg(dir.join("checkers.pid"))
            .arg("--bfd_pid")
            .arg(dir.join("bfd.pid"))
            // keepalived writes keepalived.json (SIGJSON) into $TMPDIR, /tmp by default.
            .env("TMPDIR", &dir)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting keepalived in {ns}"))?;
        let k = Keepalived {
            ns,
            dir,
            pid: child.id(),
            child: Mutex::new(child),
            log,
            vrrp_pid_file,
        };
        // Until its handlers are installed, SIGJSON (a real-time signal) would kill it.
        wait_until(Duration::from_secs(10), || {
            k.log().contains("Startup complete")
        })
        .map_err(|_| anyhow!("keepalived in {} did not start: {}", k.ns, k.log()))?;
        Ok(k)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn json_path(&self) -> PathBuf {
        self.dir.join("keepalived.json")
    }

    /// Asks keepalived for its JSON dump and returns it.
    pub fn dump_json(&self) -> Result<Value> {
        let path = self.json_path();
        let _ = fs::remove_file(&path);
        if !self.signal(&keepalived_signum("JSON")?.to_string()) {
            let status = lock(&self.child).try_wait();
            bail!("keepalived (pid {}) is not running: {status:?}", self.pid);
        }
        // The VRRP process writes the file; it is complete once it parses.
        let mut last = String::new();
        let found = wait_until(Duration::from_secs(3), || match fs::read_to_string(&path) {
            Ok(text) => {
                let ok = serde_json::from_str::<Value>(&text).is_ok();
                last = text;
                ok
            }
            Err(_) => false,
        });
        found.map_err(|_| {
            anyhow!(
                "keepalived wrote no JSON dump to {}: {last:?}",
                path.display()
            )
        })?;
        Ok(serde_json::from_str(&last)?)
    }

    /// Sends `sig` (a name or number for `kill -s`) unless the process has been reaped; false
    /// when it has.
    pub fn signal(&self, sig: &str) -> bool {
        let mut child = lock(&self.child);
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        Command::new("kill")
            .args(["-s", sig, &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits for keepalived to exit; true when it did within `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            !matches!(lock(&self.child).try_wait(), Ok(None))
        })
        .is_ok()
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }
}

impl Peer for Keepalived {
    fn kind(&self) -> &'static str {
        "keepalived"
    }

    fn instances(&self) -> Result<Vec<PeerInstance>> {
        let dump = self.dump_json()?;
        let list = dump
            .as_array()
            .ok_or_else(|| anyhow!("keepalived JSON is not an array: {dump}"))?;
        list.iter().map(keepalived_instance).collect()
    }

    fn stop_gracefully(&self) {
        self.sigterm();
    }

    fn log(&self) -> String {
        read_lossy(&self.log)
    }

    fn checksum_drops(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Invalid VRRPv3 checksum"))
            .count()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.sigterm();
        if !self.wait_exit(Duration::from_secs(3)) {
            let _ = lock(&self.child).kill();
            let _ = lock(&self.child).wait();
        }
        // Its VRRP process follows the parent; make sure of it, by its own pid.
        if let Some(pid) = fs::read_to_string(&self.vrrp_pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            && process_in_namespace(pid, &self.ns)
        {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
        }
        eprintln!(
            "===== keepalived in {} (pid {}), last {LOG_LINES} lines of {} =====\n{}",
            self.ns,
            self.pid,
            self.log.display(),
            tail(&without(&self.log(), &["Printing VRRP as json"]), LOG_LINES)
        );
    }
}

/// The config: one `vrrp_instance` per group, VRRPv3, no virtual MAC, no strict mode.
pub fn keepalived_config(router: &str, cfg: &PeerConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "global_defs {{");
    let _ = writeln!(s, "    router_id keepalived-{router}");
    let _ = writeln!(s, "    vrrp_version 3");
    let _ = writeln!(s, "}}");
    for g in &cfg.groups {
        let family = if g.ipv6 { "v6" } else { "v4" };
        let _ = writeln!(s, "\nvrrp_instance vrid{}_{family} {{", g.vrid);
        let _ = writeln!(s, "    interface {}", g.interface);
        let _ = writeln!(s, "    virtual_router_id {}", g.vrid);
        let _ = writeln!(s, "    priority {}", cfg.priority);
        let _ = writeln!(s, "    advert_int {}", cfg.interval.as_secs_f64());
        let _ = writeln!(s, "    virtual_ipaddress {{\n        {}\n    }}", g.vip);
        let _ = writeln!(s, "}}");
    }
    s
}

fn keepalived_instance(v: &Value) -> Result<PeerInstance> {
    let data = &v["data"];
    let stats = &v["stats"];
    let vrid = data["vrid"]
        .as_u64()
        .ok_or_else(|| anyhow!("keepalived instance without vrid: {v}"))?;
    let iname = data["iname"].as_str().unwrap_or_default();
    // keepalived's states: 0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT.
    let state = match data["state"].as_u64() {
        Some(0) => "INIT".to_string(),
        Some(1) => "BACKUP".to_string(),
        Some(2) => "MASTER".to_string(),
        Some(3) => "FAULT".to_string(),
        other => format!("keepalived state {other:?}"),
    };
    Ok(PeerInstance {
        vrid: u8::try_from(vrid)?,
        ipv6: iname.ends_with("_v6"),
        state,
        adverts_rx: stats["advert_rcvd"].as_u64().unwrap_or_default(),
        adverts_tx: stats["advert_sent"].as_u64().unwrap_or_default(),
        priority_zero_rx: stats["pri_zero_rcvd"].as_u64(),
        primary_address: None,
    })
}

/// The signal number keepalived uses for `func` (`keepalived --signum=JSON`).
fn keepalived_signum(func: &'static str) -> Result<u32> {
    static JSON: OnceLock<Option<u32>> = OnceLock::new();
    assert_eq!(func, "JSON", "only the JSON signal is cached");
    JSON.get_or_init(|| {
        let out = Command::new("keepalived")
            .arg(format!("--signum={func}"))
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
    .ok_or_else(|| anyhow!("`keepalived --signum={func}` gave no signal number"))
}

// ---------------------------------------------------------------------------------------------
// FRR

/// Where FRR's binaries are on Debian.
const FRR_BIN: &str = "/usr/lib/frr";
/// FRR's state directory; with `-N NAME` a daemon uses `FRR_RUN/NAME/`.
const FRR_RUN: &str = "/var/run/frr";

/// FRR's zebra and vrrpd in a router's namespace, with their own pathspace.
pub struct Frr {
    ns: String,
    pathspace: String,
    dir: PathBuf,
    zebra: Mutex<Child>,
    vrrpd: Mutex<Child>,
    vrrpd_pid: u32,
    groups: Vec<StdGroup>,
}

impl Frr {
    /// The macvlan FRR uses for `group`: `vrrp4-<vrid>` or `vrrp6-<vrid>`.
    pub fn macvlan_name(group: &StdGroup) -> String {
        format!("vrrp{}-{}", if group.ipv6 { 6 } else { 4 }, group.vrid)
    }

    /// The virtual MAC of `group` (RFC 5798 7.3).
    pub fn virtual_mac(group: &StdGroup) -> String {
        format!(
            "00:00:5e:00:{:02x}:{:02x}",
            if group.ipv6 { 2 } else { 1 },
            group.vrid
        )
    }

    /// Makes the macvlans for `cfg`'s groups in `router`, then starts zebra and vrrpd there with
    /// the pathspace `<lab prefix>-<router>`; waits until vtysh answers for vrrpd.
    pub fn start(lab: &Lab, router: &str, cfg: &PeerConfig) -> Result<Frr> {
        let ns = lab.ns(router);
        for g in &cfg.groups {
            let name = Frr::macvlan_name(g);
            for args in [
                vec![
                    "ip",
                    "link",
                    "add",
                    &name,
                    "link",
                    g.interface,
                    "type",
                    "macvlan",
                    "mode",
                    "bridge",
                ],
                // Not derived from the (shared) virtual MAC; `ip link add ... addrgenmode` is
                // refused for macvlan, so set it before the link comes up.
                vec!["ip", "link", "set", "dev", &name, "addrgenmode", "random"],
                vec![
                    "ip",
                    "link",
                    "set",
                    "dev",
                    &name,
                    "address",
                    &Frr::virtual_mac(g),
                ],
                vec!["ip", "addr", "add", g.vip, "dev", &name],
                vec!["ip", "link", "set", "dev", &name, "up"],
            ] {
                let out = lab.exec(router, &args);
                if !out.status.success() {
                    bail!(
                        "in {ns}: `{}` failed: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        }

        remove_stale_pathspaces();
        let pathspace = format!("{}-{router}", lab.prefix());
        let dir = Path::new(FRR_RUN).join(&pathspace);
        // The package makes FRR_RUN (frr:frr); where it is missing, make it as it would.
        let mut made = Vec::new();
        if !Path::new(FRR_RUN).exists() {
            made.push(Path::new(FRR_RUN));
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        made.push(dir.as_path());
        // The daemons drop to FRR's user; their sockets, pid files and logs go here.
        for d in made {
            let status = Command::new("chown").arg("frr:frr").arg(d).status()?;
            if !status.success() {
                bail!("chown frr:frr {} failed", d.display());
            }
        }
        fs::write(dir.join("zebra.conf"), "")?;
        fs::write(dir.join("vrrpd.conf"), frr_vrrpd_config(cfg))?;

        let spawn = |daemon: &str| -> Result<Child> {
            let out = File::create(dir.join(format!("{daemon}.out")))?;
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(Path::new(FRR_BIN).join(daemon))
                .args(["-N", &pathspace, "-P", "0"])
                .arg("-i")
                .arg(dir.join(format!("{daemon}.pid")))
                .arg("-f")
                .arg(dir.join(format!("{daemon}.conf")))
                .arg(format!(
                    "--log=file:{}",
                    dir.join(format!("{daemon}.log")).display()
                ))
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting FRR {daemon} in {ns}"))
        };
        let zebra = spawn("zebra")?;
        let zserv = dir.join("zserv.api");
        let mut frr = Frr {
            ns: ns.clone(),
            pathspace: pathspace.clone(),
            dir: dir.clone(),
            vrrpd_pid: 0,
            zebra: Mutex::new(zebra),
            // Replaced below once zebra listens; a placeholder that has already exited.
            vrrpd: Mutex::new(Command::new("true").spawn()?),
            groups: cfg.groups.clone(),
        };
        wait_until(Duration::from_secs(10), || zserv.exists())
            .map_err(|_| anyhow!("FRR zebra in {ns} did not create {}", zserv.display()))?;
        let vrrpd = spawn("vrrpd")?;
        frr.vrrpd_pid = vrrpd.id();
        *lock(&frr.vrrpd) = vrrpd;
        wait_until(Duration::from_secs(10), || frr.show_vrrp().is_ok())
            .map_err(|e| anyhow!("FRR vrrpd in {ns} does not answer: {e}"))?;
        Ok(frr)
    }

    /// Runs vtysh against this pathspace with one `-c` per command; returns stdout.
    pub fn vtysh(&self, commands: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "vtysh", "-N", &self.pathspace]);
        for c in commands {
            cmd.args(["-c", c]);
        }
        let out = cmd.stdin(Stdio::null()).output().context("running vtysh")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "vtysh -N {} {commands:?} failed ({}): {stdout}{}",
                self.pathspace,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// `show vrrp json`.
    pub fn show_vrrp(&self) -> Result<Value> {
        let text = self.vtysh(&["show vrrp json"])?;
        serde_json::from_str(&text).with_context(|| format!("parsing show vrrp json: {text}"))
    }

    /// `no vrrp VRID` on the group's interface: removes the virtual router from the config.
    pub fn remove_vrrp(&self, group: &StdGroup) -> Result<()> {
        self.vtysh(&[
            "configure terminal",
            &format!("interface {}", group.interface),
            &format!("no vrrp {}", group.vrid),
        ])
        .map(drop)
    }

    /// SIGTERM to FRR's vrrpd (zebra keeps running).
    pub fn sigterm_vrrpd(&self) {
        signal_child(&self.vrrpd, self.vrrpd_pid, "TERM");
    }

    /// Waits for FRR's vrrpd to exit; true when it did within `timeout`.
    pub fn wait_vrrpd_exit(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            !matches!(lock(&self.vrrpd).try_wait(), Ok(None))
        })
        .is_ok()
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }
}

impl Peer for Frr {
    fn kind(&self) -> &'static str {
        "frr"
    }

    fn instances(&self) -> Result<Vec<PeerInstance>> {
        let json = self.show_vrrp()?;
        let list = json
            .as_array()
            .ok_or_else(|| anyhow!("show vrrp json is not an array: {json}"))?;
        let mut out = Vec::new();
        for g in &self.groups {
            let router = list
                .iter()
                .find(|r| r["vrid"].as_u64() == Some(u64::from(g.vrid)))
                .ok_or_else(|| anyhow!("FRR has no VRID {}: {json}", g.vrid))?;
            let af = &router[if g.ipv6 { "v6" } else { "v4" }];
            let state = match af["status"].as_str() {
                Some("Master") => "MASTER".to_string(),
                Some("Backup") => "BACKUP".to_string(),
                Some("Initialize") => "INIT".to_string(),
                other => format!("FRR status {other:?}"),
            };
            out.push(PeerInstance {
                vrid: g.vrid,
                ipv6: g.ipv6,
                state,
                adverts_rx: af["stats"]["adverRx"].as_u64().unwrap_or_default(),
                adverts_tx: af["stats"]["adverTx"].as_u64().unwrap_or_default(),
                priority_zero_rx: None,
                primary_address: af["primaryAddress"].as_str().map(str::to_string),
            });
        }
        Ok(out)
    }

    /// Removes every virtual router from FRR's config (`no vrrp N`).
    fn stop_gracefully(&self) {
        for g in &self.groups {
            if let Err(e) = self.remove_vrrp(g) {
                panic!("FRR: no vrrp {}: {e:#}", g.vrid);
            }
        }
    }

    fn log(&self) -> String {
        read_lossy(&self.dir.join("vrrpd.log"))
    }

    fn checksum_drops(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Bad VRRP checksum"))
            .count()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        let zebra_pid = lock(&self.zebra).id();
        signal_child(&self.vrrpd, self.vrrpd_pid, "TERM");
        signal_child(&self.zebra, zebra_pid, "TERM");
        for child in [&self.vrrpd, &self.zebra] {
            let exited = wait_until(Duration::from_secs(3), || {
                !matches!(lock(child).try_wait(), Ok(None))
            });
            if exited.is_err() {
                let _ = lock(child).kill();
                let _ = lock(child).wait();
            }
        }
        for daemon in ["zebra", "vrrpd"] {
            let log = format!(
                "{}{}",
                read_lossy(&self.dir.join(format!("{daemon}.out"))),
                read_lossy(&self.dir.join(format!("{daemon}.log")))
            );
            // Without hex dumps and the retries FRR logs for the address family it does not run.
            let log = without(&log, &["[Q79JG-SJBP4]", "Refusing to start Virtual Router"]);
            eprintln!(
                "===== FRR {daemon} in {}, last {LOG_LINES} lines =====\n{}",
                self.ns,
                tail(&log, LOG_LINES)
            );
        }
        if std::env::var_os("VRRPD_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("FRR: kept {}", self.dir.display());
        }
    }
}

/// Removes pathspace directories (`FRR_RUN/<lab prefix>-<router>`) left by test processes that
/// no longer exist; `lab.sh down` of their lab has stopped the daemons.
fn remove_stale_pathspaces() {
    let Ok(entries) = fs::read_dir(FRR_RUN) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .split_once('-')
            .and_then(|(prefix, _router)| super::lab_prefix_pid(prefix))
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// vrrpd.conf: one virtual router per group on its interface, VRRPv3; packet and protocol
/// debugging on, so dropped adverts are logged with the reason.
pub fn frr_vrrpd_config(cfg: &PeerConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "debug vrrp packets");
    let _ = writeln!(s, "debug vrrp protocol");
    // FRR takes the interval in milliseconds (a multiple of 10).
    let ms = cfg.interval.as_millis();
    for g in &cfg.groups {
        let _ = writeln!(s, "interface {}", g.interface);
        let _ = writeln!(s, " vrrp {} version 3", g.vrid);
        let _ = writeln!(s, " vrrp {} priority {}", g.vrid, cfg.priority);
        let _ = writeln!(s, " vrrp {} advertisement-interval {ms}", g.vrid);
        let vip = g.vip.split('/').next().unwrap_or(g.vip);
        let _ = writeln!(
            s,
            " vrrp {} {} {vip}",
            g.vrid,
            if g.ipv6 { "ipv6" } else { "ip" }
        );
        let _ = writeln!(s, "exit");
    }
    s
}

// ---------------------------------------------------------------------------------------------

fn signal_child(child: &Mutex<Child>, pid: u32, sig: &str) {
    let mut child = lock(child);
    if matches!(child.try_wait(), Ok(None)) {
        // Not reaped while we hold the lock, so the pid is still this process.
        let _ = Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .status();
    }
}

/// `text` without the lines containing any of `noise`.
fn without(text: &str, noise: &[&str]) -> String {
    text.lines()
        .filter(|l| !noise.iter().any(|n| l.contains(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// True when `pid` runs in the network namespace `ns` (`ip netns pids`).
pub fn process_in_namespace(pid: u32, ns: &str) -> bool {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .any(|p| p == pid.to_string())
        })
}
