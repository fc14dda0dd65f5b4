//! Programs a test starts and must not leave behind: a `Daemon` is stopped when dropped,
//! and a `Capture` is a tcpdump that is known to be listening before the test goes on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait::wait_until;

/// Sends a signal to a process (ignoring one that is gone).
#[allow(unsafe_code)]
pub fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers; a stale pid at worst signals nothing (ESRCH).
    unsafe {
        libc::kill(pid, signal);
    }
}

pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// A background program, stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn start(name: &str, mut cmd: Command, log: &Path) -> Daemon {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child =
            cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Daemon { name: name.into(), child: Some(child), log: log.to_path_buf() }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        kill(self.pid(), signal);
    }

    /// Stops it and waits: SIGTERM, then SIGKILL after `grace`. Returns its exit status.
    pub fn stop_within(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        kill(child.id() as i32, libc::SIGTERM);
        let mut status = None;
        wait_until(grace, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            status = child.wait().ok();
        }
        status
    }

    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.stop_within(Duration::from_secs(5))
    }

    /// Waits for it to exit by itself (up to `timeout`); its status, or None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A tcpdump writing a pcap, started only once it says it is listening.
pub struct Capture {
    daemon: Daemon,
    pub file: PathBuf,
}

impl Capture {
    /// Captures on `interface` in `ns` with `filter` into `file`.
    pub fn start(ns: &crate::Netns, interface: &str, filter: &str, file: &Path) -> Capture {
        let log = file.with_extension("log");
        let mut cmd = ns.cmd("tcpdump");
        // --immediate-mode: hand each packet over as it comes. Without it libpcap's ring
        // holds packets for up to a second, and a capture stopped sooner loses them: a
        // test asserting that nothing arrived would pass however much did.
        cmd.args(["-n", "-U", "--immediate-mode", "-i", interface, "-w"]).arg(file).arg(filter);
        let mut daemon = Daemon::start("tcpdump", cmd, &log);
        let ready = wait_until(Duration::from_secs(10), || daemon.log_text().contains("listening on"));
        assert!(ready && daemon.running(), "tcpdump did not start: {}", daemon.log_text());
        Capture { daemon, file: file.to_path_buf() }
    }

    /// Packets captured so far (tcpdump writes each one as it comes: `-U`).
    pub fn packets_so_far(&self) -> usize {
        read_pcap(&self.file, false).len()
    }

    /// Waits up to `timeout` for `n` packets; how many there were.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let mut seen = 0;
        wait_until(timeout, || {
            seen = self.packets_so_far();
            seen >= n
        });
        seen
    }

    /// Stops the capture and returns one text line per packet (`tcpdump -r -nn -v`).
    pub fn stop(mut self) -> Vec<String> {
        self.daemon.signal(libc::SIGINT);
        self.daemon.wait_exit(Duration::from_secs(5));
        self.daemon.stop();
        read_pcap(&self.file, false)
    }

    /// Stops the capture and returns its packets, one per line, verbose (`-v` puts the IP
    /// length on the first line of two).
    pub fn stop_verbose(mut self) -> Vec<String> {
        self.daemon.signal(libc::SIGINT);
        self.daemon.wait_exit(Duration::from_secs(5));
        self.daemon.stop();
        read_pcap(&self.file, true)
    }
}

fn read_pcap(file: &Path, verbose: bool) -> Vec<String> {
    let mut cmd = Command::new("tcpdump");
    cmd.args(["-nn", "-r"]).arg(file);
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd.output().expect("tcpdump runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !verbose {
        return text.lines().map(String::from).collect();
    }
    // -v prints each IP packet on two lines: the IP header (with its length) and then the
    // transport; join them.
    let mut packets: Vec<String> = Vec::new();
    for l in text.lines() {
        if l.starts_with(' ') || l.starts_with('\t') {
            if let Some(last) = packets.last_mut() {
                last.push(' ');
                last.push_str(l.trim());
                continue;
            }
        }
        packets.push(l.to_string());
    }
    packets
}
