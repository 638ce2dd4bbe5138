//! `/metrics`: the server's counters in the Prometheus text format.
//!
//! Counting stays hand-written on purpose: every request adds to a per-CPU
//! row of plain atomics (no counter line shared by every request, no
//! label hashing), where a `prometheus_client::Family` counter would put a
//! label lookup and one shared atomic on the purchase path, the "global
//! atomic is a global lock" hazard of the design notes. The *text* is
//! `prometheus-client`'s: a `Collector` sums the rows on each scrape and
//! the crate's encoder writes them (escaping, `_total`, histograms).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::nats::PublisherStats;
use crate::durable::feed::Feed;
use crate::durable::CheckpointStats;
use crossbeam_utils::CachePadded;
use hyper::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::auth::Role;
use super::error::Code;
use super::route::Route;
use crate::durable::journal::{Journal, BATCH_BUCKETS, FSYNC_BUCKETS_US};

/// Outcomes: `ok` (any 2xx), then every `Code`.
const OUTCOMES: usize = 1 + Code::ALL.len();

/// HTTP statuses the server answers with; anything else counts as `other`.
const STATUSES: [u16; 13] = [
    200, 201, 400, 401, 403, 404, 405, 409, 410, 413, 429, 500, 503,
];
const STATUS_CELLS: usize = STATUSES.len() + 1;

fn outcome_label(outcome: usize) -> &'static str {
    match outcome.checked_sub(1) {
        None => "ok",
        Some(code) => Code::ALL[code].as_str(),
    }
}

fn status_label(cell: usize) -> String {
    STATUSES
        .get(cell)
        .map_or_else(|| "other".to_owned(), u16::to_string)
}

const ROLE_CELLS: usize = Role::ALL.len() * ROLE_OUTCOMES.len();

/// How a request ended, as counted by role: answered (2xx), refused by
/// the roles (401 or 403), or any other error.
const ROLE_OUTCOMES: [&str; 3] = ["ok", "denied", "error"];

/// Requests by (route, outcome), (route, status) and (role, outcome),
/// counted per CPU and summed when scraped.
#[derive(Debug)]
pub struct RequestCounters {
    /// Per shard: `Route::ALL x OUTCOMES` cells, then `Route::ALL x
    /// STATUS_CELLS` cells.
    shards: Box<[CachePadded<Box<[AtomicU64]>>]>,
}

impl RequestCounters {
    pub fn new() -> RequestCounters {
        let shards = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 64);
        let cells = Route::ALL.len() * (OUTCOMES + STATUS_CELLS) + ROLE_CELLS;
        RequestCounters {
            shards: (0..shards)
                .map(|_| CachePadded::new((0..cells).map(|_| AtomicU64::new(0)).collect()))
                .collect(),
        }
    }

    /// Counts one answered request by route, outcome, status and the
    /// caller's role; `code` is `None` for a success. `hint` picks the
    /// shard (the request's `stripe_hint`: each read is a call into glibc).
    pub fn count(
        &self,
        hint: usize,
        route: Route,
        code: Option<Code>,
        status: StatusCode,
        role: Role,
    ) {
        let outcome = code.map_or(0, |code| 1 + code.index());
        let status = STATUSES
            .iter()
            .position(|s| *s == status.as_u16())
            .unwrap_or(STATUSES.len());
        let shard = &self.shards[hint % self.shards.len()];
        // Relaxed: statistics summed on read.
        shard[route.index() * OUTCOMES + outcome].fetch_add(1, Ordering::Relaxed);
        let by_status = Route::ALL.len() * OUTCOMES + route.index() * STATUS_CELLS + status;
        shard[by_status].fetch_add(1, Ordering::Relaxed);
        let by_role = match code {
            None => 0,
            Some(Code::Unauthorized | Code::Forbidden) => 1,
            Some(_) => 2,
        };
        shard[Self::role_cell(role, by_role)].fetch_add(1, Ordering::Relaxed);
    }

    fn role_cell(role: Role, outcome: usize) -> usize {
        Route::ALL.len() * (OUTCOMES + STATUS_CELLS) + role.index() * ROLE_OUTCOMES.len() + outcome
    }

    fn sum(&self, cell: usize) -> u64 {
        // Relaxed: statistics; each cell exact, the set not a snapshot.
        self.shards
            .iter()
            .map(|s| s[cell].load(Ordering::Relaxed))
            .sum()
    }

    fn by_outcome(&self, route: Route, outcome: usize) -> u64 {
        self.sum(route.index() * OUTCOMES + outcome)
    }

    fn by_status(&self, route: Route, status: usize) -> u64 {
        self.sum(Route::ALL.len() * OUTCOMES + route.index() * STATUS_CELLS + status)
    }
}

impl Default for RequestCounters {
    fn default() -> RequestCounters {
        RequestCounters::new()
    }
}

/// Admission's per-CPU in-flight counts, summed on a scrape.
#[derive(Debug)]
pub struct InFlightGauge(pub Arc<[CachePadded<AtomicUsize>]>);

impl InFlightGauge {
    fn current(&self) -> usize {
        // Relaxed: a gauge for monitoring.
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// What a scrape reads.
#[derive(Debug)]
struct Sources {
    requests: Arc<RequestCounters>,
    in_flight: InFlightGauge,
    journal: Arc<Journal>,
    feed: DurableSources,
}

/// The change feed and its publisher, and the checkpointer, where the
/// server has them.
#[derive(Clone, Debug, Default)]
pub struct DurableSources {
    pub feed: Option<Arc<Feed>>,
    pub publisher: Option<Arc<PublisherStats>>,
    pub checkpoints: Option<Arc<CheckpointStats>>,
}

/// The waiting rooms' counts, by SKU (`queue.rs`).
pub struct RoomSources {
    pub rooms: Arc<crate::core::waiting_room::WaitingRooms>,
    pub engine: Arc<crate::durable::JournaledEngine>,
}

impl std::fmt::Debug for RoomSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomSources { .. }")
    }
}

impl Collector for RoomSources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Encoded {
        let rooms = self.rooms.counts();
        if rooms.is_empty() {
            return Ok(());
        }
        type Read = fn(&crate::core::waiting_room::RoomCounts) -> u64;
        let families: [(&str, &str, MetricType, Read); 6] = [
            (
                "hotstock_queue_waiting",
                "Buyers waiting in a SKU's waiting room",
                MetricType::Gauge,
                |c| c.waiting,
            ),
            (
                "hotstock_queue_admitted",
                "Buyers admitted and not yet reserved",
                MetricType::Gauge,
                |c| c.outstanding,
            ),
            (
                "hotstock_queue_joined",
                "Buyers who joined the room since it opened",
                MetricType::Counter,
                |c| c.joined,
            ),
            (
                "hotstock_queue_admissions",
                "Admissions given since the room opened",
                MetricType::Counter,
                |c| c.admitted,
            ),
            (
                "hotstock_queue_used",
                "Admissions a reservation used",
                MetricType::Counter,
                |c| c.used,
            ),
            (
                "hotstock_queue_lapsed",
                "Admissions that expired unused",
                MetricType::Counter,
                |c| c.lapsed,
            ),
        ];
        for (name, help, kind, read) in families {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (sku, counts) in &rooms {
                let labels = [("sku", self.engine.sku_name(*sku).unwrap_or("?"))];
                let value = read(counts);
                match kind {
                    MetricType::Counter => {
                        ConstCounter::new(value).encode(family.encode_family(&labels)?)?
                    }
                    _ => ConstGauge::new(value as i64).encode(family.encode_family(&labels)?)?,
                }
            }
        }
        Ok(())
    }
}

/// Holds open and due within a minute, read from the engine at each
/// scrape (`HoldTable::held_figures`: the holds due soon are walked, not
/// the whole table). What the operator's page shows, for every hold and
/// not only those its feed saw.
pub struct HoldSources {
    pub engine: Arc<crate::durable::JournaledEngine>,
}

/// The window of `hotstock_holds_expiring`.
pub const HOLDS_EXPIRING_WITHIN_MS: u64 = 60_000;

impl std::fmt::Debug for HoldSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HoldSources { .. }")
    }
}

impl Collector for HoldSources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Encoded {
        let figures = self.engine.held_figures(HOLDS_EXPIRING_WITHIN_MS);
        let gauges = [
            ("hotstock_holds_open", "Reservations held now", figures.open),
            (
                "hotstock_holds_expiring",
                "Held reservations whose deadline is within the next 60 s (or passed, not yet expired)",
                figures.due,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as i64).encode(metric)?;
        }
        Ok(())
    }
}

/// The registry `/metrics` encodes.
pub fn registry(
    requests: Arc<RequestCounters>,
    in_flight: InFlightGauge,
    journal: Arc<Journal>,
    feed: DurableSources,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Sources {
        requests,
        in_flight,
        journal,
        feed,
    }));
    registry
}

/// The Prometheus text (version 0.0.4) of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// The `Content-Type` of `render`'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Encoded = Result<(), std::fmt::Error>;

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Encoded {
        self.encode_requests(&mut encoder)?;
        let gauge = ConstGauge::new(self.in_flight.current() as i64);
        let help = "Requests being handled now (this one included)";
        let metric = encoder.encode_descriptor(
            "hotstock_http_requests_in_flight",
            help,
            None,
            MetricType::Gauge,
        )?;
        gauge.encode(metric)?;
        self.encode_journal(&mut encoder)?;
        self.encode_checkpoints(&mut encoder)?;
        self.encode_feed(&mut encoder)
    }
}

impl Sources {
    fn encode_requests(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        let requests = &*self.requests;
        let help = "HTTP requests by route and outcome (ok or the error code)";
        let mut family =
            encoder.encode_descriptor("hotstock_http_requests", help, None, MetricType::Counter)?;
        let mut sold_out = 0;
        for route in Route::ALL {
            for outcome in 0..OUTCOMES {
                let n = requests.by_outcome(route, outcome);
                if outcome == 1 + Code::SoldOut.index() {
                    sold_out += n;
                }
                if n > 0 {
                    let labels = [("route", route.label()), ("code", outcome_label(outcome))];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let help = "HTTP requests by the caller's role (none, buyer, service, operator, or rejected: a token that failed its check) and outcome (ok, denied: 401/403, error)";
        let mut family = encoder.encode_descriptor(
            "hotstock_http_requests_by_role",
            help,
            None,
            MetricType::Counter,
        )?;
        for role in Role::ALL {
            for (outcome, label) in ROLE_OUTCOMES.iter().enumerate() {
                let n = requests.sum(RequestCounters::role_cell(role, outcome));
                if n > 0 {
                    let labels = [("role", role.as_str()), ("outcome", *label)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let help = "HTTP responses by route and status";
        let mut family = encoder.encode_descriptor(
            "hotstock_http_responses",
            help,
            None,
            MetricType::Counter,
        )?;
        for route in Route::ALL {
            for status in 0..STATUS_CELLS {
                let n = requests.by_status(route, status);
                if n > 0 {
                    let status = status_label(status);
                    let labels = [("route", route.label()), ("status", status.as_str())];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let help = "Reservation requests by outcome";
        let mut family =
            encoder.encode_descriptor("hotstock_reservations", help, None, MetricType::Counter)?;
        for outcome in 0..OUTCOMES {
            let n = requests.by_outcome(Route::ReservationCreate, outcome);
            if n > 0 || outcome <= 1 + Code::SoldOut.index() {
                let label = match outcome {
                    0 => "created",
                    _ => outcome_label(outcome),
                };
                ConstCounter::new(n).encode(family.encode_family(&[("outcome", label)])?)?;
            }
        }
        let help = "Requests refused because stock ran out";
        let metric =
            encoder.encode_descriptor("hotstock_sold_out", help, None, MetricType::Counter)?;
        ConstCounter::new(sold_out).encode(metric)
    }

    /// A store that keeps refusing checkpoints loses nothing (the journal
    /// keeps every segment) but holds what is not yet checkpointed in
    /// memory: alert on the age and the failures in a row.
    fn encode_checkpoints(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        let Some(stats) = &self.feed.checkpoints else {
            return Ok(());
        };
        let reading = stats.read();
        let counters = [
            (
                "hotstock_checkpoints",
                "Checkpoints written to the store",
                reading.succeeded,
            ),
            (
                "hotstock_checkpoint_failures",
                "Checkpoints the store refused (each retried next interval)",
                reading.failed,
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let age = now_ms.saturating_sub(reading.last_success_ms) as f64 / 1000.0;
        let help = "Seconds since the last checkpoint the store took (or since start)";
        let metric = encoder.encode_descriptor(
            "hotstock_checkpoint_age_seconds",
            help,
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(age).encode(metric)?;
        let help = "Checkpoints refused in a row (0 once one succeeds)";
        let metric = encoder.encode_descriptor(
            "hotstock_checkpoint_failures_in_a_row",
            help,
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(reading.failing as i64).encode(metric)
    }

    fn encode_feed(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        let Some(feed) = &self.feed.feed else {
            return Ok(());
        };
        let last = feed.last_position();
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64| {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)
        };
        let help = "Position of the newest durable change-feed event";
        gauge(encoder, "hotstock_feed_last_position", help, last as i64)?;
        let negative = feed.negative_counts() as i64;
        let help = "Feed events whose counts came out negative (a broken invariant: must be 0)";
        gauge(encoder, "hotstock_feed_negative_counts", help, negative)?;
        let Some(publisher) = &self.feed.publisher else {
            return Ok(());
        };
        // Relaxed: gauges written by the publisher thread.
        let acked = publisher.acked.load(Ordering::Relaxed);
        let oldest = publisher.oldest_unpublished_ms.load(Ordering::Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let lag_ms = if acked >= last || oldest == 0 {
            0
        } else {
            now_ms.saturating_sub(oldest)
        };
        let help = "Feed position JetStream has acknowledged";
        gauge(encoder, "hotstock_nats_acked_position", help, acked as i64)?;
        let help = "Durable feed events not yet acknowledged by JetStream";
        gauge(
            encoder,
            "hotstock_nats_lag_events",
            help,
            last.saturating_sub(acked) as i64,
        )?;
        let metric = encoder.encode_descriptor(
            "hotstock_nats_lag_seconds",
            "Age of the oldest feed event not yet acknowledged by JetStream",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(lag_ms as f64 / 1000.0).encode(metric)?;
        let connected = i64::from(publisher.connected.load(Ordering::Relaxed));
        gauge(
            encoder,
            "hotstock_nats_connected",
            "1 while connected to NATS",
            connected,
        )?;
        // Relaxed: counters written by the publisher thread.
        let counters = [
            (
                "hotstock_nats_connection_failures",
                "NATS connections that failed or broke",
                &publisher.failures,
            ),
            (
                "hotstock_nats_batches_republished",
                "Batches JetStream did not prove stored in one acknowledgement, published again event by event",
                &publisher.republished,
            ),
            (
                "hotstock_nats_lost_to_retention",
                "Feed events the outbox pruned before they were published",
                &publisher.lost_to_retention,
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value.load(Ordering::Relaxed)).encode(metric)?;
        }
        Ok(())
    }

    fn encode_journal(&self, encoder: &mut DescriptorEncoder<'_>) -> Encoded {
        let stats = self.journal.stats();
        // `counts` has one more entry than `bounds` (the +Inf bucket), and
        // like the encoder's input is not cumulative.
        let histogram = |encoder: &mut DescriptorEncoder<'_>,
                         name: &str,
                         help: &str,
                         bounds: &[f64],
                         counts: &[u64],
                         sum: f64|
         -> Encoded {
            let upper = bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
            let buckets: Vec<(f64, u64)> = upper.zip(counts.iter().copied()).collect();
            let count = counts.iter().sum();
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
        };
        let bounds: Vec<f64> = BATCH_BUCKETS.iter().map(|&b| b as f64).collect();
        histogram(
            encoder,
            "hotstock_journal_batch_events",
            "Events per group-committed journal batch",
            &bounds,
            &stats.batch_buckets,
            stats.frames as f64,
        )?;
        let bounds: Vec<f64> = FSYNC_BUCKETS_US.iter().map(|&us| us as f64 / 1e6).collect();
        histogram(
            encoder,
            "hotstock_journal_fsync_seconds",
            "fdatasync latency per journal batch",
            &bounds,
            &stats.fsync_buckets,
            stats.fsync_us_total as f64 / 1e6,
        )?;
        let metric = encoder.encode_descriptor(
            "hotstock_journal_bytes",
            "Bytes written to the journal",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(stats.bytes).encode(metric)?;
        let lag = stats.open_epoch.saturating_sub(stats.durable_epoch + 1);
        let gauges = [
            (
                "hotstock_journal_durable_lag_epochs",
                "Batches appended but not yet on disk",
                lag as i64,
            ),
            (
                "hotstock_journal_failed",
                "1 once the journal failed (restart to recover)",
                i64::from(stats.failed),
            ),
            (
                "hotstock_journal_waiting_for_room",
                "Threads waiting for journal lane room (the writer is behind)",
                stats.waiting_for_room as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
