//! The HTTP service: the only layer that knows HTTP or JSON.
//!
//! ```text
//! connection.rs   one HTTP/1.1 connection (hyper), slow-head and idle guard
//! listener.rs     the accept loop, until one shutdown future resolves
//! api.rs          Api: admission, routing (route.rs), dispatch, durable ack
//! route.rs        Route: the one enum dispatch and metrics labels share
//! error.rs        ApiError and Code: the boundary's one error type
//! admission.rs    in-flight cap (per CPU) and the optional token buckets
//! rate.rs         RateLimit: GCRA token bucket
//! auth.rs         roles: operator token, service tokens, buyer JWTs
//! cluster.rs      a node of a cluster: operator stock to the escrow, GET /v1/cluster
//! forward.rs      a cluster's routing: the owner of a request, forwarding to it
//! events.rs       the change feed: GET /v1/events (long-poll), /v1/events/stream (SSE)
//! skus.rs         SKU handlers
//! reservations.rs reservation handlers (the purchase path)
//! batch.rs        POST /v1/reservations/batch: up to 1,000 orders, one durable wait
//! queue.rs        waiting rooms: join, poll, the admission an order presents
//! ui.rs           the operator's live sale page (/ui), its files embedded
//! body.rs         bounded body reads; parse_order (scanner, then fields)
//! order_body.rs   the one-pass scanner for the usual order body
//! response.rs     JSON documents; a new reservation written straight to bytes
//! metrics.rs      per-CPU request counters; /metrics via prometheus-client
//! nats/           the JetStream publisher of the feed (its own small NATS client)
//! ```
//!
//! # Architecture invariant
//!
//! The server speaks to the engine through its public API and to the
//! durable layer only to wait for durability and read journal statistics.
//! It never parses command lines or configuration files (the binary does),
//! and the engine never learns that HTTP exists.

pub mod admission;
pub mod api;
pub mod auth;
pub mod batch;
pub mod body;
pub mod cluster;
pub mod connection;
pub mod error;
pub mod events;
pub mod forward;
pub mod listener;
pub mod metrics;
pub mod nats;
pub mod order_body;
pub mod queue;
pub mod rate;
pub mod reservations;
pub mod response;
pub mod route;
pub mod skus;
#[cfg(test)]
mod tests;
pub mod ui;
