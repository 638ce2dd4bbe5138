//! A node of a cluster as the HTTP layer sees it (#15): an operator's
//! units go to the escrow (the stock of record every node leases from),
//! not to this node's counters, and `GET /v1/cluster` shows the node, its
//! peers, its leases and the escrow's reachability.
//!
//! # Why operator stock goes to the escrow
//!
//! Units put straight into one node's counters would be sold by that node
//! only, and no other node, nor the escrow's books, would know them. So in
//! a cluster a positive adjust receives the units in the escrow (any node
//! accepts it), and the lease keepers spread them as nodes sell; a
//! negative one withdraws units the escrow has not leased (those a node
//! holds are its buyers'); an absolute put of stock, which no one node can
//! make true for the whole cluster, is refused with a clear error.

use serde_json::{json, Value};

/// What the handlers ask of a cluster. Implemented over the lease keeper
/// and the escrow (`EscrowCluster`); the handlers know only this.
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// This node's id.
    fn node(&self) -> &str;

    /// `delta` units of `sku` received (above 0) into or withdrawn (below
    /// 0) from the stock of record; with `key`, at most once per key
    /// (`Ok(false)`: an earlier change with the key made it). A withdrawal
    /// takes unleased units only. Blocks on the database: call it from a
    /// blocking thread.
    fn change(&self, sku: &str, delta: i64, key: Option<&str>) -> Result<bool, EscrowRefusal>;

    /// Sets (`Some`) or removes (`None`) the per-customer limit of `sku` in
    /// the escrow, for every node to apply. Blocks on the database.
    fn set_limit(&self, sku: &str, limit: Option<u32>) -> Result<(), String>;

    /// The other nodes: `(id, HOST:PORT)`.
    fn peers(&self) -> &[(String, String)];

    /// `GET /v1/cluster`'s body.
    fn view(&self) -> Value;

    /// The cluster's part of a SKU's document: the whole cluster's
    /// `available` (unleased plus every node's), `unleased`, and per node
    /// its leased, available, held and sold units. This node's figures
    /// are `own` (live); the others' are as they last reported them.
    fn sku_view(&self, sku: &str, own: OwnFigures) -> Value;
}

/// Why the escrow did not take an operator's change.
#[derive(Debug)]
pub enum EscrowRefusal {
    /// The idempotency key named another change (409).
    KeyReused(String),
    /// A withdrawal of more than is unleased (409): the nodes hold the
    /// rest, and were asked to give some back.
    TooFewUnleased {
        why: String,
        unleased: u64,
        requested: u64,
    },
    /// A withdrawal from a SKU the escrow does not know (404).
    UnknownSku(String),
    /// The escrow could not be reached, or failed (503): nothing changed.
    Failed(String),
}

/// This node's live figures of one SKU.
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnFigures {
    pub leased: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
}

/// The body of `GET /v1/cluster` on a node that runs alone.
pub fn alone() -> Value {
    json!({"node": null, "escrow": null, "peers": [], "leases": []})
}

#[cfg(feature = "postgres")]
pub use escrow_cluster::EscrowCluster;

#[cfg(feature = "postgres")]
mod escrow_cluster {
    use super::*;
    use std::sync::Arc;

    use crate::durable::escrow::{Escrow, EscrowError};
    use crate::durable::lease_keeper::{KeeperConfig, KeeperError, LeaseKeeper, Settlement};
    use crate::durable::JournaledEngine;
    use parking_lot::Mutex;

    /// A node of a cluster: its lease keeper, and a connection of its own
    /// for operators' receives (so they never wait behind a refill).
    pub struct EscrowCluster {
        engine: Arc<JournaledEngine>,
        config: KeeperConfig,
        peers: Vec<(String, String)>,
        keeper: Mutex<Option<LeaseKeeper>>,
        /// `None` after a failure: connected again at the next receive.
        receives: Mutex<Option<Escrow>>,
    }

    impl EscrowCluster {
        /// Starts the lease keeper (settling this node's leases first).
        pub fn start(
            engine: Arc<JournaledEngine>,
            config: KeeperConfig,
            peers: Vec<(String, String)>,
            boot: u32,
        ) -> Result<(EscrowCluster, Settlement), KeeperError> {
            let (keeper, settlement) =
                LeaseKeeper::start(Arc::clone(&engine), config.clone(), boot)?;
            let cluster = EscrowCluster {
                engine,
                config,
                peers,
                keeper: Mutex::new(Some(keeper)),
                receives: Mutex::new(None),
            };
            Ok((cluster, settlement))
        }

        /// `work` on the operators' connection (made again after a
        /// database failure; a refusal keeps it).
        fn with_escrow<T>(
            &self,
            work: impl FnOnce(&mut Escrow) -> Result<T, EscrowError>,
        ) -> Result<T, EscrowError> {
            let mut operators = self.receives.lock();
            let escrow = match operators.as_mut() {
                Some(escrow) => escrow,
                None => operators.insert(Escrow::connect(
                    &self.config.escrow_url,
                    &self.config.schema,
                )?),
            };
            let done = work(escrow);
            if let Err(EscrowError::Database { .. }) = done {
                *operators = None;
            }
            done
        }

        /// Stops the keeper: every unsold leased unit goes back to the
        /// escrow. Returns the units given back (0 if already stopped).
        pub fn stop(&self) -> Result<u64, KeeperError> {
            match self.keeper.lock().take() {
                Some(keeper) => keeper.stop(),
                None => Ok(0),
            }
        }
    }

    impl std::fmt::Debug for EscrowCluster {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("EscrowCluster")
                .field("node", &self.config.node)
                .finish_non_exhaustive()
        }
    }

    impl Cluster for EscrowCluster {
        fn node(&self) -> &str {
            &self.config.node
        }

        fn change(&self, sku: &str, delta: i64, key: Option<&str>) -> Result<bool, EscrowRefusal> {
            let units = delta.unsigned_abs();
            let changed = self.with_escrow(|escrow| match (key, delta > 0) {
                (Some(key), true) => escrow.receive_once(sku, units, key),
                (Some(key), false) => escrow.withdraw_once(sku, units, key),
                (None, true) => escrow.receive(sku, units).map(|()| true),
                (None, false) => escrow.withdraw(sku, units).map(|()| true),
            });
            changed.map_err(|error| match error {
                EscrowError::ReceiveKeyReused { .. } => EscrowRefusal::KeyReused(error.to_string()),
                EscrowError::TooFewUnleased {
                    unleased,
                    requested,
                    ..
                } => EscrowRefusal::TooFewUnleased {
                    why: error.to_string(),
                    unleased,
                    requested,
                },
                EscrowError::UnknownSku { .. } => EscrowRefusal::UnknownSku(error.to_string()),
                other => EscrowRefusal::Failed(other.to_string()),
            })
        }

        fn set_limit(&self, sku: &str, limit: Option<u32>) -> Result<(), String> {
            self.with_escrow(|escrow| escrow.set_limit(sku, limit))
                .map_err(|e| e.to_string())
        }

        fn peers(&self) -> &[(String, String)] {
            &self.peers
        }

        fn view(&self) -> Value {
            let status = self.keeper.lock().as_ref().map(LeaseKeeper::status);
            let status = status.unwrap_or_default();
            let leases: Vec<Value> = (self.engine.leases().iter())
                .map(|lease| {
                    json!({
                        "lease": &*lease.id,
                        "sku": self.engine.sku_name(lease.sku),
                        "granted": lease.granted,
                        "returning": lease.returning,
                    })
                })
                .collect();
            let peers: Vec<Value> = (self.peers.iter())
                .map(|(node, address)| json!({"node": node, "address": address}))
                .collect();
            let unleased: serde_json::Map<String, Value> = (status.unleased.iter())
                .map(|(sku, units)| (sku.clone(), json!(units)))
                .collect();
            json!({
                "node": self.config.node,
                "escrow": {
                    "reachable": status.escrow_reachable,
                    "last_error": status.last_error,
                    "statements": status.statements,
                    "active_nodes": status.active_nodes,
                    "unleased": unleased,
                },
                "refills": {
                    "grants": status.grants,
                    "units_granted": status.units_granted,
                    "returns": status.returns,
                    "units_returned": status.units_returned,
                    "longest_wait_ms": status.longest_refill_wait_ms,
                },
                "peers": peers,
                "leases": leases,
            })
        }

        fn sku_view(&self, sku: &str, own: OwnFigures) -> Value {
            let status = self.keeper.lock().as_ref().map(LeaseKeeper::status);
            let status = status.unwrap_or_default();
            let unleased = (status.unleased.iter())
                .find(|(name, _)| name == sku)
                .map_or(0, |(_, units)| *units);
            let me = &self.config.node;
            let mut nodes = vec![json!({
                "node": me, "leased": own.leased, "available": own.available,
                "held": own.held, "sold": own.sold,
            })];
            let mut available = unleased + own.available;
            let peers = (status.node_skus.iter()).filter(|n| n.sku == sku && n.node != *me);
            for peer in peers {
                available += peer.available;
                nodes.push(json!({
                    "node": peer.node, "leased": peer.leased, "available": peer.available,
                    "held": peer.held, "sold": peer.sold, "reported_ms": peer.seen_ms,
                }));
            }
            json!({"node": me, "available": available, "unleased": unleased, "nodes": nodes})
        }
    }
}
