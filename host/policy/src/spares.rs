//! Spare instances, made off the data plane. Every caller of a hook (a worker, the flow-log
//! thread) keeps one spare beside the instance it calls, in its generation's slot for it.
//! When a caller takes its instance (at a swap) or loses one (a trap leaves an instance
//! unusable), it asks this thread for the next, which instantiates it and runs `init`
//! (`natgw policy bench`: 0.06 ms for the Rust allow-list, 1 ms for Go, 1.5 ms for
//! JavaScript, 2 ms for Python; up to 5 s allowed): a trapped instance is replaced at
//! once, and a worker never instantiates. The
//! hook's fail mode applies only while no spare is ready (`PolicySpareMisses`).
//!
//! A slot is refilled at most once per `SPARE_BACKOFF`, so a policy that traps on every
//! call costs ten instantiations a second per caller, on this thread, not one per flow.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Generation, Runtime};

/// The least time between two spares made for the same caller of the same generation.
pub const SPARE_BACKOFF: Duration = Duration::from_millis(100);

/// Requests waiting in the channel; more are dropped (a caller asks again at its next
/// failure, and each caller needs only one).
const QUEUED_REQUESTS: usize = 256;

/// A caller's request: refill its slot in this generation.
pub struct SpareRequest {
    generation: Weak<Generation>,
    caller: usize,
}

pub fn channel() -> (SyncSender<SpareRequest>, Receiver<SpareRequest>) {
    std::sync::mpsc::sync_channel(QUEUED_REQUESTS)
}

/// Asks for a spare; never blocks (the caller may be a worker).
pub fn request(tx: &SyncSender<SpareRequest>, generation: &Arc<Generation>, caller: usize) {
    let r = SpareRequest { generation: Arc::downgrade(generation), caller };
    match tx.try_send(r) {
        Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
    }
}

struct Pending {
    due: Instant,
    generation: Weak<Generation>,
    caller: usize,
}

/// The spare thread's loop; ends when the runtime is gone (its sender dropped).
pub fn run(rt: Weak<Runtime>, rx: Receiver<SpareRequest>) {
    let mut pending: Vec<Pending> = Vec::new();
    // When each slot (generation id, caller) was last refilled, for the back-off.
    let mut made: Vec<(u64, usize, Instant)> = Vec::new();
    let mut last_log: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wait = pending.iter().map(|p| p.due.saturating_duration_since(now)).min().unwrap_or(Duration::from_secs(1));
        match rx.recv_timeout(wait) {
            Ok(r) => {
                let same = |p: &Pending| p.caller == r.caller && Weak::ptr_eq(&p.generation, &r.generation);
                if !pending.iter().any(same) {
                    let id = r.generation.upgrade().map_or(0, |g| g.id);
                    let due = made
                        .iter()
                        .find(|(g, c, _)| *g == id && *c == r.caller)
                        .map_or(now, |(_, _, at)| (*at + SPARE_BACKOFF).max(now));
                    pending.push(Pending { due, generation: r.generation, caller: r.caller });
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        made.retain(|(_, _, at)| now.duration_since(*at) < SPARE_BACKOFF);
        let due: Vec<Pending> = {
            let (due, later): (Vec<Pending>, Vec<Pending>) = pending.drain(..).partition(|p| p.due <= now);
            pending = later;
            due
        };
        for p in due {
            let (Some(rt), Some(g)) = (rt.upgrade(), p.generation.upgrade()) else { continue };
            // A superseded generation (neither the hook's nor the shadow) serves nobody any
            // more; a full slot needs nothing.
            let serves =
                rt.current_id(g.hook) == g.id || (g.hook == crate::config::Hook::Egress && rt.shadow_id() == g.id);
            if !serves || g.spare_ready(p.caller) {
                continue;
            }
            made.push((g.id, p.caller, Instant::now()));
            match rt.instantiate(&g) {
                Ok(inst) => g.put_spare(p.caller, inst),
                Err(e) => {
                    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_log = Some(Instant::now());
                        tracing::warn!(
                            "natgw: policy {}#{}: cannot make a spare instance: {e}; trying again",
                            g.hook,
                            g.id
                        );
                    }
                    pending.push(Pending {
                        due: Instant::now() + SPARE_BACKOFF,
                        generation: p.generation,
                        caller: p.caller,
                    });
                }
            }
        }
    }
}
