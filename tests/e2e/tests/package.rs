//! The Debian package (`scripts/build-deb.sh`): built, installed with dpkg on this
//! machine, its unit verified by systemd, the installed binary and policies run as the
//! demo's gateway, then purged with nothing of it left.

use std::path::{Path, PathBuf};
use std::process::Command;

use natgw_e2e::{root, Topology};

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[track_caller]
fn ok(program: &str, args: &[&str]) -> String {
    let (success, text) = run(program, args);
    assert!(success, "{program} {args:?}: {text}");
    text
}

/// Purges the package when the test ends, passing or not: the machine is left as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "natgw"]);
    }
}

/// Paths the package holds (files and directories, as `dpkg-deb --contents` lists them).
fn contents(deb: &str) -> Vec<String> {
    ok("dpkg-deb", &["--contents", deb])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn the_package_installs_runs_the_demo_and_purges_clean() {
    let (installed_before, _) = run("dpkg", &["-s", "natgw"]);
    assert!(!installed_before, "a natgw package is installed on this machine already: this test would remove it");
    let deb = ok(&root().join("scripts/build-deb.sh").display().to_string(), &[]).trim().to_string();
    let deb = root().join(deb).display().to_string();
    let paths = contents(&deb);
    for p in [
        "/usr/sbin/natgw",
        "/etc/natgw/natgw.toml",
        "/etc/logrotate.d/natgw",
        "/lib/systemd/system/natgw.service",
        "/lib/systemd/system/natgw-ha-watch.service",
        "/usr/lib/natgw/policies/egress_allowlist.wasm",
        "/usr/lib/natgw/policies/subnet_port_pools.wasm",
        "/usr/lib/natgw/policies/flow_log_filter.wasm",
        "/usr/share/doc/natgw/examples/policies/egress-allowlist.toml",
        "/usr/share/doc/natgw/examples/monitoring/natgw-alerts.yml",
        "/usr/share/man/man1/natgw.1.gz",
        "/usr/share/man/man1/natgw-flows.1.gz",
        "/usr/share/bash-completion/completions/natgw",
        "/usr/share/zsh/vendor-completions/_natgw",
        "/var/cache/natgw",
        "/var/log/natgw",
    ] {
        assert!(paths.iter().any(|x| x == p), "the package lacks {p}: {paths:?}");
    }
    let _purge = Installed;
    ok("dpkg", &["-i", &deb]);
    let status = ok("dpkg", &["-s", "natgw"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("/etc/natgw/natgw.toml") && status.contains("/etc/logrotate.d/natgw"),
        "conffiles: {status}"
    );
    // Installed, not started: nothing enabled it.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/natgw.service").exists());
    // systemd reads the unit without a complaint; the shipped config parses.
    let (verified, text) = run("systemd-analyze", &["verify", "/lib/systemd/system/natgw.service"]);
    assert!(verified && !text.contains("natgw.service:"), "systemd-analyze verify: {text}");
    ok("/usr/sbin/natgw", &["check-config", "/etc/natgw/natgw.toml"]);
    ok("/usr/sbin/natgw", &["--version"]);
    // The man page and the completions are the binary's own.
    let man = ok("man", &["-P", "cat", "-l", "/usr/share/man/man1/natgw-flows.1.gz"]);
    assert!(man.contains("--src") && man.contains("--pool"), "{man}");
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/natgw").expect("completion");
    assert!(bash.contains("_natgw()") && bash.contains("--state"), "bash completion");

    let mut t = Topology::network();
    // The shipped config on a box without its interfaces: the start fails naming the key
    // and the value (what the journal and `systemctl status` show under systemd).
    let bare = t.add_namespace("bare");
    let out = bare.output("/usr/sbin/natgw", &["run", "--config", "/etc/natgw/natgw.toml"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && said.contains("eth1") && said.contains("inside"), "{said}");
    // The same under systemd, with the installed unit: the service fails (after
    // Restart=on-failure's tries), `systemctl status` says so, and its log names the key.
    let installed_unit = std::fs::read_to_string("/lib/systemd/system/natgw.service").expect("installed unit");
    let shipped = std::fs::read_to_string(root().join("examples/systemd/natgw.service")).expect("shipped unit");
    assert_eq!(installed_unit, shipped, "the package installs the shipped unit");
    let log = t.path("natgw-service.log");
    let unit = natgw_e2e::systemd::natgw_unit(
        &bare.name,
        Path::new("/usr/sbin/natgw"),
        Path::new("/etc/natgw/natgw.toml"),
        &log,
    );
    let dir = t.path("systemd");
    std::fs::create_dir_all(&dir).expect("dir");
    let m = natgw_e2e::systemd::Manager::boot(&dir, &[("natgw.service", unit)]);
    assert!(!m.systemctl(&["start", "natgw.service"]).status.success(), "started without its interfaces");
    natgw_e2e::eventually(natgw_e2e::wait::secs(20), "the service to fail for good", || {
        m.show("natgw.service", "ActiveState") == "failed"
    });
    let status = m.systemctl(&["status", "--no-pager", "natgw.service"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("failed") && status.contains("status=1"), "systemctl status: {status}");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.contains("eth1") && said.contains("inside"), "the service's log: {said}");
    drop(m);

    // The installed binary with the installed policies and their shipped example configs
    // as the demo's gateway.
    let examples = Path::new("/usr/share/doc/natgw/examples/policies");
    let mut cfg = t.demo_config();
    for (hook, wasm, config) in [
        ("egress", "egress_allowlist", "egress-allowlist.toml"),
        ("port_pool", "subnet_port_pools", "subnet-port-pools.toml"),
        ("flow_log", "flow_log_filter", "flow-log-filter.toml"),
    ] {
        cfg.set(&format!("policy.{hook}.component"), format!("/usr/lib/natgw/policies/{wasm}.wasm"));
        cfg.set(&format!("policy.{hook}.config"), examples.join(config).display().to_string());
    }
    cfg.set("policy.cache_dir", "/var/cache/natgw/compiled");
    t.start_binary(Path::new("/usr/sbin/natgw"), &cfg);
    let seen = t.cli1.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl through natgw");
    assert!(seen.starts_with("198.51.100.10:"), "cli1 leaves from pool-a: {seen}");
    let seen = t.cli2.run("curl", &["-s", "-m", "5", "http://203.0.113.80/ip"]).expect("curl through natgw");
    assert!(seen.starts_with("198.51.100.11:"), "cli2 leaves from pool-b: {seen}");
    assert!(
        t.cli1.run("curl", &["-s", "-m", "3", "http://203.0.113.80:8080/"]).is_err(),
        "8080 is not on the allow-list"
    );
    let hooks = t.admin().policy_list().expect("policy list");
    assert_eq!(hooks.len(), 3, "{hooks:?}");
    assert!(hooks.iter().all(|h| h.file.starts_with("/usr/lib/natgw/policies/")), "{hooks:?}");
    let compiled: Vec<PathBuf> = std::fs::read_dir("/var/cache/natgw/compiled")
        .expect("the compiled-policy cache")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(compiled.len() >= 3, "compiled policies cached: {compiled:?}");
    t.stop();

    // Purged: nothing of the package is left, nor what natgw wrote in its directories.
    ok("dpkg", &["--purge", "natgw"]);
    assert!(!run("dpkg", &["-s", "natgw"]).0, "still known to dpkg");
    // Every path of the package's own (all of them name natgw; shared directories such
    // as /usr/share/man/man1 do not) is gone. /var/cache/natgw may stay where another tool
    // keeps files there (this machine's setup.sh does); natgw's own cache in it is gone.
    for p in paths.iter().filter(|p| p.contains("natgw") && p.as_str() != "/var/cache/natgw") {
        assert!(!Path::new(p).exists(), "{p} is left after purge");
    }
    for p in ["/var/cache/natgw/compiled", "/var/log/natgw", "/etc/natgw"] {
        assert!(!Path::new(p).exists(), "{p} is left after purge");
    }
}
