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
    decode_hold_lines, delete_through_by_count, encode_hold_lines_into, following_boot,
    id_key_from_halves, id_key_halves, refuse_if_newer, Store, StoreError, BOOT_KEY, FEED_NEXT_KEY,
    ID_KEY_KEYS, STORE_FORMAT_KEY,
};
use crate::durable::feed::FeedEvent;
use crate::durable::settled::{Checkpoint, Settled, SettledHold};

mod binding;
mod chunks;
mod schema;
use schema::add_missing_columns;
pub use schema::{SCHEMA, STORE_FORMAT};
mod write;
use write::*;

/// Reservation rows per upsert statement (8 parameters each, far below
/// SQLite's limit of 32,766).
const ROWS_PER_STATEMENT: usize = 32;

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
        // Before the schema touches its tables: a newer build's store is
        // refused, not half-upgraded into this build's.
        schema::refuse_a_newer_format(&connection).map_err(fail)?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|e| fail(format!("cannot create the schema: {e}")))?;
        add_missing_columns(&connection)
            .map_err(|e| fail(format!("cannot upgrade the schema: {e}")))?;
        schema::record_format(&connection).map_err(fail)?;
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
        // Chunks first: a row of the same id is a later state (chunks.rs).
        self.load_rows(
            "SELECT first_id, rows FROM hotstock_reservation_chunks",
            "reservation chunks",
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
            |(first, blob), settled| {
                let rows = chunks::decode(rows::from_stored(first), &blob)?;
                settled.holds.extend(rows);
                Ok(())
            },
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

/// Names what failed, for the checkpoint's error.
type Fail<'a> = &'a dyn Fn(&str, rusqlite::Error) -> StoreError;
