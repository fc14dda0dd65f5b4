//! natgw-core: the sans-IO core of natgw. Connection tracking (`conntrack`), the
//! translator (`nat`: the fast path, the slow path, ICMP, fragments, the packets natgw
//! builds itself, flow records), ARP and the neighbour cache (`l2`), DNS name binding for
//! name-aware egress policies (`dns`), and the per-worker counters operators see
//! (`counters`).
//!
//! Owns: every decision about a packet. Must never: perform I/O, read a clock (callers
//! pass `now_ms`), allocate on the fast path, know that policies are WebAssembly, or panic
//! on any input.

#![deny(unsafe_code)]

pub mod conntrack;
pub mod counters;
pub mod dns;
pub mod l2;
pub mod nat;
pub mod shared_counts;
