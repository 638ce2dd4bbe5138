//! hotstock: an in-process stock engine that never oversells.
//!
//! A flash sale puts thousands of buyers on one SKU in the same second. The
//! usual remedies (a database row with a version, a Redis key behind a Lua
//! script, a distributed lock) move the hot counter behind a network hop and
//! a serialisation point. hotstock keeps the counter in the process that
//! serves the request, spreads a hot SKU's stock over per-CPU cache lines,
//! and never takes a global lock.
//!
//! Start with [`Engine`]; `docs/architecture.md` maps the modules and the
//! invariant each one keeps.
//!
//! ```
//! use hotstock::{Engine, EngineConfig, EngineError};
//!
//! let engine = Engine::new(EngineConfig::default()).unwrap();
//! let (sku, _) = engine.put_sku("tee-black-m", 2, None, None).unwrap();
//! engine.purchase(sku, 1, None).unwrap();
//! let hold = engine.reserve(&hotstock::Order {
//!     lines: &[hotstock::Line { sku, quantity: 1 }],
//!     ..Default::default()
//! }).unwrap();
//! assert!(matches!(engine.purchase(sku, 1, None), Err(EngineError::SoldOut { available: 0, .. })));
//! engine.cancel(hold.id).unwrap();
//! assert_eq!(engine.sku_document(sku).unwrap().available, 1);
//! ```

pub mod catalogue;
pub mod cell;
pub mod clock;
#[cfg(feature = "server")]
pub mod connection;
pub mod durable;
pub mod engine;
pub mod error;
pub mod hint;
pub mod holds;
#[cfg(feature = "server")]
pub mod http;
pub mod idempotency;
pub mod journal;
pub mod ledger;
pub mod limits;
#[cfg(feature = "server")]
pub mod order_body;
#[cfg(feature = "server")]
pub mod rate;
pub mod settled;
pub mod store;
mod sync;

pub use catalogue::SkuId;
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{
    ConfigError, Engine, EngineConfig, Order, Receipt, SkuDocument, TimerReport, TimerThread,
};
pub use error::EngineError;
pub use holds::{HoldDocument, HoldStatus, Line, ReservationId};
