//! The relay of [`floor`](super): one thread with its own single-threaded runtime, standing in
//! for a server that does nothing but move frames.

use super::{ACCEPT_TIMEOUT, fill, frame, io_error, send, take_frames};
use crate::error::BenchError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The running relay: its address, its thread id (for its CPU time) and its thread.
pub(super) struct Relay {
    pub addr: std::net::SocketAddr,
    pub tid: u32,
    pub thread: std::thread::JoinHandle<Result<(), BenchError>>,
}

/// Starts the relay on a thread of its own with a single-threaded runtime.
pub(super) fn start_relay(pairs: usize) -> Result<Relay, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_error("floor listen"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_error("floor listen"))?;
    let addr = listener.local_addr().map_err(io_error("floor listen"))?;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("floor-relay".into())
        .spawn(move || {
            let _ = tid_tx.send(own_thread_id());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_error("floor runtime"))?;
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).map_err(io_error("floor listen"))?;
                relay(listener, pairs).await
            })
        })
        .map_err(io_error("floor thread"))?;
    let tid = tid_rx
        .recv()
        .ok()
        .flatten()
        .ok_or_else(|| BenchError::system("floor thread", "no thread id"))?;
    Ok(Relay { addr, tid, thread })
}

/// This thread's id, from `/proc/thread-self` (`PID/task/TID`).
fn own_thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// The relay: accepts `2 * pairs` connections, then moves frames until they all close.
async fn relay(listener: TcpListener, pairs: usize) -> Result<(), BenchError> {
    let pairs = tokio::time::timeout(ACCEPT_TIMEOUT, accept_pairs(listener, pairs))
        .await
        .map_err(|_| BenchError::system("floor relay", "not every connection came"))??;
    let mut tasks = tokio::task::JoinSet::new();
    for (sender, receiver) in pairs {
        spawn_pair(&mut tasks, sender, receiver);
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| BenchError::system("floor relay task", e))??;
    }
    Ok(())
}

/// Accepts `2 * pairs` connections and puts each in its place by its first frame.
async fn accept_pairs(
    listener: TcpListener,
    pairs: usize,
) -> Result<Vec<(TcpStream, TcpStream)>, BenchError> {
    let mut senders: Vec<Option<TcpStream>> = (0..pairs).map(|_| None).collect();
    let mut receivers: Vec<Option<TcpStream>> = (0..pairs).map(|_| None).collect();
    for _ in 0..2 * pairs {
        let (mut socket, _) = listener.accept().await.map_err(io_error("floor accept"))?;
        socket
            .set_nodelay(true)
            .map_err(io_error("floor nodelay"))?;
        let mut hello = [0u8; 7];
        socket
            .read_exact(&mut hello)
            .await
            .map_err(io_error("floor hello"))?;
        let index = u32::from_le_bytes([hello[3], hello[4], hello[5], hello[6]]) as usize;
        let slot = match hello[2] {
            b's' => senders.get_mut(index),
            _ => receivers.get_mut(index),
        };
        let slot = slot.ok_or_else(|| BenchError::system("floor hello", "pair out of range"))?;
        *slot = Some(socket);
    }
    senders
        .into_iter()
        .zip(receivers)
        .map(|pair| match pair {
            (Some(sender), Some(receiver)) => Ok((sender, receiver)),
            _ => Err(BenchError::system(
                "floor relay",
                "an end of a pair connected twice, the other not at all",
            )),
        })
        .collect()
}

/// The relay's two tasks for a pair: the sender's messages are acked and forwarded (the acks
/// and copies of one read in one write each), the receiver's acks read and dropped.
fn spawn_pair(
    tasks: &mut tokio::task::JoinSet<Result<(), BenchError>>,
    sender: TcpStream,
    receiver: TcpStream,
) {
    let (mut from_sender, mut to_sender) = sender.into_split();
    let (mut from_receiver, mut to_receiver) = receiver.into_split();
    tasks.spawn(async move {
        let (mut buf, mut acks, mut forward) = (Vec::new(), Vec::new(), Vec::new());
        while fill(&mut from_sender, &mut buf).await? {
            take_frames(&mut buf, |body| {
                frame(&mut acks, body.get(..8).unwrap_or(body));
                frame(&mut forward, body);
            });
            if !acks.is_empty() {
                send(&mut to_sender, &acks).await?;
                send(&mut to_receiver, &forward).await?;
                acks.clear();
                forward.clear();
            }
        }
        let _ = to_receiver.shutdown().await;
        Ok(())
    });
    tasks.spawn(async move {
        let mut buf = Vec::new();
        while fill(&mut from_receiver, &mut buf).await? {
            take_frames(&mut buf, |_| {});
        }
        Ok(())
    });
}
