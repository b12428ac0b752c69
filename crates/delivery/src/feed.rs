//! Per-device delivery state, kept by the dispatcher for every device online on this instance.
//! Store operations for one device run one at a time (the dispatcher tracks which are running,
//! apart from the feeds, since an operation can outlive its feed), which keeps its messages in
//! inbox order and makes a reconnect's catch-up see everything its predecessor was given. The
//! one exception: with a store that runs calls in order, the reads that go with appends
//! overlap (`Feed::reserved`, the tickets), and their results are handed out in the order the
//! reads were made, which is the order of the messages they hold.

use actix::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use titan_protocol::MessageJson;
use titan_store::{Delivered, Position, StoreError};

use crate::session_link::{ConnId, Deliver};

/// Where a device's feed stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Re-sending what the device had been given but not acked (after a (re)connect), page by
    /// page after `after`.
    CatchUp { after: Option<Position> },
    /// Sending new messages as they arrive.
    Live,
}

/// The next store operation a feed needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Claim every pending message after `after` (reconnect catch-up).
    CatchUp {
        after: Option<Position>,
        limit: usize,
    },
    /// Claim pending messages not acked within the ack timeout.
    Redeliver { limit: usize },
    /// Read messages the device has not been given.
    ReadNew { limit: usize },
}

/// One online device.
pub struct Feed {
    pub conn: ConnId,
    pub deliver: Recipient<Deliver>,
    /// Sent and not yet acked, with when they were sent.
    pub inflight: BTreeMap<Position, Instant>,
    pub phase: Phase,
    /// Something may be waiting: pump again when the running operation ends.
    pub dirty: bool,
    /// With `push.after_unacked` only: the messages given to the device and not acked
    /// (`dispatcher::unacked`).
    pub unacked: BTreeMap<Position, Unacked>,
    /// Window slots promised to this feed's reads of new messages still running (their limits),
    /// so that reads which overlap stay inside the window together.
    pub reserved: usize,
    /// The ticket of this feed's next read of new messages, and of the next one whose result
    /// may go to the session: each read takes a ticket when it starts, and a result that comes
    /// back before an earlier read's waits in `parked`.
    pub next_ticket: u64,
    pub next_handed: u64,
    pub parked: BTreeMap<u64, ReadResult>,
}

/// A read of new messages that ended, waiting for its turn to go to the session.
pub struct ReadResult {
    pub limit: usize,
    pub result: Result<Vec<Delivered>, StoreError>,
}

/// A message given to a device and not acked, for `push.after_unacked`.
#[derive(Debug, Clone)]
pub struct Unacked {
    /// When it was first given (a redelivery does not restart the delay).
    pub first: Instant,
    /// The message, until it is pushed; `None` once pushed, so a redelivery does not push it
    /// again.
    pub message: Option<MessageJson>,
}

impl Feed {
    pub fn new(conn: ConnId, deliver: Recipient<Deliver>) -> Self {
        Self {
            conn,
            deliver,
            inflight: BTreeMap::new(),
            phase: Phase::CatchUp { after: None },
            dirty: true,
            unacked: BTreeMap::new(),
            reserved: 0,
            next_ticket: 0,
            next_handed: 0,
            parked: BTreeMap::new(),
        }
    }

    /// Starts a read of new messages of up to `limit`: reserves its part of the window and
    /// returns its ticket.
    pub fn start_read(&mut self, limit: usize) -> u64 {
        self.reserved += limit;
        self.next_ticket += 1;
        self.next_ticket - 1
    }

    /// Window slots free for a new read: not in flight, not promised to a running read.
    pub fn budget(&self, window: usize) -> usize {
        window.saturating_sub(self.inflight.len() + self.reserved)
    }

    /// True when something in flight has waited longer than `ack_timeout`.
    pub fn redelivery_due(&self, now: Instant, ack_timeout: Duration) -> bool {
        self.overdue(now, ack_timeout) > 0
    }

    /// How many in-flight messages have waited longer than `ack_timeout`.
    fn overdue(&self, now: Instant, ack_timeout: Duration) -> usize {
        self.inflight
            .values()
            .filter(|sent| now.saturating_duration_since(**sent) >= ack_timeout)
            .count()
    }

    /// What to do next, or `None` when the device is up to date or its window is full.
    ///
    /// Every step stays within the window. A redelivery claims no more than what is overdue:
    /// the device's stale pending messages are its overdue in-flight ones, except, during a
    /// catch-up, older pending messages the catch-up has not reached yet (after a restart with a
    /// smaller window), which a larger claim would send early, out of order and past the window.
    /// A catch-up claims only the free part of the window, since a device can have more pending
    /// than the window (a restart with a smaller one); the rest follows as acks free slots.
    pub fn next_step(&self, now: Instant, ack_timeout: Duration, window: usize) -> Option<Step> {
        let overdue = self.overdue(now, ack_timeout);
        if overdue > 0 {
            return Some(Step::Redeliver { limit: overdue });
        }
        let budget = self.budget(window);
        match self.phase {
            _ if budget == 0 => None,
            Phase::CatchUp { after } => Some(Step::CatchUp {
                after,
                limit: budget,
            }),
            Phase::Live if self.dirty => Some(Step::ReadNew { limit: budget }),
            Phase::Live => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Deliver> for Sink {
        type Result = ();
        fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
    }

    /// A new feed catches up first; a full window stops reading new messages; an old in-flight
    /// message makes redelivery the next step.
    #[actix_rt::test]
    async fn steps() {
        let mut feed = Feed::new(ConnId(1), Sink.start().recipient());
        let now = Instant::now();
        let ack = Duration::from_secs(30);
        assert_eq!(
            feed.next_step(now, ack, 2),
            Some(Step::CatchUp {
                after: None,
                limit: 2
            })
        );
        feed.phase = Phase::Live;
        assert_eq!(
            feed.next_step(now, ack, 2),
            Some(Step::ReadNew { limit: 2 })
        );
        feed.inflight.insert(Position { ms: 1, seq: 1 }, now);
        feed.inflight.insert(Position { ms: 1, seq: 2 }, now);
        assert_eq!(feed.next_step(now, ack, 2), None);
        assert_eq!(
            feed.next_step(now + ack, ack, 2),
            Some(Step::Redeliver { limit: 2 })
        );
    }
}
