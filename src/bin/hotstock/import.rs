//! `hotstock import`: loads SKUs from a CSV file into a data directory no
//! server is using. The whole file is checked before anything is written.

use std::process::ExitCode;

use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};

/// One CSV row: name, available units, limit.
type ImportRow = (String, u64, Option<u32>);

fn parse_csv(text: &str) -> Result<Vec<ImportRow>, String> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || (number == 1 && line.to_ascii_lowercase().starts_with("sku")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (name, available, limit) = match fields.as_slice() {
            [name, available] => (*name, *available, None),
            [name, available, limit] => (*name, *available, Some(*limit)),
            _ => {
                return Err(format!(
                    "line {number}: expected sku,available[,per_customer_limit]"
                ))
            }
        };
        hotstock::core::catalogue::validate_sku_name(name)
            .map_err(|e| format!("line {number}: {e}"))?;
        let available: u64 = available
            .parse()
            .map_err(|_| format!("line {number}: available {available:?} is not a whole number"))?;
        let limit = match limit {
            None | Some("") => None,
            Some(limit) => Some(
                limit
                    .parse::<u32>()
                    .ok()
                    .filter(|&l| l > 0)
                    .ok_or_else(|| format!("line {number}: per_customer_limit {limit:?} must be a positive whole number"))?,
            ),
        };
        rows.push((name.to_owned(), available, limit));
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
    for (done, (name, available, limit)) in rows.into_iter().enumerate() {
        if let Err(error) = engine.put_sku(&name, available, Some(limit), None) {
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
