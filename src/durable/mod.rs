//! Durability: the write-behind journal, the settled fold, the stores, the
//! checkpointer and recovery.
//!
//! ```text
//! data-dir/
//!   LOCK                 flock'ed while a process owns the directory
//!   hotstock.sqlite      the default store (settled counts + journal position)
//!   journal/*.hsj        journal segments after (and around) that position
//! ```
//!
//! Recovery: load the store's checkpoint, replay every journal frame after
//! its position through the same fold the writer uses (`Settled`), truncate
//! a torn tail, refuse to start on corruption or a missing segment, rebuild
//! the engine, and expire holds whose deadline passed while it was down.
//!
//! # Architecture invariant
//!
//! This layer knows the engine only through its public API and the
//! `ChangeSink` it implements for the journal (`sink.rs`); it knows nothing
//! of HTTP, JSON or the command line. Under `--cfg loom` only the lock-free
//! parts (`journal::lanes`, `journal::segment`) are compiled: no SQLite,
//! no PostgreSQL, no threads of its own.

#[cfg(not(loom))]
mod checkpoint;
#[cfg(not(loom))]
mod engine;
#[cfg(feature = "postgres")]
pub mod escrow;
pub mod event;
#[cfg(not(loom))]
pub mod feed;
pub mod journal;
#[cfg(feature = "postgres")]
pub mod lease_keeper;
#[cfg(not(loom))]
mod recovery;
#[cfg(not(loom))]
mod restore;
#[cfg(not(loom))]
pub mod settled;
#[cfg(not(loom))]
pub mod sink;
#[cfg(not(loom))]
pub mod store;

#[cfg(not(loom))]
pub use checkpoint::{CheckpointReading, CheckpointStats};
#[cfg(not(loom))]
pub use engine::{
    CloseError, DurableConfig, DurableEngine, FeedError, FeedReader, OpenError, RecoveryReport,
    StoreConfig,
};
#[cfg(not(loom))]
pub use recovery::{inspect, list_segments, salvage, Inspection, SegmentSize};
#[cfg(not(loom))]
pub use sink::JournaledEngine;
