//! `hotstock`: the command-line entry point.
//!
//! Today it has one job, `flash-sale`: an in-process flash sale on one SKU
//! that checks the engine's invariants and reports throughput. The HTTP
//! server (`serve`) arrives with the service issue.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use hotstock::{Engine, EngineConfig, EngineError};

const USAGE: &str = "\
usage: hotstock flash-sale [--stock N] [--buyers N] [--limit-per-customer N]
       hotstock salvage --data-dir DIR

  flash-sale   sell one SKU's stock to concurrent buyers in this process, then
               check that nothing was oversold or stranded and that
               available + held + sold == received.
    --stock N                units on sale (default 1000000)
    --buyers N               concurrent buyer threads (default 64)
    --limit-per-customer N   each buyer is a customer with this limit
                             (default: no limit)

  salvage      cut a damaged journal at its first bad frame so the engine can
               start again, deleting what follows; prints what was dropped.
               Run it only after deciding the data past the damage is lost.";

struct SaleArgs {
    stock: u64,
    buyers: usize,
    limit: Option<u32>,
}

fn parse(args: &[String]) -> Result<SaleArgs, String> {
    let mut sale = SaleArgs {
        stock: 1_000_000,
        buyers: 64,
        limit: None,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = |name: &str| {
            rest.next()
                .ok_or_else(|| format!("{name} needs a value"))
                .and_then(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("{name}: {v:?} is not a whole number"))
                })
        };
        match flag.as_str() {
            "--stock" => sale.stock = value("--stock")?,
            "--buyers" => {
                let buyers = value("--buyers")?;
                if !(1..=4096).contains(&buyers) {
                    return Err("--buyers must be between 1 and 4096".into());
                }
                sale.buyers = buyers as usize;
            }
            "--limit-per-customer" => {
                let limit = value("--limit-per-customer")?;
                if !(1..=u64::from(u32::MAX)).contains(&limit) {
                    return Err("--limit-per-customer must be at least 1".into());
                }
                sale.limit = Some(limit as u32);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(sale)
}

fn flash_sale(sale: &SaleArgs) -> Result<bool, String> {
    let engine = Engine::new(EngineConfig::default()).map_err(|e| e.to_string())?;
    let (sku, _) = engine
        .put_sku("flash-sale", sale.stock, Some(sale.limit), None)
        .map_err(|e| e.to_string())?;
    engine.prepare_hot(sku).map_err(|e| e.to_string())?;
    let sold = AtomicU64::new(0);
    let refused_by_limit = AtomicU64::new(0);
    let start = Arc::new(Barrier::new(sale.buyers));
    let began = Instant::now();
    let failure: Option<String> = std::thread::scope(|s| {
        let buyers: Vec<_> = (0..sale.buyers)
            .map(|buyer| {
                let (engine, sold, refused, start) =
                    (&engine, &sold, &refused_by_limit, start.clone());
                s.spawn(move || -> Result<(), EngineError> {
                    let customer = format!("buyer-{buyer}");
                    start.wait();
                    loop {
                        let outcome = match sale.limit {
                            None => engine.sell(sku, 1),
                            Some(_) => engine.purchase(sku, 1, Some(&customer)).map(|_| ()),
                        };
                        match outcome {
                            Ok(()) => {
                                sold.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(EngineError::SoldOut { .. }) => return Ok(()),
                            Err(EngineError::LimitExceeded { .. }) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                return Ok(());
                            }
                            Err(other) => return Err(other),
                        }
                    }
                })
            })
            .collect();
        buyers.into_iter().find_map(|b| match b.join() {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("a buyer thread panicked".to_owned()),
        })
    });
    let elapsed = began.elapsed();
    if let Some(error) = failure {
        return Err(error);
    }
    let doc = engine.sku_document(sku).map_err(|e| e.to_string())?;
    let sold = sold.load(Ordering::Relaxed);
    let expected = match sale.limit {
        None => sale.stock,
        Some(limit) => sale.stock.min(u64::from(limit) * sale.buyers as u64),
    };
    println!("stock               {}", sale.stock);
    println!("buyers              {}", sale.buyers);
    println!("units sold          {sold}");
    println!("oversold            {}", sold.saturating_sub(sale.stock));
    println!("left unsold         {}", doc.available);
    println!(
        "refused by limit    {}",
        refused_by_limit.load(Ordering::Relaxed)
    );
    println!("elapsed             {:.3} s", elapsed.as_secs_f64());
    println!(
        "throughput          {:.1} M units/s",
        sold as f64 / elapsed.as_secs_f64() / 1e6
    );
    let ok = sold == expected && doc.sold == sold && doc.is_conserved();
    println!(
        "invariants          {}",
        if ok {
            "hold (sold == expected, books balance)"
        } else {
            "BROKEN"
        }
    );
    Ok(ok)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match command.as_str() {
        "flash-sale" => {}
        "salvage" => return salvage(rest),
        // Internal: the workload that tests/crash.rs kills with SIGKILL.
        "crash-workload" => return crash_workload(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let sale = match parse(rest) {
        Ok(sale) => sale,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match flash_sale(&sale) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("flash sale failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn data_dir_arg(args: &[String]) -> Result<std::path::PathBuf, String> {
    match args {
        [flag, dir] if flag == "--data-dir" => Ok(dir.into()),
        _ => Err("expected --data-dir DIR".into()),
    }
}

fn salvage(args: &[String]) -> ExitCode {
    let dir = match data_dir_arg(args) {
        Ok(dir) => dir,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match hotstock::durable::salvage(&dir) {
        Ok(dropped) if dropped.is_empty() => {
            println!("journal in {} is intact; nothing dropped", dir.display());
            ExitCode::SUCCESS
        }
        Ok(dropped) => {
            for line in dropped {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("salvage failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Random operations from 4 threads in `sync` durability; each prints an
/// `ACK` line only after its change is on disk. Runs until killed.
fn crash_workload(args: &[String]) -> ExitCode {
    use hotstock::durable::{DurableConfig, DurableEngine};
    use hotstock::journal::Durability;
    use hotstock::{Line, Order};
    use std::io::Write;

    let dir = match data_dir_arg(args) {
        Ok(dir) => dir,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut config = DurableConfig::new(&dir, Durability::Sync);
    config.checkpoint_interval = std::time::Duration::from_millis(200);
    config.segment_bytes = 64 << 10;
    let (durable, _) = match DurableEngine::open(config) {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("open failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    let engine = durable.engine().clone();
    for (name, stock, limit) in [
        ("plain", 1u64 << 30, None),
        ("limited", 1 << 30, Some(1_000_000)),
    ] {
        // Version 0 = create only if absent: later runs keep the counts.
        let _ = engine.put_sku(name, stock, Some(limit), Some(0));
    }
    let plain = engine.sku("plain").expect("created above");
    let limited = engine.sku("limited").expect("created above");
    let stdout = std::sync::Mutex::new(std::io::stdout());
    let ack = |line: String| {
        let mut out = stdout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A closed pipe means the test is done with us.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
    };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (engine, ack) = (&engine, &ack);
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1) ^ std::process::id() as u64;
                let mut open_holds = Vec::new();
                let mut confirmed = Vec::new();
                let customer = format!("c{t}");
                loop {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let line = match x % 6 {
                        0 => engine.sell(plain, 1).ok().map(|_| "SELL".to_owned()),
                        1 | 2 => {
                            let order = Order {
                                lines: &[Line {
                                    sku: limited,
                                    quantity: 1 + (x >> 8) as u32 % 3,
                                }],
                                customer: Some(&customer),
                                confirm: x % 6 == 2,
                                ..Order::default()
                            };
                            engine.reserve(&order).ok().map(|r| {
                                let status = r.status.as_str();
                                if r.status == hotstock::HoldStatus::Held {
                                    open_holds.push(r.id);
                                } else {
                                    confirmed.push(r.id);
                                }
                                format!("HOLD {} {status}", r.id)
                            })
                        }
                        3 => open_holds.pop().and_then(|id| {
                            engine.confirm(id).ok().map(|_| {
                                confirmed.push(id);
                                format!("HOLD {id} confirmed")
                            })
                        }),
                        4 => open_holds.pop().and_then(|id| {
                            engine
                                .cancel(id)
                                .ok()
                                .map(|_| format!("HOLD {id} cancelled"))
                        }),
                        _ => confirmed.pop().and_then(|id| {
                            engine
                                .refund(id)
                                .ok()
                                .map(|_| format!("HOLD {id} refunded"))
                        }),
                    };
                    let Some(line) = line else { continue };
                    if engine.wait_durable(engine.durability_ticket()).is_ok() {
                        ack(format!("ACK {line}"));
                    }
                }
            });
        }
    });
    ExitCode::SUCCESS
}
