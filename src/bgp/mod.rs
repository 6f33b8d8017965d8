//! BGP alignment: the AS-path prepend this router announces follows the mastership of one
//! sync group, so the provider sends traffic to the VRRP master.
//!
//! A [`BgpWorker`] (one per `[bgp]` section) applies the latest wanted prepend through a
//! [`Driver`]: BIRD 2 (an include file plus `configure` over its control socket), FRR (a
//! route-map entry through vtysh, then an outbound soft refresh) or a command. Every external
//! call has a timeout; nothing goes through a shell.

mod bird;
mod command;
mod exec;
mod frr;
mod worker;

use std::time::Duration;

use crate::config::{BgpConfig, BgpDriver};
use crate::proto::engine::NotifyState;

pub use worker::{BgpWorker, LEAVE_MASTER_WAIT, RECONCILE_INTERVAL};

/// How long one call to BIRD's socket, vtysh or the exec command may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The state a driver is asked to announce, and the prepend that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub state: NotifyState,
    pub prepend: u8,
}

impl Wanted {
    /// MASTER gets `prepend-master`; BACKUP, FAULT and stopped get `prepend-backup`.
    pub fn for_state(config: &BgpConfig, state: NotifyState) -> Wanted {
        let prepend = match state {
            NotifyState::Master => config.prepend_master,
            NotifyState::Backup | NotifyState::Fault | NotifyState::Stop => config.prepend_backup,
        };
        Wanted { state, prepend }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: no answer within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("BIRD refused `{command}`: {reply}")]
    BirdRefused { command: String, reply: String },
    #[error("BIRD control socket: {0}")]
    BirdProtocol(String),
    #[error("{program} {status}; output: {output}")]
    Command {
        program: String,
        status: String,
        output: String,
    },
}

/// What a periodic check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The BGP daemon runs with the prepend last applied.
    InPlace,
    /// It does not (restarted, reloaded another config, edited by hand): apply again.
    Drifted(String),
    /// The driver cannot tell (exec).
    Unknown,
}

/// One of the three ways to change the prepend.
#[derive(Debug)]
pub enum Driver {
    Bird(bird::Bird),
    Frr(frr::Frr),
    Exec(exec::Exec),
}

impl Driver {
    pub fn from_config(c: &BgpConfig) -> Driver {
        match c.driver {
            BgpDriver::Bird => Driver::Bird(bird::Bird {
                include_file: c.bird_include_file.clone(),
                socket: c.bird_socket.clone(),
            }),
            BgpDriver::Frr => Driver::Frr(frr::Frr {
                vtysh: c.frr_vtysh.clone(),
                route_map: c.frr_route_map.clone(),
                sequence: c.frr_sequence,
                local_as: c.local_as,
            }),
            BgpDriver::Exec => Driver::Exec(exec::Exec {
                command: c.exec_command.clone(),
                local_as: c.local_as,
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Driver::Bird(_) => "bird",
            Driver::Frr(_) => "frr",
            Driver::Exec(_) => "exec",
        }
    }

    /// Makes the BGP daemon announce `want`; on success, a short note of what it said.
    pub async fn apply(&self, want: Wanted) -> Result<String, BgpError> {
        match self {
            Driver::Bird(b) => b.apply(want.prepend).await,
            Driver::Frr(f) => f.apply(want.prepend).await,
            Driver::Exec(e) => e.apply(want).await,
        }
    }

    /// Whether the BGP daemon still runs with `applied`; cheap enough to run every
    /// [`RECONCILE_INTERVAL`].
    pub async fn check(&self, applied: Wanted) -> Result<Check, BgpError> {
        match self {
            Driver::Bird(b) => b.check(applied.prepend).await,
            Driver::Frr(f) => f.check(applied.prepend).await,
            Driver::Exec(_) => Ok(Check::Unknown),
        }
    }

    /// Whether applying `b` after `a` changes anything: BIRD and FRR only see the prepend,
    /// a command is also told the state.
    pub fn same_effect(&self, a: Wanted, b: Wanted) -> bool {
        match self {
            Driver::Exec(_) => a == b,
            Driver::Bird(_) | Driver::Frr(_) => a.prepend == b.prepend,
        }
    }
}
