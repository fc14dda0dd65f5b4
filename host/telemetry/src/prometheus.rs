//! The counters as Prometheus text (exposition format 0.0.4) at `http://LISTEN/metrics`.
//!
//! Names are the AWS NAT gateway metric names operators know, prefixed `natgw_`;
//! running totals end in `_total`, drop reasons are a `reason` label:
//! `natgw_PacketsDropCount_total{reason="bad-ihl"} 0`. The endpoint listens on loopback
//! unless configured otherwise.
//!
//! HTTP/1.1 by hyper on a current-thread tokio runtime of its own thread: clients are served
//! concurrently, each request's headers must arrive within `HEADER_TIMEOUT` and a whole
//! connection ends after `CONNECTION_TIMEOUT`, so a client that trickles its request (or
//! reads its answer slowly) holds only its own connection, never the endpoint. At most
//! `MAX_CONNECTIONS` are open at once; a new one beyond closes the oldest connection of
//! the peer address that holds the most, so clients holding them all, or opening new ones
//! as fast as they can, cannot keep a scraper on another address out: only their own
//! connections are closed. The limit of that: a flood from the scraper's own address (a
//! local user beside a Prometheus on the same host, both on 127.0.0.1) competes with it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

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

/// A request's headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection (keep-alive included) ends after this.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; a new one beyond closes the oldest.
pub const MAX_CONNECTIONS: usize = 128;

fn respond(req: &Request<hyper::body::Incoming>, counters: &[Arc<Counters>]) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", render(counters)),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "text/plain", "natgw serves /metrics only\n".to_string()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves until `stop` says so (checked every 200 ms). Returns early only if the runtime
/// cannot start (then the endpoint is off; the gateway runs on).
pub fn serve(listener: TcpListener, counters: Vec<Arc<Counters>>, stop: impl Fn() -> bool) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let counters = Arc::new(counters);
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        // The connections being served, oldest first, with their peers.
        let mut open: VecDeque<(std::net::IpAddr, tokio::task::JoinHandle<()>)> = VecDeque::new();
        while !stop() {
            let Ok(accepted) = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await else {
                continue;
            };
            let Ok((stream, peer)) = accepted else { continue };
            open.retain(|(_, c)| !c.is_finished());
            while open.len() >= MAX_CONNECTIONS {
                let Some(i) = oldest_of_busiest_peer(&open, peer.ip()) else { break };
                if let Some((_, c)) = open.remove(i) {
                    c.abort();
                }
            }
            let counters = Arc::clone(&counters);
            open.push_back((
                peer.ip(),
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let r = respond(&req, &counters);
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                }),
            ));
        }
        Ok(())
    })
}

/// Which connection a full endpoint closes for one from `arriving`: the oldest of the
/// peer address that holds the most (the arriving one counted as one more of its own).
fn oldest_of_busiest_peer<T>(open: &VecDeque<(std::net::IpAddr, T)>, arriving: std::net::IpAddr) -> Option<usize> {
    let mut held: std::collections::HashMap<std::net::IpAddr, usize> = std::collections::HashMap::new();
    for (ip, _) in open {
        *held.entry(*ip).or_insert(0) += 1;
    }
    *held.entry(arriving).or_insert(0) += 1;
    // Ties go to the peer whose connection is oldest (the first in `open`).
    let most = held.values().copied().max()?;
    open.iter().position(|(ip, _)| held.get(ip) == Some(&most)).or_else(|| (!open.is_empty()).then_some(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_core::counters::Counter;
    use std::sync::atomic::Ordering;

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

    fn start() -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<std::io::Result<()>>) {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let c = Arc::new(Counters::default());
        c.add(Counter::PacketsInFromSource, 3);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || serve(l, vec![c], move || s2.load(Ordering::Relaxed)));
        (addr, stop, t)
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_over_http_and_refuses_other_paths() {
        let (addr, stop, t) = start();
        let r = get(addr, "/metrics");
        assert!(r.starts_with("HTTP/1.1 200 OK") && r.contains("natgw_PacketsInFromSource_total 3\n"), "{r}");
        assert!(r.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{r}");
        assert!(get(addr, "/other").starts_with("HTTP/1.1 404"));
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn a_slow_client_holds_only_its_own_connection() {
        use std::io::{Read, Write};
        let (addr, stop, t) = start();
        // Slow clients: each sends its request a byte at a time, 300 ms apart (slowloris);
        // one sends nothing at all.
        let mut slow: Vec<std::net::TcpStream> = (0..4).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let silent = std::net::TcpStream::connect(addr).unwrap();
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let began = std::time::Instant::now();
        let mut sent = 0;
        let mut normal_served = Vec::new();
        while began.elapsed() < Duration::from_millis(1500) {
            for s in &mut slow {
                let _ = s.write_all(&request[sent..sent + 1]);
            }
            sent += 1;
            // Meanwhile, a normal client is served at once, every time.
            let t0 = std::time::Instant::now();
            let r = get(addr, "/metrics");
            normal_served.push(t0.elapsed());
            assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
            std::thread::sleep(Duration::from_millis(300));
        }
        let worst = normal_served.iter().max().unwrap();
        assert!(*worst < Duration::from_millis(500), "a normal client waited {worst:?} beside slow ones");
        // The slow ones are cut once their headers are late: the server closes them.
        for mut s in slow.into_iter().chain(std::iter::once(silent)) {
            s.set_read_timeout(Some(HEADER_TIMEOUT + Duration::from_secs(3))).unwrap();
            let mut buf = Vec::new();
            let r = s.read_to_end(&mut buf);
            assert!(r.is_ok(), "the server did not close a slow client: {r:?}");
            assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "a slow client was answered");
        }
        assert!(began.elapsed() < HEADER_TIMEOUT + Duration::from_secs(4));
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn clients_holding_every_connection_cannot_keep_a_scraper_out() {
        let (addr, stop, t) = start();
        // Twice the connections the endpoint serves, all silent, opened in a burst.
        let hogs: Vec<std::net::TcpStream> =
            (0..2 * MAX_CONNECTIONS).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        // A scraper arriving now is served (the oldest hogs are closed to make room).
        let t0 = std::time::Instant::now();
        let r = get(addr, "/metrics");
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(t0.elapsed() < Duration::from_secs(1), "the scraper waited {:?}", t0.elapsed());
        drop(hogs);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap().unwrap();
    }

    /// A connection to `addr` from the loopback address `from`.
    fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&SocketAddr::from((from, 0)).into())?;
        s.connect(&addr.into())?;
        Ok(s.into())
    }

    #[test]
    fn a_client_opening_connections_as_fast_as_it_can_closes_only_its_own() {
        use std::io::{Read, Write};
        let (addr, stop, t) = start();
        // A local flood from 127.0.0.3: connections opened and held as fast as it can.
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (f2, o2) = (flooding.clone(), opened.clone());
        let flood = std::thread::spawn(move || {
            let mut held = VecDeque::new();
            while f2.load(Ordering::Relaxed) {
                if let Ok(s) = connect_from([127, 0, 0, 3], addr) {
                    held.push_back(s);
                    o2.fetch_add(1, Ordering::Relaxed);
                }
                if held.len() > 4 * MAX_CONNECTIONS {
                    held.pop_front();
                }
            }
        });
        // Meanwhile a scraper on 127.0.0.2 is answered, every time: at least 50 scrapes, and
        // on until the flood has gone well past the endpoint's cap (a busy machine slows the
        // flood more than the scrapes).
        let began = std::time::Instant::now();
        let mut i = 0;
        while i < 50 || opened.load(Ordering::Relaxed) <= 2 * MAX_CONNECTIONS as u64 {
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the flood opened only {} in a minute",
                opened.load(Ordering::Relaxed)
            );
            let mut s = connect_from([127, 0, 0, 2], addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            assert!(r.starts_with("HTTP/1.1 200 OK"), "scrape {i} beside the flood: {r:?}");
            i += 1;
        }
        flooding.store(false, Ordering::Relaxed);
        flood.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn a_full_endpoint_closes_the_busiest_peers_oldest() {
        let ip = |b: u8| std::net::IpAddr::from([127, 0, 0, b]);
        let open: VecDeque<(std::net::IpAddr, ())> = [2, 3, 3, 2, 3].iter().map(|b| (ip(*b), ())).collect();
        assert_eq!(oldest_of_busiest_peer(&open, ip(4)), Some(1), "127.0.0.3 holds 3: its oldest");
        assert_eq!(oldest_of_busiest_peer(&open, ip(3)), Some(1));
        assert_eq!(oldest_of_busiest_peer(&open, ip(2)), Some(0), "a tie: the peer holding the oldest");
        let open: VecDeque<(std::net::IpAddr, ())> = [2, 3].iter().map(|b| (ip(*b), ())).collect();
        assert_eq!(oldest_of_busiest_peer(&open, ip(2)), Some(0), "the arriving peer's own oldest");
    }
}
