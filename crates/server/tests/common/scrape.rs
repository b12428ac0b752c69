//! Reading the operations endpoints from tests: raw HTTP requests with chosen headers, and a
//! strict parser of the Prometheus text exposition format (so `/metrics` is checked as a scraper
//! would read it, not by substring).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::WAIT;

/// Sends one HTTP/1.1 GET with `headers` and returns (status code, whole response text).
pub async fn request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        text.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    tcp.write_all(text.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A refused upgrade ends with the response; an accepted one stays open (101), so read only
    // until the end of the headers in that case.
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.starts_with(b"HTTP/1.1 101")
                && response.windows(4).any(|w| w == b"\r\n\r\n")
            {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no HTTP response in time");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    (status, response)
}

/// The headers of a WebSocket upgrade request.
pub const UPGRADE: &[(&str, &str)] = &[
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// The body of an HTTP response (after the blank line), de-chunked if needed.
pub fn body(response: &str) -> String {
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

/// One sample: metric name and its labels (sorted).
pub type SampleKey = (String, BTreeMap<String, String>);

/// Parses the Prometheus text format strictly: every line is a comment (`# HELP`/`# TYPE` with
/// a valid name and type), blank, or a sample `name{label="value",...} number`. Panics with the
/// offending line otherwise.
pub fn parse(text: &str) -> BTreeMap<SampleKey, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.as_slice() {
                ["HELP", name, ..] => assert!(valid_name(name), "bad HELP line {line:?}"),
                ["TYPE", name, kind] => {
                    assert!(valid_name(name), "bad TYPE line {line:?}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(kind),
                        "bad type in {line:?}"
                    );
                }
                _ => {}
            }
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                (name, parse_labels(inner, line))
            }
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        let previous = samples.insert((name.to_owned(), labels), value);
        assert!(previous.is_none(), "duplicate sample {line:?}");
    }
    samples
}

fn parse_labels(mut inner: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !inner.is_empty() {
        let (name, rest) = inner
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(valid_name(name), "bad label name in {line:?}");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.insert(name.to_owned(), value);
        inner = rest[end + 1..].trim_start_matches(',');
    }
    labels
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Scrapes `/metrics` and parses it.
pub async fn scrape(addr: SocketAddr) -> BTreeMap<SampleKey, f64> {
    let (status, response) = request(addr, "/metrics", &[]).await;
    assert_eq!(status, 200, "{response}");
    parse(&body(&response))
}

/// The value of `name` with exactly `labels` (0 when absent: a labelled family has no series
/// until first recorded into).
pub fn value(samples: &BTreeMap<SampleKey, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .get(&(name.to_owned(), labels))
        .copied()
        .unwrap_or(0.0)
}
