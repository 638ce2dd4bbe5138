//! What a checkpoint takes from the shadow: the reservation rows logged
//! since the last one (sorted and deduplicated off the writer's path), the
//! SKUs and rows marked dirty, and the buffers handed back for reuse.

use super::*;

impl Settled {
    /// Drops the rows that came from the store and were not changed since
    /// (after recovery has restored them into the engine): the shadow then
    /// holds only what the next checkpoint must write.
    pub fn forget_clean_holds(&mut self) {
        let dirty: FastSet<u64> = self.dirty_holds.iter().copied().collect();
        self.holds.retain(|id, _| dirty.contains(id));
        let dirty_keys = &self.dirty_keys;
        self.keys.retain(|key, _| dirty_keys.contains(key));
        let dirty_backorders = &self.dirty_backorders;
        self.backorders
            .retain(|key, _| dirty_backorders.contains(key));
        let dirty_leases = &self.dirty_leases;
        self.leases.retain(|lease, _| dirty_leases.contains(lease));
    }

    /// Marks the start (`true`) and end (`false`) of folding one batch.
    pub fn set_mid_batch(&mut self, mid_batch: bool) {
        self.mid_batch = mid_batch;
    }

    /// `take`, unless a batch was left half folded (the writer panicked in
    /// the middle of one): a checkpoint of that would write counts no
    /// journal cut ever had, and let the journal behind them go.
    pub fn checkpoint_if_whole(&mut self) -> Option<TakenCheckpoint> {
        (!self.mid_batch).then(|| self.take())
    }

    /// Takes what changed since the last call, materialised at once (tests
    /// and tools; the checkpointer takes under the lock and finishes off it).
    pub fn take_checkpoint(&mut self) -> Checkpoint {
        let (checkpoint, spare) = self.take().finish();
        self.recycle(spare);
        checkpoint
    }

    /// Takes what changed since the last call. Called under the shadow's
    /// lock, which the journal's writer needs for every batch: so the work
    /// here is per SKU, customer, backorder and lease changed, and the
    /// reservation rows and idempotency keys (one or more per purchase, a
    /// few million in a checkpoint of a busy sale) only change hands. They
    /// are sorted, deduplicated and materialised by `TakenCheckpoint::finish`,
    /// off the lock. (Doing that here held the lock for 1.5 s at 5.7M rows,
    /// and every request in `sync` waited behind it: #18's p99 stall.)
    fn take(&mut self) -> TakenCheckpoint {
        let mut checkpoint = Checkpoint {
            position: self.position,
            ..Checkpoint::default()
        };
        for index in self.dirty_skus.drain(..) {
            self.sku_dirty[index as usize] = false;
            if let Some(Some(sku)) = self.skus.get(index as usize) {
                checkpoint.skus.push((index, sku.clone()));
            }
        }
        // The rows move to the checkpoint: after it the store has them.
        self.dirty_holds.clear();
        let row_log = std::mem::replace(&mut self.row_log, std::mem::take(&mut self.spare_row_log));
        let holds = std::mem::take(&mut self.holds);
        self.dirty_keys.clear();
        let keys = std::mem::take(&mut self.keys);
        for key in self.dirty_customers.drain() {
            let units = self.customer_units.get(&key).copied().unwrap_or(0);
            if units == 0 {
                self.customer_units.remove(&key);
            }
            checkpoint.customer_units.push((key, units));
        }
        // Rows leave the shadow once taken (the store has them), as
        // reservation rows do; a later event of one starts a new row,
        // which supersedes the stored one (it only moves forward).
        for key in self.dirty_backorders.drain() {
            if let Some(row) = self.backorders.remove(&key) {
                checkpoint.backorders.push((key, row));
            }
        }
        checkpoint.backorders.sort_unstable_by_key(|(key, _)| *key);
        for lease in self.dirty_leases.drain() {
            if let Some(row) = self.leases.remove(&lease) {
                checkpoint.leases.push((lease, row));
            }
        }
        checkpoint.leases.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        TakenCheckpoint {
            checkpoint,
            row_log,
            holds,
            keys,
        }
    }

    /// Gives the row log's buffers back (emptied, capacity kept) for the
    /// checkpoint after next, so a sale's writer does not regrow them from
    /// nothing after every checkpoint.
    pub fn recycle(&mut self, spare: SpareBuffers) {
        debug_assert!(spare.row_log.rows.is_empty());
        self.spare_row_log = spare.row_log;
    }

    /// Puts a checkpoint's changes back (its save failed), keeping any
    /// row that moved on since.
    pub fn restore_unsaved(&mut self, checkpoint: Checkpoint) {
        for (index, _) in &checkpoint.skus {
            self.mark_sku_dirty(*index);
        }
        for (id, row) in checkpoint.holds {
            let newer = self
                .holds
                .get(&id)
                .is_none_or(|current| row.supersedes(current));
            if newer {
                self.holds.insert(id, row);
                self.dirty_holds.push(id);
            }
        }
        for ((sku, customer), _) in checkpoint.customer_units {
            self.dirty_customers.insert((sku, customer));
        }
        for (key, row) in checkpoint.backorders {
            self.put_backorder(key, row);
        }
        for (lease, row) in checkpoint.leases {
            self.put_lease(lease, row);
        }
        for key in checkpoint.keys {
            self.dirty_keys.insert(key.key.clone());
            self.keys.entry(key.key.clone()).or_insert(key);
        }
    }

    pub(super) fn mark_sku_dirty(&mut self, index: u32) {
        let index_usize = index as usize;
        if self.sku_dirty.len() <= index_usize {
            self.sku_dirty.resize(index_usize + 1, false);
        }
        if !self.sku_dirty[index_usize] {
            self.sku_dirty[index_usize] = true;
            self.dirty_skus.push(index);
        }
    }

    /// Marks everything clean (after loading from the store).
    pub fn mark_clean(&mut self) {
        self.dirty_skus.clear();
        self.sku_dirty.clear();
        self.dirty_holds.clear();
        self.dirty_customers.clear();
        self.dirty_keys.clear();
        self.dirty_backorders.clear();
        self.dirty_leases.clear();
    }
}

/// Append-only reservation rows with their lines and customers in shared
/// buffers: one push per hold event, no allocation per row, no hashing on
/// the writer's path. The checkpointer sorts and deduplicates.
#[derive(Clone, Debug, Default)]
pub(super) struct RowLog {
    rows: Vec<LoggedRow>,
    lines: Vec<Line>,
    amounts: Vec<LineAmounts>,
    customers: String,
}

#[derive(Clone, Copy, Debug)]
struct LoggedRow {
    id: u64,
    status: HoldStatus,
    at_ms: u64,
    deadline_ms: u64,
    limit_mask: u32,
    extensions: u8,
    lines: (u32, u32),
    /// Where its amounts are in `RowLog::amounts` (same length as its
    /// lines), for a record confirmed or refunded in part.
    amounts: Option<u32>,
    customer: Option<(u32, u32)>,
}

impl RowLog {
    pub(super) fn push(&mut self, hold: &HoldRef<'_>) {
        let first_line = self.lines.len() as u32;
        self.lines.extend(hold.lines());
        let customer = hold.customer.map(|c| {
            let start = self.customers.len() as u32;
            self.customers.push_str(c);
            (start, self.customers.len() as u32)
        });
        let amounts = hold.has_changes().then(|| {
            let start = self.amounts.len() as u32;
            self.amounts.extend(hold.changes().map(LineChange::after));
            start
        });
        self.rows.push(LoggedRow {
            id: hold.id.as_u64(),
            status: hold.status,
            at_ms: hold.at_ms,
            deadline_ms: hold.deadline_ms,
            limit_mask: hold.limit_mask,
            extensions: hold.extensions,
            lines: (first_line, self.lines.len() as u32),
            amounts,
            customer,
        });
    }

    /// The latest row of each reservation, materialised, in id order;
    /// empties the log (keeping its buffers' capacity).
    fn drain_latest(&mut self, out: &mut Vec<(u64, SettledHold)>) {
        // A stable sort, for its run detection: the log is a few sorted
        // runs per batch (each CPU's lane holds ids in slot order), which
        // it merges instead of partitioning from scratch.
        // Units refunded order a record's rows of one status and deadline
        // (refunds of part); rows of whole lines count 0, as
        // `SettledHold::order_key` does.
        let amounts = &self.amounts;
        let refunded = |row: &LoggedRow| {
            let count = (row.lines.1 - row.lines.0) as usize;
            row.amounts.map_or(0, |start| {
                let start = start as usize;
                let of_row = amounts[start..start + count].iter();
                of_row.map(|a| u64::from(a.refunded)).sum()
            })
        };
        // Ids first, and a row's place on its hold's path only between
        // rows of one hold (rare: a purchase is one row): a key made for
        // every comparison was most of the sort's cost in a server, where
        // a checkpoint's log is runs too short for the sort to merge them.
        let path = |row: &LoggedRow| order_key(row.status, row.deadline_ms, refunded(row));
        self.rows
            .sort_by(|a, b| a.id.cmp(&b.id).then_with(|| path(b).cmp(&path(a))));
        out.clear();
        out.reserve(self.rows.len());
        let mut last_id = None;
        for row in &self.rows {
            if last_id == Some(row.id) {
                continue;
            }
            last_id = Some(row.id);
            let (from, to) = row.lines;
            out.push((
                row.id,
                SettledHold {
                    status: row.status,
                    at_ms: row.at_ms,
                    deadline_ms: row.deadline_ms,
                    limit_mask: row.limit_mask,
                    customer: row
                        .customer
                        .map(|(a, b)| self.customers[a as usize..b as usize].into()),
                    lines: self.lines[from as usize..to as usize].to_vec(),
                    extensions: row.extensions,
                    amounts: row.amounts.map(|start| {
                        let start = start as usize;
                        self.amounts[start..start + (to - from) as usize].to_vec()
                    }),
                },
            ));
        }
        self.rows.clear();
        self.lines.clear();
        self.amounts.clear();
        self.customers.clear();
    }
}

/// What changed since the last checkpoint, ready for the store.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    pub position: Position,
    /// The feed events of the batches up to `position` not yet stored
    /// (the outbox rows), and the feed position that follows them.
    pub events: Vec<FeedEvent>,
    pub feed_next_position: u64,
    /// This data directory's feed id (the events' ids are made from it).
    pub feed_id: u64,
    /// Delete stored events older than this (ms) or beyond this many.
    pub events_retention: Option<EventsRetention>,
    pub skus: Vec<(u32, SettledSku)>,
    /// Rows to write, in id order; a row already stored with a later status
    /// never meets an earlier one here (the journal is a causal prefix).
    pub holds: Vec<(u64, SettledHold)>,
    /// Delete cancelled, expired and refunded rows whose status is older
    /// than the first value, and confirmed rows older than the second. Set
    /// only now and then (`RESERVATION_PRUNE_INTERVAL_MS`): the SQLite store
    /// keeps no index over reservations by time, so this is a scan.
    pub prune_before_ms: Option<(u64, u64)>,
    /// Units of 0 mean "delete the row".
    pub customer_units: Vec<((u32, Box<str>), i64)>,
    /// Owed units per (SKU id, reservation id); 0 means "delete the row".
    pub backorders: Vec<((u32, u64), SettledBackorder)>,
    pub keys: Vec<KeyEvent>,
    /// Leases by id; a closed one means "delete the row".
    pub leases: Vec<(Box<str>, SettledLease)>,
    /// Delete remembered idempotency keys created before this.
    pub prune_keys_before_ms: Option<u64>,
}

/// How long the outbox keeps events: both bounds apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsRetention {
    /// Delete events whose `at_ms` is before this.
    pub before_ms: u64,
    /// Keep at most this many (the newest).
    pub max_events: u64,
}

impl Checkpoint {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.skus.is_empty()
            && self.holds.is_empty()
            && self.customer_units.is_empty()
            && self.backorders.is_empty()
            && self.keys.is_empty()
            && self.leases.is_empty()
    }
}

/// A checkpoint taken from the shadow whose reservation rows and keys are
/// still raw: `finish` makes the `Checkpoint`, off the shadow's lock.
#[derive(Debug)]
pub struct TakenCheckpoint {
    checkpoint: Checkpoint,
    /// Rows the writer's fast path logged, in arrival order.
    row_log: RowLog,
    /// Rows of the other fold path (and of failed saves put back).
    holds: FastMap<u64, SettledHold>,
    keys: FastMap<Box<str>, KeyEvent>,
}

/// The buffers a finished checkpoint hands back to the shadow (`recycle`).
#[derive(Debug)]
pub struct SpareBuffers {
    row_log: RowLog,
}

impl TakenCheckpoint {
    /// The checkpoint, its rows in id order with one (the latest) per
    /// reservation, both fold paths merged, the later status winning.
    pub fn finish(self) -> (Checkpoint, SpareBuffers) {
        self.finish_into(Vec::new())
    }

    /// `finish`, its rows put in `holds` (emptied first, capacity kept: the
    /// checkpointer hands back the last checkpoint's, so a sale's
    /// checkpoints do not fault in fresh pages for a few million rows).
    pub fn finish_into(mut self, mut holds: Vec<(u64, SettledHold)>) -> (Checkpoint, SpareBuffers) {
        let mut checkpoint = self.checkpoint;
        // The store gets rows in id order: ids grow with time (slot-major),
        // so its B-tree takes them at its right edge instead of splitting
        // pages at random leaves (in a sale, a row per purchase: 7.2 ->
        // 3.1 us per row, examples/checkpoint_bench).
        self.row_log.drain_latest(&mut holds);
        if !self.holds.is_empty() {
            // Not the sale's case, where every row came by the fast path,
            // already sorted and deduplicated.
            let mut rows = self.holds;
            for (id, row) in holds.drain(..) {
                let newer = rows.get(&id).is_none_or(|current| row.supersedes(current));
                if newer {
                    rows.insert(id, row);
                }
            }
            holds.extend(rows);
            holds.sort_unstable_by_key(|(id, _)| *id);
        }
        checkpoint.holds = holds;
        debug_assert!(checkpoint.holds.windows(2).all(|w| w[0].0 < w[1].0));
        checkpoint.keys.extend(self.keys.into_values());
        let spare = SpareBuffers {
            row_log: self.row_log,
        };
        (checkpoint, spare)
    }
}
