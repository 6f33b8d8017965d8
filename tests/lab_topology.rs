//! The network-namespace lab itself, without vrrpd: the topology is what netns-lab/README.md
//! says, static VIPs on router a carry client <-> server traffic, `cut` isolates a router
//! without its link going down, and nothing is left behind. Needs root.

mod lab;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use lab::*;

const SECOND: Duration = Duration::from_secs(1);

/// Puts the four VIPs on router a by hand, as a master would.
fn static_vips_on_a(lab: &Lab) {
    lab.exec_ok("a", &["ip", "addr", "add", "10.76.2.1/24", "dev", "eth1"]);
    lab.exec_ok(
        "a",
        &[
            "ip",
            "addr",
            "add",
            "2001:db8:5:416::1/64",
            "dev",
            "eth1",
            "nodad",
        ],
    );
    lab.exec_ok("a", &["ip", "addr", "add", "10.76.4.1/24", "dev", "eth2"]);
    lab.exec_ok(
        "a",
        &[
            "ip",
            "addr",
            "add",
            "2001:db8:5:34cd::1/64",
            "dev",
            "eth2",
            "nodad",
        ],
    );
}

fn global(addrs: Vec<String>) -> Vec<String> {
    addrs
        .into_iter()
        .filter(|a| !a.starts_with("fe80:"))
        .collect()
}

#[test]
fn lab_is_built_as_documented() -> Result<()> {
    let lab = Lab::up("topo")?;

    for bridge in ["br-lan", "br-wan", "br-sync"] {
        let link = lab.link("br", bridge);
        let info = &link["linkinfo"]["info_data"];
        assert_eq!(link["operstate"], "UP", "{bridge}: {link}");
        assert_eq!(info["stp_state"], 0, "{bridge}: {info}");
        assert_eq!(info["mcast_snooping"], 0, "{bridge}: {info}");
        assert_eq!(info["forward_delay"], 0, "{bridge}: {info}");
    }
    for (port, bridge) in [
        ("a-lan", "br-lan"),
        ("a-wan", "br-wan"),
        ("a-sync", "br-sync"),
        ("b-lan", "br-lan"),
        ("b-wan", "br-wan"),
        ("b-sync", "br-sync"),
        ("client-lan", "br-lan"),
        ("server-wan", "br-wan"),
    ] {
        assert_eq!(lab.link("br", port)["master"], bridge, "{port}");
    }

    for (router, host, sync) in [("a", 2, 1), ("b", 3, 2)] {
        for dev in ["eth1", "eth2", "eth3"] {
            assert!(
                lab.link_up_with_carrier(router, dev),
                "{router} {dev}: {}",
                lab.link(router, dev)
            );
        }
        assert_eq!(
            global(lab.addresses(router, "eth1")),
            [
                format!("10.76.2.{host}/24"),
                format!("2001:db8:5:416::{host}/64")
            ]
        );
        assert_eq!(
            global(lab.addresses(router, "eth2")),
            [
                format!("10.76.4.{host}/24"),
                format!("2001:db8:5:34cd::{host}/64")
            ]
        );
        assert_eq!(
            global(lab.addresses(router, "eth3")),
            [format!("10.76.9.{sync}/30")]
        );
        assert_eq!(
            lab.exec_ok(router, &["sysctl", "-n", "net.ipv4.ip_forward"])
                .trim(),
            "1"
        );
        assert_eq!(
            lab.exec_ok(router, &["sysctl", "-n", "net.ipv6.conf.all.forwarding"])
                .trim(),
            "1"
        );
    }
    assert_eq!(
        global(lab.addresses("client", "eth0")),
        ["10.76.2.10/24", "2001:db8:5:416::10/64"]
    );
    assert_eq!(
        global(lab.addresses("server", "eth0")),
        ["10.76.4.10/24", "2001:db8:5:34cd::10/64"]
    );
    assert!(
        lab.exec_ok("client", &["ip", "route", "show", "default"])
            .contains("via 10.76.2.1 ")
    );
    assert!(
        lab.exec_ok("client", &["ip", "-6", "route", "show", "default"])
            .contains("via 2001:db8:5:416::1 ")
    );
    assert!(
        lab.exec_ok("server", &["ip", "route", "show", "default"])
            .contains("via 10.76.4.1 ")
    );
    assert!(
        lab.exec_ok("server", &["ip", "-6", "route", "show", "default"])
            .contains("via 2001:db8:5:34cd::1 ")
    );

    // Every segment carries traffic between the routers; the VIPs are nowhere yet.
    assert!(
        lab.ping("a", "10.76.2.3", 1, 3 * SECOND),
        "a -> b on the LAN"
    );
    assert!(
        lab.ping("a", "2001:db8:5:34cd::3", 1, 3 * SECOND),
        "a -> b on the WAN (v6)"
    );
    assert!(
        lab.ping("a", "10.76.9.2", 1, 3 * SECOND),
        "a -> b on the sync link"
    );
    assert!(
        lab.ping("client", "10.76.2.2", 1, 3 * SECOND),
        "client -> a"
    );
    assert!(
        !lab.ping("client", SERVER4, 1, SECOND),
        "client -> server without a VIP"
    );
    Ok(())
}

#[test]
fn static_vips_on_a_route_client_to_server_v4_and_v6() -> Result<()> {
    let lab = Lab::up("vips")?;
    static_vips_on_a(&lab);
    assert!(
        lab.ping("client", SERVER4, 3, 5 * SECOND),
        "client -> server over IPv4"
    );
    assert!(
        lab.ping("client", SERVER6, 3, 5 * SECOND),
        "client -> server over IPv6"
    );
    assert!(
        lab.ping("server", CLIENT4, 3, 5 * SECOND),
        "server -> client over IPv4"
    );
    assert!(
        lab.ping("server", CLIENT6, 3, 5 * SECOND),
        "server -> client over IPv6"
    );
    // The path really goes through router a: the VIP is answered by a's eth1.
    let a_mac = lab.link("a", "eth1")["address"]
        .as_str()
        .unwrap()
        .to_string();
    let neigh = lab.exec_ok("client", &["ip", "neigh", "show", LAN_VIP4]);
    assert!(
        neigh.contains(&a_mac),
        "client's neighbour entry for the VIP: {neigh} (a is {a_mac})"
    );
    Ok(())
}

#[test]
fn cut_isolates_a_router_without_link_down_and_restore_reconnects() -> Result<()> {
    let lab = Lab::up("cut")?;
    static_vips_on_a(&lab);
    assert!(lab.ping("client", SERVER4, 1, 5 * SECOND));
    assert!(lab.ping("client", SERVER6, 1, 5 * SECOND));

    lab.cut("a", "lan");
    assert!(
        !lab.ping("client", SERVER4, 1, SECOND),
        "client -> server while a is cut off the LAN"
    );
    assert!(
        !lab.ping("client", SERVER6, 1, SECOND),
        "(v6) while a is cut off the LAN"
    );
    assert!(
        !lab.ping("a", "10.76.2.3", 1, SECOND),
        "a -> b on the LAN while cut"
    );
    assert!(
        lab.ping("client", "10.76.2.3", 1, 3 * SECOND),
        "the LAN still works for the others"
    );
    assert!(
        lab.ping("a", "10.76.4.3", 1, 3 * SECOND),
        "a's WAN is not affected"
    );
    assert!(
        lab.link_up_with_carrier("a", "eth1"),
        "a's eth1 after cut: {}",
        lab.link("a", "eth1")
    );

    lab.restore("a", "lan");
    let took = wait_until(10 * SECOND, || lab.ping("client", SERVER4, 1, SECOND))?;
    eprintln!("v4 path back {took:?} after restore");
    wait_until(10 * SECOND, || lab.ping("client", SERVER6, 1, SECOND))?;

    // The WAN side: the server's replies go back through a's WAN VIP.
    lab.cut("a", "wan");
    assert!(
        !lab.ping("client", SERVER4, 1, SECOND),
        "client -> server while a is cut off the WAN"
    );
    assert!(lab.link_up_with_carrier("a", "eth2"));
    lab.restore("a", "wan");
    wait_until(10 * SECOND, || lab.ping("client", SERVER4, 1, SECOND))?;

    // All segments at once, the sync link included.
    lab.cut("a", "all");
    for dev in ["eth1", "eth2", "eth3"] {
        assert!(
            lab.link_up_with_carrier("a", dev),
            "a {dev} after cut all: {}",
            lab.link("a", dev)
        );
    }
    assert!(
        !lab.ping("a", "10.76.9.2", 1, SECOND),
        "a -> b on the sync link while cut"
    );
    assert!(!lab.ping("client", SERVER6, 1, SECOND));
    lab.restore("a", "all");
    wait_until(10 * SECOND, || lab.ping("a", "10.76.9.2", 1, SECOND))?;
    wait_until(10 * SECOND, || lab.ping("client", SERVER6, 1, SECOND))?;
    Ok(())
}

#[test]
fn down_removes_every_namespace_and_process_and_is_idempotent() -> Result<()> {
    let lab = Lab::up("down")?;
    let prefix = lab.prefix().to_string();
    assert_eq!(
        namespaces_of(&prefix).len(),
        5,
        "{:?}",
        namespaces_of(&prefix)
    );
    // A process left running in the lab (it would keep its namespace alive) is stopped too.
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &lab.ns("b"), "sleep", "60"])
        .spawn()?;
    wait_until(5 * SECOND, || {
        Command::new("ip")
            .args(["netns", "pids", &lab.ns("b")])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    })?;
    let out = lab_sh(&[
        "exec", &prefix, "client", "--", "ip", "-br", "addr", "show", "dev", "eth0",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.76.2.10/24"),
        "lab.sh exec: {out:?}"
    );

    lab.down()?;
    assert_eq!(namespaces_of(&prefix), Vec::<String>::new());
    let status = sleeper.wait()?;
    assert!(!status.success(), "the sleeper was killed: {status}");
    assert!(lab_sh(&["down", &prefix]).status.success(), "down twice");

    // Dropping a lab removes it as well.
    let lab = Lab::up("drop")?;
    let prefix = lab.prefix().to_string();
    drop(lab);
    assert_eq!(namespaces_of(&prefix), Vec::<String>::new());

    // A partial lab (here one namespace of it) is removed without complaint.
    let prefix = unique_prefix("part");
    assert!(
        Command::new("ip")
            .args(["netns", "add", &format!("{prefix}-a")])
            .status()?
            .success()
    );
    assert!(lab_sh(&["down", &prefix]).status.success());
    assert_eq!(namespaces_of(&prefix), Vec::<String>::new());
    Ok(())
}

#[test]
fn failed_up_removes_what_it_built() -> Result<()> {
    require_root()?;
    for stage in ["namespaces", "bridges", "links", "addresses"] {
        let prefix = unique_prefix("fail");
        let out = Command::new(lab_script())
            .args(["up", &prefix])
            .env("LAB_FAIL_AT", stage)
            .output()?;
        assert!(
            !out.status.success(),
            "up with a failure at {stage} succeeded"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("removing what was built"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            namespaces_of(&prefix),
            Vec::<String>::new(),
            "left after failing at {stage}"
        );
    }
    // `up` on a prefix that is in use fails and leaves the other lab alone.
    let lab = Lab::up("busy")?;
    let out = lab_sh(&["up", lab.prefix()]);
    assert!(!out.status.success());
    assert_eq!(namespaces_of(lab.prefix()).len(), 5);
    assert!(lab.ping("a", "10.76.2.3", 1, 3 * SECOND));
    Ok(())
}

/// The demo configs: `lab.sh config` renders the template, the static router-a/b.toml are the
/// same config with the default socket, and the harness's `RouterConfig::new` builds it too.
#[test]
fn demo_configs_agree_with_the_template_and_the_harness() -> Result<()> {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("netns-lab/configs");
    for (router, priority) in [("a", 200), ("b", 100)] {
        let out = lab_sh(&["config", "vlx", router, &priority.to_string()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8(out.stdout)?;
        assert!(!rendered.contains('@'), "placeholder left:\n{rendered}");
        let mut from_script: toml::Table = toml::from_str(&rendered)?;
        assert_eq!(
            from_script["daemon"]["socket"].as_str(),
            Some(format!("/tmp/vrrpd-lab-vlx/{router}.sock").as_str())
        );
        assert_eq!(
            from_script["daemon"]["router-id"].as_str(),
            Some(format!("edge-{router}").as_str())
        );
        let groups = from_script["group"].as_table().unwrap();
        assert_eq!(groups.len(), 4);
        for g in STD_GROUPS {
            let t = &groups[g.name];
            assert_eq!(t["interface"].as_str(), Some(g.interface));
            assert_eq!(t["vrid"].as_integer(), Some(i64::from(g.vrid)));
            assert_eq!(t["priority"].as_integer(), Some(priority));
            assert_eq!(t["address"].as_array().unwrap()[0].as_str(), Some(g.vip));
            assert_eq!(t["advertise-interval"].as_str(), Some("100ms"));
        }
        assert_eq!(
            from_script["sync-group"]["MAIN"]["member"]
                .as_array()
                .unwrap()
                .len(),
            4
        );

        let from_harness: toml::Table = toml::from_str(
            &RouterConfig::new(router, priority as u8)
                .render(Path::new(&format!("/tmp/vrrpd-lab-vlx/{router}.sock"))),
        )?;
        assert_eq!(
            from_harness, from_script,
            "RouterConfig::new vs lab.sh config"
        );

        let static_file: toml::Table = toml::from_str(&std::fs::read_to_string(
            configs.join(format!("router-{router}.toml")),
        )?)?;
        from_script["daemon"]["socket"] = toml::Value::from("/run/vrrpd/vrrpd.sock");
        assert_eq!(
            static_file, from_script,
            "router-{router}.toml vs router.toml.in"
        );
    }
    Ok(())
}

#[test]
fn router_config_builder_writes_the_options() -> Result<()> {
    let text = RouterConfig::new("b", 90)
        .interval(Duration::from_millis(250))
        .preempt(false)
        .preempt_delay(Duration::from_secs(2))
        .unicast()
        .track(&["eth3"])
        .groups(&["lan-v4", "wan-v6"])
        .extra("[conntrack-sync]\nsync-group = \"MAIN\"\n")
        .render(Path::new("/tmp/x.sock"));
    let t: toml::Table = toml::from_str(&text)?;
    let lan = &t["group"]["lan-v4"];
    assert_eq!(lan["priority"].as_integer(), Some(90));
    assert_eq!(lan["advertise-interval"].as_str(), Some("250ms"));
    assert_eq!(lan["preempt"].as_bool(), Some(false));
    assert_eq!(lan["preempt-delay"].as_str(), Some("2000ms"));
    assert_eq!(
        lan["peer-address"].as_array().unwrap()[0].as_str(),
        Some("10.76.2.2")
    );
    assert_eq!(
        lan["track-interface"].as_array().unwrap()[0].as_str(),
        Some("eth3")
    );
    assert_eq!(
        t["group"]["wan-v6"]["peer-address"][0].as_str(),
        Some("2001:db8:5:34cd::2")
    );
    assert_eq!(t["group"].as_table().unwrap().len(), 2);
    assert_eq!(
        t["sync-group"]["MAIN"]["member"].as_array().unwrap().len(),
        2
    );
    assert_eq!(t["conntrack-sync"]["sync-group"].as_str(), Some("MAIN"));

    let plain: toml::Table = toml::from_str(
        &RouterConfig::new("a", 200)
            .no_sync_group()
            .render(Path::new("/tmp/y.sock")),
    )?;
    assert!(!plain.contains_key("sync-group"));
    assert!(
        !plain["group"]["lan-v6"]
            .as_table()
            .unwrap()
            .contains_key("preempt")
    );
    assert_eq!(plain["group"]["lan-v6"]["priority"].as_integer(), Some(200));
    Ok(())
}

fn lab_sh(args: &[&str]) -> std::process::Output {
    Command::new(lab_script())
        .args(args)
        .output()
        .expect("running lab.sh")
}
