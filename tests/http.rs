//! The real `hotstock serve` on a free loopback port, driven over HTTP/1.1:
//! a whole sale, the error contract, and restarts (SIGTERM and SIGKILL).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::server::{metrics_text, temp_dir, Server};

#[test]
fn a_whole_sale_and_every_error_over_http() {
    let dir = temp_dir("sale");
    let server = Server::start(&dir);
    assert_eq!(server.call("GET", "/healthz", None, &[]).0, 200);

    let (status, sku) = server.call(
        "PUT",
        "/v1/skus/console",
        Some(&json!({"available": 3, "per_customer_limit": 1})),
        &[],
    );
    assert_eq!(status, 200, "{sku}");
    assert_eq!(
        sku,
        json!({"sku": "console", "available": 3, "held": 0, "sold": 0, "on_hand": 3, "safety_stock": 0, "version": 1, "per_customer_limit": 1, "low_stock_threshold": null, "kit": false,
               "backorder_limit": 0, "backorder_until_ms": null, "backordered": 0,
               "sale_starts_at_ms": null, "sale_ends_at_ms": null, "waiting_room": null})
    );

    let hold =
        json!({"lines": [{"sku": "console", "quantity": 1}], "customer": "alice", "ttl_ms": 60000});
    let (status, reservation) = server.call("POST", "/v1/reservations", Some(&hold), &[]);
    assert_eq!(status, 201, "{reservation}");
    assert_eq!(reservation["status"], "held");
    let id = reservation["id"].as_str().unwrap().to_owned();
    let (status, again) = server.call("GET", &format!("/v1/reservations/{id}"), None, &[]);
    assert_eq!(
        (status, &again["lines"]),
        (
            200,
            &json!([{"sku": "console", "quantity": 1, "confirmed": 0, "refunded": 0}])
        )
    );

    let confirm = format!("/v1/reservations/{id}/confirm");
    assert_eq!(
        server.call("POST", &confirm, None, &[]).1["status"],
        "confirmed"
    );
    assert_eq!(
        server.call("POST", &confirm, None, &[]).0,
        200,
        "repeating a transition answers 200"
    );
    let (status, error) = server.call("POST", &format!("/v1/reservations/{id}/cancel"), None, &[]);
    assert_eq!(
        (status, &error["error"], &error["status"]),
        (409, &json!("invalid_transition"), &json!("confirmed"))
    );
    assert_eq!(
        server
            .call("POST", &format!("/v1/reservations/{id}/refund"), None, &[])
            .1["status"],
        "refunded"
    );

    // Per-customer limit, and the idempotency header.
    let buy =
        json!({"lines": [{"sku": "console", "quantity": 1}], "customer": "bob", "confirm": true});
    let first = server.call(
        "POST",
        "/v1/reservations",
        Some(&buy),
        &[("Idempotency-Key", "bob-1")],
    );
    let retry = server.call(
        "POST",
        "/v1/reservations",
        Some(&buy),
        &[("Idempotency-Key", "bob-1")],
    );
    assert_eq!((first.0, retry.0), (201, 201));
    assert_eq!(
        first.1["id"], retry.1["id"],
        "a retry answers with the original reservation"
    );
    let (status, error) = server.call("POST", "/v1/reservations", Some(&buy), &[]);
    assert_eq!((status, &error["error"]), (409, &json!("limit_exceeded")));

    // Sold out names the SKU and what was available.
    server.call(
        "PUT",
        "/v1/skus/last-one",
        Some(&json!({"available": 1})),
        &[],
    );
    let greedy = json!({"lines": [{"sku": "last-one", "quantity": 2}]});
    let (status, error) = server.call("POST", "/v1/reservations", Some(&greedy), &[]);
    assert_eq!(status, 409);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("SKU \"last-one\""),
        "{error}"
    );
    assert_eq!(
        (&error["error"], &error["sku"], &error["available"]),
        (&json!("sold_out"), &json!("last-one"), &json!(1))
    );

    // Operator errors.
    let (status, error) = server.call(
        "POST",
        "/v1/skus/console/adjust",
        Some(&json!({"delta": -10})),
        &[],
    );
    assert_eq!(
        (status, &error["error"]),
        (409, &json!("insufficient_stock"))
    );
    // A keyed adjust is a cluster's receive; alone, the key would not be
    // honoured, so it is refused rather than ignored.
    let (status, error) = server.call(
        "POST",
        "/v1/skus/console/adjust",
        Some(&json!({"delta": 10})),
        &[("Idempotency-Key", "delivery-1")],
    );
    assert_eq!((status, &error["error"]), (400, &json!("invalid_request")));
    let (status, error) = server.call(
        "PUT",
        "/v1/skus/console",
        Some(&json!({"available": 5, "expected_version": 99})),
        &[],
    );
    assert_eq!((status, &error["error"]), (409, &json!("version_conflict")));

    // Everything else the contract names.
    let cases: Vec<(u16, &str, (u16, Value))> = vec![
        (
            404,
            "unknown_sku",
            server.call("GET", "/v1/skus/nope", None, &[]),
        ),
        (
            404,
            "unknown_reservation",
            server.call("GET", "/v1/reservations/00000000deadbeef", None, &[]),
        ),
        (
            404,
            "not_found",
            server.call("GET", "/v2/anything", None, &[]),
        ),
        (
            405,
            "method_not_allowed",
            server.call("DELETE", "/v1/skus/console", None, &[]),
        ),
        (
            400,
            "invalid_request",
            server.raw("POST", "/v1/reservations", b"{not json", &[]),
        ),
        (
            400,
            "invalid_request",
            server.call("POST", "/v1/reservations", Some(&json!({"lines": []})), &[]),
        ),
        (
            400,
            "invalid_request",
            server.call(
                "POST",
                "/v1/reservations",
                Some(&json!({"lines": [{"sku": "console", "quantity": 0}]})),
                &[],
            ),
        ),
        (
            400,
            "invalid_request",
            server.call(
                "PUT",
                "/v1/skus/console",
                Some(&json!({"available": -1})),
                &[],
            ),
        ),
        (
            400,
            "invalid_request",
            server.call(
                "PUT",
                "/v1/skus/console",
                Some(&json!({"avialable": 1})),
                &[],
            ),
        ),
        (
            413,
            "payload_too_large",
            server.raw("PUT", "/v1/skus/big", &vec![b' '; 100_000], &[]),
        ),
    ];
    for (want_status, want_code, (status, body)) in cases {
        assert_eq!(
            (status, body["error"].as_str()),
            (want_status, Some(want_code)),
            "{body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }

    let (status, page) = server.call("GET", "/v1/skus?limit=1", None, &[]);
    assert_eq!(
        (
            status,
            page["skus"].as_array().map(Vec::len),
            &page["next_after"]
        ),
        (200, Some(1), &json!("console"))
    );
    assert_eq!(server.terminate(), Some(0), "SIGTERM exits cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restarts_keep_every_acknowledged_document() {
    let dir = temp_dir("restart");
    let server = Server::start(&dir);
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 10})), &[]);
    let (_, held) = server.call(
        "POST",
        "/v1/reservations",
        Some(&json!({"lines": [{"sku": "tee", "quantity": 2}]})),
        &[],
    );
    let (_, sold) = server.call(
        "POST",
        "/v1/reservations",
        Some(&json!({"lines": [{"sku": "tee", "quantity": 3}], "confirm": true})),
        &[],
    );
    let (_, before) = server.call("GET", "/v1/skus/tee", None, &[]);
    assert_eq!(server.terminate(), Some(0));

    // Graceful restart: every document is back.
    let server = Server::start(&dir);
    assert_eq!(server.call("GET", "/v1/skus/tee", None, &[]).1, before);
    let (_, after_sold) = server.call(
        "GET",
        &format!("/v1/reservations/{}", sold["id"].as_str().unwrap()),
        None,
        &[],
    );
    assert_eq!(after_sold["status"], "confirmed");
    // In `sync`, a 201 means on disk: kill -9 right after it loses nothing.
    let (status, late) = server.call(
        "POST",
        "/v1/reservations",
        Some(&json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true})),
        &[],
    );
    assert_eq!(status, 201);
    server.kill();
    let server = Server::start(&dir);
    let (_, doc) = server.call(
        "GET",
        &format!("/v1/reservations/{}", late["id"].as_str().unwrap()),
        None,
        &[],
    );
    assert_eq!(doc["status"], "confirmed");
    let (_, doc) = server.call(
        "GET",
        &format!("/v1/reservations/{}", held["id"].as_str().unwrap()),
        None,
        &[],
    );
    assert_eq!(doc["status"], "held");
    let (_, sku) = server.call("GET", "/v1/skus/tee", None, &[]);
    assert_eq!(
        (&sku["available"], &sku["held"], &sku["sold"]),
        (&json!(4), &json!(2), &json!(4))
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn operator_routes_need_the_admin_token_when_one_is_set() {
    let dir = temp_dir("auth");
    let server = Server::start_with(&dir, &["--admin-token", "s3cret"]);
    let stock = json!({"available": 5});
    let (status, error) = server.call("PUT", "/v1/skus/tee", Some(&stock), &[]);
    assert_eq!((status, &error["error"]), (401, &json!("unauthorized")));
    let wrong = server.call(
        "PUT",
        "/v1/skus/tee",
        Some(&stock),
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(wrong.0, 401);
    let right = server.call(
        "PUT",
        "/v1/skus/tee",
        Some(&stock),
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(right.0, 200);
    let adjust = server.call(
        "POST",
        "/v1/skus/tee/adjust",
        Some(&json!({"delta": 1})),
        &[],
    );
    assert_eq!(adjust.0, 401);
    // Buyers need no token.
    let buy = json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true});
    assert_eq!(
        server.call("POST", "/v1/reservations", Some(&buy), &[]).0,
        201
    );
    assert_eq!(server.call("GET", "/v1/skus/tee", None, &[]).0, 200);
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--default-ttl-ms` and `--max-ttl-ms` reach the engine: a hold that
/// names no time-to-live gets the default, and one past the maximum is a
/// 400 naming it.
#[test]
fn hold_times_to_live_follow_the_serve_flags() {
    let dir = temp_dir("ttl-flags");
    let flags = ["--default-ttl-ms", "5000", "--max-ttl-ms", "600000"];
    let server = Server::start_with(&dir, &flags);
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 5})), &[]);
    let hold = |ttl: Option<u64>| {
        let mut body = json!({"lines": [{"sku": "tee", "quantity": 1}]});
        if let Some(ttl) = ttl {
            body["ttl_ms"] = json!(ttl);
        }
        server.call("POST", "/v1/reservations", Some(&body), &[])
    };
    let (status, error) = hold(Some(600_001));
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("600000 ms"),
        "{error}"
    );
    let (status, longest) = hold(Some(600_000));
    assert_eq!(status, 201, "{longest}");
    let (status, default) = hold(None);
    assert_eq!(status, 201, "{default}");
    // Made after the longest one: its deadline is 595 s earlier, less the
    // time between the two requests. The engine's own default (10 min, the
    // longest here) would put it no earlier: the gap's sign tells them
    // apart.
    let gap = longest["expires_at_ms"].as_u64().unwrap() as i64
        - default["expires_at_ms"].as_u64().unwrap() as i64;
    assert!((1..=595_000).contains(&gap), "{gap}");
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The record settings reach the engine from the config file: with room
/// for 64 reservation records (one in each of the table's 64 shards; the
/// limit is kept per shard, rounded up) the 65th hold is refused (503
/// overloaded, nothing taken), and the retention keys are accepted beside
/// it.
#[test]
fn record_settings_reach_the_engine_from_the_config_file() {
    let dir = temp_dir("records");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hotstock.toml");
    std::fs::write(
        &config,
        "max_reservations = 64\nrefund_window_hours = 720\nended_retention_minutes = 5\n\
         idempotency_retention_hours = 48\nmax_idempotency_keys = 1000\n",
    )
    .unwrap();
    let server = Server::start_with(&dir.join("data"), &["--config", config.to_str().unwrap()]);
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 100})), &[]);
    let hold = json!({"lines": [{"sku": "tee", "quantity": 1}]});
    for _ in 0..64 {
        let (status, _) = server.call("POST", "/v1/reservations", Some(&hold), &[]);
        assert_eq!(status, 201);
    }
    let (status, error) = server.call("POST", "/v1/reservations", Some(&hold), &[]);
    assert_eq!(
        (status, &error["error"]),
        (503, &json!("overloaded")),
        "{error}"
    );
    let (_, tee) = server.call("GET", "/v1/skus/tee", None, &[]);
    assert_eq!(tee["available"], 36, "the refused hold took nothing");
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn extension_caps_past_their_limits_are_refused_at_start() {
    for (flag, value) in [
        ("--max-extensions", "101"),
        ("--max-hold-ms", "604800001"),
        ("--max-ttl-ms", "86400001"),
        // Longer than the default --max-ttl-ms allows.
        ("--default-ttl-ms", "86400001"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hotstock"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                flag,
                value,
                "--data-dir",
            ])
            .arg(temp_dir("caps"))
            .output()
            .expect("run hotstock");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(&flag[2..].replace('-', "_")),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_hotstock"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(temp_dir("public"))
        .output()
        .expect("run hotstock");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-token"));
}

#[test]
fn sigterm_finishes_the_request_in_flight() {
    let dir = temp_dir("drain");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotstock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hotstock serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let server = Server { child, addr };
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 5})), &[]);

    // A purchase whose body is only half sent when the signal arrives.
    let body = json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true}).to_string();
    let (head, tail) = body.as_bytes().split_at(body.len() / 2);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /v1/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(head).unwrap();

    // Only a request the server has accepted and is handling is in flight
    // (one still in the kernel's backlog is reset, as in any server): wait
    // until the gauge counts it besides the scrape itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while common::server::metric(&server, "hotstock_http_requests_in_flight") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the half-sent request never became in flight"
        );
    }
    let mut server = server;
    let child = &mut server.child;
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Wait until the server says it stopped accepting: only then is the
    // request provably in flight across the shutdown.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    loop {
        let line = lines.next().expect("server stderr").expect("line");
        if line.contains("no longer accepting connections") {
            break;
        }
    }
    stream.write_all(tail).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight request finished: {response}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // And it was kept: the next start shows the sale.
    let server = Server::start(&dir);
    assert_eq!(server.call("GET", "/v1/skus/tee", None, &[]).1["sold"], 1);
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_count_requests_outcomes_and_the_journal() {
    let dir = temp_dir("metrics");
    let server = Server::start(&dir);
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 1})), &[]);
    let buy = json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true});
    assert_eq!(
        server.call("POST", "/v1/reservations", Some(&buy), &[]).0,
        201
    );
    assert_eq!(
        server.call("POST", "/v1/reservations", Some(&buy), &[]).0,
        409
    );
    assert_eq!(server.call("GET", "/nowhere", None, &[]).0, 404);

    let text = common::server::metrics_text(&server);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for line in [
        "hotstock_http_requests_total{route=\"reservation_create\",code=\"ok\"} 1",
        "hotstock_http_requests_total{route=\"reservation_create\",code=\"sold_out\"} 1",
        "hotstock_http_requests_total{route=\"other\",code=\"not_found\"} 1",
        "hotstock_reservations_total{outcome=\"created\"} 1",
        "hotstock_http_responses_total{route=\"reservation_create\",status=\"201\"} 1",
        "hotstock_http_responses_total{route=\"reservation_create\",status=\"409\"} 1",
        "hotstock_sold_out_total 1",
        "hotstock_journal_failed 0",
        // The store has refused nothing (the first checkpoint is 5 s in).
        "hotstock_checkpoint_failures_total 0",
        "hotstock_checkpoint_failures_in_a_row 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let batches: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("hotstock_journal_fsync_seconds_count "))
        .and_then(|n| n.parse().ok())
        .expect("fsync histogram");
    assert!(
        batches >= 2,
        "sync writes made at least two durable batches: {batches}"
    );
    for gauge in [
        "hotstock_checkpoint_age_seconds ",
        "hotstock_checkpoints_total ",
    ] {
        let value = text.lines().find_map(|l| l.strip_prefix(gauge));
        assert!(
            value.is_some_and(|v| v.parse::<f64>().is_ok()),
            "{gauge}in\n{text}"
        );
    }
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sku_over_its_rate_limit_is_refused_with_429() {
    let dir = temp_dir("rate");
    let server = Server::start_with(&dir, &["--sku-rate-limit", "1"]);
    server.call(
        "PUT",
        "/v1/skus/tee",
        Some(&json!({"available": 1000})),
        &[],
    );
    let buy = json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true});
    // One a second: of 50 back-to-back requests all would pass only if they
    // took over 49 s (the exact arithmetic is unit-tested in src/rate.rs).
    let answers: Vec<(u16, Value)> = (0..50)
        .map(|_| server.call("POST", "/v1/reservations", Some(&buy), &[]))
        .collect();
    assert_eq!(answers[0].0, 201, "the first fits the burst");
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .map(|(_, body)| body)
        .collect();
    assert!(!refused.is_empty(), "no request was refused");
    assert_eq!(
        (&refused[0]["error"], &refused[0]["sku"]),
        (&json!("overloaded"), &json!("tee"))
    );
    let sold = server.call("GET", "/v1/skus/tee", None, &[]).1["sold"]
        .as_u64()
        .unwrap();
    assert_eq!(
        sold as usize,
        50 - refused.len(),
        "refused requests took nothing"
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flash_sale_over_http_sells_exactly_the_stock() {
    const STOCK: u64 = 300;
    let dir = temp_dir("flash");
    let server = Server::start(&dir);
    server.call(
        "PUT",
        "/v1/skus/drop",
        Some(&json!({"available": STOCK})),
        &[],
    );
    let buy = json!({"lines": [{"sku": "drop", "quantity": 1}], "confirm": true});
    // 16 buyers on their own connections race until they are told sold out.
    let wins: Vec<u64> = std::thread::scope(|s| {
        let buyers: Vec<_> = (0..16)
            .map(|_| {
                let (server, buy) = (&server, &buy);
                s.spawn(move || {
                    let mut wins = 0;
                    loop {
                        let (status, body) =
                            server.call("POST", "/v1/reservations", Some(buy), &[]);
                        match (status, body["error"].as_str()) {
                            (201, _) => wins += 1,
                            (409, Some("sold_out")) => return wins,
                            other => panic!("unexpected answer {other:?}"),
                        }
                    }
                })
            })
            .collect();
        buyers.into_iter().map(|b| b.join().unwrap()).collect()
    });
    assert_eq!(
        wins.iter().sum::<u64>(),
        STOCK,
        "successes == stock exactly"
    );
    let (_, sku) = server.call("GET", "/v1/skus/drop", None, &[]);
    assert_eq!(
        (&sku["available"], &sku["sold"]),
        (&json!(0), &json!(STOCK))
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn holds_expire_and_carts_are_all_or_nothing_over_http() {
    let dir = temp_dir("expiry");
    let server = Server::start(&dir);
    server.call("PUT", "/v1/skus/a", Some(&json!({"available": 5})), &[]);
    server.call("PUT", "/v1/skus/b", Some(&json!({"available": 1})), &[]);
    // A cart that cannot be filled takes nothing.
    let cart = json!({"lines": [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 2}]});
    let (status, error) = server.call("POST", "/v1/reservations", Some(&cart), &[]);
    assert_eq!(
        (status, &error["error"], &error["sku"]),
        (409, &json!("sold_out"), &json!("b"))
    );
    assert_eq!(
        server.call("GET", "/v1/skus/a", None, &[]).1["available"],
        5
    );
    // One that can is taken whole.
    let cart =
        json!({"lines": [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 1}], "ttl_ms": 1});
    let (status, hold) = server.call("POST", "/v1/reservations", Some(&cart), &[]);
    assert_eq!(status, 201, "{hold}");
    // A 1 ms hold expires: wait on the status itself, bounded.
    let path = format!("/v1/reservations/{}", hold["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.call("GET", &path, None, &[]).1["status"] != "expired" {
        assert!(std::time::Instant::now() < deadline, "hold never expired");
    }
    let (status, error) = server.call("POST", &format!("{path}/confirm"), None, &[]);
    assert_eq!(
        (status, &error["status"]),
        (409, &json!("expired")),
        "a late confirm does not sell"
    );
    assert_eq!(
        server.call("GET", "/v1/skus/a", None, &[]).1["available"],
        5,
        "units came back"
    );
    assert_eq!(
        server.call("GET", "/v1/skus/b", None, &[]).1["available"],
        1
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_file_fills_what_the_command_line_leaves_unset() {
    let dir = temp_dir("config");
    std::fs::create_dir_all(&dir).unwrap();
    let elsewhere = dir.join("from-file-data");
    let config = dir.join("hotstock.toml");
    std::fs::write(
        &config,
        format!(
            "admin_token = \"from-file\"\ndata_dir = {:?}\nmax_in_flight = 64\n",
            elsewhere.display().to_string()
        ),
    )
    .unwrap();
    // The command line names the data directory (it wins); the file gives
    // the admin token (nothing else set it).
    let data = dir.join("data");
    let server = Server::start_with(&data, &["--config", config.to_str().unwrap()]);
    let stock = json!({"available": 1});
    assert_eq!(server.call("PUT", "/v1/skus/tee", Some(&stock), &[]).0, 401);
    assert_eq!(
        server
            .call(
                "PUT",
                "/v1/skus/tee",
                Some(&stock),
                &[("Authorization", "Bearer from-file")]
            )
            .0,
        200
    );
    assert_eq!(server.terminate(), Some(0));
    assert!(
        data.join("journal").is_dir() && !elsewhere.exists(),
        "the command line's data directory won"
    );

    std::fs::write(&config, "listen = \"127.0.0.1:0\"\ncolour = \"blue\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hotstock"))
        .args(["serve", "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting \"colour\""));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one response (head and a `content-length` body) from a keep-alive
/// connection; returns its status.
fn read_one_response(stream: &mut TcpStream) -> u16 {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).expect("read the head"),
            1,
            "closed mid-head"
        );
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).expect("ASCII head");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read the body");
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether the server closed `stream`: a read sees the end (or a reset)
/// before the 30 s read timeout, which only bounds a failing test.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

const KEEP_ALIVE_GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn a_request_head_that_never_ends_is_closed_after_the_header_timeout() {
    let dir = temp_dir("slow-head");
    let server = Server::start_with(&dir, &["--header-timeout-ms", "200"]);
    // Connected and silent: owes a head from the start.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    // Half a head, then nothing: the slowloris shape.
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(b"POST /v1/reservations HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    assert!(
        closed_by_server(&mut silent),
        "a silent connection stayed open"
    );
    assert!(closed_by_server(&mut half), "a half-sent head stayed open");
    // The server itself is fine.
    assert_eq!(server.call("GET", "/healthz", None, &[]).0, 200);
    server.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_keep_alive_connection_waits_between_requests_until_the_idle_timeout() {
    let dir = temp_dir("idle");
    let server = Server::start_with(
        &dir,
        &["--header-timeout-ms", "100", "--idle-timeout-ms", "2000"],
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(KEEP_ALIVE_GET).unwrap();
    assert_eq!(read_one_response(&mut stream), 200);
    // Longer than the header timeout, shorter than the idle timeout: the
    // wait between requests is not a slow head. (The sleep is the subject
    // of the test: time passing with nothing sent.)
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(KEEP_ALIVE_GET).unwrap();
    assert_eq!(read_one_response(&mut stream), 200);
    // Then nothing: closed once idle for the idle timeout.
    assert!(
        closed_by_server(&mut stream),
        "an idle connection stayed open"
    );
    server.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bug: SIGINT could be missed. The accept loop made a new `ctrl_c()`
/// future on every pass (a signal arriving while none existed was lost),
/// and none existed before the loop, so a SIGINT during recovery killed
/// the process by the default action instead of stopping it cleanly. Now
/// both signals are registered before the data directory is opened.
///
/// The journal holds `RECOVERY_EVENTS` unsettled sales, so recovery
/// replays them for far longer than the signal takes to arrive: the
/// signal lands during recovery, not after it (with the handlers
/// registered once recovery is over, this test fails: the process dies by
/// the signal).
#[test]
fn sigint_during_recovery_stops_the_server_cleanly() {
    const RECOVERY_EVENTS: u64 = 300_000;
    let dir = temp_dir("sigint");
    let (durable, _) = hotstock::durable::DurableEngine::open(
        hotstock::durable::DurableConfig::new(&dir, hotstock::durable::journal::Durability::Async),
    )
    .expect("open");
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("tee", RECOVERY_EVENTS, None, None).unwrap();
    for _ in 0..RECOVERY_EVENTS {
        engine.sell(sku, 1).unwrap();
    }
    engine.wait_durable(engine.durability_ticket()).unwrap();
    // No checkpoint: recovery replays every sale.
    durable.crash();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hotstock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hotstock serve");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = stderr.next().expect("server stderr").expect("line");
        if line.contains("opening") {
            break;
        }
    }
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(
        rest.iter().any(|line| line.contains("SIGINT received")),
        "{rest:?}"
    );
    // It recovered every sale before it stopped.
    assert!(
        rest.iter().any(|line| line.contains(&format!(
            "({} journal events replayed)",
            RECOVERY_EVENTS + 2
        ))),
        "{rest:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bug (found by schemathesis): a 405 did not say which methods the
/// resource takes; RFC 9110 requires the `Allow` header.
#[test]
fn a_wrong_method_is_answered_with_the_allowed_ones() {
    let dir = temp_dir("allow");
    let server = Server::start(&dir);
    for (method, path, allow) in [
        ("DELETE", "/v1/skus/tee", "GET, PUT"),
        ("GET", "/v1/reservations", "POST"),
        ("PATCH", "/v1/reservations/0000000000000000/cancel", "POST"),
        ("POST", "/healthz", "GET"),
    ] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 405"), "{response}");
        let header = format!("allow: {allow}\r\n");
        assert!(
            response
                .to_ascii_lowercase()
                .contains(&header.to_ascii_lowercase()),
            "{method} {path}: no {header:?} in\n{response}"
        );
    }
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hold_is_extended_over_http_within_its_caps() {
    let dir = temp_dir("extend");
    let server = Server::start(&dir);
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 3})), &[]);
    let order = json!({"lines": [{"sku": "tee", "quantity": 1}], "ttl_ms": 60_000});
    let (status, hold) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    assert_eq!((status, &hold["extensions"]), (201, &json!(0)), "{hold}");
    let path = format!("/v1/reservations/{}/extend", hold["id"].as_str().unwrap());
    let mut deadline = hold["expires_at_ms"].as_u64().unwrap();
    // Three extensions (the default cap), each later than the last.
    for n in 1..=3u64 {
        let body = json!({"ttl_ms": 60_000 + n * 60_000});
        let (status, extended) = server.call("POST", &path, Some(&body), &[]);
        assert_eq!(status, 200, "{extended}");
        assert_eq!(extended["status"], "held");
        assert_eq!(extended["extensions"], n);
        assert_eq!(extended["extensions_left"], 3 - n);
        let next = extended["expires_at_ms"].as_u64().unwrap();
        assert!(next > deadline, "{next} after {deadline}");
        deadline = next;
    }
    let (status, refused) = server.call("POST", &path, Some(&json!({"ttl_ms": 600_000})), &[]);
    assert_eq!(
        (
            status,
            &refused["error"],
            &refused["reason"],
            &refused["expires_at_ms"]
        ),
        (
            409,
            &json!("extension_refused"),
            &json!("max_extensions"),
            &json!(deadline)
        ),
        "{refused}"
    );
    // Bad bodies change nothing.
    for bad in [
        json!({}),
        json!({"ttl_ms": 0}),
        json!({"ttl_ms": "soon"}),
        json!({"ttl": 5}),
    ] {
        let (status, error) = server.call("POST", &path, Some(&bad), &[]);
        assert_eq!(
            (status, &error["error"]),
            (400, &json!("invalid_request")),
            "{bad}: {error}"
        );
    }
    let read = server
        .call("GET", &path.replace("/extend", ""), None, &[])
        .1;
    assert_eq!(
        (&read["extensions"], &read["expires_at_ms"]),
        (&json!(3), &json!(deadline))
    );
    // An ended reservation cannot be extended.
    let cancel = path.replace("/extend", "/cancel");
    assert_eq!(server.call("POST", &cancel, None, &[]).0, 200);
    let (status, error) = server.call("POST", &path, Some(&json!({"ttl_ms": 1_000})), &[]);
    assert_eq!(
        (status, &error["error"], &error["status"]),
        (409, &json!("invalid_transition"), &json!("cancelled"))
    );
    let (status, _) = server.call(
        "POST",
        "/v1/reservations/0000000000000000/extend",
        Some(&json!({"ttl_ms": 1_000})),
        &[],
    );
    assert_eq!(status, 404);
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn partial_confirm_and_refund_over_http() {
    let dir = temp_dir("partial");
    let server = Server::start(&dir);
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 5})), &[]);
    server.call("PUT", "/v1/skus/mug", Some(&json!({"available": 5})), &[]);
    let cart = json!({"lines": [{"sku": "tee", "quantity": 3}, {"sku": "mug", "quantity": 2}]});
    let (status, hold) = server.call("POST", "/v1/reservations", Some(&cart), &[]);
    assert_eq!(status, 201, "{hold}");
    assert_eq!(hold["lines"][0]["confirmed"], 0);
    let path = format!("/v1/reservations/{}", hold["id"].as_str().unwrap());
    // Refused requests change nothing.
    for (bad, code) in [
        (
            json!({"lines": [{"sku": "tee", "quantity": 4}]}),
            "exceeds_reservation",
        ),
        (
            json!({"lines": [{"sku": "tee", "quantity": 0}]}),
            "invalid_request",
        ),
        (json!({"lines": [{"sku": "tee"}]}), "invalid_request"),
        (json!({"lines": "tee"}), "invalid_request"),
        (json!({"items": []}), "invalid_request"),
    ] {
        let (_, error) = server.call("POST", &format!("{path}/confirm"), Some(&bad), &[]);
        assert_eq!(error["error"], code, "{bad}: {error}");
    }
    assert_eq!(server.call("GET", &path, None, &[]).1["status"], "held");
    // Confirm 2 tees; the third tee and both mugs go back at once.
    let part = json!({"lines": [{"sku": "tee", "quantity": 2}]});
    let (status, confirmed) = server.call("POST", &format!("{path}/confirm"), Some(&part), &[]);
    assert_eq!(
        (status, &confirmed["status"]),
        (200, &json!("confirmed")),
        "{confirmed}"
    );
    assert_eq!(
        confirmed["lines"],
        json!([
            {"sku": "tee", "quantity": 3, "confirmed": 2, "refunded": 0},
            {"sku": "mug", "quantity": 2, "confirmed": 0, "refunded": 0}
        ])
    );
    let tee = server.call("GET", "/v1/skus/tee", None, &[]).1;
    assert_eq!(
        (&tee["available"], &tee["held"], &tee["sold"]),
        (&json!(3), &json!(0), &json!(2))
    );
    assert_eq!(
        server.call("GET", "/v1/skus/mug", None, &[]).1["available"],
        5
    );
    // Refund one, then more than is left, then the rest.
    let one = json!({"lines": [{"sku": "tee", "quantity": 1}]});
    let (status, refunded) = server.call("POST", &format!("{path}/refund"), Some(&one), &[]);
    assert_eq!(
        (
            status,
            &refunded["status"],
            &refunded["lines"][0]["refunded"]
        ),
        (200, &json!("confirmed"), &json!(1))
    );
    let two = json!({"lines": [{"sku": "tee", "quantity": 2}]});
    let (status, error) = server.call("POST", &format!("{path}/refund"), Some(&two), &[]);
    assert_eq!(
        (status, &error["error"], &error["allowed"]),
        (409, &json!("exceeds_reservation"), &json!(1))
    );
    let (status, all) = server.call("POST", &format!("{path}/refund"), None, &[]);
    assert_eq!(
        (status, &all["status"], &all["lines"][0]["refunded"]),
        (200, &json!("refunded"), &json!(2))
    );
    assert_eq!(
        server.call("GET", "/v1/skus/tee", None, &[]).1["available"],
        5
    );
    // The feed tells what was sold and refunded, line by line (read until
    // all three are there: the feed may trail the answer by a batch).
    let mut told: Vec<(String, Value, Value)> = Vec::new();
    let mut after = 0;
    while told.len() < 3 {
        let path = format!(
            "/v1/events?after={after}&sku=tee&type=reservation.confirmed,reservation.refunded&wait_ms=10000"
        );
        let page = server.call("GET", &path, None, &[]).1;
        let events = page["events"].as_array().unwrap();
        assert!(!events.is_empty(), "an event is missing: {told:?}");
        after = page["next_after"].as_u64().unwrap();
        told.extend(events.iter().map(|e| {
            let line = &e["lines"][0];
            let kind = e["type"].as_str().unwrap().to_owned();
            (kind, line["confirmed"].clone(), line["refunded"].clone())
        }));
    }
    let expected = [
        ("reservation.confirmed", 2, 0),
        ("reservation.refunded", 2, 1),
        ("reservation.refunded", 2, 2),
    ];
    let expected: Vec<(String, Value, Value)> = (expected.iter())
        .map(|&(kind, c, r)| (kind.to_owned(), json!(c), json!(r)))
        .collect();
    assert_eq!(told, expected);
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn on_hand_and_safety_stock_over_http() {
    let dir = temp_dir("on-hand");
    let server = Server::start(&dir);
    let put = |body: Value| server.call("PUT", "/v1/skus/mug", Some(&body), &[]);
    let counts = |sku: &Value| {
        ["available", "held", "sold", "on_hand", "safety_stock"].map(|k| sku[k].as_u64().unwrap())
    };

    // The example: 10 on hand, 3 kept back, 7 for sale.
    let (status, sku) = put(json!({"on_hand": 10, "safety_stock": 3}));
    assert_eq!(status, 200, "{sku}");
    assert_eq!(counts(&sku), [7, 0, 0, 10, 3]);

    // 2 held and 1 sold: the sold unit has left, the held ones are there.
    let hold = json!({"lines": [{"sku": "mug", "quantity": 2}], "ttl_ms": 60000});
    assert_eq!(
        server.call("POST", "/v1/reservations", Some(&hold), &[]).0,
        201
    );
    let buy = json!({"lines": [{"sku": "mug", "quantity": 1}], "confirm": true});
    assert_eq!(
        server.call("POST", "/v1/reservations", Some(&buy), &[]).0,
        201
    );
    let (_, sku) = server.call("GET", "/v1/skus/mug", None, &[]);
    assert_eq!(counts(&sku), [4, 2, 1, 9, 3]);

    // Below what is committed (2 held + 3 kept back): a 409 naming each part,
    // and nothing changes.
    let (status, error) = put(json!({"on_hand": 4}));
    assert_eq!(status, 409, "{error}");
    assert_eq!(
        (
            &error["error"],
            &error["on_hand"],
            &error["held"],
            &error["safety_stock"]
        ),
        (&json!("below_committed"), &json!(4), &json!(2), &json!(3))
    );
    assert!(
        error["message"].as_str().unwrap().contains("safety stock"),
        "{error}"
    );
    let (status, error) = put(json!({"safety_stock": 8}));
    assert_eq!((status, &error["on_hand"]), (409, &json!(9)), "{error}");
    assert_eq!(server.call("GET", "/v1/skus/mug", None, &[]).1, sku);

    // Lowering the safety stock in the same request makes the count fit.
    let (status, sku) = put(json!({"on_hand": 4, "safety_stock": 1}));
    assert_eq!(status, 200, "{sku}");
    assert_eq!(counts(&sku), [1, 2, 1, 4, 1]);
    // `available` keeps its meaning, and the safety stock stays.
    let (_, sku) = put(json!({"available": 5}));
    assert_eq!(counts(&sku), [5, 2, 1, 8, 1]);

    // Bad input: a clear 400, nothing changed.
    for bad in [
        json!({"available": 1, "on_hand": 1}),
        json!({"per_customer_limit": 2}),
        json!({"safety_stock": -1}),
        json!({"safety_stock": 1_099_511_627_777u64}),
        json!({"on_hand": "ten"}),
    ] {
        let (status, error) = put(bad.clone());
        assert_eq!(
            (status, &error["error"]),
            (400, &json!("invalid_request")),
            "{bad} -> {error}"
        );
    }
    // A new SKU whose safety stock is more than it has: refused, not created.
    let (status, error) = server.call(
        "PUT",
        "/v1/skus/new",
        Some(&json!({"on_hand": 2, "safety_stock": 3})),
        &[],
    );
    assert_eq!((status, &error["sku"]), (409, &Value::Null), "{error}");
    assert_eq!(server.call("GET", "/v1/skus/new", None, &[]).0, 404);

    // The feed's events show the safety stock and the units on hand.
    let (_, page) = server.call("GET", "/v1/events?after=0&limit=100", None, &[]);
    let last = page["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["type"], &last["on_hand"], &last["safety_stock"]),
        (&json!("sku.changed"), &json!(8), &json!(1)),
        "{last}"
    );

    // Both survive a crash (sync: a 200 is on disk).
    let (_, before) = server.call("GET", "/v1/skus/mug", None, &[]);
    server.kill();
    let server = Server::start(&dir);
    assert_eq!(server.call("GET", "/v1/skus/mug", None, &[]).1, before);
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kits_over_http() {
    let dir = temp_dir("kits");
    let server = Server::start(&dir);
    let put = |path: &str, body: Value| server.call("PUT", path, Some(&body), &[]);
    assert_eq!(put("/v1/skus/mug", json!({"available": 5})).0, 200);
    assert_eq!(put("/v1/skus/coaster", json!({"available": 7})).0, 200);
    let gift =
        json!({"components": [{"sku": "mug", "quantity": 1}, {"sku": "coaster", "quantity": 2}]});
    let (status, kit) = put("/v1/kits/gift", gift.clone());
    assert_eq!(status, 200, "{kit}");
    assert_eq!(
        (
            &kit["kit"],
            &kit["components"],
            &kit["available"],
            &kit["held"]
        ),
        (&json!(true), &gift["components"], &json!(3), &json!(0))
    );
    assert_eq!(server.call("GET", "/v1/skus/gift", None, &[]).1, kit);

    // A kit and one of its components in one cart: the coaster counted once.
    let cart =
        json!({"lines": [{"sku": "gift", "quantity": 1}, {"sku": "coaster", "quantity": 6}]});
    let (status, error) = server.call("POST", "/v1/reservations", Some(&cart), &[]);
    assert_eq!(
        (status, &error["error"], &error["sku"], &error["requested"]),
        (409, &json!("sold_out"), &json!("coaster"), &json!(8)),
        "{error}"
    );
    let buy = json!({"lines": [{"sku": "gift", "quantity": 2}], "confirm": true});
    let (status, sale) = server.call("POST", "/v1/reservations", Some(&buy), &[]);
    assert_eq!(status, 201, "{sale}");
    assert_eq!(
        sale["lines"],
        json!([{"sku": "mug", "quantity": 2, "confirmed": 2, "refunded": 0},
               {"sku": "coaster", "quantity": 4, "confirmed": 4, "refunded": 0}])
    );
    assert_eq!(
        server.call("GET", "/v1/skus/gift", None, &[]).1["available"],
        1
    );

    // What a kit cannot be or do: a 409 kit_conflict naming the SKU.
    for (path, body) in [
        (
            "/v1/kits/mug",
            json!({"components": [{"sku": "coaster", "quantity": 1}]}),
        ),
        (
            "/v1/kits/duo",
            json!({"components": [{"sku": "gift", "quantity": 1}]}),
        ),
        ("/v1/skus/gift", json!({"available": 4})),
    ] {
        let (status, error) = put(path, body);
        assert_eq!(
            (status, &error["error"]),
            (409, &json!("kit_conflict")),
            "{path}: {error}"
        );
    }
    let (status, error) = server.call(
        "POST",
        "/v1/skus/gift/adjust",
        Some(&json!({"delta": 1})),
        &[],
    );
    assert_eq!(
        (status, &error["error"], &error["sku"]),
        (409, &json!("kit_conflict"), &json!("gift"))
    );
    // Bad definitions: a clear 4xx, and nothing created.
    for (body, want) in [
        (json!({"components": []}), 400),
        (json!({"components": [{"sku": "mug"}]}), 400),
        (json!({"components": [{"sku": "mug", "quantity": 0}]}), 400),
        (
            json!({"components": [{"sku": "mug", "quantity": 1}, {"sku": "mug", "quantity": 1}]}),
            409,
        ),
        (json!({"components": [{"sku": "nope", "quantity": 1}]}), 404),
        (json!({"parts": []}), 400),
    ] {
        let (status, error) = put("/v1/kits/duo", body.clone());
        assert_eq!(status, want, "{body} -> {error}");
    }
    assert_eq!(server.call("GET", "/v1/skus/duo", None, &[]).0, 404);

    // The kit and its sale survive a crash (sync: a 200 or 201 is on disk).
    let (_, before) = server.call("GET", "/v1/skus/gift", None, &[]);
    server.kill();
    let server = Server::start(&dir);
    assert_eq!(server.call("GET", "/v1/skus/gift", None, &[]).1, before);
    let (status, again) = server.call(
        "GET",
        &format!("/v1/reservations/{}", sale["id"].as_str().unwrap()),
        None,
        &[],
    );
    assert_eq!((status, &again["lines"]), (200, &sale["lines"]));
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refund of part with an `Idempotency-Key`, retried (the client lost the
/// answer), gives back once; the key with other lines is a 409.
#[test]
fn a_keyed_refund_of_part_is_given_back_once_over_http() {
    let dir = temp_dir("refund-key");
    let server = Server::start(&dir);
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 5})), &[]);
    let buy = json!({"lines": [{"sku": "tee", "quantity": 3}], "confirm": true});
    let (_, sale) = server.call("POST", "/v1/reservations", Some(&buy), &[]);
    let refund = format!("/v1/reservations/{}/refund", sale["id"].as_str().unwrap());
    let one = json!({"lines": [{"sku": "tee", "quantity": 1}]});
    let key = [("Idempotency-Key", "refund-42")];
    for _ in 0..2 {
        let (status, doc) = server.call("POST", &refund, Some(&one), &key);
        assert_eq!(
            (status, &doc["lines"][0]["refunded"]),
            (200, &json!(1)),
            "{doc}"
        );
    }
    assert_eq!(server.call("GET", "/v1/skus/tee", None, &[]).1["sold"], 2);
    let two = json!({"lines": [{"sku": "tee", "quantity": 2}]});
    let (status, error) = server.call("POST", &refund, Some(&two), &key);
    assert_eq!(
        (status, &error["error"]),
        (409, &json!("idempotency_key_reused"))
    );
    // Without a key each call refunds again, as documented.
    let (status, doc) = server.call("POST", &refund, Some(&one), &[]);
    assert_eq!((status, &doc["lines"][0]["refunded"]), (200, &json!(2)));
    // A malformed key is refused whether or not lines are named.
    for body in [Some(&one), None] {
        let (status, error) = server.call("POST", &refund, body, &[("Idempotency-Key", "a b")]);
        assert_eq!(
            (status, &error["error"]),
            (400, &json!("invalid_request")),
            "{error}"
        );
    }
    assert_eq!(server.call("GET", "/v1/skus/tee", None, &[]).1["sold"], 1);
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// #14.4 over HTTP: a backorder allowance set by PUT, an order past zero
/// answered with the units it is owed, a restock that fills them (and says
/// so in the feed), and bad settings refused.
#[test]
fn backorders_over_http() {
    let dir = temp_dir("backorders");
    let server = Server::start(&dir);
    let put = |body: Value| server.call("PUT", "/v1/skus/pre", Some(&body), &[]);
    let (status, sku) = put(json!({"available": 1, "backorder_limit": 5}));
    assert_eq!(status, 200, "{sku}");
    assert_eq!(
        (
            &sku["backorder_limit"],
            &sku["backordered"],
            &sku["backorder_until_ms"]
        ),
        (&json!(5), &json!(0), &Value::Null)
    );

    // 3 ordered, 1 there: 2 owed, and the answer says so per line.
    let order = json!({"lines": [{"sku": "pre", "quantity": 3}], "confirm": true});
    let (status, reservation) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    assert_eq!(status, 201, "{reservation}");
    assert_eq!(reservation["lines"][0]["backordered"], json!(2));
    let id = reservation["id"].as_str().unwrap().to_owned();
    let (_, sku) = server.call("GET", "/v1/skus/pre", None, &[]);
    assert_eq!(
        ["available", "sold", "backordered"].map(|k| sku[k].as_u64().unwrap()),
        [0, 1, 2]
    );
    // Past the allowance (2 owed + 4 > 5): sold out, nothing changes.
    let big = json!({"lines": [{"sku": "pre", "quantity": 4}]});
    let (status, error) = server.call("POST", "/v1/reservations", Some(&big), &[]);
    assert_eq!(
        (status, &error["error"]),
        (409, &json!("sold_out")),
        "{error}"
    );

    // A restock fills the backorder first; the rest is for sale.
    let adjust = json!({"delta": 3});
    assert_eq!(
        server
            .call("POST", "/v1/skus/pre/adjust", Some(&adjust), &[])
            .0,
        200
    );
    let (_, reservation) = server.call("GET", &format!("/v1/reservations/{id}"), None, &[]);
    // Filled in full: owed nothing, the line reads like any other.
    assert_eq!(reservation["lines"][0].get("backordered"), None);
    assert_eq!(reservation["lines"][0]["confirmed"], json!(3));
    let (_, sku) = server.call("GET", "/v1/skus/pre", None, &[]);
    assert_eq!(
        ["available", "sold", "backordered"].map(|k| sku[k].as_u64().unwrap()),
        [1, 3, 0]
    );
    let (_, page) = server.call(
        "GET",
        "/v1/events?after=0&type=reservation.backorder_filled&wait_ms=10000",
        None,
        &[],
    );
    let fill = &page["events"][0];
    assert_eq!(
        (
            &fill["reservation"],
            &fill["units"],
            &fill["owed"],
            &fill["backordered"]
        ),
        (&json!(id), &json!(2), &json!(0), &json!(0)),
        "{page}"
    );

    // The rule alone, with an end; then the end removed.
    let (status, sku) = put(json!({"backorder_until_ms": 1_000}));
    assert_eq!(
        (status, &sku["backorder_until_ms"]),
        (200, &json!(1_000)),
        "{sku}"
    );
    assert_eq!(sku["backorder_limit"], json!(5), "the limit is kept");
    let (_, sku) = put(json!({"backorder_until_ms": null}));
    assert_eq!(sku["backorder_until_ms"], Value::Null);

    // Bad input: a clear 400 (or 404 for a SKU that does not exist).
    for bad in [
        json!({"backorder_limit": -1}),
        json!({"backorder_limit": 1_099_511_627_777u64}),
        json!({"backorder_until_ms": "soon"}),
        json!({"backorder_until_ms": 9_223_372_036_854_775_808u64}),
    ] {
        let (status, error) = put(bad.clone());
        assert_eq!(
            (status, &error["error"]),
            (400, &json!("invalid_request")),
            "{bad} -> {error}"
        );
    }
    let (status, error) = put(json!({"backorder_limit": 1, "expected_version": 3}));
    assert_eq!(
        (status, &error["error"]),
        (409, &json!("version_conflict")),
        "{error}"
    );
    // A preorder: a new SKU with nothing in stock and an allowance.
    let (status, sku) = server.call(
        "PUT",
        "/v1/skus/preorder",
        Some(&json!({"backorder_limit": 100, "backorder_until_ms": 4_102_444_800_000u64})),
        &[],
    );
    assert_eq!(status, 200, "{sku}");
    assert_eq!(
        (&sku["available"], &sku["backorder_limit"]),
        (&json!(0), &json!(100))
    );
}

/// #14.5 over HTTP: locations set by PUT, a SKU document with each
/// location and the sums, orders allocated, named, split and refused
/// (with what a client needs to act), partial confirms naming the
/// location, and the feed naming the location apart from the SKU.
#[test]
fn locations_over_http() {
    let dir = temp_dir("locations");
    let server = Server::start(&dir);
    let put = |location: &str, body: Value| {
        let path = format!("/v1/skus/tee/locations/{location}");
        server.call("PUT", &path, Some(&body), &[])
    };
    let (status, sku) = put("berlin", json!({"available": 3, "priority": 0}));
    assert_eq!(status, 200, "{sku}");
    let (status, sku) = put(
        "paris",
        json!({"on_hand": 6, "safety_stock": 2, "priority": 1}),
    );
    assert_eq!(status, 200, "{sku}");
    assert_eq!(
        ["available", "held", "sold", "safety_stock", "on_hand"].map(|k| sku[k].clone()),
        [json!(7), json!(0), json!(0), json!(2), json!(9)],
        "{sku}"
    );
    let paris = &sku["locations"][1];
    assert_eq!(
        (&paris["location"], &paris["available"], &paris["priority"]),
        (&json!("paris"), &json!(4), &json!(1)),
        "{sku}"
    );

    // Allocated: the lower priority number first (berlin has all 2).
    let order = json!({"lines": [{"sku": "tee", "quantity": 2}]});
    let (status, reservation) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    assert_eq!(status, 201, "{reservation}");
    let line = &reservation["lines"][0];
    assert_eq!(
        (&line["sku"], &line["location"]),
        (&json!("tee"), &json!("berlin"))
    );
    // 1 left at berlin, 4 at paris: 5 fit no one location...
    let five = json!({"lines": [{"sku": "tee", "quantity": 5}]});
    let (status, error) = server.call("POST", "/v1/reservations", Some(&five), &[]);
    assert_eq!(
        (
            status,
            &error["error"],
            &error["most_at_one_location"],
            &error["available"]
        ),
        (409, &json!("not_at_one_location"), &json!(4), &json!(5)),
        "{error}"
    );
    // ... unless the line allows a split.
    let split = json!({"lines": [{"sku": "tee", "quantity": 5, "split": true}]});
    let (status, reservation) = server.call("POST", "/v1/reservations", Some(&split), &[]);
    assert_eq!(status, 201, "{reservation}");
    let id = reservation["id"].as_str().unwrap().to_owned();
    let from: Vec<(Value, Value)> = (reservation["lines"].as_array().unwrap().iter())
        .map(|l| (l["location"].clone(), l["quantity"].clone()))
        .collect();
    assert_eq!(
        from,
        vec![(json!("berlin"), json!(1)), (json!("paris"), json!(4))]
    );
    // Confirm part, naming the location: the rest goes back where it
    // came from (1 to paris; berlin's line, not named, to berlin).
    let part = json!({"lines": [{"sku": "tee", "location": "paris", "quantity": 3}]});
    let path = format!("/v1/reservations/{id}/confirm");
    let (status, confirmed) = server.call("POST", &path, Some(&part), &[]);
    assert_eq!(status, 200, "{confirmed}");
    let (_, sku) = server.call("GET", "/v1/skus/tee", None, &[]);
    assert_eq!(
        (
            &sku["available"],
            &sku["sold"],
            &sku["locations"][1]["available"]
        ),
        (&json!(2), &json!(3), &json!(1)),
        "{sku}"
    );

    // A named location: refused when it has too few, whatever the others.
    let named = json!({"lines": [{"sku": "tee", "location": "berlin", "quantity": 2}]});
    let (status, error) = server.call("POST", "/v1/reservations", Some(&named), &[]);
    assert_eq!(
        (status, &error["error"], &error["sku"], &error["location"]),
        (409, &json!("sold_out"), &json!("tee"), &json!("berlin")),
        "{error}"
    );
    let nowhere = json!({"lines": [{"sku": "tee", "location": "rome", "quantity": 1}]});
    let (status, error) = server.call("POST", "/v1/reservations", Some(&nowhere), &[]);
    assert_eq!(
        (status, &error["error"]),
        (404, &json!("unknown_location")),
        "{error}"
    );

    // The SKU keeps no stock of its own; a plain SKU gets no locations.
    let (status, error) = server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 5})), &[]);
    assert_eq!(
        (status, &error["error"]),
        (409, &json!("location_conflict")),
        "{error}"
    );
    server.call("PUT", "/v1/skus/mug", Some(&json!({"available": 5})), &[]);
    let (status, error) = server.call(
        "PUT",
        "/v1/skus/mug/locations/a",
        Some(&json!({"available": 1})),
        &[],
    );
    assert_eq!(
        (status, &error["error"]),
        (409, &json!("location_conflict")),
        "{error}"
    );
    for bad in [
        json!({}),
        json!({"available": -1}),
        json!({"priority": "high"}),
    ] {
        let (status, error) = put("berlin", bad.clone());
        assert_eq!(
            (status, &error["error"]),
            (400, &json!("invalid_request")),
            "{bad}"
        );
    }
    let (status, error) = put("a%20b", json!({"available": 1}));
    assert_eq!(
        (status, &error["error"]),
        (400, &json!("invalid_request")),
        "{error}"
    );

    // The feed names the location apart, and `sku=tee` finds its events.
    let (_, page) = server.call(
        "GET",
        "/v1/events?after=0&sku=tee&type=reservation.confirmed&wait_ms=10000",
        None,
        &[],
    );
    // One event per location the reservation holds, each with that
    // location's counts.
    let events = page["events"].as_array().unwrap();
    let at: Vec<(&Value, &Value, &Value)> = (events.iter())
        .map(|e| (&e["sku"], &e["location"], &e["sold"]))
        .collect();
    assert_eq!(
        at,
        vec![
            (&json!("tee"), &json!("berlin"), &json!(0)),
            (&json!("tee"), &json!("paris"), &json!(3))
        ],
        "{page}"
    );
    // Only the SKU is listed, not its locations' cells.
    let (_, list) = server.call("GET", "/v1/skus", None, &[]);
    let names: Vec<&Value> = (list["skus"].as_array().unwrap().iter())
        .map(|s| &s["sku"])
        .collect();
    assert_eq!(names, vec![&json!("tee"), &json!("mug")], "{list}");
}

/// Sale windows over HTTP (#16): a sale set to start later refuses
/// orders with 409 `not_on_sale` naming the window, takes nothing, and
/// opens at once when the operator clears the start; an end in the past
/// closes it; a window ending before it starts is a 400 that changes
/// nothing; the window survives a SIGKILL.
#[test]
fn a_sale_window_opens_and_closes_a_sku() {
    let dir = temp_dir("sale-window");
    let server = Server::start(&dir);
    let later = 4_000_000_000_000u64; // the year 2096
    let put = json!({"available": 5, "sale_starts_at_ms": later});
    let (status, doc) = server.call("PUT", "/v1/skus/drop", Some(&put), &[]);
    assert_eq!(
        (status, &doc["sale_starts_at_ms"], &doc["sale_ends_at_ms"]),
        (200, &json!(later), &json!(null))
    );
    let order = json!({"lines": [{"sku": "drop", "quantity": 1}], "confirm": true});
    let (status, refused) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    assert_eq!(
        (
            status,
            &refused["error"],
            &refused["sku"],
            &refused["sale_starts_at_ms"]
        ),
        (409, &json!("not_on_sale"), &json!("drop"), &json!(later)),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not on sale yet"),
        "{refused}"
    );

    // Opened at once.
    let open = json!({"sale_starts_at_ms": null});
    assert_eq!(server.call("PUT", "/v1/skus/drop", Some(&open), &[]).0, 200);
    assert_eq!(
        server.call("POST", "/v1/reservations", Some(&order), &[]).0,
        201
    );

    // A window that ends before it starts: refused, nothing changed.
    let backwards = json!({"sale_starts_at_ms": 20, "sale_ends_at_ms": 10, "available": 50});
    let (status, error) = server.call("PUT", "/v1/skus/drop", Some(&backwards), &[]);
    assert_eq!(
        (status, &error["error"]),
        (409, &json!("sale_window_conflict")),
        "{error}"
    );
    let (_, doc) = server.call("GET", "/v1/skus/drop", None, &[]);
    assert_eq!(
        (&doc["available"], &doc["sale_starts_at_ms"]),
        (&json!(4), &json!(null))
    );

    // Closed: an end in the past; it stays closed through a crash.
    let close = json!({"sale_ends_at_ms": 1});
    assert_eq!(
        server.call("PUT", "/v1/skus/drop", Some(&close), &[]).0,
        200
    );
    server.kill();
    let server = Server::start(&dir);
    let (status, refused) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    assert_eq!(
        (status, &refused["error"]),
        (409, &json!("not_on_sale")),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("no longer on sale"),
        "{refused}"
    );
    let (_, doc) = server.call("GET", "/v1/skus/drop", None, &[]);
    assert_eq!(
        (&doc["available"], &doc["sale_ends_at_ms"]),
        (&json!(4), &json!(1))
    );
    // The change feed names the window on its `sku.changed` (read back
    // from the store's outbox after the restart).
    let (status, page) = server.call("GET", "/v1/events?sku=drop&type=sku.changed", None, &[]);
    let last = page["events"].as_array().and_then(|e| e.last()).cloned();
    let last = last.unwrap_or_default();
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (&last["sale_starts_at_ms"], &last["sale_ends_at_ms"]),
        (&json!(null), &json!(1)),
        "{page}"
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A waiting room over the wire, and what a restart does to it: the
/// room's settings survive (journaled), the places do not (memory only),
/// and every buyer is told so and may join again. Admission itself, which
/// waits for the shuffle, is tested on a manual clock (`queue_tests.rs`).
#[test]
fn a_waiting_room_over_http_and_across_a_restart() {
    let dir = temp_dir("waiting-room");
    let server = Server::start(&dir);
    let room = json!({"admit_per_s": 50, "overbook": 1.5, "admission_ttl_ms": 20000});
    let put = json!({"available": 5, "waiting_room": room});
    let (status, doc) = server.call("PUT", "/v1/skus/drop", Some(&put), &[]);
    assert_eq!((status, &doc["waiting_room"]), (200, &room), "{doc}");
    let join = json!({"customer": "ann"});
    let (status, joined) = server.call("POST", "/v1/queue/drop", Some(&join), &[]);
    assert_eq!(
        (status, &joined["status"], &joined["place"]),
        (201, &json!("waiting"), &json!(null)),
        "{joined}"
    );
    let token = joined["token"].as_str().unwrap().to_owned();
    let (status, again) = server.call("POST", "/v1/queue/drop", Some(&join), &[]);
    assert_eq!((status, &again["token"]), (200, &joined["token"]));
    let poll = format!("/v1/queue/drop/{token}");
    let (status, polled) = server.call("GET", &poll, None, &[]);
    assert_eq!((status, &polled["status"]), (200, &json!("waiting")));
    assert!(polled["poll_after_ms"].as_u64().unwrap() > 0);
    // Without an admission nothing is taken.
    let order = json!({"lines": [{"sku": "drop", "quantity": 1}], "customer": "ann"});
    let (status, refused) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    assert_eq!((status, &refused["error"]), (403, &json!("not_admitted")));
    let forged = "/v1/queue/drop/0123456789abcdef0123456789abcdef";
    let (status, refused) = server.call("GET", forged, None, &[]);
    assert_eq!(
        (status, &refused["error"]),
        (404, &json!("unknown_queue_token"))
    );
    let bad_room = json!({"waiting_room": {"admit_per_s": 0}});
    let (status, refused) = server.call("PUT", "/v1/skus/drop", Some(&bad_room), &[]);
    assert_eq!(
        (status, &refused["error"]),
        (400, &json!("invalid_request"))
    );
    let text = metrics_text(&server);
    assert!(
        text.contains("hotstock_queue_waiting{sku=\"drop\"} 1"),
        "{text}"
    );

    // A crash: the settings come back, the places do not.
    server.kill();
    let server = Server::start(&dir);
    let (_, doc) = server.call("GET", "/v1/skus/drop", None, &[]);
    assert_eq!(
        (&doc["waiting_room"], &doc["available"]),
        (&room, &json!(5))
    );
    let (status, lost) = server.call("GET", &poll, None, &[]);
    assert_eq!(
        (status, &lost["error"]),
        (404, &json!("unknown_queue_token"))
    );
    assert!(
        lost["message"].as_str().unwrap().contains("join again"),
        "{lost}"
    );
    let (status, refused) = server.call("POST", "/v1/reservations", Some(&order), &[]);
    assert_eq!((status, &refused["error"]), (403, &json!("not_admitted")));
    let (status, rejoined) = server.call("POST", "/v1/queue/drop", Some(&join), &[]);
    assert_eq!((status, &rejoined["status"]), (201, &json!("waiting")));
    // Turned off: orders need no admission again.
    let off = json!({"waiting_room": null});
    let (status, doc) = server.call("PUT", "/v1/skus/drop", Some(&off), &[]);
    assert_eq!((status, &doc["waiting_room"]), (200, &json!(null)));
    assert_eq!(
        server.call("POST", "/v1/reservations", Some(&order), &[]).0,
        201
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `POST /v1/reservations/batch`: each order on its own (all or nothing,
/// its key honoured), answered in order; in `sync` every 201 in the
/// answer survives a SIGKILL right after it.
#[test]
fn a_batch_of_orders_is_placed_order_by_order_and_durable_when_answered() {
    let dir = temp_dir("batch");
    let server = Server::start(&dir);
    let put = json!({"available": 3, "per_customer_limit": 2});
    assert_eq!(server.call("PUT", "/v1/skus/drop", Some(&put), &[]).0, 200);
    let line = |quantity: u64| json!([{"sku": "drop", "quantity": quantity}]);
    let batch = json!({"orders": [
        {"lines": line(1), "customer": "ann", "confirm": true, "idempotency_key": "k-1"},
        {"lines": line(1), "customer": "ann", "confirm": true, "idempotency_key": "k-1"},
        {"lines": line(2), "customer": "bob"},
        {"lines": line(1), "customer": "cat"},
        {"lines": [{"sku": "nope", "quantity": 1}], "customer": "dan"},
        {"lines": line(0)},
        "not an order",
    ]});
    let (status, answer) = server.call("POST", "/v1/reservations/batch", Some(&batch), &[]);
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 201, 201, 409, 404, 400, 400], "{answer}");
    let id = |i: usize| results[i]["reservation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(id(0), id(1), "the key's retry is the same reservation");
    assert_eq!(results[3]["error"]["error"], "sold_out");
    // The whole refusal: the error shape of a single order, with its status.
    let message = "sold out: SKU \"drop\" has 0 units available, 1 requested";
    assert_eq!(
        results[3],
        json!({"status": 409, "error": {"error": "sold_out", "message": message,
            "sku": "drop", "available": 0, "requested": 1}})
    );
    assert_eq!(results[4]["error"]["error"], "unknown_sku");
    // Bad batches: refused whole, nothing placed.
    for bad in [
        json!({"orders": []}),
        json!({"orders": [{"lines": line(1)}], "extra": 1}),
        json!({"orders": vec![json!({"lines": line(1)}); 1001]}),
    ] {
        let (status, refused) = server.call("POST", "/v1/reservations/batch", Some(&bad), &[]);
        assert_eq!(
            (status, &refused["error"]),
            (400, &json!("invalid_request"))
        );
    }
    // Acknowledged means durable: the placed orders survive a SIGKILL.
    server.kill();
    let server = Server::start(&dir);
    for i in [0, 2] {
        let (status, found) = server.call("GET", &format!("/v1/reservations/{}", id(i)), None, &[]);
        assert_eq!(status, 200, "{found}");
    }
    let (_, doc) = server.call("GET", "/v1/skus/drop", None, &[]);
    assert_eq!(
        (&doc["sold"], &doc["held"], &doc["available"]),
        (&json!(1), &json!(2), &json!(0))
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The largest answer a buyer's order can get, a full batch of 1,000,
/// arrives whole and in order: hyper copies each answer behind its head
/// into one buffer (`writev(false)` in `connection.rs`), here ~220 KB
/// (one `write` of 219,015 bytes under strace on loopback).
#[test]
fn a_full_batch_of_a_thousand_orders_is_answered_whole_and_in_order() {
    let dir = temp_dir("batch-full");
    let server = Server::start(&dir);
    let put = json!({"available": 1500});
    assert_eq!(server.call("PUT", "/v1/skus/mug", Some(&put), &[]).0, 200);
    let orders: Vec<Value> = (0..1000)
        .map(|i| json!({"lines": [{"sku": "mug", "quantity": 1}], "customer": format!("c{i}"), "confirm": true}))
        .collect();
    let batch = json!({ "orders": orders });
    let (status, answer) = server.call("POST", "/v1/reservations/batch", Some(&batch), &[]);
    assert_eq!(status, 200);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["status"], 201, "order {i}: {result}");
        assert_eq!(
            result["reservation"]["customer"],
            format!("c{i}"),
            "order {i}"
        );
    }
    let (_, doc) = server.call("GET", "/v1/skus/mug", None, &[]);
    assert_eq!(
        (&doc["sold"], &doc["available"]),
        (&json!(1000), &json!(500))
    );
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/metrics` counts every open hold and those due within a minute (what
/// the live page shows), from the server's records: a hold confirmed or
/// cancelled leaves both at once, a long one is open but not due.
#[test]
fn metrics_count_open_holds_and_those_expiring_within_a_minute() {
    let dir = temp_dir("metrics-holds");
    let server = Server::start(&dir);
    let put = json!({"available": 10});
    assert_eq!(server.call("PUT", "/v1/skus/tee", Some(&put), &[]).0, 200);
    let hold = |ttl_ms: u64| {
        let order = json!({"lines": [{"sku": "tee", "quantity": 1}], "ttl_ms": ttl_ms});
        let (status, body) = server.call("POST", "/v1/reservations", Some(&order), &[]);
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };
    let figures = || {
        (
            common::server::metric(&server, "hotstock_holds_open"),
            common::server::metric(&server, "hotstock_holds_expiring"),
        )
    };
    assert_eq!(figures(), (0, 0));
    let soon = [hold(50_000), hold(55_000)];
    let later = hold(3_600_000);
    let bought = json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true});
    assert_eq!(
        server
            .call("POST", "/v1/reservations", Some(&bought), &[])
            .0,
        201
    );
    assert_eq!(figures(), (3, 2));
    let confirm = format!("/v1/reservations/{}/confirm", soon[0]);
    assert_eq!(server.call("POST", &confirm, None, &[]).0, 200);
    let cancel = format!("/v1/reservations/{later}/cancel");
    assert_eq!(server.call("POST", &cancel, None, &[]).0, 200);
    assert_eq!(figures(), (1, 1));
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A body is read whole however it arrives: with a length in one piece or
/// several, or chunked; and after each the connection takes the next
/// request (the server stops reading a body at its stated length).
#[test]
fn bodies_in_pieces_are_read_whole_and_the_connection_goes_on() {
    let dir = temp_dir("pieces");
    let server = Server::start(&dir);
    server.call("PUT", "/v1/skus/tee", Some(&json!({"available": 5})), &[]);
    let body = json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true}).to_string();
    let head = format!(
        "POST /v1/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Two in one write: the second's head follows the first's body.
    let twice = format!("{head}{body}{head}{body}");
    stream.write_all(twice.as_bytes()).unwrap();
    assert_eq!(read_one_response(&mut stream), 201);
    assert_eq!(read_one_response(&mut stream), 201);
    // Chunked, in three chunks written apart.
    stream
        .write_all(
            b"POST /v1/reservations HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let (a, rest) = body.as_bytes().split_at(10);
    let (b, c) = rest.split_at(20);
    for chunk in [a, b, c] {
        write!(stream, "{:x}\r\n", chunk.len()).unwrap();
        stream.write_all(chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
        stream.flush().unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    assert_eq!(read_one_response(&mut stream), 201);
    stream.write_all(KEEP_ALIVE_GET).unwrap();
    assert_eq!(read_one_response(&mut stream), 200);
    assert_eq!(server.call("GET", "/v1/skus/tee", None, &[]).1["sold"], 3);
    server.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}
