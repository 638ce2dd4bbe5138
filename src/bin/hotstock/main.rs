//! `hotstock`: the command-line entry point (clap).
//!
//! `serve` runs the HTTP service on a data directory; `flash-sale` runs an
//! in-process sale that checks the engine's invariants; `salvage` cuts a
//! damaged journal at its first bad frame.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine, StoreConfig};
use hotstock::{Engine, EngineConfig, EngineError};

#[derive(Parser, Debug)]
#[command(
    name = "hotstock",
    version,
    about = "In-process stock engine that never oversells",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API on a data directory (recovering it first).
    Serve(ServeArgs),
    /// Sell one SKU's stock to concurrent buyers in this process, then check
    /// that nothing was oversold or stranded and the books balance.
    FlashSale(SaleArgs),
    /// Cut a damaged journal at its first bad frame so the engine can start
    /// again, deleting what follows; prints what was dropped. Run it only
    /// after deciding the data past the damage is lost.
    Salvage {
        #[arg(long, env = "HOTSTOCK_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Load SKUs from a CSV file (`sku,available[,per_customer_limit]`, an
    /// optional header line) into a data directory no server is using. The
    /// whole file is checked before anything is written.
    Import {
        file: PathBuf,
        #[arg(long, env = "HOTSTOCK_DATA_DIR", default_value = "./hotstock-data")]
        data_dir: PathBuf,
    },
    /// Show a data directory without changing it: the store's checkpoint,
    /// the journal segments, the state recovery would start from.
    Inspect {
        #[arg(long, env = "HOTSTOCK_DATA_DIR", default_value = "./hotstock-data")]
        data_dir: PathBuf,
    },
    /// Check every journal frame and the recovered counts without changing
    /// anything; exits 0 when sound, 1 when not.
    Verify {
        #[arg(long, env = "HOTSTOCK_DATA_DIR", default_value = "./hotstock-data")]
        data_dir: PathBuf,
    },
    /// Internal: the workload tests/crash.rs kills with SIGKILL.
    #[command(hide = true)]
    CrashWorkload {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityArg {
    Sync,
    Async,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A TOML file with any of these settings (keys as the flags, with `_`
    /// for `-`). The command line and the environment win over it.
    #[arg(long, env = "HOTSTOCK_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (a non-loopback address needs --admin-token).
    #[arg(long, env = "HOTSTOCK_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the journal and the SQLite store live.
    #[arg(long, env = "HOTSTOCK_DATA_DIR", default_value = "./hotstock-data")]
    data_dir: PathBuf,
    /// `sync`: a 2xx is sent only once the change is on disk.
    #[arg(long, env = "HOTSTOCK_DURABILITY", value_enum, default_value = "sync")]
    durability: DurabilityArg,
    /// `sqlite` (in the data directory) or a `postgres://` URL.
    #[arg(long, env = "HOTSTOCK_STORE", default_value = "sqlite")]
    store: String,
    /// Operator routes (PUT/adjust SKUs) need `Authorization: Bearer TOKEN`.
    /// Required to listen on a non-loopback address.
    #[arg(long, env = "HOTSTOCK_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Requests handled at once; beyond it, 503 `overloaded` with Retry-After.
    #[arg(long, env = "HOTSTOCK_MAX_IN_FLIGHT", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,
    /// Reservation requests per second, all SKUs together (off by default);
    /// beyond it, 429 `overloaded` with Retry-After.
    #[arg(long, env = "HOTSTOCK_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit: Option<u32>,
    /// Reservation lines per second for any one SKU (off by default).
    #[arg(long, env = "HOTSTOCK_SKU_RATE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    sku_rate_limit: Option<u32>,
    /// Open connections at once; beyond it, new ones wait in the backlog.
    #[arg(long, env = "HOTSTOCK_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Milliseconds a client may take to send a request head (from its
    /// first byte, or from connecting); slower connections are closed.
    #[arg(long, env = "HOTSTOCK_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    header_timeout_ms: u32,
    /// Milliseconds a keep-alive connection may sit idle, with no request
    /// in flight, before it is closed (at least the header timeout).
    #[arg(long, env = "HOTSTOCK_IDLE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u32).range(1..))]
    idle_timeout_ms: u32,
}

#[derive(clap::Args, Debug)]
struct SaleArgs {
    /// Units on sale.
    #[arg(long, default_value_t = 1_000_000)]
    stock: u64,
    /// Concurrent buyer threads.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    buyers: u16,
    /// Each buyer is a customer with this limit (default: no limit).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    limit_per_customer: Option<u32>,
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
    println!("stock               {}", sale.stock);
    println!("buyers              {buyers}");
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
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let (Command::Serve(args), Some(("serve", serve_matches))) =
        (&mut cli.command, matches.subcommand())
    {
        if let Err(message) = apply_config(args, serve_matches) {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::FlashSale(sale) => match flash_sale(&sale) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("flash sale failed: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Salvage { data_dir } => salvage(&data_dir),
        Command::Import { file, data_dir } => import(&file, &data_dir),
        Command::Inspect { data_dir } => inspect(&data_dir, false),
        Command::Verify { data_dir } => inspect(&data_dir, true),
        Command::CrashWorkload { data_dir } => crash_workload(data_dir),
    }
}

/// Fills the settings the command line and the environment left at their
/// defaults from `--config FILE`. Unknown keys and wrong types are errors
/// that name the key.
fn apply_config(args: &mut ServeArgs, matches: &ArgMatches) -> Result<(), String> {
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let unset = |id: &str| {
        !matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let file = path.display().to_string();
    let string = |key: &str, value: &toml::Value| {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{file}: {key} must be a string"))
    };
    let number = |key: &str, value: &toml::Value| -> Result<u32, String> {
        value
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{file}: {key} must be a positive integer"))
    };
    const KNOWN: [&str; 11] = [
        "listen",
        "data_dir",
        "durability",
        "store",
        "admin_token",
        "max_in_flight",
        "max_connections",
        "rate_limit",
        "sku_rate_limit",
        "header_timeout_ms",
        "idle_timeout_ms",
    ];
    for (key, value) in &table {
        // Before asking clap about it: clap panics on an id it does not know.
        if !KNOWN.contains(&key.as_str()) {
            return Err(format!("{file}: unknown setting {key:?}"));
        }
        if !unset(key) {
            continue;
        }
        match key.as_str() {
            "listen" => {
                args.listen = string(key, value)?
                    .parse()
                    .map_err(|e| format!("{file}: listen: {e}"))?;
            }
            "data_dir" => args.data_dir = string(key, value)?.into(),
            "durability" => {
                args.durability = match string(key, value)?.as_str() {
                    "sync" => DurabilityArg::Sync,
                    "async" => DurabilityArg::Async,
                    other => {
                        return Err(format!(
                            "{file}: durability must be \"sync\" or \"async\", not {other:?}"
                        ))
                    }
                }
            }
            "store" => args.store = string(key, value)?,
            "admin_token" => args.admin_token = Some(string(key, value)?),
            "max_in_flight" => args.max_in_flight = number(key, value)?,
            "max_connections" => args.max_connections = number(key, value)?,
            "header_timeout_ms" => args.header_timeout_ms = number(key, value)?,
            "idle_timeout_ms" => args.idle_timeout_ms = number(key, value)?,
            "rate_limit" => args.rate_limit = Some(number(key, value)?),
            "sku_rate_limit" => args.sku_rate_limit = Some(number(key, value)?),
            other => return Err(format!("{file}: unknown setting {other:?}")),
        }
    }
    Ok(())
}

/// Opens the data directory, serves HTTP until SIGINT or SIGTERM, then stops
/// accepting, flushes the journal and writes a checkpoint.
fn serve(args: ServeArgs) -> ExitCode {
    if !args.listen.ip().is_loopback() && args.admin_token.is_none() {
        eprintln!(
            "refusing to listen on {} without --admin-token: operator routes would be open to the network",
            args.listen
        );
        return ExitCode::from(2);
    }
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Async => Durability::Async,
    };
    let mut config = DurableConfig::new(&args.data_dir, durability);
    config.store = match args.store.as_str() {
        "sqlite" => StoreConfig::Sqlite,
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            StoreConfig::Postgres {
                url: url.to_owned(),
                schema: "hotstock".to_owned(),
            }
        }
        other => {
            eprintln!("--store must be `sqlite` or a postgres:// URL, not {other:?}");
            return ExitCode::from(2);
        }
    };
    let (durable, report) = match DurableEngine::open(config) {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("hotstock: cannot open {}: {error}", args.data_dir.display());
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "hotstock: recovered {} SKUs and {} reservations ({} journal events replayed) in {:.2} s",
        report.skus,
        report.reservations,
        report.events_replayed,
        report.elapsed.as_secs_f64()
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hotstock: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let options = hotstock::server::api::ApiOptions {
        admin_token: args.admin_token.clone(),
        max_in_flight: args.max_in_flight as usize,
        rate_limit: args.rate_limit,
        sku_rate_limit: args.sku_rate_limit,
    };
    let api = Arc::new(hotstock::server::api::Api::new(
        durable.engine().clone(),
        durability,
        options,
    ));
    let limits = hotstock::server::connection::ConnectionLimits {
        header_timeout: Duration::from_millis(u64::from(args.header_timeout_ms)),
        idle_timeout: Duration::from_millis(u64::from(args.idle_timeout_ms)),
    };
    let served = runtime.block_on(accept_until_signalled(
        args.listen,
        api,
        args.max_connections as usize,
        limits,
    ));
    // Stop the runtime (and its connections) before closing the engine.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let closed = durable.close();
    match (served, closed) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(error), _) => {
            eprintln!("hotstock: {error}");
            ExitCode::FAILURE
        }
        (_, Err(error)) => {
            eprintln!("hotstock: closing the data directory: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn accept_until_signalled(
    listen: SocketAddr,
    api: Arc<hotstock::server::api::Api>,
    max_connections: usize,
    limits: hotstock::server::connection::ConnectionLimits,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let listener = tokio::net::TcpListener::bind(listen).await?;
    // Tests and scripts read this line to find the port of `--listen :0`.
    println!("listening on {}", listener.local_addr()?);
    let mut terminate = signal(SignalKind::terminate())?;
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    // Raised on SIGTERM/SIGINT: every connection then finishes the request
    // it is serving and closes.
    let (shutdown, stop) = hotstock::server::connection::stop_signal();
    loop {
        // At the connection cap, stop accepting until one closes: the
        // kernel's backlog holds the rest.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A failed accept (out of file descriptors, a reset
                // connection) must not stop the server.
                Err(error) => {
                    eprintln!("hotstock: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        };
        // Responses are written whole; Nagle's algorithm would hold a
        // pipelined client's answers back for the delayed ACK (40 ms).
        if let Err(error) = stream.set_nodelay(true) {
            eprintln!("hotstock: TCP_NODELAY: {error}");
        }
        let api = Arc::clone(&api);
        let stop = stop.clone();
        tokio::spawn(async move {
            // However it ends (the client left, a timeout, shutdown), the
            // permit goes back.
            let _closed = hotstock::server::connection::serve(stream, api, limits, stop).await;
            drop(permit);
        });
    }
    eprintln!(
        "hotstock: signal received; no longer accepting connections, finishing requests in flight"
    );
    drop(listener);
    shutdown.stop();
    // Every connection holds a permit until it has closed: having them all
    // back means no request is in flight.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(Duration::from_secs(30), connections.acquire_many(all)).await {
        Ok(_) => eprintln!("hotstock: all requests finished"),
        Err(_) => eprintln!("hotstock: gave up waiting for requests after 30 s"),
    }
    Ok(())
}

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

fn import(file: &std::path::Path, data_dir: &std::path::Path) -> ExitCode {
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
    for (done, (name, available, limit)) in rows.into_iter().enumerate() {
        if let Err(error) = engine.put_sku(&name, available, Some(limit), None) {
            eprintln!("\nSKU {name:?}: {error}; {done} of {total} imported before it");
            return ExitCode::FAILURE;
        }
        let step = (total / 100).max(1);
        if (done + 1) % step == 0 || done + 1 == total {
            eprint!("\r{}", progress_bar(done + 1, total));
        }
    }
    eprintln!();
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

/// `[#########-----------]  45%  4500/10000`
fn progress_bar(done: usize, total: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    format!(
        "[{}{}] {percent:>3}%  {done}/{total}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    )
}

/// `inspect` (report) and `verify` (report and judge).
fn inspect(data_dir: &std::path::Path, judge: bool) -> ExitCode {
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
    for (number, bytes) in &found.segments {
        println!("  {number:016x}.hsj  {bytes} bytes");
    }
    println!("events after it      {}", report.events_replayed);
    println!("last position        {}", settled.position);
    if let Some((segment, torn)) = report.torn_tail {
        println!("torn tail            segment {segment} at offset {} ({} bytes, truncated on next start)", torn.offset, torn.dropped);
    }
    let skus: Vec<_> = settled.skus.iter().flatten().collect();
    let sum = |f: fn(&hotstock::durable::settled::SettledSku) -> i64| {
        skus.iter().map(|s| f(s)).sum::<i64>()
    };
    println!("SKUs                 {}", skus.len());
    println!("units available      {}", sum(|s| s.available()));
    println!("units held           {}", sum(|s| s.held));
    println!("units sold           {}", sum(|s| s.sold));
    if !judge {
        return ExitCode::SUCCESS;
    }
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

fn salvage(dir: &std::path::Path) -> ExitCode {
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

/// Random operations from 4 threads in `sync` durability; each prints an
/// `ACK` line only after its change is on disk. Runs until killed.
fn crash_workload(dir: PathBuf) -> ExitCode {
    use hotstock::durable::journal::Durability;
    use hotstock::durable::{DurableConfig, DurableEngine};
    use hotstock::{Line, Order};
    use std::io::Write;

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
