//! `hotstock-bench`: the flash-sale showdown.
//!
//! One run sells the same flash sale through every contender on this
//! machine: hotstock in-process and over HTTP, Redis with the article's Lua
//! script, PostgreSQL's conditional and optimistic updates, a Redis lock
//! around PostgreSQL, the naive read-then-write, the article's whole
//! architecture (hyper + Redis) and a bare hyper endpoint. It prints a
//! table, writes `showdown.json` and `showdown.png`, and checks the ratios
//! the project promises.
//!
//! Each contender first runs a short probe with unlimited stock to learn its
//! speed, then gets stock for about `--seconds` of selling, so a contender
//! 1000x slower is measured as long as a fast one. A sale ends when every
//! SKU has answered "sold out"; units sold are counted by the buyers. The
//! sold-out crowd (`--mode sold-out`) is the exception: one unit, then the
//! HTTP rows are asked for it for `--seconds` and measured in answers.

mod contenders;
mod endpoints;
mod loadgen;
mod report;
mod sale;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hotstock::durable::journal::Durability;

use contenders::{Contender, Postgres, Server, Setting};
use report::{Measurement, Row};
use sale::{Mode, Sale, Stock};

#[derive(Parser, Debug)]
#[command(
    name = "hotstock-bench",
    version,
    about = "The flash-sale showdown: hotstock against the usual remedies, in one run"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Draw the chart again from a saved showdown.json.
    Chart { json: PathBuf, png: PathBuf },
    /// Internal: the bare hyper endpoint (one atomic per SKU).
    #[command(hide = true)]
    ServeBare {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long)]
        units: u64,
    },
    /// Internal: the article's architecture (hyper + Redis Lua).
    #[command(hide = true)]
    ServeArticle {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        redis: String,
        #[arg(long)]
        prefix: String,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Workloads to run (default: all three).
    #[arg(long, value_enum, value_delimiter = ',')]
    mode: Vec<Mode>,
    /// Only these contenders, by key (see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// List the contenders and exit.
    #[arg(long)]
    list: bool,
    /// Seconds of selling each contender's stock is sized for.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of the probe that sizes the stock.
    #[arg(long, default_value_t = 0.5)]
    probe_seconds: f64,
    /// Fixed stock for every contender instead of sizing it by a probe.
    #[arg(long)]
    stock: Option<u64>,
    /// A sale still running after this many seconds is stopped and marked.
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
    /// Concurrent buyers: threads in-process and on Redis, keep-alive
    /// connections over HTTP.
    #[arg(long, default_value_t = 64)]
    buyers: usize,
    /// Concurrent buyers for the PostgreSQL contenders (a connection each).
    #[arg(long, default_value_t = 32)]
    db_buyers: usize,
    /// Threads of the HTTP load generator.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Pipelining depth of the pipelined rows.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    #[arg(
        long,
        env = "HOTSTOCK_TEST_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,
    #[arg(
        long,
        env = "HOTSTOCK_TEST_POSTGRES_URL",
        default_value = "postgresql://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
    /// The `hotstock` binary (default: next to this one).
    #[arg(long)]
    hotstock_bin: Option<PathBuf>,
    /// Where showdown.json and showdown.png go.
    #[arg(long, default_value = "target/showdown")]
    out: PathBuf,
}

/// Every row of the showdown, in the order it runs.
fn rows(pipeline: usize) -> Vec<Row> {
    let http = |server, pipeline| Contender::Http {
        server,
        pipeline,
        batch: 1,
    };
    let batches = |server| Contender::Http {
        server,
        pipeline: 1,
        batch: loadgen::MAX_BATCH,
    };
    vec![
        Row::new(
            "inproc",
            "hotstock in-process",
            Contender::InProcess { journal: false },
        ),
        Row::new(
            "inproc-journal",
            "hotstock in-process, journal",
            Contender::InProcess { journal: true },
        ),
        Row::new(
            "http-async",
            "hotstock HTTP async",
            http(Server::Hotstock(Durability::Async), 1),
        ),
        Row::new(
            "http-sync",
            "hotstock HTTP sync",
            http(Server::Hotstock(Durability::Sync), 1),
        ),
        Row::new("bare", "bare hyper endpoint", http(Server::Bare, 1)),
        Row::new(
            "article",
            "article: hyper + Redis Lua",
            http(Server::Article, 1),
        ),
        Row::new(
            "cluster3",
            "hotstock, 3 nodes + PostgreSQL escrow",
            http(Server::Cluster(3), 1),
        ),
        Row::new("redis-lua", "Redis + Lua", Contender::RedisLua),
        Row::new(
            "pg-conditional",
            "PostgreSQL conditional UPDATE",
            Contender::Postgres(Postgres::Conditional),
        ),
        Row::new(
            "pg-optimistic",
            "PostgreSQL optimistic version",
            Contender::Postgres(Postgres::Optimistic),
        ),
        Row::new(
            "redis-lock-pg",
            "Redis lock + PostgreSQL",
            Contender::Postgres(Postgres::RedisLock),
        ),
        Row::new(
            "pg-naive",
            "PostgreSQL naive (no lock)",
            Contender::Postgres(Postgres::Naive),
        ),
        Row::new(
            "http-async-pipelined",
            "hotstock HTTP async, pipelined",
            http(Server::Hotstock(Durability::Async), pipeline),
        )
        .hot_only(),
        Row::new(
            "http-sync-pipelined",
            "hotstock HTTP sync, pipelined",
            http(Server::Hotstock(Durability::Sync), pipeline),
        )
        .hot_only(),
        Row::new(
            "bare-pipelined",
            "bare hyper, pipelined",
            http(Server::Bare, pipeline),
        )
        .hot_only(),
        Row::new(
            "http-sync-batch",
            "hotstock HTTP sync, batches of 1,000",
            batches(Server::Hotstock(Durability::Sync)),
        ),
        Row::new(
            "http-async-batch",
            "hotstock HTTP async, batches of 1,000",
            batches(Server::Hotstock(Durability::Async)),
        ),
        Row::new(
            "http-async-half",
            "hotstock HTTP async @ half peak",
            http(Server::Hotstock(Durability::Async), 1),
        )
        .paced("http-async", 0.5),
        Row::new(
            "http-sync-half",
            "hotstock HTTP sync @ half peak",
            http(Server::Hotstock(Durability::Sync), 1),
        )
        .paced("http-sync", 0.5),
    ]
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::ServeBare {
            listen,
            mode,
            units,
        }) => endpoints::serve_bare(listen, mode, units),
        Some(Command::ServeArticle {
            listen,
            redis,
            prefix,
        }) => endpoints::serve_article(listen, &redis, prefix),
        Some(Command::Chart { json, png }) => redraw(&json, &png),
        None => showdown(&cli.run),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hotstock-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn redraw(json: &std::path::Path, png: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    report::chart(&report::chart_bars_from_json(&report)?, png)
}

fn showdown(args: &RunArgs) -> Result<(), String> {
    let all = rows(args.pipeline);
    if args.list {
        for row in &all {
            println!("{:<22} {}", row.key, row.label);
        }
        return Ok(());
    }
    if args.buyers == 0 || args.db_buyers == 0 || args.client_threads == 0 {
        return Err("--buyers, --db-buyers and --client-threads must be at least 1".into());
    }
    if !(1..=loadgen::MAX_PIPELINE).contains(&args.pipeline) {
        return Err(format!("--pipeline must be 1 to {}", loadgen::MAX_PIPELINE));
    }
    if !(args.seconds > 0.0 && args.probe_seconds > 0.0 && args.max_seconds > 0.0) {
        return Err("--seconds, --probe-seconds and --max-seconds must be positive".into());
    }
    let bench_bin = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let hotstock_bin = args
        .hotstock_bin
        .clone()
        .unwrap_or_else(|| bench_bin.with_file_name("hotstock"));
    if !hotstock_bin.exists() {
        eprintln!(
            "hotstock-bench: {} not found: the hotstock HTTP rows will not run \
             (build it with `cargo build --release --workspace`, or pass --hotstock-bin)",
            hotstock_bin.display()
        );
    }
    let scratch = std::env::temp_dir().join(format!("hotstock-bench-{}", std::process::id()));
    let setting = Setting {
        hotstock_bin,
        bench_bin,
        redis_url: args.redis.clone(),
        postgres_url: args.postgres.clone(),
        buyers: args.buyers,
        db_buyers: args.db_buyers,
        client_threads: args.client_threads,
        scratch: scratch.clone(),
    };
    let modes = if args.mode.is_empty() {
        vec![Mode::Hot, Mode::Uniform, Mode::HoldConfirm, Mode::SoldOut]
    } else {
        args.mode.clone()
    };
    let selected: Vec<&Row> = all
        .iter()
        .filter(|row| args.only.is_empty() || args.only.iter().any(|o| row.key == o))
        .collect();
    if selected.is_empty() {
        return Err("--only matched no contender (see --list)".into());
    }
    eprintln!(
        "hotstock-bench: {} buyers ({} on PostgreSQL), {} load-generator threads, ~{} s of selling each, {} CPUs",
        args.buyers,
        args.db_buyers,
        args.client_threads,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let fdatasync_p99_ms = match report::disk_fdatasync_p99_ms(&scratch) {
        Ok(ms) => {
            eprintln!("hotstock-bench: this disk's fdatasync p99 (4 KiB appends): {ms:.3} ms");
            Some(ms)
        }
        Err(error) => {
            eprintln!("hotstock-bench: the disk's fdatasync could not be measured: {error}");
            None
        }
    };
    let mut measurements: Vec<Measurement> = Vec::new();
    for &mode in &modes {
        let rows: Vec<&&Row> = selected.iter().filter(|r| r.runs_in(mode)).collect();
        for (index, row) in rows.iter().enumerate() {
            let title = format!(
                "[{}/{}] {} {}",
                index + 1,
                rows.len(),
                mode.name(),
                row.label
            );
            let measurement = measure(&setting, args, row, mode, &measurements, &title);
            report::print_done(&title, &measurement);
            measurements.push(measurement);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    report::print_table(&measurements);
    let verdicts = report::targets(&measurements, fdatasync_p99_ms);
    if let Some(ms) = fdatasync_p99_ms {
        println!(
            "\nthis disk's fdatasync p99 (4 KiB appends, measured before the rows): {ms:.3} ms"
        );
    }
    report::print_targets(&verdicts);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let json_path = args.out.join("showdown.json");
    let json = report::json(&measurements, &verdicts, args, fdatasync_p99_ms);
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).expect("JSON values serialize"),
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    let chart_path = args.out.join("showdown.png");
    match report::chart(&report::chart_bars(&measurements), &chart_path) {
        Ok(()) => eprintln!("wrote {} and {}", json_path.display(), chart_path.display()),
        Err(error) => eprintln!("wrote {}; no chart: {error}", json_path.display()),
    }
    Ok(())
}

/// Units a probe starts with: more than any contender sells in its probe.
const PROBE_UNITS_PER_SKU: u64 = 1_000_000_000;
/// Largest stock a sized sale gets (about 3 s of in-process selling).
const MAX_UNITS: u64 = 400_000_000;
/// Largest stock of a hold-confirm sale: every unit sold leaves a confirmed
/// reservation record (kept for refunds), and the engine keeps at most
/// `EngineConfig::max_reservations` (8,388,608 by default).
const MAX_HOLD_CONFIRM_UNITS: u64 = 4_000_000;

fn measure(
    setting: &Setting,
    args: &RunArgs,
    row: &Row,
    mode: Mode,
    earlier: &[Measurement],
    title: &str,
) -> Measurement {
    let skipped = |reason: String| Measurement::skipped(row, mode, reason);
    if !row.contender.supports(mode) {
        return skipped("not applicable to this workload".into());
    }
    let rate = match row.pace {
        None => None,
        Some((reference, fraction)) => {
            let peak = earlier
                .iter()
                .find(|m| m.key == reference && m.mode == mode)
                .and_then(|m| m.result.as_ref().ok())
                .map(|r| r.sale.units_per_second());
            match peak {
                Some(peak) => Some(peak * fraction),
                None => return skipped(format!("needs the {reference} row's peak from this run")),
            }
        }
    };
    if mode == Mode::SoldOut {
        // One unit, then a crowd told "sold out" for `--seconds`.
        let stock = Stock::new(mode, 1);
        let length = Duration::from_secs_f64(args.seconds);
        return match run_sale(setting, row, mode, stock, None, length, title) {
            Ok((sale, cpu)) => Measurement::measured(row, mode, sale, cpu, None),
            Err(error) => skipped(error),
        };
    }
    let units = match (args.stock, rate) {
        (Some(units), _) => units,
        (None, Some(rate)) => (rate * args.seconds) as u64,
        (None, None) => {
            let probe_stock = Stock::new(mode, PROBE_UNITS_PER_SKU * mode.skus() as u64);
            let probe = run_sale(
                setting,
                row,
                mode,
                probe_stock,
                None,
                Duration::from_secs_f64(args.probe_seconds),
                &format!("{title} (probe)"),
            );
            match probe {
                Ok((result, _)) if result.errors == 0 => {
                    let units = result.units_per_second() * args.seconds;
                    let most = match mode {
                        Mode::HoldConfirm => MAX_HOLD_CONFIRM_UNITS,
                        Mode::Hot | Mode::Uniform | Mode::SoldOut => MAX_UNITS,
                    };
                    (units as u64).clamp(10 * mode.skus() as u64, most)
                }
                Ok((result, _)) => {
                    return skipped(
                        result
                            .first_error
                            .unwrap_or_else(|| "errors in the probe".into()),
                    )
                }
                Err(error) => return skipped(error),
            }
        }
    };
    let stock = Stock::new(mode, units);
    match run_sale(
        setting,
        row,
        mode,
        stock,
        rate,
        Duration::from_secs_f64(args.max_seconds),
        title,
    ) {
        Ok((sale, cpu)) => Measurement::measured(row, mode, sale, cpu, rate),
        Err(error) => skipped(error),
    }
}

/// Prepares the market, runs one sale with a watcher (deadline and progress
/// bar), and returns what it came to with the machine's CPU seconds.
fn run_sale(
    setting: &Setting,
    row: &Row,
    mode: Mode,
    stock: Stock,
    rate: Option<f64>,
    limit: Duration,
    title: &str,
) -> Result<(sale::SaleResult, report::Cpu), String> {
    let mut market = row.contender.prepare(setting, mode, stock, rate)?;
    let cpu_before = report::machine_cpu_seconds();
    let server_before = market.server_cpu_seconds();
    let sale = Arc::new(match mode {
        Mode::SoldOut => Sale::crowd(stock, limit),
        _ => Sale::new(stock, limit),
    });
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let sale = Arc::clone(&sale);
        let done = Arc::clone(&done);
        let title = title.to_owned();
        std::thread::spawn(move || {
            let mut bar = report::ProgressBar::new(&title, stock.units);
            // Acquire pairs with the Release store below: nothing else is
            // read through it, it only ends the loop.
            while !done.load(Ordering::Acquire) {
                sale.check_deadline();
                bar.show(sale.sold(), started.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            bar.clear();
        })
    };
    let sold = market.sell(&sale);
    let elapsed = started.elapsed();
    let cpu_after = report::machine_cpu_seconds();
    let server_after = market.server_cpu_seconds();
    done.store(true, Ordering::Release);
    let _ = watcher.join();
    drop(market);
    // Write back what this contender left dirty (the in-process journal
    // row alone writes a gigabyte) before the next one starts, so no row
    // pays for the previous row's disk traffic.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    sold?;
    let cpu = report::Cpu {
        machine: cpu_after - cpu_before,
        server: server_after.zip(server_before).map(|(a, b)| a - b),
    };
    Ok((sale.finish(elapsed), cpu))
}
