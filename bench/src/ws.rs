//! A lean `/ws` client for many sockets: a TCP connection from a chosen
//! 127.0.0.x source address, `Authorization: Bearer`, small buffers, the
//! `hello` read and checked, then frames parsed only as far as a scenario
//! needs (id, type, ts). [`SeqTracker`] is the loss and duplicate detector.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::{Result, err};

/// Longest wait for the TCP connect, the upgrade and the `hello`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

pub type Stream = WebSocketStream<TcpStream>;

/// The `hello` control frame.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    pub epoch: String,
    pub head: i64,
}

/// An open socket, its `hello` read.
pub struct Ws {
    pub stream: Stream,
    pub hello: Hello,
    /// From the start of the TCP connect to the `hello` frame.
    pub connect_time: Duration,
}

/// Why a connect failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the upgrade with this HTTP status (429: too
    /// many sockets for the user).
    Refused(u16),
    Other(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(status) => write!(f, "upgrade refused with HTTP {status}"),
            ConnectError::Other(why) => f.write_str(why),
        }
    }
}

/// Source addresses 127.0.0.1 .. 127.0.0.n for connection `i`, so that many
/// sockets do not run out of ephemeral ports of one address.
pub fn source_address(i: usize, spread: usize) -> Ipv4Addr {
    let n = u8::try_from(i % spread.clamp(1, 250)).unwrap_or(0);
    Ipv4Addr::new(127, 0, 0, 1 + n)
}

/// The client's buffers: small, like the server's, so thousands of idle
/// sockets cost the bench little memory.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Opens `/ws` on `base` (`http://127.0.0.1:port`) with a Bearer token and
/// extra query (e.g. `since=5&epoch=...`), from `source`.
pub async fn connect(
    base: &str,
    token: &str,
    query: &str,
    source: Ipv4Addr,
) -> std::result::Result<Ws, ConnectError> {
    let started = Instant::now();
    let fut = connect_inner(base, token, query, source);
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(Ok((stream, hello))) => Ok(Ws {
            stream,
            hello,
            connect_time: started.elapsed(),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::Other(format!(
            "no hello within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

async fn connect_inner(
    base: &str,
    token: &str,
    query: &str,
    source: Ipv4Addr,
) -> std::result::Result<(Stream, Hello), ConnectError> {
    let other = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| ConnectError::Other(format!("{what}: {e}"))
    };
    let host = base.strip_prefix("http://").unwrap_or(base);
    let server: SocketAddr = host
        .parse()
        .map_err(|_| ConnectError::Other(format!("not an address: {host}")))?;
    let socket = TcpSocket::new_v4().map_err(other("socket"))?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(other(&format!("bind {source}")))?;
    let tcp = socket.connect(server).await.map_err(other("connect"))?;
    tcp.set_nodelay(true).map_err(other("nodelay"))?;
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let mut request = format!("ws://{host}/ws{query}")
        .into_client_request()
        .map_err(|e| ConnectError::Other(format!("request: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| ConnectError::Other(format!("token header: {e}")))?;
    request.headers_mut().insert("authorization", bearer);
    let (mut stream, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config()))
        .await
        .map_err(|e| match e {
            WsError::Http(response) => ConnectError::Refused(response.status().as_u16()),
            other => ConnectError::Other(format!("handshake: {other}")),
        })?;
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Control<Hello> = serde_json::from_str(text.as_str()).map_err(|e| {
                    ConnectError::Other(format!("the first frame is not hello ({e}): {text}"))
                })?;
                if frame.kind != "hello" {
                    return Err(ConnectError::Other(format!(
                        "the first frame is not hello: {text}"
                    )));
                }
                return Ok((stream, frame.data));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => {
                return Err(ConnectError::Other(format!("unexpected first frame: {other:?}")));
            }
            Some(Err(e)) => return Err(ConnectError::Other(format!("read hello: {e}"))),
            None => return Err(ConnectError::Other("closed before hello".into())),
        }
    }
}

#[derive(Deserialize)]
struct Control<T> {
    #[serde(rename = "type")]
    kind: String,
    data: T,
}

/// What a scenario needs of a frame: event frames have an id and a ts.
#[derive(Debug, Deserialize)]
pub struct Head {
    pub id: Option<i64>,
    #[serde(rename = "type")]
    pub kind: String,
    pub ts: Option<String>,
    #[allow(dead_code)]
    data: IgnoredAny,
}

/// What came off a socket.
pub enum Frame {
    /// A text frame (event or control), parsed as far as [`Head`]; `text`
    /// is kept for scenarios that read the data.
    Text { head: Head, text: String },
    /// The server closed the socket (with this code, if any).
    Closed(Option<u16>),
    /// The connection ended without a close frame, or failed.
    Ended(String),
}

impl Ws {
    /// The next text frame (pings are answered by the library), `None`
    /// after `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(next) => next,
            };
            return Some(match next {
                None => Frame::Ended("end of stream".into()),
                Some(Err(e)) => Frame::Ended(e.to_string()),
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str().to_owned();
                    match serde_json::from_str::<Head>(&text) {
                        Ok(head) => Frame::Text { head, text },
                        Err(e) => Frame::Ended(format!("a frame that is not JSON ({e}): {text}")),
                    }
                }
                Some(Ok(Message::Close(frame))) => Frame::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
            });
        }
    }

    /// Closes with a close handshake (bounded).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}

/// Wall-clock milliseconds since the Unix epoch (what an event's `ts` is).
pub fn now_unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Parses `YYYY-MM-DDTHH:MM:SS.mmmZ` to Unix milliseconds.
pub fn parse_ts_ms(ts: &str) -> Option<f64> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| ts.get(from..to)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let millis = if b[19] == b'.' {
        let digits: String = ts[20..].chars().take_while(char::is_ascii_digit).collect();
        let scale = 10f64.powi(i32::try_from(digits.len()).ok()?);
        digits.parse::<f64>().ok()? / scale * 1000.0
    } else {
        0.0
    };
    let days = days_from_civil(y, m, d);
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) as f64 * 1000.0 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The loss and duplicate detector of one logical client: every event id
/// from `first` on must arrive exactly once, in order. Ids are a per-user
/// sequence with no hole (API.md), so a missing id is a lost event.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    first: i64,
    seen: Vec<bool>,
    /// Highest id received so far.
    max_seen: i64,
    /// Distinct ids received at or above `first`.
    distinct: u64,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Ids below `first` (events the client had before it started).
    pub stale: u64,
}

/// The verdict of a tracker over `first ..= last`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    /// Received more than once (or below the first expected id).
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Ids above `last`: events nobody expected.
    pub unexpected: u64,
}

impl SeqTracker {
    /// Expects ids `first, first + 1, ...`.
    pub fn new(first: i64) -> SeqTracker {
        SeqTracker {
            first,
            seen: Vec::new(),
            max_seen: first - 1,
            distinct: 0,
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            stale: 0,
        }
    }

    /// Records a received event id; returns whether it was new.
    pub fn on_event(&mut self, id: i64) -> bool {
        self.received += 1;
        let Some(index) = usize::try_from(id - self.first).ok() else {
            self.stale += 1;
            return false;
        };
        if index >= self.seen.len() {
            self.seen.resize(index + 1, false);
        }
        if self.seen[index] {
            self.duplicates += 1;
            return false;
        }
        self.seen[index] = true;
        self.distinct += 1;
        if id < self.max_seen {
            self.out_of_order += 1;
        }
        self.max_seen = self.max_seen.max(id);
        true
    }

    /// The highest id received (`first - 1` when none).
    pub fn last(&self) -> i64 {
        self.max_seen
    }

    /// Whether every id of `first ..= last` has arrived and nothing beyond.
    pub fn has_all_through(&self, last: i64) -> bool {
        self.max_seen == last && i64::try_from(self.distinct).is_ok_and(|d| d == last - self.first + 1)
    }

    /// Counts against the expected range `first ..= last`.
    pub fn verdict(&self, last: i64) -> Verdict {
        let n = usize::try_from(last - self.first + 1).unwrap_or(0);
        let got = self.seen.iter().take(n).filter(|&&s| s).count();
        let unexpected = self.seen.iter().skip(n).filter(|&&s| s).count();
        Verdict {
            expected: n as u64,
            received: self.received,
            lost: (n - got) as u64,
            duplicates: self.duplicates + self.stale,
            out_of_order: self.out_of_order,
            unexpected: unexpected as u64,
        }
    }
}

impl Verdict {
    pub fn add(&mut self, other: Verdict) {
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
    }
}

/// A closed-loop bound: fails when `what` does not finish by `deadline`.
pub async fn within<T>(
    deadline: tokio::time::Instant,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| err(format!("{what} did not finish in time")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_losses_and_duplicates() {
        let mut t = SeqTracker::new(5);
        for id in [5, 6, 8, 8, 9, 7, 4] {
            t.on_event(id);
        }
        let v = t.verdict(10);
        assert_eq!(v.expected, 6);
        assert_eq!(v.lost, 1, "10 never came");
        assert_eq!(v.duplicates, 2, "8 twice, and 4 is below the start");
        assert_eq!(v.out_of_order, 1, "7 after 9");
        assert!(t.has_all_through(9));
        assert!(!t.has_all_through(10));
        let clean = {
            let mut t = SeqTracker::new(1);
            (1..=3).for_each(|id| {
                t.on_event(id);
            });
            t.verdict(3)
        };
        assert_eq!(
            clean.lost + clean.duplicates + clean.out_of_order + clean.unexpected,
            0
        );
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_ts_ms("1970-01-01T00:00:00.000Z"), Some(0.0));
        assert_eq!(parse_ts_ms("2026-11-28T20:01:21.123Z"), Some(1_795_896_081_123.0));
        assert_eq!(parse_ts_ms("nonsense"), None);
    }

    #[test]
    fn sources_spread_over_loopback() {
        assert_eq!(source_address(0, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(source_address(5, 4), Ipv4Addr::new(127, 0, 0, 2));
    }
}
