//! The baseline of the conntrack benchmark: Debian's keepalived (VRRP) + conntrackd (FTFW over
//! UDP on the sync link) in the lab's routers, wired the way Debian's example does it
//! (/usr/share/doc/conntrackd/examples/sync/: conntrackd.conf for FTFW, primary-backup.sh as
//! keepalived's notify script).
//!
//! Everything lives in the lab's directory: each router's conntrackd has its own config, lock
//! file, log and UNIX socket (never the defaults in /var/run: other tests run in parallel).
//! Processes are stopped by PID, after checking /proc/PID/cmdline (a PID may have been reused),
//! and the lab itself removes the namespaces when dropped. Declared from the test file with
//! `#[path = "lab/conntrackd.rs"] mod conntrackd;` (after `mod lab;`).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};

use crate::lab::{Lab, STD_GROUPS, wait_until};

/// The routers' own addresses and the VIPs: never replicated (Debian's example ignores the
/// routers' and the virtual addresses, and the dedicated link's).
const IGNORE4: [&str; 9] = [
    "127.0.0.1",
    "10.76.2.1",
    "10.76.2.2",
    "10.76.2.3",
    "10.76.4.1",
    "10.76.4.2",
    "10.76.4.3",
    "10.76.9.1",
    "10.76.9.2",
];
const IGNORE6: [&str; 7] = [
    "::1",
    "2001:db8:5:416::1",
    "2001:db8:5:416::2",
    "2001:db8:5:416::3",
    "2001:db8:5:34cd::1",
    "2001:db8:5:34cd::2",
    "2001:db8:5:34cd::3",
];

/// The sync link addresses: (router a, router b).
const SYNC_LINK: (&str, &str) = ("10.76.9.1", "10.76.9.2");

/// A process started by this module, stopped by PID when dropped.
struct Proc {
    name: &'static str,
    ns: String,
    pid: u32,
    child: Mutex<Child>,
}

impl Proc {
    fn running(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(None))
    }

    fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        if matches!(child.try_wait(), Ok(None)) {
            // Not reaped while we hold the lock: the PID is still this process.
            let _ = Command::new("kill")
                .args(["-s", "TERM", &self.pid.to_string()])
                .status();
            for _ in 0..100 {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when `pid` runs `program` (first word of /proc/PID/cmdline, by file name) in the
/// network namespace `ns`: a check against PID reuse before killing a PID we did not spawn.
fn is_ours(pid: u32, program: &str, ns: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    if Path::new(argv0.as_ref())
        .file_name()
        .and_then(|n| n.to_str())
        != Some(program)
    {
        return false;
    }
    crate::lab::peers::process_in_namespace(pid, ns)
}

/// Kills every keepalived / conntrackd process left in `ns` (keepalived's VRRP child, a
/// conntrackd the notify script restarted with `-d`), each by PID after checking its cmdline.
fn sweep(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        if ["keepalived", "conntrackd"]
            .iter()
            .any(|p| is_ours(pid, p, ns))
        {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
        }
    }
}

/// One router of the baseline: its conntrackd and its keepalived.
pub struct Router {
    pub name: &'static str,
    pub dir: PathBuf,
    pub conf: PathBuf,
    ns: String,
    keepalived: Option<Proc>,
    conntrackd: Option<Proc>,
}

impl Router {
    pub fn conntrackd_pid(&self) -> u32 {
        self.conntrackd.as_ref().map_or(0, |p| p.pid)
    }

    pub fn conntrackd_running(&self) -> bool {
        self.conntrackd.as_ref().is_some_and(Proc::running)
    }

    /// `conntrackd -C CONF ARGS` (the client) in the router's namespace; its stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "conntrackd", "-C"])
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running conntrackd -C")?;
        if !out.status.success() {
            return Err(anyhow!(
                "conntrackd {args:?} on {}: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// "current active connections" of the internal and the external cache (`-s`).
    pub fn caches(&self) -> Result<(u64, u64)> {
        let text = self.ctl(&["-s"])?;
        let mut current = text
            .lines()
            .filter(|l| l.starts_with("current active connections"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok());
        let internal = current
            .next()
            .context("no internal cache in conntrackd -s")?;
        let external = current
            .next()
            .context("no external cache in conntrackd -s")?;
        Ok((internal, external))
    }

    /// The external cache: what the router holds of its peer's flows.
    pub fn external(&self) -> u64 {
        self.caches().map(|c| c.1).unwrap_or(0)
    }

    /// Netlink event overruns seen by conntrackd (`-s runtime`, the line naming overruns), when
    /// it reports them.
    pub fn overruns(&self) -> Option<u64> {
        let text = self.ctl(&["-s", "runtime"]).ok()?;
        text.lines()
            .find(|l| l.to_ascii_lowercase().contains("overrun"))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
            })
    }

    /// The notify script's timed steps (`<unix time> <step>` per line).
    pub fn notify_log(&self) -> Vec<(SystemTime, String)> {
        fs::read_to_string(self.dir.join("notify.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, step) = l.split_once(' ')?;
                let secs: f64 = t.parse().ok()?;
                Some((
                    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs),
                    step.to_string(),
                ))
            })
            .collect()
    }

    /// The time of the first notify step starting with `prefix` at or after `since`.
    pub fn notified(&self, prefix: &str, since: SystemTime) -> Option<SystemTime> {
        self.notify_log()
            .into_iter()
            .find(|(t, s)| *t >= since && s.starts_with(prefix))
            .map(|(t, _)| t)
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["conntrackd.log", "keepalived.log", "notify.log"] {
            let text = fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            let _ = writeln!(s, "===== {} on {}: {f} =====\n{tail}", self.name, self.ns);
        }
        s
    }

    fn stop(&mut self) {
        // keepalived first, so that no notify script runs against a stopped conntrackd.
        self.keepalived.take();
        self.conntrackd.take();
        sweep(&self.ns);
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop();
    }
}

/// conntrackd's config for `router`: Debian's FTFW example, UDP on the sync link instead of
/// multicast, paths in `dir`, room for the benchmark's entries.
pub fn conntrackd_config(router: &str, dir: &Path, hash_limit: usize) -> String {
    let (local, peer) = if router == "a" {
        SYNC_LINK
    } else {
        (SYNC_LINK.1, SYNC_LINK.0)
    };
    let mut ignore = String::new();
    for a in IGNORE4 {
        let _ = writeln!(ignore, "            IPv4_address {a}");
    }
    for a in IGNORE6 {
        let _ = writeln!(ignore, "            IPv6_address {a}");
    }
    format!(
        r#"Sync {{
    Mode FTFW {{
    }}
    UDP {{
        IPv4_address {local}
        IPv4_Destination_Address {peer}
        Port 3780
        Interface eth3
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}
}}
General {{
    HashSize 65536
    HashLimit {hash_limit}
    LogFile {dir}/conntrackd.log
    LockFile {dir}/conntrackd.lock
    UNIX {{
        Path {dir}/conntrackd.ctl
    }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Protocol Accept {{
            TCP
            UDP
            ICMP
        }}
        Address Ignore {{
{ignore}        }}
    }}
}}
"#,
        dir = dir.display()
    )
}

/// The notify script: what Debian's primary-backup.sh does (same steps, same order), with this
/// router's config file and lock file, each step timed into notify.log.
pub fn notify_script(dir: &Path) -> String {
    format!(
        r#"#!/bin/sh
# Debian's /usr/share/doc/conntrackd/examples/sync/primary-backup.sh with this lab's paths;
# steps timed into notify.log (unix time, step).
BIN=/usr/sbin/conntrackd
CONF={dir}/conntrackd.conf
LOCK={dir}/conntrackd.lock
LOG={dir}/notify.log
t() {{ echo "$(date +%s.%N) $*" >> "$LOG"; }}
case "$1" in
primary)
    t primary-start
    $BIN -C $CONF -c >>"$LOG" 2>&1; t commit-done rc=$?
    $BIN -C $CONF -f; t flush-done rc=$?
    $BIN -C $CONF -R; t resync-done rc=$?
    $BIN -C $CONF -B; t primary-done rc=$?
    ;;
backup)
    t backup-start
    if ! $BIN -C $CONF -s >/dev/null; then
        t conntrackd-not-running
        rm -f $LOCK
        $BIN -C $CONF -d || {{ t cannot-launch; exit 1; }}
    fi
    $BIN -C $CONF -t; t shorten-done rc=$?
    $BIN -C $CONF -n; t backup-done rc=$?
    ;;
fault)
    $BIN -C $CONF -t; t fault-done rc=$?
    ;;
*)
    exit 1
    ;;
esac
exit 0
"#,
        dir = dir.display()
    )
}

/// keepalived's config: the lab's four groups (as vrrpd runs them: VRRPv3, 100 ms adverts) in
/// one sync group whose notify script commits conntrackd's external cache.
pub fn keepalived_config(router: &str, priority: u8, script: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "global_defs {{\n    router_id ctd-{router}\n    vrrp_version 3\n    script_user root\n}}\n"
    );
    let names: Vec<String> = STD_GROUPS
        .iter()
        .map(|g| format!("{}_{}", g.name.replace('-', "_"), g.vrid))
        .collect();
    let _ = writeln!(s, "vrrp_sync_group MAIN {{\n    group {{");
    for n in &names {
        let _ = writeln!(s, "        {n}");
    }
    let script = script.display();
    let _ = writeln!(
        s,
        "    }}\n    notify_master \"{script} primary\"\n    notify_backup \"{script} backup\"\n    notify_fault \"{script} fault\"\n}}\n"
    );
    for (g, n) in STD_GROUPS.iter().zip(&names) {
        let _ = writeln!(
            s,
            "vrrp_instance {n} {{\n    interface {}\n    virtual_router_id {}\n    priority {priority}\n    advert_int 0.1\n    virtual_ipaddress {{\n        {}\n    }}\n}}\n",
            g.interface, g.vrid, g.vip
        );
    }
    s
}

fn spawn(lab: &Lab, router: &str, name: &'static str, cmd: &mut Command) -> Result<Proc> {
    let ns = lab.ns(router);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name} in {ns}"))?;
    Ok(Proc {
        name,
        ns,
        pid: child.id(),
        child: Mutex::new(child),
    })
}

/// Starts conntrackd (foreground) in `router`'s namespace; returns once its socket answers.
pub fn start_router(lab: &Lab, router: &'static str, hash_limit: usize) -> Result<Router> {
    let dir = lab.dir().join(format!("ctd-{router}"));
    fs::create_dir_all(&dir)?;
    let conf = dir.join("conntrackd.conf");
    fs::write(&conf, conntrackd_config(router, &dir, hash_limit))?;
    let log = File::create(dir.join("conntrackd.stdout"))?;
    // `ip netns exec` execs conntrackd: the child's PID is conntrackd's.
    let conntrackd = spawn(
        lab,
        router,
        "conntrackd",
        Command::new("ip")
            .args(["netns", "exec", &lab.ns(router), "conntrackd", "-C"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    let r = Router {
        name: router,
        dir,
        conf,
        ns: lab.ns(router),
        keepalived: None,
        conntrackd: Some(conntrackd),
    };
    wait_until(Duration::from_secs(10), || r.caches().is_ok())
        .map_err(|_| anyhow!("conntrackd on {router} did not start:\n{}", r.logs()))?;
    Ok(r)
}

/// Starts keepalived (VRRP only, foreground) with the notify script in `router`'s namespace.
pub fn start_keepalived(lab: &Lab, r: &mut Router, priority: u8) -> Result<()> {
    let script = r.dir.join("primary-backup.sh");
    fs::write(&script, notify_script(&r.dir))?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    }
    let conf = r.dir.join("keepalived.conf");
    fs::write(&conf, keepalived_config(r.name, priority, &script))?;
    let log = File::create(r.dir.join("keepalived.log"))?;
    let d = &r.dir;
    let p = spawn(
        lab,
        r.name,
        "keepalived",
        Command::new("ip")
            .args(["netns", "exec", &lab.ns(r.name), "keepalived"])
            .args(["--dont-fork", "--vrrp", "--log-console", "--no-syslog"])
            .arg("--use-file")
            .arg(&conf)
            .arg("--pid")
            .arg(d.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(d.join("vrrp.pid"))
            .arg("--checkers_pid")
            .arg(d.join("checkers.pid"))
            .arg("--bfd_pid")
            .arg(d.join("bfd.pid"))
            .env("TMPDIR", d)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    r.keepalived = Some(p);
    Ok(())
}

/// The whole baseline: routers a (priority 200) and b (100). Fields drop in order: the routers'
/// processes are stopped before the lab (and its namespaces) goes.
pub struct Baseline {
    pub a: Router,
    pub b: Router,
}

impl Baseline {
    pub fn start(lab: &Lab, hash_limit: usize) -> Result<Baseline> {
        let mut a = start_router(lab, "a", hash_limit)?;
        let mut b = start_router(lab, "b", hash_limit)?;
        start_keepalived(lab, &mut a, 200)?;
        start_keepalived(lab, &mut b, 100)?;
        Ok(Baseline { a, b })
    }

    pub fn logs(&self) -> String {
        format!("{}{}", self.a.logs(), self.b.logs())
    }
}
