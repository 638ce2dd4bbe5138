//! Every message of `EngineError` in one place (`write_message`), and
//! `Named`, which renders them with SKU names.

use std::fmt;

use super::*;

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
pub(super) fn write_quoted(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
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
