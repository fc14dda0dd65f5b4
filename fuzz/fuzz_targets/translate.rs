//! The translator on arbitrary frames from both sides, with state carried between frames
//! of one input (so that replies, ICMP errors and fragments meet real flows). The input is
//! a sequence of records: [side+flags byte][length, 2 bytes big-endian][frame bytes]. Invariants: no panic;
//! every forwarded or emitted frame is a well-formed IPv4 packet with a valid header
//! checksum; what natgw builds itself has valid checksums throughout; and nothing leaves
//! on the outside with a source other than one of the external addresses. A record with
//! control byte 0xff hands the translator's flows over (`export_state` → a new translator
//! → `import_state`, as `natgw upgrade` does) after XOR-ing the record's bytes into the
//! exported records: the import never panics, and what it takes keeps the invariants.
//! Control byte 0xfe fails over to a standby instead: the events replicated since the
//! start (`take_replication`, XOR-ed the same way) go into a `ReplicaTable`, whose sections
//! a new translator imports: never a panic, never more flows than were replicated, and the
//! same invariants after. The flow journal is written in the same takes: at a failover its
//! flows are exactly the replica's (before the XOR), and after an upgrade's import a scan
//! writes it afresh. Control byte 0xfd restarts from the journal as a crashed natgw's
//! successor does, after XOR-ing the record's bytes into it (header and slots alike): the
//! read never panics, and what it takes is imported with the same invariants after.
//! Control byte 0xfc begins an upgrade's pre-copy (a successor imports the export at
//! once); the next 0xff then hands over only the delta, XOR-ed the same way: never a
//! panic, and without damage the successor holds exactly the flows a whole export gives.
//! DNS name binding is on (203.0.113.80 a trusted resolver, 10.10.2.10 an inside one, tiny
//! bounds): the name table and the outstanding queries never pass their bounds.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use natgw_core::conntrack::{Egress, Side};
use natgw_core::counters::Counters;
use natgw_core::dns::{DnsConfig, NameBinder, NameLimits, NameTable};
use natgw_core::nat::journal::{self, JournalHeader, JournalRegion};
use natgw_core::nat::{Filtering, FrameMeta, Translator, Verdict};
use natgw_testkit::demo_config;
use natgw_wire::{checksum, Ipv4Packet};

/// DNS name binding with 203.0.113.80 (the seeds' server) as the trusted resolver, and
/// small bounds so that inputs reach them.
const NAME_LIMITS: NameLimits = NameLimits { min_ttl_s: 1, max_ttl_s: 60, max_bindings: 32, max_bindings_per_host: 8 };

fn bind_names(t: &mut Translator, table: &Arc<NameTable>) {
    let cfg = DnsConfig {
        resolvers: vec![std::net::Ipv4Addr::new(203, 0, 113, 80)],
        inside_resolvers: vec![std::net::Ipv4Addr::new(10, 10, 2, 10)],
        limits: NAME_LIMITS,
        max_pending: 16,
        max_pending_per_host: 4,
    };
    t.set_name_binder(NameBinder::new(&cfg, Arc::clone(table)));
}

fn header_ok(frame: &[u8]) -> bool {
    match Ipv4Packet::new_checked(&frame[14..]) {
        Ok(ip) => checksum::fold(checksum::sum(ip.header(), 0)) == 0xffff,
        Err(_) => false,
    }
}

/// The IPv4 source of a frame natgw put out.
fn source(frame: &[u8]) -> std::net::Ipv4Addr {
    Ipv4Packet::new_checked(&frame[14..]).map_or(std::net::Ipv4Addr::UNSPECIFIED, |ip| ip.src_addr())
}

/// Every record of `t` as of `now`, sorted.
fn records(t: &Translator, now: u64) -> Vec<Vec<u8>> {
    let mut state = Vec::new();
    t.export_state(now, &mut state);
    let mut r: Vec<Vec<u8>> = state[natgw_core::nat::handoff::HEADER_LEN..]
        .chunks(natgw_core::nat::handoff::RECORD_LEN)
        .map(<[u8]>::to_vec)
        .collect();
    r.sort();
    r
}

/// A formatted one-worker journal for `t`.
fn new_journal(t: &Translator) -> Vec<u8> {
    let capacity = t.journal_capacity();
    let mut file = vec![0u8; journal::file_len(1, capacity)];
    let h = JournalHeader { workers: 1, capacity, fingerprint: 0, origin_ms: 0, epoch: 0, complete: false };
    h.format(&mut file).expect("a journal formats");
    file
}

/// A new journal for `t`, written whole from its flows (as a new process's workers do).
fn written_journal(t: &Translator, now: u64) -> Vec<u8> {
    let mut journal = new_journal(t);
    let mut from = Some(0);
    while let Some(f) = from {
        from = t.journal_scan(&mut journal_region(&mut journal), f, 1000, now);
    }
    journal
}

fn journal_region(file: &mut [u8]) -> JournalRegion<'_> {
    let capacity = JournalHeader::parse(file).expect("a formatted journal").capacity;
    JournalRegion::new(&mut file[journal::region_range(capacity, 0)]).expect("a formatted region")
}

/// The invariants of one verdict on `frame` (rewritten in place) or `out` (built).
fn check(t: &Translator, verdict: Verdict, frame: &[u8], out: &[u8]) {
    let sent = match verdict {
        Verdict::Forward { egress, .. } | Verdict::ForwardFragmented { egress, .. } => Some((egress, frame)),
        Verdict::Emit { egress, len, .. } => Some((egress, &out[..len])),
        _ => None,
    };
    if let Some((Egress::Outside, f)) = sent {
        // Nothing private (nor anything else) leaves the outside but from natgw's own.
        assert!(t.config().external_addrs.contains(&source(f)), "a frame left the outside from {}", source(f));
    }
    match verdict {
        Verdict::Forward { .. } => assert!(header_ok(frame), "forwarded a malformed header"),
        Verdict::ForwardFragmented { mtu, .. } => {
            assert!(header_ok(frame), "forwarded a malformed header");
            let pieces = natgw_wire::ipv4::split(&frame[14..], usize::from(mtu)).expect("splittable");
            assert!(pieces.iter().all(|p| 20 + p.payload.len() <= usize::from(mtu)));
        }
        Verdict::Emit { len, .. } => {
            // What natgw builds itself carries complete, valid checksums, as etherparse
            // computes them.
            assert!(header_ok(&out[..len]), "emitted a malformed header");
            assert!(natgw_testkit::checksums_valid(&out[..len]), "emitted a packet with a wrong checksum");
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = demo_config();
    cfg.max_flows = 64;
    cfg.pools[0].lo = 1024;
    cfg.pools[0].hi = 1100;
    if data.first().is_some_and(|b| b & 0x80 != 0) {
        cfg.filtering = Filtering::EndpointIndependent;
    }
    if data.first().is_some_and(|b| b & 0x40 != 0) {
        cfg.workers = 2;
    }
    let names = Arc::new(NameTable::new(NAME_LIMITS));
    let mut t = Translator::new(cfg.clone(), Arc::new(Counters::default()), 0);
    bind_names(&mut t, &names);
    t.enable_replication();
    let mut replicated = Vec::new();
    let mut journal = new_journal(&t);
    // A successor holding a pre-copy (0xfc), until the next handoff (0xff).
    let mut successor: Option<Translator> = None;
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut now = 0u64;
    let mut out = vec![0u8; 2048];
    while rest.len() >= 3 {
        let (ctl, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])));
        let body = &rest[3..];
        let n = len.min(body.len());
        let mut frame = body[..n].to_vec();
        rest = &body[n..];
        if ctl == 0xfc && successor.is_none() {
            let mut snapshot = Vec::new();
            t.begin_precopy(now, &mut snapshot);
            let mut next = Translator::new(cfg.clone(), Arc::new(Counters::default()), now);
            bind_names(&mut next, &names);
            let _ = next.import_state(&snapshot, now);
            successor = Some(next);
            continue;
        }
        if let (0xff, Some(mut next)) = (ctl, successor.take()) {
            if let Some(mut delta) = t.precopy_delta(now) {
                let body = delta.section.len() - natgw_core::nat::handoff::HEADER_LEN;
                for (i, b) in frame.iter().enumerate() {
                    if body > 0 && i % 2 == 0 {
                        delta.section[natgw_core::nat::handoff::HEADER_LEN + i % body] ^= b;
                    } else if !delta.ended.is_empty() {
                        let at = i % delta.ended.len();
                        delta.ended[at] ^= b;
                    }
                }
                let _ = next.apply_delta(&delta, now);
                if frame.is_empty() {
                    assert_eq!(records(&next, now), records(&t, now), "a pre-copy and its delta differ from the table");
                }
                t = next;
                t.enable_replication();
                journal = written_journal(&t, now);
                replicated.clear();
                t.replication_snapshot(now, &mut replicated);
                continue;
            }
        }
        if ctl == 0xff {
            let mut state = Vec::new();
            t.export_state(now, &mut state);
            let records = state.len() - natgw_core::nat::handoff::HEADER_LEN;
            for (i, b) in frame.iter().enumerate() {
                if records > 0 {
                    state[natgw_core::nat::handoff::HEADER_LEN + i % records] ^= b;
                }
            }
            let mut next = Translator::new(cfg.clone(), Arc::new(Counters::default()), now);
            bind_names(&mut next, &names);
            let _ = next.import_state(&state, now);
            assert!(next.flows().len() <= t.flows().len(), "an import made flows up");
            t = next;
            t.enable_replication();
            // The new translator's flows sit in other slots: the journal is written afresh,
            // and the stream starts over with them.
            journal = written_journal(&t, now);
            replicated.clear();
            t.replication_snapshot(now, &mut replicated);
            continue;
        }
        if ctl == 0xfd {
            let _ = t.take_replication(now, Some(&mut replicated), Some(&mut journal_region(&mut journal)));
            let used = journal.len();
            for (i, b) in frame.iter().enumerate() {
                // Spread over the header page and the slots that hold flows.
                let at = if i % 2 == 0 { i % journal::PAGE } else { (i * 977) % used };
                journal[at] ^= b;
            }
            let mut next = Translator::new(cfg.clone(), Arc::new(Counters::default()), now);
            bind_names(&mut next, &names);
            if let Ok((_, kept)) = journal::read(&journal) {
                let mut replica = natgw_core::nat::replication::ReplicaTable::new(
                    cfg.workers,
                    cfg.max_flows,
                    cfg.state_fingerprint(),
                );
                let worker = u16::try_from(cfg.worker).unwrap_or(0);
                for (stamp, record) in kept.flows.into_iter().flatten() {
                    let _ = replica.insert(worker, record, stamp.min(now));
                }
                for section in replica.sections(now) {
                    let _ = next.import_state(&section, now);
                }
                assert!(next.flows().len() <= replica.len(), "a restart made flows up");
            }
            t = next;
            t.enable_replication();
            journal = new_journal(&t);
            replicated.clear();
            continue;
        }
        if ctl == 0xfe {
            let _ = t.take_replication(now, Some(&mut replicated), Some(&mut journal_region(&mut journal)));
            if replicated.len() < 1 << 20 {
                let mut clean = natgw_core::nat::replication::ReplicaTable::new(
                    cfg.workers,
                    cfg.max_flows,
                    cfg.state_fingerprint(),
                );
                let _ = clean.apply_events(u16::try_from(cfg.worker).unwrap_or(0), &replicated, now);
                let (_, kept) = journal::read(&journal).expect("the journal reads back");
                assert_eq!(kept.torn, 0, "a slot written whole fails its check");
                let journaled: Vec<_> = kept.flows.iter().flatten().map(|(_, r)| r.keys[0]).collect();
                assert_eq!(journaled.len(), clean.len(), "the journal and the replica disagree");
                let distinct: std::collections::HashSet<_> = journaled.iter().collect();
                assert_eq!(distinct.len(), journaled.len(), "a flow is twice in the journal");
            }
            for (i, b) in frame.iter().enumerate() {
                if !replicated.is_empty() {
                    let at = i % replicated.len();
                    replicated[at] ^= b;
                }
            }
            let workers = cfg.workers;
            let mut replica =
                natgw_core::nat::replication::ReplicaTable::new(workers, cfg.max_flows, cfg.state_fingerprint());
            let _ = replica.apply_events(u16::try_from(cfg.worker).unwrap_or(0), &replicated, now);
            let mut next = Translator::new(cfg.clone(), Arc::new(Counters::default()), now);
            bind_names(&mut next, &names);
            for section in replica.sections(now) {
                let _ = next.import_state(&section, now);
            }
            assert!(next.flows().len() <= replica.len(), "a promotion made flows up");
            t = next;
            t.enable_replication();
            replicated.clear();
            journal = new_journal(&t);
            continue;
        }
        let side = if ctl & 1 == 0 { Side::Inside } else { Side::Outside };
        let meta = FrameMeta {
            side,
            link: (ctl >> 1) & 1,
            csum_partial: ctl & 4 != 0,
            gso_size: if ctl & 8 != 0 { 1000 } else { 0 },
            segments: 1,
            handed_off: ctl & 16 != 0,
        };
        now += u64::from(ctl >> 5) * 700;
        let verdict = t.process(&mut frame, meta, now, &mut out);
        check(&t, verdict, &frame, &out);
        for (mut f, m) in t.take_released() {
            let v = t.process(&mut f, m, now, &mut out);
            check(&t, v, &f, &out);
        }
        t.tick(now);
        assert!(names.len() <= NAME_LIMITS.max_bindings, "the name table passed its bound");
        assert!(t.name_binder().is_some_and(|b| b.pending().len() <= 16), "outstanding queries passed their bound");
        if replicated.len() < 1 << 20 {
            let _ = t.take_replication(now, Some(&mut replicated), Some(&mut journal_region(&mut journal)));
        }
    }
});
