//! The HTTP service: the only layer that knows HTTP or JSON.
//!
//! # Architecture invariant
//!
//! The server speaks to the engine through its public API and to the
//! durable layer only to wait for durability and read journal statistics.
//! It never parses command lines or configuration files (the binary does),
//! and the engine never learns that HTTP exists.

pub mod api;
pub mod connection;
pub mod listener;
pub mod order_body;
pub mod rate;
