//! Runs N operations of one kind on one thread, for instruction counting:
//!
//! ```text
//! cargo build --release --example hot_path
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/hot_path sell 100000
//! ```
//!
//! Instructions per operation = (Ir at 2N - Ir at N) / N, which cancels the
//! setup. `docs/benchmarks.md` has the figures and a script that computes
//! them.

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};

use hotstock::{Engine, EngineConfig, Line, Order};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(kind), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: hot_path sell|purchase|hold_confirm|cart3|kit2|atomic N");
        std::process::exit(2);
    };
    let engine = Engine::new(EngineConfig::default()).expect("default config is valid");
    let stock = 1 << 39;
    let skus: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| engine.put_sku(n, stock, None, None).expect("put").0)
        .collect();
    let one = [Line {
        sku: skus[0],
        quantity: 1,
    }];
    let cart: Vec<Line> = skus.iter().map(|&sku| Line { sku, quantity: 1 }).collect();
    // A kit of two components (1 of "a", 2 of "b"), bought one at a time.
    let (kit, _) = engine
        .define_kit(
            "ab",
            &[
                cart[0],
                Line {
                    sku: skus[1],
                    quantity: 2,
                },
            ],
        )
        .expect("kit");
    let one_kit = [Line {
        sku: kit,
        quantity: 1,
    }];
    let atomic = AtomicI64::new(stock as i64);
    // Dispatch once, outside the loop, so the loop is only the operation.
    match kind.as_str() {
        "sell" => (0..n).for_each(|_| engine.sell(skus[0], 1).expect("sell")),
        "purchase" => (0..n).for_each(|_| {
            black_box(engine.purchase(skus[0], 1, None).expect("purchase"));
        }),
        "hold_confirm" => (0..n).for_each(|_| {
            let receipt = engine
                .reserve(&Order {
                    lines: &one,
                    ..Order::default()
                })
                .expect("reserve");
            engine.confirm(receipt.id).expect("confirm");
        }),
        "cart3" => (0..n).for_each(|_| {
            let order = Order {
                lines: &cart,
                confirm: true,
                ..Order::default()
            };
            black_box(engine.reserve(&order).expect("cart"));
        }),
        "kit2" => (0..n).for_each(|_| {
            let order = Order {
                lines: &one_kit,
                confirm: true,
                ..Order::default()
            };
            black_box(engine.reserve(&order).expect("kit"));
        }),
        "atomic" => (0..n).for_each(|_| {
            let mut current = atomic.load(Ordering::Relaxed);
            while let Err(actual) = atomic.compare_exchange_weak(
                current,
                current - 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                current = actual;
            }
        }),
        other => {
            eprintln!("unknown kind {other}");
            std::process::exit(2);
        }
    }
}
