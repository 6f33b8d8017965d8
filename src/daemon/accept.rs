//! Accept_Mode (RFC 5798 §6.1, §6.4.3): a master that is not the address owner and has
//! Accept_Mode off must not accept packets addressed to the virtual addresses. The kernel would
//! accept them as soon as the address is on the link, so an nftables input rule drops them.
//!
//! One table, `inet vrrpd`, with a set per family holding every such VIP from start-up: an input
//! rule only sees packets for addresses that are local, so the set can stay filled while the VIPs
//! come and go, and a failover costs no `nft` call. Neighbour solicitations and advertisements
//! stay allowed: hosts must still resolve the VIP.
//! `nft` gets the ruleset on stdin, never through a shell.

use std::process::Stdio;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const TABLE: &str = "vrrpd";

pub struct AcceptFilter {
    installed: bool,
}

impl AcceptFilter {
    /// Creates the table afresh (a killed daemon may have left one) when some group needs it.
    pub async fn install(addresses: &[IpNet]) -> AcceptFilter {
        let mut filter = AcceptFilter { installed: false };
        if addresses.is_empty() {
            return filter;
        }
        let elements = |v6: bool| {
            let list: Vec<String> = addresses
                .iter()
                .filter(|a| a.addr().is_ipv6() == v6)
                .map(|a| a.addr().to_string())
                .collect();
            if list.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {} }};", list.join(", "))
            }
        };
        let ruleset = format!(
            "table inet {TABLE}\ndelete table inet {TABLE}\n\
             table inet {TABLE} {{\n\
              set no_accept_v4 {{ type ipv4_addr;{} }}\n\
              set no_accept_v6 {{ type ipv6_addr;{} }}\n\
              chain input {{\n\
               type filter hook input priority -5; policy accept;\n\
               icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n\
               ip daddr @no_accept_v4 drop\n\
               ip6 daddr @no_accept_v6 drop\n\
              }}\n\
             }}\n",
            elements(false),
            elements(true),
        );
        match nft(&ruleset).await {
            Ok(()) => filter.installed = true,
            Err(e) => tracing::error!(
                "cannot install the accept-mode filter ({e}); virtual addresses of groups with accept = false will accept traffic"
            ),
        }
        filter
    }

    pub async fn remove(self) {
        if self.installed {
            if let Err(e) = nft(&format!("delete table inet {TABLE}\n")).await {
                tracing::warn!("removing the accept-mode filter: {e}");
            }
        }
    }
}

async fn nft(ruleset: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .await
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
