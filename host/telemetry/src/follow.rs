//! `natgw flows --follow`: admin-socket connections that receive every exported flow
//! record as a JSON line, as it is emitted.
//!
//! The flow-log thread writes without ever blocking: each follower has its own pending
//! buffer, and one that falls more than `MAX_PENDING` bytes behind is disconnected with
//! the reason rather than slow down the export.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

const MAX_PENDING: usize = 4 << 20;

struct Follower {
    stream: UnixStream,
    pending: Vec<u8>,
}

#[derive(Default)]
pub struct Followers {
    list: Mutex<Vec<Follower>>,
}

impl Followers {
    /// Adds a connection; it gets every record exported from now on.
    pub fn add(&self, stream: UnixStream) {
        if stream.set_nonblocking(true).is_ok() {
            if let Ok(mut l) = self.list.lock() {
                l.push(Follower { stream, pending: Vec::new() });
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.lock().map_or(true, |l| l.is_empty())
    }

    /// Sends `lines` (whole JSON lines) to every follower; drops those that are gone or
    /// too far behind.
    pub fn send(&self, lines: &[u8]) {
        let Ok(mut list) = self.list.lock() else { return };
        list.retain_mut(|f| {
            f.pending.extend_from_slice(lines);
            loop {
                if f.pending.is_empty() {
                    return true;
                }
                match f.stream.write(&f.pending) {
                    Ok(0) => return false,
                    Ok(n) => {
                        f.pending.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            if f.pending.len() > MAX_PENDING {
                tracing::warn!("natgw: flows --follow: a reader fell {} bytes behind; disconnected", f.pending.len());
                return false;
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    #[test]
    fn followers_get_whole_lines_and_the_gone_are_dropped() {
        let f = Followers::default();
        let (a, a_peer) = UnixStream::pair().unwrap();
        let (b, b_peer) = UnixStream::pair().unwrap();
        f.add(a);
        f.add(b);
        drop(b_peer);
        f.send(b"{\"n\":1}\n");
        f.send(b"{\"n\":2}\n");
        assert_eq!(f.list.lock().unwrap().len(), 1, "the closed one is gone");
        let mut r = BufReader::new(a_peer);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"n\":1}\n");
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"n\":2}\n");
    }

    #[test]
    fn a_reader_that_never_reads_is_cut_off_without_blocking() {
        let f = Followers::default();
        let (a, _peer_kept_but_never_read) = UnixStream::pair().unwrap();
        f.add(a);
        let line = vec![b'x'; 64 * 1024];
        for _ in 0..(MAX_PENDING / line.len() + 64) {
            f.send(&line);
        }
        assert!(f.is_empty());
    }
}
