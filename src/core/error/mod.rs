//! `EngineError`: the one error type of the engine's boundary.
//!
//! Each variant says what was refused and carries the numbers a caller needs
//! to act (how many units were available, what the current version is, which
//! limit was hit). The hot path never clones a name to build an error:
//! `Display` names SKUs by their catalogue id (`SKU #12`), and
//! [`EngineError::named`] renders the same message with SKU names from a
//! lookup the caller supplies (the HTTP layer reads names lock-free with
//! `Engine::sku_name`). One message text per variant, in `write_message`.

use crate::core::engine::SaleWindow;
use crate::core::holds::{HoldStatus, ReservationId};
use crate::core::limits::{
    MAX_CUSTOMER_CHARS, MAX_IDEMPOTENCY_KEY_BYTES, MAX_KIT_COMPONENTS, MAX_LINES_PER_CART,
    MAX_LINE_QUANTITY, MAX_LOCATIONS_PER_SKU, MAX_PER_CUSTOMER_LIMIT, MAX_SKU_NAME_BYTES,
    MAX_STOCK_PER_SKU, MAX_TIME_MS, MAX_WAITING_ROOMS,
};
use crate::core::types::SkuId;

/// Which cap refused an extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionLimit {
    /// `EngineConfig::max_extensions`.
    Count,
    /// `EngineConfig::max_hold_ms` after the hold was made.
    HoldTime,
}

/// Why a kit definition or an operation on a kit was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KitRefusal {
    /// The name is a SKU with stock of its own: it cannot become a kit.
    HasStock,
    /// A component is a kit (kits do not nest).
    ComponentIsAKit,
    /// A change of stock or limits, or a record-less sale, named a kit.
    IsAKit,
    /// A kit definition named this component twice.
    NamedTwice,
    /// A component keeps its stock at locations (a kit's components are
    /// SKUs with stock of their own).
    ComponentHasLocations,
}

/// Why an operation on a SKU's locations, or on a SKU kept at locations,
/// was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationRefusal {
    /// The SKU was created with stock of its own (or is a kit): it cannot
    /// get locations.
    NotLocated,
    /// A change of stock, limits, threshold or backorders, or a
    /// record-less sale with no location, named a SKU kept at locations.
    StockAtLocations,
    /// It has `MAX_LOCATIONS_PER_SKU` locations already.
    TooManyLocations,
}

/// Why a step of a lease from the escrow was refused (the node's lease
/// keeper makes these steps; a refusal is a bug or a data directory that
/// does not match the escrow, never a buyer's doing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRefusal {
    /// The lease id is empty, too long or has a character outside
    /// `A-Z a-z 0-9 . _ - ~ :`.
    InvalidId,
    /// A lease of this id is in the book already.
    AlreadyBooked,
    /// No open lease of this id is in the book.
    Unknown,
    /// The lease is not returning: only a lease whose units were given
    /// back can be closed.
    NotReturning,
    /// The node keeps `MAX_OPEN_LEASES` open, or the SKU
    /// `MAX_OPEN_LEASES_PER_SKU`.
    TooManyLeases,
    /// A lease of no units, or of more than one SKU may hold.
    InvalidUnits,
    /// The SKU is a kit or keeps its stock at locations: only SKUs with
    /// stock of their own are leased.
    NotPlain,
}

/// Why the engine refused an operation. A refused operation changed
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    SoldOut {
        sku: SkuId,
        available: u64,
        requested: u64,
    },

    LimitExceeded {
        sku: SkuId,
        limit: u32,
        already: u32,
        requested: u32,
    },

    CustomerRequired {
        sku: SkuId,
    },

    /// `sku` is `None` when the SKU does not exist yet (its version is 0).
    VersionConflict {
        sku: Option<SkuId>,
        expected: u64,
        current: u64,
    },

    InvalidLimit,

    /// A low-stock threshold of 0.
    InvalidThreshold,

    InsufficientStock {
        sku: SkuId,
        available: u64,
        requested: u64,
    },

    StockLimit {
        sku: SkuId,
        received: u64,
    },

    /// A put would leave fewer units on hand than are committed: `held`
    /// for buyers plus the `safety_stock` kept back. `sku` is `None` when
    /// the SKU does not exist yet (nothing is held).
    BelowCommitted {
        sku: Option<SkuId>,
        on_hand: u64,
        held: u64,
        safety_stock: u64,
    },

    /// A safety stock past `MAX_STOCK_PER_SKU`.
    InvalidSafetyStock {
        safety_stock: u64,
    },

    /// A backorder limit past `MAX_STOCK_PER_SKU`.
    InvalidBackorderLimit {
        limit: u64,
    },

    /// A backorder end time past `MAX_TIME_MS` (stores keep it as a signed
    /// 64-bit number).
    InvalidBackorderEnd {
        until_ms: u64,
    },

    /// A sale window ending before it starts, or past `MAX_TIME_MS`.
    InvalidSaleWindow {
        window: SaleWindow,
    },

    /// A waiting room's settings outside their limits (`reason` says which).
    InvalidWaitingRoom {
        reason: &'static str,
    },

    /// More SKUs with a waiting room than `MAX_WAITING_ROOMS`.
    TooManyWaitingRooms,

    /// The SKU is not on sale at `now_ms`: its window has not started
    /// (`not_yet`) or has ended. The window itself is the engine's to read
    /// (`Engine::sale_window`): carried here it made this error, returned
    /// on every purchase path, 48 bytes instead of 40, and a 3-line cart
    /// 31 instructions dearer (callgrind).
    NotOnSale {
        sku: SkuId,
        now_ms: u64,
        not_yet: bool,
    },

    /// A kit of no components, or of more than `MAX_KIT_COMPONENTS`.
    InvalidKit {
        components: usize,
    },

    KitRefused {
        sku: SkuId,
        reason: KitRefusal,
    },

    LocationRefused {
        sku: SkuId,
        reason: LocationRefusal,
    },

    /// A location name that is empty, too long or has a character outside
    /// the SKU-name set (the SKU and location names together must fit
    /// `MAX_SKU_NAME_BYTES`).
    InvalidLocationName {
        reason: &'static str,
    },

    UnknownLocation {
        sku: SkuId,
        location: Box<str>,
    },

    /// A location's put named a per-customer limit: none is kept for SKUs
    /// with locations.
    LimitAtLocation,

    /// No one location has the units a line asks for, though its SKU's
    /// locations together have: the line may ask to be split.
    NotAtOneLocation {
        sku: SkuId,
        requested: u64,
        most_at_one: u64,
        total: u64,
    },

    UnknownSku {
        name: Box<str>,
    },

    UnknownSkuId {
        sku: SkuId,
    },

    UnknownReservation {
        id: ReservationId,
    },

    InvalidTransition {
        id: ReservationId,
        status: HoldStatus,
        requested: &'static str,
    },

    InvalidQuantity {
        quantity: u64,
    },

    EmptyCart,

    TooManyLines {
        lines: usize,
    },

    DuplicateSku {
        sku: SkuId,
    },

    InvalidSkuName {
        reason: &'static str,
    },

    InvalidCustomer {
        reason: &'static str,
    },

    InvalidIdempotencyKey {
        reason: &'static str,
    },

    InvalidTtl {
        ttl_ms: u64,
        max_ms: u64,
    },

    IdempotencyKeyReused,

    /// A partial confirm or refund asked `sku`'s line for more units than
    /// it can give: held units for a confirm, sold units not yet refunded
    /// for a refund.
    ExceedsReservation {
        id: ReservationId,
        sku: SkuId,
        requested: u32,
        allowed: u32,
        action: &'static str,
    },

    /// A partial confirm or refund names a SKU the reservation has no
    /// line of.
    NotInReservation {
        id: ReservationId,
        sku: SkuId,
    },

    /// A partial confirm or refund of no unit at all.
    NothingRequested {
        action: &'static str,
    },

    /// An extension was refused: the hold was extended `max` times
    /// already, or its deadline is already the latest its total hold time
    /// allows (`latest_ms`).
    ExtensionRefused {
        id: ReservationId,
        extensions: u8,
        max: u8,
        deadline_ms: u64,
        reason: ExtensionLimit,
    },

    LeaseRefused {
        lease: Box<str>,
        reason: LeaseRefusal,
    },

    StorageFailed {
        message: Box<str>,
    },

    CapacityExceeded {
        what: &'static str,
        limit: u64,
    },
}

mod message;
pub use message::Named;

#[cfg(test)]
mod quoting_tests;
