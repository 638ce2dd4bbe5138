//! Leases: units a node of a cluster was granted by the escrow (the stock
//! of record several nodes share, `durable/escrow.rs`), sold here like any
//! restocked units, and given back.
//!
//! # Why the engine keeps a lease book
//!
//! A lease is settled from the node's own journal, never by a timer: only
//! the journal knows which leases this node was granted (a grant the node
//! never recorded sold nothing, so all of it goes back) and how many units
//! of which it withdrew to give back (so a close lost in a crash is made
//! again with the same count). So each step of a lease is a journal event
//! recorded under the SKU's cell lock together with the units it moves
//! (`change.rs`): the book and the counts never disagree at any journal
//! cut.
//!
//! # Units are a pool
//!
//! A node's units of a SKU are one pool: a sale does not say which lease it
//! came from. A return of `r` units closes open leases oldest first, each
//! giving back up to what it granted; a closed lease's units not given back
//! count as the node's in the escrow (`sold`), whether sold already or
//! still here to sell. Per SKU, the escrow's figure for this node (open
//! leases' grants plus closed leases' kept units) equals what the engine
//! received from leases minus what it gave back, after every step.
//!
//! Lock order: lease book → SKU cell. Only lease steps take the book; no
//! buyer's path does.

use std::collections::BTreeMap;

use super::Engine;
use crate::core::cell::{Insufficient, TooMuchStock};
use crate::core::change::{Change, ChangeSink, LeaseStep};
use crate::core::error::{EngineError, LeaseRefusal};
use crate::core::hint::stripe_hint;
use crate::core::limits::{
    MAX_LEASE_ID_BYTES, MAX_OPEN_LEASES, MAX_OPEN_LEASES_PER_SKU, MAX_STOCK_PER_SKU,
};
use crate::core::types::SkuId;

/// One lease in the book: granted, or returning (its units given back
/// locally, the escrow not yet told). A closed lease leaves the book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookedLease {
    pub id: Box<str>,
    pub sku: SkuId,
    pub granted: u64,
    /// `Some(units)`: returning this many.
    pub returning: Option<u64>,
    /// The order leases were granted in (returns close the oldest first).
    pub sequence: u64,
}

/// The leases of one node, by id.
#[derive(Debug, Default)]
pub(super) struct LeaseBook {
    leases: BTreeMap<Box<str>, BookedLease>,
    next_sequence: u64,
}

impl LeaseBook {
    fn open_of(&self, sku: SkuId) -> impl Iterator<Item = &BookedLease> {
        let open = move |lease: &&BookedLease| lease.sku == sku && lease.returning.is_none();
        self.leases.values().filter(open)
    }
}

/// One lease a return closed, and the units it gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseReturn {
    pub lease: Box<str>,
    pub returned: u64,
}

/// Checks a lease id: 1 to `MAX_LEASE_ID_BYTES` of the SKU-name bytes
/// (`A-Z a-z 0-9 . _ - ~ :`).
pub fn validate_lease_id(lease: &str) -> Result<(), EngineError> {
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~' | b':');
    let valid = !lease.is_empty() && lease.len() <= MAX_LEASE_ID_BYTES;
    match valid && lease.bytes().all(allowed) {
        true => Ok(()),
        false => Err(refused(lease, LeaseRefusal::InvalidId)),
    }
}

fn refused(lease: &str, reason: LeaseRefusal) -> EngineError {
    EngineError::LeaseRefused {
        lease: lease.into(),
        reason,
    }
}

/// Which open leases a return of `units` closes, oldest first, and what
/// each gives back: up to what it granted. `None` when they granted fewer
/// than `units` together.
fn plan_return(mut open: Vec<&BookedLease>, units: u64) -> Option<Vec<LeaseReturn>> {
    open.sort_by_key(|lease| lease.sequence);
    let mut left = units;
    let mut plan = Vec::new();
    for lease in open {
        if left == 0 {
            break;
        }
        let returned = left.min(lease.granted);
        left -= returned;
        plan.push(LeaseReturn {
            lease: lease.id.clone(),
            returned,
        });
    }
    (left == 0).then_some(plan)
}

impl<S: ChangeSink> Engine<S> {
    /// Books lease `lease` of `units` units of SKU `name` (created if new)
    /// and credits them, like a restock (reservations owed units are
    /// filled first). The journal records the grant before any of its
    /// units can be sold.
    pub fn grant_lease(&self, name: &str, lease: &str, units: u64) -> Result<SkuId, EngineError> {
        validate_lease_id(lease)?;
        if units == 0 || units > MAX_STOCK_PER_SKU {
            return Err(refused(lease, LeaseRefusal::InvalidUnits));
        }
        self.check_storage()?;
        let hint = stripe_hint();
        let sku = match self.catalogue.find(name) {
            Some(sku) => sku,
            None => self.create_for_put(name, &super::SkuPut::default(), hint)?,
        };
        let cell = self.cell(sku)?;
        if cell.is_composite() {
            return Err(refused(lease, LeaseRefusal::NotPlain));
        }
        // Room first: a full journal lane may make this wait, and it must
        // not wait holding the book.
        self.sink.make_room(hint);
        let mut book = self.leases.lock();
        if book.leases.contains_key(lease) {
            return Err(refused(lease, LeaseRefusal::AlreadyBooked));
        }
        let per_sku = book.leases.values().filter(|l| l.sku == sku).count();
        if book.leases.len() >= MAX_OPEN_LEASES || per_sku >= MAX_OPEN_LEASES_PER_SKU {
            return Err(refused(lease, LeaseRefusal::TooManyLeases));
        }
        let publish = |change: crate::core::cell::OperatorChange| {
            let step = LeaseStep::Granted;
            self.record_lease(hint, sku, change.version, lease, units, step);
        };
        let fill = |fill| self.record_fill(hint, sku, fill);
        let (_, left) = cell
            .restock(units, hint, publish, fill)
            .map_err(|TooMuchStock { received }| EngineError::StockLimit { sku, received })?;
        let sequence = book.next_sequence;
        book.next_sequence += 1;
        let booked = BookedLease {
            id: lease.into(),
            sku,
            granted: units,
            returning: None,
            sequence,
        };
        book.leases.insert(lease.into(), booked);
        drop(book);
        self.fill_backorders(cell, sku, left, hint);
        Ok(sku)
    }

    /// Withdraws `units` available units of `sku` to give back to the
    /// escrow and marks the leases that give them back returning, oldest
    /// first (see the module docs). Refused with `InsufficientStock` when
    /// fewer are available or the open leases granted fewer. Returns the
    /// leases to close in the escrow once the journal has this durably.
    pub fn return_leased(&self, sku: SkuId, units: u64) -> Result<Vec<LeaseReturn>, EngineError> {
        self.check_storage()?;
        let cell = self.cell(sku)?;
        if units == 0 {
            return Ok(Vec::new());
        }
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let mut book = self.leases.lock();
        let plan = plan_return(book.open_of(sku).collect(), units).ok_or(
            EngineError::InsufficientStock {
                sku,
                available: book.open_of(sku).map(|lease| lease.granted).sum(),
                requested: units,
            },
        )?;
        let publish = |change: crate::core::cell::OperatorChange| {
            for part in &plan {
                let granted = book.leases[&part.lease].granted;
                let step = LeaseStep::Returning(part.returned);
                self.record_lease(hint, sku, change.version, &part.lease, granted, step);
            }
        };
        let policy = &self.config.stripe_policy;
        cell.withdraw(units, hint, policy, publish)
            .map_err(
                |Insufficient { available }| EngineError::InsufficientStock {
                    sku,
                    available,
                    requested: units,
                },
            )?;
        for part in &plan {
            let booked = book.leases.get_mut(&part.lease);
            let booked = booked.expect("a planned lease is in the book");
            booked.returning = Some(part.returned);
        }
        Ok(plan)
    }

    /// Drops returning lease `lease` from the book: the escrow closed it.
    pub fn close_lease(&self, lease: &str) -> Result<(), EngineError> {
        self.end_lease(lease, |booked| match booked.returning {
            Some(returned) => Ok(returned),
            None => Err(LeaseRefusal::NotReturning),
        })
    }

    /// Drops open lease `lease` from the book with none of its units given
    /// back: the escrow closed it as all kept (an operator forfeited this
    /// node while it was away). Its units stay on sale here: the escrow
    /// counts them as this node's.
    pub fn keep_lease(&self, lease: &str) -> Result<(), EngineError> {
        self.end_lease(lease, |booked| match booked.returning {
            Some(_) => Err(LeaseRefusal::Unknown),
            None => Ok(0),
        })
    }

    /// Records lease `lease` closed with the units `returned` answers for
    /// it, and drops it from the book.
    fn end_lease(
        &self,
        lease: &str,
        returned: impl FnOnce(&BookedLease) -> Result<u64, LeaseRefusal>,
    ) -> Result<(), EngineError> {
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        let mut book = self.leases.lock();
        let booked = book
            .leases
            .get(lease)
            .ok_or_else(|| refused(lease, LeaseRefusal::Unknown))?;
        let step = LeaseStep::Closed(returned(booked).map_err(|why| refused(lease, why))?);
        self.record_lease(hint, booked.sku, 0, lease, booked.granted, step);
        book.leases.remove(lease);
        Ok(())
    }

    /// Every lease in the book, oldest first.
    pub fn leases(&self) -> Vec<BookedLease> {
        let book = self.leases.lock();
        let mut leases: Vec<BookedLease> = book.leases.values().cloned().collect();
        leases.sort_by_key(|lease| lease.sequence);
        leases
    }

    /// Units of `sku` this node holds under open leases (granted, not
    /// returning).
    pub fn leased(&self, sku: SkuId) -> u64 {
        self.leases
            .lock()
            .open_of(sku)
            .map(|lease| lease.granted)
            .sum()
    }

    /// Puts a recovered lease back in the book (before the engine is
    /// shared; records nothing: its units are in the restored counts).
    pub fn restore_lease(
        &self,
        sku: SkuId,
        lease: &str,
        granted: u64,
        returning: Option<u64>,
    ) -> Result<(), EngineError> {
        self.cell(sku)?;
        let mut book = self.leases.lock();
        let sequence = book.next_sequence;
        book.next_sequence += 1;
        let booked = BookedLease {
            id: lease.into(),
            sku,
            granted,
            returning,
            sequence,
        };
        book.leases.insert(lease.into(), booked);
        Ok(())
    }

    fn record_lease(
        &self,
        hint: usize,
        sku: SkuId,
        version: u64,
        lease: &str,
        granted: u64,
        step: LeaseStep,
    ) {
        let change = Change::Lease {
            sku,
            version,
            lease,
            granted,
            step,
        };
        self.record(hint, change);
    }
}
