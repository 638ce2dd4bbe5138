//! Hot-path microbenchmarks, each group with its baselines measured in the
//! same process and run, so they can be read as ratios on a noisy machine.
//!
//! Run: `cargo bench --bench engine` (figures in `docs/benchmarks.md`);
//! `cargo bench --bench engine -- hot_kit_order` for one group.
//!
//! Every function uses `iter_custom`: state is built outside the timed
//! region, N threads start together at a barrier, each does `iters / N`
//! operations, and the time is from the barrier to the last join. Criterion
//! reports elements/s = operations/s across all threads.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use hotstock::{Engine, EngineConfig, Line, Order, SkuId};

/// Stock that no benchmark can exhaust (below `MAX_STOCK_PER_SKU`).
const BOTTOMLESS: u64 = 1 << 39;
const THREADS: [usize; 2] = [1, 2];

/// Runs `op(thread, i)` `iters` times split over `threads` threads and
/// returns the wall time from a common start to the last finish.
fn timed<F: Fn(usize, u64) + Sync>(threads: usize, iters: u64, op: F) -> Duration {
    let start = Barrier::new(threads + 1);
    let per_thread = iters.div_ceil(threads as u64);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, op) = (&start, &op);
                s.spawn(move || {
                    start.wait();
                    for i in 0..per_thread {
                        op(t, i);
                    }
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        for handle in handles {
            handle.join().unwrap();
        }
        began.elapsed()
    })
}

/// Registers `name/threads` in `group`, timing each sample with `sample(iters)`.
fn bench(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    sample: impl FnMut(u64) -> Duration,
) {
    let mut sample = sample;
    group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, _| {
        b.iter_custom(&mut sample)
    });
}

fn engine() -> Engine {
    Engine::new(EngineConfig {
        max_reservations: 1 << 27,
        ..EngineConfig::default()
    })
    .unwrap()
}

/// The article's "Redis key" without the network: one shared atomic, CAS
/// loop with a stock check.
fn atomic_take(stock: &AtomicI64, units: i64) -> bool {
    let mut current = stock.load(Ordering::Relaxed);
    loop {
        if current < units {
            return false;
        }
        match stock.compare_exchange_weak(
            current,
            current - units,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

/// The obvious in-process design: one lock over a map of counters.
fn mutex_take(map: &Mutex<HashMap<String, i64>>, sku: &str, units: i64) -> bool {
    let mut map = map.lock().unwrap();
    match map.get_mut(sku) {
        Some(stock) if *stock >= units => {
            *stock -= units;
            true
        }
        _ => false,
    }
}

fn hot_sku(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_sku_purchase");
    group.throughput(Throughput::Elements(1));
    for threads in THREADS {
        bench(&mut group, "hotstock_sell", threads, |iters| {
            let engine = engine();
            let (sku, _) = engine.put_sku("hot", BOTTOMLESS, None, None).unwrap();
            engine.prepare_hot(sku).unwrap();
            timed(threads, iters, |_, _| {
                black_box(engine.sell(sku, 1)).unwrap();
            })
        });
        bench(&mut group, "hotstock_purchase_record", threads, |iters| {
            let engine = engine();
            let (sku, _) = engine.put_sku("hot", BOTTOMLESS, None, None).unwrap();
            engine.prepare_hot(sku).unwrap();
            timed(threads, iters, |_, _| {
                black_box(engine.purchase(sku, 1, None)).unwrap();
            })
        });
        bench(&mut group, "baseline_atomic_i64", threads, |iters| {
            let stock = AtomicI64::new(BOTTOMLESS as i64);
            timed(threads, iters, |_, _| {
                assert!(atomic_take(black_box(&stock), 1));
            })
        });
        bench(&mut group, "baseline_mutex_hashmap", threads, |iters| {
            let map = Mutex::new(HashMap::from([("hot".to_owned(), BOTTOMLESS as i64)]));
            timed(threads, iters, |_, _| {
                assert!(mutex_take(black_box(&map), "hot", 1));
            })
        });
    }
    group.finish();
}

const UNIFORM_SKUS: usize = 100_000;

/// A per-thread xorshift picking the `i`-th SKU index for thread `t`.
fn pick(t: usize, i: u64) -> usize {
    let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((t as u64 + 1) << 48);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % UNIFORM_SKUS as u64) as usize
}

fn uniform(c: &mut Criterion) {
    let names: Vec<String> = (0..UNIFORM_SKUS).map(|i| format!("sku-{i:06}")).collect();
    let engine = engine();
    let ids: Vec<SkuId> = names
        .iter()
        .map(|n| engine.put_sku(n, BOTTOMLESS, None, None).unwrap().0)
        .collect();
    let map = Mutex::new(
        names
            .iter()
            .map(|n| (n.clone(), BOTTOMLESS as i64))
            .collect::<HashMap<_, _>>(),
    );
    let mut group = c.benchmark_group("uniform_100k_skus");
    group.throughput(Throughput::Elements(1));
    for threads in THREADS {
        bench(&mut group, "hotstock_sell_by_handle", threads, |iters| {
            timed(threads, iters, |t, i| {
                engine.sell(ids[pick(t, i)], 1).unwrap()
            })
        });
        bench(&mut group, "hotstock_sell_by_name", threads, |iters| {
            timed(threads, iters, |t, i| {
                let sku = engine.sku(&names[pick(t, i)]).unwrap();
                engine.sell(sku, 1).unwrap();
            })
        });
        bench(&mut group, "baseline_mutex_hashmap", threads, |iters| {
            timed(threads, iters, |t, i| {
                assert!(mutex_take(&map, &names[pick(t, i)], 1))
            })
        });
    }
    group.finish();
}

fn cart(c: &mut Criterion) {
    let mut group = c.benchmark_group("cart_3_lines");
    group.throughput(Throughput::Elements(1));
    for threads in THREADS {
        bench(&mut group, "hotstock_reserve_confirmed", threads, |iters| {
            let engine = engine();
            let lines: Vec<Line> = ["a", "b", "c"]
                .iter()
                .map(|n| Line {
                    sku: engine.put_sku(n, BOTTOMLESS, None, None).unwrap().0,
                    quantity: 1,
                })
                .collect();
            timed(threads, iters, |_, _| {
                black_box(engine.reserve(&Order {
                    lines: &lines,
                    confirm: true,
                    ..Order::default()
                }))
                .unwrap();
            })
        });
        bench(&mut group, "baseline_mutex_hashmap", threads, |iters| {
            let map = Mutex::new(
                ["a", "b", "c"]
                    .iter()
                    .map(|n| (n.to_string(), BOTTOMLESS as i64))
                    .collect::<HashMap<_, _>>(),
            );
            timed(threads, iters, |_, _| {
                // All three lines under one lock: the baseline's cart.
                let mut map = map.lock().unwrap();
                for sku in ["a", "b", "c"] {
                    *map.get_mut(sku).unwrap() -= 1;
                }
            })
        });
    }
    group.finish();
}

fn hold_confirm(c: &mut Criterion) {
    let mut group = c.benchmark_group("hold_confirm_cycle");
    group.throughput(Throughput::Elements(1));
    for threads in THREADS {
        bench(&mut group, "hotstock", threads, |iters| {
            let engine = engine();
            let (sku, _) = engine.put_sku("drop", BOTTOMLESS, None, None).unwrap();
            engine.prepare_hot(sku).unwrap();
            let lines = [Line { sku, quantity: 1 }];
            timed(threads, iters, |_, _| {
                let receipt = engine
                    .reserve(&Order {
                        lines: &lines,
                        ..Order::default()
                    })
                    .unwrap();
                black_box(engine.confirm(receipt.id)).unwrap();
            })
        });
    }
    group.finish();
}

/// One hot kit (1 "a" + 2 "b") bought by every thread, against the same
/// components bought as a two-line cart: what the kit's expansion costs,
/// its lock and its components' shared `Arc` included.
fn hot_kit(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_kit_order");
    group.throughput(Throughput::Elements(1));
    for threads in THREADS {
        let setup = || {
            let engine = engine();
            let (a, _) = engine.put_sku("a", BOTTOMLESS, None, None).unwrap();
            let (b, _) = engine.put_sku("b", BOTTOMLESS, None, None).unwrap();
            engine.prepare_hot(a).unwrap();
            engine.prepare_hot(b).unwrap();
            let components = [
                Line {
                    sku: a,
                    quantity: 1,
                },
                Line {
                    sku: b,
                    quantity: 2,
                },
            ];
            let (kit, _) = engine.define_kit("ab", &components).unwrap();
            (engine, components, kit)
        };
        let buy = |engine: &Engine, lines: &[Line]| {
            let order = Order {
                lines,
                confirm: true,
                ..Order::default()
            };
            black_box(engine.reserve(&order)).unwrap();
        };
        bench(&mut group, "kit", threads, |iters| {
            let (engine, _, kit) = setup();
            let lines = [Line {
                sku: kit,
                quantity: 1,
            }];
            timed(threads, iters, |_, _| buy(&engine, &lines))
        });
        bench(&mut group, "same_components_as_a_cart", threads, |iters| {
            let (engine, components, _) = setup();
            timed(threads, iters, |_, _| buy(&engine, &components))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = hot_sku, uniform, cart, hold_confirm, hot_kit
}
criterion_main!(benches);
