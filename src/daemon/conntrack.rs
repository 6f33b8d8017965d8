//! Conntrack-sync wiring: starts the replication task for `[conntrack-sync]` and translates the
//! sync group's moves for it.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::conntrack::sync::{Role, SyncConfig};
use crate::conntrack::task::{SyncHandle, SyncSettings, all_addresses};
use crate::netlink::Netlink;
use crate::proto::engine::{NotifyState, NotifyTarget, SyncGroupId};

pub struct SyncRuntime {
    pub handle: SyncHandle,
    /// The engine's index of the sync group that drives replication.
    pub sync_group: SyncGroupId,
    /// Preempt hold changes from the task.
    pub hold: mpsc::UnboundedReceiver<bool>,
    /// The sync group's last state, to tell a move out of FAULT.
    pub last_state: Option<NotifyState>,
}

impl SyncRuntime {
    /// Whether a notification is about the replication's sync group.
    pub fn concerns(&self, target: NotifyTarget) -> bool {
        target == NotifyTarget::SyncGroup(self.sync_group)
    }
}

pub fn role_of(state: NotifyState) -> Role {
    match state {
        NotifyState::Master => Role::Master,
        NotifyState::Backup | NotifyState::Fault => Role::Backup,
        NotifyState::Stop => Role::Stopped,
    }
}

/// Starts replication when configured.
pub async fn start(
    config: &Config,
    netlink: &Netlink,
    sync_group: Option<SyncGroupId>,
) -> anyhow::Result<Option<SyncRuntime>> {
    let Some(cs) = &config.conntrack_sync else {
        return Ok(None);
    };
    let Some(sync_group) = sync_group else {
        bail!(
            "conntrack-sync.sync-group: no sync group named {:?}",
            cs.sync_group
        );
    };
    crate::conntrack::preflight::run();
    let link = netlink
        .link_by_name(&cs.interface)
        .await
        .with_context(|| format!("conntrack-sync.interface: no link named {:?}", cs.interface))?;
    let nets = netlink
        .addresses(link.index)
        .await
        .with_context(|| format!("reading the addresses of {}", cs.interface))?;
    let same_family = |n: &&ipnet::IpNet| n.addr().is_ipv4() == cs.peer.is_ipv4();
    let Some(local_net) = nets
        .iter()
        .filter(same_family)
        .find(|n| n.contains(&cs.peer))
        .or_else(|| nets.iter().find(same_family))
        .copied()
    else {
        bail!(
            "conntrack-sync.interface: {} has no address of the peer's family ({})",
            cs.interface,
            cs.peer
        );
    };
    let key = match &cs.key_file {
        Some(path) => {
            Some(crate::conntrack::channel::load_key(path).context("conntrack-sync.key-file")?)
        }
        None => {
            tracing::warn!(
                "conntrack-sync has no key-file: the channel is neither authenticated nor encrypted"
            );
            None
        }
    };
    let mut ignored = vec![local_net.trunc()];
    ignored.extend(cs.ignore_addresses.iter().copied());
    let virtual_addresses: Vec<IpAddr> = config
        .groups
        .iter()
        .flat_map(|g| g.addresses.iter().map(|a| a.addr()))
        .collect();
    let own = all_addresses(netlink)
        .await
        .context("reading this router's addresses")?;
    let settings = SyncSettings {
        sync_group: cs.sync_group.clone(),
        local: SocketAddr::new(local_net.addr(), cs.port),
        peer: SocketAddr::new(cs.peer, cs.port),
        key,
        ignored,
        virtual_addresses,
        core: SyncConfig {
            tcp_timeouts: crate::conntrack::sync::TcpTimeouts::from_sysctls(),
            ..SyncConfig::default()
        },
    };
    let (tx, hold) = mpsc::unbounded_channel();
    let handle = SyncHandle::start(settings, own, tx)
        .await
        .context("starting conntrack-sync")?;
    tracing::info!(peer = %cs.peer, port = cs.port, interface = %cs.interface, "conntrack-sync started");
    Ok(Some(SyncRuntime {
        handle,
        sync_group,
        hold,
        last_state: None,
    }))
}

/// The next preempt-hold change; never resolves without replication.
pub async fn next_hold(sync: &mut Option<SyncRuntime>) -> Option<bool> {
    match sync {
        Some(s) => s.hold.recv().await,
        None => std::future::pending().await,
    }
}
