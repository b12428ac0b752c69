//! Many clients at once: every ACKed msg.send reaches every device of its recipient, once per
//! device when everything is acked promptly, in each sender's order, with nothing lost.

use crate::common;

use common::TestServer;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use titan_client::{Client, ClientOptions, Outgoing};
use titan_protocol::{Message, MessageId};

const USERS: usize = 40;
/// The first users also have a second device, a tablet, so fan-out to devices (and, in one test,
/// reconnects) are exercised under load.
const TABLETS: usize = 8;
const PER_SENDER: usize = 50;
/// Of each sender's messages, those from here on go out as msg.send batches of [`BATCH`].
const SINGLES: usize = 30;
const BATCH: usize = 10;
/// Upper bound for the whole exchange (it takes a few seconds in a debug build).
const DEADLINE: Duration = Duration::from_secs(25);

fn user(i: usize) -> String {
    format!("u{i:02}")
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What user `i` sends: messages to random other users, bodies unique across the test and
/// numbered per sender.
fn plan(i: usize) -> Vec<Outgoing> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
    (0..PER_SENDER)
        .map(|n| {
            let mut to = rng.below(USERS - 1);
            if to >= i {
                to += 1;
            }
            Outgoing::new(user(to), format!("{}:{n:03}", user(i)))
        })
        .collect()
}

/// An auto-acking client authenticated as (user of `token`, `device`).
async fn connect(url: &str, token: &str, device: &str) -> Arc<Client> {
    connect_acking(url, token, device, true).await
}

/// A client authenticated as (user of `token`, `device`); with `auto_ack` it acks each
/// delivery as it arrives, before the test has taken it.
async fn connect_acking(url: &str, token: &str, device: &str, auto_ack: bool) -> Arc<Client> {
    let options = ClientOptions {
        auto_ack,
        ..ClientOptions::default()
    };
    let c = Client::connect_with(url, options).await.unwrap();
    c.authenticate(token, Some(device)).await.unwrap();
    Arc::new(c)
}

/// Sends the plan: singles one msg.send each, the rest in batches; every call must be ACKed.
async fn send_plan(c: Arc<Client>, plan: Vec<Outgoing>) {
    let (singles, batched) = plan.split_at(SINGLES);
    for m in singles {
        c.send_many(std::slice::from_ref(m)).await.unwrap();
    }
    for batch in batched.chunks(BATCH) {
        c.send_many(batch).await.unwrap();
    }
}

/// Collects deliveries (auto-acked) until `expected` messages arrived.
async fn collect(c: Arc<Client>, expected: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < expected {
        let d = c
            .next_delivery()
            .await
            .expect("connection closed while receiving");
        got.extend(d.messages);
    }
    got
}

/// Like [`collect`], on a tablet that closes its connection and reconnects `reconnects` times
/// along the way. Returns the distinct messages (by id) in the order first seen: a reconnect may
/// repeat what was in flight, and clients dedupe by id. The tablet acks a delivery only once it
/// has taken it: an auto-ack would also ack deliveries still buffered, unread, when it closes,
/// and those would then be lost to the test though the server did its part.
async fn collect_reconnecting(
    url: String,
    token: String,
    expected: usize,
    reconnects: usize,
) -> Vec<Message> {
    let mut got = Vec::new();
    let mut seen: HashSet<MessageId> = HashSet::new();
    for round in 0..=reconnects {
        let c = connect_acking(&url, &token, "tablet", false).await;
        let target = expected * (round + 1) / (reconnects + 1);
        while got.len() < target {
            let Some(d) = c.next_delivery().await else {
                panic!("connection closed while receiving: {:?}", c.closed().await);
            };
            for m in &d.messages {
                if seen.insert(m.id.clone()) {
                    got.push(m.clone());
                }
            }
            d.ack().await.unwrap();
        }
        c.close().await.unwrap();
    }
    got
}

/// One device's view at the end of an exchange.
struct Device {
    user: usize,
    /// Open at the end (phones; tablets that reconnected have closed their last connection).
    client: Option<Arc<Client>>,
    got: Vec<Message>,
}

/// Every user's phone sends its plan, concurrently, while every device receives; tablets close
/// and reconnect `reconnects` times meanwhile. Returns each device's messages and, per user, the
/// bodies it must get.
async fn exchange(server: &TestServer, reconnects: usize) -> (Vec<Device>, Vec<BTreeSet<String>>) {
    let plans: Vec<Vec<Outgoing>> = (0..USERS).map(plan).collect();
    let mut expected = vec![BTreeSet::new(); USERS];
    for m in plans.iter().flatten() {
        let to: usize = m.to[1..].parse().unwrap();
        expected[to].insert(m.message.clone());
    }

    let mut phones = Vec::new();
    for i in 0..USERS {
        phones.push(connect(&server.url, &server.token(&user(i)), "phone").await);
    }
    let mut tablets = Vec::new();
    for (i, want) in expected.iter().enumerate().take(TABLETS) {
        let (url, token, n) = (server.url.clone(), server.token(&user(i)), want.len());
        tablets.push(tokio::spawn(collect_reconnecting(
            url, token, n, reconnects,
        )));
    }
    let receivers: Vec<_> = phones
        .iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(collect(c.clone(), expected[i].len())))
        .collect();
    let senders: Vec<_> = phones
        .iter()
        .zip(plans)
        .map(|(c, plan)| tokio::spawn(send_plan(c.clone(), plan)))
        .collect();

    let everything = async {
        for s in senders {
            s.await.unwrap();
        }
        let mut devices = Vec::new();
        for (i, (r, phone)) in receivers.into_iter().zip(phones).enumerate() {
            let got = r.await.unwrap();
            devices.push(Device {
                user: i,
                client: Some(phone),
                got,
            });
        }
        for (i, t) in tablets.into_iter().enumerate() {
            devices.push(Device {
                user: i,
                client: None,
                got: t.await.unwrap(),
            });
        }
        devices
    };
    let devices = tokio::time::timeout(DEADLINE, everything)
        .await
        .expect("not every message arrived in time");
    (devices, expected)
}

/// Checks that each device got exactly its user's messages, none twice, each sender's in order,
/// and that every device of a user saw a message under the same server id.
fn check(devices: &[Device], expected: &[BTreeSet<String>]) {
    let mut id_of: HashMap<&str, &str> = HashMap::new();
    for device in devices {
        let who = user(device.user);
        let got = &device.got;
        let ids: BTreeSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), got.len(), "{who} got a message twice");
        let bodies: BTreeSet<String> = got.iter().map(|m| m.message.clone()).collect();
        assert_eq!(
            bodies, expected[device.user],
            "{who} did not get exactly its messages"
        );
        let mut last: HashMap<&str, &str> = HashMap::new();
        for m in got {
            assert_eq!(m.to.as_str(), who);
            assert!(m.message.starts_with(m.from.as_str()), "{m:?}");
            if let Some(prev) = last.insert(m.from.as_str(), m.message.as_str()) {
                assert!(
                    prev < m.message.as_str(),
                    "{who}: {prev} after {}",
                    m.message
                );
            }
            let id = *id_of.entry(m.message.as_str()).or_insert(m.id.as_str());
            assert_eq!(
                id,
                m.id.as_str(),
                "devices disagree on the id of {}",
                m.message
            );
        }
    }
    assert_eq!(id_of.len(), USERS * PER_SENDER);
}

/// Fails if any open device gets anything more within a short wait (everything was acked at
/// once and the ack timeout is 30 s, so nothing may come again).
async fn assert_quiet(devices: &[Device]) {
    let quiet = devices
        .iter()
        .filter_map(|d| d.client.as_ref().map(|c| (d.user, c)))
        .map(|(i, c)| async move {
            let extra = c
                .next_delivery_timeout(Duration::from_millis(500))
                .await
                .unwrap();
            assert!(extra.is_none(), "{} got more: {extra:?}", user(i));
        });
    futures_util::future::join_all(quiet).await;
}

/// 40 users (8 also on a tablet) each send 50 messages to random others, concurrently, as single
/// sends and batches, all receivers acking: every device gets exactly its messages, once each,
/// each sender's in order, under one server id per message, and then nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_every_message_exactly_once() {
    let server = TestServer::start();
    let (devices, expected) = exchange(&server, 0).await;
    check(&devices, &expected);
    assert_quiet(&devices).await;
}

/// The same load while every tablet drops its connection and reconnects three times: after
/// deduplication by id nothing is lost, each sender's order holds, the phones see each message
/// exactly once, and nothing more arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_devices_lose_nothing_under_load() {
    let server = TestServer::start();
    let (devices, expected) = exchange(&server, 3).await;
    check(&devices, &expected);
    assert_quiet(&devices).await;
}
