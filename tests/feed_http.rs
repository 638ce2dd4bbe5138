//! The change feed against the real server: a consumer that resumes from
//! its position across SIGKILLs misses nothing and sees nothing twice;
//! SSE streams resume with `Last-Event-ID`; bad feed requests are 4xx.

mod common;
use common::server::{temp_dir, Server};

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

fn put_sku(server: &Server, name: &str, available: u64) {
    let (status, body) = server.call(
        "PUT",
        &format!("/v1/skus/{name}"),
        Some(&json!({ "available": available })),
        &[],
    );
    assert_eq!(status, 200, "{body}");
}

/// Buys one unit; the reservation's public id when acknowledged.
fn buy(server: &Server, sku: &str) -> Option<String> {
    let order = json!({"lines": [{"sku": sku, "quantity": 1}], "confirm": true});
    let (status, body) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    (status == 201).then(|| body["id"].as_str().unwrap().to_owned())
}

/// Reads the feed after `after` until it is drained.
fn drain(server: &Server, mut after: u64, into: &mut Vec<Value>) -> u64 {
    loop {
        let (status, page) = server.call(
            "GET",
            &format!("/v1/events?after={after}&limit=50"),
            None,
            &[],
        );
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        let next = page["next_after"].as_u64().unwrap();
        into.extend(events.iter().cloned());
        if next == after {
            return after;
        }
        after = next;
    }
}

#[test]
fn a_consumer_resuming_across_sigkills_sees_every_acknowledged_event_once_in_order() {
    let dir = temp_dir("feed-crash");
    let mut server = Server::start(&dir);
    put_sku(&server, "hot", 1_000);
    let mut acknowledged = Vec::new();
    let mut consumed: Vec<Value> = Vec::new();
    let mut position = 0;
    for round in 0..4 {
        for _ in 0..20 {
            acknowledged.extend(buy(&server, "hot"));
        }
        // Read only part of what is there: the rest is durable but unread
        // when the server dies.
        let (_, page) = server.call(
            "GET",
            &format!("/v1/events?after={position}&limit=7"),
            None,
            &[],
        );
        consumed.extend(page["events"].as_array().unwrap().iter().cloned());
        position = page["next_after"].as_u64().unwrap();
        for _ in 0..5 {
            acknowledged.extend(buy(&server, "hot"));
        }
        server.kill();
        server = Server::start(&dir);
        assert!(round < 4);
    }
    position = drain(&server, position, &mut consumed);
    // Dense, strictly increasing, no duplicates.
    for (i, event) in consumed.iter().enumerate() {
        assert_eq!(event["position"].as_u64(), Some(i as u64 + 1), "{event}");
    }
    assert_eq!(position, consumed.len() as u64);
    // Every acknowledged purchase is there, once.
    let created: Vec<&str> = consumed
        .iter()
        .filter(|e| e["type"] == "reservation.created")
        .map(|e| e["reservation"].as_str().unwrap())
        .collect();
    for id in &acknowledged {
        assert_eq!(created.iter().filter(|c| *c == id).count(), 1, "{id}");
    }
    assert_eq!(
        created.len(),
        acknowledged.len(),
        "sync: nothing unacknowledged"
    );
    // The counts follow the sales, and what was read before a crash is
    // what is served for those positions after it (same ids).
    let last = consumed.last().unwrap();
    assert_eq!(last["sold"].as_u64(), Some(acknowledged.len() as u64));
    let mut again = Vec::new();
    drain(&server, 0, &mut again);
    assert_eq!(again, consumed);
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A raw SSE connection: the response head, then frames as they come.
struct Sse {
    reader: BufReader<TcpStream>,
}

impl Sse {
    fn open(server: &Server, query: &str, last_event_id: Option<u64>) -> (u16, Sse) {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut request = format!(
            "GET /v1/events/stream{query} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n"
        );
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        (&stream).write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header == "\r\n" {
                break;
            }
        }
        (status, Sse { reader })
    }

    /// The next event frame's (id, event, data), skipping comments and the
    /// chunked encoding's size lines.
    fn next(&mut self) -> (u64, String, Value) {
        let (mut id, mut event) = (None, None);
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "stream ended"
            );
            let line = line.trim_end();
            if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value.parse().unwrap());
            } else if let Some(value) = line.strip_prefix("event: ") {
                event = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("data: ") {
                return (
                    id.unwrap(),
                    event.unwrap(),
                    serde_json::from_str(value).unwrap(),
                );
            }
        }
    }
}

#[test]
fn an_sse_stream_delivers_live_events_and_resumes_after_a_restart() {
    let dir = temp_dir("feed-sse");
    let server = Server::start(&dir);
    put_sku(&server, "hot", 3);
    let (status, mut stream) = Sse::open(&server, "?type=reservation.created,sku.sold_out", None);
    assert_eq!(status, 200);
    // Live: events made after the stream opened arrive on it.
    let first = buy(&server, "hot").unwrap();
    let (id, event, data) = stream.next();
    assert_eq!(
        (event.as_str(), data["reservation"].as_str()),
        ("reservation.created", Some(&*first))
    );
    assert_eq!(data["position"].as_u64(), Some(id));
    buy(&server, "hot").unwrap();
    let (second, ..) = stream.next();
    server.kill();
    // The stream ends with the server; a new one resumes after the last
    // id seen, and the filter still applies.
    let server = Server::start(&dir);
    buy(&server, "hot").unwrap();
    let (_, mut resumed) = Sse::open(
        &server,
        "?type=reservation.created,sku.sold_out",
        Some(second),
    );
    let (third, event, _) = resumed.next();
    assert_eq!(event, "reservation.created");
    assert!(third > second);
    let (_, event, data) = resumed.next();
    assert_eq!(
        (event.as_str(), data["available"].as_u64()),
        ("sku.sold_out", Some(0))
    );
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A paced stream (`every_ms`, the live page's) still sends every event,
/// in order and without a gap, only in fewer writes; a pace past the
/// limit is a 400.
#[test]
fn a_paced_stream_sends_every_event_in_order() {
    let dir = temp_dir("feed-paced");
    let server = Server::start(&dir);
    put_sku(&server, "hot", 40);
    let (status, mut stream) = Sse::open(&server, "?every_ms=200", None);
    assert_eq!(status, 200);
    for _ in 0..40 {
        buy(&server, "hot").unwrap();
    }
    let mut last = 0;
    let mut created = 0;
    while created < 40 {
        let (id, event, _) = stream.next();
        assert!(last == 0 || id == last + 1, "{last} then {id}: a gap");
        last = id;
        created += usize::from(event == "reservation.created");
    }
    let (status, _) = server.call("GET", "/v1/events/stream?every_ms=10001", None, &[]);
    assert_eq!(status, 400);
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `purchases=latest` (what the live page asks): of a page's purchases
/// only the last per SKU comes, and it carries the SKU's counts after all
/// of them; holds, their ends and SKU events all come; the stream sends
/// the same events as the page route; a value other than all or latest
/// is a 400.
#[test]
fn latest_purchases_keep_every_hold_and_count_and_skip_superseded_purchases() {
    let dir = temp_dir("feed-latest");
    let server = Server::start(&dir);
    put_sku(&server, "a", 100);
    put_sku(&server, "b", 100);
    for _ in 0..3 {
        buy(&server, "a").unwrap();
    }
    let hold = json!({"lines": [{"sku": "a", "quantity": 2}]});
    let (status, held) = server.call("POST", "/v1/reservations", Some(&hold), &[]);
    assert_eq!(status, 201, "{held}");
    for _ in 0..2 {
        buy(&server, "b").unwrap();
    }
    let cancel = format!("/v1/reservations/{}/cancel", held["id"].as_str().unwrap());
    assert_eq!(server.call("POST", &cancel, None, &[]).0, 200);
    for _ in 0..2 {
        buy(&server, "a").unwrap();
    }

    let mut every = Vec::new();
    drain(&server, 0, &mut every);
    let (status, page) = server.call(
        "GET",
        "/v1/events?after=0&limit=1000&purchases=latest",
        None,
        &[],
    );
    assert_eq!(status, 200, "{page}");
    let latest = page["events"].as_array().unwrap().clone();
    assert_eq!(page["next_after"], every.last().unwrap()["position"]);
    let position = |e: &Value| e["position"].as_u64().unwrap();
    let is_purchase = |e: &Value| e["type"] == "reservation.created" && e["status"] == "confirmed";
    assert!(latest.windows(2).all(|w| position(&w[0]) < position(&w[1])));
    // Everything but a purchase comes, the hold and its cancel among them.
    let kept: Vec<u64> = latest.iter().map(position).collect();
    for event in every.iter().filter(|e| !is_purchase(e)) {
        assert!(kept.contains(&position(event)), "{event} is missing");
    }
    assert!(latest.iter().any(|e| e["status"] == "held"));
    assert!(latest.iter().any(|e| e["type"] == "reservation.cancelled"));
    // One purchase per SKU, the last, with the counts the SKU has now.
    for sku in ["a", "b"] {
        let purchases: Vec<&Value> = latest
            .iter()
            .filter(|e| is_purchase(e) && e["sku"] == sku)
            .collect();
        let last = every
            .iter()
            .rev()
            .find(|e| is_purchase(e) && e["sku"] == sku)
            .unwrap();
        assert_eq!(purchases, vec![last], "{sku}");
        let (_, document) = server.call("GET", &format!("/v1/skus/{sku}"), None, &[]);
        for count in ["available", "held", "sold"] {
            assert_eq!(last[count], document[count], "{sku} {count}");
        }
    }
    assert_eq!(every.iter().filter(|e| is_purchase(e)).count(), 7);
    assert_eq!(latest.len(), every.len() - 5);

    // The stream sends the same events.
    let (status, mut stream) = Sse::open(&server, "?purchases=latest&after=0", None);
    assert_eq!(status, 200);
    for event in &latest {
        let (id, kind, data) = stream.next();
        assert_eq!(
            (id, kind.as_str(), &data),
            (position(event), event["type"].as_str().unwrap(), event)
        );
    }
    for path in ["/v1/events?purchases=some", "/v1/events/stream?purchases="] {
        let (status, body) = server.call("GET", path, None, &[]);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("purchases"),
            "{body}"
        );
    }
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_feed_requests_are_clear_4xx_and_a_long_poll_waits_for_the_next_event() {
    let dir = temp_dir("feed-bad");
    let server = Server::start(&dir);
    put_sku(&server, "hot", 5);
    for (path, needle) in [
        ("/v1/events?after=x", "after"),
        ("/v1/events?limit=0", "limit"),
        ("/v1/events?limit=1001", "limit"),
        ("/v1/events?wait_ms=30001", "wait_ms"),
        ("/v1/events?type=sku.exploded", "sku.exploded"),
        ("/v1/events?colour=red", "colour"),
    ] {
        let (status, body) = server.call("GET", path, None, &[]);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "invalid_request", "{path}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    let (status, body) = server.call("GET", "/v1/events?after=999", None, &[]);
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("position_ahead")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("past the newest"));
    assert!(body["last_position"].as_u64().is_some());
    let (status, _) = server.call("POST", "/v1/events", None, &[]);
    assert_eq!(status, 405);
    let (status, _) = Sse::open(&server, "?after=999", None);
    assert_eq!(status, 409, "a stream from past the newest position");
    // A long-poll at the head returns when the next event is durable.
    let (_, page) = server.call("GET", "/v1/events?after=0&limit=1000", None, &[]);
    let head = page["next_after"].as_u64().unwrap();
    let addr = server.addr;
    let waiter = std::thread::spawn(move || {
        let path = format!("/v1/events?after={head}&wait_ms=20000&type=reservation.created");
        common::server::request(addr, "GET", &path, b"", &[])
    });
    // Give the waiter no head start to rely on: whenever it asks, the
    // event it waits for is either already there or arrives.
    buy(&server, "hot").unwrap();
    let (status, page) = waiter.join().unwrap();
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["type"], "reservation.created");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn events_tail_prints_the_feed_from_a_position() {
    let dir = temp_dir("feed-tail");
    let server = Server::start(&dir);
    put_sku(&server, "hot", 1);
    let bought = buy(&server, "hot").unwrap();
    let tail = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hotstock"))
            .args([
                "events",
                "tail",
                "--once",
                "--server",
                &server.addr.to_string(),
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let lines: Vec<String> = tail(&[]).lines().map(String::from).collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "sku.created",
            "sku.changed",
            "sku.back_in_stock",
            "reservation.created",
            "sku.sold_out"
        ]
    );
    assert!(lines[3].contains(&bought), "{}", lines[3]);
    // From a position, as JSON: exactly what the feed serves after it.
    let json: Vec<Value> = tail(&["--from", "3", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut served = Vec::new();
    drain(&server, 3, &mut served);
    assert_eq!(json, served);
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_operator_sets_a_low_stock_threshold_and_the_feed_says_when_it_is_crossed() {
    let dir = temp_dir("feed-low-stock");
    let server = Server::start(&dir);
    for bad in [json!(0), json!(-1), json!("5"), json!(1.5)] {
        let body = json!({"available": 4, "low_stock_threshold": bad});
        let (status, answer) = server.call("PUT", "/v1/skus/cap", Some(&body), &[]);
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer["message"]
            .as_str()
            .unwrap()
            .contains("low_stock_threshold"));
    }
    let (status, _) = server.call("GET", "/v1/skus/cap", None, &[]);
    assert_eq!(status, 404, "a refused PUT created nothing");
    let body = json!({"available": 4, "low_stock_threshold": 3});
    let (status, doc) = server.call("PUT", "/v1/skus/cap", Some(&body), &[]);
    assert_eq!(
        (status, &doc["low_stock_threshold"]),
        (200, &json!(3)),
        "{doc}"
    );
    buy(&server, "cap").unwrap();
    let mut events = Vec::new();
    let after = drain(&server, 0, &mut events);
    assert!(
        events.iter().all(|e| e["type"] != "sku.low_stock"),
        "4 -> 3 is not below 3"
    );
    buy(&server, "cap").unwrap();
    let mut more = Vec::new();
    drain(&server, after, &mut more);
    let types: Vec<&str> = more.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["reservation.created", "sku.low_stock"]);
    assert_eq!(more[1]["available"], 2);
    // Removed with null; the document and the feed say so.
    let body = json!({"available": 2, "low_stock_threshold": null});
    let (_, doc) = server.call("PUT", "/v1/skus/cap", Some(&body), &[]);
    assert_eq!(doc["low_stock_threshold"], Value::Null);
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn event_streams_are_capped_with_a_clear_503() {
    let dir = temp_dir("feed-streams");
    let server = Server::start(&dir);
    put_sku(&server, "hot", 1);
    let open: Vec<Sse> = (0..hotstock::core::limits::MAX_FEED_STREAMS)
        .map(|i| {
            let (status, stream) = Sse::open(&server, "", None);
            assert_eq!(status, 200, "stream {i}");
            stream
        })
        .collect();
    let (status, body) = server.call("GET", "/v1/events/stream", None, &[]);
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("overloaded")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("event streams are open"));
    // The page route still answers.
    let (status, _) = server.call("GET", "/v1/events?after=0", None, &[]);
    assert_eq!(status, 200);
    drop(open);
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
