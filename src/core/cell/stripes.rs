//! A cell's internals: which stripe a caller uses, widening under
//! contention, and the lock-held drain and redistribution that make a
//! `SoldOut` verdict exact (the rules are in the parent module's docs).

use super::*;

impl StockCell {
    /// The stripe a caller with `hint` uses, and whether it is `home`.
    #[inline]
    pub(super) fn stripe(&self, hint: usize) -> (&Stripe, bool) {
        // Acquire: pairs with the Release store of `width` in
        // `redistribute_locked`, which follows the store of `wide`; seeing a
        // width above 1 therefore guarantees `wide` points at live stripes.
        let width = self.width.load(Ordering::Acquire);
        if width <= 1 {
            return (&self.home, true);
        }
        // Relaxed: ordered by the Acquire load of `width` above.
        let wide = self.wide.load(Ordering::Relaxed);
        debug_assert!(!wide.is_null(), "width > 1 is published only after `wide`");
        // SAFETY: `wide` is non-null (published before width > 1), points at
        // a Box leaked by `wide_or_alloc_locked`, and is freed only in `Drop`,
        // which has `&mut self` and so cannot overlap this `&self` borrow.
        let stripes = unsafe { &*wide };
        (&stripes[hint % width as usize], false)
    }

    /// The wide stripe array if it was ever allocated.
    pub(super) fn wide_array(&self) -> Option<&WideStripes> {
        // Acquire: pairs with the Release in `wide_or_alloc_locked`, so the
        // array's initialised contents are visible.
        let wide = self.wide.load(Ordering::Acquire);
        // SAFETY: as in `stripe`: a leaked Box freed only in `Drop`.
        (!wide.is_null()).then(|| unsafe { &*wide })
    }

    #[cold]
    pub(super) fn note_conflict(&self, hint: usize, policy: &StripePolicy) {
        // Relaxed: a heuristic counter; it only decides when to widen.
        // The counter wraps at u16::MAX (the policy is checked to stay
        // below it): a wrap only restarts the count toward the threshold.
        let seen = self
            .conflicts
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if u32::from(seen) != policy.widen_after_conflicts {
            return;
        }
        // Exactly one conflicting taker sees the threshold; it widens if the
        // lock is free and otherwise leaves it to the next slow path, so the
        // hot path never blocks here.
        if let Some(_meta) = self.meta.try_lock() {
            let in_hand = self.drain_locked();
            self.redistribute_locked(in_hand, hint, policy);
        }
    }

    #[cold]
    pub(super) fn take_slow(
        &self,
        units: u64,
        into: TakeInto,
        hint: usize,
        policy: &StripePolicy,
    ) -> Result<(), SoldOut> {
        let meta = self.meta.lock();
        // First try each stripe alone: cheaper than a drain, and enough when
        // only the caller's stripe ran dry.
        // Relaxed: `width` changes only under the lock we hold.
        let width = self.width.load(Ordering::Relaxed);
        let found = if width <= 1 {
            self.home.try_take(units).then_some(&self.home)
        } else {
            self.wide_array()
                .and_then(|wide| wide[..width as usize].iter().find(|s| s.try_take(units)))
                .map(|padded| &**padded)
        };
        if let Some(stripe) = found {
            stripe.count(into, units as i64);
            return Ok(());
        }
        // No single stripe can cover it: drain them all. Nothing can add
        // units while we hold the lock, so `in_hand` is exactly the cell's
        // available stock now, and a verdict from it is truthful.
        let in_hand = self.drain_locked();
        if in_hand < units {
            self.redistribute_locked(in_hand, hint, policy);
            return Err(SoldOut {
                available: in_hand,
                may_backorder: meta.allows_backorders(),
            });
        }
        self.redistribute_locked(in_hand - units, hint, policy);
        self.stripe(hint).0.count(into, units as i64);
        Ok(())
    }

    pub(super) fn give_back(&self, units: u64, from: TakeInto, hint: usize) {
        let _meta = self.meta.lock();
        let (stripe, _) = self.stripe(hint);
        stripe.count(from, -(units as i64));
        self.credit_locked(units, hint);
    }

    /// Adds units to the caller's stripe. Caller holds the lock (the rule:
    /// units enter only under the lock).
    pub(super) fn credit_locked(&self, units: u64, hint: usize) {
        // Relaxed: the lock we hold orders this against every other adder;
        // concurrent takers are RMWs on the same location.
        self.stripe(hint)
            .0
            .available
            .fetch_add(units, Ordering::Relaxed);
    }

    /// Swaps every stripe in use to zero and returns the units. Caller holds
    /// the lock, so the result is the cell's whole available stock.
    pub(super) fn drain_locked(&self) -> u64 {
        // Relaxed: swaps are RMWs, which always read the latest value of
        // their location; the lock orders us against every adder.
        let mut in_hand = self.home.available.swap(0, Ordering::Relaxed);
        let width = self.width.load(Ordering::Relaxed);
        if let Some(wide) = self.wide_array() {
            for (index, stripe) in wide.iter().enumerate() {
                if index < width as usize {
                    in_hand += stripe.available.swap(0, Ordering::Relaxed);
                } else {
                    debug_assert_eq!(
                        stripe.available.load(Ordering::Relaxed),
                        0,
                        "stripes beyond the width never hold units"
                    );
                }
            }
        }
        in_hand
    }

    /// Puts `in_hand` units back after a drain, choosing the width: widen
    /// when contention showed and there is stock to spread, narrow when stock
    /// runs low. Caller holds the lock and every stripe is empty.
    pub(super) fn redistribute_locked(&self, in_hand: u64, hint: usize, policy: &StripePolicy) {
        let width = u32::from(self.width.load(Ordering::Relaxed));
        let conflicts = u32::from(self.conflicts.load(Ordering::Relaxed));
        let target = if width > 1 {
            if in_hand < policy.narrow_below_units {
                1
            } else {
                width
            }
        } else if conflicts >= policy.widen_after_conflicts && in_hand >= policy.widen_min_units {
            policy.stripes
        } else {
            1
        };
        if target != width {
            // Relaxed: a heuristic counter restarted with each width change.
            self.conflicts.store(0, Ordering::Relaxed);
        }
        if target == 1 {
            if width != 1 {
                // Release: pairs with the Acquire in `stripe`. Takers that
                // still use the wide stripes find them empty and come here.
                self.width.store(1, Ordering::Release);
            }
            self.home.available.fetch_add(in_hand, Ordering::Relaxed);
            return;
        }
        let wide = self.wide_or_alloc_locked();
        if width != target {
            // Release: `wide` was stored (Release) before this; a taker that
            // sees the new width sees the array.
            // `target` is at most MAX_STRIPES (checked by the policy).
            self.width.store(target as u16, Ordering::Release);
        }
        let share = in_hand / u64::from(target);
        let extra = in_hand % u64::from(target);
        let first = hint % target as usize;
        for (index, stripe) in wide[..target as usize].iter().enumerate() {
            let units = share + if index == first { extra } else { 0 };
            stripe.available.fetch_add(units, Ordering::Relaxed);
        }
    }

    /// The wide stripe array, allocated on first use. Caller holds the lock,
    /// so there is never a race to install it.
    pub(super) fn wide_or_alloc_locked(&self) -> &WideStripes {
        if let Some(wide) = self.wide_array() {
            return wide;
        }
        let fresh: Box<WideStripes> =
            Box::new(std::array::from_fn(|_| CachePadded::new(Stripe::new())));
        let raw = Box::into_raw(fresh);
        // Release: publishes the initialised array (see `wide_array`). Only
        // lock holders store here, so there is no race to install it.
        self.wide.store(raw, Ordering::Release);
        // SAFETY: just leaked above; freed only in `Drop`.
        unsafe { &*raw }
    }
}
