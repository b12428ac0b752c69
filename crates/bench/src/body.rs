//! The message body of every benchmark message: `tag:seq:sent_us:` then padding to the asked
//! size. The send time travels inside the message so the receiver measures end-to-end latency
//! without trusting the server's clock; `tag` and `seq` find lost and duplicated messages.

use std::time::Instant;

/// A monotonic clock shared by senders and receivers of one run (one process), in
/// microseconds since the run began.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Microseconds since [`Clock::start`].
    pub fn now_us(&self) -> u64 {
        self.us_at(Instant::now())
    }

    /// `at` in microseconds since the start (0 for instants before it).
    pub fn us_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }
}

/// What a benchmark body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Which stream the message belongs to (a pair, a round...).
    pub tag: u64,
    /// Its number within the stream, from 0.
    pub seq: u64,
    /// [`Clock::now_us`] when it was sent.
    pub sent_us: u64,
}

/// The body for `stamp`, padded with `x` to `size` bytes (longer when the stamp itself is).
pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut body = format!("{}:{}:{}:", stamp.tag, stamp.seq, stamp.sent_us);
    if body.len() < size {
        body.extend(std::iter::repeat_n('x', size - body.len()));
    }
    body
}

/// The stamp of a benchmark body; `None` for any other text.
pub fn decode(body: &str) -> Option<Stamp> {
    let mut parts = body.splitn(4, ':');
    let tag = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(Stamp { tag, seq, sent_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body decodes to the stamp it was made from and has the asked size.
    #[test]
    fn round_trip_and_size() {
        let stamp = Stamp {
            tag: 7,
            seq: 123_456,
            sent_us: 99,
        };
        let body = encode(stamp, 100);
        assert_eq!(body.len(), 100);
        assert_eq!(decode(&body), Some(stamp));
        assert_eq!(decode("hello"), None);
        assert_eq!(decode(&encode(stamp, 0)), Some(stamp));
    }
}
