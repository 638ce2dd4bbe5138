//! Cost of checkpointing a flash sale's reservation rows (and, since the
//! change feed, one outbox event per purchase) into SQLite, or PostgreSQL
//! with `--postgres URL` (schema `hotstock_checkpoint_bench`, dropped first).
//!
//! ```text
//! cargo run --release --example checkpoint_bench -- [--rows 200000] [--rounds 1] [--skus 1] [--dir /tmp/x] [--postgres URL]
//! ```
//!
//! `--rounds N` sells and checkpoints `rows` N times and times the last
//! checkpoint only, into a store already holding the earlier rounds' rows
//! (as a long sale's later checkpoints do). `--skus N` spreads the sale
//! over N SKUs (`s0` … `s{N-1}`, each bought in turn, as the showdown's
//! uniform row spreads it), so each checkpoint also writes N SKU rows.
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
    let sku_count: u64 = arg("--skus").and_then(|v| v.parse().ok()).unwrap_or(1);
    assert!(
        (1..=rows).contains(&sku_count),
        "--skus is 1 to --rows, so every SKU sells"
    );
    // Each SKU gets its share of the rows; the first ones one more each.
    let share = |i: u64| rows / sku_count + u64::from(i < rows % sku_count);
    let skus: Vec<_> = (0..sku_count)
        .map(|i| {
            let name = if sku_count == 1 {
                "hot".to_owned()
            } else {
                format!("s{i}")
            };
            engine
                .put_sku(&name, share(i), None, None)
                .expect("create the SKU")
                .0
        })
        .collect();
    let mut took = Duration::ZERO;
    for round in 0..rounds {
        if round > 0 {
            for (i, &sku) in (0..).zip(&skus) {
                engine.restock(sku, share(i)).expect("restock");
            }
        }
        std::thread::scope(|s| {
            for start in 0..2 {
                let (engine, skus) = (engine.clone(), &skus);
                // Each thread walks the SKUs from its own place; a SKU sold
                // out is skipped, and the thread stops once all are.
                s.spawn(move || {
                    let mut left = skus.len();
                    let mut next = start * skus.len() / 2;
                    let mut sold_out = vec![false; skus.len()];
                    while left > 0 {
                        if !sold_out[next] && engine.purchase(skus[next], 1, None).is_err() {
                            sold_out[next] = true;
                            left -= 1;
                        }
                        next = (next + 1) % skus.len();
                    }
                });
            }
        });
        let sold: u64 = skus
            .iter()
            .map(|&sku| engine.sku_document(sku).expect("the SKU").sold)
            .sum();
        assert_eq!(sold, rows * (round + 1));
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
        "checkpointed {rows} purchases of {sku_count} SKUs (a reservation row and an event each) in {:.3} s: {:.2} us per purchase",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / rows as f64
    );
    durable.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}
