//! Cost of checkpointing a flash sale's reservation rows (and, since the
//! change feed, one outbox event per purchase) into SQLite, or PostgreSQL
//! with `--postgres URL` (schema `hotstock_checkpoint_bench`, dropped first).
//!
//! ```text
//! cargo run --release --example checkpoint_bench -- [--rows 200000] [--rounds 1] [--dir /tmp/x] [--postgres URL]
//! ```
//!
//! `--rounds N` sells and checkpoints `rows` N times and times the last
//! checkpoint only, into a store already holding the earlier rounds' rows
//! (as a long sale's later checkpoints do).
//!
//! Two threads buy single units of one SKU (each purchase is a confirmed
//! reservation record, a row for the store), the journal is flushed, and one
//! checkpoint then writes every row. Prints the checkpoint's wall time per
//! row. For instruction counts, which are stable on a noisy machine, run it
//! under callgrind collecting only the checkpoint:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no \
//!   --toggle-collect='*DurableEngine::checkpoint' \
//!   target/release/examples/checkpoint_bench --rows 100000
//! ```
//!
//! and divide the total by the rows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rows: u64 = arg("--rows")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir: PathBuf = arg("--dir").map_or_else(
        || std::env::temp_dir().join("hotstock-checkpoint-bench"),
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&dir);

    let mut config = DurableConfig::new(&dir, Durability::Async);
    if let Some(url) = arg("--postgres") {
        let schema = "hotstock_checkpoint_bench";
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .expect("drop the bench schema");
        config.store = hotstock::durable::StoreConfig::Postgres {
            url,
            schema: schema.into(),
        };
    }
    // Only the checkpoint this program asks for.
    config.checkpoint_interval = Duration::from_secs(24 * 3600);
    let (durable, _) = DurableEngine::open(config).expect("open the data directory");
    let engine = durable.engine().clone();
    let rounds: u64 = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(1);
    let (sku, _) = engine
        .put_sku("hot", rows, None, None)
        .expect("create the SKU");
    let mut took = Duration::ZERO;
    for round in 0..rounds {
        if round > 0 {
            engine.restock(sku, rows).expect("restock");
        }
        std::thread::scope(|s| {
            for _ in 0..2 {
                let engine = engine.clone();
                s.spawn(move || while engine.purchase(sku, 1, None).is_ok() {});
            }
        });
        assert_eq!(
            engine.sku_document(sku).expect("the SKU").sold,
            rows * (round + 1)
        );
        engine
            .wait_durable(engine.durability_ticket())
            .expect("flush the journal");
        let began = Instant::now();
        durable.checkpoint().expect("checkpoint");
        // The last round's: the store already holds the earlier rounds'
        // rows, as in a long sale.
        took = began.elapsed();
    }
    println!(
        "checkpointed {rows} purchases (a reservation row and an event each) in {:.3} s: {:.2} us per purchase",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / rows as f64
    );
    durable.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}
