//! `parkcast serve` answering a multiplexing HTTP/2 client: several requests arriving in one TCP
//! segment, as h2load, gateways and proxies send them, must each be answered at once, not when the
//! client happens to send its next packet.
//!
//! The client here speaks raw HTTP/2 over a plain socket so that it controls the wire exactly: each
//! burst of requests is one `write` (one segment on loopback), and between bursts it sends nothing
//! at all, not even a window update (it opens its flow-control windows wide at the start). A server
//! that holds answers back until the client's next packet (Nagle's algorithm on the accepted socket
//! waiting for an ACK the client delays) then leaves them waiting for the client's delayed-ACK timer,
//! at least 40 ms on Linux; a server that sends them at once answers in well under a millisecond on
//! loopback. [`PROMPT`] sits between the two.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common;

use parkcast_kafka::testing::fresh_config;
use parkcast_proto::v1::{GetAvailabilityRequest, LotAvailability};
use prost::Message;

/// Requests per burst (one TCP write).
const BURST: u32 = 8;
/// Bursts before measuring: the client's kernel ACKs the first segments of a connection at once
/// ("quick ACK" mode), which hides the fault; real clients are past that within a few requests.
const WARM_UP_BURSTS: usize = 10;
/// Bursts measured.
const MEASURED_BURSTS: usize = 30;
/// All answers of a burst within this is "at once". Answers held for the client's next packet wait
/// for its delayed-ACK timer instead (40 ms minimum on Linux), so this is generous for a busy
/// machine while still separating the two.
const PROMPT: Duration = Duration::from_millis(25);
/// A burst still unanswered after this is a failure of another kind.
const HARD_TIMEOUT: Duration = Duration::from_secs(10);

const PATH: &str = "/parkcast.v1.Availability/GetAvailability";
const LOT: &str = "sim:lot0000";

/// A `parkcast serve` process on a small simulated city (killed on drop), and its folder.
struct Server {
    served: common::Served,
    _dir: tempfile::TempDir,
}

/// Simulates two lots and serves them (no model: the live picture is the answer), on fresh topics
/// of the test broker.
fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = dir.path().join("city");
    common::succeeded(&common::parkcast(&[
        "simulate",
        "--lots",
        "2",
        "--days",
        "2",
        "--out",
        warehouse.to_str().expect("a UTF-8 path"),
    ]));
    let kafka = fresh_config("h2mux", 1);
    Server {
        served: common::serve(&warehouse, dir.path(), &kafka, &[]),
        _dir: dir,
    }
}

// --- Raw HTTP/2 (RFC 9113), just enough for unary gRPC calls ------------------------------------

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const MAX_WINDOW: u32 = (1 << 31) - 1;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let length = u32::try_from(payload.len()).expect("a small frame");
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK "literal header field without indexing, new name", no Huffman coding (names and values
/// here are shorter than 127 bytes, so each length is one byte).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    for text in [name, value] {
        block.push(u8::try_from(text.len()).expect("a short header"));
        block.extend_from_slice(text.as_bytes());
    }
}

/// A received frame.
struct Frame {
    kind: u8,
    flags: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

/// One HTTP/2 connection, driven by hand.
struct RawClient {
    socket: TcpStream,
    received: Vec<u8>,
    next_stream_id: u32,
    authority: String,
}

impl RawClient {
    /// Connects, sends the preface with wide-open flow-control windows, and acknowledges the
    /// server's settings: after this the client never needs to send anything but requests.
    fn connect(addr: SocketAddr) -> RawClient {
        let socket = TcpStream::connect(addr).expect("connect to the server");
        // As h2load and gRPC clients do: the client's own writes are not delayed.
        socket.set_nodelay(true).expect("TCP_NODELAY on the client");
        let mut client = RawClient {
            socket,
            received: Vec::new(),
            next_stream_id: 1,
            authority: addr.to_string(),
        };
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut settings = Vec::new();
        settings.extend_from_slice(&0x2u16.to_be_bytes()); // ENABLE_PUSH
        settings.extend_from_slice(&0u32.to_be_bytes());
        settings.extend_from_slice(&0x4u16.to_be_bytes()); // INITIAL_WINDOW_SIZE
        settings.extend_from_slice(&MAX_WINDOW.to_be_bytes());
        frame(&mut out, SETTINGS, 0, 0, &settings);
        frame(
            &mut out,
            WINDOW_UPDATE,
            0,
            0,
            &(MAX_WINDOW - 65_535).to_be_bytes(),
        );
        client.socket.write_all(&out).expect("send the preface");
        let deadline = Instant::now() + HARD_TIMEOUT;
        loop {
            let frame = client
                .next_frame(deadline)
                .expect("the server's settings arrive");
            if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                break;
            }
        }
        let mut ack = Vec::new();
        frame(&mut ack, SETTINGS, ACK, 0, &[]);
        client.socket.write_all(&ack).expect("acknowledge settings");
        client
    }

    /// The next complete frame, or `None` past `deadline`.
    fn next_frame(&mut self, deadline: Instant) -> Option<Frame> {
        loop {
            if self.received.len() >= 9 {
                let length = usize::from(self.received[0]) << 16
                    | usize::from(self.received[1]) << 8
                    | usize::from(self.received[2]);
                if self.received.len() >= 9 + length {
                    let header: Vec<u8> = self.received.drain(..9).collect();
                    let payload = self.received.drain(..length).collect();
                    let stream_id =
                        u32::from_be_bytes([header[5], header[6], header[7], header[8]])
                            & 0x7fff_ffff;
                    return Some(Frame {
                        kind: header[3],
                        flags: header[4],
                        stream_id,
                        payload,
                    });
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set a read timeout");
            let mut chunk = [0u8; 16 * 1024];
            match self.socket.read(&mut chunk) {
                Ok(0) => panic!("the server closed the connection"),
                Ok(read) => self.received.extend_from_slice(&chunk[..read]),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => panic!("reading from the server failed: {error}"),
            }
        }
    }

    /// Sends `count` `GetAvailability` calls in one write and waits for every answer; returns how
    /// long the last one took, after checking each is the lot's answer.
    fn burst(&mut self, count: u32) -> Duration {
        let message = GetAvailabilityRequest {
            lot_id: LOT.to_owned(),
            horizon_minutes: Vec::new(),
            arrival_time_ms: 0,
            price_per_hour: None,
        }
        .encode_to_vec();
        let mut body = vec![0u8];
        body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        body.extend_from_slice(&message);
        let mut out = Vec::new();
        let mut pending = std::collections::HashMap::new();
        for _ in 0..count {
            let stream_id = self.next_stream_id;
            self.next_stream_id += 2;
            let mut block = Vec::new();
            literal(&mut block, ":method", "POST");
            literal(&mut block, ":scheme", "http");
            literal(&mut block, ":path", PATH);
            literal(&mut block, ":authority", &self.authority);
            literal(&mut block, "content-type", "application/grpc");
            literal(&mut block, "te", "trailers");
            frame(&mut out, HEADERS, END_HEADERS, stream_id, &block);
            frame(&mut out, DATA, END_STREAM, stream_id, &body);
            pending.insert(stream_id, Vec::new());
        }
        let started = Instant::now();
        self.socket.write_all(&out).expect("send the burst");
        let deadline = started + HARD_TIMEOUT;
        let mut answered = 0;
        while answered < count {
            let Some(frame) = self.next_frame(deadline) else {
                panic!(
                    "{} of {count} answers still missing after {HARD_TIMEOUT:?}",
                    count - answered
                );
            };
            match frame.kind {
                DATA => pending
                    .get_mut(&frame.stream_id)
                    .expect("data on a stream of the burst")
                    .extend_from_slice(&frame.payload),
                // Response headers, then trailers (grpc-status) ending the stream.
                HEADERS if frame.flags & END_STREAM != 0 => {
                    let body = pending
                        .remove(&frame.stream_id)
                        .expect("trailers on a stream of the burst");
                    // A failed call is trailers only: a message proves an OK answer.
                    assert!(
                        body.len() > 5,
                        "stream {} ended without an answer (a gRPC error)",
                        frame.stream_id
                    );
                    let answer =
                        LotAvailability::decode(&body[5..]).expect("a LotAvailability message");
                    assert_eq!(answer.lot_id, LOT);
                    answered += 1;
                }
                RST_STREAM | GOAWAY => panic!(
                    "the server refused the burst (frame type {}, stream {})",
                    frame.kind, frame.stream_id
                ),
                // Settings acknowledgement, window updates, response headers.
                _ => {}
            }
        }
        started.elapsed()
    }
}

#[test]
fn requests_arriving_in_one_segment_are_all_answered_at_once() {
    parkcast_kafka::require_broker!();
    let server = start_server();
    let mut client = RawClient::connect(server.served.addr);
    for _ in 0..WARM_UP_BURSTS {
        client.burst(BURST);
    }
    let mut times: Vec<Duration> = (0..MEASURED_BURSTS).map(|_| client.burst(BURST)).collect();
    let prompt = times.iter().filter(|time| **time <= PROMPT).count();
    times.sort_unstable();
    // A busy machine may stall a burst or two; a server that holds answers stalls every one.
    assert!(
        prompt * 4 >= MEASURED_BURSTS * 3,
        "only {prompt} of {MEASURED_BURSTS} bursts of {BURST} requests sent in one write were all \
         answered within {PROMPT:?} (sorted times: {times:?}): answers wait for the client's next \
         packet"
    );
}
