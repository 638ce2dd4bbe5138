//! Recovery time: 1M SKUs and 10M journal events back in a fresh process.
//!
//! ```text
//! cargo run --release --example recovery_bench -- [--skus 1000000] [--events 10000000] [--dir /tmp/x]
//! ```
//!
//! Phase 1 (this process): create the SKUs (2 events each: creation and
//! stock), then sell single units of random SKUs until the journal holds
//! `--events` events; flush; exit *without* a checkpoint, as a crash would,
//! so recovery must replay every event. Phase 2: a fresh process opens the
//! data directory and times it. Both phases run as children of the first.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};

fn config(dir: &PathBuf) -> DurableConfig {
    let mut config = DurableConfig::new(dir, Durability::Async);
    config.checkpoint_interval = Duration::from_secs(24 * 3600);
    config
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let skus: u64 = arg("--skus")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let events: u64 = arg("--events")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir: PathBuf = arg("--dir").map_or_else(
        || std::env::temp_dir().join("hotstock-recovery-bench"),
        PathBuf::from,
    );

    if args.iter().any(|a| a == "--recover") {
        let began = Instant::now();
        let (durable, report) = DurableEngine::open(config(&dir)).expect("recovery");
        let wall = began.elapsed();
        let engine = durable.engine();
        let sold: u64 = engine
            .skus_after(None, usize::MAX)
            .iter()
            .map(|d| d.sold)
            .sum();
        println!(
            "recovered {} SKUs, replayed {} events from {} segments",
            report.skus, report.events_replayed, report.segments_replayed
        );
        println!("units sold across all SKUs: {sold}");
        println!("recovery time (open to ready): {:.2} s", wall.as_secs_f64());
        std::mem::forget(durable);
        std::process::exit(0);
    }

    let own = |phase: &str| {
        Command::new(std::env::current_exe().expect("own path"))
            .args([phase, "--dir"])
            .arg(&dir)
            .args(["--skus", &skus.to_string(), "--events", &events.to_string()])
            .status()
            .expect("run a phase")
    };
    if !args.iter().any(|a| a == "--build") {
        let _ = std::fs::remove_dir_all(&dir);
        let built = own("--build");
        let recovered = if built.success() {
            own("--recover")
        } else {
            built
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(recovered.code().unwrap_or(1));
    }

    let began = Instant::now();
    let (durable, _) = DurableEngine::open(config(&dir)).expect("open");
    let engine = durable.engine().clone();
    let ids: Vec<_> = (0..skus)
        .map(|i| {
            engine
                .put_sku(&format!("sku-{i:07}"), 1_000_000, None, None)
                .expect("put")
                .0
        })
        .collect();
    let sells = events.saturating_sub(2 * skus);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..sells {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        engine.sell(ids[(x % skus) as usize], 1).expect("stock");
        if i % 1_000_000 == 0 {
            // Keep the writer's lanes from growing without bound.
            engine
                .wait_durable(engine.durability_ticket())
                .expect("journal");
        }
    }
    engine
        .wait_durable(engine.durability_ticket())
        .expect("journal");
    let bytes: u64 = std::fs::read_dir(dir.join("journal"))
        .expect("journal dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    println!(
        "built {} SKUs and {} events ({} MiB of journal) in {:.1} s",
        skus,
        2 * skus + sells,
        bytes >> 20,
        began.elapsed().as_secs_f64()
    );
    // Exit like a crash: no checkpoint, so recovery replays everything.
    std::mem::forget(durable);
    std::process::exit(0);
}
