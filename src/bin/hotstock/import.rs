//! `hotstock import`: loads SKUs from a CSV file into a data directory no
//! server is using. The whole file is checked before anything is written.

use std::process::ExitCode;

use hotstock::core::limits::MAX_STOCK_PER_SKU;
use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::{SkuPut, StockLevel};

/// One CSV row: the SKU's name and what to set.
type ImportRow = (String, SkuPut);

/// `sku,available[,per_customer_limit[,safety_stock]]`: `available` units
/// for sale, and `safety_stock` units on hand kept back besides them.
fn parse_csv(text: &str) -> Result<Vec<ImportRow>, String> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || (number == 1 && line.to_ascii_lowercase().starts_with("sku")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (name, available, limit, safety) = match fields.as_slice() {
            [name, available] => (*name, *available, "", ""),
            [name, available, limit] => (*name, *available, *limit, ""),
            [name, available, limit, safety] => (*name, *available, *limit, *safety),
            _ => {
                return Err(format!(
                    "line {number}: expected sku,available[,per_customer_limit[,safety_stock]]"
                ))
            }
        };
        hotstock::core::catalogue::validate_sku_name(name)
            .map_err(|e| format!("line {number}: {e}"))?;
        let units = |column: &str, value: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|&units| units <= MAX_STOCK_PER_SKU)
                .ok_or_else(|| {
                    format!(
                        "line {number}: {column} {value:?} must be a whole number of units, at most \
                         {MAX_STOCK_PER_SKU}"
                    )
                })
        };
        let limit = match limit {
            "" => None,
            limit => Some(
                limit
                    .parse::<u32>()
                    .ok()
                    .filter(|&l| l > 0)
                    .ok_or_else(|| format!("line {number}: per_customer_limit {limit:?} must be a positive whole number"))?,
            ),
        };
        let put = SkuPut {
            level: Some(StockLevel::Available(units("available", available)?)),
            safety_stock: match safety {
                "" => None,
                safety => Some(units("safety_stock", safety)?),
            },
            limit: Some(limit),
            expected_version: None,
        };
        rows.push((name.to_owned(), put));
    }
    Ok(rows)
}

pub fn import(file: &std::path::Path, data_dir: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("cannot read {}: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let rows = match parse_csv(&text) {
        Ok(rows) => rows,
        Err(message) => {
            eprintln!("{}: {message}; nothing was imported", file.display());
            return ExitCode::FAILURE;
        }
    };
    let (durable, _) = match DurableEngine::open(DurableConfig::new(data_dir, Durability::Async)) {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("cannot open {}: {error}", data_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let engine = durable.engine().clone();
    let total = rows.len();
    // Drawn on stderr, and only when it is a terminal (indicatif's default).
    let progress = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template("[{bar:30}] {percent:>3}%  {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("#-"),
    );
    for (done, (name, put)) in rows.into_iter().enumerate() {
        if let Err(error) = engine.put_stock(&name, &put) {
            progress.abandon();
            eprintln!("SKU {name:?}: {error}; {done} of {total} imported before it");
            return ExitCode::FAILURE;
        }
        progress.inc(1);
    }
    progress.finish();
    drop(engine);
    match durable.close() {
        Ok(()) => {
            println!("imported {total} SKUs into {}", data_dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("import not durable: {error}");
            ExitCode::FAILURE
        }
    }
}
