//! Response bodies: what hyper sends, without a box or a second
//! allocation on the purchase path.

use bytes::Bytes;
use http_body_util::Full;

/// A response body: an answer this server wrote (most routes), a whole
/// one from elsewhere (static pages, metrics, a peer's answer), or the
/// frames of an event stream (`GET /v1/events/stream`) as a task produces
/// them. An enum rather than a boxed body: the purchase path allocates no
/// box.
#[derive(Debug)]
pub enum ApiBody {
    /// The answer's own `Vec`, handed to hyper as it is: `Bytes::from` a
    /// `Vec` with spare capacity (every answer's) allocates a second time
    /// for its shared header, one allocation a request this saves. `None`
    /// once sent.
    Answer(Option<Vec<u8>>),
    Full(Full<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl From<Full<Bytes>> for ApiBody {
    fn from(full: Full<Bytes>) -> ApiBody {
        ApiBody::Full(full)
    }
}

/// The bytes of one frame of an `ApiBody`.
#[derive(Debug)]
pub enum BodyBytes {
    /// An answer's `Vec`, `at` bytes of it already taken.
    Answer {
        bytes: Vec<u8>,
        at: usize,
    },
    Shared(Bytes),
}

impl bytes::Buf for BodyBytes {
    fn remaining(&self) -> usize {
        match self {
            BodyBytes::Answer { bytes, at } => bytes.len() - at,
            BodyBytes::Shared(shared) => shared.remaining(),
        }
    }

    fn chunk(&self) -> &[u8] {
        match self {
            BodyBytes::Answer { bytes, at } => &bytes[*at..],
            BodyBytes::Shared(shared) => shared.chunk(),
        }
    }

    fn advance(&mut self, count: usize) {
        match self {
            BodyBytes::Answer { bytes, at } => {
                // `Buf`'s contract: advancing past the end is the caller's
                // bug, and `Bytes` panics on it too.
                assert!(
                    count <= bytes.len() - *at,
                    "advanced past the end of an answer"
                );
                *at += count;
            }
            BodyBytes::Shared(shared) => shared.advance(count),
        }
    }
}

impl hyper::body::Body for ApiBody {
    type Data = BodyBytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<BodyBytes>, Self::Error>>> {
        use std::task::Poll;
        let data = |bytes| Ok(hyper::body::Frame::data(bytes));
        match self.get_mut() {
            ApiBody::Answer(answer) => Poll::Ready(
                answer
                    .take()
                    .filter(|bytes| !bytes.is_empty())
                    .map(|bytes| data(BodyBytes::Answer { bytes, at: 0 })),
            ),
            ApiBody::Full(full) => std::pin::Pin::new(full)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| Ok(frame?.map_data(BodyBytes::Shared)))),
            ApiBody::Stream(frames) => frames
                .poll_recv(cx)
                .map(|frame| frame.map(|bytes| data(BodyBytes::Shared(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Answer(answer) => answer.as_ref().is_none_or(Vec::is_empty),
            ApiBody::Full(full) => full.is_end_stream(),
            ApiBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ApiBody::Answer(answer) => {
                hyper::body::SizeHint::with_exact(answer.as_ref().map_or(0, |b| b.len() as u64))
            }
            ApiBody::Full(full) => full.size_hint(),
            ApiBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use http_body_util::BodyExt;
    use hyper::body::Body;

    fn collect(body: ApiBody) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let collected = runtime.block_on(body.collect()).unwrap();
        collected.to_bytes().to_vec()
    }

    /// An answer is one frame, sent once, its length known up front (the
    /// `content-length` hyper writes).
    #[test]
    fn an_answer_is_sent_whole_once_with_its_exact_length() {
        let mut text = Vec::with_capacity(64);
        text.extend_from_slice(b"{\"status\":\"confirmed\"}");
        let body = ApiBody::Answer(Some(text.clone()));
        assert_eq!(body.size_hint().exact(), Some(text.len() as u64));
        assert!(!body.is_end_stream());
        assert_eq!(collect(body), text);
        let empty = ApiBody::Answer(Some(Vec::new()));
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert_eq!(collect(empty), b"");
    }

    /// `Buf`'s contract over an answer, taken in pieces as a socket that
    /// accepts part of a write would take it.
    #[test]
    fn an_answer_taken_in_pieces_gives_each_byte_once() {
        let text: Vec<u8> = (0..=255).collect();
        let mut data = BodyBytes::Answer {
            bytes: text.clone(),
            at: 0,
        };
        let mut taken = Vec::new();
        for step in [1, 7, 100, 0, 148] {
            assert_eq!(data.remaining(), text.len() - taken.len());
            taken.extend_from_slice(&data.chunk()[..step]);
            data.advance(step);
        }
        assert_eq!(taken, text);
        assert_eq!((data.remaining(), data.chunk()), (0, &[][..]));
    }

    #[test]
    #[should_panic(expected = "advanced past the end")]
    fn advancing_past_an_answers_end_is_refused() {
        BodyBytes::Answer {
            bytes: vec![1, 2],
            at: 1,
        }
        .advance(2);
    }

    /// The other bodies still pass through `BodyBytes::Shared`.
    #[test]
    fn a_full_body_passes_through_unchanged() {
        let body = ApiBody::from(Full::new(Bytes::from_static(b"page")));
        assert_eq!(collect(body), b"page");
    }
}
