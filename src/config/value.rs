//! Typed readers over [`toml::Value`]s that record a [`ConfigError`] with the key path instead
//! of stopping, so that the walk in [`super::validate`] can go on and report everything.
//!
//! Every reader returns `None` after recording an error; the caller carries on without the
//! value and skips the checks that need it (so one mistake is reported once, not again by
//! every check that depends on it).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::{Table, Value};

use super::ConfigError;

/// The errors found so far.
#[derive(Debug, Default)]
pub(super) struct Errors(pub(super) Vec<ConfigError>);

impl Errors {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `prefix.key`, with `key` quoted as TOML would need it when it is not a bare key.
pub(super) fn join(prefix: &str, key: &str) -> String {
    let key = quote_key(key);
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// "a string", "an integer", ...: what a value is, for "expected X, got Y".
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn expected(errs: &mut Errors, path: &str, what: &str, v: &Value) {
    errs.push(path, format!("expected {what}, got {}", kind(v)));
}

/// A table whose keys have been checked against the known ones.
pub(super) struct Section<'a> {
    pub(super) path: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    /// Reports every key of `table` that is not in `known` as `PATH.KEY: unknown key`.
    pub(super) fn new(
        errs: &mut Errors,
        path: String,
        table: &'a Table,
        known: &[&str],
    ) -> Section<'a> {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                errs.push(join(&path, key), unknown_key_message(key, known));
            }
        }
        Section { path, table }
    }

    /// A table value at `path`, or an error.
    pub(super) fn of(
        errs: &mut Errors,
        path: String,
        v: &'a Value,
        known: &[&str],
    ) -> Option<Section<'a>> {
        match v {
            Value::Table(t) => Some(Section::new(errs, path, t, known)),
            other => {
                expected(errs, &path, "a table", other);
                None
            }
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    pub(super) fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// A required key: `None` (with `PATH.KEY: is required`) when absent.
    pub(super) fn required(&self, errs: &mut Errors, key: &str) -> Option<&'a Value> {
        let v = self.get(key);
        if v.is_none() {
            errs.push(self.key(key), "is required");
        }
        v
    }

    /// Applies `read` to the value of `key` when present.
    /// `Some(None)`: absent; `Some(Some(x))`: valid; `None`: present but invalid (reported).
    pub(super) fn opt<T>(
        &self,
        errs: &mut Errors,
        key: &str,
        read: impl FnOnce(&mut Errors, &str, &'a Value) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.get(key) {
            None => Some(None),
            Some(v) => read(errs, &self.key(key), v).map(Some),
        }
    }

    /// Applies `read` to the value of a required `key`.
    pub(super) fn req<T>(
        &self,
        errs: &mut Errors,
        key: &str,
        read: impl FnOnce(&mut Errors, &str, &'a Value) -> Option<T>,
    ) -> Option<T> {
        let v = self.required(errs, key)?;
        read(errs, &self.key(key), v)
    }

    /// Applies `read` to `key`, or gives `default` when it is absent.
    pub(super) fn or<T>(
        &self,
        errs: &mut Errors,
        key: &str,
        default: T,
        read: impl FnOnce(&mut Errors, &str, &'a Value) -> Option<T>,
    ) -> Option<T> {
        self.opt(errs, key, read).map(|v| v.unwrap_or(default))
    }
}

fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let close = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|&(d, k)| d <= 2 && d < k.len().min(key.len()))
        .min();
    match close {
        Some((_, k)) => format!("unknown key (did you mean {k:?}?)"),
        None => "unknown key".to_owned(),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(super) fn string<'a>(errs: &mut Errors, path: &str, v: &'a Value) -> Option<&'a str> {
    match v {
        Value::String(s) => Some(s),
        other => {
            expected(errs, path, "a string", other);
            None
        }
    }
}

pub(super) fn non_empty_string(errs: &mut Errors, path: &str, v: &Value) -> Option<String> {
    let s = string(errs, path, v)?;
    if s.trim().is_empty() {
        errs.push(path, "must not be empty");
        return None;
    }
    Some(s.to_owned())
}

pub(super) fn boolean(errs: &mut Errors, path: &str, v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        other => {
            expected(errs, path, "a boolean (true or false)", other);
            None
        }
    }
}

/// An integer within `lo..=hi`: `must be LO..=HI, got N`.
pub(super) fn int_in<T: TryFrom<i64>>(
    errs: &mut Errors,
    path: &str,
    v: &Value,
    lo: i64,
    hi: i64,
) -> Option<T> {
    let n = match v {
        Value::Integer(n) => *n,
        other => {
            expected(errs, path, "an integer", other);
            return None;
        }
    };
    if n < lo || n > hi {
        errs.push(path, format!("must be {lo}..={hi}, got {n}"));
        return None;
    }
    T::try_from(n).ok()
}

/// A duration written as a string with a unit: "10ms", "1s", "2m".
pub(super) fn duration(errs: &mut Errors, path: &str, v: &Value) -> Option<Duration> {
    let s = match v {
        Value::String(s) => s.as_str(),
        Value::Integer(n) => {
            errs.push(path, format!("{}, got {n}", unit_needed(&n.to_string())));
            return None;
        }
        Value::Float(x) => {
            errs.push(path, format!("{}, got {x}", unit_needed(&x.to_string())));
            return None;
        }
        other => {
            expected(errs, path, "a duration such as \"1s\" or \"100ms\"", other);
            return None;
        }
    };
    if s.trim().parse::<f64>().is_ok() {
        errs.push(path, format!("{}, got {s:?}", unit_needed(s.trim())));
        return None;
    }
    match humantime::parse_duration(s.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(
                path,
                format!("invalid duration {s:?} ({e}); write e.g. \"1s\" or \"100ms\""),
            );
            None
        }
    }
}

fn unit_needed(number: &str) -> String {
    format!("a duration needs a unit: write e.g. \"{number}s\" or \"{number}ms\"")
}

/// An absolute path.
pub(super) fn abs_path(errs: &mut Errors, path: &str, v: &Value) -> Option<PathBuf> {
    let s = string(errs, path, v)?;
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        errs.push(path, format!("must be an absolute path, got {s:?}"));
        return None;
    }
    Some(p)
}

/// A Linux interface name, as the kernel's `dev_valid_name` accepts it.
pub(super) fn ifname(errs: &mut Errors, path: &str, v: &Value) -> Option<String> {
    let s = string(errs, path, v)?;
    check_ifname(errs, path, s).then(|| s.to_owned())
}

pub(super) fn check_ifname(errs: &mut Errors, path: &str, s: &str) -> bool {
    let problem = if s.is_empty() {
        Some("an interface name must not be empty")
    } else if s.len() > 15 {
        Some("an interface name is at most 15 bytes")
    } else if s == "." || s == ".." {
        Some("not a valid interface name")
    } else if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        Some("an interface name must not contain '/', ':' or whitespace")
    } else {
        None
    };
    match problem {
        Some(p) => {
            errs.push(path, format!("{p}, got {s:?}"));
            false
        }
        None => true,
    }
}

/// An IP address without prefix length.
pub(super) fn ip_addr(errs: &mut Errors, path: &str, v: &Value) -> Option<IpAddr> {
    let s = string(errs, path, v)?;
    parse_ip(errs, path, s)
}

pub(super) fn parse_ip(errs: &mut Errors, path: &str, s: &str) -> Option<IpAddr> {
    match s.trim().parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(path, format!("invalid IP address {s:?}"));
            None
        }
    }
}

/// A CIDR prefix; a bare address is taken as a /32 or /128.
pub(super) fn parse_net(errs: &mut Errors, path: &str, s: &str) -> Option<IpNet> {
    let t = s.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Some(n);
    }
    if let Ok(a) = t.parse::<IpAddr>() {
        return Some(IpNet::from(a));
    }
    errs.push(
        path,
        format!("invalid address {s:?}; write an address with an optional prefix length, e.g. \"10.0.0.1/24\""),
    );
    None
}

/// An array of strings; one error when it is not one or holds other things.
pub(super) fn string_array<'a>(
    errs: &mut Errors,
    path: &str,
    v: &'a Value,
) -> Option<Vec<&'a str>> {
    let items = match v {
        Value::Array(a) => a,
        other => {
            expected(errs, path, "an array of strings", other);
            return None;
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => out.push(s.as_str()),
            other => {
                errs.push(
                    path,
                    format!("expected an array of strings, found {} in it", kind(other)),
                );
                return None;
            }
        }
    }
    Some(out)
}

/// Applies `each` to every string of an array; `None` when the array or any item is invalid
/// (all items are checked, so every bad one is reported).
pub(super) fn array_of<T>(
    errs: &mut Errors,
    path: &str,
    v: &Value,
    mut each: impl FnMut(&mut Errors, &str, &str) -> Option<T>,
) -> Option<Vec<T>> {
    let items = string_array(errs, path, v)?;
    let mut ok = true;
    let mut out = Vec::with_capacity(items.len());
    for s in items {
        match each(errs, path, s) {
            Some(x) => out.push(x),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// An array of CIDR prefixes (bare addresses allowed); duplicates are reported.
pub(super) fn net_array(errs: &mut Errors, path: &str, v: &Value) -> Option<Vec<IpNet>> {
    let nets = array_of(errs, path, v, parse_net)?;
    no_duplicates(errs, path, &nets, |n| n.to_string()).then_some(nets)
}

/// Reports each value listed more than once, once: `"X" is listed twice`.
pub(super) fn no_duplicates<T: PartialEq>(
    errs: &mut Errors,
    path: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> bool {
    let mut ok = true;
    for (i, x) in items.iter().enumerate() {
        if items[..i].contains(x) {
            continue; // already reported at its first occurrence
        }
        let n = items[i..].iter().filter(|y| *y == x).count();
        if n > 1 {
            let times = if n == 2 {
                "twice".to_owned()
            } else {
                format!("{n} times")
            };
            errs.push(path, format!("{:?} is listed {times}", show(x)));
            ok = false;
        }
    }
    ok
}
