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
    Chain(Chain),
}

/// A reservation's links within one batch: one, a purchase's (nearly every
/// chain in a sale), kept inline; more in a vector. (A vector for every
/// chain was an allocation a purchase in every checkpoint's making of the
/// feed, docs/benchmarks.md.)
#[derive(Debug, PartialEq, Eq)]
pub enum Chain {
    One(Link),
    Many(Vec<Link>),
}

impl Chain {
    fn push(&mut self, link: Link) {
        *self = match std::mem::replace(self, Chain::Many(Vec::new())) {
            Chain::One(first) => Chain::Many(vec![first, link]),
            Chain::Many(mut links) => {
                links.push(link);
                Chain::Many(links)
            }
        };
    }

    fn links(&self) -> &[Link] {
        match self {
            Chain::One(link) => std::slice::from_ref(link),
            Chain::Many(links) => links,
        }
    }

    fn links_mut(&mut self) -> &mut [Link] {
        match self {
            Chain::One(link) => std::slice::from_mut(link),
            Chain::Many(links) => links,
        }
    }
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

/// `events` (one batch, in frame order) in feed order, `events` left empty
/// (its room kept for the next batch). Idempotency events are dropped:
/// they record a receipt, not a change of stock.
pub fn feed_order(events: &mut Vec<Event>) -> Vec<Step> {
    let mut created: Vec<Step> = Vec::new();
    let mut credit_ops: Vec<Event> = Vec::new();
    let mut take_ops: Vec<Event> = Vec::new();
    let mut sells: Vec<Step> = Vec::new();
    // Chains by first appearance; a batch holds at most a few of one id.
    let mut chains: Vec<Chain> = Vec::new();
    let mut chain_of: std::collections::HashMap<u64, usize, foldhash::fast::RandomState> =
        std::collections::HashMap::default();
    for event in events.drain(..) {
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
                let id = hold.id.as_u64();
                add_link(&mut chains, &mut chain_of, id, Link::Hold(hold));
            }
            Event::BackorderFilled { sku, fill } => {
                let id = fill.id.as_u64();
                add_link(&mut chains, &mut chain_of, id, Link::Fill(sku, fill));
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

/// Adds `link` to reservation `id`'s chain, a new one at its first link.
fn add_link(
    chains: &mut Vec<Chain>,
    chain_of: &mut std::collections::HashMap<u64, usize, foldhash::fast::RandomState>,
    id: u64,
    link: Link,
) {
    let next = chains.len();
    let index = *chain_of.entry(id).or_insert(next);
    if index == next {
        chains.push(Chain::One(link));
    } else {
        chains[index].push(link);
    }
}

/// A batch's reservation chains, each in status order, grouped by what
/// they do: reservations made earlier (without, then with backorder
/// fills), those made and ended within the batch, those made and left
/// open.
fn sort_chains(chains: Vec<Chain>) -> [Vec<Step>; 4] {
    let mut moves = Vec::new();
    let mut filled = Vec::new();
    let mut round_trips = Vec::new();
    let mut takes = Vec::new();
    for mut chain in chains {
        chain.links_mut().sort_by_key(Link::order_key);
        let links = chain.links();
        let born_here = matches!(&links[0], Link::Hold(hold) if hold.from.is_none());
        let ended = links
            .iter()
            .rev()
            .find_map(|link| match link {
                Link::Hold(hold) => Some(is_end(hold.status)),
                Link::Fill(..) => None,
            })
            .unwrap_or(false);
        let fills = links.iter().any(|link| matches!(link, Link::Fill(..)));
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::core::types::{Line, ReservationId};
    use crate::durable::event::HoldEvent;

    fn hold(id: u64, from: Option<HoldStatus>, status: HoldStatus, deadline_ms: u64) -> Event {
        Event::Hold(HoldEvent {
            id: ReservationId::from_u64(id),
            from,
            status,
            at_ms: 1,
            deadline_ms,
            limit_mask: 0,
            customer: None,
            lines: vec![Line {
                sku: SkuId::from_index(0),
                quantity: 1,
            }],
            extensions: 0,
            changes: None,
            owed: None,
            ticket: 0,
        })
    }

    fn statuses(step: &Step) -> Vec<(u64, Option<HoldStatus>, HoldStatus, u64)> {
        let Step::Chain(chain) = step else {
            return Vec::new();
        };
        let links = chain.links();
        let of = |link: &Link| match link {
            Link::Hold(h) => Some((h.id.as_u64(), h.from, h.status, h.deadline_ms)),
            Link::Fill(..) => None,
        };
        links.iter().filter_map(of).collect()
    }

    /// A chain of one link stays one; a chain of several, its links arriving
    /// out of order across the batch, comes out whole in path order.
    #[test]
    fn chains_of_one_and_of_many_come_out_whole_and_in_path_order() {
        use HoldStatus::*;
        let mut events = vec![
            hold(7, Some(Held), Confirmed, 30),
            hold(9, None, Confirmed, 10),
            hold(7, Some(Held), Held, 30),
            hold(7, None, Held, 20),
        ];
        let order = feed_order(&mut events);
        assert!(events.is_empty());
        assert_eq!(order.len(), 2);
        assert!(matches!(&order[0], Step::Chain(Chain::Many(_))));
        assert_eq!(
            statuses(&order[0]),
            [
                (7, None, Held, 20),
                (7, Some(Held), Held, 30),
                (7, Some(Held), Confirmed, 30),
            ]
        );
        assert!(matches!(&order[1], Step::Chain(Chain::One(_))));
        assert_eq!(statuses(&order[1]), [(9, None, Confirmed, 10)]);
    }
}
