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
//! The crate is three layers, and imports run one way only:
//!
//! - [`core`]: the engine. No I/O, no serde, no journal: it reports every
//!   change to a [`ChangeSink`] under the lock that publishes the change.
//! - [`durable`]: the journal, the settled fold, the stores, the
//!   checkpointer and recovery. It implements `ChangeSink` for the journal.
//! - `server` (feature `server`): HTTP and JSON, over a durable engine.
//!
//! The `hotstock` binary (`src/bin/hotstock/`) is the only code that knows
//! the command line and the configuration file. `tests/layers.rs` fails when
//! a layer imports one above it.
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

pub mod core;
pub mod durable;
#[cfg(feature = "server")]
pub mod server;

#[cfg(loom)]
pub mod models;

pub use crate::core::cell::BackorderRule;
pub use crate::core::change::{Change, ChangeSink, InMemory, LeaseStep};
pub use crate::core::clock::{Clock, ManualClock, SystemClock};
pub use crate::core::engine::{
    BookedLease, ConfigError, Engine, EngineConfig, Extension, LeaseReturn, LocationChange,
    LocationDocument, LocationPut, Order, Receipt, SaleWindow, SkuDocument, SkuPut, StockLevel,
    TimerReport,
};
pub use crate::core::error::{
    EngineError, ExtensionLimit, KitRefusal, LeaseRefusal, LocationRefusal,
};
pub use crate::core::holds::HoldDocument;
pub use crate::core::timers::TimerThread;
pub use crate::core::types::{HoldStatus, Line, Location, ReservationId, SkuId};
pub use crate::core::waiting_room::RoomConfig;
