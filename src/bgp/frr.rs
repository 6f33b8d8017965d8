//! The FRR driver: sets `set as-path prepend ASN ...` (or `no set as-path prepend`) on one
//! entry of a route-map through vtysh, then asks bgpd for an outbound soft refresh
//! (`clear bgp ipv4|ipv6 unicast * soft out`): without it, bgpd re-runs the route-map only
//! after its route-map delay timer (5 s by default); with it, no session is reset.
//!
//! bgpd answers `clear ... soft out` at once but re-announces only when its announce timer
//! fires (100 ms later, 500 ms when a peer shares its update group): vtysh returning does not
//! mean the provider has the new path. So `apply` then polls, bounded by [`CONFIRM_TIMEOUT`],
//! until every established neighbour whose outbound route-map is ours advertises the wanted
//! prepend and has no packet left queued: only then does the daemon remove the VIPs.
//!
//! vtysh is run from an argument vector with one `-c` per command, never through a shell.

use std::time::Duration;

use serde_json::Value;

use super::{BgpError, CALL_TIMEOUT, Check, command};

/// How long `apply` waits for bgpd to send the new path (the daemon waits 2 s for the whole
/// apply when leaving MASTER; vtysh itself takes ~0.1 s).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_millis(1500);
const CONFIRM_POLL: Duration = Duration::from_millis(10);
const NEIGHBORS: &str = "show bgp neighbors json";

#[derive(Debug)]
pub struct Frr {
    /// vtysh and its own options (`--vty_socket DIR`, `-N PATHSPACE`).
    pub vtysh: Vec<String>,
    pub route_map: String,
    pub sequence: u16,
    pub local_as: u32,
}

impl Frr {
    fn entry(&self) -> String {
        format!("route-map {} permit {}", self.route_map, self.sequence)
    }

    /// The vtysh commands that set `prepend` and refresh the peers.
    pub fn apply_commands(&self, prepend: u8) -> Vec<String> {
        let set = if prepend == 0 {
            "no set as-path prepend".to_owned()
        } else {
            let asns = vec![self.local_as.to_string(); usize::from(prepend)];
            format!("set as-path prepend {}", asns.join(" "))
        };
        vec![
            "configure terminal".into(),
            self.entry(),
            set,
            "end".into(),
            "clear bgp ipv4 unicast * soft out".into(),
            "clear bgp ipv6 unicast * soft out".into(),
        ]
    }

    async fn vtysh(&self, commands: &[String]) -> Result<String, BgpError> {
        let mut argv = self.vtysh.clone();
        // Only bgpd uses the route-map: talking to it alone spares vtysh connecting to (and
        // configuring) every other daemon.
        argv.extend(["-d".to_owned(), "bgpd".to_owned()]);
        for c in commands {
            argv.push("-c".into());
            argv.push(c.clone());
        }
        let out = command::run(&argv, &[], CALL_TIMEOUT).await?;
        // vtysh prints `% ...` for a command it rejected; older versions still exit 0.
        if out.lines().any(|l| l.trim_start().starts_with('%')) {
            return Err(BgpError::Command {
                program: self.vtysh[0].clone(),
                status: "rejected a command".into(),
                output: out,
            });
        }
        Ok(out)
    }

    pub async fn apply(&self, prepend: u8) -> Result<String, BgpError> {
        let mut commands = self.apply_commands(prepend);
        commands.push(NEIGHBORS.into());
        let out = self.vtysh(&commands).await?;
        let targets = self.targets(&json_values(&out));
        let started = tokio::time::Instant::now();
        let sent = self.wait_sent(&targets, prepend).await;
        let waited = started.elapsed().as_millis();
        Ok(match sent {
            Ok(()) => format!(
                "{}: prepend {prepend}, soft out, sent to {} neighbour(s) after {waited} ms",
                self.entry(),
                distinct_peers(&targets)
            ),
            // The config is in place; bgpd will still send it. Only the early confirmation
            // is missing (e.g. an entry whose `match` covers no advertised route).
            Err(why) => format!(
                "{}: prepend {prepend}, soft out, not confirmed after {waited} ms: {why}",
                self.entry()
            ),
        })
    }

    /// The (neighbour, `ipv4 unicast` | `ipv6 unicast`) pairs that are established and use
    /// our route-map outbound, from `show bgp neighbors json`.
    pub fn targets(&self, values: &[Value]) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        let Some(peers) = values.iter().find_map(|v| {
            v.as_object()
                .filter(|o| !o.contains_key("advertisedRoutes"))
        }) else {
            return out;
        };
        for (peer, info) in peers {
            if info["bgpState"] != "Established" {
                continue;
            }
            for (key, afi) in [
                ("ipv4Unicast", "ipv4 unicast"),
                ("ipv6Unicast", "ipv6 unicast"),
            ] {
                if info["addressFamilyInfo"][key]["routeMapForOutgoingAdvertisements"]
                    == self.route_map.as_str()
                {
                    out.push((peer.clone(), afi));
                }
            }
        }
        out
    }

    /// Polls bgpd until each target advertises `prepend` with nothing left queued.
    async fn wait_sent(&self, targets: &[(String, &str)], prepend: u8) -> Result<(), String> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut commands = vec![NEIGHBORS.to_owned()];
        commands.extend(
            targets.iter().map(|(peer, afi)| {
                format!("show bgp {afi} neighbors {peer} advertised-routes json")
            }),
        );
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        loop {
            let why = match self.vtysh(&commands).await {
                Ok(out) => match self.pending(targets, &json_values(&out), prepend) {
                    None => return Ok(()),
                    Some(why) => why,
                },
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(why);
            }
            tokio::time::sleep(CONFIRM_POLL).await;
        }
    }

    /// What is not sent yet, from `show bgp neighbors json` followed by one
    /// `advertised-routes json` per target (in order); `None` once all is out.
    pub fn pending(
        &self,
        targets: &[(String, &str)],
        values: &[Value],
        prepend: u8,
    ) -> Option<String> {
        if values.len() != targets.len() + 1 {
            return Some(format!(
                "vtysh gave {} JSON documents, want {}",
                values.len(),
                targets.len() + 1
            ));
        }
        let asn = self.local_as.to_string();
        for ((peer, afi), adv) in targets.iter().zip(&values[1..]) {
            let key = if *afi == "ipv4 unicast" {
                "ipv4Unicast"
            } else {
                "ipv6Unicast"
            };
            let queued = &values[0][peer]["addressFamilyInfo"][key]["packetQueueLength"];
            if queued.as_u64() != Some(0) {
                return Some(format!("{peer} {afi}: packet queue {queued}"));
            }
            let Some(routes) = adv["advertisedRoutes"].as_object() else {
                continue; // nothing advertised: nothing to wait for
            };
            // Our prepends lead the advertised path (bgpd adds our AS once more on the wire).
            let leading: Vec<usize> = routes
                .values()
                .map(|r| {
                    r["path"]
                        .as_str()
                        .unwrap_or("")
                        .split_whitespace()
                        .take_while(|a| *a == asn)
                        .count()
                })
                .collect();
            let want = usize::from(prepend);
            let stale = leading.iter().any(|&n| n != 0 && n != want);
            let seen = want == 0 || leading.contains(&want) || leading.is_empty();
            if stale || !seen {
                return Some(format!(
                    "{peer} {afi}: advertised prepends {leading:?}, want {want}"
                ));
            }
        }
        None
    }

    pub async fn check(&self, prepend: u8) -> Result<Check, BgpError> {
        let config = self.vtysh(&["show running-config".into()]).await?;
        Ok(match self.running_prepend(&config) {
            None => Check::Drifted(format!("`{}` is not in the running config", self.entry())),
            Some(n) if n == prepend => Check::InPlace,
            Some(n) => Check::Drifted(format!(
                "`{}` prepends {n} times, want {prepend}",
                self.entry()
            )),
        })
    }

    /// How many times the route-map entry prepends our AS in `show running-config`; `None`
    /// when the entry is missing (or prepends another AS, which is not ours to keep).
    pub fn running_prepend(&self, config: &str) -> Option<u8> {
        let entry = self.entry();
        let mut lines = config.lines().skip_while(|l| l.trim_end() != entry);
        lines.next()?;
        let body = lines.take_while(|l| l.starts_with(' '));
        let asn = self.local_as.to_string();
        for line in body {
            if let Some(list) = line.trim().strip_prefix("set as-path prepend ") {
                let asns: Vec<&str> = list.split_whitespace().collect();
                return asns
                    .iter()
                    .all(|a| *a == asn)
                    .then(|| u8::try_from(asns.len()).ok())
                    .flatten();
            }
        }
        Some(0)
    }
}

/// The JSON documents vtysh printed one after another (one per `show ... json`).
fn json_values(out: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(out)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

fn distinct_peers(targets: &[(String, &str)]) -> usize {
    let mut peers: Vec<&str> = targets.iter().map(|(p, _)| p.as_str()).collect();
    peers.sort_unstable();
    peers.dedup();
    peers.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frr() -> Frr {
        Frr {
            vtysh: vec!["/usr/bin/vtysh".into()],
            route_map: "VRRPD-PREPEND".into(),
            sequence: 10,
            local_as: 4_288_000_595,
        }
    }

    #[test]
    fn commands_set_and_clear_the_prepend() {
        let f = frr();
        let c = f.apply_commands(2);
        assert_eq!(c[1], "route-map VRRPD-PREPEND permit 10");
        assert_eq!(c[2], "set as-path prepend 4288000595 4288000595");
        assert!(c.iter().any(|c| c == "clear bgp ipv4 unicast * soft out"));
        assert_eq!(f.apply_commands(0)[2], "no set as-path prepend");
    }

    #[test]
    fn reads_the_prepend_from_the_running_config() {
        let f = frr();
        let config = "router bgp 4288000595\n neighbor 169.254.169.254 remote-as 64515\nexit\n!\n\
                      route-map VRRPD-PREPEND permit 5\n set as-path prepend 4288000595\nexit\n!\n\
                      route-map VRRPD-PREPEND permit 10\n match ip address prefix-list FLOATING\n set as-path prepend 4288000595 4288000595\nexit\n!\n\
                      route-map OTHER permit 10\n set as-path prepend 4288000595\nexit\n";
        assert_eq!(f.running_prepend(config), Some(2));
        let none = config.replace(" set as-path prepend 4288000595 4288000595\n", "");
        assert_eq!(f.running_prepend(&none), Some(0));
        let missing = config.replace("permit 10", "permit 20");
        assert_eq!(f.running_prepend(&missing), None);
        let foreign = config.replace("4288000595 4288000595", "64512 64512");
        assert_eq!(f.running_prepend(&foreign), None);
    }

    fn neighbors(state: &str, queued: u64) -> String {
        format!(
            r#"{{"169.254.169.254":{{"bgpState":"{state}","addressFamilyInfo":{{
                "ipv4Unicast":{{"packetQueueLength":{queued},"routeMapForOutgoingAdvertisements":"VRRPD-PREPEND"}},
                "ipv6Unicast":{{"packetQueueLength":0,"routeMapForOutgoingAdvertisements":"OTHER"}}}}}},
              "10.0.0.9":{{"bgpState":"Active","addressFamilyInfo":{{}}}}}}"#
        )
    }

    fn advertised(path: &str) -> String {
        format!(
            r#"{{"advertisedRoutes":{{"198.51.100.1/32":{{"path":"{path}"}},"192.0.2.0/24":{{"path":"64512"}}}}}}"#
        )
    }

    #[test]
    fn targets_are_established_neighbours_using_our_route_map() {
        let f = frr();
        let t = f.targets(&json_values(&neighbors("Established", 0)));
        assert_eq!(t, vec![("169.254.169.254".to_owned(), "ipv4 unicast")]);
        assert!(f.targets(&json_values(&neighbors("Connect", 0))).is_empty());
    }

    #[test]
    fn pending_until_the_new_path_is_advertised_and_sent() {
        let f = frr();
        let t = f.targets(&json_values(&neighbors("Established", 0)));
        let docs = |queued, path: &str| {
            json_values(&format!(
                "{}\n{}\n",
                neighbors("Established", queued),
                advertised(path)
            ))
        };
        let three = "4288000595 4288000595 4288000595";
        assert_eq!(f.pending(&t, &docs(0, three), 3), None);
        assert!(
            f.pending(&t, &docs(0, three), 0).is_some(),
            "old prepend still out"
        );
        assert!(
            f.pending(&t, &docs(0, ""), 3).is_some(),
            "prepend not out yet"
        );
        assert_eq!(f.pending(&t, &docs(0, ""), 0), None);
        assert!(f.pending(&t, &docs(1, three), 3).is_some(), "still queued");
        assert!(
            f.pending(&t, &json_values(&neighbors("Established", 0)), 3)
                .is_some()
        );
    }
}
