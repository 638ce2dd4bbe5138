//! The NATS JetStream publisher: every feed event, once, in position order,
//! on the shop's bus.
//!
//! A thread of its own reads the durable feed after the last position
//! JetStream acknowledged and publishes each event as JSON on
//! `{subject_prefix}.{type}` with `Nats-Msg-Id` = the event id, so the
//! stream drops a duplicate within its window. Exactly once across
//! restarts does not rest on that window: at every (re)connection the
//! publisher reads the stream's last message and resumes after the larger
//! of its position and the one kept in the store.
//!
//! The broker being down or slow never blocks a sale: the publisher only
//! reads the feed, the backlog waits in the feed and the outbox, `/metrics`
//! shows the lag in events and seconds, and the publisher reconnects with
//! backoff and catches up.

mod client;

pub use client::NatsClient;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};

use super::events::write_event_json;
use crate::durable::feed::{FeedEvent, FeedFilter};
use crate::durable::{FeedError, FeedReader};

/// Events published before their acknowledgements are read.
const BATCH: usize = 256;
/// How long a request or an acknowledgement may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often the acknowledged position is written to the store.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// `nats://host:port`.
    pub url: String,
    /// The JetStream stream (created if absent, capturing `{prefix}.>`).
    pub stream: String,
    /// Subjects are `{prefix}.{event type}`.
    pub subject_prefix: String,
    /// This node's id in a cluster (every event names it); `None` alone.
    pub node: Option<String>,
}

impl NatsConfig {
    /// Checks the names NATS would refuse, with messages naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        };
        if !self.url.starts_with("nats://") {
            return Err(format!(
                "--nats-url must be nats://host:port, not {:?}",
                self.url
            ));
        }
        if !token(&self.stream) {
            return Err(format!(
                "--nats-stream must be letters, digits, `-` or `_` (at most 64), not {:?}",
                self.stream
            ));
        }
        if !self.subject_prefix.split('.').all(token) {
            return Err(format!(
                "--nats-subject-prefix must be dot-separated tokens of letters, digits, `-` or `_`, not {:?}",
                self.subject_prefix
            ));
        }
        Ok(())
    }
}

/// What `/metrics` shows of the publisher.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Every event up to here is in the stream.
    pub acked: AtomicU64,
    /// When the oldest event not yet acknowledged was made (0: none).
    pub oldest_unpublished_ms: AtomicU64,
    pub connected: AtomicBool,
    /// Connections that failed or broke.
    pub failures: AtomicU64,
    /// Batches whose chained publication was not proven and that were
    /// published again one acknowledgement per event.
    pub republished: AtomicU64,
    /// Events retention deleted before they could be published.
    pub lost_to_retention: AtomicU64,
}

/// The running publisher; `stop` (or drop) ends it after saving its position.
pub struct Publisher {
    stats: Arc<PublisherStats>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Publisher {
    pub fn start(reader: FeedReader, config: NatsConfig) -> io::Result<Publisher> {
        let stats = Arc::new(PublisherStats::default());
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let mut run = Run {
            reader,
            config,
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            acked: 0,
            saved: 0,
        };
        let handle = std::thread::Builder::new()
            .name("hotstock-nats".into())
            .spawn(move || run.run())?;
        Ok(Publisher {
            stats,
            stop,
            handle: Some(handle),
        })
    }

    pub fn stats(&self) -> &Arc<PublisherStats> {
        &self.stats
    }

    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shut_down();
    }
}

struct Run {
    reader: FeedReader,
    config: NatsConfig,
    stats: Arc<PublisherStats>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    acked: u64,
    saved: u64,
}

impl Run {
    fn run(&mut self) {
        self.acked = self.reader.publisher_position(&self.config.stream).unwrap_or_else(|e| {
            tracing::error!("nats: reading the last published position: {e}; starting from 0 (JetStream drops what it already has)");
            0
        });
        let mut backoff = BACKOFF_MIN;
        let mut outage: Option<Instant> = None;
        while !self.stopping() {
            let result = self.connect_and_publish(&mut backoff, &mut outage);
            self.stats.connected.store(false, Ordering::Relaxed);
            self.save();
            let Err(error) = result else { return };
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            if outage.is_none() {
                // Once per outage, not once per retry.
                tracing::warn!("nats: {error}; the feed's backlog waits, retrying with backoff");
                outage = Some(Instant::now());
            }
            self.sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection's life: set up, resume, publish until stopped.
    fn connect_and_publish(
        &mut self,
        backoff: &mut Duration,
        outage: &mut Option<Instant>,
    ) -> io::Result<()> {
        let mut client = NatsClient::connect(&self.config.url, TIMEOUT)?;
        let in_stream = self.ensure_stream(&mut client)?;
        self.acked = self.acked.max(in_stream);
        self.publish_acked();
        self.stats.connected.store(true, Ordering::Relaxed);
        if let Some(since) = outage.take() {
            tracing::info!(
                "nats: connected to {} after {:.1} s, resuming after position {}",
                self.config.url,
                since.elapsed().as_secs_f64(),
                self.acked
            );
        }
        *backoff = BACKOFF_MIN;
        let mut saved_at = Instant::now();
        while !self.stopping() {
            let published = self.publish_batch(&mut client)?;
            if saved_at.elapsed() >= SAVE_EVERY {
                self.save();
                saved_at = Instant::now();
            }
            if !published {
                self.reader
                    .feed()
                    .wait_past(self.acked, Duration::from_millis(200));
                client.keep_alive()?;
            }
        }
        Ok(())
    }

    /// Publishes the next batch and waits for its acknowledgements.
    /// Returns whether there was anything to publish.
    fn publish_batch(&mut self, client: &mut NatsClient) -> io::Result<bool> {
        let page = match self.reader.read(self.acked, BATCH, &FeedFilter::default()) {
            Ok(page) => page,
            Err(FeedError::Gone { oldest, .. }) => {
                let lost = oldest - 1 - self.acked;
                tracing::error!("nats: {lost} events after position {} were pruned by retention before they could be published; continuing from {oldest}", self.acked);
                self.stats
                    .lost_to_retention
                    .fetch_add(lost, Ordering::Relaxed);
                self.acked = oldest - 1;
                return Ok(true);
            }
            Err(error) => return Err(io::Error::other(error.to_string())),
        };
        if page.events.is_empty() {
            self.stats.oldest_unpublished_ms.store(0, Ordering::Relaxed);
            return Ok(false);
        }
        self.stats
            .oldest_unpublished_ms
            .store(page.events[0].at_ms, Ordering::Relaxed);
        if !self.publish_chained(client, &page.events)? {
            // Not proven: each event again, with its own acknowledgement;
            // JetStream drops those it already holds by `Nats-Msg-Id`.
            self.stats.republished.fetch_add(1, Ordering::Relaxed);
            self.publish_each(client, &page.events)?;
        }
        Ok(true)
    }

    /// Publishes `events` as one chain: each after the first expects the
    /// one before it as the stream's last message
    /// (`Nats-Expected-Last-Msg-Id`), and only the last asks for an
    /// acknowledgement. JetStream stores a message only if its expectation
    /// holds, so a stored last event proves the one before it was the
    /// stream's last message, which was stored only if its own expectation
    /// held, and so on down to the first: one acknowledgement proves the
    /// whole batch, where one per event cost nats-server about a third of
    /// its work (`docs/benchmarks.md`). Returns false, changing nothing, when
    /// the chain is not proven: an event refused or already held (a
    /// duplicate is not stored, so the next expectation fails), or another
    /// publisher's message between two of ours.
    fn publish_chained(
        &mut self,
        client: &mut NatsClient,
        events: &[FeedEvent],
    ) -> io::Result<bool> {
        let feed_id = self.reader.feed_id();
        let mut body = Vec::with_capacity(512);
        let mut previous: Option<String> = None;
        let mut token = None;
        for (index, event) in events.iter().enumerate() {
            let subject = self.message(event, feed_id, &mut body);
            let id = event.id(feed_id);
            let last = index + 1 == events.len();
            token = client.queue_chained(&subject, &id, previous.as_deref(), last, &body);
            previous = Some(id);
        }
        // The whole batch in one write.
        client.flush()?;
        let token = token.expect("the last event asks for a reply");
        let reply = client.reply_to(token, Instant::now() + TIMEOUT)?;
        if !chain_proven(&reply) {
            return Ok(false);
        }
        self.acked = events[events.len() - 1].position;
        self.publish_acked();
        Ok(true)
    }

    /// Publishes each event with an acknowledgement of its own.
    fn publish_each(&mut self, client: &mut NatsClient, events: &[FeedEvent]) -> io::Result<()> {
        let feed_id = self.reader.feed_id();
        let mut tokens = Vec::with_capacity(events.len());
        let mut body = Vec::with_capacity(512);
        for event in events {
            let subject = self.message(event, feed_id, &mut body);
            tokens.push(client.queue(&subject, Some(&event.id(feed_id)), &body));
        }
        client.flush()?;
        self.await_acks(client, events, &tokens)
    }

    /// An event's message: its JSON into `body`; returns its subject.
    fn message(&self, event: &FeedEvent, feed_id: u64, body: &mut Vec<u8>) -> String {
        body.clear();
        write_event_json(body, event, feed_id, self.config.node.as_deref());
        format!("{}.{}", self.config.subject_prefix, event.kind.as_str())
    }

    /// Each acknowledgement, in event order, moves the acknowledged
    /// position to its event's.
    fn await_acks(
        &mut self,
        client: &mut NatsClient,
        events: &[FeedEvent],
        tokens: &[u64],
    ) -> io::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        // Kept by token in case the server answers out of order.
        let mut early = std::collections::HashMap::new();
        for (event, token) in events.iter().zip(tokens) {
            let reply = loop {
                if let Some(reply) = early.remove(token) {
                    break reply;
                }
                let reply = client.next_reply(deadline)?;
                if reply.token == *token {
                    break reply;
                }
                early.insert(reply.token, reply);
            };
            if reply.status == Some(503) {
                return Err(io::Error::other(format!(
                    "no JetStream stream captures {}.{}",
                    self.config.subject_prefix,
                    event.kind.as_str()
                )));
            }
            let ack: Value = serde_json::from_slice(&reply.payload)
                .map_err(|e| io::Error::other(format!("a JetStream ack that is not JSON: {e}")))?;
            if let Some(error) = ack.get("error") {
                return Err(io::Error::other(format!(
                    "JetStream refused event {}: {error}",
                    event.position
                )));
            }
            self.acked = event.position;
            self.publish_acked();
        }
        Ok(())
    }

    /// Makes sure the stream exists; returns the position of its last
    /// message (0 when empty), so a restart resumes exactly.
    fn ensure_stream(&mut self, client: &mut NatsClient) -> io::Result<u64> {
        let stream = &self.config.stream;
        let info = api(client, &format!("$JS.API.STREAM.INFO.{stream}"), &json!({}))?;
        let info = match info.get("error") {
            Some(error) if error["err_code"] == 10059 => {
                let config = json!({
                    "name": stream,
                    "subjects": [format!("{}.>", self.config.subject_prefix)],
                    "storage": "file",
                });
                let created = api(client, &format!("$JS.API.STREAM.CREATE.{stream}"), &config)?;
                if let Some(error) = created.get("error") {
                    return Err(io::Error::other(format!(
                        "creating stream {stream}: {error}"
                    )));
                }
                created
            }
            Some(error) => return Err(io::Error::other(format!("stream {stream}: {error}"))),
            None => info,
        };
        let last_seq = info["state"]["last_seq"].as_u64().unwrap_or(0);
        if last_seq == 0 {
            return Ok(0);
        }
        let last = api(
            client,
            &format!("$JS.API.STREAM.MSG.GET.{stream}"),
            &json!({"seq": last_seq}),
        )?;
        let data = last["message"]["data"].as_str().unwrap_or("");
        let event: Value = base64_decode(data)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null);
        Ok(event["position"].as_u64().unwrap_or(0))
    }

    fn publish_acked(&self) {
        // Relaxed: a gauge for /metrics; nothing is ordered by it.
        self.stats.acked.store(self.acked, Ordering::Relaxed);
    }

    fn save(&mut self) {
        if self.acked == self.saved {
            return;
        }
        match self
            .reader
            .save_publisher_position(&self.config.stream, self.acked)
        {
            Ok(()) => self.saved = self.acked,
            Err(error) => tracing::warn!("nats: keeping the published position: {error}"),
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.0.lock()
    }

    fn sleep(&self, duration: Duration) {
        let mut stop = self.stop.0.lock();
        if !*stop {
            self.stop.1.wait_for(&mut stop, duration);
        }
    }
}

/// Whether a chained batch's one acknowledgement proves it stored: the
/// last event stored now, not refused and not a duplicate of one held
/// before (a duplicate is acknowledged without its expectation checked).
fn chain_proven(reply: &client::Reply) -> bool {
    if reply.status.is_some() {
        return false;
    }
    let Ok(ack) = serde_json::from_slice::<Value>(&reply.payload) else {
        return false;
    };
    ack.get("error").is_none() && ack.get("seq").is_some() && ack["duplicate"] != true
}

/// A JetStream API request and its JSON reply.
fn api(client: &mut NatsClient, subject: &str, body: &Value) -> io::Result<Value> {
    let reply = client.request(subject, body.to_string().as_bytes(), TIMEOUT)?;
    if reply.status == Some(503) {
        return Err(io::Error::other(
            "JetStream is not enabled on this NATS server (start it with -js)",
        ));
    }
    serde_json::from_slice(&reply.payload)
        .map_err(|e| io::Error::other(format!("a JetStream reply that is not JSON: {e}")))
}

/// Standard base64 (JetStream's message data), `None` if malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut word = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            word |= value(c)? << (18 - 6 * i);
        }
        let produced = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&word.to_be_bytes()[1..1 + produced]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padding_and_refuses_garbage() {
        assert_eq!(
            base64_decode("eyJwb3NpdGlvbiI6MX0=").unwrap(),
            b"{\"position\":1}"
        );
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("T").is_none());
        assert!(base64_decode("T*==").is_none());
    }

    #[test]
    fn names_nats_refuses_are_refused_here() {
        let config = |url: &str, stream: &str, prefix: &str| NatsConfig {
            url: url.into(),
            stream: stream.into(),
            subject_prefix: prefix.into(),
            node: None,
        };
        assert!(
            config("nats://127.0.0.1:4222", "HOTSTOCK", "hotstock.events")
                .validate()
                .is_ok()
        );
        assert!(config("http://x", "S", "p").validate().is_err());
        assert!(config("nats://x:1", "a.b", "p").validate().is_err());
        assert!(config("nats://x:1", "S", "p.>").validate().is_err());
        assert!(config("nats://x:1", "S", "p..q").validate().is_err());
    }
}
