//! The bounded outbound queue of a session, drained by the connection's response body.
//!
//! The actor never writes to the socket itself: it pushes frames into this queue, and the
//! WebSocket response body ([`Body`]) takes them out in order whenever actix-http's HTTP/1
//! dispatcher asks it for more bytes, encoding each with actix-http's WebSocket codec. A full
//! queue means the client is not reading; the session then closes it as a slow consumer rather
//! than buffer without limit. A close frame is queued like any other frame, so responses queued
//! before it (such as the error that explains the close) reach the client first. When the queue
//! is full there is no room for the close frame: the body is then told to drop its backlog and
//! send the close frame next (see [`Outbound::close`]). The session dropping its end without a
//! close ends the body, which ends the connection.
//!
//! Sizing: the session actor and the connection's dispatcher run on the same actix worker
//! thread, so the queue is a plain `Rc<RefCell<VecDeque>>` with a stored waker, not a channel
//! and a writer task. An idle connection therefore holds no queue allocation at all (the deque
//! is released whenever it drains) and no task of its own; it used to hold two tokio channels
//! (ours and actix-ws's, each allocating a 32-slot block up front) and a writer task, ~4 KiB
//! together (docs/benchmarks.md, "Idle memory"). The bound (`limits.outbound_queue`) counts
//! frames not yet taken by the dispatcher; the dispatcher itself takes frames only while its
//! write buffer is below its high-water mark, so a client that does not read fills the queue.
//! A write blocked on such a client never holds up an abort: the close is produced at the
//! dispatcher's next poll of the body, ahead of the dropped backlog.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_codec::Encoder;
use actix_http::body::{BodySize, MessageBody};
use actix_http::ws::{CloseReason, Codec, Message};
use bytes::{Bytes, BytesMut};
use titan_protocol::CloseCode;
use tracing::debug;

/// Longest payload of a control frame (RFC 6455 5.5); longer pong data is cut, as actix-ws did.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame for the socket.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    Ping,
    Pong(Bytes),
    Close(CloseCode),
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The client is not reading fast enough.
    Full,
    /// The body is gone (the connection is over).
    Closed,
}

/// The state shared by the session's [`Outbound`] and the connection's [`Body`].
#[derive(Debug)]
struct Shared {
    frames: VecDeque<Frame>,
    capacity: usize,
    /// Set when the connection must close while the queue is full: the body drops the queued
    /// frames and sends this close next.
    abort: Option<CloseCode>,
    /// The session dropped its [`Outbound`]: the body ends once the queue is written.
    session_gone: bool,
    /// The body was dropped: pushes fail and the read side ends.
    body_gone: bool,
    /// The dispatcher task waiting for a frame.
    waker: Option<Waker>,
}

impl Shared {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// The next message for the socket; `None` means wait (`waker` is woken by the next push,
    /// close or drop of the [`Outbound`]).
    fn next(&mut self, waker: &Waker) -> Option<Message> {
        let frame = match self.abort.take() {
            Some(code) => {
                debug!(code = code.code(), "closing at once; queued frames dropped");
                Some(Frame::Close(code))
            }
            None => self.frames.pop_front(),
        };
        if matches!(frame, Some(Frame::Close(_))) || self.frames.is_empty() {
            // Nothing follows a close; and an idle connection holds no queue memory (see the
            // module docs).
            self.frames = VecDeque::new();
        }
        match frame {
            Some(frame) => Some(message(frame)),
            // The session ended without a close frame: end the connection with a close frame
            // without a code.
            None if self.session_gone => Some(Message::Close(None)),
            None => {
                if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    self.waker = Some(waker.clone());
                }
                None
            }
        }
    }
}

/// The sending half kept by the session actor.
#[derive(Debug)]
pub struct Outbound {
    shared: Rc<RefCell<Shared>>,
}

/// Creates the queue: the session's half and the response body that drains it.
pub fn queue(capacity: usize) -> (Outbound, Body) {
    let shared = Rc::new(RefCell::new(Shared {
        frames: VecDeque::new(),
        capacity: capacity.max(1),
        abort: None,
        session_gone: false,
        body_gone: false,
        waker: None,
    }));
    let body = Body {
        shared: shared.clone(),
        codec: Codec::new(),
        done: false,
    };
    (Outbound { shared }, body)
}

impl Outbound {
    pub fn push(&self, frame: Frame) -> Result<(), QueueError> {
        let mut shared = self.shared.borrow_mut();
        if shared.body_gone {
            return Err(QueueError::Closed);
        }
        if shared.frames.len() >= shared.capacity {
            return Err(QueueError::Full);
        }
        shared.frames.push_back(frame);
        shared.wake();
        Ok(())
    }

    /// Queues a close after what is already queued; when the queue is full, the body drops
    /// the queued frames and sends this close next.
    pub fn close(&self, code: CloseCode) {
        if self.push(Frame::Close(code)) == Err(QueueError::Full) {
            let mut shared = self.shared.borrow_mut();
            shared.abort = Some(code);
            shared.wake();
        }
    }

    /// A handle telling the read side when the connection is over.
    pub fn connection(&self) -> Connection {
        Connection {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.session_gone = true;
        shared.wake();
    }
}

/// Whether the connection's response body is gone (see [`crate::inbound`]).
#[derive(Debug)]
pub struct Connection {
    shared: Rc<RefCell<Shared>>,
}

impl Connection {
    pub fn is_gone(&self) -> bool {
        self.shared.borrow().body_gone
    }
}

/// The WebSocket response body: the queue's frames, encoded, in order (see the module docs).
#[derive(Debug)]
pub struct Body {
    shared: Rc<RefCell<Shared>>,
    codec: Codec,
    /// A close frame was produced (or the session left): nothing follows.
    done: bool,
}

fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(text) => Message::Text(text.into()),
        Frame::Ping => Message::Ping(Bytes::new()),
        Frame::Pong(mut data) => {
            data.truncate(MAX_CONTROL_PAYLOAD);
            Message::Pong(data)
        }
        Frame::Close(code) => Message::Close(Some(CloseReason {
            code: actix_http::ws::CloseCode::Other(code.code()),
            description: Some(code.reason().to_owned()),
        })),
    }
}

impl Body {
    /// Encodes one message; a close frame ends the body.
    fn encode(&mut self, message: Message) -> Bytes {
        self.done = matches!(message, Message::Close(_));
        let mut buf = BytesMut::new();
        // The server-side codec cannot fail to encode: its only error is a continuation frame
        // out of order, and `message` never makes continuation frames.
        if let Err(err) = self.codec.encode(message, &mut buf) {
            debug!(error = %err, "frame not encoded");
        }
        buf.freeze()
    }
}

impl MessageBody for Body {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let next = this.shared.borrow_mut().next(cx.waker());
        match next {
            Some(message) => Poll::Ready(Some(Ok(this.encode(message)))),
            None => Poll::Pending,
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.shared.borrow_mut().body_gone = true;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use actix_codec::Decoder;
    use actix_http::ws::Frame as WireFrame;

    /// Polls the body once, as the dispatcher would.
    fn poll(body: &mut Body) -> Poll<Option<Bytes>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body)
            .poll_next(&mut cx)
            .map(|item| item.map(|bytes| bytes.unwrap()))
    }

    /// The frame a chunk of the body holds, as the client reads it.
    fn decode(bytes: Bytes) -> WireFrame {
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = Codec::new()
            .client_mode()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "one frame per chunk");
        frame
    }

    fn close_code(frame: WireFrame) -> Option<u16> {
        match frame {
            WireFrame::Close(reason) => reason.map(|r| u16::from(r.code)),
            other => panic!("not a close frame: {other:?}"),
        }
    }

    #[test]
    fn frames_go_out_in_order_and_the_close_ends_the_body() {
        let (out, mut body) = queue(8);
        assert!(poll(&mut body).is_pending());
        out.push(Frame::Text("one".into())).unwrap();
        out.close(CloseCode::Normal);
        let Poll::Ready(Some(first)) = poll(&mut body) else {
            panic!("the text frame")
        };
        assert_eq!(decode(first), WireFrame::Text(Bytes::from_static(b"one")));
        let Poll::Ready(Some(close)) = poll(&mut body) else {
            panic!("the close frame")
        };
        assert_eq!(close_code(decode(close)), Some(CloseCode::Normal.code()));
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn a_full_queue_refuses_and_a_close_then_skips_the_backlog() {
        let (out, mut body) = queue(2);
        out.push(Frame::Ping).unwrap();
        out.push(Frame::Ping).unwrap();
        assert_eq!(out.push(Frame::Ping), Err(QueueError::Full));
        out.close(CloseCode::SlowConsumer);
        let Poll::Ready(Some(close)) = poll(&mut body) else {
            panic!("the close frame")
        };
        assert_eq!(
            close_code(decode(close)),
            Some(CloseCode::SlowConsumer.code())
        );
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        assert_eq!(body.shared.borrow().frames.capacity(), 0);
    }

    #[test]
    fn the_session_leaving_without_a_close_ends_the_connection() {
        let (out, mut body) = queue(2);
        out.push(Frame::Text("last".into())).unwrap();
        drop(out);
        assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
        let Poll::Ready(Some(close)) = poll(&mut body) else {
            panic!("a close frame")
        };
        assert_eq!(close_code(decode(close)), None);
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn a_drained_queue_holds_no_memory_and_a_gone_body_refuses() {
        let (out, mut body) = queue(8);
        let connection = out.connection();
        out.push(Frame::Pong(Bytes::from_static(b"p"))).unwrap();
        assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
        assert!(poll(&mut body).is_pending());
        assert_eq!(body.shared.borrow().frames.capacity(), 0);
        assert!(!connection.is_gone());
        drop(body);
        assert!(connection.is_gone());
        assert_eq!(out.push(Frame::Ping), Err(QueueError::Closed));
    }
}
