//! The read side of a session's WebSocket: the request payload decoded into frames with
//! actix-http's WebSocket codec, fragments reassembled into whole messages.
//!
//! This replaces actix-ws's `MessageStream` and `AggregatedMessageStream` (same rules, same
//! errors) because actix-ws only builds those together with its own writer: a frame channel
//! with 32 slots allocated up front and a response body whose drop ends the read side. Titan's
//! writer is [`crate::outbound`], so keeping actix-ws for reading alone would have kept that
//! unused channel on every connection (docs/benchmarks.md, "Idle memory").
//!
//! Nothing is held while the connection is idle: the bytes of a partial frame are kept only
//! until the frame is complete, then the buffer is released (it would otherwise pin the chunk
//! of actix-http's read buffer it was taken from).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, Item};
use actix_web::dev::Payload;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;

pub use actix_http::ws::{CloseReason, ProtocolError};

use crate::outbound::Connection;

/// The io error text of a reassembled message over the limit (the same text as actix-ws, which
/// [`crate::error::protocol_error`] maps to -32003 and close 1009).
pub const TOO_LARGE: &str = "Exceeded maximum continuation size";

/// A whole message from the client; fragments are already reassembled.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// Which kind of message the fragments being reassembled make up.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Binary,
}

/// The stream of [`Received`] messages of one connection (see the module docs).
pub struct Inbound {
    payload: Payload,
    /// Ends the stream once the response body is gone (the connection is over), so that its
    /// end is not reported as a broken payload.
    connection: Connection,
    codec: Codec,
    /// Bytes of a frame not complete yet; empty (no allocation) between frames.
    buf: BytesMut,
    /// Largest reassembled message.
    max_message: usize,
    /// Fragments of the message being reassembled, and their kind.
    fragments: Vec<Bytes>,
    fragments_len: usize,
    kind: Kind,
    /// The fragments of the current message went over the limit: skip them up to its last one.
    overflowed: bool,
    /// The payload ended or failed: yield what is decoded, then end.
    closing: bool,
}

impl Inbound {
    /// Frames over `max_frame` bytes fail with [`ProtocolError::Overflow`], reassembled
    /// messages over `max_message` with an io error carrying [`TOO_LARGE`].
    pub fn new(
        payload: Payload,
        connection: Connection,
        max_frame: usize,
        max_message: usize,
    ) -> Self {
        Self {
            payload,
            connection,
            codec: Codec::new().max_size(max_frame),
            buf: BytesMut::new(),
            max_message,
            fragments: Vec::new(),
            fragments_len: 0,
            kind: Kind::Binary,
            overflowed: false,
            closing: false,
        }
    }

    /// Reads what the payload has ready into `buf`.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<(), ProtocolError> {
        if self.connection.is_gone() {
            self.closing = true;
        }
        while !self.closing {
            match Pin::new(&mut self.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) if self.buf.is_empty() => {
                    // No copy when nothing is buffered.
                    self.buf = BytesMut::from(bytes);
                }
                Poll::Ready(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(err))) => {
                    self.closing = true;
                    return Err(ProtocolError::Io(io::Error::other(err)));
                }
                Poll::Ready(None) => self.closing = true,
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Adds a fragment; `Err` once the message is over the limit.
    fn add_fragment(&mut self, bytes: Bytes) -> Result<(), ProtocolError> {
        self.fragments_len += bytes.len();
        if self.fragments_len > self.max_message {
            self.fragments.clear();
            self.fragments_len = 0;
            return Err(ProtocolError::Io(io::Error::other(TOO_LARGE)));
        }
        // Empty fragments add nothing (and must not grow the list without bound).
        if !bytes.is_empty() {
            self.fragments.push(bytes);
        }
        Ok(())
    }

    /// The message a frame completes, if any.
    fn message(&mut self, frame: Frame) -> Result<Option<Received>, ProtocolError> {
        let bytes = match frame {
            Frame::Text(bytes) => return text(bytes).map(Some),
            Frame::Binary(bytes) => return Ok(Some(Received::Binary(bytes))),
            Frame::Ping(bytes) => return Ok(Some(Received::Ping(bytes))),
            Frame::Pong(bytes) => return Ok(Some(Received::Pong(bytes))),
            Frame::Close(reason) => return Ok(Some(Received::Close(reason))),
            Frame::Continuation(item) => item,
        };
        let (first, last, bytes) = match bytes {
            Item::FirstText(b) => (Some(Kind::Text), false, b),
            Item::FirstBinary(b) => (Some(Kind::Binary), false, b),
            Item::Continue(b) => (None, false, b),
            Item::Last(b) => (None, true, b),
        };
        if self.overflowed {
            // The rest of a message already refused.
            self.overflowed = !last;
            return Ok(None);
        }
        if let Some(kind) = first {
            self.kind = kind;
        }
        if let Err(err) = self.add_fragment(bytes) {
            self.overflowed = !last;
            return Err(err);
        }
        if !last {
            return Ok(None);
        }
        let mut whole = BytesMut::with_capacity(self.fragments_len);
        for fragment in self.fragments.drain(..) {
            whole.extend_from_slice(&fragment);
        }
        self.fragments = Vec::new();
        self.fragments_len = 0;
        match self.kind {
            Kind::Text => text(whole.freeze()).map(Some),
            Kind::Binary => Ok(Some(Received::Binary(whole.freeze()))),
        }
    }
}

fn text(bytes: Bytes) -> Result<Received, ProtocolError> {
    ByteString::try_from(bytes)
        .map(Received::Text)
        .map_err(|err| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, err)))
}

impl Stream for Inbound {
    type Item = Result<Received, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Err(err) = this.read(cx) {
            return Poll::Ready(Some(Err(err)));
        }
        loop {
            let frame = match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => return Poll::Ready(Some(Err(err))),
            };
            if this.buf.is_empty() {
                // Release the buffer between frames (see the module docs).
                this.buf = BytesMut::new();
            }
            match this.message(frame) {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(err) => return Poll::Ready(Some(Err(err))),
            }
        }
        if this.buf.is_empty() {
            this.buf = BytesMut::new();
        }
        if this.closing {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::outbound;
    use actix_codec::Encoder;
    use actix_http::ws::Message;
    use std::task::Waker;

    /// What a client sends: masked frames.
    fn wire(messages: Vec<Message>) -> Bytes {
        let mut codec = Codec::new().client_mode();
        let mut buf = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut buf).unwrap();
        }
        buf.freeze()
    }

    /// Everything the stream yields for these bytes, up to its end.
    fn read_all(
        bytes: Bytes,
        max_frame: usize,
        max_message: usize,
    ) -> Vec<Result<Received, String>> {
        let (out, _body) = outbound::queue(1);
        let mut inbound = Inbound::new(
            Payload::from(bytes),
            out.connection(),
            max_frame,
            max_message,
        );
        let mut cx = Context::from_waker(Waker::noop());
        let mut items = Vec::new();
        loop {
            match Pin::new(&mut inbound).poll_next(&mut cx) {
                Poll::Ready(Some(item)) => items.push(item.map_err(|e| e.to_string())),
                Poll::Ready(None) => return items,
                Poll::Pending => panic!("the payload is complete"),
            }
        }
    }

    fn text(s: &'static str) -> Result<Received, String> {
        Ok(Received::Text(ByteString::from_static(s)))
    }

    #[test]
    fn whole_messages_and_reassembled_fragments() {
        let bytes = wire(vec![
            Message::Text("plain".into()),
            Message::Continuation(Item::FirstText(Bytes::from_static(b"frag"))),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Continuation(Item::Continue(Bytes::new())),
            Message::Continuation(Item::Last(Bytes::from_static(b"ments"))),
        ]);
        assert_eq!(
            read_all(bytes, 1024, 1024),
            vec![
                text("plain"),
                Ok(Received::Ping(Bytes::from_static(b"p"))),
                text("fragments"),
            ]
        );
    }

    #[test]
    fn oversized_frames_and_messages_fail() {
        let bytes = wire(vec![Message::Text("x".repeat(20).into())]);
        let items = read_all(bytes, 10, 10);
        assert_eq!(items, vec![Err(ProtocolError::Overflow.to_string())]);

        let bytes = wire(vec![
            Message::Continuation(Item::FirstText(Bytes::from_static(b"123456"))),
            Message::Continuation(Item::Continue(Bytes::from_static(b"789012"))),
            Message::Continuation(Item::Last(Bytes::from_static(b"3"))),
            Message::Text("after".into()),
        ]);
        let items = read_all(bytes, 10, 10);
        let too_large = ProtocolError::Io(io::Error::other(TOO_LARGE)).to_string();
        assert_eq!(items, vec![Err(too_large), text("after")]);
    }

    #[test]
    fn text_that_is_not_utf8_is_invalid_data() {
        let mut codec = Codec::new().client_mode();
        let mut buf = BytesMut::new();
        codec
            .encode(
                Message::Continuation(Item::FirstText(Bytes::from_static(&[0xff]))),
                &mut buf,
            )
            .unwrap();
        codec
            .encode(Message::Continuation(Item::Last(Bytes::new())), &mut buf)
            .unwrap();
        let (out, _body) = outbound::queue(1);
        let mut inbound = Inbound::new(Payload::from(buf.freeze()), out.connection(), 64, 64);
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Some(Err(ProtocolError::Io(err)))) =
            Pin::new(&mut inbound).poll_next(&mut cx)
        else {
            panic!("an io error")
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
