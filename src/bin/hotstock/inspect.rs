//! `hotstock inspect`, `verify` and `salvage`: read a data directory
//! without changing it (`verify` also judges it), or cut a damaged journal.

use std::process::ExitCode;

/// `inspect` (report) and `verify` (report and judge).
pub fn inspect(data_dir: &std::path::Path, judge: bool) -> ExitCode {
    let found = match hotstock::durable::inspect(data_dir) {
        Ok(found) => found,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let settled = &found.settled;
    let report = &found.report;
    println!("store                {}", found.store_description);
    println!("checkpoint position  {}", report.store_position);
    println!("journal segments     {}", found.segments.len());
    for segment in &found.segments {
        let (number, on_disk) = (segment.number, segment.bytes_on_disk);
        match segment.written {
            // Made ahead (zeros after the frames), or a torn tail (below).
            Some(written) if written < on_disk => {
                println!("  {number:016x}.hsj  {written} bytes of frames, {on_disk} on disk")
            }
            _ => println!("  {number:016x}.hsj  {on_disk} bytes"),
        }
    }
    if let Some(bytes) = found.made_ahead {
        println!("  next segment, made ahead: {bytes} bytes of zeros (next-segment.zeroed)");
    }
    println!("events after it      {}", report.events_replayed);
    println!("last position        {}", settled.position);
    if let Some((segment, torn)) = report.torn_tail {
        println!("torn tail            segment {segment} at offset {} ({} bytes, truncated on next start)", torn.offset, torn.dropped);
    }
    // Every cell: a SKU kept at locations holds no units of its own, its
    // locations (cells named `sku/location`) do.
    let cells: Vec<_> = settled.skus.iter().flatten().collect();
    let sum = |f: fn(&hotstock::durable::settled::SettledSku) -> i64| {
        cells.iter().map(|s| f(s)).sum::<i64>()
    };
    let locations = (cells.iter())
        .filter(|cell| {
            cell.name
                .contains(hotstock::core::catalogue::LOCATION_SEPARATOR)
        })
        .count();
    println!("SKUs                 {}", cells.len() - locations);
    println!("locations            {locations}");
    println!("units available      {}", sum(|s| s.available()));
    println!("units held           {}", sum(|s| s.held));
    println!("units sold           {}", sum(|s| s.sold));
    if !judge {
        return ExitCode::SUCCESS;
    }
    let problems = problems(settled);
    if problems.is_empty() {
        println!("verify               ok: every frame checks, every count is sound");
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            println!("PROBLEM              {problem}");
        }
        ExitCode::FAILURE
    }
}

/// What `verify` finds unsound in the settled counts, one line each.
fn problems(settled: &hotstock::durable::settled::Settled) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, sku) in settled.skus.iter().enumerate() {
        let Some(sku) = sku else { continue };
        if sku.name.is_empty() {
            problems.push(format!("SKU #{index} has counts but no creation event"));
        }
        for (what, value) in [
            ("available", sku.available()),
            ("held", sku.held),
            ("sold", sku.sold),
            ("received", sku.received),
        ] {
            if value < 0 {
                problems.push(format!("SKU {:?}: {what} is {value}", &*sku.name));
            }
        }
    }
    for ((sku, customer), units) in &settled.customer_units {
        if *units < 0 {
            problems.push(format!(
                "customer {customer:?} on SKU #{sku}: {units} units"
            ));
        }
    }
    problems
}

pub fn salvage(dir: &std::path::Path) -> ExitCode {
    match hotstock::durable::salvage(dir) {
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
