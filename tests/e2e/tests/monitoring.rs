//! Alarms and dashboards (`examples/monitoring/`): the seed's CloudWatch alarms as
//! Prometheus rules checked by the real promtool, a real Prometheus scraping the demo
//! gateway and evaluating those rules, and every query of the rules and the Grafana
//! dashboard naming a metric the gateway really exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, Topology};
use serde_json::Value;

fn monitoring() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/monitoring")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("promtool (setup.sh installs prometheus)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// The `natgw_…` metric names in a PromQL expression (`_total` kept: it is the name).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("natgw_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL expression of the alert rules and of the dashboard's panels.
fn expressions() -> Vec<(String, String)> {
    let rules = std::fs::read_to_string(monitoring().join("natgw-alerts.yml")).expect("natgw-alerts.yml");
    let mut exprs: Vec<(String, String)> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(|e| ("natgw-alerts.yml".to_string(), e.to_string()))
        .collect();
    assert!(exprs.len() >= 10, "the rules have {} expressions", exprs.len());
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring().join("grafana-natgw.json")).expect("dashboard"))
            .expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            exprs.push((format!("panel {}", p["title"]), t["expr"].as_str().expect("expr").to_string()));
        }
    }
    exprs
}

#[test]
fn alert_rules_pass_promtool_and_fire_exactly_on_their_series() {
    promtool(&["check", "config", "prometheus.yml"]);
    let out = promtool(&["test", "rules", "natgw-alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // The seed's alarms are all there, with its thresholds.
    let rules = std::fs::read_to_string(monitoring().join("natgw-alerts.yml")).expect("rules");
    for (alert, expr) in [
        ("NATGatewayError", "increase(natgw_ErrorPortAllocation_total[5m]) > 1"),
        ("HighErrorRate", "increase(natgw_ErrorPortAllocation_total[5m]) > 5"),
        ("HighConnectionCount", "avg_over_time(natgw_ActiveConnectionCount[5m]) > 1000"),
        ("HighOutboundBytes", "increase(natgw_BytesOutToDestination_total[1d]) > 1e9"),
    ] {
        let at = rules.find(&format!("alert: {alert}\n")).unwrap_or_else(|| panic!("no alert {alert}"));
        assert!(rules[at..].lines().nth(1).is_some_and(|l| l.trim() == format!("expr: {expr}")), "{alert}: {expr}");
    }
}

#[test]
fn prometheus_scrapes_the_demo_gateway_and_every_query_names_an_exported_metric() {
    let mut t = Topology::demo();
    for _ in 0..3 {
        t.cli1.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl");
    }
    // A real Prometheus in the gateway's namespace (the metrics endpoint is on its
    // loopback), with the shipped scrape job and rules, evaluating every second.
    let config = std::fs::read_to_string(monitoring().join("prometheus.yml"))
        .expect("prometheus.yml")
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("- natgw-alerts.yml", &format!("- {}", monitoring().join("natgw-alerts.yml").display()));
    let path = t.path("prometheus.yml");
    std::fs::write(&path, config).expect("write prometheus.yml");
    let mut cmd = t.gw.cmd("prometheus");
    cmd.arg(format!("--config.file={}", path.display()))
        .arg(format!("--storage.tsdb.path={}", t.path("prometheus-data").display()))
        .arg("--web.listen-address=127.0.0.1:9090");
    t.daemon("prometheus", cmd);
    let query = |q: &str| -> Option<Value> {
        let url = format!(
            "http://127.0.0.1:9090/api/v1/query?query={}",
            q.replace('{', "%7B").replace('}', "%7D").replace('"', "%22")
        );
        let body = t.gw.run("curl", &["-s", "-m", "2", &url]).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "success").then(|| v["data"]["result"].clone())
    };
    let value = |q: &str| -> f64 {
        query(q)
            .and_then(|r| r.get(0).and_then(|s| s["value"][1].as_str().and_then(|v| v.parse().ok())))
            .unwrap_or(-1.0)
    };
    eventually(secs(30), "Prometheus scraping natgw (up == 1)", || value(r#"up{job="natgw"}"#) == 1.0);
    eventually(secs(10), "the three connections in Prometheus", || {
        value("natgw_ConnectionEstablishedCount_total") >= 3.0
    });
    // Drop reasons arrive as a label.
    let reasons = query("natgw_PacketsDropCount_total").and_then(|r| r.as_array().cloned()).unwrap_or_default();
    assert!(reasons.iter().any(|s| s["metric"]["reason"] == "policy-rejected"), "{reasons:?}");
    // The rules are loaded and evaluate without error; nothing fires on a quiet demo.
    let log = |t: &Topology| t.daemon_log("prometheus").unwrap_or_default();
    let rules: Value = serde_json::from_str(
        &t.gw.run("curl", &["-s", "-m", "2", "http://127.0.0.1:9090/api/v1/rules"]).expect("rules API"),
    )
    .expect("rules JSON");
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 10, "rules loaded: {rules}\n{}", log(&t));
    eventually(secs(10), "every rule evaluated", || {
        let r: Value =
            t.gw.run("curl", &["-s", "-m", "2", "http://127.0.0.1:9090/api/v1/rules"])
                .ok()
                .and_then(|b| serde_json::from_str(&b).ok())
                .unwrap_or(Value::Null);
        let all: Vec<Value> = r["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        all.len() == 10 && all.iter().all(|r| r["health"] == "ok")
    });
    let firing = query("ALERTS").and_then(|r| r.as_array().cloned()).unwrap_or_default();
    assert!(firing.is_empty(), "alerts on a quiet demo gateway: {firing:?}");
    // Every metric a rule or a panel names is one natgw exports.
    let exported: BTreeSet<String> =
        t.gw.run("curl", &["-s", "-m", "3", "http://127.0.0.1:9108/metrics"])
            .expect("/metrics")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
            .collect();
    assert!(exported.len() > 40, "{exported:?}");
    let mut named = 0;
    for (source, expr) in expressions() {
        for m in metric_names(&expr) {
            assert!(exported.contains(&m), "{source}: {m} is not exported by natgw ({expr})");
            named += 1;
        }
    }
    assert!(named >= 30, "only {named} metric names in the rules and panels");
    // The check catches a query with a name natgw does not export (the seed's spelling).
    let wrong = metric_names(r#"sum(rate(natgw_PacketDropCount_total{reason="x"}[5m]))"#);
    assert_eq!(wrong, ["natgw_PacketDropCount_total"]);
    assert!(!exported.contains(&wrong[0]));
}

/// The flow-log queries (`examples/flow-log-queries/`, DuckDB from PyPI) over the demo's
/// own flow log: the rows the traffic of this test makes, exactly.
#[test]
fn flow_log_queries_answer_from_the_demo_flow_log() {
    let mut t = Topology::demo();
    let curl = |ns: &natgw_e2e::Netns, port: u16, url: &str| {
        ns.run("curl", &["-s", "-m", "3", "--local-port", &port.to_string(), url])
    };
    for port in [47001, 47002, 47003] {
        curl(&t.cli1, port, "http://203.0.113.80/ip").expect("curl");
    }
    for port in [47011, 47012] {
        assert!(curl(&t.cli1, port, "http://203.0.113.80:8080/").is_err(), "8080 is refused");
    }
    for port in [47021, 47022] {
        curl(&t.cli2, port, "http://203.0.113.80/ip").expect("curl");
    }
    // Stopping ends every flow: their last records are written before natgw exits.
    t.stop();
    let log = t.path("flows.jsonl").display().to_string();
    let query = |sql: &str| -> Vec<serde_json::Map<String, Value>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/flow-log-queries");
        let out = Command::new("/var/cache/natgw/tools/duckdb-1.4.2/bin/python")
            .arg(dir.join("query.py"))
            .arg(&log)
            .arg(dir.join(sql))
            .arg("--json")
            .output()
            .expect("DuckDB's Python (setup.sh installs it)");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        let rows: Value = serde_json::from_slice(&out.stdout).expect("JSON rows");
        rows.as_array().expect("rows").iter().map(|r| r.as_object().cloned().expect("a row")).collect()
    };
    let text = |r: &serde_json::Map<String, Value>, k: &str| match &r[k] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let num = |r: &serde_json::Map<String, Value>, k: &str| r[k].as_i64().unwrap_or(-1);

    // The seed's query: each connection of this test is its own row, counted once.
    let top = query("top-talkers.sql");
    assert!(top.len() <= 10, "{top:?}");
    let ours: Vec<(String, String, i64, String)> = top
        .iter()
        .filter(|r| (47001..=47022).contains(&num(r, "sourceport")))
        .map(|r| (text(r, "sourceaddress"), text(r, "destinationport"), num(r, "sourceport"), text(r, "action")))
        .collect();
    let expected: Vec<(String, String, i64, String)> = [
        ("10.10.1.0", "80", 47001, "ACCEPT"),
        ("10.10.1.0", "80", 47002, "ACCEPT"),
        ("10.10.1.0", "80", 47003, "ACCEPT"),
        ("10.10.1.0", "8080", 47011, "REJECT"),
        ("10.10.1.0", "8080", 47012, "REJECT"),
        ("10.10.2.0", "80", 47021, "ACCEPT"),
        ("10.10.2.0", "80", 47022, "ACCEPT"),
    ]
    .iter()
    .map(|(a, d, s, x)| (a.to_string(), d.to_string(), *s, x.to_string()))
    .collect();
    assert_eq!(ours, expected, "{top:?}");
    assert!(top.iter().all(|r| num(r, "connection_count") == 1), "{top:?}");

    // Rejected flows by inside host: cli1's two tries at 8080, nobody else.
    let rejected = query("rejected-by-host.sql");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let r = &rejected[0];
    assert_eq!(
        (text(r, "inside_host"), num(r, "rejected_flows"), num(r, "destinations"), text(r, "ports")),
        ("10.10.1.0".to_string(), 2, 1, "8080".to_string()),
        "{r:?}"
    );

    // Bytes per external address: each subnet's pool, its flows, and the bytes its
    // records carry (summed here from the same file, record by record).
    let bytes = query("bytes-by-external-address.sql");
    let records = t.flow_log();
    for (addr, pool, flows) in [("198.51.100.10", "pool-a", 3), ("198.51.100.11", "pool-b", 2)] {
        let row =
            bytes.iter().find(|r| text(r, "external_address") == addr).unwrap_or_else(|| panic!("{addr}: {bytes:?}"));
        let sum = |k: &str| -> i64 {
            records
                .iter()
                .filter(|r| r.get("natgw.nat.source.address").and_then(Value::as_str) == Some(addr))
                .filter(|r| r.get("natgw.flow.action").and_then(Value::as_str) == Some("ACCEPT"))
                .map(|r| r.get(k).and_then(Value::as_i64).unwrap_or(0))
                .sum()
        };
        assert_eq!(text(row, "pool"), pool, "{row:?}");
        assert_eq!(num(row, "flows"), flows, "{row:?}");
        assert!(num(row, "bytes_out") > 0 && num(row, "bytes_in") > 0, "{row:?}");
        assert_eq!(
            (num(row, "bytes_out"), num(row, "bytes_in")),
            (sum("natgw.flow.bytes.out"), sum("natgw.flow.bytes.in")),
            "{row:?}"
        );
    }
}
