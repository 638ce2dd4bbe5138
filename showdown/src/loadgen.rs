//! A keep-alive HTTP/1.1 load generator, small enough to cost the machine
//! little: raw requests written from a reused buffer, responses parsed in
//! place (status line and `content-length` only), optional pipelining and
//! optional pacing.
//!
//! It runs on its own threads, each a single-threaded tokio runtime driving
//! a share of the connections, so every HTTP contender is measured by the
//! same client at the same cost.
//!
//! Paced runs send at a fixed rate per connection. Latency is measured from
//! the moment a request was due when the connection was still waiting for
//! the previous answer (so a stalled server is charged for the queue it
//! caused, as wrk2 does), and from the moment it was written otherwise (so
//! the generator's own timer slack is not charged to the server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sale::{Mode, Outcome, Recorder, Rng, Sale, Stock};

/// Deepest pipeline a connection keeps.
pub const MAX_PIPELINE: usize = 64;
/// Largest response the generator accepts to one order (every contender
/// answers < 1 KiB); a batch's answer may be this much per order.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most orders in one batch (`POST /v1/reservations/batch` takes 1,000).
pub const MAX_BATCH: usize = 1_000;

/// Which routes and bodies the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `hotstock serve`: `POST /v1/reservations`, confirm by id.
    Hotstock,
    /// The showdown's own endpoints (article and bare): `POST /buy`,
    /// `POST /hold`, `POST /confirm/{id}`.
    Simple,
}

/// How the generator drives one sale.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Where buyers connect: connection `c` to `addrs[c % len]` (one
    /// address but for a cluster's nodes).
    pub addrs: Vec<SocketAddr>,
    /// A 409 is "sold out here" (`Outcome::NotHere`), not the sale's end:
    /// a cluster's node speaks for itself only.
    pub cluster: bool,
    pub flavor: Flavor,
    pub mode: Mode,
    pub connections: usize,
    pub threads: usize,
    /// Requests written before reading their answers (1: no pipelining).
    pub pipeline: usize,
    /// Orders per request: 1 sends `POST /v1/reservations`; more send
    /// them together to `POST /v1/reservations/batch` (hotstock only).
    pub batch: usize,
    /// Purchases per second over all connections; `None` sends as fast as
    /// answers come back.
    pub rate: Option<f64>,
}

/// Runs the plan until the sale is over; every connection flushes its
/// counts into `sale`.
pub fn drive(plan: &LoadPlan, sale: &Arc<Sale>) -> Result<(), String> {
    assert!(plan.connections > 0 && plan.threads > 0);
    assert!((1..=MAX_PIPELINE).contains(&plan.pipeline));
    assert!((1..=MAX_BATCH).contains(&plan.batch));
    if plan.mode == Mode::HoldConfirm && (plan.pipeline != 1 || plan.batch != 1) {
        return Err("hold-confirm needs the hold's id before the confirm: no pipelining".into());
    }
    if plan.batch > 1 && (plan.flavor != Flavor::Hotstock || plan.pipeline != 1) {
        return Err("batches are hotstock's, and not pipelined".into());
    }
    let threads = plan.threads.min(plan.connections);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let plan = plan.clone();
            let sale = Arc::clone(sale);
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot start a load-generator runtime: {e}"))?;
                    runtime.block_on(async {
                        let mut tasks = tokio::task::JoinSet::new();
                        for c in (t..plan.connections).step_by(threads) {
                            let plan = plan.clone();
                            let sale = Arc::clone(&sale);
                            tasks.spawn(async move {
                                let mut buyer = Buyer::new(&plan, c as u64 + 1);
                                let result = buyer.run(&plan, &sale).await;
                                sale.flush(&mut buyer.recorder);
                                if let Err(error) = result {
                                    sale.error(|| error);
                                }
                            });
                        }
                        while tasks.join_next().await.is_some() {}
                    });
                    Ok::<(), String>(())
                })
                .map_err(|e| format!("cannot start a load-generator thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    for handle in handles {
        handle
            .join()
            .map_err(|_| "a load-generator thread panicked".to_string())??;
    }
    Ok(())
}

/// One keep-alive connection and its buffers.
struct Buyer {
    addr: SocketAddr,
    rng: Rng,
    recorder: Recorder,
    write: Vec<u8>,
    read: Vec<u8>,
    /// Bytes of `read` already parsed.
    consumed: usize,
    interval: Option<Duration>,
    /// Where in the first interval this connection's schedule starts.
    first_offset: Duration,
    /// The largest answer this connection takes.
    max_response: usize,
}

/// One parsed response: its status and where its body lies in `read`.
struct Response {
    status: u16,
    body: std::ops::Range<usize>,
}

impl Buyer {
    fn new(plan: &LoadPlan, seed: u64) -> Buyer {
        let interval = plan
            .rate
            .map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate.max(1e-3)));
        let first_offset = interval.map_or(Duration::ZERO, |i| {
            i.mul_f64((seed % plan.connections as u64) as f64 / plan.connections as f64)
        });
        Buyer {
            addr: plan.addrs[(seed as usize - 1) % plan.addrs.len()],
            first_offset,
            rng: Rng::new(seed),
            recorder: Recorder::new(1, 16),
            write: Vec::with_capacity(256 * plan.pipeline * plan.batch),
            read: Vec::with_capacity(16 * 1024),
            consumed: 0,
            interval,
            max_response: MAX_RESPONSE_BYTES * plan.batch,
        }
    }

    async fn run(&mut self, plan: &LoadPlan, sale: &Sale) -> Result<(), String> {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        // Paced connections start spread over one interval: all starting
        // together would send in lockstep bursts of `connections` requests.
        let mut due = Instant::now() + self.first_offset;
        let mut skus = [0usize; MAX_PIPELINE];
        while !sale.is_over() {
            let started = match self.interval {
                None => Instant::now(),
                Some(interval) => {
                    let now = Instant::now();
                    let started = if now < due {
                        tokio::time::sleep_until(due.into()).await;
                        Instant::now()
                    } else {
                        // Late because the last answer was slow: charge the
                        // wait to the server.
                        due
                    };
                    due += interval;
                    started
                }
            };
            if plan.batch > 1 {
                if !self.run_batch(&mut stream, plan, sale, started).await? {
                    break;
                }
                continue;
            }
            self.write.clear();
            let mut batch = 0;
            while batch < plan.pipeline {
                let Some(sku) = sale.pick(&mut self.rng) else {
                    break;
                };
                skus[batch] = sku;
                let confirm = plan.mode != Mode::HoldConfirm;
                order_request(&mut self.write, plan.flavor, sku, confirm);
                batch += 1;
            }
            if batch == 0 {
                break;
            }
            stream
                .write_all(&self.write)
                .await
                .map_err(|e| format!("write to {}: {e}", self.addr))?;
            for &sku in &skus[..batch] {
                let response = self.read_response(&mut stream).await?;
                let outcome = match (plan.mode, response.status) {
                    (Mode::HoldConfirm, 200 | 201) => {
                        self.confirm(&mut stream, plan, response).await?
                    }
                    (_, 200 | 201) => Outcome::Sold,
                    (_, 409) if plan.cluster => Outcome::NotHere,
                    (_, 409) => Outcome::SoldOut,
                    (_, status) => return Err(self.unexpected(status, response)),
                };
                let latency = started.elapsed().as_nanos() as u64;
                sale.record(sku, outcome, &mut self.recorder, latency);
            }
        }
        Ok(())
    }

    /// Sends one batch of up to `plan.batch` orders and records each
    /// order's outcome at the batch's latency. `false`: no SKU is left.
    async fn run_batch(
        &mut self,
        stream: &mut TcpStream,
        plan: &LoadPlan,
        sale: &Sale,
        started: Instant,
    ) -> Result<bool, String> {
        let mut skus = Vec::with_capacity(plan.batch);
        let mut body = Vec::with_capacity(80 * plan.batch);
        body.extend_from_slice(b"{\"orders\":[");
        while skus.len() < plan.batch {
            let Some(sku) = sale.pick(&mut self.rng) else {
                break;
            };
            if !skus.is_empty() {
                body.push(b',');
            }
            sku_body(&mut body, Flavor::Hotstock, sku, true);
            skus.push(sku);
        }
        if skus.is_empty() {
            return Ok(false);
        }
        body.extend_from_slice(b"]}");
        self.write.clear();
        post(&mut self.write, b"/v1/reservations/batch", &body);
        stream
            .write_all(&self.write)
            .await
            .map_err(|e| format!("write to {}: {e}", self.addr))?;
        let response = self.read_response(stream).await?;
        if response.status != 200 {
            return Err(self.unexpected(response.status, response));
        }
        let statuses = batch_statuses(&self.read[response.body.clone()]);
        if statuses.len() != skus.len() {
            let (got, sent) = (statuses.len(), skus.len());
            return Err(format!(
                "a batch of {sent} orders answered with {got} results"
            ));
        }
        let latency = started.elapsed().as_nanos() as u64;
        for (&sku, status) in skus.iter().zip(statuses) {
            let outcome = match status {
                201 => Outcome::Sold,
                409 => Outcome::SoldOut,
                status => return Err(self.unexpected(status, response)),
            };
            sale.record(sku, outcome, &mut self.recorder, latency);
        }
        Ok(true)
    }

    /// Confirms the hold whose answer is `held`; sold when confirmed.
    async fn confirm(
        &mut self,
        stream: &mut TcpStream,
        plan: &LoadPlan,
        held: Response,
    ) -> Result<Outcome, String> {
        let body = &self.read[held.body.clone()];
        let id = json_string_field(body, b"id")
            .ok_or_else(|| {
                format!(
                    "a hold answer without an id: {}",
                    String::from_utf8_lossy(body)
                )
            })?
            .to_vec();
        self.write.clear();
        confirm_request(&mut self.write, plan.flavor, &id);
        stream
            .write_all(&self.write)
            .await
            .map_err(|e| format!("write to {}: {e}", self.addr))?;
        let confirmed = self.read_response(stream).await?;
        match confirmed.status {
            200 => Ok(Outcome::Sold),
            status => Err(self.unexpected(status, confirmed)),
        }
    }

    fn unexpected(&self, status: u16, response: Response) -> String {
        format!(
            "unexpected status {status}: {}",
            String::from_utf8_lossy(&self.read[response.body])
        )
    }

    /// Reads until one whole response is buffered; returns it and marks it
    /// consumed (its bytes stay valid until the next read).
    async fn read_response(&mut self, stream: &mut TcpStream) -> Result<Response, String> {
        loop {
            match parse_response(&self.read[self.consumed..], self.max_response)? {
                Some((status, head, body)) => {
                    let start = self.consumed + head;
                    self.consumed = start + body;
                    return Ok(Response {
                        status,
                        body: start..start + body,
                    });
                }
                None => {
                    // Keep the unparsed tail at the front, then read more.
                    if self.consumed > 0 {
                        self.read.drain(..self.consumed);
                        self.consumed = 0;
                    }
                    if self.read.len() >= self.max_response {
                        let most = self.max_response;
                        return Err(format!("a response larger than {most} bytes"));
                    }
                    let len = self.read.len();
                    self.read.resize(len + 16 * 1024, 0);
                    let n = stream
                        .read(&mut self.read[len..])
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    self.read.truncate(len + n);
                    if n == 0 {
                        return Err("the server closed the connection".into());
                    }
                }
            }
        }
    }
}

fn post(out: &mut Vec<u8>, path: &[u8], body: &[u8]) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path);
    out.extend_from_slice(
        b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: ",
    );
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn sku_body(body: &mut Vec<u8>, flavor: Flavor, sku: usize, confirm: bool) {
    match flavor {
        Flavor::Hotstock => {
            body.extend_from_slice(b"{\"lines\":[{\"sku\":\"");
            body.extend_from_slice(Stock::name(sku).as_bytes());
            body.extend_from_slice(b"\",\"quantity\":1}]");
            if confirm {
                body.extend_from_slice(b",\"confirm\":true}");
            } else {
                body.extend_from_slice(b",\"ttl_ms\":600000}");
            }
        }
        Flavor::Simple => {
            body.extend_from_slice(b"{\"sku\":\"");
            body.extend_from_slice(Stock::name(sku).as_bytes());
            body.extend_from_slice(b"\",\"quantity\":1}");
        }
    }
}

/// One unit of `sku`: bought at once (`confirm`) or held.
pub fn order_request(out: &mut Vec<u8>, flavor: Flavor, sku: usize, confirm: bool) {
    let mut body = Vec::with_capacity(80);
    sku_body(&mut body, flavor, sku, confirm);
    let path: &[u8] = match (flavor, confirm) {
        (Flavor::Hotstock, _) => b"/v1/reservations",
        (Flavor::Simple, true) => b"/buy",
        (Flavor::Simple, false) => b"/hold",
    };
    post(out, path, &body);
}

fn confirm_request(out: &mut Vec<u8>, flavor: Flavor, id: &[u8]) {
    let mut path = Vec::with_capacity(64);
    match flavor {
        Flavor::Hotstock => {
            path.extend_from_slice(b"/v1/reservations/");
            path.extend_from_slice(id);
            path.extend_from_slice(b"/confirm");
        }
        Flavor::Simple => {
            path.extend_from_slice(b"/confirm/");
            path.extend_from_slice(id);
        }
    }
    post(out, &path, b"");
}

/// Parses one response at the start of `buf`: `(status, head length, body
/// length)` once head and body are both buffered, `None` before. A body
/// over `max_body` bytes is an error.
pub fn parse_response(buf: &[u8], max_body: usize) -> Result<Option<(u16, usize, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_RESPONSE_BYTES {
            return Err("a response head larger than 64 KiB".into());
        }
        return Ok(None);
    };
    let head = &buf[..end];
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return Err(format!(
            "not an HTTP/1 response: {:?}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        ));
    }
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "a response without a status code".to_string())?;
    let mut body = 0;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if name.eq_ignore_ascii_case(b"content-length") {
            body = std::str::from_utf8(&value[1..])
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| "an unreadable content-length".to_string())?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err("chunked responses are not expected from any contender".into());
        }
    }
    if body > max_body {
        return Err(format!("a {body}-byte response body"));
    }
    let head_len = end + 4;
    Ok((buf.len() >= head_len + body).then_some((status, head_len, body)))
}

/// Each order's status in a batch's answer, in order: every result has
/// one numeric `"status":` (a reservation's own status is a string, and
/// no error body has one), so a scan finds them without parsing the JSON
/// (which, at a few hundred bytes an order, would cost the generator more
/// than the server).
pub fn batch_statuses(body: &[u8]) -> Vec<u16> {
    const KEY: &[u8] = b"\"status\":";
    let mut statuses = Vec::new();
    let mut at = 0;
    while let Some(found) = body[at..].windows(KEY.len()).position(|w| w == KEY) {
        at += found + KEY.len();
        let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(status) = std::str::from_utf8(&body[at..at + digits])
            .ok()
            .and_then(|d| d.parse().ok())
        {
            statuses.push(status);
        }
    }
    statuses
}

/// The string value of `"field":"…"` in a small JSON object (ids carry no
/// escapes).
pub fn json_string_field<'a>(json: &'a [u8], field: &[u8]) -> Option<&'a [u8]> {
    let mut pattern = Vec::with_capacity(field.len() + 4);
    pattern.push(b'"');
    pattern.extend_from_slice(field);
    pattern.extend_from_slice(b"\":");
    let at = json.windows(pattern.len()).position(|w| w == pattern)? + pattern.len();
    let rest = json[at..].strip_prefix(b" ").unwrap_or(&json[at..]);
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_only_once_whole() {
        let whole = b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..whole.len() {
            assert_eq!(
                parse_response(&whole[..cut], MAX_RESPONSE_BYTES).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        let head = whole.len() - 5;
        assert_eq!(
            parse_response(whole, MAX_RESPONSE_BYTES).unwrap(),
            Some((409, head, 5))
        );
        // A pipelined second response after it does not confuse the first.
        let mut two = whole.to_vec();
        two.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            parse_response(&two, MAX_RESPONSE_BYTES).unwrap(),
            Some((409, head, 5))
        );
        assert_eq!(
            parse_response(&two[whole.len()..], MAX_RESPONSE_BYTES).unwrap(),
            Some((200, 38, 0))
        );
    }

    #[test]
    fn refuses_what_is_not_http() {
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", MAX_RESPONSE_BYTES).is_err());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            MAX_RESPONSE_BYTES
        )
        .is_err());
    }

    #[test]
    fn writes_the_bodies_each_server_reads() {
        let mut out = Vec::new();
        order_request(&mut out, Flavor::Hotstock, 42, true);
        let text = String::from_utf8(out).unwrap();
        let body = r#"{"lines":[{"sku":"s42","quantity":1}],"confirm":true}"#;
        assert!(text.starts_with("POST /v1/reservations HTTP/1.1\r\n"));
        assert!(text.ends_with(&format!("Content-Length: {}\r\n\r\n{body}", body.len())));
        let mut out = Vec::new();
        confirm_request(&mut out, Flavor::Simple, b"17");
        assert!(out.starts_with(b"POST /confirm/17 HTTP/1.1\r\n"));
        assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
    }

    /// An answer as `hotstock serve` writes it: a sale, a sold-out (its
    /// status last), an unknown SKU.
    #[test]
    fn reads_each_orders_status_from_a_batch_answer() {
        let body = br#"{"results":[{"status":201,"reservation":{"id":"54fe","lines":[{"confirmed":1,"quantity":1,"refunded":0,"sku":"s0"}],"status":"confirmed"}},{"error":{"available":0,"error":"sold_out","message":"sold out: SKU \"s0\" has 0 units available, 1 requested","requested":1,"sku":"s0"},"status":409},{"error":{"error":"unknown_sku","message":"unknown SKU \"zz\"","sku":"zz"},"status":404}]}"#;
        assert_eq!(batch_statuses(body), [201, 409, 404]);
        assert_eq!(batch_statuses(br#"{"results":[]}"#), Vec::<u16>::new());
    }

    #[test]
    fn finds_the_id_of_a_hold() {
        let body = br#"{"id":"00000000000000a1","status":"held","lines":[]}"#;
        assert_eq!(
            json_string_field(body, b"id"),
            Some(&b"00000000000000a1"[..])
        );
        assert_eq!(json_string_field(br#"{"ok":true}"#, b"id"), None);
    }
}
