//! The order of a batch's events in the feed.
//!
//! Within a batch the journal has no order: the writer concatenates the
//! per-CPU lanes, and the fold does not need one (deltas commute). The feed
//! does: each event carries its SKU's counts *after* it, and those counts
//! must be ones the SKU could have had, never negative. So the feed orders
//! each batch in four stages, a rule that needs nothing but the batch:
//!
//! 1. SKU creations.
//! 2. **Credits and moves**: changes to reservations created in an earlier
//!    batch (extend, confirm, cancel, expire, refund: none takes from
//!    `available`),
//!    then operator changes that add units (or none: limits, low-stock
//!    thresholds), by version.
//! 3. **Round trips**: reservations created *and* ended (cancelled, expired,
//!    refunded) in this batch, each as its whole chain (created, ..., ended).
//! 4. **Takes**: reservations created in this batch and still held or
//!    confirmed at its end (their chain), record-less sales, then operator
//!    changes that remove units, by version.
//!
//! Why nothing goes negative. `held` and `sold` only fall by a transition
//! of a reservation whose creation comes earlier in the feed (an earlier
//! batch, or earlier in its own chain). For `available`, let `start` be the
//! SKU's available at the batch's start and `credits` what stage 2 adds:
//! stage 2 only adds; a round trip of `q` units dips to `start + credits - q`,
//! and in real time its creation took `q` units when the SKU had at most
//! `start + credits` (an event is journaled before the change it records
//! becomes visible, so every credit it could have used is in this batch or
//! an earlier one, and takes in the real history only lowered the count);
//! stage 4 only takes, down to the batch's end, which is a state the engine
//! passed through (the journal's causal-prefix property), hence `>= 0`.
//!
//! Backorder fills join their reservation's chain (after its creation and
//! any extension while held; after its confirm once sold). A fill takes
//! units its restock credited (in stage 2, or an earlier batch), so a
//! chain of an earlier reservation that holds a fill goes after the
//! operator's credits, still before stage 3: it only delays credits.
//!
//! Within a stage, events keep their order in the batch (deterministic:
//! a batch's bytes are fixed once durable, so a replay after a crash gives
//! every event the same position).

use crate::core::cell::Fill;
use crate::core::types::{HoldStatus, SkuId};
use crate::durable::event::{Event, HoldEvent};

/// One step of the feed order: an event, or a reservation's chain of
/// transitions (and backorder fills) within the batch (in status order).
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Single(Event),
    Chain(Vec<Link>),
}

/// One event of a reservation's chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Link {
    Hold(HoldEvent),
    Fill(SkuId, Fill),
}

impl Link {
    /// By the status each event left, then the one it reached (an
    /// extension, held -> held, comes before the hold ends), then the
    /// deadline (extensions in the order they were made). A fill of a held
    /// reservation comes after its extensions; of a sold one, after its
    /// confirm and before its refunds.
    fn order_key(&self) -> (u8, u8, u64) {
        match self {
            Link::Hold(hold) => (
                hold.from.map_or(0, rank),
                rank(hold.status),
                hold.deadline_ms,
            ),
            Link::Fill(_, fill) if fill.sold => (2, 2, 0),
            Link::Fill(..) => (1, 1, u64::MAX),
        }
    }
}

/// `events` (one batch, in frame order) in feed order. Idempotency events
/// are dropped: they record a receipt, not a change of stock.
pub fn feed_order(events: Vec<Event>) -> Vec<Step> {
    let mut created: Vec<Step> = Vec::new();
    let mut credit_ops: Vec<Event> = Vec::new();
    let mut take_ops: Vec<Event> = Vec::new();
    let mut sells: Vec<Step> = Vec::new();
    // Chains by first appearance; a batch holds at most a few of one id.
    let mut chains: Vec<Vec<Link>> = Vec::new();
    let mut chain_of: std::collections::HashMap<u64, usize, foldhash::fast::RandomState> =
        std::collections::HashMap::default();
    for event in events {
        match event {
            Event::SkuCreated { .. } => created.push(Step::Single(event)),
            Event::Operator { delta, .. } if delta >= 0 => credit_ops.push(event),
            // Move no units; in version order with the operator's other
            // changes (a kit's first definition follows its creation).
            Event::LowStock { .. } | Event::KitDefined { .. } => credit_ops.push(event),
            Event::Operator { .. } => take_ops.push(event),
            Event::Lease { step, .. } if step.delta(1) < 0 => take_ops.push(event),
            Event::Lease { .. } => credit_ops.push(event),
            Event::Sell { .. } => sells.push(Step::Single(event)),
            Event::Backorder { .. }
            | Event::Location { .. }
            | Event::SaleWindow { .. }
            | Event::WaitingRoom { .. } => credit_ops.push(event),
            Event::Hold(hold) => {
                let next = chains.len();
                let index = *chain_of.entry(hold.id.as_u64()).or_insert(next);
                if index == next {
                    chains.push(Vec::new());
                }
                chains[index].push(Link::Hold(hold));
            }
            Event::BackorderFilled { sku, fill } => {
                let next = chains.len();
                let index = *chain_of.entry(fill.id.as_u64()).or_insert(next);
                if index == next {
                    chains.push(Vec::new());
                }
                chains[index].push(Link::Fill(sku, fill));
            }
            Event::Idempotency(_) => {}
        }
    }
    let [moves, filled, round_trips, takes] = sort_chains(chains);
    credit_ops.sort_by_key(operator_version);
    take_ops.sort_by_key(operator_version);
    let mut order = created;
    order.extend(moves);
    order.extend(credit_ops.into_iter().map(Step::Single));
    order.extend(filled);
    order.extend(round_trips);
    order.extend(takes);
    order.extend(sells);
    order.extend(take_ops.into_iter().map(Step::Single));
    order
}

/// A batch's reservation chains, each in status order, grouped by what
/// they do: reservations made earlier (without, then with backorder
/// fills), those made and ended within the batch, those made and left
/// open.
fn sort_chains(chains: Vec<Vec<Link>>) -> [Vec<Step>; 4] {
    let mut moves = Vec::new();
    let mut filled = Vec::new();
    let mut round_trips = Vec::new();
    let mut takes = Vec::new();
    for mut chain in chains {
        chain.sort_by_key(Link::order_key);
        let born_here = matches!(&chain[0], Link::Hold(hold) if hold.from.is_none());
        let ended = chain
            .iter()
            .rev()
            .find_map(|link| match link {
                Link::Hold(hold) => Some(is_end(hold.status)),
                Link::Fill(..) => None,
            })
            .unwrap_or(false);
        let fills = chain.iter().any(|link| matches!(link, Link::Fill(..)));
        match (born_here, ended) {
            (false, _) if fills => filled.push(Step::Chain(chain)),
            (false, _) => moves.push(Step::Chain(chain)),
            (true, true) => round_trips.push(Step::Chain(chain)),
            (true, false) => takes.push(Step::Chain(chain)),
        }
    }
    [moves, filled, round_trips, takes]
}

/// The version an operator-side change set (0 for any other event): such
/// changes are fed in version order.
fn operator_version(event: &Event) -> u64 {
    match event {
        Event::Operator { version, .. }
        | Event::LowStock { version, .. }
        | Event::KitDefined { version, .. }
        | Event::Backorder { version, .. }
        | Event::SaleWindow { version, .. }
        | Event::WaitingRoom { version, .. }
        | Event::Location { version, .. }
        | Event::Lease { version, .. } => *version,
        _ => 0,
    }
}

/// Where a status lies on its reservation's path (held, then confirmed /
/// cancelled / expired, then refunded): a chain sorts by the status each
/// event left.
fn rank(status: HoldStatus) -> u8 {
    match status {
        HoldStatus::Held => 1,
        HoldStatus::Confirmed | HoldStatus::Cancelled | HoldStatus::Expired => 2,
        HoldStatus::Refunded => 3,
    }
}

fn is_end(status: HoldStatus) -> bool {
    matches!(
        status,
        HoldStatus::Cancelled | HoldStatus::Expired | HoldStatus::Refunded
    )
}
