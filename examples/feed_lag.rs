//! The change feed's delivery lag, as one SSE consumer sees it: connects to
//! `GET /v1/events/stream` of a running server, and for every event takes
//! the time it arrived minus its `at_ms` (the time its journal batch was
//! cut, read from the coarse clock: the lag is overstated by up to one
//! kernel tick). After SECONDS, prints the count and the percentiles.
//!   cargo run --release --example feed_lag -- 127.0.0.1:8080 30 [token]
//! Used by benches/http/feed.sh.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(seconds)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: feed_lag HOST:PORT SECONDS [TOKEN]");
        std::process::exit(2);
    };
    let seconds: u64 = seconds.parse().expect("SECONDS is a whole number");
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut request = format!("GET /v1/events/stream HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(token) = args.get(3) {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    (&stream).write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut lags_us: Vec<u64> = Vec::new();
    let mut line = String::new();
    while Instant::now() < end {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue, // the read timeout: look at the clock again
        }
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let Some(at) = data.split("\"at_ms\":").nth(1) else {
            continue;
        };
        let digits: String = at.chars().take_while(char::is_ascii_digit).collect();
        let at_ms: u64 = digits.parse().unwrap_or(0);
        lags_us.push(now_us.saturating_sub(at_ms * 1000));
    }
    lags_us.sort_unstable();
    let pick = |q: f64| {
        lags_us
            .get(((lags_us.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |&us| us as f64 / 1000.0)
    };
    println!(
        "events {} lag_ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}",
        lags_us.len(),
        pick(0.5),
        pick(0.99),
        pick(0.999),
        pick(1.0)
    );
}
