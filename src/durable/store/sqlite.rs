//! The default store: one SQLite file in the data directory, in WAL mode
//! with `synchronous = FULL`, so a committed checkpoint survives power loss
//! and the file can be read by any SQLite tool while the server runs.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::rows::{
    self, as_stored, encode_feed_lines_into, push_event_id, BackorderRow, CustomerUnitsRow, Damage,
    EventRow, KeyRow, LeaseRow, ReservationRow, SkuRow, EVENT_COLUMNS, EVENT_COLUMN_COUNT,
};
use super::{
    delete_through_by_count, encode_hold_lines_into, following_boot, id_key_from_halves,
    id_key_halves, Store, StoreError, BOOT_KEY, FEED_NEXT_KEY, ID_KEY_KEYS,
};
use crate::durable::feed::FeedEvent;
use crate::durable::settled::{Checkpoint, Settled, SettledHold};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hotstock_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hotstock_skus (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    available          INTEGER NOT NULL,
    held               INTEGER NOT NULL,
    sold               INTEGER NOT NULL,
    received           INTEGER NOT NULL,
    version            INTEGER NOT NULL,
    per_customer_limit INTEGER,
    limit_version      INTEGER NOT NULL,
    low_stock_threshold INTEGER,
    low_stock_version  INTEGER NOT NULL DEFAULT 0,
    safety_stock       INTEGER NOT NULL DEFAULT 0,
    safety_stock_version INTEGER NOT NULL DEFAULT 0,
    components         TEXT,
    kit_version        INTEGER NOT NULL DEFAULT 0,
    backordered        INTEGER NOT NULL DEFAULT 0,
    backorder_limit    INTEGER NOT NULL DEFAULT 0,
    backorder_until_ms INTEGER,
    backorder_version  INTEGER NOT NULL DEFAULT 0,
    located            INTEGER NOT NULL DEFAULT 0,
    location_priority  INTEGER,
    location_priority_version INTEGER NOT NULL DEFAULT 0,
    sale_starts_at_ms  INTEGER,
    sale_ends_at_ms    INTEGER,
    sale_window_version INTEGER NOT NULL DEFAULT 0,
    room_admit_per_s   INTEGER,
    room_overbook_milli INTEGER,
    room_admission_ttl_ms INTEGER,
    room_version       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS hotstock_reservations (
    id          INTEGER PRIMARY KEY,
    status      TEXT NOT NULL,
    status_ms   INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    limit_mask  INTEGER NOT NULL,
    customer    TEXT,
    lines       TEXT NOT NULL,
    extensions  INTEGER NOT NULL DEFAULT 0
);
-- No index over reservations by time: in a sale every purchase is a row,
-- and a second B-tree insert per row was a third of a checkpoint's cost.
-- Old rows are found by a scan, hourly (RESERVATION_PRUNE_INTERVAL_MS).
-- Data directories made by earlier builds had one; it goes.
DROP INDEX IF EXISTS hotstock_reservations_by_time;
CREATE TABLE IF NOT EXISTS hotstock_idempotency (
    key           TEXT PRIMARY KEY,
    fingerprint   INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    reservation   INTEGER NOT NULL,
    status        TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hotstock_customer_units (
    sku      INTEGER NOT NULL,
    customer TEXT NOT NULL,
    units    INTEGER NOT NULL,
    PRIMARY KEY (sku, customer)
);
-- The outbox: the change feed's events, written in the checkpoint's
-- transaction (docs/storage.md).
CREATE TABLE IF NOT EXISTS hotstock_events (
    position           INTEGER PRIMARY KEY,
    id                 TEXT NOT NULL,
    type               TEXT NOT NULL,
    at_ms              INTEGER NOT NULL,
    sku                TEXT NOT NULL,
    available          INTEGER NOT NULL,
    held               INTEGER NOT NULL,
    sold               INTEGER NOT NULL,
    received           INTEGER NOT NULL,
    reservation        TEXT,
    status             TEXT,
    from_status        TEXT,
    customer           TEXT,
    lines              TEXT,
    deadline_ms        INTEGER,
    delta              INTEGER,
    version            INTEGER,
    limit_set          INTEGER,
    per_customer_limit INTEGER,
    units              INTEGER,
    low_stock_set      INTEGER,
    low_stock_threshold INTEGER,
    safety_stock       INTEGER NOT NULL DEFAULT 0,
    backordered        INTEGER NOT NULL DEFAULT 0,
    owed               INTEGER,
    window_set         INTEGER,
    sale_starts_at_ms  INTEGER,
    sale_ends_at_ms    INTEGER
);
-- Reservations owed units of a SKU sold past zero, in fill order by ticket.
CREATE TABLE IF NOT EXISTS hotstock_backorders (
    sku         INTEGER NOT NULL,
    reservation INTEGER NOT NULL,
    ticket      INTEGER NOT NULL,
    owed        INTEGER NOT NULL,
    sold        INTEGER NOT NULL,
    PRIMARY KEY (sku, reservation)
);
-- This node's open leases from a cluster's escrow (docs/cluster.md):
-- granted (returned NULL), or returning that many units.
CREATE TABLE IF NOT EXISTS hotstock_leases (
    id        TEXT PRIMARY KEY,
    sku       INTEGER NOT NULL,
    granted   INTEGER NOT NULL,
    returned  INTEGER
);
";

/// Columns added after a table's first release, added to a store made
/// before them (SQLite has no `ADD COLUMN IF NOT EXISTS`).
fn add_missing_columns(connection: &Connection) -> rusqlite::Result<()> {
    let added = [
        ("hotstock_skus", "low_stock_threshold", "INTEGER"),
        (
            "hotstock_skus",
            "low_stock_version",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        (
            "hotstock_reservations",
            "extensions",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        (
            "hotstock_skus",
            "safety_stock",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        (
            "hotstock_skus",
            "safety_stock_version",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        (
            "hotstock_events",
            "safety_stock",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        ("hotstock_skus", "components", "TEXT"),
        ("hotstock_skus", "kit_version", "INTEGER NOT NULL DEFAULT 0"),
        ("hotstock_skus", "backordered", "INTEGER NOT NULL DEFAULT 0"),
        (
            "hotstock_skus",
            "backorder_limit",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        ("hotstock_skus", "backorder_until_ms", "INTEGER"),
        (
            "hotstock_skus",
            "backorder_version",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        (
            "hotstock_events",
            "backordered",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        ("hotstock_events", "owed", "INTEGER"),
        ("hotstock_events", "window_set", "INTEGER"),
        ("hotstock_events", "sale_starts_at_ms", "INTEGER"),
        ("hotstock_events", "sale_ends_at_ms", "INTEGER"),
        ("hotstock_skus", "located", "INTEGER NOT NULL DEFAULT 0"),
        ("hotstock_skus", "location_priority", "INTEGER"),
        (
            "hotstock_skus",
            "location_priority_version",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        ("hotstock_skus", "sale_starts_at_ms", "INTEGER"),
        ("hotstock_skus", "sale_ends_at_ms", "INTEGER"),
        (
            "hotstock_skus",
            "sale_window_version",
            "INTEGER NOT NULL DEFAULT 0",
        ),
        ("hotstock_skus", "room_admit_per_s", "INTEGER"),
        ("hotstock_skus", "room_overbook_milli", "INTEGER"),
        ("hotstock_skus", "room_admission_ttl_ms", "INTEGER"),
        (
            "hotstock_skus",
            "room_version",
            "INTEGER NOT NULL DEFAULT 0",
        ),
    ];
    for (table, column, kind) in added {
        let mut columns = connection.prepare(&format!("PRAGMA table_info({table})"))?;
        let present = columns
            .query_map([], |row| row.get::<_, String>(1))?
            .collect::<rusqlite::Result<Vec<String>>>()?
            .iter()
            .any(|name| name == column);
        if !present {
            connection.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

/// Reservation rows per upsert statement (8 parameters each, far below
/// SQLite's limit of 32,766).
const ROWS_PER_STATEMENT: usize = 32;

/// An upsert of `rows` reservation rows. An upsert, not INSERT OR REPLACE:
/// REPLACE may delete before it inserts, so SQLite keeps a statement
/// journal for every row (a quarter of a checkpoint's cost in a sale).
/// A checkpoint names each id once, so no statement meets an id twice.
fn upsert_reservations_sql(rows: usize) -> String {
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
fn bind_reservation(
    statement: &mut rusqlite::CachedStatement<'_>,
    row: usize,
    id: u64,
    hold: &SettledHold,
    lines: &mut String,
) -> rusqlite::Result<()> {
    let first = row * 8 + 1;
    encode_hold_lines_into(lines, &hold.lines, hold.amounts.as_deref());
    statement.raw_bind_parameter(first, as_stored(id))?;
    statement.raw_bind_parameter(first + 1, hold.status.as_str())?;
    statement.raw_bind_parameter(first + 2, hold.at_ms as i64)?;
    statement.raw_bind_parameter(first + 3, hold.deadline_ms as i64)?;
    statement.raw_bind_parameter(first + 4, i64::from(hold.limit_mask))?;
    statement.raw_bind_parameter(first + 5, hold.customer.as_deref())?;
    // Text is copied at bind time (SQLITE_TRANSIENT), so `lines` is free
    // for the next row at once.
    statement.raw_bind_parameter(first + 6, lines.as_str())?;
    statement.raw_bind_parameter(first + 7, i64::from(hold.extensions))
}

/// Checkpoints in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    connection: Connection,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let fail = |message: String| StoreError {
            store: format!("SQLite file {}", path.display()),
            message,
        };
        let connection = Connection::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        connection
            // A checkpoint in a sale writes a row per purchase: a cache big
            // enough to hold the transaction's pages keeps SQLite from
            // spilling them mid-transaction (and reading them back), and an
            // in-memory statement journal from writing undo pages to disk.
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
            )
            .map_err(|e| fail(format!("cannot set WAL mode: {e}")))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|e| fail(format!("cannot create the schema: {e}")))?;
        add_missing_columns(&connection)
            .map_err(|e| fail(format!("cannot upgrade the schema: {e}")))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            connection,
        })
    }

    fn error(&self, what: &str, e: rusqlite::Error) -> StoreError {
        StoreError {
            store: self.describe(),
            message: format!("{what}: {e}"),
        }
    }

    fn damaged(&self, damage: Damage) -> StoreError {
        StoreError {
            store: self.describe(),
            message: damage.to_string(),
        }
    }

    /// Reads every row of one query through `read` (the driver's typed
    /// getters) and `load` (the shared checked conversion).
    fn load_rows<R>(
        &self,
        sql: &str,
        what: &str,
        read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
        load: impl Fn(R, &mut Settled) -> Result<(), Damage>,
        settled: &mut Settled,
    ) -> Result<(), StoreError> {
        let reading = format!("reading {what}");
        let mut statement = self
            .connection
            .prepare(sql)
            .map_err(|e| self.error(&reading, e))?;
        let rows = statement
            .query_map([], read)
            .map_err(|e| self.error(&reading, e))?;
        for row in rows {
            let row = row.map_err(|e| self.error(&reading, e))?;
            load(row, settled).map_err(|d| self.damaged(d))?;
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("SQLite file {}", self.path.display())
    }

    fn next_boot(&mut self) -> Result<u32, StoreError> {
        let tx = self.connection.transaction().map_err(|e| StoreError {
            store: format!("SQLite file {}", self.path.display()),
            message: format!("counting a boot: {e}"),
        })?;
        let previous: Option<i64> = tx
            .query_row(
                "SELECT value FROM hotstock_meta WHERE key = ?1",
                params![BOOT_KEY],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| StoreError {
                store: format!("SQLite file {}", self.path.display()),
                message: format!("reading the boot count: {e}"),
            })?;
        let boot = following_boot(previous);
        tx.execute(
            "INSERT OR REPLACE INTO hotstock_meta (key, value) VALUES (?1, ?2)",
            params![BOOT_KEY, i64::from(boot)],
        )
        .and_then(|_| tx.commit())
        .map_err(|e| StoreError {
            store: format!("SQLite file {}", self.path.display()),
            message: format!("writing the boot count: {e}"),
        })?;
        Ok(boot)
    }

    fn reservation_id_key(&mut self, fresh: [u8; 16]) -> Result<[u8; 16], StoreError> {
        let store = format!("SQLite file {}", self.path.display());
        let fail = |what: &str, e: rusqlite::Error| StoreError {
            store: store.clone(),
            message: format!("{what} the reservation id key: {e}"),
        };
        let tx = self
            .connection
            .transaction()
            .map_err(|e| fail("reading", e))?;
        let mut halves = [0i64; 2];
        for ((key, half), fresh) in ID_KEY_KEYS
            .iter()
            .zip(&mut halves)
            .zip(id_key_halves(fresh))
        {
            // Only where none is stored: a key, once made, never changes.
            tx.execute(
                "INSERT OR IGNORE INTO hotstock_meta (key, value) VALUES (?1, ?2)",
                params![key, fresh],
            )
            .map_err(|e| fail("storing", e))?;
            *half = tx
                .query_row(
                    "SELECT value FROM hotstock_meta WHERE key = ?1",
                    params![key],
                    |row| row.get(0),
                )
                .map_err(|e| fail("reading", e))?;
        }
        tx.commit().map_err(|e| fail("storing", e))?;
        Ok(id_key_from_halves(halves))
    }

    // Long by design: four tables, each one `load_rows` call naming its
    // columns in the order the shared row codec takes them.
    fn load(&mut self) -> Result<Option<Settled>, StoreError> {
        let meta = |key: &str| -> Result<Option<i64>, StoreError> {
            self.connection
                .query_row(
                    "SELECT value FROM hotstock_meta WHERE key = ?1",
                    [key],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|e| self.error("reading meta", e))
        };
        let (Some(segment), Some(offset)) = (meta("position_segment")?, meta("position_offset")?)
        else {
            return Ok(None);
        };
        let mut settled = Settled::default();
        settled.position = rows::position(segment, offset).map_err(|d| self.damaged(d))?;
        settled.feed_next_position =
            rows::feed_next_position(meta(FEED_NEXT_KEY)?).map_err(|d| self.damaged(d))?;
        self.load_rows(
            "SELECT id, name, held, sold, received, version, per_customer_limit, limit_version, \
             low_stock_threshold, low_stock_version, safety_stock, safety_stock_version, \
             components, kit_version, backordered, backorder_limit, backorder_until_ms, \
             backorder_version, located, location_priority, location_priority_version, \
             sale_starts_at_ms, sale_ends_at_ms, sale_window_version, room_admit_per_s, \
             room_overbook_milli, room_admission_ttl_ms, room_version \
             FROM hotstock_skus",
            "SKUs",
            |row| {
                Ok(SkuRow {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    held: row.get(2)?,
                    sold: row.get(3)?,
                    received: row.get(4)?,
                    version: row.get(5)?,
                    per_customer_limit: row.get(6)?,
                    limit_version: row.get(7)?,
                    low_stock_threshold: row.get(8)?,
                    low_stock_version: row.get(9)?,
                    safety_stock: row.get(10)?,
                    safety_stock_version: row.get(11)?,
                    components: row.get(12)?,
                    kit_version: row.get(13)?,
                    backordered: row.get(14)?,
                    backorder_limit: row.get(15)?,
                    backorder_until_ms: row.get(16)?,
                    backorder_version: row.get(17)?,
                    located: row.get(18)?,
                    location_priority: row.get(19)?,
                    location_priority_version: row.get(20)?,
                    sale_starts_at_ms: row.get(21)?,
                    sale_ends_at_ms: row.get(22)?,
                    sale_window_version: row.get(23)?,
                    room_admit_per_s: row.get(24)?,
                    room_overbook_milli: row.get(25)?,
                    room_admission_ttl_ms: row.get(26)?,
                    room_version: row.get(27)?,
                })
            },
            |row, settled| row.load_into(settled),
            &mut settled,
        )?;
        self.load_rows(
            "SELECT id, status, status_ms, deadline_ms, limit_mask, customer, lines, extensions \
             FROM hotstock_reservations",
            "reservations",
            |row| {
                Ok(ReservationRow {
                    id: row.get(0)?,
                    status: row.get(1)?,
                    status_ms: row.get(2)?,
                    deadline_ms: row.get(3)?,
                    limit_mask: row.get(4)?,
                    customer: row.get(5)?,
                    lines: row.get(6)?,
                    extensions: row.get(7)?,
                })
            },
            |row, settled| row.load_into(settled),
            &mut settled,
        )?;
        self.load_rows(
            "SELECT sku, customer, units FROM hotstock_customer_units",
            "customer units",
            |row| {
                Ok(CustomerUnitsRow {
                    sku: row.get(0)?,
                    customer: row.get(1)?,
                    units: row.get(2)?,
                })
            },
            |row, settled| row.load_into(settled),
            &mut settled,
        )?;
        self.load_rows(
            "SELECT sku, reservation, ticket, owed, sold FROM hotstock_backorders",
            "backorders",
            |row| {
                Ok(BackorderRow {
                    sku: row.get(0)?,
                    reservation: row.get(1)?,
                    ticket: row.get(2)?,
                    owed: row.get(3)?,
                    sold: row.get::<_, i64>(4)? != 0,
                })
            },
            |row, settled| row.load_into(settled),
            &mut settled,
        )?;
        self.load_rows(
            "SELECT id, sku, granted, returned FROM hotstock_leases",
            "leases",
            |row| {
                Ok(LeaseRow {
                    id: row.get(0)?,
                    sku: row.get(1)?,
                    granted: row.get(2)?,
                    returning: row.get(3)?,
                })
            },
            |row, settled| row.load_into(settled),
            &mut settled,
        )?;
        self.load_rows(
            "SELECT key, fingerprint, created_ms, reservation, status, expires_at_ms \
             FROM hotstock_idempotency",
            "idempotency keys",
            |row| {
                Ok(KeyRow {
                    key: row.get(0)?,
                    fingerprint: row.get(1)?,
                    created_ms: row.get(2)?,
                    reservation: row.get(3)?,
                    status: row.get(4)?,
                    expires_at_ms: row.get(5)?,
                })
            },
            |row, settled| row.load_into(settled),
            &mut settled,
        )?;
        settled.mark_clean();
        Ok(Some(settled))
    }

    fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let describe = self.describe();
        let fail = |what: &str, e: rusqlite::Error| StoreError {
            store: describe.clone(),
            message: format!("{what}: {e}"),
        };
        let tx = self
            .connection
            .transaction()
            .map_err(|e| fail("starting a checkpoint", e))?;
        write_skus(&tx, checkpoint, &fail)?;
        write_reservations(&tx, checkpoint, &fail)?;
        write_customer_units(&tx, checkpoint, &fail)?;
        write_backorders(&tx, checkpoint, &fail)?;
        write_leases(&tx, checkpoint, &fail)?;
        write_keys(&tx, checkpoint, &fail)?;
        write_events(&tx, checkpoint, &fail)?;
        write_position(&tx, checkpoint, &fail)?;
        tx.commit().map_err(|e| fail("committing a checkpoint", e))
    }

    fn read_events(&mut self, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM hotstock_events WHERE position > ?1 ORDER BY position LIMIT ?2"
        );
        let reading = |e| self.error("reading events", e);
        let mut statement = self.connection.prepare_cached(&sql).map_err(reading)?;
        let rows = statement
            .query_map(params![after as i64, limit as i64], |row| {
                Ok(EventRow {
                    position: row.get(0)?,
                    id: row.get(1)?,
                    kind: row.get(2)?,
                    at_ms: row.get(3)?,
                    sku: row.get(4)?,
                    available: row.get(5)?,
                    held: row.get(6)?,
                    sold: row.get(7)?,
                    received: row.get(8)?,
                    reservation: row.get(9)?,
                    status: row.get(10)?,
                    from_status: row.get(11)?,
                    customer: row.get(12)?,
                    lines: row.get(13)?,
                    deadline_ms: row.get(14)?,
                    delta: row.get(15)?,
                    version: row.get(16)?,
                    limit_set: row.get(17)?,
                    per_customer_limit: row.get(18)?,
                    units: row.get(19)?,
                    low_stock_set: row.get(20)?,
                    low_stock_threshold: row.get(21)?,
                    safety_stock: row.get(22)?,
                    backordered: row.get(23)?,
                    owed: row.get(24)?,
                    window_set: row.get(25)?,
                    sale_starts_at_ms: row.get(26)?,
                    sale_ends_at_ms: row.get(27)?,
                })
            })
            .map_err(reading)?;
        let mut events = Vec::new();
        for row in rows {
            let row = row.map_err(reading)?;
            events.push(row.into_event().map_err(|d| self.damaged(d))?);
        }
        Ok(events)
    }

    fn read_meta(&mut self, key: &str) -> Result<Option<i64>, StoreError> {
        self.connection
            .query_row(
                "SELECT value FROM hotstock_meta WHERE key = ?1",
                [key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(&format!("reading {key}"), e))
    }

    fn write_meta(&mut self, key: &str, value: i64) -> Result<(), StoreError> {
        self.connection
            .execute(
                "INSERT OR REPLACE INTO hotstock_meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.error(&format!("writing {key}"), e))
    }

    fn oldest_event(&mut self) -> Result<Option<u64>, StoreError> {
        let oldest: Option<i64> = self
            .connection
            .query_row("SELECT MIN(position) FROM hotstock_events", [], |row| {
                row.get(0)
            })
            .map_err(|e| self.error("reading the oldest event", e))?;
        Ok(oldest.map(rows::from_stored))
    }
}

/// Outbox rows per insert statement (`EVENT_COLUMN_COUNT` parameters each).
const EVENTS_PER_STATEMENT: usize = 16;

fn insert_events_sql(rows: usize) -> String {
    assert!((1..=EVENTS_PER_STATEMENT).contains(&rows));
    let mut sql = format!("INSERT INTO hotstock_events ({EVENT_COLUMNS}) VALUES ");
    let row = format!("({})", vec!["?"; EVENT_COLUMN_COUNT].join(", "));
    sql.push_str(&vec![row; rows].join(","));
    sql
}

/// Text an event's row needs made, in buffers reused from row to row.
#[derive(Default)]
struct EventText {
    id: String,
    lines: String,
}

/// Binds one event as row `row` of an insert statement.
fn bind_event(
    statement: &mut rusqlite::CachedStatement<'_>,
    row: usize,
    event: &FeedEvent,
    feed_id: u64,
    text: &mut EventText,
) -> rusqlite::Result<()> {
    let at = row * EVENT_COLUMN_COUNT + 1;
    text.id.clear();
    push_event_id(&mut text.id, feed_id, event.position);
    let counts = &event.counts;
    statement.raw_bind_parameter(at, event.position as i64)?;
    statement.raw_bind_parameter(at + 1, text.id.as_str())?;
    statement.raw_bind_parameter(at + 2, event.kind.as_str())?;
    statement.raw_bind_parameter(at + 3, event.at_ms as i64)?;
    statement.raw_bind_parameter(at + 4, &*event.sku)?;
    statement.raw_bind_parameter(at + 5, counts.available)?;
    statement.raw_bind_parameter(at + 6, counts.held)?;
    statement.raw_bind_parameter(at + 7, counts.sold)?;
    statement.raw_bind_parameter(at + 8, counts.received)?;
    let reservation = event.reservation.as_deref();
    if let Some(r) = reservation {
        encode_feed_lines_into(&mut text.lines, r);
    }
    let fill = event.fill.as_ref();
    let public_id = reservation
        .map(|r| &*r.public_id)
        .or(fill.map(|f| &*f.public_id));
    statement.raw_bind_parameter(at + 9, public_id)?;
    statement.raw_bind_parameter(at + 10, reservation.map(|r| r.status.as_str()))?;
    statement.raw_bind_parameter(
        at + 11,
        reservation.and_then(|r| r.from).map(|s| s.as_str()),
    )?;
    statement.raw_bind_parameter(at + 12, reservation.and_then(|r| r.customer.as_deref()))?;
    statement.raw_bind_parameter(at + 13, reservation.map(|_| text.lines.as_str()))?;
    statement.raw_bind_parameter(at + 14, reservation.map(|r| r.deadline_ms as i64))?;
    let operator = event.operator.as_ref();
    statement.raw_bind_parameter(at + 15, operator.map(|o| o.delta))?;
    statement.raw_bind_parameter(at + 16, operator.map(|o| o.version as i64))?;
    statement.raw_bind_parameter(at + 17, operator.map(|o| i64::from(o.limit.is_some())))?;
    statement.raw_bind_parameter(
        at + 18,
        operator.and_then(|o| o.limit.flatten()).map(i64::from),
    )?;
    let units = event.units.or(fill.map(|f| f.units));
    statement.raw_bind_parameter(at + 19, units.map(i64::from))?;
    statement.raw_bind_parameter(at + 20, operator.map(|o| i64::from(o.low_stock.is_some())))?;
    statement.raw_bind_parameter(
        at + 21,
        operator.and_then(|o| o.low_stock.flatten()).map(i64::from),
    )?;
    statement.raw_bind_parameter(at + 22, counts.safety_stock)?;
    statement.raw_bind_parameter(at + 23, counts.backordered)?;
    statement.raw_bind_parameter(at + 24, fill.map(|f| i64::from(f.owed_after)))?;
    let window = operator.and_then(|o| o.window);
    statement.raw_bind_parameter(at + 25, operator.map(|o| i64::from(o.window.is_some())))?;
    let bound = |ms: Option<u64>| ms.map(rows::as_stored);
    statement.raw_bind_parameter(at + 26, bound(window.and_then(|w| w.starts_at_ms)))?;
    statement.raw_bind_parameter(at + 27, bound(window.and_then(|w| w.ends_at_ms)))
}

/// The outbox rows of the checkpoint's batches, then retention.
fn write_events(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    // As for reservations: many rows per statement, text bound borrowed
    // (copied at bind time), no row struct of owned strings per event. A
    // sale writes one event per purchase (examples/checkpoint_bench.rs and
    // benches/http/callgrind.sh, docs/benchmarks.md).
    let mut put_many = tx
        .prepare_cached(&insert_events_sql(EVENTS_PER_STATEMENT))
        .map_err(|e| fail("preparing event writes", e))?;
    let mut put_one = tx
        .prepare_cached(&insert_events_sql(1))
        .map_err(|e| fail("preparing event writes", e))?;
    let mut scratch = EventText::default();
    let mut groups = checkpoint.events.chunks_exact(EVENTS_PER_STATEMENT);
    for group in &mut groups {
        for (row, event) in group.iter().enumerate() {
            bind_event(&mut put_many, row, event, checkpoint.feed_id, &mut scratch)
                .map_err(|e| fail("writing an event", e))?;
        }
        put_many
            .raw_execute()
            .map_err(|e| fail("writing events", e))?;
    }
    for event in groups.remainder() {
        bind_event(&mut put_one, 0, event, checkpoint.feed_id, &mut scratch)
            .map_err(|e| fail("writing an event", e))?;
        put_one
            .raw_execute()
            .map_err(|e| fail("writing an event", e))?;
    }
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

/// Names what failed, for the checkpoint's error.
type Fail<'a> = &'a dyn Fn(&str, rusqlite::Error) -> StoreError;

fn write_skus(
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

fn write_reservations(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    fail: Fail<'_>,
) -> Result<(), StoreError> {
    // In a sale every purchase is a row: many rows per statement,
    // so SQLite's per-statement work (step, halt, reset) is paid
    // once per `ROWS_PER_STATEMENT`; the tail goes one by one.
    let mut put_many = tx
        .prepare_cached(&upsert_reservations_sql(ROWS_PER_STATEMENT))
        .map_err(|e| fail("preparing reservation writes", e))?;
    let mut put_one = tx
        .prepare_cached(&upsert_reservations_sql(1))
        .map_err(|e| fail("preparing reservation writes", e))?;
    let mut lines = String::new();
    let mut groups = checkpoint.holds.chunks_exact(ROWS_PER_STATEMENT);
    for group in &mut groups {
        for (row, (id, hold)) in group.iter().enumerate() {
            bind_reservation(&mut put_many, row, *id, hold, &mut lines)
                .map_err(|e| fail("writing a reservation", e))?;
        }
        put_many
            .raw_execute()
            .map_err(|e| fail("writing reservations", e))?;
    }
    for (id, hold) in groups.remainder() {
        bind_reservation(&mut put_one, 0, *id, hold, &mut lines)
            .map_err(|e| fail("writing a reservation", e))?;
        put_one
            .raw_execute()
            .map_err(|e| fail("writing a reservation", e))?;
    }
    if let Some((ended_before, confirmed_before)) = checkpoint.prune_before_ms {
        tx.execute(
            "DELETE FROM hotstock_reservations
             WHERE (status IN ('cancelled', 'expired', 'refunded') AND status_ms <= ?1)
                OR (status = 'confirmed' AND status_ms <= ?2)",
            params![ended_before as i64, confirmed_before as i64],
        )
        .map_err(|e| fail("pruning old reservations", e))?;
    }
    Ok(())
}

fn write_customer_units(
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

fn write_backorders(
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

fn write_leases(
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

fn write_keys(
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

fn write_position(
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
