//! Flow records and metrics: the flow-log file, OTLP to a real OpenTelemetry Collector
//! over gRPC and HTTP, `flows --follow`, Prometheus, and collectors that are down, full,
//! speak TLS to plaintext or answer garbage.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use natgw::admin::Hook;
use natgw_e2e::net::udp_exchange;
use natgw_e2e::topology::wait_counter;
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, Capture, Topology};
use serde_json::{Map, Value};

type Record = Map<String, Value>;

fn int(r: &Record, k: &str) -> i64 {
    r.get(k).and_then(Value::as_i64).unwrap_or(-1)
}
fn string<'a>(r: &'a Record, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

/// curl from a fixed local port, so a test can find its own flow's record.
fn curl(ns: &natgw_e2e::Netns, port: u16, url: &str) -> Result<String, String> {
    ns.run("curl", &["-s", "-m", "3", "--local-port", &port.to_string(), url])
}

/// Lines of the flow-log file, parsed.
#[test]
fn flow_log_records_finished_flows() {
    let mut t = Topology::demo();
    // Fixed source ports pick this test's own flows out.
    curl(&t.cli1, 46201, "http://203.0.113.80/ip").expect("curl");
    t.cli2.enter(|| udp_exchange(46202, "203.0.113.7:7", b"hi", secs(2))).expect("udp");
    // A closed connection is recorded once it has been quiet for a second.
    eventually(secs(10), "the curl's record in the flow log", || {
        t.flow_log().iter().any(|r| string(r, "network.transport") == "tcp" && int(r, "source.port") == 46201)
    });
    // Stopping ends every other flow; the flow-log thread writes them before natgw exits.
    t.stop();
    let recs = t.flow_log();
    assert!(!recs.is_empty(), "no records");
    let tcp: Vec<&Record> =
        recs.iter().filter(|r| string(r, "network.transport") == "tcp" && int(r, "source.port") == 46201).collect();
    let udp: Vec<&Record> =
        recs.iter().filter(|r| string(r, "network.transport") == "udp" && int(r, "source.port") == 46202).collect();
    assert!(tcp.len() == 1 && udp.len() == 1, "want one record each for the curl and the UDP flow: {tcp:?} {udp:?}");
    for r in &recs {
        assert!(string(r, "source.address").ends_with(".0"), "inside address not redacted: {r:?}");
        assert_eq!(string(r, "gateway"), "natgw-demo", "{r:?}");
        assert!(!r.contains_key("natgw.flow.tcp_flags"), "a dropped field is present: {r:?}");
        assert!(int(r, "natgw.flow.end") >= int(r, "natgw.flow.start"), "{r:?}");
        assert!(int(r, "natgw.flow.start") >= int(r, "natgw.flow.created"), "{r:?}");
        // Counts are per window: only a flow's first window must have seen a packet. A later
        // window may be empty (an idle flow's last record, written to say why and when it ended).
        if int(r, "natgw.flow.start") == int(r, "natgw.flow.created") {
            assert!(int(r, "natgw.flow.packets") >= 1, "a first window without packets: {r:?}");
        }
    }
    let c = tcp[0];
    assert!(int(c, "natgw.flow.packets") >= 6 && int(c, "natgw.flow.bytes.in") > 0, "curl's packets and bytes: {c:?}");
    assert_eq!(
        (string(c, "natgw.nat.source.address"), string(c, "natgw.nat.pool")),
        ("198.51.100.10", "pool-a"),
        "{c:?}"
    );
    assert_eq!((string(c, "network.interface.name"), string(c, "natgw.flow.action")), ("in1", "ACCEPT"), "{c:?}");
    assert_eq!(string(c, "natgw.flow.end_reason"), "closed", "curl closes its connection: {c:?}");
    let u = udp[0];
    assert_eq!(
        (string(u, "natgw.nat.source.address"), string(u, "natgw.nat.pool")),
        ("198.51.100.11", "pool-b"),
        "{u:?}"
    );
    assert_eq!(string(u, "natgw.flow.end_reason"), "shutdown", "{u:?}");
    assert_eq!(
        (int(u, "natgw.flow.packets.out"), int(u, "natgw.flow.packets.in")),
        (1, 1),
        "one datagram and its echo: {u:?}"
    );
    eprintln!(
        "{} records; e.g. {}",
        recs.len(),
        serde_json::to_string(c).unwrap_or_default().chars().take(240).collect::<String>()
    );
}

/// Packets and IP bytes each way on the client's interface: (out, bytes out, in, bytes in).
fn by_direction(packets: &[String], client: &str) -> (i64, i64, i64, i64) {
    let (mut po, mut bo, mut pi, mut bi) = (0, 0, 0, 0);
    for p in packets {
        // "... length N) SRC > DST: ..." (tcpdump -v)
        let Some((_, after)) = p.split_once(", length ") else { continue };
        let Some((n, rest)) = after.split_once(')') else { continue };
        let Ok(n) = n.trim().parse::<i64>() else { continue };
        let src = rest.split_whitespace().next().unwrap_or("");
        if src.starts_with(client) {
            po += 1;
            bo += n;
        } else {
            pi += 1;
            bi += n;
        }
    }
    (po, bo, pi, bi)
}

#[test]
fn otlp_grpc_record_matches_the_connection() {
    let t = Topology::demo();
    // Without a flow-log policy everything is exported as the gateway saw it.
    t.admin().policy_remove(Hook::FlowLog).expect("policy remove");
    let cap = Capture::start(&t.cli1, "c1", "tcp port 45123", &t.path("cap.pcap"));
    let seen = curl(&t.cli1, 45123, "http://203.0.113.80/ip").expect("curl");
    let ext_port: i64 = seen.trim().rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("the server saw a port");
    let collector = t.collector.as_ref().expect("collector");
    // The record goes out once the connection has been quiet for a second: every packet of
    // it has passed the client's interface by then.
    collector
        .wait_for_record(secs(15), "a record for the curl", |recs| recs.iter().any(|r| int(r, "source.port") == 45123));
    let (pout, bout, pin, bin) = by_direction(&cap.stop_verbose(), "10.10.1.10.");
    eprintln!("curl seen as {}; capture: out {pout} pkts/{bout} B, in {pin} pkts/{bin} B", seen.trim());
    assert!(pout > 0, "the capture saw nothing");
    let recs = collector.flow_records();
    let r = recs.iter().find(|r| int(r, "source.port") == 45123).expect("the record");
    let want: &[(&str, Value)] = &[
        ("source.address", "10.10.1.10".into()),
        ("destination.address", "203.0.113.80".into()),
        ("destination.port", 80.into()),
        ("natgw.nat.source.address", "198.51.100.10".into()),
        ("natgw.nat.source.port", ext_port.into()),
        ("network.transport", "tcp".into()),
        ("natgw.flow.action", "ACCEPT".into()),
        ("natgw.flow.end_reason", "closed".into()),
        ("natgw.flow.packets.out", pout.into()),
        ("natgw.flow.bytes.out", bout.into()),
        ("natgw.flow.packets.in", pin.into()),
        ("natgw.flow.bytes.in", bin.into()),
        ("natgw.policy.verdict", "allow".into()),
        ("_event", "natgw.flow".into()),
    ];
    for (k, v) in want {
        assert_eq!(r.get(*k), Some(v), "{k} of the curl's record: {r:?}");
    }
    assert!(int(r, "natgw.policy.generation") >= 1, "{r:?}");
    assert_eq!(r["_resource"]["service.name"], "natgw", "{r:?}");
    assert_eq!(r["_resource"]["service.instance.id"], "natgw-demo", "{r:?}");
    assert_eq!(t.counter("OtlpRecordsDropped"), 0, "drops");
    assert!(t.counter("FlowLogRecords") >= 1 && t.counter("OtlpRecordsSent") >= 1, "FlowLogRecords/OtlpRecordsSent");
    // The counters reached the collector as OTLP metrics, and Prometheus serves them.
    wait_counter(&t, "OtlpMetricExports", 1, secs(12));
    assert_eq!(t.counter("OtlpMetricExportErrors"), 0, "metric export errors");
    eventually(secs(5), "OTLP metrics at the collector", || {
        collector.metrics_text().contains(r#""name":"PacketsDropCount""#)
    });
    let prom = t.gw.run("curl", &["-s", "-m", "3", "http://127.0.0.1:9108/metrics"]).expect("the Prometheus endpoint");
    let sent: u64 = prom
        .lines()
        .find_map(|l| l.strip_prefix("natgw_OtlpRecordsSent_total ").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0);
    assert!(sent >= 1, "prometheus: OtlpRecordsSent {sent}");
    assert!(
        prom.lines().any(|l| l.starts_with(r#"natgw_PacketsDropCount_total{reason="policy-rejected"} "#)),
        "prometheus: no drop reasons"
    );
    assert!(
        t.inet.run("curl", &["-s", "-m", "2", "http://198.51.100.10:9108/metrics"]).is_err(),
        "the metrics endpoint answers from outside"
    );
}

/// Log rotation: the file is moved away, SIGHUP (logrotate's postrotate), and the next
/// records go to a new file at the configured path, none lost or written to the old one.
#[test]
fn sighup_reopens_the_flow_log_for_rotation() {
    let mut t = Topology::demo();
    let has = |t: &Topology, name: &str, port: i64| t.flow_log_at(name).iter().any(|r| int(r, "source.port") == port);
    curl(&t.cli1, 46211, "http://203.0.113.80/ip").expect("curl");
    eventually(secs(10), "the first curl's record", || has(&t, "flows.jsonl", 46211));
    std::fs::rename(t.path("flows.jsonl"), t.path("flows.jsonl.1")).expect("rotate");
    t.gateway().daemon.signal(libc::SIGHUP);
    eventually(secs(10), "the flow log reopened", || t.log().contains("flow log reopened"));
    curl(&t.cli1, 46212, "http://203.0.113.80/ip").expect("curl");
    eventually(secs(10), "the second curl's record in the new file", || has(&t, "flows.jsonl", 46212));
    assert!(!has(&t, "flows.jsonl.1", 46212), "a record went to the rotated file");
    assert!(!has(&t, "flows.jsonl", 46211), "the first record was written twice");
    assert!(has(&t, "flows.jsonl.1", 46211), "the rotated file lost its record");
}

#[test]
fn otlp_http_reject_record_and_follow() {
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("otlp.endpoint", "http://127.0.0.1:4318")
        .set("otlp.protocol", "http/protobuf")
        .set("otlp.compression", "none");
    t.start(&cfg);
    let followed = Arc::new(Mutex::new(Vec::<Value>::new()));
    let lines = t.admin().follow_flows().expect("flows --follow");
    let f2 = followed.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                f2.lock().expect("lock").push(v);
            }
        }
    });
    assert!(curl(&t.cli2, 45200, "http://203.0.113.80:8080/").is_err(), "8080 is not allowed");
    curl(&t.cli2, 45201, "http://203.0.113.80/ip").expect("curl");
    let collector = t.collector.as_ref().expect("collector");
    collector.wait_for_record(secs(15), "a REJECT record over HTTP", |recs| {
        recs.iter().any(|r| {
            int(r, "source.port") == 45200
                && string(r, "natgw.flow.action") == "REJECT"
                && string(r, "natgw.flow.end_reason") == "refused"
                && string(r, "natgw.policy.verdict") == "reject"
                && !r.contains_key("natgw.nat.source.address")
        })
    });
    collector.wait_for_record(secs(15), "an ACCEPT record over HTTP", |recs| {
        recs.iter().any(|r| {
            int(r, "source.port") == 45201
                && string(r, "natgw.flow.action") == "ACCEPT"
                && string(r, "natgw.nat.source.address") == "198.51.100.11"
                && string(r, "natgw.nat.pool") == "pool-b"
        })
    });
    // flows --follow saw the same records, as they were emitted.
    let has = |port: i64, action: &str| {
        followed.lock().expect("lock").iter().any(|r| r["source.port"] == port && r["natgw.flow.action"] == action)
    };
    eventually(secs(5), "flows --follow to see both records", || has(45200, "REJECT") && has(45201, "ACCEPT"));
    assert!(
        t.log().contains("otlp: exporting flow records and metrics to http://127.0.0.1:4318 over HTTP/protobuf"),
        "the log does not say where records go"
    );
}

#[test]
fn collector_outage_records_arrive_after_it_returns() {
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("otlp.retry_max_ms", 2000);
    t.start(&cfg);
    t.collector.as_mut().expect("collector").stop();
    let down = Instant::now();
    for i in 1..=20u16 {
        curl(&t.cli1, 46000 + i, "http://203.0.113.80/ip")
            .unwrap_or_else(|e| panic!("curl {i} while the collector is down: {e}"));
    }
    // A 30-second outage: the gateway keeps forwarding; the exporter keeps failing,
    // retrying and holding the records.
    std::thread::sleep(secs(30).saturating_sub(down.elapsed()));
    t.cli1
        .run("curl", &["-s", "-m", "3", "-o", "/dev/null", "http://203.0.113.80/ip"])
        .expect("forwarding during the outage");
    let (retries, queued) = (t.counter("OtlpExportRetries"), t.counter("OtlpRecordsQueued"));
    eprintln!("after 30 s down: retries {retries}, queued {queued}");
    assert!(retries >= 3, "retries {retries}");
    assert!(queued >= 20, "queued {queued}: the outage's records are not held");
    assert!(t.log().contains("otlp: log export to http://127.0.0.1:4317 failed"), "no log line for the failure");
    t.collector.as_mut().expect("collector").restart();
    let want: HashSet<i64> = (46001..=46020).collect();
    t.collector.as_ref().expect("collector").wait_for_record(secs(20), "every record of the outage", |recs| {
        let got: HashSet<i64> = recs.iter().map(|r| int(r, "source.port")).collect();
        want.is_subset(&got)
    });
    assert_eq!(t.counter("OtlpRecordsDropped"), 0, "records dropped within the buffer");
    eventually(secs(5), "the log to say the collector is back", || t.log().contains("accepts exports again"));
}

#[test]
fn past_the_buffer_drops_are_counted() {
    let mut t = Topology::network();
    let mut cfg = t.demo_config();
    cfg.set("otlp.buffer_records", 5).set("otlp.batch", 1);
    t.start(&cfg);
    t.collector.as_mut().expect("collector").stop();
    for i in 1..=12u16 {
        assert!(curl(&t.cli1, 47000 + i, "http://203.0.113.80:8080/").is_err(), "8080 allowed");
    }
    // FlowLogExported counts a batch once every sink (the OTLP queue among them) has it.
    wait_counter(&t, "FlowLogExported", 12, secs(10));
    let dropped = t.counter("OtlpRecordsDropped");
    t.collector.as_mut().expect("collector").restart();
    t.collector.as_ref().expect("collector").wait_for_record(
        secs(20),
        "arrived + dropped to be the 12 records",
        |recs| {
            let got: HashSet<i64> =
                recs.iter().map(|r| int(r, "source.port")).filter(|p| (47001..=47012).contains(p)).collect();
            got.len() as u64 + dropped == 12
        },
    );
    eprintln!("12 records, buffer 5 + 1 in flight: {dropped} dropped and counted, {} delivered", 12 - dropped);
    assert!(dropped >= 6, "dropped {dropped}");
}

#[test]
fn bad_collectors_are_logged_counted_and_forwarding_goes_on() {
    let mut t = Topology::network();
    // TLS to a plaintext collector.
    let mut cfg = t.demo_config();
    cfg.set("otlp.endpoint", "https://127.0.0.1:4317").set("otlp.retry_max_ms", 500);
    t.start(&cfg);
    t.cli1
        .run("curl", &["-s", "-m", "3", "-o", "/dev/null", "http://203.0.113.80/ip"])
        .expect("forwarding with a TLS failure");
    wait_counter(&t, "OtlpExportRetries", 2, secs(10));
    assert!(t.log().contains("otlp: log export to https://127.0.0.1:4317 failed"), "no log line for the TLS failure");
    // A "collector" that answers garbage.
    let mut cmd = t.gw.cmd("socat");
    cmd.args(["TCP-LISTEN:4319,reuseaddr,fork", "SYSTEM:echo garbage; sleep 0.2"]);
    t.daemon("garbage-collector", cmd);
    let mut cfg = t.demo_config();
    cfg.set("otlp.endpoint", "http://127.0.0.1:4319")
        .set("otlp.protocol", "http/protobuf")
        .set("otlp.retry_max_ms", 500);
    t.restart(&cfg);
    t.cli1
        .run("curl", &["-s", "-m", "3", "-o", "/dev/null", "http://203.0.113.80/ip"])
        .expect("forwarding with a garbage collector");
    wait_counter(&t, "OtlpExportRetries", 2, secs(10));
    let line = "otlp: log export to http://127.0.0.1:4319/v1/logs failed";
    eprintln!("{}", t.log().lines().find(|l| l.contains(line)).unwrap_or(""));
    assert!(t.log().contains(line), "no log line for garbage");
    // A wrong endpoint in the config is refused at start, naming the key and the value.
    let mut bad = t.demo_config();
    bad.set("otlp.endpoint", "collector:4317");
    let path = bad.write(&t.path("bad-otlp.toml"));
    let out =
        t.gw.output(&natgw_e2e::natgw_bin().display().to_string(), &["run", "--config", &path.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started with a bad endpoint");
    assert!(text.contains("otlp.endpoint") && text.contains("collector:4317"), "unclear error: {text}");
}
