//! Running an actor's I/O off its context.
//!
//! actix polls every future spawned into an actor's context each time the actor wakes up (its
//! own docs assume there are few). The Dispatcher runs a store operation per device and per
//! `msg.send`, hundreds at once under load, and with the Redis store each of them is costly to
//! poll (timer, connection manager, semaphore): every message to the actor re-polled them all,
//! which made the Redis path spend most of its CPU polling futures that were not ready.
//! [`run_then`] runs the future as its own task instead, polled only when it can progress, and
//! hands its output back to the actor as a [`Resume`] message.

use actix::prelude::*;
use std::future::Future;

/// What runs with the actor when an operation started by [`run_then`] has ended.
type Continuation<A> = Box<dyn FnOnce(&mut A, &mut <A as Actor>::Context) + Send>;

/// A continuation to run with the actor, once an operation started by [`run_then`] ended.
pub struct Resume<A: Actor>(Continuation<A>);

impl<A: Actor> Message for Resume<A> {
    type Result = ();
}

impl<A: Actor> Resume<A> {
    /// Runs the continuation; the actor's `Handler<Resume<Self>>` calls this.
    pub fn run(self, act: &mut A, ctx: &mut A::Context) {
        (self.0)(act, ctx)
    }
}

/// Runs `fut` as a task on the current arbiter, then `then` with its output and the actor (as
/// a message, so in order with the actor's other messages). If the actor has stopped meanwhile,
/// `then` does not run.
pub fn run_then<A, T>(
    ctx: &mut Context<A>,
    fut: impl Future<Output = T> + 'static,
    then: impl FnOnce(T, &mut A, &mut Context<A>) + Send + 'static,
) where
    A: Actor<Context = Context<A>> + Handler<Resume<A>>,
    T: Send + 'static,
{
    let addr = ctx.address();
    actix::spawn(async move {
        let out = fut.await;
        addr.do_send(Resume::<A>(Box::new(move |act, ctx| then(out, act, ctx))));
    });
}
