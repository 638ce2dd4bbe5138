//! Who may do what, against the real binary: every route × every role,
//! buyer tokens refused for each reason with a message that says which,
//! limits per customer that a body cannot dodge, reservation ids that
//! cannot be walked, and the refusal to expose an open server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::server::{temp_dir, Server};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const OPERATOR: &str = "operator-token-0123456789abcdef-0123";
const SERVICE: &str = "checkout-token-0123456789abcdef-0123";
const KEY_1: &str = "buyer-key-one-0123456789abcdef-01234";
const KEY_2: &str = "buyer-key-two-0123456789abcdef-01234";
const WRONG: &str = "not-the-key-0123456789abcdef-0123456";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 buyer token with these claims, signed with `secret`.
fn token(kid: Option<&str>, secret: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn buyer(sub: &str, kid: &str, secret: &str) -> String {
    token(
        Some(kid),
        secret,
        json!({"sub": sub, "exp": now_s() + 3600, "iat": now_s()}),
    )
}

fn start(dir: &std::path::Path) -> Server {
    Server::start_with(
        dir,
        &[
            "--admin-token",
            OPERATOR,
            "--service-token",
            &format!("checkout={SERVICE}"),
            "--buyer-key",
            &format!("k1={KEY_1}"),
            "--buyer-key",
            &format!("k2={KEY_2}"),
        ],
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The roles of the matrix, with the header each sends.
struct Roles {
    names: [&'static str; 7],
    headers: [Option<String>; 7],
}

fn roles() -> Roles {
    let forged = buyer("ann", "k1", WRONG);
    let expired = token(
        Some("k1"),
        KEY_1,
        json!({"sub": "ann", "exp": now_s() - 3600}),
    );
    Roles {
        names: [
            "none", "buyer A", "buyer B", "service", "operator", "forged", "expired",
        ],
        headers: [
            None,
            Some(bearer(&buyer("ann", "k1", KEY_1))),
            // Bob's token is signed with the second key: both keys work.
            Some(bearer(&buyer("bob", "k2", KEY_2))),
            Some(bearer(SERVICE)),
            Some(bearer(OPERATOR)),
            Some(bearer(&forged)),
            Some(bearer(&expired)),
        ],
    }
}

fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    auth: Option<&str>,
) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    server.call(method, path, body, &headers)
}

/// A reservation of ann's made by the service; confirmed when asked.
fn anns_reservation(server: &Server, confirmed: bool) -> String {
    let body =
        json!({"lines": [{"sku": "tee", "quantity": 1}], "customer": "ann", "confirm": confirmed});
    let (status, answer) = call(
        server,
        "POST",
        "/v1/reservations",
        Some(&body),
        Some(&bearer(SERVICE)),
    );
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

#[test]
fn every_route_answers_every_role_as_the_roles_say() {
    let dir = temp_dir("auth-matrix");
    let server = start(&dir);
    let put = json!({"available": 100_000});
    let (status, _) = call(
        &server,
        "PUT",
        "/v1/skus/tee",
        Some(&put),
        Some(&bearer(OPERATOR)),
    );
    assert_eq!(status, 200);
    let roles = roles();
    // Expected status per role, in the order of `roles().names`.
    type Row = (&'static str, &'static str, [u16; 7]);
    let rows: [Row; 14] = [
        ("GET", "/healthz", [200, 200, 200, 200, 200, 401, 401]),
        ("GET", "/metrics", [401, 403, 403, 403, 200, 401, 401]),
        ("GET", "/v1/skus", [401, 200, 200, 200, 200, 401, 401]),
        ("GET", "/v1/skus/tee", [401, 200, 200, 200, 200, 401, 401]),
        ("PUT", "/v1/skus/tee", [401, 403, 403, 403, 200, 401, 401]),
        (
            "POST",
            "/v1/skus/tee/adjust",
            [401, 403, 403, 403, 200, 401, 401],
        ),
        ("PUT", "/v1/kits/gift", [401, 403, 403, 403, 200, 401, 401]),
        (
            "POST",
            "/v1/reservations",
            [401, 201, 201, 201, 403, 401, 401],
        ),
        (
            "GET",
            "/v1/reservations/{held}",
            [401, 200, 404, 200, 200, 401, 401],
        ),
        (
            "POST",
            "/v1/reservations/{held}/confirm",
            [401, 403, 403, 200, 403, 401, 401],
        ),
        (
            "POST",
            "/v1/reservations/{held}/cancel",
            [401, 200, 404, 200, 403, 401, 401],
        ),
        (
            "POST",
            "/v1/reservations/{confirmed}/refund",
            [401, 403, 403, 200, 200, 401, 401],
        ),
        (
            "POST",
            "/v1/reservations/{held}/extend",
            [401, 403, 403, 200, 403, 401, 401],
        ),
        ("GET", "/v1/events", [401, 403, 403, 200, 200, 401, 401]),
    ];
    let mut wrong = Vec::new();
    for (method, template, expected) in rows {
        for (role, want) in expected.iter().enumerate() {
            // A fresh reservation of ann's for each cell that acts on one.
            let path = template
                .replace(
                    "{held}",
                    &anns_reservation_if(&server, template, "{held}", false),
                )
                .replace(
                    "{confirmed}",
                    &anns_reservation_if(&server, template, "{confirmed}", true),
                );
            let body = match (method, template) {
                ("PUT", "/v1/kits/gift") => {
                    Some(json!({"components": [{"sku": "tee", "quantity": 2}]}))
                }
                ("PUT", _) => Some(json!({"available": 100_000})),
                (_, "/v1/skus/tee/adjust") => Some(json!({"delta": 0})),
                (_, "/v1/reservations") => Some(json!({"lines": [{"sku": "tee", "quantity": 1}]})),
                (_, "/v1/reservations/{held}/extend") => Some(json!({"ttl_ms": 600_000})),
                _ => None,
            };
            let (status, answer) = call(
                &server,
                method,
                &path,
                body.as_ref(),
                roles.headers[role].as_deref(),
            );
            if status != *want {
                wrong.push(format!(
                    "{method} {template} as {}: {status} (want {want}) {answer}",
                    roles.names[role]
                ));
            }
            let code = answer["error"].as_str();
            let expected_code = match *want {
                401 => Some("unauthorized"),
                403 => Some("forbidden"),
                404 => Some("unknown_reservation"),
                _ => None,
            };
            if status == *want && code != expected_code {
                wrong.push(format!(
                    "{method} {template} as {}: code {code:?}",
                    roles.names[role]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

fn anns_reservation_if(server: &Server, template: &str, slot: &str, confirmed: bool) -> String {
    if template.contains(slot) {
        anns_reservation(server, confirmed)
    } else {
        String::new()
    }
}

#[test]
fn another_customers_reservation_answers_exactly_as_an_unknown_one() {
    let dir = temp_dir("auth-oracle");
    let server = start(&dir);
    call(
        &server,
        "PUT",
        "/v1/skus/tee",
        Some(&json!({"available": 10})),
        Some(&bearer(OPERATOR)),
    );
    let anns = anns_reservation(&server, false);
    let bob = bearer(&buyer("bob", "k1", KEY_1));
    // An id that exists (ann's) and one that does not, as bob sees them:
    // the same answer but for the id the message repeats.
    let mut unknown = anns.clone().into_bytes();
    unknown[0] = if unknown[0] == b'0' { b'1' } else { b'0' };
    let unknown = String::from_utf8(unknown).unwrap();
    for (method, suffix) in [("GET", ""), ("POST", "/cancel")] {
        let (s1, theirs) = call(
            &server,
            method,
            &format!("/v1/reservations/{anns}{suffix}"),
            None,
            Some(&bob),
        );
        let (s2, nobodys) = call(
            &server,
            method,
            &format!("/v1/reservations/{unknown}{suffix}"),
            None,
            Some(&bob),
        );
        assert_eq!((s1, s2), (404, 404));
        assert_eq!(theirs["error"], nobodys["error"]);
        assert_eq!(
            theirs["message"].as_str().unwrap().replace(&anns, "ID"),
            nobodys["message"].as_str().unwrap().replace(&unknown, "ID")
        );
        assert_eq!(
            theirs.as_object().unwrap().len(),
            nobodys.as_object().unwrap().len()
        );
    }
    // Bob's cancel changed nothing: ann's reservation is still held.
    let ann = bearer(&buyer("ann", "k1", KEY_1));
    let (_, doc) = call(
        &server,
        "GET",
        &format!("/v1/reservations/{anns}"),
        None,
        Some(&ann),
    );
    assert_eq!(doc["status"], "held");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_buyer_token_says_why() {
    let dir = temp_dir("auth-why");
    let server = start(&dir);
    let now = now_s();
    let cases = [
        (
            token(Some("k1"), KEY_1, json!({"sub": "ann", "exp": now - 3600})),
            "expired",
        ),
        (
            token(
                Some("k1"),
                KEY_1,
                json!({"sub": "ann", "exp": now + 7200, "nbf": now + 3600}),
            ),
            "not valid yet",
        ),
        (
            token(Some("k1"), WRONG, json!({"sub": "ann", "exp": now + 3600})),
            "signature does not match",
        ),
        (
            token(Some("k9"), KEY_1, json!({"sub": "ann", "exp": now + 3600})),
            "key \"k9\", which this server does not have",
        ),
        (
            token(None, KEY_1, json!({"sub": "ann", "exp": now + 3600})),
            "names no key",
        ),
        (
            token(Some("k1"), KEY_1, json!({"sub": "ann"})),
            "no `exp` claim",
        ),
        (
            token(Some("k1"), KEY_1, json!({"exp": now + 3600})),
            "no `sub` claim",
        ),
        ("a.b.c".to_owned(), "not a well-formed JWT"),
        ("some-random-token".to_owned(), "not one this server knows"),
    ];
    for (token, says) in cases {
        let (status, answer) = call(&server, "GET", "/v1/skus", None, Some(&bearer(&token)));
        assert_eq!(status, 401, "{says}: {answer}");
        assert_eq!(answer["error"], "unauthorized");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{says:?} not in {message:?}");
        for secret in [KEY_1, KEY_2, SERVICE, OPERATOR] {
            assert!(!message.contains(secret), "a secret in {message:?}");
        }
    }
    // The same token with `iat` and a valid `nbf` is fine.
    let good = token(
        Some("k1"),
        KEY_1,
        json!({"sub": "ann", "exp": now + 60, "nbf": now - 60, "iat": now}),
    );
    assert_eq!(
        call(&server, "GET", "/v1/skus", None, Some(&bearer(&good))).0,
        200
    );
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_buyer_reserves_for_itself_and_its_limit_holds_under_racing_tokens() {
    let dir = temp_dir("auth-limit");
    let server = start(&dir);
    let put = json!({"available": 1000, "per_customer_limit": 2});
    assert_eq!(
        call(
            &server,
            "PUT",
            "/v1/skus/cap",
            Some(&put),
            Some(&bearer(OPERATOR))
        )
        .0,
        200
    );
    // Two tokens of one customer, signed with different keys, and bodies
    // that try to name someone else.
    let tokens = [buyer("ann", "k1", KEY_1), buyer("ann", "k2", KEY_2)];
    let outcomes: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let server = &server;
                let token = bearer(&tokens[i % 2]);
                s.spawn(move || {
                    let body = match i % 4 {
                        0 => json!({"lines": [{"sku": "cap", "quantity": 1}]}),
                        1 => json!({"lines": [{"sku": "cap", "quantity": 1}], "customer": "ann"}),
                        _ => json!({"lines": [{"sku": "cap", "quantity": 1}], "customer": format!("ann-{i}")}),
                    };
                    call(server, "POST", "/v1/reservations", Some(&body), Some(&token))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = outcomes.iter().filter(|(s, _)| *s == 201).count();
    let over_limit = outcomes
        .iter()
        .filter(|(_, a)| a["error"] == "limit_exceeded")
        .count();
    let forbidden = outcomes
        .iter()
        .filter(|(_, a)| a["error"] == "forbidden")
        .count();
    assert_eq!(created, 2, "{outcomes:?}");
    assert_eq!(
        forbidden, 8,
        "every body naming another customer: {outcomes:?}"
    );
    assert_eq!(over_limit, 6, "{outcomes:?}");
    for (status, answer) in &outcomes {
        if *status == 201 {
            assert_eq!(answer["customer"], "ann");
        }
    }
    let (_, doc) = call(&server, "GET", "/v1/skus/cap", None, Some(&bearer(SERVICE)));
    assert_eq!(doc["held"], 2, "{doc}");
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One keep-alive connection, for many requests.
struct Connection(BufReader<TcpStream>);

impl Connection {
    fn open(server: &Server) -> Connection {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Connection(BufReader::new(stream))
    }

    fn get(&mut self, path: &str, auth: &str) -> u16 {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\r\n");
        self.0.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            line.clear();
            self.0.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).unwrap();
        status
    }
}

#[test]
fn reservation_ids_cannot_be_walked() {
    let dir = temp_dir("auth-ids");
    let server = start(&dir);
    call(
        &server,
        "PUT",
        "/v1/skus/tee",
        Some(&json!({"available": 1000})),
        Some(&bearer(OPERATOR)),
    );
    let ids: Vec<u128> = (0..40)
        .map(|_| {
            let id = anns_reservation(&server, false);
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
            u128::from_str_radix(&id, 16).unwrap()
        })
        .collect();
    for pair in ids.windows(2) {
        let diff = pair[0] ^ pair[1];
        assert!(
            diff as u64 != 0 && (diff >> 64) as u64 != 0,
            "both halves change: {pair:x?}"
        );
        assert!(diff.count_ones() >= 32, "{pair:x?}");
        // The bits that differ are spread over at least 64 positions of
        // the 128 (not a counter's low bits).
        let span = 128 - diff.leading_zeros() - diff.trailing_zeros();
        assert!(span >= 64, "differing bits span only {span}: {pair:x?}");
    }
    // 10,000 neighbours of real ids: ±1..±125 and every one-bit flip. The
    // service sees every reservation, so a 404 means there is none.
    let auth = bearer(SERVICE);
    let mut connection = Connection::open(&server);
    let mut guesses = 0;
    for (i, &id) in ids.iter().enumerate() {
        let flips = (0..128).map(|bit| id ^ (1u128 << bit));
        let steps = (1..=61u128).flat_map(|d| [id.wrapping_add(d), id.wrapping_sub(d)]);
        for guess in flips.chain(steps).take(250) {
            let path = format!("/v1/reservations/{guess:032x}");
            let status = connection.get(&path, &auth);
            assert_eq!(status, 404, "guess {guess:032x} near reservation {i}");
            guesses += 1;
        }
    }
    assert_eq!(guesses, 10_000);
    // Other spellings of a real id do not name it.
    let real = format!("{:032x}", ids[0]);
    for other in [
        real.to_uppercase(),
        format!("+{}", &real[1..]),
        real[..31].to_owned(),
        format!("{real}0"),
    ] {
        assert_eq!(
            connection.get(&format!("/v1/reservations/{other}"), &auth),
            404,
            "{other}"
        );
    }
    assert_eq!(
        connection.get(&format!("/v1/reservations/{real}"), &auth),
        200
    );
    // Ids outlive a restart unchanged.
    server.kill();
    let server = start(&dir);
    let (status, doc) = call(
        &server,
        "GET",
        &format!("/v1/reservations/{real}"),
        None,
        Some(&bearer(SERVICE)),
    );
    assert_eq!((status, doc["id"].as_str()), (200, Some(real.as_str())));
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_open_server_on_loopback_stays_open_and_guards_operator_routes() {
    let dir = temp_dir("auth-open");
    let server = Server::start_with(&dir, &["--admin-token", OPERATOR]);
    assert_eq!(
        call(
            &server,
            "PUT",
            "/v1/skus/tee",
            Some(&json!({"available": 5})),
            None
        )
        .0,
        401
    );
    assert_eq!(
        call(
            &server,
            "PUT",
            "/v1/skus/tee",
            Some(&json!({"available": 5})),
            Some(&bearer(OPERATOR))
        )
        .0,
        200
    );
    let body = json!({"lines": [{"sku": "tee", "quantity": 1}], "customer": "ann"});
    let (status, answer) = call(&server, "POST", "/v1/reservations", Some(&body), None);
    assert_eq!(status, 201, "{answer}");
    let id = answer["id"].as_str().unwrap();
    assert_eq!(
        call(
            &server,
            "POST",
            &format!("/v1/reservations/{id}/confirm"),
            None,
            None
        )
        .0,
        200
    );
    assert_eq!(
        call(
            &server,
            "POST",
            &format!("/v1/reservations/{id}/refund"),
            None,
            None
        )
        .0,
        200
    );
    server.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_network_address_without_roles_is_refused_naming_the_flag() {
    let dir = temp_dir("auth-exposed");
    let cases: [(&[&str], &str); 3] = [
        (&[], "--admin-token"),
        (
            &["--admin-token", OPERATOR],
            "--service-token or --buyer-key",
        ),
        (&["--service-token", "checkout=short"], "at least 32 bytes"),
    ];
    for (flags, names) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_hotstock"))
            .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
            .arg(&dir)
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(names), "{names:?} not in {stderr:?}");
        assert!(
            !stderr.contains("short"),
            "the secret is echoed: {stderr:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn operator_and_service_actions_are_audited_by_token_name_and_counted_by_role() {
    let dir = temp_dir("auth-audit");
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut flags = vec![
        "--log-format",
        "json",
        "--customer-rate-limit",
        "1",
        "--admin-token",
        OPERATOR,
    ];
    let service = format!("checkout={SERVICE}");
    let key = format!("k1={KEY_1}");
    flags.extend(["--service-token", &service, "--buyer-key", &key]);
    let server = Server::start_logging(&dir.join("data"), &flags, log.into());
    let put = json!({"available": 10});
    assert_eq!(
        call(
            &server,
            "PUT",
            "/v1/skus/tee",
            Some(&put),
            Some(&bearer(OPERATOR))
        )
        .0,
        200
    );
    let id = anns_reservation(&server, false);
    let confirm = format!("/v1/reservations/{id}/confirm");
    assert_eq!(
        call(&server, "POST", &confirm, None, Some(&bearer(SERVICE))).0,
        200
    );
    // One request per second for ann: the service already made hers.
    let ann = bearer(&buyer("ann", "k1", KEY_1));
    let order = json!({"lines": [{"sku": "tee", "quantity": 1}]});
    let (status, answer) = call(
        &server,
        "POST",
        "/v1/reservations",
        Some(&order),
        Some(&ann),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (429, Some("overloaded")),
        "{answer}"
    );
    assert_eq!(
        call(&server, "GET", "/v1/skus", None, Some("Bearer forged")).0,
        401
    );
    let metrics = common::server::metrics_text_with(&server, &bearer(OPERATOR));
    for line in [
        "hotstock_http_requests_by_role_total{role=\"operator\",outcome=\"ok\"} 1",
        "hotstock_http_requests_by_role_total{role=\"service\",outcome=\"ok\"} 2",
        "hotstock_http_requests_by_role_total{role=\"buyer\",outcome=\"error\"} 1",
        "hotstock_http_requests_by_role_total{role=\"rejected\",outcome=\"denied\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    assert_eq!(server.terminate(), Some(0));
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let audit: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "hotstock::audit")
        .collect();
    let seen: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|l| {
            let f = &l["fields"];
            (
                f["role"].as_str().unwrap(),
                f["token"].as_str().unwrap(),
                f["route"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("operator", "operator", "sku_put"),
            ("service", "checkout", "reservation_confirm")
        ],
        "{logs}"
    );
    for secret in [KEY_1, SERVICE, OPERATOR] {
        assert!(!logs.contains(secret), "a secret in the logs");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log_path);
}
