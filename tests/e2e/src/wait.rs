//! Waiting on conditions instead of sleeping: a test proceeds as soon as what it waits
//! for is true, and fails with what it waited for when it never is.

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it is true (returns true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like `wait_until`, but panics naming `what` when the condition never holds.
#[track_caller]
pub fn eventually(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(timeout, cond), "waited {timeout:?} for {what}");
}

/// Seconds, for readability at call sites.
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
