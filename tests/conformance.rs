//! Conformance suite: recorded inputs replayed against the protocol core, compared with golden
//! files.
//!
//! Each `tests/conformance/cases/NAME.case` holds a vrrpd configuration (the same TOML the daemon
//! reads), this router's primary address per interface, and a script of timed inputs: adverts
//! received as raw bytes, link changes, start and shutdown. The replay takes the daemon's path:
//! [`Advert::decode_ipv4`] / [`Advert::decode_ipv6`], then the group of the receiving interface,
//! family and VRID gets [`Engine::handle_advert`], or [`Engine::count_invalid`] for a decode
//! error; timers fire at their exact deadlines in virtual time. Every action, every advert the
//! core asks to send (encoded, as hex, its checksum verified here independently of the codec)
//! and the state and counters of every group after each step are rendered to text and compared
//! with `tests/conformance/golden/NAME.txt`.
//!
//! `VRRPD_BLESS=1 cargo test --release --test conformance` rewrites the golden files; review the
//! diff against the RFC before committing it. `tests/conformance/README.md` maps every
//! requirement of RFC 5798 §6-7 and RFC 9568 to the cases that prove it, and
//! [`table_and_cases_agree`] keeps the two in step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vrrpd::config::{self, Config};
use vrrpd::proto::engine::{Action, Engine, NotifyTarget};
use vrrpd::proto::packet::{Advert, VRRP_MCAST_V4, VRRP_MCAST_V6, VRRP_PROTO};
use vrrpd::proto::{ChecksumForm, Family};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

// ---- case files ----

/// A parsed `.case` file.
struct Case {
    name: String,
    title: String,
    proves: Vec<String>,
    /// `primary: IFNAME ADDRESS`: what the daemon would read from the interface.
    primaries: Vec<(String, IpAddr)>,
    config: String,
    steps: Vec<Step>,
}

struct Step {
    at: Duration,
    cmd: Cmd,
    /// The script line as written, shown in the golden file.
    text: String,
}

enum Cmd {
    Start,
    Rx { ifname: String, packet: RxPacket },
    Link { ifname: String, up: bool },
    Shutdown,
    End,
}

enum RxPacket {
    /// A whole IPv4 datagram, as a raw IPv4 socket delivers it.
    V4(Vec<u8>),
    /// A VRRP payload with the addresses and hop limit `recvmsg` reports.
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        payload: Vec<u8>,
    },
}

fn parse_case(path: &Path) -> Case {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut case = Case {
        name,
        title: String::new(),
        proves: Vec::new(),
        primaries: Vec::new(),
        config: String::new(),
        steps: Vec::new(),
    };
    #[derive(PartialEq)]
    enum Section {
        Header,
        Config,
        Script,
    }
    let mut section = Section::Header;
    for (i, raw) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        match raw.trim() {
            "--- config" => {
                section = Section::Config;
                continue;
            }
            "--- script" => {
                section = Section::Script;
                continue;
            }
            _ => {}
        }
        match section {
            Section::Config => {
                case.config.push_str(raw);
                case.config.push('\n');
            }
            Section::Header => {
                let line = raw.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (key, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{at}: expected `key: value`"));
                let value = value.trim();
                match key {
                    "title" => case.title = value.to_string(),
                    "proves" => case
                        .proves
                        .extend(value.split_whitespace().map(str::to_string)),
                    "primary" => {
                        let (ifname, addr) = value
                            .split_once(' ')
                            .unwrap_or_else(|| panic!("{at}: primary: IFNAME ADDRESS"));
                        let addr = addr.trim().parse().unwrap_or_else(|e| panic!("{at}: {e}"));
                        case.primaries.push((ifname.to_string(), addr));
                    }
                    other => panic!("{at}: unknown header {other}"),
                }
            }
            Section::Script => {
                let line = raw.split('#').next().unwrap().trim();
                if line.is_empty() {
                    continue;
                }
                case.steps.push(parse_step(line, &at));
            }
        }
    }
    assert!(!case.title.is_empty(), "{}: no title", path.display());
    assert!(
        !case.proves.is_empty(),
        "{}: proves nothing",
        path.display()
    );
    assert!(
        matches!(case.steps.last(), Some(Step { cmd: Cmd::End, .. })),
        "{}: the script must finish with `end`",
        path.display()
    );
    case
}

fn parse_step(line: &str, at: &str) -> Step {
    let mut words = line.split_whitespace();
    let time = parse_time(words.next().unwrap(), at);
    let verb = words.next().unwrap_or_else(|| panic!("{at}: no command"));
    let rest: Vec<&str> = words.collect();
    let cmd = match (verb, rest.as_slice()) {
        ("start", []) => Cmd::Start,
        ("shutdown", []) => Cmd::Shutdown,
        ("end", []) => Cmd::End,
        ("link", [ifname, state @ ("up" | "down")]) => Cmd::Link {
            ifname: ifname.to_string(),
            up: *state == "up",
        },
        ("rx", [ifname, "ipv4", hex @ ..]) => Cmd::Rx {
            ifname: ifname.to_string(),
            packet: RxPacket::V4(parse_hex(&hex.concat(), at)),
        },
        ("rx", [ifname, "ipv6", src, dst, hop, hex @ ..]) => {
            let field = |w: &str, key: &str| -> String {
                w.strip_prefix(key)
                    .unwrap_or_else(|| panic!("{at}: expected {key}..."))
                    .to_string()
            };
            Cmd::Rx {
                ifname: ifname.to_string(),
                packet: RxPacket::V6 {
                    src: field(src, "src=")
                        .parse()
                        .unwrap_or_else(|e| panic!("{at}: {e}")),
                    dst: field(dst, "dst=")
                        .parse()
                        .unwrap_or_else(|e| panic!("{at}: {e}")),
                    hop_limit: field(hop, "hop=")
                        .parse()
                        .unwrap_or_else(|e| panic!("{at}: {e}")),
                    payload: parse_hex(&hex.concat(), at),
                },
            }
        }
        _ => panic!("{at}: cannot parse `{line}`"),
    };
    Step {
        at: time,
        cmd,
        text: line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Seconds with up to 9 decimals, parsed exactly (no floating point).
fn parse_time(s: &str, at: &str) -> Duration {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= 9, "{at}: time {s}: at most 9 decimals");
    let secs: u64 = secs
        .parse()
        .unwrap_or_else(|e| panic!("{at}: time {s}: {e}"));
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .unwrap_or_else(|e| panic!("{at}: time {s}: {e}"))
    };
    Duration::new(secs, nanos)
}

fn parse_hex(s: &str, at: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "{at}: odd number of hex digits");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{at}: {e}")))
        .collect()
}

// ---- replay ----

/// The core plus what the daemon keeps around it: the configuration, link states and drops
/// that could not be attributed to a group.
struct Replay<'a> {
    case: &'a Case,
    config: Config,
    engine: Engine,
    links: BTreeMap<String, bool>,
    unattributed: BTreeMap<&'static str, u64>,
    t0: Instant,
    out: String,
}

impl<'a> Replay<'a> {
    fn new(case: &'a Case) -> Replay<'a> {
        let config = config::parse(&case.config).unwrap_or_else(|e| {
            panic!(
                "{}: config: {}",
                case.name,
                e.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        });
        // As daemon/setup.rs: one virtual router per group, in the config's (name) order.
        let specs = config
            .groups
            .iter()
            .map(|g| {
                let primary = g.hello_source_address.unwrap_or_else(|| {
                    case.primaries
                        .iter()
                        .find(|(i, a)| *i == g.interface && Family::of(a) == g.family)
                        .unwrap_or_else(|| {
                            panic!(
                                "{}: no `primary: {} ...` for {}",
                                case.name, g.interface, g.family
                            )
                        })
                        .1
                });
                config.group_spec(g, primary)
            })
            .collect();
        let sync_groups = config.engine_sync_groups();
        let links = config
            .groups
            .iter()
            .flat_map(|g| std::iter::once(&g.interface).chain(&g.track_interfaces))
            .map(|i| (i.clone(), true))
            .collect();
        let mut out = String::new();
        writeln!(out, "# {}: {}", case.name, case.title).unwrap();
        writeln!(out, "# proves: {}", case.proves.join(" ")).unwrap();
        writeln!(
            out,
            "# generated by tests/conformance.rs; VRRPD_BLESS=1 rewrites it. Times are virtual seconds."
        )
        .unwrap();
        let mut r = Replay {
            case,
            engine: Engine::new(specs, sync_groups),
            config,
            links,
            unattributed: BTreeMap::new(),
            t0: Instant::now(),
            out,
        };
        r.render_config();
        r
    }

    fn run(mut self) -> String {
        for step in &self.case.steps {
            let now = self.t0 + step.at;
            while let Some(due) = self.engine.poll_timeout().filter(|d| *d <= now) {
                writeln!(self.out, "\n@{} timer", self.ts(due)).unwrap();
                self.engine.handle_timeout(due);
                self.render_actions();
                self.render_state();
            }
            writeln!(self.out, "\n@{} {}", self.ts(now), step.text).unwrap();
            match &step.cmd {
                Cmd::Start => self.engine.start(now),
                Cmd::Shutdown => self.engine.shutdown(now),
                Cmd::End => break,
                Cmd::Link { ifname, up } => {
                    assert!(
                        self.links.contains_key(ifname),
                        "{}: unknown link {ifname}",
                        self.case.name
                    );
                    self.links.insert(ifname.clone(), *up);
                    // As the daemon: every group re-evaluates its own and tracked links.
                    for g in 0..self.config.groups.len() {
                        let all_up = self.group_links_up(g);
                        self.engine.handle_link(now, g, all_up);
                    }
                }
                Cmd::Rx { ifname, packet } => self.receive(now, ifname, packet),
            }
            self.render_actions();
            self.render_state();
        }
        self.out
    }

    fn group_links_up(&self, g: usize) -> bool {
        let cfg = &self.config.groups[g];
        std::iter::once(&cfg.interface)
            .chain(&cfg.track_interfaces)
            .all(|i| self.links[i])
    }

    /// The daemon's receive path (daemon/mod.rs `handle_packet`).
    fn receive(&mut self, now: Instant, ifname: &str, packet: &RxPacket) {
        let (family, decoded) = match packet {
            RxPacket::V4(d) => (
                Family::Ipv4,
                Advert::decode_ipv4(d).map_err(|e| (e, Advert::peek_vrid_ipv4(d))),
            ),
            RxPacket::V6 {
                src,
                dst,
                hop_limit,
                payload,
            } => (
                Family::Ipv6,
                Advert::decode_ipv6(payload, *src, *dst, *hop_limit)
                    .map_err(|e| (e, Advert::peek_vrid_ipv6(payload))),
            ),
        };
        let group_of = |vrid: u8| {
            self.config
                .groups
                .iter()
                .position(|g| g.interface == ifname && g.family == family && g.vrid == vrid)
        };
        match decoded {
            Ok(rx) => {
                writeln!(
                    self.out,
                    "  decoded: vrid={} prio={} int={}cs src={} dst={} checksum={} addrs={}",
                    rx.advert.vrid,
                    rx.advert.priority,
                    rx.advert.max_advert_interval.get(),
                    rx.source,
                    rx.destination,
                    form_name(rx.checksum_form),
                    addrs(&rx.advert.addresses)
                )
                .unwrap();
                match group_of(rx.advert.vrid) {
                    Some(g) => self.engine.handle_advert(now, g, &rx),
                    None => {
                        writeln!(
                            self.out,
                            "  dropped: unknown-vrid (no {family} group with VRID {} on {ifname})",
                            rx.advert.vrid
                        )
                        .unwrap();
                        *self.unattributed.entry("unknown-vrid").or_default() += 1;
                    }
                }
            }
            Err((err, vrid)) => {
                let g = vrid.and_then(group_of);
                let to = g.map_or("unattributed".to_string(), |g| {
                    format!("counted on {}", self.config.groups[g].name)
                });
                writeln!(self.out, "  dropped by codec: {} ({to})", err.reason()).unwrap();
                match g {
                    Some(g) => self.engine.count_invalid(g, err.reason()),
                    None => *self.unattributed.entry(err.reason()).or_default() += 1,
                }
            }
        }
    }

    fn ts(&self, t: Instant) -> String {
        let d = t - self.t0;
        format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
    }

    fn name(&self, g: usize) -> &str {
        &self.config.groups[g].name
    }

    fn render_config(&mut self) {
        writeln!(
            self.out,
            "config: checksum={}",
            form_name(self.config.daemon.checksum)
        )
        .unwrap();
        for r in self.engine.routers() {
            let p = r.params();
            writeln!(
                self.out,
                "config: {} {} vrid={} prio={} int={}cs preempt={} preempt-delay={:?} accept={} primary={} addrs={}",
                p.name,
                p.family,
                p.vrid,
                p.priority,
                p.advertise_interval.get(),
                p.preempt,
                p.preempt_delay,
                p.accept,
                p.primary_address,
                addrs(&p.addresses)
            )
            .unwrap();
        }
        for (i, s) in self.engine.sync_groups().iter().enumerate() {
            let members: Vec<&str> = s.members.iter().map(|&m| self.name(m)).collect();
            writeln!(
                self.out,
                "config: sync-group {i} {} = {}",
                s.name,
                members.join(" ")
            )
            .unwrap();
        }
    }

    fn target_name(&self, target: NotifyTarget) -> String {
        match target {
            NotifyTarget::SyncGroup(s) => {
                format!("sync-group {}", self.engine.sync_groups()[s].name)
            }
            NotifyTarget::Group(g) => format!("group {}", self.name(g)),
        }
    }

    fn render_actions(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            let line = match &action {
                Action::Transition {
                    group,
                    from,
                    to,
                    reason,
                } => format!(
                    "transition {}: {from} -> {to} ({reason})",
                    self.name(*group)
                ),
                Action::AddAddresses { group } => format!(
                    "add-addresses {}: {}",
                    self.name(*group),
                    self.config.groups[*group]
                        .addresses
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Action::RemoveAddresses { group } => {
                    format!("remove-addresses {}", self.name(*group))
                }
                Action::Announce { group } => {
                    let kind = match self.config.groups[*group].family {
                        Family::Ipv4 => "gratuitous ARP",
                        Family::Ipv6 => "unsolicited NA",
                    };
                    format!(
                        "announce {}: {kind} for {}",
                        self.name(*group),
                        addrs(&self.engine.router(*group).params().addresses)
                    )
                }
                Action::BeforeMaster { target } => {
                    format!("before-master {}", self.target_name(*target))
                }
                Action::Notify {
                    target,
                    state,
                    reason,
                } => format!(
                    "notify {}: {} ({reason})",
                    self.target_name(*target),
                    state.as_str()
                ),
                Action::SendAdvert { group, advert } => self.render_send(*group, advert),
            };
            writeln!(self.out, "  {line}").unwrap();
        }
    }

    /// Encodes the advert as the daemon's `send_advert` does and checks its checksum with an
    /// implementation that is not the codec's.
    fn render_send(&self, group: usize, advert: &Advert) -> String {
        let cfg = &self.config.groups[group];
        let source = self.engine.router(group).params().primary_address;
        let form = match cfg.family {
            Family::Ipv4 => self.config.daemon.checksum,
            Family::Ipv6 => ChecksumForm::PseudoHeader,
        };
        let destinations = if cfg.peer_addresses.is_empty() {
            vec![match cfg.family {
                Family::Ipv4 => IpAddr::V4(VRRP_MCAST_V4),
                Family::Ipv6 => IpAddr::V6(VRRP_MCAST_V6),
            }]
        } else {
            cfg.peer_addresses.clone()
        };
        let mut s = format!(
            "send {}: vrid={} prio={} int={}cs addrs={}",
            cfg.name,
            advert.vrid,
            advert.priority,
            advert.max_advert_interval.get(),
            addrs(&advert.addresses)
        );
        for dst in destinations {
            let mut buf = Vec::new();
            match advert.encode(source, dst, form, &mut buf) {
                Ok(()) => {
                    let verdict = if independent_checksum_ok(source, dst, form, &buf) {
                        "ok"
                    } else {
                        "WRONG"
                    };
                    write!(
                        s,
                        "\n    {source} -> {dst} checksum {} {verdict}: {}",
                        form_name(form),
                        hex(&buf)
                    )
                    .unwrap();
                }
                Err(e) => write!(s, "\n    {source} -> {dst}: ENCODE ERROR {e}").unwrap(),
            }
        }
        s
    }

    fn render_state(&mut self) {
        let mut lines = Vec::new();
        for r in self.engine.routers() {
            let p = r.params();
            let st = r.stats();
            let invalid: Vec<String> = st
                .invalid_rx
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            let peers: Vec<String> = st
                .peers
                .iter()
                .map(|(ip, ps)| {
                    format!(
                        "{ip}(n={} pseudo-header={} rfc9568={} last-prio={})",
                        ps.adverts,
                        ps.pseudo_header_checksum,
                        ps.rfc9568_checksum,
                        ps.last_priority
                    )
                })
                .collect();
            lines.push(format!(
                "  = {} {} master={} mai={}cs skew={} mdi={} next-timer={} transitions={}",
                p.name,
                r.state(),
                r.master_address()
                    .map_or("-".to_string(), |a| a.to_string()),
                r.master_adver_interval().get(),
                secs(r.skew_time()),
                secs(r.master_down_interval()),
                r.next_deadline().map_or("-".to_string(), |t| self.ts(t)),
                r.transitions()
            ));
            lines.push(format!(
                "    stats rx={} tx={} p0-rx={} p0-tx={} addr-mismatch={} interval-mismatch={} invalid={{{}}} peers={{{}}}",
                st.adverts_rx,
                st.adverts_tx,
                st.priority_zero_rx,
                st.priority_zero_tx,
                st.address_mismatch_rx,
                st.interval_mismatch_rx,
                invalid.join(" "),
                peers.join(" ")
            ));
        }
        if !self.unattributed.is_empty() {
            let u: Vec<String> = self
                .unattributed
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            lines.push(format!("  = unattributed drops {{{}}}", u.join(" ")));
        }
        for l in lines {
            writeln!(self.out, "{l}").unwrap();
        }
    }
}

fn form_name(f: ChecksumForm) -> &'static str {
    match f {
        ChecksumForm::PseudoHeader => "pseudo-header",
        ChecksumForm::Rfc9568 => "rfc9568",
    }
}

fn addrs(a: &[IpAddr]) -> String {
    a.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn secs(d: Duration) -> String {
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// RFC 1071 one's complement sum, written here so the suite does not trust the codec's own.
fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for c in chunks {
        bytes.extend_from_slice(c);
    }
    if !bytes.len().is_multiple_of(2) {
        bytes.push(0);
    }
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// RFC 5798 §5.2.8 (IPv4 pseudo-header, IPv6 RFC 8200 pseudo-header) or RFC 9568 §5.2.8
/// (IPv4 message only): a valid message sums to 0xffff.
fn independent_checksum_ok(src: IpAddr, dst: IpAddr, form: ChecksumForm, msg: &[u8]) -> bool {
    let len = msg.len();
    let sum = match (src, dst, form) {
        (IpAddr::V4(s), IpAddr::V4(d), ChecksumForm::PseudoHeader) => ones_complement_sum(&[
            &s.octets(),
            &d.octets(),
            &[0, VRRP_PROTO],
            &(len as u16).to_be_bytes(),
            msg,
        ]),
        (IpAddr::V4(_), IpAddr::V4(_), ChecksumForm::Rfc9568) => ones_complement_sum(&[msg]),
        (IpAddr::V6(s), IpAddr::V6(d), _) => ones_complement_sum(&[
            &s.octets(),
            &d.octets(),
            &(len as u32).to_be_bytes(),
            &[0, 0, 0, VRRP_PROTO],
            msg,
        ]),
        _ => return false,
    };
    sum == 0xffff
}

// ---- the tests ----

fn cases() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir().join("cases"))
        .expect("tests/conformance/cases")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no conformance cases found");
    paths.iter().map(|p| parse_case(p)).collect()
}

#[test]
fn conformance_cases_match_golden_files() {
    let bless = std::env::var_os("VRRPD_BLESS").is_some_and(|v| v == "1");
    let mut failed = Vec::new();
    for case in cases() {
        let actual = Replay::new(&case).run();
        let path = dir().join("golden").join(format!("{}.txt", case.name));
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let golden = match std::fs::read_to_string(&path) {
            Ok(g) => g,
            Err(e) => {
                eprintln!(
                    "{}: {e}; run VRRPD_BLESS=1 cargo test --release --test conformance",
                    path.display()
                );
                failed.push(case.name.clone());
                continue;
            }
        };
        if golden != actual {
            let diff = similar::TextDiff::from_lines(&golden, &actual);
            eprintln!(
                "conformance case {} differs from {} (- golden, + actual):\n{}",
                case.name,
                path.display(),
                diff.unified_diff()
                    .context_radius(3)
                    .header("golden", "actual")
            );
            failed.push(case.name.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "conformance cases differ from their golden files: {failed:?}. If the change is intended, \
         review it against the RFC and rerun with VRRPD_BLESS=1."
    );
}

/// One row of the requirement table in `tests/conformance/README.md`.
struct Row {
    id: String,
    status: String,
    cases: BTreeSet<String>,
}

fn table() -> Vec<Row> {
    let text = std::fs::read_to_string(dir().join("README.md")).unwrap();
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        // | id | section | requirement | applies | status | proof |
        assert_eq!(
            cols.len(),
            8,
            "README row must have 6 columns (no `|` inside a cell): {line}"
        );
        let id = cols[1].trim_matches('`').to_string();
        let proof = cols[6];
        let cases = proof
            .split("cases/")
            .skip(1)
            .filter_map(|s| s.split(".case").next())
            .map(str::to_string)
            .collect();
        rows.push(Row {
            id,
            status: cols[5].to_string(),
            cases,
        });
    }
    rows
}

#[test]
fn table_and_cases_agree() {
    let rows = table();
    let cases = cases();
    let mut ids = BTreeSet::new();
    for r in &rows {
        assert!(
            ids.insert(r.id.clone()),
            "README: requirement {} listed twice",
            r.id
        );
        assert!(
            [
                "proved",
                "partly proved",
                "not implemented",
                "deviation",
                "n/a",
                "outside the core"
            ]
            .iter()
            .any(|s| r.status.starts_with(s)),
            "README: {}: unknown status `{}`",
            r.id,
            r.status
        );
    }
    let by_name: BTreeMap<&str, &Case> = cases.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &cases {
        for id in &c.proves {
            let row = rows.iter().find(|r| &r.id == id).unwrap_or_else(|| {
                panic!("case {} proves {id}, which the README table lacks", c.name)
            });
            assert!(
                row.cases.contains(&c.name),
                "case {} proves {id} but the README row does not name it",
                c.name
            );
        }
    }
    for r in &rows {
        for name in &r.cases {
            let case = by_name
                .get(name.as_str())
                .unwrap_or_else(|| panic!("README: {}: no case {name}", r.id));
            assert!(
                case.proves.contains(&r.id),
                "README: {} names case {name}, which is not tagged `proves: {}`",
                r.id,
                r.id
            );
        }
    }
}

#[test]
fn independent_checksum_agrees_with_a_keepalived_capture() {
    // 10.99.1.2 -> 224.0.0.18, VRID 51, prio 150: tests/fixtures/keepalived-v4.hex.
    let msg = parse_hex("31339601006440ac0a630164", "inline");
    let (s, d) = (Ipv4Addr::new(10, 99, 1, 2), VRRP_MCAST_V4);
    assert!(independent_checksum_ok(
        s.into(),
        d.into(),
        ChecksumForm::PseudoHeader,
        &msg
    ));
    assert!(!independent_checksum_ok(
        s.into(),
        d.into(),
        ChecksumForm::Rfc9568,
        &msg
    ));
}
