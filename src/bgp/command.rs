//! Running a program from an argument vector, with a timeout and its output kept for the log.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::BgpError;

/// Runs `argv` (program first) with `env`; its stdout and stderr on success.
pub async fn run(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<String, BgpError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(BgpError::Command {
            program: String::new(),
            status: "is empty".into(),
            output: String::new(),
        });
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| BgpError::Io {
        what: format!("starting {program}"),
        source,
    })?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| BgpError::Timeout {
            what: program.clone(),
            after: timeout,
        })?
        .map_err(|source| BgpError::Io {
            what: format!("waiting for {program}"),
            source,
        })?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_owned();
    if out.status.success() {
        Ok(output)
    } else {
        Err(BgpError::Command {
            program: program.clone(),
            status: out.status.to_string(),
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_status_and_timeout() {
        let sh = |script: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let out = run(&sh("echo out; echo err >&2"), &[], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out, "out\nerr");

        let err = run(&sh("echo nope; exit 3"), &[], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BgpError::Command { status, output, .. } if status.contains('3') && output == "nope"),
            "{err}"
        );

        let err = run(&sh("sleep 5"), &[], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, BgpError::Timeout { .. }), "{err}");

        let err = run(
            &["/nonexistent/prog".to_owned()],
            &[],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, BgpError::Io { .. }), "{err}");
    }
}
