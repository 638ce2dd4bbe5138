//! Resident memory of 1M cold SKUs plus 1M open holds (issue target: under
//! 256 MiB). Run in release:
//!
//! ```text
//! cargo run --release --example memory [-- --skus N --holds N --customers]
//! ```
//!
//! Prints the resident set (VmRSS) after each phase and its peak (VmHWM),
//! and exits non-zero if the peak is over the budget.

use hotstock::{Engine, EngineConfig, Line, Order, SkuId};

const BUDGET_MIB: u64 = 256;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let skus = value("--skus", 1_000_000);
    let holds = value("--holds", 1_000_000);
    let customers = args.iter().any(|a| a == "--customers");

    let base = status_kib("VmRSS:");
    let engine = Engine::new(EngineConfig::default()).expect("default config is valid");
    let ids: Vec<SkuId> = (0..skus)
        .map(|i| {
            engine
                .put_sku(&format!("sku-{i:07}"), 10, None, None)
                .expect("put")
                .0
        })
        .collect();
    let after_skus = status_kib("VmRSS:");
    let mut names = String::new();
    for i in 0..holds {
        let lines = [Line {
            sku: ids[i % ids.len()],
            quantity: 1,
        }];
        names.clear();
        if customers {
            use std::fmt::Write;
            write!(names, "customer-{i:07}").expect("write to a String");
        }
        let order = Order {
            lines: &lines,
            customer: customers.then_some(names.as_str()),
            ttl_ms: Some(60 * 60 * 1000),
            ..Order::default()
        };
        engine.reserve(&order).expect("reserve");
    }
    // The handles are the caller's, not the engine's: free them before the
    // final reading so it shows the engine alone.
    let handle_kib = (ids.capacity() * std::mem::size_of::<SkuId>()) as u64 / 1024;
    drop(ids);
    let after_holds = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    println!("process before engine:   {:8.1} MiB", mib(base));
    println!(
        "after {skus} SKUs:     {:8.1} MiB  ({:.0} bytes/SKU)",
        mib(after_skus),
        (after_skus - base) as f64 * 1024.0 / skus as f64
    );
    println!(
        "after {holds} holds:    {:8.1} MiB  ({:.0} bytes/hold{})",
        mib(after_holds),
        (after_holds.saturating_sub(after_skus) + handle_kib) as f64 * 1024.0 / holds as f64,
        if customers {
            ", with customer names"
        } else {
            ""
        }
    );
    println!(
        "peak resident (VmHWM):   {:8.1} MiB  (budget {BUDGET_MIB} MiB)",
        mib(peak)
    );
    if peak > BUDGET_MIB * 1024 {
        eprintln!("over budget");
        std::process::exit(1);
    }
}
