//! The SQLite store on its own: pruning, and that a reservation row costs
//! one B-tree insert. (tests/postgres.rs runs the same pruning scenario
//! against PostgreSQL.)

mod common;

use hotstock::store::sqlite::SqliteStore;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hotstock-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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
