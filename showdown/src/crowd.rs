//! `hotstock-crowd`: a crowd of buyers in front of a waiting room (#16).
//!
//! Against a running `hotstock serve`: puts SKU `drop` (its units, a sale
//! starting `--start-in-ms` from now, a waiting room) and SKU `direct`
//! (as many units, no room), then
//!
//! 1. `--buyers` buyers join the room before the start;
//! 2. each polls when its last answer's `poll_after_ms` says (the polling
//!    rate the server's hints produce), and an admitted buyer buys one unit
//!    at once (`Admission` header, `confirm: true`); a `sold_out` answer
//!    ends it;
//! 3. meanwhile, from the sale's start, as many buyers as there are units
//!    buy `direct` at the room's admission rate over 8 connections of their
//!    own: the purchase path without a queue, under the same crowd, in the
//!    same run.
//!
//! Prints one JSON line: poll latency percentiles, the polls per second,
//! purchase latency through the room and without it, units sold (must be
//! exactly the stock) and buyers told `sold_out`.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(about = "A crowd of buyers polling a waiting room")]
struct Args {
    /// The server (`hotstock serve`, open: no roles).
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value_t = 50_000)]
    buyers: u32,
    #[arg(long, default_value_t = 1_000)]
    units: u64,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value_t = 1_000)]
    admit_per_s: u32,
    /// The sale starts this long after the SKUs are put.
    #[arg(long, default_value_t = 15_000)]
    start_in_ms: u64,
}

/// One buyer's next step, ordered by when it is due (earliest first).
#[derive(PartialEq, Eq)]
struct Due {
    at: Instant,
    buyer: u32,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at).then(other.buyer.cmp(&self.buyer))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
struct Tally {
    polls: Option<Histogram<u64>>,
    purchases: Option<Histogram<u64>>,
    direct: Option<Histogram<u64>>,
    bought: u64,
    told_sold_out: u64,
    refused: u64,
    first_poll: Option<Instant>,
    last_poll: Option<Instant>,
    poll_count: u64,
}

struct Crowd {
    tokens: Vec<Mutex<String>>,
    due: Mutex<BinaryHeap<Due>>,
    tally: Mutex<Tally>,
}

fn record(histogram: &mut Option<Histogram<u64>>, micros: u64) {
    if let Some(histogram) = histogram {
        histogram.saturating_record(micros.max(1));
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), String> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as u64;
    let starts = now_ms + args.start_in_ms;
    let mut setup = Conn::open(args.addr).await?;
    let room = json!({"available": args.units, "sale_starts_at_ms": starts,
        "waiting_room": {"admit_per_s": args.admit_per_s, "overbook": 1.0, "admission_ttl_ms": 30000}});
    expect(
        setup
            .call("PUT", "/v1/skus/drop", &room.to_string(), None)
            .await?,
        200,
    )?;
    let direct = json!({"available": args.units});
    expect(
        setup
            .call("PUT", "/v1/skus/direct", &direct.to_string(), None)
            .await?,
        200,
    )?;
    let crowd = Arc::new(Crowd {
        tokens: (0..args.buyers)
            .map(|_| Mutex::new(String::new()))
            .collect(),
        due: Mutex::new(BinaryHeap::new()),
        tally: Mutex::new(Tally {
            polls: Some(histogram()),
            purchases: Some(histogram()),
            direct: Some(histogram()),
            ..Tally::default()
        }),
    });
    let start = Instant::now() + Duration::from_millis(args.start_in_ms);
    let joined = Instant::now();
    join_all(&args, &crowd).await?;
    let join_s = joined.elapsed().as_secs_f64();
    // Paced like the room's admissions: `DIRECT_CONNECTIONS` buyers at a
    // time, each connection one purchase per `DIRECT_CONNECTIONS /
    // admit_per_s` seconds.
    let every = Duration::from_secs_f64(DIRECT_CONNECTIONS as f64 / f64::from(args.admit_per_s));
    let direct_tasks: Vec<_> = (0..DIRECT_CONNECTIONS)
        .map(|c| {
            let share = (args.units as usize).div_ceil(DIRECT_CONNECTIONS);
            let from = c * share;
            let to = ((c + 1) * share).min(args.units as usize);
            let first = start + every.mul_f64(c as f64 / DIRECT_CONNECTIONS as f64);
            tokio::spawn(buy_direct(
                args.addr,
                Arc::clone(&crowd),
                from..to,
                first,
                every,
            ))
        })
        .collect();
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(poll_loop(args.addr, Arc::clone(&crowd))))
        .collect();
    for task in tasks.into_iter().chain(direct_tasks) {
        task.await.map_err(|e| e.to_string())??;
    }
    report(&args, &crowd, join_s);
    Ok(())
}

fn expect((status, body): (u16, Value), want: u16) -> Result<Value, String> {
    if status == want {
        Ok(body)
    } else {
        Err(format!("expected {want}, got {status}: {body}"))
    }
}

/// Every buyer joins, over all connections at once; each is due for its
/// first poll when the join's answer says.
async fn join_all(args: &Args, crowd: &Arc<Crowd>) -> Result<(), String> {
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            let (crowd, next, addr, buyers) =
                (Arc::clone(crowd), Arc::clone(&next), args.addr, args.buyers);
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await?;
                loop {
                    let buyer = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if buyer >= buyers {
                        return Ok::<(), String>(());
                    }
                    let body = json!({"customer": format!("buyer-{buyer}")}).to_string();
                    let answer =
                        expect(conn.call("POST", "/v1/queue/drop", &body, None).await?, 201)?;
                    let token = answer["token"].as_str().ok_or("no token")?.to_owned();
                    *crowd.tokens[buyer as usize].lock().unwrap() = token;
                    let after = answer["poll_after_ms"].as_u64().unwrap_or(1_000);
                    let at = Instant::now() + Duration::from_millis(after);
                    crowd.due.lock().unwrap().push(Due { at, buyer });
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// One connection: takes the buyer due soonest, waits until it is due,
/// polls, and buys when admitted. Ends when no buyer is left.
async fn poll_loop(addr: SocketAddr, crowd: Arc<Crowd>) -> Result<(), String> {
    let mut conn = Conn::open(addr).await?;
    loop {
        let Some(due) = crowd.due.lock().unwrap().pop() else {
            return Ok(());
        };
        tokio::time::sleep_until(due.at.into()).await;
        let token = crowd.tokens[due.buyer as usize].lock().unwrap().clone();
        let sent = Instant::now();
        let (status, answer) = conn
            .call("GET", &format!("/v1/queue/drop/{token}"), "", None)
            .await?;
        let took = sent.elapsed().as_micros() as u64;
        {
            let mut tally = crowd.tally.lock().unwrap();
            record(&mut tally.polls, took);
            tally.poll_count += 1;
            tally.first_poll.get_or_insert(sent);
            tally.last_poll = Some(Instant::now());
        }
        match (status, answer["status"].as_str()) {
            (200, Some("waiting")) => {
                let after = answer["poll_after_ms"].as_u64().unwrap_or(1_000);
                let at = Instant::now() + Duration::from_millis(after);
                crowd.due.lock().unwrap().push(Due {
                    at,
                    buyer: due.buyer,
                });
            }
            (200, Some("admitted")) => {
                let admission = answer["admission"]
                    .as_str()
                    .ok_or("no admission")?
                    .to_owned();
                buy(&mut conn, &crowd, due.buyer, &admission).await?;
            }
            (200, Some("sold_out")) => crowd.tally.lock().unwrap().told_sold_out += 1,
            _ => return Err(format!("poll answered {status}: {answer}")),
        }
    }
}

async fn buy(conn: &mut Conn, crowd: &Crowd, buyer: u32, admission: &str) -> Result<(), String> {
    let body = json!({"lines": [{"sku": "drop", "quantity": 1}], "customer": format!("buyer-{buyer}"), "confirm": true});
    let sent = Instant::now();
    let (status, answer) = conn
        .call(
            "POST",
            "/v1/reservations",
            &body.to_string(),
            Some(admission),
        )
        .await?;
    let took = sent.elapsed().as_micros() as u64;
    let mut tally = crowd.tally.lock().unwrap();
    match status {
        201 => {
            tally.bought += 1;
            record(&mut tally.purchases, took);
        }
        409 => tally.refused += 1,
        _ => return Err(format!("a purchase answered {status}: {answer}")),
    }
    Ok(())
}

/// Connections of the buyers of `direct`.
const DIRECT_CONNECTIONS: usize = 8;

async fn buy_direct(
    addr: SocketAddr,
    crowd: Arc<Crowd>,
    buyers: std::ops::Range<usize>,
    first: Instant,
    every: Duration,
) -> Result<(), String> {
    // Opened at the start: an idle keep-alive connection is closed by the
    // server's idle timeout.
    tokio::time::sleep_until(first.into()).await;
    let mut conn = Conn::open(addr).await?;
    for (n, buyer) in buyers.enumerate() {
        tokio::time::sleep_until((first + every.mul_f64(n as f64)).into()).await;
        let body = json!({"lines": [{"sku": "direct", "quantity": 1}], "customer": format!("direct-{buyer}"), "confirm": true});
        let sent = Instant::now();
        let (status, answer) = conn
            .call("POST", "/v1/reservations", &body.to_string(), None)
            .await?;
        let took = sent.elapsed().as_micros() as u64;
        if status != 201 {
            return Err(format!("a direct purchase answered {status}: {answer}"));
        }
        record(&mut crowd.tally.lock().unwrap().direct, took);
    }
    Ok(())
}

fn report(args: &Args, crowd: &Crowd, join_s: f64) {
    let tally = crowd.tally.lock().unwrap();
    let (Some(polls), Some(purchases), Some(direct)) =
        (&tally.polls, &tally.purchases, &tally.direct)
    else {
        return;
    };
    let span = match (tally.first_poll, tally.last_poll) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let line = json!({
        "buyers": args.buyers, "units": args.units, "connections": args.connections,
        "admit_per_s": args.admit_per_s, "join_s": join_s,
        "polls": tally.poll_count, "polls_per_s": tally.poll_count as f64 / span.max(1e-9),
        "poll_ms": {"p50": ms(polls, 0.5), "p99": ms(polls, 0.99), "p999": ms(polls, 0.999), "max": polls.max() as f64 / 1000.0},
        "purchase_ms": {"p50": ms(purchases, 0.5), "p99": ms(purchases, 0.99)},
        "direct_purchase_ms": {"p50": ms(direct, 0.5), "p99": ms(direct, 0.99)},
        "bought": tally.bought, "refused": tally.refused, "told_sold_out": tally.told_sold_out,
    });
    println!("{line}");
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
        admission: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let admission = admission
            .map(|a| format!("admission: {a}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: crowd\r\ncontent-type: application/json\r\n{admission}content-length: {}\r\n\r\n",
            body.len()
        );
        self.stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.stream
            .write_all(body.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> Result<(u16, Value), String> {
        self.buf.clear();
        loop {
            if let Some((status, head, length)) = parse_head(&self.buf)? {
                if self.buf.len() >= head + length {
                    let body = serde_json::from_slice(&self.buf[head..head + length])
                        .unwrap_or(Value::Null);
                    return Ok((status, body));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The status, the head's length and the body's (`content-length`).
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|e| e.to_string())?;
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>())
        })
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    Ok(Some((status, end + 4, length)))
}
