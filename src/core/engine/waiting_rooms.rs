//! Which SKUs have a waiting room, and its settings (#16): an operator
//! change like a sale window, journaled under the SKU's lock before it is
//! published. The rooms themselves (who waits, who is admitted) live in
//! memory in the server (`core::waiting_room`); the engine keeps only what
//! must survive a restart, and the count that lets a purchase skip the
//! check with one load while no SKU has a room.

use super::Engine;
use crate::core::change::{Change, ChangeSink};
use crate::core::error::EngineError;
use crate::core::hint::stripe_hint;
use crate::core::limits::MAX_WAITING_ROOMS;
use crate::core::types::SkuId;
use crate::core::waiting_room::RoomConfig;

impl<S: ChangeSink> Engine<S> {
    /// Turns `sku`'s waiting room on with `room`'s settings, changes them,
    /// or turns it off (`None`). Returns the new version. At most
    /// `MAX_WAITING_ROOMS` SKUs have one at once.
    pub fn set_waiting_room(
        &self,
        sku: SkuId,
        room: Option<RoomConfig>,
    ) -> Result<u64, EngineError> {
        if let Some(room) = room {
            room.validate()?;
        }
        let cell = self.cell(sku)?;
        self.check_storage()?;
        let hint = stripe_hint();
        self.sink.make_room(hint);
        cell.try_bump_version(|version| {
            // The bound first: a refusal records nothing.
            (self.waiting_rooms)
                .count_change(sku, room, MAX_WAITING_ROOMS)
                .map_err(|()| EngineError::TooManyWaitingRooms)?;
            // Journaled under the lock, before an order can see it.
            let change = Change::WaitingRoom { sku, version, room };
            self.record(hint, change);
            self.waiting_rooms.write(sku, room);
            Ok(version)
        })
    }

    /// `sku`'s waiting room settings (`None`: no room).
    pub fn waiting_room(&self, sku: SkuId) -> Option<RoomConfig> {
        self.waiting_rooms.get(sku)
    }

    /// Whether any SKU has a waiting room: one relaxed load.
    #[inline]
    pub fn any_waiting_room(&self) -> bool {
        self.waiting_rooms.any()
    }

    /// Puts a recovered room's settings back (recovery only: records
    /// nothing; the bound held when they were set).
    pub fn restore_waiting_room(&self, sku: SkuId, room: RoomConfig) -> Result<(), EngineError> {
        self.cell(sku)?;
        self.waiting_rooms.put(sku, Some(room));
        Ok(())
    }
}

impl<S: ChangeSink> Engine<S> {
    /// `sku`'s available and held units, as a waiting room reads them at
    /// each poll: a plain SKU's snapshot (no allocation), a kit's or a
    /// located SKU's document.
    pub fn available_and_held(&self, sku: SkuId) -> Result<(u64, u64), EngineError> {
        let cell = self.cell(sku)?;
        if cell.is_located() || self.kit_of(cell, sku).is_some() {
            let document = self.sku_document(sku)?;
            return Ok((document.available, document.held));
        }
        let snapshot = cell.snapshot();
        Ok((snapshot.available, snapshot.held))
    }
}
