//! What the loom models in `loom-tests/` need of the internals, in one
//! place. Compiled only under `--cfg loom`; nothing here is API.

pub use crate::core::cell::{SoldOut, StockCell, StockLevel, StripePolicy, TakeInto};
pub use crate::core::fingerprint::Fingerprint;
pub use crate::core::holds::{
    ExtendError, ExtendRule, HoldTable, NewHold, Retention, Settle, Transition, TransitionError,
};
pub use crate::core::idempotency::{IdempotencyTable, Origin};
pub use crate::core::ledger::{LimitLedger, OverLimit};
pub use crate::core::types::{HoldStatus, Line, ReservationId, SkuId};
pub use crate::durable::journal::lanes::Lanes;
