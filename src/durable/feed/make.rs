//! Making feed events from durable batches: one per state change, in the
//! journal's order, with the SKU's counts after it and the crossings
//! (sold out, back in stock, low stock) it caused.

use super::*;

impl FeedInner {
    /// Turns one durable batch into events, in feed order.
    pub(super) fn make(&mut self, batch: RawBatch) {
        // The decoded events' room is kept from batch to batch.
        let mut events = std::mem::take(&mut self.decoded);
        for payload in segment::batch_payloads(&batch.frames) {
            match Event::decode(payload) {
                Ok(event) => events.push(event),
                // Encoded by this process and read back checked: a bug.
                Err(error) => tracing::error!("feed: a durable frame does not decode: {error}"),
            }
        }
        let order = feed_order(&mut events);
        self.decoded = events;
        for step in order {
            match step {
                Step::Single(event) => self.make_single(event, batch.at_ms),
                Step::Chain(Chain::One(link)) => self.make_link(link, batch.at_ms),
                Step::Chain(Chain::Many(links)) => {
                    for link in links {
                        self.make_link(link, batch.at_ms);
                    }
                }
            }
        }
        for (index, before) in std::mem::take(&mut self.deferred) {
            self.emit_crossing(index, before, batch.at_ms);
        }
        self.made_through = batch.end;
        self.boundaries.push_back((batch.end, self.next_position));
    }

    fn make_link(&mut self, link: Link, at_ms: u64) {
        match link {
            Link::Hold(hold) => self.make_hold(hold, at_ms),
            Link::Fill(sku, fill) => self.make_fill(sku, fill, at_ms),
        }
    }

    // Long by design: one arm per event kind, each the feed events it makes.
    fn make_single(&mut self, event: Event, at_ms: u64) {
        match event {
            Event::SkuCreated { sku, name } => {
                let index = sku.index() as usize;
                if self.skus.len() <= index {
                    self.skus.resize(index + 1, None);
                }
                self.skus[index] = Some(FeedSku {
                    name: Arc::from(name),
                    counts: FeedCounts::default(),
                    low_stock: None,
                });
                self.emit(index, FeedKind::SkuCreated, at_ms, Detail::None);
            }
            Event::Operator {
                sku,
                delta,
                version,
                limit,
                safety_stock,
            } => {
                let index = sku.index() as usize;
                let before = self.counts(index);
                self.update(index, |c| {
                    c.received += delta;
                    c.available += delta;
                    if let Some(units) = safety_stock {
                        c.safety_stock = units as i64;
                    }
                });
                let operator = FeedOperator {
                    delta,
                    version,
                    limit: match limit {
                        LimitChange::Unchanged => None,
                        LimitChange::Set(limit) => Some(limit),
                    },
                    low_stock: None,
                    window: None,
                };
                self.emit(
                    index,
                    FeedKind::SkuChanged,
                    at_ms,
                    Detail::Operator(operator),
                );
                if before.backordered > 0 && delta > 0 {
                    self.defer_crossing(index, before);
                } else {
                    self.emit_crossing(index, before, at_ms);
                }
            }
            // A kit holds nothing: its counts stay 0; readers read its
            // components from the SKU document.
            Event::KitDefined { kit, version, .. } => self.make_setting(kit, version, at_ms),
            // A location's priority (at its creation too): `sku.changed`
            // of the location. The mark of a SKU kept at locations comes
            // with its creation (`sku.created`) and says nothing more.
            Event::Location {
                sku,
                version,
                priority: Some(_),
            } => self.make_setting(sku, version, at_ms),
            Event::Location { priority: None, .. } => {}
            Event::Sell { sku, units } => {
                let index = sku.index() as usize;
                let before = self.counts(index);
                self.update(index, |c| {
                    c.available -= i64::from(units);
                    c.sold += i64::from(units);
                });
                self.emit(index, FeedKind::SkuSold, at_ms, Detail::Units(units));
                self.emit_crossing(index, before, at_ms);
            }
            Event::LowStock {
                sku,
                version,
                threshold,
            } => {
                let index = sku.index() as usize;
                let available = self.counts(index).available;
                let was_low = is_low(available, self.low_stock(index));
                self.update(index, |_| {});
                if let Some(Some(sku)) = self.skus.get_mut(index) {
                    sku.low_stock = threshold;
                }
                let operator = FeedOperator {
                    delta: 0,
                    version,
                    limit: None,
                    low_stock: Some(threshold),
                    window: None,
                };
                self.emit(
                    index,
                    FeedKind::SkuChanged,
                    at_ms,
                    Detail::Operator(operator),
                );
                if !was_low && is_low(available, threshold) {
                    self.emit(index, FeedKind::SkuLowStock, at_ms, Detail::None);
                }
            }
            Event::Backorder { sku, version, .. } | Event::WaitingRoom { sku, version, .. } => {
                self.make_setting(sku, version, at_ms)
            }
            Event::SaleWindow {
                sku,
                version,
                window,
            } => self.make_window(sku, version, window, at_ms),
            Event::BackorderFilled { sku, fill } => self.make_fill(sku, fill, at_ms),
            Event::Hold(hold) => self.make_hold(hold, at_ms),
            // A lease step that moves units reads as the operator change it
            // is locally (the lease itself: `GET /v1/cluster`); a close
            // moves none.
            Event::Lease {
                sku,
                version,
                granted,
                step,
                ..
            } => {
                let delta = step.delta(granted);
                if delta != 0 {
                    let operator = Event::Operator {
                        sku,
                        delta,
                        version,
                        limit: LimitChange::Unchanged,
                        safety_stock: None,
                    };
                    self.make_single(operator, at_ms);
                }
            }
            Event::Idempotency(_) => {}
        }
    }

    /// An operator change of a setting that moves no units and that the
    /// event does not detail (a kit's components, a backorder rule: the
    /// SKU document has them): `sku.changed` with its version.
    fn make_setting(&mut self, sku: SkuId, version: u64, at_ms: u64) {
        self.make_rule(sku, version, None, at_ms);
    }

    /// A sale window's change: a `sku.changed` that names the window.
    fn make_window(&mut self, sku: SkuId, version: u64, window: SaleWindow, at_ms: u64) {
        self.make_rule(sku, version, Some(window), at_ms);
    }

    fn make_rule(&mut self, sku: SkuId, version: u64, window: Option<SaleWindow>, at_ms: u64) {
        let index = sku.index() as usize;
        self.update(index, |_| {});
        let operator = FeedOperator {
            delta: 0,
            version,
            limit: None,
            low_stock: None,
            window,
        };
        self.emit(
            index,
            FeedKind::SkuChanged,
            at_ms,
            Detail::Operator(operator),
        );
    }

    /// A restock's units given to a reservation owed them: they leave
    /// `available` (where the restock's change put them) for `held` or
    /// `sold`, and no longer count as backordered.
    fn make_fill(&mut self, sku: SkuId, fill: Fill, at_ms: u64) {
        let index = sku.index() as usize;
        let before = self.counts(index);
        let units = i64::from(fill.units);
        self.update(index, |c| {
            c.available -= units;
            c.backordered -= units;
            if fill.sold {
                c.sold += units;
            } else {
                c.held += units;
            }
        });
        let detail = Detail::Fill(FeedFill {
            public_id: self.public_ids.text_inline(fill.id),
            units: fill.units,
            owed_after: fill.owed_after,
        });
        self.emit(index, FeedKind::ReservationBackorderFilled, at_ms, detail);
        if !self.deferred.iter().any(|(deferred, _)| *deferred == index) {
            self.emit_crossing(index, before, at_ms);
        }
    }

    /// Judges `index`'s crossings at the end of the batch, from `before`.
    fn defer_crossing(&mut self, index: usize, before: FeedCounts) {
        if !self.deferred.iter().any(|(deferred, _)| *deferred == index) {
            self.deferred.push((index, before));
        }
    }

    /// A reservation's transition: its counts move on every line's SKU,
    /// then one event per line SKU (a SKU twice in a cart is refused by the
    /// engine, so each SKU has one line).
    fn make_hold(&mut self, hold: HoldEvent, at_ms: u64) {
        // Each line's SKU's counts before the change (one SKU per line, so
        // no line's move touches another's): a purchase's one line on the
        // stack, the rest of a cart's in a vector (none allocated for one).
        let counts_of = |line: &crate::core::types::Line| self.counts(line.sku.index() as usize);
        let first_before = hold.lines.first().map(counts_of);
        let more_before: Vec<FeedCounts> = hold.lines.iter().skip(1).map(counts_of).collect();
        for (i, line) in hold.lines.iter().enumerate() {
            let index = line.sku.index() as usize;
            let change = match &hold.changes {
                Some(changes) => changes[i],
                None => LineChange::whole(hold.status, line.quantity),
            };
            let (q, c) = (line.quantity, change.confirmed);
            let owed = hold.owed.as_ref().map_or_else(LineOwed::default, |o| o[i]);
            let from = effect_owed(hold.from, q, c, change.refunded_before, owed.before);
            let to = effect_owed(Some(hold.status), q, c, change.refunded_after, owed.after);
            self.update(index, |c| {
                let held = to.0 - from.0;
                let sold = to.1 - from.1;
                c.held += held;
                c.sold += sold;
                c.available -= held + sold;
                c.backordered += to.3 - from.3;
            });
        }
        let reservation = Arc::new(FeedReservation {
            public_id: self.public_ids.text_inline(hold.id),
            from: hold.from,
            status: hold.status,
            customer: hold.customer,
            lines: hold
                .lines
                .iter()
                .map(|line| (self.name(line.sku.index() as usize), line.quantity))
                .collect(),
            amounts: hold.changes.as_ref().map(|changes| {
                let amounts = changes.iter().copied().map(LineChange::after);
                amounts.collect()
            }),
            deadline_ms: hold.deadline_ms,
        });
        let kind = FeedKind::of_transition(hold.from, hold.status);
        let before = first_before.into_iter().chain(more_before);
        for (line, before) in hold.lines.iter().zip(before) {
            let index = line.sku.index() as usize;
            let detail = Detail::Reservation(Arc::clone(&reservation));
            self.emit(index, kind, at_ms, detail);
            self.emit_crossing(index, before, at_ms);
        }
    }

    fn emit_crossing(&mut self, index: usize, before: FeedCounts, at_ms: u64) {
        let after = self.counts(index);
        let threshold = self.low_stock(index);
        if !is_low(before.available, threshold) && is_low(after.available, threshold) {
            self.emit(index, FeedKind::SkuLowStock, at_ms, Detail::None);
        }
        if before.available > 0 && after.available == 0 {
            self.emit(index, FeedKind::SkuSoldOut, at_ms, Detail::None);
        } else if before.available == 0 && after.available > 0 {
            self.emit(index, FeedKind::SkuBackInStock, at_ms, Detail::None);
        }
    }

    fn emit(&mut self, index: usize, kind: FeedKind, at_ms: u64, detail: Detail) {
        let counts = self.counts(index);
        if counts.available < 0 || counts.held < 0 || counts.sold < 0 || counts.backordered < 0 {
            self.negative_counts += 1;
            tracing::error!(
                "feed: SKU #{index} counts {counts:?} after a {} event (a broken invariant)",
                kind.as_str()
            );
            debug_assert!(false, "negative feed counts {counts:?}");
        }
        let (reservation, operator, units, fill) = match detail {
            Detail::None => (None, None, None, None),
            Detail::Reservation(r) => (Some(r), None, None, None),
            Detail::Operator(o) => (None, Some(o), None, None),
            Detail::Units(u) => (None, None, Some(u), None),
            Detail::Fill(f) => (None, None, None, Some(f)),
        };
        let position = self.next_position;
        self.next_position += 1;
        self.events.push_back(FeedEvent {
            position,
            kind,
            at_ms,
            sku: self.name(index),
            counts,
            reservation,
            operator,
            units,
            fill,
        });
    }

    fn low_stock(&self, index: usize) -> Option<u32> {
        self.skus
            .get(index)
            .and_then(Option::as_ref)
            .and_then(|sku| sku.low_stock)
    }

    fn counts(&self, index: usize) -> FeedCounts {
        self.skus
            .get(index)
            .and_then(Option::as_ref)
            .map_or_else(FeedCounts::default, |sku| sku.counts)
    }

    fn update(&mut self, index: usize, change: impl FnOnce(&mut FeedCounts)) {
        if self.skus.len() <= index {
            self.skus.resize(index + 1, None);
        }
        let sku = self.skus[index].get_or_insert_with(|| FeedSku {
            name: Arc::from(""),
            counts: FeedCounts::default(),
            low_stock: None,
        });
        change(&mut sku.counts);
    }

    fn name(&self, index: usize) -> Arc<str> {
        self.skus
            .get(index)
            .and_then(Option::as_ref)
            .map_or_else(|| Arc::from(""), |sku| Arc::clone(&sku.name))
    }
}

enum Detail {
    None,
    Reservation(Arc<FeedReservation>),
    Operator(FeedOperator),
    Units(u32),
    Fill(FeedFill),
}

/// Whether `available` is below the threshold (never without one).
fn is_low(available: i64, threshold: Option<u32>) -> bool {
    threshold.is_some_and(|t| available < i64::from(t))
}
