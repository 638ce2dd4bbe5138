//! Hot-SKU purchase throughput and durable-ack latency with the journal off,
//! `async` and `sync`, measured in one process run so the figures compare.
//!
//! ```text
//! cargo run --release --example journal_bench -- [--threads 64] [--seconds 3] [--dir /tmp/x]
//! ```
//!
//! Each of `--threads` threads loops: purchase one unit of one hot SKU (a
//! reservation record, confirmed). In `sync`, each purchase is a waiter: a
//! thread keeps up to `--depth` purchases in flight (as a server keeps many
//! concurrent requests, each awaiting its durability future) and, once the
//! window is full, waits for the oldest to be on disk before the next.
//! Latency is from a purchase's start to its durable acknowledgement.
//! `--op sell` measures the record-less sale instead.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hotstock::durable::journal::{Durability, Ticket};
use hotstock::durable::{DurableConfig, DurableEngine, JournaledEngine};
use hotstock::{ChangeSink, Engine, EngineConfig};

struct Outcome {
    ops: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

/// What a measured thread waits on: the journal's tickets, or nothing.
trait Durable: Sync {
    fn ticket(&self) -> Ticket;
    fn wait(&self, ticket: Ticket);
}

impl Durable for Engine {
    fn ticket(&self) -> Ticket {
        Ticket::NONE
    }

    fn wait(&self, _: Ticket) {}
}

impl Durable for JournaledEngine {
    fn ticket(&self) -> Ticket {
        self.durability_ticket()
    }

    fn wait(&self, ticket: Ticket) {
        self.wait_durable(ticket).expect("journal healthy");
    }
}

fn run<S: ChangeSink>(
    engine: &Engine<S>,
    threads: usize,
    seconds: u64,
    wait: bool,
    depth: usize,
    sell: bool,
) -> Outcome
where
    Engine<S>: Durable,
{
    let sku = engine.sku("hot").expect("created");
    let stop = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    let (per_thread, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, start) = (&stop, &start);
                s.spawn(move || {
                    let mut latencies = Vec::with_capacity(1 << 16);
                    let mut in_flight = std::collections::VecDeque::with_capacity(depth + 1);
                    let micros =
                        |began: Instant| began.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let began = Instant::now();
                        if sell {
                            engine.sell(sku, 1).expect("bottomless stock");
                        } else {
                            engine.purchase(sku, 1, None).expect("bottomless stock");
                        }
                        if !wait {
                            latencies.push(micros(began));
                            continue;
                        }
                        in_flight.push_back((began, engine.ticket()));
                        while in_flight.len() > depth {
                            let (began, ticket) = in_flight.pop_front().expect("non-empty");
                            engine.wait(ticket);
                            latencies.push(micros(began));
                        }
                    }
                    for (began, ticket) in in_flight {
                        engine.wait(ticket);
                        latencies.push(micros(began));
                    }
                    latencies
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        let per_thread: Vec<Vec<u32>> = handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect();
        (per_thread, began.elapsed())
    });
    let mut latencies_us: Vec<u32> = per_thread.into_iter().flatten().collect();
    latencies_us.sort_unstable();
    Outcome {
        ops: latencies_us.len() as u64,
        elapsed,
        latencies_us,
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let threads: usize = arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(64);
    let seconds: u64 = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let depth: usize = arg("--depth").and_then(|v| v.parse().ok()).unwrap_or(256);
    // `--op sell`: the record-less sale (no reservation record, smaller event).
    let sell = arg("--op").as_deref() == Some("sell");
    let base: PathBuf = arg("--dir").map_or_else(
        || std::env::temp_dir().join("hotstock-journal-bench"),
        PathBuf::from,
    );
    let engine_config = EngineConfig {
        max_reservations: 1 << 26,
        ..EngineConfig::default()
    };
    let mut rows = Vec::new();

    let only = arg("--only");
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let off = Engine::new(engine_config.clone()).expect("config");
    off.put_sku("hot", 1 << 39, None, None).expect("put");
    off.prepare_hot(off.sku("hot").expect("sku")).expect("hot");
    if wanted("off") {
        rows.push((
            "journal off",
            run(&off, threads, seconds, false, depth, sell),
        ));
    }
    drop(off);

    for (name, durability, wait) in [
        ("journal async (no wait)", Durability::Async, false),
        ("journal sync (every op awaited)", Durability::Sync, true),
    ] {
        if !wanted(name) {
            continue;
        }
        let dir = base.join(name.split_whitespace().nth(1).unwrap_or("x"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = DurableConfig::new(&dir, durability);
        config.engine = engine_config.clone();
        config.checkpoint_interval = Duration::from_secs(3600);
        let (durable, _) = DurableEngine::open(config).expect("open");
        let engine = durable.engine().clone();
        engine.put_sku("hot", 1 << 39, None, None).expect("put");
        engine
            .prepare_hot(engine.sku("hot").expect("sku"))
            .expect("hot");
        rows.push((name, run(&engine, threads, seconds, wait, depth, sell)));
        // Leave like a crash: a clean close would checkpoint the millions of
        // reservation rows just made, which is not what is measured here.
        std::mem::forget(engine);
        std::mem::forget(durable);
        let _ = std::fs::remove_dir_all(&dir);
    }

    let off_rate = rows
        .first()
        .map_or(1.0, |(_, o)| o.ops as f64 / o.elapsed.as_secs_f64());
    println!(
        "threads: {threads}, in flight per thread (sync): {depth}, seconds per run: {seconds}"
    );
    println!("| configuration | purchases/s | vs journal off | p50 latency | p99 latency |");
    println!("|---|---:|---:|---:|---:|");
    for (name, outcome) in &rows {
        let rate = outcome.ops as f64 / outcome.elapsed.as_secs_f64();
        println!(
            "| {name} | {:.0} | {:.0}% | {} us | {} us |",
            rate,
            100.0 * rate / off_rate,
            percentile(&outcome.latencies_us, 0.50),
            percentile(&outcome.latencies_us, 0.99)
        );
    }
}
