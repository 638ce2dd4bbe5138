use super::fs::{FaultyFs, RealFs};
use super::segment::{scan, segment_file_name};
use super::*;
use crate::durable::event::Event;
use crate::SkuId;
use std::future::Future;
use std::task::{Context, Poll, Waker};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotstock-journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A sync journal on a file layer the test can break.
fn faulty_journal(dir: &Path) -> (FaultyFs, Journal) {
    let fs = FaultyFs::new();
    let config = JournalConfig::new(dir, Durability::Sync);
    let journal = Journal::start(config, Arc::new(fs.clone()), 0, Box::new(|_| {})).unwrap();
    (fs, journal)
}

fn sell(units: u32) -> impl FnOnce(&mut Vec<u8>) {
    move |out| {
        Event::Sell {
            sku: SkuId::from_index(1),
            units,
        }
        .encode(out)
    }
}

fn read_all(dir: &Path) -> Vec<Event> {
    let mut events = Vec::new();
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| segment::parse_segment_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    numbers.sort();
    for (i, n) in numbers.iter().enumerate() {
        let bytes = std::fs::read(dir.join(segment_file_name(*n))).unwrap();
        scan(&bytes, *n, "", i + 1 == numbers.len(), 0, |_, p| {
            if segment::BatchMarker::decode(p).is_none() {
                events.push(Event::decode(p).unwrap());
            }
            Ok(())
        })
        .unwrap();
    }
    events
}

#[test]
fn appended_events_become_durable_in_order_per_thread_and_rotate_segments() {
    let dir = temp_dir("basic");
    let mut config = JournalConfig::new(&dir, Durability::Sync);
    config.segment_bytes = 256;
    let journal = Journal::start(config, Arc::new(RealFs), 0, Box::new(|_| {})).unwrap();
    for units in 1..=100 {
        let ticket = journal.append(0, sell(units)).unwrap();
        if units % 10 == 0 {
            journal.wait_durable(ticket).unwrap();
            assert!(journal.is_durable(ticket));
        }
    }
    journal.shutdown().unwrap();
    let units: Vec<u32> = read_all(&dir)
        .into_iter()
        .map(|e| match e {
            Event::Sell { units, .. } => units,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(units, (1..=100).collect::<Vec<_>>());
    let segments = std::fs::read_dir(&dir).unwrap().count();
    assert!(segments > 1, "256-byte segments must rotate: {segments}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_fsync_is_sticky_and_never_acknowledged() {
    let dir = temp_dir("fsync");
    let (fs, journal) = faulty_journal(&dir);
    let ok = journal.append(0, sell(1)).unwrap();
    journal.wait_durable(ok).unwrap();
    fs.fail_sync_in(1);
    let doomed = journal.append(0, sell(2)).unwrap();
    assert!(matches!(
        journal.wait_durable(doomed),
        Err(JournalError::SyncFailed(_))
    ));
    assert!(!journal.is_durable(doomed));
    // Sticky: no retry, no later success.
    assert!(matches!(
        journal.append(0, sell(3)),
        Err(JournalError::SyncFailed(_))
    ));
    assert!(matches!(journal.flush(), Err(JournalError::SyncFailed(_))));
    drop(journal);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bug in what the writer hands each batch to (the fold, the feed) must
/// not leave every waiter hanging on a thread that is gone: the journal
/// fails, waiters get the reason, and nothing more is acknowledged.
#[test]
fn a_panicking_writer_fails_the_journal_instead_of_hanging_its_waiters() {
    let dir = temp_dir("panic");
    let config = JournalConfig::new(&dir, Durability::Sync);
    let sink: BatchSink = Box::new(|_| panic!("a fold bug"));
    let journal = Arc::new(Journal::start(config, Arc::new(RealFs), 0, sink).unwrap());
    let ticket = journal.append(0, sell(1)).unwrap();
    // The wait runs on a thread of its own, so that the bug this test is
    // for shows as a failure (no answer within a minute), not a hung run.
    let (answer, answered) = std::sync::mpsc::channel();
    let waiter = Arc::clone(&journal);
    std::thread::spawn(move || answer.send(waiter.wait_durable(ticket)));
    let waited = answered
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the waiter of a panicked writer never got an answer");
    match waited {
        Err(JournalError::WriterPanicked(message)) => {
            assert!(message.contains("a fold bug"), "{message}")
        }
        other => panic!("expected WriterPanicked, got {other:?}"),
    }
    assert!(matches!(
        journal.append(0, sell(2)),
        Err(JournalError::WriterPanicked(_))
    ));
    drop(journal);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn disk_full_fails_the_journal_with_enospc() {
    let dir = temp_dir("full");
    let (fs, journal) = faulty_journal(&dir);
    journal
        .wait_durable(journal.append(0, sell(1)).unwrap())
        .unwrap();
    fs.disk_full_after(5);
    let ticket = journal.append(0, sell(2)).unwrap();
    match journal.wait_durable(ticket) {
        Err(JournalError::WriteFailed(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("{other:?}"),
    }
    drop(journal);
    // What was acknowledged is intact; the partial write is a torn tail.
    let events = read_all(&dir);
    assert_eq!(
        events,
        [Event::Sell {
            sku: SkuId::from_index(1),
            units: 1
        }]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn async_waits_resolve_and_many_threads_group_commit() {
    let dir = temp_dir("async");
    let batches = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&batches);
    let journal = Arc::new(
        Journal::start(
            JournalConfig::new(&dir, Durability::Sync),
            Arc::new(RealFs),
            0,
            Box::new(move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .unwrap(),
    );
    std::thread::scope(|s| {
        for t in 0..8 {
            let journal = Arc::clone(&journal);
            s.spawn(move || {
                for i in 0..200 {
                    let ticket = journal.append(t, sell(t as u32 * 1000 + i)).unwrap();
                    block_on(journal.durable(ticket)).unwrap();
                }
            });
        }
    });
    journal.shutdown().unwrap();
    assert_eq!(read_all(&dir).len(), 1600);
    // Group commit: far fewer fsyncs than durable waits.
    assert!(
        batches.load(Ordering::Relaxed) < 1600,
        "{}",
        batches.load(Ordering::Relaxed)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A minimal executor: poll, park until woken.
/// Bug: every poll of a pending `DurableFuture` pushed another copy of
/// its waker (under a process-wide lock); a future polled by a busy
/// executor grew the list without bound until its batch landed.
#[test]
fn a_pending_durable_future_registers_its_waker_once() {
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dir = temp_dir("waker-once");
    let fs = FaultyFs::new();
    let journal = Journal::start(
        JournalConfig::new(&dir, Durability::Sync),
        Arc::new(fs.clone()),
        0,
        Box::new(|_| {}),
    )
    .unwrap();
    fs.stall();
    journal.append(0, sell(1)).unwrap();
    let ticket = journal.ticket();
    let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(journal.durable(ticket));
    for _ in 0..100 {
        assert!(future.as_mut().poll(&mut cx).is_pending());
    }
    let registered = journal.stats().async_waiters;
    // Before asserting: a failed test must not leave the disk stalled
    // (dropping the journal flushes).
    fs.resume();
    assert_eq!(registered, 1);
    while future.as_mut().poll(&mut cx).is_pending() {
        std::thread::yield_now();
    }
    assert!(count.0.load(Ordering::SeqCst) <= 1, "woken once at most");
    journal.shutdown().unwrap();
    assert_eq!(journal.stats().async_waiters, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
