//! Two routers running the real `vrrpd` in network namespaces (netns-lab/): election, router
//! loss, recovery and preemption, graceful stop, SIGKILL and restart, interface tracking, sync
//! groups, unicast. Root only; every test builds and removes its own lab.

mod lab;

use std::time::Duration;

use lab::{Daemon, Lab, RouterConfig, SERVER4, SERVER6};

const INTERVAL_MS: u64 = 100;

/// Master_Down_Interval for the backup (priority 100) at 100 ms adverts: 300 ms + 156/256 * 100 ms.
const MDI_BACKUP: Duration = Duration::from_micros(360_938);
/// Skew_Time for priority 100 at 100 ms.
const SKEW_BACKUP: Duration = Duration::from_micros(60_938);
/// Slack for process scheduling and the 10 ms polling of `show groups` on a noisy 2-core VM.
const MARGIN: Duration = Duration::from_millis(400);

fn all_in(lab: &Lab, router: &str, state: &str) -> bool {
    lab.group_states(router)
        .is_ok_and(|s| s.len() == 4 && s.values().all(|v| v == state))
}

/// Both routers up with the four groups of MAIN; waits for a MASTER / b BACKUP.
fn elected(lab: &Lab, a: RouterConfig, b: RouterConfig) -> (Daemon, Daemon) {
    let da = lab.start_router(&a);
    let db = lab.start_router(&b);
    lab.wait_until(Duration::from_secs(10), || {
        all_in(lab, "a", "MASTER") && all_in(lab, "b", "BACKUP")
    })
    .expect("a MASTER and b BACKUP for all four groups");
    (da, db)
}

fn has_vips(lab: &Lab, router: &str) -> bool {
    let lan = lab.addresses(router, "eth1");
    let wan = lab.addresses(router, "eth2");
    ["10.76.2.1/24", "2001:db8:5:416::1/64"]
        .iter()
        .all(|v| lan.iter().any(|a| a == v))
        && ["10.76.4.1/24", "2001:db8:5:34cd::1/64"]
            .iter()
            .all(|v| wan.iter().any(|a| a == v))
}

fn has_any_vip(lab: &Lab, router: &str) -> bool {
    let mut all = lab.addresses(router, "eth1");
    all.extend(lab.addresses(router, "eth2"));
    [
        "10.76.2.1/24",
        "2001:db8:5:416::1/64",
        "10.76.4.1/24",
        "2001:db8:5:34cd::1/64",
    ]
    .iter()
    .any(|v| all.iter().any(|a| a == v))
}

#[test]
fn election_puts_all_groups_on_the_higher_priority_router() {
    let lab = Lab::up("el").expect("lab up");
    elected(
        &lab,
        RouterConfig::new("a", 200),
        RouterConfig::new("b", 100),
    );
    assert!(has_vips(&lab, "a"), "the master holds every VIP");
    assert!(!has_any_vip(&lab, "b"), "the backup holds none");
    let a = lab.show_groups("a");
    for g in a.as_array().unwrap() {
        assert_eq!(g["sync-group"], "MAIN");
        assert_eq!(g["advertise-interval-ms"], INTERVAL_MS);
        assert!(g["stats"]["adverts-tx"].as_u64().unwrap() > 0);
    }
    let b = lab.show_groups("b");
    for g in b.as_array().unwrap() {
        // The backup learnt the master's address and interval from its adverts.
        assert_eq!(g["master-advertise-interval-ms"], INTERVAL_MS);
        let master = g["master-address"].as_str().unwrap();
        assert!(
            master == "10.76.2.2" || master == "10.76.4.2" || master.starts_with("fe80::"),
            "{master}"
        );
        assert_eq!(g["stats"]["invalid-rx"], 0, "{g}");
    }
    assert!(
        lab.ping("client", SERVER4, 3, Duration::from_secs(5)),
        "client reaches the server through the IPv4 VIPs"
    );
    assert!(
        lab.ping("client", SERVER6, 3, Duration::from_secs(5)),
        "client reaches the server through the IPv6 VIPs"
    );
}

#[test]
fn router_loss_moves_every_group_within_master_down_interval_and_preempts_back() {
    let lab = Lab::up("loss").expect("lab up");
    elected(
        &lab,
        RouterConfig::new("a", 200),
        RouterConfig::new("b", 100),
    );
    lab.cut("a", "all");
    let took = lab
        .wait_until(Duration::from_secs(5), || all_in(&lab, "b", "MASTER"))
        .expect("b takes over every group");
    eprintln!(
        "measured: router-loss takeover of 4 groups {took:?} (Master_Down_Interval {MDI_BACKUP:?})"
    );
    assert!(
        took <= MDI_BACKUP + MARGIN,
        "takeover took {took:?}, Master_Down_Interval is {MDI_BACKUP:?}"
    );
    assert!(has_vips(&lab, "b"));
    assert!(
        lab.ping("client", SERVER4, 3, Duration::from_secs(5)),
        "traffic resumes through b"
    );
    assert!(lab.ping("client", SERVER6, 3, Duration::from_secs(5)));

    // Recovery: a has the higher priority and preempts.
    lab.restore("a", "all");
    lab.wait_until(Duration::from_secs(5), || {
        all_in(&lab, "a", "MASTER") && all_in(&lab, "b", "BACKUP")
    })
    .expect("a preempts back");
    assert!(!has_any_vip(&lab, "b"));
    assert!(lab.ping("client", SERVER4, 3, Duration::from_secs(5)));
}

#[test]
fn without_preempt_the_recovered_router_stays_backup() {
    let lab = Lab::up("nopre").expect("lab up");
    lab.start_router(&RouterConfig::new("b", 100));
    lab.wait_until(Duration::from_secs(5), || all_in(&lab, "b", "MASTER"))
        .expect("b alone is master");
    lab.start_router(&RouterConfig::new("a", 200).preempt(false));
    lab.wait_until(Duration::from_secs(5), || all_in(&lab, "a", "BACKUP"))
        .expect("a starts as BACKUP");
    // Ten Master_Down_Intervals later, a still follows the lower-priority master.
    std::thread::sleep(MDI_BACKUP * 10);
    assert!(
        all_in(&lab, "a", "BACKUP"),
        "no preemption with preempt = false"
    );
    assert!(all_in(&lab, "b", "MASTER"));
    assert!(!has_any_vip(&lab, "a"));
}

#[test]
fn preempt_delay_holds_back_the_recovered_router() {
    let lab = Lab::up("pdel").expect("lab up");
    lab.start_router(&RouterConfig::new("b", 100));
    lab.wait_until(Duration::from_secs(5), || all_in(&lab, "b", "MASTER"))
        .expect("b alone is master");
    lab.start_router(&RouterConfig::new("a", 200).preempt_delay(Duration::from_secs(2)));
    let took = lab
        .wait_until(Duration::from_secs(8), || all_in(&lab, "a", "MASTER"))
        .expect("a preempts after the delay");
    assert!(
        took >= Duration::from_secs(2),
        "preempted after {took:?}, before the 2 s preempt-delay"
    );
    assert!(
        took <= Duration::from_secs(2) + MDI_BACKUP + MARGIN + Duration::from_millis(400),
        "{took:?}"
    );
}

#[test]
fn graceful_stop_hands_over_within_skew_time_and_removes_every_vip() {
    let lab = Lab::up("term").expect("lab up");
    let (stopped, _) = elected(
        &lab,
        RouterConfig::new("a", 200),
        RouterConfig::new("b", 100),
    );
    stopped.sigterm();
    let took = lab
        .wait_until(Duration::from_secs(5), || all_in(&lab, "b", "MASTER"))
        .expect("b takes over");
    eprintln!("measured: SIGTERM handover {took:?} (Skew_Time {SKEW_BACKUP:?})");
    assert!(
        took <= SKEW_BACKUP + MARGIN,
        "handover took {took:?}; Skew_Time is {SKEW_BACKUP:?}"
    );
    let status = stopped
        .wait_exit(Duration::from_secs(5))
        .expect("vrrpd exits after SIGTERM");
    assert!(status.success(), "clean exit: {status}");
    assert!(
        !has_any_vip(&lab, "a"),
        "the stopped router removed every VIP"
    );
    let b = lab.show_groups("b");
    for g in b.as_array().unwrap() {
        assert!(
            g["stats"]["priority-zero-rx"].as_u64().unwrap() >= 1,
            "b heard priority 0: {g}"
        );
    }
}

#[test]
fn sigkill_then_restart_removes_stale_vips_and_rejoins() {
    let lab = Lab::up("kill").expect("lab up");
    let (killed, _) = elected(
        &lab,
        RouterConfig::new("a", 200),
        RouterConfig::new("b", 100),
    );
    killed.sigkill();
    killed
        .wait_exit(Duration::from_secs(5))
        .expect("SIGKILL ends vrrpd");
    assert!(
        has_vips(&lab, "a"),
        "SIGKILL leaves the VIPs behind (that is what the restart must clean)"
    );
    lab.wait_until(Duration::from_secs(5), || all_in(&lab, "b", "MASTER"))
        .expect("b takes over");
    let restarted = lab.start_router(&RouterConfig::new("a", 200));
    // Before a wins the election again, its stale VIPs are gone: a starts as BACKUP.
    lab.wait_until(Duration::from_secs(5), || {
        all_in(&lab, "a", "MASTER") && all_in(&lab, "b", "BACKUP")
    })
    .expect("a rejoins and preempts");
    assert!(has_vips(&lab, "a") && !has_any_vip(&lab, "b"));
    assert!(
        restarted.log().contains("removing stale virtual address"),
        "restart found the stale VIPs"
    );
}

#[test]
fn tracked_interface_down_faults_the_sync_group_and_the_peer_takes_over() {
    let lab = Lab::up("trk").expect("lab up");
    elected(
        &lab,
        RouterConfig::new("a", 200).track(&["eth3"]),
        RouterConfig::new("b", 100),
    );
    lab.exec("a", &["ip", "link", "set", "eth3", "down"]);
    lab.wait_until(Duration::from_secs(5), || all_in(&lab, "a", "FAULT"))
        .expect("a goes to FAULT");
    lab.wait_until(Duration::from_secs(5), || all_in(&lab, "b", "MASTER"))
        .expect("b takes over");
    assert!(!has_any_vip(&lab, "a"), "FAULT removed the VIPs");
    assert!(lab.ping("client", SERVER4, 3, Duration::from_secs(5)));
    lab.exec("a", &["ip", "link", "set", "eth3", "up"]);
    lab.wait_until(Duration::from_secs(5), || {
        all_in(&lab, "a", "MASTER") && all_in(&lab, "b", "BACKUP")
    })
    .expect("link up: a back to normal and preempts");
}

#[test]
fn one_member_interface_failing_moves_the_whole_sync_group() {
    let lab = Lab::up("sync").expect("lab up");
    elected(
        &lab,
        RouterConfig::new("a", 200),
        RouterConfig::new("b", 100),
    );
    // Only the WAN interface of a goes down; the LAN groups follow it.
    lab.exec("a", &["ip", "link", "set", "eth2", "down"]);
    lab.wait_until(Duration::from_secs(5), || all_in(&lab, "b", "MASTER"))
        .expect("all of MAIN moves to b");
    assert!(all_in(&lab, "a", "FAULT"));
    assert!(!has_any_vip(&lab, "a"));
    let b = lab.show_groups("b");
    let lan = b
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "lan-v4")
        .unwrap();
    assert_eq!(
        lan["state"], "MASTER",
        "the LAN group moved although its own link never failed"
    );
}

fn both_in(lab: &Lab, router: &str, state: &str) -> bool {
    lab.group_states(router)
        .is_ok_and(|s| s.len() == 2 && s.values().all(|v| v == state))
}

#[test]
fn unicast_peers_work_where_multicast_is_blocked() {
    let block = "table bridge vrrpd_lab {\n chain forward_filter {\n  type filter hook forward priority 0;\n  ip daddr 224.0.0.18 drop\n }\n}\n";
    let lab = Lab::up("uni").expect("lab up");
    // Drop VRRP multicast at the bridge: only unicast adverts get through.
    lab.nft("br", block);
    let v4 = ["lan-v4", "wan-v4"];
    lab.start_router(&RouterConfig::new("a", 200).groups(&v4).unicast());
    lab.start_router(&RouterConfig::new("b", 100).groups(&v4).unicast());
    lab.wait_until(Duration::from_secs(10), || {
        both_in(&lab, "a", "MASTER") && both_in(&lab, "b", "BACKUP")
    })
    .expect("unicast election: a MASTER, b BACKUP");
    std::thread::sleep(MDI_BACKUP * 5);
    assert!(
        both_in(&lab, "b", "BACKUP"),
        "b keeps hearing a over unicast"
    );
    lab.cut("a", "all");
    lab.wait_until(Duration::from_secs(5), || both_in(&lab, "b", "MASTER"))
        .expect("b takes over");
    assert!(lab.ping("client", SERVER4, 3, Duration::from_secs(5)));
    drop(lab);

    // The control: the same blocked multicast without unicast peers gives two masters.
    let lab = Lab::up("unictl").expect("lab up");
    lab.nft("br", block);
    lab.start_router(&RouterConfig::new("a", 200).groups(&v4));
    lab.start_router(&RouterConfig::new("b", 100).groups(&v4));
    lab.wait_until(Duration::from_secs(5), || {
        both_in(&lab, "a", "MASTER") && both_in(&lab, "b", "MASTER")
    })
    .expect("with multicast blocked and no unicast peers, both become MASTER");
}

#[test]
fn accept_mode_decides_whether_the_master_answers_on_its_vips() {
    // RFC 5798 §6.4.3: with Accept_Mode off (the default) a non-owner master forwards through
    // the VIPs but does not accept packets addressed to them.
    let lab = Lab::up("acc").expect("lab up");
    let (a, _) = elected(
        &lab,
        RouterConfig::new("a", 200),
        RouterConfig::new("b", 100),
    );
    assert!(
        lab.ping("client", SERVER4, 2, Duration::from_secs(3)),
        "forwarding through the VIP works"
    );
    assert!(
        !lab.ping("client", lab::LAN_VIP4, 2, Duration::from_secs(2)),
        "the VIP itself does not answer"
    );
    assert!(
        !lab.ping("client", lab::LAN_VIP6, 2, Duration::from_secs(2)),
        "nor the IPv6 VIP"
    );
    a.sigterm();
    a.wait_exit(Duration::from_secs(5)).expect("a stops");
    let tables =
        String::from_utf8_lossy(&lab.exec("a", &["nft", "list", "tables"]).stdout).into_owned();
    assert!(
        !tables.contains("vrrpd"),
        "the filter is removed on shutdown: {tables}"
    );
    drop(lab);

    let lab = Lab::up("accon").expect("lab up");
    elected(
        &lab,
        RouterConfig::new("a", 200).accept(true),
        RouterConfig::new("b", 100).accept(true),
    );
    assert!(
        lab.ping("client", lab::LAN_VIP4, 2, Duration::from_secs(3)),
        "accept = true: the VIP answers"
    );
    assert!(lab.ping("client", lab::LAN_VIP6, 2, Duration::from_secs(3)));
}

#[test]
fn transition_scripts_run_once_per_sync_group_move_and_metrics_are_served() {
    let lab = Lab::up("hook").expect("lab up");
    let record = lab.dir().join("hooks.log");
    let script = lab.dir().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $2 $VRRPD_STATE\" >> {}\n",
            record.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let s = script.display();
    let cfg = RouterConfig::new("a", 200).extra(&format!(
        "\n[sync-group.MAIN.transition-script]\nmaster = \"{s}\"\nbackup = \"{s}\"\nfault = \"{s}\"\nstop = \"{s}\"\n"
    ));
    let text = lab
        .router_config(&cfg)
        .replace("[daemon]\n", "[daemon]\nmetrics = \"127.0.0.1:9469\"\n");
    let a = lab.start_vrrpd("a", &text);
    lab.start_router(&RouterConfig::new("b", 100));
    lab.wait_until(Duration::from_secs(10), || {
        all_in(&lab, "a", "MASTER") && all_in(&lab, "b", "BACKUP")
    })
    .expect("a MASTER");

    let scrape = lab.exec(
        "a",
        &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9469; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"],
    );
    let metrics = String::from_utf8_lossy(&scrape.stdout).into_owned();
    assert!(metrics.starts_with("HTTP/1.0 200 OK"), "{metrics}");
    assert!(
        metrics.contains("vrrpd_group_state{group=\"lan-v4\",state=\"MASTER\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vrrpd_adverts_tx_total{group=\"wan-v6\"}"),
        "{metrics}"
    );

    a.sigterm();
    a.wait_exit(Duration::from_secs(10)).expect("a stops");
    let calls = std::fs::read_to_string(&record).unwrap_or_default();
    let calls: Vec<&str> = calls.lines().collect();
    // Four groups, but one call per move of the sync group: BACKUP at start, MASTER, stop.
    assert_eq!(
        calls,
        ["backup MAIN backup", "master MAIN master", "stop MAIN stop"],
        "{}",
        a.log()
    );
}

#[test]
fn vmac_puts_the_vips_on_a_macvlan_with_the_virtual_mac() {
    let lab = Lab::up("vmac").expect("lab up");
    let v4 = ["lan-v4", "wan-v4"];
    let render = |cfg: RouterConfig| {
        lab.router_config(&cfg.groups(&v4))
            .replace("[group.lan-v4]\n", "[group.lan-v4]\nvmac = true\n")
            .replace("[group.wan-v4]\n", "[group.wan-v4]\nvmac = true\n")
    };
    lab.start_vrrpd("a", &render(RouterConfig::new("a", 200)));
    let b = lab.start_vrrpd("b", &render(RouterConfig::new("b", 100)));
    let two = |router: &str, state: &str| {
        lab.group_states(router)
            .is_ok_and(|s| s.len() == 2 && s.values().all(|v| v == state))
    };
    lab.wait_until(Duration::from_secs(10), || {
        two("a", "MASTER") && two("b", "BACKUP")
    })
    .expect("a MASTER");
    // RFC 5798 §7.3: 00-00-5E-00-01-{VRID}; VRID 21 = 0x15.
    assert_eq!(lab.link("a", "vrrp4.21")["address"], "00:00:5e:00:01:15");
    assert!(
        lab.addresses("a", "vrrp4.21")
            .iter()
            .any(|a| a == "10.76.2.1/24")
    );
    // §7.4: no link-local derived from the virtual MAC (both routers carry it).
    let a_addrs = lab.addresses("a", "vrrp4.21");
    assert!(
        !a_addrs.iter().any(|a| a.starts_with("fe80")),
        "no link-local on the vmac: {a_addrs:?}"
    );
    // §6.4.2: the Backup's vmac is down, so it accepts no frame for the virtual MAC.
    let admin_up = |router: &str| {
        lab.link(router, "vrrp4.21")["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"))
    };
    assert!(admin_up("a"), "the master's vmac is up");
    assert!(!admin_up("b"), "the backup's vmac is down");
    assert!(lab.ping("client", SERVER4, 2, Duration::from_secs(3)));
    let neighbour = |lab: &Lab| {
        String::from_utf8_lossy(
            &lab.exec("client", &["ip", "neigh", "show", "10.76.2.1"])
                .stdout,
        )
        .into_owned()
    };
    assert!(
        neighbour(&lab).contains("00:00:5e:00:01:15"),
        "client resolved the VIP to the vmac: {}",
        neighbour(&lab)
    );

    lab.cut("a", "all");
    lab.wait_until(Duration::from_secs(5), || two("b", "MASTER"))
        .expect("b takes over");
    assert!(admin_up("b"), "the new master's vmac is up");
    assert!(
        lab.addresses("b", "vrrp4.21")
            .iter()
            .any(|a| a == "10.76.2.1/24")
    );
    assert!(
        lab.ping("client", SERVER4, 2, Duration::from_secs(3)),
        "traffic resumes via b's vmac"
    );
    assert!(
        neighbour(&lab).contains("00:00:5e:00:01:15"),
        "the client's ARP entry did not need to change"
    );

    b.sigterm();
    b.wait_exit(Duration::from_secs(5)).expect("b stops");
    let links = String::from_utf8_lossy(&lab.exec("b", &["ip", "-br", "link"]).stdout).into_owned();
    assert!(
        !links.contains("vrrp4."),
        "the macvlans are removed on shutdown: {links}"
    );
}
