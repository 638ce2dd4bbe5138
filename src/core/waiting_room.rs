//! Waiting rooms (#16): a fair line in front of a flash sale's SKU that
//! admits buyers by the stock still free, not only by a rate.
//!
//! # The rules
//!
//! - **One place per buyer.** A buyer (a customer) joins once; joining again
//!   returns the same ticket while it waits or holds an admission.
//! - **Early arrivals are shuffled.** Everyone who joins before the shuffle
//!   is put in a random order at it; later arrivals queue behind in
//!   order. The shuffle is at the sale's start, and never sooner than
//!   `MAX_POLL_AFTER_MS` after the room opened (or the server started), so
//!   every buyer who was waiting has polled once: a script that joins in
//!   the first millisecond gains nothing over a person who joins in the
//!   last second before the start.
//! - **Admission by remaining stock.** A buyer is admitted only while
//!   those admitted and not yet reserved (`outstanding`) are fewer than
//!   `available × overbook`, and at most `admit_per_s` are admitted per
//!   second (a token bucket holding one second's worth): the admissions
//!   flow at `min(rate, what the free stock allows)`.
//!   A reservation lowers both `outstanding` and `available` by its
//!   units, so with an overbook of 1 the bound holds at every moment;
//!   above 1 it holds at every admission (after reservations the
//!   admitted may exceed `available × overbook` until they reserve or
//!   lapse, but no one more is admitted until they do). When the units are taken,
//!   no one more is admitted; when held units come back, admission
//!   resumes. An admission unused by its deadline lapses and frees its
//!   slot; one used by a reservation (or refused for stock) frees it too.
//! - **Sold out at once.** When the SKU has nothing available and nothing
//!   held (nothing can come back), every buyer still waiting reads
//!   `sold_out` on its next poll, and nobody more may join.
//!
//! # What it does not know
//!
//! No clock, no I/O, no randomness of its own, no engine: each step is
//! given the time, the room's configuration, the sale window and the
//! SKU's counts (`Step`), so the rules are tested deterministically. The
//! state is in memory only: a restart forgets it (`docs/api.md`, "Waiting
//! rooms", says what buyers are told, and why that choice).
//!
//! # Cost
//!
//! A room is behind one lock (its shard's, `WaitingRooms`), never a global
//! one. A poll earlier than the time its last answer named reads the
//! ticket and returns: it neither moves the line nor reads the SKU. The
//! work that does move the line (`tick`) runs at most once per
//! `TICK_INTERVAL_MS` per room, whoever triggers it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use hashbrown::HashMap;

use crate::core::engine::SaleWindow;
use crate::core::error::EngineError;
use crate::core::limits::{
    MAX_ADMISSION_TTL_MS, MAX_ADMIT_PER_S, MAX_OVERBOOK_MILLI, MAX_POLL_AFTER_MS,
    MAX_QUEUE_PER_ROOM, MIN_ADMISSION_TTL_MS, SHARDS,
};
use crate::core::sync::Mutex;
use crate::core::types::SkuId;

/// A waiting room's settings, as the operator sets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// Most buyers admitted per second.
    pub admit_per_s: u32,
    /// Admitted-and-not-reserved buyers per available unit, in
    /// thousandths (1,000: one buyer per unit).
    pub overbook_milli: u32,
    /// How long an admission stays good for one reservation request.
    pub admission_ttl_ms: u64,
}

impl RoomConfig {
    /// Within the limits of `limits.rs`: at least one admission per
    /// second, at least one buyer per unit, deadlines a person can meet.
    pub fn validate(&self) -> Result<(), EngineError> {
        let reason = if !(1..=MAX_ADMIT_PER_S).contains(&self.admit_per_s) {
            "admit_per_s must be 1 to 100000"
        } else if !(1_000..=MAX_OVERBOOK_MILLI).contains(&self.overbook_milli) {
            "overbook must be 1.0 to 10.0 (at least one admitted buyer per unit)"
        } else if !(MIN_ADMISSION_TTL_MS..=MAX_ADMISSION_TTL_MS).contains(&self.admission_ttl_ms) {
            "admission_ttl_ms must be 1000 to 600000"
        } else {
            return Ok(());
        };
        Err(EngineError::InvalidWaitingRoom { reason })
    }
}

/// What a room is told at each step.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub now_ms: u64,
    pub config: RoomConfig,
    pub window: SaleWindow,
    /// The SKU's available units (not held, not sold).
    pub available: u64,
    /// Its held units (they may come back).
    pub held: u64,
}

/// A ticket's number in its room (the index of its place record).
pub type TicketNo = u32;

/// Where a buyer stands, as a poll answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// In line. `place` is 1 for the next buyer to be admitted; `None`
    /// before the shuffle (`shuffle_at_ms`).
    Waiting {
        place: Option<u64>,
        estimated_wait_ms: u64,
        poll_after_ms: u64,
        shuffle_at_ms: u64,
    },
    /// May reserve once, until `expires_at_ms`.
    Admitted { expires_at_ms: u64 },
    /// Nothing is left to sell.
    SoldOut,
    /// The admission was used by a reservation.
    Used,
    /// The admission's deadline passed unused.
    Lapsed { expired_at_ms: u64 },
    /// More than `MAX_EARLY_POLLS` polls came before the time the last
    /// answer named: a flood, refused until then.
    TooSoon { retry_after_ms: u64 },
}

/// Why a join is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// Nothing is left to sell.
    SoldOut,
    /// `MAX_QUEUE_PER_ROOM` buyers joined this room.
    Full,
}

/// Why an admission does not let a reservation through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionRefusal {
    /// No such ticket in this room (or not this buyer's).
    Unknown,
    /// Still waiting.
    NotYet,
    /// Its deadline passed.
    Lapsed { expired_at_ms: u64 },
    /// A reservation used it already.
    Used,
    /// Another request is using it at this moment.
    InUse,
}

/// How a claimed admission ends (`WaitingRoom::finish`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimEnd {
    /// A reservation was made, or refused for stock: the admission is spent.
    Spent,
    /// The request was refused for something the buyer can correct: the
    /// admission stays good until its deadline.
    Kept,
}

/// A claim on an admission, to be ended with `finish`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The admission is this request's now.
    Fresh,
    /// The request retries the one that used it (same idempotency key):
    /// let it through, the engine answers it from its key.
    Retry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Admitted {
        expires_ms: u64,
    },
    /// A reservation request is using the admission now.
    Claimed {
        expires_ms: u64,
        key: u64,
    },
    /// `key`: a hash of the idempotency key it was used with (0: none).
    Used {
        key: u64,
    },
    Lapsed {
        expired_at_ms: u64,
    },
}

#[derive(Debug)]
struct Ticket {
    customer: Box<str>,
    /// Place in line from the room's start (0 first); `UNPLACED` before
    /// the shuffle.
    pos: u64,
    state: State,
    /// A poll before this time is answered without a tick.
    next_poll_ms: u64,
    /// Polls before `next_poll_ms` since the last one after it.
    early_polls: u16,
}

const UNPLACED: u64 = u64::MAX;

/// Least time between two ticks of one room: a crowd of polls moves the
/// line at most this often, and reads the SKU's counts as often.
pub const TICK_INTERVAL_MS: u64 = 10;
/// Polls a buyer may send before the time its last answer named (a page
/// reloaded, a second tab) before they are refused as a flood.
pub const MAX_EARLY_POLLS: u16 = 10;
/// Shortest wait a poll answer asks for.
const MIN_POLL_AFTER_MS: u64 = 250;
/// Spread added to the first poll after the shuffle, so the crowd that
/// gathered before it does not poll in one millisecond.
const SHUFFLE_SPREAD_MS: u64 = 1_000;

/// Counts since the room opened, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomCounts {
    /// Buyers waiting now (before or after the shuffle).
    pub waiting: u64,
    /// Admitted and not yet reserved now.
    pub outstanding: u64,
    pub joined: u64,
    pub admitted: u64,
    pub used: u64,
    pub lapsed: u64,
}

/// One SKU's waiting room. See the module docs.
#[derive(Debug)]
pub struct WaitingRoom {
    /// Named in every token, so a token from an earlier room (turned off
    /// and on, or before a restart) is known as such.
    epoch: u32,
    opened_ms: u64,
    config: RoomConfig,
    seed: u64,
    shuffled: bool,
    tickets: Vec<Ticket>,
    by_customer: HashMap<Box<str>, TicketNo, foldhash::fast::RandomState>,
    /// Joined before the shuffle, in join order.
    early: Vec<TicketNo>,
    /// Waiting after the shuffle, in place order.
    line: VecDeque<TicketNo>,
    next_pos: u64,
    /// The place of the next buyer to be admitted.
    front_pos: u64,
    /// Admitted, not yet used or lapsed (claimed ones included).
    outstanding: u64,
    /// Admissions in the order given, with their deadlines (see `lapse`).
    deadlines: VecDeque<(u64, TicketNo)>,
    /// The token bucket, in thousandths of an admission.
    bucket_milli: u64,
    bucket_at_ms: u64,
    last_tick_ms: Option<u64>,
    sold_out: bool,
    counts: RoomCounts,
}

impl WaitingRoom {
    /// A room opening at `now_ms`; `seed` drives its shuffle, `epoch`
    /// names its tokens.
    pub fn new(config: RoomConfig, now_ms: u64, seed: u64, epoch: u32) -> WaitingRoom {
        WaitingRoom {
            epoch,
            opened_ms: now_ms,
            config,
            seed,
            shuffled: false,
            tickets: Vec::new(),
            by_customer: HashMap::default(),
            early: Vec::new(),
            line: VecDeque::new(),
            next_pos: 0,
            front_pos: 0,
            outstanding: 0,
            deadlines: VecDeque::new(),
            bucket_milli: 0,
            bucket_at_ms: now_ms,
            last_tick_ms: None,
            sold_out: false,
            counts: RoomCounts::default(),
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// When the early arrivals are shuffled, given the sale's window.
    pub fn shuffle_at_ms(&self, window: SaleWindow) -> u64 {
        let gathered = self.opened_ms.saturating_add(MAX_POLL_AFTER_MS);
        window.starts_at_ms.unwrap_or(0).max(gathered)
    }

    /// `customer` joins (or finds its place again). Returns its ticket.
    pub fn join(&mut self, step: &Step, customer: &str) -> Result<TicketNo, JoinRefusal> {
        self.tick(step, false);
        if let Some(&ticket) = self.by_customer.get(customer) {
            let state = self.tickets[ticket as usize].state;
            if !matches!(state, State::Used { .. } | State::Lapsed { .. }) {
                return Ok(ticket);
            }
        }
        if self.sold_out {
            return Err(JoinRefusal::SoldOut);
        }
        if self.tickets.len() >= MAX_QUEUE_PER_ROOM {
            return Err(JoinRefusal::Full);
        }
        let ticket = self.tickets.len() as TicketNo;
        let pos = if self.shuffled {
            self.line.push_back(ticket);
            self.next_pos += 1;
            self.next_pos - 1
        } else {
            self.early.push(ticket);
            UNPLACED
        };
        self.tickets.push(Ticket {
            customer: customer.into(),
            pos,
            state: State::Waiting,
            next_poll_ms: 0,
            early_polls: 0,
        });
        self.by_customer.insert(customer.into(), ticket);
        self.counts.joined += 1;
        Ok(ticket)
    }

    /// Where `ticket` stands. A poll before the time the last answer named
    /// is answered from the ticket alone (it does not move the line).
    pub fn poll(&mut self, step: &Step, ticket: TicketNo) -> Option<Standing> {
        let record = self.tickets.get_mut(ticket as usize)?;
        let early = step.now_ms < record.next_poll_ms;
        if early {
            record.early_polls = record.early_polls.saturating_add(1);
            if record.early_polls > MAX_EARLY_POLLS {
                let retry_after_ms = record.next_poll_ms - step.now_ms;
                return Some(Standing::TooSoon { retry_after_ms });
            }
        } else {
            record.early_polls = 0;
        }
        // Even an early poll learns at once that nothing is left.
        self.sold_out = step.available == 0 && step.held == 0;
        if !early {
            self.tick(step, false);
        }
        let standing = self.standing(step, ticket);
        if let (false, Standing::Waiting { poll_after_ms, .. }) = (early, standing) {
            self.tickets[ticket as usize].next_poll_ms = step.now_ms + poll_after_ms;
        }
        Some(standing)
    }

    /// The buyer who holds `ticket`, if it is one of this room's.
    pub fn customer(&self, ticket: TicketNo) -> Option<&str> {
        self.tickets.get(ticket as usize).map(|t| &*t.customer)
    }

    /// Claims `ticket`'s admission for a reservation by `customer` with
    /// idempotency key hash `key` (0: no key). End it with `finish`.
    pub fn claim(
        &mut self,
        step: &Step,
        ticket: TicketNo,
        customer: &str,
        key: u64,
    ) -> Result<Claim, AdmissionRefusal> {
        self.tick(step, false);
        let record = (self.tickets.get_mut(ticket as usize))
            .filter(|t| *t.customer == *customer)
            .ok_or(AdmissionRefusal::Unknown)?;
        match record.state {
            State::Admitted { expires_ms } if step.now_ms < expires_ms => {
                record.state = State::Claimed { expires_ms, key };
                Ok(Claim::Fresh)
            }
            State::Admitted { expires_ms } => {
                self.end_admission(
                    ticket,
                    State::Lapsed {
                        expired_at_ms: expires_ms,
                    },
                );
                Err(AdmissionRefusal::Lapsed {
                    expired_at_ms: expires_ms,
                })
            }
            State::Used { key: used } if key != 0 && used == key => Ok(Claim::Retry),
            State::Used { .. } => Err(AdmissionRefusal::Used),
            State::Claimed { .. } => Err(AdmissionRefusal::InUse),
            State::Waiting => Err(AdmissionRefusal::NotYet),
            State::Lapsed { expired_at_ms } => Err(AdmissionRefusal::Lapsed { expired_at_ms }),
        }
    }

    /// Ends a `Claim::Fresh` on `ticket`.
    pub fn finish(&mut self, now_ms: u64, ticket: TicketNo, end: ClaimEnd) {
        let Some(record) = self.tickets.get_mut(ticket as usize) else {
            return;
        };
        let State::Claimed { expires_ms, key } = record.state else {
            debug_assert!(false, "finish without a claim: {:?}", record.state);
            return;
        };
        match end {
            ClaimEnd::Spent => self.end_admission(ticket, State::Used { key }),
            ClaimEnd::Kept if now_ms < expires_ms => {
                record.state = State::Admitted { expires_ms };
            }
            ClaimEnd::Kept => self.end_admission(
                ticket,
                State::Lapsed {
                    expired_at_ms: expires_ms,
                },
            ),
        }
    }

    /// The room's counts now.
    pub fn counts(&self) -> RoomCounts {
        RoomCounts {
            waiting: (self.early.len() + self.line.len()) as u64,
            outstanding: self.outstanding,
            ..self.counts
        }
    }
}

/// SplitMix64's output function.
fn splitmix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

type RoomMap = HashMap<SkuId, WaitingRoom, foldhash::fast::RandomState>;

/// Every SKU's waiting room, each behind its shard's lock (never one lock
/// for all). Rooms are made at their first use and dropped when their SKU's
/// configuration is turned off.
#[derive(Debug)]
pub struct WaitingRooms {
    shards: Box<[CachePadded<Mutex<RoomMap>>]>,
    seed: u64,
    /// Rooms made so far: each one's epoch and seed differ.
    made: AtomicU64,
}

impl WaitingRooms {
    /// `seed` should be random per process: it drives the shuffles and
    /// the epochs that tell this process's tokens from an earlier one's.
    pub fn new(seed: u64) -> WaitingRooms {
        WaitingRooms {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::default()))
                .collect(),
            seed,
            made: AtomicU64::new(0),
        }
    }

    /// Runs `f` on `sku`'s room as `config` says it is now: made if it is
    /// on and there is none, dropped (and `f` not run) if it is off.
    pub fn with_room<R>(
        &self,
        sku: SkuId,
        config: Option<RoomConfig>,
        now_ms: u64,
        f: impl FnOnce(&mut WaitingRoom) -> R,
    ) -> Option<R> {
        let mut shard = self.shards[sku.index() as usize % SHARDS].lock();
        let Some(config) = config else {
            shard.remove(&sku);
            return None;
        };
        let room = shard.entry(sku).or_insert_with(|| {
            // Relaxed: a count that only has to differ per room.
            let made = self.made.fetch_add(1, Ordering::Relaxed);
            let seed = splitmix(self.seed ^ splitmix(made));
            WaitingRoom::new(config, now_ms, seed, (seed >> 32) as u32)
        });
        Some(f(room))
    }

    /// Every room's counts, by SKU.
    pub fn counts(&self) -> Vec<(SkuId, RoomCounts)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            all.extend(shard.iter().map(|(&sku, room)| (sku, room.counts())));
        }
        all.sort_by_key(|(sku, _)| sku.index());
        all
    }
}

mod moves;
#[cfg(all(test, not(loom)))]
#[path = "waiting_room_tests.rs"]
mod tests;
