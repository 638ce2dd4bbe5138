//! The operator's live sale page (#17) in a real browser: Debian's
//! chromium, headless, driven through chromedriver. The real server, a
//! flash sale over HTTP, a SIGKILL and restart mid-sale; the page must
//! show what `GET /v1/skus/{sku}` says within a refresh, mark the sold-out,
//! come back by itself after the restart, and show nothing but the login
//! without the token.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::server::{request, temp_dir, Server};
use common::webdriver::Browser;

const TOKEN: &str = "operator-token-for-the-page-test-0123456789";
/// Render every second, the feed within milliseconds: a few refreshes.
const REFRESH: Duration = Duration::from_secs(10);

fn auth() -> [(&'static str, String); 1] {
    [("Authorization", format!("Bearer {TOKEN}"))]
}

fn call(server: &Server, method: &str, path: &str, body: Value) -> (u16, Value) {
    let [(name, value)] = auth();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    request(
        server.addr,
        method,
        path,
        body.as_bytes(),
        &[(name, &value)],
    )
}

fn buy(server: &Server, units: u64) {
    for _ in 0..units {
        let order = json!({"lines": [{"sku": "drop", "quantity": 1}], "confirm": true});
        let (status, answer) = call(server, "POST", "/v1/reservations", order);
        assert_eq!(status, 201, "{answer}");
    }
}

fn start(dir: &std::path::Path, listen: &str) -> Server {
    Server::start_at(dir, listen, &["--admin-token", TOKEN], Stdio::null())
}

/// Whether the element `id` is shown (laid out), not only unhidden.
fn shown_element(id: &str) -> String {
    format!("return getComputedStyle(document.getElementById('{id}')).display !== 'none';")
}

/// What the page shows for `sku` in the table of all SKUs.
fn shown(column: &str) -> String {
    format!(
        "const cell = document.querySelector('#all tr[data-sku=\"drop\"] td.{column}'); \
         return cell ? cell.textContent : null;"
    )
}

#[test]
fn the_page_follows_a_flash_sale_through_a_restart() {
    let Some(browser) = Browser::start((1280, 1000)) else {
        return;
    };
    let dir = temp_dir("ui");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let server = start(&dir, &listen);
    assert_eq!(
        call(&server, "PUT", "/v1/skus/drop", json!({"available": 200})).0,
        200
    );
    for n in 0..30 {
        let path = format!("/v1/skus/sku-{n:02}");
        assert_eq!(call(&server, "PUT", &path, json!({"available": n})).0, 200);
    }

    // Without the token: the login and nothing else.
    browser.open(&format!("http://{listen}/ui"));
    assert_eq!(browser.run(&shown_element("app")), false);
    assert_eq!(browser.run(&shown_element("login")), true);
    let text = browser.run("return document.body.innerText;");
    assert!(!text.as_str().unwrap().contains("drop"), "{text}");
    browser.type_into("#token", "not-the-token");
    browser.click("#login button");
    let refused = browser.wait_for(
        REFRESH,
        "return document.getElementById('login-error').textContent || null;",
    );
    assert!(refused.is_some(), "a wrong token is refused");
    assert_eq!(browser.run(&shown_element("app")), false);

    browser.type_into("#token", TOKEN);
    browser.click("#login button");
    let row = browser.wait_for(REFRESH, &shown("available"));
    assert_eq!(row, Some(json!("200")), "the SKU's row appears");
    assert_eq!(
        browser.run(&shown_element("login")),
        false,
        "signed in: no login"
    );
    // 31 SKUs, 25 a page: the next page holds the rest.
    browser.click("#next");
    let paged = browser.wait_for(
        REFRESH,
        "return document.querySelectorAll('#all tbody tr').length === 6 || null;",
    );
    assert!(paged.is_some(), "the second page has 6 SKUs");
    browser.click("#first");
    browser
        .wait_for(REFRESH, &shown("sold"))
        .expect("back on the first page");

    // The sale: what the page shows is what the server says.
    buy(&server, 120);
    let (_, document) = call(&server, "GET", "/v1/skus/drop", Value::Null);
    assert_eq!(document["sold"], 120);
    let sold = browser.wait_for(
        REFRESH,
        "const cell = document.querySelector('#all tr[data-sku=\"drop\"] td.sold'); \
         return cell && cell.textContent === '120' ? cell.textContent : null;",
    );
    assert_eq!(sold, Some(json!("120")), "the page shows 120 sold");
    assert_eq!(browser.run(&shown("available")), json!("80"));
    let hot = browser.wait_for(REFRESH, "const row = document.querySelector('#hot tr[data-sku=\"drop\"]'); return row ? row.textContent : null;");
    assert!(hot.is_some(), "the selling SKU is among the hottest");

    // Holds: open and expiring within a minute are the server's counts.
    let holds: Vec<String> = [30_000, 40_000, 50_000, 3_600_000]
        .map(|ttl_ms| {
            let order = json!({"lines": [{"sku": "drop", "quantity": 1}], "ttl_ms": ttl_ms});
            let (status, answer) = call(&server, "POST", "/v1/reservations", order);
            assert_eq!(status, 201, "{answer}");
            answer["id"].as_str().unwrap().to_owned()
        })
        .into();
    let tile = |label: &str, value: &str| {
        format!(
            "const tile = [...document.querySelectorAll('#holds .tile')] \
               .find((t) => t.querySelector('span').textContent === '{label}'); \
             return tile && tile.querySelector('b').textContent === '{value}' || null;"
        )
    };
    assert!(
        browser
            .wait_for(REFRESH, &tile("holds open", "4"))
            .is_some(),
        "the page shows 4 holds open"
    );
    assert!(
        browser
            .wait_for(REFRESH, &tile("expiring in the next minute", "3"))
            .is_some(),
        "the page shows 3 holds expiring within the minute"
    );
    for id in &holds {
        let cancel = format!("/v1/reservations/{id}/cancel");
        assert_eq!(call(&server, "POST", &cancel, Value::Null).0, 200);
    }

    // A crash mid-sale: the page reconnects and resumes from its position.
    server.kill();
    let dropped = browser.wait_for(
        REFRESH,
        "return document.getElementById('link').textContent !== 'live' || null;",
    );
    assert!(dropped.is_some(), "the page notices the lost stream");
    let server = start(&dir, &listen);
    let live = browser.wait_for(
        REFRESH,
        "return document.getElementById('link').textContent === 'live' || null;",
    );
    assert!(live.is_some(), "the page reconnects by itself");
    buy(&server, 80);
    let sold_out = browser.wait_for(
        REFRESH,
        "const row = document.querySelector('#all tr[data-sku=\"drop\"]'); \
         return row && row.textContent.includes('sold out') && row.querySelector('td.sold').textContent === '200' || null;",
    );
    assert!(
        sold_out.is_some(),
        "the page shows the sold-out with every unit sold"
    );
    let marked = browser.wait_for(REFRESH, "const cell = document.querySelector('#hot tr[data-sku=\"drop\"] td.soldout'); return cell ? cell.textContent : null;");
    assert!(
        marked.unwrap().as_str().unwrap().starts_with("sold out at"),
        "the sold-out moment is marked"
    );
    let (_, document) = call(&server, "GET", "/v1/skus/drop", Value::Null);
    assert_eq!(
        (&document["sold"], &document["available"]),
        (&json!(200), &json!(0))
    );

    let png = browser.screenshot();
    assert_eq!(&png[1..4], b"PNG");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("sale.png"), &png).unwrap();

    // A phone's width: everything fits, nothing scrolls sideways.
    browser.resize(390, 844);
    let fits = browser.wait_for(
        REFRESH,
        "return document.documentElement.scrollWidth <= window.innerWidth || null;",
    );
    let widths = browser.run("return [document.documentElement.scrollWidth, window.innerWidth];");
    assert!(
        fits.is_some(),
        "the page scrolls sideways on a phone: {widths}"
    );
    std::fs::write(shots.join("sale-phone.png"), browser.screenshot()).unwrap();

    // The token was in the page's memory only: a reload signs out.
    browser.open(&format!("http://{listen}/ui"));
    assert_eq!(browser.run(&shown_element("app")), false);
    assert_eq!(browser.run(&shown_element("login")), true);
    assert_eq!(server.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
