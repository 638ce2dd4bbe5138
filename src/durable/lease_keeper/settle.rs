//! Settling a node's leases from its own book: on start
//! (`settle_on_start`), at a clean stop and by `hotstock lease settle`
//! (`give_back_all`). See the parent module for the order of each step.

use super::{KeeperError, MAX_NODE_ID_BYTES};
use crate::core::error::EngineError;
use crate::core::types::SkuId;
use crate::durable::escrow::Escrow;
use crate::durable::sink::JournaledEngine;

/// Checks a node id (see `KeeperConfig::node`).
pub fn validate_node_id(node: &str) -> Result<(), KeeperError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    let valid = !node.is_empty() && node.len() <= MAX_NODE_ID_BYTES;
    match valid && node.bytes().all(allowed) {
        true => Ok(()),
        false => Err(KeeperError::InvalidNode(node.to_owned())),
    }
}

/// The node a lease id names (its part before the first `~`).
pub fn node_of_lease(lease: &str) -> &str {
    lease.split('~').next().unwrap_or(lease)
}

/// What `settle_on_start` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Leases the escrow granted that the journal never booked (a crash
    /// between the two): closed with every unit back.
    pub unbooked: Vec<(String, u64)>,
    /// Returning leases whose close was made (again).
    pub closed: Vec<(String, u64)>,
    /// Open leases the escrow had closed meanwhile (forfeited while this
    /// node was away): its units count as this node's, and stay on sale.
    pub kept: Vec<String>,
}

/// Makes this node's lease book and the escrow agree, from the book (the
/// node's journal): run before the node serves, with nothing else
/// touching its leases.
pub fn settle_on_start(
    engine: &JournaledEngine,
    escrow: &mut Escrow,
    node: &str,
) -> Result<Settlement, KeeperError> {
    validate_node_id(node)?;
    let book = engine.leases();
    if let Some(foreign) = book.iter().find(|l| node_of_lease(&l.id) != node) {
        let lease = foreign.id.to_string();
        return Err(KeeperError::ForeignLease { lease });
    }
    let open = escrow.open_leases(node)?;
    let mut settlement = Settlement::default();
    for lease in &open {
        if !book.iter().any(|booked| *booked.id == *lease.id) {
            escrow.close(&lease.id, node, lease.granted)?;
            settlement.unbooked.push((lease.id.clone(), lease.granted));
        }
    }
    for booked in &book {
        let in_escrow = open.iter().any(|lease| *lease.id == *booked.id);
        match booked.returning {
            Some(units) => {
                escrow.close(&booked.id, node, units)?;
                engine.close_lease(&booked.id)?;
                settlement.closed.push((booked.id.to_string(), units));
            }
            None if !in_escrow => {
                engine.keep_lease(&booked.id)?;
                settlement.kept.push(booked.id.to_string());
            }
            None => {}
        }
    }
    wait_durable(engine)?;
    Ok(settlement)
}

/// Gives back every unsold leased unit (all SKUs) and closes the leases
/// that return them: a clean shutdown, or `hotstock lease settle`. Units
/// held for buyers stay (their reservations may still be confirmed).
/// Returns the units given back.
pub fn give_back_all(
    engine: &JournaledEngine,
    escrow: &mut Escrow,
    node: &str,
) -> Result<u64, KeeperError> {
    let mut skus: Vec<SkuId> = engine.leases().iter().map(|l| l.sku).collect();
    skus.sort();
    skus.dedup();
    let mut units = 0;
    for sku in skus {
        units += withdraw_leased(engine, sku, u64::MAX)?;
    }
    close_returning(engine, escrow, node)?;
    Ok(units)
}

/// Withdraws up to `most` of `sku`'s available units that open leases
/// cover, marking those leases returning. Returns the units withdrawn.
pub(super) fn withdraw_leased(
    engine: &JournaledEngine,
    sku: SkuId,
    most: u64,
) -> Result<u64, KeeperError> {
    let available = engine.available_now(sku)?;
    let units = most.min(available).min(engine.leased(sku));
    if units == 0 {
        return Ok(0);
    }
    match engine.return_leased(sku, units) {
        Ok(_) => Ok(units),
        // A buyer took some meanwhile: give back what is left next time.
        Err(EngineError::InsufficientStock { .. }) => Ok(0),
        Err(other) => Err(other.into()),
    }
}

/// Closes in the escrow every lease the book marks returning, once the
/// journal has the withdrawal durably, then drops it from the book.
pub(super) fn close_returning(
    engine: &JournaledEngine,
    escrow: &mut Escrow,
    node: &str,
) -> Result<usize, KeeperError> {
    let returning: Vec<_> = (engine.leases().into_iter())
        .filter(|lease| lease.returning.is_some())
        .collect();
    if returning.is_empty() {
        return Ok(0);
    }
    wait_durable(engine)?;
    for lease in &returning {
        let units = lease.returning.unwrap_or(0);
        escrow.close(&lease.id, node, units)?;
        engine.close_lease(&lease.id)?;
    }
    Ok(returning.len())
}

fn wait_durable(engine: &JournaledEngine) -> Result<(), KeeperError> {
    let ticket = engine.durability_ticket();
    engine
        .wait_durable(ticket)
        .map_err(|e| KeeperError::Journal(e.to_string()))
}
