//! Micro-benchmarks of the codec on the hot path: parsing a `msg.send` frame into a typed
//! command (the general path, and the fast path a signed-in session takes), encoding a message
//! as the stores keep it, and writing a `msg.recv` request. `cargo bench -p titan-protocol`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use titan_protocol::jsonrpc::{Frame, Incoming, ServerRequest, parse_frame};
use titan_protocol::{
    ClientCommand, Id, Message, MessageId, MessageJson, UserId, parse_send_request,
};

/// A 100-byte body, the size the load benchmarks use.
fn body() -> String {
    "x".repeat(100)
}

fn send_frame(count: usize) -> String {
    let items: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"to":"user-{i}","message":"{}"}}"#, body()))
        .collect();
    format!(
        r#"{{"jsonrpc":"2.0","method":"msg.send","params":[{}],"id":42}}"#,
        items.join(",")
    )
}

fn parse_send(text: &str) -> ClientCommand {
    match parse_frame(text, 100).unwrap() {
        Frame::Single(Incoming::Request { method, params, .. }) => {
            ClientCommand::parse(&method, params).unwrap()
        }
        other => panic!("not a request: {other:?}"),
    }
}

fn messages(count: usize) -> Vec<Message> {
    (0..count)
        .map(|i| Message {
            id: MessageId::new(format!("0193a5c2-7d1e-7c3a-9b1f-{i:012}")).unwrap(),
            from: UserId::new("alice").unwrap(),
            to: UserId::new("bob").unwrap(),
            time: "2026-11-29T01:02:03.456Z".to_owned(),
            message: body(),
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let one = send_frame(1);
    c.bench_function("parse msg.send (1 message)", |b| {
        b.iter(|| parse_send(black_box(&one)))
    });
    c.bench_function("parse msg.send (1 message, fast path)", |b| {
        b.iter(|| parse_send_request(black_box(&one)).unwrap())
    });
    let hundred = send_frame(100);
    c.bench_function("parse msg.send (100 messages)", |b| {
        b.iter(|| parse_send(black_box(&hundred)))
    });
    c.bench_function("parse msg.send (100 messages, fast path)", |b| {
        b.iter(|| parse_send_request(black_box(&hundred)).unwrap())
    });
    let recv_one = messages(1);
    c.bench_function("encode a message for the store", |b| {
        b.iter(|| MessageJson::encode(black_box(&recv_one[0])).unwrap())
    });
    c.bench_function("write msg.recv (1 message)", |b| {
        b.iter(|| {
            ServerRequest::new(Some(Id::from(7u64)), "msg.recv", black_box(&recv_one)).to_text()
        })
    });
    let recv_batch = messages(32);
    c.bench_function("write msg.recv (32 messages)", |b| {
        b.iter(|| {
            ServerRequest::new(Some(Id::from(7u64)), "msg.recv", black_box(&recv_batch)).to_text()
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
