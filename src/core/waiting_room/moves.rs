//! How the line moves: the shuffle at the sale's start, admissions as
//! free stock allows, lapses, and a ticket's standing as its holder reads it.

use super::*;

impl WaitingRoom {
    /// Moves the line: shuffle when due, lapse what expired, admit what
    /// the stock and the rate allow. At most once per `TICK_INTERVAL_MS`
    /// unless `force`.
    pub fn tick(&mut self, step: &Step, force: bool) {
        let due = self
            .last_tick_ms
            .is_none_or(|last| step.now_ms >= last.saturating_add(TICK_INTERVAL_MS));
        // The shuffle's moment is exact whatever the interval: a buyer who
        // joins at or after it queues behind the shuffled.
        let shuffle_due = !self.shuffled && step.now_ms >= self.shuffle_at_ms(step.window);
        if !(due || force || shuffle_due) {
            return;
        }
        self.last_tick_ms = Some(step.now_ms);
        self.config = step.config;
        if shuffle_due {
            self.shuffle(step.now_ms);
        }
        self.lapse(step.now_ms);
        self.sold_out = step.available == 0 && step.held == 0;
        if self.shuffled && step.window.is_open(step.now_ms) {
            self.admit(step);
        }
        debug_assert!(self.outstanding <= self.counts.admitted);
    }

    /// Puts the early arrivals in a random order (Fisher–Yates, driven
    /// by SplitMix64 from the room's seed) ahead of everyone later.
    pub(super) fn shuffle(&mut self, now_ms: u64) {
        let mut state = self.seed;
        for i in (1..self.early.len()).rev() {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let j = ((u128::from(splitmix(state)) * (i as u128 + 1)) >> 64) as usize;
            self.early.swap(i, j);
        }
        for &ticket in &self.early {
            self.tickets[ticket as usize].pos = self.next_pos;
            self.next_pos += 1;
            self.line.push_back(ticket);
        }
        self.early = Vec::new();
        self.shuffled = true;
        // A full second's worth at the start: the first buyers in line are
        // admitted at once.
        self.bucket_milli = u64::from(self.config.admit_per_s) * 1_000;
        self.bucket_at_ms = now_ms;
    }

    /// Admissions whose deadline passed free their slots. Deadlines are
    /// taken in the order given: after a change to `admission_ttl_ms` a
    /// later one may be earlier, and is freed when it reaches the front
    /// (its use is still refused at its own deadline, in `claim`).
    pub(super) fn lapse(&mut self, now_ms: u64) {
        while let Some(&(expires_ms, ticket)) = self.deadlines.front() {
            if now_ms < expires_ms {
                break;
            }
            self.deadlines.pop_front();
            if let State::Admitted { expires_ms } = self.tickets[ticket as usize].state {
                self.end_admission(
                    ticket,
                    State::Lapsed {
                        expired_at_ms: expires_ms,
                    },
                );
            }
        }
    }

    pub(super) fn admit(&mut self, step: &Step) {
        let rate = u64::from(step.config.admit_per_s);
        let elapsed = step.now_ms.saturating_sub(self.bucket_at_ms);
        self.bucket_milli = (self.bucket_milli + elapsed.saturating_mul(rate)).min(rate * 1_000);
        self.bucket_at_ms = step.now_ms;
        let by_stock = step
            .available
            .saturating_mul(u64::from(step.config.overbook_milli))
            / 1_000;
        while self.outstanding < by_stock && self.bucket_milli >= 1_000 {
            let Some(ticket) = self.line.pop_front() else {
                break;
            };
            let expires_ms = step.now_ms + step.config.admission_ttl_ms;
            let record = &mut self.tickets[ticket as usize];
            debug_assert_eq!(record.state, State::Waiting);
            record.state = State::Admitted { expires_ms };
            self.front_pos = record.pos + 1;
            self.deadlines.push_back((expires_ms, ticket));
            self.outstanding += 1;
            self.counts.admitted += 1;
            self.bucket_milli -= 1_000;
        }
    }

    /// An admission ends (used or lapsed): its slot is free.
    pub(super) fn end_admission(&mut self, ticket: TicketNo, state: State) {
        debug_assert!(self.outstanding > 0);
        self.outstanding -= 1;
        match state {
            State::Used { .. } => self.counts.used += 1,
            _ => self.counts.lapsed += 1,
        }
        self.tickets[ticket as usize].state = state;
    }

    pub(super) fn standing(&self, step: &Step, ticket: TicketNo) -> Standing {
        let record = &self.tickets[ticket as usize];
        match record.state {
            State::Waiting | State::Admitted { .. } if self.sold_out => Standing::SoldOut,
            State::Waiting => self.waiting(step, ticket, record.pos),
            State::Admitted { expires_ms } | State::Claimed { expires_ms, .. } => {
                Standing::Admitted {
                    expires_at_ms: expires_ms,
                }
            }
            State::Used { .. } => Standing::Used,
            State::Lapsed { expired_at_ms } => Standing::Lapsed { expired_at_ms },
        }
    }

    /// A waiting buyer's place, its wait at the admission rate (a lower
    /// bound: the stock may admit fewer), and when to ask again: half the
    /// wait, within bounds, never later than half an admission's life
    /// (an admission given between two polls is seen in time).
    pub(super) fn waiting(&self, step: &Step, ticket: TicketNo, pos: u64) -> Standing {
        let shuffle_at_ms = self.shuffle_at_ms(step.window);
        let spread = splitmix(self.seed ^ u64::from(ticket)) % SHUFFLE_SPREAD_MS;
        if pos == UNPLACED {
            let until = shuffle_at_ms.saturating_sub(step.now_ms);
            return Standing::Waiting {
                place: None,
                estimated_wait_ms: until,
                poll_after_ms: until.min(MAX_POLL_AFTER_MS) + spread,
                shuffle_at_ms,
            };
        }
        let ahead = pos.saturating_sub(self.front_pos);
        let rate = u64::from(step.config.admit_per_s);
        let estimated_wait_ms = ahead.saturating_mul(1_000) / rate;
        let longest = MAX_POLL_AFTER_MS.min(step.config.admission_ttl_ms / 2);
        Standing::Waiting {
            place: Some(ahead + 1),
            estimated_wait_ms,
            poll_after_ms: (estimated_wait_ms / 2).clamp(MIN_POLL_AFTER_MS, longest) + spread / 4,
            shuffle_at_ms,
        }
    }
}
