//! The TOML configuration and its validation.
//!
//! The file is parsed into a [`toml::Table`] and walked by hand rather than deserialized with
//! `serde(deny_unknown_fields)`: serde stops at the first problem, while `vrrpd validate` must
//! report every problem in the file at once, each with the key path it concerns
//! (`group.dmz-v4.vrid: must be 1..=255, got 0`). The walk is in [`validate`]; the typed,
//! already-checked result that the daemon consumes is [`Config`].
//!
//! Keys are kebab-case and follow VyOS's `high-availability vrrp` and `service conntrack-sync`
//! names; the user contract is `spec/interface.md`.

mod validate;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::proto::engine::{GroupSpec, SyncGroup};
use crate::proto::router::RouterParams;
use crate::proto::{Centis, ChecksumForm, Family};

/// Where the daemon looks for its configuration when no `-c` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vrrpd/vrrpd.toml";
/// The control socket when `daemon.socket` is not set.
pub const DEFAULT_SOCKET: &str = "/run/vrrpd/vrrpd.sock";
/// The conntrack-sync TCP port when `conntrack-sync.port` is not set.
pub const DEFAULT_CONNTRACK_SYNC_PORT: u16 = 3780;
/// The file vrrpd writes `define VRRPD_PREPEND = N;` into for BIRD.
pub const DEFAULT_BIRD_INCLUDE_FILE: &str = "/etc/bird/vrrpd-prepend.conf";
/// BIRD's control socket.
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// The FRR route-map whose `set as-path prepend` vrrpd manages.
pub const DEFAULT_FRR_ROUTE_MAP: &str = "VRRPD-PREPEND";
/// The entry (sequence number) of that route-map.
pub const DEFAULT_FRR_SEQUENCE: u16 = 10;
/// How vrrpd runs vtysh.
pub const DEFAULT_FRR_VTYSH: &str = "/usr/bin/vtysh";
/// The longest `preempt-delay` accepted.
pub const MAX_PREEMPT_DELAY: Duration = Duration::from_secs(3600);
/// The most AS-path prepends accepted for `prepend-master` / `prepend-backup`.
pub const MAX_PREPEND: u8 = 16;

/// A complete, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub daemon: DaemonConfig,
    /// Sorted by name.
    pub groups: Vec<GroupConfig>,
    /// Sorted by name.
    pub sync_groups: Vec<SyncGroupConfig>,
    pub conntrack_sync: Option<ConntrackSyncConfig>,
    pub bgp: Option<BgpConfig>,
}

impl Config {
    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The sync group called `name`.
    pub fn sync_group(&self, name: &str) -> Option<&SyncGroupConfig> {
        self.sync_groups.iter().find(|s| s.name == name)
    }

    /// What the protocol core is given for group `g`, whose primary address (advert source and
    /// tie-breaker) the caller has found: its parameters and the index of its sync group.
    pub fn group_spec(&self, g: &GroupConfig, primary: IpAddr) -> GroupSpec {
        GroupSpec {
            params: RouterParams {
                name: g.name.clone(),
                vrid: g.vrid,
                family: g.family,
                priority: g.priority,
                advertise_interval: g.advertise_interval,
                preempt: g.preempt,
                preempt_delay: g.preempt_delay,
                accept: g.accept,
                addresses: g.addresses.iter().map(|a| a.addr()).collect(),
                primary_address: primary,
            },
            sync_group: g
                .sync_group
                .as_ref()
                .and_then(|name| self.sync_groups.iter().position(|s| &s.name == name)),
        }
    }

    /// The sync groups as the protocol core takes them: members by their index in `groups`.
    pub fn engine_sync_groups(&self) -> Vec<SyncGroup> {
        let index_of = |name: &str| self.groups.iter().position(|g| g.name == name);
        self.sync_groups
            .iter()
            .map(|s| SyncGroup {
                name: s.name.clone(),
                members: s.members.iter().filter_map(|m| index_of(m)).collect(),
            })
            .collect()
    }
}

/// `[daemon]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// `router-id`; defaults to the host name.
    pub router_id: String,
    /// `socket`: the control socket; defaults to [`DEFAULT_SOCKET`].
    pub socket: PathBuf,
    /// `metrics`: the Prometheus listener; off when absent.
    pub metrics: Option<SocketAddr>,
    /// `checksum`: the IPv4 checksum form sent; both are accepted on receive.
    pub checksum: ChecksumForm,
    /// `realtime-priority`: SCHED_RR priority of the daemon (1..=99), 0 for normal scheduling.
    /// With 10 ms adverts a backup must run within ~26 ms; on a loaded router only a real-time
    /// policy guarantees that.
    pub realtime_priority: u8,
}

/// Default `daemon.realtime-priority`: low among real-time priorities, above every normal task.
pub const DEFAULT_REALTIME_PRIORITY: u8 = 10;

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            router_id: hostname(),
            socket: PathBuf::from(DEFAULT_SOCKET),
            metrics: None,
            checksum: ChecksumForm::PseudoHeader,
            realtime_priority: DEFAULT_REALTIME_PRIORITY,
        }
    }
}

/// `[group.NAME]`: one VRRP virtual router, of one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// 1..=255; 255 means this router owns the addresses.
    pub priority: u8,
    /// `address`: the virtual addresses as written (a bare address becomes a /32 or /128).
    /// Never empty, all of [`GroupConfig::family`], no duplicates.
    pub addresses: Vec<IpNet>,
    /// Derived from `address`.
    pub family: Family,
    pub advertise_interval: Centis,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// RFC 5798 Accept_Mode.
    pub accept: bool,
    /// `peer-address`: unicast adverts to these instead of multicast; empty means multicast.
    pub peer_addresses: Vec<IpAddr>,
    pub hello_source_address: Option<IpAddr>,
    pub vmac: bool,
    /// `track-interface`: any of these down means FAULT.
    pub track_interfaces: Vec<String>,
    /// The sync group this group is a member of, from `[sync-group.*] member`.
    pub sync_group: Option<String>,
}

/// `[sync-group.NAME]`: groups that change state together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupConfig {
    pub name: String,
    /// Names of existing groups, in the order written.
    pub members: Vec<String>,
    pub scripts: TransitionScripts,
}

/// `transition-script = { master = ..., backup = ..., fault = ..., stop = ... }`; absolute paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransitionScripts {
    pub master: Option<PathBuf>,
    pub backup: Option<PathBuf>,
    pub fault: Option<PathBuf>,
    pub stop: Option<PathBuf>,
}

/// `[conntrack-sync]`: replicate conntrack entries to the peer router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSyncConfig {
    /// Names an existing sync group, whose transitions drive failover.
    pub sync_group: String,
    pub interface: String,
    pub peer: IpAddr,
    pub port: u16,
    pub key_file: Option<PathBuf>,
    pub ignore_addresses: Vec<IpNet>,
}

/// `[bgp]`: AS-path prepends that follow a sync group's mastership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// Names an existing sync group.
    pub sync_group: String,
    pub driver: BgpDriver,
    pub local_as: u32,
    /// Prepends while MASTER (default 0).
    pub prepend_master: u8,
    /// Prepends while BACKUP, FAULT or stopped; greater than `prepend_master`.
    pub prepend_backup: u8,
    /// `bird.include-file`.
    pub bird_include_file: PathBuf,
    /// `bird.socket`.
    pub bird_socket: PathBuf,
    /// `frr.route-map`: the route-map (a name without spaces) whose `set as-path prepend` vrrpd sets.
    pub frr_route_map: String,
    /// `frr.sequence`: the `permit` entry of that route-map.
    pub frr_sequence: u16,
    /// `frr.vtysh`: the vtysh argument vector (absolute program path first, e.g. with
    /// `--vty_socket DIR` or `-N PATHSPACE`); vrrpd appends `-c COMMAND` arguments.
    pub frr_vtysh: Vec<String>,
    /// `exec.command`: the program and its first arguments; vrrpd appends `STATE PREPEND`.
    /// Required with `driver = "exec"`, empty otherwise.
    pub exec_command: Vec<String>,
}

/// `bgp.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BgpDriver {
    Bird,
    Frr,
    Exec,
}

impl BgpDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            BgpDriver::Bird => "bird",
            BgpDriver::Frr => "frr",
            BgpDriver::Exec => "exec",
        }
    }
}

impl fmt::Display for BgpDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in a configuration file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key path (`group.dmz-v4.vrid`), `line L, column C` for a TOML syntax error, or the
    /// file path when it cannot be read.
    pub path: String,
    /// What is wrong, on one line.
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration file; never empty when returned by [`parse`] or
/// [`load`]. Displays as one line per problem (no trailing newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Parses and validates a configuration, reporting every problem found.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => return Err(ConfigErrors(vec![syntax_error(text, &e)])),
    };
    validate::config(&table)
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) => Err(ConfigErrors(vec![ConfigError::new(
            path.display().to_string(),
            format!("cannot read the configuration: {e}"),
        )])),
    }
}

/// The control socket named by the configuration at `config_path`, for `vrrpd show`: its
/// `daemon.socket` when the file can be read and that key is an absolute path, even if the
/// rest of the file has problems; otherwise [`DEFAULT_SOCKET`].
pub fn control_socket(config_path: &Path) -> PathBuf {
    std::fs::read_to_string(config_path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("daemon")?
                .get("socket")?
                .as_str()
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// A TOML syntax error as one line: `line L, column C: message`.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = one_line(e.message());
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let before = &text.as_bytes()[..start];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1;
            ConfigError::new(format!("line {line}, column {column}"), message)
        }
        None => ConfigError::new("toml", message),
    }
}

fn one_line(s: &str) -> String {
    s.trim().lines().collect::<Vec<_>>().join("; ")
}

/// The host name, for the default `router-id`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
