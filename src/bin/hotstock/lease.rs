//! `hotstock lease settle|forfeit`: a node's leases from the escrow, when
//! the node itself will not settle them (docs/cluster.md, "Failures").

use std::path::PathBuf;
use std::process::ExitCode;

use hotstock::durable::escrow::Escrow;
use hotstock::durable::journal::Durability;
use hotstock::durable::lease_keeper::{give_back_all, node_of_lease, settle_on_start};
use hotstock::durable::{DurableConfig, DurableEngine};

/// Where the escrow is.
#[derive(clap::Args, Debug)]
pub struct EscrowArgs {
    #[arg(long, env = "HOTSTOCK_ESCROW")]
    escrow: String,
    #[arg(
        long,
        env = "HOTSTOCK_ESCROW_SCHEMA",
        default_value = "hotstock_escrow"
    )]
    escrow_schema: String,
}

impl EscrowArgs {
    fn connect(&self) -> Result<Escrow, String> {
        Escrow::connect(&self.escrow, &self.escrow_schema).map_err(|e| e.to_string())
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum LeaseCommand {
    /// Settle a node that is gone for good from its data directory (no
    /// server may be using it): its unsold leased units go back to the
    /// escrow, exactly as its journal says. Units held for buyers stay
    /// leased (their reservations may still be confirmed).
    Settle {
        #[arg(long, env = "HOTSTOCK_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        escrow: EscrowArgs,
        /// The node's id; read from its leases when it has any.
        #[arg(long, env = "HOTSTOCK_NODE_ID")]
        node_id: Option<String>,
    },
    /// Write off every open lease of a node lost together with its data:
    /// each is counted as all sold. Possibly undersold, never oversold;
    /// prints what was written off.
    Forfeit {
        #[arg(long)]
        node: String,
        #[command(flatten)]
        escrow: EscrowArgs,
    },
}

pub fn run(command: &LeaseCommand) -> ExitCode {
    let done = match command {
        LeaseCommand::Settle {
            data_dir,
            escrow,
            node_id,
        } => settle(data_dir, escrow, node_id.as_deref()),
        LeaseCommand::Forfeit { node, escrow } => forfeit(node, escrow),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn settle(
    data_dir: &std::path::Path,
    escrow: &EscrowArgs,
    node_id: Option<&str>,
) -> Result<(), String> {
    let config = DurableConfig::new(data_dir, Durability::Sync);
    let (durable, _) = DurableEngine::open(config)
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
    let engine = durable.engine();
    let from_book = engine
        .leases()
        .first()
        .map(|l| node_of_lease(&l.id).to_owned());
    let node = match (node_id, from_book) {
        (Some(given), Some(booked)) if given != booked => {
            return Err(format!(
                "{} holds leases of node {booked:?}, not {given:?}",
                data_dir.display()
            ))
        }
        (Some(given), _) => given.to_owned(),
        (None, Some(booked)) => booked,
        (None, None) => {
            return Err(format!(
                "{} holds no lease: give --node-id to close any lease the escrow granted this \
                 node that its journal never booked",
                data_dir.display()
            ))
        }
    };
    let mut escrow = escrow.connect()?;
    let settlement = settle_on_start(engine, &mut escrow, &node).map_err(|e| e.to_string())?;
    let given_back = give_back_all(engine, &mut escrow, &node).map_err(|e| e.to_string())?;
    let still_open: u64 = engine.leases().iter().map(|l| l.granted).sum();
    println!(
        "node {node}: {} lease(s) its journal never booked went back whole, {} returning \
         lease(s) closed, {} forfeited lease(s) kept; {given_back} unsold unit(s) given back; \
         {} lease(s) of {still_open} unit(s) stay open (sold, or held for buyers)",
        settlement.unbooked.len(),
        settlement.closed.len(),
        settlement.kept.len(),
        engine.leases().len(),
    );
    durable
        .close()
        .map_err(|e| format!("closing {}: {e}", data_dir.display()))
}

fn forfeit(node: &str, escrow: &EscrowArgs) -> Result<(), String> {
    let mut escrow = escrow.connect()?;
    let written_off = escrow.forfeit(node).map_err(|e| e.to_string())?;
    println!(
        "node {node}: wrote off {} open lease(s) of {} unit(s), counted as sold (possibly \
         undersold, never oversold)",
        written_off.leases, written_off.units
    );
    Ok(())
}
