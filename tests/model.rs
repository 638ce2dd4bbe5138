//! Random operation sequences against a plain sequential model of the
//! engine: after every operation the engine's answer must equal the model's,
//! and so must every SKU's counts and every customer's limit usage.
//!
//! The model is written from the documented rules (see `docs/architecture.md`),
//! not from the engine's code, and keeps everything in simple maps.

use std::collections::HashMap;
use std::sync::Arc;

use hotstock::core::cell::{OperatorChange, StripePolicy};
use hotstock::{
    BackorderRule, ChangeSink, Engine, EngineConfig, EngineError, ExtensionLimit, HoldStatus,
    KitRefusal, Line, ManualClock, Order, Receipt, ReservationId, SkuId, SkuPut, StockLevel,
};
use proptest::prelude::*;

const SKUS: usize = 3;
/// Kits `kit0` and `kit1`; a reservation line names kit `k` as `SKUS + k`.
const KITS: usize = 2;
const CUSTOMERS: [&str; 2] = ["ann", "bo"];
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const DEFAULT_TTL: u64 = 10_000;
/// Small caps, so the model reaches both refusals.
const MAX_EXTENSION: u64 = 40;
const MAX_EXTENSIONS: u8 = 2;
const MAX_HOLD: u64 = 100;

#[derive(Clone, Debug)]
enum Op {
    Put {
        sku: usize,
        available: u64,
        limit: Option<Option<u32>>,
        expected: Option<u64>,
    },
    Adjust {
        sku: usize,
        delta: i64,
    },
    SetLimit {
        sku: usize,
        limit: Option<u32>,
    },
    /// Kit `kit` made of these components (SKU index, units per kit).
    DefineKit {
        kit: usize,
        components: Vec<(usize, u32)>,
    },
    /// A put by units on hand and safety stock (`None`: keep it).
    PutStock {
        sku: usize,
        on_hand: Option<u64>,
        safety_stock: Option<u64>,
    },
    Reserve {
        lines: Vec<(usize, u32)>,
        customer: Option<usize>,
        ttl: Option<u64>,
        confirm: bool,
        key: Option<usize>,
    },
    Sell {
        sku: usize,
        quantity: u32,
    },
    Confirm(usize),
    Cancel(usize),
    Refund(usize),
    Extend(usize, u64),
    /// Per line of the record, units to confirm or refund (4: leave the
    /// line out of the request).
    ConfirmPart(usize, [u32; 4]),
    RefundPart(usize, [u32; 4]),
    /// `RefundPart` under idempotency key `KEYS[k]` (shared with orders).
    RefundKeyed(usize, [u32; 4], usize),
    Get(usize),
    Advance(u64),
    RunTimers,
    PrepareHot(usize),
    /// Units SKU `sku` may sell past zero.
    SetBackorder {
        sku: usize,
        limit: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let sku = 0..SKUS;
    prop_oneof![
        1 => (sku.clone(), 0u64..20, prop::option::of(prop::option::of(0u32..3)), prop::option::of(0u64..4))
            .prop_map(|(sku, available, limit, expected)| Op::Put { sku, available, limit, expected }),
        1 => (sku.clone(), -8i64..8).prop_map(|(sku, delta)| Op::Adjust { sku, delta }),
        1 => (sku.clone(), prop::option::of(0u32..3)).prop_map(|(sku, limit)| Op::SetLimit { sku, limit }),
        1 => (sku.clone(), prop::option::of(0u64..24), prop::option::of(0u64..8))
            .prop_map(|(sku, on_hand, safety_stock)| Op::PutStock { sku, on_hand, safety_stock }),
        1 => (0..KITS, prop::collection::vec((0..SKUS, 1u32..3), 0..3))
            .prop_map(|(kit, components)| Op::DefineKit { kit, components }),
        4 => (
            prop::collection::vec((0..SKUS + KITS, 0u32..4), 0..4),
            prop::option::of(0..CUSTOMERS.len()),
            prop::option::of(1u64..100),
            any::<bool>(),
            prop::option::of(0..KEYS.len()),
        )
            .prop_map(|(lines, customer, ttl, confirm, key)| Op::Reserve { lines, customer, ttl, confirm, key }),
        1 => (sku.clone(), 0u32..3).prop_map(|(sku, quantity)| Op::Sell { sku, quantity }),
        2 => any::<usize>().prop_map(Op::Confirm),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Refund),
        2 => (any::<usize>(), 0u64..60).prop_map(|(hold, ttl)| Op::Extend(hold, ttl)),
        2 => (any::<usize>(), [0u32..5, 0..5, 0..5, 0..5]).prop_map(|(h, u)| Op::ConfirmPart(h, u)),
        2 => (any::<usize>(), [0u32..5, 0..5, 0..5, 0..5]).prop_map(|(h, u)| Op::RefundPart(h, u)),
        2 => (any::<usize>(), [0u32..5, 0..5, 0..5, 0..5], 0..KEYS.len())
            .prop_map(|(h, u, k)| Op::RefundKeyed(h, u, k)),
        1 => any::<usize>().prop_map(Op::Get),
        1 => (0u64..60).prop_map(Op::Advance),
        1 => Just(Op::RunTimers),
        1 => sku.clone().prop_map(Op::PrepareHot),
        1 => (sku, 0u64..6).prop_map(|(sku, limit)| Op::SetBackorder { sku, limit }),
    ]
}

#[derive(Clone, Debug, Default)]
struct ModelSku {
    id: Option<SkuId>,
    available: u64,
    held: u64,
    sold: u64,
    received: u64,
    version: u64,
    limit: Option<u32>,
    safety_stock: u64,
    backorder_limit: u64,
    /// Units owed: in none of the counts above.
    backordered: u64,
    /// Holds owed units of this SKU, oldest first (the fill order).
    queue: Vec<usize>,
}

#[derive(Clone, Debug)]
struct ModelHold {
    id: ReservationId,
    lines: Vec<(usize, u32)>,
    customer: Option<usize>,
    deadline: u64,
    created: u64,
    extensions: u8,
    status: HoldStatus,
    limit_mask: u32,
    /// Per line: (confirmed, refunded).
    amounts: Vec<(u32, u32)>,
    /// Per line: units owed (taken past zero, not yet filled).
    owed: Vec<u32>,
}

/// What a key was first used for: an order (its lines, customer, TTL and
/// whether it bought at once) or a refund of part (the reservation and the
/// lines asked): one key space, as in the engine.
#[derive(Clone, Debug, PartialEq)]
enum KeyRequest {
    Order(Vec<(usize, u32)>, Option<usize>, u64, bool),
    Refund(ReservationId, Vec<Line>),
}

/// What an idempotency key remembers: the request and its outcome (the
/// reservation, and the status it was created in or a refund reached).
type Remembered = (KeyRequest, Result<(ReservationId, HoldStatus), EngineError>);

/// A defined kit: its id, version and components (SKU index, units).
#[derive(Clone, Debug)]
struct ModelKit {
    id: SkuId,
    version: u64,
    components: Vec<(usize, u32)>,
}

#[derive(Debug, Default)]
struct Model {
    skus: [ModelSku; SKUS],
    kits: [Option<ModelKit>; KITS],
    holds: Vec<ModelHold>,
    ledger: HashMap<(usize, usize), u32>,
    keys: HashMap<usize, Remembered>,
    now: u64,
}

fn ghost(sku: usize) -> SkuId {
    SkuId::from_index(1_000 + sku as u32)
}

impl Model {
    fn sku_id(&self, sku: usize) -> SkuId {
        self.skus[sku].id.unwrap_or_else(|| ghost(sku))
    }

    /// The id a reservation line names: a SKU, or kit `index - SKUS`.
    fn line_id(&self, index: usize) -> SkuId {
        match index.checked_sub(SKUS) {
            None => self.sku_id(index),
            Some(k) => self.kits[k].as_ref().map_or(ghost(index), |kit| kit.id),
        }
    }

    fn known(&self, index: usize) -> bool {
        match index.checked_sub(SKUS) {
            None => self.skus[index].id.is_some(),
            Some(k) => self.kits[k].is_some(),
        }
    }

    /// Kit lines replaced by their components, lines of one SKU merged, in
    /// order of first appearance (`Engine::expand_kits`).
    fn expand(&self, lines: &[(usize, u32)]) -> Vec<(usize, u32)> {
        let mut merged: Vec<(usize, u32)> = Vec::new();
        let mut add = |sku: usize, units: u32| match merged.iter_mut().find(|l| l.0 == sku) {
            Some(line) => line.1 += units,
            None => merged.push((sku, units)),
        };
        for &(index, quantity) in lines {
            match index.checked_sub(SKUS) {
                None => add(index, quantity),
                Some(k) => {
                    let kit = self.kits[k].as_ref().expect("validated");
                    for &(sku, units) in &kit.components {
                        add(sku, quantity * units);
                    }
                }
            }
        }
        merged
    }

    fn release_units(&mut self, hold: usize, from_sold: bool) {
        let h = self.holds[hold].clone();
        for (index, &(sku, held)) in h.lines.iter().enumerate() {
            // A sale gives back what it sold and has not yet given back.
            let (confirmed, refunded) = h.amounts[index];
            let quantity = if from_sold {
                confirmed - refunded
            } else {
                held
            };
            self.holds[hold].amounts[index].1 = if from_sold { confirmed } else { 0 };
            // Owed units are dropped; only received ones come back.
            let received = quantity - self.drop_owed(hold, index, quantity);
            let s = &mut self.skus[sku];
            if from_sold {
                s.sold -= u64::from(received);
            } else {
                s.held -= u64::from(received);
            }
            s.available += u64::from(received);
            if h.limit_mask & (1 << index) != 0 {
                *self.ledger.get_mut(&(sku, h.customer.unwrap())).unwrap() -= quantity;
            }
        }
    }

    /// Gives up `units` of line `index` of `hold`, owed ones first: returns
    /// how many owed units went (the rest were received ones).
    fn drop_owed(&mut self, hold: usize, index: usize, units: u32) -> u32 {
        let sku = self.holds[hold].lines[index].0;
        let owed = &mut self.holds[hold].owed[index];
        let dropped = units.min(*owed);
        *owed -= dropped;
        let left = *owed;
        let s = &mut self.skus[sku];
        s.backordered -= u64::from(dropped);
        if left == 0 {
            s.queue.retain(|&h| h != hold);
        }
        dropped
    }

    /// A restock of `units`: owed units first, oldest hold first, then the
    /// rest to `available`.
    fn fill(&mut self, sku: usize, mut units: u64) {
        while units > 0 {
            let Some(&hold) = self.skus[sku].queue.first() else {
                break;
            };
            let index = (self.holds[hold].lines.iter())
                .position(|&(s, _)| s == sku)
                .expect("a queued hold has a line of its SKU");
            let given = u64::from(self.holds[hold].owed[index]).min(units);
            units -= given;
            self.holds[hold].owed[index] -= given as u32;
            let sold = self.holds[hold].status == HoldStatus::Confirmed;
            let s = &mut self.skus[sku];
            s.backordered -= given;
            if sold {
                s.sold += given;
            } else {
                s.held += given;
            }
            if self.holds[hold].owed[index] == 0 {
                self.skus[sku].queue.remove(0);
            }
        }
        self.skus[sku].available += units;
    }

    fn expire_if_due(&mut self, hold: usize) -> bool {
        let h = &self.holds[hold];
        if h.status == HoldStatus::Held && self.now >= h.deadline {
            self.holds[hold].status = HoldStatus::Expired;
            self.release_units(hold, false);
            return true;
        }
        false
    }

    fn transition(
        &mut self,
        hold: usize,
        target: HoldStatus,
        verb: &'static str,
    ) -> Result<HoldStatus, EngineError> {
        let id = self.holds[hold].id;
        if self.expire_if_due(hold) {
            return Err(EngineError::InvalidTransition {
                id,
                status: HoldStatus::Expired,
                requested: verb,
            });
        }
        let status = self.holds[hold].status;
        if status == target {
            return Ok(target);
        }
        match (status, target) {
            (HoldStatus::Held, HoldStatus::Confirmed) => {
                let lines = self.holds[hold].lines.clone();
                for (index, &(sku, quantity)) in lines.iter().enumerate() {
                    // Owed units stay owed; a fill now sells them.
                    let received = quantity - self.holds[hold].owed[index];
                    self.skus[sku].held -= u64::from(received);
                    self.skus[sku].sold += u64::from(received);
                    self.holds[hold].amounts[index] = (quantity, 0);
                }
            }
            (HoldStatus::Held, HoldStatus::Cancelled) => self.release_units(hold, false),
            (HoldStatus::Confirmed, HoldStatus::Refunded) => self.release_units(hold, true),
            _ => {
                return Err(EngineError::InvalidTransition {
                    id,
                    status,
                    requested: verb,
                })
            }
        }
        self.holds[hold].status = target;
        Ok(target)
    }

    /// `Engine::confirm_lines` and `refund_lines`, as the docs state them:
    /// `units[i]` for line `i` (all lines named).
    fn part(
        &mut self,
        hold: usize,
        units: &[u32],
        confirm: bool,
    ) -> Result<HoldStatus, EngineError> {
        let id = self.holds[hold].id;
        let action = if confirm { "confirmed" } else { "refunded" };
        let invalid = |status| EngineError::InvalidTransition {
            id,
            status,
            requested: action,
        };
        if self.expire_if_due(hold) {
            return Err(invalid(HoldStatus::Expired));
        }
        let h = self.holds[hold].clone();
        match (h.status, confirm) {
            (HoldStatus::Held, true) | (HoldStatus::Confirmed, false) => {}
            (HoldStatus::Confirmed, true) => return Ok(HoldStatus::Confirmed),
            (status, _) => return Err(invalid(status)),
        }
        for (index, &(sku, quantity)) in h.lines.iter().enumerate() {
            let (confirmed, refunded) = h.amounts[index];
            let allowed = if confirm {
                quantity
            } else {
                confirmed - refunded
            };
            if units[index] > allowed {
                return Err(EngineError::ExceedsReservation {
                    id,
                    sku: self.sku_id(sku),
                    requested: units[index],
                    allowed,
                    action,
                });
            }
        }
        if units.iter().all(|&u| u == 0) {
            return Err(EngineError::NothingRequested { action });
        }
        for (index, &(sku, quantity)) in h.lines.iter().enumerate() {
            let u = units[index];
            let back = if confirm { quantity - u } else { u };
            // What goes back drops owed units first.
            let owed_before = self.holds[hold].owed[index];
            let dropped = self.drop_owed(hold, index, back);
            let owed_after = owed_before - dropped;
            let s = &mut self.skus[sku];
            if confirm {
                s.held -= u64::from(quantity - owed_before);
                s.sold += u64::from(u - owed_after);
                self.holds[hold].amounts[index] = (u, 0);
            } else {
                s.sold -= u64::from(u - dropped);
                self.holds[hold].amounts[index].1 += u;
            }
            s.available += u64::from(back - dropped);
            if h.limit_mask & (1 << index) != 0 && back > 0 {
                *self.ledger.get_mut(&(sku, h.customer.unwrap())).unwrap() -= back;
            }
        }
        let all_back = (self.holds[hold].amounts.iter()).all(|&(c, r)| c == r);
        self.holds[hold].status = if !confirm && all_back {
            HoldStatus::Refunded
        } else {
            HoldStatus::Confirmed
        };
        Ok(self.holds[hold].status)
    }

    /// `Engine::extend`, as the docs state it.
    fn extend(&mut self, hold: usize, ttl: u64) -> Result<(u64, u8), EngineError> {
        let id = self.holds[hold].id;
        let invalid = |status| EngineError::InvalidTransition {
            id,
            status,
            requested: "extended",
        };
        if self.expire_if_due(hold) {
            return Err(invalid(HoldStatus::Expired));
        }
        let h = &mut self.holds[hold];
        if h.status != HoldStatus::Held {
            return Err(invalid(h.status));
        }
        let wanted = self.now + ttl.min(MAX_EXTENSION);
        if wanted <= h.deadline {
            return Ok((h.deadline, h.extensions));
        }
        let refused = |reason| EngineError::ExtensionRefused {
            id,
            extensions: h.extensions,
            max: MAX_EXTENSIONS,
            deadline_ms: h.deadline,
            reason,
        };
        if h.extensions >= MAX_EXTENSIONS {
            return Err(refused(ExtensionLimit::Count));
        }
        let deadline = wanted.min(h.created + MAX_HOLD);
        if deadline <= h.deadline {
            return Err(refused(ExtensionLimit::HoldTime));
        }
        h.deadline = deadline;
        h.extensions += 1;
        Ok((deadline, h.extensions))
    }

    /// Validation, in the documented order. `Ok(ttl)` when the order passes.
    fn validate(&self, lines: &[(usize, u32)], ttl: Option<u64>) -> Result<u64, EngineError> {
        if lines.is_empty() {
            return Err(EngineError::EmptyCart);
        }
        for (index, &(sku, quantity)) in lines.iter().enumerate() {
            if quantity == 0 {
                return Err(EngineError::InvalidQuantity { quantity: 0 });
            }
            if !self.known(sku) {
                return Err(EngineError::UnknownSkuId { sku: ghost(sku) });
            }
            if lines[..index].iter().any(|&(earlier, _)| earlier == sku) {
                return Err(EngineError::DuplicateSku {
                    sku: self.line_id(sku),
                });
            }
        }
        Ok(ttl.unwrap_or(DEFAULT_TTL))
    }

    /// One attempt: all lines or none. Returns the record to add on success.
    fn reserve_once(
        &mut self,
        lines: &[(usize, u32)],
        customer: Option<usize>,
        confirm: bool,
    ) -> Result<(u32, Vec<u32>), EngineError> {
        let before = (self.skus.clone(), self.ledger.clone());
        let mut mask = 0;
        let mut owed = vec![0; lines.len()];
        for (index, &(sku, quantity)) in lines.iter().enumerate() {
            let id = self.sku_id(sku);
            if let Some(limit) = self.skus[sku].limit {
                let Some(c) = customer else {
                    (self.skus, self.ledger) = before;
                    return Err(EngineError::CustomerRequired { sku: id });
                };
                let already = self.ledger.get(&(sku, c)).copied().unwrap_or(0);
                if already + quantity > limit {
                    (self.skus, self.ledger) = before;
                    return Err(EngineError::LimitExceeded {
                        sku: id,
                        limit,
                        already,
                        requested: quantity,
                    });
                }
                *self.ledger.entry((sku, c)).or_default() += quantity;
                mask |= 1 << index;
            }
            let s = &mut self.skus[sku];
            let short = u64::from(quantity).saturating_sub(s.available);
            if short > 0 && s.backordered + short > s.backorder_limit {
                let available = s.available;
                (self.skus, self.ledger) = before;
                return Err(EngineError::SoldOut {
                    sku: id,
                    available,
                    requested: u64::from(quantity),
                });
            }
            let taken = u64::from(quantity) - short;
            s.available -= taken;
            s.backordered += short;
            owed[index] = short as u32;
            if confirm {
                s.sold += taken;
            } else {
                s.held += taken;
            }
        }
        Ok((mask, owed))
    }
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        stripe_policy: StripePolicy {
            stripes: 4,
            widen_after_conflicts: 1,
            widen_min_units: 8,
            narrow_below_units: 4,
        },
        default_ttl_ms: DEFAULT_TTL,
        max_extension_ms: MAX_EXTENSION,
        max_extensions: MAX_EXTENSIONS,
        max_hold_ms: MAX_HOLD,
        ..EngineConfig::default()
    }
}

fn pick(holds: &[ModelHold], index: usize) -> Option<usize> {
    (!holds.is_empty()).then(|| index % holds.len())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(0));
    let engine = Engine::with_clock(engine_config(), clock.clone()).unwrap();
    let mut model = Model::default();
    let unknown = ReservationId::from_u64(u64::MAX);
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put {
                sku,
                available,
                limit,
                expected,
            } => {
                let name = format!("sku{sku}");
                let got = engine.put_sku(&name, available, limit, expected);
                let want = model_put(&mut model, sku, available, limit, expected, &got);
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::PutStock {
                sku,
                on_hand,
                safety_stock,
            } => {
                let put = SkuPut {
                    level: on_hand.map(StockLevel::OnHand),
                    safety_stock,
                    ..SkuPut::default()
                };
                let got = engine.put_stock(&format!("sku{sku}"), &put);
                let want = model_put_stock(&mut model, sku, on_hand, safety_stock, &got);
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::DefineKit { kit, components } => {
                let lines: Vec<Line> = components
                    .iter()
                    .map(|&(sku, quantity)| Line {
                        sku: model.sku_id(sku),
                        quantity,
                    })
                    .collect();
                let got = engine.define_kit(&format!("kit{kit}"), &lines);
                let want = model_define_kit(&mut model, kit, &components, &got);
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Adjust { sku, delta } => {
                let got = engine.adjust(model.sku_id(sku), delta);
                let want = model_adjust(&mut model, sku, delta);
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::SetLimit { sku, limit } => {
                let got = engine.set_limit(model.sku_id(sku), limit);
                let want = if limit == Some(0) {
                    Err(EngineError::InvalidLimit)
                } else if model.skus[sku].id.is_none() {
                    Err(EngineError::UnknownSkuId { sku: ghost(sku) })
                } else {
                    let s = &mut model.skus[sku];
                    s.limit = limit;
                    s.version += 1;
                    Ok(s.version)
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Reserve {
                lines,
                customer,
                ttl,
                confirm,
                key,
            } => {
                let engine_lines: Vec<Line> = lines
                    .iter()
                    .map(|&(sku, quantity)| Line {
                        sku: model.line_id(sku),
                        quantity,
                    })
                    .collect();
                let order = Order {
                    lines: &engine_lines,
                    customer: customer.map(|c| CUSTOMERS[c]),
                    ttl_ms: ttl,
                    confirm,
                    idempotency_key: key.map(|k| KEYS[k]),
                    split: 0,
                };
                let got = engine.reserve(&order);
                let want = model_reserve(&mut model, &lines, customer, ttl, confirm, key, &got);
                prop_assert_eq!(
                    got.map(|r| (r.id, r.status, r.expires_at_ms)),
                    want,
                    "step {}",
                    step
                );
            }
            Op::Sell { sku, quantity } => {
                let got = engine.sell(model.sku_id(sku), quantity);
                let id = model.sku_id(sku);
                let want = if quantity == 0 {
                    Err(EngineError::InvalidQuantity { quantity: 0 })
                } else if model.skus[sku].id.is_none() {
                    Err(EngineError::UnknownSkuId { sku: id })
                } else if model.skus[sku].limit.is_some() {
                    Err(EngineError::CustomerRequired { sku: id })
                } else if model.skus[sku].available < u64::from(quantity) {
                    Err(EngineError::SoldOut {
                        sku: id,
                        available: model.skus[sku].available,
                        requested: u64::from(quantity),
                    })
                } else {
                    model.skus[sku].available -= u64::from(quantity);
                    model.skus[sku].sold += u64::from(quantity);
                    Ok(())
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Confirm(index) | Op::Cancel(index) | Op::Refund(index) => {
                let (target, verb) = match op {
                    Op::Confirm(_) => (HoldStatus::Confirmed, "confirmed"),
                    Op::Cancel(_) => (HoldStatus::Cancelled, "cancelled"),
                    _ => (HoldStatus::Refunded, "refunded"),
                };
                let hold = pick(&model.holds, index);
                let id = hold.map_or(unknown, |h| model.holds[h].id);
                let got = match target {
                    HoldStatus::Confirmed => engine.confirm(id),
                    HoldStatus::Cancelled => engine.cancel(id),
                    _ => engine.refund(id),
                };
                let want = match hold {
                    None => Err(EngineError::UnknownReservation { id }),
                    Some(h) => model.transition(h, target, verb),
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Extend(index, ttl) => {
                let hold = pick(&model.holds, index);
                let id = hold.map_or(unknown, |h| model.holds[h].id);
                let got = engine
                    .extend(id, ttl)
                    .map(|e| (e.expires_at_ms, e.extensions));
                let want = match hold {
                    _ if ttl == 0 => Err(EngineError::InvalidTtl {
                        ttl_ms: 0,
                        max_ms: MAX_EXTENSION,
                    }),
                    None => Err(EngineError::UnknownReservation { id }),
                    Some(h) => model.extend(h, ttl),
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::ConfirmPart(index, asked)
            | Op::RefundPart(index, asked)
            | Op::RefundKeyed(index, asked, _) => {
                let confirm = matches!(op, Op::ConfirmPart(..));
                let hold = pick(&model.holds, index);
                let id = hold.map_or(unknown, |h| model.holds[h].id);
                let record_lines = hold.map_or(vec![], |h| model.holds[h].lines.clone());
                // Lines asked 4 are left out of the request (they count 0).
                let request: Vec<Line> = (record_lines.iter().zip(asked))
                    .filter(|&(_, u)| u != 4)
                    .map(|(&(s, _), u)| Line {
                        sku: model.sku_id(s),
                        quantity: u,
                    })
                    .collect();
                let units: Vec<u32> = (0..record_lines.len())
                    .map(|i| if asked[i] == 4 { 0 } else { asked[i] })
                    .collect();
                let (got, want) = match op {
                    Op::RefundKeyed(.., key) => (
                        engine.refund_once(id, Some(&request), KEYS[key]),
                        model_refund_keyed(&mut model, hold, id, &request, &units, key),
                    ),
                    _ => (
                        if confirm {
                            engine.confirm_lines(id, &request)
                        } else {
                            engine.refund_lines(id, &request)
                        },
                        match hold {
                            None => Err(EngineError::UnknownReservation { id }),
                            Some(h) => model.part(h, &units, confirm),
                        },
                    ),
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Get(index) => {
                let hold = pick(&model.holds, index);
                let id = hold.map_or(unknown, |h| model.holds[h].id);
                let got = engine.reservation(id).map(|d| {
                    let amounts: Vec<(u32, u32)> = d
                        .amounts
                        .iter()
                        .map(|a| (a.confirmed, a.refunded))
                        .collect();
                    // A record never taken past zero lists no owed units.
                    let owed = match d.owed.is_empty() {
                        true => vec![0; d.lines.len()],
                        false => d.owed,
                    };
                    (
                        d.status,
                        d.lines,
                        d.deadline_ms,
                        d.extensions,
                        amounts,
                        owed,
                    )
                });
                let want = match hold {
                    None => Err(EngineError::UnknownReservation { id }),
                    Some(h) => {
                        model.expire_if_due(h);
                        let m = &model.holds[h];
                        let lines = m
                            .lines
                            .iter()
                            .map(|&(s, q)| Line {
                                sku: model.sku_id(s),
                                quantity: q,
                            })
                            .collect();
                        let owed = m.owed.clone();
                        Ok((
                            m.status,
                            lines,
                            m.deadline,
                            m.extensions,
                            m.amounts.clone(),
                            owed,
                        ))
                    }
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Advance(ms) => {
                clock.advance(ms);
                model.now += ms;
            }
            Op::RunTimers => {
                let got = engine.run_timers().expired;
                let want = (0..model.holds.len())
                    .filter(|&h| model.expire_if_due(h))
                    .count();
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::SetBackorder { sku, limit } => {
                let rule = BackorderRule {
                    limit,
                    until_ms: None,
                };
                let got = engine.set_backorder(model.sku_id(sku), rule);
                let s = &mut model.skus[sku];
                let want = match s.id {
                    None => Err(EngineError::UnknownSkuId { sku: ghost(sku) }),
                    Some(_) => {
                        s.backorder_limit = limit;
                        s.version += 1;
                        Ok(s.version)
                    }
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::PrepareHot(sku) => {
                let got = engine.prepare_hot(model.sku_id(sku));
                let want = if model.skus[sku].id.is_some() {
                    Ok(())
                } else {
                    Err(EngineError::UnknownSkuId { sku: ghost(sku) })
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
        }
        check_state(&engine, &model, step)?;
    }
    Ok(())
}

fn model_put(
    model: &mut Model,
    sku: usize,
    available: u64,
    limit: Option<Option<u32>>,
    expected: Option<u64>,
    got: &Result<(SkuId, OperatorChange), EngineError>,
) -> Result<(SkuId, OperatorChange), EngineError> {
    if limit == Some(Some(0)) {
        return Err(EngineError::InvalidLimit);
    }
    let s = &mut model.skus[sku];
    if s.id.is_none() {
        if let Some(e) = expected.filter(|&e| e != 0) {
            return Err(EngineError::VersionConflict {
                sku: None,
                expected: e,
                current: 0,
            });
        }
        // Created now: the engine issues the next id; take it from its answer.
        let Ok((id, _)) = got else {
            return Err(EngineError::EmptyCart);
        };
        s.id = Some(*id);
    }
    let id = s.id.unwrap();
    if let Some(e) = expected.filter(|&e| e != s.version) {
        return Err(EngineError::VersionConflict {
            sku: Some(id),
            expected: e,
            current: s.version,
        });
    }
    let delta = available as i64 - s.available as i64;
    s.received = (s.received as i64 + delta) as u64;
    s.available = available;
    if let Some(limit) = limit {
        s.limit = limit;
    }
    s.version += 1;
    Ok((
        id,
        OperatorChange {
            delta,
            version: s.version,
            safety_stock: None,
        },
    ))
}

/// `define_kit`: the components checked in order, then the kit created at
/// version 1 or its components replaced under a new version.
fn model_define_kit(
    model: &mut Model,
    kit: usize,
    components: &[(usize, u32)],
    got: &Result<(SkuId, u64), EngineError>,
) -> Result<(SkuId, u64), EngineError> {
    if components.is_empty() {
        return Err(EngineError::InvalidKit { components: 0 });
    }
    for (index, &(sku, _)) in components.iter().enumerate() {
        if model.skus[sku].id.is_none() {
            return Err(EngineError::UnknownSkuId { sku: ghost(sku) });
        }
        if components[..index]
            .iter()
            .any(|&(earlier, _)| earlier == sku)
        {
            return Err(EngineError::KitRefused {
                sku: model.sku_id(sku),
                reason: KitRefusal::NamedTwice,
            });
        }
    }
    let defined = match model.kits[kit].take() {
        Some(known) => ModelKit {
            version: known.version + 1,
            components: components.to_vec(),
            ..known
        },
        None => ModelKit {
            // Created now: the engine issues the id; take it from its answer.
            id: got.as_ref().map_or(ghost(SKUS + kit), |(id, _)| *id),
            version: 1,
            components: components.to_vec(),
        },
    };
    let answer = (defined.id, defined.version);
    model.kits[kit] = Some(defined);
    Ok(answer)
}

/// `put_stock` by units on hand: what is held and kept back stays out of
/// sale; fewer on hand than that is refused.
fn model_put_stock(
    model: &mut Model,
    sku: usize,
    on_hand: Option<u64>,
    safety_stock: Option<u64>,
    got: &Result<(SkuId, OperatorChange), EngineError>,
) -> Result<(SkuId, OperatorChange), EngineError> {
    let s = &mut model.skus[sku];
    let id = match s.id {
        Some(id) => id,
        None => {
            let (on_hand, safety_stock) = (on_hand.unwrap_or(0), safety_stock.unwrap_or(0));
            if on_hand < safety_stock {
                return Err(EngineError::BelowCommitted {
                    sku: None,
                    on_hand,
                    held: 0,
                    safety_stock,
                });
            }
            let Ok((id, _)) = got else {
                return Err(EngineError::EmptyCart);
            };
            s.id = Some(*id);
            *id
        }
    };
    let safety = safety_stock.unwrap_or(s.safety_stock);
    let on_hand = on_hand.unwrap_or(s.available + s.held + s.safety_stock);
    if on_hand < s.held + safety {
        return Err(EngineError::BelowCommitted {
            sku: Some(id),
            on_hand,
            held: s.held,
            safety_stock: safety,
        });
    }
    let available = on_hand - s.held - safety;
    let delta = available as i64 - s.available as i64;
    s.received = (s.received as i64 + delta) as u64;
    s.available = available;
    s.safety_stock = safety;
    s.version += 1;
    Ok((
        id,
        OperatorChange {
            delta,
            version: s.version,
            safety_stock,
        },
    ))
}

fn model_adjust(model: &mut Model, sku: usize, delta: i64) -> Result<OperatorChange, EngineError> {
    let id = model.sku_id(sku);
    let s = &mut model.skus[sku];
    if s.id.is_none() {
        return Err(EngineError::UnknownSkuId { sku: id });
    }
    let units = delta.unsigned_abs();
    if delta < 0 && s.available < units {
        return Err(EngineError::InsufficientStock {
            sku: id,
            available: s.available,
            requested: units,
        });
    }
    if delta < 0 {
        s.available -= units;
        s.received -= units;
    } else {
        s.received += units;
    }
    s.version += 1;
    let version = s.version;
    if delta >= 0 {
        model.fill(sku, units);
    }
    Ok(OperatorChange {
        delta,
        version,
        safety_stock: None,
    })
}

fn model_reserve(
    model: &mut Model,
    lines: &[(usize, u32)],
    customer: Option<usize>,
    ttl: Option<u64>,
    confirm: bool,
    key: Option<usize>,
    got: &Result<Receipt, EngineError>,
) -> Result<(ReservationId, HoldStatus, u64), EngineError> {
    let ttl = model.validate(lines, ttl)?;
    let request = KeyRequest::Order(lines.to_vec(), customer, ttl, confirm);
    let lines = &model.expand(lines)[..];
    if let Some(k) = key {
        if let Some((stored_request, outcome)) = model.keys.get(&k) {
            if *stored_request != request {
                return Err(EngineError::IdempotencyKeyReused);
            }
            return outcome.clone().map(|(id, _)| {
                let h = model
                    .holds
                    .iter()
                    .find(|h| h.id == id)
                    .expect("remembered hold");
                (id, initial(confirm), h.deadline)
            });
        }
    }
    let outcome = model
        .reserve_once(lines, customer, confirm)
        .map(|(limit_mask, owed)| {
            let hold = model.holds.len();
            for (&(sku, _), &units) in lines.iter().zip(&owed) {
                if units > 0 {
                    model.skus[sku].queue.push(hold);
                }
            }
            // The engine chose the id; the model checks everything else.
            let id = got
                .as_ref()
                .map_or(ReservationId::from_u64(u64::MAX - 1), |r| r.id);
            model.holds.push(ModelHold {
                id,
                lines: lines.to_vec(),
                customer,
                deadline: model.now + ttl,
                created: model.now,
                extensions: 0,
                amounts: lines
                    .iter()
                    .map(|&(_, q)| (if confirm { q } else { 0 }, 0))
                    .collect(),
                status: initial(confirm),
                limit_mask,
                owed,
            });
            id
        });
    if let Some(k) = key {
        let remembered = outcome.clone().map(|id| (id, initial(confirm)));
        model.keys.insert(k, (request, remembered));
    }
    outcome.map(|id| (id, initial(confirm), model.now + ttl))
}

/// `refund_once` with lines: the first use of a key runs the refund and
/// remembers its outcome, refusals included; a retry with the same
/// request answers it again; the key used for anything else is refused.
fn model_refund_keyed(
    model: &mut Model,
    hold: Option<usize>,
    id: ReservationId,
    request: &[Line],
    units: &[u32],
    key: usize,
) -> Result<HoldStatus, EngineError> {
    let asked = KeyRequest::Refund(id, request.to_vec());
    if let Some((stored_request, outcome)) = model.keys.get(&key) {
        if *stored_request != asked {
            return Err(EngineError::IdempotencyKeyReused);
        }
        return outcome.clone().map(|(_, status)| status);
    }
    let outcome = match hold {
        None => Err(EngineError::UnknownReservation { id }),
        Some(h) => model.part(h, units, false),
    };
    let remembered = outcome.clone().map(|status| (id, status));
    model.keys.insert(key, (asked, remembered));
    outcome
}

fn initial(confirm: bool) -> HoldStatus {
    if confirm {
        HoldStatus::Confirmed
    } else {
        HoldStatus::Held
    }
}

fn check_state<S: ChangeSink>(
    engine: &Engine<S>,
    model: &Model,
    step: usize,
) -> Result<(), TestCaseError> {
    for kit in model.kits.iter().flatten() {
        let d = engine.sku_document(kit.id).unwrap();
        let components: Vec<Line> = (kit.components.iter())
            .map(|&(sku, quantity)| Line {
                sku: model.sku_id(sku),
                quantity,
            })
            .collect();
        let available = (kit.components.iter())
            .map(|&(sku, units)| model.skus[sku].available / u64::from(units))
            .min();
        prop_assert_eq!(
            (d.components, d.version, d.held, d.sold, Some(d.available)),
            (Some(components), kit.version, 0, 0, available),
            "kit after step {}",
            step
        );
    }
    // The hold figures /metrics serves (a count per shard, a walk of the
    // expiry heap) agree with the records: ended and extended holds'
    // stale heap entries are not counted.
    for window in [0, 20, u64::MAX / 2] {
        let until = model.now.saturating_add(window);
        let (mut open, mut due) = (0, 0);
        engine.for_each_reservation(|d| {
            if d.status == HoldStatus::Held {
                open += 1;
                due += usize::from(d.deadline_ms <= until);
            }
        });
        let figures = engine.held_figures(window);
        prop_assert_eq!(
            (figures.open, figures.due),
            (open, due),
            "hold figures within {} ms, step {}",
            window,
            step
        );
    }
    for (index, s) in model.skus.iter().enumerate() {
        let Some(id) = s.id else { continue };
        let d = engine.sku_document(id).unwrap();
        prop_assert_eq!(
            (
                d.available,
                d.held,
                d.sold,
                d.received,
                d.version,
                d.per_customer_limit,
                d.safety_stock,
                d.backordered,
            ),
            (
                s.available,
                s.held,
                s.sold,
                s.received,
                s.version,
                s.limit,
                s.safety_stock,
                s.backordered,
            ),
            "SKU {} after step {}",
            index,
            step
        );
        prop_assert!(d.is_conserved());
        for (c, name) in CUSTOMERS.iter().enumerate() {
            let want = model.ledger.get(&(index, c)).copied().unwrap_or(0);
            prop_assert_eq!(
                engine.customer_units(id, name),
                want,
                "ledger {}/{} step {}",
                index,
                name,
                step
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_sequential_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
