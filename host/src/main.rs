//! The `natgw` command: run the gateway, check a config, and talk to a running gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use natgw::control::{self, config::Config};

const DEFAULT_ADMIN: &str = "/run/natgw/admin.sock";

#[derive(Parser)]
#[command(name = "natgw", version, about = "A programmable NAT gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground until SIGINT/SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit (0 when valid).
    CheckConfig { file: PathBuf },
    /// Uptime, workers, addresses, flow count and the main counters.
    Status {
        #[arg(long, default_value = DEFAULT_ADMIN)]
        socket: String,
    },
    /// Every counter, one per line (AWS NAT gateway metric names).
    Stats {
        #[arg(long, default_value = DEFAULT_ADMIN)]
        socket: String,
    },
    /// One line per flow: pre- and post-NAT tuples, state, age, packets, bytes.
    Flows {
        #[arg(long, default_value = DEFAULT_ADMIN)]
        socket: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => Config::load(&config).map_err(control::ControlError::from).and_then(control::run),
        Command::CheckConfig { file } => Config::load(&file)
            .map(|c| {
                println!(
                    "{}: ok ({} inside interface(s), {} external address(es), ports {}-{}, {} worker(s))",
                    file.display(),
                    c.inside.len(),
                    c.outside.addresses.len(),
                    c.port_lo,
                    c.port_hi,
                    c.worker_count()
                );
            })
            .map_err(control::ControlError::from),
        Command::Status { socket } => control::admin_request(&socket, "status").map(|s| print!("{s}")),
        Command::Stats { socket } => control::admin_request(&socket, "stats").map(|s| print!("{s}")),
        Command::Flows { socket, json } => control::admin_request(&socket, "flows").map(|s| {
            if json {
                print!("{s}")
            } else {
                print!("{}", control::format_flows(&s))
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natgw: error: {e}");
            ExitCode::FAILURE
        }
    }
}
