//! `vrrpd`: the command line (see the user contract: run, validate, show).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vrrpd::control::{self, Request, Response, render};

const DEFAULT_CONFIG: &str = "/etc/vrrpd/vrrpd.toml";

#[derive(Parser)]
#[command(
    name = "vrrpd",
    version,
    about = "VRRPv3 daemon for paired Linux edge routers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (logs to stderr; SIGTERM/SIGINT shut down cleanly).
    Run {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Parse and check a configuration file: exit 0 when valid, else 2 and one line per problem.
    Validate {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask a running daemon over its control socket.
    Show {
        #[command(subcommand)]
        what: ShowWhat,
    },
}

#[derive(Subcommand)]
enum ShowWhat {
    /// The VRRP groups: state, master, timers, counters.
    Groups {
        #[arg(long)]
        json: bool,
        #[arg(short, long)]
        socket: Option<PathBuf>,
    },
    /// Conntrack-sync status.
    Sync {
        #[arg(long)]
        json: bool,
        #[arg(short, long)]
        socket: Option<PathBuf>,
    },
    /// BGP alignment: the prepend applied, when, by which driver, the last error.
    Bgp {
        #[arg(long)]
        json: bool,
        #[arg(short, long)]
        socket: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Validate { config } => match vrrpd::config::load(&config) {
            Ok(_) => ExitCode::SUCCESS,
            Err(errors) => {
                eprint!("{errors}");
                if !errors.to_string().ends_with('\n') {
                    eprintln!();
                }
                ExitCode::from(2)
            }
        },
        Command::Show { what } => show(what),
    }
}

fn run(path: &Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VRRPD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match vrrpd::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    // One thread: the core is sequential, and a single thread keeps CPU and wake-ups low.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vrrpd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vrrpd::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `-s` wins; else the `daemon.socket` of the default config file (read even when the rest of
/// the file is invalid); else the default path.
fn socket_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| vrrpd::config::control_socket(Path::new(DEFAULT_CONFIG)))
}

fn show(what: ShowWhat) -> ExitCode {
    let (request, json, socket) = match what {
        ShowWhat::Groups { json, socket } => (Request::ShowGroups, json, socket),
        ShowWhat::Sync { json, socket } => (Request::ShowSync, json, socket),
        ShowWhat::Bgp { json, socket } => (Request::ShowBgp, json, socket),
    };
    let socket = socket_path(socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let response = match runtime.block_on(control::query(&socket, &request)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vrrpd: {e}");
            return ExitCode::from(1);
        }
    };
    match response {
        Response::Groups(groups) if json => println!(
            "{}",
            serde_json::to_string_pretty(&groups).unwrap_or_default()
        ),
        Response::Groups(groups) => print!("{}", render::groups_table(&groups)),
        Response::Bgp(status) if json => println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        ),
        Response::Bgp(status) => print!("{}", render::bgp_table(&status)),
        Response::Sync(value) if json => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
        Response::Sync(value) => print!("{}", render::sync_table(&value)),
        Response::Error(message) => {
            eprintln!("vrrpd: {message}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
