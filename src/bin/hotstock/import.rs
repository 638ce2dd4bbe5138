//! `hotstock import`: loads SKUs from a CSV file, and kits from a second
//! one, into a data directory no server is using. Both files are checked
//! whole before anything is written.

use std::path::Path;
use std::process::ExitCode;

use hotstock::core::limits::{MAX_KIT_COMPONENTS, MAX_LINE_QUANTITY, MAX_STOCK_PER_SKU};
use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::{BackorderRule, ChangeSink, Engine, Line, SkuPut, StockLevel};

/// A CSV file's rows as (line number, trimmed fields), leaving out blank
/// lines and a first line that starts with `header` (any case).
fn csv_rows<'t>(text: &'t str, header: &'t str) -> impl Iterator<Item = (usize, Vec<&'t str>)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(move |&(number, line)| {
            let is_header = number == 1 && line.to_ascii_lowercase().starts_with(header);
            !line.is_empty() && !is_header
        })
        .map(|(number, line)| (number, line.split(',').map(str::trim).collect()))
}

/// One CSV row: the SKU's name, what to set, and its backorder limit.
type ImportRow = (String, SkuPut, Option<u64>);

/// `sku,available[,per_customer_limit[,safety_stock[,backorder_limit]]]`:
/// `available` units for sale, `safety_stock` units on hand kept back
/// besides them, and `backorder_limit` units that may be sold past zero.
fn parse_csv(text: &str) -> Result<Vec<ImportRow>, String> {
    let mut rows = Vec::new();
    for (number, fields) in csv_rows(text, "sku") {
        let (name, available, limit, safety, backorder) = match fields.as_slice() {
            [name, available] => (*name, *available, "", "", ""),
            [name, available, limit] => (*name, *available, *limit, "", ""),
            [name, available, limit, safety] => (*name, *available, *limit, *safety, ""),
            [name, available, limit, safety, backorder] => {
                (*name, *available, *limit, *safety, *backorder)
            }
            _ => {
                return Err(format!(
                    "line {number}: expected \
                     sku,available[,per_customer_limit[,safety_stock[,backorder_limit]]]"
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
        let backorder = match backorder {
            "" => None,
            backorder => Some(units("backorder_limit", backorder)?),
        };
        rows.push((name.to_owned(), put, backorder));
    }
    Ok(rows)
}

/// One kit: its name and its components (SKU name, units per kit), in
/// the order of the file.
type KitRow = (String, Vec<(String, u32)>);

/// `kit,sku,quantity`, a row per component; a kit's rows need not be
/// together.
fn parse_kits(text: &str) -> Result<Vec<KitRow>, String> {
    let mut kits: Vec<KitRow> = Vec::new();
    for (number, fields) in csv_rows(text, "kit") {
        let [kit, sku, quantity] = fields.as_slice() else {
            return Err(format!("line {number}: expected kit,sku,quantity"));
        };
        for name in [kit, sku] {
            hotstock::core::catalogue::validate_sku_name(name)
                .map_err(|e| format!("line {number}: {e}"))?;
        }
        let quantity = (quantity.parse::<u32>().ok())
            .filter(|q| (1..=MAX_LINE_QUANTITY).contains(q))
            .ok_or_else(|| {
                format!("line {number}: quantity {quantity:?} must be 1 to {MAX_LINE_QUANTITY}")
            })?;
        let at = match kits.iter().position(|(name, _)| name == kit) {
            Some(at) => at,
            None => {
                kits.push((kit.to_string(), Vec::new()));
                kits.len() - 1
            }
        };
        let components = &mut kits[at].1;
        if components.iter().any(|(name, _)| name == sku) || components.len() == MAX_KIT_COMPONENTS
        {
            return Err(format!(
                "line {number}: kit {kit:?} names {sku:?} twice or has more than \
                 {MAX_KIT_COMPONENTS} components"
            ));
        }
        components.push((sku.to_string(), quantity));
    }
    Ok(kits)
}

/// Reads and parses `path`, or says why not (nothing is imported then).
fn read<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    parse(&text).map_err(|message| format!("{}: {message}", path.display()))
}

/// Every kit's components are SKUs of the stock file or of the data
/// directory, and no kit is named like a SKU of the stock file: checked
/// before anything is written.
fn check_kits<S: ChangeSink>(
    engine: &Engine<S>,
    rows: &[ImportRow],
    kits: &[KitRow],
) -> Result<(), String> {
    let in_file = |name: &str| rows.iter().any(|(row, ..)| row == name);
    for (kit, components) in kits {
        if in_file(kit) {
            return Err(format!("kit {kit:?} is also a SKU of the stock file"));
        }
        for (sku, _) in components {
            if !in_file(sku) && engine.sku(sku).is_err() {
                return Err(format!("kit {kit:?}: component {sku:?} is no SKU"));
            }
        }
    }
    Ok(())
}

pub fn import(file: &Path, kits_file: Option<&Path>, data_dir: &Path) -> ExitCode {
    let parsed = read(file, parse_csv).and_then(|rows| {
        let kits = kits_file.map_or(Ok(Vec::new()), |path| read(path, parse_kits))?;
        Ok((rows, kits))
    });
    let (rows, kits) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}; nothing was imported");
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
    if let Err(message) = check_kits(&engine, &rows, &kits) {
        eprintln!("{message}; nothing was imported");
        return ExitCode::FAILURE;
    }
    let total = rows.len();
    // Drawn on stderr, and only when it is a terminal (indicatif's default).
    let progress = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template("[{bar:30}] {percent:>3}%  {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("#-"),
    );
    for (done, (name, put, backorder)) in rows.into_iter().enumerate() {
        let rule = |limit| BackorderRule {
            limit,
            until_ms: None,
        };
        let imported = engine.put_stock(&name, &put).and_then(|(sku, _)| {
            backorder.map_or(Ok(0), |limit| engine.set_backorder(sku, rule(limit)))
        });
        if let Err(error) = imported {
            progress.abandon();
            eprintln!("SKU {name:?}: {error}; {done} of {total} imported before it");
            return ExitCode::FAILURE;
        }
        progress.inc(1);
    }
    progress.finish();
    for (kit, components) in &kits {
        let lines: Result<Vec<Line>, _> = (components.iter())
            .map(|(sku, quantity)| {
                engine.sku(sku).map(|sku| Line {
                    sku,
                    quantity: *quantity,
                })
            })
            .collect();
        if let Err(error) = lines.and_then(|lines| engine.define_kit(kit, &lines)) {
            eprintln!("kit {kit:?}: {error}; every SKU was imported, the kits before it too");
            return ExitCode::FAILURE;
        }
    }
    drop(engine);
    match durable.close() {
        Ok(()) => {
            let kits = kits.len();
            println!(
                "imported {total} SKUs and {kits} kits into {}",
                data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("import not durable: {error}");
            ExitCode::FAILURE
        }
    }
}
