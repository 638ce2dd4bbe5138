//! Waiting for durability: the writer's kick, and `DurableFuture`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use super::{JournalError, Shared, Ticket};

pub(super) fn kick(shared: &Shared) {
    // Relaxed load first: while a kick is pending nobody writes the line.
    // AcqRel swap: the one that sets the flag unparks; the writer's swap
    // that clears it pairs with it.
    if !shared.kicked.load(Ordering::Relaxed) && !shared.kicked.swap(true, Ordering::AcqRel) {
        if let Some(writer) = shared.writer_thread.get() {
            writer.unpark();
        }
    }
}

/// Pending `DurableFuture`s of one lane: their tickets and wakers.
pub(super) type WaiterList = Vec<(u64, Waker)>;

/// Resolves when its ticket is durable. See `Journal::durable`.
///
/// It borrows the journal (no reference count touched per request) and
/// registers its waker once, in the list of the CPU it was first polled
/// on; later polls with a waker that wakes the same task register nothing.
#[derive(Debug)]
pub struct DurableFuture<'a> {
    pub(super) shared: &'a Shared,
    pub(super) ticket: Ticket,
    /// The list this future registered in, and the waker it left there.
    pub(super) registered: Option<(usize, Waker)>,
}

impl DurableFuture<'_> {
    fn outcome(&self) -> Option<Result<(), JournalError>> {
        let shared = self.shared;
        if shared.durable_epoch.load(Ordering::Acquire) >= self.ticket.0 {
            return Some(Ok(()));
        }
        if let Some(failure) = shared.failure.get() {
            return Some(Err(failure.clone()));
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return Some(Err(JournalError::Closed));
        }
        None
    }
}

impl Future for DurableFuture<'_> {
    type Output = Result<(), JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(outcome) = self.outcome() {
            return Poll::Ready(outcome);
        }
        if let Some((_, waker)) = &self.registered {
            if waker.will_wake(cx.waker()) {
                // Still in its list: the writer removes an entry only once
                // its ticket is durable (or the journal failed), which
                // `outcome` would have seen.
                return Poll::Pending;
            }
        }
        let shared = self.shared;
        let list = crate::core::hint::stripe_hint() % shared.wakers.len();
        {
            let mut wakers = shared.wakers[list].lock();
            // Check again under the lock the writer takes to wake us, so a
            // batch finishing in between cannot be missed.
            if let Some(outcome) = self.outcome() {
                return Poll::Ready(outcome);
            }
            wakers.push((self.ticket.0, cx.waker().clone()));
        }
        let first = self.registered.is_none();
        self.registered = Some((list, cx.waker().clone()));
        if first {
            kick(shared);
        }
        Poll::Pending
    }
}
