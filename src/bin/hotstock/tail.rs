//! `hotstock events tail`: the change feed at a terminal. Follows a running
//! server's `GET /v1/events` by long-poll and prints one line per event,
//! from `--from` on; Ctrl-C stops it. A dropped connection or a restarting
//! server is retried from the last position printed, so nothing is skipped
//! and nothing repeats.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// What `events tail` takes.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Print events after this position (0: from the oldest kept).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// The server, as `host:port`.
    #[arg(long, env = "HOTSTOCK_SERVER", default_value = "127.0.0.1:8080")]
    server: String,
    /// A service or operator token (the feed is theirs on a secured server).
    #[arg(long, env = "HOTSTOCK_TOKEN")]
    token: Option<String>,
    /// Only this SKU's events.
    #[arg(long)]
    sku: Option<String>,
    /// Only these types, comma-separated (`reservation.created,sku.sold_out`).
    #[arg(long = "type")]
    types: Option<String>,
    /// Print each event's JSON as it is, one per line.
    #[arg(long)]
    json: bool,
    /// Stop at the head of the feed instead of waiting for more.
    #[arg(long)]
    once: bool,
}

pub fn tail(args: &TailArgs) -> ExitCode {
    let mut after = args.from;
    let mut out = std::io::stdout().lock();
    let mut failures = 0u32;
    loop {
        let page = match get_page(args, after) {
            Ok(page) => {
                failures = 0;
                page
            }
            Err(Refused(message)) => {
                eprintln!("{message}");
                return ExitCode::FAILURE;
            }
            Err(Unreachable(message)) => {
                failures += 1;
                if failures == 1 {
                    eprintln!("{message}; retrying from position {after}");
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            let line = if args.json {
                event.to_string()
            } else {
                human(event)
            };
            if writeln!(out, "{line}").is_err() {
                return ExitCode::SUCCESS;
            }
        }
        let next = page["next_after"].as_u64().unwrap_or(after);
        if args.once && next == after {
            return ExitCode::SUCCESS;
        }
        after = next;
    }
}

enum Failure {
    /// The server answered with an error: retrying will not help.
    Refused(String),
    /// No answer (down, restarting): retry.
    Unreachable(String),
}
use Failure::{Refused, Unreachable};

fn get_page(args: &TailArgs, after: u64) -> Result<Value, Failure> {
    let wait = if args.once { 0 } else { 25_000 };
    let mut path = format!("/v1/events?after={after}&limit=1000&wait_ms={wait}");
    if let Some(sku) = &args.sku {
        path.push_str(&format!("&sku={}", escape(sku)));
    }
    if let Some(types) = &args.types {
        path.push_str(&format!("&type={}", escape(types)));
    }
    let unreachable = |e: std::io::Error| Unreachable(format!("{}: {e}", args.server));
    let mut stream = TcpStream::connect(&args.server).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(unreachable)?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        args.server
    );
    if let Some(token) = &args.token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(unreachable)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Unreachable(format!("{}: a response without a body", args.server)))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Unreachable(format!("{}: not an HTTP response", args.server)))?;
    let json: Value = serde_json::from_str(body)
        .map_err(|e| Unreachable(format!("{}: a body that is not JSON: {e}", args.server)))?;
    match status {
        200 => Ok(json),
        503 => Err(Unreachable(format!("{}: {}", args.server, json["message"]))),
        _ => Err(Refused(format!(
            "{} answered {status}: {}",
            args.server,
            json["message"].as_str().unwrap_or("(no message)")
        ))),
    }
}

/// Percent-escapes what a query value may not hold as is.
fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b',' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `#12  reservation.created  tee  avail 9 held 1 sold 0  r=…  ann  tee×1`
fn human(event: &Value) -> String {
    let mut line = format!(
        "#{:<8} {:<22} {:<20} avail {} held {} sold {}",
        event["position"],
        event["type"].as_str().unwrap_or("?"),
        event["sku"].as_str().unwrap_or("?"),
        event["available"],
        event["held"],
        event["sold"],
    );
    if let Some(reservation) = event["reservation"].as_str() {
        line.push_str(&format!("  {reservation}"));
        if let Some(customer) = event["customer"].as_str() {
            line.push_str(&format!(" {customer}"));
        }
        let lines: Vec<String> = event["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| format!("{}x{}", l["sku"].as_str().unwrap_or("?"), l["quantity"]))
            .collect();
        line.push_str(&format!(" {}", lines.join(",")));
    }
    if let Some(delta) = event["delta"].as_i64() {
        line.push_str(&format!("  delta {delta:+} (version {})", event["version"]));
    }
    line
}
