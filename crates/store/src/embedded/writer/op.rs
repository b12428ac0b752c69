//! The requests the writer serves ([`Op`]), each with the channel its answer goes back on.

use titan_protocol::{DeviceId, UserId};
use tokio::sync::oneshot;

use crate::embedded::push_tokens::PushOp;
use crate::embedded::users::UserOp;
use crate::error::StoreError;
use crate::inbox::{
    Appended, AppendedAndRead, Delivered, DeviceAcks, LiveRead, NewMessage, Position,
};

/// Where an operation's answer goes.
pub(in crate::embedded) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One request to the writer.
pub(in crate::embedded) enum Op {
    Append {
        batch: Vec<NewMessage>,
        reply: Reply<Vec<Appended>>,
    },
    /// The appends of `batches` (each on its own, in order) and, when one succeeds, `read_new`
    /// for each of `reads`, in one transaction.
    AppendRead {
        batches: Vec<Vec<NewMessage>>,
        reads: Vec<LiveRead>,
        reply: Reply<AppendedAndRead>,
    },
    ReadNew {
        user: UserId,
        device: DeviceId,
        limit: usize,
        reply: Reply<Vec<Delivered>>,
    },
    ClaimPending {
        user: UserId,
        device: DeviceId,
        before_ms: u64,
        after_seq: u64,
        limit: usize,
        reply: Reply<Vec<Delivered>>,
    },
    Ack {
        user: UserId,
        device: DeviceId,
        positions: Vec<Position>,
        reply: Reply<u64>,
    },
    /// Several devices' acks (`Inbox::ack_many`).
    AckMany {
        acks: Vec<DeviceAcks>,
        reply: Reply<u64>,
    },
    Depth {
        user: UserId,
        reply: Reply<u64>,
    },
    Trim {
        reply: Reply<u64>,
    },
    Ping {
        reply: Reply<()>,
    },
    /// Users and revocations (`users`).
    Users(UserOp),
    /// A push registry operation (`push_tokens`).
    Push(PushOp),
    /// Sent by the committer thread, not by callers: the checkpoint's commit it ran ended
    /// (`commit`); `batch` is the flush batch that puts it on disk.
    Committed {
        result: Result<(), String>,
        batch: u64,
    },
}

impl Op {
    /// Whether it may change what the next checkpoint writes.
    pub(super) fn writes(&self) -> bool {
        match self {
            Op::Depth { .. } | Op::Ping { .. } | Op::Push(PushOp::Devices { .. }) => false,
            Op::Users(op) => !op.is_read(),
            _ => true,
        }
    }

    /// Whether it appends a message with a client id.
    pub(super) fn has_client_ids(&self) -> bool {
        let any = |batch: &Vec<NewMessage>| batch.iter().any(|new| new.client_id.is_some());
        match self {
            Op::Append { batch, .. } => any(batch),
            Op::AppendRead { batches, .. } => batches.iter().any(any),
            _ => false,
        }
    }

    /// Answers an operation that never ran. A caller that stopped waiting needs no answer.
    pub(super) fn fail(self, reason: &str) {
        let err = StoreError::unavailable(reason);
        match self {
            Op::Append { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Op::AppendRead { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Op::ReadNew { reply, .. } | Op::ClaimPending { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Op::Ack { reply, .. }
            | Op::AckMany { reply, .. }
            | Op::Depth { reply, .. }
            | Op::Trim { reply } => {
                let _ = reply.send(Err(err));
            }
            Op::Ping { reply } => {
                let _ = reply.send(Err(err));
            }
            Op::Users(op) => op.fail(err),
            Op::Push(op) => op.fail(err),
            // Nobody waits for an answer to it.
            Op::Committed { .. } => {}
        }
    }
}
