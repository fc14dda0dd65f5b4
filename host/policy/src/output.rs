//! What a policy writes to stdout and stderr: the last few KiB, kept in memory.
//!
//! Language runtimes (CPython, StarlingMonkey, Go, libc) report their own failures there
//! (a traceback, an uncaught exception, a panic) before they trap. natgw gives every
//! instance one `OutputTail` for both streams and quotes it when instantiation or `init`
//! fails, so the operator sees the runtime's message, not only "unreachable". Writes never
//! fail and never block: older bytes are dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per instance.
pub const OUTPUT_TAIL_BYTES: usize = 2048;

#[derive(Clone, Default)]
pub struct OutputTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl OutputTail {
    /// The kept output as one line of text: control characters become spaces, runs of
    /// whitespace collapse, "" when the policy wrote nothing.
    pub fn text(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = buf.as_slices();
        let raw = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// For an error message: "; the policy wrote: …" with the last `max_chars` of `text`
    /// (a runtime's message ends its output), or "" when it wrote nothing.
    pub fn quoted(&self, max_chars: usize) -> String {
        let t = self.text();
        match t.char_indices().rev().nth(max_chars.saturating_sub(1)) {
            _ if t.is_empty() => String::new(),
            Some((i, _)) => format!("; the policy wrote: {}", &t[i..]),
            None => format!("; the policy wrote: {t}"),
        }
    }

    /// Keeps `bytes` (stdout, stderr, and the lines a policy logs through `host.log`).
    pub fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(OUTPUT_TAIL_BYTES)..];
        let excess = (buf.len() + bytes.len()).saturating_sub(OUTPUT_TAIL_BYTES);
        buf.drain(..excess);
        buf.extend(bytes);
    }
}

impl OutputStream for OutputTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for OutputTail {
    async fn ready(&mut self) {}
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    /// natgw links WASI synchronously (p2); the async view is never written to.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_as_one_line() {
        let mut t = OutputTail::default();
        assert_eq!(t.text(), "");
        t.write(Bytes::from_static(b"Traceback (most recent call last):\n  File \"app.py\"\n")).unwrap();
        assert_eq!(t.text(), "Traceback (most recent call last): File \"app.py\"");
        t.write(Bytes::from(vec![b'x'; OUTPUT_TAIL_BYTES])).unwrap();
        t.write(Bytes::from_static(b" ValueError: boom\n")).unwrap();
        let s = t.text();
        assert!(s.ends_with("ValueError: boom") && s.len() < OUTPUT_TAIL_BYTES, "{s}");
        assert!(!s.contains("Traceback"), "older bytes are dropped first");
        assert_eq!(t.quoted(6), "; the policy wrote: : boom");
        assert_eq!(OutputTail::default().quoted(6), "");
        let short = OutputTail::default();
        short.push("é!".as_bytes());
        assert_eq!(short.quoted(6), "; the policy wrote: é!");
    }
}
