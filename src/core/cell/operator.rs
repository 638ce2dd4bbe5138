//! A cell's operator changes (restock, withdraw, a put of the stock or the
//! units on hand, limits and thresholds) and its kit mark. Each takes the
//! cell's lock, bumps its version and calls `publish` with the change
//! before it becomes visible (the rules are in the parent module's docs
//! and `change.rs`).

use super::*;

impl StockCell {
    /// Makes a fresh cell a kit, at version 1 (its components are in the
    /// engine's `KitTable`). Only while its SKU is being created, before
    /// its name is published: a SKU is a kit from birth or never, so
    /// lock-free `is_kit` checks are exact.
    pub fn make_kit(&self) {
        let mut meta = self.meta.lock();
        debug_assert_eq!(meta.version, 0, "a kit is made only at creation");
        meta.version = 1;
        self.mark_kit();
    }

    /// A kit's new definition: bumps the version and calls `publish` with
    /// it under the lock, so one kit's definitions are published in
    /// version order.
    pub fn redefine_kit(&self, publish: impl FnOnce(u64)) -> u64 {
        let mut meta = self.meta.lock();
        debug_assert!(self.is_kit(), "only a kit is redefined");
        meta.version += 1;
        publish(meta.version);
        meta.version
    }

    /// Marks a recovered kit (recovery only, after `restore`, before
    /// serving).
    pub fn restore_kit(&self) {
        let _meta = self.meta.lock();
        self.mark_kit();
    }

    /// Makes a fresh cell one whose stock is kept at locations (each a
    /// cell of its own), at version 1. Only while its SKU is being
    /// created, like `make_kit`.
    pub fn make_located(&self) {
        let mut meta = self.meta.lock();
        debug_assert_eq!(meta.version, 0, "a SKU is made located only at creation");
        meta.version = 1;
        self.mark_located();
    }

    /// Marks a recovered SKU kept at locations (recovery only).
    pub fn restore_located(&self) {
        let _meta = self.meta.lock();
        self.mark_located();
    }

    fn mark_located(&self) {
        // Relaxed: as `mark_kit`.
        self.per_customer_limit
            .store(LOCATED_GATE, Ordering::Relaxed);
    }

    /// A setting kept outside the cell (a location's priority): bumps the
    /// version and calls `publish` with it under the lock, so one cell's
    /// settings are published in version order.
    pub fn bump_version<R>(&self, publish: impl FnOnce(u64) -> R) -> R {
        let mut meta = self.meta.lock();
        meta.version += 1;
        publish(meta.version)
    }

    /// `bump_version` for a change that may be refused under the lock:
    /// the version moves only if `publish` succeeds.
    pub fn try_bump_version<R, E>(
        &self,
        publish: impl FnOnce(u64) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut meta = self.meta.lock();
        let published = publish(meta.version + 1);
        if published.is_ok() {
            meta.version += 1;
        }
        published
    }

    /// Runs `f` under the cell's lock: serialises changes to what the
    /// engine keeps about this SKU elsewhere (its list of locations).
    pub fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        let _meta = self.meta.lock();
        f()
    }

    pub(super) fn mark_kit(&self) {
        // Relaxed: see `gate`; the name's publication orders it for a new
        // kit, and recovery runs before anyone reads.
        self.per_customer_limit.store(KIT_GATE, Ordering::Relaxed);
    }

    /// Operator restock: `received` and `available` grow by `units`.
    ///
    /// `publish` is called with the change under the lock, *before* the
    /// units are credited: a sale of one of them can only be recorded after
    /// the restock is (see `change.rs`). The same holds for every operator
    /// change below.
    ///
    /// The units go to reservations owed them first (`backorder.rs`),
    /// `fill` called for each; the rest become available. Returns the
    /// change and the units still to give when more reservations are owed
    /// than one lock hold may fill (the caller goes on with `fill_more`).
    pub fn restock(
        &self,
        units: u64,
        hint: usize,
        publish: impl FnOnce(OperatorChange),
        fill: impl FnMut(Fill),
    ) -> Result<(OperatorChange, u64), TooMuchStock> {
        let mut meta = self.meta.lock();
        let received = meta.received.saturating_add(units);
        if received > MAX_STOCK_PER_SKU {
            return Err(TooMuchStock {
                received: meta.received,
            });
        }
        meta.received = received;
        meta.version += 1;
        let change = OperatorChange {
            delta: units as i64,
            version: meta.version,
            safety_stock: None,
        };
        publish(change);
        let left = self.fill_locked(&mut meta, units, hint, fill);
        Ok((change, self.finish_fill_locked(&meta, left, hint)))
    }

    /// Operator adjust downwards: refused (and nothing changes) when fewer
    /// than `units` are available.
    pub fn withdraw(
        &self,
        units: u64,
        hint: usize,
        policy: &StripePolicy,
        publish: impl FnOnce(OperatorChange),
    ) -> Result<OperatorChange, Insufficient> {
        let mut meta = self.meta.lock();
        let in_hand = self.drain_locked();
        if in_hand < units {
            self.redistribute_locked(in_hand, hint, policy);
            return Err(Insufficient { available: in_hand });
        }
        debug_assert!(
            meta.received >= units,
            "available can never exceed received"
        );
        meta.received -= units;
        meta.version += 1;
        let change = OperatorChange {
            delta: -(units as i64),
            version: meta.version,
            safety_stock: None,
        };
        publish(change);
        self.redistribute_locked(in_hand - units, hint, policy);
        Ok(change)
    }

    /// Operator set-absolute with the article's optimistic lock: when
    /// `expected_version` is given and is not the current version, nothing
    /// changes. `level` sets the units for sale (`None`: keep the units on
    /// hand), `safety_stock` the units kept back (`None`: keep it), and
    /// `limit`, when given, the per-customer limit, all in one versioned
    /// step. The change is returned as a delta computed under the lock.
    // Seven arguments: the operator's whole put is decided under one lock
    // hold, and its one caller (`Engine::put_stock`) passes them straight
    // through from its request.
    #[allow(clippy::too_many_arguments)]
    pub fn set_stock(
        &self,
        level: Option<StockLevel>,
        safety_stock: Option<u64>,
        limit: Option<Option<u32>>,
        expected_version: Option<u64>,
        hint: usize,
        policy: &StripePolicy,
        publish: impl FnOnce(OperatorChange),
    ) -> Result<OperatorChange, SetError> {
        let mut meta = self.meta.lock();
        if let Some(expected) = expected_version {
            if expected != meta.version {
                return Err(SetError::Stale(StaleVersion {
                    current: meta.version,
                }));
            }
        }
        let in_hand = self.drain_locked();
        debug_assert!(
            in_hand <= meta.received,
            "available can never exceed received"
        );
        // received - in_hand is what is held, sold or in flight: it stays.
        let taken = meta.received - in_hand;
        let old_safety = meta.extras().safety_stock;
        let safety = safety_stock.unwrap_or(old_safety);
        let target = self.target_available(level, in_hand, taken, old_safety, safety);
        let received = target.and_then(|target| {
            (taken.checked_add(target))
                .filter(|r| *r <= MAX_STOCK_PER_SKU)
                .map(|r| (target, r))
                .ok_or(SetError::TooMuch(TooMuchStock {
                    received: meta.received,
                }))
        });
        let (target, received) = match received {
            Ok(ok) => ok,
            Err(refused) => {
                self.redistribute_locked(in_hand, hint, policy);
                return Err(refused);
            }
        };
        meta.received = received;
        meta.version += 1;
        let change = OperatorChange {
            delta: target as i64 - in_hand as i64,
            version: meta.version,
            safety_stock,
        };
        publish(change);
        meta.edit_extras(|extras| extras.safety_stock = safety);
        if let Some(limit) = limit {
            self.store_limit(limit);
        }
        self.redistribute_locked(target, hint, policy);
        Ok(change)
    }

    /// The units for sale a `set_stock` asks for, or why it is refused.
    /// Caller holds the lock and has drained `in_hand`; `taken` units are
    /// held, sold or in flight.
    fn target_available(
        &self,
        level: Option<StockLevel>,
        in_hand: u64,
        taken: u64,
        old_safety: u64,
        safety: u64,
    ) -> Result<u64, SetError> {
        debug_assert!(
            safety <= MAX_STOCK_PER_SKU,
            "checked at the engine boundary"
        );
        let held = self.held_at_most_locked(taken);
        let on_hand = match level {
            Some(StockLevel::Available(units)) => return Ok(units),
            Some(StockLevel::OnHand(units)) => units,
            // Keep the units on hand: only the split between for sale and
            // kept back moves.
            None => in_hand + held + old_safety,
        };
        on_hand
            .checked_sub(held + safety)
            .ok_or(SetError::BelowCommitted(BelowCommitted {
                on_hand,
                held,
                safety_stock: safety,
            }))
    }

    /// Held units, never fewer than are really held. Caller holds the lock
    /// and passes the `taken` units (received minus the drained ones): they
    /// are exact, and the stripes' `sold` sum is a lower bound of the units
    /// sold, because every path counts a sale only after its units left
    /// `available` or `held`, and the one path that lowers `sold` (a
    /// refund) runs under the lock held here. So `taken - sold` bounds the
    /// held units (plus takes in flight) from above: an `on_hand` set in
    /// the middle of a sale never makes more units available than are
    /// there. Exact at quiescence.
    fn held_at_most_locked(&self, taken: u64) -> u64 {
        let mut sold = 0u64;
        let mut add = |stripe: &Stripe| {
            // Relaxed: a reading bounded as above; the lock orders refunds.
            sold = sold.wrapping_add(stripe.sold.load(Ordering::Relaxed));
        };
        add(&self.home);
        if let Some(wide) = self.wide_array() {
            wide.iter().for_each(|s| add(s));
        }
        taken - clamp_signed(sold).min(taken)
    }

    /// Sets the low-stock threshold (`None` removes it). Bumps the version.
    /// The engine does nothing with it but keep and report it; the change
    /// feed compares `available` against it.
    pub fn set_low_stock(
        &self,
        threshold: Option<u32>,
        publish: impl FnOnce(OperatorChange),
    ) -> u64 {
        let mut meta = self.meta.lock();
        let version = Self::bump_setting_locked(&mut meta, publish);
        meta.edit_extras(|extras| extras.low_stock_threshold = threshold.unwrap_or(0));
        version
    }

    /// Sets the per-customer limit (`None` removes it). Bumps the version.
    pub fn set_limit(&self, limit: Option<u32>, publish: impl FnOnce(OperatorChange)) -> u64 {
        let mut meta = self.meta.lock();
        let version = Self::bump_setting_locked(&mut meta, publish);
        self.store_limit(limit);
        version
    }

    /// A change of a setting that moves no units: bumps the version and
    /// publishes it (delta 0) before the caller makes it visible. Caller
    /// holds the lock (`meta`).
    pub(super) fn bump_setting_locked(
        meta: &mut CellMeta,
        publish: impl FnOnce(OperatorChange),
    ) -> u64 {
        meta.version += 1;
        publish(OperatorChange {
            delta: 0,
            version: meta.version,
            safety_stock: None,
        });
        meta.version
    }

    /// Stores a limit in the gate word. The engine refuses limits past
    /// `MAX_PER_CUSTOMER_LIMIT`; one recovered from an older journal is
    /// clamped to it (no customer buys two billion units) so it can never
    /// read as a kit's mark.
    pub(super) fn store_limit(&self, limit: Option<u32>) {
        debug_assert!(!self.is_kit(), "a kit has no limit; the engine refuses");
        let raw = limit.map_or(0, |l| l.min(MAX_PER_CUSTOMER_LIMIT));
        // Relaxed: see `gate`.
        self.per_customer_limit.store(raw, Ordering::Relaxed);
    }
}
