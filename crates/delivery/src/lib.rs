//! Message flow inside one Titan instance: who is online, and getting every stored message to
//! every device of its recipient at least once.
//!
//! - [`router`]: the [`Router`] actor. Knows which (user, device) is online on which session;
//!   makes the newest session of a (user, device) win; tells [`Dispatcher`] when devices come
//!   and go.
//! - [`dispatcher`]: the [`Dispatcher`] actor (the design's "Delivery actor"). Persists
//!   `msg.send` batches, then feeds each online device from the store, tracks what is in flight,
//!   and redelivers what is not acked in time.
//! - [`feed`]: the per-device delivery state the dispatcher keeps (plain data, no actor).
//! - [`session_link`]: the messages this crate sends up to a session ([`Deliver`], [`Kick`]) and
//!   the connection id type. Sessions implement the handlers; this crate never names their type.
//! - [`envelope`]: turning a client's outgoing message into a stored [`titan_protocol::Message`]
//!   (server id, sender, time, echo bot).
//! - [`push`]: offline delivery by push (FCM, APNs): the [`Pusher`] actor the dispatcher hands
//!   every stored batch to, and the providers behind one small trait.
//! - [`error`]: the crate's error type, [`DeliveryError`].
//! - `hashing`: the fast hasher of the per-message maps.
//! - [`resume`]: running an actor's I/O as its own task and resuming the actor with the output
//!   (actix re-polls every future in an actor's context on each wake-up).
//! - [`metrics`]: [`Metrics`], every Prometheus family of the server (recorded here, in the
//!   sessions, and exposed by the server's `/metrics`).
//! - [`instrumented`]: [`InstrumentedInbox`], any store with its calls timed and errors counted.

pub mod dispatcher;
pub mod envelope;
pub mod error;
pub mod feed;
mod hashing;
pub mod instrumented;
pub mod metrics;
pub mod push;
pub mod resume;
pub mod router;
pub mod session_link;

pub use dispatcher::{
    Acked, DeviceOffline, DeviceOnline, Dispatcher, DispatcherConfig, Submit, SubmitMany,
};
pub use error::DeliveryError;
pub use instrumented::InstrumentedInbox;
pub use metrics::Metrics;
pub use push::{PushConfig, PushStored, PushUnacked, Pusher};
pub use router::{Attach, CheckRevoked, Detach, RevokeUser, Router};
pub use session_link::{ConnId, Deliver, Kick};
