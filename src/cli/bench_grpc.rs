//! `parkcast bench grpc`: how fast a running server answers, and how soon a reading produced to the
//! broker shows in its answers.
//!
//! # Answer latency (the request sweep)
//!
//! The sweep is *open loop*: at each target rate, request `i` is due at `start + i / rate`,
//! whatever happened to the requests before it, and its latency runs from that due time to the
//! answer. A closed-loop client (send, wait, send) slows down with the server and so never sees the
//! queue a stalled server builds; timing from the actual send hides the same queue inside the
//! client ("coordinated omission"). Measuring from the due time charges every wait to the answer,
//! as a driver's app would feel it. The client's own lateness (due time to the moment the request
//! task runs) is reported beside it as "send lag", so a saturated client is visible rather than
//! blamed on the server. Requests go over several HTTP/2 connections (one tonic `Channel` each),
//! rotate over the lots, and each rate starts with a half-second warm-up that is not counted. The
//! sweep stops once two rates in a row have a p99 over 10 ms.
//!
//! # Produce -> visible
//!
//! A background producer sends heartbeats for every slot at a fixed total rate without changing any
//! slot's status, while a prober flips one dedicated slot of a probe lot (occupied <-> free) and
//! polls `GetAvailability` every millisecond until `occupied_now` shows the flip. The delay runs
//! from handing the reading to the producer (the usual producer batching included) to the first
//! answer that shows it. Before measuring, one reading per slot sets every slot to a status this
//! benchmark chose, and the run waits until the server shows it: from then on each probe lot's
//! expected occupied count is known exactly. This overwrites the live picture of the served lots,
//! so run it against a server no other producer feeds.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use comfy_table::{Cell, CellAlignment};
use parkcast_kafka::{CountingContext, KafkaConfig, now_ms, send_with_backpressure};
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::{GetAvailabilityRequest, ReadingKind, SensorReading, SlotReport};
use prost::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::BrokerArgs;
use crate::report;

/// The answer-latency target: p99 at [`TARGET_RATE`] requests/s.
const TARGET_P99: Duration = Duration::from_millis(2);
/// The rate [`TARGET_P99`] applies to.
const TARGET_RATE: u32 = 5_000;
/// The p99 whose crossing rate the issue asks for.
const CROSSING_P99: Duration = Duration::from_millis(10);
/// The produce -> visible target (p99).
const TARGET_VISIBLE_P99: Duration = Duration::from_millis(100);
/// The event rate [`TARGET_VISIBLE_P99`] applies to.
const TARGET_EVENT_RATE: u32 = 10_000;
/// Requests before this much time at each rate are not counted.
const WARM_UP: Duration = Duration::from_millis(500);
/// A request with no answer after this counts as an error (with this latency).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Past this many requests in flight the client stops sending (each unsent one is an error), so an
/// overloaded server cannot exhaust the client's memory.
const MAX_IN_FLIGHT: usize = 20_000;
/// Pause between rates, so one rate's backlog does not spill into the next.
const SETTLE: Duration = Duration::from_millis(300);
/// A probe not visible after this counts as timed out.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a probe polls.
const PROBE_POLL: Duration = Duration::from_millis(1);
/// At most this many lots carry probes (one probe in flight per lot).
const MAX_PROBE_LOTS: usize = 64;
/// How long the server may take to show the priming readings.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `parkcast bench grpc`.
#[derive(Debug, Args)]
pub struct GrpcBenchArgs {
    /// Server address.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// Warehouse the server serves (its `dim_slot` lists the lots and slots); needed for the
    /// produce -> visible part.
    #[arg(long, short = 'w')]
    pub warehouse: Option<PathBuf>,
    /// Lots to ask about (comma-separated; default: every lot of --warehouse).
    #[arg(long, value_delimiter = ',')]
    pub lots: Vec<String>,
    /// Horizons asked for, minutes ahead (comma-separated). When the server refuses horizons
    /// (no scoring path yet), the sweep asks for the live picture only and says so.
    #[arg(long, value_delimiter = ',', default_value = "30,60")]
    pub horizons: Vec<u32>,
    /// Ask for the live picture only (no horizons).
    #[arg(long)]
    pub now_only: bool,
    /// Target request rates of the sweep, requests/s (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,5000,10000,15000,20000,30000,40000"
    )]
    pub rates: Vec<u32>,
    /// Measured seconds per rate (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Skip the request sweep (only produce -> visible).
    #[arg(long)]
    pub no_sweep: bool,
    /// The broker the server reads; without it the produce -> visible part is skipped.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Heartbeats produced per second during the produce -> visible part.
    #[arg(long, default_value_t = 10_000)]
    pub event_rate: u32,
    /// Probes (produced flips) per second.
    #[arg(long, default_value_t = 20)]
    pub probes: u32,
    /// Seconds of the produce -> visible part.
    #[arg(long, default_value_t = 10.0)]
    pub visibility_seconds: f64,
}

/// Latency percentiles of one set of samples (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Percentiles {
    /// The percentiles of `nanos` (sorted here); all zero when empty.
    pub fn of(mut nanos: Vec<u64>) -> Percentiles {
        nanos.sort_unstable();
        let at = |fraction| Duration::from_nanos(percentile(&nanos, fraction).unwrap_or(0));
        Percentiles {
            count: nanos.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(nanos.last().copied().unwrap_or(0)),
        }
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `fraction` of the
/// samples at or below it (`None` when empty).
fn percentile(sorted: &[u64], fraction: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// When request `index` of a rate is due, after the rate's start.
fn due_offset(index: u64, rate: u32) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Requests due within `duration` at `rate` (the request due exactly at the end excluded).
fn requests_within(duration: Duration, rate: u32) -> u64 {
    let count = (duration.as_secs_f64() * f64::from(rate)).ceil();
    if count.is_finite() && count > 0.0 {
        count as u64
    } else {
        0
    }
}

/// One rate of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    /// Target rate, requests/s.
    pub rate: u32,
    /// Answers (OK or not) per second over the measured window, which ends with the last answer.
    pub achieved: f64,
    /// Measured requests (warm-up excluded).
    pub requests: u64,
    /// Latency from due time to answer, over every measured request that got an answer or timed
    /// out.
    pub latency: Percentiles,
    /// p99 of the client's own lateness (due time to the request task running).
    pub send_lag_p99: Duration,
    /// Requests with a non-OK status, timed out, or not sent (too many in flight).
    pub errors: u64,
    /// The first error seen.
    pub first_error: Option<String>,
}

/// What one request came to.
#[derive(Debug)]
struct Sample {
    /// Due time to answer (or to giving up).
    latency: Duration,
    /// Due time to the request task running.
    send_lag: Duration,
    /// When the answer came, after the rate's start.
    finished: Duration,
    /// Whether it was not sent at all.
    not_sent: bool,
    error: Option<String>,
}

/// Where the sweep stands against [`CROSSING_P99`].
#[derive(Debug, Clone, PartialEq)]
pub enum Crossing {
    /// No rate measured.
    NoData,
    /// The highest rate measured was at or under the threshold.
    Never {
        /// The highest rate measured.
        highest: u32,
    },
    /// Every rate measured was over.
    AtFirst {
        /// The lowest rate measured.
        rate: u32,
    },
    /// Between the last rate at or under the threshold and the rate after it, from which every
    /// rate measured is over; with the linear interpolation of p99 between the two.
    Between {
        /// The last rate at or under the threshold.
        under: u32,
        /// The first rate of the run over it that ends the sweep.
        over: u32,
        /// Where the straight line between the two p99s meets the threshold.
        interpolated: f64,
    },
}

/// The rate from which p99 stays over `threshold`, from (rate, p99) points in increasing rate.
///
/// A lone rate over the threshold with lower p99s above it is a stall (a checkpoint, another
/// process on the machine), not the server's limit: [`lone_spikes`] names those.
fn crossing(points: &[(u32, Duration)], threshold: Duration) -> Crossing {
    let Some(&(highest, highest_p99)) = points.last() else {
        return Crossing::NoData;
    };
    if highest_p99 <= threshold {
        return Crossing::Never { highest };
    }
    let Some(last_under) = points.iter().rposition(|(_, p99)| *p99 <= threshold) else {
        return Crossing::AtFirst { rate: points[0].0 };
    };
    let (under_rate, under_p99) = points[last_under];
    let (over_rate, over_p99) = points[last_under + 1];
    let (p0, p1, t) = (
        under_p99.as_secs_f64(),
        over_p99.as_secs_f64(),
        threshold.as_secs_f64(),
    );
    let share = if p1 > p0 {
        ((t - p0) / (p1 - p0)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    Crossing::Between {
        under: under_rate,
        over: over_rate,
        interpolated: f64::from(under_rate)
            + share * (f64::from(over_rate) - f64::from(under_rate)),
    }
}

/// Rates over `threshold` followed by a higher rate at or under it.
fn lone_spikes(points: &[(u32, Duration)], threshold: Duration) -> Vec<u32> {
    let Some(last_under) = points.iter().rposition(|(_, p99)| *p99 <= threshold) else {
        return Vec::new();
    };
    points[..last_under]
        .iter()
        .filter(|(_, p99)| *p99 > threshold)
        .map(|(rate, _)| *rate)
        .collect()
}

/// Whether the last two rows both have p99 over `threshold` (the sweep stops there).
fn two_over(rows: &[SweepRow], threshold: Duration) -> bool {
    rows.len() >= 2
        && rows[rows.len() - 2..]
            .iter()
            .all(|row| row.latency.p99 > threshold)
}

/// Opens `count` HTTP/2 connections to `addr`.
async fn connect(addr: &str, count: usize) -> Result<Vec<AvailabilityClient<Channel>>> {
    let endpoint = Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("{addr:?} is not a valid server address"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("failed to connect to {addr}"))?;
        clients.push(AvailabilityClient::new(channel));
    }
    Ok(clients)
}

/// A status as text, with its cause (a transport error says little without it).
fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One request, timed from its due time.
async fn timed_request(
    mut client: AvailabilityClient<Channel>,
    request: GetAvailabilityRequest,
    start: Instant,
    due: Instant,
    in_flight: Arc<AtomicUsize>,
) -> Sample {
    let running = Instant::now();
    let outcome = tokio::time::timeout(REQUEST_TIMEOUT, client.get_availability(request)).await;
    let done = Instant::now();
    in_flight.fetch_sub(1, Ordering::Relaxed);
    Sample {
        latency: done.saturating_duration_since(due),
        send_lag: running.saturating_duration_since(due),
        finished: done.saturating_duration_since(start),
        not_sent: false,
        error: match outcome {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(status_text(&status)),
            Err(_) => Some(format!("no answer within {REQUEST_TIMEOUT:?}")),
        },
    }
}

/// Issues `total` requests on the open-loop schedule of `rate` from a thread of its own (sleeping
/// to each due time with the OS timer, finer than tokio's millisecond wheel), each as a task on
/// `runtime`. Returns the tasks in request order, plus the requests not sent.
fn dispatch(
    runtime: &tokio::runtime::Handle,
    clients: &[AvailabilityClient<Channel>],
    requests: &[GetAvailabilityRequest],
    rate: u32,
    total: u64,
    start: Instant,
) -> Vec<Result<JoinHandle<Sample>, Sample>> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for index in 0..total {
        let due = start + due_offset(index, rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            tasks.push(Err(Sample {
                latency: Duration::ZERO,
                send_lag: Instant::now().saturating_duration_since(due),
                finished: Instant::now().saturating_duration_since(start),
                not_sent: true,
                error: Some(format!(
                    "not sent: {MAX_IN_FLIGHT} requests already in flight"
                )),
            }));
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        // Both lists are non-empty (checked by the caller), so the remainders index them.
        let slot = usize::try_from(index).unwrap_or(0);
        let client = clients[slot % clients.len()].clone();
        let request = requests[slot % requests.len()].clone();
        tasks.push(Ok(runtime.spawn(timed_request(
            client,
            request,
            start,
            due,
            Arc::clone(&in_flight),
        ))));
    }
    tasks
}

/// Runs one rate: warm-up, then `seconds` measured.
async fn one_rate(
    clients: &[AvailabilityClient<Channel>],
    requests: &[GetAvailabilityRequest],
    rate: u32,
    seconds: f64,
) -> Result<SweepRow> {
    let warm_up = requests_within(WARM_UP, rate);
    let measured_time = Duration::try_from_secs_f64(seconds)
        .with_context(|| format!("{seconds} is not a number of seconds"))?;
    let total = warm_up + requests_within(measured_time, rate).max(1);
    let runtime = tokio::runtime::Handle::current();
    let (clients_owned, requests_owned) = (clients.to_vec(), requests.to_vec());
    // A little ahead, so the first requests are not late before the thread runs.
    let start = Instant::now() + Duration::from_millis(5);
    let tasks = tokio::task::spawn_blocking(move || {
        dispatch(
            &runtime,
            &clients_owned,
            &requests_owned,
            rate,
            total,
            start,
        )
    })
    .await
    .context("the request dispatcher failed")?;

    let measured_from = due_offset(warm_up, rate);
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut send_lags = Vec::with_capacity(tasks.len());
    let (mut errors, mut answered, mut last_finished) = (0u64, 0u64, measured_from);
    let mut first_error = None;
    for (index, task) in tasks.into_iter().enumerate() {
        let sample = match task {
            Ok(handle) => handle.await.context("a request task failed")?,
            Err(sample) => sample,
        };
        if (index as u64) < warm_up {
            continue;
        }
        send_lags.push(duration_nanos(sample.send_lag));
        if !sample.not_sent {
            latencies.push(duration_nanos(sample.latency));
            answered += 1;
            last_finished = last_finished.max(sample.finished);
        }
        if let Some(error) = sample.error {
            errors += 1;
            first_error.get_or_insert(error);
        }
    }
    let window = last_finished.saturating_sub(measured_from).as_secs_f64();
    Ok(SweepRow {
        rate,
        achieved: answered as f64 / window.max(1e-9),
        requests: total - warm_up,
        latency: Percentiles::of(latencies),
        send_lag_p99: Percentiles::of(send_lags).p99,
        errors,
        first_error,
    })
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The open-loop sweep: each rate in turn (stopping after two rates in a row over 10 ms p99),
/// requests rotating over `lots`, spread over `connections` connections.
pub async fn request_sweep(
    addr: &str,
    lots: &[String],
    horizons: &[u32],
    rates: &[u32],
    seconds_per_rate: f64,
    connections: usize,
) -> Result<Vec<SweepRow>> {
    if lots.is_empty() {
        bail!("no lots to ask about");
    }
    if !(seconds_per_rate.is_finite() && seconds_per_rate > 0.0) {
        bail!("--seconds must be a positive number, not {seconds_per_rate}");
    }
    let clients = connect(addr, connections).await?;
    let requests: Vec<GetAvailabilityRequest> = lots
        .iter()
        .map(|lot_id| GetAvailabilityRequest {
            lot_id: lot_id.clone(),
            horizon_minutes: horizons.to_vec(),
            arrival_time_ms: 0,
        })
        .collect();
    let mut rows = Vec::with_capacity(rates.len());
    for &rate in rates {
        if rate == 0 {
            bail!("a rate of 0 requests/s cannot be measured");
        }
        let row = one_rate(&clients, &requests, rate, seconds_per_rate).await?;
        eprintln!(
            "  {:>7}/s: p99 {} ms, {} errors",
            report::thousands(u64::from(rate)),
            millis(row.latency.p99),
            report::thousands(row.errors)
        );
        rows.push(row);
        if two_over(&rows, CROSSING_P99) {
            break;
        }
        tokio::time::sleep(SETTLE).await;
    }
    Ok(rows)
}

/// The produce -> visible figures.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibilityRow {
    /// Heartbeats per second asked for.
    pub event_rate: u32,
    /// Heartbeats handed to the producer per second.
    pub achieved_event_rate: f64,
    /// Heartbeats the broker did not acknowledge.
    pub failed_deliveries: u64,
    /// Probe lots used.
    pub probe_lots: usize,
    /// Probes produced.
    pub probes: u64,
    /// Produce -> visible delays of the probes that became visible.
    pub delay: Percentiles,
    /// Probes not visible within 5 s.
    pub timed_out: u64,
    /// Probe ticks skipped because every probe lot had a probe in flight.
    pub skipped: u64,
    /// Polls answered with an error.
    pub poll_errors: u64,
    /// The first poll error.
    pub first_poll_error: Option<String>,
}

/// A lot carrying probes: its first slot flips, the others keep the status the priming set.
#[derive(Debug)]
struct ProbeLot {
    lot_id: String,
    slot_id: String,
    /// Occupied slots of the lot apart from the probe slot (fixed by the priming).
    base_occupied: u32,
    /// What the probe slot was last set to.
    occupied: bool,
    /// The probe slot's last sequence number.
    seq: u64,
    /// A probe of this lot timed out: its state is no longer known, so it gets no more probes.
    retired: bool,
}

impl ProbeLot {
    fn expected_occupied(&self) -> u32 {
        self.base_occupied + u32::from(self.occupied)
    }
}

/// A slot the background producer keeps alive with heartbeats.
#[derive(Debug, Clone)]
struct HeartbeatSlot {
    lot_id: String,
    slot_id: String,
    occupied: bool,
}

/// The status the priming gives a non-probe slot: two in three occupied, by position in the lot.
fn primed_occupied(position: usize) -> bool {
    !position.is_multiple_of(3)
}

/// Which lots carry probes: at most [`MAX_PROBE_LOTS`], spread evenly over the lots (so over the
/// partitions).
fn probe_lot_indices(lots: usize) -> Vec<usize> {
    let count = lots.min(MAX_PROBE_LOTS);
    (0..count)
        .map(|index| index * lots / count.max(1))
        .collect()
}

fn reading(
    lot_id: &str,
    slot_id: &str,
    occupied: bool,
    kind: ReadingKind,
    seq: u64,
    event_time_ms: i64,
) -> SensorReading {
    SensorReading {
        schema_version: parkcast_proto::SCHEMA_VERSION,
        lot_id: lot_id.to_owned(),
        slot_id: slot_id.to_owned(),
        report: if occupied {
            SlotReport::Occupied as i32
        } else {
            SlotReport::Free as i32
        },
        kind: kind as i32,
        sensor_seq: seq,
        event_time_ms,
    }
}

type SharedProducer = Arc<ThreadedProducer<CountingContext>>;

fn send_reading(producer: &SharedProducer, topic: &str, message: &SensorReading) -> Result<()> {
    let bytes = message.encode_to_vec();
    send_with_backpressure(
        producer,
        BaseRecord::to(topic)
            .key(message.lot_id.as_bytes())
            .payload(bytes.as_slice()),
    )
    .context("failed to produce a sensor reading")
}

/// Heartbeats for `slots` at `rate` per second until `stop`, from the calling thread; returns how
/// many were sent and over how long.
fn heartbeats(
    producer: &SharedProducer,
    topic: &str,
    slots: &[HeartbeatSlot],
    rate: u32,
    first_seq: u64,
    stop: &AtomicBool,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if rate > 0 && !slots.is_empty() {
            let due = requests_within(started.elapsed(), rate);
            let event_time_ms = now_ms();
            while sent < due {
                let position = usize::try_from(sent % slots.len() as u64).unwrap_or(0);
                let slot = &slots[position];
                let seq = first_seq + sent / slots.len() as u64;
                let message = reading(
                    &slot.lot_id,
                    &slot.slot_id,
                    slot.occupied,
                    ReadingKind::Heartbeat,
                    seq,
                    event_time_ms,
                );
                send_reading(producer, topic, &message)?;
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((sent, started.elapsed()))
}

/// What one probe came to.
enum ProbeOutcome {
    Visible(Duration),
    TimedOut,
}

/// Flips the lot's probe slot and polls until the answer shows it.
async fn probe(
    mut lot: OwnedMutexGuard<ProbeLot>,
    producer: SharedProducer,
    topic: Arc<str>,
    mut client: AvailabilityClient<Channel>,
    poll_errors: Arc<std::sync::Mutex<(u64, Option<String>)>>,
) -> Result<ProbeOutcome> {
    lot.occupied = !lot.occupied;
    lot.seq += 1;
    let expected = lot.expected_occupied();
    let message = reading(
        &lot.lot_id,
        &lot.slot_id,
        lot.occupied,
        ReadingKind::Change,
        lot.seq,
        now_ms(),
    );
    let produced = Instant::now();
    send_reading(&producer, &topic, &message)?;
    loop {
        let request = GetAvailabilityRequest {
            lot_id: lot.lot_id.clone(),
            horizon_minutes: Vec::new(),
            arrival_time_ms: 0,
        };
        match client.get_availability(request).await {
            Ok(answer) if answer.get_ref().occupied_now == expected => {
                return Ok(ProbeOutcome::Visible(produced.elapsed()));
            }
            Ok(_) => {}
            Err(status) => {
                let mut errors = poll_errors
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a probe task panicked"))?;
                errors.0 += 1;
                errors.1.get_or_insert_with(|| status_text(&status));
            }
        }
        if produced.elapsed() > PROBE_TIMEOUT {
            lot.retired = true;
            return Ok(ProbeOutcome::TimedOut);
        }
        tokio::time::sleep(PROBE_POLL).await;
    }
}

/// Waits until every probe lot shows the occupied count the priming set.
async fn wait_primed(
    client: &mut AvailabilityClient<Channel>,
    lots: &[Arc<Mutex<ProbeLot>>],
    kafka: &KafkaConfig,
) -> Result<()> {
    let started = Instant::now();
    for lot in lots {
        let lot = lot.lock().await;
        loop {
            let answer = client
                .get_availability(GetAvailabilityRequest {
                    lot_id: lot.lot_id.clone(),
                    horizon_minutes: Vec::new(),
                    arrival_time_ms: 0,
                })
                .await;
            let seen = match answer {
                Ok(answer) if answer.get_ref().occupied_now == lot.expected_occupied() => break,
                Ok(answer) => format!("{} occupied", answer.get_ref().occupied_now),
                Err(status) => status_text(&status),
            };
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the server did not show the priming readings within {READY_TIMEOUT:?}: lot {} \
                     should have {} occupied slots, the server says {seen}. Is it reading {} on {} \
                     (--topic-prefix), from the same warehouse?",
                    lot.lot_id,
                    lot.expected_occupied(),
                    kafka.topics.sensor,
                    kafka.bootstrap_servers
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Produce -> visible at `rate` heartbeats/s for `seconds`, `probes_per_second` flips a second.
pub async fn visibility(
    kafka: &KafkaConfig,
    addr: &str,
    lots_and_slots: &[(String, Vec<String>)],
    rate: u32,
    seconds: f64,
    probes_per_second: u32,
) -> Result<VisibilityRow> {
    let duration = Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|duration| !duration.is_zero())
        .with_context(|| format!("--visibility-seconds must be positive, not {seconds}"))?;
    if probes_per_second == 0 {
        bail!("--probes must be at least 1");
    }
    let probe_indices = probe_lot_indices(lots_and_slots.len());
    if probe_indices.is_empty() {
        bail!("no lots to probe");
    }
    let first_seq = u64::try_from(now_ms()).unwrap_or(1);
    let mut probe_lots = Vec::with_capacity(probe_indices.len());
    let mut heartbeat_slots = Vec::new();
    for (lot_position, (lot_id, slot_ids)) in lots_and_slots.iter().enumerate() {
        let is_probe = probe_indices.binary_search(&lot_position).is_ok();
        let mut base_occupied = 0u32;
        for (position, slot_id) in slot_ids.iter().enumerate() {
            if is_probe && position == 0 {
                continue;
            }
            let occupied = primed_occupied(position);
            base_occupied += u32::from(occupied);
            heartbeat_slots.push(HeartbeatSlot {
                lot_id: lot_id.clone(),
                slot_id: slot_id.clone(),
                occupied,
            });
        }
        if is_probe && let Some(slot_id) = slot_ids.first() {
            probe_lots.push(Arc::new(Mutex::new(ProbeLot {
                lot_id: lot_id.clone(),
                slot_id: slot_id.clone(),
                base_occupied,
                occupied: false,
                seq: first_seq,
                retired: false,
            })));
        }
    }
    let context = CountingContext::default();
    let counts = Arc::clone(&context.counts);
    let producer: SharedProducer = Arc::new(
        kafka
            .producer_config()
            .create_with_context(context)
            .context("failed to create the Kafka producer")?,
    );
    let topic: Arc<str> = Arc::from(kafka.topics.sensor.as_str());

    // Priming: one reading per slot, every probe slot free.
    eprintln!(
        "  priming {} slots on {} ...",
        report::thousands(heartbeat_slots.len() as u64 + probe_lots.len() as u64),
        kafka.topics.sensor
    );
    let mut primers: Vec<SensorReading> = Vec::with_capacity(probe_lots.len());
    for lot in &probe_lots {
        let lot = lot.lock().await;
        primers.push(reading(
            &lot.lot_id,
            &lot.slot_id,
            false,
            ReadingKind::Change,
            lot.seq,
            now_ms(),
        ));
    }
    let heartbeat_slots = Arc::new(heartbeat_slots);
    {
        let (producer, topic, slots) = (
            Arc::clone(&producer),
            Arc::clone(&topic),
            Arc::clone(&heartbeat_slots),
        );
        tokio::task::spawn_blocking(move || -> Result<()> {
            let event_time_ms = now_ms();
            for slot in slots.iter() {
                let message = reading(
                    &slot.lot_id,
                    &slot.slot_id,
                    slot.occupied,
                    ReadingKind::Change,
                    first_seq,
                    event_time_ms,
                );
                send_reading(&producer, &topic, &message)?;
            }
            for message in &primers {
                send_reading(&producer, &topic, message)?;
            }
            producer
                .flush(Duration::from_secs(60))
                .context("the broker did not take the priming readings")
        })
        .await
        .context("the priming task failed")??;
    }
    let mut clients = connect(addr, 2).await?;
    let probe_client = clients
        .pop()
        .context("connect returns at least one client")?;
    let mut ready_client = clients.pop().context("connect returns two clients")?;
    wait_primed(&mut ready_client, &probe_lots, kafka).await?;

    // Background heartbeats on a thread of their own.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (producer, topic, slots, stop) = (
            Arc::clone(&producer),
            Arc::clone(&topic),
            Arc::clone(&heartbeat_slots),
            Arc::clone(&stop),
        );
        std::thread::Builder::new()
            .name("bench-heartbeats".to_owned())
            .spawn(move || heartbeats(&producer, &topic, &slots, rate, first_seq + 1, &stop))
            .context("failed to start the heartbeat thread")?
    };
    eprintln!(
        "  {} heartbeats/s, {probes_per_second} probes/s over {} probe lots for {seconds} s ...",
        report::thousands(u64::from(rate)),
        probe_lots.len()
    );
    let probing = run_probes(
        &probe_lots,
        &producer,
        &topic,
        &probe_client,
        probes_per_second,
        duration,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let heartbeat_outcome = background
        .join()
        .map_err(|_| anyhow::anyhow!("the heartbeat thread panicked"))?;
    let (sent, elapsed) = heartbeat_outcome?;
    let probing = probing?;
    // Undelivered heartbeats are counted, not fatal: the flush only bounds the wait.
    let _ = producer.flush(Duration::from_secs(10));
    Ok(VisibilityRow {
        event_rate: rate,
        achieved_event_rate: sent as f64 / elapsed.as_secs_f64().max(1e-9),
        failed_deliveries: counts.failed(),
        probe_lots: probe_lots.len(),
        ..probing
    })
}

/// Starts probes at `probes_per_second` for `duration` (one in flight per lot), then waits for
/// those in flight.
async fn run_probes(
    probe_lots: &[Arc<Mutex<ProbeLot>>],
    producer: &SharedProducer,
    topic: &Arc<str>,
    client: &AvailabilityClient<Channel>,
    probes_per_second: u32,
    duration: Duration,
) -> Result<VisibilityRow> {
    let poll_errors = Arc::new(std::sync::Mutex::new((0u64, None)));
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(probes_per_second)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let (mut cursor, mut skipped) = (0usize, 0u64);
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        ticks.tick().await;
        let mut chosen = None;
        for offset in 0..probe_lots.len() {
            let position = (cursor + offset) % probe_lots.len();
            if let Ok(guard) = Arc::clone(&probe_lots[position]).try_lock_owned()
                && !guard.retired
            {
                chosen = Some(guard);
                cursor = position + 1;
                break;
            }
        }
        let Some(lot) = chosen else {
            skipped += 1;
            continue;
        };
        tasks.push(tokio::spawn(probe(
            lot,
            Arc::clone(producer),
            Arc::clone(topic),
            client.clone(),
            Arc::clone(&poll_errors),
        )));
    }
    let probes = tasks.len() as u64;
    let (mut delays, mut timed_out) = (Vec::with_capacity(tasks.len()), 0u64);
    for task in tasks {
        match task.await.context("a probe task failed")?? {
            ProbeOutcome::Visible(delay) => delays.push(duration_nanos(delay)),
            ProbeOutcome::TimedOut => timed_out += 1,
        }
    }
    let (poll_error_count, first_poll_error) = poll_errors
        .lock()
        .map_err(|_| anyhow::anyhow!("a probe task panicked"))?
        .clone();
    Ok(VisibilityRow {
        event_rate: 0,
        achieved_event_rate: 0.0,
        failed_deliveries: 0,
        probe_lots: probe_lots.len(),
        probes,
        delay: Percentiles::of(delays),
        timed_out,
        skipped,
        poll_errors: poll_error_count,
        first_poll_error,
    })
}

/// Milliseconds with two decimals.
pub(super) fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1_000.0)
}

/// A right-aligned cell.
pub(super) fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

/// Asks once, to fail early on a wrong address or lot, and to fall back to the live picture when
/// the server refuses horizons. Returns the horizons to use.
pub(super) async fn preflight(addr: &str, lot_id: &str, horizons: &[u32]) -> Result<Vec<u32>> {
    let mut client = connect(addr, 1)
        .await?
        .pop()
        .context("connect returns one client")?;
    let ask = |horizon_minutes: Vec<u32>| GetAvailabilityRequest {
        lot_id: lot_id.to_owned(),
        horizon_minutes,
        arrival_time_ms: 0,
    };
    match client.get_availability(ask(horizons.to_vec())).await {
        Ok(_) => return Ok(horizons.to_vec()),
        Err(status) if !horizons.is_empty() && status.code() == tonic::Code::Unavailable => {
            println!(
                "note: the server refuses horizons ({}); the sweep asks for the live picture only",
                status.message()
            );
        }
        Err(status) => bail!(
            "the server refused a request for lot {lot_id:?}: {}",
            status_text(&status)
        ),
    }
    client
        .get_availability(ask(Vec::new()))
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the server refused a request for lot {lot_id:?}: {}",
                status_text(&status)
            )
        })?;
    Ok(Vec::new())
}

fn sweep_table(rows: &[SweepRow]) -> comfy_table::Table {
    let mut table = report::new_table(&[
        "rate asked /s",
        "achieved /s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "send lag p99 ms",
        "errors",
    ]);
    for row in rows {
        table.add_row(vec![
            right(report::thousands(u64::from(row.rate))),
            right(report::thousands(row.achieved as u64)),
            right(millis(row.latency.p50)),
            right(millis(row.latency.p90)),
            right(millis(row.latency.p99)),
            right(millis(row.latency.p999)),
            right(millis(row.latency.max)),
            right(millis(row.send_lag_p99)),
            right(format!(
                "{} of {}",
                report::thousands(row.errors),
                report::thousands(row.requests)
            )),
        ]);
    }
    table
}

fn visibility_table(row: &VisibilityRow) -> comfy_table::Table {
    let mut table = report::new_table(&["produce -> visible", "value"]);
    let rows = [
        (
            "heartbeats asked / achieved",
            format!(
                "{}/s / {}/s",
                report::thousands(u64::from(row.event_rate)),
                report::thousands(row.achieved_event_rate as u64)
            ),
        ),
        (
            "heartbeats not delivered",
            report::thousands(row.failed_deliveries),
        ),
        (
            "probes (probe lots)",
            format!("{} ({})", report::thousands(row.probes), row.probe_lots),
        ),
        (
            "visible / timed out (5 s)",
            format!(
                "{} / {}",
                report::thousands(row.delay.count as u64),
                report::thousands(row.timed_out)
            ),
        ),
        (
            "probe ticks skipped (all lots busy)",
            report::thousands(row.skipped),
        ),
        ("p50", format!("{} ms", millis(row.delay.p50))),
        ("p90", format!("{} ms", millis(row.delay.p90))),
        ("p99", format!("{} ms", millis(row.delay.p99))),
        ("max", format!("{} ms", millis(row.delay.max))),
        (
            "poll errors",
            match &row.first_poll_error {
                Some(error) => format!("{} (first: {error})", report::thousands(row.poll_errors)),
                None => "0".to_owned(),
            },
        ),
    ];
    for (name, value) in rows {
        table.add_row(vec![Cell::new(name), right(value)]);
    }
    table
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "NOT met" }
}

/// One line against the targets.
fn verdict(rows: &[SweepRow], visible: Option<&VisibilityRow>) -> String {
    let mut parts = Vec::new();
    if !rows.is_empty() {
        parts.push(match rows.iter().find(|row| row.rate == TARGET_RATE) {
            Some(row) => format!(
                "p99 {} ms at {}/s (target < {} ms: {})",
                millis(row.latency.p99),
                report::thousands(u64::from(TARGET_RATE)),
                TARGET_P99.as_millis(),
                met(row.latency.p99 < TARGET_P99 && row.errors == 0)
            ),
            None => format!(
                "{}/s not in --rates",
                report::thousands(u64::from(TARGET_RATE))
            ),
        });
        let points: Vec<(u32, Duration)> =
            rows.iter().map(|row| (row.rate, row.latency.p99)).collect();
        let spikes = lone_spikes(&points, CROSSING_P99);
        if !spikes.is_empty() {
            let rates: Vec<String> = spikes
                .iter()
                .map(|rate| format!("{}/s", report::thousands(u64::from(*rate))))
                .collect();
            parts.push(format!(
                "p99 over {} ms at {} only, with higher rates under it (a stall: rerun to confirm)",
                CROSSING_P99.as_millis(),
                rates.join(", ")
            ));
        }
        parts.push(match crossing(&points, CROSSING_P99) {
            Crossing::NoData => "no rate measured".to_owned(),
            Crossing::Never { highest } => format!(
                "p99 stays under {} ms up to {}/s",
                CROSSING_P99.as_millis(),
                report::thousands(u64::from(highest))
            ),
            Crossing::AtFirst { rate } => format!(
                "p99 over {} ms at every rate from {}/s, the lowest",
                CROSSING_P99.as_millis(),
                report::thousands(u64::from(rate))
            ),
            Crossing::Between {
                under,
                over,
                interpolated,
            } => format!(
                "p99 crosses {} ms for good at about {}/s (linear between {}/s and {}/s)",
                CROSSING_P99.as_millis(),
                report::thousands(interpolated as u64),
                report::thousands(u64::from(under)),
                report::thousands(u64::from(over))
            ),
        });
    }
    parts.push(match visible {
        Some(row) => {
            let outcome = if row.achieved_event_rate < 0.95 * f64::from(TARGET_EVENT_RATE) {
                "not at the target rate"
            } else {
                let all_visible = row.timed_out == 0 && row.delay.count > 0;
                met(all_visible && row.delay.p99 < TARGET_VISIBLE_P99)
            };
            format!(
                "produce -> visible p99 {} ms at {}/s heartbeats (target < {} ms at {}/s: {outcome})",
                millis(row.delay.p99),
                report::thousands(row.achieved_event_rate as u64),
                TARGET_VISIBLE_P99.as_millis(),
                report::thousands(u64::from(TARGET_EVENT_RATE)),
            )
        }
        None => "produce -> visible not measured (no --bootstrap)".to_owned(),
    });
    parts.join("; ")
}

/// Lots and their slot ids, as a warehouse's `dim_slot` lists them.
type LotsAndSlots = Vec<(String, Vec<String>)>;

/// Lots and slots from `--warehouse`, kept to `--lots` when given.
fn topology(args: &GrpcBenchArgs) -> Result<Option<LotsAndSlots>> {
    let Some(path) = &args.warehouse else {
        return Ok(None);
    };
    let warehouse = super::WarehouseLocation {
        warehouse: path.clone(),
    }
    .open()?;
    let mut lots = parkcast_warehouse::topology::Topology::read_served(&warehouse)?
        .into_iter()
        .collect::<Vec<_>>();
    if !args.lots.is_empty() {
        if let Some(missing) = args
            .lots
            .iter()
            .find(|lot_id| !lots.iter().any(|(id, _)| id == *lot_id))
        {
            bail!(
                "lot {missing:?} is not in the warehouse at {}",
                path.display()
            );
        }
        lots.retain(|(lot_id, _)| args.lots.contains(lot_id));
    }
    Ok(Some(lots))
}

/// Runs `parkcast bench grpc`.
pub fn run(args: &GrpcBenchArgs) -> Result<()> {
    let mut rates = args.rates.clone();
    rates.sort_unstable();
    rates.dedup();
    if rates.is_empty() || rates[0] == 0 {
        bail!("--rates needs rates above 0 requests/s");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let topology = topology(args)?;
    let lots: Vec<String> = match &topology {
        Some(lots) => lots.iter().map(|(lot_id, _)| lot_id.clone()).collect(),
        None => args.lots.clone(),
    };
    if lots.is_empty() {
        bail!("give --lots or --warehouse (the lots the server serves)");
    }
    let kafka = match &args.broker.bootstrap {
        Some(_) => {
            if topology.is_none() {
                bail!(
                    "the produce -> visible part (--bootstrap) needs --warehouse for the slot ids"
                );
            }
            let mut kafka = KafkaConfig::default();
            args.broker.apply(&mut kafka);
            kafka.validate().context("invalid Kafka settings")?;
            Some(kafka)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "server {}; {} lots; {cores} logical cores shared by this client and the server (the \
         issue's setup: the client's own CPU use is part of every figure)",
        args.addr,
        report::thousands(lots.len() as u64)
    );
    let rows = if args.no_sweep {
        Vec::new()
    } else {
        let rows = runtime.block_on(async {
            let horizons = if args.now_only {
                Vec::new()
            } else {
                preflight(&args.addr, &lots[0], &args.horizons).await?
            };
            println!(
                "open-loop GetAvailability sweep, {} connections, horizons {:?}, latency from each \
                 request's due time; {} s per rate after a {} s warm-up",
                args.connections,
                horizons,
                args.seconds,
                WARM_UP.as_secs_f64()
            );
            request_sweep(
                &args.addr,
                &lots,
                &horizons,
                &rates,
                args.seconds,
                args.connections,
            )
            .await
        })?;
        println!("{}", sweep_table(&rows));
        if let Some(error) = rows.iter().find_map(|row| row.first_error.as_ref()) {
            println!("first error: {error}");
        }
        rows
    };
    let visible = match (&kafka, &topology) {
        (Some(kafka), Some(lots_and_slots)) => {
            println!(
                "produce -> visible on {} via {}",
                kafka.topics.sensor, kafka.bootstrap_servers
            );
            let row = runtime.block_on(visibility(
                kafka,
                &args.addr,
                lots_and_slots,
                args.event_rate,
                args.visibility_seconds,
                args.probes,
            ))?;
            println!("{}", visibility_table(&row));
            Some(row)
        }
        _ => None,
    };
    println!("{}", verdict(&rows, visible.as_ref()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=1_000).rev().collect();
        let figures = Percentiles::of(samples);
        assert_eq!(figures.count, 1_000);
        assert_eq!(figures.p50, Duration::from_nanos(500));
        assert_eq!(figures.p90, Duration::from_nanos(900));
        assert_eq!(figures.p99, Duration::from_nanos(990));
        assert_eq!(figures.p999, Duration::from_nanos(999));
        assert_eq!(figures.max, Duration::from_nanos(1_000));

        assert_eq!(percentile(&[7], 0.5), Some(7));
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.99), Some(4));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }

    #[test]
    fn crossing_interpolates_between_the_last_rate_under_and_the_run_over() {
        let points = [
            (1_000, ms(1)),
            (2_000, ms(50)),
            (5_000, ms(2)),
            (10_000, ms(6)),
            (20_000, ms(14)),
            (30_000, ms(80)),
        ];
        // 6 ms -> 14 ms over 10k -> 20k: 10 ms is halfway. The stall at 2k is not the limit.
        assert_eq!(
            crossing(&points, ms(10)),
            Crossing::Between {
                under: 10_000,
                over: 20_000,
                interpolated: 15_000.0
            }
        );
        assert_eq!(lone_spikes(&points, ms(10)), vec![2_000]);
        assert_eq!(
            crossing(&points[..4], ms(10)),
            Crossing::Never { highest: 10_000 }
        );
        assert_eq!(lone_spikes(&points[..4], ms(10)), vec![2_000]);
        assert_eq!(
            crossing(&[(1_000, ms(11)), (2_000, ms(12))], ms(10)),
            Crossing::AtFirst { rate: 1_000 }
        );
        assert!(lone_spikes(&[(1_000, ms(11)), (2_000, ms(12))], ms(10)).is_empty());
        assert_eq!(crossing(&[], ms(10)), Crossing::NoData);
        // A p99 exactly at the threshold is not over it.
        assert_eq!(
            crossing(&[(1_000, ms(10)), (2_000, ms(30))], ms(10)),
            Crossing::Between {
                under: 1_000,
                over: 2_000,
                interpolated: 1_000.0
            }
        );
    }

    #[test]
    fn the_schedule_spaces_requests_evenly_from_the_start() {
        assert_eq!(due_offset(0, 5_000), Duration::ZERO);
        assert_eq!(due_offset(1, 5_000), Duration::from_micros(200));
        assert_eq!(due_offset(5_000, 5_000), Duration::from_secs(1));
        assert_eq!(due_offset(1, 3), Duration::from_nanos(333_333_333));
        // Saturates rather than overflowing.
        assert_eq!(due_offset(u64::MAX, 1), Duration::from_nanos(u64::MAX));
        assert_eq!(requests_within(Duration::from_secs(3), 5_000), 15_000);
        assert_eq!(requests_within(Duration::from_millis(500), 1_000), 500);
        assert_eq!(requests_within(Duration::from_millis(1), 300), 1);
        assert_eq!(requests_within(Duration::ZERO, 300), 0);
        // The last request falls before the end of the window.
        let count = requests_within(Duration::from_secs(2), 7);
        assert!(due_offset(count - 1, 7) < Duration::from_secs(2));
        assert!(due_offset(count, 7) >= Duration::from_secs(2));
    }

    fn row(rate: u32, p99: Duration) -> SweepRow {
        SweepRow {
            rate,
            achieved: f64::from(rate),
            requests: 1,
            latency: Percentiles {
                p99,
                ..Percentiles::default()
            },
            send_lag_p99: Duration::ZERO,
            errors: 0,
            first_error: None,
        }
    }

    #[test]
    fn the_sweep_stops_after_two_rates_in_a_row_over() {
        let threshold = ms(10);
        assert!(!two_over(&[row(1, ms(20))], threshold));
        assert!(!two_over(&[row(1, ms(20)), row(2, ms(5))], threshold));
        assert!(two_over(
            &[row(1, ms(1)), row(2, ms(11)), row(3, ms(12))],
            threshold
        ));
    }

    #[test]
    fn probe_lots_spread_over_the_lots() {
        assert_eq!(probe_lot_indices(3), vec![0, 1, 2]);
        assert!(probe_lot_indices(0).is_empty());
        let spread = probe_lot_indices(1_000);
        assert_eq!(spread.len(), MAX_PROBE_LOTS);
        assert!(spread.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(spread.iter().all(|&index| index < 1_000));
    }

    #[test]
    fn the_verdict_names_each_target() {
        let rows = [row(1_000, ms(1)), row(5_000, ms(1)), row(10_000, ms(30))];
        let line = verdict(&rows, None);
        assert!(
            line.contains("p99 1.00 ms at 5,000/s (target < 2 ms: met)"),
            "{line}"
        );
        assert!(
            line.contains("crosses 10 ms for good at about 6,551/s"),
            "{line}"
        );
        let stalled = [row(1_000, ms(40)), row(5_000, ms(1))];
        let line = verdict(&stalled, None);
        assert!(line.contains("at 1,000/s only"), "{line}");
        assert!(line.contains("stays under 10 ms up to 5,000/s"), "{line}");
        assert!(line.contains("not measured"), "{line}");
    }
}
