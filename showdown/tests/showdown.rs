//! The real showdown, end to end, on small sales: every contender runs
//! (servers as processes, Redis and PostgreSQL for real), sells exactly its
//! stock, and only the naive read-then-write oversells. Speed is not
//! asserted here; that is what the showdown itself reports.
//!
//! Redis and PostgreSQL rows run when `HOTSTOCK_TEST_REDIS_URL` and
//! `HOTSTOCK_TEST_POSTGRES_URL` are set (CI always sets them).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hotstock-bench"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotstock-showdown-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The rows this machine can run: hotstock's own and the bare endpoint
/// always, the Redis and PostgreSQL ones when their URLs are set.
fn rows(
    redis: &[&'static str],
    postgres: &[&'static str],
    always: &[&'static str],
) -> Vec<&'static str> {
    let mut rows = always.to_vec();
    match std::env::var("HOTSTOCK_TEST_REDIS_URL") {
        Ok(_) => rows.extend_from_slice(redis),
        Err(_) => eprintln!("skipped: Redis rows (HOTSTOCK_TEST_REDIS_URL is not set)"),
    }
    match std::env::var("HOTSTOCK_TEST_POSTGRES_URL") {
        Ok(_) => rows.extend_from_slice(postgres),
        Err(_) => eprintln!("skipped: PostgreSQL rows (HOTSTOCK_TEST_POSTGRES_URL is not set)"),
    }
    rows
}

/// Runs the showdown; returns its JSON report.
fn run(out: &Path, modes: &str, rows: &[&str], stock: u64) -> Value {
    run_with(out, modes, rows, &["--stock", &stock.to_string()])
}

/// Runs the showdown with `args` (besides buyers, rows and limits).
fn run_with(out: &Path, modes: &str, rows: &[&str], args: &[&str]) -> Value {
    let hotstock = bench().with_file_name("hotstock");
    assert!(
        hotstock.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        hotstock.display()
    );
    let output = Command::new(bench())
        .args(["--mode", modes, "--only", &rows.join(",")])
        .args(args)
        .args(["--buyers", "16", "--db-buyers", "8"])
        .args(["--max-seconds", "120"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "showdown failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(out.join("showdown.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check_rows(report: &Value, expected: &[(&str, &str)]) {
    let rows = report["rows"].as_array().unwrap();
    for &(workload, key) in expected {
        let row = rows
            .iter()
            .find(|r| r["key"] == key && r["workload"] == workload)
            .unwrap_or_else(|| panic!("no {workload} row for {key}"));
        assert!(row.get("not_measured").is_none(), "{workload} {key}: {row}");
        assert_eq!(row["errors"], 0, "{workload} {key}: {row}");
        let (stock, sold) = (
            row["stock"].as_u64().unwrap(),
            row["sold"].as_u64().unwrap(),
        );
        if key == "pg-naive" {
            // It may or may not oversell in a sale this small; it must at
            // least report what it sold past the stock.
            assert!(sold >= stock, "{row}");
            assert_eq!(row["oversold"].as_u64().unwrap(), sold - stock);
        } else {
            assert_eq!(
                (sold, row["oversold"].as_u64().unwrap()),
                (stock, 0),
                "{workload} {key}: {row}"
            );
        }
        assert!(row["units_per_second"].as_f64().unwrap() > 0.0);
        assert!(row["latency_us"]["samples"].as_u64().unwrap() > 0, "{row}");
    }
}

#[test]
fn every_contender_sells_exactly_its_stock_on_the_hot_sku() {
    let out = scratch("hot");
    let rows = rows(
        &["redis-lua", "article"],
        &["pg-conditional", "pg-optimistic", "pg-naive", "cluster3"],
        &[
            "inproc",
            "inproc-journal",
            "http-async",
            "http-sync",
            "bare",
            "http-async-pipelined",
            "bare-pipelined",
            "http-async-half",
            "http-sync-half",
        ],
    );
    let mut rows = rows;
    if std::env::var("HOTSTOCK_TEST_REDIS_URL").is_ok()
        && std::env::var("HOTSTOCK_TEST_POSTGRES_URL").is_ok()
    {
        rows.push("redis-lock-pg");
    }
    let report = run(&out, "hot", &rows, 400);
    let expected: Vec<(&str, &str)> = rows.iter().map(|&key| ("hot", key)).collect();
    check_rows(&report, &expected);
    // Every target of #18's table is listed, measured or not; those whose
    // rows this sale ran carry a number.
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 15, "{targets:?}");
    let measured = |name: &str| {
        let target = targets.iter().find(|t| t["target"] == name);
        target.and_then(|t| t["measured"].as_f64())
    };
    for name in [
        "hot: HTTP async / bare",
        "hot: HTTP sync / bare",
        "hot pipelined: HTTP async / bare",
        "p99 ms, HTTP async at half peak",
    ] {
        assert!(
            measured(name).is_some_and(|m| m > 0.0),
            "{name}: {targets:?}"
        );
    }
    // No uniform row ran, so its ratios are listed as not measured.
    assert_eq!(measured("uniform: HTTP async / bare"), None);
    let chart = std::fs::read(out.join("showdown.png")).unwrap();
    assert!(
        chart.starts_with(b"\x89PNG\r\n\x1a\n"),
        "showdown.png is not a PNG"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn uniform_and_hold_confirm_sales_sell_exactly_their_stock() {
    let out = scratch("modes");
    let rows = rows(
        &["redis-lua", "article"],
        &["pg-conditional"],
        &["inproc", "http-sync", "bare"],
    );
    // 10 000 SKUs of one unit each in the uniform mode.
    let report = run(&out, "uniform,hold-confirm", &rows, 400);
    let mut expected = Vec::new();
    for workload in ["uniform", "hold-confirm"] {
        for &key in &rows {
            expected.push((workload, key));
        }
    }
    check_rows(&report, &expected);
    let uniform = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workload"] == "uniform" && r["key"] == "inproc")
        .unwrap();
    assert_eq!(
        uniform["stock"], 10_000,
        "one unit for each of the 10 000 SKUs"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_sold_out_crowd_is_answered_until_its_time_is_up() {
    let out = scratch("sold-out");
    let rows = ["http-async", "http-sync", "bare", "inproc"];
    let report = run_with(&out, "sold-out", &rows, &["--seconds", "1"]);
    let measured = report["rows"].as_array().unwrap();
    for key in ["http-async", "http-sync", "bare"] {
        let row = measured
            .iter()
            .find(|r| r["key"] == key && r["workload"] == "sold-out")
            .unwrap_or_else(|| panic!("no sold-out row for {key}"));
        assert_eq!(row["errors"], 0, "{row}");
        // One unit sold, then every answer was "sold out" until the end.
        assert_eq!(
            (row["stock"].as_u64(), row["sold"].as_u64()),
            (Some(1), Some(1)),
            "{row}"
        );
        assert!(row["attempts"].as_u64().unwrap() > 16, "{row}");
        assert_eq!(row["timed_out"], false, "{row}");
        assert!(row["seconds"].as_f64().unwrap() >= 1.0, "{row}");
        assert!(row["answers_per_second"].as_f64().unwrap() > 0.0, "{row}");
    }
    let inproc = measured.iter().find(|r| r["key"] == "inproc").unwrap();
    assert!(inproc["not_measured"].is_string(), "{inproc}");
    let targets = report["targets"].as_array().unwrap();
    for name in [
        "sold-out crowd: HTTP async / bare, answers",
        "sold-out crowd: HTTP sync / bare, answers",
    ] {
        let target = targets.iter().find(|t| t["target"] == name).unwrap();
        assert!(target["measured"].as_f64().unwrap() > 0.0, "{target}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
