//! Offline delivery by push: a message for a device with no live session anywhere goes to that
//! device's push service, once, when it is stored.
//!
//! - [`provider`]: the [`PushProvider`] trait every service implements, the [`Notification`]
//!   it sends and the classified [`PushError`].
//! - [`fcm`] (with [`service_account`]): FCM HTTP v1 over reqwest, OAuth2 by signed assertion.
//! - [`apns`]: APNs over HTTP/2 (reqwest), token (`.p8`) authentication by an ES256 JWT.
//! - [`pusher`]: the [`Pusher`] actor: finds offline devices with tokens, bounds and retries
//!   provider requests, forgets dead tokens.
//! - [`stats`]: [`PushStats`], outcome counters by provider for metrics.

pub mod apns;
pub mod fcm;
pub mod provider;
pub mod pusher;
pub mod service_account;
pub mod stats;

pub use apns::{ApnsConfig, ApnsProvider};
pub use fcm::{FcmConfig, FcmProvider};
pub use provider::{Notification, PushError, PushProvider, Sent};
pub use pusher::{PushConfig, PushStored, PushUnacked, Pusher};
pub use stats::{PushCount, PushOutcome, PushStats};
