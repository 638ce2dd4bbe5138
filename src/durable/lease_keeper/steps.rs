//! A SKU's lease steps against the escrow: a refill (the grant, then the
//! units booked here), closing leases whose units are sold, giving units
//! back (withdrawn here, durably, before the escrow closes their leases).
//! `docs/cluster.md` gives each step's order and why a crash between its
//! parts is safe.

use super::*;

impl Run {
    pub(super) fn refill(
        &mut self,
        escrow: &mut Escrow,
        name: &str,
        wanted: u64,
    ) -> Result<(), KeeperError> {
        if let Ok(sku) = self.engine.sku(name) {
            self.keep_sold_leases(escrow, sku)?;
        }
        let sequence = self.shared.sequence.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}~{}~{sequence}", self.config.node, self.boot);
        let (lease, unleased) = escrow.grant_counted(&id, &self.config.node, name, wanted)?;
        self.count(1);
        let watch = self.skus.get_mut(name).expect("a watched SKU");
        watch.unleased = unleased;
        if let Some(since) = watch.hungry_since.take() {
            let waited = since.elapsed().as_millis() as u64;
            let mut status = self.shared.status.lock();
            status.longest_refill_wait_ms = status.longest_refill_wait_ms.max(waited);
        }
        if lease.granted == 0 {
            escrow.close(&id, &self.config.node, 0)?;
            self.count(1);
            return Ok(());
        }
        if let Err(refused) = self.engine.grant_lease(name, &id, lease.granted) {
            // Not booked, so nothing of it can be sold: all of it back, and
            // no more asking for this SKU for a while (a name the engine
            // refuses, or a full book, will not mend by itself).
            escrow.close(&id, &self.config.node, lease.granted)?;
            self.count(1);
            let watch = self.skus.get_mut(name).expect("a watched SKU");
            watch.hold_refills_until = Some(Instant::now() + REFUSED_SKU_PAUSE);
            return Err(refused.into());
        }
        let mut status = self.shared.status.lock();
        status.grants += 1;
        status.units_granted += lease.granted;
        Ok(())
    }

    /// Closes the oldest open leases of `sku` as all kept (their units
    /// count in the escrow as this node's), as long as more than
    /// `KEEP_OPEN_LEASES` are open and the rest still cover every unit that
    /// could go back (available and held). Sold units thus never pin
    /// leases open, and a long sale never reaches the book's limit. The
    /// escrow closes first: a crash before the book drops it leaves an
    /// open lease the escrow has closed, which `settle_on_start` keeps.
    pub(super) fn keep_sold_leases(
        &mut self,
        escrow: &mut Escrow,
        sku: SkuId,
    ) -> Result<(), KeeperError> {
        let document = self.engine.sku_document(sku)?;
        let could_go_back = document.available + document.held;
        let open: Vec<_> = (self.engine.leases().into_iter())
            .filter(|lease| lease.sku == sku && lease.returning.is_none())
            .collect();
        let mut covered: u64 = open.iter().map(|lease| lease.granted).sum();
        let mut still_open = open.len();
        for lease in &open {
            if still_open <= KEEP_OPEN_LEASES || covered - lease.granted < could_go_back {
                break;
            }
            escrow.close(&lease.id, &self.config.node, 0)?;
            self.count(1);
            self.engine.keep_lease(&lease.id)?;
            covered -= lease.granted;
            still_open -= 1;
        }
        Ok(())
    }

    pub(super) fn give_back(
        &mut self,
        escrow: &mut Escrow,
        sku: SkuId,
        units: u64,
    ) -> Result<(), KeeperError> {
        let withdrawn = withdraw_leased(&self.engine, sku, units)?;
        if withdrawn == 0 {
            return Ok(());
        }
        let closed = close_returning(&self.engine, escrow, &self.config.node)?;
        self.count(closed as u64);
        let mut status = self.shared.status.lock();
        status.returns += 1;
        status.units_returned += withdrawn;
        Ok(())
    }
}
