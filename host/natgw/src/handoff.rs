//! `natgw upgrade`: a running gateway hands its flows, packet sockets, interface locks and
//! listening sockets to a new natgw process, which goes on forwarding where it stopped.
//!
//! The old process starts the new binary (`run --config <its config> --takeover-fd N`,
//! N one end of a sequenced-packet socket pair) and keeps forwarding while the new one
//! reads its config and compiles its policies (seconds). Then, one JSON message each way
//! at a time:
//!
//! ```text
//! new → old  ready    {pid, terms, precopy} terms: version, workers, interfaces, fingerprint
//! old → new  refused  {reason}             terms differ: the new process exits, the old goes on
//! old → new  precopy  {now_ms} + a memfd   every worker's flows, exported while it forwards
//!                                          (`natgw_core::nat::precopy`); the new process
//! new → old  copied   {flows, refused}     imports them while the old one forwards on
//!     (old: every worker stops at a batch boundary, exports what changed since the
//!     pre-copy, or all its flows without one, and keeps its sockets)
//! old → new  state    {now_ms, layout, delta} + descriptors (locks, admin, metrics, state
//!                     memfd, packet sockets), more in `fds` messages of at most 250
//! new → old  running  {flows, refused}     the new workers forward: the old ones end
//! new → old  failed   {reason}             the old workers resume; so they do on silence
//! ```
//!
//! The flow state is one sealed memfd: per worker one section of `natgw_core::nat::handoff`
//! (each worker's flows stay on the worker with the same index: the port slices are the
//! same), then the neighbour table. After a pre-copy, worker w's section holds only the
//! flows changed since (`delta[w]`), and section `workers + w` the keys of those that
//! ended; a worker whose pre-copy gave up sends its whole table instead. The new process takes the old one's clock origin, so
//! every time in the table keeps its meaning. Flow records continue: each flow carries what
//! the flow log has reported of it; the old process writes the records it had queued.
//!
//! Owns: the handoff protocol. Must never: touch packets.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use natgw_io::sys;

#[derive(Debug, Error)]
pub enum HandoffError {
    #[error("handoff socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("handoff: the other natgw sent {0}")]
    Unexpected(String),
    #[error("handoff: the other natgw went away")]
    Closed,
    #[error("handoff: no answer within {0:?}")]
    Timeout(Duration),
    #[error("handoff refused: {0}")]
    Refused(String),
    #[error("handoff: {0}")]
    BadState(String),
}

/// What both processes must agree on before flows move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub version: String,
    pub workers: usize,
    /// Inside interfaces in order, then the outside one.
    pub interfaces: Vec<String>,
    /// `NatConfig::state_fingerprint`: workers, links, external addresses, pools, port steering.
    pub fingerprint: u64,
    /// This build reads the PACKET_MMAP receive rings of sockets handed to it. A build
    /// from before them sends no such field and only calls `recv`: a ring's frames would
    /// never be read.
    #[serde(default)]
    pub reads_rx_rings: bool,
    /// The running gateway's sockets carry receive rings (`dataplane.receive = "ring"`).
    #[serde(default)]
    pub rx_rings_in_use: bool,
}

impl Terms {
    /// Why `new` cannot take over from `self`, naming the setting.
    pub fn refusal(&self, new: &Terms) -> Option<String> {
        if new.workers != self.workers {
            return Some(format!(
                "dataplane.workers: the running gateway has {} worker(s), the new config {} (flows are owned by worker; restart to change it)",
                self.workers, new.workers
            ));
        }
        if new.interfaces != self.interfaces {
            return Some(format!(
                "interfaces: the running gateway serves {}, the new config {}",
                self.interfaces.join(","),
                new.interfaces.join(",")
            ));
        }
        if self.rx_rings_in_use && !new.reads_rx_rings {
            return Some(format!(
                "dataplane.receive: the running gateway's packet sockets carry receive rings, which natgw {} cannot read; stop the running gateway and start the new one instead",
                new.version
            ));
        }
        if new.fingerprint != self.fingerprint {
            return Some("inside addresses, outside addresses or [[pool]] differ from the running gateway's, or its natgw build steers ports to workers differently: its mappings would not be valid".into());
        }
        None
    }
}

/// Where each descriptor is in the list the old process sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub locks: usize,
    pub metrics: bool,
    /// Workers × links packet sockets, worker-major.
    pub sockets: usize,
}

impl Layout {
    /// Locks, the admin listener, the metrics listener if any, the state memfd, sockets.
    pub fn total(&self) -> usize {
        self.locks + 1 + usize::from(self.metrics) + 1 + self.sockets
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
enum Message {
    Ready {
        pid: u32,
        terms: Terms,
        prepare_ms: u64,
        /// The new process takes a pre-copy (older ones do not say so).
        #[serde(default)]
        precopy: bool,
    },
    PreCopy {
        now_ms: u64,
    },
    Copied {
        flows: u64,
        refused: u64,
    },
    Refused {
        reason: String,
    },
    State {
        now_ms: u64,
        layout: Layout,
        /// `[ha]`: the predecessor was the active node (a standby's successor stays one).
        #[serde(default)]
        active: bool,
        /// Per worker: its section is a delta to its pre-copy (empty: no pre-copy).
        #[serde(default)]
        delta: Vec<bool>,
    },
    Fds,
    Running {
        flows: u64,
        refused: u64,
    },
    Failed {
        reason: String,
    },
}

fn send(sock: RawFd, m: &Message, fds: &[RawFd]) -> Result<(), HandoffError> {
    let text = serde_json::to_vec(m).map_err(|e| HandoffError::BadState(e.to_string()))?;
    sys::send_with_fds(sock, &text, fds)?;
    Ok(())
}

fn recv(sock: RawFd, wait: Duration) -> Result<(Message, Vec<OwnedFd>), HandoffError> {
    let mut buf = vec![0u8; 64 * 1024];
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    let Some((n, fds)) = sys::recv_with_fds(sock, &mut buf, ms)? else { return Err(HandoffError::Timeout(wait)) };
    if n == 0 && fds.is_empty() {
        return Err(HandoffError::Closed);
    }
    let text = buf.get(..n).unwrap_or_default();
    let m =
        serde_json::from_slice(text).map_err(|e| HandoffError::Unexpected(format!("an unreadable message ({e})")))?;
    Ok((m, fds))
}

/// One neighbour entry in the state file: link, address, MAC.
pub type NeighbourEntry = (u8, Ipv4Addr, [u8; 6]);

/// The state file: `u32` section count, each section as `u64` length + bytes, then `u32`
/// neighbour count and 11 bytes each (link, address, MAC). Big-endian.
pub fn encode_state(sections: &[&[u8]], neighbours: &[NeighbourEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sections.iter().map(|s| s.len() + 8).sum::<usize>() + 8 + neighbours.len() * 11);
    out.extend_from_slice(&u32::try_from(sections.len()).unwrap_or(u32::MAX).to_be_bytes());
    for s in sections {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s);
    }
    out.extend_from_slice(&u32::try_from(neighbours.len()).unwrap_or(u32::MAX).to_be_bytes());
    for (link, a, mac) in neighbours {
        out.push(*link);
        out.extend_from_slice(&a.octets());
        out.extend_from_slice(mac);
    }
    out
}

/// The sections and neighbours `encode_state` wrote; an error names what is wrong.
pub fn decode_state(b: &[u8]) -> Result<(Vec<&[u8]>, Vec<NeighbourEntry>), HandoffError> {
    let bad = |what: &str| HandoffError::BadState(format!("flow state file: {what}"));
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], HandoffError> {
        let s = b.get(at..at.checked_add(n).ok_or_else(|| bad("length overflows"))?).ok_or_else(|| bad("truncated"))?;
        at += n;
        Ok(s)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad("truncated"))?);
    if count > 128 {
        return Err(bad("more than 128 sections"));
    }
    let mut sections = Vec::new();
    for _ in 0..count {
        let len = u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad("truncated"))?);
        sections.push(take(usize::try_from(len).map_err(|_| bad("section too long"))?)?);
    }
    let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad("truncated"))?);
    let mut neighbours = Vec::new();
    for _ in 0..n.min(u32::try_from(natgw_core::l2::NEIGHBOUR_MAX).unwrap_or(u32::MAX)) {
        let e = take(11)?;
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&e[5..11]);
        neighbours.push((e[0], Ipv4Addr::new(e[1], e[2], e[3], e[4]), mac));
    }
    Ok((sections, neighbours))
}

/// What the new process receives.
pub struct Inherited {
    pub now_ms: u64,
    /// `[ha]`: the predecessor was the active node.
    pub active: bool,
    /// Per worker: its section is a delta to the pre-copy (empty: no pre-copy).
    pub delta: Vec<bool>,
    pub locks: Vec<std::fs::File>,
    pub admin: std::os::unix::net::UnixListener,
    pub metrics: Option<std::net::TcpListener>,
    /// `[worker][link]`.
    pub sockets: Vec<Vec<OwnedFd>>,
    pub state: Vec<u8>,
    channel: OwnedFd,
}

/// What the new process hears first after `ready`.
pub enum Arrival {
    /// The flows of every worker as of `now_ms` (`encode_state`), while the old process
    /// forwards on: import them, then `Handover::copied`.
    PreCopy { now_ms: u64, state: Vec<u8>, handover: Handover },
    /// Everything, without a pre-copy.
    State(Inherited),
}

/// The new process's end of the handoff between the pre-copy and the state.
pub struct Handover {
    channel: OwnedFd,
    links: usize,
}

/// The new process's side, up to the pre-copy or the moment it must start forwarding.
pub fn take_over(channel: OwnedFd, terms: Terms, links: usize, prepare_ms: u64) -> Result<Arrival, HandoffError> {
    let sock = channel.as_raw_fd();
    send(sock, &Message::Ready { pid: std::process::id(), terms, prepare_ms, precopy: true }, &[])?;
    let (m, mut fds) = recv(sock, Duration::from_secs(30))?;
    match m {
        Message::PreCopy { now_ms } => {
            let memfd = fds.pop().ok_or(HandoffError::Closed)?;
            let state = sys::read_memfd(memfd, 64 << 30)?;
            Ok(Arrival::PreCopy { now_ms, state, handover: Handover { channel, links } })
        }
        m => Ok(Arrival::State(state_arrived(Handover { channel, links }, m, fds)?)),
    }
}

impl Handover {
    /// Tells the old process the pre-copy is in and waits for the state.
    pub fn copied(self, flows: u64, refused: u64) -> Result<Inherited, HandoffError> {
        send(self.channel.as_raw_fd(), &Message::Copied { flows, refused }, &[])?;
        let (m, fds) = recv(self.channel.as_raw_fd(), Duration::from_secs(30))?;
        state_arrived(self, m, fds)
    }

    /// Tells the old process to go on alone.
    pub fn failed(&self, reason: &str) {
        let _ = send(self.channel.as_raw_fd(), &Message::Failed { reason: reason.into() }, &[]);
    }
}

fn state_arrived(h: Handover, m: Message, mut fds: Vec<OwnedFd>) -> Result<Inherited, HandoffError> {
    let sock = h.channel.as_raw_fd();
    let links = h.links;
    let (now_ms, layout, active, delta) = match m {
        Message::State { now_ms, layout, active, delta } => (now_ms, layout, active, delta),
        Message::Refused { reason } => return Err(HandoffError::Refused(reason)),
        other => return Err(HandoffError::Unexpected(format!("{other:?}"))),
    };
    while fds.len() < layout.total() {
        match recv(sock, Duration::from_secs(5))? {
            (Message::Fds, more) if !more.is_empty() => fds.extend(more),
            (other, _) => return Err(HandoffError::Unexpected(format!("{other:?} among the descriptors"))),
        }
    }
    if fds.len() != layout.total() || links == 0 || layout.sockets % links != 0 {
        return Err(HandoffError::BadState(format!("{} descriptors for {layout:?}", fds.len())));
    }
    let mut it = fds.into_iter();
    let locks: Vec<std::fs::File> = it.by_ref().take(layout.locks).map(std::fs::File::from).collect();
    let admin = it.next().map(std::os::unix::net::UnixListener::from).ok_or(HandoffError::Closed)?;
    let metrics = if layout.metrics { it.next().map(std::net::TcpListener::from) } else { None };
    let memfd = it.next().ok_or(HandoffError::Closed)?;
    // At most 128 sections of 2^20 flows each is far beyond any table; refuse more.
    let state = sys::read_memfd(memfd, 64 << 30)?;
    let mut sockets = Vec::new();
    for _ in 0..layout.sockets / links {
        sockets.push(it.by_ref().take(links).collect());
    }
    Ok(Inherited { now_ms, active, delta, locks, admin, metrics, sockets, state, channel: h.channel })
}

impl Inherited {
    /// Tells the old process that the new workers forward (it ends its own).
    pub fn running(&self, flows: u64, refused: u64) -> Result<(), HandoffError> {
        send(self.channel.as_raw_fd(), &Message::Running { flows, refused }, &[])
    }

    /// Tells the old process to take over again.
    pub fn failed(&self, reason: &str) {
        let _ = send(self.channel.as_raw_fd(), &Message::Failed { reason: reason.into() }, &[]);
    }
}

/// The old process's side: a started successor.
pub struct Successor {
    pub child: std::process::Child,
    channel: OwnedFd,
    pub pid: u32,
    pub prepare_ms: u64,
    /// The new process takes a pre-copy.
    pub takes_precopy: bool,
}

impl Successor {
    /// Starts `binary run --config CONFIG --takeover-fd N` with this process's stdout and
    /// stderr, in its own process group, and waits (up to `wait`) until it is ready and
    /// its terms match `ours`.
    pub fn start(
        binary: &std::path::Path,
        config: &std::path::Path,
        ours: &Terms,
        wait: Duration,
    ) -> Result<Successor, HandoffError> {
        use std::os::unix::process::CommandExt;
        let (mine, theirs) = sys::seqpacket_pair()?;
        sys::inherit_on_exec(theirs.as_raw_fd())?;
        let child = std::process::Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--takeover-fd")
            .arg(theirs.as_raw_fd().to_string())
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| HandoffError::Refused(format!("{}: {e}", binary.display())))?;
        drop(theirs);
        let mut s = Successor { pid: child.id(), child, channel: mine, prepare_ms: 0, takes_precopy: false };
        let deadline = Instant::now() + wait;
        let ready = loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(HandoffError::Refused(format!(
                    "the new natgw exited before it was ready ({status}); its reason is in the gateway's log"
                )));
            }
            match recv(s.channel.as_raw_fd(), Duration::from_millis(200)) {
                Ok(m) => break m.0,
                Err(HandoffError::Timeout(_)) if Instant::now() < deadline => continue,
                // Its end closed: it exited (or is exiting) without a word.
                Err(HandoffError::Closed) => {
                    let status = s.child.wait().map_or_else(|e| e.to_string(), |st| st.to_string());
                    return Err(HandoffError::Refused(format!(
                        "the new natgw exited before it was ready ({status}); its reason is in the gateway's log"
                    )));
                }
                Err(e) => {
                    s.abandon();
                    return Err(e);
                }
            }
        };
        let Message::Ready { pid, terms, prepare_ms, precopy } = ready else {
            s.abandon();
            return Err(HandoffError::Unexpected(format!("{ready:?} instead of ready")));
        };
        if let Some(reason) = ours.refusal(&terms) {
            let _ = send(s.channel.as_raw_fd(), &Message::Refused { reason: reason.clone() }, &[]);
            let _ = s.child.wait();
            return Err(HandoffError::Refused(reason));
        }
        s.pid = pid;
        s.prepare_ms = prepare_ms;
        s.takes_precopy = precopy;
        Ok(s)
    }

    /// Sends the pre-copy (a memfd of `encode_state`) and waits (up to `wait`) until the
    /// new process has imported it: `(flows, refused)`.
    pub fn precopy(&mut self, now_ms: u64, memfd: RawFd, wait: Duration) -> Result<(u64, u64), HandoffError> {
        send(self.channel.as_raw_fd(), &Message::PreCopy { now_ms }, &[memfd])?;
        match recv(self.channel.as_raw_fd(), wait)? {
            (Message::Copied { flows, refused }, _) => Ok((flows, refused)),
            (Message::Failed { reason }, _) => Err(HandoffError::Refused(reason)),
            (other, _) => Err(HandoffError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends the state and the descriptors (`layout` says which is which).
    pub fn hand(
        &self,
        now_ms: u64,
        active: bool,
        delta: Vec<bool>,
        layout: Layout,
        fds: &[RawFd],
    ) -> Result<(), HandoffError> {
        let sock = self.channel.as_raw_fd();
        let mut chunks = fds.chunks(sys::MAX_FDS_PER_MESSAGE);
        send(sock, &Message::State { now_ms, layout, active, delta }, chunks.next().unwrap_or(&[]))?;
        for c in chunks {
            send(sock, &Message::Fds, c)?;
        }
        Ok(())
    }

    /// Waits for the new process to forward: `(flows, refused)`.
    pub fn wait_running(&mut self, wait: Duration) -> Result<(u64, u64), HandoffError> {
        match recv(self.channel.as_raw_fd(), wait)? {
            (Message::Running { flows, refused }, _) => Ok((flows, refused)),
            (Message::Failed { reason }, _) => Err(HandoffError::Refused(reason)),
            (other, _) => Err(HandoffError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Stops the new process for good (it must not forward beside the resumed workers).
    pub fn abandon(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_reads_back_and_refuses_damage() {
        let sections = [vec![1u8, 2, 3], vec![], vec![9u8; 1000]];
        let neighbours = vec![(2u8, Ipv4Addr::new(198, 51, 100, 1), [2, 0, 0, 0, 0, 1])];
        let slices: Vec<&[u8]> = sections.iter().map(Vec::as_slice).collect();
        let b = encode_state(&slices, &neighbours);
        let (s, n) = decode_state(&b).unwrap();
        assert_eq!(s, sections.iter().map(|v| v.as_slice()).collect::<Vec<_>>());
        assert_eq!(n, neighbours);
        for cut in 0..b.len() {
            assert!(decode_state(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = b.clone();
        huge[4..12].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_state(&huge).is_err());
    }

    #[test]
    fn terms_name_what_differs() {
        let t = Terms {
            version: "0".into(),
            workers: 2,
            interfaces: vec!["in1".into(), "out0".into()],
            fingerprint: 1,
            reads_rx_rings: true,
            rx_rings_in_use: false,
        };
        assert_eq!(t.refusal(&t), None);
        let r = t.refusal(&Terms { workers: 1, ..t.clone() }).unwrap();
        assert!(r.contains("dataplane.workers") && r.contains('2') && r.contains('1'), "{r}");
        let r = t.refusal(&Terms { interfaces: vec!["in9".into(), "out0".into()], ..t.clone() }).unwrap();
        assert!(r.contains("in9"), "{r}");
        assert!(t.refusal(&Terms { fingerprint: 2, ..t.clone() }).unwrap().contains("pool"));
        // Another version of natgw may take over: that is the point.
        assert_eq!(t.refusal(&Terms { version: "1".into(), ..t.clone() }), None);
        // Sockets with receive rings go only to a build that reads them.
        let rings = Terms { rx_rings_in_use: true, reads_rx_rings: true, ..t.clone() };
        let before_rings = Terms { version: "0.9".into(), reads_rx_rings: false, ..t.clone() };
        let r = rings.refusal(&before_rings).unwrap();
        assert!(r.contains("dataplane.receive") && r.contains("natgw 0.9"), "{r}");
        assert_eq!(rings.refusal(&Terms { version: "1".into(), ..rings.clone() }), None);
        assert_eq!(t.refusal(&before_rings), None, "sockets without rings go to any build");
        // A build from before the fields sends neither: it reads no ring.
        let old: Terms =
            serde_json::from_str(r#"{"version":"0.9","workers":2,"interfaces":["in1","out0"],"fingerprint":1}"#)
                .unwrap();
        assert!(!old.reads_rx_rings && rings.refusal(&old).is_some());
    }
}
