//! A real systemd (Debian's, 252) as PID 1 of private PID, mount, UTS and cgroup
//! namespaces, seeing only the units a test gives it: natgw as a service, restarted and
//! killed the way a box runs it. The manager shares the host's network namespaces (a unit
//! enters one with `NetworkNamespacePath=`) and /tmp; its /run is its own. `systemctl` talks
//! to it through `nsenter`. Dropping the manager powers it off and removes its cgroup.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::process::alive;
use crate::wait::{eventually, secs, wait_until};

/// Units copied from the system so that `systemctl poweroff` works.
const SHUTDOWN_UNITS: [&str; 5] =
    ["poweroff.target", "systemd-poweroff.service", "shutdown.target", "umount.target", "final.target"];

pub struct Manager {
    dir: PathBuf,
    cgroup: PathBuf,
    unshare: Child,
    log_reader: Child,
    /// systemd's pid (PID 1 inside), as the host sees it.
    pub pid: i32,
}

fn cgroup2_root() -> PathBuf {
    let hybrid = Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() {
        hybrid.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

fn own_cgroup() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/");
    cgroup2_root().join(path.trim_start_matches('/'))
}

impl Manager {
    /// Boots a manager in `dir` with `units` (name, text) and waits until it runs.
    pub fn boot(dir: &Path, units: &[(&str, String)]) -> Manager {
        let unit_dir = dir.join("units");
        std::fs::create_dir_all(&unit_dir).expect("unit dir");
        for u in SHUTDOWN_UNITS {
            std::fs::copy(Path::new("/usr/lib/systemd/system").join(u), unit_dir.join(u)).expect("a shutdown unit");
        }
        std::fs::write(unit_dir.join("natgw-e2e.target"), "[Unit]\nDescription=natgw e2e: nothing else\n")
            .expect("target");
        for (name, text) in units {
            std::fs::write(unit_dir.join(name), text).expect("unit");
        }
        let fifo = dir.join("kmsg.fifo");
        let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(st.success());
        // The reader holds the FIFO open read-write: it never sees an end between writers.
        let log_reader = Command::new("sh")
            .arg("-c")
            .arg(format!("exec 3<>{}; exec cat <&3 >> {}", fifo.display(), dir.join("manager.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("log reader");
        let cgroup = cgroup2_root().join(format!("natgw-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup).expect("the manager's cgroup");
        let inner = crate::root().join("tests/e2e/systemd/inner.sh");
        let out = std::fs::File::create(dir.join("manager.out")).expect("manager.out");
        let unshare = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec unshare --pid --fork --kill-child --mount --uts --cgroup --propagation slave --mount-proc {} {}",
                cgroup.display(),
                inner.display(),
                dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("out"))
            .stderr(out)
            .spawn()
            .expect("unshare");
        let upid = i32::try_from(unshare.id()).expect("pid");
        let mut pid = 0;
        eventually(secs(5), "the manager's PID 1 to exist", || {
            let children = std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children")).unwrap_or_default();
            pid = children.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
            pid != 0
        });
        // unshare's own process leaves the manager's cgroup: systemd wants it to itself.
        std::fs::write(own_cgroup().join("cgroup.procs"), upid.to_string()).expect("move unshare back");
        let m = Manager { dir: dir.to_path_buf(), cgroup, unshare, log_reader, pid };
        eventually(secs(20), "systemd to run", || {
            let s = String::from_utf8_lossy(&m.systemctl(&["is-system-running"]).stdout).trim().to_string();
            s == "running" || s == "degraded"
        });
        m
    }

    pub fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "--", "systemctl"])
            .args(args)
            .output()
            .expect("systemctl")
    }

    /// `systemctl ARGS`, which must succeed.
    pub fn run(&self, args: &[&str]) {
        let o = self.systemctl(args);
        assert!(
            o.status.success(),
            "systemctl {}: {}{}\nmanager log:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
    }

    /// One property of a unit (`systemctl show -p`).
    pub fn show(&self, unit: &str, property: &str) -> String {
        let o = self.systemctl(&["show", unit, "-p", property, "--value"]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The processes of a service, as the host numbers them.
    pub fn pids(&self, unit: &str) -> Vec<i32> {
        std::fs::read_to_string(self.cgroup.join("system.slice").join(unit).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// The manager's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("manager.log")).unwrap_or_default()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.systemctl(&["poweroff"]);
        let upid = i32::try_from(self.unshare.id()).unwrap_or(0);
        if !wait_until(Duration::from_secs(10), || matches!(self.unshare.try_wait(), Ok(Some(_)))) {
            crate::process::kill(upid, libc::SIGKILL);
        }
        let _ = self.unshare.wait();
        // unshare can exit before the kernel has ended every process of the namespace.
        let events = self.cgroup.join("cgroup.events");
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&events).map_or(true, |e| e.contains("populated 0"))
        });
        let mut dirs: Vec<PathBuf> = walk(&self.cgroup);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = self.log_reader.kill();
        let _ = self.log_reader.wait();
        debug_assert!(!alive(self.pid));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

/// natgw's shipped unit (`examples/systemd/natgw.service`), made to run `natgw` with
/// `config` in the network namespace `netns` and log to `log`: what a box runs, less the
/// dependencies on targets this manager does not have.
pub fn natgw_unit(netns: &str, natgw: &Path, config: &Path, log: &Path) -> String {
    let shipped =
        std::fs::read_to_string(crate::root().join("examples/systemd/natgw.service")).expect("the shipped unit");
    let mut out = String::new();
    for line in shipped.lines() {
        if line.starts_with("After=") || line.starts_with("Wants=") || line.starts_with("WantedBy=") {
            continue;
        }
        // The test's config, flow log and admin socket live in its directory under /tmp:
        // the one thing of the sandbox this unit relaxes.
        if line == "PrivateTmp=yes" {
            let dir = config.parent().unwrap_or(Path::new("/tmp"));
            out.push_str(&format!("PrivateTmp=no\nReadWritePaths={}\n", dir.display()));
            continue;
        }
        if line.starts_with("ExecStart=") {
            out.push_str(&format!("ExecStart={} run --config {}\n", natgw.display(), config.display()));
            out.push_str(&format!("NetworkNamespacePath=/run/netns/{netns}\n"));
            out.push_str(&format!("StandardOutput=append:{}\nStandardError=inherit\n", log.display()));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line == "[Unit]" {
            out.push_str("DefaultDependencies=no\nConflicts=shutdown.target\nBefore=shutdown.target\n");
        }
    }
    out
}
