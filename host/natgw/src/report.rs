//! The CLI's text for the admin API's replies: what an operator reads in a terminal.
//! `--json` prints the reply types themselves instead.

use std::fmt::Write as _;

use crate::admin::{FlowEntry, HookStatus, Stats, Status, SwapReport};
use natgw_core::counters::Counter;

pub fn status_text(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pid: {}", s.pid);
    let _ = writeln!(out, "uptime: {}s", s.uptime_s);
    let _ = writeln!(out, "workers: {}", s.workers);
    for l in &s.inside {
        let _ = writeln!(out, "inside: {} {} mtu {} path {}", l.interface, l.addresses.join(","), l.mtu, l.packet_path);
    }
    let _ = writeln!(
        out,
        "outside: {} {} via {} mtu {} path {}",
        s.outside.interface,
        s.outside.addresses.join(","),
        s.gateway,
        s.outside.mtu,
        s.outside.packet_path
    );
    if let Some(h) = &s.ha {
        let role = match h.role {
            crate::ha::Role::Active => "active",
            crate::ha::Role::Standby => "standby",
        };
        let link = match (h.connected, h.role) {
            (true, crate::ha::Role::Active) => format!("streaming, lag {} event(s)", h.lag_events),
            (true, crate::ha::Role::Standby) => format!("receiving, {} replicated flow(s)", h.replica_flows),
            (false, _) => format!("down, {} replicated flow(s)", h.replica_flows),
        };
        let _ = writeln!(out, "ha: {role}; sync {} -> peer {}: {link}", h.address, h.peer);
        if !h.last_error.is_empty() {
            let _ = writeln!(out, "ha: last sync error: {}", h.last_error);
        }
    }
    let _ = writeln!(out, "flows: {} (limit {}, early-dropped {})", s.flows, s.max_flows, s.early_drops);
    let _ = writeln!(out, "neighbours: {}", s.neighbours);
    let _ = writeln!(
        out,
        "connections: attempted {} established {} port-allocation-errors {} idle-timeouts {}",
        s.connections_attempted, s.connections_established, s.port_allocation_errors, s.idle_timeouts
    );
    let _ = writeln!(
        out,
        "packets: from-source {} to-destination {} from-destination {} to-source {} dropped {}",
        s.packets_from_source,
        s.packets_to_destination,
        s.packets_from_destination,
        s.packets_to_source,
        s.packets_dropped
    );
    out
}

/// Every counter, `name value` per line, then the OTLP exporter's health.
pub fn stats_text(s: &Stats) -> String {
    let mut out: String = s.counters.iter().map(|c| format!("{} {}\n", c.name, c.value)).collect();
    let _ = writeln!(
        out,
        "otlp: queued {} sent {} retried {} dropped {} metric-exports {} metric-errors {}",
        s.counter(Counter::OtlpRecordsQueued),
        s.counter(Counter::OtlpRecordsSent),
        s.counter(Counter::OtlpExportRetries),
        s.counter(Counter::OtlpRecordsDropped),
        s.counter(Counter::OtlpMetricExports),
        s.counter(Counter::OtlpMetricExportErrors)
    );
    out
}

/// `conntrack -L`-like lines.
pub fn flows_text(flows: &[FlowEntry]) -> String {
    let mut out = String::new();
    for f in flows {
        let _ = writeln!(
            out,
            "{:<4} {:<11} orig {:<43} nat {:<43} age {}s expires {}s packets {}/{} bytes {}/{} worker {}",
            f.proto,
            f.state,
            f.original,
            f.translated,
            f.age_s,
            f.expires_in_s,
            f.packets[0],
            f.packets[1],
            f.bytes[0],
            f.bytes[1],
            f.worker
        );
    }
    let _ = writeln!(out, "natgw: {} flow entries", flows.len());
    out
}

/// `natgw policy list` as a table.
pub fn policy_list_text(hooks: &[HookStatus]) -> String {
    if hooks.is_empty() {
        return "no policies loaded: every flow may leave, from the default pool; flow records are logged as they are\n"
            .into();
    }
    let mut out = format!(
        "{:<10} {:>4} {:<14} {:>20} {:>10} {:>7} {:>8} {:<6} {:<12} file\n",
        "hook", "gen", "sha256", "loaded (unix s)", "calls", "errors", "timeouts", "fail", "serving"
    );
    for h in hooks {
        let _ = writeln!(
            out,
            "{:<10} {:>4} {:<14} {:>20} {:>10} {:>7} {:>8} {:<6} {:<12} {}",
            h.hook.name(),
            h.generation,
            &h.sha256[..12.min(h.sha256.len())],
            h.loaded_unix_s,
            h.calls,
            h.errors,
            h.timeouts,
            h.fail.to_string(),
            h.serving.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
            h.file
        );
    }
    out
}

/// What a policy swap did, in one line.
pub fn swap_text(r: &SwapReport) -> String {
    let mut msg = format!(
        "{} policy #{} ({}, sha256 {}) compiled and validated in {:.1} ms; {} in {:.1} ms",
        r.hook,
        r.generation,
        r.file,
        &r.sha256[..12.min(r.sha256.len())],
        r.prepared_us as f64 / 1e3,
        if r.serving_everywhere { "serving on every caller" } else { "NOT yet serving on every caller" },
        r.serving_after_us as f64 / 1e3,
    );
    if let Some(n) = r.revoked {
        let _ = write!(msg, "; revalidated existing flows: {n} revoked");
    }
    msg
}

pub fn ha_text(r: &crate::ha::HaReport) -> String {
    use crate::ha::Role;
    match (r.role, r.unchanged) {
        (Role::Active, true) => "active already: nothing changed".into(),
        (Role::Standby, true) => "standby already: nothing changed".into(),
        (Role::Active, false) => format!(
            "promoted to active: {} replicated flow(s) taken over{}, addresses announced, in {:.1} ms",
            r.flows,
            if r.flows_refused > 0 { format!(", {} refused", r.flows_refused) } else { String::new() },
            r.took_us as f64 / 1000.0
        ),
        (Role::Standby, false) => {
            format!(
                "demoted to standby: {} flow(s) let go to the new active, in {:.1} ms",
                r.flows,
                r.took_us as f64 / 1000.0
            )
        }
    }
}

pub fn upgrade_text(r: &crate::admin::UpgradeReport) -> String {
    format!(
        "upgraded: pid {} -> {} ({}): {} flow(s) handed over{}, forwarding paused {:.1} ms (the new process was ready after {} ms)",
        r.old_pid,
        r.new_pid,
        r.binary,
        r.flows,
        if r.flows_refused > 0 { format!(", {} refused", r.flows_refused) } else { String::new() },
        r.pause_us as f64 / 1000.0,
        r.prepare_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Hook;

    #[test]
    fn swap_text_says_where_it_serves_and_what_was_revoked() {
        let mut r = SwapReport {
            hook: Hook::Egress,
            generation: 7,
            file: "/p/a.wasm".into(),
            sha256: "0123456789abcdef".into(),
            prepared_us: 1500,
            serving_after_us: 300,
            serving_everywhere: true,
            revoked: None,
        };
        assert_eq!(
            swap_text(&r),
            "egress policy #7 (/p/a.wasm, sha256 0123456789ab) compiled and validated in 1.5 ms; serving on every caller in 0.3 ms"
        );
        r.revoked = Some(3);
        assert!(swap_text(&r).ends_with("; revalidated existing flows: 3 revoked"));
    }
}
