//! # natgw-policy-sdk: natgw policies in Rust
//!
//! A natgw policy is a WebAssembly component that implements one hook of the WIT package
//! `natgw:policy@0.2.0` (in `wit/`): **egress** (may a new flow leave?), **port-pool**
//! (which pool of external addresses and ports does it use?) or **flow-log** (what goes
//! into the flow log?), or all three. This crate gives you plain Rust types, one trait per
//! hook, helpers for CIDRs, port ranges and TOML config, and a macro that turns your type
//! into the component's exports.
//!
//! A complete egress policy that refuses telnet and allows everything else:
//!
//! ```no_run
//! use natgw_policy_sdk::{export_policy, Egress, Flow, Policy, Verdict};
//!
//! struct NoTelnet;
//!
//! impl Policy for NoTelnet {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(NoTelnet)
//!     }
//! }
//!
//! impl Egress for NoTelnet {
//!     fn check(&mut self, flow: &Flow) -> Verdict {
//!         if flow.dst_port == 23 { Verdict::Reject } else { Verdict::Allow }
//!     }
//! }
//!
//! export_policy!(NoTelnet: egress);
//! ```
//!
//! Build it into a component with `scripts/build-policy.sh DIR` from the natgw repository;
//! load it with `natgw policy swap --hook egress target/policies/no_telnet.wasm`.
//!
//! `init` runs once per instance with the text of the policy's config file (or "" when
//! there is none); an `Err` rejects the policy at load time with your message. The gateway
//! keeps one instance per worker, so `&mut self` state is per worker. Calls have a deadline
//! (1 ms by default) and instances a memory cap: a policy that loops or allocates without
//! bound is stopped and the hook's fail mode applies.

// Each glue macro is used only by the features that need it.
#![allow(unused_macros)]

pub mod config;
#[cfg(any(feature = "egress", feature = "all"))]
pub mod names;
pub mod net;

pub use config::parse_toml;
pub use net::{Cidr, PortRange};
pub use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::any::Any;
use std::cell::RefCell;

// Exactly one world's bindings per component: wit-component merges every world whose
// bindings are linked in, so a component must not carry the others.
#[cfg(any(
    all(feature = "egress", any(feature = "port-pool", feature = "flow-log", feature = "all")),
    all(feature = "port-pool", any(feature = "flow-log", feature = "all")),
    all(feature = "flow-log", feature = "all"),
))]
compile_error!(
    "enable exactly one of the features egress, port-pool, flow-log, all (build each policy crate on its own)"
);
#[cfg(not(any(feature = "egress", feature = "port-pool", feature = "flow-log", feature = "all")))]
compile_error!("enable one of the features egress, port-pool, flow-log, all: the hook your policy implements");

#[doc(hidden)]
pub mod bindings {
    #[cfg(feature = "egress")]
    pub mod egress_world {
        wit_bindgen::generate!({ path: "wit/natgw-policy-0.2.0", world: "egress-policy", pub_export_macro: true, default_bindings_module: "natgw_policy_sdk::bindings::egress_world", export_macro_name: "export_egress" });
    }
    #[cfg(feature = "port-pool")]
    pub mod port_pool_world {
        wit_bindgen::generate!({ path: "wit/natgw-policy-0.2.0", world: "port-pool-policy", pub_export_macro: true, default_bindings_module: "natgw_policy_sdk::bindings::port_pool_world", export_macro_name: "export_port_pool" });
    }
    #[cfg(feature = "flow-log")]
    pub mod flow_log_world {
        wit_bindgen::generate!({ path: "wit/natgw-policy-0.2.0", world: "flow-log-policy", pub_export_macro: true, default_bindings_module: "natgw_policy_sdk::bindings::flow_log_world", export_macro_name: "export_flow_log" });
    }
    #[cfg(feature = "all")]
    pub mod all_world {
        wit_bindgen::generate!({ path: "wit/natgw-policy-0.2.0", world: "policy", pub_export_macro: true, default_bindings_module: "natgw_policy_sdk::bindings::all_world", export_macro_name: "export_all" });
    }
    #[cfg(feature = "all")]
    pub use all_world as world;
    #[cfg(feature = "egress")]
    pub use egress_world as world;
    #[cfg(feature = "flow-log")]
    pub use flow_log_world as world;
    #[cfg(feature = "port-pool")]
    pub use port_pool_world as world;
}

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    /// "tcp", "udp", "icmp".
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp),
            _ => None,
        }
    }
}

/// A new flow as the inside host sent it (before translation). For ICMP echo, `src_port`
/// is the echo identifier and `dst_port` is 0. natgw 0.1 translates IPv4 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub protocol: Protocol,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// Which inside interface it came in on: its index in the gateway config's `[[inside]]`.
    pub ingress: u16,
}

/// What happens to a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Drop silently.
    Deny,
    /// Drop, and answer the inside host (TCP RST, or ICMP administratively prohibited).
    Reject,
}

impl Verdict {
    /// "allow", "deny", "reject".
    pub fn parse(s: &str) -> Option<Verdict> {
        match s.to_ascii_lowercase().as_str() {
            "allow" => Some(Verdict::Allow),
            "deny" => Some(Verdict::Deny),
            "reject" => Some(Verdict::Reject),
            _ => None,
        }
    }
}

/// A pool choice: a pool name from the gateway config, and an optional cap on concurrent
/// mappings (external ports) per inside source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub pool: String,
    pub port_budget: Option<u32>,
}

/// Why a record was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// TCP: FIN from both sides, then time-wait ran out.
    Closed,
    /// TCP: a RST was seen.
    Reset,
    /// No packet for the state's idle timeout.
    IdleTimeout,
    /// Closed when a new egress policy denied it (`--revalidate`).
    Revalidated,
    /// The gateway stopped.
    Shutdown,
    /// Never answered, and given up to make room when the flow table was full.
    Evicted,
    /// Still open: an interim record; more of the flow follow.
    Active,
    /// The egress policy refused it: nothing was translated.
    Refused,
}

/// Whether the gateway let the flow through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Reject,
}

/// Who opened the flow: an inside host, or an outside peer through an
/// endpoint-independent mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Egress,
    Ingress,
}

/// A flow record: a finished flow, an interim record of an open one, or a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    /// This record. Keep it in the entry you return: the gateway joins its own fields back
    /// by it, and refuses a batch whose entries carry an id it did not send, or one twice.
    pub id: u64,
    /// The flow, the same for each of its records (`natgw.flow.id`).
    pub flow_id: u64,
    pub flow: Flow,
    pub nat_src: IpAddr,
    pub nat_src_port: u16,
    pub pool: String,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub tcp_flags: u8,
    pub end_reason: EndReason,
    pub action: Action,
    pub direction: Direction,
}

/// Fields a log entry can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    SrcAddress,
    SrcPort,
    DstAddress,
    DstPort,
    NatAddress,
    NatPort,
    Pool,
    Counters,
    Times,
    TcpFlags,
}

impl Field {
    pub const ALL: [Field; 10] = [
        Field::SrcAddress,
        Field::SrcPort,
        Field::DstAddress,
        Field::DstPort,
        Field::NatAddress,
        Field::NatPort,
        Field::Pool,
        Field::Counters,
        Field::Times,
        Field::TcpFlags,
    ];

    /// The flow-log field name ("srcaddr", "srcport", "dstaddr", "dstport", "pkt-srcaddr",
    /// "pkt-srcport", "pool", "counters", "times", "tcp-flags").
    pub fn name(self) -> &'static str {
        match self {
            Field::SrcAddress => "srcaddr",
            Field::SrcPort => "srcport",
            Field::DstAddress => "dstaddr",
            Field::DstPort => "dstport",
            Field::NatAddress => "pkt-srcaddr",
            Field::NatPort => "pkt-srcport",
            Field::Pool => "pool",
            Field::Counters => "counters",
            Field::Times => "times",
            Field::TcpFlags => "tcp-flags",
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// One flow-log entry to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub record: FlowRecord,
    pub omit: Vec<Field>,
    pub attributes: Vec<(String, String)>,
}

impl LogEntry {
    /// The record as it is: nothing omitted, no attributes.
    pub fn of(record: FlowRecord) -> LogEntry {
        LogEntry { record, omit: Vec::new(), attributes: Vec::new() }
    }
}

/// Every policy: built once per instance from its config text.
pub trait Policy: Sized + 'static {
    fn init(config: &str) -> Result<Self, String>;

    /// This instance's state, handed at a swap to the next generation's instance on the
    /// same worker (`import_state`). Default: none.
    fn export_state(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// The state the previous generation's instance on this worker exported; an `Err`
    /// (logged by the gateway) leaves this instance on `init`'s state. Default: ignored.
    fn import_state(&mut self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}

/// The egress hook: runs once per new flow, before a port is allocated. During `check`
/// (and `decide`, `explain`) a policy may ask for the names natgw bound to the
/// destination (`names`).
pub trait Egress: Policy {
    fn check(&mut self, flow: &Flow) -> Verdict;

    /// What the gateway calls: `check`'s verdict, and how long a refusal may be reused for
    /// the same tuple. By default the gateway's own hold (`policy.refusal_cache_ms`).
    /// Override it to say otherwise (and answer `check` from it).
    fn decide(&mut self, flow: &Flow) -> Decision {
        Decision::from(self.check(flow))
    }

    /// `natgw explain`: what `check` would answer and why, for an operator. By default
    /// `check`'s verdict and no reason.
    fn explain(&mut self, flow: &Flow) -> Explanation {
        Explanation { verdict: self.check(flow), reason: String::new() }
    }
}

/// A verdict and how long a refusal holds (`Egress::decide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// How long, in ms, the gateway may refuse the same tuple again without asking: `None`
    /// for the gateway's `policy.refusal_cache_ms`, `Some(0)` to be asked every time; at
    /// most 60 000. Ignored for an allow (the flow lives on without asking).
    pub hold_ms: Option<u32>,
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Decision {
        Decision { verdict, hold_ms: None }
    }
}

/// A verdict and the reason for it, in words (`Egress::explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub verdict: Verdict,
    pub reason: String,
}

/// The port-pool hook: `None` means the gateway's default pool.
pub trait PortPool: Policy {
    fn select(&mut self, flow: &Flow) -> Option<Selection>;
}

/// The flow-log hook: a batch of finished flows in, the entries to export out.
pub trait FlowLog: Policy {
    fn process(&mut self, batch: Vec<FlowRecord>) -> Vec<LogEntry>;
}

/// Functions the gateway provides.
pub mod host {
    /// Writes a line to the gateway's log (rate limited by the gateway).
    pub fn log(level: Level, message: &str) {
        use crate::bindings::world::natgw::policy::host::{log, LogLevel};
        let l = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        log(l, message);
    }

    /// A monotonic clock in nanoseconds.
    pub fn monotonic_now_ns() -> u64 {
        crate::bindings::world::natgw::policy::host::monotonic_now_ns()
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Level {
        Debug,
        Info,
        Warn,
        Error,
    }
}

thread_local! {
    /// The policy value of this instance (one per component instance: Wasm is single-threaded).
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub fn __init<T: Policy>(config: String) -> Result<(), String> {
    let p = T::init(&config)?;
    STATE.with(|s| *s.borrow_mut() = Some(Box::new(p)));
    Ok(())
}

#[doc(hidden)]
pub fn __with<T: Policy, R>(f: impl FnOnce(&mut T) -> R) -> R {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let p = s.as_mut().and_then(|b| b.downcast_mut::<T>()).expect("natgw calls init before any hook");
        f(p)
    })
}

/// The glue between the generated bindings and your type. `export_policy!` names it.
#[doc(hidden)]
pub struct Glue<T>(std::marker::PhantomData<T>);

macro_rules! glue_for_world {
    ($world:ident) => {
        glue_for_world!($world, {});
    };
    // What the world's lifecycle has beside init (0.2.0: the state calls).
    ($world:ident, { $($state:tt)* }) => {
        mod $world {
            use super::*;
            use crate::bindings::$world::natgw::policy::types as t;

            #[allow(dead_code)]
            pub fn flow_in(f: t::Flow) -> Flow {
                Flow {
                    protocol: match f.protocol {
                        t::Protocol::Tcp => Protocol::Tcp,
                        t::Protocol::Udp => Protocol::Udp,
                        t::Protocol::Icmp => Protocol::Icmp,
                    },
                    src: addr_in(f.src),
                    src_port: f.src_port,
                    dst: addr_in(f.dst),
                    dst_port: f.dst_port,
                    ingress: f.ingress,
                }
            }

            #[allow(dead_code)]
            pub fn flow_out(f: &Flow) -> t::Flow {
                t::Flow {
                    protocol: match f.protocol {
                        Protocol::Tcp => t::Protocol::Tcp,
                        Protocol::Udp => t::Protocol::Udp,
                        Protocol::Icmp => t::Protocol::Icmp,
                    },
                    src: addr_out(f.src),
                    src_port: f.src_port,
                    dst: addr_out(f.dst),
                    dst_port: f.dst_port,
                    ingress: f.ingress,
                }
            }

            #[allow(dead_code)]
            pub fn verdict_out(v: Verdict) -> t::Verdict {
                match v {
                    Verdict::Allow => t::Verdict::Allow,
                    Verdict::Deny => t::Verdict::Deny,
                    Verdict::Reject => t::Verdict::Reject,
                }
            }

            #[allow(dead_code)]
            pub fn addr_in(a: t::IpAddress) -> IpAddr {
                match a {
                    t::IpAddress::V4(v) => IpAddr::V4(Ipv4Addr::from(v)),
                    t::IpAddress::V6((hi, lo)) => IpAddr::V6(Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo))),
                }
            }

            #[allow(dead_code)]
            pub fn addr_out(a: IpAddr) -> t::IpAddress {
                match a {
                    IpAddr::V4(v) => t::IpAddress::V4(u32::from(v)),
                    IpAddr::V6(v) => {
                        let v = u128::from(v);
                        t::IpAddress::V6(((v >> 64) as u64, v as u64))
                    }
                }
            }

            impl<T: Policy> crate::bindings::$world::exports::natgw::policy::lifecycle::Guest for Glue<T> {
                fn init(config: String) -> Result<(), String> {
                    crate::__init::<T>(config)
                }
                $($state)*
            }
        }
    };
}

// 0.2.0's lifecycle carries state across swaps.
macro_rules! glue_with_state {
    ($world:ident) => {
#[rustfmt::skip]
        glue_for_world!($world, {
            fn export_state() -> Vec<u8> {
                crate::__with::<T, _>(|p| p.export_state())
            }
            fn import_state(state: Vec<u8>) -> Result<(), String> {
                crate::__with::<T, _>(|p| p.import_state(&state))
            }
        });
    };
}
#[cfg(feature = "egress")]
glue_with_state!(egress_world);
#[cfg(feature = "port-pool")]
glue_with_state!(port_pool_world);
#[cfg(feature = "flow-log")]
glue_with_state!(flow_log_world);
#[cfg(feature = "all")]
glue_with_state!(all_world);

macro_rules! egress_glue {
    ($world:ident) => {
        impl<T: Egress> crate::bindings::$world::exports::natgw::policy::egress::Guest for Glue<T> {
            fn check(
                f: crate::bindings::$world::natgw::policy::types::Flow,
            ) -> crate::bindings::$world::natgw::policy::types::Decision {
                let d = crate::__with::<T, _>(|p| p.decide(&$world::flow_in(f)));
                crate::bindings::$world::natgw::policy::types::Decision {
                    verdict: $world::verdict_out(d.verdict),
                    hold_ms: d.hold_ms,
                }
            }

            fn explain(
                f: crate::bindings::$world::natgw::policy::types::Flow,
            ) -> crate::bindings::$world::natgw::policy::types::Explanation {
                let e = crate::__with::<T, _>(|p| p.explain(&$world::flow_in(f)));
                crate::bindings::$world::natgw::policy::types::Explanation {
                    verdict: $world::verdict_out(e.verdict),
                    reason: e.reason,
                }
            }
        }
    };
}

macro_rules! port_pool_glue {
    ($world:ident) => {
        impl<T: PortPool> crate::bindings::$world::exports::natgw::policy::port_pool::Guest for Glue<T> {
            fn select(
                f: crate::bindings::$world::natgw::policy::types::Flow,
            ) -> Option<crate::bindings::$world::exports::natgw::policy::port_pool::Selection> {
                crate::__with::<T, _>(|p| p.select(&$world::flow_in(f))).map(|s| {
                    crate::bindings::$world::exports::natgw::policy::port_pool::Selection {
                        pool: s.pool,
                        port_budget: s.port_budget,
                    }
                })
            }
        }
    };
}

macro_rules! flow_log_glue {
    ($world:ident) => {
        impl<T: FlowLog> crate::bindings::$world::exports::natgw::policy::flow_log::Guest for Glue<T> {
            fn process(
                batch: Vec<crate::bindings::$world::exports::natgw::policy::flow_log::FlowRecord>,
            ) -> Vec<crate::bindings::$world::exports::natgw::policy::flow_log::LogEntry> {
                use crate::bindings::$world::exports::natgw::policy::flow_log as w;
                let records = batch
                    .into_iter()
                    .map(|r| FlowRecord {
                        id: r.id,
                        flow_id: r.flow_id,
                        flow: $world::flow_in(r.flow),
                        nat_src: $world::addr_in(r.nat_src),
                        nat_src_port: r.nat_src_port,
                        pool: r.pool,
                        packets_out: r.packets_out,
                        bytes_out: r.bytes_out,
                        packets_in: r.packets_in,
                        bytes_in: r.bytes_in,
                        start_unix_ns: r.start_unix_ns,
                        end_unix_ns: r.end_unix_ns,
                        tcp_flags: r.tcp_flags,
                        end_reason: match r.end_reason {
                            w::EndReason::Closed => EndReason::Closed,
                            w::EndReason::Reset => EndReason::Reset,
                            w::EndReason::IdleTimeout => EndReason::IdleTimeout,
                            w::EndReason::Revalidated => EndReason::Revalidated,
                            w::EndReason::Shutdown => EndReason::Shutdown,
                            w::EndReason::Evicted => EndReason::Evicted,
                            w::EndReason::Active => EndReason::Active,
                            w::EndReason::Refused => EndReason::Refused,
                        },
                        action: match r.action {
                            w::Action::Accept => Action::Accept,
                            w::Action::Reject => Action::Reject,
                        },
                        direction: match r.direction {
                            w::Direction::Egress => Direction::Egress,
                            w::Direction::Ingress => Direction::Ingress,
                        },
                    })
                    .collect();
                let out = crate::__with::<T, _>(|p| p.process(records));
                out.into_iter()
                    .map(|e| {
                        let r = e.record;
                        let mut omit = w::Field::empty();
                        for f in e.omit {
                            omit |= match f {
                                Field::SrcAddress => w::Field::SRC_ADDRESS,
                                Field::SrcPort => w::Field::SRC_PORT,
                                Field::DstAddress => w::Field::DST_ADDRESS,
                                Field::DstPort => w::Field::DST_PORT,
                                Field::NatAddress => w::Field::NAT_ADDRESS,
                                Field::NatPort => w::Field::NAT_PORT,
                                Field::Pool => w::Field::POOL,
                                Field::Counters => w::Field::COUNTERS,
                                Field::Times => w::Field::TIMES,
                                Field::TcpFlags => w::Field::TCP_FLAGS,
                            };
                        }
                        w::LogEntry {
                            record: w::FlowRecord {
                                id: r.id,
                                flow_id: r.flow_id,
                                flow: $world::flow_out(&r.flow),
                                nat_src: $world::addr_out(r.nat_src),
                                nat_src_port: r.nat_src_port,
                                pool: r.pool,
                                packets_out: r.packets_out,
                                bytes_out: r.bytes_out,
                                packets_in: r.packets_in,
                                bytes_in: r.bytes_in,
                                start_unix_ns: r.start_unix_ns,
                                end_unix_ns: r.end_unix_ns,
                                tcp_flags: r.tcp_flags,
                                end_reason: match r.end_reason {
                                    EndReason::Closed => w::EndReason::Closed,
                                    EndReason::Reset => w::EndReason::Reset,
                                    EndReason::IdleTimeout => w::EndReason::IdleTimeout,
                                    EndReason::Revalidated => w::EndReason::Revalidated,
                                    EndReason::Shutdown => w::EndReason::Shutdown,
                                    EndReason::Evicted => w::EndReason::Evicted,
                                    EndReason::Active => w::EndReason::Active,
                                    EndReason::Refused => w::EndReason::Refused,
                                },
                                action: match r.action {
                                    Action::Accept => w::Action::Accept,
                                    Action::Reject => w::Action::Reject,
                                },
                                direction: match r.direction {
                                    Direction::Egress => w::Direction::Egress,
                                    Direction::Ingress => w::Direction::Ingress,
                                },
                            },
                            omit,
                            attributes: e
                                .attributes
                                .into_iter()
                                .map(|(key, value)| w::Attribute { key, value })
                                .collect(),
                        }
                    })
                    .collect()
            }
        }
    };
}

#[cfg(feature = "egress")]
egress_glue!(egress_world);
#[cfg(feature = "all")]
egress_glue!(all_world);
#[cfg(feature = "port-pool")]
port_pool_glue!(port_pool_world);
#[cfg(feature = "all")]
port_pool_glue!(all_world);
#[cfg(feature = "flow-log")]
flow_log_glue!(flow_log_world);
#[cfg(feature = "all")]
flow_log_glue!(all_world);

/// Exports your type as a policy component for one hook (`egress`, `port_pool`,
/// `flow_log`) or for all three (`all`, which needs all three traits).
#[macro_export]
macro_rules! export_policy {
    ($t:ty : egress) => {
        #[allow(dead_code)]
        type __NatgwPolicy = $crate::Glue<$t>;
        // Native builds (the policy's unit tests) export nothing.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::egress_world::export_egress!(__NatgwPolicy with_types_in $crate::bindings::egress_world);
    };
    ($t:ty : port_pool) => {
        #[allow(dead_code)]
        type __NatgwPolicy = $crate::Glue<$t>;
        // Native builds (the policy's unit tests) export nothing.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::port_pool_world::export_port_pool!(__NatgwPolicy with_types_in $crate::bindings::port_pool_world);
    };
    ($t:ty : flow_log) => {
        #[allow(dead_code)]
        type __NatgwPolicy = $crate::Glue<$t>;
        // Native builds (the policy's unit tests) export nothing.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::flow_log_world::export_flow_log!(__NatgwPolicy with_types_in $crate::bindings::flow_log_world);
    };
    ($t:ty : all) => {
        #[allow(dead_code)]
        type __NatgwPolicy = $crate::Glue<$t>;
        // Native builds (the policy's unit tests) export nothing.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::all_world::export_all!(__NatgwPolicy with_types_in $crate::bindings::all_world);
    };
}
