//! A network namespace: run programs in it (`ip netns exec`), or run Rust code in it on a
//! thread of its own that joined it with setns(2), so a test's sockets live there.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace, with loopback up and IPv6 off (no router solicitations or
    /// DAD in the captures).
    pub fn create(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        ns
    }

    /// A command run in this namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `ip -n <ns> args…`, panicking with its stderr when it fails.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `ip -n <ns> args…` and returns its stdout, whatever its exit status.
    pub fn ip_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["-n", &self.name]).args(args).output().expect("ip runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[track_caller]
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.cmd("sysctl").args(["-qw", &format!("{key}={value}")]).output().expect("sysctl runs");
        assert!(
            out.status.success(),
            "sysctl {key}={value} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a program here and returns its output (whatever its exit status).
    pub fn output(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program).args(args).output().unwrap_or_else(|e| panic!("{program} in {}: {e}", self.name))
    }

    /// Runs a program here; its stdout when it exits 0, else its exit code and stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = self.output(program, args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{program} {} exited {:?}: {}{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it opens are here.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{}", self.name))
            .unwrap_or_else(|e| panic!("network namespace {}: {e}", self.name));
        std::thread::scope(|s| {
            let t = s.spawn(move || {
                join_netns(&file, &self.name);
                f()
            });
            match t.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Like `enter`, on a thread that runs on while the caller goes on.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .unwrap_or_else(|e| panic!("network namespace {}: {e}", self.name));
        let name = self.name.clone();
        std::thread::spawn(move || {
            join_netns(&file, &name);
            f()
        })
    }

    /// Processes still running in this namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip").args(["netns", "pids", &self.name]).output().expect("ip runs");
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    /// Kills what still runs here and deletes the namespace.
    pub fn destroy(&self) {
        for pid in self.pids() {
            crate::process::kill(pid, libc::SIGKILL);
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// The calling thread joins the namespace behind `file`.
#[allow(unsafe_code)]
fn join_netns(file: &File, name: &str) {
    // SAFETY: setns(2) on a file descriptor we own and keep open for the call; it changes
    // only the calling thread's network namespace, which is a thread of our own that runs
    // nothing but the test's closure.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns into {name}: {}", std::io::Error::last_os_error());
}

/// `ip args…` in the test's own namespace, panicking with its stderr when it fails.
#[track_caller]
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Every namespace on the machine.
pub fn list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip runs");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}
