//! The escrow (#15, part 1): the stock of record that several nodes sell
//! together, kept in PostgreSQL (or any PostgreSQL-wire database), and the
//! statements that lease it out and take it back.
//!
//! # Why leases of units, settled by the node
//!
//! Each node sells at memory speed from units it holds on lease; the
//! database only sees a node take a lease or give units back, so global
//! no-oversell costs one short transaction per lease, not per sale
//! (O'Neil's escrow method; `../shared/design-notes.md`). A stock lease is
//! not a rate lease: a unit sold just before a node crashed is gone, so
//! a lease is never ended by a timer. It is closed by its node, from the
//! node's own durable journal, with the units it gives back (the rest were
//! sold), exactly once by lease id; or, when the node and its data are
//! lost for good, written off by an operator (`forfeit`: possibly
//! undersold, never oversold).
//!
//! # The invariant
//!
//! Per SKU, always: `unleased + granted of open leases + sold of closed
//! leases == received`, and `unleased >= 0`. Every statement here keeps it
//! inside one transaction; `audit` checks it.
//!
//! # Idempotency
//!
//! A lease id is chosen by the node before it asks (so a grant retried
//! after a lost answer finds its lease instead of taking a second one):
//! the lease row is inserted first, under its primary key, so two grants
//! of one id serialise on it and only the first moves units.
//!
//! What this part does not do yet: the node side (journaling leases,
//! refills, returns when idle or asked, settling on restart), routing
//! between nodes, the HTTP and CLI surfaces. See issue 15's note.

use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};

use super::store::postgres::{redact, valid_schema, CauseText};

mod nodes;
mod stock;

/// Attempts of one transaction that the database refused to serialise
/// (SQLSTATE 40001, which CockroachDB and YugabyteDB raise under
/// contention) or found deadlocked (40P01).
pub const MAX_ESCROW_ATTEMPTS: u32 = 8;

/// ": " and the cause's whole text, or nothing without a cause.
fn cause_suffix(source: Option<&postgres::Error>) -> String {
    source.map_or_else(String::new, |e| format!(": {}", e.cause_text()))
}

/// Units one lease may hold at most (`lease_size`'s `max_chunk` is capped
/// by it).
pub const MAX_LEASE_UNITS: u64 = 1 << 40;

/// Why the escrow refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// Written with the server's reason (`CauseText`): the client's own
    /// text for an error the server reported is only "db error".
    #[error("escrow {escrow}: {message}{}", cause_suffix(source.as_ref()))]
    Database {
        escrow: String,
        message: String,
        #[source]
        source: Option<postgres::Error>,
    },
    #[error("escrow has no SKU {sku:?}: receive stock for it first")]
    UnknownSku { sku: String },
    #[error("lease {lease:?} is held by node {owner:?}, not {node:?}")]
    NotYourLease {
        lease: String,
        owner: String,
        node: String,
    },
    #[error("lease {lease:?} was granted {granted} units; {returned} cannot come back")]
    ReturnsTooMany {
        lease: String,
        granted: u64,
        returned: u64,
    },
    #[error("no lease {lease:?} in the escrow")]
    UnknownLease { lease: String },
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error(
        "receive key {key:?} was used for a change of {earlier_units} units of {earlier_sku:?}, not this \
         change: a key names one receive or withdrawal (use a new key for another)"
    )]
    ReceiveKeyReused {
        key: String,
        earlier_sku: String,
        earlier_units: i64,
    },
    #[error(
        "only {unleased} units of {sku:?} are unleased in the escrow, so {requested} cannot be \
         withdrawn: the nodes hold the rest for their buyers and were asked to give some back \
         (withdraw at most {unleased}, or again once they have)"
    )]
    TooFewUnleased {
        sku: String,
        unleased: u64,
        requested: u64,
    },
}

/// A lease as the escrow keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub node: String,
    pub sku: String,
    /// Units it took from `unleased` (0: the SKU had none left).
    pub granted: u64,
    /// Once closed: units its node sold (`granted - returned`).
    pub sold: Option<u64>,
}

/// What `forfeit` wrote off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forfeited {
    /// Leases closed as all sold.
    pub leases: u64,
    /// Units counted sold that may not have been (never oversold: the
    /// units are gone from `unleased` either way).
    pub units: u64,
}

/// One SKU's row of the stock of record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscrowStock {
    pub sku: String,
    pub received: u64,
    pub unleased: u64,
    /// Times a node whose buyers found none left asked for more (only
    /// grows; nodes compare it with the value they saw last).
    pub demand: u64,
    /// The per-customer limit every node applies (`None`: no limit).
    pub per_customer_limit: Option<u32>,
}

/// One node's figures of one SKU, as it last reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSku {
    pub node: String,
    pub sku: String,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    /// Units of its open leases.
    pub leased: u64,
    /// When it reported them (ms since the epoch).
    pub seen_ms: u64,
}

/// A node as its heartbeats record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscrowNode {
    pub node: String,
    /// Where it serves HTTP (`HOST:PORT`).
    pub address: String,
    /// Its latest heartbeat (ms since the epoch).
    pub seen_ms: u64,
}

/// One SKU's figures, as `audit` reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscrowSku {
    pub sku: String,
    pub received: u64,
    pub unleased: u64,
    /// Units of open leases.
    pub leased: u64,
    /// Units closed leases sold.
    pub sold: u64,
}

impl EscrowSku {
    /// `unleased + leased + sold == received`.
    pub fn balances(&self) -> bool {
        self.unleased
            .checked_add(self.leased)
            .and_then(|u| u.checked_add(self.sold))
            == Some(self.received)
    }
}

/// How many units a node asks for: large while much is unleased, smaller
/// as it runs out, down to single units: `min(max_chunk, unleased / (k ×
/// nodes))`, at least 1 while any is unleased. One lease thus holds at
/// most `max(1, unleased / (k × nodes))` units when it is taken, so a
/// node that stops selling strands at most that many beyond what it
/// already held.
pub fn lease_size(unleased: u64, nodes: u64, k: u64, max_chunk: u64) -> u64 {
    if unleased == 0 {
        return 0;
    }
    let share = unleased / (k.max(1).saturating_mul(nodes.max(1)));
    share.clamp(1, max_chunk.clamp(1, MAX_LEASE_UNITS))
}

/// How a node settling its open leases splits the units it gives back:
/// each lease, oldest first, takes back up to what it granted. Every unit
/// the node holds came from one of these leases, so `units_back` never
/// exceeds their total; `None` if it does (a bug in the caller's count,
/// refused rather than settled wrong).
pub fn split_return(open: &[Lease], units_back: u64) -> Option<Vec<(String, u64)>> {
    let mut left = units_back;
    let mut split = Vec::with_capacity(open.len());
    for lease in open {
        let back = lease.granted.min(left);
        left -= back;
        split.push((lease.id.clone(), back));
    }
    (left == 0).then_some(split)
}

/// The escrow tables in one schema of one database.
pub struct Escrow {
    client: Client,
    schema: String,
    shown: String,
}

impl std::fmt::Debug for Escrow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escrow")
            .field("escrow", &self.shown)
            .finish_non_exhaustive()
    }
}

fn invalid(what: &'static str, why: impl Into<String>) -> EscrowError {
    EscrowError::Invalid {
        what,
        why: why.into(),
    }
}

/// A name the escrow keeps (node, SKU, lease id): 1 to 128 printable
/// ASCII characters.
fn check_name(what: &'static str, name: &str) -> Result<(), EscrowError> {
    let printable = name.bytes().all(|b| (b'!'..=b'~').contains(&b));
    if name.is_empty() || name.len() > 128 || !printable {
        return Err(invalid(
            what,
            format!("{name:?}: 1 to 128 printable ASCII characters"),
        ));
    }
    Ok(())
}

fn to_db(units: u64) -> Result<i64, EscrowError> {
    i64::try_from(units)
        .ok()
        .filter(|&u| u as u64 <= MAX_LEASE_UNITS)
        .ok_or_else(|| invalid("units", format!("{units}: at most {MAX_LEASE_UNITS}")))
}

fn from_db(units: i64) -> u64 {
    // Every column is written from a checked u64 and kept >= 0 by a CHECK.
    u64::try_from(units).unwrap_or(0)
}

impl Escrow {
    /// Connects and creates the tables in `schema` if absent.
    pub fn connect(url: &str, schema: &str) -> Result<Escrow, EscrowError> {
        let shown = format!("PostgreSQL {} schema {schema}", redact(url));
        if !valid_schema(schema) {
            return Err(invalid(
                "schema",
                "lower-case letters, digits and _ (at most 63 bytes)",
            ));
        }
        let fail = |message: &str, source| EscrowError::Database {
            escrow: shown.clone(),
            message: message.to_owned(),
            source: Some(source),
        };
        let mut client = Client::connect(url, NoTls).map_err(|e| fail("cannot connect", e))?;
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.escrow_stock (
                 sku TEXT PRIMARY KEY,
                 received BIGINT NOT NULL CHECK (received >= 0),
                 unleased BIGINT NOT NULL CHECK (unleased >= 0));
             CREATE TABLE IF NOT EXISTS {schema}.escrow_leases (
                 id TEXT PRIMARY KEY, node TEXT NOT NULL, sku TEXT NOT NULL,
                 granted BIGINT NOT NULL CHECK (granted >= 0),
                 sold BIGINT CHECK (sold >= 0 AND sold <= granted));
             CREATE INDEX IF NOT EXISTS escrow_open_leases ON {schema}.escrow_leases (node)
                 WHERE sold IS NULL;
             ALTER TABLE {schema}.escrow_stock
                 ADD COLUMN IF NOT EXISTS demand BIGINT NOT NULL DEFAULT 0;
             ALTER TABLE {schema}.escrow_stock
                 ADD COLUMN IF NOT EXISTS per_customer_limit BIGINT
                 CHECK (per_customer_limit > 0);
             CREATE TABLE IF NOT EXISTS {schema}.escrow_receives (
                 key TEXT PRIMARY KEY, sku TEXT NOT NULL,
                 units BIGINT NOT NULL CONSTRAINT escrow_receive_units_not_zero CHECK (units <> 0),
                 at TIMESTAMPTZ NOT NULL DEFAULT now());
             -- Older schemas allowed receives only (units > 0); a withdrawal
             -- is kept under its key with units below 0.
             ALTER TABLE {schema}.escrow_receives
                 DROP CONSTRAINT IF EXISTS escrow_receives_units_check;
             CREATE TABLE IF NOT EXISTS {schema}.escrow_nodes (
                 node TEXT PRIMARY KEY, address TEXT NOT NULL, seen_ms BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.escrow_node_skus (
                 node TEXT NOT NULL, sku TEXT NOT NULL, available BIGINT NOT NULL,
                 held BIGINT NOT NULL, sold BIGINT NOT NULL, leased BIGINT NOT NULL,
                 seen_ms BIGINT NOT NULL, PRIMARY KEY (node, sku));"
        );
        client
            .batch_execute(&ddl)
            .map_err(|e| fail("cannot create the escrow tables", e))?;
        Ok(Escrow {
            client,
            schema: schema.to_owned(),
            shown,
        })
    }

    /// Runs `work` in one (READ COMMITTED) transaction, again on a
    /// serialisation failure or deadlock (after a short, growing pause),
    /// at most `MAX_ESCROW_ATTEMPTS` times. A refusal rolls back.
    fn transaction<T>(
        &mut self,
        what: &str,
        mut work: impl FnMut(&mut Transaction<'_>, &str) -> Result<T, EscrowError>,
    ) -> Result<T, EscrowError> {
        let (client, schema) = (&mut self.client, self.schema.as_str());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut once = || {
                let mut tx = client.transaction().map_err(db)?;
                let value = work(&mut tx, schema)?;
                tx.commit().map_err(db)?;
                Ok(value)
            };
            match once() {
                Err(EscrowError::Database {
                    source: Some(ref error),
                    ..
                }) if retryable(error) && attempt < MAX_ESCROW_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(1 << attempt.min(6)));
                }
                Err(EscrowError::Database { source, .. }) => {
                    return Err(EscrowError::Database {
                        escrow: self.shown.clone(),
                        message: format!("{what} failed after {attempt} attempt(s)"),
                        source,
                    })
                }
                other => return other,
            }
        }
    }

    /// Grants lease `id` to `node`: up to `wanted` units of `sku` (fewer
    /// when fewer are unleased; 0 when none). A grant of an id that exists
    /// returns that lease and moves nothing, so a retry after a lost
    /// answer never grants twice.
    pub fn grant(
        &mut self,
        id: &str,
        node: &str,
        sku: &str,
        wanted: u64,
    ) -> Result<Lease, EscrowError> {
        self.grant_counted(id, node, sku, wanted)
            .map(|(lease, _)| lease)
    }

    /// `grant`, also answering the SKU's units left unleased after it
    /// (what the next lease's size is computed from).
    pub fn grant_counted(
        &mut self,
        id: &str,
        node: &str,
        sku: &str,
        wanted: u64,
    ) -> Result<(Lease, u64), EscrowError> {
        for (what, name) in [("lease id", id), ("node", node), ("SKU", sku)] {
            check_name(what, name)?;
        }
        let wanted = to_db(wanted)?;
        self.transaction("granting a lease", |tx, s| {
            // The lease row first: a second grant of this id waits on its
            // key until the first commits, then finds it.
            let insert = format!(
                "INSERT INTO {s}.escrow_leases (id, node, sku, granted) VALUES ($1, $2, $3, 0)
                 ON CONFLICT (id) DO NOTHING RETURNING id"
            );
            if tx
                .query_opt(&insert, &[&id, &node, &sku])
                .map_err(db)?
                .is_none()
            {
                let lease = lock_lease(tx, s, id, node)?;
                let left = format!("SELECT unleased FROM {s}.escrow_stock WHERE sku = $1");
                let row = tx.query_opt(&left, &[&sku]).map_err(db)?;
                return Ok((lease, row.map_or(0, |row| from_db(row.get(0)))));
            }
            // One conditional statement: the row's lock makes the read and
            // the decrement one step.
            let take = format!(
                "UPDATE {s}.escrow_stock AS stock SET unleased = stock.unleased - g.units
                 FROM (SELECT sku, LEAST($2::BIGINT, unleased) AS units FROM {s}.escrow_stock
                       WHERE sku = $1 FOR UPDATE) AS g
                 WHERE stock.sku = g.sku RETURNING g.units, stock.unleased"
            );
            let Some(row) = tx.query_opt(&take, &[&sku, &wanted]).map_err(db)? else {
                return Err(EscrowError::UnknownSku {
                    sku: sku.to_owned(),
                });
            };
            let (granted, unleased): (i64, i64) = (row.get(0), row.get(1));
            let record = format!("UPDATE {s}.escrow_leases SET granted = $2 WHERE id = $1");
            tx.execute(&record, &[&id, &granted]).map_err(db)?;
            let lease = Lease {
                id: id.to_owned(),
                node: node.to_owned(),
                sku: sku.to_owned(),
                granted: from_db(granted),
                sold: None,
            };
            Ok((lease, from_db(unleased)))
        })
    }

    /// Closes lease `id` of `node`, giving back `returned` units (its node
    /// sold the rest), exactly once: closing a closed lease changes
    /// nothing and answers it as it was closed.
    pub fn close(&mut self, id: &str, node: &str, returned: u64) -> Result<Lease, EscrowError> {
        check_name("lease id", id)?;
        let returned_db = to_db(returned)?;
        self.transaction("closing a lease", |tx, s| {
            let mut lease = lock_lease(tx, s, id, node)?;
            if lease.sold.is_some() {
                return Ok(lease);
            }
            if returned > lease.granted {
                return Err(EscrowError::ReturnsTooMany {
                    lease: id.to_owned(),
                    granted: lease.granted,
                    returned,
                });
            }
            let close = format!("UPDATE {s}.escrow_leases SET sold = granted - $2 WHERE id = $1");
            tx.execute(&close, &[&id, &returned_db]).map_err(db)?;
            let give_back =
                format!("UPDATE {s}.escrow_stock SET unleased = unleased + $2 WHERE sku = $1");
            tx.execute(&give_back, &[&lease.sku, &returned_db])
                .map_err(db)?;
            lease.sold = Some(lease.granted - returned);
            Ok(lease)
        })
    }

    /// Writes off every open lease of `node` (gone with its data): each is
    /// closed as all sold. Possibly undersold, never oversold.
    pub fn forfeit(&mut self, node: &str) -> Result<Forfeited, EscrowError> {
        check_name("node", node)?;
        self.transaction("forfeiting a node's leases", |tx, s| {
            let sql = format!(
                "UPDATE {s}.escrow_leases SET sold = granted WHERE node = $1 AND sold IS NULL
                 RETURNING granted"
            );
            let rows = tx.query(&sql, &[&node]).map_err(db)?;
            Ok(Forfeited {
                leases: rows.len() as u64,
                units: rows.iter().map(|row| from_db(row.get(0))).sum(),
            })
        })
    }

    /// `node`'s open leases, oldest id first.
    pub fn open_leases(&mut self, node: &str) -> Result<Vec<Lease>, EscrowError> {
        check_name("node", node)?;
        self.transaction("reading open leases", |tx, s| {
            let sql = format!(
                "SELECT id, node, sku, granted, sold FROM {s}.escrow_leases
                 WHERE node = $1 AND sold IS NULL ORDER BY id"
            );
            let rows = tx.query(&sql, &[&node]).map_err(db)?;
            Ok(rows.iter().map(lease_of).collect())
        })
    }

    /// Every SKU's units received and unleased, and its demand counter.
    pub fn stock(&mut self) -> Result<Vec<EscrowStock>, EscrowError> {
        self.transaction("reading the stock", |tx, s| {
            let sql = format!(
                "SELECT sku, received, unleased, demand, per_customer_limit
                 FROM {s}.escrow_stock ORDER BY sku"
            );
            let rows = tx.query(&sql, &[]).map_err(db)?;
            Ok(rows
                .iter()
                .map(|row| EscrowStock {
                    sku: row.get(0),
                    received: from_db(row.get(1)),
                    unleased: from_db(row.get(2)),
                    demand: from_db(row.get(3)),
                    per_customer_limit: (row.get::<_, Option<i64>>(4))
                        .and_then(|limit| u32::try_from(limit).ok()),
                })
                .collect())
        })
    }

    /// Every SKU's figures, for checking the invariant.
    pub fn audit(&mut self) -> Result<Vec<EscrowSku>, EscrowError> {
        self.transaction("auditing", |tx, s| {
            let sql = format!(
                "SELECT st.sku, st.received, st.unleased,
                   COALESCE(SUM(l.granted) FILTER (WHERE l.sold IS NULL), 0)::BIGINT,
                   COALESCE(SUM(l.sold), 0)::BIGINT
                 FROM {s}.escrow_stock st LEFT JOIN {s}.escrow_leases l ON l.sku = st.sku
                 GROUP BY st.sku, st.received, st.unleased ORDER BY st.sku"
            );
            let rows = tx.query(&sql, &[]).map_err(db)?;
            Ok(rows
                .iter()
                .map(|row| EscrowSku {
                    sku: row.get(0),
                    received: from_db(row.get(1)),
                    unleased: from_db(row.get(2)),
                    leased: from_db(row.get(3)),
                    sold: from_db(row.get(4)),
                })
                .collect())
        })
    }
}

fn db(error: postgres::Error) -> EscrowError {
    EscrowError::Database {
        escrow: String::new(),
        message: String::new(),
        source: Some(error),
    }
}

fn retryable(error: &postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

fn lease_of(row: &postgres::Row) -> Lease {
    Lease {
        id: row.get(0),
        node: row.get(1),
        sku: row.get(2),
        granted: from_db(row.get(3)),
        sold: row.get::<_, Option<i64>>(4).map(from_db),
    }
}

/// Lease `id`, locked for this transaction, if `node` holds it.
fn lock_lease(
    tx: &mut Transaction<'_>,
    s: &str,
    id: &str,
    node: &str,
) -> Result<Lease, EscrowError> {
    let sql = format!(
        "SELECT id, node, sku, granted, sold FROM {s}.escrow_leases WHERE id = $1 FOR UPDATE"
    );
    let row = tx.query_opt(&sql, &[&id]).map_err(db)?;
    let lease = row
        .as_ref()
        .map(lease_of)
        .ok_or_else(|| EscrowError::UnknownLease {
            lease: id.to_owned(),
        })?;
    if lease.node != node {
        return Err(EscrowError::NotYourLease {
            lease: id.to_owned(),
            owner: lease.node,
            node: node.to_owned(),
        });
    }
    Ok(lease)
}
