//! The gateway's log: `tracing` events as plain lines on stderr (journald or the file the
//! service manager gives it adds time and unit), written so that a stderr nobody reads any
//! more (a closed pipe: EPIPE; a full disk) costs log lines, never the process. Rust's
//! `eprintln!` panics on such a write, and the release profile aborts on panic.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Log lines that could not be written.
static LINES_LOST: AtomicU64 = AtomicU64::new(0);

/// Log lines lost to a stderr that could not take them.
pub fn lines_lost() -> u64 {
    LINES_LOST.load(Ordering::Relaxed)
}

/// stderr that swallows its errors (counted in `LINES_LOST`).
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().lock().write_all(buf).is_err() {
            LINES_LOST.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Installs the process's log: info and above, one line per event, the message as written
/// ("natgw: ..."). Once per process; later calls do nothing.
pub fn init() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(|| LossyStderr)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        // Its own report of a failed write goes through eprintln!: off.
        .log_internal_errors(false)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// A line on stderr that may be lost, never panics (the CLI's own error line).
pub fn stderr_line(line: &str) {
    let _ = writeln!(LossyStderr, "{line}");
}

/// Text on stdout for the CLI, never panicking when the reader went away (`natgw flows |
/// head`): the rest is dropped.
pub fn stdout_text(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
