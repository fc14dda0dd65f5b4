//! The counters as Prometheus text (exposition format 0.0.4) at `http://LISTEN/metrics`.
//!
//! Names are the AWS NAT gateway metric names operators know, prefixed `natgw_`;
//! running totals end in `_total`, drop reasons are a `reason` label:
//! `natgw_PacketsDropCount_total{reason="bad-ihl"} 0`. The endpoint listens on loopback
//! unless configured otherwise; a request is answered and the connection closed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use natgw_core::counters::{self, Counters};

/// Renders the totals over all `counters`.
pub fn render(counters: &[Arc<Counters>]) -> String {
    let totals = counters::total(counters);
    let mut out = String::with_capacity(8192);
    let mut last_base = "";
    for (c, v) in totals {
        let (base, reason) = c.metric();
        let name = if c.is_gauge() { format!("natgw_{base}") } else { format!("natgw_{base}_total") };
        if base != last_base {
            out += &format!("# TYPE {name} {}\n", if c.is_gauge() { "gauge" } else { "counter" });
            last_base = base;
        }
        match reason {
            Some(r) => out += &format!("{name}{{reason=\"{r}\"}} {v}\n"),
            None => out += &format!("{name} {v}\n"),
        }
    }
    out
}

/// Binds the endpoint (an error names the address).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serves until `stop` says so (checked between connections and every 200 ms).
pub fn serve(listener: TcpListener, counters: Vec<Arc<Counters>>, stop: impl Fn() -> bool) {
    let _ = listener.set_nonblocking(true);
    while !stop() {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            Err(_) => continue,
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        let mut reader = BufReader::new(&conn);
        let mut request = String::new();
        if reader.by_ref().take(8192).read_line(&mut request).is_err() {
            continue;
        }
        // Skip the headers (bounded), so the client sees its request fully read.
        let mut header = String::new();
        for _ in 0..100 {
            header.clear();
            match reader.by_ref().take(8192).read_line(&mut header) {
                Ok(0) | Err(_) => break,
                Ok(_) if header.trim().is_empty() => break,
                Ok(_) => {}
            }
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
            ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&counters)),
            ("GET", _) => ("404 Not Found", "text/plain", "natgw serves /metrics only\n".to_string()),
            _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
        };
        let mut w = &conn;
        let _ = write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_core::counters::Counter;

    #[test]
    fn every_counter_is_rendered_with_its_type() {
        let a = Arc::new(Counters::default());
        let b = Arc::new(Counters::default());
        a.add(Counter::BytesOutToDestination, 1500);
        b.add(Counter::BytesOutToDestination, 500);
        a.inc(Counter::DropBadIhl);
        a.set(Counter::ActiveConnectionCount, 7);
        let text = render(&[a, b]);
        assert!(
            text.contains("# TYPE natgw_BytesOutToDestination_total counter\nnatgw_BytesOutToDestination_total 2000\n")
        );
        assert!(text.contains("natgw_PacketsDropCount_total{reason=\"bad-ihl\"} 1\n"));
        assert!(text.contains("# TYPE natgw_ActiveConnectionCount gauge\nnatgw_ActiveConnectionCount 7\n"));
        assert_eq!(text.matches("# TYPE natgw_PacketsDropCount_total").count(), 1, "one TYPE line per family");
        for c in Counter::ALL {
            let (base, _) = c.metric();
            assert!(text.contains(&format!("natgw_{base}")), "{base} missing");
        }
    }

    #[test]
    fn serves_metrics_over_http_and_refuses_other_paths() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let c = Arc::new(Counters::default());
        c.add(Counter::PacketsInFromSource, 3);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || serve(l, vec![c], move || s2.load(std::sync::atomic::Ordering::Relaxed)));
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            std::io::Read::read_to_string(&mut s, &mut out).unwrap();
            out
        };
        let r = get("/metrics");
        assert!(r.starts_with("HTTP/1.1 200 OK") && r.contains("natgw_PacketsInFromSource_total 3\n"), "{r}");
        assert!(get("/other").starts_with("HTTP/1.1 404"));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap();
    }
}
