//! What the nodes tell each other through the escrow: heartbeats, each
//! node's figures per SKU (a SKU's document in a cluster), and demand.

use super::*;

impl Escrow {
    /// Raises `sku`'s demand counter: a node whose buyers found none left
    /// asks the nodes holding units to give some back.
    pub fn ask_for_more(&mut self, sku: &str) -> Result<(), EscrowError> {
        check_name("SKU", sku)?;
        self.transaction("asking for units", |tx, s| {
            let sql = format!("UPDATE {s}.escrow_stock SET demand = demand + 1 WHERE sku = $1");
            tx.execute(&sql, &[&sku]).map_err(db)?;
            Ok(())
        })
    }

    /// Records that `node` (serving at `address`) is alive at `now_ms`.
    pub fn heartbeat(&mut self, node: &str, address: &str, now_ms: u64) -> Result<(), EscrowError> {
        check_name("node", node)?;
        check_name("address", address)?;
        let now_ms = i64::try_from(now_ms).map_err(|_| invalid("time", format!("{now_ms} ms")))?;
        self.transaction("recording a heartbeat", |tx, s| {
            let sql = format!(
                "INSERT INTO {s}.escrow_nodes (node, address, seen_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (node) DO UPDATE SET address = $2,
                   seen_ms = GREATEST({s}.escrow_nodes.seen_ms, $3)"
            );
            tx.execute(&sql, &[&node, &address, &now_ms]).map_err(db)?;
            Ok(())
        })
    }

    /// Records `node`'s own figures of its SKUs at `now_ms` (one statement
    /// for all of them), so every node can show a SKU's whole cluster.
    pub fn report(&mut self, node: &str, now_ms: u64, skus: &[NodeSku]) -> Result<(), EscrowError> {
        check_name("node", node)?;
        if skus.is_empty() {
            return Ok(());
        }
        let now_ms = i64::try_from(now_ms).map_err(|_| invalid("time", format!("{now_ms} ms")))?;
        let names: Vec<&str> = skus.iter().map(|s| s.sku.as_str()).collect();
        let column = |f: fn(&NodeSku) -> u64| -> Vec<i64> {
            skus.iter()
                .map(|s| i64::try_from(f(s)).unwrap_or(i64::MAX))
                .collect()
        };
        let (available, held) = (column(|s| s.available), column(|s| s.held));
        let (sold, leased) = (column(|s| s.sold), column(|s| s.leased));
        self.transaction("reporting a node's SKUs", |tx, s| {
            let sql = format!(
                "INSERT INTO {s}.escrow_node_skus (node, sku, available, held, sold, leased, seen_ms)
                 SELECT $1, r.sku, r.available, r.held, r.sold, r.leased, $2
                 FROM UNNEST($3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[])
                   AS r (sku, available, held, sold, leased)
                 ON CONFLICT (node, sku) DO UPDATE SET available = EXCLUDED.available,
                   held = EXCLUDED.held, sold = EXCLUDED.sold, leased = EXCLUDED.leased,
                   seen_ms = EXCLUDED.seen_ms"
            );
            let params: [&(dyn postgres::types::ToSql + Sync); 7] =
                [&node, &now_ms, &names, &available, &held, &sold, &leased];
            tx.execute(&sql, &params).map_err(db)?;
            Ok(())
        })
    }

    /// Every node's latest figures of every SKU it reported.
    pub fn node_skus(&mut self) -> Result<Vec<NodeSku>, EscrowError> {
        self.transaction("reading the nodes' SKUs", |tx, s| {
            let sql = format!(
                "SELECT node, sku, available, held, sold, leased, seen_ms
                 FROM {s}.escrow_node_skus ORDER BY sku, node"
            );
            let rows = tx.query(&sql, &[]).map_err(db)?;
            Ok(rows
                .iter()
                .map(|row| NodeSku {
                    node: row.get(0),
                    sku: row.get(1),
                    available: from_db(row.get(2)),
                    held: from_db(row.get(3)),
                    sold: from_db(row.get(4)),
                    leased: from_db(row.get(5)),
                    seen_ms: from_db(row.get(6)),
                })
                .collect())
        })
    }

    /// Every node that ever sent a heartbeat, by id.
    pub fn nodes(&mut self) -> Result<Vec<EscrowNode>, EscrowError> {
        self.transaction("reading the nodes", |tx, s| {
            let sql = format!("SELECT node, address, seen_ms FROM {s}.escrow_nodes ORDER BY node");
            let rows = tx.query(&sql, &[]).map_err(db)?;
            Ok(rows
                .iter()
                .map(|row| EscrowNode {
                    node: row.get(0),
                    address: row.get(1),
                    seen_ms: from_db(row.get(2)),
                })
                .collect())
        })
    }
}
