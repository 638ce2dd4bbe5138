//! The operator's changes to the stock of record: units received and
//! withdrawn (each at most once under a key), and the per-customer limit
//! every node applies.

use super::*;

impl Escrow {
    /// `receive`, at most once per `key`: the receive is recorded under
    /// its key in the same transaction, so a retry after a lost answer
    /// finds it and receives nothing more. Returns whether this call
    /// received (`false`: an earlier one with the key did). The same key
    /// for another SKU or count is refused.
    pub fn receive_once(&mut self, sku: &str, units: u64, key: &str) -> Result<bool, EscrowError> {
        let delta = to_db(units)?;
        self.change_once(sku, delta, key)
    }

    /// `withdraw`, at most once per `key` (as `receive_once`; a key names
    /// one change, a receive or a withdrawal). A refused withdrawal keeps
    /// no key, so it may be sent again with the same one.
    pub fn withdraw_once(&mut self, sku: &str, units: u64, key: &str) -> Result<bool, EscrowError> {
        let delta = -to_db(units)?;
        self.change_once(sku, delta, key)
    }

    /// `units` more received for `sku` (created if new), all unleased.
    pub fn receive(&mut self, sku: &str, units: u64) -> Result<(), EscrowError> {
        check_name("SKU", sku)?;
        let units = to_db(units)?;
        self.transaction("receiving stock", |tx, s| receive_in(tx, s, sku, units))
    }

    /// `units` fewer received for `sku` (damaged, lost, counted wrong),
    /// taken from its unleased units: the units the nodes hold are their
    /// buyers', so a withdrawal of more than is unleased is refused
    /// (`TooFewUnleased`), and raises the SKU's demand so that the nodes
    /// give some back for the operator's next attempt.
    pub fn withdraw(&mut self, sku: &str, units: u64) -> Result<(), EscrowError> {
        check_name("SKU", sku)?;
        let units = to_db(units)?;
        let withdrawn =
            self.transaction("withdrawing stock", |tx, s| withdraw_in(tx, s, sku, units));
        withdrawn?.map_err(|unleased| too_few_unleased(sku, units, unleased))
    }

    fn change_once(&mut self, sku: &str, delta: i64, key: &str) -> Result<bool, EscrowError> {
        for (what, name) in [("SKU", sku), ("receive key", key)] {
            check_name(what, name)?;
        }
        let changed = self.transaction("changing stock once", |tx, s| {
            let sql = format!(
                "INSERT INTO {s}.escrow_receives (key, sku, units) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO NOTHING"
            );
            if tx.execute(&sql, &[&key, &sku, &delta]).map_err(db)? == 0 {
                return earlier_change(tx, s, key, sku, delta).map(Ok);
            }
            if delta > 0 {
                receive_in(tx, s, sku, delta)?;
                return Ok(Ok(true));
            }
            let withdrawn = withdraw_in(tx, s, sku, -delta)?;
            if withdrawn.is_err() {
                // Refused: the key names no change, so a retry may use it.
                let sql = format!("DELETE FROM {s}.escrow_receives WHERE key = $1");
                tx.execute(&sql, &[&key]).map_err(db)?;
            }
            Ok(withdrawn.map(|()| true))
        })?;
        changed.map_err(|unleased| too_few_unleased(sku, -delta, unleased))
    }

    /// Sets (`Some`) or removes (`None`) `sku`'s per-customer limit for
    /// the whole cluster: every node's lease keeper applies it at its next
    /// refresh, before it books any unit of a SKU new to it. A SKU not yet
    /// received gets a row with no units, so the limit is there first.
    pub fn set_limit(&mut self, sku: &str, limit: Option<u32>) -> Result<(), EscrowError> {
        check_name("SKU", sku)?;
        if limit == Some(0) {
            return Err(invalid("per-customer limit", "at least 1"));
        }
        let limit = limit.map(i64::from);
        self.transaction("setting a per-customer limit", |tx, s| {
            let sql = format!(
                "INSERT INTO {s}.escrow_stock (sku, received, unleased, per_customer_limit)
                 VALUES ($1, 0, 0, $2)
                 ON CONFLICT (sku) DO UPDATE SET per_customer_limit = $2"
            );
            tx.execute(&sql, &[&sku, &limit]).map_err(db)?;
            Ok(())
        })
    }
}

/// Adds `units` to `sku`'s received and unleased (the row made if new).
fn receive_in(tx: &mut Transaction<'_>, s: &str, sku: &str, units: i64) -> Result<(), EscrowError> {
    let sql = format!(
        "INSERT INTO {s}.escrow_stock (sku, received, unleased) VALUES ($1, $2, $2)
         ON CONFLICT (sku) DO UPDATE SET received = {s}.escrow_stock.received + $2,
           unleased = {s}.escrow_stock.unleased + $2"
    );
    tx.execute(&sql, &[&sku, &units]).map_err(db)?;
    Ok(())
}

/// Takes `units` from `sku`'s received and unleased if that many are
/// unleased: `Ok(Err(unleased))` when fewer are, with the SKU's demand
/// raised (committed with the transaction, so the nodes give some back).
fn withdraw_in(
    tx: &mut Transaction<'_>,
    s: &str,
    sku: &str,
    units: i64,
) -> Result<Result<(), u64>, EscrowError> {
    let sql = format!(
        "UPDATE {s}.escrow_stock SET received = received - $2, unleased = unleased - $2
         WHERE sku = $1 AND unleased >= $2"
    );
    if tx.execute(&sql, &[&sku, &units]).map_err(db)? == 1 {
        return Ok(Ok(()));
    }
    let sql = format!(
        "UPDATE {s}.escrow_stock SET demand = demand + 1 WHERE sku = $1 RETURNING unleased"
    );
    match tx.query_opt(&sql, &[&sku]).map_err(db)? {
        Some(row) => Ok(Err(from_db(row.get(0)))),
        None => Err(EscrowError::UnknownSku {
            sku: sku.to_owned(),
        }),
    }
}

/// A withdrawal of `units` refused: only `unleased` were there.
fn too_few_unleased(sku: &str, units: i64, unleased: u64) -> EscrowError {
    EscrowError::TooFewUnleased {
        sku: sku.to_owned(),
        unleased,
        requested: from_db(units),
    }
}

/// A change already made under `key`: `false` if it was this one (a
/// retry), refused if the key named another.
fn earlier_change(
    tx: &mut Transaction<'_>,
    s: &str,
    key: &str,
    sku: &str,
    delta: i64,
) -> Result<bool, EscrowError> {
    let sql = format!("SELECT sku, units FROM {s}.escrow_receives WHERE key = $1");
    let row = tx.query_one(&sql, &[&key]).map_err(db)?;
    let (earlier_sku, earlier_units): (String, i64) = (row.get(0), row.get(1));
    match earlier_sku == sku && earlier_units == delta {
        true => Ok(false),
        false => Err(EscrowError::ReceiveKeyReused {
            key: key.to_owned(),
            earlier_sku,
            earlier_units,
        }),
    }
}
