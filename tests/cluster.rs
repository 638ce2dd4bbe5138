//! Several `hotstock serve` processes selling one SKU from one escrow
//! (#15): real processes on loopback ports, the escrow a schema of the
//! PostgreSQL on the machine. Buyers spread over the nodes; a node is
//! killed with SIGKILL mid-sale and started again; a node lost with its
//! data is written off. Every unit the escrow received is sold exactly
//! once, and never more.

#![cfg(feature = "postgres")]

mod common;
use common::server::{request, try_request, Server};
use common::{EscrowScratch, TempDir};

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

fn server() -> Option<String> {
    common::postgres_url("cluster tests")
}

fn start_node(dir: &TempDir, scratch: &EscrowScratch, node: &str) -> Server {
    let args = [
        "--node-id",
        node,
        "--escrow",
        &scratch.url,
        "--escrow-schema",
        &scratch.schema,
    ];
    Server::start_with(&dir.0, &args)
}

fn sold_at(addr: SocketAddr) -> u64 {
    let (status, doc) = request(addr, "GET", "/v1/skus/tee", b"", &[]);
    match status {
        200 => doc["sold"].as_u64().unwrap(),
        // Not leased anything yet: the SKU is not on this node.
        _ => 0,
    }
}

/// One purchase of one unit at `addr`: `Some(true)` bought, `Some(false)`
/// sold out here, `None` the node did not answer (killed).
fn buy(addr: SocketAddr) -> Option<bool> {
    let body = json!({"lines": [{"sku": "tee", "quantity": 1}], "confirm": true}).to_string();
    match try_request(addr, "POST", "/v1/reservations", body.as_bytes(), &[]).ok()? {
        (201, _) => Some(true),
        (409 | 404, _) => Some(false),
        (status, answer) => panic!("a purchase answered {status}: {answer}"),
    }
}

/// `count` nodes named `{prefix}{i}` on one escrow, with `stock` units
/// received through the first.
fn start_sale(
    scratch: &EscrowScratch,
    prefix: &str,
    count: usize,
    stock: u64,
) -> (Vec<TempDir>, Vec<Server>) {
    let dirs: Vec<TempDir> = (0..count)
        .map(|i| TempDir::new(&format!("{prefix}{i}")))
        .collect();
    let nodes: Vec<Server> = (0..count)
        .map(|i| start_node(&dirs[i], scratch, &format!("{prefix}{i}")))
        .collect();
    let delta = json!({"delta": stock}).to_string();
    let adjust = request(
        nodes[0].addr,
        "POST",
        "/v1/skus/tee/adjust",
        delta.as_bytes(),
        &[],
    );
    assert_eq!(adjust.0, 202, "{:?}", adjust.1);
    (dirs, nodes)
}

/// Units sold on all `nodes` together.
fn total_sold(nodes: &[Server]) -> u64 {
    nodes.iter().map(|n| sold_at(n.addr)).sum()
}

/// One purchase on each node; the units bought.
fn buy_round(nodes: &[Server]) -> u64 {
    nodes.iter().filter(|n| buy(n.addr) == Some(true)).count() as u64
}

fn assert_escrow_balanced(scratch: &EscrowScratch) -> hotstock::durable::escrow::EscrowSku {
    let mut escrow = scratch.escrow();
    let skus = escrow.audit().unwrap();
    assert_eq!(skus.len(), 1, "{skus:?}");
    assert!(skus[0].balances(), "{skus:?}");
    skus[0].clone()
}

/// Three nodes, buyers on each, one node SIGKILLed mid-sale and started
/// again on its data directory: together they sell exactly the units the
/// escrow received (its journal settles its leases on start), and none is
/// left unleased.
#[test]
fn three_nodes_sell_exactly_the_stock_through_a_sigkill() {
    let Some(url) = server() else { return };
    let scratch = EscrowScratch::new(&url, "three_nodes");
    let stock: u64 = 900;
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("node{i}"))).collect();
    let mut nodes: Vec<Server> = (0..3)
        .map(|i| start_node(&dirs[i], &scratch, &format!("n{i}")))
        .collect();
    // Any node takes the operator's units: they go to the escrow.
    let delta = json!({"delta": stock}).to_string();
    let (status, answer) = request(
        nodes[1].addr,
        "POST",
        "/v1/skus/tee/adjust",
        delta.as_bytes(),
        &[],
    );
    assert_eq!((status, &answer["to"]), (202, &json!("escrow")), "{answer}");
    let addrs: Arc<Mutex<Vec<SocketAddr>>> =
        Arc::new(Mutex::new(nodes.iter().map(|n| n.addr).collect()));
    let bought = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = (0..3)
        .map(|i| {
            let (addrs, bought) = (Arc::clone(&addrs), Arc::clone(&bought));
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut turn = i;
                // Relaxed: a count; the main thread reads it after join.
                // Acquire: pairs with the main thread's Release.
                while !done.load(Ordering::Acquire) {
                    turn += 1;
                    let addr = {
                        let addrs = addrs.lock().unwrap();
                        addrs[turn % addrs.len()]
                    };
                    if buy(addr) == Some(true) {
                        bought.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Mid-sale: node 2 dies without a word, and comes back.
    while bought.load(Ordering::Relaxed) < stock / 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = nodes.remove(2);
    killed.kill();
    let back = start_node(&dirs[2], &scratch, "n2");
    addrs.lock().unwrap()[2] = back.addr;
    nodes.push(back);
    // Until every unit is sold (a liveness bound, not a speed one).
    let deadline = Instant::now() + Duration::from_secs(120);
    while total_sold(&nodes) < stock && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Release);
    for buyer in buyers {
        buyer.join().unwrap();
    }
    let per_node: Vec<u64> = nodes.iter().map(|n| sold_at(n.addr)).collect();
    assert_eq!(per_node.iter().sum::<u64>(), stock, "{per_node:?}");
    // Never more answers of "bought" than units; a purchase whose answer
    // the SIGKILL cut off may have sold (each buyer had at most one).
    let answered = bought.load(Ordering::Relaxed);
    assert!(
        (stock - 3..=stock).contains(&answered),
        "{answered} {per_node:?}"
    );
    // Sold out everywhere: nothing more can be bought.
    for node in &nodes {
        assert_eq!(buy(node.addr), Some(false));
    }
    let (status, view) = request(nodes[0].addr, "GET", "/v1/cluster", b"", &[]);
    assert_eq!((status, &view["node"]), (200, &json!("n0")), "{view}");
    // Any node's document shows the whole cluster (peers as of their last
    // report, a refresh ago at most): every node, all sold, none left.
    let whole = |doc: &serde_json::Value| {
        let nodes = doc["cluster"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let sold: u64 = nodes.iter().map(|n| n["sold"].as_u64().unwrap()).sum();
        (nodes.len(), sold, doc["cluster"]["available"].clone())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = (0, 0, json!(null));
    while seen != (3, stock, json!(0)) && Instant::now() < deadline {
        seen = whole(&request(nodes[0].addr, "GET", "/v1/skus/tee", b"", &[]).1);
    }
    assert_eq!(seen, (3, stock, json!(0)));
    // Each node's feed holds its own changes, every event naming the node.
    for (i, node) in nodes.iter().enumerate() {
        let (status, page) = request(node.addr, "GET", "/v1/events?limit=50", b"", &[]);
        let events = page["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(status, 200);
        assert!(!events.is_empty());
        let name = json!(format!("n{i}"));
        assert!(events.iter().all(|e| e["node"] == name), "{page}");
    }
    for node in nodes {
        assert_eq!(node.terminate(), Some(0));
    }
    let tee = assert_escrow_balanced(&scratch);
    assert_eq!((tee.received, tee.unleased), (stock, 0), "{tee:?}");
}

/// A node killed and never started again: `hotstock lease settle` gives
/// its unsold units back from its data directory. A node lost with its
/// data: `hotstock lease forfeit` writes its leases off and says how many
/// units (possibly undersold, never oversold).
#[test]
fn a_dead_node_is_settled_from_its_directory_or_forfeited() {
    let Some(url) = server() else { return };
    let scratch = EscrowScratch::new(&url, "dead_nodes");
    let stock: u64 = 200;
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("dead{i}"))).collect();
    let nodes: Vec<Server> = (0..2)
        .map(|i| start_node(&dirs[i], &scratch, &format!("d{i}")))
        .collect();
    let delta = json!({"delta": stock}).to_string();
    let (status, _) = request(
        nodes[0].addr,
        "POST",
        "/v1/skus/tee/adjust",
        delta.as_bytes(),
        &[],
    );
    assert_eq!(status, 202);
    // Each node sells a few units, then both die.
    let mut bought = [0u64; 2];
    for (i, node) in nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while bought[i] < 5 && Instant::now() < deadline {
            if buy(node.addr) == Some(true) {
                bought[i] += 1;
            }
        }
    }
    assert_eq!(bought, [5, 5]);
    for node in nodes {
        node.kill();
    }
    let hotstock = env!("CARGO_BIN_EXE_hotstock");
    let settled = Command::new(hotstock)
        .args(["lease", "settle", "--data-dir"])
        .arg(&dirs[0].0)
        .args(["--escrow", &scratch.url, "--escrow-schema", &scratch.schema])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&settled.stdout);
    assert!(
        settled.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&settled.stderr)
    );
    assert!(said.contains("node d0"), "{said}");
    // d1's data directory is lost.
    drop(dirs);
    let forfeited = Command::new(hotstock)
        .args(["lease", "forfeit", "--node", "d1"])
        .args(["--escrow", &scratch.url, "--escrow-schema", &scratch.schema])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&forfeited.stdout);
    assert!(forfeited.status.success(), "{said}");
    let mut escrow = scratch.escrow();
    assert!(escrow.open_leases("d1").unwrap().is_empty());
    let tee = assert_escrow_balanced(&scratch);
    // d0 gave back all it did not sell: what is not unleased is d0's 5
    // sold and whatever d1 was written off with (at least its 5 sold).
    let written_off = tee.received - tee.unleased - 5;
    assert!(written_off >= 5, "{tee:?}");
    assert!(
        said.contains(&format!("of {written_off} unit(s)")),
        "{said}"
    );
}

/// The escrow's PostgreSQL (a server of the test's own) stopped mid-sale
/// and started again: the nodes go on selling what they hold, refills
/// wait and retry, nothing is oversold, and once it is back they sell the
/// rest: sold == stock exactly.
#[test]
fn the_escrow_stopped_mid_sale_only_pauses_refills() {
    let port = free_port();
    let Some(postgres) = common::pg::PrivatePostgres::start("escrow-down test", port) else {
        return;
    };
    let scratch = EscrowScratch::new(&postgres.url(), "down");
    // Leases are at most a quarter of what is unleased (two nodes, k = 2)
    // and refills come below half a lease: with 100 sold before the stop,
    // the nodes hold at most half the stock, so the rest waits for the
    // escrow's return.
    let stock: u64 = 2_000;
    let (_dirs, nodes) = start_sale(&scratch, "p", 2, stock);
    let deadline = Instant::now() + Duration::from_secs(120);
    while total_sold(&nodes) < 100 && Instant::now() < deadline {
        buy_round(&nodes);
    }
    postgres.stop_now().unwrap();
    // Down: each node sells what it holds, then answers sold out; the
    // cluster view says the escrow cannot be reached.
    let unreachable = |node: &Server| {
        let (_, view) = request(node.addr, "GET", "/v1/cluster", b"", &[]);
        view["escrow"]["reachable"] == json!(false)
    };
    while !nodes.iter().all(unreachable) && Instant::now() < deadline {
        buy_round(&nodes);
    }
    while buy_round(&nodes) > 0 && Instant::now() < deadline {}
    let while_down = total_sold(&nodes);
    assert!(while_down < stock, "{while_down}");
    assert!(nodes.iter().all(unreachable));
    postgres.start_again().unwrap();
    while total_sold(&nodes) < stock && Instant::now() < deadline {
        buy_round(&nodes);
    }
    assert_eq!(total_sold(&nodes), stock);
    for node in &nodes {
        assert_eq!(buy(node.addr), Some(false));
    }
    for node in nodes {
        assert_eq!(node.terminate(), Some(0));
    }
    let tee = assert_escrow_balanced(&scratch);
    assert_eq!((tee.received, tee.unleased), (stock, 0), "{tee:?}");
}

/// The escrow on a primary with a synchronous streaming standby; mid-sale
/// the primary dies and the standby is promoted. The nodes' URL names
/// both (`target_session_attrs=read-write`), so they reconnect to the new
/// primary: every lease granted before the promotion is known after it,
/// nothing is oversold, and sold == stock exactly.
#[test]
fn the_escrow_fails_over_to_its_standby_mid_sale() {
    let port = free_port();
    let Some(primary) = common::pg::PrivatePostgres::start_primary("failover test", port) else {
        return;
    };
    let standby = primary.standby(free_port());
    primary.require_synchronous_standby();
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let scratch = EscrowScratch::new(&url, "failover");
    let stock: u64 = 1_000;
    let (_dirs, nodes) = start_sale(&scratch, "f", 2, stock);
    let deadline = Instant::now() + Duration::from_secs(120);
    while total_sold(&nodes) < stock / 4 && Instant::now() < deadline {
        buy_round(&nodes);
    }
    let before: Vec<_> = ["f0", "f1"]
        .iter()
        .flat_map(|node| scratch.escrow().open_leases(node).unwrap())
        .collect();
    primary.stop_now().unwrap();
    standby.promote().unwrap();
    // Every lease granted before the promotion is known after it (open,
    // or closed since by its node), with what it granted.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let sql = format!(
        "SELECT granted FROM {}.escrow_leases WHERE id = $1",
        scratch.schema
    );
    for lease in &before {
        let row = client.query_opt(&sql, &[&lease.id]).unwrap();
        let granted = row.map(|row| row.get::<_, i64>(0) as u64);
        assert_eq!(
            granted,
            Some(lease.granted),
            "lease {} after the failover",
            lease.id
        );
    }
    assert!(!before.is_empty());
    while total_sold(&nodes) < stock && Instant::now() < deadline {
        buy_round(&nodes);
    }
    assert_eq!(total_sold(&nodes), stock);
    for node in nodes {
        assert_eq!(node.terminate(), Some(0));
    }
    let tee = assert_escrow_balanced(&scratch);
    assert_eq!((tee.received, tee.unleased), (stock, 0), "{tee:?}");
}

/// A port free now, for a node whose peers must know its address before
/// it starts, or a PostgreSQL server of the test's own (the kernel may
/// hand it out again in between: unlikely on a test machine, and the
/// server then fails to start, loudly). Never a port made from the pid:
/// that lands in the ephemeral range, where the other tests' nodes and
/// connections take ports too (a failover test once failed so, at
/// `pg_ctl start`).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `count` nodes named `{prefix}{i}` that know each other (`--peer`), so
/// each routes requests to the node owning them.
fn start_routed(
    scratch: &EscrowScratch,
    prefix: &str,
    count: usize,
) -> (Vec<TempDir>, Vec<Server>) {
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
    let listen: Vec<String> = (0..count)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let dirs: Vec<TempDir> = ids.iter().map(|id| TempDir::new(id)).collect();
    let nodes = (0..count)
        .map(|i| {
            let mut args = vec![
                "--node-id".to_owned(),
                ids[i].clone(),
                "--escrow".to_owned(),
                scratch.url.clone(),
                "--escrow-schema".to_owned(),
                scratch.schema.clone(),
            ];
            for j in (0..count).filter(|&j| j != i) {
                args.push("--peer".to_owned());
                args.push(format!("{}={}", ids[j], listen[j]));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start_at(&dirs[i].0, &listen[i], &args, std::process::Stdio::null())
        })
        .collect();
    (dirs, nodes)
}

/// Polls `node` until its own figures of `sku` satisfy `ready`; panics
/// after 30 s with the last document.
fn wait_for(node: &Server, sku: &str, ready: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = format!("/v1/skus/{sku}");
    loop {
        let (status, doc) = request(node.addr, "GET", &path, b"", &[]);
        if status == 200 && ready(&doc) {
            return;
        }
        assert!(Instant::now() < deadline, "node never got ready: {doc}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn order(customer: Option<&str>, confirm: bool) -> String {
    order_of("tee", customer, confirm)
}

fn order_of(sku: &str, customer: Option<&str>, confirm: bool) -> String {
    let mut body = json!({"lines": [{"sku": sku, "quantity": 1}], "confirm": confirm});
    if let Some(customer) = customer {
        body["customer"] = json!(customer);
    }
    body.to_string()
}

/// Routing (#15): a customer's orders, a reservation's transitions and an
/// idempotency key each land on one node, whichever node is asked. A
/// customer spreading orders over three nodes cannot pass its limit; a
/// hold made through one node is confirmed through another; a keyed retry
/// at every node places one order; and a request about a node that is
/// down is refused, not served by the wrong node.
#[test]
fn a_customer_is_served_by_one_node_wherever_it_asks() {
    let Some(url) = server() else { return };
    let scratch = EscrowScratch::new(&url, "routed");
    let (_dirs, mut nodes) = start_routed(&scratch, "r", 3);
    // The limit first: each node applies it before it books any unit.
    let limit = json!({"per_customer_limit": 2}).to_string();
    let set = request(nodes[1].addr, "PUT", "/v1/skus/tee", limit.as_bytes(), &[]);
    assert_eq!(set.0, 202, "{}", set.1);
    let delta = json!({"delta": 300}).to_string();
    for sku in ["tee", "mug"] {
        let path = format!("/v1/skus/{sku}/adjust");
        let adjust = request(nodes[0].addr, "POST", &path, delta.as_bytes(), &[]);
        assert_eq!(adjust.0, 202, "{}", adjust.1);
    }
    for node in &nodes {
        wait_for(node, "tee", |doc| {
            doc["available"].as_u64() > Some(0) && doc["per_customer_limit"] == json!(2)
        });
        wait_for(node, "mug", |doc| doc["available"].as_u64() > Some(0));
    }

    // Alice asks every node in turn, nine times: two units in all.
    let mut bought = Vec::new();
    for i in 0..9 {
        let body = order(Some("alice"), true);
        let (status, answer) = request(
            nodes[i % 3].addr,
            "POST",
            "/v1/reservations",
            body.as_bytes(),
            &[],
        );
        match status {
            201 => bought.push(answer["id"].as_str().unwrap().to_owned()),
            409 => assert_eq!(answer["error"], "limit_exceeded", "{answer}"),
            _ => panic!("order {i} answered {status}: {answer}"),
        }
    }
    assert_eq!(bought.len(), 2, "{bought:?}");
    let alice_owner = hotstock::server::forward::owner_index(b"alice", 3);
    for id in &bought {
        assert!(id.starts_with(&format!("r{alice_owner}~")), "{id}");
    }

    // Bob's hold, confirmed through a node that did not make it, read
    // through the third.
    let body = order(Some("bob"), false);
    let (status, held) = request(
        nodes[0].addr,
        "POST",
        "/v1/reservations",
        body.as_bytes(),
        &[],
    );
    assert_eq!(status, 201, "{held}");
    let id = held["id"].as_str().unwrap();
    let owner: usize = id[1..id.find('~').unwrap()].parse().unwrap();
    assert_eq!(owner, hotstock::server::forward::owner_index(b"bob", 3));
    let other = (owner + 1) % 3;
    let path = format!("/v1/reservations/{id}/confirm");
    let (status, confirmed) = request(nodes[other].addr, "POST", &path, b"", &[]);
    assert_eq!(
        (status, &confirmed["status"]),
        (200, &json!("confirmed")),
        "{confirmed}"
    );
    let path = format!("/v1/reservations/{id}");
    let (status, read) = request(nodes[(owner + 2) % 3].addr, "GET", &path, b"", &[]);
    assert_eq!(
        (status, &read["id"], &read["status"]),
        (200, &json!(id), &json!("confirmed"))
    );

    // The feed of the owner names the reservation as the API does (the
    // event follows the answer once its batch is folded: long-polled).
    let deadline = Instant::now() + Duration::from_secs(30);
    let feed = "/v1/events?limit=1000&type=reservation.confirmed&wait_ms=500";
    loop {
        let (_, page) = request(nodes[owner].addr, "GET", feed, b"", &[]);
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["reservation"] == json!(id)) {
            break;
        }
        assert!(Instant::now() < deadline, "no event names {id}: {page}");
    }

    // A keyed anonymous order (of a SKU with no limit) retried at every
    // node: one order.
    let mugs_sold = |nodes: &[Server]| -> u64 {
        (nodes.iter())
            .map(|n| {
                request(n.addr, "GET", "/v1/skus/mug", b"", &[]).1["sold"]
                    .as_u64()
                    .unwrap()
            })
            .sum()
    };
    let before = mugs_sold(&nodes);
    let mut ids = Vec::new();
    for node in &nodes {
        let key = [("Idempotency-Key", "order-77")];
        let body = order_of("mug", None, true);
        let (status, answer) =
            request(node.addr, "POST", "/v1/reservations", body.as_bytes(), &key);
        assert_eq!(status, 201, "{answer}");
        ids.push(answer["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(mugs_sold(&nodes), before + 1);

    // An operator's delivery retried through another node, with its key:
    // received once; a single node would refuse the key (400).
    let delivery = json!({"delta": 10}).to_string();
    let key = [("Idempotency-Key", "delivery-1")];
    let mut replayed = Vec::new();
    for node in &nodes[..2] {
        let path = "/v1/skus/mug/adjust";
        let (status, answer) = request(node.addr, "POST", path, delivery.as_bytes(), &key);
        assert_eq!(status, 202, "{answer}");
        replayed.push(answer["replayed"].clone());
    }
    assert_eq!(replayed, [json!(false), json!(true)]);
    let audit = scratch.escrow().audit().unwrap();
    let mug = audit.iter().find(|s| s.sku == "mug").unwrap();
    assert_eq!(mug.received, 310, "{audit:?}");

    // Rules one node would keep alone are refused, and change nothing.
    let refused = [
        ("PUT", "/v1/skus/tee", json!({"safety_stock": 5})),
        (
            "PUT",
            "/v1/skus/tee",
            json!({"per_customer_limit": 3, "low_stock_threshold": 4}),
        ),
        ("PUT", "/v1/skus/tee", json!({"backorder_limit": 5})),
        (
            "PUT",
            "/v1/skus/tee",
            json!({"waiting_room": {"admit_per_s": 10}}),
        ),
        (
            "PUT",
            "/v1/kits/pair",
            json!({"components": [{"sku": "tee", "quantity": 2}]}),
        ),
        (
            "PUT",
            "/v1/skus/tee/locations/berlin",
            json!({"available": 5}),
        ),
    ];
    for (method, path, body) in refused {
        let body = body.to_string();
        let (status, answer) = request(nodes[2].addr, method, path, body.as_bytes(), &[]);
        assert_eq!(
            (status, &answer["error"]),
            (409, &json!("cluster_refused")),
            "{path} {answer}"
        );
    }
    let (_, tee) = request(nodes[2].addr, "GET", "/v1/skus/tee", b"", &[]);
    assert_eq!(
        (&tee["safety_stock"], &tee["per_customer_limit"]),
        (&json!(0), &json!(2)),
        "{tee}"
    );

    // A request claiming to come from a node with other members.
    let forged = [("hotstock-forwarded-by", "x x,y")];
    let (status, answer) = request(nodes[0].addr, "GET", &path, b"", &forged);
    assert_eq!(
        (status, &answer["error"]),
        (421, &json!("misrouted")),
        "{answer}"
    );

    // A customer of a node that is down: refused where asked, nothing sold.
    let down = 2;
    nodes.remove(down).kill();
    let customer = (0..)
        .map(|n| format!("carol{n}"))
        .find(|c| hotstock::server::forward::owner_index(c.as_bytes(), 3) == down)
        .unwrap();
    let before = total_sold(&nodes);
    let body = order(Some(&customer), true);
    let (status, answer) = request(
        nodes[0].addr,
        "POST",
        "/v1/reservations",
        body.as_bytes(),
        &[],
    );
    assert_eq!(
        (status, &answer["error"]),
        (503, &json!("peer_unavailable")),
        "{answer}"
    );
    assert_eq!(answer["node"], json!("r2"), "{answer}");
    assert_eq!(total_sold(&nodes), before);
}

/// An operator's withdrawal (damaged units, or a count that found fewer)
/// goes to the escrow through any node and takes unleased units only: more
/// is 409 `insufficient_stock` naming what is unleased, and it asks the
/// nodes to give units back, so a retry goes through; a keyed one happens
/// once.
#[test]
fn an_operator_withdraws_unleased_units_through_any_node() {
    let Some(url) = server() else { return };
    let scratch = EscrowScratch::new(&url, "withdrawn");
    let (_dirs, nodes) = start_routed(&scratch, "w", 2);
    let adjust = |node: &Server, sku: &str, delta: i64, key: &[(&str, &str)]| {
        let body = json!({"delta": delta}).to_string();
        let path = format!("/v1/skus/{sku}/adjust");
        request(node.addr, "POST", &path, body.as_bytes(), key)
    };
    assert_eq!(adjust(&nodes[0], "tee", 10, &[]).0, 202);
    for node in &nodes {
        wait_for(node, "tee", |doc| doc["available"].as_u64() > Some(0));
    }
    let (status, answer) = adjust(&nodes[1], "tee", -11, &[]);
    assert_eq!(
        (status, &answer["error"], &answer["requested"]),
        (409, &json!("insufficient_stock"), &json!(11)),
        "{answer}"
    );
    assert!(answer["available"].as_u64() <= Some(10), "{answer}");
    let (status, answer) = adjust(&nodes[1], "cap", -1, &[]);
    assert_eq!(
        (status, &answer["error"]),
        (404, &json!("unknown_sku")),
        "{answer}"
    );
    assert_eq!(adjust(&nodes[1], "tee", 0, &[]).0, 400);
    assert_eq!(assert_escrow_balanced(&scratch).received, 10);

    // The nodes hold the units; each refusal asks them for some back.
    let key = [("Idempotency-Key", "count-1")];
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let (status, answer) = adjust(&nodes[1], "tee", -3, &key);
        if status == 200 {
            break answer;
        }
        assert_eq!(
            (status, &answer["error"]),
            (409, &json!("insufficient_stock"))
        );
        assert!(Instant::now() < deadline, "no unit came back: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let withdrawn = json!({"sku": "tee", "withdrawn": 3, "from": "escrow", "replayed": false});
    assert_eq!(answer, withdrawn);
    let (status, again) = adjust(&nodes[0], "tee", -3, &key);
    assert_eq!((status, &again["replayed"]), (200, &json!(true)), "{again}");
    assert_eq!(assert_escrow_balanced(&scratch).received, 7);
    for node in &nodes {
        wait_for(node, "tee", |doc| doc["cluster"]["available"] == json!(7));
    }
}

/// Sends `signal` to `server`'s process (SIGSTOP freezes it, as a long
/// pause or an overloaded machine would; SIGCONT lets it go on).
fn signal(server: &Server, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid, which is not yet reaped.
    let sent = unsafe { libc::kill(server.child.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({signal})");
}

/// A slow node (frozen with SIGSTOP mid-sale) strands only what its leases
/// hold: the other node sells every other unit, exactly, while it is
/// frozen; once it resumes it answers the other's demand, and together
/// they sell the whole stock. Never more.
#[test]
fn a_frozen_node_strands_only_its_leases() {
    let Some(url) = server() else { return };
    let scratch = EscrowScratch::new(&url, "frozen");
    let stock: u64 = 400;
    let (_dirs, nodes) = start_sale(&scratch, "f", 2, stock);
    for node in &nodes {
        wait_for(node, "tee", |doc| doc["available"].as_u64() > Some(0));
    }
    assert_eq!(buy_round(&nodes), 2);
    signal(&nodes[1], libc::SIGSTOP);

    // The other node sells until nothing is unleased and it has none.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stuck = buy(nodes[0].addr) == Some(false);
        if stuck && assert_escrow_balanced(&scratch).unleased == 0 {
            let (_, doc) = request(nodes[0].addr, "GET", "/v1/skus/tee", b"", &[]);
            if doc["available"] == json!(0) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the live node never sold out");
    }
    // Exactly what the frozen node's leases do not hold was sold here.
    let mut escrow = scratch.escrow();
    let frozen_open: u64 = (escrow.open_leases("f1").unwrap().iter())
        .map(|lease| lease.granted)
        .sum();
    let frozen_closed = scratch.sold_by("f1");
    assert_eq!(sold_at(nodes[0].addr), stock - frozen_open - frozen_closed);
    assert!(frozen_open > 0, "the frozen node held nothing");

    // Resumed, it gives units back on the other's demand; all is sold.
    signal(&nodes[1], libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(60);
    while total_sold(&nodes) < stock {
        buy_round(&nodes);
        assert!(
            Instant::now() < deadline,
            "sold {} of {stock}",
            total_sold(&nodes)
        );
    }
    assert_eq!(total_sold(&nodes), stock);
    assert_eq!(buy_round(&nodes), 0, "sold past the stock");
    assert_escrow_balanced(&scratch);
}
