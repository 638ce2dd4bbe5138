//! The two HTTP servers the showdown builds itself, each run as its own
//! process (`hotstock-bench serve-bare`, `serve-article`) so that its CPU
//! and its sockets are its own, like `hotstock serve`'s:
//!
//! - **bare**: reads the body, decrements one atomic, answers a small JSON.
//!   Nothing real can be faster over HTTP with hyper on this machine; it is
//!   the ceiling the other endpoints are held against.
//! - **article**: what a shop builds when it follows the article: parse the
//!   JSON body, run the check-and-decrement Lua script on Redis once per
//!   request over one multiplexed connection, answer.
//!
//! Both speak the same routes: `POST /buy`, `POST /hold` (answers an id),
//! `POST /confirm/{id}`; 200 when sold or held, 409 when sold out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::sale::{Mode, Stock};

type HttpResponse = Response<Full<Bytes>>;

/// The article's check-and-decrement, with `tonumber` on both sides (the
/// article compares strings, which calls "10" less than "9").
pub const BUY_SCRIPT: &str = r"
local stock = tonumber(redis.call('GET', KEYS[1]))
if stock == nil then return -1 end
local want = tonumber(ARGV[1])
if stock >= want then
  redis.call('DECRBY', KEYS[1], want)
  return 1
end
return 0
";

/// A hold: check-and-decrement, then a hold key with a TTL. Redis cannot
/// put the units back when that key expires without keyspace
/// notifications and a listener, which is one of the things hotstock's
/// holds do and this does not.
pub const HOLD_SCRIPT: &str = r"
local stock = tonumber(redis.call('GET', KEYS[1]))
local want = tonumber(ARGV[1])
if stock == nil or stock < want then return 0 end
redis.call('DECRBY', KEYS[1], want)
local id = redis.call('INCR', KEYS[2])
redis.call('SET', ARGV[3] .. id, want, 'PX', ARGV[2])
return id
";

/// Confirms a hold exactly once.
pub const CONFIRM_SCRIPT: &str = r"
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('INCR', KEYS[2])
  return 1
end
return 0
";

/// Runs `service` on every connection to `listen` until the process is
/// killed; prints `listening on ADDR` first.
fn serve<S, F>(
    runtime: tokio::runtime::Runtime,
    listen: SocketAddr,
    service: S,
) -> Result<(), String>
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = HttpResponse> + Send + 'static,
{
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {addr}");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("accept failed: {error}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let answer = service(request);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The same runtime `hotstock serve` uses: one worker per CPU.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn answer(status: StatusCode, body: &'static [u8]) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The index in `"sku":"s<index>"`, without a JSON parser (the bare
/// endpoint is the ceiling, so it does the least it can).
pub fn sku_index(body: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"sku\":\"s";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut index: usize = 0;
    let mut any = false;
    for &d in digits {
        index = index.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
        any = true;
    }
    any.then_some(index)
}

struct Bare {
    stock: Box<[AtomicI64]>,
    next_hold: AtomicU64,
}

/// `hotstock-bench serve-bare`.
pub fn serve_bare(listen: SocketAddr, mode: Mode, units: u64) -> Result<(), String> {
    let stock = Stock::new(mode, units);
    let state = Arc::new(Bare {
        stock: (0..stock.skus)
            .map(|s| AtomicI64::new(stock.units_of(s) as i64))
            .collect(),
        next_hold: AtomicU64::new(1),
    });
    serve(runtime()?, listen, move |request: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move {
            let path = request.uri().path();
            let hold = match path {
                "/buy" => false,
                "/hold" => true,
                _ if path.starts_with("/confirm/") => {
                    return answer(StatusCode::OK, b"{\"status\":\"confirmed\"}")
                }
                _ => return answer(StatusCode::NOT_FOUND, b"{\"error\":\"not_found\"}"),
            };
            let Ok(body) = request.into_body().collect().await else {
                return answer(StatusCode::BAD_REQUEST, b"{\"error\":\"bad_body\"}");
            };
            let body = body.to_bytes();
            let Some(cell) = sku_index(&body).and_then(|i| state.stock.get(i)) else {
                return answer(StatusCode::NOT_FOUND, b"{\"error\":\"unknown_sku\"}");
            };
            // AcqRel on the one counter: a plain check-and-decrement.
            let taken = cell
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    (v >= 1).then_some(v - 1)
                })
                .is_ok();
            match (taken, hold) {
                (false, _) => answer(StatusCode::CONFLICT, b"{\"error\":\"sold_out\"}"),
                (true, false) => answer(StatusCode::OK, b"{\"status\":\"confirmed\"}"),
                (true, true) => {
                    let id = state.next_hold.fetch_add(1, Ordering::Relaxed);
                    let body = format!("{{\"id\":\"{id}\",\"status\":\"held\"}}");
                    let mut response = answer(StatusCode::OK, b"");
                    *response.body_mut() = Full::new(Bytes::from(body));
                    response
                }
            }
        }
    })
}

/// The Redis key names one run of the article's endpoint uses.
#[derive(Clone)]
pub struct ArticleKeys {
    pub prefix: String,
}

impl ArticleKeys {
    pub fn stock(&self, sku: &str) -> String {
        format!("{}stock:{sku}", self.prefix)
    }
    pub fn hold_sequence(&self) -> String {
        format!("{}hold-seq", self.prefix)
    }
    pub fn hold_prefix(&self) -> String {
        format!("{}hold:", self.prefix)
    }
    pub fn sold(&self) -> String {
        format!("{}sold", self.prefix)
    }
}

struct Article {
    redis: redis::aio::MultiplexedConnection,
    keys: ArticleKeys,
    buy: redis::Script,
    hold: redis::Script,
    confirm: redis::Script,
}

/// `hotstock-bench serve-article`: the stock keys must already be set.
pub fn serve_article(listen: SocketAddr, redis_url: &str, prefix: String) -> Result<(), String> {
    let client = redis::Client::open(redis_url).map_err(|e| format!("{redis_url}: {e}"))?;
    // The multiplexed connection's driver task lives on the server's
    // runtime, so it connects there.
    let runtime = runtime()?;
    let redis = runtime
        .block_on(client.get_multiplexed_async_connection())
        .map_err(|e| format!("cannot connect to Redis at {redis_url}: {e}"))?;
    let state = Arc::new(Article {
        redis,
        keys: ArticleKeys { prefix },
        buy: redis::Script::new(BUY_SCRIPT),
        hold: redis::Script::new(HOLD_SCRIPT),
        confirm: redis::Script::new(CONFIRM_SCRIPT),
    });
    serve(runtime, listen, move |request: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move {
            match article_request(&state, request).await {
                Ok(response) => response,
                Err(message) => {
                    let body = serde_json::json!({"error": "internal", "message": message});
                    let mut response = answer(StatusCode::INTERNAL_SERVER_ERROR, b"");
                    *response.body_mut() = Full::new(Bytes::from(body.to_string()));
                    response
                }
            }
        }
    })
}

async fn article_request(
    state: &Article,
    request: Request<Incoming>,
) -> Result<HttpResponse, String> {
    let path = request.uri().path().to_owned();
    let mut redis = state.redis.clone();
    if let Some(id) = path.strip_prefix("/confirm/") {
        let confirmed: i64 = state
            .confirm
            .key(format!("{}{id}", state.keys.hold_prefix()))
            .key(state.keys.sold())
            .invoke_async(&mut redis)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(if confirmed == 1 {
            answer(StatusCode::OK, b"{\"status\":\"confirmed\"}")
        } else {
            answer(StatusCode::NOT_FOUND, b"{\"error\":\"no_such_hold\"}")
        });
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    // A shop's endpoint parses its JSON properly; so does this one.
    let Ok(serde_json::Value::Object(order)) = serde_json::from_slice(&body) else {
        return Ok(answer(
            StatusCode::BAD_REQUEST,
            b"{\"error\":\"invalid_json\"}",
        ));
    };
    let (Some(sku), Some(quantity)) = (
        order.get("sku").and_then(|v| v.as_str()),
        order.get("quantity").and_then(|v| v.as_u64()),
    ) else {
        return Ok(answer(
            StatusCode::BAD_REQUEST,
            b"{\"error\":\"invalid_order\"}",
        ));
    };
    match path.as_str() {
        "/buy" => {
            let bought: i64 = state
                .buy
                .key(state.keys.stock(sku))
                .arg(quantity)
                .invoke_async(&mut redis)
                .await
                .map_err(|e| e.to_string())?;
            Ok(match bought {
                1 => answer(StatusCode::OK, b"{\"status\":\"confirmed\"}"),
                0 => answer(StatusCode::CONFLICT, b"{\"error\":\"sold_out\"}"),
                _ => answer(StatusCode::NOT_FOUND, b"{\"error\":\"unknown_sku\"}"),
            })
        }
        "/hold" => {
            let id: i64 = state
                .hold
                .key(state.keys.stock(sku))
                .key(state.keys.hold_sequence())
                .arg(quantity)
                .arg(600_000)
                .arg(state.keys.hold_prefix())
                .invoke_async(&mut redis)
                .await
                .map_err(|e| e.to_string())?;
            if id == 0 {
                return Ok(answer(StatusCode::CONFLICT, b"{\"error\":\"sold_out\"}"));
            }
            let body = format!("{{\"id\":\"{id}\",\"status\":\"held\"}}");
            let mut response = answer(StatusCode::OK, b"");
            *response.body_mut() = Full::new(Bytes::from(body));
            Ok(response)
        }
        _ => Ok(answer(StatusCode::NOT_FOUND, b"{\"error\":\"not_found\"}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sku_index_in_a_body() {
        assert_eq!(sku_index(br#"{"sku":"s9731","quantity":1}"#), Some(9731));
        assert_eq!(sku_index(br#"{"sku":"x1"}"#), None);
        assert_eq!(sku_index(br#"{"sku":"s"}"#), None);
        assert_eq!(sku_index(br#"{"sku":"s99999999999999999999999"}"#), None);
    }
}
