//! `EngineError`: the one error type of the engine's boundary.
//!
//! Each variant says what was refused and carries the numbers a caller needs
//! to act (how many units were available, what the current version is, which
//! limit was hit). Messages name SKUs by their catalogue id (`SKU #12`): the
//! hot path never clones a name to build an error; callers that know the
//! name (the HTTP layer) put it in their own messages.

use crate::core::holds::{HoldStatus, ReservationId};
use crate::core::limits::{
    MAX_CUSTOMER_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_LINES_PER_CART, MAX_LINE_QUANTITY,
    MAX_SKU_NAME_BYTES, MAX_STOCK_PER_SKU,
};
use crate::core::types::SkuId;

/// Why the engine refused an operation. A refused operation changed
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("sold out: SKU {sku} has {available} units available, {requested} requested")]
    SoldOut {
        sku: SkuId,
        available: u64,
        requested: u64,
    },

    #[error(
        "per-customer limit reached on SKU {sku}: limit {limit}, this customer already has \
         {already}, {requested} more requested"
    )]
    LimitExceeded {
        sku: SkuId,
        limit: u32,
        already: u32,
        requested: u32,
    },

    #[error("SKU {sku} has a per-customer limit: name the customer to buy it")]
    CustomerRequired { sku: SkuId },

    /// `sku` is `None` when the SKU does not exist yet (its version is 0).
    #[error("version conflict: expected version {expected}, current version is {current}; read the SKU and retry")]
    VersionConflict {
        sku: Option<SkuId>,
        expected: u64,
        current: u64,
    },

    #[error("invalid per-customer limit 0: give a limit of at least 1, or none to remove it")]
    InvalidLimit,

    #[error(
        "insufficient stock on SKU {sku}: cannot remove {requested} units, only {available} are \
         available"
    )]
    InsufficientStock {
        sku: SkuId,
        available: u64,
        requested: u64,
    },

    #[error(
        "SKU {sku} would exceed the stock limit of {MAX_STOCK_PER_SKU} units received \
         (received so far: {received})"
    )]
    StockLimit { sku: SkuId, received: u64 },

    #[error("unknown SKU {name:?}")]
    UnknownSku { name: Box<str> },

    #[error("unknown SKU id {sku}: it was not issued by this engine")]
    UnknownSkuId { sku: SkuId },

    #[error("unknown reservation {id}")]
    UnknownReservation { id: ReservationId },

    #[error("reservation {id} is {status}: it cannot be {requested}")]
    InvalidTransition {
        id: ReservationId,
        status: HoldStatus,
        requested: &'static str,
    },

    #[error("invalid quantity {quantity}: must be between 1 and {MAX_LINE_QUANTITY}")]
    InvalidQuantity { quantity: u64 },

    #[error("a cart needs at least one line")]
    EmptyCart,

    #[error("a cart has {lines} lines; at most {MAX_LINES_PER_CART} are allowed")]
    TooManyLines { lines: usize },

    #[error("SKU {sku} appears in more than one line of the cart: merge them into one line")]
    DuplicateSku { sku: SkuId },

    #[error(
        "invalid SKU name: {reason} (1 to {MAX_SKU_NAME_BYTES} bytes of letters, digits and \
         . _ - ~ :)"
    )]
    InvalidSkuName { reason: &'static str },

    #[error("invalid customer: {reason} (1 to {MAX_CUSTOMER_BYTES} bytes, no control characters)")]
    InvalidCustomer { reason: &'static str },

    #[error(
        "invalid idempotency key: {reason} (1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes of printable \
         ASCII)"
    )]
    InvalidIdempotencyKey { reason: &'static str },

    #[error("invalid hold time-to-live {ttl_ms} ms: must be between 1 ms and {max_ms} ms")]
    InvalidTtl { ttl_ms: u64, max_ms: u64 },

    #[error(
        "idempotency key was already used for a different request: use a new key for a new \
         request"
    )]
    IdempotencyKeyReused,

    #[error("storage failed, changes are refused until a restart recovers from disk: {message}")]
    StorageFailed { message: Box<str> },

    #[error("capacity exceeded: {what} (limit {limit}); retry later or raise the limit")]
    CapacityExceeded { what: &'static str, limit: u64 },
}
