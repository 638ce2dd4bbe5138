//! A checkpoint's writes, each table's rows in statements of many rows
//! (bound by index, sized once per count; the reservations' and events'
//! through `Reused`, which binds a parameter only when its value changed):
//! all inside the one transaction `save` opens, so the counts and the
//! outbox's events never disagree.

use super::binding::Reused;
use super::chunks;
use super::*;

/// Why the checkpoint's inserts say `OR FAIL`: a statement of many rows
/// that may ABORT (SQLite's default) halfway must undo its own rows and
/// keep the rest of the transaction, so SQLite copies every page it
/// touches into a statement journal first (~550 instructions a purchase,
/// callgrind, docs/benchmarks.md). FAIL keeps the rows already written
/// and stops; a checkpoint whose write fails is rolled back whole (`save`
/// never commits after an error), so the statement-level undo is never
/// used. (The upsert's DO UPDATE always ABORTs; it keeps its journal.)
const FAIL_NOT_ABORT: &str = "INSERT OR FAIL INTO";

/// An upsert of `rows` reservation rows. An upsert, not INSERT OR REPLACE:
/// REPLACE may delete before it inserts, so SQLite keeps a statement
/// journal for every row (a quarter of a checkpoint's cost in a sale). A
/// checkpoint names each id once, so no statement meets an id twice.
/// (The DO UPDATE always ABORTs, so this statement keeps its journal; in
/// a sale new rows go to chunks instead, `chunks.rs`.)
pub(super) fn upsert_reservations_sql(rows: usize) -> String {
    assert!((1..=ROWS_PER_STATEMENT).contains(&rows));
    let mut sql = String::from(
        "INSERT INTO hotstock_reservations (id, status, status_ms, deadline_ms, limit_mask, customer, lines, extensions) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, status_ms = excluded.status_ms,
           deadline_ms = excluded.deadline_ms, limit_mask = excluded.limit_mask,
           customer = excluded.customer, lines = excluded.lines, extensions = excluded.extensions",
    );
    sql
}

/// Binds one reservation as row `row` of an upsert statement.
pub(super) fn bind_reservation(
    statement: &mut Reused<'_>,
    row: usize,
    id: u64,
    hold: &SettledHold,
    lines: &mut String,
) -> rusqlite::Result<()> {
    let first = row * 8 + 1;
    encode_hold_lines_into(lines, &hold.lines, hold.amounts.as_deref());
    statement.int(first, as_stored(id))?;
    statement.text(first + 1, hold.status.as_str())?;
    statement.int(first + 2, hold.at_ms as i64)?;
    statement.int(first + 3, hold.deadline_ms as i64)?;
    statement.int(first + 4, i64::from(hold.limit_mask))?;
    statement.opt_text(first + 5, hold.customer.as_deref())?;
    // Text is copied at bind time (SQLITE_TRANSIENT), so `lines` is free
    // for the next row at once.
    statement.text(first + 6, lines.as_str())?;
    statement.int(first + 7, i64::from(hold.extensions))
}

/// Which of the outbox's columns a statement binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventShape {
    /// Every column (`EVENT_COLUMNS`).
    Wide = 0,
    /// A reservation's event (no operator change, fill or record-less
    /// units): the columns such an event can set (`RESERVATION_EVENT_COLUMNS`);
    /// the rest are left to their default, NULL, which is what the wide
    /// statement would bind them to.
    Reservation = 1,
}

/// The columns of a reservation's event, in `EVENT_COLUMNS`' order: the
/// first 15, then safety stock and backordered units.
pub(super) const RESERVATION_EVENT_COLUMNS: &str = "position, id, type, at_ms, sku, available, \
     held, sold, received, reservation, status, from_status, customer, lines, deadline_ms, \
     safety_stock, backordered";
pub(super) const RESERVATION_EVENT_COLUMN_COUNT: usize = 17;

impl EventShape {
    pub(super) fn of(event: &FeedEvent) -> EventShape {
        let narrow = event.operator.is_none() && event.fill.is_none() && event.units.is_none();
        if narrow {
            EventShape::Reservation
        } else {
            EventShape::Wide
        }
    }

    fn columns(self) -> (&'static str, usize) {
        match self {
            EventShape::Wide => (EVENT_COLUMNS, EVENT_COLUMN_COUNT),
            EventShape::Reservation => (RESERVATION_EVENT_COLUMNS, RESERVATION_EVENT_COLUMN_COUNT),
        }
    }
}

pub(super) fn insert_events_sql(shape: EventShape, rows: usize) -> String {
    assert!((1..=EVENTS_PER_STATEMENT).contains(&rows));
    let (columns, count) = shape.columns();
    let mut sql = format!("{FAIL_NOT_ABORT} hotstock_events ({columns}) VALUES ");
    let row = format!("({})", vec!["?"; count].join(", "));
    sql.push_str(&vec![row; rows].join(","));
    sql
}

/// Text an event's row needs made, in buffers reused from row to row.
#[derive(Default)]
pub(super) struct EventText {
    id: String,
    lines: String,
}

/// Binds one event as row `row` of an insert statement of `shape`
/// (`EventShape::of(event)`, or `Wide` for any event), its position as
/// `position` (`position_to_bind`: NULL lets SQLite number the row).
pub(super) fn bind_event(
    statement: &mut Reused<'_>,
    shape: EventShape,
    row: usize,
    event: &FeedEvent,
    feed_id: u64,
    text: &mut EventText,
    position: Option<i64>,
) -> rusqlite::Result<()> {
    let at = row * shape.columns().1 + 1;
    text.id.clear();
    push_event_id(&mut text.id, feed_id, event.position);
    let counts = &event.counts;
    statement.opt_int(at, position)?;
    statement.text(at + 1, text.id.as_str())?;
    statement.text(at + 2, event.kind.as_str())?;
    statement.int(at + 3, event.at_ms as i64)?;
    statement.text(at + 4, &event.sku)?;
    statement.int(at + 5, counts.available)?;
    statement.int(at + 6, counts.held)?;
    statement.int(at + 7, counts.sold)?;
    statement.int(at + 8, counts.received)?;
    let reservation = event.reservation.as_deref();
    if let Some(r) = reservation {
        encode_feed_lines_into(&mut text.lines, r);
    }
    let fill = event.fill.as_ref();
    let public_id = reservation
        .map(|r| &*r.public_id)
        .or(fill.map(|f| &*f.public_id));
    statement.opt_text(at + 9, public_id)?;
    statement.opt_text(at + 10, reservation.map(|r| r.status.as_str()))?;
    statement.opt_text(
        at + 11,
        reservation.and_then(|r| r.from).map(|s| s.as_str()),
    )?;
    statement.opt_text(at + 12, reservation.and_then(|r| r.customer.as_deref()))?;
    statement.opt_text(at + 13, reservation.map(|_| text.lines.as_str()))?;
    statement.opt_int(at + 14, reservation.map(|r| r.deadline_ms as i64))?;
    if shape == EventShape::Reservation {
        debug_assert_eq!(EventShape::of(event), shape);
        statement.int(at + 15, counts.safety_stock)?;
        return statement.int(at + 16, counts.backordered);
    }
    let operator = event.operator.as_ref();
    statement.opt_int(at + 15, operator.map(|o| o.delta))?;
    statement.opt_int(at + 16, operator.map(|o| o.version as i64))?;
    statement.opt_int(at + 17, operator.map(|o| i64::from(o.limit.is_some())))?;
    statement.opt_int(
        at + 18,
        operator.and_then(|o| o.limit.flatten()).map(i64::from),
    )?;
    let units = event.units.or(fill.map(|f| f.units));
    statement.opt_int(at + 19, units.map(i64::from))?;
    statement.opt_int(at + 20, operator.map(|o| i64::from(o.low_stock.is_some())))?;
    statement.opt_int(
        at + 21,
        operator.and_then(|o| o.low_stock.flatten()).map(i64::from),
    )?;
    statement.int(at + 22, counts.safety_stock)?;
    statement.int(at + 23, counts.backordered)?;
    statement.opt_int(at + 24, fill.map(|f| i64::from(f.owed_after)))?;
    let window = operator.and_then(|o| o.window);
    statement.opt_int(at + 25, operator.map(|o| i64::from(o.window.is_some())))?;
    let bound = |ms: Option<u64>| ms.map(rows::as_stored);
    statement.opt_int(at + 26, bound(window.and_then(|w| w.starts_at_ms)))?;
    statement.opt_int(at + 27, bound(window.and_then(|w| w.ends_at_ms)))
}

/// The outbox rows of the checkpoint's batches, then retention.
pub(super) fn write_events(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    // As for reservations: many rows per statement, text bound borrowed
    // (copied at bind time), no row struct of owned strings per event. A
    // sale writes one event per purchase (examples/checkpoint_bench.rs and
    // benches/http/callgrind.sh, docs/benchmarks.md), every one a
    // reservation's: those go in statements that leave the 11 columns such
    // an event never sets to their default (NULL) instead of binding NULL
    // to each. Rows go in position order, runs of one shape at a time.
    let mut writer = EventWriter::new(tx, checkpoint.feed_id, fail)?;
    for run in checkpoint
        .events
        .chunk_by(|a, b| EventShape::of(a) == EventShape::of(b))
    {
        writer.write_run(EventShape::of(&run[0]), run)?;
    }
    check_numbering(tx, checkpoint, fail)?;
    if let Some(retention) = checkpoint.events_retention {
        // Positions and times grow together (batch times never go back), so
        // both bounds delete a prefix: one range of the primary key. (One
        // DELETE with the two bounds OR-ed scanned the whole table at every
        // checkpoint: callgrind, docs/benchmarks.md.) The first event young
        // enough is found by a walk from the oldest: it reads only the rows
        // about to go, and one more.
        let first_young: Option<i64> = tx
            .query_row(
                "SELECT position FROM hotstock_events WHERE at_ms >= ?1 ORDER BY position LIMIT 1",
                [retention.before_ms as i64],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| fail("finding old events", e))?;
        let by_age = first_young.map_or(checkpoint.feed_next_position as i64 - 1, |p| p - 1);
        let through = delete_through_by_count(checkpoint, retention.max_events).max(by_age);
        tx.execute(
            "DELETE FROM hotstock_events WHERE position <= ?1",
            [through],
        )
        .map_err(|e| fail("pruning old events", e))?;
    }
    Ok(())
}

/// The position to bind for `event`: NULL when it follows the row written
/// just before it, so SQLite numbers it (the table's largest position + 1,
/// an append at the B-tree's right edge, without the seek an explicit key
/// costs: ~1,250 instructions a row, docs/benchmarks.md); the position
/// itself otherwise. `next` is the position that follows the last row
/// written. `write_events` checks the numbering afterwards.
fn position_to_bind(next: &mut Option<u64>, event: &FeedEvent) -> Option<i64> {
    let follows = *next == Some(event.position);
    *next = Some(event.position + 1);
    (!follows).then_some(event.position as i64)
}

/// The rows SQLite numbered got the positions their events have: the
/// table's largest position is the last event's. (A row already in the
/// table past the first event written would have shifted every number
/// after it, and shows here; one at a position bound explicitly fails its
/// insert.) The transaction is not committed otherwise.
fn check_numbering(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let Some(last) = checkpoint.events.last() else {
        return Ok(());
    };
    let largest: Option<i64> = tx
        .query_row("SELECT MAX(position) FROM hotstock_events", [], |row| {
            row.get(0)
        })
        .map_err(|e| fail("checking the events' positions", e))?;
    if largest == Some(last.position as i64) {
        return Ok(());
    }
    let message = format!(
        "the outbox's largest position is {largest:?} after writing events through {}; \
         hotstock_events holds rows hotstock did not write",
        last.position
    );
    let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT);
    Err(fail(
        "checking the events' positions",
        rusqlite::Error::SqliteFailure(code, Some(message)),
    ))
}

/// Insert statements of both shapes, prepared once per checkpoint.
struct EventWriter<'t> {
    /// `[shape][0]`: `EVENTS_PER_STATEMENT` rows; `[shape][1]`: one row.
    statements: [[Reused<'t>; 2]; 2],
    feed_id: u64,
    text: EventText,
    fail: Fail<'t>,
    /// The position after the last row written (`position_to_bind`).
    next: Option<u64>,
}

impl<'t> EventWriter<'t> {
    fn new(tx: &'t Transaction<'_>, feed_id: u64, fail: Fail<'t>) -> Result<Self, StoreError> {
        let prepare = |shape, rows| {
            tx.prepare_cached(&insert_events_sql(shape, rows))
                .map(Reused::new)
                .map_err(|e| fail("preparing event writes", e))
        };
        Ok(EventWriter {
            statements: [
                [
                    prepare(EventShape::Wide, EVENTS_PER_STATEMENT)?,
                    prepare(EventShape::Wide, 1)?,
                ],
                [
                    prepare(EventShape::Reservation, EVENTS_PER_STATEMENT)?,
                    prepare(EventShape::Reservation, 1)?,
                ],
            ],
            feed_id,
            text: EventText::default(),
            fail,
            next: None,
        })
    }

    /// Writes `run`, events all of `shape`: full statements, then the tail
    /// one by one.
    fn write_run(&mut self, shape: EventShape, run: &[FeedEvent]) -> Result<(), StoreError> {
        let fail = self.fail;
        let [many, one] = &mut self.statements[shape as usize];
        let mut groups = run.chunks_exact(EVENTS_PER_STATEMENT);
        for group in &mut groups {
            for (row, event) in group.iter().enumerate() {
                let position = position_to_bind(&mut self.next, event);
                bind_event(
                    many,
                    shape,
                    row,
                    event,
                    self.feed_id,
                    &mut self.text,
                    position,
                )
                .map_err(|e| fail("writing an event", e))?;
            }
            many.execute().map_err(|e| fail("writing events", e))?;
        }
        for event in groups.remainder() {
            let position = position_to_bind(&mut self.next, event);
            bind_event(one, shape, 0, event, self.feed_id, &mut self.text, position)
                .map_err(|e| fail("writing an event", e))?;
            one.execute().map_err(|e| fail("writing an event", e))?;
        }
        Ok(())
    }
}

// Long by design: one upsert of every SKU column, bound column by column.
pub(super) fn write_skus(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let mut put_sku = tx
        .prepare_cached(
            "INSERT INTO hotstock_skus (id, name, available, held, sold, received, version, per_customer_limit, limit_version,
               low_stock_threshold, low_stock_version, safety_stock, safety_stock_version,
               components, kit_version, backordered, backorder_limit, backorder_until_ms,
               backorder_version, located, location_priority, location_priority_version,
               sale_starts_at_ms, sale_ends_at_ms, sale_window_version, room_admit_per_s,
               room_overbook_milli, room_admission_ttl_ms, room_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
               ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, available = excluded.available,
               held = excluded.held, sold = excluded.sold, received = excluded.received,
               version = excluded.version, per_customer_limit = excluded.per_customer_limit,
               limit_version = excluded.limit_version, low_stock_threshold = excluded.low_stock_threshold,
               low_stock_version = excluded.low_stock_version, safety_stock = excluded.safety_stock,
               safety_stock_version = excluded.safety_stock_version, components = excluded.components,
               kit_version = excluded.kit_version, backordered = excluded.backordered,
               backorder_limit = excluded.backorder_limit,
               backorder_until_ms = excluded.backorder_until_ms,
               backorder_version = excluded.backorder_version, located = excluded.located,
               location_priority = excluded.location_priority,
               location_priority_version = excluded.location_priority_version,
               sale_starts_at_ms = excluded.sale_starts_at_ms,
               sale_ends_at_ms = excluded.sale_ends_at_ms,
               sale_window_version = excluded.sale_window_version,
               room_admit_per_s = excluded.room_admit_per_s,
               room_overbook_milli = excluded.room_overbook_milli,
               room_admission_ttl_ms = excluded.room_admission_ttl_ms,
               room_version = excluded.room_version",
        )
        .map_err(|e| fail("preparing SKU writes", e))?;
    for (id, sku) in &checkpoint.skus {
        put_sku
            .execute(params![
                *id as i64,
                &*sku.name,
                sku.available(),
                sku.held,
                sku.sold,
                sku.received,
                sku.version as i64,
                sku.limit.map(i64::from),
                sku.limit_version as i64,
                sku.low_stock.map(i64::from),
                sku.low_stock_version as i64,
                sku.safety_stock as i64,
                sku.safety_stock_version as i64,
                rows::components_text(sku),
                sku.kit_version as i64,
                sku.backordered,
                sku.backorder.limit as i64,
                sku.backorder.until_ms.map(rows::as_stored),
                sku.backorder_version as i64,
                i64::from(sku.located),
                sku.priority.map(i64::from),
                sku.priority_version as i64,
                sku.sale_window.starts_at_ms.map(rows::as_stored),
                sku.sale_window.ends_at_ms.map(rows::as_stored),
                sku.sale_window_version as i64,
                sku.waiting_room.map(|r| i64::from(r.admit_per_s)),
                sku.waiting_room.map(|r| i64::from(r.overbook_milli)),
                sku.waiting_room.map(|r| r.admission_ttl_ms as i64),
                sku.waiting_room_version as i64
            ])
            .map_err(|e| fail("writing a SKU", e))?;
    }
    Ok(())
}

pub(super) fn write_reservations(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    // In a sale every purchase is a new reservation: rows above every
    // stored id go to chunks, many to a row (`chunks.rs`, whose rules keep
    // the two tables exact); the rest (updates, and a reused slot's id
    // below a newer one) are upserts. The rows are in id order, and the
    // ids `may_chunk` takes are one range of it, so the two come in runs.
    let largest = chunks::largest_stored_id(tx, fail)?;
    let chunked = |id: u64| chunks::may_chunk(id, largest);
    let mut upserts = ReservationWriter::new(tx, fail)?;
    for run in checkpoint
        .holds
        .chunk_by(|a, b| chunked(a.0) == chunked(b.0))
    {
        if chunked(run[0].0) {
            chunks::write_chunks(tx, run, fail)?;
        } else {
            upserts.write_run(run)?;
        }
    }
    if let Some((ended_before, confirmed_before)) = checkpoint.prune_before_ms {
        const PRUNED: &str = "(status IN ('cancelled', 'expired', 'refunded') AND status_ms <= ?1)
             OR (status = 'confirmed' AND status_ms <= ?2)";
        let bounds = params![ended_before as i64, confirmed_before as i64];
        // Chunk entries of the rows about to go are older states of them
        // (`chunks.rs`): they go first, or they would come back.
        let mut going = tx
            .prepare(&format!(
                "SELECT id FROM hotstock_reservations WHERE {PRUNED}"
            ))
            .map_err(|e| fail("finding old reservations", e))?;
        let going: Vec<u64> = going
            .query_map(bounds, |row| row.get::<_, i64>(0).map(rows::from_stored))
            .and_then(|ids| ids.collect())
            .map_err(|e| fail("finding old reservations", e))?;
        chunks::prune_chunks(tx, &going, (ended_before, confirmed_before), fail)?;
        tx.execute(
            &format!("DELETE FROM hotstock_reservations WHERE {PRUNED}"),
            bounds,
        )
        .map_err(|e| fail("pruning old reservations", e))?;
    }
    Ok(())
}

/// Reservation upserts, prepared once per checkpoint.
struct ReservationWriter<'t> {
    /// `ROWS_PER_STATEMENT` rows, and one row.
    many: Reused<'t>,
    one: Reused<'t>,
    /// The encoded lines, a buffer reused from row to row.
    lines: String,
    fail: Fail<'t>,
}

impl<'t> ReservationWriter<'t> {
    fn new(tx: &'t Transaction<'_>, fail: Fail<'t>) -> Result<Self, StoreError> {
        let prepare = |rows| {
            tx.prepare_cached(&upsert_reservations_sql(rows))
                .map(Reused::new)
                .map_err(|e| fail("preparing reservation writes", e))
        };
        Ok(ReservationWriter {
            many: prepare(ROWS_PER_STATEMENT)?,
            one: prepare(1)?,
            lines: String::new(),
            fail,
        })
    }

    /// Writes `run`: many rows per statement, so SQLite's per-statement
    /// work (step, halt, reset) is paid once per `ROWS_PER_STATEMENT`; the
    /// tail one by one.
    fn write_run(&mut self, run: &[(u64, SettledHold)]) -> Result<(), StoreError> {
        let fail = self.fail;
        let mut groups = run.chunks_exact(ROWS_PER_STATEMENT);
        for group in &mut groups {
            for (row, (id, hold)) in group.iter().enumerate() {
                bind_reservation(&mut self.many, row, *id, hold, &mut self.lines)
                    .map_err(|e| fail("writing a reservation", e))?;
            }
            self.many
                .execute()
                .map_err(|e| fail("writing reservations", e))?;
        }
        for (id, hold) in groups.remainder() {
            bind_reservation(&mut self.one, 0, *id, hold, &mut self.lines)
                .map_err(|e| fail("writing a reservation", e))?;
            self.one
                .execute()
                .map_err(|e| fail("writing a reservation", e))?;
        }
        Ok(())
    }
}

pub(super) fn write_customer_units(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let mut put_units = tx
        .prepare_cached("INSERT OR REPLACE INTO hotstock_customer_units (sku, customer, units) VALUES (?1, ?2, ?3)")
        .map_err(|e| fail("preparing customer-unit writes", e))?;
    let mut remove_units = tx
        .prepare_cached("DELETE FROM hotstock_customer_units WHERE sku = ?1 AND customer = ?2")
        .map_err(|e| fail("preparing customer-unit deletes", e))?;
    for ((sku, customer), units) in &checkpoint.customer_units {
        if *units == 0 {
            remove_units
                .execute(params![*sku as i64, &**customer])
                .map_err(|e| fail("deleting customer units", e))?;
        } else {
            put_units
                .execute(params![*sku as i64, &**customer, *units])
                .map_err(|e| fail("writing customer units", e))?;
        }
    }
    Ok(())
}

pub(super) fn write_backorders(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let mut put = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO hotstock_backorders (sku, reservation, ticket, owed, sold)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(|e| fail("preparing backorder writes", e))?;
    let mut remove = tx
        .prepare_cached("DELETE FROM hotstock_backorders WHERE sku = ?1 AND reservation = ?2")
        .map_err(|e| fail("preparing backorder deletes", e))?;
    for (key, row) in &checkpoint.backorders {
        let row = BackorderRow::of(*key, row);
        if row.owed == 0 {
            remove
                .execute(params![row.sku, row.reservation])
                .map_err(|e| fail("deleting a backorder", e))?;
        } else {
            put.execute(params![
                row.sku,
                row.reservation,
                row.ticket,
                row.owed,
                i64::from(row.sold)
            ])
            .map_err(|e| fail("writing a backorder", e))?;
        }
    }
    Ok(())
}

pub(super) fn write_leases(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let mut put = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO hotstock_leases (id, sku, granted, returned)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(|e| fail("preparing lease writes", e))?;
    let mut remove = tx
        .prepare_cached("DELETE FROM hotstock_leases WHERE id = ?1")
        .map_err(|e| fail("preparing lease deletes", e))?;
    for (id, row) in &checkpoint.leases {
        if LeaseRow::is_closed(row) {
            remove
                .execute(params![&**id])
                .map_err(|e| fail("deleting a lease", e))?;
            continue;
        }
        let row = LeaseRow::of(id, row);
        put.execute(params![row.id, row.sku, row.granted, row.returning])
            .map_err(|e| fail("writing a lease", e))?;
    }
    Ok(())
}

pub(super) fn write_keys(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let mut put_key = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO hotstock_idempotency (key, fingerprint, created_ms, reservation, status, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(|e| fail("preparing idempotency writes", e))?;
    for key in &checkpoint.keys {
        put_key
            .execute(params![
                &*key.key,
                as_stored(key.fingerprint),
                key.created_ms as i64,
                as_stored(key.reservation.as_u64()),
                key.status.as_str(),
                key.expires_at_ms as i64
            ])
            .map_err(|e| fail("writing an idempotency key", e))?;
    }
    if let Some(before) = checkpoint.prune_keys_before_ms {
        tx.execute(
            "DELETE FROM hotstock_idempotency WHERE created_ms <= ?1",
            [before as i64],
        )
        .map_err(|e| fail("pruning idempotency keys", e))?;
    }
    Ok(())
}

pub(super) fn write_position(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let mut put_meta = tx
        .prepare_cached("INSERT OR REPLACE INTO hotstock_meta (key, value) VALUES (?1, ?2)")
        .map_err(|e| fail("preparing meta writes", e))?;
    put_meta
        .execute(params![
            "position_segment",
            checkpoint.position.segment as i64
        ])
        .map_err(|e| fail("writing the position", e))?;
    put_meta
        .execute(params![
            "position_offset",
            checkpoint.position.offset as i64
        ])
        .map_err(|e| fail("writing the position", e))?;
    put_meta
        .execute(params![FEED_NEXT_KEY, checkpoint.feed_next_position as i64])
        .map_err(|e| fail("writing the feed position", e))?;
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn event_at(position: u64) -> FeedEvent {
        FeedEvent {
            position,
            kind: crate::durable::feed::FeedKind::SkuChanged,
            at_ms: 0,
            sku: "tee".into(),
            counts: Default::default(),
            reservation: None,
            operator: None,
            units: None,
            fill: None,
        }
    }

    #[test]
    fn a_position_is_bound_only_where_it_does_not_follow_the_row_before() {
        let mut next = None;
        let bound: Vec<Option<i64>> = [5, 6, 7, 10, 11, 11, 3]
            .into_iter()
            .map(|p| position_to_bind(&mut next, &event_at(p)))
            .collect();
        // The first, a gap, a repeat and a step back are bound: SQLite
        // would number none of them right.
        assert_eq!(
            bound,
            [Some(5), None, None, Some(10), None, Some(11), Some(3)]
        );
    }

    #[test]
    fn a_reservation_statement_names_its_columns_once_per_parameter() {
        let sql = insert_events_sql(EventShape::Reservation, 2);
        let columns = RESERVATION_EVENT_COLUMNS.split(',').count();
        assert_eq!(columns, RESERVATION_EVENT_COLUMN_COUNT);
        assert_eq!(sql.matches('?').count(), 2 * columns);
        // Every column it names is one of the table's, in the same order.
        let all: Vec<&str> = EVENT_COLUMNS.split(',').map(str::trim).collect();
        let named: Vec<usize> = RESERVATION_EVENT_COLUMNS
            .split(',')
            .map(|c| all.iter().position(|a| *a == c.trim()).unwrap())
            .collect();
        assert!(named.windows(2).all(|w| w[0] < w[1]), "{named:?}");
    }
}
