//! The CLI's text for the admin API's replies: what an operator reads in a terminal.
//! `--json` prints the reply types themselves instead.

use std::fmt::Write as _;

use crate::admin::{ExplainReport, FlowEntry, HookStatus, Stats, Status, SwapReport};
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
    if let Some(d) = &s.dns {
        let _ = writeln!(
            out,
            "dns: {} names bound of {}; answers matched {} unmatched {} malformed {}; bindings refused {} (resolvers {})",
            d.names,
            d.max_names,
            d.answers_matched,
            d.answers_unmatched,
            d.malformed,
            d.bindings_refused,
            d.resolvers.join(", ")
        );
    }
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

/// `natgw explain`: one line per question, in the order the gateway asks them.
pub fn explain_text(r: &ExplainReport) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(out, "{k:<12} {v}");
    };
    line(
        "flow",
        &format!(
            "{}{}",
            r.flow,
            if r.offline { "  (offline: the config's policies, no names bound, no flows)" } else { "" }
        ),
    );
    line("arrives on", r.ingress.as_deref().unwrap_or("no inside interface"));
    if let Some(e) = &r.existing {
        line("exists", &format!("yes: {e} (its packets pass as they do; this is what a new flow would get)"));
    }
    let names =
        if r.names.is_empty() {
            "none bound to the destination for this host".to_string()
        } else {
            r.names
                .iter()
                .map(|n| {
                    if n.supposed {
                        format!("{} (supposed)", n.name)
                    } else {
                        format!("{} ({} s left)", n.name, n.ttl_s)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
    line("names", &names);
    if !r.other_addresses.is_empty() {
        line("also bound", &format!("{} (the name's other addresses for this host)", r.other_addresses.join(", ")));
    }
    if let Some(why) = &r.refused_before_policy {
        line("verdict", &format!("{}: {why}", r.verdict));
    } else {
        line("verdict", &r.verdict);
        line("because", &r.reason);
        if let Some(p) = &r.egress_policy {
            line("policy", p);
        }
    }
    if let Some(p) = &r.pool {
        let budget = p.budget.map_or(String::new(), |b| format!(", at most {b} mappings per inside host"));
        line(
            "pool",
            &format!("{} ({}, ports {}{budget}), chosen by {}", p.name, p.addresses.join(", "), p.ports, p.chosen_by),
        );
    }
    if let Some(t) = &r.translation {
        line("leaves as", t);
    }
    line("replies", &r.filtering);
    let timeouts: Vec<String> = r.timeouts.iter().map(|(k, v)| format!("{k} {v} s")).collect();
    line("idle", &timeouts.join(", "));
    out
}

/// `conntrack -L`-like lines under a header; then the count.
pub fn flows_text(flows: &[FlowEntry]) -> String {
    let mut out = String::new();
    let row = |out: &mut String, cols: [&str; 10]| {
        let [proto, state, original, translated, pool, age, expires, packets, bytes, worker] = cols;
        let _ = writeln!(
            out,
            "{proto:<5} {state:<11} {original:<45} {translated:<45} {pool:<10} {age:>7} {expires:>7} {packets:>17} {bytes:>23} {worker:>6}"
        );
    };
    row(
        &mut out,
        [
            "PROTO",
            "STATE",
            "ORIGINAL (src -> dst)",
            "TRANSLATED (leaves as)",
            "POOL",
            "AGE",
            "EXPIRES",
            "PACKETS out/in",
            "BYTES out/in",
            "WORKER",
        ],
    );
    for f in flows {
        row(
            &mut out,
            [
                &f.proto,
                &f.state,
                &f.original,
                &f.translated,
                f.pool.as_deref().unwrap_or("-"),
                &duration_text(f.age_s),
                &duration_text(f.expires_in_s),
                &format!("{}/{}", f.packets[0], f.packets[1]),
                &format!("{}/{}", f.bytes[0], f.bytes[1]),
                &f.worker.to_string(),
            ],
        );
    }
    let _ = writeln!(out, "natgw: {} flow entries", flows.len());
    out
}

/// Seconds as an operator reads them: `59s`, `4m05s`, `2h04m`, `3d01h`.
pub fn duration_text(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Unix seconds as a UTC date and time, `2026-12-07 06:53:53 UTC`.
pub fn utc_text(unix_s: u64) -> String {
    // Howard Hinnant's days-to-civil: proleptic Gregorian, exact for every u64 day count
    // this can meet (era arithmetic in i64).
    let days = (unix_s / 86400) as i64;
    let secs = unix_s % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `natgw policy list` as a table.
pub fn policy_list_text(hooks: &[HookStatus]) -> String {
    if hooks.is_empty() {
        return "no policies loaded: every flow may leave, from the default pool; flow records are logged as they are\n"
            .into();
    }
    let mut out = format!(
        "{:<10} {:>4} {:<14} {:<23} {:>10} {:>7} {:>8} {:<6} {:<12} {:<6} file\n",
        "hook", "gen", "sha256", "loaded", "calls", "errors", "timeouts", "fail", "serving", "wit"
    );
    for h in hooks {
        let _ = writeln!(
            out,
            "{:<10} {:>4} {:<14} {:<23} {:>10} {:>7} {:>8} {:<6} {:<12} {:<6} {}",
            if h.shadow { format!("{}*", h.hook.name()) } else { h.hook.name().to_string() },
            h.generation,
            &h.sha256[..12.min(h.sha256.len())],
            utc_text(h.loaded_unix_s),
            h.calls,
            h.errors,
            h.timeouts,
            h.fail.to_string(),
            h.serving.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
            h.contract.rsplit_once('@').map_or("-", |(_, v)| v),
            h.file
        );
    }
    if hooks.iter().any(|h| h.shadow) {
        out.push_str(
            "* a shadow policy: it runs beside the live one and decides nothing (natgw stats: PolicyShadow*)\n",
        );
    }
    out
}

/// What a policy swap did, in one line.
pub fn swap_text(r: &SwapReport) -> String {
    let mut msg = format!(
        "{}{} policy #{} ({}, sha256 {}) compiled and validated in {:.1} ms; {} in {:.1} ms",
        r.hook,
        if r.shadow { " shadow" } else { "" },
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
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC"); // a leap day of a 400-year leap year
        assert_eq!(utc_text(4_107_456_000), "2100-02-28 00:00:00 UTC"); // 2100 is not a leap year ...
        assert_eq!(utc_text(4_107_542_400), "2100-03-01 00:00:00 UTC"); // ... so March follows
        assert_eq!(utc_text(1_796_625_233), "2026-12-07 06:33:53 UTC");
        assert_eq!(utc_text(1_798_761_599), "2026-12-31 23:59:59 UTC");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(59), "59s");
        assert_eq!(duration_text(245), "4m05s");
        assert_eq!(duration_text(7440), "2h04m");
        assert_eq!(duration_text(86400 * 3 + 3600), "3d01h");
    }

    #[test]
    fn flows_have_a_header_and_one_row_each() {
        let f = FlowEntry {
            worker: 1,
            proto: "tcp".into(),
            state: "ESTABLISHED".into(),
            original: "10.10.1.10:40000 -> 203.0.113.80:443".into(),
            translated: "198.51.100.10:1050 -> 203.0.113.80:443".into(),
            reply: "203.0.113.80:443 -> 198.51.100.10:1050".into(),
            age_s: 65,
            expires_in_s: 7439,
            packets: [3, 2],
            bytes: [180, 120],
            pool: Some("default".into()),
        };
        let text = flows_text(&[f]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("PROTO STATE") && lines[0].contains("POOL"), "{text}");
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "tcp",
                "ESTABLISHED",
                "10.10.1.10:40000",
                "->",
                "203.0.113.80:443",
                "198.51.100.10:1050",
                "->",
                "203.0.113.80:443",
                "default",
                "1m05s",
                "2h03m",
                "3/2",
                "180/120",
                "1"
            ]
        );
        assert_eq!(lines[2], "natgw: 1 flow entries");
    }

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
            shadow: false,
        };
        assert_eq!(
            swap_text(&r),
            "egress policy #7 (/p/a.wasm, sha256 0123456789ab) compiled and validated in 1.5 ms; serving on every caller in 0.3 ms"
        );
        r.revoked = Some(3);
        assert!(swap_text(&r).ends_with("; revalidated existing flows: 3 revoked"));
        r.shadow = true;
        assert!(swap_text(&r).starts_with("egress shadow policy #7"), "{}", swap_text(&r));
    }
}
