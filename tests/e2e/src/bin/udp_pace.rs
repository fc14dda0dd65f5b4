//! A paced UDP sender for `scripts/bench.sh`'s loss search: COUNT datagrams of SIZE bytes
//! from a UDP socket to DST, spread evenly at RATE per second (a busy-waiting clock, bursts
//! of at most 16 when it falls behind), one flow. trafgen's own rate limit sends in bursts
//! at full speed and then sleeps, which measures how much a queue absorbs, not the rate a
//! gateway sustains. Prints the rate achieved (datagrams over the time taken) and the count
//! sent. Run it inside the client's namespace.
//!
//! usage: udp_pace DST_ADDR:PORT RATE COUNT [SIZE]

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: udp_pace DST_ADDR:PORT RATE COUNT [SIZE]";
    let Some(dst) = args.next().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Some(rate), Some(count)) =
        (args.next().and_then(|a| a.parse::<u64>().ok()), args.next().and_then(|a| a.parse::<u64>().ok()))
    else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let socket = match UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_pace: bind: {e}");
            std::process::exit(1);
        }
    };
    let payload = vec![0x41u8; size];
    let rate = rate.max(1);
    // Not connected: an ICMP port unreachable from the receiver must not fail the next send.
    let (mut sent, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    while sent + failed < count {
        let due = u64::try_from(start.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000).unwrap_or(u64::MAX);
        let behind = due.min(count).saturating_sub(sent + failed);
        if behind == 0 {
            std::hint::spin_loop();
            continue;
        }
        for _ in 0..behind.min(16) {
            match socket.send_to(&payload, dst) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("achieved {:.0} sent {sent} failed {failed}", (sent as f64) / secs.max(1e-9));
}
