//! The engine: stock cells, the catalogue, reservations, customer limits,
//! idempotency keys, and `Engine`, which composes them.
//!
//! # Architecture invariant
//!
//! Nothing here does I/O, knows serde or JSON, or names the journal. Every
//! change is reported to a [`change::ChangeSink`] as a typed
//! [`change::Change`], *under the lock that publishes it* (or before the
//! change becomes visible at all), so whatever records changes sees them
//! in an order no reader can contradict. The sink is a type parameter of
//! `Engine`: static dispatch, no `dyn` call per sale. Under `--cfg loom`
//! this layer's atomics and locks come from loom (`sync.rs`).

pub mod catalogue;
pub mod cell;
pub mod change;
pub mod clock;
pub mod engine;
pub mod error;
pub mod fingerprint;
pub mod hint;
pub mod holds;
pub mod idempotency;
pub mod kit_table;
pub mod ledger;
pub mod limits;
pub mod public_id;
pub(crate) mod sync;
pub mod timers;
pub mod types;
pub mod waiting_room;

pub use types::{HoldStatus, Line, ReservationId, SkuId};
