//! Running code of the test process inside a network namespace, and scratch namespaces.
//!
//! A socket belongs to the namespace of the thread that created it, for its whole life: a
//! thread that entered a namespace (setns) can create sockets there and hand them back.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// Moves the calling thread into the named namespace (`/run/netns/NAME`).
pub fn enter(ns: &str) -> Result<()> {
    let f =
        File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening netns {ns}"))?;
    // SAFETY: setns on a valid namespace fd; it affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside namespace `ns` and returns its result (sockets it opens
/// stay in `ns`). With `rt`, `f` runs inside the runtime's context (for tokio I/O objects).
pub fn in_ns<T: Send>(
    ns: &str,
    rt: Option<&tokio::runtime::Handle>,
    f: impl FnOnce() -> T + Send,
) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns).expect("entering the namespace");
            let _guard = rt.map(|h| h.enter());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}

/// A namespace of its own, removed (with every process in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ct<hint><pid>n<k>`: unique among running processes and within this one.
    pub fn new(hint: &str) -> Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ct{hint}{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip").args(["netns", "add", &name]).output()?;
        if !out.status.success() {
            bail!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawning ip netns exec")
    }

    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args);
        if !out.status.success() {
            bail!(
                "in {}: {:?} failed: {}{}",
                self.name,
                args,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn sysctl(&self, kv: &str) -> Result<()> {
        self.exec_ok(&["sysctl", "-qw", kv]).map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}
