//! PostgreSQL as the store: the shop's system of record, which its other
//! services read. Same tables as the SQLite store, in a schema of their own
//! (default `hotstock`), created on first use. A checkpoint is one
//! transaction; recovery reads the same rows back.

use postgres::{Client, NoTls, Transaction};

use super::rows::{
    self, as_stored, BackorderRow, CustomerUnitsRow, Damage, EventRow, KeyRow, LeaseRow,
    ReservationRow, SkuRow, EVENT_COLUMNS, EVENT_COLUMN_COUNT,
};
use super::{
    delete_through_by_count, encode_hold_lines_into, id_key_from_halves, id_key_halves,
    refuse_if_newer, Store, StoreError, BOOT_KEY, FEED_NEXT_KEY, ID_KEY_KEYS, STORE_FORMAT_KEY,
};
use crate::durable::feed::FeedEvent;
use crate::durable::settled::{Checkpoint, Settled};

mod write;
use write::*;

/// The schema's layout, kept in `hotstock_meta` under the SQLite store's
/// key (`store_format`), so that a build refuses a schema a newer one
/// wrote instead of misreading it. 1: the tables `connect` makes today. A
/// schema without the key (made before it) is 1 as well. Each store
/// counts its own formats: the SQLite file's is 2 since its reservation
/// chunks, which this store does not have.
pub const STORE_FORMAT: i64 = 1;

/// Checkpoints in PostgreSQL.
pub struct PostgresStore {
    client: Client,
    schema: String,
    url_for_messages: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A schema name we are willing to splice into SQL: lower-case letters,
/// digits and underscores, starting with a letter, at most 63 bytes.
pub(crate) fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The URL without its password, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// What a store error says about its cause. The client's own text for an
/// error the server reported is only "db error"; the server's message
/// ("relation ... does not exist", "could not extend file": what an
/// operator can act on) is its source, so the whole chain is written out.
pub(crate) trait CauseText {
    fn cause_text(&self) -> String;
}

impl CauseText for postgres::Error {
    fn cause_text(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }
}

impl CauseText for &str {
    fn cause_text(&self) -> String {
        (*self).to_owned()
    }
}

impl PostgresStore {
    // Long by design: the schema's DDL, one statement per table and index.
    pub fn connect(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        let shown = redact(url);
        let fail = |message: String| StoreError {
            store: format!("PostgreSQL {shown} schema {schema}"),
            message,
        };
        if !valid_schema(schema) {
            return Err(fail(
                "schema names are lower-case letters, digits and _ (at most 63 bytes)".into(),
            ));
        }
        let mut client = Client::connect(url, NoTls)
            .map_err(|e| fail(format!("cannot connect: {}", e.cause_text())))?;
        refuse_a_newer_format(&mut client, schema).map_err(fail)?;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.hotstock_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.hotstock_skus (
                 id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                 available BIGINT NOT NULL, held BIGINT NOT NULL, sold BIGINT NOT NULL,
                 received BIGINT NOT NULL, version BIGINT NOT NULL,
                 per_customer_limit BIGINT, limit_version BIGINT NOT NULL);
             ALTER TABLE {schema}.hotstock_skus ADD COLUMN IF NOT EXISTS low_stock_threshold BIGINT,
                 ADD COLUMN IF NOT EXISTS low_stock_version BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS safety_stock BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS safety_stock_version BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS components TEXT,
                 ADD COLUMN IF NOT EXISTS kit_version BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS backordered BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS backorder_limit BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS backorder_until_ms BIGINT,
                 ADD COLUMN IF NOT EXISTS backorder_version BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS located BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS location_priority BIGINT,
                 ADD COLUMN IF NOT EXISTS location_priority_version BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS sale_starts_at_ms BIGINT,
                 ADD COLUMN IF NOT EXISTS sale_ends_at_ms BIGINT,
                 ADD COLUMN IF NOT EXISTS sale_window_version BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS room_admit_per_s BIGINT,
                 ADD COLUMN IF NOT EXISTS room_overbook_milli BIGINT,
                 ADD COLUMN IF NOT EXISTS room_admission_ttl_ms BIGINT,
                 ADD COLUMN IF NOT EXISTS room_version BIGINT NOT NULL DEFAULT 0;
             CREATE TABLE IF NOT EXISTS {schema}.hotstock_backorders (
                 sku BIGINT NOT NULL, reservation BIGINT NOT NULL, ticket BIGINT NOT NULL,
                 owed BIGINT NOT NULL, sold BOOLEAN NOT NULL, PRIMARY KEY (sku, reservation));
             CREATE TABLE IF NOT EXISTS {schema}.hotstock_leases (
                 id TEXT PRIMARY KEY, sku BIGINT NOT NULL, granted BIGINT NOT NULL,
                 returned BIGINT);
             CREATE TABLE IF NOT EXISTS {schema}.hotstock_reservations (
                 id BIGINT PRIMARY KEY, status TEXT NOT NULL, status_ms BIGINT NOT NULL,
                 deadline_ms BIGINT NOT NULL, limit_mask BIGINT NOT NULL, customer TEXT, lines TEXT NOT NULL);
             ALTER TABLE {schema}.hotstock_reservations
                 ADD COLUMN IF NOT EXISTS extensions BIGINT NOT NULL DEFAULT 0;
             CREATE INDEX IF NOT EXISTS hotstock_reservations_by_time ON {schema}.hotstock_reservations (status_ms);
             CREATE TABLE IF NOT EXISTS {schema}.hotstock_idempotency (
                 key TEXT PRIMARY KEY, fingerprint BIGINT NOT NULL, created_ms BIGINT NOT NULL,
                 reservation BIGINT NOT NULL, status TEXT NOT NULL, expires_at_ms BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.hotstock_customer_units (
                 sku BIGINT NOT NULL, customer TEXT NOT NULL, units BIGINT NOT NULL,
                 PRIMARY KEY (sku, customer));
             CREATE TABLE IF NOT EXISTS {schema}.hotstock_events (
                 position BIGINT PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,
                 at_ms BIGINT NOT NULL, sku TEXT NOT NULL, available BIGINT NOT NULL,
                 held BIGINT NOT NULL, sold BIGINT NOT NULL, received BIGINT NOT NULL,
                 reservation TEXT, status TEXT, from_status TEXT, customer TEXT, lines TEXT,
                 deadline_ms BIGINT, delta BIGINT, version BIGINT, limit_set BIGINT,
                 per_customer_limit BIGINT, units BIGINT, low_stock_set BIGINT,
                 low_stock_threshold BIGINT);
             ALTER TABLE {schema}.hotstock_events
                 ADD COLUMN IF NOT EXISTS safety_stock BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS backordered BIGINT NOT NULL DEFAULT 0,
                 ADD COLUMN IF NOT EXISTS owed BIGINT,
                 ADD COLUMN IF NOT EXISTS window_set BIGINT,
                 ADD COLUMN IF NOT EXISTS sale_starts_at_ms BIGINT,
                 ADD COLUMN IF NOT EXISTS sale_ends_at_ms BIGINT;"
        );
        client
            .batch_execute(&ddl)
            .map_err(|e| fail(format!("cannot create the schema: {}", e.cause_text())))?;
        record_format(&mut client, schema).map_err(fail)?;
        Ok(PostgresStore {
            client,
            schema: schema.to_owned(),
            url_for_messages: shown,
        })
    }

    fn fail(&self, what: &str, e: impl CauseText) -> StoreError {
        StoreError {
            store: self.describe(),
            message: format!("{what}: {}", e.cause_text()),
        }
    }

    fn damaged(&self, damage: Damage) -> StoreError {
        StoreError {
            store: self.describe(),
            message: damage.to_string(),
        }
    }

    /// Runs `sql` and hands each row to `load`, which reads its columns
    /// with `try_get` (a column of the wrong type is an error, not a panic)
    /// and converts them through the shared row codec.
    fn load_rows(
        &mut self,
        sql: &str,
        what: &str,
        settled: &mut Settled,
        load: impl Fn(&postgres::Row, &mut Settled) -> Result<Result<(), Damage>, postgres::Error>,
    ) -> Result<(), StoreError> {
        let reading = format!("reading {what}");
        let rows = self
            .client
            .query(sql, &[])
            .map_err(|e| self.fail(&reading, e))?;
        for row in &rows {
            load(row, settled)
                .map_err(|e| self.fail(&reading, e))?
                .map_err(|d| self.damaged(d))?;
        }
        Ok(())
    }
}

/// Refuses a schema of a newer format, before this build's DDL touches it
/// (a new schema has no `hotstock_meta` yet; one made before formats, no
/// key).
fn refuse_a_newer_format(client: &mut Client, schema: &str) -> Result<(), String> {
    let reading =
        |e: postgres::Error| format!("cannot read the store's format: {}", e.cause_text());
    let meta = format!("{schema}.hotstock_meta");
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&meta])
        .map_err(reading)?;
    if !row.try_get::<_, bool>(0).map_err(reading)? {
        return Ok(());
    }
    let rows = client
        .query(
            &format!("SELECT value FROM {meta} WHERE key = $1"),
            &[&STORE_FORMAT_KEY],
        )
        .map_err(reading)?;
    let stored: Option<i64> = match rows.first() {
        Some(row) => Some(row.try_get(0).map_err(reading)?),
        None => None,
    };
    refuse_if_newer(stored, STORE_FORMAT)
}

/// Records this build's format, once the schema is this build's. Never
/// lowers it: a newer build that recorded its format between this one's
/// check and now keeps it, and this build's next start is refused.
fn record_format(client: &mut Client, schema: &str) -> Result<(), String> {
    client
        .execute(
            &format!(
                "INSERT INTO {schema}.hotstock_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE
                 SET value = GREATEST({schema}.hotstock_meta.value, EXCLUDED.value)"
            ),
            &[&STORE_FORMAT_KEY, &STORE_FORMAT],
        )
        .map(drop)
        .map_err(|e| format!("cannot record the store's format: {}", e.cause_text()))
}

impl Store for PostgresStore {
    fn next_boot(&mut self) -> Result<u32, StoreError> {
        let s = self.schema.clone();
        // One statement, so two servers started at once on one schema still
        // get two different counts.
        let sql = format!(
            "INSERT INTO {s}.hotstock_meta (key, value) VALUES ($1, 1)
             ON CONFLICT (key) DO UPDATE SET value = ({s}.hotstock_meta.value % 65535) + 1
             RETURNING value"
        );
        let row = self
            .client
            .query_one(&sql, &[&BOOT_KEY])
            .map_err(|e| self.fail("counting a boot", e))?;
        let value: i64 = row
            .try_get(0)
            .map_err(|e| self.fail("reading the boot count", e))?;
        u32::try_from(value).map_err(|_| self.fail("reading the boot count", "out of range"))
    }

    fn reservation_id_key(&mut self, fresh: [u8; 16]) -> Result<[u8; 16], StoreError> {
        let s = self.schema.clone();
        // One statement per half: the insert wins when no key is stored,
        // else the stored half is read. (Two servers making the very first
        // key of one schema at the same instant: the second sees no row and
        // fails to start with this message; started again, it reads the
        // first one's key.)
        let sql = format!(
            "WITH inserted AS (
                 INSERT INTO {s}.hotstock_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING RETURNING value)
             SELECT value FROM inserted
             UNION ALL SELECT value FROM {s}.hotstock_meta WHERE key = $1
             LIMIT 1"
        );
        let mut halves = [0i64; 2];
        for ((key, half), fresh) in ID_KEY_KEYS
            .iter()
            .zip(&mut halves)
            .zip(id_key_halves(fresh))
        {
            let row = self
                .client
                .query_one(&sql, &[key, &fresh])
                .map_err(|e| self.fail("storing the reservation id key", e))?;
            *half = row
                .try_get(0)
                .map_err(|e| self.fail("reading the reservation id key", e))?;
        }
        Ok(id_key_from_halves(halves))
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL {} schema {}",
            self.url_for_messages, self.schema
        )
    }

    // Long by design: four tables, each one `load_rows` call naming its
    // columns in the order the shared row codec takes them.
    fn load(&mut self) -> Result<Option<Settled>, StoreError> {
        let s = self.schema.clone();
        let meta = self
            .client
            .query(&format!("SELECT key, value FROM {s}.hotstock_meta"), &[])
            .map_err(|e| self.fail("reading meta", e))?;
        let value = |key: &str| -> Result<Option<i64>, StoreError> {
            for row in &meta {
                let name: String = row.try_get(0).map_err(|e| self.fail("reading meta", e))?;
                if name == key {
                    return row.try_get(1).map_err(|e| self.fail("reading meta", e));
                }
            }
            Ok(None)
        };
        let (Some(segment), Some(offset)) = (value("position_segment")?, value("position_offset")?)
        else {
            return Ok(None);
        };
        let mut settled = Settled::default();
        settled.position = rows::position(segment, offset).map_err(|d| self.damaged(d))?;
        settled.feed_next_position =
            rows::feed_next_position(value(FEED_NEXT_KEY)?).map_err(|d| self.damaged(d))?;
        let sql = format!(
            "SELECT id, name, held, sold, received, version, per_customer_limit, limit_version, \
             low_stock_threshold, low_stock_version, safety_stock, safety_stock_version, \
             components, kit_version, backordered, backorder_limit, backorder_until_ms, \
             backorder_version, located, location_priority, location_priority_version, \
             sale_starts_at_ms, sale_ends_at_ms, sale_window_version, room_admit_per_s, \
             room_overbook_milli, room_admission_ttl_ms, room_version \
             FROM {s}.hotstock_skus"
        );
        self.load_rows(&sql, "SKUs", &mut settled, |row, settled| {
            let sku = SkuRow {
                id: row.try_get(0)?,
                name: row.try_get(1)?,
                held: row.try_get(2)?,
                sold: row.try_get(3)?,
                received: row.try_get(4)?,
                version: row.try_get(5)?,
                per_customer_limit: row.try_get(6)?,
                limit_version: row.try_get(7)?,
                low_stock_threshold: row.try_get(8)?,
                low_stock_version: row.try_get(9)?,
                safety_stock: row.try_get(10)?,
                safety_stock_version: row.try_get(11)?,
                components: row.try_get(12)?,
                kit_version: row.try_get(13)?,
                backordered: row.try_get(14)?,
                backorder_limit: row.try_get(15)?,
                backorder_until_ms: row.try_get(16)?,
                backorder_version: row.try_get(17)?,
                located: row.try_get(18)?,
                location_priority: row.try_get(19)?,
                location_priority_version: row.try_get(20)?,
                sale_starts_at_ms: row.try_get(21)?,
                sale_ends_at_ms: row.try_get(22)?,
                sale_window_version: row.try_get(23)?,
                room_admit_per_s: row.try_get(24)?,
                room_overbook_milli: row.try_get(25)?,
                room_admission_ttl_ms: row.try_get(26)?,
                room_version: row.try_get(27)?,
            };
            Ok(sku.load_into(settled))
        })?;
        let sql = format!(
            "SELECT id, status, status_ms, deadline_ms, limit_mask, customer, lines, extensions \
             FROM {s}.hotstock_reservations"
        );
        self.load_rows(&sql, "reservations", &mut settled, |row, settled| {
            let hold = ReservationRow {
                id: row.try_get(0)?,
                status: row.try_get(1)?,
                status_ms: row.try_get(2)?,
                deadline_ms: row.try_get(3)?,
                limit_mask: row.try_get(4)?,
                customer: row.try_get(5)?,
                lines: row.try_get(6)?,
                extensions: row.try_get(7)?,
            };
            Ok(hold.load_into(settled))
        })?;
        let sql = format!("SELECT sku, customer, units FROM {s}.hotstock_customer_units");
        self.load_rows(&sql, "customer units", &mut settled, |row, settled| {
            let units = CustomerUnitsRow {
                sku: row.try_get(0)?,
                customer: row.try_get(1)?,
                units: row.try_get(2)?,
            };
            Ok(units.load_into(settled))
        })?;
        let sql =
            format!("SELECT sku, reservation, ticket, owed, sold FROM {s}.hotstock_backorders");
        self.load_rows(&sql, "backorders", &mut settled, |row, settled| {
            let owed = BackorderRow {
                sku: row.try_get(0)?,
                reservation: row.try_get(1)?,
                ticket: row.try_get(2)?,
                owed: row.try_get(3)?,
                sold: row.try_get(4)?,
            };
            Ok(owed.load_into(settled))
        })?;
        let sql = format!("SELECT id, sku, granted, returned FROM {s}.hotstock_leases");
        self.load_rows(&sql, "leases", &mut settled, |row, settled| {
            let lease = LeaseRow {
                id: row.try_get(0)?,
                sku: row.try_get(1)?,
                granted: row.try_get(2)?,
                returning: row.try_get(3)?,
            };
            Ok(lease.load_into(settled))
        })?;
        let sql = format!(
            "SELECT key, fingerprint, created_ms, reservation, status, expires_at_ms \
             FROM {s}.hotstock_idempotency"
        );
        self.load_rows(&sql, "idempotency keys", &mut settled, |row, settled| {
            let key = KeyRow {
                key: row.try_get(0)?,
                fingerprint: row.try_get(1)?,
                created_ms: row.try_get(2)?,
                reservation: row.try_get(3)?,
                status: row.try_get(4)?,
                expires_at_ms: row.try_get(5)?,
            };
            Ok(key.load_into(settled))
        })?;
        settled.mark_clean();
        Ok(Some(settled))
    }

    fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let s = self.schema.clone();
        let describe = self.describe();
        let fail = |what: &str, e: postgres::Error| StoreError {
            store: describe.clone(),
            message: format!("{what}: {}", e.cause_text()),
        };
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| fail("starting a checkpoint", e))?;
        write_skus(&mut tx, &s, checkpoint, &fail)?;
        write_reservations(&mut tx, &s, checkpoint, &fail)?;
        write_customer_units(&mut tx, &s, checkpoint, &fail)?;
        write_backorders(&mut tx, &s, checkpoint, &fail)?;
        write_leases(&mut tx, &s, checkpoint, &fail)?;
        write_keys(&mut tx, &s, checkpoint, &fail)?;
        write_events(&mut tx, &s, checkpoint, &fail)?;
        write_position(&mut tx, &s, checkpoint, &fail)?;
        tx.commit().map_err(|e| fail("committing a checkpoint", e))
    }

    fn read_events(&mut self, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        let s = self.schema.clone();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {s}.hotstock_events WHERE position > $1 ORDER BY position LIMIT $2"
        );
        let rows = self
            .client
            .query(&sql, &[&(after as i64), &(limit as i64)])
            .map_err(|e| self.fail("reading events", e))?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let event = event_row(row).map_err(|e| self.fail("reading events", e))?;
            events.push(event.into_event().map_err(|d| self.damaged(d))?);
        }
        Ok(events)
    }

    fn read_meta(&mut self, key: &str) -> Result<Option<i64>, StoreError> {
        let s = self.schema.clone();
        let rows = self
            .client
            .query(
                &format!("SELECT value FROM {s}.hotstock_meta WHERE key = $1"),
                &[&key],
            )
            .map_err(|e| self.fail(&format!("reading {key}"), e))?;
        match rows.first() {
            Some(row) => row
                .try_get(0)
                .map(Some)
                .map_err(|e| self.fail(&format!("reading {key}"), e)),
            None => Ok(None),
        }
    }

    fn write_meta(&mut self, key: &str, value: i64) -> Result<(), StoreError> {
        let s = self.schema.clone();
        self.client
            .execute(
                &format!(
                    "INSERT INTO {s}.hotstock_meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ),
                &[&key, &value],
            )
            .map(drop)
            .map_err(|e| self.fail(&format!("writing {key}"), e))
    }

    fn oldest_event(&mut self) -> Result<Option<u64>, StoreError> {
        let s = self.schema.clone();
        let row = self
            .client
            .query_one(
                &format!("SELECT MIN(position) FROM {s}.hotstock_events"),
                &[],
            )
            .map_err(|e| self.fail("reading the oldest event", e))?;
        let oldest: Option<i64> = row
            .try_get(0)
            .map_err(|e| self.fail("reading the oldest event", e))?;
        Ok(oldest.map(rows::from_stored))
    }
}

fn event_row(row: &postgres::Row) -> Result<EventRow, postgres::Error> {
    Ok(EventRow {
        position: row.try_get(0)?,
        id: row.try_get(1)?,
        kind: row.try_get(2)?,
        at_ms: row.try_get(3)?,
        sku: row.try_get(4)?,
        available: row.try_get(5)?,
        held: row.try_get(6)?,
        sold: row.try_get(7)?,
        received: row.try_get(8)?,
        reservation: row.try_get(9)?,
        status: row.try_get(10)?,
        from_status: row.try_get(11)?,
        customer: row.try_get(12)?,
        lines: row.try_get(13)?,
        deadline_ms: row.try_get(14)?,
        delta: row.try_get(15)?,
        version: row.try_get(16)?,
        limit_set: row.try_get(17)?,
        per_customer_limit: row.try_get(18)?,
        units: row.try_get(19)?,
        low_stock_set: row.try_get(20)?,
        low_stock_threshold: row.try_get(21)?,
        safety_stock: row.try_get(22)?,
        backordered: row.try_get(23)?,
        owed: row.try_get(24)?,
        window_set: row.try_get(25)?,
        sale_starts_at_ms: row.try_get(26)?,
        sale_ends_at_ms: row.try_get(27)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_and_redaction() {
        assert!(valid_schema("hotstock"));
        assert!(valid_schema("hotstock_test_12_3"));
        for bad in ["", "Hot", "1abc", "a-b", "a;drop table x", &"a".repeat(64)] {
            assert!(!valid_schema(bad), "{bad:?}");
        }
        assert_eq!(
            redact("postgresql://shop:secret@db:5432/x"),
            "postgresql://shop@db:5432/x"
        );
        assert_eq!(
            redact("postgresql://postgres@127.0.0.1/test"),
            "postgresql://postgres@127.0.0.1/test"
        );
    }
}
