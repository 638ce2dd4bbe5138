//! A checkpoint's writes, each table's rows in statements of many rows,
//! all inside the one transaction `save` opens.

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

use crate::durable::settled::SettledHold;

use super::*;

/// Reservation rows per upsert statement (7 parameters each).
pub(super) const RESERVATIONS_PER_STATEMENT: usize = 128;

/// A reservation row's values, in the upsert's column order.
pub(super) type ReservationValues<'a> = (i64, &'a str, i64, i64, i64, Option<&'a str>, String, i64);

/// `($1, ..., $columns), ...` for `rows` rows.
pub(super) fn values_sql(columns: usize, rows: usize) -> String {
    let mut sql = String::new();
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// The outbox's column types, in `EVENT_COLUMNS` order, for a binary
/// `COPY` (which sends values as they are, so each must be the column's
/// own type).
const EVENT_COLUMN_TYPES: [Type; EVENT_COLUMN_COUNT] = [
    Type::INT8, // position
    Type::TEXT, // id
    Type::TEXT, // type
    Type::INT8, // at_ms
    Type::TEXT, // sku
    Type::INT8, // available
    Type::INT8, // held
    Type::INT8, // sold
    Type::INT8, // received
    Type::TEXT, // reservation
    Type::TEXT, // status
    Type::TEXT, // from_status
    Type::TEXT, // customer
    Type::TEXT, // lines
    Type::INT8, // deadline_ms
    Type::INT8, // delta
    Type::INT8, // version
    Type::INT8, // limit_set
    Type::INT8, // per_customer_limit
    Type::INT8, // units
    Type::INT8, // low_stock_set
    Type::INT8, // low_stock_threshold
    Type::INT8, // safety_stock
    Type::INT8, // backordered
    Type::INT8, // owed
    Type::INT8, // window_set
    Type::INT8, // sale_starts_at_ms
    Type::INT8, // sale_ends_at_ms
];

/// The outbox rows of the checkpoint's batches, then retention.
// Long by design: an outbox row's columns named one by one.
pub(super) fn write_events(
    tx: &mut Transaction<'_>,
    s: &str,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    // Every outbox row is new: one binary COPY streams them all, where
    // INSERTs of many rows each cost a statement's parse, plan and round
    // trip and bound every value through a parameter.
    if !checkpoint.events.is_empty() {
        let sink = tx
            .copy_in(&format!(
                "COPY {s}.hotstock_events ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .map_err(|e| fail("writing events", e))?;
        let mut writer = BinaryCopyInWriter::new(sink, &EVENT_COLUMN_TYPES);
        for event in &checkpoint.events {
            let r = EventRow::of(event, checkpoint.feed_id);
            writer
                .write(&[
                    &r.position,
                    &r.id,
                    &r.kind,
                    &r.at_ms,
                    &r.sku,
                    &r.available,
                    &r.held,
                    &r.sold,
                    &r.received,
                    &r.reservation,
                    &r.status,
                    &r.from_status,
                    &r.customer,
                    &r.lines,
                    &r.deadline_ms,
                    &r.delta,
                    &r.version,
                    &r.limit_set,
                    &r.per_customer_limit,
                    &r.units,
                    &r.low_stock_set,
                    &r.low_stock_threshold,
                    &r.safety_stock,
                    &r.backordered,
                    &r.owed,
                    &r.window_set,
                    &r.sale_starts_at_ms,
                    &r.sale_ends_at_ms,
                ])
                .map_err(|e| fail("writing events", e))?;
        }
        writer.finish().map_err(|e| fail("writing events", e))?;
    }
    if let Some(retention) = checkpoint.events_retention {
        // Positions and times grow together: both bounds delete a prefix,
        // one range of the primary key (see the SQLite store).
        let first_young = tx
            .query_opt(
                &format!(
                    "SELECT position FROM {s}.hotstock_events WHERE at_ms >= $1 ORDER BY position LIMIT 1"
                ),
                &[&(retention.before_ms as i64)],
            )
            .map_err(|e| fail("finding old events", e))?;
        let first_young: Option<i64> = match first_young {
            Some(row) => Some(row.try_get(0).map_err(|e| fail("finding old events", e))?),
            None => None,
        };
        let by_age = first_young.map_or(checkpoint.feed_next_position as i64 - 1, |p| p - 1);
        let through = delete_through_by_count(checkpoint, retention.max_events).max(by_age);
        tx.execute(
            &format!("DELETE FROM {s}.hotstock_events WHERE position <= $1"),
            &[&through],
        )
        .map_err(|e| fail("pruning old events", e))?;
    }
    Ok(())
}

/// Names what failed, for the checkpoint's error.
pub(super) type Fail<'a> = &'a dyn Fn(&str, postgres::Error) -> StoreError;

// Long by design: one upsert of every SKU column, bound column by column.
pub(super) fn write_skus(
    tx: &mut Transaction<'_>,
    s: &str,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let put_sku = tx
        .prepare(&format!(
            "INSERT INTO {s}.hotstock_skus (id, name, available, held, sold, received, version, per_customer_limit, limit_version,
               low_stock_threshold, low_stock_version, safety_stock, safety_stock_version,
               components, kit_version, backordered, backorder_limit, backorder_until_ms,
               backorder_version, located, location_priority, location_priority_version,
               sale_starts_at_ms, sale_ends_at_ms, sale_window_version, room_admit_per_s,
               room_overbook_milli, room_admission_ttl_ms, room_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
               $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, available = EXCLUDED.available,
               held = EXCLUDED.held, sold = EXCLUDED.sold, received = EXCLUDED.received,
               version = EXCLUDED.version, per_customer_limit = EXCLUDED.per_customer_limit,
               limit_version = EXCLUDED.limit_version, low_stock_threshold = EXCLUDED.low_stock_threshold,
               low_stock_version = EXCLUDED.low_stock_version, safety_stock = EXCLUDED.safety_stock,
               safety_stock_version = EXCLUDED.safety_stock_version, components = EXCLUDED.components,
               kit_version = EXCLUDED.kit_version, backordered = EXCLUDED.backordered,
               backorder_limit = EXCLUDED.backorder_limit,
               backorder_until_ms = EXCLUDED.backorder_until_ms,
               backorder_version = EXCLUDED.backorder_version, located = EXCLUDED.located,
               location_priority = EXCLUDED.location_priority,
               location_priority_version = EXCLUDED.location_priority_version,
               sale_starts_at_ms = EXCLUDED.sale_starts_at_ms,
               sale_ends_at_ms = EXCLUDED.sale_ends_at_ms,
               sale_window_version = EXCLUDED.sale_window_version,
               room_admit_per_s = EXCLUDED.room_admit_per_s,
               room_overbook_milli = EXCLUDED.room_overbook_milli,
               room_admission_ttl_ms = EXCLUDED.room_admission_ttl_ms,
               room_version = EXCLUDED.room_version"
        ))
        .map_err(|e| fail("preparing SKU writes", e))?;
    for (id, sku) in &checkpoint.skus {
        let limit = sku.limit.map(i64::from);
        let low_stock = sku.low_stock.map(i64::from);
        let components = rows::components_text(sku);
        let room = sku.waiting_room;
        tx.execute(
            &put_sku,
            &[
                &(*id as i64),
                &&*sku.name,
                &sku.available(),
                &sku.held,
                &sku.sold,
                &sku.received,
                &(sku.version as i64),
                &limit,
                &(sku.limit_version as i64),
                &low_stock,
                &(sku.low_stock_version as i64),
                &(sku.safety_stock as i64),
                &(sku.safety_stock_version as i64),
                &components,
                &(sku.kit_version as i64),
                &sku.backordered,
                &(sku.backorder.limit as i64),
                &sku.backorder.until_ms.map(rows::as_stored),
                &(sku.backorder_version as i64),
                &i64::from(sku.located),
                &sku.priority.map(i64::from),
                &(sku.priority_version as i64),
                &sku.sale_window.starts_at_ms.map(rows::as_stored),
                &sku.sale_window.ends_at_ms.map(rows::as_stored),
                &(sku.sale_window_version as i64),
                &room.map(|r| i64::from(r.admit_per_s)),
                &room.map(|r| i64::from(r.overbook_milli)),
                &room.map(|r| r.admission_ttl_ms as i64),
                &(sku.waiting_room_version as i64),
            ],
        )
        .map_err(|e| fail("writing a SKU", e))?;
    }
    Ok(())
}

/// The reservation columns both writes name, in this order.
const RESERVATION_COLUMNS: &str =
    "id, status, status_ms, deadline_ms, limit_mask, customer, lines, extensions";

/// The reservations' column types, in `RESERVATION_COLUMNS` order.
const RESERVATION_COLUMN_TYPES: [Type; 8] = [
    Type::INT8, // id
    Type::TEXT, // status
    Type::INT8, // status_ms
    Type::INT8, // deadline_ms
    Type::INT8, // limit_mask
    Type::TEXT, // customer
    Type::TEXT, // lines
    Type::INT8, // extensions
];

/// A reservation's row, in the column order of `RESERVATION_COLUMN_TYPES`.
fn reservation_values<'a>((id, hold): &'a (u64, SettledHold)) -> ReservationValues<'a> {
    let mut lines = String::new();
    encode_hold_lines_into(&mut lines, &hold.lines, hold.amounts.as_deref());
    (
        as_stored(*id),
        hold.status.as_str(),
        hold.at_ms as i64,
        hold.deadline_ms as i64,
        i64::from(hold.limit_mask),
        hold.customer.as_deref(),
        lines,
        i64::from(hold.extensions),
    )
}

pub(super) fn write_reservations(
    tx: &mut Transaction<'_>,
    s: &str,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    // In a sale every purchase is a new reservation. Ids above the largest
    // stored one (as stored: signed) cannot meet a row, so they are copied
    // in; the rest (updates, a reused slot's id) are upserts. Rows come in
    // id order, so the two kinds come in runs.
    let largest: Option<i64> = tx
        .query_one(
            &format!("SELECT MAX(id) FROM {s}.hotstock_reservations"),
            &[],
        )
        .and_then(|row| row.try_get(0))
        .map_err(|e| fail("finding the largest reservation id", e))?;
    let is_new = |id: u64| largest.is_none_or(|largest| as_stored(id) > largest);
    for run in checkpoint.holds.chunk_by(|a, b| is_new(a.0) == is_new(b.0)) {
        if is_new(run[0].0) {
            copy_reservations(tx, s, run, fail)?;
        } else {
            upsert_reservations(tx, s, run, fail)?;
        }
    }
    if let Some((ended_before, confirmed_before)) = checkpoint.prune_before_ms {
        tx.execute(
            &format!(
                "DELETE FROM {s}.hotstock_reservations
                 WHERE (status IN ('cancelled', 'expired', 'refunded') AND status_ms <= $1)
                    OR (status = 'confirmed' AND status_ms <= $2)"
            ),
            &[&(ended_before as i64), &(confirmed_before as i64)],
        )
        .map_err(|e| fail("pruning old reservations", e))?;
    }
    Ok(())
}

/// New reservations, streamed by one binary COPY.
fn copy_reservations(
    tx: &mut Transaction<'_>,
    s: &str,
    run: &[(u64, SettledHold)],
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let sink = tx
        .copy_in(&format!(
            "COPY {s}.hotstock_reservations ({RESERVATION_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .map_err(|e| fail("writing reservations", e))?;
    let mut writer = BinaryCopyInWriter::new(sink, &RESERVATION_COLUMN_TYPES);
    for row in run {
        let v = reservation_values(row);
        writer
            .write(&[&v.0, &v.1, &v.2, &v.3, &v.4, &v.5, &v.6, &v.7])
            .map_err(|e| fail("writing reservations", e))?;
    }
    writer
        .finish()
        .map(drop)
        .map_err(|e| fail("writing reservations", e))
}

/// Reservations that may already have a row, many to an upsert (one round
/// trip each); a checkpoint names each id once, so no statement meets an
/// id twice.
fn upsert_reservations(
    tx: &mut Transaction<'_>,
    s: &str,
    run: &[(u64, SettledHold)],
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    let sql = |n: usize| {
        format!(
            "INSERT INTO {s}.hotstock_reservations ({RESERVATION_COLUMNS})
             VALUES {}
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, status_ms = EXCLUDED.status_ms,
               deadline_ms = EXCLUDED.deadline_ms, limit_mask = EXCLUDED.limit_mask,
               customer = EXCLUDED.customer, lines = EXCLUDED.lines, extensions = EXCLUDED.extensions",
            values_sql(8, n)
        )
    };
    let full = tx
        .prepare(&sql(RESERVATIONS_PER_STATEMENT))
        .map_err(|e| fail("preparing reservation writes", e))?;
    for group in run.chunks(RESERVATIONS_PER_STATEMENT) {
        // The values each row binds, owned for the statement's length.
        let rows: Vec<ReservationValues<'_>> = group.iter().map(reservation_values).collect();
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            Vec::with_capacity(8 * rows.len());
        for row in &rows {
            params.extend_from_slice(&[
                &row.0, &row.1, &row.2, &row.3, &row.4, &row.5, &row.6, &row.7,
            ]);
        }
        let written = if group.len() == RESERVATIONS_PER_STATEMENT {
            tx.execute(&full, &params)
        } else {
            tx.execute(sql(group.len()).as_str(), &params)
        };
        written.map_err(|e| fail("writing reservations", e))?;
    }
    Ok(())
}

pub(super) fn write_customer_units(
    tx: &mut Transaction<'_>,
    s: &str,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    for ((sku, customer), units) in &checkpoint.customer_units {
        let sku = *sku as i64;
        let customer: &str = customer;
        if *units == 0 {
            tx.execute(
                &format!(
                    "DELETE FROM {s}.hotstock_customer_units WHERE sku = $1 AND customer = $2"
                ),
                &[&sku, &customer],
            )
            .map_err(|e| fail("deleting customer units", e))?;
        } else {
            tx.execute(
                &format!(
                    "INSERT INTO {s}.hotstock_customer_units (sku, customer, units) VALUES ($1, $2, $3)
                     ON CONFLICT (sku, customer) DO UPDATE SET units = EXCLUDED.units"
                ),
                &[&sku, &customer, units],
            )
            .map_err(|e| fail("writing customer units", e))?;
        }
    }
    Ok(())
}

pub(super) fn write_backorders(
    tx: &mut Transaction<'_>,
    s: &str,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    for (key, row) in &checkpoint.backorders {
        let row = BackorderRow::of(*key, row);
        if row.owed == 0 {
            tx.execute(
                &format!("DELETE FROM {s}.hotstock_backorders WHERE sku = $1 AND reservation = $2"),
                &[&row.sku, &row.reservation],
            )
            .map_err(|e| fail("deleting a backorder", e))?;
        } else {
            tx.execute(
                &format!(
                    "INSERT INTO {s}.hotstock_backorders (sku, reservation, ticket, owed, sold)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (sku, reservation) DO UPDATE SET ticket = EXCLUDED.ticket,
                       owed = EXCLUDED.owed, sold = EXCLUDED.sold"
                ),
                &[
                    &row.sku,
                    &row.reservation,
                    &row.ticket,
                    &row.owed,
                    &row.sold,
                ],
            )
            .map_err(|e| fail("writing a backorder", e))?;
        }
    }
    Ok(())
}

pub(super) fn write_leases(
    tx: &mut Transaction<'_>,
    s: &str,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    for (id, row) in &checkpoint.leases {
        if LeaseRow::is_closed(row) {
            tx.execute(
                &format!("DELETE FROM {s}.hotstock_leases WHERE id = $1"),
                &[&&**id],
            )
            .map_err(|e| fail("deleting a lease", e))?;
            continue;
        }
        let row = LeaseRow::of(id, row);
        tx.execute(
            &format!(
                "INSERT INTO {s}.hotstock_leases (id, sku, granted, returned)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET sku = EXCLUDED.sku,
                   granted = EXCLUDED.granted, returned = EXCLUDED.returned"
            ),
            &[&row.id, &row.sku, &row.granted, &row.returning],
        )
        .map_err(|e| fail("writing a lease", e))?;
    }
    Ok(())
}

pub(super) fn write_keys(
    tx: &mut Transaction<'_>,
    s: &str,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    for key in &checkpoint.keys {
        tx.execute(
            &format!(
                "INSERT INTO {s}.hotstock_idempotency (key, fingerprint, created_ms, reservation, status, expires_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, created_ms = EXCLUDED.created_ms,
                   reservation = EXCLUDED.reservation, status = EXCLUDED.status, expires_at_ms = EXCLUDED.expires_at_ms"
            ),
            &[
                &&*key.key,
                &as_stored(key.fingerprint),
                &(key.created_ms as i64),
                &as_stored(key.reservation.as_u64()),
                &key.status.as_str(),
                &(key.expires_at_ms as i64),
            ],
        )
        .map_err(|e| fail("writing an idempotency key", e))?;
    }
    if let Some(before) = checkpoint.prune_keys_before_ms {
        tx.execute(
            &format!("DELETE FROM {s}.hotstock_idempotency WHERE created_ms <= $1"),
            &[&(before as i64)],
        )
        .map_err(|e| fail("pruning idempotency keys", e))?;
    }
    Ok(())
}

pub(super) fn write_position(
    tx: &mut Transaction<'_>,
    s: &str,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    for (key, value) in [
        ("position_segment", checkpoint.position.segment as i64),
        ("position_offset", checkpoint.position.offset as i64),
        (FEED_NEXT_KEY, checkpoint.feed_next_position as i64),
    ] {
        tx.execute(
            &format!(
                "INSERT INTO {s}.hotstock_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            &[&key, &value],
        )
        .map_err(|e| fail("writing the position", e))?;
    }
    Ok(())
}
