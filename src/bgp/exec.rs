//! The exec driver: a command of the user's, given the state and the prepend as its last two
//! arguments (`master 0`) and as `VRRPD_STATE`, `VRRPD_PREPEND`, `VRRPD_LOCAL_AS`.

use super::{BgpError, CALL_TIMEOUT, Wanted, command};

#[derive(Debug)]
pub struct Exec {
    /// Program and first arguments, from `exec.command`.
    pub command: Vec<String>,
    pub local_as: u32,
}

impl Exec {
    pub async fn apply(&self, want: Wanted) -> Result<String, BgpError> {
        let mut argv = self.command.clone();
        argv.push(want.state.as_str().to_owned());
        argv.push(want.prepend.to_string());
        let env = [
            ("VRRPD_STATE", want.state.as_str().to_owned()),
            ("VRRPD_PREPEND", want.prepend.to_string()),
            ("VRRPD_LOCAL_AS", self.local_as.to_string()),
        ];
        command::run(&argv, &env, CALL_TIMEOUT).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::engine::NotifyState;

    #[tokio::test]
    async fn passes_state_and_prepend_as_arguments_and_environment() {
        let e = Exec {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                r#"echo "$1 $2 $VRRPD_STATE $VRRPD_PREPEND $VRRPD_LOCAL_AS $0""#.into(),
                "a b; echo injected".into(),
            ],
            local_as: 4_288_000_595,
        };
        let out = e
            .apply(Wanted {
                state: NotifyState::Backup,
                prepend: 3,
            })
            .await
            .unwrap();
        // `$0` is the configured argument, verbatim: nothing is split or run by a shell.
        assert_eq!(out, "backup 3 backup 3 4288000595 a b; echo injected");
    }
}
