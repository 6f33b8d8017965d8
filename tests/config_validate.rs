//! The configuration contract of `spec/interface.md`: the full example parses with the values
//! it shows, and a file with several mistakes reports every one of them, once, with its key
//! path, both through the library and through `vrrpd validate -c FILE`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vrrpd::config::{self, BgpDriver};
use vrrpd::proto::{Centis, ChecksumForm, Family};

const SPEC_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/config/spec-example.toml"
);
const BAD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/config/bad-all-mistakes.toml"
);

/// One line per mistake in `bad-all-mistakes.toml`, exactly as `vrrpd validate` prints them.
const BAD_EXPECTED: &[&str] = &[
    "group.dmz-v4.colour: unknown key",
    "group.dmz-v4.vrid: must be 1..=255, got 0",
    "group.dmz-v4.priority: must be 1..=255, got 256",
    "group.dmz-v4.advertise-interval: must be a multiple of 10ms, got \"5ms\"",
    "group.mixed.address: mixes IPv4 and IPv6 addresses (\"10.76.4.1/24\", \"2001:db8:5:34cd::1/64\"); use one group per family",
    "sync-group.MAIN.member: \"nope\" names no group",
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn spec_example_parses_with_its_values() {
    let c = match config::load(Path::new(SPEC_EXAMPLE)) {
        Ok(c) => c,
        Err(e) => panic!("the spec example must be valid:\n{e}"),
    };

    assert_eq!(c.daemon.router_id, "edge-a");
    assert_eq!(c.daemon.socket, PathBuf::from("/run/vrrpd/vrrpd.sock"));
    assert_eq!(c.daemon.metrics, Some("127.0.0.1:9469".parse().unwrap()));
    assert_eq!(c.daemon.checksum, ChecksumForm::PseudoHeader);

    let names: Vec<&str> = c.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["dmz-v4", "dmz-v6", "intranet-v4", "intranet-v6"]);

    let g = c.group("dmz-v4").unwrap();
    assert_eq!(g.interface, "eth1");
    assert_eq!(g.vrid, 21);
    assert_eq!(g.priority, 200);
    assert_eq!(g.addresses, ["10.76.2.1/24".parse().unwrap()]);
    assert_eq!(g.family, Family::Ipv4);
    assert_eq!(g.advertise_interval, Centis::new(100).unwrap());
    assert!(g.preempt);
    assert_eq!(g.preempt_delay, Duration::ZERO);
    assert!(!g.accept);
    assert!(g.peer_addresses.is_empty());
    assert_eq!(g.hello_source_address, None);
    assert!(!g.vmac);
    assert!(g.track_interfaces.is_empty());
    assert_eq!(g.sync_group.as_deref(), Some("MAIN"));

    for (name, interface, vrid, family, address) in [
        ("dmz-v6", "eth1", 22, Family::Ipv6, "2001:db8:5:416::1/64"),
        ("intranet-v4", "eth2", 41, Family::Ipv4, "10.76.4.1/24"),
        (
            "intranet-v6",
            "eth2",
            42,
            Family::Ipv6,
            "2001:db8:5:34cd::1/64",
        ),
    ] {
        let g = c.group(name).unwrap();
        assert_eq!(g.interface, interface, "{name}");
        assert_eq!(g.vrid, vrid, "{name}");
        assert_eq!(g.priority, 200, "{name}");
        assert_eq!(g.family, family, "{name}");
        assert_eq!(g.addresses, [address.parse().unwrap()], "{name}");
        // Defaults.
        assert_eq!(g.advertise_interval, Centis::DEFAULT_ADVERT, "{name}");
        assert!(g.preempt && !g.accept && !g.vmac, "{name}");
        assert_eq!(g.preempt_delay, Duration::ZERO, "{name}");
        assert_eq!(g.sync_group.as_deref(), Some("MAIN"), "{name}");
    }

    assert_eq!(c.sync_groups.len(), 1);
    let s = &c.sync_groups[0];
    assert_eq!(s.name, "MAIN");
    assert_eq!(
        s.members,
        ["dmz-v4", "dmz-v6", "intranet-v4", "intranet-v6"]
    );
    assert_eq!(s.scripts, config::TransitionScripts::default());

    let ct = c.conntrack_sync.as_ref().unwrap();
    assert_eq!(ct.sync_group, "MAIN");
    assert_eq!(ct.interface, "eth3");
    assert_eq!(ct.peer, ip("10.76.9.2"));
    assert_eq!(ct.port, 3780);
    assert_eq!(ct.key_file, None);
    assert!(ct.ignore_addresses.is_empty());

    let bgp = c.bgp.as_ref().unwrap();
    assert_eq!(bgp.sync_group, "MAIN");
    assert_eq!(bgp.driver, BgpDriver::Bird);
    assert_eq!(bgp.local_as, 4_288_000_595);
    assert_eq!(bgp.prepend_master, 0);
    assert_eq!(bgp.prepend_backup, 2);
    assert_eq!(
        bgp.bird_include_file,
        PathBuf::from("/etc/bird/vrrpd-prepend.conf")
    );
    assert_eq!(bgp.bird_socket, PathBuf::from("/run/bird/bird.ctl"));
}

/// The example's commented-out lines are part of the contract too: uncommented, they parse.
#[test]
fn spec_example_commented_lines_parse_when_uncommented() {
    let text = std::fs::read_to_string(SPEC_EXAMPLE).unwrap();
    let uncommented: String = text
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| l.replace("\"...\"", "\"/etc/vrrpd/other.sh\""))
        .collect::<Vec<_>>()
        .join("\n");
    let c = match config::parse(&uncommented) {
        Ok(c) => c,
        Err(e) => panic!("uncommented spec example must be valid:\n{e}\n---\n{uncommented}"),
    };
    let g = c.group("dmz-v4").unwrap();
    assert_eq!(g.peer_addresses, [ip("10.76.2.3")]);
    assert_eq!(g.hello_source_address, Some(ip("10.76.2.2")));
    assert!(!g.vmac);
    assert_eq!(g.track_interfaces, ["eth0"]);
    let s = &c.sync_groups[0].scripts;
    assert_eq!(s.master, Some(PathBuf::from("/etc/vrrpd/master.sh")));
    assert_eq!(s.stop, Some(PathBuf::from("/etc/vrrpd/other.sh")));
    let ct = c.conntrack_sync.unwrap();
    assert_eq!(ct.port, 3780);
    assert_eq!(ct.key_file, Some(PathBuf::from("/etc/vrrpd/sync.key")));
    assert_eq!(ct.ignore_addresses, ["10.76.9.0/30".parse().unwrap()]);
    let bgp = c.bgp.unwrap();
    assert_eq!(
        bgp.bird_include_file,
        PathBuf::from("/etc/bird/vrrpd-prepend.conf")
    );
    assert_eq!(bgp.bird_socket, PathBuf::from("/run/bird/bird.ctl"));
}

#[test]
fn every_mistake_is_reported_once_with_its_key_path() {
    let errors = match config::load(Path::new(BAD)) {
        Ok(c) => panic!("the bad file must not validate: {c:#?}"),
        Err(e) => e,
    };
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for want in BAD_EXPECTED {
        assert!(
            lines.iter().any(|l| l == want),
            "missing {want:?} in:\n{errors}"
        );
    }
    assert_eq!(
        lines.len(),
        BAD_EXPECTED.len(),
        "one error per mistake, no noise:\n{errors}"
    );
    assert_eq!(errors.to_string(), lines.join("\n"));
}

fn validate(file: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vrrpd"))
        .args(["validate", "-c", file])
        .output()
        .expect("running vrrpd validate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `vrrpd validate -c FILE`: exit 0 and nothing on stderr when valid; exit 2 and one line per
/// problem naming the key path otherwise.
#[test]
fn cli_validate_contract() {
    let (code, _, stderr) = validate(SPEC_EXAMPLE);
    assert_eq!(code, Some(0), "valid config; stderr:\n{stderr}");
    assert_eq!(stderr, "", "nothing on stderr for a valid config");

    let (code, _, stderr) = validate(BAD);
    assert_eq!(code, Some(2), "invalid config; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    for want in BAD_EXPECTED {
        assert!(
            lines.contains(want),
            "missing {want:?} in stderr:\n{stderr}"
        );
    }
    assert_eq!(
        lines.len(),
        BAD_EXPECTED.len(),
        "one line per problem:\n{stderr}"
    );
}
