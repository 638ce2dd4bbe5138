//! `Settled`: the fold of the durable journal into counts and records.
//!
//! The writer folds each batch into a `Settled` after it is on disk (the
//! shadow table of the design notes); the checkpointer copies what changed
//! to the store; recovery loads the store's `Settled` and folds the journal
//! after its position. Never the live atomics: they run ahead of the journal
//! and are not a consistent cut.
//!
//! The fold is order-insensitive within a batch (see `journal::event`):
//! deltas add, versions take the maximum, and a hold moves up its status
//! lattice, with the per-SKU and per-customer counts adjusted by the
//! difference between the old and new status's effect:
//!
//! | status | held | sold | customer limit |
//! |---|---|---|---|
//! | held | +q | | +q |
//! | confirmed | | +q | +q |
//! | cancelled, expired, refunded | | | |
//!
//! `available` is never stored in the fold: it is `received - held - sold`.

use std::collections::{HashMap, HashSet};

/// The fold runs once per journal event on the writer thread: a fast
/// non-cryptographic hash (keys are ids the engine made, not attacker input).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

use crate::holds::{HoldStatus, Line};
use crate::journal::event::{Event, HoldEvent, LimitChange};
use crate::journal::segment::Position;

/// One SKU's settled counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettledSku {
    /// Empty until the creation event is folded.
    pub name: Box<str>,
    pub received: i64,
    pub held: i64,
    pub sold: i64,
    pub version: u64,
    pub limit: Option<u32>,
    /// Version of the operator change that set `limit`.
    pub limit_version: u64,
}

impl SettledSku {
    pub fn available(&self) -> i64 {
        self.received - self.held - self.sold
    }
}

/// One reservation record as of its latest folded status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledHold {
    pub status: HoldStatus,
    /// When it reached `status`.
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub limit_mask: u32,
    pub customer: Option<Box<str>>,
    pub lines: Vec<Line>,
}

/// Everything recovery needs, as of `position`.
#[derive(Clone, Debug, Default)]
pub struct Settled {
    /// Indexed by SKU id; `None` for ids never seen (a creation lost in a
    /// crash leaves a gap that nothing durable refers to).
    pub skus: Vec<Option<SettledSku>>,
    pub holds: FastMap<u64, SettledHold>,
    /// Units per (SKU id, customer) that count against a limit.
    pub customer_units: FastMap<(u32, Box<str>), i64>,
    /// The journal position just past the last folded batch.
    pub position: Position,
    dirty_skus: FastSet<u32>,
    /// Holds changed since the last checkpoint (may repeat; deduplicated
    /// when the checkpoint is taken). A list, not a set: one push per event
    /// is cheaper than a hash insert on the writer's path.
    dirty_holds: Vec<u64>,
    dirty_customers: FastSet<(u32, Box<str>)>,
}

/// What changed since the last checkpoint, ready for the store.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    pub position: Position,
    pub skus: Vec<(u32, SettledSku)>,
    pub holds: Vec<(u64, SettledHold)>,
    pub removed_holds: Vec<u64>,
    /// Units of 0 mean "delete the row".
    pub customer_units: Vec<((u32, Box<str>), i64)>,
}

impl Checkpoint {
    pub fn is_empty(&self) -> bool {
        self.skus.is_empty()
            && self.holds.is_empty()
            && self.removed_holds.is_empty()
            && self.customer_units.is_empty()
    }
}

fn rank(status: HoldStatus) -> u8 {
    match status {
        HoldStatus::Held => 1,
        HoldStatus::Confirmed | HoldStatus::Cancelled | HoldStatus::Expired => 2,
        HoldStatus::Refunded => 3,
    }
}

/// (held, sold, limit) units a status keeps per unit of a line.
fn effect(status: Option<HoldStatus>) -> (i64, i64, i64) {
    match status {
        Some(HoldStatus::Held) => (1, 0, 1),
        Some(HoldStatus::Confirmed) => (0, 1, 1),
        _ => (0, 0, 0),
    }
}

impl Settled {
    /// Folds one event.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::SkuCreated { sku, name } => {
                let entry = self.sku_mut(sku.index());
                entry.name = name.clone();
            }
            Event::Operator {
                sku,
                delta,
                version,
                limit,
            } => {
                let entry = self.sku_mut(sku.index());
                entry.received += delta;
                entry.version = entry.version.max(*version);
                if let LimitChange::Set(limit) = limit {
                    if *version >= entry.limit_version {
                        entry.limit = *limit;
                        entry.limit_version = *version;
                    }
                }
            }
            Event::Sell { sku, units } => self.sku_mut(sku.index()).sold += i64::from(*units),
            Event::Hold(hold) => self.apply_hold(hold),
        }
    }

    fn apply_hold(&mut self, event: &HoldEvent) {
        let id = event.id.as_u64();
        let old = self.holds.get(&id).map(|h| h.status);
        if old.is_some_and(|old| rank(old) >= rank(event.status)) {
            return;
        }
        let (old_held, old_sold, old_limit) = effect(old);
        let (new_held, new_sold, new_limit) = effect(Some(event.status));
        for (index, line) in event.lines.iter().enumerate() {
            let q = i64::from(line.quantity);
            let sku = self.sku_mut(line.sku.index());
            sku.held += q * (new_held - old_held);
            sku.sold += q * (new_sold - old_sold);
            if event.limit_mask & (1 << index) != 0 {
                if let Some(customer) = &event.customer {
                    let key = (line.sku.index(), customer.clone());
                    *self.customer_units.entry(key.clone()).or_default() +=
                        q * (new_limit - old_limit);
                    self.dirty_customers.insert(key);
                }
            }
        }
        self.holds.insert(
            id,
            SettledHold {
                status: event.status,
                at_ms: event.at_ms,
                deadline_ms: event.deadline_ms,
                limit_mask: event.limit_mask,
                customer: event.customer.clone(),
                lines: event.lines.clone(),
            },
        );
        self.dirty_holds.push(id);
    }

    fn sku_mut(&mut self, index: u32) -> &mut SettledSku {
        let index_usize = index as usize;
        if self.skus.len() <= index_usize {
            self.skus.resize(index_usize + 1, None);
        }
        self.dirty_skus.insert(index);
        self.skus[index_usize].get_or_insert_with(SettledSku::default)
    }

    /// Forgets records the engine would have pruned by `now_ms`: ended ones
    /// after `ended_ms`, confirmed ones after `refund_window_ms`. Their units
    /// stay counted in their SKUs.
    pub fn prune(&mut self, now_ms: u64, ended_ms: u64, refund_window_ms: u64) {
        let dirty = &mut self.dirty_holds;
        self.holds.retain(|id, hold| {
            let keep_for = match hold.status {
                HoldStatus::Held => return true,
                HoldStatus::Confirmed => refund_window_ms,
                _ => ended_ms,
            };
            let keep = hold.at_ms.saturating_add(keep_for) > now_ms;
            if !keep {
                dirty.push(*id);
            }
            keep
        });
    }

    /// Takes what changed since the last call.
    pub fn take_checkpoint(&mut self) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            position: self.position,
            ..Checkpoint::default()
        };
        for index in self.dirty_skus.drain() {
            if let Some(Some(sku)) = self.skus.get(index as usize) {
                checkpoint.skus.push((index, sku.clone()));
            }
        }
        let mut dirty_holds = std::mem::take(&mut self.dirty_holds);
        dirty_holds.sort_unstable();
        dirty_holds.dedup();
        for id in dirty_holds {
            match self.holds.get(&id) {
                Some(hold) => checkpoint.holds.push((id, hold.clone())),
                None => checkpoint.removed_holds.push(id),
            }
        }
        for key in self.dirty_customers.drain() {
            let units = self.customer_units.get(&key).copied().unwrap_or(0);
            if units == 0 {
                self.customer_units.remove(&key);
            }
            checkpoint.customer_units.push((key, units));
        }
        checkpoint
    }

    /// Marks a checkpoint's rows dirty again (its save failed).
    pub fn mark_dirty(&mut self, checkpoint: &Checkpoint) {
        self.dirty_skus
            .extend(checkpoint.skus.iter().map(|(id, _)| *id));
        self.dirty_holds
            .extend(checkpoint.holds.iter().map(|(id, _)| *id));
        self.dirty_holds
            .extend(checkpoint.removed_holds.iter().copied());
        self.dirty_customers
            .extend(checkpoint.customer_units.iter().map(|(key, _)| key.clone()));
    }

    /// Marks everything clean (after loading from the store).
    pub fn mark_clean(&mut self) {
        self.dirty_skus.clear();
        self.dirty_holds.clear();
        self.dirty_customers.clear();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::holds::ReservationId;
    use crate::SkuId;

    fn hold(status: HoldStatus) -> Event {
        Event::Hold(HoldEvent {
            id: ReservationId::from_u64(9),
            status,
            at_ms: 0,
            deadline_ms: 100,
            limit_mask: 1,
            customer: Some("ann".into()),
            lines: vec![Line {
                sku: SkuId::from_index(0),
                quantity: 2,
            }],
        })
    }

    fn fold(events: &[Event]) -> Settled {
        let mut settled = Settled::default();
        settled.apply(&Event::SkuCreated {
            sku: SkuId::from_index(0),
            name: "a".into(),
        });
        settled.apply(&Event::Operator {
            sku: SkuId::from_index(0),
            delta: 10,
            version: 1,
            limit: LimitChange::Set(Some(5)),
        });
        for event in events {
            settled.apply(event);
        }
        settled
    }

    #[test]
    fn hold_lifecycle_in_any_order_settles_the_same() {
        let orders = [
            vec![
                hold(HoldStatus::Held),
                hold(HoldStatus::Confirmed),
                hold(HoldStatus::Refunded),
            ],
            vec![
                hold(HoldStatus::Refunded),
                hold(HoldStatus::Held),
                hold(HoldStatus::Confirmed),
            ],
            vec![
                hold(HoldStatus::Confirmed),
                hold(HoldStatus::Refunded),
                hold(HoldStatus::Held),
            ],
        ];
        for events in orders {
            let s = fold(&events);
            let sku = s.skus[0].as_ref().unwrap();
            assert_eq!(
                (sku.available(), sku.held, sku.sold),
                (10, 0, 0),
                "{events:?}"
            );
            assert_eq!(s.customer_units[&(0, "ann".into())], 0);
        }
        let s = fold(&[hold(HoldStatus::Confirmed), hold(HoldStatus::Held)]);
        let sku = s.skus[0].as_ref().unwrap();
        assert_eq!((sku.available(), sku.held, sku.sold), (8, 0, 2));
        assert_eq!(s.customer_units[&(0, "ann".into())], 2);
    }

    #[test]
    fn limit_changes_win_by_version_not_arrival() {
        let mut s = fold(&[]);
        let sku = SkuId::from_index(0);
        s.apply(&Event::Operator {
            sku,
            delta: 0,
            version: 3,
            limit: LimitChange::Set(None),
        });
        s.apply(&Event::Operator {
            sku,
            delta: 0,
            version: 2,
            limit: LimitChange::Set(Some(1)),
        });
        let settled = s.skus[0].as_ref().unwrap();
        assert_eq!((settled.limit, settled.version), (None, 3));
    }

    #[test]
    fn checkpoint_carries_only_changes_and_pruning() {
        let mut s = fold(&[hold(HoldStatus::Held)]);
        let first = s.take_checkpoint();
        assert_eq!(
            (
                first.skus.len(),
                first.holds.len(),
                first.customer_units.len()
            ),
            (1, 1, 1)
        );
        assert!(s.take_checkpoint().is_empty());
        s.apply(&hold(HoldStatus::Cancelled));
        s.prune(1_000, 10, 10);
        let second = s.take_checkpoint();
        assert_eq!(second.removed_holds, [9]);
        assert_eq!(second.customer_units, [((0, "ann".into()), 0)]);
        assert!(s.customer_units.is_empty());
    }
}
