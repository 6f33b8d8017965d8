//! The control socket: a Unix stream socket carrying one length-prefixed JSON request and one
//! length-prefixed JSON response per connection (4-byte big-endian length, then the JSON).
//! Sizes are capped and every read has a timeout, so a stuck or hostile client cannot hold the
//! daemon. `vrrpd show` and the metrics endpoint render from the same status types.

pub mod render;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest request the daemon reads.
pub const MAX_REQUEST: u32 = 64 * 1024;
/// Largest response a client accepts (thousands of groups fit).
pub const MAX_RESPONSE: u32 = 16 * 1024 * 1024;
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    ShowGroups,
    ShowSync,
    ShowBgp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Groups(Vec<GroupStatus>),
    Sync(serde_json::Value),
    Bgp(Box<BgpStatus>),
    Error(String),
}

/// The BGP alignment worker as `vrrpd show bgp --json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BgpStatus {
    pub sync_group: String,
    pub driver: String,
    pub local_as: u32,
    pub prepend_master: u8,
    pub prepend_backup: u8,
    /// What the sync group's state asks for (`master`, `backup`, `fault`, `stop`).
    pub wanted_state: Option<String>,
    pub wanted_prepend: Option<u8>,
    /// What the driver last applied successfully.
    pub applied_state: Option<String>,
    pub applied_prepend: Option<u8>,
    /// RFC 3339 time of the last successful apply.
    pub applied_at: Option<String>,
    /// The applied state is the wanted one.
    pub in_sync: bool,
    /// What the BGP daemon answered to the last successful apply.
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub consecutive_failures: u32,
    /// Failed attempts (each is retried).
    pub retries: u64,
    pub applies: u64,
    /// Re-applies after a periodic check found the BGP daemon running something else.
    pub repairs: u64,
    pub last_check_at: Option<String>,
}

/// One group as `vrrpd show groups --json` reports it (the keys are the user contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub family: String,
    pub state: String,
    pub priority: u8,
    pub effective_priority: u8,
    pub master_address: Option<String>,
    pub advertise_interval_ms: u64,
    pub master_advertise_interval_ms: u64,
    pub addresses: Vec<String>,
    pub sync_group: Option<String>,
    pub transitions: u64,
    pub last_transition: String,
    pub last_transition_reason: Option<String>,
    pub preempt: bool,
    pub accept: bool,
    pub master_down_interval_ms: f64,
    pub peers: Vec<PeerStatus>,
    pub stats: GroupStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PeerStatus {
    pub address: String,
    pub last_priority: u8,
    pub adverts: u64,
    /// Adverts whose IPv4 checksum covered the pseudo-header (RFC 5798) / the message only (RFC 9568).
    pub checksum_pseudo_header: u64,
    pub checksum_rfc9568: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupStats {
    pub adverts_rx: u64,
    pub adverts_tx: u64,
    pub priority_zero_rx: u64,
    pub priority_zero_tx: u64,
    pub invalid_rx: u64,
    pub invalid_rx_by_reason: std::collections::BTreeMap<String, u64>,
    pub address_mismatch_rx: u64,
    pub interval_mismatch_rx: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no daemon answers on {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("control socket timed out")]
    Timeout,
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(u32),
    #[error("malformed control message: {0}")]
    Json(#[from] serde_json::Error),
}

pub async fn write_frame<T: Serialize>(
    stream: &mut UnixStream,
    value: &T,
) -> Result<(), ControlError> {
    let body = serde_json::to_vec(value)?;
    let len = u32::try_from(body.len()).map_err(|_| ControlError::TooLarge(u32::MAX))?;
    let io = async {
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await
    };
    tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .map_err(|_| ControlError::Timeout)??;
    Ok(())
}

pub async fn read_frame<T: for<'de> Deserialize<'de>>(
    stream: &mut UnixStream,
    max: u32,
) -> Result<T, ControlError> {
    let io = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len);
        if len > max {
            return Err(ControlError::TooLarge(len));
        }
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await?;
        Ok(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(IO_TIMEOUT, io)
        .await
        .map_err(|_| ControlError::Timeout)?
}

/// Client side: one request, one response.
pub async fn query(socket: &Path, request: &Request) -> Result<Response, ControlError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    write_frame(&mut stream, request).await?;
    read_frame(&mut stream, MAX_RESPONSE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        write_frame(&mut a, &Request::ShowGroups).await.unwrap();
        let r: Request = read_frame(&mut b, MAX_REQUEST).await.unwrap();
        assert_eq!(r, Request::ShowGroups);

        a.write_all(&(MAX_REQUEST + 1).to_be_bytes()).await.unwrap();
        let err = read_frame::<Request>(&mut b, MAX_REQUEST)
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::TooLarge(_)), "{err}");
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let (_a, mut b) = UnixStream::pair().unwrap();
        let err = read_frame::<Request>(&mut b, MAX_REQUEST)
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Timeout));
    }

    #[test]
    fn request_wire_form_is_stable() {
        assert_eq!(
            serde_json::to_string(&Request::ShowGroups).unwrap(),
            r#"{"command":"show-groups"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::ShowBgp).unwrap(),
            r#"{"command":"show-bgp"}"#
        );
    }
}
