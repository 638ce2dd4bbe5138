//! `EngineError`: the one error type of the engine's boundary.
//!
//! Each variant says what was refused and carries the numbers a caller needs
//! to act (how many units were available, what the current version is, which
//! limit was hit). The hot path never clones a name to build an error:
//! `Display` names SKUs by their catalogue id (`SKU #12`), and
//! [`EngineError::named`] renders the same message with SKU names from a
//! lookup the caller supplies (the HTTP layer reads names lock-free with
//! `Engine::sku_name`). One message text per variant, in `write_message`.

use std::fmt;

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

fn write_lease_refusal(
    f: &mut fmt::Formatter<'_>,
    lease: &str,
    reason: LeaseRefusal,
) -> fmt::Result {
    write!(f, "lease {lease:?} refused: ")?;
    f.write_str(match reason {
        LeaseRefusal::InvalidId => "a lease id is 1 to 128 bytes of A-Z a-z 0-9 . _ - ~ :",
        LeaseRefusal::AlreadyBooked => "a lease of this id is booked already",
        LeaseRefusal::Unknown => "no open lease of this id is booked on this node",
        LeaseRefusal::NotReturning => "its units were not given back, so it cannot be closed",
        LeaseRefusal::TooManyLeases => "this node keeps the most leases it may (return some first)",
        LeaseRefusal::InvalidUnits => {
            "a lease grants at least 1 unit, and no more than a SKU may hold"
        }
        LeaseRefusal::NotPlain => {
            "only a SKU with stock of its own is leased (not a kit, not one kept at locations)"
        }
    })
}

impl EngineError {
    /// The message, naming SKUs by `name` (their id where it has none).
    pub fn named<'e, 'n, F>(&'e self, name: F) -> Named<'e, 'n, F>
    where
        F: Fn(SkuId) -> Option<&'n str>,
    {
        Named {
            error: self,
            name,
            names: std::marker::PhantomData,
        }
    }

    // Long by design: one arm per variant, so every message lives in one
    // place (a split would scatter the contract's texts).
    fn write_message(
        &self,
        f: &mut fmt::Formatter<'_>,
        sku: &dyn Fn(&mut fmt::Formatter<'_>, SkuId) -> fmt::Result,
    ) -> fmt::Result {
        use EngineError::*;
        match self {
            SoldOut {
                sku: id,
                available,
                requested,
            } => {
                f.write_str("sold out: SKU ")?;
                sku(f, *id)?;
                write!(f, " has {available} units available, {requested} requested")
            }
            LimitExceeded {
                sku: id,
                limit,
                already,
                requested,
            } => {
                f.write_str("per-customer limit reached on SKU ")?;
                sku(f, *id)?;
                write!(
                    f,
                    ": limit {limit}, this customer already has {already}, {requested} more \
                     requested"
                )
            }
            CustomerRequired { sku: id } => {
                f.write_str("SKU ")?;
                sku(f, *id)?;
                f.write_str(" has a per-customer limit: name the customer to buy it")
            }
            VersionConflict {
                expected, current, ..
            } => write!(
                f,
                "version conflict: expected version {expected}, current version is {current}; \
                 read the SKU and retry"
            ),
            InvalidLimit => write!(
                f,
                "invalid per-customer limit: give a limit from 1 to {MAX_PER_CUSTOMER_LIMIT}, or \
                 none to remove it"
            ),
            InvalidThreshold => f.write_str(
                "invalid low-stock threshold 0: give a number of units of at least 1, or none to remove it",
            ),
            InsufficientStock {
                sku: id,
                available,
                requested,
            } => {
                f.write_str("insufficient stock on SKU ")?;
                sku(f, *id)?;
                write!(
                    f,
                    ": cannot remove {requested} units, only {available} are available"
                )
            }
            StockLimit { sku: id, received } => {
                f.write_str("SKU ")?;
                sku(f, *id)?;
                write!(
                    f,
                    " would exceed the stock limit of {MAX_STOCK_PER_SKU} units received \
                     (received so far: {received})"
                )
            }
            BelowCommitted {
                sku: id,
                on_hand,
                held,
                safety_stock,
            } => {
                match id {
                    Some(id) => {
                        f.write_str("SKU ")?;
                        sku(f, *id)?;
                    }
                    None => f.write_str("a new SKU")?,
                }
                write!(
                    f,
                    " cannot have {on_hand} units on hand: {held} are held for buyers and                      {safety_stock} are kept back as safety stock; lower the safety stock in the                      same request, or set on_hand again once holds have ended"
                )
            }
            InvalidKit { components } => write!(
                f,
                "a kit has {components} components; give 1 to {MAX_KIT_COMPONENTS}"
            ),
            KitRefused { sku: id, reason } => {
                f.write_str("SKU ")?;
                sku(f, *id)?;
                f.write_str(match reason {
                    KitRefusal::HasStock => {
                        " has stock of its own, so it cannot be a kit: give the kit a new name"
                    }
                    KitRefusal::ComponentIsAKit => {
                        " is a kit, and a kit's components are SKUs with stock of their own"
                    }
                    KitRefusal::IsAKit => {
                        " is a kit: it has no stock or limit of its own (change its components'), \
                         and it is sold through a reservation"
                    }
                    KitRefusal::NamedTwice => {
                        " is named twice in the kit: give each component once, with its units \
                         per kit"
                    }
                    KitRefusal::ComponentHasLocations => {
                        " keeps its stock at locations, and a kit's components are SKUs with \
                         stock of their own"
                    }
                })
            }
            LeaseRefused { lease, reason } => write_lease_refusal(f, lease, *reason),
            LocationRefused { sku: id, reason } => {
                f.write_str("SKU ")?;
                sku(f, *id)?;
                match reason {
                    LocationRefusal::NotLocated => f.write_str(
                        " was created with stock of its own (or is a kit), so it has no \
                         locations: give the SKU kept at locations a new name (its first \
                         location creates it)",
                    ),
                    LocationRefusal::StockAtLocations => f.write_str(
                        " keeps its stock at locations: change a location's stock \
                         (PUT /v1/skus/{sku}/locations/{location}); limits, thresholds and \
                         backorders are not kept for SKUs with locations",
                    ),
                    LocationRefusal::TooManyLocations => write!(
                        f,
                        " has {MAX_LOCATIONS_PER_SKU} locations, the most a SKU may have"
                    ),
                }
            }
            InvalidLocationName { reason } => write!(
                f,
                "invalid location name: {reason} (1 to {MAX_SKU_NAME_BYTES} bytes with the \
                 SKU's name, of A-Z a-z 0-9 . _ - ~ :)"
            ),
            LimitAtLocation => f.write_str(
                "a SKU kept at locations has no per-customer limit: leave the limit out of a \
                 location's put",
            ),
            UnknownLocation { sku: id, location } => {
                f.write_str("SKU ")?;
                sku(f, *id)?;
                write!(f, " has no location {location:?}")
            }
            NotAtOneLocation {
                sku: id,
                requested,
                most_at_one,
                total,
            } => {
                f.write_str("no one location of SKU ")?;
                sku(f, *id)?;
                write!(
                    f,
                    " has {requested} units (the most at one is {most_at_one}; {total} across \
                     its locations): send \"split\": true on the line to take them from several"
                )
            }
            InvalidBackorderLimit { limit } => write!(
                f,
                "invalid backorder limit {limit}: at most {MAX_STOCK_PER_SKU} units"
            ),
            InvalidBackorderEnd { until_ms } => write!(
                f,
                "invalid backorder end {until_ms}: at most {MAX_TIME_MS} ms since the epoch"
            ),
            InvalidSafetyStock { safety_stock } => write!(
                f,
                "invalid safety stock {safety_stock}: at most {MAX_STOCK_PER_SKU} units"
            ),
            InvalidSaleWindow { window } => write!(
                f,
                "invalid sale window {}: the end must come after the start, both at most \
                 {MAX_TIME_MS} ms since the epoch",
                show_window(window)
            ),
            InvalidWaitingRoom { reason } => write!(f, "invalid waiting room: {reason}"),
            TooManyWaitingRooms => write!(
                f,
                "at most {MAX_WAITING_ROOMS} SKUs may have a waiting room at once: turn one off first"
            ),
            NotOnSale {
                sku: id,
                now_ms,
                not_yet,
            } => {
                f.write_str("SKU ")?;
                sku(f, *id)?;
                let when = match not_yet {
                    true => "is not on sale yet",
                    false => "is no longer on sale",
                };
                write!(f, " {when} (at {now_ms} ms since the epoch: see its sale window)")
            }
            UnknownSku { name } => write!(f, "unknown SKU {name:?}"),
            UnknownSkuId { sku } => {
                write!(f, "unknown SKU id {sku}: it was not issued by this engine")
            }
            UnknownReservation { id } => write!(f, "unknown reservation {id}"),
            InvalidTransition {
                id,
                status,
                requested,
            } => write!(f, "reservation {id} is {status}: it cannot be {requested}"),
            InvalidQuantity { quantity } => write!(
                f,
                "invalid quantity {quantity}: must be between 1 and {MAX_LINE_QUANTITY}"
            ),
            EmptyCart => f.write_str("a cart needs at least one line"),
            TooManyLines { lines } => write!(
                f,
                "a cart has {lines} lines; at most {MAX_LINES_PER_CART} are allowed"
            ),
            DuplicateSku { sku: id } => {
                f.write_str("SKU ")?;
                sku(f, *id)?;
                f.write_str(" appears in more than one line of the cart: merge them into one line")
            }
            InvalidSkuName { reason } => write!(
                f,
                "invalid SKU name: {reason} (1 to {MAX_SKU_NAME_BYTES} bytes of letters, digits \
                 and . _ - ~ :)"
            ),
            InvalidCustomer { reason } => write!(
                f,
                "invalid customer: {reason} (1 to {MAX_CUSTOMER_CHARS} characters, no control \
                 characters)"
            ),
            InvalidIdempotencyKey { reason } => write!(
                f,
                "invalid idempotency key: {reason} (1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes of \
                 printable ASCII)"
            ),
            InvalidTtl { ttl_ms, max_ms } => write!(
                f,
                "invalid hold time-to-live {ttl_ms} ms: must be between 1 ms and {max_ms} ms"
            ),
            ExtensionRefused {
                id,
                extensions,
                max,
                deadline_ms,
                reason: ExtensionLimit::Count,
            } => write!(
                f,
                "reservation {id} was extended {extensions} times, the most allowed is {max}; it \
                 expires at {deadline_ms} ms: confirm or cancel it by then"
            ),
            ExtensionRefused {
                id,
                deadline_ms,
                reason: ExtensionLimit::HoldTime,
                ..
            } => write!(
                f,
                "reservation {id} already expires at {deadline_ms} ms, the latest its total hold \
                 time allows: confirm or cancel it by then"
            ),
            ExceedsReservation {
                id,
                sku: line,
                requested,
                allowed,
                action,
            } => {
                write!(f, "reservation {id} cannot have {requested} units of SKU ")?;
                sku(f, *line)?;
                write!(f, " {action}: at most {allowed} can be")
            }
            NotInReservation { id, sku: line } => {
                write!(f, "reservation {id} has no line of SKU ")?;
                sku(f, *line)?;
                f.write_str(": name only the SKUs it holds")
            }
            NothingRequested { action: "confirmed" } => f.write_str(
                "a confirm of no unit at all: confirm at least one unit, or cancel the reservation",
            ),
            NothingRequested { action } => {
                write!(f, "nothing to be {action}: name at least one unit")
            }
            IdempotencyKeyReused => f.write_str(
                "idempotency key was already used for a different request: use a new key for a \
                 new request",
            ),
            StorageFailed { message } => write!(
                f,
                "storage failed, changes are refused until a restart recovers from disk: {message}"
            ),
            CapacityExceeded { what, limit } => write!(
                f,
                "capacity exceeded: {what} (limit {limit}); retry later or raise the limit"
            ),
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_message(f, &|f, sku| write!(f, "{sku}"))
    }
}

impl std::error::Error for EngineError {}

/// An error's message with SKU names (see `EngineError::named`).
pub struct Named<'e, 'n, F> {
    error: &'e EngineError,
    name: F,
    names: std::marker::PhantomData<&'n str>,
}

impl<'n, F: Fn(SkuId) -> Option<&'n str>> fmt::Display for Named<'_, 'n, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error
            .write_message(f, &|f, sku| match (self.name)(sku) {
                Some(name) => write_quoted(f, name),
                None => write!(f, "{sku}"),
            })
    }
}

/// `name` as `{name:?}` writes it. SKU names are plain ASCII (see
/// `validate_sku_name`), which `Debug` writes as is between quotes; doing
/// so in one piece spares a refusal's message `Debug`'s walk char by char.
fn write_quoted(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    let plain = |b: u8| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\');
    if name.bytes().all(plain) {
        f.write_str("\"")?;
        f.write_str(name)?;
        f.write_str("\"")
    } else {
        write!(f, "{name:?}")
    }
}

/// A window as a person reads it: `[starts, ends)` in ms since the epoch.
fn show_window(window: &SaleWindow) -> String {
    let bound = |ms: Option<u64>| ms.map_or_else(|| "open".to_owned(), |ms| ms.to_string());
    format!(
        "[{}, {}) ms since the epoch",
        bound(window.starts_at_ms),
        bound(window.ends_at_ms)
    )
}

#[cfg(test)]
mod quoting_tests {
    use proptest::prelude::*;

    struct Quoted<'a>(&'a str);

    impl std::fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            super::write_quoted(f, self.0)
        }
    }

    proptest! {
        /// The one-piece quoting writes what `Debug` writes, for SKU
        /// names and for any text at all.
        #[test]
        fn quoting_a_name_writes_what_debug_writes(
            name in prop_oneof!["[A-Za-z0-9._~:-]{1,40}", ".{0,24}", "[ -~]{0,24}"],
        ) {
            prop_assert_eq!(Quoted(&name).to_string(), format!("{name:?}"));
        }
    }
}
