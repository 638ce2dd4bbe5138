//! The change feed over HTTP: `GET /v1/events` (a page, long-polled with
//! `wait_ms`) and `GET /v1/events/stream` (Server-Sent Events, resumable
//! with `Last-Event-ID`).
//!
//! Both read the durable layer's `FeedReader`: only durable events, in
//! position order, from memory near the head and from the store's outbox
//! further back. Reading the outbox may wait for a checkpoint's
//! transaction, so those reads run on tokio's blocking pool, never on a
//! worker that serves purchases; reads from memory run in place.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::json;

use super::api::Api;
use super::error::{bytes_response, ApiBody, ApiError, Code, HttpResponse};
use crate::core::catalogue::LOCATION_SEPARATOR;
use crate::core::limits::{FEED_STREAM_BUFFER, MAX_FEED_PAGE, MAX_FEED_STREAMS, MAX_FEED_WAIT_MS};
use crate::durable::feed::{Feed, FeedEvent, FeedFilter, FeedKind, FeedPage, FeedRead};
use crate::durable::{FeedError, FeedReader};

/// Events per page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// A comment line this often keeps proxies from closing a quiet stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// A feed request's query: where to start, how much, what to keep.
#[derive(Debug, Default)]
struct FeedQuery {
    after: u64,
    limit: usize,
    wait_ms: u64,
    /// A stream's pace: at most one write per this many ms, every event
    /// still sent (0: each as it becomes durable).
    every_ms: u64,
    /// `purchases=latest`: of each page's purchases, only the last per SKU.
    latest_purchases: bool,
    filter: FeedFilter,
}

/// Slowest pace a stream may ask for (`every_ms`).
const MAX_STREAM_EVERY_MS: u64 = 10_000;

impl Api {
    fn feed_reader(&self) -> Result<&FeedReader, ApiError> {
        self.feed.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                "this server has no change feed (it runs without a data directory)",
            )
        })
    }

    /// `GET /v1/events?after=POS&limit=N&wait_ms=MS&sku=NAME&type=T1,T2`
    pub(super) async fn list_events(&self, query: Option<&str>) -> Result<HttpResponse, ApiError> {
        let reader = self.feed_reader()?;
        let query = parse_query(query, false)?;
        let page = read_waiting(reader, &query).await?;
        let feed_id = reader.feed_id();
        let mut body = Vec::with_capacity(64 + 400 * page.events.len());
        body.extend_from_slice(b"{\"events\":[");
        let sent = sent_events(&page.events, query.latest_purchases);
        for (i, event) in sent.enumerate() {
            if i > 0 {
                body.push(b',');
            }
            write_event_json(&mut body, event, feed_id, self.node.as_deref());
        }
        body.extend_from_slice(b"],\"next_after\":");
        body.extend_from_slice(itoa::Buffer::new().format(page.next_after).as_bytes());
        body.push(b'}');
        Ok(bytes_response(StatusCode::OK, body))
    }

    /// `GET /v1/events/stream?after=POS&sku=NAME&type=T1,T2`, or resumed
    /// with `Last-Event-ID: POS` (each event's SSE id is its position).
    pub(super) async fn stream_events(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<HttpResponse, ApiError> {
        let reader = self.feed_reader()?.clone();
        let mut query = parse_query(query, true)?;
        let slot = StreamSlot::take(&self.feed_streams).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Overloaded,
                format!(
                    "{MAX_FEED_STREAMS} event streams are open, the most this server keeps; \
                     retry later, or read GET /v1/events with wait_ms"
                ),
            )
        })?;
        if let Some(last) = headers.get("last-event-id") {
            query.after = last
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::invalid("Last-Event-ID must be a feed position (a whole number)")
                })?;
        }
        // The first page is read before answering, so a position past
        // retention is a 410 with the oldest position, not a broken stream.
        query.limit = MAX_FEED_PAGE;
        let first = read(&reader, query.after, query.limit, &query.filter).await?;
        let (frames, receiver) = tokio::sync::mpsc::channel(FEED_STREAM_BUFFER);
        let node = self.node.clone();
        tokio::spawn(async move {
            stream(reader, node, query, first, frames).await;
            drop(slot);
        });
        let mut response = Response::new(ApiBody::Stream(receiver));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
}

/// Parses the feed's query parameters; `wait_ms` and `limit` belong to
/// the page route only.
fn parse_query(query: Option<&str>, stream: bool) -> Result<FeedQuery, ApiError> {
    let mut parsed = FeedQuery {
        limit: DEFAULT_PAGE,
        ..FeedQuery::default()
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = super::route::decode_segment(value)
            .ok_or_else(|| ApiError::invalid(format!("query parameter {key} is not UTF-8")))?;
        match key {
            "after" => parsed.after = number(key, &value, u64::MAX)?,
            "limit" if !stream => {
                parsed.limit = number(key, &value, MAX_FEED_PAGE as u64)? as usize;
                if parsed.limit == 0 {
                    return Err(ApiError::invalid(format!(
                        "limit must be a whole number from 1 to {MAX_FEED_PAGE}"
                    )));
                }
            }
            "wait_ms" if !stream => parsed.wait_ms = number(key, &value, MAX_FEED_WAIT_MS)?,
            "every_ms" if stream => parsed.every_ms = number(key, &value, MAX_STREAM_EVERY_MS)?,
            "purchases" => {
                parsed.latest_purchases = match &*value {
                    "all" => false,
                    "latest" => true,
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "purchases must be all or latest, not {value:?}"
                        )))
                    }
                }
            }
            // Empty: no filter (what a form with the field left blank sends).
            "sku" if value.is_empty() => {}
            "sku" => parsed.filter.sku = Some(value.into()),
            "type" => {
                for name in value.split(',').filter(|name| !name.is_empty()) {
                    let kind = FeedKind::from_name(name).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "type {name:?} is not an event type (one of: {})",
                            FeedKind::ALL.map(FeedKind::as_str).join(", ")
                        ))
                    })?;
                    parsed.filter.kinds.push(kind);
                }
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {other:?}"
                )))
            }
        }
    }
    Ok(parsed)
}

fn number(key: &str, value: &str, max: u64) -> Result<u64, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| ApiError::invalid(format!("{key} must be a whole number from 0 to {max}")))
}

/// One read: from memory on this worker (a reader near the head, the
/// common case, takes no thread hop), from the outbox on the blocking pool
/// (it may wait for a checkpoint's transaction).
async fn read(
    reader: &FeedReader,
    after: u64,
    limit: usize,
    filter: &FeedFilter,
) -> Result<FeedPage, ApiError> {
    match reader.feed().read(after, limit, filter) {
        FeedRead::Page(page) => return Ok(page),
        FeedRead::Ahead { last } => return Err(feed_error(FeedError::Ahead { after, last })),
        FeedRead::FromStore => {}
    }
    let (reader, filter) = (reader.clone(), filter.clone());
    tokio::task::spawn_blocking(move || reader.read(after, limit, &filter))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::StorageFailed,
                format!("reading the feed failed: {e}"),
            )
        })?
        .map_err(feed_error)
}

/// Reads a page; with `wait_ms`, waits for a matching event until then
/// (a filter that matches nothing yet moves `next_after` on as it goes).
async fn read_waiting(reader: &FeedReader, query: &FeedQuery) -> Result<FeedPage, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(query.wait_ms);
    let mut after = query.after;
    loop {
        let page = read(reader, after, query.limit, &query.filter).await?;
        if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(page);
        }
        if page.next_after > after {
            after = page.next_after;
            continue;
        }
        let arrived = FeedPast::new(reader.feed(), after);
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return Ok(page);
        }
    }
}

/// Writes the stream: the first page, then every later event as it
/// becomes durable, with a heartbeat when quiet. Ends when the client goes.
async fn stream(
    reader: FeedReader,
    node: Option<std::sync::Arc<str>>,
    query: FeedQuery,
    first: FeedPage,
    frames: tokio::sync::mpsc::Sender<Bytes>,
) {
    let feed_id = reader.feed_id();
    let mut after = query.after;
    let mut page = first;
    loop {
        // One chunk per page, not per event: a sale makes thousands of
        // events a second, and each chunk is a channel send and a write.
        if !page.events.is_empty() {
            let mut chunk = Vec::with_capacity(450 * page.events.len());
            for event in sent_events(&page.events, query.latest_purchases) {
                sse_frame(&mut chunk, event, feed_id, node.as_deref());
            }
            if frames.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        let moved = page.next_after > after;
        let caught_up = page.events.len() < query.limit;
        after = page.next_after;
        if query.every_ms > 0 && caught_up && !page.events.is_empty() {
            // A dashboard's pace: the events of the next interval go in
            // one read and one write, not one per journal batch (a sale
            // makes a thousand batches a second). A quiet stream still
            // waits for its next event below, with heartbeats.
            tokio::time::sleep(Duration::from_millis(query.every_ms)).await;
        } else if !moved {
            let arrived = FeedPast::new(reader.feed(), after);
            if tokio::time::timeout(HEARTBEAT, arrived).await.is_err()
                && frames
                    .send(Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
            {
                return;
            }
        }
        page = match read(&reader, after, query.limit, &query.filter).await {
            Ok(page) => page,
            Err(error) => {
                let body = json!({"error": error.code.as_str(), "message": error.message});
                let _ = frames
                    .send(Bytes::from(format!("event: error\ndata: {body}\n\n")))
                    .await;
                return;
            }
        };
    }
}

/// A page's events as sent: all of them, or with `latest_purchases` each
/// purchase (`reservation.created` already confirmed, or `sku.sold`) only
/// when no later purchase of its SKU is in the page.
///
/// Why: a live view during a sale keeps counts, rates and holds, not
/// orders. A purchase starts and ends no hold, and the last one of a SKU
/// carries that SKU's counts after every earlier one, so the view misses
/// nothing. It reads one purchase per hot SKU per page of up to 1,000
/// events instead of every one (at 57,000 purchases a second, receiving
/// and parsing every one took the live page's renderer about 0.3 of a
/// core on the server's machine).
/// Every other event is sent; positions still only grow, so a reader
/// resumes after the last one it saw exactly as before.
fn sent_events(events: &[FeedEvent], latest_purchases: bool) -> impl Iterator<Item = &FeedEvent> {
    let mut superseded = vec![false; if latest_purchases { events.len() } else { 0 }];
    if latest_purchases {
        let mut later: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (i, event) in events.iter().enumerate().rev() {
            if is_purchase(event) {
                superseded[i] = !later.insert(&event.sku);
            }
        }
    }
    events
        .iter()
        .enumerate()
        .filter(move |(i, _)| !superseded.get(*i).copied().unwrap_or(false))
        .map(|(_, event)| event)
}

/// A sale that starts and ends nothing else: bought at once, or sold
/// without a record.
fn is_purchase(event: &FeedEvent) -> bool {
    match event.kind {
        FeedKind::SkuSold => true,
        FeedKind::ReservationCreated => event
            .reservation
            .as_ref()
            .is_some_and(|r| r.status == crate::core::types::HoldStatus::Confirmed),
        _ => false,
    }
}

/// One SSE frame: the position as its id (what `Last-Event-ID` resumes
/// from), the type as its event name, the JSON as its data (one line).
fn sse_frame(out: &mut Vec<u8>, event: &FeedEvent, feed_id: u64, node: Option<&str>) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(itoa::Buffer::new().format(event.position).as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(event.kind.as_str().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_event_json(out, event, feed_id, node);
    out.extend_from_slice(b"\n\n");
}

/// `,"sku":name`, or for a location's own cell (`sku/location`)
/// `,"sku":sku,"location":location`: the API names the two apart.
/// `key` is `"sku":` with what goes before it.
fn write_sku(out: &mut Vec<u8>, key: &[u8], name: &str) {
    out.extend_from_slice(key);
    match name.split_once(LOCATION_SEPARATOR) {
        Some((sku, location)) => {
            string(out, sku);
            out.extend_from_slice(b",\"location\":");
            string(out, location);
        }
        None => string(out, name),
    }
}

fn feed_error(error: FeedError) -> ApiError {
    match error {
        FeedError::Gone { oldest, .. } => {
            ApiError::new(StatusCode::GONE, Code::Gone, format!("{error}"))
                .with("oldest_position", oldest)
        }
        FeedError::Ahead { last, .. } => {
            ApiError::new(StatusCode::CONFLICT, Code::PositionAhead, error.to_string())
                .with("last_position", last)
        }
        FeedError::Store(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::StorageFailed,
            error.to_string(),
        ),
    }
}

/// A reservation id as the API answers it: in a cluster `{node}~{hex}`.
fn reservation_id(out: &mut Vec<u8>, node: Option<&str>, hex: &str) {
    match node {
        Some(node) => string(out, &format!("{node}~{hex}")),
        None => string(out, hex),
    }
}

/// Appends an event's JSON as the contract shows it (`docs/api.md`,
/// "Change feed"). Written by hand rather than through a `serde_json`
/// value: the feed writes one per sale for every reader, and a map of
/// owned values per event was most of the stream's cost.
/// `node`: the cluster node whose feed this is (`None` for a node that
/// runs alone); each node's feed holds its own changes only.
// Long by design: one write per key of the event's JSON, in the order
// serde's map wrote them.
pub fn write_event_json(out: &mut Vec<u8>, event: &FeedEvent, feed_id: u64, node: Option<&str>) {
    let mut numbers = itoa::Buffer::new();
    let mut number = |out: &mut Vec<u8>, key: &str, value: i64| {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(numbers.format(value).as_bytes());
    };
    out.extend_from_slice(b"{\"position\":");
    out.extend_from_slice(itoa::Buffer::new().format(event.position).as_bytes());
    out.extend_from_slice(b",\"id\":");
    string(out, &event.id(feed_id));
    out.extend_from_slice(b",\"type\":");
    string(out, event.kind.as_str());
    if let Some(node) = node {
        out.extend_from_slice(b",\"node\":");
        string(out, node);
    }
    number(out, "at_ms", event.at_ms as i64);
    write_sku(out, b",\"sku\":", &event.sku);
    number(out, "available", event.counts.available);
    number(out, "held", event.counts.held);
    number(out, "sold", event.counts.sold);
    number(out, "received", event.counts.received);
    number(out, "on_hand", event.counts.on_hand());
    number(out, "safety_stock", event.counts.safety_stock);
    number(out, "backordered", event.counts.backordered);
    if let Some(fill) = &event.fill {
        out.extend_from_slice(b",\"reservation\":");
        reservation_id(out, node, &fill.public_id);
        number(out, "units", i64::from(fill.units));
        number(out, "owed", i64::from(fill.owed_after));
    }
    if let Some(r) = &event.reservation {
        out.extend_from_slice(b",\"reservation\":");
        reservation_id(out, node, &r.public_id);
        out.extend_from_slice(b",\"status\":");
        string(out, r.status.as_str());
        out.extend_from_slice(b",\"from\":");
        match r.from {
            Some(from) => string(out, from.as_str()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"customer\":");
        match &r.customer {
            Some(customer) => string(out, customer),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"lines\":[");
        for (i, (sku, quantity)) in r.lines.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            write_sku(out, b"\"sku\":", sku);
            number(out, "quantity", i64::from(*quantity));
            // A record confirmed or refunded in part says how much.
            if let Some(amounts) = r.amounts.as_ref().and_then(|a| a.get(i)) {
                number(out, "confirmed", i64::from(amounts.confirmed));
                number(out, "refunded", i64::from(amounts.refunded));
            }
            out.push(b'}');
        }
        out.push(b']');
        number(out, "expires_at_ms", r.deadline_ms as i64);
    }
    if let Some(o) = &event.operator {
        number(out, "delta", o.delta);
        number(out, "version", o.version as i64);
        match o.limit {
            Some(Some(limit)) => number(out, "per_customer_limit", i64::from(limit)),
            Some(None) => out.extend_from_slice(b",\"per_customer_limit\":null"),
            None => {}
        }
        match o.low_stock {
            Some(Some(threshold)) => number(out, "low_stock_threshold", i64::from(threshold)),
            Some(None) => out.extend_from_slice(b",\"low_stock_threshold\":null"),
            None => {}
        }
        if let Some(window) = o.window {
            for (key, bound) in [
                ("sale_starts_at_ms", window.starts_at_ms),
                ("sale_ends_at_ms", window.ends_at_ms),
            ] {
                match bound {
                    // Times are at most `MAX_TIME_MS` (`i64::MAX`).
                    Some(ms) => number(out, key, ms as i64),
                    None => {
                        out.extend_from_slice(b",\"");
                        out.extend_from_slice(key.as_bytes());
                        out.extend_from_slice(b"\":null");
                    }
                }
            }
        }
    }
    if let Some(units) = event.units {
        number(out, "units", i64::from(units));
    }
    out.push(b'}');
}

/// A JSON string, escaped by serde_json (which cannot fail on a `str`).
fn string(out: &mut Vec<u8>, text: &str) {
    let _ = serde_json::to_writer(&mut *out, text);
}

/// An event's JSON as a value, for the tests.
#[cfg(test)]
fn event_json(event: &FeedEvent, feed_id: u64) -> serde_json::Value {
    let mut out = Vec::new();
    write_event_json(&mut out, event, feed_id, None);
    serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
}

/// One of the `MAX_FEED_STREAMS` open streams; given back on drop.
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(open: &Arc<AtomicUsize>) -> Option<StreamSlot> {
        // Relaxed: a count with no data behind it; fetch_update makes the
        // check and the increment one step.
        open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < MAX_FEED_STREAMS).then_some(n + 1)
        })
        .ok()
        .map(|_| StreamSlot(Arc::clone(open)))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        // Relaxed: see `take`.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once an event past `after` is durable.
struct FeedPast {
    feed: Arc<Feed>,
    after: u64,
}

impl FeedPast {
    fn new(feed: &Arc<Feed>, after: u64) -> FeedPast {
        FeedPast {
            feed: Arc::clone(feed),
            after,
        }
    }
}

impl Future for FeedPast {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.feed.poll_past(self.after, cx.waker()) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests;
