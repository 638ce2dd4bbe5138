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

  flash-sale   sell one SKU's stock to concurrent buyers in this process, then
               check that nothing was oversold or stranded and that
               available + held + sold == received.
    --stock N                units on sale (default 1000000)
    --buyers N               concurrent buyer threads (default 64)
    --limit-per-customer N   each buyer is a customer with this limit
                             (default: no limit)";

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
