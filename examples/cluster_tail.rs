//! The tail of a cluster's sale (#15): the time to sell the last 1% of the
//! stock with three nodes against one, and the escrow statements per unit
//! over the whole sale, in one process (durable engines with lease keepers
//! on one escrow schema), alternated.
//!
//! ```text
//! HOTSTOCK_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \
//!   cargo run --release --example cluster_tail -- [runs] [units] [rate]
//! ```
//!
//! Buyers arrive at `rate` purchases per second in all (default 20000: a
//! server's pace, not the engine's), each at a node picked at random (a
//! load balancer), and a buyer told "sold out" simply tries again. The
//! tail is from the moment 99% of the units are sold to the last one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotstock::durable::escrow::Escrow;
use hotstock::durable::journal::Durability;
use hotstock::durable::lease_keeper::{KeeperConfig, LeaseKeeper};
use hotstock::durable::{DurableConfig, DurableEngine};

struct Outcome {
    tail: Duration,
    whole: Duration,
    statements: u64,
}

fn sale(url: &str, nodes: usize, units: u64, rate: u64, run: usize) -> Outcome {
    let schema = format!("bench_tail_{}_{run}_{nodes}", std::process::id());
    let mut escrow = Escrow::connect(url, &schema).unwrap();
    escrow.receive("hot", units).unwrap();
    let dirs: Vec<_> = (0..nodes)
        .map(|i| std::env::temp_dir().join(format!("{schema}-{i}")))
        .collect();
    let engines: Vec<Arc<DurableEngine>> = (dirs.iter())
        .map(|dir| {
            let _ = std::fs::remove_dir_all(dir);
            let config = DurableConfig::new(dir, Durability::Async);
            Arc::new(DurableEngine::open(config).unwrap().0)
        })
        .collect();
    let keepers: Vec<LeaseKeeper> = (engines.iter().enumerate())
        .map(|(i, durable)| {
            let mut config = KeeperConfig::new(&format!("n{i}"), "127.0.0.1:1", url);
            config.schema = schema.clone();
            let engine = Arc::clone(durable.engine());
            LeaseKeeper::start(engine, config, durable.boot())
                .unwrap()
                .0
        })
        .collect();
    let sold = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next = started;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut at_99 = None;
    let mut misses: Vec<u32> = Vec::new();
    // One thread is the whole crowd: buyers at `rate`, each at a random
    // node (a purchase takes well under a microsecond, so one thread keeps
    // the pace the clock sets).
    while sold.load(Ordering::Relaxed) < units && started.elapsed() < Duration::from_secs(120) {
        let now = Instant::now();
        if now < next {
            std::hint::spin_loop();
            continue;
        }
        next += interval;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let engine = engines[(seed % nodes as u64) as usize].engine();
        let window = (started.elapsed().as_millis() / 100) as usize;
        if misses.len() <= window {
            misses.resize(window + 1, 0u32);
        }
        misses[window] += 1;
        if let Ok(sku) = engine.sku("hot") {
            if engine.purchase(sku, 1, None).is_ok() {
                misses[window] -= 1;
                let total = sold.fetch_add(1, Ordering::Relaxed) + 1;
                if total * 100 >= units * 99 && at_99.is_none() {
                    at_99 = Some(Instant::now());
                }
            }
        }
    }
    let ended = Instant::now();
    let statements = keepers.iter().map(|k| k.status().statements).sum();
    if std::env::var_os("CLUSTER_TAIL_DEBUG").is_some() {
        eprintln!("attempts that bought nothing, per 100 ms: {misses:?}");
        for keeper in &keepers {
            eprintln!("{:?}", keeper.status());
        }
    }
    for keeper in keepers {
        keeper.stop().unwrap();
    }
    drop(engines);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
    assert_eq!(
        sold.load(Ordering::Relaxed),
        units,
        "the sale did not sell out"
    );
    Outcome {
        tail: ended - at_99.unwrap_or(ended),
        whole: ended - started,
        statements,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let url = std::env::var("HOTSTOCK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into());
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let runs = *args.first().unwrap_or(&5) as usize;
    let units = *args.get(1).unwrap_or(&20_000);
    let rate = *args.get(2).unwrap_or(&20_000);
    println!("{units} units at {rate} purchases/s, {runs} runs, one node then three, alternated");
    println!("run  nodes  whole_ms  tail_ms  statements  per_unit");
    let mut tails = [Vec::new(), Vec::new()];
    let mut per_unit = [Vec::new(), Vec::new()];
    for run in 0..runs {
        for (slot, nodes) in [1, 3].into_iter().enumerate() {
            let outcome = sale(&url, nodes, units, rate, run);
            let ratio = outcome.statements as f64 / units as f64;
            println!(
                "{run:3}  {nodes:5}  {:8.1}  {:7.1}  {:10}  {ratio:.5}",
                outcome.whole.as_secs_f64() * 1e3,
                outcome.tail.as_secs_f64() * 1e3,
                outcome.statements
            );
            tails[slot].push(outcome.tail.as_secs_f64() * 1e3);
            per_unit[slot].push(ratio);
        }
    }
    let (one, three) = (median(tails[0].clone()), median(tails[1].clone()));
    println!(
        "median tail: one node {one:.1} ms, three nodes {three:.1} ms, ratio {:.2}; \
         statements per unit: one {:.5}, three {:.5}",
        three / one,
        median(per_unit[0].clone()),
        median(per_unit[1].clone())
    );
}
