//! Start-up checks for settings that break a takeover, logged as warnings.

use crate::netlink::{get_sysctl, set_sysctl};

const EVENTS: &str = "net/netfilter/nf_conntrack_events";

/// Looks at sysctls, the nftables ruleset and loaded helpers; fixes what is safe to fix
/// (conntrack events) and says so. Returns the warnings, which are also logged.
pub fn run() -> Vec<String> {
    let mut warnings = Vec::new();
    match get_sysctl(EVENTS).map(|v| v.trim().to_string()) {
        Ok(v) if v == "1" => {}
        Ok(v) => {
            // 0: no events at all; 2: entries created before a listener subscribed never report
            // their end. Replication needs every event.
            match set_sysctl(EVENTS, "1") {
                Ok(()) => warnings.push(format!(
                    "net.netfilter.nf_conntrack_events was {v}: set to 1 so every flow reports its changes"
                )),
                Err(e) => warnings.push(format!(
                    "net.netfilter.nf_conntrack_events is {v} and could not be set to 1 ({e}): flows will be missed"
                )),
            }
        }
        Err(e) => warnings.push(format!(
            "cannot read net.netfilter.nf_conntrack_events ({e}): is nf_conntrack loaded?"
        )),
    }
    for (key, meaning) in [
        (
            "net/netfilter/nf_conntrack_tcp_be_liberal",
            "window tracking is off (liberal)",
        ),
        (
            "net/netfilter/nf_conntrack_tcp_loose",
            "mid-stream TCP packets may create entries",
        ),
    ] {
        if get_sysctl(key).is_ok_and(|v| v.trim() != "0") {
            tracing::info!("{} = 1: {meaning}", key.replace('/', "."));
        }
    }
    if let Some(ruleset) = nft_ruleset() {
        if ruleset.contains("masquerade") {
            warnings.push(
                "the nftables ruleset uses masquerade: it translates to an interface's own address and its entries are flushed when that address goes; SNAT to a virtual address survives a failover"
                    .into(),
            );
        }
        let ftp = ruleset.contains("ftp");
        if ftp && !std::path::Path::new("/sys/module/nf_conntrack_ftp").exists() {
            warnings.push(
                "the nftables ruleset mentions ftp but the nf_conntrack_ftp helper module is not loaded: FTP data connections will not be related"
                    .into(),
            );
        }
    }
    for w in &warnings {
        tracing::warn!("conntrack-sync: {w}");
    }
    warnings
}

fn nft_ruleset() -> Option<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
