//! The BIRD 2 driver: writes `define VRRPD_PREPEND = N;` into an include file (temp file +
//! rename, so BIRD never reads half a file) and sends `configure` on BIRD's control socket.
//!
//! The socket protocol (BIRD's doc/reply_codes): every line starts with a 4-digit code; `-`
//! after it means more lines follow, a space marks the last line of the reply, and a line that
//! starts with a space continues the previous code. The greeting is `0001 BIRD x.y ready.`
//! `configure` answers `0002-Reading configuration from ...` and then `0003 Reconfigured`,
//! `0004 Reconfiguration in progress` (accepted; protocols are still being reconfigured) or
//! `0005 Reconfiguration already in progress, queueing` (accepted, applied next); `8002` is a
//! configuration error, and BIRD keeps running the old configuration. `eval VRRPD_PREPEND`
//! answers `0023 N` with the value BIRD runs with, which the periodic check compares.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{BgpError, CALL_TIMEOUT, Check};

/// The symbol the user's BIRD config uses in its export filter.
pub const SYMBOL: &str = "VRRPD_PREPEND";

/// The replies to `configure` that mean BIRD took the new configuration.
const CONFIGURE_ACCEPTED: &[u16] = &[3, 4, 5];
/// The reply to `eval`.
const EVAL_RESULT: u16 = 23;

#[derive(Debug)]
pub struct Bird {
    pub include_file: PathBuf,
    pub socket: PathBuf,
}

/// The include file's whole text for a prepend.
pub fn include_text(prepend: u8) -> String {
    format!(
        "# Written by vrrpd on every VRRP transition: the AS-path prepend while in the current state.\n\
         # Do not edit; see [bgp] in vrrpd's configuration.\n\
         define {SYMBOL} = {prepend};\n"
    )
}

/// One reply: its final code and every line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join(" / ")
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04} {}", self.code, self.text())
    }
}

/// A line of BIRD's socket protocol.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// `DDDD-text` (more follows) or `DDDD text` (last).
    Coded {
        code: u16,
        last: bool,
        text: &'a str,
    },
    /// ` text`: continues the previous code.
    Continued(&'a str),
}

fn parse_line(line: &str) -> Result<Line<'_>, BgpError> {
    if let Some(rest) = line.strip_prefix(' ') {
        return Ok(Line::Continued(rest.trim()));
    }
    let bad = || BgpError::BirdProtocol(format!("unexpected line {line:?}"));
    let (digits, rest) = line.split_at_checked(4).ok_or_else(bad)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let code = digits.parse().map_err(|_| bad())?;
    let (last, text) = match rest.as_bytes().first() {
        Some(b' ') | None => (true, rest.get(1..).unwrap_or("")),
        Some(b'-') => (false, &rest[1..]),
        Some(_) => return Err(bad()),
    };
    Ok(Line::Coded {
        code,
        last,
        text: text.trim(),
    })
}

impl Bird {
    pub async fn apply(&self, prepend: u8) -> Result<String, BgpError> {
        write_atomically(&self.include_file, &include_text(prepend))?;
        let reply = self.command("configure").await?;
        if CONFIGURE_ACCEPTED.contains(&reply.code) {
            Ok(reply.to_string())
        } else {
            Err(BgpError::BirdRefused {
                command: "configure".into(),
                reply: reply.to_string(),
            })
        }
    }

    pub async fn check(&self, prepend: u8) -> Result<Check, BgpError> {
        let on_disk = std::fs::read_to_string(&self.include_file).unwrap_or_default();
        if on_disk != include_text(prepend) {
            return Ok(Check::Drifted(format!(
                "{} does not hold {SYMBOL} = {prepend}",
                self.include_file.display()
            )));
        }
        let reply = self.command(&format!("eval {SYMBOL}")).await?;
        let running = reply.lines.last().map(|l| l.trim()).unwrap_or("");
        if reply.code == EVAL_RESULT && running == prepend.to_string() {
            Ok(Check::InPlace)
        } else {
            Ok(Check::Drifted(format!(
                "BIRD runs with {SYMBOL} = {running:?} ({reply}), want {prepend}"
            )))
        }
    }

    /// One command on a fresh connection: greeting, command, reply, all within [`CALL_TIMEOUT`].
    pub async fn command(&self, command: &str) -> Result<Reply, BgpError> {
        let what = format!("BIRD `{command}` on {}", self.socket.display());
        let exchange = async {
            let stream =
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| BgpError::Io {
                        what: format!("connecting to BIRD's socket {}", self.socket.display()),
                        source,
                    })?;
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let greeting = read_reply(&mut read).await?;
            if greeting.code != 1 {
                return Err(BgpError::BirdProtocol(format!(
                    "expected the 0001 greeting, got {greeting}"
                )));
            }
            write
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(|source| BgpError::Io {
                    what: format!("sending `{command}` to BIRD"),
                    source,
                })?;
            read_reply(&mut read).await
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| BgpError::Timeout {
                what,
                after: CALL_TIMEOUT,
            })?
    }
}

/// Reads lines up to the one that ends a reply.
async fn read_reply(
    read: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Reply, BgpError> {
    let mut lines = Vec::new();
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = read
            .read_line(&mut buf)
            .await
            .map_err(|source| BgpError::Io {
                what: "reading BIRD's reply".into(),
                source,
            })?;
        if n == 0 {
            return Err(BgpError::BirdProtocol(format!(
                "BIRD closed the connection mid-reply after {lines:?}"
            )));
        }
        if lines.len() > 10_000 {
            return Err(BgpError::BirdProtocol("reply too long".into()));
        }
        match parse_line(buf.trim_end_matches(['\n', '\r']))? {
            Line::Continued(text) => lines.push(text.to_owned()),
            Line::Coded { code, last, text } => {
                lines.push(text.to_owned());
                if last {
                    return Ok(Reply { code, lines });
                }
            }
        }
    }
}

/// Writes `text` to a temporary file next to `path`, flushes it to disk, and renames it over
/// `path`: readers see the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), BgpError> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| BgpError::Io { what, source }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.vrrpd-tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io("creating a temporary file for"))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("writing"))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("renaming the temporary file onto"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    #[test]
    fn parses_the_line_forms() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready.").unwrap(),
            Line::Coded {
                code: 1,
                last: true,
                text: "BIRD 2.0.12 ready."
            }
        );
        assert_eq!(
            parse_line("0002-Reading configuration from /etc/bird.conf").unwrap(),
            Line::Coded {
                code: 2,
                last: false,
                text: "Reading configuration from /etc/bird.conf"
            }
        );
        assert_eq!(
            parse_line("     Hostname is vm").unwrap(),
            Line::Continued("Hostname is vm")
        );
        assert!(parse_line("12").is_err());
        assert!(parse_line("abcd nope").is_err());
        assert!(parse_line("0003+x").is_err());
    }

    /// A fake BIRD that greets, reads one command, and answers `reply` to it.
    fn fake_bird(dir: &Path, reply: &'static str) -> (PathBuf, tokio::task::JoinHandle<String>) {
        let socket = dir.join("bird.ctl");
        let listener = UnixListener::bind(&socket).unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"0001 BIRD 2.0.12 ready.\n").await.unwrap();
            let mut cmd = vec![0u8; 256];
            let n = s.read(&mut cmd).await.unwrap();
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&cmd[..n]).into_owned()
        });
        (socket, task)
    }

    #[tokio::test]
    async fn configure_accepted_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let include_file = dir.path().join("vrrpd-prepend.conf");
        let (socket, task) = fake_bird(
            dir.path(),
            "0002-Reading configuration from /etc/bird/bird.conf\n0003 Reconfigured\n",
        );
        let bird = Bird {
            include_file: include_file.clone(),
            socket,
        };
        let note = bird.apply(2).await.unwrap();
        assert_eq!(
            note,
            "0003 Reading configuration from /etc/bird/bird.conf / Reconfigured"
        );
        assert_eq!(task.await.unwrap(), "configure\n");
        assert_eq!(
            std::fs::read_to_string(&include_file).unwrap(),
            include_text(2)
        );
        assert!(include_text(2).ends_with("define VRRPD_PREPEND = 2;\n"));

        std::fs::remove_file(&bird.socket).unwrap();
        let (_, _task) = fake_bird(
            dir.path(),
            "0002-Reading configuration from /etc/bird/bird.conf\n8002 /etc/bird/vrrpd.conf:1:24 syntax error\n",
        );
        let err = bird.apply(3).await.unwrap_err();
        assert!(
            matches!(&err, BgpError::BirdRefused { reply, .. } if reply.starts_with("8002 ")),
            "{err}"
        );
        // Nothing but the final file is left in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
    }

    #[tokio::test]
    async fn check_compares_file_and_running_value() {
        let dir = tempfile::tempdir().unwrap();
        let include_file = dir.path().join("p.conf");
        write_atomically(&include_file, &include_text(2)).unwrap();
        let (socket, task) = fake_bird(dir.path(), "0023 2\n");
        let bird = Bird {
            include_file: include_file.clone(),
            socket,
        };
        assert_eq!(bird.check(2).await.unwrap(), Check::InPlace);
        assert_eq!(task.await.unwrap(), "eval VRRPD_PREPEND\n");

        std::fs::remove_file(&bird.socket).unwrap();
        let (_, _task) = fake_bird(dir.path(), "0023 0\n");
        assert!(matches!(bird.check(2).await.unwrap(), Check::Drifted(_)));
        // A file someone changed is drift without asking BIRD.
        assert!(matches!(bird.check(3).await.unwrap(), Check::Drifted(_)));
    }

    #[tokio::test]
    async fn no_bird_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let bird = Bird {
            include_file: dir.path().join("p.conf"),
            socket: dir.path().join("none.ctl"),
        };
        let err = bird.apply(1).await.unwrap_err();
        assert!(matches!(err, BgpError::Io { .. }), "{err}");
    }
}
