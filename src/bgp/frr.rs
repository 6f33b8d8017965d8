//! The FRR driver: sets `set as-path prepend ASN ...` (or `no set as-path prepend`) on one
//! entry of a route-map through vtysh, then asks bgpd for an outbound soft refresh
//! (`clear bgp ipv4|ipv6 unicast * soft out`): without it, bgpd re-runs the route-map only
//! after its route-map delay timer (5 s by default); with it, no session is reset.
//!
//! vtysh is run from an argument vector with one `-c` per command, never through a shell.

use super::{BgpError, CALL_TIMEOUT, Check, command};

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
        self.vtysh(&self.apply_commands(prepend)).await?;
        Ok(format!("{}: prepend {prepend}, soft out", self.entry()))
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
}
