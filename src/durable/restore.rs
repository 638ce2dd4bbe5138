//! Putting recovered state back into a fresh engine: SKUs, kits,
//! reservation records, backorder queues, idempotency keys and customer
//! counts, checked against each other where they must agree. Records
//! nothing: the state came from the journal and the store.

use std::sync::Arc;

use crate::core::catalogue::LOCATION_SEPARATOR;
use crate::core::cell::{CellSnapshot, Owed};
use crate::core::change::ChangeSink;
use crate::core::engine::{Engine, Receipt};
use crate::core::error::EngineError;
use crate::core::holds::NewHold;
use crate::core::types::{HoldStatus, ReservationId, SkuId};
use crate::durable::event::{KeyEvent, LeaseStep};
use crate::durable::settled::Settled;

/// Puts this node's open leases back in the engine's book, in id order. A
/// closed lease (its close folded since the last checkpoint) is not.
fn restore_leases<S: ChangeSink>(engine: &Engine<S>, settled: &Settled) -> Result<(), EngineError> {
    let mut leases: Vec<_> = settled.leases.iter().collect();
    leases.sort_by(|a, b| a.0.cmp(b.0));
    for (id, lease) in leases {
        let sku = SkuId::from_index(lease.sku);
        let returning = match lease.step {
            LeaseStep::Granted => None,
            LeaseStep::Returning(units) => Some(units),
            LeaseStep::Closed(_) => continue,
        };
        engine.restore_lease(sku, id, lease.granted, returning)?;
    }
    Ok(())
}

/// Rebuilds a fresh, unshared engine from recovered counts and records.
/// Records nothing: the state came from the journal.
pub(super) fn restore_engine<S: ChangeSink>(
    engine: &Engine<S>,
    settled: &Settled,
) -> Result<(), EngineError> {
    assert!(engine.is_fresh(), "restore into a fresh engine only");
    restore_skus(engine, settled)?;
    restore_locations(engine, settled)?;
    restore_leases(engine, settled)?;
    let backordered = restore_backorders(engine, settled)?;
    for (&id, hold) in &settled.holds {
        let record = NewHold {
            lines: &hold.lines,
            customer: hold.customer.as_deref().map(Arc::from),
            limit_mask: hold.limit_mask,
            deadline_ms: hold.deadline_ms,
            created_ms: hold.at_ms,
            status: HoldStatus::Held,
            extensions: hold.extensions,
            amounts: hold.amounts.as_deref(),
            backordered: backordered.contains(&id),
        };
        let id = ReservationId::from_u64(id);
        engine.restore_reservation(id, record, hold.status, hold.at_ms);
    }
    restore_keys(engine, settled);
    for ((sku, customer), &units) in &settled.customer_units {
        let units = u32::try_from(units).map_err(|_| negative(*sku as usize, "customer units"))?;
        engine.restore_customer_units(SkuId::from_index(*sku), customer, units);
    }
    Ok(())
}

/// Every SKU with its counts and rules (kit, located, sale window,
/// waiting room).
fn restore_skus<S: ChangeSink>(engine: &Engine<S>, settled: &Settled) -> Result<(), EngineError> {
    for (index, sku) in settled.skus.iter().enumerate() {
        let Some(sku) = sku else { continue };
        if sku.name.is_empty() {
            // Counts for a SKU whose creation event was never durable:
            // impossible by the journal's causal-prefix property.
            return Err(EngineError::StorageFailed {
                message: format!("journal names SKU #{index} but never recorded its creation")
                    .into(),
            });
        }
        let snapshot = CellSnapshot {
            available: u64::try_from(sku.available()).map_err(|_| negative(index, "available"))?,
            held: u64::try_from(sku.held).map_err(|_| negative(index, "held"))?,
            sold: u64::try_from(sku.sold).map_err(|_| negative(index, "sold"))?,
            received: u64::try_from(sku.received).map_err(|_| negative(index, "received"))?,
            version: sku.version,
            per_customer_limit: sku.limit,
            low_stock_threshold: sku.low_stock,
            safety_stock: sku.safety_stock,
            width: 1,
            backorder: sku.backorder,
            backordered: 0,
        };
        let id = SkuId::from_index(index as u32);
        engine.restore_sku(id, &sku.name, &snapshot)?;
        if let Some(components) = &sku.kit {
            engine.restore_kit(id, components)?;
        }
        if sku.located {
            engine.restore_located(id)?;
        }
        if !sku.sale_window.is_always() {
            engine.restore_sale_window(id, sku.sale_window)?;
        }
        if let Some(room) = sku.waiting_room {
            engine.restore_waiting_room(id, room)?;
        }
    }
    Ok(())
}

/// Every idempotency key, oldest first: the table forgets keys in
/// insertion order.
fn restore_keys<S: ChangeSink>(engine: &Engine<S>, settled: &Settled) {
    let mut keys: Vec<&KeyEvent> = settled.keys.values().collect();
    keys.sort_by_key(|key| key.created_ms);
    for key in keys {
        let receipt = Receipt {
            id: key.reservation,
            status: key.status,
            expires_at_ms: key.expires_at_ms,
            replayed: false,
            // A replay is answered from the record whatever was asked.
            holds_components: false,
            backordered: false,
        };
        engine.restore_idempotency_key(&key.key, key.fingerprint, key.created_ms, receipt);
    }
}

/// Lists every location cell (a SKU named `sku/location`) under its SKU,
/// in creation order, with its priority. A location whose SKU is not kept
/// at locations is damage: both are recorded before either is published.
fn restore_locations<S: ChangeSink>(
    engine: &Engine<S>,
    settled: &Settled,
) -> Result<(), EngineError> {
    for (index, sku) in settled.skus.iter().enumerate() {
        let Some(sku) = sku else { continue };
        let Some((owner, _)) = sku.name.split_once(LOCATION_SEPARATOR) else {
            continue;
        };
        let damaged = |what: &str| EngineError::StorageFailed {
            message: format!("location SKU #{index} ({:?}) {what}", sku.name).into(),
        };
        // Every SKU's name is back by now.
        let owner = engine
            .sku(owner)
            .map_err(|_| damaged("has no SKU of its name"))?;
        let cell = SkuId::from_index(index as u32);
        let priority = sku.priority.unwrap_or(0);
        engine
            .restore_location(owner, cell, priority)
            .map_err(|_| damaged("belongs to a SKU not kept at locations"))?;
    }
    Ok(())
}

/// Puts every SKU's backorder queue back, in ticket order, after checking
/// that its owed units add up to the SKU's `backordered` count. Returns the
/// reservations owed units.
fn restore_backorders<S: ChangeSink>(
    engine: &Engine<S>,
    settled: &Settled,
) -> Result<std::collections::HashSet<u64>, EngineError> {
    let mut by_sku: std::collections::BTreeMap<u32, Vec<Owed>> = Default::default();
    let mut owed_ids = std::collections::HashSet::new();
    let mut next_ticket = 1;
    for (&(sku, id), row) in &settled.backorders {
        if row.owed == 0 {
            continue;
        }
        owed_ids.insert(id);
        next_ticket = next_ticket.max(row.ticket + 1);
        by_sku.entry(sku).or_default().push(Owed {
            id: ReservationId::from_u64(id),
            ticket: row.ticket,
            units: row.owed,
            sold: row.sold,
        });
    }
    for (index, sku) in settled.skus.iter().enumerate() {
        let Some(sku) = sku else { continue };
        let owed = by_sku.remove(&(index as u32)).unwrap_or_default();
        let total: i64 = owed.iter().map(|o| i64::from(o.units)).sum();
        if total != sku.backordered {
            return Err(EngineError::StorageFailed {
                message: format!(
                    "SKU #{index} counts {} units backordered but its queue owes {total}: \
                     the store and journal disagree",
                    sku.backordered
                )
                .into(),
            });
        }
        if !owed.is_empty() {
            engine.restore_backorders(SkuId::from_index(index as u32), owed)?;
        }
    }
    if let Some((sku, _)) = by_sku.into_iter().next() {
        return Err(negative(
            sku as usize,
            "backorders (of a SKU never created)",
        ));
    }
    engine.restore_backorder_tickets(next_ticket);
    Ok(owed_ids)
}

fn negative(sku: usize, what: &str) -> EngineError {
    EngineError::StorageFailed {
        message: format!(
            "recovered {what} of SKU #{sku} is out of range: the store and journal disagree"
        )
        .into(),
    }
}
