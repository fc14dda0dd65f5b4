//! The `natgw` command: run the gateway, check a config, and talk to a running gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use natgw::admin::{AdminClient, AdminError, FailMode, Hook};
use natgw::config::Config;
use natgw::{report, ControlError};

/// Which gateway a command talks to: `--socket`, else the `admin.socket` of `--config`,
/// else `$NATGW_SOCKET`, else /run/natgw/admin.sock (`natgw::admin_socket`).
#[derive(clap::Args, Clone, Debug)]
struct GatewayArgs {
    /// The gateway's admin socket [default: the `admin.socket` of --config, else
    /// $NATGW_SOCKET, else /run/natgw/admin.sock]
    #[arg(long, conflicts_with = "config")]
    socket: Option<String>,
    /// The gateway's config file: its `admin.socket` is the socket.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

impl GatewayArgs {
    fn client(&self) -> Result<AdminClient, ControlError> {
        let env = std::env::var("NATGW_SOCKET").ok();
        natgw::admin_socket(self.socket.clone(), self.config.as_deref(), env)
            .map(AdminClient::new)
            .map_err(ControlError::from)
    }
}

/// `policy swap`'s gateway: its `--config` is the policy's, so the gateway's is
/// `--gateway-config`.
#[derive(clap::Args, Clone, Debug)]
struct SwapGatewayArgs {
    /// The gateway's admin socket [default: the `admin.socket` of --gateway-config, else
    /// $NATGW_SOCKET, else /run/natgw/admin.sock]
    #[arg(long, conflicts_with = "gateway_config")]
    socket: Option<String>,
    /// The gateway's config file: its `admin.socket` is the socket.
    #[arg(long)]
    gateway_config: Option<PathBuf>,
}

impl SwapGatewayArgs {
    fn client(&self) -> Result<AdminClient, ControlError> {
        GatewayArgs { socket: self.socket.clone(), config: self.gateway_config.clone() }.client()
    }
}

/// `print!` and `println!` that never panic: a reader that went away (`natgw flows | head`)
/// drops the rest of the text.
macro_rules! out {
    ($($t:tt)*) => { natgw::logging::stdout_text(&format!($($t)*)) };
}
macro_rules! outln {
    ($($t:tt)*) => { natgw::logging::stdout_text(&format!("{}\n", format_args!($($t)*))) };
}

/// What `natgw ha` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HaAction {
    /// Take over every replicated flow and address (gratuitous ARP) and forward.
    Promote,
    /// Stop forwarding and answering ARP; let the flows go to the new active.
    Demote,
    /// Keep a keepalived track file saying whether natgw runs (0) or not (1), updated the
    /// moment natgw's process ends.
    Watch,
    /// Exit 0 when natgw answers within a second and every worker turns its loop, 1 when
    /// not, saying why (keepalived's vrrp_script: a natgw alive but hung fails it).
    Check,
}

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
        /// Take flows, sockets and locks from the natgw that started this one (set by
        /// `natgw upgrade`, not by hand).
        #[arg(long, hide = true)]
        takeover_fd: Option<i32>,
    },
    /// Hand the running gateway over to another natgw binary (or the same one, for a
    /// restart) without dropping a flow: the new process starts with the gateway's config,
    /// compiles its policies, then takes every flow, socket and lock at a batch boundary.
    /// Refused, with the reason, when the configs' workers, interfaces, addresses or pools
    /// differ; the running gateway goes on then.
    Upgrade {
        /// The natgw binary to run.
        binary: PathBuf,
        #[command(flatten)]
        gateway: GatewayArgs,
        #[arg(long)]
        json: bool,
    },
    /// A gateway pair (`[ha]`): make this node the active one or the standby; what
    /// keepalived's notify scripts call.
    Ha {
        #[arg(value_enum)]
        action: HaAction,
        #[command(flatten)]
        gateway: GatewayArgs,
        #[arg(long)]
        json: bool,
        /// For `watch`: the file keepalived's `track_file` reads (0: natgw runs, 1: not).
        #[arg(long)]
        track_file: Option<PathBuf>,
    },
    /// Validate a config file and exit (0 when valid).
    CheckConfig { file: PathBuf },
    /// Uptime, workers, addresses, flow count and the main counters.
    Status {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every counter, one per line (AWS NAT gateway metric names).
    Stats {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One line per flow: pre- and post-NAT tuples, state, pool, age, packets, bytes; the
    /// filters select, like `conntrack -L -s … -p …`. With --follow: every flow record as
    /// it is exported, one JSON object per line.
    Flows {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Flows from this address or prefix (the initiator, e.g. an inside host).
        #[arg(long, value_name = "ADDR[/LEN]", conflicts_with = "follow")]
        src: Option<natgw::admin::Prefix>,
        /// Flows to this address or prefix, as the initiator addressed it.
        #[arg(long, value_name = "ADDR[/LEN]", conflicts_with = "follow")]
        dst: Option<natgw::admin::Prefix>,
        /// tcp, udp or icmp.
        #[arg(long, conflicts_with = "follow")]
        proto: Option<natgw::admin::FlowProto>,
        /// A state as the list prints it (ESTABLISHED, TIME_WAIT, UNREPLIED, ...).
        #[arg(long, value_parser = parse_state, conflicts_with = "follow")]
        state: Option<String>,
        /// Flows whose external address and port come from this pool.
        #[arg(long, conflicts_with = "follow")]
        pool: Option<String>,
        /// Stream flow records (finished, interim, refused flows) as they are emitted,
        /// after the flow-log policy, until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// What the gateway would do with a new flow now, and why: the inside interface, the
    /// names bound to the destination, the egress verdict and the policy's reason, the
    /// pool and translation, the filtering that governs replies, the timeouts. Against
    /// the running gateway, or with --offline against a config file (--config).
    Explain {
        #[command(flatten)]
        gateway: GatewayArgs,
        /// Evaluate the config file given with --config, without a running gateway (no
        /// names are bound there: --dst-name supposes one).
        #[arg(long, requires = "config")]
        offline: bool,
        /// tcp, udp or icmp.
        #[arg(long)]
        proto: natgw::admin::FlowProto,
        /// The inside host and its port (for ICMP echo, the identifier).
        #[arg(long, value_name = "ADDR:PORT")]
        src: std::net::SocketAddrV4,
        /// The destination as the host addresses it.
        #[arg(long, value_name = "ADDR:PORT", required_unless_present = "dst_name")]
        dst: Option<std::net::SocketAddrV4>,
        /// A destination name: alone, the address is the one bound to it for --src; with
        /// --dst, the name is supposed bound to that address.
        #[arg(long, value_name = "NAME")]
        dst_name: Option<String>,
        /// With --dst-name alone: the destination port.
        #[arg(long, value_name = "PORT")]
        dst_port: Option<u16>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A live view, refreshed every second: packets and bytes per second each way, new
    /// and active flows, drops per reason, policy calls and errors per hook, the exporter,
    /// and the top inside hosts and destinations. q quits.
    Top {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// OTLP: benchmark the exporter against a collector.
    Otlp {
        #[command(subcommand)]
        command: OtlpCommand,
    },
    /// Wasm policies: swap, list, remove on a running gateway; check or benchmark offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a shell's completion script for natgw (bash: save it as
    /// /usr/share/bash-completion/completions/natgw).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (natgw.1 and one per command) into DIR, or print natgw.1.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Replace a hook's policy on the running gateway without dropping a connection.
    /// Exits non-zero, with the reason, when the new policy is refused; the old one keeps
    /// serving then.
    Swap {
        /// egress, port-pool or flow-log.
        #[arg(long, value_parser = parse_hook)]
        hook: Hook,
        /// The component (.wasm).
        file: PathBuf,
        /// A file whose text is passed to the policy's init.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Fail mode: open or closed (default: the hook's current one).
        #[arg(long, value_parser = parse_fail)]
        fail: Option<FailMode>,
        /// Re-check existing flows against the new egress policy; close the denied ones
        /// (TCP with a RST).
        #[arg(long)]
        revalidate: bool,
        #[command(flatten)]
        gateway: SwapGatewayArgs,
    },
    /// Run a candidate egress policy beside the live one on the same new flows: it decides
    /// nothing; each answer that differs is counted (PolicyShadowDisagreements) and every
    /// flow's record carries it (natgw.shadow.verdict). Shadow calls use at most a tenth
    /// of a worker (past it they are skipped, counted). --remove stops it.
    Shadow {
        #[arg(long, value_parser = parse_hook)]
        hook: Hook,
        /// The candidate component (.wasm).
        #[arg(required_unless_present = "remove")]
        file: Option<PathBuf>,
        /// A file whose text is passed to the candidate's init.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Stop the shadow policy.
        #[arg(long, conflicts_with_all = ["file", "config"])]
        remove: bool,
        #[command(flatten)]
        gateway: SwapGatewayArgs,
    },
    /// Make the shadow policy the live one, with the same swap as `policy swap` (no
    /// connection dropped); the shadow stops.
    Promote {
        #[arg(long, value_parser = parse_hook)]
        hook: Hook,
        /// Fail mode: open or closed (default: the hook's current one).
        #[arg(long, value_parser = parse_fail)]
        fail: Option<FailMode>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Remove a hook's policy: the built-in behaviour (allow, default pool, log as is).
    Remove {
        #[arg(long, value_parser = parse_hook)]
        hook: Hook,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Each hook's generation, content hash, load time, calls, errors and fail mode.
    List {
        #[command(flatten)]
        gateway: GatewayArgs,
        #[arg(long)]
        json: bool,
    },
    /// Compile, validate and init a policy without a gateway (exit 0 when it would load).
    Check {
        #[arg(long, value_parser = parse_hook)]
        hook: Hook,
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Measure the cost of one policy call (egress.check or port-pool.select) on this
    /// machine: a benchmark, not a test.
    Bench {
        #[arg(long, value_parser = parse_hook)]
        hook: Hook,
        file: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 200_000)]
        calls: u64,
        /// Each call's deadline, as `policy.call_timeout_us` in the gateway config.
        #[arg(long, default_value_t = 1000)]
        call_timeout_us: u64,
        /// Each instance's memory cap, as `policy.memory_limit_mb` in the gateway config.
        #[arg(long, default_value_t = 64)]
        memory_limit_mb: u64,
        /// Egress: bind this many names (n0.bench.example, ...) to every flow's destination,
        /// as DNS binding would, so that each call carries them (a 0.2.0 policy only).
        #[arg(long, default_value_t = 0)]
        dst_names: usize,
    },
    /// Run a test-vector file (configs, flows, expected verdicts) against an egress
    /// policy; prints the cases that do not match and exits non-zero when there are any.
    Test {
        file: PathBuf,
        #[arg(long)]
        vectors: PathBuf,
    },
}

#[derive(Subcommand)]
enum OtlpCommand {
    /// Sends synthetic flow records through the gateway's OTLP exporter; prints records/s.
    Bench {
        /// Collector base URL, e.g. http://127.0.0.1:4317.
        #[arg(long)]
        endpoint: String,
        /// grpc or http/protobuf.
        #[arg(long, default_value = "grpc")]
        protocol: String,
        #[arg(long, default_value_t = 200_000)]
        records: usize,
        #[arg(long, default_value_t = 512)]
        batch: usize,
        #[arg(long)]
        gzip: bool,
    },
}

fn parse_hook(s: &str) -> Result<Hook, String> {
    Hook::parse(s).ok_or_else(|| format!("{s:?}: must be egress, port-pool or flow-log"))
}

fn parse_state(s: &str) -> Result<String, String> {
    natgw::admin::FLOW_STATES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(s))
        .map(|n| n.to_string())
        .ok_or_else(|| format!("{s:?} is not a flow state (one of {})", natgw::admin::FLOW_STATES.join(", ")))
}

fn parse_fail(s: &str) -> Result<FailMode, String> {
    match s {
        "open" => Ok(FailMode::Open),
        "closed" => Ok(FailMode::Closed),
        _ => Err(format!("{s:?}: must be open or closed")),
    }
}

fn absolute(p: &std::path::Path) -> Result<PathBuf, ControlError> {
    std::path::absolute(p).map_err(|e| ControlError::Path { path: p.display().to_string(), source: e })
}

/// Prints a reply as JSON: the admin API's own types, as `--json` promises.
fn print_json(v: &impl serde::Serialize) -> Result<(), ControlError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| ControlError::Admin(AdminError::BadReply { path: String::new(), reason: e.to_string() }))?;
    outln!("{text}");
    Ok(())
}

fn policy(cmd: PolicyCommand) -> Result<(), ControlError> {
    match cmd {
        PolicyCommand::Swap { hook, file, config, fail, revalidate, gateway } => {
            let report = gateway.client()?.policy_swap(
                hook,
                absolute(&file)?,
                config.as_deref().map(absolute).transpose()?,
                fail,
                revalidate,
            )?;
            outln!("{}", report::swap_text(&report));
            Ok(())
        }
        PolicyCommand::Shadow { hook, remove: true, gateway, .. } => {
            gateway.client()?.policy_shadow_remove(hook)?;
            outln!("{hook} shadow policy stopped");
            Ok(())
        }
        PolicyCommand::Shadow { hook, file, config, gateway, .. } => {
            let file = file.ok_or_else(|| {
                ControlError::Admin(natgw::admin::AdminError::BadRequest {
                    reason: "give the candidate's file, or --remove".into(),
                })
            })?;
            let report = gateway.client()?.policy_shadow(
                hook,
                absolute(&file)?,
                config.as_deref().map(absolute).transpose()?,
            )?;
            outln!("{}", report::swap_text(&report));
            Ok(())
        }
        PolicyCommand::Promote { hook, fail, gateway } => {
            let report = gateway.client()?.policy_promote(hook, fail)?;
            outln!("{}", report::swap_text(&report));
            Ok(())
        }
        PolicyCommand::Remove { hook, gateway } => {
            gateway.client()?.policy_remove(hook)?;
            outln!("{hook} policy removed; the built-in behaviour applies to new flows");
            Ok(())
        }
        PolicyCommand::List { gateway, json } => {
            let hooks = gateway.client()?.policy_list()?;
            if json {
                return print_json(&hooks);
            }
            out!("{}", report::policy_list_text(&hooks));
            Ok(())
        }
        PolicyCommand::Check { hook, file, config } => {
            let msg = natgw::policy_check(hook, &file, config.as_deref())?;
            outln!("{msg}");
            Ok(())
        }
        PolicyCommand::Bench { hook, file, config, calls, call_timeout_us, memory_limit_mb, dst_names } => {
            let limits = natgw::BenchLimits { call_timeout_us, memory_limit_mb, dst_names };
            out!("{}", natgw::policy_bench(hook, &file, config.as_deref(), calls, limits)?);
            Ok(())
        }
        PolicyCommand::Test { file, vectors } => {
            out!("{}", natgw_policy::vectors::policy_test(&file, &vectors)?);
            Ok(())
        }
    }
}

/// `natgw flows --follow`: copies the gateway's flow records to stdout as they come.
fn follow_flows(client: AdminClient) -> Result<(), ControlError> {
    use std::io::Write;
    let stdout = std::io::stdout();
    for line in client.follow_flows()? {
        let line = line?;
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break; // the reader went away (a closed pipe)
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    natgw::logging::init();
    match dispatch(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            natgw::logging::stderr_line(&format!("natgw: error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `natgw completions` and `natgw man`: generated from the definitions above.
fn generate(command: Command) -> Result<(), ControlError> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match command {
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "natgw", &mut text);
            out!("{}", String::from_utf8_lossy(&text));
            Ok(())
        }
        Command::Man { dir: Some(dir) } => {
            let io = |e| ControlError::Path { path: dir.display().to_string(), source: e };
            std::fs::create_dir_all(&dir).map_err(io)?;
            clap_mangen::generate_to(cmd, &dir).map_err(io)
        }
        _ => {
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut text)
                .map_err(|e| ControlError::Path { path: "natgw.1".into(), source: e })?;
            out!("{}", String::from_utf8_lossy(&text));
            Ok(())
        }
    }
}

fn dispatch(command: Command) -> Result<(), ControlError> {
    match command {
        c @ (Command::Completions { .. } | Command::Man { .. }) => generate(c),
        Command::Run { config, takeover_fd } => {
            Config::load(&config).map_err(ControlError::from).and_then(|c| natgw::run(c, Some(config), takeover_fd))
        }
        Command::Upgrade { binary, gateway, json } => std::path::absolute(&binary)
            .map_err(|e| ControlError::Path { path: binary.display().to_string(), source: e })
            .and_then(|b| gateway.client()?.upgrade(b).map_err(ControlError::from))
            .and_then(|r| {
                if json {
                    print_json(&r)
                } else {
                    outln!("{}", report::upgrade_text(&r));
                    Ok(())
                }
            }),
        Command::Ha { action: HaAction::Check, gateway, .. } => gateway
            .client()
            .and_then(|c| natgw::ha::check(&c).map_err(ControlError::Unhealthy))
            .map(|ok| outln!("{ok}")),
        Command::Ha { action: HaAction::Watch, gateway, track_file, .. } => match track_file {
            Some(f) => gateway.client().and_then(|c| {
                natgw::ha::watch(&c, &f).map_err(|e| ControlError::Path { path: f.display().to_string(), source: e })
            }),
            None => Err(ControlError::Usage("natgw ha watch needs --track-file FILE".into())),
        },
        Command::Ha { action, gateway, json, .. } => {
            gateway.client()?.ha(action == HaAction::Promote).map_err(ControlError::from).and_then(|r| {
                if json {
                    print_json(&r)
                } else {
                    outln!("{}", report::ha_text(&r));
                    Ok(())
                }
            })
        }
        Command::CheckConfig { file } => Config::load(&file)
            .map(|c| {
                let hooks: Vec<String> = Hook::ALL
                    .iter()
                    .filter_map(|h| c.policy.hooks[h.index()].as_ref().map(|p| format!("{h}={}", p.component.display())))
                    .collect();
                outln!(
                    "{}: ok ({} inside interface(s), {} external address(es), ports {}-{}, pools {}, {} worker(s), policies: {})",
                    file.display(),
                    c.inside.len(),
                    c.outside.addresses.len(),
                    c.port_lo,
                    c.port_hi,
                    c.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(","),
                    c.worker_count(),
                    if hooks.is_empty() { "none".to_string() } else { hooks.join(" ") }
                );
            })
            .map_err(ControlError::from),
        Command::Status { gateway, json } => gateway.client()?.status().map_err(ControlError::from).and_then(|s| {
            if json {
                print_json(&s)
            } else {
                out!("{}", report::status_text(&s));
                Ok(())
            }
        }),
        Command::Stats { gateway, json } => gateway.client()?.stats().map_err(ControlError::from).and_then(|s| {
            if json {
                print_json(&s)
            } else {
                out!("{}", report::stats_text(&s));
                Ok(())
            }
        }),
        Command::Flows { gateway, follow: true, .. } => gateway.client().and_then(follow_flows),
        Command::Flows { gateway, json, src, dst, proto, state, pool, .. } => gateway
            .client()?
            .flows_matching(natgw::admin::FlowFilter { src, dst, proto, state, pool })
            .map_err(ControlError::from)
            .and_then(|f| {
            if json {
                print_json(&f)
            } else {
                out!("{}", report::flows_text(&f));
                Ok(())
            }
        }),
        Command::Policy { command } => policy(command),
        Command::Explain { gateway, offline, proto, src, dst, dst_name, dst_port, json } => {
            let q = natgw::admin::ExplainQuery { proto, src, dst, dst_port, dst_name };
            let r = if offline {
                let path = gateway.config.clone().unwrap_or_default();
                natgw::explain_offline(&path, &q)?
            } else {
                gateway.client()?.explain(q)?
            };
            if json {
                print_json(&r)
            } else {
                out!("{}", report::explain_text(&r));
                Ok(())
            }
        }
        Command::Top { gateway } => natgw::top::run(gateway.client()?)
            .map_err(|e| ControlError::Path { path: "the terminal".into(), source: e }),
        Command::Otlp { command: OtlpCommand::Bench { endpoint, protocol, records, batch, gzip } } => {
            natgw::otlp_bench(&endpoint, &protocol, records, batch, gzip).map(|s| out!("{s}"))
        }
    }
}
