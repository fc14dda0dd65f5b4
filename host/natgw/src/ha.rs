//! One node of a gateway pair (`[ha]`): the sync link to the peer, the standby's replica
//! of the active's flows, and promotion and demotion (`natgw ha promote|demote`, called by
//! keepalived's notify scripts; natgw does not elect).
//!
//! The active dials the standby over TCP on the dedicated sync link and streams its
//! workers' replication events (`natgw_core::nat::replication`); the standby applies them
//! to its `ReplicaTable` and acknowledges. TCP rather than UDP with natgw's own
//! retransmission: the link is point to point and dedicated, the kernel gives ordering,
//! retransmission and flow control, and a connection that breaks is exactly the moment a
//! bulk resync is needed anyway. A slow or absent standby never holds a worker: workers
//! hand batches over through bounded queues and count what does not fit.
//!
//! Wire format (version 1, network byte order). Every frame:
//!
//! ```text
//! length u32 (of what follows) | kind u8 | body | HMAC-SHA256 (32 bytes)
//! ```
//!
//! - hello (1), each way first: `"NGWS" | version u16 | workers u16 | fingerprint u64 |
//!   nonce [16]`, its HMAC keyed with the pre-shared key over a direction label and the
//!   body. Both sides check the version, the worker count and the configuration
//!   fingerprint (`NatConfig::state_fingerprint`) and refuse with the reason (a refuse
//!   frame, 5, carries it as text).
//! - after the hellos, every frame's HMAC is keyed with the session key
//!   `HMAC(psk, "natgw-sync-1" | dialer nonce | acceptor nonce)` and covers the direction,
//!   the frame's sequence number in its direction (implicit: a replayed, dropped or
//!   reordered frame fails), the kind and the body.
//! - events (2), active to standby: `worker u16 | events` (at most `MAX_EVENTS_BODY`).
//! - ack (3), standby to active: `frames u64 | events u64` applied so far.
//! - heartbeat (4), active to standby, every `HEARTBEAT`; the standby closes a link
//!   silent for `LINK_TIMEOUT`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

use natgw_core::counters::{Counter, Counters};
use natgw_core::nat::replication::{event_len, ReplicaTable};
use natgw_io::{ControlRequest, Shared};

use crate::config::HaConfig;

const MAGIC: [u8; 4] = *b"NGWS";
pub const SYNC_VERSION: u16 = 1;
const MAC_LEN: usize = 32;
const HELLO_LEN: usize = 32;
/// The largest events body a frame carries (bulk resyncs are split at event boundaries).
const MAX_EVENTS_BODY: usize = 1 << 20;
/// The largest frame a node reads; anything longer is refused before it is read.
const MAX_FRAME: usize = MAX_EVENTS_BODY + 64;
const HEARTBEAT: Duration = Duration::from_millis(200);
const LINK_TIMEOUT: Duration = Duration::from_secs(3);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// A write the standby does not take within this is a dead link (reconnect and resync).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT: Duration = Duration::from_millis(200);
/// How often the active sends what its workers queued (events wait at most this long).
const SYNC_INTERVAL: Duration = Duration::from_millis(2);
/// The standby acknowledges every this many frames (and every heartbeat).
const ACK_EVERY: u64 = 16;

const KIND_HELLO: u8 = 1;
const KIND_EVENTS: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_HEARTBEAT: u8 = 4;
const KIND_REFUSE: u8 = 5;

#[derive(Debug, Error)]
pub enum HaError {
    #[error("sync link: {0}")]
    Io(#[from] std::io::Error),
    #[error("sync frame of {0} bytes is longer than any natgw sends")]
    TooLong(usize),
    #[error("sync frame too short ({0} bytes)")]
    TooShort(usize),
    #[error("sync link closed in the middle of a frame ({0} bytes of it read)")]
    Truncated(usize),
    #[error("sync format {peer} on the peer, {here} here: run the same natgw version")]
    Version { peer: u16, here: u16 },
    #[error("sync frame with a bad HMAC (wrong ha.key on one node, or not from the peer)")]
    BadMac,
    #[error("sync frame of kind {0} where {1} was expected")]
    UnexpectedKind(u8, &'static str),
    #[error("sync hello is not natgw's (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("the peer refused the sync link: {0}")]
    Refused(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("replication events: {0}")]
    Events(#[from] natgw_core::nat::replication::ReplicationError),
    #[error("ha.address = {addr}: {source} (the address must be one of this machine's, on ha.interface)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("ha.address = {addr}: not an address of ha.interface = {interface:?} (the sync link's own interface)")]
    NotOnInterface { addr: SocketAddr, interface: String },
    #[error("ha.interface = {name:?}: {source}")]
    Interface { name: String, source: natgw_io::IoError },
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    // HMAC takes keys of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_key());
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

#[cold]
fn unreachable_key() -> HmacSha256 {
    // `new_from_slice` refuses no key length for HMAC; keep a keyed MAC all the same.
    <HmacSha256 as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| std::process::abort())
}

/// Constant-time comparison of two MACs.
fn same_mac(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a node says about itself before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub workers: u16,
    pub fingerprint: u64,
    pub nonce: [u8; 16],
}

impl Hello {
    fn emit(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_be_bytes());
        b[6..8].copy_from_slice(&self.workers.to_be_bytes());
        b[8..16].copy_from_slice(&self.fingerprint.to_be_bytes());
        b[16..32].copy_from_slice(&self.nonce);
        b
    }

    fn parse(b: &[u8]) -> Result<Hello, HaError> {
        if b.len() != HELLO_LEN {
            return Err(HaError::TooShort(b.len()));
        }
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(HaError::BadMagic(magic));
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&b[16..32]);
        Ok(Hello {
            version: u16::from_be_bytes([b[4], b[5]]),
            workers: u16::from_be_bytes([b[6], b[7]]),
            fingerprint: u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            nonce,
        })
    }

    /// Why a peer saying `peer` cannot pair with this node, naming the setting.
    pub fn refusal(&self, peer: &Hello) -> Option<String> {
        if peer.version != self.version {
            return Some(format!(
                "sync format {} on the peer, {} here: run the same natgw version",
                peer.version, self.version
            ));
        }
        if peer.workers != self.workers {
            return Some(format!(
                "dataplane.workers = {} on the peer, {} here: both nodes must run the same number",
                peer.workers, self.workers
            ));
        }
        if peer.fingerprint != self.fingerprint {
            return Some(format!(
                "configuration fingerprint {:016x} on the peer, {:016x} here: inside interfaces and addresses, outside addresses, [[pool]]s and the natgw version's port steering must match",
                peer.fingerprint, self.fingerprint
            ));
        }
        None
    }
}

/// Which end of a sync connection (the label every MAC covers, so that a frame can never
/// be reflected back to its sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Dialer,
    Acceptor,
}

impl End {
    fn label(self) -> &'static [u8] {
        match self {
            End::Dialer => b"dialer",
            End::Acceptor => b"acceptor",
        }
    }
    fn other(self) -> End {
        match self {
            End::Dialer => End::Acceptor,
            End::Acceptor => End::Dialer,
        }
    }
}

/// Frames of one sync connection: sealed and opened with the session key and a sequence
/// number per direction.
pub struct Channel {
    key: [u8; MAC_LEN],
    end: End,
    sent: u64,
    received: u64,
}

fn frame(kind: u8, body: &[u8], tag: &[u8; MAC_LEN]) -> Vec<u8> {
    let len = u32::try_from(1 + body.len() + MAC_LEN).unwrap_or(u32::MAX);
    let mut f = Vec::with_capacity(4 + 1 + body.len() + MAC_LEN);
    f.extend_from_slice(&len.to_be_bytes());
    f.push(kind);
    f.extend_from_slice(body);
    f.extend_from_slice(tag);
    f
}

/// Splits a frame (without its length) into kind, body and MAC.
fn split(f: &[u8]) -> Result<(u8, &[u8], &[u8]), HaError> {
    if f.len() < 1 + MAC_LEN {
        return Err(HaError::TooShort(f.len()));
    }
    let (rest, tag) = f.split_at(f.len() - MAC_LEN);
    Ok((rest[0], &rest[1..], tag))
}

pub fn seal_hello(psk: &[u8], end: End, hello: &Hello) -> Vec<u8> {
    let body = hello.emit();
    frame(KIND_HELLO, &body, &mac(psk, &[b"hello ", end.label(), &body]))
}

pub fn open_hello(psk: &[u8], from: End, f: &[u8]) -> Result<Hello, HaError> {
    let (kind, body, tag) = split(f)?;
    if !same_mac(tag, &mac(psk, &[b"hello ", from.label(), body])) {
        return Err(HaError::BadMac);
    }
    match kind {
        KIND_HELLO => Hello::parse(body),
        KIND_REFUSE => Err(HaError::Refused(String::from_utf8_lossy(body).into_owned())),
        k => Err(HaError::UnexpectedKind(k, "hello")),
    }
}

/// A refusal before the session key exists: keyed with the pre-shared key like a hello.
pub fn seal_refusal(psk: &[u8], end: End, reason: &str) -> Vec<u8> {
    frame(KIND_REFUSE, reason.as_bytes(), &mac(psk, &[b"hello ", end.label(), reason.as_bytes()]))
}

impl Channel {
    pub fn new(psk: &[u8], end: End, dialer: &Hello, acceptor: &Hello) -> Channel {
        Channel { key: mac(psk, &[b"natgw-sync-1", &dialer.nonce, &acceptor.nonce]), end, sent: 0, received: 0 }
    }

    pub fn seal(&mut self, kind: u8, body: &[u8]) -> Vec<u8> {
        let tag = mac(&self.key, &[self.end.label(), &self.sent.to_be_bytes(), &[kind], body]);
        self.sent += 1;
        frame(kind, body, &tag)
    }

    /// A frame the peer sealed (without its length), in order.
    pub fn open<'a>(&mut self, f: &'a [u8]) -> Result<(u8, &'a [u8]), HaError> {
        let (kind, body, tag) = split(f)?;
        let expected = mac(&self.key, &[self.end.other().label(), &self.received.to_be_bytes(), &[kind], body]);
        if !same_mac(tag, &expected) {
            return Err(HaError::BadMac);
        }
        self.received += 1;
        Ok((kind, body))
    }
}

/// Frames from a stream read with a timeout: bytes are kept across timeouts, so a frame
/// that arrives in pieces is never cut.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next whole frame (without its length), or `None` when the read timed out first.
    fn next(&mut self, s: &mut impl Read) -> Result<Option<Vec<u8>>, HaError> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if len > MAX_FRAME {
                    return Err(HaError::TooLong(len));
                }
                if self.buf.len() >= 4 + len {
                    let f = self.buf[4..4 + len].to_vec();
                    self.buf.drain(..4 + len);
                    return Ok(Some(f));
                }
            }
            let at = self.buf.len();
            self.buf.resize(at + (64 << 10), 0);
            match s.read(&mut self.buf[at..]) {
                Ok(0) => {
                    self.buf.truncate(at);
                    // Closed between frames is a link that ended; within one, a frame cut short.
                    return Err(if at == 0 {
                        HaError::Io(std::io::ErrorKind::UnexpectedEof.into())
                    } else {
                        HaError::Truncated(at)
                    });
                }
                Ok(n) => self.buf.truncate(at + n),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    self.buf.truncate(at);
                    return Ok(None);
                }
                Err(e) => {
                    self.buf.truncate(at);
                    return Err(e.into());
                }
            }
        }
    }

    /// The next whole frame, a read timeout being an error (the handshake's).
    fn next_within(&mut self, s: &mut impl Read) -> Result<Vec<u8>, HaError> {
        self.next(s)?.ok_or(HaError::Io(std::io::ErrorKind::TimedOut.into()))
    }

    /// Part of a frame or more is waiting here already.
    fn holds_more(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// The error for a peer `refusal` turned away: a format this natgw does not read, or a
/// configuration that cannot pair.
fn mismatch(theirs: &Hello, mine: &Hello, why: String) -> HaError {
    if theirs.version == mine.version {
        HaError::Mismatch(why)
    } else {
        HaError::Version { peer: theirs.version, here: mine.version }
    }
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut n)).is_err() {
        // No /dev/urandom: time and pid still make the session key unique per connection.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        n[..8].copy_from_slice(&t.to_be_bytes()[8..]);
        n[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    n
}

/// Splits a worker's batch into frame bodies at event boundaries.
pub fn chunks(worker: u16, events: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < events.len() {
        let mut end = at;
        while let Some(len) = events.get(end).and_then(|&t| event_len(t)) {
            if end + len - at > MAX_EVENTS_BODY || end + len > events.len() {
                break;
            }
            end += len;
        }
        if end == at {
            // Not an event natgw writes: never sent (the standby would refuse it).
            break;
        }
        let mut body = Vec::with_capacity(2 + end - at);
        body.extend_from_slice(&worker.to_be_bytes());
        body.extend_from_slice(&events[at..end]);
        out.push(body);
        at = end;
    }
    out
}

fn count_events(events: &[u8]) -> u64 {
    let mut at = 0;
    let mut n = 0;
    while let Some(len) = events.get(at).and_then(|&t| event_len(t)) {
        at += len;
        n += 1;
    }
    n
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Active,
    Standby,
}

/// `natgw status`'s view of the pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    pub role: Role,
    pub address: String,
    pub peer: String,
    /// The sync connection is up (active: streaming to the peer; standby: receiving).
    pub connected: bool,
    /// Active: events sent and not yet acknowledged.
    pub lag_events: u64,
    /// Standby: flows held for the active.
    pub replica_flows: u64,
    /// The last thing that went wrong on the sync link ("" when nothing).
    pub last_error: String,
}

/// What a promotion or demotion did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaReport {
    pub role: Role,
    /// Already in that role: nothing changed.
    pub unchanged: bool,
    /// Promotion: replicated flows taken over and refused. Demotion: flows let go.
    pub flows: u64,
    pub flows_refused: u64,
    pub took_us: u64,
}

struct LinkState {
    connected: AtomicBool,
    acked_events: AtomicU64,
    last_error: Mutex<String>,
}

/// A node's HA side, shared by the sync thread and the admin thread.
pub struct Ha {
    cfg: HaConfig,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    replica: Mutex<ReplicaTable>,
    hello: Hello,
    link: LinkState,
    /// Serialises promote and demote.
    role_change: Mutex<()>,
}

impl Ha {
    pub fn new(
        cfg: HaConfig,
        shared: Arc<Shared>,
        workers: usize,
        fingerprint: u64,
        max_flows_per_worker: usize,
    ) -> Ha {
        let counters = shared.ha_counters();
        Ha {
            hello: Hello {
                version: SYNC_VERSION,
                workers: u16::try_from(workers).unwrap_or(u16::MAX),
                fingerprint,
                nonce: [0; 16],
            },
            replica: Mutex::new(ReplicaTable::new(workers, max_flows_per_worker, fingerprint)),
            cfg,
            shared,
            counters,
            link: LinkState {
                connected: AtomicBool::new(false),
                acked_events: AtomicU64::new(0),
                last_error: Mutex::new(String::new()),
            },
            role_change: Mutex::new(()),
        }
    }

    fn ha(&self) -> Option<&natgw_io::HaShared> {
        self.shared.ha.as_ref()
    }

    pub fn role(&self) -> Role {
        if self.shared.is_active() {
            Role::Active
        } else {
            Role::Standby
        }
    }

    /// The sync listener, bound now so that a bad `ha.address` stops the start. A
    /// successor taking over from a running natgw waits for its predecessor to let go.
    pub fn bind(&self, wait: Duration) -> Result<TcpListener, HaError> {
        natgw_io::sys::interface_info(&self.cfg.interface)
            .map_err(|source| HaError::Interface { name: self.cfg.interface.clone(), source })?;
        let addr = SocketAddr::V4(self.cfg.address);
        // The sync link is the dedicated interface: an address the machine has elsewhere
        // would carry the sync stream over a data link.
        let on_interface = natgw_io::sys::kernel_ipv4_addresses()
            .map(|all| all.iter().any(|(name, a)| *name == self.cfg.interface && a == self.cfg.address.ip()))
            .unwrap_or(true);
        if !on_interface {
            return Err(HaError::NotOnInterface { addr, interface: self.cfg.interface.clone() });
        }
        let deadline = Instant::now() + wait;
        loop {
            match TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true)?;
                    return Ok(l);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => return Err(HaError::Bind { addr, source }),
            }
        }
    }

    fn note_error(&self, e: &dyn std::fmt::Display) {
        let text = e.to_string();
        if let Ok(mut last) = self.link.last_error.lock() {
            if *last != text {
                tracing::warn!("natgw: ha: {text}");
            }
            *last = text;
        }
    }

    fn count_rejection(&self, e: &HaError) {
        let c = match e {
            HaError::BadMac => Counter::HaSyncRejectedAuth,
            HaError::Mismatch(_) | HaError::Refused(_) => Counter::HaSyncRejectedConfig,
            HaError::TooLong(_)
            | HaError::TooShort(_)
            | HaError::Truncated(_)
            | HaError::Version { .. }
            | HaError::UnexpectedKind(..)
            | HaError::BadMagic(_)
            | HaError::Events(_) => Counter::HaSyncRejectedFormat,
            _ => return,
        };
        self.counters.inc(c);
    }

    /// The sync thread: streams to the peer while active, receives from it while standby.
    pub fn run(self: Arc<Self>, listener: Option<TcpListener>) {
        let listener = match listener {
            Some(l) => l,
            // Taking over from a running natgw: its listener goes when it exits.
            None => match self.bind(Duration::from_secs(30)) {
                Ok(l) => l,
                Err(e) => {
                    self.note_error(&e);
                    return;
                }
            },
        };
        while !natgw_io::sys::stop_requested() {
            let r = if self.shared.is_active() { self.stream_to_peer(&listener) } else { self.receive(&listener) };
            self.link.connected.store(false, Ordering::Release);
            if let Err(e) = r {
                self.count_rejection(&e);
                self.note_error(&e);
                std::thread::sleep(RECONNECT);
            }
        }
    }

    /// Refuses every connection waiting on the listener (an active node takes no state).
    fn refuse_waiting(&self, listener: &TcpListener) {
        while let Ok((s, from)) = listener.accept() {
            if from.ip() != std::net::IpAddr::V4(*self.cfg.peer.ip()) {
                self.counters.inc(Counter::HaSyncRejectedPeer);
            }
            drop(s);
        }
    }

    /// Discards what the workers queued (no standby to send it to: a resync covers it).
    fn drain_queues(&self) {
        if let Some(ha) = self.ha() {
            for q in &ha.events {
                while q.pop().is_some() {}
            }
        }
    }

    fn stream_to_peer(&self, listener: &TcpListener) -> Result<(), HaError> {
        let Some(ha) = self.ha() else { return Ok(()) };
        self.refuse_waiting(listener);
        self.drain_queues();
        let peer = SocketAddr::V4(self.cfg.peer);
        let mut s = match TcpStream::connect_timeout(&peer, Duration::from_millis(500)) {
            Ok(s) => s,
            Err(e) => {
                self.drain_queues();
                return Err(e.into());
            }
        };
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mine = Hello { nonce: nonce(), ..self.hello };
        s.write_all(&seal_hello(&self.cfg.key, End::Dialer, &mine))?;
        // The acknowledgements' reader after the hello (whatever it read ahead stays there).
        let mut frames = FrameReader::default();
        let theirs = open_hello(&self.cfg.key, End::Acceptor, &frames.next_within(&mut s)?)?;
        if let Some(why) = mine.refusal(&theirs) {
            let _ = s.write_all(&seal_refusal(&self.cfg.key, End::Dialer, &why));
            return Err(mismatch(&theirs, &mine, why));
        }
        let mut channel = Channel::new(&self.cfg.key, End::Dialer, &mine, &theirs);
        // Acknowledgements arrive on a thread of their own, opened with the acceptor's
        // direction of the same session.
        let mut acks = Channel::new(&self.cfg.key, End::Dialer, &mine, &theirs);
        let mut reader = s.try_clone()?;
        reader.set_read_timeout(Some(LINK_TIMEOUT))?;
        let alive = Arc::new(AtomicBool::new(true));
        let acked = Arc::new(AtomicU64::new(0));
        let reader_thread = {
            let (alive, acked) = (alive.clone(), acked.clone());
            let counters = self.counters.clone();
            std::thread::Builder::new().name("natgw-ha-acks".into()).spawn(move || {
                while alive.load(Ordering::Acquire) {
                    // Nothing for LINK_TIMEOUT (acks come at least every heartbeat): dead.
                    let Ok(Some(f)) = frames.next(&mut reader) else { break };
                    match acks.open(&f) {
                        Ok((KIND_ACK, body)) if body.len() == 16 => {
                            let mut e = [0u8; 8];
                            e.copy_from_slice(&body[8..16]);
                            acked.store(u64::from_be_bytes(e), Ordering::Release);
                        }
                        Ok(_) => {
                            counters.inc(Counter::HaSyncRejectedFormat);
                            break;
                        }
                        Err(_) => {
                            counters.inc(Counter::HaSyncRejectedAuth);
                            break;
                        }
                    }
                }
                alive.store(false, Ordering::Release);
            })?
        };
        // The standby knows nothing of this session's past: every worker sends its table.
        ha.streaming.store(true, Ordering::Release);
        ha.resync_generation.fetch_add(1, Ordering::AcqRel);
        self.counters.inc(Counter::HaResyncs);
        for w in 0..self.shared.control.len() {
            self.shared.wake(w);
        }
        self.link.connected.store(true, Ordering::Release);
        if let Ok(mut last) = self.link.last_error.lock() {
            last.clear();
        }
        tracing::info!("natgw: ha: streaming flows to the standby at {peer}");
        let (mut sent, mut last_frame) = (0u64, Instant::now());
        let (mut out, mut pending) = (Vec::new(), Vec::new());
        let result = loop {
            if !alive.load(Ordering::Acquire) {
                break Err(HaError::Io(std::io::ErrorKind::ConnectionReset.into()));
            }
            if !self.shared.is_active() || natgw_io::sys::stop_requested() {
                break Ok(());
            }
            self.refuse_waiting(listener);
            if ha.resync_needed.swap(false, Ordering::AcqRel) {
                ha.resync_generation.fetch_add(1, Ordering::AcqRel);
                self.counters.inc(Counter::HaResyncs);
            }
            // Everything the workers queued since the last turn, one buffer per worker,
            // in as few frames as fit, in one write: a few hundred writes a second
            // however many connections come and go.
            out.clear();
            for (w, q) in ha.events.iter().enumerate() {
                pending.clear();
                while let Some(batch) = q.pop() {
                    pending.extend_from_slice(&batch);
                }
                let worker = u16::try_from(w).unwrap_or(u16::MAX);
                for body in chunks(worker, &pending) {
                    let n = count_events(&body[2..]);
                    out.extend_from_slice(&channel.seal(KIND_EVENTS, &body));
                    sent += n;
                    self.counters.add(Counter::HaSyncSent, n);
                }
            }
            let wrote = !out.is_empty();
            if wrote {
                if let Err(e) = s.write_all(&out) {
                    break Err(e.into());
                }
            }
            let now = Instant::now();
            if wrote {
                last_frame = now;
            } else if now.duration_since(last_frame) >= HEARTBEAT {
                if let Err(e) = s.write_all(&channel.seal(KIND_HEARTBEAT, &[])) {
                    break Err(e.into());
                }
                last_frame = now;
            }
            let a = acked.load(Ordering::Acquire);
            let before = self.link.acked_events.swap(a, Ordering::AcqRel);
            self.counters.add(Counter::HaSyncAcked, a.saturating_sub(before));
            self.counters.set(Counter::HaSyncLagEvents, sent.saturating_sub(a));
            // The batching window: at most this much is added to an event's way.
            std::thread::sleep(SYNC_INTERVAL);
        };
        ha.streaming.store(false, Ordering::Release);
        alive.store(false, Ordering::Release);
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = reader_thread.join();
        self.link.acked_events.store(0, Ordering::Release);
        self.counters.set(Counter::HaSyncLagEvents, 0);
        result
    }

    fn receive(&self, listener: &TcpListener) -> Result<(), HaError> {
        let (mut s, from) = loop {
            if self.shared.is_active() || natgw_io::sys::stop_requested() {
                return Ok(());
            }
            match listener.accept() {
                Ok((s, from)) if from.ip() == std::net::IpAddr::V4(*self.cfg.peer.ip()) => break (s, from),
                Ok((_, from)) => {
                    self.counters.inc(Counter::HaSyncRejectedPeer);
                    self.note_error(&format!("sync connection from {from}, not the peer {}: refused", self.cfg.peer));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.into()),
            }
        };
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut incoming = FrameReader::default();
        let theirs = open_hello(&self.cfg.key, End::Dialer, &incoming.next_within(&mut s)?)?;
        let mine = Hello { nonce: nonce(), ..self.hello };
        if let Some(why) = mine.refusal(&theirs) {
            let _ = s.write_all(&seal_refusal(&self.cfg.key, End::Acceptor, &why));
            return Err(mismatch(&theirs, &mine, why));
        }
        s.write_all(&seal_hello(&self.cfg.key, End::Acceptor, &mine))?;
        let mut channel = Channel::new(&self.cfg.key, End::Acceptor, &theirs, &mine);
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        self.link.connected.store(true, Ordering::Release);
        if let Ok(mut last) = self.link.last_error.lock() {
            last.clear();
        }
        tracing::info!("natgw: ha: receiving flows from the active at {from}");
        let (mut frames, mut events, mut last_heard) = (0u64, 0u64, Instant::now());
        loop {
            if self.shared.is_active() || natgw_io::sys::stop_requested() {
                return Ok(());
            }
            let Some(f) = incoming.next(&mut s)? else {
                if last_heard.elapsed() > LINK_TIMEOUT {
                    return Err(HaError::Io(std::io::ErrorKind::TimedOut.into()));
                }
                continue;
            };
            last_heard = Instant::now();
            let (kind, body) = channel.open(&f)?;
            match kind {
                KIND_HEARTBEAT => {}
                KIND_EVENTS if body.len() >= 2 => {
                    let worker = u16::from_be_bytes([body[0], body[1]]);
                    let now = self.shared.now_ms();
                    let mut replica = self.replica.lock().map_err(|_| HaError::Mismatch("replica lock".into()))?;
                    let r = replica.apply_events(worker, &body[2..], now)?;
                    self.counters.add(Counter::HaResyncs, r.resets);
                    self.counters.add(Counter::HaReplicaFull, r.full);
                    self.counters.add(Counter::HaSyncRejectedFormat, r.invalid);
                    self.counters.set(Counter::HaReplicaFlows, replica.len() as u64);
                    drop(replica);
                    events += count_events(&body[2..]);
                }
                k => return Err(HaError::UnexpectedKind(k, "events or heartbeat")),
            }
            frames += 1;
            if kind != KIND_HEARTBEAT && frames % ACK_EVERY != 0 && incoming.holds_more() {
                // More is waiting: acknowledge it all together.
                continue;
            }
            let mut ack = [0u8; 16];
            ack[..8].copy_from_slice(&frames.to_be_bytes());
            ack[8..].copy_from_slice(&events.to_be_bytes());
            s.write_all(&channel.seal(KIND_ACK, &ack))?;
        }
    }

    /// Takes over the replicated flows, then every address (gratuitous ARP on each link).
    pub fn promote(&self) -> HaReport {
        let _one = self.role_change.lock();
        let started = Instant::now();
        if self.shared.is_active() {
            return HaReport { role: Role::Active, unchanged: true, flows: 0, flows_refused: 0, took_us: 0 };
        }
        let now = self.shared.now_ms();
        let sections = match self.replica.lock() {
            Ok(mut r) => {
                let s = r.sections(now);
                r.clear();
                s
            }
            Err(_) => Vec::new(),
        };
        self.counters.set(Counter::HaReplicaFlows, 0);
        let mut sections = sections.into_iter();
        let results = self.shared.ask_workers(
            |_, tx| ControlRequest::Import(sections.next().unwrap_or_default(), tx),
            Duration::from_secs(5),
        );
        let (mut flows, mut refused) = (0, 0);
        for r in results {
            match r {
                Some(Ok(r)) => {
                    flows += r.imported;
                    refused += r.refused();
                }
                Some(Err(e)) => self.note_error(&format!("promotion: a worker refused the replicated flows: {e}")),
                None => self.note_error(&"promotion: a worker did not answer within 5 s"),
            }
        }
        if let Some(ha) = self.ha() {
            ha.active.store(true, Ordering::Release);
            ha.announce_generation.fetch_add(1, Ordering::AcqRel);
        }
        let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!("natgw: ha: promoted to active with {flows} flows ({refused} refused) in {took_us} µs");
        HaReport { role: Role::Active, unchanged: false, flows, flows_refused: refused, took_us }
    }

    /// Stops forwarding and answering ARP, and lets go of every flow (the new active holds
    /// them and resyncs this node).
    pub fn demote(&self) -> HaReport {
        let _one = self.role_change.lock();
        let started = Instant::now();
        if !self.shared.is_active() {
            return HaReport { role: Role::Standby, unchanged: true, flows: 0, flows_refused: 0, took_us: 0 };
        }
        if let Some(ha) = self.ha() {
            ha.active.store(false, Ordering::Release);
        }
        let flows: usize = self
            .shared
            .ask_workers(|_, tx| ControlRequest::Discard(tx), Duration::from_secs(5))
            .into_iter()
            .flatten()
            .sum();
        if let Ok(mut r) = self.replica.lock() {
            r.clear();
        }
        let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!("natgw: ha: demoted to standby, {flows} flows let go");
        HaReport { role: Role::Standby, unchanged: false, flows: flows as u64, flows_refused: 0, took_us }
    }

    pub fn status(&self) -> HaStatus {
        HaStatus {
            role: self.role(),
            address: self.cfg.address.to_string(),
            peer: self.cfg.peer.to_string(),
            connected: self.link.connected.load(Ordering::Acquire),
            lag_events: self.counters.get(Counter::HaSyncLagEvents),
            replica_flows: self.replica.lock().map_or(0, |r| r.len() as u64),
            last_error: self.link.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }
}

/// `natgw ha watch`: keeps `track_file` saying whether natgw works, for keepalived's
/// `track_file` (0: up; 1: down). It holds a connection natgw keeps open until its process
/// ends (`Request::Watch`), so a crash or `kill -9` is in the file at once (keepalived
/// reads it on change, through inotify), where a check run every second would take up to
/// that second. Beside it, every `WATCH_CHECK_EVERY`, it runs `check`: a natgw that lives
/// on but no longer works (frozen, a worker stuck) fails it, and after two failures in a
/// row the file says 1 too. The file says 0 again once both hold. An upgrade is neither:
/// the admin socket's listener lives on in the successor, so the watcher reconnects and
/// the file stays 0.
///
/// Both in one process, rather than the check as keepalived's own `vrrp_script`: a
/// script's failed state outlives a restart until its next run passes (up to its
/// interval, a second at the least), during which the restarted node cannot take over;
/// here the first answer after a restart clears it, within `WATCH_CHECK_EVERY`.
pub fn watch(client: &crate::admin::AdminClient, track_file: &std::path::Path) -> Result<(), std::io::Error> {
    let state = Arc::new(Mutex::new(WatchState::default()));
    {
        let (state, client, file) = (state.clone(), client.clone(), track_file.to_path_buf());
        std::thread::Builder::new().name("natgw-ha-check".into()).spawn(move || loop {
            let result = check(&client);
            let failed = result.is_err();
            if let Err(e) = WatchState::update(&state, &file, |s| {
                if let (Err(why), 0) = (&result, s.failures) {
                    // Once per run of failures, not four times a second.
                    tracing::warn!("natgw ha watch: {why}");
                }
                s.failures = if failed { s.failures.saturating_add(1) } else { 0 };
            }) {
                tracing::warn!("natgw ha watch: {}: {e}", file.display());
            }
            std::thread::sleep(WATCH_CHECK_EVERY);
        })?;
    }
    loop {
        match client.watch() {
            Ok(mut held) => {
                WatchState::update(&state, track_file, |s| s.connected = true)?;
                let mut b = [0u8; 64];
                while matches!(held.read(&mut b), Ok(n) if n > 0) {}
                // Gone, or handed over: a successor answers on the same socket at once,
                // so only a failed reconnection says natgw is gone.
            }
            Err(_) => {
                WatchState::update(&state, track_file, |s| s.connected = false)?;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// How often `watch` checks that natgw works.
pub const WATCH_CHECK_EVERY: Duration = Duration::from_millis(250);

/// What `watch` knows, and what it last wrote.
#[derive(Debug, Default)]
struct WatchState {
    connected: bool,
    /// Checks failed in a row.
    failures: u32,
    written: Option<bool>,
}

impl WatchState {
    /// Applies `change` and writes the file when natgw's standing changed (up: its
    /// process holds the watch connection and the last two checks did not both fail).
    fn update(
        state: &Mutex<WatchState>,
        track_file: &std::path::Path,
        change: impl FnOnce(&mut WatchState),
    ) -> Result<(), std::io::Error> {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut s);
        let up = s.connected && s.failures < 2;
        if s.written != Some(up) {
            std::fs::write(track_file, if up { "0\n" } else { "1\n" })?;
            if up {
                tracing::info!("natgw ha watch: natgw works ({} = 0)", track_file.display());
            } else if !s.connected {
                tracing::warn!("natgw ha watch: natgw is gone ({} = 1)", track_file.display());
            } else {
                tracing::warn!("natgw ha watch: natgw runs but does not work ({} = 1)", track_file.display());
            }
            s.written = Some(up);
        }
        Ok(())
    }
}

/// How long `check` waits for natgw's answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// `natgw ha check`, keepalived's `vrrp_script` beside `watch`: natgw answers within
/// `CHECK_TIMEOUT` and every worker turns its loop. `watch` sees a process that ends; this
/// sees one that lives on but no longer works (frozen, a worker stuck). Why not, as text.
pub fn check(client: &crate::admin::AdminClient) -> Result<String, String> {
    let status = match client.call_within(&crate::admin::Request::Status, CHECK_TIMEOUT) {
        Ok(crate::admin::Reply::Status(s)) => s,
        Ok(other) => return Err(format!("natgw answered {other:?} to a status request")),
        Err(e) => return Err(format!("natgw did not answer within {CHECK_TIMEOUT:?}: {e}")),
    };
    if !status.stalled_workers.is_empty() {
        return Err(format!("worker(s) {:?} have not turned their loop for half a second", status.stalled_workers));
    }
    Ok(format!("natgw (pid {}) answers and its {} worker(s) turn", status.pid, status.workers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(workers: u16, fingerprint: u64) -> Hello {
        Hello { version: SYNC_VERSION, workers, fingerprint, nonce: nonce() }
    }

    #[test]
    fn frames_open_only_with_the_key_in_order_and_in_their_direction() {
        let psk = b"0123456789abcdef";
        let (d, a) = (hello(2, 7), hello(2, 7));
        let f = seal_hello(psk, End::Dialer, &d);
        assert_eq!(open_hello(psk, End::Dialer, &f[4..]).unwrap(), d);
        assert!(matches!(open_hello(b"another key 1234", End::Dialer, &f[4..]), Err(HaError::BadMac)));
        assert!(matches!(open_hello(psk, End::Acceptor, &f[4..]), Err(HaError::BadMac)), "reflected");

        let mut tx = Channel::new(psk, End::Dialer, &d, &a);
        let mut rx = Channel::new(psk, End::Acceptor, &d, &a);
        let f1 = tx.seal(KIND_EVENTS, b"\x00\x00\x03");
        let f2 = tx.seal(KIND_HEARTBEAT, b"");
        assert!(matches!(rx.open(&f2[4..]), Err(HaError::BadMac)), "out of order");
        assert_eq!(rx.open(&f1[4..]).unwrap(), (KIND_EVENTS, &b"\x00\x00\x03"[..]));
        assert!(matches!(rx.open(&f1[4..]), Err(HaError::BadMac)), "replayed");
        assert_eq!(rx.open(&f2[4..]).unwrap().0, KIND_HEARTBEAT);
        // Any bit flipped anywhere: refused.
        for i in 4..f1.len() {
            let mut rx = Channel::new(psk, End::Acceptor, &d, &a);
            let mut bad = f1.clone();
            bad[i] ^= 0x10;
            assert!(rx.open(&bad[4..]).is_err(), "byte {i}");
        }
        // Another session (other nonces): refused.
        let mut other = Channel::new(psk, End::Acceptor, &hello(2, 7), &a);
        assert!(other.open(&f1[4..]).is_err());
        // Short frames never panic.
        for n in 0..40 {
            assert!(rx.open(&vec![0u8; n]).is_err());
            assert!(open_hello(psk, End::Dialer, &vec![0u8; n]).is_err());
        }
    }

    /// Delivers its bytes a few at a time, with a timeout between every piece.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        timed_out: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.timed_out = !self.timed_out;
            if self.timed_out {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(3).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn frames_cut_by_timeouts_arrive_whole_and_oversized_ones_are_refused_unread() {
        let (d, a) = (hello(2, 7), hello(2, 7));
        let mut tx = Channel::new(b"0123456789abcdef", End::Dialer, &d, &a);
        let mut rx = Channel::new(b"0123456789abcdef", End::Acceptor, &d, &a);
        let mut data = Vec::new();
        for i in 0..5u8 {
            data.extend(tx.seal(KIND_EVENTS, &[0, 0, 3, i]));
        }
        let mut stream = Trickle { data, at: 0, timed_out: false };
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        while got.len() < 5 {
            if let Some(f) = reader.next(&mut stream).unwrap() {
                got.push(rx.open(&f).unwrap().1.to_vec());
            }
        }
        assert_eq!(got, (0..5u8).map(|i| vec![0, 0, 3, i]).collect::<Vec<_>>());
        let huge = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
        let mut stream = Trickle { data: huge.to_vec(), at: 0, timed_out: false };
        let mut reader = FrameReader::default();
        let r = loop {
            match reader.next(&mut stream) {
                Ok(None) => continue,
                other => break other,
            }
        };
        assert!(matches!(r, Err(HaError::TooLong(_))), "{:?}", r.map(|_| ()));
    }

    #[test]
    fn a_peer_of_another_shape_is_refused_naming_the_setting() {
        let me = hello(2, 7);
        assert_eq!(me.refusal(&hello(2, 7)), None);
        assert!(me.refusal(&hello(4, 7)).unwrap().contains("dataplane.workers = 4 on the peer, 2 here"));
        assert!(me.refusal(&hello(2, 8)).unwrap().contains("fingerprint"));
        assert!(me.refusal(&Hello { version: 9, ..me }).unwrap().contains("sync format 9"));
        let refusal = seal_refusal(b"0123456789abcdef", End::Acceptor, "dataplane.workers = 4");
        let e = open_hello(b"0123456789abcdef", End::Acceptor, &refusal[4..]).unwrap_err().to_string();
        assert!(e.contains("dataplane.workers = 4"), "{e}");
    }

    #[test]
    fn batches_split_at_event_boundaries() {
        use natgw_core::nat::replication::{EVENT_DELETE, EVENT_RESET, EVENT_UPSERT, KEY_LEN};
        let up = event_len(EVENT_UPSERT).unwrap();
        let mut events = vec![EVENT_RESET];
        for _ in 0..12_000 {
            events.push(EVENT_UPSERT);
            events.extend(std::iter::repeat_n(0u8, up - 1));
        }
        events.push(EVENT_DELETE);
        events.extend([0u8; KEY_LEN]);
        let bodies = chunks(3, &events);
        assert!(bodies.len() >= 3);
        let mut joined = Vec::new();
        for b in &bodies {
            assert!(b.len() <= 2 + MAX_EVENTS_BODY);
            assert_eq!(&b[..2], &[0, 3]);
            joined.extend_from_slice(&b[2..]);
        }
        assert_eq!(joined, events);
        assert_eq!(bodies.iter().map(|b| count_events(&b[2..])).sum::<u64>(), 12_002);
    }
}
