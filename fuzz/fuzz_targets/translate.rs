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
//! same invariants after.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use natgw_core::conntrack::{Egress, Side};
use natgw_core::counters::Counters;
use natgw_core::nat::{Filtering, FrameMeta, Translator, Verdict};
use natgw_testkit::demo_config;
use natgw_wire::{checksum, Ipv4Packet};

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
    let mut t = Translator::new(cfg.clone(), Arc::new(Counters::default()), 0);
    t.enable_replication();
    let mut replicated = Vec::new();
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut now = 0u64;
    let mut out = vec![0u8; 2048];
    while rest.len() >= 3 {
        let (ctl, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])));
        let body = &rest[3..];
        let n = len.min(body.len());
        let mut frame = body[..n].to_vec();
        rest = &body[n..];
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
            let _ = next.import_state(&state, now);
            assert!(next.flows().len() <= t.flows().len(), "an import made flows up");
            t = next;
            t.enable_replication();
            continue;
        }
        if ctl == 0xfe {
            let _ = t.take_replication(now, &mut replicated);
            for (i, b) in frame.iter().enumerate() {
                if !replicated.is_empty() {
                    let at = i % replicated.len();
                    replicated[at] ^= b;
                }
            }
            let workers = cfg.workers;
            let mut replica = natgw_core::nat::replication::ReplicaTable::new(
                workers,
                cfg.max_flows,
                cfg.state_fingerprint(),
            );
            let _ = replica.apply_events(u16::try_from(cfg.worker).unwrap_or(0), &replicated, now);
            let mut next = Translator::new(cfg.clone(), Arc::new(Counters::default()), now);
            for section in replica.sections(now) {
                let _ = next.import_state(&section, now);
            }
            assert!(next.flows().len() <= replica.len(), "a promotion made flows up");
            t = next;
            t.enable_replication();
            replicated.clear();
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
        if replicated.len() < 1 << 20 {
            let _ = t.take_replication(now, &mut replicated);
        }
    }
});
