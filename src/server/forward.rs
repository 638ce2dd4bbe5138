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

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

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

/// A member of the cluster as the router sees it.
struct Member {
    id: String,
    /// `HOST:PORT` of its HTTP endpoint; empty for this node.
    address: String,
    /// Kept-alive connections to it, ready for a request.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
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
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method.clone();
        *request.uri_mut() = path
            .parse()
            .map_err(|_| ApiError::invalid("the path cannot be forwarded"))?;
        let sent = request.headers_mut();
        for name in [AUTHORIZATION, CONTENT_TYPE, IDEMPOTENCY_KEY] {
            if let Some(value) = headers.get(&name) {
                sent.insert(name, value.clone());
            }
        }
        sent.insert(FORWARDED_BY, self.forwarded_by.clone());
        let host = HeaderValue::from_str(&member.address)
            .map_err(|_| unavailable(member, "its address is not a valid Host"))?;
        sent.insert(hyper::header::HOST, host);
        match tokio::time::timeout(FORWARD_TIMEOUT, exchange(member, request)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(why)) => Err(unavailable(member, &why)),
            Err(_) => Err(unavailable(
                member,
                &format!("no answer within {} s", FORWARD_TIMEOUT.as_secs()),
            )),
        }
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
/// one if none is idle). A request refused by a connection the peer had
/// just closed, before any of it was written, is sent once more on a new
/// connection; one that may have reached the peer never is.
async fn exchange(member: &Member, request: Request<Full<Bytes>>) -> Result<HttpResponse, String> {
    let pooled = member.idle.lock().pop();
    let (mut sender, request) = match pooled {
        Some(mut sender) => match sender.try_send_request(request).await {
            Ok(answer) => return finish(member, sender, answer).await,
            Err(mut refused) => match refused.take_message() {
                Some(request) => (connect(&member.address).await?, request),
                None => return Err(format!("the connection failed: {}", refused.error())),
            },
        },
        None => (connect(&member.address).await?, request),
    };
    match sender.send_request(request).await {
        Ok(answer) => finish(member, sender, answer).await,
        Err(error) => Err(format!("the request failed: {error}")),
    }
}

async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = (tokio::net::TcpStream::connect(address).await)
        .map_err(|e| format!("cannot connect: {e}"))?;
    // Small requests, answered at once: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("the HTTP handshake failed: {e}"))?;
    // The connection's task ends when the sender is dropped or the peer
    // closes it.
    tokio::spawn(connection);
    Ok(sender)
}

/// Reads the whole answer, gives the connection back to the pool, and
/// turns the answer into this node's response.
async fn finish(
    member: &Member,
    sender: SendRequest<Full<Bytes>>,
    answer: Response<hyper::body::Incoming>,
) -> Result<HttpResponse, String> {
    let (parts, body) = answer.into_parts();
    let bytes = Limited::new(body, MAX_FORWARDED_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("its answer could not be read: {e}"))?
        .to_bytes();
    {
        let mut idle = member.idle.lock();
        if idle.len() < MAX_IDLE_PER_PEER && !sender.is_closed() {
            idle.push(sender);
        }
    }
    let mut response = Response::new(Full::new(bytes).into());
    *response.status_mut() = parts.status;
    let headers = response.headers_mut();
    for (name, value) in &parts.headers {
        let kept = [CONTENT_TYPE, RETRY_AFTER, hyper::header::ALLOW];
        if kept.contains(name) || name == hyper::header::WWW_AUTHENTICATE {
            headers.insert(name.clone(), value.clone());
        }
    }
    if let Ok(node) = HeaderValue::from_str(&member.id) {
        headers.insert(SERVED_BY, node);
    }
    Ok(response)
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
