//! The journal as the engine's `ChangeSink`, and the durability calls of an
//! engine that records into it.
//!
//! This is the one place where the engine's changes become journal frames:
//! `record` encodes the borrowed `Change` straight into the caller's lane
//! (no allocation, no intermediate `Event`).

use std::sync::Arc;

use super::event::encode_change;
use super::journal::{DurableFuture, Journal, JournalError, Ticket};
use crate::core::change::{Change, ChangeSink};
use crate::core::engine::Engine;

impl ChangeSink for Journal {
    #[inline]
    fn failure(&self) -> Option<Box<str>> {
        Journal::failure(self).map(|failure| failure.to_string().into())
    }

    #[inline]
    fn make_room(&self, hint: usize) {
        // A failure is sticky and refuses the change through `failure`.
        let _ = Journal::make_room(self, hint);
    }

    #[inline]
    fn record(&self, hint: usize, change: &Change<'_>) {
        // A failure is sticky in the journal and reaches the caller through
        // its durability wait (and `failure` refuses every later change).
        let _ = self.append(hint, |out| encode_change(change, out));
    }
}

/// An engine whose every change goes to a journal.
pub type JournaledEngine = Engine<Arc<Journal>>;

impl Engine<Arc<Journal>> {
    /// The journal this engine records into.
    pub fn journal(&self) -> &Arc<Journal> {
        self.sink()
    }

    /// A ticket covering every change this engine made before the call. Take
    /// it after an operation; once it is durable, so is the operation.
    pub fn durability_ticket(&self) -> Ticket {
        self.sink().ticket()
    }

    /// Blocks until `ticket` is on disk.
    pub fn wait_durable(&self, ticket: Ticket) -> Result<(), JournalError> {
        self.sink().wait_durable(ticket)
    }

    /// Resolves when `ticket` is on disk.
    pub fn durable(&self, ticket: Ticket) -> DurableFuture<'_> {
        self.sink().durable(ticket)
    }
}
