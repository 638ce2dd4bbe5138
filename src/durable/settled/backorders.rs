//! The fold's side of backorders: the counts a hold owing units moves, its
//! queue rows, and the fills a restock makes.

use super::*;

impl Settled {
    /// `fold_counts` for a record with a line taken past zero: each line's
    /// effect counts its owed units as backordered, not held or sold
    /// (`effect_owed`). Whole lines (`changes` `None`) are all sold on
    /// confirm, all back on refund.
    pub(super) fn fold_owed_counts(
        &mut self,
        from: Option<HoldStatus>,
        to: HoldStatus,
        (lines, changes): (&[Line], Option<&[LineChange]>),
        owed: &[LineOwed],
        limit_mask: u32,
        customer: Option<&str>,
    ) {
        for (index, (line, owed)) in lines.iter().zip(owed).enumerate() {
            let change = changes.map_or_else(
                || LineChange::whole(to, line.quantity),
                |changes| changes[index],
            );
            let (q, c) = (line.quantity, change.confirmed);
            let before = effect_owed(from, q, c, change.refunded_before, owed.before);
            let after = effect_owed(Some(to), q, c, change.refunded_after, owed.after);
            let delta = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
            self.sku_mut(line.sku.index()).backordered += after.3 - before.3;
            self.fold_line(index, *line, delta, limit_mask, customer);
        }
    }

    /// The backorder rows a hold event with owed units leaves.
    pub(super) fn fold_owed_rows(
        &mut self,
        id: u64,
        ticket: u64,
        to: HoldStatus,
        lines: &[Line],
        owed: &[LineOwed],
    ) {
        for (line, owed) in lines.iter().zip(owed) {
            if owed.before == 0 && owed.after == 0 {
                continue;
            }
            let row = SettledBackorder {
                ticket,
                owed: owed.after,
                sold: to == HoldStatus::Confirmed,
                rank: rank(to),
            };
            self.put_backorder((line.sku.index(), id), row);
        }
    }

    pub(super) fn fold_fill(&mut self, sku: u32, fill: Fill) {
        let entry = self.sku_mut(sku);
        let units = i64::from(fill.units);
        if fill.sold {
            entry.sold += units;
        } else {
            entry.held += units;
        }
        entry.backordered -= units;
        let row = SettledBackorder {
            ticket: fill.ticket,
            owed: fill.owed_after,
            sold: fill.sold,
            rank: if fill.sold { 2 } else { 1 },
        };
        self.put_backorder((sku, fill.id.as_u64()), row);
    }

    pub(super) fn put_backorder(&mut self, key: (u32, u64), row: SettledBackorder) {
        let newer = self
            .backorders
            .get(&key)
            .is_none_or(|current| row.supersedes(current));
        if newer {
            self.backorders.insert(key, row);
            self.dirty_backorders.insert(key);
        }
    }
}
