//! Renderings of daemon status for people (tables) and for Prometheus.

use std::fmt::Write;

use super::{BgpStatus, GroupStatus};

/// The `vrrpd show groups` table.
pub fn groups_table(groups: &[GroupStatus]) -> String {
    let header = [
        "GROUP",
        "INTERFACE",
        "VRID",
        "FAMILY",
        "STATE",
        "PRIO",
        "MASTER",
        "ADVERT",
        "SYNC-GROUP",
        "SINCE",
        "ADDRESSES",
    ];
    let rows: Vec<[String; 11]> = groups
        .iter()
        .map(|g| {
            [
                g.name.clone(),
                g.interface.clone(),
                g.vrid.to_string(),
                g.family.clone(),
                g.state.clone(),
                if g.effective_priority == g.priority {
                    g.priority.to_string()
                } else {
                    format!("{}/{}", g.effective_priority, g.priority)
                },
                g.master_address.clone().unwrap_or_else(|| "-".into()),
                format!("{}ms", g.master_advertise_interval_ms),
                g.sync_group.clone().unwrap_or_else(|| "-".into()),
                g.last_transition.clone(),
                g.addresses.join(","),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(widths).enumerate() {
            if i + 1 == widths.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Prometheus text exposition of the group counters.
pub fn prometheus(groups: &[GroupStatus]) -> String {
    let mut out = String::new();
    let states = ["INIT", "BACKUP", "MASTER", "FAULT"];
    out.push_str("# HELP vrrpd_group_state 1 for the state the group is in.\n# TYPE vrrpd_group_state gauge\n");
    for g in groups {
        for s in states {
            let v = u8::from(g.state == s);
            let _ = writeln!(
                out,
                "vrrpd_group_state{{group=\"{}\",state=\"{s}\"}} {v}",
                g.name
            );
        }
    }
    let counters: [(&str, fn(&GroupStatus) -> u64); 5] = [
        ("vrrpd_adverts_rx_total", |g| g.stats.adverts_rx),
        ("vrrpd_adverts_tx_total", |g| g.stats.adverts_tx),
        ("vrrpd_priority_zero_rx_total", |g| g.stats.priority_zero_rx),
        ("vrrpd_priority_zero_tx_total", |g| g.stats.priority_zero_tx),
        ("vrrpd_transitions_total", |g| g.transitions),
    ];
    for (name, get) in counters {
        let _ = writeln!(out, "# TYPE {name} counter");
        for g in groups {
            let _ = writeln!(out, "{name}{{group=\"{}\"}} {}", g.name, get(g));
        }
    }
    out.push_str("# TYPE vrrpd_invalid_rx_total counter\n");
    for g in groups {
        for (reason, n) in &g.stats.invalid_rx_by_reason {
            let _ = writeln!(
                out,
                "vrrpd_invalid_rx_total{{group=\"{}\",reason=\"{reason}\"}} {n}",
                g.name
            );
        }
    }
    out
}

/// The `vrrpd show bgp` lines.
pub fn bgp_table(b: &BgpStatus) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let prepend = |state: &Option<String>, n: Option<u8>| match (state, n) {
        (Some(s), Some(n)) => format!("{n} ({s})"),
        _ => "-".into(),
    };
    let rows = [
        ("sync-group", b.sync_group.clone()),
        ("driver", b.driver.clone()),
        ("local-as", b.local_as.to_string()),
        (
            "prepend master/backup",
            format!("{}/{}", b.prepend_master, b.prepend_backup),
        ),
        ("wanted", prepend(&b.wanted_state, b.wanted_prepend)),
        ("applied", prepend(&b.applied_state, b.applied_prepend)),
        ("applied at", opt(&b.applied_at)),
        ("in sync", if b.in_sync { "yes" } else { "NO" }.into()),
        ("last result", opt(&b.last_result)),
        ("last error", opt(&b.last_error)),
        ("last error at", opt(&b.last_error_at)),
        (
            "applies/retries/repairs",
            format!("{}/{}/{}", b.applies, b.retries, b.repairs),
        ),
        ("last check", opt(&b.last_check_at)),
    ];
    rows.iter().map(|(k, v)| format!("{k:<24}{v}\n")).collect()
}

#[cfg(test)]
mod bgp_table_tests {
    use super::*;

    #[test]
    fn shows_applied_prepend_time_and_error() {
        let b = BgpStatus {
            sync_group: "MAIN".into(),
            driver: "bird".into(),
            local_as: 4_288_000_595,
            prepend_master: 0,
            prepend_backup: 3,
            wanted_state: Some("master".into()),
            wanted_prepend: Some(0),
            applied_state: Some("backup".into()),
            applied_prepend: Some(3),
            applied_at: Some("2026-11-21T02:59:43Z".into()),
            in_sync: false,
            last_result: Some("0003 Reconfigured".into()),
            last_error: Some("BIRD refused `configure`: 8002 syntax error".into()),
            last_error_at: None,
            consecutive_failures: 1,
            retries: 4,
            applies: 2,
            repairs: 0,
            last_check_at: None,
        };
        let t = bgp_table(&b);
        assert!(t.contains("wanted                  0 (master)\n"), "{t}");
        assert!(t.contains("applied                 3 (backup)\n"), "{t}");
        assert!(t.contains("in sync                 NO\n"), "{t}");
        assert!(t.contains("last error              BIRD refused"), "{t}");
        assert!(t.contains("applies/retries/repairs 2/4/0\n"), "{t}");
        assert!(t.contains("last error at           -\n"), "{t}");
    }
}

/// The `vrrpd show sync` table: one `key  value` line per field of the status object, errors by
/// reason indented below.
pub fn sync_table(status: &serde_json::Value) -> String {
    let Some(map) = status.as_object() else {
        return format!("{status}\n");
    };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in map {
        match value {
            serde_json::Value::Object(inner) => {
                let _ = writeln!(
                    out,
                    "{key:<width$}  {}",
                    if inner.is_empty() { "none" } else { "" }
                );
                for (k, v) in inner {
                    let _ = writeln!(out, "  {k:<w$}  {v}", w = width.saturating_sub(2));
                }
            }
            serde_json::Value::String(s) => {
                let _ = writeln!(out, "{key:<width$}  {s}");
            }
            serde_json::Value::Null => {
                let _ = writeln!(out, "{key:<width$}  -");
            }
            other => {
                let _ = writeln!(out, "{key:<width$}  {other}");
            }
        }
    }
    out
}

#[cfg(test)]
mod sync_table_tests {
    #[test]
    fn sync_table_has_one_line_per_key_and_the_errors_below() {
        let v = serde_json::json!({
            "peer": "10.76.9.2:3780",
            "connected": true,
            "last-full-sync": null,
            "errors": {"channel-auth": 2},
        });
        let t = super::sync_table(&v);
        assert!(t.contains("peer            10.76.9.2:3780\n"), "{t}");
        assert!(t.contains("connected       true\n"), "{t}");
        assert!(t.contains("last-full-sync  -\n"), "{t}");
        assert!(t.contains("  channel-auth  2\n"), "{t}");
    }
}
