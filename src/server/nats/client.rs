//! Just enough of the NATS client protocol for a JetStream publisher, on a
//! blocking socket: CONNECT, PING/PONG, SUB to one reply inbox, PUB and
//! HPUB (headers, for `Nats-Msg-Id`), and MSG/HMSG replies.
//!
//! Why not the `async-nats` crate: it brings TLS (rustls and a crypto
//! provider), nkeys and a second async stack into a build that needs none
//! of them to publish on loopback or a private network; the part of the
//! protocol a publisher uses is small, text-based and documented
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>).
//! Everything here is bounded: a reply is at most `MAX_PAYLOAD`, a line
//! at most `MAX_LINE`, and every read has a timeout.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Longest protocol line accepted (INFO lines carry the server's JSON).
const MAX_LINE: usize = 64 * 1024;
/// Largest reply payload accepted.
const MAX_PAYLOAD: usize = 1 << 20;

/// A message received on the reply inbox.
#[derive(Debug)]
pub struct Reply {
    /// The reply subject's last token (which request it answers).
    pub token: u64,
    /// A status header's code (`503`: no responders), when there is one.
    pub status: Option<u16>,
    pub payload: Vec<u8>,
}

/// One connection to a NATS server.
pub struct NatsClient {
    socket: TcpStream,
    /// Bytes read and not yet parsed: `buffer[start..]`. Parsing moves
    /// `start`; the consumed prefix is dropped when the buffer is refilled,
    /// so a burst of replies is not shifted once per line.
    buffer: Vec<u8>,
    start: usize,
    /// Frames `queue`d and not yet written (`flush`).
    outgoing: Vec<u8>,
    inbox: String,
    next_token: u64,
}

impl NatsClient {
    /// Connects to `url` (`nats://host:port`) and completes the handshake.
    pub fn connect(url: &str, timeout: Duration) -> io::Result<NatsClient> {
        let address = url
            .strip_prefix("nats://")
            .ok_or_else(|| invalid(format!("{url:?} is not a nats://host:port URL")))?;
        let address = address.trim_end_matches('/');
        let target = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| invalid(format!("{address} resolves to no address")))?;
        let socket = TcpStream::connect_timeout(&target, timeout)?;
        socket.set_nodelay(true)?;
        socket.set_write_timeout(Some(timeout))?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let mut client = NatsClient {
            socket,
            buffer: Vec::new(),
            start: 0,
            outgoing: Vec::new(),
            inbox: format!("_INBOX.hotstock.{:016x}", u64::from_le_bytes(nonce)),
            next_token: 0,
        };
        let info = client.read_line(timeout)?;
        if !info.starts_with("INFO ") {
            return Err(invalid(format!(
                "expected INFO from the server, got {info:?}"
            )));
        }
        let connect = "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\
                       \"no_responders\":true,\"lang\":\"hotstock\",\"protocol\":1}\r\nPING\r\n";
        client.socket.write_all(connect.as_bytes())?;
        loop {
            match client.read_line(timeout)?.as_str() {
                "PONG" => break,
                "+OK" => continue,
                line if line.starts_with("INFO ") => continue,
                line => return Err(invalid(format!("handshake refused: {line}"))),
            }
        }
        let subscribe = format!("SUB {}.* 1\r\n", client.inbox);
        client.socket.write_all(subscribe.as_bytes())?;
        Ok(client)
    }

    /// A request on `subject`; waits for its reply until `timeout`.
    pub fn request(&mut self, subject: &str, body: &[u8], timeout: Duration) -> io::Result<Reply> {
        let token = self.send(subject, None, body)?;
        self.reply_to(token, Instant::now() + timeout)
    }

    /// The reply to `token`, passing over replies to earlier requests.
    pub fn reply_to(&mut self, token: u64, deadline: Instant) -> io::Result<Reply> {
        loop {
            let reply = self.next_reply(deadline)?;
            if reply.token == token {
                return Ok(reply);
            }
        }
    }

    /// Publishes now, with a `Nats-Msg-Id` header when given and a reply
    /// subject for the JetStream acknowledgement; returns the reply's token.
    pub fn send(&mut self, subject: &str, msg_id: Option<&str>, body: &[u8]) -> io::Result<u64> {
        let token = self.queue(subject, msg_id, body);
        self.flush()?;
        Ok(token)
    }

    /// `send` without writing yet: `flush` writes everything queued at once.
    pub fn queue(&mut self, subject: &str, msg_id: Option<&str>, body: &[u8]) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        let headers = msg_id.map(|id| (id, None));
        self.frame(subject, Some(token), headers, body);
        token
    }

    /// One message of a chained batch (see `server::nats`): `Nats-Msg-Id`
    /// = `msg_id`, `Nats-Expected-Last-Msg-Id` = `expected_last` when
    /// given, and a reply subject only when `reply` (its token returned).
    pub fn queue_chained(
        &mut self,
        subject: &str,
        msg_id: &str,
        expected_last: Option<&str>,
        reply: bool,
        body: &[u8],
    ) -> Option<u64> {
        let token = reply.then(|| {
            self.next_token += 1;
            self.next_token
        });
        self.frame(subject, token, Some((msg_id, expected_last)), body);
        token
    }

    /// `PUB` (no headers) or `HPUB`, with the reply inbox's `token` if any.
    fn frame(
        &mut self,
        subject: &str,
        token: Option<u64>,
        headers: Option<(&str, Option<&str>)>,
        body: &[u8],
    ) {
        use std::fmt::Write as _;
        let mut line = String::with_capacity(160);
        let reply = match token {
            Some(token) => format!(" {}.{token}", self.inbox),
            None => String::new(),
        };
        match headers {
            Some((id, expected_last)) => {
                let mut block = format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n");
                if let Some(last) = expected_last {
                    let _ = write!(block, "Nats-Expected-Last-Msg-Id: {last}\r\n");
                }
                block.push_str("\r\n");
                let total = block.len() + body.len();
                let _ = write!(line, "HPUB {subject}{reply} {} {total}\r\n", block.len());
                line.push_str(&block);
            }
            None => {
                let _ = write!(line, "PUB {subject}{reply} {}\r\n", body.len());
            }
        }
        self.outgoing.extend_from_slice(line.as_bytes());
        self.outgoing.extend_from_slice(body);
        self.outgoing.extend_from_slice(b"\r\n");
    }

    /// Writes what `queue` gathered.
    pub fn flush(&mut self) -> io::Result<()> {
        let written = self.socket.write_all(&self.outgoing);
        self.outgoing.clear();
        written
    }

    /// The next message on the inbox, answering the server's PINGs on the
    /// way; `TimedOut` at `deadline`.
    pub fn next_reply(&mut self, deadline: Instant) -> io::Result<Reply> {
        loop {
            let line = self.read_line_until(deadline)?;
            let mut words = line.split_whitespace();
            match words.next() {
                Some("PING") => self.socket.write_all(b"PONG\r\n")?,
                Some("PONG") | Some("+OK") | Some("INFO") => {}
                Some("-ERR") => return Err(io::Error::other(format!("server error: {line}"))),
                Some("MSG") | Some("HMSG") => return self.read_message(&line, deadline),
                _ => {
                    return Err(invalid(format!(
                        "unexpected line from the server: {line:?}"
                    )))
                }
            }
        }
    }

    /// Answers pending PINGs without waiting (while the publisher idles).
    pub fn keep_alive(&mut self) -> io::Result<()> {
        match self.next_reply(Instant::now() + Duration::from_millis(1)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `MSG subject sid [reply] size` or `HMSG subject sid [reply] hsize size`.
    fn read_message(&mut self, line: &str, deadline: Instant) -> io::Result<Reply> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let with_headers = words[0] == "HMSG";
        let sizes = if with_headers { 2 } else { 1 };
        if words.len() < 3 + sizes {
            return Err(invalid(format!("malformed message line {line:?}")));
        }
        let number = |word: &str| {
            word.parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_PAYLOAD)
                .ok_or_else(|| invalid(format!("bad size in {line:?}")))
        };
        let total = number(words[words.len() - 1])?;
        let header_len = if with_headers {
            number(words[words.len() - 2])?
        } else {
            0
        };
        if header_len > total {
            return Err(invalid(format!(
                "headers longer than the message in {line:?}"
            )));
        }
        let token = words[1]
            .rsplit('.')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let mut bytes = self.read_exact_until(total + 2, deadline)?;
        bytes.truncate(total);
        let payload = bytes.split_off(header_len);
        let status = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|h| h.lines().next())
            .and_then(|first| first.strip_prefix("NATS/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        Ok(Reply {
            token,
            status,
            payload,
        })
    }

    fn read_line(&mut self, timeout: Duration) -> io::Result<String> {
        self.read_line_until(Instant::now() + timeout)
    }

    fn read_line_until(&mut self, deadline: Instant) -> io::Result<String> {
        let mut searched = 0;
        loop {
            let unread = &self.buffer[self.start..];
            if let Some(end) = unread[searched..].windows(2).position(|w| w == b"\r\n") {
                let end = searched + end;
                let line = unread[..end].to_vec();
                self.start += end + 2;
                return String::from_utf8(line).map_err(|_| invalid("a line that is not UTF-8"));
            }
            if unread.len() > MAX_LINE {
                return Err(invalid("a protocol line longer than 64 KiB"));
            }
            // The last byte may be a `\r` whose `\n` is still to come.
            searched = unread.len().saturating_sub(1);
            self.fill(deadline)?;
        }
    }

    fn read_exact_until(&mut self, len: usize, deadline: Instant) -> io::Result<Vec<u8>> {
        while self.buffer.len() - self.start < len {
            self.fill(deadline)?;
        }
        let bytes = self.buffer[self.start..self.start + len].to_vec();
        self.start += len;
        Ok(bytes)
    }

    fn fill(&mut self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer from the NATS server",
            ));
        }
        self.socket.set_read_timeout(Some(left))?;
        self.buffer.drain(..self.start);
        self.start = 0;
        let mut chunk = [0u8; 16 * 1024];
        match self.socket.read(&mut chunk) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the NATS server closed the connection",
            )),
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer from the NATS server",
                ))
            }
            Err(e) => Err(e),
        }
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}
