//! Routing between the nodes of a cluster (#15): which node owns a
//! request, and forwarding it there.
//!
//! # Why route at all
//!
//! Stock is shared through the escrow, but a reservation, a customer's
//! count against a per-customer limit and an idempotency key live in one
//! node's engine. A buyer spread over nodes by a load balancer would
//! otherwise confirm a hold on a node that never made it, buy past a limit
//! by asking a second node, or place a retried order twice. So:
//!
//! - a reservation id names its node (`{node}~{32 hex}`), and a request
//!   about it is forwarded to that node;
//! - an order goes to the node owning its customer (or, with no customer,
//!   its idempotency key): the members, sorted by id, split the 64-bit
//!   hash space into equal ranges, and the key's hash picks one
//!   (`owner_index`). A gateway that knows the members can send each order
//!   to its owner directly and skip the hop;
//! - an order with neither is placed where it lands (nothing to keep
//!   exact), so anonymous buyers still spread over every node.
//!
//! # Why forward rather than redirect
//!
//! A `307` would make every buyer's client follow redirects of a POST and
//! learn the nodes' addresses. Forwarding keeps the cluster one endpoint:
//! the node that took the request sends it, with the caller's own
//! `Authorization` (the owner checks it; nodes trust each other with
//! nothing), on a kept-alive connection, and returns the owner's answer
//! as it is, naming the owner in `hotstock-node`.
//!
//! # Loops and disagreeing members
//!
//! A forwarded request carries `hotstock-forwarded-by: {node} {members}`.
//! The owner never forwards it again: if by its own members the request
//! is not its own, or the members differ, it answers `421 misrouted`, and
//! the message names both lists. Two nodes configured with different
//! `--peer` lists would otherwise each count half of a customer's limit.
//!
//! Changing the members moves customers between nodes; the counts of
//! their earlier orders stay where they were made (`docs/cluster.md`).

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Response, StatusCode};
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::error::{ApiError, Code, HttpResponse};

/// Set on a request one node forwards to another: `{node} {members}`.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("hotstock-forwarded-by");
/// Set on a forwarded answer: the node that made it.
pub const SERVED_BY: HeaderName = HeaderName::from_static("hotstock-node");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// How long a forwarded request may take, connecting included.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer taken back from a peer (a reservation's document
/// with `MAX_LINES_PER_CART` lines is a few kilobytes).
const MAX_FORWARDED_ANSWER: usize = 256 * 1024;
/// Idle connections kept per peer; more are closed after use.
const MAX_IDLE_PER_PEER: usize = 64;
/// An idle connection older than this is closed rather than used: well
/// inside the peer's own idle timeout (60 s), so the peer never closes a
/// connection just as a request is written to it.
const MAX_IDLE: Duration = Duration::from_secs(20);
/// Answer headers read from a peer, at most.
const MAX_ANSWER_HEADERS: usize = 32;

/// The headers of the caller's request that go with it to the owner.
const FORWARDED_HEADERS: [HeaderName; 3] = [AUTHORIZATION, CONTENT_TYPE, IDEMPOTENCY_KEY];
/// The headers of the owner's answer that come back.
const ANSWER_HEADERS: [&str; 4] = ["content-type", "retry-after", "allow", "www-authenticate"];

/// A member of the cluster as the router sees it.
struct Member {
    id: String,
    /// `HOST:PORT` of its HTTP endpoint; empty for this node.
    address: String,
    /// Kept-alive connections to it, each with when it was last used.
    idle: Mutex<Vec<(TcpStream, Instant)>>,
}

/// Who owns which request, and the connections to the others.
pub struct Router {
    /// Sorted by id (every node sorts the same list the same way).
    members: Vec<Member>,
    /// This node's index in `members`.
    me: usize,
    /// The ids joined by `,`: what a forwarded request is checked against.
    membership: String,
    /// `hotstock-forwarded-by` for requests this node forwards.
    forwarded_by: HeaderValue,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("membership", &self.membership)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Here,
    /// Another member, by index.
    Peer(usize),
}

impl Router {
    /// The router of node `me` among `peers` (`(id, HOST:PORT)`); ids are
    /// checked by the binary (valid, distinct, not `me`).
    pub fn new(me: &str, peers: &[(String, String)]) -> Router {
        let mut members: Vec<Member> = (peers.iter())
            .map(|(id, address)| (id.as_str(), address.as_str()))
            .chain([(me, "")])
            .map(|(id, address)| Member {
                id: id.to_owned(),
                address: address.to_owned(),
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let me =
            (members.iter().position(|m| m.address.is_empty())).expect("this node is a member");
        let membership = (members.iter().map(|m| m.id.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        // Node ids are `A-Z a-z 0-9 . _ -` and `,`: always a header value.
        let forwarded_by = HeaderValue::from_str(&format!("{} {membership}", members[me].id))
            .expect("node ids are visible ASCII");
        Router {
            members,
            me,
            membership,
            forwarded_by,
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.members[self.me].id
    }

    /// The owner of a customer or idempotency key.
    pub fn owner_of_key(&self, key: &str) -> Owner {
        self.owner(owner_index(key.as_bytes(), self.members.len()))
    }

    /// The owner of a reservation id in its text form, and the id without
    /// its node; an id without a node (made before the node joined a
    /// cluster) is this node's. An unknown node answers as an unknown
    /// reservation.
    pub fn owner_of_id<'a>(&self, text: &'a str) -> Result<(Owner, &'a str), ApiError> {
        let Some((node, id)) = text.split_once('~') else {
            return Ok((Owner::Here, text));
        };
        match self.members.iter().position(|m| m.id == node) {
            Some(index) => Ok((self.owner(index), id)),
            None => Err(ApiError::unknown_reservation(text)),
        }
    }

    fn owner(&self, index: usize) -> Owner {
        match index == self.me {
            true => Owner::Here,
            false => Owner::Peer(index),
        }
    }

    /// Whether a peer forwarded this request here (so it must not go on),
    /// refusing one from a node whose members differ from this node's.
    pub fn forwarded(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        let Some(value) = headers.get(FORWARDED_BY) else {
            return Ok(false);
        };
        let value = value.to_str().unwrap_or("");
        let (from, members) = value.split_once(' ').unwrap_or((value, ""));
        if members != self.membership {
            return Err(misrouted(format!(
                "node {from:?} forwarded this request by the members [{members}], but this \
                 node ({}) has [{}]: every node's --peer list must name the same nodes",
                self.node(),
                self.membership
            )));
        }
        Ok(true)
    }

    /// The refusal for a forwarded request this node does not own.
    pub fn not_mine(&self, owner: usize) -> ApiError {
        misrouted(format!(
            "this request was forwarded to node {}, but it belongs to node {}",
            self.node(),
            self.members[owner].id
        ))
    }

    /// Sends the request (`method`, `path`, the caller's credentials and
    /// idempotency key, `body`) to the member `owner` and returns its
    /// answer. A peer that cannot be reached is `503 peer_unavailable`.
    pub async fn forward(
        &self,
        owner: usize,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<HttpResponse, ApiError> {
        let member = &self.members[owner];
        let request = self.request_bytes(member, method, path, headers, &body);
        match tokio::time::timeout(FORWARD_TIMEOUT, exchange(member, &request)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(why)) => Err(unavailable(member, &why)),
            Err(_) => Err(unavailable(
                member,
                &format!("no answer within {} s", FORWARD_TIMEOUT.as_secs()),
            )),
        }
    }

    /// The HTTP/1.1 request as sent: the path, the caller's credentials,
    /// content type and idempotency key, `hotstock-forwarded-by`, the body.
    fn request_bytes(
        &self,
        member: &Member,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + body.len());
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            member.address,
            body.len()
        );
        out.extend_from_slice(head.as_bytes());
        let forwarded = [(&FORWARDED_BY, &self.forwarded_by)];
        let names = FORWARDED_HEADERS;
        let kept = names.iter().filter_map(|n| Some((n, headers.get(n)?)));
        for (name, value) in kept.chain(forwarded) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            // A header value has no CR or LF (hyper refused it otherwise).
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

/// The member index owning `key` among `members` ids sorted: the 64-bit
/// hash space cut into `members` equal ranges. Documented in
/// `docs/cluster.md` so a gateway can compute it too.
pub fn owner_index(key: &[u8], members: usize) -> usize {
    ((u128::from(key_hash(key)) * members as u128) >> 64) as usize
}

/// FNV-1a (64 bits) of `key`, then SplitMix64's finaliser (FNV's high
/// bits, which the range cut reads, are weak for short keys).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// One request and its whole answer over a kept-alive connection (a new
/// one if none is idle and fresh). Written by hand on a `TcpStream`
/// rather than with hyper's client: enabling that feature changed how
/// hyper's server code inlines, and cost every request on every node
/// about 240 instructions (callgrind), cluster or not.
///
/// A request is sent once: an idle connection is checked for a close
/// before the request is written, and one that fails after is reported,
/// never sent again (the owner may have made the change).
async fn exchange(member: &Member, request: &[u8]) -> Result<HttpResponse, String> {
    let mut stream = match take_idle(member) {
        Some(stream) => stream,
        None => connect(&member.address).await?,
    };
    write_all(&stream, request)
        .await
        .map_err(|e| format!("sending the request failed: {e}"))?;
    let (answer, reusable) = read_answer(&mut stream).await?;
    if reusable {
        let mut idle = member.idle.lock();
        if idle.len() < MAX_IDLE_PER_PEER {
            idle.push((stream, Instant::now()));
        }
    }
    let mut answer = answer;
    if let Ok(node) = HeaderValue::from_str(&member.id) {
        answer.headers_mut().insert(SERVED_BY, node);
    }
    Ok(answer)
}

/// The newest idle connection still fresh and open; stale ones dropped.
fn take_idle(member: &Member) -> Option<TcpStream> {
    let mut idle = member.idle.lock();
    while let Some((stream, since)) = idle.pop() {
        let mut probe = [0u8; 1];
        // Open and quiet: the read would block. Closed (0) or with bytes
        // nobody asked for: not to be used.
        let quiet =
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock);
        if quiet && since.elapsed() < MAX_IDLE {
            return Some(stream);
        }
    }
    None
}

async fn connect(address: &str) -> Result<TcpStream, String> {
    let stream = (TcpStream::connect(address).await).map_err(|e| format!("cannot connect: {e}"))?;
    // Small requests, answered at once: no Nagle delay.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what the stream has (waiting for some); `Ok(0)` at its end.
async fn read_some(stream: &TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(read) => {
                buffer.extend_from_slice(&chunk[..read]);
                return Ok(read);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads one answer (its head, then `content-length` bytes: this server
/// always sends one for the routes it forwards) and says whether the
/// connection may carry another.
async fn read_answer(stream: &mut TcpStream) -> Result<(HttpResponse, bool), String> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_ANSWER_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let parsed = head
            .parse(&buffer)
            .map_err(|e| format!("its answer is not HTTP: {e}"))?;
        if let httparse::Status::Complete(head_len) = parsed {
            let (response, length, close) = answer_head(&head)?;
            while buffer.len() < head_len + length {
                if read_some(stream, &mut buffer)
                    .await
                    .map_err(|e| e.to_string())?
                    == 0
                {
                    return Err("it closed the connection in its answer".into());
                }
            }
            let body = Bytes::copy_from_slice(&buffer[head_len..head_len + length]);
            let extra = buffer.len() > head_len + length;
            let (parts, ()) = response.into_parts();
            let answer = Response::from_parts(parts, Full::new(body).into());
            return Ok((answer, !close && !extra));
        }
        if buffer.len() > MAX_FORWARDED_ANSWER {
            return Err("its answer's head is too large".into());
        }
        let read = read_some(stream, &mut buffer).await;
        match read.map_err(|e| format!("reading its answer failed: {e}"))? {
            0 => return Err("it closed the connection without answering".into()),
            _ => continue,
        }
    }
}

/// The answer's status and kept headers, its body's length, and whether
/// the peer closes the connection after it.
fn answer_head(head: &httparse::Response<'_, '_>) -> Result<(Response<()>, usize, bool), String> {
    let status = (head.code)
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("its answer has no valid status")?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    let (mut length, mut close) = (None, false);
    for header in head.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                let text = std::str::from_utf8(header.value).unwrap_or("");
                length = text.trim().parse::<usize>().ok();
            }
            "connection" => close = header.value.eq_ignore_ascii_case(b"close"),
            "transfer-encoding" => return Err("its answer is chunked (not expected)".into()),
            kept if ANSWER_HEADERS.contains(&kept) => {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(header.value),
                ) {
                    response.headers_mut().insert(n, v);
                }
            }
            _ => {}
        }
    }
    match length {
        Some(length) if length <= MAX_FORWARDED_ANSWER => Ok((response, length, close)),
        Some(length) => Err(format!("its answer of {length} bytes is too large")),
        None => Err("its answer has no content-length".into()),
    }
}

fn unavailable(member: &Member, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Code::PeerUnavailable,
        format!(
            "this request belongs to node {} (at {}), which could not be reached: {why}; \
             try again (an order with an Idempotency-Key is placed at most once)",
            member.id, member.address
        ),
    )
    .with("node", member.id.as_str())
}

fn misrouted(message: String) -> ApiError {
    ApiError::new(StatusCode::MISDIRECTED_REQUEST, Code::Misrouted, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(me: &str) -> Router {
        let all = [("a", "h:1"), ("b", "h:2"), ("c", "h:3")];
        let peers: Vec<(String, String)> = (all.iter())
            .filter(|(id, _)| *id != me)
            .map(|(id, address)| (id.to_string(), address.to_string()))
            .collect();
        Router::new(me, &peers)
    }

    #[test]
    fn every_node_names_the_same_owner_for_a_key() {
        let routers = [router("a"), router("b"), router("c")];
        for n in 0..1000 {
            let key = format!("customer-{n}");
            let index = owner_index(key.as_bytes(), 3);
            for (at, router) in routers.iter().enumerate() {
                let expected = match index == at {
                    true => Owner::Here,
                    false => Owner::Peer(index),
                };
                assert_eq!(router.owner_of_key(&key), expected, "{key} at {at}");
            }
        }
    }

    #[test]
    fn keys_spread_over_every_member() {
        let mut counts = [0usize; 3];
        for n in 0..30_000 {
            counts[owner_index(format!("c{n}").as_bytes(), 3)] += 1;
        }
        // Each range is a third of the hash space: 10,000 ± a few percent.
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn an_id_names_its_node_and_an_unknown_node_is_an_unknown_reservation() {
        let b = router("b");
        assert_eq!(b.owner_of_id("a~00ff").unwrap(), (Owner::Peer(0), "00ff"));
        assert_eq!(b.owner_of_id("b~00ff").unwrap(), (Owner::Here, "00ff"));
        assert_eq!(b.owner_of_id("00ff").unwrap(), (Owner::Here, "00ff"));
        let unknown = b.owner_of_id("z~00ff").unwrap_err();
        assert_eq!(unknown.code, Code::UnknownReservation);
    }

    #[test]
    fn a_request_forwarded_by_other_members_is_refused() {
        let b = router("b");
        let mut headers = HeaderMap::new();
        assert!(!b.forwarded(&headers).unwrap());
        headers.insert(FORWARDED_BY, HeaderValue::from_static("a a,b,c"));
        assert!(b.forwarded(&headers).unwrap());
        headers.insert(FORWARDED_BY, HeaderValue::from_static("a a,b"));
        let refused = b.forwarded(&headers).unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::MISDIRECTED_REQUEST, Code::Misrouted)
        );
        assert!(refused.message.contains("[a,b]") && refused.message.contains("[a,b,c]"));
    }
}
