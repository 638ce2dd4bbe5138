//! One HTTP/1.1 connection's life: hyper serving it, a guard against slow
//! and idle clients, and graceful shutdown.
//!
//! # Why not hyper's `header_read_timeout`
//!
//! hyper's timeout arms a fresh timer for every request: a boxed `Sleep`,
//! an insert into and a removal from tokio's timer wheel, and clock reads,
//! about 700 instructions and an allocation per request (callgrind,
//! `docs/benchmarks.md`). A flash sale sends tens of thousands of requests
//! a second over a few keep-alive connections, so that is paid where it
//! hurts, for a guard that almost never fires.
//!
//! Here each connection keeps one timer that ticks every quarter of the
//! header timeout, and the request path only records progress: the read
//! path notes the tick in which a request head began arriving, the service
//! notes that a head was complete. At each tick the guard closes the
//! connection when a head has been arriving for the whole timeout (a
//! slowloris client) or when it has been idle, with nothing in flight, for
//! the idle timeout. Neither check ever cuts a request the server is still
//! answering. A head that stalls is closed after at least the timeout and
//! at most a quarter more.
//!
//! Graceful shutdown is checked the same way: the stop signal's future is
//! polled once, to register for its wake-up, and after that each poll
//! costs one load of a flag instead of a poll of a `watch` future.
//!
//! All the state of a connection is touched by its one task only, so every
//! atomic below is `Relaxed`: the atomics are there to make the state
//! `Sync`, not to order anything between threads.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::server::api::Api;
use crate::server::auth::TokenCache;

/// Timer ticks in one header timeout: a stalled head is closed between
/// one and `1 + 1/TICKS_PER_TIMEOUT` timeouts after it began.
const TICKS_PER_TIMEOUT: u32 = 4;
/// No head is arriving (marker in `Progress::head_started`).
const NO_HEAD: u64 = u64::MAX;

/// How long a client may take, per connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From the first byte of a request head (or from connecting) to the
    /// end of that head.
    pub header_timeout: Duration,
    /// With no request in flight and no bytes arriving, after this long
    /// the connection is closed. Never shorter than `header_timeout`.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the guard closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// hyper finished (the client closed, or an error).
    Done,
    /// A request head took longer than the header timeout.
    SlowHead,
    /// Idle for the idle timeout.
    Idle,
}

/// What the request path tells the guard.
struct Progress {
    /// Ticks of the guard's timer since the connection opened.
    tick: AtomicU64,
    /// Tick in which the bytes of the next request head began to arrive, or
    /// `NO_HEAD`. A new connection starts at tick 0: it owes a head.
    head_started: AtomicU64,
    /// Tick of the last byte read or request head completed.
    last_active: AtomicU64,
    /// Requests handed to the service and not yet answered.
    in_flight: AtomicU32,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tick: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            last_active: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        }
    }

    /// Bytes arrived: they begin a head unless one is already begun.
    fn on_bytes(&self) {
        // Relaxed: one task reads and writes these (see the module docs).
        let tick = self.tick.load(Ordering::Relaxed);
        if self.head_started.load(Ordering::Relaxed) == NO_HEAD {
            self.head_started.store(tick, Ordering::Relaxed);
        }
        self.last_active.store(tick, Ordering::Relaxed);
    }

    /// A whole head arrived and goes to the service.
    fn on_head(&self) {
        // Relaxed: as above.
        self.head_started.store(NO_HEAD, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn on_answered(&self) {
        // Relaxed: as above.
        let before = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "answered a request that was not in flight");
        self.last_active
            .store(self.tick.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Advances the tick and says whether the connection must close.
    fn on_tick(&self, limits: &TickLimits) -> Option<Closed> {
        // Relaxed: as above.
        let tick = self.tick.load(Ordering::Relaxed) + 1;
        self.tick.store(tick, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head_started = self.head_started.load(Ordering::Relaxed);
        // A head begun in tick t began no later than the end of tick t, so
        // `ticks + 1` ticks later at least `ticks` ticks have passed.
        if head_started != NO_HEAD && tick - head_started > limits.head_ticks {
            return Some(Closed::SlowHead);
        }
        let last_active = self.last_active.load(Ordering::Relaxed);
        if head_started == NO_HEAD && tick - last_active > limits.idle_ticks {
            return Some(Closed::Idle);
        }
        None
    }
}

/// The limits counted in ticks.
struct TickLimits {
    period: Duration,
    head_ticks: u64,
    idle_ticks: u64,
}

impl TickLimits {
    fn new(limits: ConnectionLimits) -> TickLimits {
        assert!(
            !limits.header_timeout.is_zero(),
            "the header timeout must be positive"
        );
        let period = limits.header_timeout / TICKS_PER_TIMEOUT;
        let period = period.max(Duration::from_millis(1));
        let idle = limits.idle_timeout.max(limits.header_timeout);
        TickLimits {
            period,
            head_ticks: u64::from(TICKS_PER_TIMEOUT),
            idle_ticks: (idle.as_nanos() / period.as_nanos()).max(1) as u64,
        }
    }
}

/// The TCP stream, telling `Progress` when bytes arrive. Writes pass
/// through untouched (hyper is told not to use vectored writes, see
/// `serve`, but they would pass through too).
struct WatchedStream {
    stream: TcpStream,
    progress: Arc<Progress>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.progress.on_bytes();
        }
        read
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Counts a request as in flight until it is answered or dropped.
struct Serving(Arc<Progress>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.on_answered();
    }
}

/// The server-wide stop signal every connection watches.
#[derive(Clone)]
pub struct StopSignal {
    stopping: Arc<AtomicBool>,
    changed: tokio::sync::watch::Receiver<bool>,
}

/// The sending side of [`StopSignal`].
pub struct StopSender {
    stopping: Arc<AtomicBool>,
    changed: tokio::sync::watch::Sender<bool>,
}

/// A stop signal and its sender.
pub fn stop_signal() -> (StopSender, StopSignal) {
    let stopping = Arc::new(AtomicBool::new(false));
    let (changed, receiver) = tokio::sync::watch::channel(false);
    (
        StopSender {
            stopping: Arc::clone(&stopping),
            changed,
        },
        StopSignal {
            stopping,
            changed: receiver,
        },
    )
}

impl StopSender {
    /// Asks every connection to finish its request and close.
    pub fn stop(&self) {
        // Release: pairs with the Acquire load in `serve`; a connection
        // woken by the watch below sees the flag set.
        self.stopping.store(true, Ordering::Release);
        let _ = self.changed.send(true);
    }
}

/// Serves HTTP/1.1 on `stream` until the client leaves, a limit closes the
/// connection, or `stop` asks it to finish and close.
pub async fn serve(
    stream: TcpStream,
    api: Arc<Api>,
    limits: ConnectionLimits,
    mut stop: StopSignal,
) -> Closed {
    let ticks = TickLimits::new(limits);
    let progress = Arc::new(Progress::new());
    let io = TokioIo::new(WatchedStream {
        stream,
        progress: Arc::clone(&progress),
    });
    let on_request = Arc::clone(&progress);
    // The buyer token last verified on this connection.
    let tokens = Arc::new(TokenCache::default());
    let service = service_fn(move |request: Request<Incoming>| {
        on_request.on_head();
        let serving = Serving(Arc::clone(&on_request));
        let api = Arc::clone(&api);
        let tokens = Arc::clone(&tokens);
        async move {
            let response = api.handle_on(request, tokens).await;
            drop(serving);
            response
        }
    });
    // `writev(false)`: hyper copies each answer's body behind its head in
    // one buffer and sends it with one `write`, instead of queueing the
    // body and gathering both with `writev`. Answers are a few hundred
    // bytes, so the copy costs less than the queue's bookkeeping: ~400
    // fewer instructions a purchase (callgrind), server CPU per purchase
    // 7.6 -> 7.2 µs in the showdown's hot row (docs/benchmarks.md,
    // "One write per answer").
    let mut connection = pin!(http1::Builder::new()
        .writev(false)
        .serve_connection(io, service));
    let mut timer = pin!(tokio::time::sleep(ticks.period));
    let mut stop_changed = pin!(stop.changed.changed());
    let mut registered = false;
    let mut draining = false;
    std::future::poll_fn(|cx| {
        if !registered {
            // Register this task with the timer and the stop signal once;
            // each wakes it when due, and is looked at only then.
            registered = true;
            let _ = timer.as_mut().poll(cx);
            let _ = stop_changed.as_mut().poll(cx);
        }
        // Acquire: pairs with the Release in `StopSender::stop`.
        if !draining && stop.stopping.load(Ordering::Acquire) {
            draining = true;
            connection.as_mut().graceful_shutdown();
        }
        // A client that goes away mid-request is not the server's error.
        if connection.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Closed::Done);
        }
        if timer.is_elapsed() {
            if let Some(closed) = progress.on_tick(&ticks) {
                return Poll::Ready(closed);
            }
            let next = tokio::time::Instant::now() + ticks.period;
            timer.as_mut().reset(next);
            // Register for the new deadline (the old wake-up was spent).
            let _ = timer.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(head: u64, idle: u64) -> TickLimits {
        TickLimits::new(ConnectionLimits {
            header_timeout: Duration::from_millis(head),
            idle_timeout: Duration::from_millis(idle),
        })
    }

    /// Ticks until `on_tick` closes, at most `max`.
    fn ticks_until_closed(
        progress: &Progress,
        limits: &TickLimits,
        max: u64,
    ) -> Option<(u64, Closed)> {
        (1..=max).find_map(|n| progress.on_tick(limits).map(|closed| (n, closed)))
    }

    #[test]
    fn a_new_connection_owes_a_head_within_the_timeout() {
        let limits = limits(1000, 60_000);
        let progress = Progress::new();
        // Four ticks are one timeout; the fifth proves a whole one passed.
        assert_eq!(
            ticks_until_closed(&progress, &limits, 100),
            Some((5, Closed::SlowHead))
        );
    }

    #[test]
    fn a_trickled_head_is_closed_however_often_bytes_arrive() {
        let limits = limits(1000, 60_000);
        let progress = Progress::new();
        progress.on_tick(&limits);
        for _ in 0..3 {
            progress.on_bytes();
            assert_eq!(progress.on_tick(&limits), None);
        }
        progress.on_bytes();
        assert_eq!(progress.on_tick(&limits), Some(Closed::SlowHead));
    }

    #[test]
    fn a_request_in_flight_is_never_cut() {
        let limits = limits(1000, 2000);
        let progress = Progress::new();
        progress.on_bytes();
        progress.on_head();
        // The next request's bytes arrive (pipelined) while the first is
        // answered slowly: nothing closes however long it takes.
        progress.on_bytes();
        assert_eq!(ticks_until_closed(&progress, &limits, 1000), None);
        progress.on_answered();
        assert_eq!(progress.on_tick(&limits), Some(Closed::SlowHead));
    }

    #[test]
    fn an_idle_keep_alive_connection_closes_after_the_idle_timeout() {
        let limits = limits(1000, 3000);
        let progress = Progress::new();
        progress.on_bytes();
        progress.on_head();
        progress.on_answered();
        // 3000 ms is twelve 250 ms ticks; the thirteenth proves it.
        assert_eq!(
            ticks_until_closed(&progress, &limits, 100),
            Some((13, Closed::Idle))
        );
    }

    #[test]
    fn the_idle_timeout_is_never_shorter_than_the_header_timeout() {
        let limits = limits(1000, 10);
        assert_eq!(limits.idle_ticks, 4);
    }
}
