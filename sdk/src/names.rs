//! Destination names (`natgw:policy@0.2.0`, egress policies): the names natgw bound to the
//! destination of the flow being checked, from the DNS answers its inside host received.
//!
//! The cheap way: register patterns once in `init` (`set_patterns`), then ask in `check`
//! which of them a bound name matches (`dst_matches`, one bit per pattern). natgw matches
//! them itself, the same way for policies in every language: `github.com` is that name
//! only, `*.pypi.org` one or more labels before `pypi.org` and never `pypi.org` itself;
//! case and a trailing dot are ignored. `dst_names` copies every bound name in, for a
//! policy that logs or reasons about them.
//!
//! Outside a check (in `init`) there is no flow: no names, no matches. In native builds
//! (a policy's own unit tests) the `testing` functions stand in for the gateway.

/// A name natgw bound to a flow's destination address: lower case, no trailing dot, with
/// the seconds the binding still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundName {
    pub name: String,
    pub ttl_s: u32,
}

/// Patterns an instance may register.
pub const MAX_PATTERNS: usize = 64;

/// Registers this instance's name patterns (replacing any before). An error names the
/// first pattern that is not a domain name; return it from `init`.
pub fn set_patterns(patterns: &[String]) -> Result<(), String> {
    imp::set_patterns(patterns)
}

/// Bit i set when a name bound to the destination matches pattern i of `set_patterns`.
pub fn dst_matches() -> u64 {
    imp::dst_matches()
}

/// Every name bound to the destination, each once.
pub fn dst_names() -> Vec<BoundName> {
    imp::dst_names()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::BoundName;
    use crate::bindings::world::natgw::policy::names as wit;

    pub fn set_patterns(patterns: &[String]) -> Result<(), String> {
        wit::set_patterns(patterns)
    }

    pub fn dst_matches() -> u64 {
        wit::dst_matches()
    }

    pub fn dst_names() -> Vec<BoundName> {
        wit::dst_names().into_iter().map(|n| BoundName { name: n.name, ttl_s: n.ttl_s }).collect()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::BoundName;
    use std::cell::RefCell;

    thread_local! {
        pub(super) static PATTERNS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
        pub(super) static MATCHES: RefCell<u64> = const { RefCell::new(0) };
        pub(super) static NAMES: RefCell<Vec<BoundName>> = const { RefCell::new(Vec::new()) };
    }

    pub fn set_patterns(patterns: &[String]) -> Result<(), String> {
        if patterns.len() > super::MAX_PATTERNS {
            return Err(format!("{} name patterns: at most {}", patterns.len(), super::MAX_PATTERNS));
        }
        PATTERNS.with(|p| *p.borrow_mut() = patterns.to_vec());
        Ok(())
    }

    pub fn dst_matches() -> u64 {
        MATCHES.with(|m| *m.borrow())
    }

    pub fn dst_names() -> Vec<BoundName> {
        NAMES.with(|n| n.borrow().clone())
    }
}

/// Native builds only: what the gateway would answer, set by a policy's unit tests.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use super::{imp, BoundName};

    /// The patterns the policy registered last.
    pub fn patterns() -> Vec<String> {
        imp::PATTERNS.with(|p| p.borrow().clone())
    }

    /// Makes `dst_matches` answer `bits` and `dst_names` answer `names`.
    pub fn bind(bits: u64, names: &[&str]) {
        imp::MATCHES.with(|m| *m.borrow_mut() = bits);
        imp::NAMES
            .with(|n| *n.borrow_mut() = names.iter().map(|s| BoundName { name: s.to_string(), ttl_s: 60 }).collect());
    }
}
