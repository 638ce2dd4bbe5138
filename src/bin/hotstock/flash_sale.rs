//! `hotstock flash-sale`: sells one SKU's stock to concurrent buyer
//! threads in this process, then checks that nothing was oversold or
//! stranded and the books balance.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use hotstock::{Engine, EngineConfig, EngineError};

#[derive(clap::Args, Debug)]
pub struct SaleArgs {
    /// Units on sale.
    #[arg(long, default_value_t = 1_000_000)]
    pub stock: u64,
    /// Concurrent buyer threads.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub buyers: u16,
    /// Each buyer is a customer with this limit (default: no limit).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit_per_customer: Option<u32>,
}

/// Runs the sale and prints its report; fails when an invariant broke.
pub fn run(sale: &SaleArgs) -> ExitCode {
    match flash_sale(sale) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("flash sale failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn flash_sale(sale: &SaleArgs) -> Result<bool, String> {
    let engine = Engine::new(EngineConfig::default()).map_err(|e| e.to_string())?;
    let buyers = usize::from(sale.buyers);
    let limit = sale.limit_per_customer;
    let (sku, _) = engine
        .put_sku("flash-sale", sale.stock, Some(limit), None)
        .map_err(|e| e.to_string())?;
    engine.prepare_hot(sku).map_err(|e| e.to_string())?;
    let sold = AtomicU64::new(0);
    let refused_by_limit = AtomicU64::new(0);
    let start = Arc::new(Barrier::new(buyers));
    let began = Instant::now();
    let failure: Option<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..buyers)
            .map(|buyer| {
                let (engine, sold, refused, start) =
                    (&engine, &sold, &refused_by_limit, start.clone());
                s.spawn(move || -> Result<(), EngineError> {
                    let customer = format!("buyer-{buyer}");
                    start.wait();
                    loop {
                        let outcome = match limit {
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
        handles.into_iter().find_map(|b| match b.join() {
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
    let expected = match limit {
        None => sale.stock,
        Some(limit) => sale.stock.min(u64::from(limit) * buyers as u64),
    };
    Ok(print_report(
        sale,
        buyers,
        sold,
        &doc,
        refused_by_limit.load(Ordering::Relaxed),
        elapsed,
        expected,
    ))
}

/// Prints the sale's figures; `true` when every invariant held.
fn print_report(
    sale: &SaleArgs,
    buyers: usize,
    sold: u64,
    doc: &hotstock::SkuDocument,
    refused_by_limit: u64,
    elapsed: std::time::Duration,
    expected: u64,
) -> bool {
    println!("stock               {}", sale.stock);
    println!("buyers              {buyers}");
    println!("units sold          {sold}");
    println!("oversold            {}", sold.saturating_sub(sale.stock));
    println!("left unsold         {}", doc.available);
    println!("refused by limit    {}", refused_by_limit);
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
    ok
}
