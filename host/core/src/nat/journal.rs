//! The flow journal: each worker's flows, kept slot by slot in memory that outlives the
//! process (a memfd in systemd's file-descriptor store), so that a restart of natgw, and a
//! crash, keep the flows. The journal is fed by the replication log (`replication`): at
//! the end of every loop turn the worker clears the slots of the flows that ended and
//! writes the current record of each flow created or changed, in the slot of its `FlowId`.
//! A process that dies leaves the journal as of its last loop turn (milliseconds ago); a
//! slot it was writing at that instant fails its check and is skipped (one flow at most).
//!
//! Layout (network byte order), a file of `file_len(workers, capacity)` bytes:
//!
//! ```text
//! file header (one page):  "NGJF" | version u16 | workers u16 | capacity u32 |
//!                          fingerprint u64 | clock origin u64 | epoch u64 | complete u8
//! per worker (page-aligned region): "NGJR" | version u16 | worker u16 | capacity u32,
//!                          padded to 64 bytes, then `capacity` slots of `SLOT_LEN`:
//!     used u32 | reserved u32 | stamp u64 | check u64 | a `handoff::FlowRecord`
//! ```
//!
//! The header page also holds the neighbour table (at byte 64: count u32, check u64, then
//! link u8 | address | MAC per entry, at most `MAX_NEIGHBOURS`), so that a restarted
//! natgw forwards its first packets without waiting for ARP.
//!
//! The clock origin is the writer's time zero on the system's monotonic clock (ms, modulo
//! 2^64: the gateway clock starts well above zero, so its zero may lie before boot), so a
//! reader on the same boot knows how old each slot's stamp is. The epoch orders journals
//! (a new process writes a new journal, epoch + 1, and keeps the old one until its own is
//! complete: every worker has written every flow it took over).
//!
//! Owns: the journal's bytes. Must never: allocate or block in the writer (a worker writes
//! it every loop turn).

use thiserror::Error;

use super::handoff::{FlowRecord, RECORD_LEN};
use crate::conntrack::FlowId;

pub const FILE_MAGIC: [u8; 4] = *b"NGJF";
pub const REGION_MAGIC: [u8; 4] = *b"NGJR";
pub const JOURNAL_VERSION: u16 = 1;
pub const PAGE: usize = 4096;
pub const REGION_HEADER_LEN: usize = 64;
pub const SLOT_LEN: usize = 256;
const SLOT_RECORD_AT: usize = 24;
const USED: u32 = 1;
/// A bound far beyond any worker's table (2^24 flows a worker, 64 workers).
pub const MAX_CAPACITY: u32 = 1 << 24;
pub const MAX_WORKERS: u16 = 64;

const _: () = assert!(SLOT_RECORD_AT + RECORD_LEN <= SLOT_LEN);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum JournalError {
    #[error("flow journal: {have} bytes, {need} needed")]
    Truncated { have: usize, need: usize },
    #[error("flow journal: not a natgw flow journal (magic {0:02x?})")]
    Magic([u8; 4]),
    #[error("flow journal: version {0}; this natgw reads version {JOURNAL_VERSION}")]
    Version(u16),
    #[error("flow journal: {workers} workers of {capacity} flows is beyond its bounds")]
    Bounds { workers: u16, capacity: u32 },
    #[error("flow journal: region {worker} says it is region {found}")]
    Region { worker: u16, found: u16 },
}

/// The header of a whole journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHeader {
    pub workers: u16,
    /// Slots per worker (its share of `max_flows`).
    pub capacity: u32,
    /// `NatConfig::state_fingerprint` of the writer.
    pub fingerprint: u64,
    /// The writer's time zero, ms on the system's monotonic clock.
    pub origin_ms: u64,
    pub epoch: u64,
    /// Every worker wrote every flow it held when the journal began.
    pub complete: bool,
}

const COMPLETE_AT: usize = 36;

/// The length of one worker's region.
pub fn region_len(capacity: u32) -> usize {
    (REGION_HEADER_LEN + capacity as usize * SLOT_LEN).div_ceil(PAGE) * PAGE
}

/// The length of a journal for `workers` workers of `capacity` flows each.
pub fn file_len(workers: u16, capacity: u32) -> usize {
    PAGE + usize::from(workers) * region_len(capacity)
}

/// Where worker `worker`'s region lies in the file.
pub fn region_range(capacity: u32, worker: u16) -> std::ops::Range<usize> {
    let start = PAGE + usize::from(worker) * region_len(capacity);
    start..start + region_len(capacity)
}

fn check_bounds(workers: u16, capacity: u32) -> Result<(), JournalError> {
    if workers == 0 || workers > MAX_WORKERS || capacity == 0 || capacity > MAX_CAPACITY {
        return Err(JournalError::Bounds { workers, capacity });
    }
    Ok(())
}

impl JournalHeader {
    /// Writes the file header and every region's header into a zeroed file of
    /// `file_len` bytes (a new memfd). The journal is not complete yet.
    pub fn format(&self, file: &mut [u8]) -> Result<(), JournalError> {
        check_bounds(self.workers, self.capacity)?;
        let need = file_len(self.workers, self.capacity);
        if file.len() < need {
            return Err(JournalError::Truncated { have: file.len(), need });
        }
        let h = &mut file[..PAGE];
        h[0..4].copy_from_slice(&FILE_MAGIC);
        h[4..6].copy_from_slice(&JOURNAL_VERSION.to_be_bytes());
        h[6..8].copy_from_slice(&self.workers.to_be_bytes());
        h[8..12].copy_from_slice(&self.capacity.to_be_bytes());
        h[12..20].copy_from_slice(&self.fingerprint.to_be_bytes());
        h[20..28].copy_from_slice(&self.origin_ms.to_be_bytes());
        h[28..36].copy_from_slice(&self.epoch.to_be_bytes());
        h[COMPLETE_AT] = 0;
        for w in 0..self.workers {
            let r = &mut file[region_range(self.capacity, w)];
            r[0..4].copy_from_slice(&REGION_MAGIC);
            r[4..6].copy_from_slice(&JOURNAL_VERSION.to_be_bytes());
            r[6..8].copy_from_slice(&w.to_be_bytes());
            r[8..12].copy_from_slice(&self.capacity.to_be_bytes());
        }
        Ok(())
    }

    /// Marks the journal complete (the file header's flag).
    pub fn mark_complete(file: &mut [u8]) {
        if let Some(b) = file.get_mut(COMPLETE_AT) {
            *b = 1;
        }
    }

    pub fn parse(file: &[u8]) -> Result<JournalHeader, JournalError> {
        let h = file.get(..PAGE).ok_or(JournalError::Truncated { have: file.len(), need: PAGE })?;
        let magic = [h[0], h[1], h[2], h[3]];
        if magic != FILE_MAGIC {
            return Err(JournalError::Magic(magic));
        }
        let version = u16::from_be_bytes([h[4], h[5]]);
        if version != JOURNAL_VERSION {
            return Err(JournalError::Version(version));
        }
        let u64_at = |i: usize| u64::from_be_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
        let header = JournalHeader {
            workers: u16::from_be_bytes([h[6], h[7]]),
            capacity: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            fingerprint: u64_at(12),
            origin_ms: u64_at(20),
            epoch: u64_at(28),
            complete: h[COMPLETE_AT] == 1,
        };
        check_bounds(header.workers, header.capacity)?;
        let need = file_len(header.workers, header.capacity);
        if file.len() < need {
            return Err(JournalError::Truncated { have: file.len(), need });
        }
        Ok(header)
    }
}

const NEIGHBOURS_AT: usize = 64;
const NEIGHBOUR_LEN: usize = 11;
/// Neighbour entries the header page holds.
pub const MAX_NEIGHBOURS: usize = (PAGE - NEIGHBOURS_AT - 12) / NEIGHBOUR_LEN;

/// One neighbour: link, address, MAC.
pub type Neighbour = (u8, std::net::Ipv4Addr, [u8; 6]);

/// Writes the neighbour table into a journal's header page (the first `MAX_NEIGHBOURS`).
/// The count goes last: a crash in the middle leaves the old count and a check that fails.
pub fn write_neighbours(header: &mut [u8], neighbours: &[Neighbour]) {
    let Some(area) = header.get_mut(NEIGHBOURS_AT..PAGE) else { return };
    let n = neighbours.len().min(MAX_NEIGHBOURS);
    let mut body = [0u8; MAX_NEIGHBOURS * NEIGHBOUR_LEN];
    for (e, (link, addr, mac)) in body.chunks_exact_mut(NEIGHBOUR_LEN).zip(&neighbours[..n]) {
        e[0] = *link;
        e[1..5].copy_from_slice(&addr.octets());
        e[5..11].copy_from_slice(mac);
    }
    let body = &body[..n * NEIGHBOUR_LEN];
    area[12..12 + body.len()].copy_from_slice(body);
    area[4..12].copy_from_slice(&slot_check(n as u64, body).to_be_bytes());
    area[0..4].copy_from_slice(&u32::try_from(n).unwrap_or(0).to_be_bytes());
}

/// The neighbour table a journal's header page holds (none when its check fails).
pub fn read_neighbours(file: &[u8]) -> Vec<Neighbour> {
    let Some(area) = file.get(NEIGHBOURS_AT..PAGE) else { return Vec::new() };
    let n = (u32::from_be_bytes([area[0], area[1], area[2], area[3]]) as usize).min(MAX_NEIGHBOURS);
    let check = u64::from_be_bytes(area[4..12].try_into().unwrap_or([0; 8]));
    let body = &area[12..12 + n * NEIGHBOUR_LEN];
    if slot_check(n as u64, body) != check {
        return Vec::new();
    }
    body.chunks_exact(NEIGHBOUR_LEN)
        .map(|e| {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&e[5..11]);
            (e[0], std::net::Ipv4Addr::new(e[1], e[2], e[3], e[4]), mac)
        })
        .collect()
}

/// A word-at-a-time hash with fixed constants (the same in every natgw version): a slot
/// torn by a crash in the middle of its write fails it.
fn slot_check(stamp: u64, record: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ stamp;
    for c in record.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h ^ (h >> 29)
}

/// One worker's region, as its writer sees it.
pub struct JournalRegion<'a> {
    slots: &'a mut [u8],
    capacity: u32,
}

impl<'a> JournalRegion<'a> {
    /// The region `bytes` (one `region_range` of a formatted file).
    pub fn new(bytes: &'a mut [u8]) -> Result<JournalRegion<'a>, JournalError> {
        let have = bytes.len();
        let h = bytes.get(..REGION_HEADER_LEN).ok_or(JournalError::Truncated { have, need: REGION_HEADER_LEN })?;
        let magic = [h[0], h[1], h[2], h[3]];
        if magic != REGION_MAGIC {
            return Err(JournalError::Magic(magic));
        }
        let capacity = u32::from_be_bytes([h[8], h[9], h[10], h[11]]).min(MAX_CAPACITY);
        let need = REGION_HEADER_LEN + capacity as usize * SLOT_LEN;
        if have < need {
            return Err(JournalError::Truncated { have, need });
        }
        Ok(JournalRegion { slots: &mut bytes[REGION_HEADER_LEN..need], capacity })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    fn slot(&mut self, id: FlowId) -> Option<&mut [u8]> {
        let at = (id as usize).checked_mul(SLOT_LEN)?;
        self.slots.get_mut(at..at + SLOT_LEN)
    }

    /// Writes `record` into the slot of flow `id`, stamped with the writer's clock.
    pub fn write(&mut self, id: FlowId, stamp_ms: u64, record: &FlowRecord) {
        let Some(s) = self.slot(id) else { return };
        let mut buf = [0u8; RECORD_LEN];
        record.emit(&mut buf);
        s[SLOT_RECORD_AT..SLOT_RECORD_AT + RECORD_LEN].copy_from_slice(&buf);
        s[8..16].copy_from_slice(&stamp_ms.to_be_bytes());
        s[16..24].copy_from_slice(&slot_check(stamp_ms, &buf).to_be_bytes());
        s[0..4].copy_from_slice(&USED.to_be_bytes());
    }

    /// Frees the slot of flow `id` (the flow ended).
    pub fn clear(&mut self, id: FlowId) {
        if let Some(s) = self.slot(id) {
            s[0..4].fill(0);
        }
    }

    pub fn is_used(&mut self, id: FlowId) -> bool {
        self.slot(id).is_some_and(|s| s[0..4] == USED.to_be_bytes())
    }
}

/// What a journal holds, as read back.
#[derive(Debug, Default)]
pub struct JournalContents {
    /// Per worker: (stamp, record) of every used slot that passed its check.
    pub flows: Vec<Vec<(u64, FlowRecord)>>,
    /// Used slots that failed their check or did not parse (torn by a crash).
    pub torn: u64,
}

/// Reads every worker's flows from a journal.
pub fn read(file: &[u8]) -> Result<(JournalHeader, JournalContents), JournalError> {
    let header = JournalHeader::parse(file)?;
    let mut contents = JournalContents::default();
    for w in 0..header.workers {
        let r = &file[region_range(header.capacity, w)];
        if r[0..4] != REGION_MAGIC {
            return Err(JournalError::Magic([r[0], r[1], r[2], r[3]]));
        }
        let found = u16::from_be_bytes([r[6], r[7]]);
        if found != w {
            return Err(JournalError::Region { worker: w, found });
        }
        let mut flows = Vec::new();
        for s in r[REGION_HEADER_LEN..].chunks_exact(SLOT_LEN).take(header.capacity as usize) {
            if s[0..4] != USED.to_be_bytes() {
                continue;
            }
            let stamp = u64::from_be_bytes(s[8..16].try_into().unwrap_or([0; 8]));
            let check = u64::from_be_bytes(s[16..24].try_into().unwrap_or([0; 8]));
            let body = &s[SLOT_RECORD_AT..SLOT_RECORD_AT + RECORD_LEN];
            match FlowRecord::parse(body) {
                Some(rec) if slot_check(stamp, body) == check => flows.push((stamp, rec)),
                _ => contents.torn += 1,
            }
        }
        contents.flows.push(flows);
    }
    Ok((header, contents))
}

impl super::Translator {
    /// Writes `count` slots of `journal` afresh from `from` on: each flow's current record
    /// in its slot, every other slot cleared. A new journal is filled this way, a few
    /// thousand slots a loop turn, while the log keeps the slots already passed current.
    /// Only the ids the table has given out are visited: the slots above were never
    /// written (and their pages never touched). The next slot to write, `None` when the
    /// journal is whole.
    pub fn journal_scan(&self, journal: &mut JournalRegion<'_>, from: u32, count: u32, now_ms: u64) -> Option<u32> {
        let bound = u32::try_from(self.flows.id_bound()).unwrap_or(u32::MAX).min(journal.capacity());
        let end = from.saturating_add(count).min(bound);
        for id in from..end {
            match self.flows.get(id).and_then(|flow| self.record_of(id, flow, now_ms)) {
                Some(record) => journal.write(id, now_ms, &record),
                None => journal.clear(id),
            }
        }
        (end < bound).then_some(end)
    }

    /// The journal's capacity for this worker: one slot per flow the table can hold.
    pub fn journal_capacity(&self) -> u32 {
        u32::try_from(self.flows.max_flows()).unwrap_or(u32::MAX).min(MAX_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{FlowKey, Side};
    use std::net::Ipv4Addr;

    fn header(workers: u16, capacity: u32) -> JournalHeader {
        JournalHeader { workers, capacity, fingerprint: 7, origin_ms: 123_456, epoch: 3, complete: false }
    }

    fn record(port: u16) -> FlowRecord {
        // A UDP flow (proto 17, state code 0x10), everything else zero.
        let mut b = [0u8; RECORD_LEN];
        (b[0], b[2]) = (17, 0x10);
        let mut r = FlowRecord::parse(&b).expect("a UDP record parses");
        r.keys[0] = FlowKey {
            side: Side::Inside,
            proto: 17,
            src: Ipv4Addr::new(10, 0, 0, 2),
            src_port: port,
            dst: Ipv4Addr::new(198, 51, 100, 7),
            dst_port: 53,
        };
        r
    }

    #[test]
    fn a_journal_reads_back_what_each_worker_wrote() {
        let h = header(2, 10);
        let mut file = vec![0u8; file_len(2, 10)];
        h.format(&mut file).unwrap();
        {
            let (a, b) = file.split_at_mut(region_range(10, 1).start);
            let mut w0 = JournalRegion::new(&mut a[region_range(10, 0)]).unwrap();
            let mut w1 = JournalRegion::new(&mut b[..region_len(10)]).unwrap();
            w0.write(0, 5, &record(1000));
            w0.write(9, 6, &record(1009));
            w0.write(3, 7, &record(1003));
            w0.clear(3);
            w1.write(4, 8, &record(2004));
            // Beyond the capacity: ignored, never a panic.
            w1.write(10, 8, &record(2010));
            w1.write(u32::MAX, 8, &record(2010));
            w1.clear(u32::MAX);
        }
        let (read_header, contents) = read(&file).unwrap();
        assert_eq!(read_header, h);
        let ports = |w: usize| contents.flows[w].iter().map(|(s, r)| (*s, r.keys[0].src_port)).collect::<Vec<_>>();
        assert_eq!(ports(0), vec![(5, 1000), (6, 1009)]);
        assert_eq!(ports(1), vec![(8, 2004)]);
        assert_eq!(contents.torn, 0);
        JournalHeader::mark_complete(&mut file);
        assert!(read(&file).unwrap().0.complete);
    }

    #[test]
    fn a_torn_slot_is_skipped_and_counted() {
        let mut file = vec![0u8; file_len(1, 4)];
        header(1, 4).format(&mut file).unwrap();
        let r = region_range(4, 0);
        let mut j = JournalRegion::new(&mut file[r.clone()]).unwrap();
        j.write(0, 1, &record(1));
        j.write(1, 1, &record(2));
        // A crash in the middle of rewriting slot 1: a prefix of the new record, in any
        // byte of the record or its stamp.
        let slot1 = r.start + REGION_HEADER_LEN + SLOT_LEN;
        for at in 8..SLOT_RECORD_AT + RECORD_LEN {
            if (16..24).contains(&at) {
                continue;
            }
            let mut torn = file.clone();
            torn[slot1 + at] ^= 0x5a;
            let (_, c) = read(&torn).unwrap();
            assert_eq!((c.flows[0].len(), c.torn), (1, 1), "a change at byte {at} of the slot went unseen");
        }
    }

    #[test]
    fn the_neighbour_table_reads_back_and_a_torn_one_is_dropped() {
        let mut file = vec![0u8; file_len(1, 4)];
        header(1, 4).format(&mut file).unwrap();
        assert!(read_neighbours(&file).is_empty(), "a new journal has none");
        let n: Vec<Neighbour> = (0..400u32)
            .map(|i| (u8::try_from(i % 3).unwrap(), std::net::Ipv4Addr::from(0x0a00_0000 + i), [2, 0, 0, 0, 0, 1]))
            .collect();
        write_neighbours(&mut file, &n[..2]);
        assert_eq!(read_neighbours(&file), n[..2].to_vec());
        // More than the page holds: the first MAX_NEIGHBOURS.
        write_neighbours(&mut file, &n);
        assert_eq!(read_neighbours(&file), n[..MAX_NEIGHBOURS].to_vec());
        // A crash in the middle of rewriting them: none, rather than wrong ones.
        file[NEIGHBOURS_AT + 12 + 5] ^= 1;
        assert!(read_neighbours(&file).is_empty());
        // The header itself still reads.
        assert!(JournalHeader::parse(&file).is_ok());
    }

    #[test]
    fn a_damaged_journal_is_refused_with_the_reason() {
        let mut file = vec![0u8; file_len(1, 4)];
        header(1, 4).format(&mut file).unwrap();
        for cut in [0, 10, PAGE, file.len() - 1] {
            assert!(matches!(read(&file[..cut]), Err(JournalError::Truncated { .. })), "cut at {cut}");
        }
        let mut bad = file.clone();
        bad[0] = b'X';
        assert!(matches!(read(&bad), Err(JournalError::Magic(_))));
        let mut bad = file.clone();
        bad[5] = 9;
        assert_eq!(read(&bad).unwrap_err(), JournalError::Version(9));
        let mut bad = file.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(read(&bad), Err(JournalError::Bounds { .. })));
        let mut bad = file.clone();
        bad[6..8].copy_from_slice(&0u16.to_be_bytes());
        assert!(matches!(read(&bad), Err(JournalError::Bounds { .. })));
        let mut bad = file.clone();
        bad[PAGE + 7] = 3;
        assert_eq!(read(&bad).unwrap_err(), JournalError::Region { worker: 0, found: 3 });
        assert!(header(1, 4).format(&mut [0u8; 100]).is_err());
    }
}
