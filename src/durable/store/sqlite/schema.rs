//! The store's tables, and the columns added to a store made before them.

use super::*;

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
-- Reservations first written by a checkpoint, many to a row (a sale's
-- purchases): ids above every stored one when written, so the ranges
-- [first_id, last_id] never overlap; a row above supersedes an entry
-- (src/durable/store/sqlite/chunks.rs, docs/storage.md).
CREATE TABLE IF NOT EXISTS hotstock_reservation_chunks (
    first_id  INTEGER PRIMARY KEY,
    last_id   INTEGER NOT NULL,
    entries   INTEGER NOT NULL,
    -- The oldest status time of its ended entries, and of its confirmed
    -- ones (NULL: none): a prune reads only chunks old enough by either.
    ended_ms     INTEGER,
    confirmed_ms INTEGER,
    rows      BLOB NOT NULL
);
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

/// The store's layout, kept in `hotstock_meta` so that a build refuses a
/// store a newer one wrote instead of misreading it. 2: reservations may be
/// in `hotstock_reservation_chunks`, which a build before it would not read
/// (such builds check no format: docs/storage.md). A store without the key
/// is format 1 and is upgraded by opening it.
pub const STORE_FORMAT: i64 = 2;

/// Refuses a store of a newer format, before anything touches its tables
/// (a new file has no `hotstock_meta` yet; a store before formats, no key).
pub(super) fn refuse_a_newer_format(connection: &Connection) -> Result<(), String> {
    let reading = |e: rusqlite::Error| format!("cannot read the store's format: {e}");
    let has_meta: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hotstock_meta')",
            [],
            |row| row.get(0),
        )
        .map_err(reading)?;
    if !has_meta {
        return Ok(());
    }
    let stored: Option<i64> = connection
        .query_row(
            "SELECT value FROM hotstock_meta WHERE key = ?1",
            [STORE_FORMAT_KEY],
            |row| row.get(0),
        )
        .optional()
        .map_err(reading)?;
    refuse_if_newer(stored, STORE_FORMAT)
}

/// Records this build's format, once the schema is this build's.
pub(super) fn record_format(connection: &Connection) -> Result<(), String> {
    connection
        .execute(
            "INSERT OR REPLACE INTO hotstock_meta (key, value) VALUES (?1, ?2)",
            rusqlite::params![STORE_FORMAT_KEY, STORE_FORMAT],
        )
        .map(drop)
        .map_err(|e| format!("cannot record the store's format: {e}"))
}

/// Columns added after a table's first release, added to a store made
/// before them (SQLite has no `ADD COLUMN IF NOT EXISTS`).
// Long by design: the list of every column added since a table's first
// release.
pub(super) fn add_missing_columns(connection: &Connection) -> rusqlite::Result<()> {
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
