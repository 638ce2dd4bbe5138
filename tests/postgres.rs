//! The PostgreSQL store, for real, against the server named by
//! `HOTSTOCK_TEST_POSTGRES_URL` (`.ci/run` always sets it and starts the
//! server). Each test uses a schema of its own and drops it afterwards.

mod common;
use common::copy_dir;

use std::path::PathBuf;
use std::time::Duration;

use hotstock::durable::journal::Durability;
use hotstock::durable::{DurableConfig, DurableEngine, OpenError, StoreConfig};
use hotstock::{BackorderRule, HoldStatus, Line, LocationPut, Order, SkuPut, StockLevel};

fn server() -> Option<String> {
    common::postgres_url("PostgreSQL store tests")
}

/// A schema and data directory for one test; both removed on drop.
struct Scratch {
    url: String,
    schema: String,
    dir: PathBuf,
}

impl Scratch {
    fn new(url: &str, name: &str) -> Scratch {
        let schema = format!("hotstock_test_{name}_{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("hotstock-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let scratch = Scratch {
            url: url.to_owned(),
            schema,
            dir,
        };
        scratch.drop_schema();
        scratch
    }

    fn config(&self, data_dir: &std::path::Path) -> DurableConfig {
        let mut config = DurableConfig::new(data_dir, Durability::Sync);
        config.store = StoreConfig::Postgres {
            url: self.url.clone(),
            schema: self.schema.clone(),
        };
        config.checkpoint_interval = Duration::from_secs(3600);
        config
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test server")
    }

    fn drop_schema(&self) {
        self.client()
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .expect("drop schema");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.drop_schema();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn checkpoints_land_in_postgres_and_recovery_reads_them_back() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "roundtrip");
    let (durable, _) = DurableEngine::open(scratch.config(&scratch.dir)).unwrap();
    let engine = durable.engine().clone();
    let (tee, _) = engine.put_sku("tee", 10, Some(Some(2)), None).unwrap();
    let (cap, _) = engine.put_sku("cap", 5, None, None).unwrap();
    let held = engine
        .reserve(&Order {
            lines: &[Line {
                sku: tee,
                quantity: 2,
            }],
            customer: Some("ann"),
            ..Order::default()
        })
        .unwrap();
    engine.purchase(cap, 3, None).unwrap();
    engine.confirm(held.id).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    durable.checkpoint().unwrap();

    // The shop's other services read these rows.
    let mut client = scratch.client();
    let rows = client
        .query(&format!("SELECT name, available, held, sold, per_customer_limit FROM {}.hotstock_skus ORDER BY id", scratch.schema), &[])
        .unwrap();
    let read: Vec<(String, i64, i64, i64, Option<i64>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        read,
        [
            ("tee".into(), 8, 0, 2, Some(2)),
            ("cap".into(), 2, 0, 3, None)
        ]
    );
    let status: String = client
        .query_one(
            &format!(
                "SELECT status FROM {}.hotstock_reservations WHERE id = $1",
                scratch.schema
            ),
            &[&(held.id.as_u64() as i64)],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "confirmed");

    // More changes after the checkpoint, then a clean close and reopen:
    // the closing checkpoint carries them to PostgreSQL.
    let extra = engine
        .reserve(&Order {
            lines: &[Line {
                sku: cap,
                quantity: 1,
            }],
            ..Order::default()
        })
        .unwrap();
    engine.cancel(extra.id).unwrap();
    engine.sell(cap, 1).unwrap();
    // A safety stock: its columns are added to a schema from before them
    // and read back on open.
    let put = SkuPut {
        safety_stock: Some(1),
        ..SkuPut::default()
    };
    engine.put_stock("tee", &put).unwrap();
    // Backorders: cap sells past zero; a restock fills the older one; the
    // rest stays owed in hotstock_backorders and comes back on open.
    let rule = BackorderRule {
        limit: 5,
        until_ms: None,
    };
    engine.set_backorder(cap, rule).unwrap();
    let owing = |quantity, confirm| {
        engine
            .reserve(&Order {
                lines: &[Line { sku: cap, quantity }],
                confirm,
                ..Order::default()
            })
            .unwrap()
            .id
    };
    let (older, newer) = (owing(2, false), owing(2, true));
    engine.restock(cap, 2).unwrap();
    assert!(engine.reservation(older).unwrap().owed.is_empty());
    assert_eq!(engine.reservation(newer).unwrap().owed, vec![1]);
    // Locations: the marks and priorities come back from their columns,
    // the counts from the locations' own rows.
    for (location, available, priority) in [("berlin", 3, Some(1)), ("paris", 2, None)] {
        let put = LocationPut {
            stock: SkuPut {
                level: Some(StockLevel::Available(available)),
                ..SkuPut::default()
            },
            priority,
        };
        engine.put_location("hat", location, &put).unwrap();
    }
    let hat = engine.sku("hat").unwrap();
    engine
        .reserve(&Order {
            lines: &[Line {
                sku: hat,
                quantity: 2,
            }],
            ..Order::default()
        })
        .unwrap();
    let hat_before = engine.sku_document(hat).unwrap();
    assert_eq!(
        hat_before.locations.as_ref().unwrap()[1].held,
        2,
        "paris, priority 0"
    );
    engine.wait_durable(engine.durability_ticket()).unwrap();
    let keyed_lines = [Line {
        sku: cap,
        quantity: 1,
    }];
    let keyed = Order {
        lines: &keyed_lines,
        confirm: true,
        idempotency_key: Some("pg-key-1"),
        ..Order::default()
    };
    let first = engine.reserve(&keyed).unwrap();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    let before = (
        engine.skus_after(None, 10),
        engine.customer_units(tee, "ann"),
        engine.backorder_queue(cap).unwrap(),
    );
    drop(engine);
    durable.close().unwrap();
    let owed: Vec<(i64, i64)> = scratch
        .client()
        .query(
            &format!(
                "SELECT reservation, owed FROM {}.hotstock_backorders",
                scratch.schema
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // The keyed purchase below owes its unit too (cap has none left).
    assert!(owed.contains(&(newer.as_u64() as i64, 1)), "{owed:?}");
    let backordered = before
        .0
        .iter()
        .find(|d| &*d.name == "cap")
        .unwrap()
        .backordered;
    assert_eq!(owed.iter().map(|o| o.1 as u64).sum::<u64>(), backordered);
    let (reopened, report) = DurableEngine::open(scratch.config(&scratch.dir)).unwrap();
    assert_eq!(
        (
            reopened.engine().skus_after(None, 10),
            reopened.engine().customer_units(tee, "ann"),
            reopened.engine().backorder_queue(cap).unwrap()
        ),
        before
    );
    assert_eq!(
        report.events_replayed, 0,
        "the closing checkpoint covered everything"
    );
    assert_eq!(reopened.engine().sku_document(hat).unwrap(), hat_before);
    // The idempotency key came back from PostgreSQL: the retry is replayed.
    let retry = reopened.engine().reserve(&keyed).unwrap();
    assert_eq!((retry.id, retry.replayed), (first.id, true));
    assert_eq!(
        reopened.engine().skus_after(None, 10),
        before.0,
        "nothing taken twice"
    );
}

#[test]
fn journal_tail_is_replayed_on_top_of_the_postgres_checkpoint() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "tail");
    let (durable, _) = DurableEngine::open(scratch.config(&scratch.dir)).unwrap();
    let engine = durable.engine().clone();
    let (sku, _) = engine.put_sku("hot", 1_000, None, None).unwrap();
    for _ in 0..20 {
        engine.sell(sku, 1).unwrap();
    }
    engine.wait_durable(engine.durability_ticket()).unwrap();
    durable.checkpoint().unwrap();
    for _ in 0..7 {
        engine.sell(sku, 1).unwrap();
    }
    engine.wait_durable(engine.durability_ticket()).unwrap();
    // Crash now: copy the data directory; PostgreSQL stays at the checkpoint
    // because the original is never closed before the copy is recovered.
    let crashed = scratch.dir.with_extension("crashed");
    copy_dir(&scratch.dir, &crashed);
    drop(engine);
    // The original stays open (its lock is on its own directory) while the
    // copy recovers against the same schema.
    let (recovered, report) = DurableEngine::open(scratch.config(&crashed)).unwrap();
    assert_eq!(report.events_replayed, 7);
    let doc = recovered
        .engine()
        .sku_document(recovered.engine().sku("hot").unwrap())
        .unwrap();
    assert_eq!((doc.available, doc.sold), (973, 27));
    drop(recovered);
    drop(durable);
    let _ = std::fs::remove_dir_all(&crashed);
}

#[test]
fn postgres_prunes_reservations_by_status_and_age() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "prune");
    let mut store =
        hotstock::durable::store::postgres::PostgresStore::connect(&url, &scratch.schema)
            .expect("connect the PostgreSQL store");
    common::store_prunes_reservations_by_status_and_age(&mut store);
}

/// New reservations are copied in, the rest upserted: rows of both kinds
/// in one checkpoint read back as last written (a new id sent to the copy
/// while it has a row fails the save on its key).
#[test]
fn postgres_copies_new_reservations_and_upserts_the_rest() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "copy_or_upsert");
    let mut store =
        hotstock::durable::store::postgres::PostgresStore::connect(&url, &scratch.schema)
            .expect("connect the PostgreSQL store");
    common::store_writes_new_and_updated_reservations(&mut store);
}

/// Bug: a checkpoint the server refused said only "db error" (the
/// client's text for any server error), not the server's reason, which is
/// what an operator can act on.
#[test]
fn a_failed_checkpoint_names_the_servers_reason() {
    use hotstock::durable::store::Store;
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "reason");
    let mut store =
        hotstock::durable::store::postgres::PostgresStore::connect(&url, &scratch.schema)
            .expect("connect the PostgreSQL store");
    scratch
        .client()
        .batch_execute(&format!(
            "DROP TABLE {}.hotstock_reservations",
            scratch.schema
        ))
        .unwrap();
    let held = common::one_unit(HoldStatus::Held, 1_000, 0);
    let error = store
        .save(&common::checkpoint_of(vec![(7, held)], None))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("hotstock_reservations") && error.contains("does not exist"),
        "{error}"
    );
}

#[test]
fn postgres_counts_boots() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "boots");
    common::store_counts_boots(|| {
        Box::new(
            hotstock::durable::store::postgres::PostgresStore::connect(&url, &scratch.schema)
                .expect("connect the PostgreSQL store"),
        )
    });
}

/// Bug: a column of an unexpected type made `PostgresStore::load` panic
/// (`Row::get`), and out-of-range numbers were cast without a check. A
/// damaged store is an error that names the table and the row.
#[test]
fn a_damaged_postgres_store_is_an_error_not_a_panic() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "damaged");
    let (durable, _) = DurableEngine::open(scratch.config(&scratch.dir)).unwrap();
    durable.engine().put_sku("tee", 10, None, None).unwrap();
    durable.close().unwrap();
    let s = &scratch.schema;
    let mut client = scratch.client();
    client
        .batch_execute(&format!("UPDATE {s}.hotstock_skus SET version = -1"))
        .unwrap();
    match DurableEngine::open(scratch.config(&scratch.dir)) {
        Err(OpenError::Store(error)) => {
            let message = error.to_string();
            assert!(
                message.contains("hotstock_skus (id 0)") && message.contains("version -1"),
                "{message}"
            );
        }
        other => panic!("a negative version opened: {other:?}"),
    }
    client
        .batch_execute(&format!(
            "ALTER TABLE {s}.hotstock_skus ALTER COLUMN version TYPE text"
        ))
        .unwrap();
    match DurableEngine::open(scratch.config(&scratch.dir)) {
        Err(OpenError::Store(error)) => {
            assert!(error.to_string().contains("reading SKUs"), "{error}");
        }
        other => panic!("a text version column opened: {other:?}"),
    }
}

/// A schema records its format. One a newer build wrote (a larger format)
/// is refused with a message that says what to do, through the engine's
/// start as well, before this build's DDL touches it; one from before
/// formats opens and is recorded.
#[test]
fn a_schema_of_a_newer_format_is_refused_before_anything_touches_it() {
    use hotstock::durable::store::postgres::{PostgresStore, STORE_FORMAT};
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "format");
    let s = &scratch.schema;
    let mut client = scratch.client();
    let format = |client: &mut postgres::Client| -> Option<i64> {
        client
            .query_opt(
                &format!("SELECT value FROM {s}.hotstock_meta WHERE key = 'store_format'"),
                &[],
            )
            .unwrap()
            .map(|row| row.get(0))
    };
    let has_leases = |client: &mut postgres::Client| -> bool {
        let table = format!("{s}.hotstock_leases");
        client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .unwrap()
            .get(0)
    };
    drop(PostgresStore::connect(&url, s).unwrap());
    assert_eq!(format(&mut client), Some(STORE_FORMAT));
    // As a newer layout might: another format, a table gone.
    client
        .batch_execute(&format!(
            "UPDATE {s}.hotstock_meta SET value = {} WHERE key = 'store_format';
             DROP TABLE {s}.hotstock_leases;",
            STORE_FORMAT + 1
        ))
        .unwrap();
    let newer = format!("newer hotstock (store format {})", STORE_FORMAT + 1);
    let error = PostgresStore::connect(&url, s).unwrap_err().to_string();
    assert!(error.contains(&newer), "{error}");
    match DurableEngine::open(scratch.config(&scratch.dir)) {
        Err(OpenError::Store(error)) => assert!(error.to_string().contains(&newer), "{error}"),
        other => panic!("a newer schema opened: {other:?}"),
    }
    assert!(!has_leases(&mut client), "the DDL ran on a refused schema");
    assert_eq!(format(&mut client), Some(STORE_FORMAT + 1));
    // A schema from before formats: no key.
    client
        .batch_execute(&format!(
            "DELETE FROM {s}.hotstock_meta WHERE key = 'store_format'"
        ))
        .unwrap();
    drop(PostgresStore::connect(&url, s).unwrap());
    assert_eq!(format(&mut client), Some(STORE_FORMAT));
    assert!(has_leases(&mut client));
}

/// A sale's checkpoint goes to PostgreSQL many rows per statement: every
/// reservation and every feed event comes back, across full statements and
/// the remainder, and the events read back from the outbox after a restart
/// are the ones served from memory before it.
#[test]
fn a_sale_checkpoints_many_rows_per_statement_and_reads_them_back() {
    let Some(url) = server() else { return };
    let scratch = Scratch::new(&url, "many_rows");
    let (durable, _) = DurableEngine::open(scratch.config(&scratch.dir)).unwrap();
    let engine = durable.engine().clone();
    let (tee, _) = engine.put_sku("tee", 1_000, None, None).unwrap();
    let ids: Vec<_> = (0..300)
        .map(|_| engine.purchase(tee, 1, None).unwrap().id)
        .collect();
    engine.wait_durable(engine.durability_ticket()).unwrap();
    let read_all = |durable: &DurableEngine| common::feed_events_after(durable, 0);
    let served = read_all(&durable);
    durable.checkpoint().unwrap();
    drop(durable);
    let (reopened, _) = DurableEngine::open(scratch.config(&scratch.dir)).unwrap();
    for id in &ids {
        let record = reopened.engine().reservation(*id).unwrap();
        assert_eq!(record.status, HoldStatus::Confirmed);
    }
    assert_eq!(reopened.feed().first_in_memory(), served.len() as u64 + 1);
    assert_eq!(
        read_all(&reopened),
        served,
        "from the outbox, as from memory"
    );
}
