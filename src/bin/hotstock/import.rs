//! `hotstock import`: loads SKUs from a CSV file, SKUs kept at locations
//! from a second one and kits from a third, into a data directory no server
//! is using. Every file is checked whole before anything is written.

use std::path::Path;
use std::process::ExitCode;

use hotstock::core::limits::{MAX_KIT_COMPONENTS, MAX_LINE_QUANTITY, MAX_STOCK_PER_SKU};
use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine};
use hotstock::{BackorderRule, ChangeSink, Engine, Line, LocationPut, SkuPut, StockLevel};

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

/// One location row: the SKU, the location, and what to set there.
type LocationRow = (String, String, LocationPut);

/// `sku,location,available[,safety_stock[,priority]]`: `available` units
/// for sale at the location, `safety_stock` units there kept back besides
/// them, `priority` the allocation order (lower first).
fn parse_locations(text: &str) -> Result<Vec<LocationRow>, String> {
    let mut rows = Vec::new();
    for (number, fields) in csv_rows(text, "sku") {
        let (sku, location, available, safety, priority) = match fields.as_slice() {
            [sku, location, available] => (*sku, *location, *available, "", ""),
            [sku, location, available, safety] => (*sku, *location, *available, *safety, ""),
            [sku, location, available, safety, priority] => {
                (*sku, *location, *available, *safety, *priority)
            }
            _ => {
                return Err(format!(
                    "line {number}: expected sku,location,available[,safety_stock[,priority]]"
                ))
            }
        };
        hotstock::core::catalogue::validate_sku_name(sku)
            .and_then(|()| hotstock::core::catalogue::location_cell_name(sku, location))
            .map_err(|e| format!("line {number}: {e}"))?;
        if rows.iter().any(|(s, l, _)| s == sku && l == location) {
            return Err(format!(
                "line {number}: {sku:?} at {location:?} is named twice"
            ));
        }
        let units = |column: &str, value: &str| {
            (value.parse::<u64>().ok())
                .filter(|&units| units <= MAX_STOCK_PER_SKU)
                .ok_or_else(|| {
                    format!(
                        "line {number}: {column} {value:?} must be a whole number of units, at \
                         most {MAX_STOCK_PER_SKU}"
                    )
                })
        };
        let stock = SkuPut {
            level: Some(StockLevel::Available(units("available", available)?)),
            safety_stock: match safety {
                "" => None,
                safety => Some(units("safety_stock", safety)?),
            },
            ..SkuPut::default()
        };
        let priority = match priority {
            "" => None,
            p => Some(p.parse::<u32>().map_err(|_| {
                format!(
                    "line {number}: priority {p:?} must be a whole number from 0 to {}",
                    u32::MAX
                )
            })?),
        };
        let put = LocationPut { stock, priority };
        rows.push((sku.to_owned(), location.to_owned(), put));
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
    located: &[LocationRow],
    kits: &[KitRow],
) -> Result<(), String> {
    let in_file = |name: &str| rows.iter().any(|(row, ..)| row == name);
    let at_locations = |name: &str| {
        let existing = engine.sku(name).ok().and_then(|id| engine.locations(id));
        located.iter().any(|(sku, ..)| sku == name) || existing.is_some()
    };
    for (sku, ..) in located {
        let plain = engine
            .sku(sku)
            .is_ok_and(|id| engine.locations(id).is_none());
        if in_file(sku) || plain {
            return Err(format!(
                "{sku:?} has stock of its own (in the stock file or the data directory), so \
                 it cannot be kept at locations"
            ));
        }
    }
    for (kit, components) in kits {
        if let Some((sku, _)) = components.iter().find(|(sku, _)| at_locations(sku)) {
            return Err(format!(
                "kit {kit:?}: component {sku:?} is kept at locations; a component has stock \
                 of its own"
            ));
        }
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

pub fn import(
    file: &Path,
    locations_file: Option<&Path>,
    kits_file: Option<&Path>,
    data_dir: &Path,
) -> ExitCode {
    let parsed = read(file, parse_csv).and_then(|rows| {
        let located = locations_file.map_or(Ok(Vec::new()), |path| read(path, parse_locations))?;
        let kits = kits_file.map_or(Ok(Vec::new()), |path| read(path, parse_kits))?;
        Ok((rows, located, kits))
    });
    let (rows, located, kits) = match parsed {
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
    if let Err(message) = check_kits(&engine, &rows, &located, &kits) {
        eprintln!("{message}; nothing was imported");
        return ExitCode::FAILURE;
    }
    let total = rows.len();
    let imported =
        import_skus(&engine, rows).and_then(|()| import_the_rest(&engine, &located, &kits));
    if let Err(message) = imported {
        eprintln!("{message}");
        return ExitCode::FAILURE;
    }
    drop(engine);
    match durable.close() {
        Ok(()) => {
            let (kits, located) = (kits.len(), located.len());
            println!(
                "imported {total} SKUs, {located} locations and {kits} kits into {}",
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

/// Puts every SKU (and its backorder allowance), with a progress bar.
fn import_skus<S: ChangeSink>(engine: &Engine<S>, rows: Vec<ImportRow>) -> Result<(), String> {
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
            return Err(format!(
                "SKU {name:?}: {error}; {done} of {total} imported before it"
            ));
        }
        progress.inc(1);
    }
    progress.finish();
    Ok(())
}

/// Puts every location, then defines every kit (their SKUs exist by now).
fn import_the_rest<S: ChangeSink>(
    engine: &Engine<S>,
    located: &[LocationRow],
    kits: &[KitRow],
) -> Result<(), String> {
    for (sku, location, put) in located {
        if let Err(error) = engine.put_location(sku, location, put) {
            return Err(format!(
                "{sku:?} at {location:?}: {error}; every SKU was imported, the locations before it too"
            ));
        }
    }
    for (kit, components) in kits {
        let lines: Result<Vec<Line>, _> = (components.iter())
            .map(|(sku, quantity)| {
                engine.sku(sku).map(|sku| Line {
                    sku,
                    quantity: *quantity,
                })
            })
            .collect();
        if let Err(error) = lines.and_then(|lines| engine.define_kit(kit, &lines)) {
            return Err(format!(
                "kit {kit:?}: {error}; every SKU was imported, the kits before it too"
            ));
        }
    }
    Ok(())
}
