//! Transition scripts, run one at a time in order by a single worker, with a timeout, never
//! through a shell string: the script path comes from the config and its arguments are passed
//! as an argument vector.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct HookJob {
    pub script: PathBuf,
    /// `<state> <name>`: what keepalived users expect as the last two arguments.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

pub struct HookWorker {
    tx: mpsc::UnboundedSender<HookJob>,
    task: JoinHandle<()>,
}

impl HookWorker {
    pub fn spawn() -> HookWorker {
        let (tx, mut rx) = mpsc::unbounded_channel::<HookJob>();
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                run(&job).await;
            }
        });
        HookWorker { tx, task }
    }

    pub fn submit(&self, job: HookJob) {
        // The worker only stops when we drop the sender, so a send cannot fail while we run.
        let _ = self.tx.send(job);
    }

    /// Lets queued jobs (the `stop` script) finish, up to `limit`.
    pub async fn finish(self, limit: Duration) {
        drop(self.tx);
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("transition scripts still running after {limit:?}; not waiting longer");
        }
    }
}

async fn run(job: &HookJob) {
    let mut cmd = Command::new(&job.script);
    cmd.args(&job.args)
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let script = job.script.display();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%script, args = ?job.args, "transition script could not start: {e}");
            return;
        }
    };
    match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output()).await {
        Err(_) => {
            tracing::error!(%script, args = ?job.args, "transition script killed after {SCRIPT_TIMEOUT:?}")
        }
        Ok(Err(e)) => tracing::error!(%script, "transition script: {e}"),
        Ok(Ok(out)) if !out.status.success() => tracing::error!(
            %script,
            args = ?job.args,
            status = %out.status,
            stdout = %String::from_utf8_lossy(&out.stdout).trim(),
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "transition script failed"
        ),
        Ok(Ok(_)) => tracing::debug!(%script, args = ?job.args, "transition script done"),
    }
}
