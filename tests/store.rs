//! The SQLite store on its own: pruning, and that a reservation row costs
//! one B-tree insert. (tests/postgres.rs runs the same pruning scenario
//! against PostgreSQL.)

mod common;

use hotstock::durable::settled::SettledHold;
use hotstock::durable::store::sqlite::SqliteStore;
use hotstock::durable::store::Store;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hotstock-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

use common::one_unit;

#[test]
fn sqlite_prunes_reservations_by_status_and_age() {
    let dir = scratch("prune");
    let mut store = SqliteStore::open(&dir.join("hotstock.sqlite")).unwrap();
    common::store_prunes_reservations_by_status_and_age(&mut store);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A purchase is one B-tree insert (the table's), not two: reservations
/// have no index by time (pruning is an hourly scan).
#[test]
fn sqlite_keeps_no_index_over_reservations() {
    let dir = scratch("indexes");
    let path = dir.join("hotstock.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let connection = rusqlite::Connection::open(&path).unwrap();
    let declared: Vec<String> = connection
        .prepare(
            "SELECT name FROM sqlite_master
             WHERE type = 'index' AND tbl_name = 'hotstock_reservations' AND sql IS NOT NULL",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(declared.is_empty(), "{declared:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A data directory made by an earlier build had an index over every
/// reservation by time; opening it drops that index.
#[test]
fn opening_an_older_store_drops_the_index_over_every_reservation() {
    let dir = scratch("upgrade");
    let path = dir.join("hotstock.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch(
            "CREATE INDEX hotstock_reservations_by_time ON hotstock_reservations (status_ms)",
        )
        .unwrap();
    drop(connection);
    drop(SqliteStore::open(&path).unwrap());
    let connection = rusqlite::Connection::open(&path).unwrap();
    let old: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'hotstock_reservations_by_time'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A store made before low-stock thresholds, safety stock and kits: its SKU
/// table gains their columns on open, and its rows load with none of them.
#[test]
fn opening_a_store_from_before_low_stock_thresholds_adds_their_columns() {
    let dir = scratch("upgrade-low-stock");
    let path = dir.join("hotstock.sqlite");
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch(
            "CREATE TABLE hotstock_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO hotstock_meta VALUES ('position_segment', 0), ('position_offset', 24);
             CREATE TABLE hotstock_skus (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                 available INTEGER NOT NULL, held INTEGER NOT NULL, sold INTEGER NOT NULL,
                 received INTEGER NOT NULL, version INTEGER NOT NULL, per_customer_limit INTEGER,
                 limit_version INTEGER NOT NULL);
             INSERT INTO hotstock_skus VALUES (0, 'tee', 5, 0, 0, 5, 1, NULL, 0);",
        )
        .unwrap();
    drop(connection);
    let mut store = SqliteStore::open(&path).unwrap();
    let settled = store.load().unwrap().expect("a checkpoint");
    let tee = settled.skus[0].as_ref().unwrap();
    assert_eq!((&*tee.name, tee.received, tee.low_stock), ("tee", 5, None));
    assert_eq!(
        (tee.safety_stock, tee.safety_stock_version, &tee.kit),
        (0, 0, &None),
        "and no safety stock and no kit, the columns added since"
    );
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rows go to SQLite many per statement with the rest one by one: every
/// field of every row comes back, across both paths, and a later
/// checkpoint's rows update earlier ones in place.
#[test]
fn sqlite_round_trips_rows_written_many_per_statement() {
    use hotstock::{HoldStatus, Line, SkuId};

    let dir = scratch("many");
    let mut store = SqliteStore::open(&dir.join("hotstock.sqlite")).unwrap();
    let row = |id: u64, status: HoldStatus| SettledHold {
        status,
        at_ms: 1_000 + id,
        deadline_ms: 9_000 + id,
        limit_mask: (id % 3) as u32,
        customer: (id % 2 == 0).then(|| format!("customer-{id}").into()),
        lines: (0..1 + id % 3)
            .map(|l| Line {
                sku: SkuId::from_index((id * 10 + l) as u32),
                quantity: 1 + l as u32,
            })
            .collect(),
        extensions: (id % 4) as u8,
        amounts: (id % 5 == 0).then(|| {
            (0..1 + id % 3)
                .map(|l| hotstock::core::types::LineAmounts {
                    confirmed: 1 + l as u32,
                    refunded: (l % 2) as u32,
                })
                .collect()
        }),
    };
    let save = |store: &mut SqliteStore, holds: Vec<(u64, SettledHold)>| {
        store.save(&common::checkpoint_of(holds, None)).unwrap();
    };
    // 70 rows: two full statements and a tail of six.
    save(
        &mut store,
        (0..70).map(|id| (id, row(id, HoldStatus::Held))).collect(),
    );
    // 40 of them move on: one full statement and a tail of eight.
    save(
        &mut store,
        (10..50)
            .map(|id| (id, row(id, HoldStatus::Confirmed)))
            .collect(),
    );
    let loaded = store.load().unwrap().unwrap().holds;
    assert_eq!(loaded.len(), 70);
    for id in 0..70 {
        let status = if (10..50).contains(&id) {
            HoldStatus::Confirmed
        } else {
            HoldStatus::Held
        };
        assert_eq!(loaded[&id], row(id, status), "row {id}");
    }
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A checkpoint's rows above every stored id go to chunks, the rest are
/// upserts (`store/sqlite/chunks.rs`): rows of both kinds interleave in
/// one checkpoint, new ids below the largest stored one (a reused slot)
/// and ids past `i64::MAX` (stored negative, so below in SQLite's order,
/// never chunked) included, and every one reads back as last written.
#[test]
fn sqlite_chunks_rows_above_the_largest_stored_id_and_upserts_the_rest() {
    let dir = scratch("insert-or-upsert");
    let mut store = SqliteStore::open(&dir.join("hotstock.sqlite")).unwrap();
    common::store_writes_new_and_updated_reservations(&mut store);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reservation first written into a chunk and later as a row (its
/// newer state) is pruned whole: when the row goes, the chunk's older entry
/// goes with it, or it would come back (as held, here) at the next load.
/// A chunk that keeps some entries is rewritten with their ids intact.
#[test]
fn sqlite_prunes_a_chunk_entry_with_the_row_that_superseded_it() {
    use hotstock::HoldStatus;

    let dir = scratch("chunk-prune");
    let path = dir.join("hotstock.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    let row = |status, at_ms| one_unit(status, at_ms, 0);
    let save = |store: &mut SqliteStore, holds, prune| {
        store.save(&common::checkpoint_of(holds, prune)).unwrap();
    };
    use HoldStatus::*;
    // New ids: one chunk.
    let first: Vec<_> = [
        (1, Held, 50),
        (2, Held, 50),
        (3, Confirmed, 100),
        (4, Cancelled, 100),
        (5, Held, 50),
        (6, Held, 50),
    ]
    .iter()
    .map(|&(id, status, at)| (id, row(status, at)))
    .collect();
    save(&mut store, first, None);
    // Later states of three of them: rows.
    let later = vec![
        (1, row(Confirmed, 100)),
        (2, row(Confirmed, 5_000)),
        (5, row(Cancelled, 100)),
    ];
    save(&mut store, later, None);
    // Ended rows older than 1,000 and confirmed rows older than 2,000 go.
    save(&mut store, Vec::new(), Some((1_000, 2_000)));
    let expected = [(2, row(Confirmed, 5_000)), (6, row(Held, 50))];
    let loaded = store.load().unwrap().unwrap().holds;
    let mut ids: Vec<u64> = loaded.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, [2, 6], "1 and 5 must not come back as held");
    for (id, hold) in &expected {
        assert_eq!(&loaded[id], hold, "row {id}");
    }
    // The rewritten chunk's last entry is still the largest id: a new
    // reservation above it, and an update of it, land where they belong.
    save(
        &mut store,
        vec![(6, row(Confirmed, 6_000)), (7, row(Held, 6_000))],
        None,
    );
    drop(store);
    let loaded = SqliteStore::open(&path)
        .unwrap()
        .load()
        .unwrap()
        .unwrap()
        .holds;
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded[&6], row(Confirmed, 6_000));
    assert_eq!(loaded[&7], row(Held, 6_000));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A chunk whose blob does not decode stops the load with an error that
/// names the table and the chunk.
#[test]
fn a_damaged_reservation_chunk_is_an_error_naming_it() {
    let dir = scratch("chunk-damage");
    let path = dir.join("hotstock.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    let hold = one_unit(hotstock::HoldStatus::Held, 1, 0);
    store
        .save(&common::checkpoint_of(vec![(9, hold)], None))
        .unwrap();
    drop(store);
    let connection = rusqlite::Connection::open(&path).unwrap();
    let damaged = connection
        .execute(
            "UPDATE hotstock_reservation_chunks SET rows = substr(rows, 1, length(rows) - 2)",
            [],
        )
        .unwrap();
    assert_eq!(damaged, 1, "the reservation is in a chunk");
    drop(connection);
    let message = SqliteStore::open(&path)
        .unwrap()
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("hotstock_reservation_chunks") && message.contains("first id"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The hourly prune reads only chunks with an entry old enough by its own
/// status's bound: a chunk of recent confirmed purchases is not read (its
/// blob, damaged here, goes unnoticed) until the confirmed bound reaches
/// it (then the damage stops the prune, and nothing is deleted).
#[test]
fn a_prune_reads_only_chunks_old_enough_by_their_entries_status() {
    let dir = scratch("chunk-prune-skip");
    let path = dir.join("hotstock.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    let confirmed = |at_ms| one_unit(hotstock::HoldStatus::Confirmed, at_ms, 0);
    let checkpoint = common::checkpoint_of;
    let sale = (1..=3).map(|id| (id, confirmed(5_000))).collect();
    store.save(&checkpoint(sale, None)).unwrap();
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute(
            "UPDATE hotstock_reservation_chunks SET rows = substr(rows, 1, 5)",
            [],
        )
        .unwrap();
    drop(connection);
    // Ended rows before 9,000 go, confirmed ones before 2,000: the chunk
    // holds only confirmed entries of 5,000, and is not read.
    store
        .save(&checkpoint(Vec::new(), Some((9_000, 2_000))))
        .expect("a prune that does not need the chunk");
    // Confirmed ones before 6,000: it is read, and its damage stops the
    // checkpoint.
    let error = store
        .save(&checkpoint(Vec::new(), Some((9_000, 6_000))))
        .unwrap_err()
        .to_string();
    assert!(error.contains("hotstock_reservation_chunks"), "{error}");
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A store records its format. One a newer build wrote (a larger format)
/// is refused with a message that says what to do, before this build's
/// schema touches it; one from before formats opens and is recorded.
#[test]
fn a_store_of_a_newer_format_is_refused_before_anything_touches_it() {
    use hotstock::durable::store::sqlite::STORE_FORMAT;
    let dir = scratch("format");
    let path = dir.join("hotstock.sqlite");
    let format = |connection: &rusqlite::Connection| -> Option<i64> {
        connection
            .query_row(
                "SELECT value FROM hotstock_meta WHERE key = 'store_format'",
                [],
                |row| row.get(0),
            )
            .ok()
    };
    let chunk_table = |connection: &rusqlite::Connection| -> i64 {
        connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'hotstock_reservation_chunks'",
                [],
                |row| row.get(0),
            )
            .unwrap()
    };
    drop(SqliteStore::open(&path).unwrap());
    let connection = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(format(&connection), Some(STORE_FORMAT));
    // As a newer layout might: another format, a table gone.
    connection
        .execute_batch(&format!(
            "UPDATE hotstock_meta SET value = {} WHERE key = 'store_format';
             DROP TABLE hotstock_reservation_chunks;",
            STORE_FORMAT + 1
        ))
        .unwrap();
    let error = SqliteStore::open(&path).unwrap_err().to_string();
    let newer = format!("newer hotstock (store format {})", STORE_FORMAT + 1);
    assert!(error.contains(&newer), "{error}");
    assert_eq!(
        chunk_table(&connection),
        0,
        "the schema ran on a refused store"
    );
    // A store from before formats: no key.
    connection
        .execute("DELETE FROM hotstock_meta WHERE key = 'store_format'", [])
        .unwrap();
    drop(SqliteStore::open(&path).unwrap());
    assert_eq!(format(&connection), Some(STORE_FORMAT));
    assert_eq!(chunk_table(&connection), 1);
    drop(connection);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sqlite_counts_boots() {
    let dir = scratch("boots");
    let path = dir.join("hotstock.sqlite");
    common::store_counts_boots(|| Box::new(SqliteStore::open(&path).unwrap()));
    std::fs::remove_dir_all(&dir).unwrap();
}
