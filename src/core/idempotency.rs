//! `IdempotencyTable`: a retried request returns the original outcome.
//!
//! A buyer's phone times out and the app retries; the retry must not buy a
//! second unit. Racing retries are the check-then-act hazard again (look up
//! the key, miss, run, store), so the whole sequence runs under the lock of
//! the key's shard: the first request runs the operation, and a retry that
//! arrives meanwhile waits on that lock and then finds the stored outcome.
//! The operation is in-memory and short, so the wait is microseconds.
//!
//! A key remembers a fingerprint of its request: the same key with a
//! different request is refused (`Reused`) instead of silently answered with
//! another request's outcome.
//!
//! Limits: each key is kept for the retention period, and each shard keeps
//! at most `max_keys / SHARDS`; past that the oldest key is forgotten first.
//! A retry arriving after its key was forgotten runs again as a new request.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;

use crate::core::fingerprint::Fingerprint;
use crate::core::limits::SHARDS;
use crate::core::sync::Mutex;

#[derive(Debug)]
struct IdempotencyEntry<T> {
    key: Arc<str>,
    fingerprint: u64,
    created_ms: u64,
    outcome: T,
}

#[derive(Debug)]
struct IdempotencyShard<T> {
    entries: HashTable<IdempotencyEntry<T>>,
    /// Keys in insertion order, with their creation time, for expiry and
    /// eviction; an item whose entry was replaced is skipped.
    order: VecDeque<(u64, Arc<str>)>,
}

/// The key was used before with a request whose fingerprint differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reused;

/// Whether the outcome was produced now or replayed from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Fresh,
    Replayed,
}

/// Stored outcomes by idempotency key. See the module docs.
#[derive(Debug)]
pub struct IdempotencyTable<T> {
    shards: Box<[CachePadded<Mutex<IdempotencyShard<T>>>]>,
    hasher: foldhash::fast::RandomState,
    max_per_shard: usize,
    retention_ms: u64,
}

impl<T: Clone> IdempotencyTable<T> {
    pub fn new(max_keys: usize, retention_ms: u64) -> IdempotencyTable<T> {
        IdempotencyTable {
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(Mutex::new(IdempotencyShard {
                        entries: HashTable::new(),
                        order: VecDeque::new(),
                    }))
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
            retention_ms,
        }
    }

    /// Runs `op` once per key: the first call runs it and, if `op` says the
    /// outcome is worth keeping, stores it; later calls with the same key and
    /// fingerprint get the stored outcome. `op` runs under the key's shard
    /// lock, so it must not itself use this table.
    /// Whether `key`'s shard lock is held now (tests of paths that must
    /// not wait while holding it).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_locked_for(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        self.shards[shard_of(hash)].try_lock().is_none()
    }

    pub fn run(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        now_ms: u64,
        op: impl FnOnce() -> (T, bool),
    ) -> Result<(T, Origin), Reused> {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.shards[shard_of(hash)].lock();
        let shard = &mut *guard;
        if let Ok(entry) = shard.entries.find_entry(hash, |e| *e.key == *key) {
            let live = entry.get().created_ms.saturating_add(self.retention_ms) > now_ms;
            if live {
                let stored = entry.get();
                if !fingerprint.matches(stored.fingerprint) {
                    return Err(Reused);
                }
                return Ok((stored.outcome.clone(), Origin::Replayed));
            }
            entry.remove();
        }
        let (outcome, keep) = op();
        if keep {
            while shard.entries.len() >= self.max_per_shard {
                if !self.evict_oldest(shard) {
                    break;
                }
            }
            let key: Arc<str> = Arc::from(key);
            shard.order.push_back((now_ms, Arc::clone(&key)));
            let entry = IdempotencyEntry {
                key,
                fingerprint: fingerprint.print,
                created_ms: now_ms,
                outcome: outcome.clone(),
            };
            shard
                .entries
                .insert_unique(hash, entry, |e| self.hasher.hash_one(&*e.key));
        }
        Ok((outcome, Origin::Fresh))
    }

    /// Puts back a remembered outcome (recovery only, before serving). An
    /// entry already present is kept.
    pub fn restore(&self, key: &str, fingerprint: u64, created_ms: u64, outcome: T) {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.shards[shard_of(hash)].lock();
        let shard = &mut *guard;
        if shard.entries.find(hash, |e| *e.key == *key).is_some() {
            return;
        }
        let key: Arc<str> = Arc::from(key);
        shard.order.push_back((created_ms, Arc::clone(&key)));
        let entry = IdempotencyEntry {
            key,
            fingerprint,
            created_ms,
            outcome,
        };
        shard
            .entries
            .insert_unique(hash, entry, |e| self.hasher.hash_one(&*e.key));
    }

    /// Forgets keys older than the retention period. Returns how many.
    pub fn purge(&self, now_ms: u64) -> usize {
        let mut purged = 0;
        for shard in self.shards.iter() {
            let mut guard = shard.lock();
            let shard = &mut *guard;
            while let Some((created_ms, _)) = shard.order.front() {
                if created_ms.saturating_add(self.retention_ms) > now_ms {
                    break;
                }
                if self.evict_oldest(shard) {
                    purged += 1;
                }
            }
        }
        purged
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pops the oldest order item and removes its entry if the entry is the
    /// one that item recorded. Returns whether an entry was removed.
    fn evict_oldest(&self, shard: &mut IdempotencyShard<T>) -> bool {
        let Some((created_ms, key)) = shard.order.pop_front() else {
            return false;
        };
        let hash = self.hasher.hash_one(&*key);
        match shard
            .entries
            .find_entry(hash, |e| *e.key == *key && e.created_ms == created_ms)
        {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> 58) as usize % SHARDS
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn second_call_replays_and_does_not_run() {
        let table = IdempotencyTable::new(16, 1_000);
        let mut runs = 0;
        let first = table.run("k", Fingerprint::exact(7), 0, || {
            runs += 1;
            (41, true)
        });
        assert_eq!(first, Ok((41, Origin::Fresh)));
        let second = table.run("k", Fingerprint::exact(7), 10, || unreachable!("replayed"));
        assert_eq!(second, Ok((41, Origin::Replayed)));
        assert_eq!(runs, 1);
        assert_eq!(
            table.run("k", Fingerprint::exact(8), 10, || (0, true)),
            Err(Reused)
        );
    }

    #[test]
    fn outcomes_not_kept_run_again() {
        let table = IdempotencyTable::new(16, 1_000);
        assert_eq!(
            table.run("k", Fingerprint::exact(1), 0, || (1, false)),
            Ok((1, Origin::Fresh))
        );
        assert_eq!(
            table.run("k", Fingerprint::exact(1), 0, || (2, true)),
            Ok((2, Origin::Fresh))
        );
    }

    #[test]
    fn keys_expire_after_retention_and_oldest_is_evicted_at_capacity() {
        let table = IdempotencyTable::new(SHARDS, 100);
        table
            .run("old", Fingerprint::exact(1), 0, || (1, true))
            .unwrap();
        assert_eq!(
            table.run("old", Fingerprint::exact(1), 100, || (2, true)),
            Ok((2, Origin::Fresh))
        );
        assert_eq!(table.purge(199), 0);
        assert_eq!(table.purge(200), 1);
        assert!(table.is_empty());
        // One key per shard at most: filling a shard evicts its oldest key.
        let mut kept = 0;
        for i in 0..(4 * SHARDS) {
            table
                .run(&format!("k{i}"), Fingerprint::exact(1), 300, || (i, true))
                .unwrap();
            kept = table.len();
        }
        assert!(kept <= SHARDS, "capacity bounds the table: {kept}");
    }
}
