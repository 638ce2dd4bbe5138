//! The lease keeper (#15): the node's side of the escrow. It keeps the
//! node stocked from the stock of record, gives back what the node does
//! not sell, and settles the node's leases from its own journal.
//!
//! # Why it runs beside the buyers, never in front of them
//!
//! Buyers take units from the engine at memory speed; the keeper watches
//! each SKU's local count and asks the escrow for a lease *before* it runs
//! dry (below half of the next lease's size), on its own thread and its
//! own database connection. So while stock is plentiful no buyer waits on
//! the database, and a database that is down only stops refills: the node
//! goes on selling what it holds.
//!
//! # The order of each step (what makes a crash safe)
//!
//! - **Grant**: the escrow grants first (the lease id, chosen here, is its
//!   idempotency key), then the engine books the lease and credits its
//!   units, journaled before they can be sold. A crash in between leaves a
//!   lease the journal never saw: it sold nothing, so `settle_on_start`
//!   closes it with everything back.
//! - **Return**: the engine withdraws the units and marks the leases
//!   returning, and the keeper waits until the journal has that durably;
//!   only then does it close them in the escrow, then drop them from the
//!   book. A crash before the journal has it: the units are still the
//!   node's and the escrow still lends them to it. A crash after: the
//!   book says returning and the close is made again, exactly once by id.
//! - Nothing is ever settled by a timer: a unit sold just before a crash
//!   is gone, and only this node's journal knows it.
//!
//! # When units go back
//!
//! All of a SKU's unsold leased units when it sold nothing for
//! `idle_return`; half when a peer whose buyers found none left raised the
//! SKU's demand counter; everything at a clean shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::escrow::{lease_size, Escrow, EscrowError, EscrowStock, NodeSku};

mod settle;
mod steps;
mod watch;

use super::sink::JournaledEngine;
use crate::core::error::EngineError;
use crate::core::types::SkuId;
use settle::{close_returning, withdraw_leased};
pub use settle::{give_back_all, node_of_lease, settle_on_start, validate_node_id, Settlement};
use watch::SkuWatch;

/// Longest node id: lease ids are `{node}~{boot}~{sequence}`.
pub const MAX_NODE_ID_BYTES: usize = 48;

/// How long the keeper leaves a SKU alone after the engine refused to book
/// a lease of it.
const REFUSED_SKU_PAUSE: Duration = Duration::from_secs(60);

/// How often a SKU's sales rate is measured.
const RATE_PERIOD: Duration = Duration::from_millis(50);

/// How long after asking its peers for units a node keeps refreshing
/// fast (the end game of a sale: peers answer within a refresh).
const END_GAME: Duration = Duration::from_secs(1);

/// Open leases per SKU past which the oldest are closed as kept once
/// their units are sold (`Run::keep_sold_leases`).
const KEEP_OPEN_LEASES: usize = 4;

/// How a node keeps itself stocked. `KeeperConfig::new` suits a sale.
#[derive(Clone, Debug)]
pub struct KeeperConfig {
    /// This node's id: 1 to `MAX_NODE_ID_BYTES` of `A-Z a-z 0-9 . _ -`.
    pub node: String,
    /// Where this node serves HTTP (`HOST:PORT`), for its peers.
    pub address: String,
    pub escrow_url: String,
    pub schema: String,
    /// Largest lease, unless `runway` asks for more.
    pub max_chunk: u64,
    /// How long half a lease should last at the recent sales rate: leases
    /// grow past `max_chunk` to two runways' worth. A grant is a database
    /// round trip, much slower on a machine the sale keeps busy (up to
    /// 215 ms measured on 2 cores under wrk). Zero: leases of at most
    /// `max_chunk`.
    pub runway: Duration,
    /// A lease takes at most `1 / (k × active nodes)` of what is unleased.
    pub k: u64,
    /// How often local counts are looked at (no database work).
    pub tick: Duration,
    /// How often the escrow's stock is read and a heartbeat written.
    pub refresh: Duration,
    /// A SKU that sold nothing for this long gives its units back.
    pub idle_return: Duration,
    /// A node not heard from for this long is not counted as active.
    pub node_timeout: Duration,
}

impl KeeperConfig {
    pub fn new(node: &str, address: &str, escrow_url: &str) -> KeeperConfig {
        KeeperConfig {
            node: node.to_owned(),
            address: address.to_owned(),
            escrow_url: escrow_url.to_owned(),
            schema: "hotstock_escrow".to_owned(),
            max_chunk: 10_000,
            runway: Duration::from_secs(1),
            k: 2,
            tick: Duration::from_millis(5),
            refresh: Duration::from_millis(250),
            idle_return: Duration::from_secs(5),
            node_timeout: Duration::from_secs(5),
        }
    }
}

/// Why the keeper could not start, settle or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    #[error("the engine refused a lease step: {0}")]
    Engine(#[from] EngineError),
    #[error("the journal did not make a lease step durable: {0}")]
    Journal(String),
    #[error(
        "invalid node id {0:?}: 1 to {MAX_NODE_ID_BYTES} bytes of A-Z a-z 0-9 . _ - (it names \
         this node's leases)"
    )]
    InvalidNode(String),
    #[error(
        "this data directory holds lease {lease:?} of another node: start it with the node id \
         it was made with, or settle it (`hotstock lease settle --data-dir D`)"
    )]
    ForeignLease { lease: String },
}

/// What the keeper has done, for `GET /v1/cluster` and the benchmarks.
#[derive(Clone, Debug, Default)]
pub struct KeeperStatus {
    /// The last escrow statement succeeded.
    pub escrow_reachable: bool,
    /// The last escrow error, if the latest statement failed.
    pub last_error: Option<String>,
    /// Escrow statements made (grants, closes, reads, heartbeats).
    pub statements: u64,
    pub grants: u64,
    pub units_granted: u64,
    pub returns: u64,
    pub units_returned: u64,
    /// Longest time a SKU waited below its low-water mark for a refill
    /// (ms), since the start.
    pub longest_refill_wait_ms: u64,
    /// Nodes heard from within `node_timeout` at the last refresh.
    pub active_nodes: u64,
    /// Per SKU, units unleased at the last refresh.
    pub unleased: Vec<(String, u64)>,
    /// Every node's figures of every SKU, as of its last report (this
    /// node's too, as of this refresh).
    pub node_skus: Vec<NodeSku>,
}

/// The keeper's thread. `stop` gives everything back and joins it.
pub struct LeaseKeeper {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<Result<u64, KeeperError>>>,
}

struct Shared {
    stop: AtomicBool,
    wake: Mutex<()>,
    woken: Condvar,
    status: Mutex<KeeperStatus>,
    sequence: AtomicU64,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper").finish_non_exhaustive()
    }
}

impl LeaseKeeper {
    /// Connects to the escrow, settles this node's leases from its book
    /// (`settle_on_start`) and starts keeping the node stocked. `boot` is
    /// the data directory's boot number (lease ids never repeat).
    pub fn start(
        engine: Arc<JournaledEngine>,
        config: KeeperConfig,
        boot: u32,
    ) -> Result<(LeaseKeeper, Settlement), KeeperError> {
        validate_node_id(&config.node)?;
        let mut escrow = Escrow::connect(&config.escrow_url, &config.schema)?;
        let settlement = settle_on_start(&engine, &mut escrow, &config.node)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            wake: Mutex::new(()),
            woken: Condvar::new(),
            status: Mutex::new(KeeperStatus {
                escrow_reachable: true,
                ..KeeperStatus::default()
            }),
            sequence: AtomicU64::new(0),
        });
        let mut run = Run {
            engine,
            escrow: Some(escrow),
            shared: Arc::clone(&shared),
            skus: HashMap::new(),
            last_refresh: None,
            active_nodes: 1,
            config,
            boot,
        };
        let thread = std::thread::Builder::new()
            .name("lease-keeper".into())
            .spawn(move || run.run())
            .map_err(|e| KeeperError::Journal(format!("cannot start the lease keeper: {e}")))?;
        let keeper = LeaseKeeper {
            shared,
            thread: Some(thread),
        };
        Ok((keeper, settlement))
    }

    pub fn status(&self) -> KeeperStatus {
        self.shared.status.lock().clone()
    }

    /// Stops the keeper: it gives back every unsold leased unit and closes
    /// the leases that return them. Returns the units given back.
    pub fn stop(mut self) -> Result<u64, KeeperError> {
        self.signal_stop();
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(KeeperError::Journal("the lease keeper panicked".into())),
            None => Ok(0),
        }
    }

    fn signal_stop(&self) {
        // Release: the thread's Acquire load sees the flag with everything
        // before it; the lock and notify make sure it is not asleep past it.
        self.shared.stop.store(true, Ordering::Release);
        let _guard = self.shared.wake.lock();
        self.shared.woken.notify_all();
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.signal_stop();
            let _ = thread.join();
        }
    }
}

struct Run {
    engine: Arc<JournaledEngine>,
    /// `None` after a failure: reconnected at the next refresh.
    escrow: Option<Escrow>,
    shared: Arc<Shared>,
    skus: HashMap<String, SkuWatch>,
    last_refresh: Option<Instant>,
    active_nodes: u64,
    config: KeeperConfig,
    boot: u32,
}

impl Run {
    fn run(&mut self) -> Result<u64, KeeperError> {
        // Acquire: pairs with `signal_stop`'s Release.
        while !self.shared.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let due = self
                .last_refresh
                .is_none_or(|at| now.duration_since(at) >= self.refresh_period());
            if due {
                self.last_refresh = Some(now);
                self.escrow_step(|run, escrow| run.refresh(escrow));
            }
            self.escrow_step(|run, escrow| run.keep_stocked(escrow));
            let mut guard = self.shared.wake.lock();
            if !self.shared.stop.load(Ordering::Acquire) {
                self.shared.woken.wait_for(&mut guard, self.config.tick);
            }
        }
        let escrow = match self.escrow.as_mut() {
            Some(escrow) => escrow,
            None => self.escrow.insert(Escrow::connect(
                &self.config.escrow_url,
                &self.config.schema,
            )?),
        };
        give_back_all(&self.engine, escrow, &self.config.node)
    }

    /// Refreshes faster in a SKU's end game: while this node is starved
    /// (its buyers wait for a peer's units), or while nothing is unleased
    /// and the SKU still sells here (a starved peer's demand is then
    /// answered within a fast refresh, not a slow one).
    fn refresh_period(&self) -> Duration {
        // Both only for a while: a sale that is over (nothing anywhere)
        // must not keep every node polling the database fast.
        let recent = self.config.idle_return;
        let end_game = self.skus.values().any(|w| {
            let asked = w.asked.is_some_and(|at| at.elapsed() < END_GAME);
            let holding = w.available > 0 && w.last_sale.elapsed() < recent;
            asked || (w.unleased == 0 && holding)
        });
        match end_game {
            true => self.config.refresh.min(Duration::from_millis(50)),
            false => self.config.refresh,
        }
    }

    /// Runs one step that needs the escrow, reconnecting first if the last
    /// one failed; a failure is recorded and retried later, never fatal:
    /// the node goes on selling what it holds.
    fn escrow_step(&mut self, step: impl FnOnce(&mut Run, &mut Escrow) -> Result<(), KeeperError>) {
        let mut escrow = match self.escrow.take() {
            Some(escrow) => escrow,
            None => match Escrow::connect(&self.config.escrow_url, &self.config.schema) {
                Ok(escrow) => escrow,
                Err(error) => return self.note_failure(&error.into()),
            },
        };
        match step(self, &mut escrow) {
            Ok(()) => {
                self.escrow = Some(escrow);
                let mut status = self.shared.status.lock();
                status.escrow_reachable = true;
                status.last_error = None;
            }
            // The connection may be broken: make a new one next time.
            Err(error @ KeeperError::Escrow(_)) => self.note_failure(&error),
            Err(error) => {
                self.escrow = Some(escrow);
                self.note_failure(&error);
            }
        }
    }

    fn note_failure(&self, error: &KeeperError) {
        tracing::warn!("lease keeper: {error}");
        let mut status = self.shared.status.lock();
        status.escrow_reachable = false;
        status.last_error = Some(error.to_string());
    }

    fn count(&self, statements: u64) {
        self.shared.status.lock().statements += statements;
    }

    /// A heartbeat, the stock of record, the active nodes; and closes of
    /// leases left returning by a failed step.
    fn refresh(&mut self, escrow: &mut Escrow) -> Result<(), KeeperError> {
        let now_ms = self.engine.now_ms();
        escrow.heartbeat(&self.config.node, &self.config.address, now_ms)?;
        let nodes = escrow.nodes()?;
        let stock = escrow.stock()?;
        self.count(3);
        let timeout = self.config.node_timeout.as_millis() as u64;
        let active = nodes
            .iter()
            .filter(|n| n.seen_ms + timeout >= now_ms)
            .count();
        self.active_nodes = (active as u64).max(1);
        for row in &stock {
            self.watch(row);
            // Before any refill of this SKU (which comes after the
            // refresh): no unit is booked here before the limit is.
            if let Err(refused) = apply_limit(&self.engine, row) {
                tracing::warn!(
                    "lease keeper: the cluster's limit of {}: {refused}",
                    row.sku
                );
            }
        }
        let closed = close_returning(&self.engine, escrow, &self.config.node)?;
        self.count(closed as u64);
        escrow.report(&self.config.node, now_ms, &self.own_figures()?)?;
        let node_skus = escrow.node_skus()?;
        self.count(2);
        let mut status = self.shared.status.lock();
        status.active_nodes = self.active_nodes;
        status.unleased = stock.iter().map(|r| (r.sku.clone(), r.unleased)).collect();
        status.node_skus = node_skus;
        Ok(())
    }

    /// This node's figures of every SKU the escrow has that it holds.
    fn own_figures(&self) -> Result<Vec<NodeSku>, KeeperError> {
        let mut figures = Vec::new();
        for name in self.skus.keys() {
            let Ok(sku) = self.engine.sku(name) else {
                continue;
            };
            let document = self.engine.sku_document(sku)?;
            figures.push(NodeSku {
                node: self.config.node.clone(),
                sku: name.clone(),
                available: document.available,
                held: document.held,
                sold: document.sold,
                leased: self.engine.leased(sku),
                seen_ms: 0,
            });
        }
        Ok(figures)
    }

    fn watch(&mut self, row: &EscrowStock) {
        let now = Instant::now();
        let watch = self.skus.entry(row.sku.clone()).or_insert(SkuWatch {
            unleased: 0,
            demand: row.demand,
            demand_answered: row.demand,
            sold: 0,
            last_sale: now,
            hungry_since: None,
            asked: None,
            hold_refills_until: None,
            rate: 0.0,
            rate_mark: (now, 0),
            available: 0,
        });
        watch.unleased = row.unleased;
        watch.demand = row.demand;
    }

    /// Per SKU: refill below the low-water mark, ask peers when none is
    /// left, give back for a peer's demand or when idle.
    fn keep_stocked(&mut self, escrow: &mut Escrow) -> Result<(), KeeperError> {
        let names: Vec<String> = self.skus.keys().cloned().collect();
        for name in names {
            self.keep_one(escrow, &name)?;
        }
        Ok(())
    }

    fn keep_one(&mut self, escrow: &mut Escrow, name: &str) -> Result<(), KeeperError> {
        let now = Instant::now();
        let sku = self.engine.sku(name).ok();
        let available = sku.map_or(Ok(0), |sku| self.engine.available_now(sku))?;
        let sold = match sku {
            Some(sku) => self.engine.sku_document(sku)?.sold,
            None => 0,
        };
        let (config, nodes) = (&self.config, self.active_nodes);
        let watch = self.skus.get_mut(name).expect("a watched SKU");
        if sold != watch.sold {
            watch.sold = sold;
            watch.last_sale = now;
        }
        watch.measure(now, sold);
        watch.available = available;
        let wanted = lease_size(
            watch.unleased,
            nodes,
            config.k,
            watch.chunk(config.max_chunk, config.runway),
        );
        let low_water = watch.low_water(wanted);
        let held_back = watch.hold_refills_until.is_some_and(|until| now < until);
        if available < low_water && watch.unleased > 0 && !held_back {
            watch.hungry_since.get_or_insert(now);
            return self.refill(escrow, name, wanted);
        }
        if available == 0 && watch.unleased == 0 {
            // Buyers here in the last `END_GAME`: after that the sale is
            // taken as over here, and the node stops asking.
            let recently = now.duration_since(watch.last_sale) < END_GAME;
            let asked_lately = watch
                .asked
                .is_some_and(|at| now.duration_since(at) < config.refresh);
            if recently && !asked_lately {
                watch.asked = Some(now);
                escrow.ask_for_more(name)?;
                self.count(1);
            }
            return Ok(());
        }
        let Some(sku) = sku else { return Ok(()) };
        watch.asked = None;
        // A peer's demand: half of what this node holds goes back, and it
        // takes no refill for two refreshes (so the starved node gets them).
        if watch.demand > watch.demand_answered && available > 0 {
            watch.demand_answered = watch.demand;
            watch.hold_refills_until = Some(now + config.refresh * 2);
            return self.give_back(escrow, sku, available.div_ceil(2));
        }
        // Idle: back goes all but the low-water mark the SKU will have once
        // the units are unleased again, so the next look does not take
        // them straight back; a buyer's next sale brings a refill. What one
        // idle node keeps is at most half a lease.
        if now.duration_since(watch.last_sale) >= config.idle_return {
            let after = lease_size(
                watch.unleased + available,
                nodes,
                config.k,
                config.max_chunk,
            );
            let keep = (after / 2).max(1);
            if available > keep {
                return self.give_back(escrow, sku, available - keep);
            }
        }
        Ok(())
    }
}

/// Makes this node's per-customer limit of `row`'s SKU the cluster's (the
/// escrow's), journaled like an operator's change; creates the SKU, with
/// no units, when the escrow has a limit for a SKU new here.
fn apply_limit(engine: &JournaledEngine, row: &EscrowStock) -> Result<(), EngineError> {
    let wanted = row.per_customer_limit;
    match engine.sku(&row.sku) {
        Ok(sku) => {
            if engine.sku_document(sku)?.per_customer_limit != wanted {
                engine.set_limit(sku, wanted)?;
            }
        }
        Err(EngineError::UnknownSku { .. }) if wanted.is_some() => {
            let put = crate::core::engine::SkuPut {
                limit: Some(wanted),
                ..Default::default()
            };
            engine.put_stock(&row.sku, &put)?;
        }
        Err(EngineError::UnknownSku { .. }) => {}
        Err(other) => return Err(other),
    }
    Ok(())
}
