use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A valid group to build on.
const GROUP: &str = r#"
[group.a]
interface = "eth1"
vrid = 1
priority = 100
address = ["10.0.0.1/24"]
"#;

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// The error lines, in order.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts exactly one error, equal to `line`.
fn one_error(text: &str, line: &str) {
    assert_eq!(errors(text), vec![line.to_owned()], "for:\n{text}");
}

/// `GROUP` with `extra` lines added to `[group.a]`.
fn group_with(extra: &str) -> String {
    format!("{GROUP}{extra}\n")
}

// ---- top level and [daemon] ----

#[test]
fn minimal_config_gets_defaults() {
    let c = ok(GROUP);
    assert_eq!(c.daemon.socket, PathBuf::from("/run/vrrpd/vrrpd.sock"));
    assert_eq!(c.daemon.metrics, None);
    assert_eq!(c.daemon.checksum, ChecksumForm::PseudoHeader);
    assert_eq!(c.daemon.realtime_priority, 10);
    assert!(!c.daemon.router_id.is_empty(), "defaults to the host name");
    let g = &c.groups[0];
    assert_eq!(g.name, "a");
    assert_eq!(g.family, Family::Ipv4);
    assert_eq!(g.advertise_interval, Centis::new(100).unwrap());
    assert!(g.preempt);
    assert_eq!(g.preempt_delay, Duration::ZERO);
    assert!(!g.accept);
    assert!(!g.vmac);
    assert!(g.peer_addresses.is_empty());
    assert_eq!(g.hello_source_address, None);
    assert!(g.track_interfaces.is_empty());
    assert_eq!(g.sync_group, None);
    assert!(c.sync_groups.is_empty());
    assert_eq!(c.conntrack_sync, None);
    assert_eq!(c.bgp, None);
}

#[test]
fn daemon_section_values() {
    let c = ok(&format!(
        r#"
[daemon]
router-id = "edge-a"
socket = "/tmp/v.sock"
metrics = "[::1]:9469"
checksum = "rfc9568"
realtime-priority = 0
{GROUP}"#
    ));
    assert_eq!(c.daemon.realtime_priority, 0);
    assert_eq!(c.daemon.router_id, "edge-a");
    assert_eq!(c.daemon.socket, PathBuf::from("/tmp/v.sock"));
    assert_eq!(c.daemon.metrics, Some("[::1]:9469".parse().unwrap()));
    assert_eq!(c.daemon.checksum, ChecksumForm::Rfc9568);
}

#[test]
fn daemon_section_errors_are_all_reported() {
    let e = errors(&format!(
        r#"
[daemon]
router-id = ""
socket = "run/vrrpd.sock"
metrics = "localhost"
checksum = "rfc5798"
realtime-priority = 100
colour = "blue"
{GROUP}"#
    ));
    assert_eq!(
        e,
        vec![
            "daemon.colour: unknown key",
            "daemon.router-id: must not be empty",
            "daemon.socket: must be an absolute path, got \"run/vrrpd.sock\"",
            "daemon.metrics: invalid socket address \"localhost\"; write e.g. \"127.0.0.1:9469\" or \"[::1]:9469\"",
            "daemon.checksum: must be \"pseudo-header\" or \"rfc9568\", got \"rfc5798\"",
            "daemon.realtime-priority: must be 0..=99, got 100",
        ]
    );
}

#[test]
fn daemon_must_be_a_table() {
    one_error(
        &format!("daemon = 1\n{GROUP}"),
        "daemon: expected a table, got an integer",
    );
}

#[test]
fn unknown_top_level_key_suggests_the_right_one() {
    one_error(
        &format!("[groups.b]\n{GROUP}"),
        "groups: unknown key (did you mean \"group\"?)",
    );
}

#[test]
fn at_least_one_group() {
    one_error(
        "[daemon]\nrouter-id = \"x\"\n",
        "group: at least one group is required ([group.NAME] with interface, vrid, priority and address)",
    );
    one_error(
        "group = {}\n",
        "group: at least one group is required ([group.NAME] with interface, vrid, priority and address)",
    );
    one_error(
        "group = 3\n",
        "group: expected a table of named groups ([group.NAME]), got an integer",
    );
}

#[test]
fn syntax_error_is_one_error_with_line_and_column() {
    let e = parse("[daemon]\nrouter-id = \"x\"\nsocket = /run\n").unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert!(e.0[0].path.starts_with("line 3, column "), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let e = parse(&format!("{GROUP}vrid = 2\n")).unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert!(e.0[0].path.starts_with("line 7, column "), "{e}");
}

// ---- [group.*] ----

#[test]
fn group_required_keys() {
    assert_eq!(
        errors("[group.a]\n"),
        vec![
            "group.a.interface: is required",
            "group.a.vrid: is required",
            "group.a.priority: is required",
            "group.a.address: is required",
        ]
    );
}

#[test]
fn group_unknown_key() {
    one_error(
        &group_with("colour = \"red\""),
        "group.a.colour: unknown key",
    );
    one_error(
        &group_with("addresses = [\"10.0.0.2\"]"),
        "group.a.addresses: unknown key (did you mean \"address\"?)",
    );
}

#[test]
fn group_names() {
    let c = ok(&GROUP.replace("group.a", "group.\"Dmz_v4.1-x\""));
    assert_eq!(c.groups[0].name, "Dmz_v4.1-x");
    one_error(
        &GROUP.replace("group.a", "group.\"a b\""),
        "group.\"a b\": invalid name: use only letters, digits, '_', '.' and '-'",
    );
}

#[test]
fn groups_are_sorted_by_name() {
    let text = format!(
        "{}{}{GROUP}",
        GROUP
            .replace("group.a", "group.c")
            .replace("vrid = 1", "vrid = 3")
            .replace("10.0.0.1", "10.0.0.3"),
        GROUP
            .replace("group.a", "group.b")
            .replace("vrid = 1", "vrid = 2")
            .replace("10.0.0.1", "10.0.0.2"),
    );
    let names: Vec<_> = ok(&text).groups.into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn group_must_be_a_table() {
    one_error(
        &format!("{GROUP}[group]\nb = 3\n"),
        "group.b: expected a table, got an integer",
    );
}

#[test]
fn interface_names() {
    for (name, why) in [
        ("", "an interface name must not be empty"),
        ("a-very-long-name", "an interface name is at most 15 bytes"),
        (
            "eth/1",
            "an interface name must not contain '/', ':' or whitespace",
        ),
        (
            "eth0:1",
            "an interface name must not contain '/', ':' or whitespace",
        ),
        (
            "eth 1",
            "an interface name must not contain '/', ':' or whitespace",
        ),
        ("..", "not a valid interface name"),
    ] {
        one_error(
            &GROUP.replace("\"eth1\"", &format!("{name:?}")),
            &format!("group.a.interface: {why}, got {name:?}"),
        );
    }
    // 15 bytes is the limit; dots and dashes are fine.
    ok(&GROUP.replace("\"eth1\"", "\"br-lan.100-abcd\""));
}

#[test]
fn vrid_range() {
    one_error(
        &GROUP.replace("vrid = 1", "vrid = 0"),
        "group.a.vrid: must be 1..=255, got 0",
    );
    one_error(
        &GROUP.replace("vrid = 1", "vrid = 256"),
        "group.a.vrid: must be 1..=255, got 256",
    );
    one_error(
        &GROUP.replace("vrid = 1", "vrid = \"1\""),
        "group.a.vrid: expected an integer, got a string",
    );
    assert_eq!(
        ok(&GROUP.replace("vrid = 1", "vrid = 255")).groups[0].vrid,
        255
    );
}

#[test]
fn priority_range() {
    one_error(
        &GROUP.replace("priority = 100", "priority = 0"),
        "group.a.priority: must be 1..=255, got 0",
    );
    one_error(
        &GROUP.replace("priority = 100", "priority = 256"),
        "group.a.priority: must be 1..=255, got 256",
    );
    one_error(
        &GROUP.replace("priority = 100", "priority = \"high\""),
        "group.a.priority: expected an integer, got a string",
    );
    one_error(
        &GROUP.replace("priority = 100", "priority = 1.5"),
        "group.a.priority: expected an integer, got a float",
    );
    // 255: the address owner.
    assert_eq!(
        ok(&GROUP.replace("priority = 100", "priority = 255")).groups[0].priority,
        255
    );
}

#[test]
fn addresses_parse_with_or_without_prefix() {
    let c = ok(&GROUP.replace(
        r#"["10.0.0.1/24"]"#,
        r#"["10.0.0.1/24", "10.0.1.1", " 10.0.2.1/32 "]"#,
    ));
    let a: Vec<String> = c.groups[0]
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(a, ["10.0.0.1/24", "10.0.1.1/32", "10.0.2.1/32"]);

    let c = ok(&GROUP.replace(r#"["10.0.0.1/24"]"#, r#"["2001:db8::1/64", "fe80::1"]"#));
    assert_eq!(c.groups[0].family, Family::Ipv6);
    assert_eq!(c.groups[0].addresses[1].to_string(), "fe80::1/128");
}

#[test]
fn address_errors() {
    one_error(
        &GROUP.replace(r#"["10.0.0.1/24"]"#, "[]"),
        "group.a.address: must list at least one virtual address",
    );
    one_error(
        &GROUP.replace(r#"["10.0.0.1/24"]"#, r#""10.0.0.1/24""#),
        "group.a.address: expected an array of strings, got a string",
    );
    one_error(
        &GROUP.replace(r#"["10.0.0.1/24"]"#, r#"["10.0.0.1/24", 3]"#),
        "group.a.address: expected an array of strings, found an integer in it",
    );
    assert_eq!(
        errors(&GROUP.replace(r#"["10.0.0.1/24"]"#, r#"["10.0.0.1/33", "nope"]"#)),
        vec![
            "group.a.address: invalid address \"10.0.0.1/33\"; write an address with an optional prefix length, e.g. \"10.0.0.1/24\"",
            "group.a.address: invalid address \"nope\"; write an address with an optional prefix length, e.g. \"10.0.0.1/24\"",
        ]
    );
    one_error(
        &GROUP.replace(r#"["10.0.0.1/24"]"#, r#"["224.0.0.18"]"#),
        "group.a.address: \"224.0.0.18\" cannot be a virtual address (multicast)",
    );
    one_error(
        &GROUP.replace(r#"["10.0.0.1/24"]"#, r#"["0.0.0.0/0"]"#),
        "group.a.address: \"0.0.0.0/0\" cannot be a virtual address (unspecified)",
    );
}

#[test]
fn address_mixing_families() {
    one_error(
        &GROUP.replace(
            r#"["10.0.0.1/24"]"#,
            r#"["10.0.0.1/24", "2001:db8::1/64", "10.0.0.2/24"]"#,
        ),
        "group.a.address: mixes IPv4 and IPv6 addresses (\"10.0.0.1/24\", \"2001:db8::1/64\"); use one group per family",
    );
    // Listed in the order written.
    one_error(
        &GROUP.replace(r#"["10.0.0.1/24"]"#, r#"["2001:db8::1/64", "10.0.0.1/24"]"#),
        "group.a.address: mixes IPv4 and IPv6 addresses (\"2001:db8::1/64\", \"10.0.0.1/24\"); use one group per family",
    );
}

#[test]
fn mixed_group_does_not_cause_family_noise() {
    // The family is unknown, so peer/hello family checks are skipped (no second error).
    one_error(
        &group_with("peer-address = [\"10.0.0.3\"]\nhello-source-address = \"10.0.0.2\"")
            .replace(r#"["10.0.0.1/24"]"#, r#"["10.0.0.1/24", "2001:db8::1/64"]"#),
        "group.a.address: mixes IPv4 and IPv6 addresses (\"10.0.0.1/24\", \"2001:db8::1/64\"); use one group per family",
    );
}

#[test]
fn address_duplicates() {
    one_error(
        &GROUP.replace(
            r#"["10.0.0.1/24"]"#,
            r#"["10.0.0.1/24", "10.0.0.1/32", "10.0.0.2", "10.0.0.1"]"#,
        ),
        "group.a.address: \"10.0.0.1\" is listed 3 times",
    );
    one_error(
        &GROUP.replace(r#"["10.0.0.1/24"]"#, r#"["10.0.0.1/24", "10.0.0.1/24"]"#),
        "group.a.address: \"10.0.0.1\" is listed twice",
    );
}

#[test]
fn advertise_interval() {
    let c = ok(&group_with("advertise-interval = \"10ms\""));
    assert_eq!(c.groups[0].advertise_interval, Centis::new(1).unwrap());
    let c = ok(&group_with("advertise-interval = \"40.95s\""));
    assert_eq!(c.groups[0].advertise_interval, Centis::MAX);
    let c = ok(&group_with("advertise-interval = \"250ms\""));
    assert_eq!(c.groups[0].advertise_interval, Centis::new(25).unwrap());

    one_error(
        &group_with("advertise-interval = \"5ms\""),
        "group.a.advertise-interval: must be a multiple of 10ms, got \"5ms\"",
    );
    one_error(
        &group_with("advertise-interval = \"1015ms\""),
        "group.a.advertise-interval: must be a multiple of 10ms, got \"1015ms\"",
    );
    one_error(
        &group_with("advertise-interval = \"41s\""),
        "group.a.advertise-interval: must be within 10ms..=40.95s, got \"41s\"",
    );
    one_error(
        &group_with("advertise-interval = \"0s\""),
        "group.a.advertise-interval: must be within 10ms..=40.95s, got \"0s\"",
    );
}

#[test]
fn durations_need_a_unit() {
    one_error(
        &group_with("advertise-interval = 1"),
        "group.a.advertise-interval: a duration needs a unit: write e.g. \"1s\" or \"1ms\", got 1",
    );
    one_error(
        &group_with("preempt-delay = \"30\""),
        "group.a.preempt-delay: a duration needs a unit: write e.g. \"30s\" or \"30ms\", got \"30\"",
    );
    one_error(
        &group_with("preempt-delay = \"0\""),
        "group.a.preempt-delay: a duration needs a unit: write e.g. \"0s\" or \"0ms\", got \"0\"",
    );
    one_error(
        &group_with("preempt-delay = \"soon\""),
        "group.a.preempt-delay: invalid duration \"soon\" (expected number at 0); write e.g. \"1s\" or \"100ms\"",
    );
    one_error(
        &group_with("preempt-delay = true"),
        "group.a.preempt-delay: expected a duration such as \"1s\" or \"100ms\", got a boolean",
    );
}

#[test]
fn preempt_delay() {
    let c = ok(&group_with("preempt-delay = \"2m\""));
    assert_eq!(c.groups[0].preempt_delay, Duration::from_secs(120));
    let c = ok(&group_with("preempt-delay = \"1h\""));
    assert_eq!(c.groups[0].preempt_delay, Duration::from_secs(3600));
    one_error(
        &group_with("preempt-delay = \"61m\""),
        "group.a.preempt-delay: must be within 0s..=1h, got \"61m\"",
    );
}

#[test]
fn booleans() {
    let c = ok(&group_with("preempt = false\naccept = true\nvmac = true"));
    let g = &c.groups[0];
    assert!(!g.preempt && g.accept && g.vmac);
    assert_eq!(
        errors(&group_with("preempt = \"no\"\naccept = 1\nvmac = \"true\"")),
        vec![
            "group.a.preempt: expected a boolean (true or false), got a string",
            "group.a.accept: expected a boolean (true or false), got an integer",
            "group.a.vmac: expected a boolean (true or false), got a string",
        ]
    );
}

#[test]
fn peer_addresses() {
    let c = ok(&group_with("peer-address = [\"10.0.0.3\", \"10.0.9.3\"]"));
    let want: Vec<IpAddr> = vec!["10.0.0.3".parse().unwrap(), "10.0.9.3".parse().unwrap()];
    assert_eq!(c.groups[0].peer_addresses, want);
    assert_eq!(
        errors(&group_with(
            "peer-address = [\"2001:db8::3\", \"10.0.0.3/24\", \"224.0.0.18\", \"10.0.0.4\", \"10.0.0.4\"]"
        )),
        vec![
            "group.a.peer-address: \"2001:db8::3\" is IPv6 but the group's addresses are IPv4",
            "group.a.peer-address: invalid IP address \"10.0.0.3/24\"",
            "group.a.peer-address: \"224.0.0.18\" is not a unicast address",
        ]
    );
    one_error(
        &group_with("peer-address = [\"10.0.0.4\", \"10.0.0.4\"]"),
        "group.a.peer-address: \"10.0.0.4\" is listed twice",
    );
}

#[test]
fn hello_source_address() {
    let c = ok(&group_with("hello-source-address = \"10.0.0.2\""));
    assert_eq!(
        c.groups[0].hello_source_address,
        Some("10.0.0.2".parse().unwrap())
    );
    one_error(
        &group_with("hello-source-address = \"fe80::2\""),
        "group.a.hello-source-address: \"fe80::2\" is IPv6 but the group's addresses are IPv4",
    );
    one_error(
        &group_with("hello-source-address = \"eth1\""),
        "group.a.hello-source-address: invalid IP address \"eth1\"",
    );
}

#[test]
fn track_interfaces() {
    let c = ok(&group_with("track-interface = [\"eth0\", \"bond0.10\"]"));
    assert_eq!(c.groups[0].track_interfaces, ["eth0", "bond0.10"]);
    assert_eq!(
        errors(&group_with(
            "track-interface = [\"eth0\", \"a/b\", \"eth0\"]"
        )),
        vec![
            "group.a.track-interface: an interface name must not contain '/', ':' or whitespace, got \"a/b\"",
        ]
    );
    one_error(
        &group_with("track-interface = [\"eth0\", \"eth0\"]"),
        "group.a.track-interface: \"eth0\" is listed twice",
    );
    one_error(
        &group_with("track-interface = \"eth0\""),
        "group.a.track-interface: expected an array of strings, got a string",
    );
}

#[test]
fn every_group_error_is_reported() {
    let e = errors(
        r#"
[group.a]
interface = "eth1/x"
vrid = 0
priority = 256
address = ["10.0.0.1/24", "2001:db8::1/64"]
advertise-interval = "5ms"
preempt-delay = "2h"
colour = "red"
"#,
    );
    assert_eq!(e.len(), 7, "{e:#?}");
}

// ---- across groups ----

#[test]
fn vrid_unique_per_interface_and_family() {
    let b = GROUP
        .replace("group.a", "group.b")
        .replace("10.0.0.1", "10.0.0.2");
    one_error(
        &format!("{GROUP}{b}"),
        "group.b.vrid: VRID 1 on eth1 (ipv4) is already used by group \"a\"",
    );
    // Another interface, or another family: fine.
    ok(&format!("{GROUP}{}", b.replace("eth1", "eth2")));
    ok(&format!(
        "{GROUP}{}",
        b.replace("10.0.0.2/24", "2001:db8::1/64")
    ));
}

#[test]
fn virtual_address_in_one_group_only() {
    let b = GROUP
        .replace("group.a", "group.b")
        .replace("eth1", "eth2")
        .replace(r#"["10.0.0.1/24"]"#, r#"["10.0.0.9/24", "10.0.0.1/32"]"#);
    one_error(
        &format!("{GROUP}{b}"),
        "group.b.address: \"10.0.0.1\" is already a virtual address of group \"a\"",
    );
}

// ---- [sync-group.*] ----

fn two_groups() -> String {
    let b = GROUP
        .replace("group.a", "group.b")
        .replace(r#"["10.0.0.1/24"]"#, r#"["2001:db8::1/64"]"#);
    format!("{GROUP}{b}")
}

#[test]
fn sync_group_membership_fills_groups() {
    let c = ok(&format!(
        "{}[sync-group.MAIN]\nmember = [\"b\", \"a\"]\n",
        two_groups()
    ));
    assert_eq!(c.sync_groups.len(), 1);
    assert_eq!(c.sync_groups[0].name, "MAIN");
    assert_eq!(c.sync_groups[0].members, ["b", "a"]);
    assert_eq!(c.sync_groups[0].scripts, TransitionScripts::default());
    assert!(
        c.groups
            .iter()
            .all(|g| g.sync_group.as_deref() == Some("MAIN"))
    );
    assert_eq!(c.sync_group("MAIN").unwrap().name, "MAIN");
    assert_eq!(c.group("b").unwrap().family, Family::Ipv6);
}

#[test]
fn sync_group_member_errors() {
    one_error(
        &format!("{GROUP}[sync-group.MAIN]\nmember = [\"a\", \"nope\"]\n"),
        "sync-group.MAIN.member: \"nope\" names no group",
    );
    one_error(
        &format!("{GROUP}[sync-group.MAIN]\nmember = [\"a\", \"a\"]\n"),
        "sync-group.MAIN.member: \"a\" is listed twice",
    );
    one_error(
        &format!("{GROUP}[sync-group.MAIN]\nmember = []\n"),
        "sync-group.MAIN.member: must list at least one group",
    );
    one_error(
        &format!("{GROUP}[sync-group.MAIN]\n"),
        "sync-group.MAIN.member: is required",
    );
    one_error(
        &format!("{GROUP}[sync-group.MAIN]\nmember = [\"a\"]\nmembers = []\n"),
        "sync-group.MAIN.members: unknown key (did you mean \"member\"?)",
    );
    one_error(
        &format!("{GROUP}[sync-group.\"M M\"]\nmember = [\"a\"]\n"),
        "sync-group.\"M M\": invalid name: use only letters, digits, '_', '.' and '-'",
    );
}

#[test]
fn a_group_is_in_one_sync_group_at_most() {
    one_error(
        &format!(
            "{}[sync-group.A]\nmember = [\"a\"]\n[sync-group.B]\nmember = [\"b\", \"a\"]\n",
            two_groups()
        ),
        "sync-group.B.member: group \"a\" is already a member of sync-group \"A\"",
    );
}

#[test]
fn member_of_an_invalid_group_is_no_extra_error() {
    // group.a is broken, but it exists: only its own error is reported.
    one_error(
        &format!(
            "{}[sync-group.MAIN]\nmember = [\"a\"]\n",
            GROUP.replace("vrid = 1", "vrid = 0")
        ),
        "group.a.vrid: must be 1..=255, got 0",
    );
}

#[test]
fn transition_scripts() {
    let c = ok(&format!(
        "{GROUP}[sync-group.MAIN]\nmember = [\"a\"]\ntransition-script = {{ master = \"/etc/vrrpd/master.sh\", stop = \"/etc/vrrpd/stop.sh\" }}\n"
    ));
    let s = &c.sync_groups[0].scripts;
    assert_eq!(s.master, Some(PathBuf::from("/etc/vrrpd/master.sh")));
    assert_eq!(s.backup, None);
    assert_eq!(s.fault, None);
    assert_eq!(s.stop, Some(PathBuf::from("/etc/vrrpd/stop.sh")));

    assert_eq!(
        errors(&format!(
            "{GROUP}[sync-group.MAIN]\nmember = [\"a\"]\ntransition-script = {{ master = \"master.sh\", backup = 1, init = \"/x\" }}\n"
        )),
        vec![
            "sync-group.MAIN.transition-script.init: unknown key",
            "sync-group.MAIN.transition-script.master: must be an absolute path, got \"master.sh\"",
            "sync-group.MAIN.transition-script.backup: expected a string, got an integer",
        ]
    );
    one_error(
        &format!("{GROUP}[sync-group.MAIN]\nmember = [\"a\"]\ntransition-script = \"/x.sh\"\n"),
        "sync-group.MAIN.transition-script: expected a table, got a string",
    );
}

// ---- [conntrack-sync] ----

fn with_sync(extra: &str) -> String {
    format!("{GROUP}[sync-group.MAIN]\nmember = [\"a\"]\n{extra}\n")
}

#[test]
fn conntrack_sync_values() {
    let c = ok(&with_sync(
        "[conntrack-sync]\nsync-group = \"MAIN\"\ninterface = \"eth3\"\npeer = \"10.76.9.2\"",
    ));
    let ct = c.conntrack_sync.unwrap();
    assert_eq!(ct.sync_group, "MAIN");
    assert_eq!(ct.interface, "eth3");
    assert_eq!(ct.peer, "10.76.9.2".parse::<IpAddr>().unwrap());
    assert_eq!(ct.port, 3780);
    assert_eq!(ct.key_file, None);
    assert!(ct.ignore_addresses.is_empty());

    let c = ok(&with_sync(
        "[conntrack-sync]\nsync-group = \"MAIN\"\ninterface = \"eth3\"\npeer = \"fd00::2\"\nport = 4000\nkey-file = \"/etc/vrrpd/sync.key\"\nignore-address = [\"10.76.9.0/30\", \"192.0.2.7\"]",
    ));
    let ct = c.conntrack_sync.unwrap();
    assert_eq!(ct.port, 4000);
    assert_eq!(ct.key_file, Some(PathBuf::from("/etc/vrrpd/sync.key")));
    let ign: Vec<String> = ct
        .ignore_addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ign, ["10.76.9.0/30", "192.0.2.7/32"]);
}

#[test]
fn conntrack_sync_errors() {
    assert_eq!(
        errors(&with_sync(
            "[conntrack-sync]\nsync-group = \"OTHER\"\npeer = \"10.76.9.2/30\"\nport = 0\nkey-file = \"sync.key\"\nignore-address = [\"x\"]\nmode = \"ftfw\"",
        )),
        vec![
            "conntrack-sync.mode: unknown key",
            "conntrack-sync.sync-group: \"OTHER\" names no sync-group",
            "conntrack-sync.interface: is required",
            "conntrack-sync.peer: invalid IP address \"10.76.9.2/30\"",
            "conntrack-sync.port: must be 1..=65535, got 0",
            "conntrack-sync.key-file: must be an absolute path, got \"sync.key\"",
            "conntrack-sync.ignore-address: invalid address \"x\"; write an address with an optional prefix length, e.g. \"10.0.0.1/24\"",
        ]
    );
    one_error(
        &with_sync(
            "[conntrack-sync]\nsync-group = \"MAIN\"\ninterface = \"eth3\"\npeer = \"10.76.9.2\"\nport = 65536",
        ),
        "conntrack-sync.port: must be 1..=65535, got 65536",
    );
    one_error(
        &format!(
            "{GROUP}[conntrack-sync]\nsync-group = \"MAIN\"\ninterface = \"eth3\"\npeer = \"10.76.9.2\""
        ),
        "conntrack-sync.sync-group: \"MAIN\" names no sync-group",
    );
}

// ---- [bgp] ----

const BGP: &str =
    "[bgp]\nsync-group = \"MAIN\"\ndriver = \"bird\"\nlocal-as = 4288000595\nprepend-backup = 2\n";

#[test]
fn bgp_values_and_defaults() {
    let b = ok(&with_sync(BGP)).bgp.unwrap();
    assert_eq!(b.sync_group, "MAIN");
    assert_eq!(b.driver, BgpDriver::Bird);
    assert_eq!(b.local_as, 4_288_000_595);
    assert_eq!(b.prepend_master, 0);
    assert_eq!(b.prepend_backup, 2);
    assert_eq!(
        b.bird_include_file,
        PathBuf::from("/etc/bird/vrrpd-prepend.conf")
    );
    assert_eq!(b.bird_socket, PathBuf::from("/run/bird/bird.ctl"));
    assert_eq!(b.frr_route_map, "VRRPD-PREPEND");
    assert_eq!(b.frr_sequence, 10);
    assert_eq!(b.frr_vtysh, vec!["/usr/bin/vtysh"]);
    assert!(b.exec_command.is_empty());

    let b = ok(&with_sync(&format!(
        "{BGP}prepend-master = 1\nbird.include-file = \"/etc/bird/x.conf\"\nbird.socket = \"/run/b.ctl\"\n"
    )))
    .bgp
    .unwrap();
    assert_eq!(b.prepend_master, 1);
    assert_eq!(b.bird_include_file, PathBuf::from("/etc/bird/x.conf"));
    assert_eq!(b.bird_socket, PathBuf::from("/run/b.ctl"));

    let b = ok(&with_sync(&format!(
        "{}frr.route-map = \"EDGE_OUT-1.v4\"\nfrr.sequence = 65535\nfrr.vtysh = [\"/usr/bin/vtysh\", \"-N\", \"edge a\"]\n",
        BGP.replace("\"bird\"", "\"frr\"")
    )))
    .bgp
    .unwrap();
    assert_eq!(b.driver, BgpDriver::Frr);
    assert_eq!(b.frr_route_map, "EDGE_OUT-1.v4");
    assert_eq!(b.frr_sequence, 65535);
    assert_eq!(b.frr_vtysh, vec!["/usr/bin/vtysh", "-N", "edge a"]);

    let b = ok(&with_sync(&format!(
        "{}exec.command = [\"/usr/local/bin/bgp-prepend\", \"--as\", \"$AS; rm -rf /\"]\n",
        BGP.replace("\"bird\"", "\"exec\"")
    )))
    .bgp
    .unwrap();
    assert_eq!(b.driver, BgpDriver::Exec);
    // Arguments are kept verbatim: nothing is split or interpreted.
    assert_eq!(
        b.exec_command,
        vec!["/usr/local/bin/bgp-prepend", "--as", "$AS; rm -rf /"]
    );
    assert_eq!(BgpDriver::Frr.to_string(), "frr");
    assert_eq!(BgpDriver::Exec.to_string(), "exec");
    assert_eq!(
        ok(&with_sync(&BGP.replace("4288000595", "4294967295")))
            .bgp
            .unwrap()
            .local_as,
        u32::MAX
    );
}

#[test]
fn bgp_errors() {
    assert_eq!(
        errors(&with_sync(
            "[bgp]\nsync-group = \"NOPE\"\ndriver = \"gobgp\"\nlocal-as = 0\nprepend-master = 17\nprepend-backup = -1\nbird.socket = \"bird.ctl\"\nbird.port = 1\nfrr.vty = \"x\"\n"
        )),
        vec![
            "bgp.sync-group: \"NOPE\" names no sync-group",
            "bgp.driver: must be \"bird\", \"frr\" or \"exec\", got \"gobgp\"",
            "bgp.local-as: must be 1..=4294967295, got 0",
            "bgp.prepend-master: must be 0..=16, got 17",
            "bgp.prepend-backup: must be 0..=16, got -1",
            "bgp.bird.port: unknown key",
            "bgp.bird.socket: must be an absolute path, got \"bird.ctl\"",
            "bgp.frr.vty: unknown key (did you mean \"vtysh\"?)",
        ]
    );
    one_error(
        &with_sync(&BGP.replace("4288000595", "4294967296")),
        "bgp.local-as: must be 1..=4294967295, got 4294967296",
    );
    one_error(
        &with_sync(&format!("{BGP}prepend-master = 2\n")),
        "bgp.prepend-backup: must be greater than prepend-master (2) so that the master's routes are preferred, got 2",
    );
    one_error(
        &with_sync(&BGP.replace("prepend-backup = 2\n", "")),
        "bgp.prepend-backup: is required",
    );
    one_error(
        &with_sync(
            &BGP.replace("\"bird\"", "\"frr\"")
                .replace("prepend-backup", "bird.socket = \"/x\"\nprepend-backup"),
        ),
        "bgp.bird: only used with driver = \"bird\", but driver is \"frr\"",
    );
    // The exec driver needs its command.
    let exec = BGP.replace("\"bird\"", "\"exec\"");
    one_error(
        &with_sync(&exec),
        "bgp.exec.command: is required with driver = \"exec\"",
    );
    one_error(
        &with_sync(&format!("{exec}[bgp.exec]\n")),
        "bgp.exec.command: is required with driver = \"exec\"",
    );
    let frr = BGP.replace("\"bird\"", "\"frr\"");
    assert_eq!(
        errors(&with_sync(&format!(
            "{frr}frr.route-map = \"A B\"\nfrr.sequence = 0\nfrr.vtysh = [\"vtysh\", \"-c\"]\nfrr.neighbor = \"x\"\n"
        ))),
        vec![
            "bgp.frr.neighbor: unknown key",
            "bgp.frr.route-map: must be 1-64 characters of A-Z a-z 0-9 - _ ., got \"A B\"",
            "bgp.frr.sequence: must be 1..=65535, got 0",
            "bgp.frr.vtysh: the program must be an absolute path, got \"vtysh\"",
        ]
    );
    one_error(
        &with_sync(&format!("{exec}exec.command = []\n")),
        "bgp.exec.command: must name a program: [\"/path/to/program\", \"arg\", ...]",
    );
    one_error(
        &with_sync(&format!("{exec}exec.command = \"/bin/prepend 2\"\n")),
        "bgp.exec.command: expected an array of strings, got a string",
    );
    one_error(
        &with_sync(&format!("{BGP}exec.command = [\"/bin/true\"]\n")),
        "bgp.exec: only used with driver = \"exec\", but driver is \"bird\"",
    );
    // Empty driver sub-tables are accepted where nothing is required.
    ok(&with_sync(&format!("{frr}[bgp.frr]\n")));
}

// ---- errors, load ----

#[test]
fn errors_display_one_line_each() {
    let e = parse(
        &GROUP
            .replace("vrid = 1", "vrid = 0")
            .replace("priority = 100", "priority = 0"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "group.a.vrid: must be 1..=255, got 0\ngroup.a.priority: must be 1..=255, got 0"
    );
    assert_eq!(e.0[0].path, "group.a.vrid");
    assert_eq!(e.0[0].message, "must be 1..=255, got 0");
}

#[test]
fn control_chars_in_values_stay_on_one_line() {
    let e = parse(&GROUP.replace("\"eth1\"", "\"eth\\n1\"")).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn load_reports_unreadable_file_with_its_path() {
    let e = load(Path::new("/nonexistent/vrrpd.toml")).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e.0[0].path, "/nonexistent/vrrpd.toml");
    assert!(
        e.0[0]
            .message
            .starts_with("cannot read the configuration: "),
        "{e}"
    );
}

#[test]
fn load_and_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vrrpd.toml");
    std::fs::write(
        &path,
        format!("[daemon]\nsocket = \"/tmp/x.sock\"\n{GROUP}"),
    )
    .unwrap();
    assert_eq!(
        load(&path).unwrap().daemon.socket,
        PathBuf::from("/tmp/x.sock")
    );
    assert_eq!(control_socket(&path), PathBuf::from("/tmp/x.sock"));
    // Even when the rest of the file is invalid.
    std::fs::write(&path, "[daemon]\nsocket = \"/tmp/y.sock\"\n").unwrap();
    assert!(load(&path).is_err());
    assert_eq!(control_socket(&path), PathBuf::from("/tmp/y.sock"));
    assert_eq!(
        control_socket(&dir.path().join("missing.toml")),
        PathBuf::from(DEFAULT_SOCKET)
    );
}
