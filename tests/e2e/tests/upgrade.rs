//! `natgw upgrade`: a running gateway hands every flow, socket and lock to a new process
//! under load, and nothing a user relies on breaks; an upgrade that cannot happen leaves
//! the running gateway as it was.

use std::net::TcpStream;

use natgw_e2e::load::{echo_all, idle_connections, idle_flows, start_iperf3_server, start_tcp_echo, udp_stream};
use natgw_e2e::wait::secs;
use natgw_e2e::{eventually, natgw_bin, Topology};
use serde_json::Value;

type Record = serde_json::Map<String, Value>;

fn transfer_running(t: &Topology) -> bool {
    t.admin()
        .flows()
        .expect("flows")
        .iter()
        .any(|f| f.original.ends_with("203.0.113.80:5201") && f.state == "ESTABLISHED")
}

#[test]
fn an_upgrade_under_load_resets_nothing_and_loses_only_the_pause() {
    let mut t = Topology::demo();
    start_tcp_echo(&mut t, 8081);
    start_iperf3_server(&mut t);
    // Ten idle connections (an SSH session, a database pool), each echoed once.
    let mut idle: Vec<TcpStream> = idle_connections(&t.cli1, 8081, 10);
    assert_eq!(echo_all(&mut idle, b'a'), Vec::<String>::new());
    let ports: Vec<u16> = idle.iter().map(|s| s.local_addr().expect("local").port()).collect();
    let translated_of = |t: &Topology| {
        let flows = t.admin().flows().expect("flows");
        idle_flows(&flows, &ports, 8081)
            .into_iter()
            .map(|f| f.map(|f| (f.translated.clone(), f.state.clone())))
            .collect::<Vec<_>>()
    };
    let before = translated_of(&t);
    assert!(before.iter().all(Option::is_some), "every idle connection has a flow: {before:?}");

    let cli1 = t.cli1.clone();
    let iperf = std::thread::spawn(move || {
        cli1.cmd("iperf3").args(["-c", "203.0.113.80", "-p", "5201", "-t", "8", "-b", "300M", "-J"]).output()
    });
    eventually(secs(5), "the transfer to start", || transfer_running(&t));
    let udp = udp_stream(&t.cli2, 6);
    udp.wait_echoed(50);

    let old_pid = t.gateway().pid();
    let r = t.upgrade(&natgw_bin()).expect("natgw upgrade");
    eprintln!(
        "upgrade: pid {} -> {}: {} flows handed over ({} refused), forwarding paused {:.1} ms, successor ready after {} ms",
        r.old_pid,
        r.new_pid,
        r.flows,
        r.flows_refused,
        r.pause_us as f64 / 1000.0,
        r.prepare_ms
    );
    for l in t.log().lines().filter(|l| l.contains("took over") || l.contains("upgrade:")) {
        eprintln!("    {l}");
    }
    assert_eq!(r.old_pid as i32, old_pid);
    assert_ne!(r.new_pid, r.old_pid);
    assert_eq!(r.flows_refused, 0);
    assert!(r.flows >= 13, "10 idle connections, iperf3's two, the UDP stream: {} flows", r.flows);
    let status = t.admin().status().expect("the new process answers on the same admin socket");
    assert_eq!(status.pid, r.new_pid);
    // The interface locks came along: a second natgw on the same interfaces (with an
    // admin socket of its own) is refused, naming the successor as the holder.
    let mut second = t.demo_config();
    second.set("admin.socket", t.path("second.sock").display().to_string());
    let second_cfg = t.path("second.toml");
    second.write(&second_cfg);
    let out = t.gw.output(&natgw_bin().display().to_string(), &["run", "--config", &second_cfg.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a second natgw started beside the successor");
    assert!(
        text.contains("already running on interface") && text.contains(&format!("pid {}", r.new_pid)),
        "the lock did not pass to the successor: {text}"
    );

    // The transfer completes without a reset, the idle connections still echo from the
    // same external ports, the UDP stream loses at most the pause.
    let out = iperf.join().expect("iperf3 thread").expect("iperf3 runs");
    let j: Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON");
    assert!(j.get("error").is_none(), "iperf3: {}", j["error"]);
    assert!(out.status.success(), "iperf3 exited {:?}", out.status.code());
    let (sent, lost) = udp.join().expect("udp stream");
    eprintln!(
        "iperf3: {:.0} Mbit/s received, no reset; UDP echo lost {lost} of {sent} datagrams (100/s) across the upgrade",
        j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6
    );
    assert!(lost * 10 < sent, "the UDP stream lost {lost} of {sent}: more than a pause");
    assert_eq!(echo_all(&mut idle, b'b'), Vec::<String>::new(), "idle connections after the upgrade");
    assert_eq!(translated_of(&t), before, "same external address and port, same state");
    assert!(t.counter("HandoffFlowsImported") >= 13);
    assert_eq!(t.counter(r#"PacketsDropCount{reason="tcp-out-of-window"}"#), 0, "window state came along");

    // And back again (a second upgrade from the successor), then stop: every idle
    // connection has exactly one final record in the flow log, counting the packets of
    // all three processes (none lost, none reported twice).
    let back = t.upgrade(&natgw_bin()).expect("a second upgrade");
    assert_eq!(back.old_pid, r.new_pid);
    assert_eq!(echo_all(&mut idle, b'c'), Vec::<String>::new(), "idle connections after the second upgrade");
    t.stop();
    let records = t.flow_log();
    for p in &ports {
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| r.get("source.port").and_then(Value::as_u64) == Some(u64::from(*p)))
            .filter(|r| r.get("network.transport").and_then(Value::as_str) == Some("tcp"))
            .collect();
        let finals: Vec<&&Record> =
            mine.iter().filter(|r| r.get("natgw.flow.end_reason").and_then(Value::as_str) != Some("active")).collect();
        assert_eq!(finals.len(), 1, "port {p}: want one final record: {mine:?}");
        // Handshake and three echoes: at least 3 data segments and their ACKs out.
        let out: u64 = mine.iter().filter_map(|r| r.get("natgw.flow.packets.out").and_then(Value::as_u64)).sum();
        assert!(out >= 5, "port {p}: {out} packets out over its records: {mine:?}");
    }
    drop(idle);
}

#[test]
fn an_upgrade_that_cannot_happen_leaves_the_gateway_forwarding() {
    let mut t = Topology::demo();
    let pid = t.gateway().pid();
    // Not a natgw at all: it exits before it is ready.
    let e = t.admin().upgrade("/bin/false".into()).unwrap_err().to_string();
    assert!(e.contains("exited before it was ready"), "{e}");
    // A config whose flows could not move (another worker count): refused, naming the key.
    let workers = t.admin().status().expect("status").workers;
    let mut cfg = t.demo_config();
    cfg.set("dataplane.workers", if workers == 1 { 2i64 } else { 1i64 });
    let path = t.gateway().config.clone();
    cfg.write(&path);
    let e = t.admin().upgrade(natgw_bin()).unwrap_err().to_string();
    assert!(e.contains("dataplane.workers"), "{e}");
    // A relative path is refused before anything starts.
    assert!(t.admin().upgrade("natgw".into()).unwrap_err().to_string().contains("absolute"));
    assert_eq!(t.gateway().pid(), pid);
    assert!(t.gateway().running());
    t.cli1.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl through the gateway that stayed");
    assert_eq!(t.admin().status().expect("status").pid as i32, pid);
}
