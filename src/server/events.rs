//! The change feed over HTTP: `GET /v1/events` (a page, long-polled with
//! `wait_ms`) and `GET /v1/events/stream` (Server-Sent Events, resumable
//! with `Last-Event-ID`).
//!
//! Both read the durable layer's `FeedReader`: only durable events, in
//! position order, from memory near the head and from the store's outbox
//! further back. Reading the outbox may wait for a checkpoint's
//! transaction, so every read runs on tokio's blocking pool, never on a
//! worker that serves purchases.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::api::Api;
use super::error::{json_response, ApiBody, ApiError, Code, HttpResponse};
use crate::core::limits::{MAX_FEED_PAGE, MAX_FEED_WAIT_MS};
use crate::durable::feed::{Feed, FeedEvent, FeedFilter, FeedKind, FeedPage};
use crate::durable::{FeedError, FeedReader};

/// Events per page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// A comment line this often keeps proxies from closing a quiet stream.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Frames a stream may have written and the client not yet read.
const STREAM_BUFFER: usize = 64;

/// A feed request's query: where to start, how much, what to keep.
#[derive(Debug, Default)]
struct FeedQuery {
    after: u64,
    limit: usize,
    wait_ms: u64,
    filter: FeedFilter,
}

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
        let events: Vec<Value> = page.events.iter().map(|e| event_json(e, feed_id)).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({"events": events, "next_after": page.next_after}),
        ))
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
        let (frames, receiver) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        tokio::spawn(stream(reader, query, first, frames));
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

/// One read on the blocking pool (it may wait on the store).
async fn read(
    reader: &FeedReader,
    after: u64,
    limit: usize,
    filter: &FeedFilter,
) -> Result<FeedPage, ApiError> {
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
    query: FeedQuery,
    first: FeedPage,
    frames: tokio::sync::mpsc::Sender<Bytes>,
) {
    let feed_id = reader.feed_id();
    let mut after = query.after;
    let mut page = first;
    loop {
        for event in &page.events {
            if frames.send(sse_frame(event, feed_id)).await.is_err() {
                return;
            }
        }
        let moved = page.next_after > after;
        after = page.next_after;
        if !moved {
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

/// One SSE frame: the position as its id (what `Last-Event-ID` resumes
/// from), the type as its event name, the JSON as its data (one line).
fn sse_frame(event: &FeedEvent, feed_id: u64) -> Bytes {
    let data = event_json(event, feed_id);
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.position,
        event.kind.as_str()
    ))
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

/// An event as the contract shows it (`docs/api.md`, "Change feed").
pub fn event_json(event: &FeedEvent, feed_id: u64) -> Value {
    let mut object = Map::new();
    object.insert("position".into(), event.position.into());
    object.insert("id".into(), event.id(feed_id).into());
    object.insert("type".into(), event.kind.as_str().into());
    object.insert("at_ms".into(), event.at_ms.into());
    object.insert("sku".into(), (*event.sku).into());
    object.insert("available".into(), event.counts.available.into());
    object.insert("held".into(), event.counts.held.into());
    object.insert("sold".into(), event.counts.sold.into());
    object.insert("received".into(), event.counts.received.into());
    if let Some(r) = &event.reservation {
        let lines: Vec<Value> = r
            .lines
            .iter()
            .map(|(sku, quantity)| json!({"sku": &**sku, "quantity": quantity}))
            .collect();
        object.insert("reservation".into(), (*r.public_id).into());
        object.insert("status".into(), r.status.as_str().into());
        object.insert("from".into(), r.from.map(|s| s.as_str()).into());
        object.insert("customer".into(), r.customer.as_deref().into());
        object.insert("lines".into(), lines.into());
        object.insert("expires_at_ms".into(), r.deadline_ms.into());
    }
    if let Some(o) = &event.operator {
        object.insert("delta".into(), o.delta.into());
        object.insert("version".into(), o.version.into());
        if let Some(limit) = o.limit {
            object.insert("per_customer_limit".into(), limit.into());
        }
    }
    if let Some(units) = event.units {
        object.insert("units".into(), units.into());
    }
    Value::Object(object)
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
