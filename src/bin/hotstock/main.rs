//! `hotstock`: the command line over the library.
//!
//! This binary is the only code that knows clap or TOML. It parses the
//! command, resolves settings (`config.rs`) and hands them to the library:
//! `serve` runs the HTTP service on a data directory, `import` loads SKUs
//! from a CSV file, `inspect`/`verify` read a data directory without
//! changing it, `salvage` cuts a damaged journal, `lease` settles or
//! writes off a cluster node's leases, and `flash-sale` runs an in-process
//! sale that checks the engine's invariants.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config;
mod flash_sale;
mod import;
mod inspect;
#[cfg(feature = "postgres")]
mod lease;
mod serve;
mod tail;

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
    /// Log lines on stderr: `human` (one readable line each) or `json`
    /// (one object per line, for a log shipper).
    #[arg(
        long,
        global = true,
        env = "HOTSTOCK_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API on a data directory (recovering it first).
    Serve(Box<config::ServeSettings>),
    /// Sell one SKU's stock to concurrent buyers in this process, then check
    /// that nothing was oversold or stranded and the books balance.
    FlashSale(flash_sale::SaleArgs),
    /// Cut a damaged journal at its first bad frame so the engine can start
    /// again, deleting what follows; prints what was dropped. Run it only
    /// after deciding the data past the damage is lost.
    Salvage {
        #[arg(long, env = "HOTSTOCK_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Load SKUs from a CSV file
    /// (`sku,available[,per_customer_limit[,safety_stock[,backorder_limit]]]`,
    /// an optional header line) into a data directory no server is using,
    /// SKUs kept at locations from a second one (`--locations`), and kits
    /// from a third (`--kits`: `kit,sku,quantity`, a row per component).
    /// Every file is checked whole before anything is written.
    Import {
        file: PathBuf,
        /// SKUs kept at locations, a row per location:
        /// `sku,location,available[,safety_stock[,priority]]`.
        #[arg(long)]
        locations: Option<PathBuf>,
        /// Kits, a row per component: `kit,sku,quantity` (units per kit).
        #[arg(long)]
        kits: Option<PathBuf>,
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
    /// The change feed of a running server.
    #[command(subcommand)]
    Events(EventsCommand),
    /// A cluster node's leases from the escrow: settle them from its data
    /// directory, or write them off when that is lost too.
    #[cfg(feature = "postgres")]
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
}

#[derive(Subcommand, Debug)]
enum EventsCommand {
    /// Print the feed from a position on, following it as it grows.
    Tail(tail::TailArgs),
}

/// Log lines (the library's `tracing` events) go to stderr, from INFO up;
/// stdout carries only what a command prints for its caller.
/// The audit log (`hotstock::audit`: what operators and services did, by
/// token name) is among them.
fn init_logging(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO);
    match format {
        LogFormat::Human => logs.with_target(false).init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(settings) => match settings.resolve() {
            Ok(settings) => serve::serve(settings),
            Err(message) => {
                eprintln!("{message}");
                ExitCode::from(2)
            }
        },
        Command::FlashSale(sale) => flash_sale::run(&sale),
        Command::Salvage { data_dir } => inspect::salvage(&data_dir),
        Command::Import {
            file,
            locations,
            kits,
            data_dir,
        } => import::import(&file, locations.as_deref(), kits.as_deref(), &data_dir),
        Command::Inspect { data_dir } => inspect::inspect(&data_dir, false),
        Command::Verify { data_dir } => inspect::inspect(&data_dir, true),
        Command::Events(EventsCommand::Tail(args)) => tail::tail(&args),
        #[cfg(feature = "postgres")]
        Command::Lease(command) => lease::run(&command),
    }
}
