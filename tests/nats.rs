//! The JetStream publisher against real NATS servers: one this test starts
//! and stops mid-sale (its own port and store directory), and the shared
//! one at `HOTSTOCK_TEST_NATS_URL`.

mod common;
use common::server::{metric, temp_dir, Server};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hotstock::server::nats::NatsClient;
use serde_json::{json, Value};

/// The nats-server binary, or `None` (said plainly) outside CI.
fn nats_server_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("HOTSTOCK_NATS_SERVER").map(PathBuf::from),
        Some(PathBuf::from("/usr/sbin/nats-server")),
        Some(PathBuf::from("/usr/bin/nats-server")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install nats-server (.ci/run does)"
        );
        eprintln!("SKIPPED: no nats-server binary (apt-get install nats-server)");
    }
    found
}

/// A nats-server with JetStream on a loopback port of its own.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start(binary: &Path, port: u16, store: &Path) -> Nats {
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let nats = Nats { child, port };
        // Readiness, not a timed wait: until a handshake succeeds.
        let deadline = Instant::now() + Duration::from_secs(30);
        while NatsClient::connect(&nats.url(), Duration::from_secs(1)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::yield_now();
        }
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) {
        self.child.kill().expect("stop nats-server");
        self.child.wait().expect("wait");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn api(client: &mut NatsClient, subject: &str, body: Value) -> Value {
    let reply = client
        .request(subject, body.to_string().as_bytes(), Duration::from_secs(5))
        .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

/// The feed positions of the stream's messages, in stream order.
fn stream_positions(url: &str, stream: &str) -> Vec<u64> {
    stream_positions_except(url, stream, "")
}

/// The same, leaving out messages on subjects ending in `.{foreign}`.
fn stream_positions_except(url: &str, stream: &str, foreign: &str) -> Vec<u64> {
    let mut client = NatsClient::connect(url, Duration::from_secs(5)).unwrap();
    let info = api(
        &mut client,
        &format!("$JS.API.STREAM.INFO.{stream}"),
        json!({}),
    );
    let last = info["state"]["last_seq"].as_u64().unwrap();
    (1..=last)
        .filter_map(|seq| {
            let got = api(
                &mut client,
                &format!("$JS.API.STREAM.MSG.GET.{stream}"),
                json!({ "seq": seq }),
            );
            let subject = got["message"]["subject"].as_str().expect("subject");
            if !foreign.is_empty() && subject.ends_with(&format!(".{foreign}")) {
                return None;
            }
            let data = got["message"]["data"].as_str().expect("message data");
            let event: Value = serde_json::from_slice(&decode(data)).unwrap();
            Some(event["position"].as_u64().unwrap())
        })
        .collect()
}

/// Standard base64, for the test's own reading of JetStream messages.
fn decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

fn buy(server: &Server) {
    let order = json!({"lines": [{"sku": "hot", "quantity": 1}], "confirm": true});
    let (status, body) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    assert_eq!(
        status, 201,
        "a sale with the broker down must not fail: {body}"
    );
}

/// Waits (polling /metrics) until JetStream has every durable event.
fn caught_up(server: &Server) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = metric(server, "hotstock_feed_last_position");
        if last > 0 && metric(server, "hotstock_nats_acked_position") == last {
            assert_eq!(metric(server, "hotstock_nats_lag_events"), 0);
            return last;
        }
        assert!(Instant::now() < deadline, "the publisher never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_stream_holds_every_event_once_in_order_after_the_broker_and_the_server_restart() {
    let Some(binary) = nats_server_binary() else {
        return;
    };
    let dir = temp_dir("nats-restart");
    let nats_store = temp_dir("nats-restart-js");
    let port = free_port();
    let nats = Nats::start(&binary, port, &nats_store);
    let url = nats.url();
    let flags = ["--nats-url", &url, "--nats-stream", "SALE"];
    let mut server = Server::start_with(&dir, &flags);
    let (status, _) = server.call("PUT", "/v1/skus/hot", Some(&json!({"available": 500})), &[]);
    assert_eq!(status, 200);
    for _ in 0..30 {
        buy(&server);
    }
    caught_up(&server);
    // The broker goes away mid-sale: sales go on, the lag grows.
    nats.stop();
    for _ in 0..30 {
        buy(&server);
    }
    assert!(metric(&server, "hotstock_nats_lag_events") > 0);
    let nats = Nats::start(&binary, port, &nats_store);
    caught_up(&server);
    // And the server is killed: it resumes from the stream's last message,
    // publishing nothing twice.
    server.kill();
    server = Server::start_with(&dir, &flags);
    for _ in 0..10 {
        buy(&server);
    }
    let last = caught_up(&server);
    assert!(metric(&server, "hotstock_nats_connection_failures_total") == 0);
    // Alone on its stream, every batch was proven by its one acknowledgement.
    assert_eq!(
        metric(&server, "hotstock_nats_batches_republished_total"),
        0
    );
    let positions = stream_positions(&url, "SALE");
    assert_eq!(
        positions,
        (1..=last).collect::<Vec<_>>(),
        "once each, in order"
    );
    server.kill();
    nats.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&nats_store);
}

#[test]
fn events_reach_the_shared_nats_server() {
    let Ok(url) = std::env::var("HOTSTOCK_TEST_NATS_URL") else {
        eprintln!("SKIPPED: HOTSTOCK_TEST_NATS_URL is not set");
        return;
    };
    let stream = format!("HOTSTOCK_TEST_{}", std::process::id());
    let prefix = format!("hotstock_test_{}", std::process::id());
    let dir = temp_dir("nats-shared");
    let flags = [
        "--nats-url",
        &url,
        "--nats-stream",
        &stream,
        "--nats-subject-prefix",
        &prefix,
    ];
    let server = Server::start_with(&dir, &flags);
    let (status, _) = server.call("PUT", "/v1/skus/hot", Some(&json!({"available": 5})), &[]);
    assert_eq!(status, 200);
    for _ in 0..5 {
        buy(&server);
    }
    let last = caught_up(&server);
    assert_eq!(
        stream_positions(&url, &stream),
        (1..=last).collect::<Vec<_>>()
    );
    server.kill();
    let mut client = NatsClient::connect(&url, Duration::from_secs(5)).unwrap();
    let deleted = api(
        &mut client,
        &format!("$JS.API.STREAM.DELETE.{stream}"),
        json!({}),
    );
    assert_eq!(deleted["success"], true, "{deleted}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the publisher's one acknowledgement per batch rests on, checked
/// against a real nats-server: a message with `Nats-Expected-Last-Msg-Id`
/// is refused unless the stream's last message is the one named, so the
/// last message of a chain is stored only if every one before it was, in
/// order, with nothing between.
#[test]
fn a_chain_is_stored_only_whole() {
    let Some(binary) = nats_server_binary() else {
        return;
    };
    let nats_store = temp_dir("nats-chain-js");
    let nats = Nats::start(&binary, free_port(), &nats_store);
    let mut client = NatsClient::connect(&nats.url(), Duration::from_secs(5)).unwrap();
    let created = api(
        &mut client,
        "$JS.API.STREAM.CREATE.CHAIN",
        json!({"name": "CHAIN", "subjects": ["chain.>"], "storage": "file"}),
    );
    assert!(created.get("error").is_none(), "{created}");
    // Publishes ids as one chain; returns the last message's acknowledgement.
    let chain = |client: &mut NatsClient, ids: &[&str], foreign_after: Option<usize>| {
        let mut token = None;
        for (index, id) in ids.iter().enumerate() {
            let expected = index.checked_sub(1).map(|i| ids[i]);
            let last = index + 1 == ids.len();
            token = client.queue_chained("chain.event", id, expected, last, id.as_bytes());
            if foreign_after == Some(index) {
                client.queue("chain.foreign", None, b"another publisher");
            }
        }
        client.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let reply = client.reply_to(token.unwrap(), deadline).unwrap();
        serde_json::from_slice::<Value>(&reply.payload).unwrap()
    };
    let whole = chain(&mut client, &["a", "b", "c"], None);
    assert_eq!(whole["seq"], 3, "a whole chain is stored: {whole}");
    // `b` is a duplicate (not stored), so `d`'s expectation of `b` fails
    // and so does every later one.
    let duplicate = chain(&mut client, &["b", "d", "e"], None);
    assert!(duplicate.get("error").is_some(), "{duplicate}");
    // Another publisher's message between `f` and `g`.
    let interleaved = chain(&mut client, &["f", "g", "h"], Some(0));
    assert!(interleaved.get("error").is_some(), "{interleaved}");
    let info = api(&mut client, "$JS.API.STREAM.INFO.CHAIN", json!({}));
    // a, b, c; nothing of the second chain; f and the foreign message.
    assert_eq!(info["state"]["messages"], 5, "{info}");
    nats.stop();
    let _ = std::fs::remove_dir_all(&nats_store);
}

/// Another publisher on the publisher's stream breaks its chains; each
/// such batch is published again event by event, and the stream still
/// holds every event once, in order.
#[test]
fn a_batch_broken_by_another_publisher_is_published_again() {
    let Some(binary) = nats_server_binary() else {
        return;
    };
    let dir = temp_dir("nats-foreign");
    let nats_store = temp_dir("nats-foreign-js");
    let nats = Nats::start(&binary, free_port(), &nats_store);
    let url = nats.url();
    let flags = ["--nats-url", &url, "--nats-stream", "SHARED"];
    let server = Server::start_with(&dir, &flags);
    let (status, _) = server.call(
        "PUT",
        "/v1/skus/hot",
        Some(&json!({"available": 1_000_000})),
        &[],
    );
    assert_eq!(status, 200);
    caught_up(&server);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let foreign = {
        let (url, stop) = (url.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut client = NatsClient::connect(&url, Duration::from_secs(5)).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.send("hotstock.events.foreign", None, b"{}").unwrap();
                client
                    .next_reply(Instant::now() + Duration::from_secs(5))
                    .unwrap();
            }
        })
    };
    // Batches of 100 purchases make journal batches, and so publisher
    // batches, of many events, until one has been broken and republished.
    let order = json!({"lines": [{"sku": "hot", "quantity": 1}], "confirm": true});
    let orders = json!({"orders": vec![order; 100]});
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&server, "hotstock_nats_batches_republished_total") == 0 {
        assert!(Instant::now() < deadline, "no batch was ever broken");
        let (status, body) = server.call("POST", "/v1/reservations/batch", Some(&orders), &[]);
        assert_eq!(status, 200, "{body}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    foreign.join().unwrap();
    let last = caught_up(&server);
    assert_eq!(
        stream_positions_except(&url, "SHARED", "foreign"),
        (1..=last).collect::<Vec<_>>(),
        "once each, in order, around the other publisher's messages"
    );
    server.kill();
    nats.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&nats_store);
}
