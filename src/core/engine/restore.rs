//! Rebuilding a fresh engine from recovered state. The durable layer
//! decides *what* was recovered (it owns the journal and the fold); these
//! calls only put values back, and record nothing: the state came from the
//! record. Each may be called only before the engine is shared.

use super::{Engine, Receipt};
use crate::core::cell::CellSnapshot;
use crate::core::change::ChangeSink;
use crate::core::error::EngineError;
use crate::core::holds::NewHold;
use crate::core::types::{HoldStatus, Line, ReservationId, SkuId};

impl<S: ChangeSink> Engine<S> {
    /// Recreates SKU `id` named `name` with the counts in `snapshot`.
    pub fn restore_sku(
        &self,
        id: SkuId,
        name: &str,
        snapshot: &CellSnapshot,
    ) -> Result<(), EngineError> {
        let slot = self.catalogue.restore(id, name)?;
        slot.cell().restore(snapshot);
        Ok(())
    }

    /// Makes restored SKU `id` the kit of `components` it was.
    pub fn restore_kit(&self, id: SkuId, components: &[Line]) -> Result<(), EngineError> {
        let cell = self.cell(id)?;
        self.kits.set(id, components);
        cell.restore_kit();
        Ok(())
    }

    /// Puts back a reservation record under its original id, in `status`
    /// since `since_ms` (the start of its retention or refund window).
    pub fn restore_reservation(
        &self,
        id: ReservationId,
        record: NewHold<'_>,
        status: HoldStatus,
        since_ms: u64,
    ) {
        self.holds.restore(id, record, status, since_ms);
    }

    /// Puts back a remembered idempotent outcome. Call oldest first: the
    /// table forgets keys in insertion order.
    pub fn restore_idempotency_key(
        &self,
        key: &str,
        fingerprint: u64,
        created_ms: u64,
        receipt: Receipt,
    ) {
        self.idempotency
            .restore(key, fingerprint, created_ms, Ok(receipt));
    }

    /// Puts back what `customer` holds or bought of `sku` against its limit.
    pub fn restore_customer_units(&self, sku: SkuId, customer: &str, units: u32) {
        self.ledger.restore(sku, customer, units);
    }

    /// See `HoldTable::set_generation_floor`: ids issued from now on never
    /// repeat one issued by a run whose boot number was lower.
    pub fn set_boot(&self, boot: u32) {
        self.holds.set_generation_floor(boot << 16);
    }

    /// Whether nothing has been created yet (restore only into such an
    /// engine).
    pub fn is_fresh(&self) -> bool {
        self.catalogue.is_empty()
    }
}
