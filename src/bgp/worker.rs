//! The worker: one task per `[bgp]` section that applies only the latest wanted state, retries
//! failures with back-off, and checks every [`RECONCILE_INTERVAL`] that the BGP daemon still
//! runs with what was applied (it may have restarted or reloaded its own config).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Check, Driver, Wanted};
use crate::config::BgpConfig;
use crate::control::BgpStatus;
use crate::proto::engine::NotifyState;

/// How often the applied prepend is checked against the BGP daemon.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// How long the daemon waits for the prepend to be applied when leaving MASTER (and at start
/// and shutdown) before it goes on to remove the virtual addresses anyway.
pub const LEAVE_MASTER_WAIT: Duration = Duration::from_secs(2);
/// Retry delays after a failure: doubling from the first up to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A wanted state and its sequence number (later wants have larger ones).
type Want = Option<(u64, Wanted)>;

pub struct BgpWorker {
    config: BgpConfig,
    wanted: watch::Sender<Want>,
    /// The sequence number of the last want tried, and whether it was applied.
    done: watch::Receiver<(u64, bool)>,
    status: Arc<Mutex<Progress>>,
    task: JoinHandle<()>,
}

/// What the worker has done, for `vrrpd show bgp`.
#[derive(Debug, Default, Clone)]
struct Progress {
    applied: Option<Wanted>,
    applied_at: Option<SystemTime>,
    last_result: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    failures: u32,
    retries: u64,
    applies: u64,
    repairs: u64,
    last_check_at: Option<SystemTime>,
}

impl BgpWorker {
    pub fn spawn(config: &BgpConfig) -> BgpWorker {
        Self::spawn_with(config, Driver::from_config(config))
    }

    pub fn spawn_with(config: &BgpConfig, driver: Driver) -> BgpWorker {
        let (wanted, wanted_rx) = watch::channel(None);
        let (done_tx, done) = watch::channel((0, false));
        let status = Arc::new(Mutex::new(Progress::default()));
        let task = tokio::spawn(run(driver, wanted_rx, done_tx, status.clone()));
        BgpWorker {
            config: config.clone(),
            wanted,
            done,
            status,
            task,
        }
    }

    pub fn sync_group(&self) -> &str {
        &self.config.sync_group
    }

    /// Asks for the prepend of `state`; returns its sequence number for [`Self::wait`]. A want
    /// equal to the current one is not repeated.
    pub fn want(&self, state: NotifyState) -> u64 {
        let want = Wanted::for_state(&self.config, state);
        let mut seq = 0;
        self.wanted.send_if_modified(|current| match current {
            Some((n, w)) if *w == want => {
                seq = *n;
                false
            }
            _ => {
                seq = current.map_or(1, |(n, _)| n + 1);
                *current = Some((seq, want));
                true
            }
        });
        seq
    }

    /// Waits until want `seq` (or a later one) was tried, up to `limit`; true when applied.
    pub async fn wait(&self, seq: u64, limit: Duration) -> bool {
        let mut done = self.done.clone();
        let tried = tokio::time::timeout(limit, done.wait_for(|(n, _)| *n >= seq)).await;
        matches!(tried, Ok(Ok(r)) if r.1)
    }

    pub fn status(&self) -> BgpStatus {
        let p = self.status.lock().map(|p| p.clone()).unwrap_or_default();
        let wanted = self.wanted.borrow().map(|(_, w)| w);
        let c = &self.config;
        BgpStatus {
            sync_group: c.sync_group.clone(),
            driver: c.driver.to_string(),
            local_as: c.local_as,
            prepend_master: c.prepend_master,
            prepend_backup: c.prepend_backup,
            wanted_state: wanted.map(|w| w.state.as_str().to_owned()),
            wanted_prepend: wanted.map(|w| w.prepend),
            applied_state: p.applied.map(|w| w.state.as_str().to_owned()),
            applied_prepend: p.applied.map(|w| w.prepend),
            applied_at: p.applied_at.map(rfc3339),
            in_sync: wanted.is_some() && p.applied == wanted,
            last_result: p.last_result,
            last_error: p.last_error,
            last_error_at: p.last_error_at.map(rfc3339),
            consecutive_failures: p.failures,
            retries: p.retries,
            applies: p.applies,
            repairs: p.repairs,
            last_check_at: p.last_check_at.map(rfc3339),
        }
    }

    /// Stops the worker (after [`Self::wait`] for the last want, when that matters).
    pub fn stop(self) {
        self.task.abort();
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (BACKOFF_FIRST * factor).min(BACKOFF_MAX)
}

async fn run(
    driver: Driver,
    mut wanted: watch::Receiver<Want>,
    done: watch::Sender<(u64, bool)>,
    status: Arc<Mutex<Progress>>,
) {
    let update = |f: &mut dyn FnMut(&mut Progress)| {
        if let Ok(mut p) = status.lock() {
            f(&mut p);
        }
    };
    let mut applied: Option<Wanted> = None;
    let mut failures = 0u32;
    let mut next_check = Instant::now() + RECONCILE_INTERVAL;
    loop {
        // Only the latest want matters: anything asked meanwhile is superseded.
        let current = *wanted.borrow_and_update();
        if let Some((seq, want)) = current {
            if applied.is_some_and(|a| driver.same_effect(a, want)) {
                applied = Some(want);
                update(&mut |p| p.applied = Some(want));
                done.send_replace((seq, true));
            } else {
                let started = std::time::Instant::now();
                match driver.apply(want).await {
                    Ok(note) => {
                        tracing::info!(driver = driver.name(), state = want.state.as_str(), prepend = want.prepend, took = ?started.elapsed(), "BGP prepend applied: {note}");
                        applied = Some(want);
                        failures = 0;
                        update(&mut |p| {
                            p.applied = Some(want);
                            p.applied_at = Some(SystemTime::now());
                            p.last_result = Some(note.clone());
                            p.failures = 0;
                            p.applies += 1;
                        });
                        done.send_replace((seq, true));
                    }
                    Err(e) => {
                        failures += 1;
                        let delay = backoff(failures);
                        tracing::error!(driver = driver.name(), state = want.state.as_str(), prepend = want.prepend, failures, retry_in = ?delay, "BGP prepend not applied: {e}");
                        applied = None;
                        update(&mut |p| {
                            p.applied = None;
                            p.last_error = Some(e.to_string());
                            p.last_error_at = Some(SystemTime::now());
                            p.failures = failures;
                            p.retries += 1;
                        });
                        done.send_replace((seq, false));
                        // Retry after the delay, or at once for a newer want.
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            changed = wanted.changed() => if changed.is_err() { return },
                        }
                        continue;
                    }
                }
            }
        }
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(next_check) => {
                next_check = Instant::now() + RECONCILE_INTERVAL;
                let Some(a) = applied else { continue };
                let check = driver.check(a).await;
                update(&mut |p| p.last_check_at = Some(SystemTime::now()));
                match check {
                    Ok(Check::InPlace | Check::Unknown) => {}
                    Ok(Check::Drifted(why)) => {
                        tracing::warn!(driver = driver.name(), "BGP prepend drifted ({why}): applying again");
                        applied = None;
                        update(&mut |p| p.repairs += 1);
                    }
                    Err(e) => {
                        tracing::warn!(driver = driver.name(), "BGP prepend check failed ({e}): applying again");
                        applied = None;
                        update(&mut |p| p.repairs += 1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BgpDriver;

    fn config(command: Vec<String>) -> BgpConfig {
        BgpConfig {
            sync_group: "MAIN".into(),
            driver: BgpDriver::Exec,
            local_as: 64512,
            prepend_master: 0,
            prepend_backup: 2,
            bird_include_file: "/nonexistent".into(),
            bird_socket: "/nonexistent".into(),
            frr_route_map: "X".into(),
            frr_sequence: 10,
            frr_vtysh: vec![],
            exec_command: command,
        }
    }

    /// An exec driver that appends `STATE PREPEND` to a log, and fails while `fail` exists.
    fn logging(dir: &std::path::Path) -> BgpConfig {
        let script = format!(
            "sleep 0.2; [ -e {d}/fail ] && exit 1; echo \"$1 $2\" >> {d}/log",
            d = dir.display()
        );
        config(vec!["/bin/sh".into(), "-c".into(), script, "sh".into()])
    }

    fn log(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn applies_only_the_latest_want() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = logging(dir.path());
        let w = BgpWorker::spawn_with(&cfg, Driver::from_config(&cfg));
        let first = w.want(NotifyState::Backup);
        tokio::task::yield_now().await; // the worker starts on the first want
        // While it runs: three more wants; only the last may run next.
        w.want(NotifyState::Master);
        w.want(NotifyState::Backup);
        let last = w.want(NotifyState::Master);
        assert!(last > first);
        assert!(w.wait(last, Duration::from_secs(5)).await);
        assert_eq!(log(dir.path()), vec!["backup 2", "master 0"]);
        let s = w.status();
        assert_eq!(s.applied_prepend, Some(0));
        assert!(s.in_sync);
        assert_eq!(s.applies, 2);
        // The same want again changes nothing and is done at once.
        assert_eq!(w.want(NotifyState::Master), last);
        assert!(w.wait(last, Duration::from_millis(10)).await);
        w.stop();
    }

    #[tokio::test]
    async fn retries_with_backoff_until_it_works() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fail"), "").unwrap();
        let cfg = logging(dir.path());
        let w = BgpWorker::spawn_with(&cfg, Driver::from_config(&cfg));
        let seq = w.want(NotifyState::Backup);
        assert!(
            !w.wait(seq, Duration::from_secs(5)).await,
            "the first try fails"
        );
        let s = w.status();
        assert!(
            s.last_error.as_deref().unwrap().contains("exit status: 1"),
            "{s:?}"
        );
        assert_eq!(s.applied_prepend, None);
        assert!(!s.in_sync);
        std::fs::remove_file(dir.path().join("fail")).unwrap();
        // Retries back off (0.5 s, 1 s, ...): within a few seconds one succeeds.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if w.status().in_sync {
                break;
            }
        }
        let s = w.status();
        assert!(s.in_sync, "{s:?}");
        assert!(s.retries >= 1);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(log(dir.path()), vec!["backup 2"]);
        w.stop();
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(50), BACKOFF_MAX);
    }
}
