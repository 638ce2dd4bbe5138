//! Helpers shared by integration tests (each test file includes this module).
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod pg;
pub mod server;
pub mod webdriver;

use std::path::{Path, PathBuf};

/// Copies a directory tree: a data directory as a crash would leave it,
/// when taken while the engine runs.
///
/// A file listed and gone before its copy (the journal's segment made ahead
/// renamed from `next-segment.zeroing`, a segment deleted after a
/// checkpoint, SQLite's WAL index) is left out, as a crash at that moment
/// would leave it: copying it failed `missing_segment_refuses_to_start` in
/// a CI run (NotFound), a race between this copy and the engine's threads.
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
            continue;
        }
        match std::fs::copy(entry.path(), &target) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(&target);
            }
            Err(e) => panic!("copying {}: {e}", entry.path().display()),
        }
    }
}

/// A checkpoint of `holds` (at a position past a segment's header) and,
/// when given, a prune's two bounds (ended, confirmed).
pub fn checkpoint_of(
    holds: Vec<(u64, hotstock::durable::settled::SettledHold)>,
    prune_before_ms: Option<(u64, u64)>,
) -> hotstock::durable::settled::Checkpoint {
    let mut checkpoint = hotstock::durable::settled::Checkpoint {
        holds,
        prune_before_ms,
        ..Default::default()
    };
    checkpoint.position.offset = 24;
    checkpoint
}

/// A reservation row of one unit of SKU `sku`, in `status` since `at_ms`.
pub fn one_unit(
    status: hotstock::HoldStatus,
    at_ms: u64,
    sku: u32,
) -> hotstock::durable::settled::SettledHold {
    hotstock::durable::settled::SettledHold {
        status,
        at_ms,
        deadline_ms: at_ms + 1_000,
        limit_mask: 0,
        customer: None,
        lines: vec![hotstock::Line {
            sku: hotstock::SkuId::from_index(sku),
            quantity: 1,
        }],
        extensions: 0,
        amounts: None,
    }
}

/// Reservation rows of both kinds in one checkpoint, as each store splits
/// them: new ids (above every stored one: SQLite chunks them, PostgreSQL
/// copies them in) and the rest (upserts). New ids below the largest
/// stored one (a reused slot) and ids past `i64::MAX` (stored negative, so
/// below in the stores' order) included; every one reads back as last
/// written. A new id sent the wrong way fails the save (PostgreSQL: a key
/// copied in twice) or reads back an older state (SQLite: a chunk entry
/// under a row).
pub fn store_writes_new_and_updated_reservations(store: &mut dyn hotstock::durable::store::Store) {
    use hotstock::durable::settled::SettledHold;
    use hotstock::HoldStatus;

    let row = |id: u64, status| one_unit(status, 1_000 + (id % 1_000), (id % 7) as u32);
    let mut expected = std::collections::BTreeMap::new();
    let mut save = |ids: Vec<(u64, HoldStatus)>| {
        let holds: Vec<(u64, SettledHold)> = ids
            .iter()
            .map(|&(id, status)| (id, row(id, status)))
            .collect();
        for (id, hold) in &holds {
            expected.insert(*id, hold.clone());
        }
        store.save(&checkpoint_of(holds, None)).unwrap();
        store.load().unwrap().unwrap().holds
    };
    let high = 1u64 << 63;
    let held = |ids: std::ops::Range<u64>| ids.map(|id| (id, HoldStatus::Held));
    let confirmed = |ids: std::ops::Range<u64>| ids.map(|id| (id, HoldStatus::Confirmed));
    // Into an empty store, ids past i64::MAX among them.
    save(held(100..170).chain(held(high + 10..high + 20)).collect());
    // New ids below the largest, updates, new ids above it, and updates
    // and new rows past i64::MAX, in id order as a checkpoint gives them.
    let mixed = held(0..40)
        .chain(confirmed(100..140))
        .chain(held(500..580))
        .chain(held(high..high + 5))
        .chain(confirmed(high + 10..high + 15))
        .chain(held(high + 30..high + 40));
    save(mixed.collect());
    // Updates only, across every earlier kind.
    let loaded = save(
        confirmed(30..35)
            .chain(confirmed(160..165))
            .chain(confirmed(570..575))
            .chain(confirmed(high + 1..high + 3))
            .collect(),
    );
    assert_eq!(loaded.len(), expected.len());
    for (id, hold) in &expected {
        assert_eq!(&loaded[id], hold, "row {id}");
    }
}

/// What each store must do with reservation rows when a checkpoint asks it
/// to prune (hourly, and at close): ended rows past their retention and
/// confirmed ones past the refund window go, nothing else; a checkpoint
/// that does not ask prunes nothing.
pub fn store_prunes_reservations_by_status_and_age(
    store: &mut dyn hotstock::durable::store::Store,
) {
    use hotstock::durable::settled::SettledHold;
    use hotstock::{HoldStatus, Line, SkuId};

    let row = |status: HoldStatus, at_ms: u64| SettledHold {
        status,
        at_ms,
        deadline_ms: at_ms + 1_000,
        limit_mask: 0,
        customer: Some("ann".into()),
        lines: vec![Line {
            sku: SkuId::from_index(0),
            quantity: 1,
        }],
        extensions: 0,
        amounts: None,
    };
    // (id, status, status time): ended rows are old before 1_000, confirmed
    // rows before 2_000.
    let rows = [
        (1, HoldStatus::Cancelled, 100),
        (2, HoldStatus::Expired, 200),
        (3, HoldStatus::Refunded, 300),
        (4, HoldStatus::Cancelled, 1_500),
        (5, HoldStatus::Confirmed, 1_500),
        (6, HoldStatus::Confirmed, 5_000),
        (7, HoldStatus::Held, 100),
    ];
    let checkpoint = checkpoint_of;
    let ids = |store: &mut dyn hotstock::durable::store::Store| {
        let mut ids: Vec<u64> = store
            .load()
            .expect("load")
            .expect("a checkpoint")
            .holds
            .into_keys()
            .collect();
        ids.sort_unstable();
        ids
    };
    let all = rows
        .iter()
        .map(|&(id, status, at)| (id, row(status, at)))
        .collect();
    store.save(&checkpoint(all, None)).expect("write the rows");
    assert_eq!(ids(store), [1, 2, 3, 4, 5, 6, 7]);
    store
        .save(&checkpoint(Vec::new(), None))
        .expect("a checkpoint without pruning");
    assert_eq!(
        ids(store),
        [1, 2, 3, 4, 5, 6, 7],
        "nothing asked, nothing pruned"
    );
    store
        .save(&checkpoint(Vec::new(), Some((1_000, 2_000))))
        .expect("prune");
    assert_eq!(
        ids(store),
        [4, 6, 7],
        "old ended and old confirmed rows go; newer ones and held ones stay"
    );
    let kept = store.load().unwrap().unwrap().holds;
    assert_eq!(kept[&6], row(HoldStatus::Confirmed, 5_000));
}

/// Every store counts boots from 1, one per call, durably (a reopened store
/// goes on from where it was).
pub fn store_counts_boots(mut open: impl FnMut() -> Box<dyn hotstock::durable::store::Store>) {
    let mut store = open();
    assert_eq!(store.next_boot().unwrap(), 1);
    assert_eq!(store.next_boot().unwrap(), 2);
    drop(store);
    let mut store = open();
    assert_eq!(store.next_boot().unwrap(), 3);
}

/// A directory under the system temp dir that does not exist yet (`open`
/// makes it), removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hotstock-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every durable feed event after `after`, in order, from memory and the
/// outbox alike (the journal flushed first).
pub fn feed_events_after(
    durable: &hotstock::durable::DurableEngine,
    mut after: u64,
) -> Vec<hotstock::durable::feed::FeedEvent> {
    durable.journal().flush().unwrap();
    let reader = durable.feed_reader();
    let filter = hotstock::durable::feed::FeedFilter::default();
    let mut events = Vec::new();
    loop {
        let page = reader.read(after, 1000, &filter).unwrap();
        if page.next_after == after {
            return events;
        }
        after = page.next_after;
        events.extend(page.events);
    }
}

/// The PostgreSQL URL tests use, or `None` (and a plain "skipped" line
/// naming `what` did not run) without one.
pub fn postgres_url(what: &str) -> Option<String> {
    match std::env::var("HOTSTOCK_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Straight to the handle: libtest captures eprintln! of passing
            // tests, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: HOTSTOCK_TEST_POSTGRES_URL is not set; {what} did not run"
            );
            None
        }
    }
}

/// An escrow schema of its own (PostgreSQL), dropped when the test ends.
#[cfg(feature = "postgres")]
pub struct EscrowScratch {
    pub url: String,
    pub schema: String,
}

#[cfg(feature = "postgres")]
impl EscrowScratch {
    /// `name`: lower-case letters, digits and `_` (a schema name's part).
    pub fn new(url: &str, name: &str) -> EscrowScratch {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name:?} is not a schema name's part"
        );
        let scratch = EscrowScratch {
            url: url.to_owned(),
            schema: format!("hotstock_escrow_{name}_{}", std::process::id()),
        };
        scratch.drop_schema();
        scratch
    }

    pub fn escrow(&self) -> hotstock::durable::escrow::Escrow {
        hotstock::durable::escrow::Escrow::connect(&self.url, &self.schema).unwrap()
    }

    /// Units `node`'s closed leases sold, read straight from the table.
    pub fn sold_by(&self, node: &str) -> u64 {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        let sql = format!(
            "SELECT COALESCE(SUM(sold), 0)::BIGINT FROM {}.escrow_leases WHERE node = $1",
            self.schema
        );
        let sold: i64 = client.query_one(&sql, &[&node]).unwrap().get(0);
        sold as u64
    }

    fn drop_schema(&self) {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        client.batch_execute(&sql).unwrap();
    }
}

#[cfg(feature = "postgres")]
impl Drop for EscrowScratch {
    /// Best effort: a test that failed because the database went away must
    /// report its own failure, not a second panic from the clean-up (which
    /// aborts the test binary).
    fn drop(&mut self) {
        let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) else {
            eprintln!(
                "could not drop schema {}: the database is unreachable",
                self.schema
            );
            return;
        };
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Err(error) = client.batch_execute(&sql) {
            eprintln!("could not drop schema {}: {error}", self.schema);
        }
    }
}
