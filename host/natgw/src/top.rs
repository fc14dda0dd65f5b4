//! `natgw top`: a live view of a running gateway, refreshed once a second. What it shows
//! is computed from two samples of the admin API (`Frame::between`, pure and tested);
//! the terminal part only draws it. A gateway that goes away shows as disconnected, and
//! the view comes back when it answers again.
//!
//! Owns: the sample-to-view arithmetic and the terminal loop. Must never: ask the gateway
//! for its whole flow table (the top talkers come from the workers' bounded scans).

use std::time::{Duration, Instant};

use crate::admin::{AdminClient, AdminError, HookStatus, Stats, Status, TopReport};
use natgw_core::counters::Counter;

/// Talkers shown of each kind.
pub const TALKERS: u32 = 10;

/// What one refresh read from the gateway.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub status: Status,
    pub stats: Stats,
    pub hooks: Vec<HookStatus>,
    pub top: TopReport,
}

impl Sample {
    pub fn read(client: &AdminClient) -> Result<Sample, AdminError> {
        Ok(Sample {
            status: client.status()?,
            stats: client.stats()?,
            hooks: client.policy_list()?,
            top: client.top(TALKERS)?,
            at: Instant::now(),
        })
    }
}

/// What the view shows, as lines of text and two tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: String,
    pub lines: Vec<String>,
    /// (address, out, in, flows) rows.
    pub hosts: Vec<[String; 4]>,
    pub destinations: Vec<[String; 4]>,
}

/// A count per second as an operator reads it: `0`, `950`, `12.3k`, `4.5M`.
pub fn per_second(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Bytes as `512 B`, `1.5 KB`, `3.2 MB`, `1.1 GB` (powers of 1000, as the guide bills).
pub fn bytes(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1} GB", v / 1e9),
        v if v >= 1e6 => format!("{:.1} MB", v / 1e6),
        v if v >= 1e3 => format!("{:.1} KB", v / 1e3),
        v => format!("{v:.0} B"),
    }
}

impl Frame {
    /// The view of `cur`, with rates over the time since `prev` (none on the first).
    pub fn between(prev: Option<&Sample>, cur: &Sample) -> Frame {
        let secs = prev.map(|p| cur.at.duration_since(p.at).as_secs_f64()).filter(|s| *s > 0.0);
        // A counter's rate; 0 when it went back (the gateway restarted between samples).
        let rate_of = |now: u64, before: Option<u64>| match (before, secs) {
            (Some(b), Some(s)) => now.saturating_sub(b) as f64 / s,
            _ => 0.0,
        };
        let rate = |name: &str| rate_of(cur.stats.get(name), prev.map(|p| p.stats.get(name)));
        let counter = |c: Counter| rate(c.name());
        let s = &cur.status;
        let mut lines = Vec::new();
        lines.push(format!(
            "flows: {} active (limit {})   new {}/s   established {}/s   port-allocation errors {}/s   idle timeouts {}/s",
            s.flows,
            s.max_flows,
            per_second(counter(Counter::ConnectionAttemptCount)),
            per_second(counter(Counter::ConnectionEstablishedCount)),
            per_second(counter(Counter::ErrorPortAllocation)),
            per_second(counter(Counter::IdleTimeoutCount)),
        ));
        lines.push(format!(
            "packets/s: from source {}   to destination {}   from destination {}   to source {}",
            per_second(counter(Counter::PacketsInFromSource)),
            per_second(counter(Counter::PacketsOutToDestination)),
            per_second(counter(Counter::PacketsInFromDestination)),
            per_second(counter(Counter::PacketsOutToSource)),
        ));
        lines.push(format!(
            "bytes/s:   from source {}/s   to destination {}/s   from destination {}/s   to source {}/s",
            bytes(counter(Counter::BytesInFromSource)),
            bytes(counter(Counter::BytesOutToDestination)),
            bytes(counter(Counter::BytesInFromDestination)),
            bytes(counter(Counter::BytesOutToSource)),
        ));
        // Drops per reason, the busiest first.
        let mut drops: Vec<(String, f64)> = cur
            .stats
            .counters
            .iter()
            .filter_map(|c| {
                let reason = c.name.strip_prefix("PacketsDropCount{reason=\"")?.strip_suffix("\"}")?;
                Some((reason.to_string(), rate(&c.name)))
            })
            .filter(|(_, r)| *r > 0.0)
            .collect();
        drops.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        lines.push(if drops.is_empty() {
            "drops/s:   none".to_string()
        } else {
            let shown: Vec<String> = drops.iter().take(6).map(|(r, v)| format!("{r} {}", per_second(*v))).collect();
            let more = if drops.len() > 6 { format!("   (+{} more)", drops.len() - 6) } else { String::new() };
            format!("drops/s:   {}{more}", shown.join("   "))
        });
        // Policy calls and errors per hook.
        let hooks: Vec<String> = cur
            .hooks
            .iter()
            .map(|h| {
                let before = prev.and_then(|p| p.hooks.iter().find(|b| b.hook == h.hook));
                format!(
                    "{} #{} {} calls/s, {} errors/s",
                    h.hook,
                    h.generation,
                    per_second(rate_of(h.calls, before.map(|b| b.calls))),
                    per_second(rate_of(h.errors, before.map(|b| b.errors)))
                )
            })
            .collect();
        lines.push(format!("policies:  {}", if hooks.is_empty() { "none loaded".into() } else { hooks.join("   ") }));
        lines.push(format!(
            "exporter:  flow records {}/s   otlp sent {}/s   queued {}   dropped {}   retries {}   lost to a full flow-log queue {}",
            per_second(counter(Counter::FlowLogRecords)),
            per_second(counter(Counter::OtlpRecordsSent)),
            cur.stats.counter(Counter::OtlpRecordsQueued),
            cur.stats.counter(Counter::OtlpRecordsDropped),
            cur.stats.counter(Counter::OtlpExportRetries),
            cur.stats.counter(Counter::FlowLogQueueOverflow),
        ));
        let ha = s.ha.as_ref().map(|h| match h.role {
            crate::ha::Role::Active => "   ha active",
            crate::ha::Role::Standby => "   ha standby",
        });
        let partial = (cur.top.answered < cur.top.workers)
            .then(|| format!("   talkers from {} of {} workers", cur.top.answered, cur.top.workers));
        let header = format!(
            "natgw top   pid {}   up {}   {} worker(s)   outside {} {}{}{}   (q quits)",
            s.pid,
            crate::report::duration_text(s.uptime_s),
            s.workers,
            s.outside.interface,
            s.outside.addresses.join(","),
            ha.unwrap_or(""),
            partial.unwrap_or_default()
        );
        let rows = |v: &[crate::admin::Talker]| {
            v.iter()
                .map(|t| [t.address.clone(), bytes(t.bytes_out as f64), bytes(t.bytes_in as f64), t.flows.to_string()])
                .collect()
        };
        Frame { header, lines, hosts: rows(&cur.top.by_host), destinations: rows(&cur.top.by_destination) }
    }
}

/// Runs the view until `q`, Esc or Ctrl-C. A gateway that does not answer shows as
/// disconnected, retried every second.
pub fn run(client: AdminClient) -> std::io::Result<()> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    let mut terminal = ratatui::init();
    let mut prev: Option<Sample> = None;
    let mut last_error: Option<(String, Instant)> = None;
    let result = (|| loop {
        let began = Instant::now();
        match Sample::read(&client) {
            Ok(sample) => {
                // A restarted gateway: its counters start again, so rates start again.
                let same = prev.as_ref().is_some_and(|p| p.status.pid == sample.status.pid);
                let frame = Frame::between(prev.as_ref().filter(|_| same), &sample);
                terminal.draw(|f| draw(f, &frame))?;
                prev = Some(sample);
                last_error = None;
            }
            Err(e) => {
                let since = last_error.as_ref().map_or(began, |(_, t)| *t);
                let text = format!(
                    "natgw top: disconnected from {} for {}s: {e}; retrying every second   (q quits)",
                    client.path(),
                    since.elapsed().as_secs()
                );
                terminal.draw(|f| {
                    f.render_widget(ratatui::widgets::Paragraph::new(text.clone()), f.area());
                })?;
                last_error = Some((e.to_string(), since));
                prev = None;
            }
        }
        let deadline = began + Duration::from_secs(1);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if event::poll(left)? {
                if let Event::Key(k) = event::read()? {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if k.kind == KeyEventKind::Press && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                    {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

fn draw(f: &mut ratatui::Frame, frame: &Frame) {
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Modifier, Style};
    use ratatui::widgets::{Paragraph, Table};
    let [head, body, tables] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::try_from(frame.lines.len()).unwrap_or(u16::MAX).saturating_add(1)),
        Constraint::Min(4),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(frame.header.clone()).style(Style::new().add_modifier(Modifier::REVERSED)), head);
    f.render_widget(Paragraph::new(frame.lines.join("\n")), body);
    let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(tables);
    fn table<'a>(title: &str, first: &'a str, rows: &[[String; 4]]) -> Table<'a> {
        use ratatui::layout::Constraint;
        use ratatui::style::{Modifier, Style};
        use ratatui::widgets::{Block, Borders, Row, Table};
        Table::new(
            rows.iter().map(|r| Row::new(r.clone())),
            [Constraint::Length(16), Constraint::Length(10), Constraint::Length(10), Constraint::Length(6)],
        )
        .header(Row::new([first, "out", "in", "flows"]).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::default().borders(Borders::ALL).title(title.to_string()))
    }
    f.render_widget(table(" top inside hosts (bytes of current flows) ", "host", &frame.hosts), left);
    f.render_widget(table(" top destinations ", "destination", &frame.destinations), right);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{CounterValue, LinkStatus};

    fn status(pid: u32) -> Status {
        let link = LinkStatus {
            interface: "out0".into(),
            addresses: vec!["198.51.100.10".into()],
            mtu: 1500,
            workers_mtu: vec![],
            packet_path: String::new(),
        };
        serde_json::from_value(serde_json::json!({
            "pid": pid, "uptime_s": 3725, "workers": 2, "inside": [], "outside": link, "gateway": "198.51.100.1",
            "flows": 12, "max_flows": 1000, "early_drops": 0, "neighbours": 1, "connections_attempted": 0,
            "connections_established": 0, "port_allocation_errors": 0, "idle_timeouts": 0,
            "packets_from_source": 0, "packets_to_destination": 0, "packets_from_destination": 0,
            "packets_to_source": 0, "packets_dropped": 0
        }))
        .expect("a status")
    }

    fn sample(at: Instant, counters: &[(&str, u64)]) -> Sample {
        Sample {
            at,
            status: status(7),
            stats: Stats {
                counters: counters.iter().map(|(n, v)| CounterValue { name: n.to_string(), value: *v }).collect(),
            },
            hooks: vec![],
            top: TopReport {
                by_host: vec![crate::admin::Talker {
                    address: "10.10.1.10".into(),
                    bytes_out: 1500,
                    bytes_in: 2_500_000,
                    flows: 3,
                }],
                ..TopReport::default()
            },
        }
    }

    #[test]
    fn rates_come_from_two_samples_and_drops_are_ranked() {
        let t0 = Instant::now();
        let a = sample(
            t0,
            &[
                ("ConnectionAttemptCount", 100),
                ("BytesOutToDestination", 1_000),
                ("PacketsDropCount{reason=\"table-full\"}", 5),
                ("PacketsDropCount{reason=\"policy-rejected\"}", 0),
            ],
        );
        let b = sample(
            t0 + Duration::from_secs(2),
            &[
                ("ConnectionAttemptCount", 300),
                ("BytesOutToDestination", 3_001_000),
                ("PacketsDropCount{reason=\"table-full\"}", 7),
                ("PacketsDropCount{reason=\"policy-rejected\"}", 40),
            ],
        );
        let f = Frame::between(Some(&a), &b);
        assert!(f.lines[0].contains("new 100/s"), "{:?}", f.lines);
        assert!(f.lines[2].contains("to destination 1.5 MB/s"), "{:?}", f.lines);
        assert!(f.lines[3].ends_with("policy-rejected 20   table-full 1"), "{:?}", f.lines);
        assert!(f.header.contains("pid 7") && f.header.contains("up 1h02m"), "{}", f.header);
        assert!(!f.header.contains("talkers from"), "{}", f.header);
        let mut partial = b.clone();
        (partial.top.workers, partial.top.answered) = (2, 1);
        let f = Frame::between(Some(&a), &partial);
        assert!(f.header.contains("talkers from 1 of 2 workers"), "{}", f.header);
        assert_eq!(f.hosts, [["10.10.1.10".to_string(), "1.5 KB".into(), "2.5 MB".into(), "3".into()]]);
        // The first sample has no rates; a counter that went back (a restart) reads 0.
        let first = Frame::between(None, &b);
        assert!(first.lines[0].contains("new 0/s") && first.lines[3] == "drops/s:   none", "{:?}", first.lines);
        let back = Frame::between(Some(&b), &a);
        assert!(back.lines[0].contains("new 0/s"), "{:?}", back.lines);
    }

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(per_second(0.0), "0");
        assert_eq!(per_second(9_999.0), "9999");
        assert_eq!(per_second(12_345.0), "12.3k");
        assert_eq!(per_second(4_500_000.0), "4.5M");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1_500.0), "1.5 KB");
        assert_eq!(bytes(3_200_000_000.0), "3.2 GB");
    }
}
