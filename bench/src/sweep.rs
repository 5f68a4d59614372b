//! The open-loop request sweep: a running server's `GetAvailability` latency at rising rates.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parkcast_proto::v1::GetAvailabilityRequest;
use parkcast_proto::v1::availability_client::AvailabilityClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::Error;
use crate::client::{connect, status_text};
use crate::measure::{Percentiles, due_offset, duration_nanos, requests_within};
use crate::table::{millis, new_table, right, thousands};

/// The answer-latency target: p99 at [`TARGET_RATE`] requests/s.
pub(crate) const TARGET_P99: Duration = Duration::from_millis(2);
/// The rate [`TARGET_P99`] applies to.
pub(crate) const TARGET_RATE: u32 = 5_000;
/// The p99 whose crossing rate the issue asks for.
pub(crate) const CROSSING_P99: Duration = Duration::from_millis(10);
/// Requests before this much time at each rate are not counted.
pub(crate) const WARM_UP: Duration = Duration::from_millis(500);
/// A request with no answer after this counts as an error (with this latency).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Past this many requests in flight the client stops sending (each unsent one is an error), so an
/// overloaded server cannot exhaust the client's memory.
const MAX_IN_FLIGHT: usize = 20_000;
/// Pause between rates, so one rate's backlog does not spill into the next.
const SETTLE: Duration = Duration::from_millis(300);

/// One rate of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SweepRow {
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
pub(crate) enum Crossing {
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
pub(crate) fn crossing(points: &[(u32, Duration)], threshold: Duration) -> Crossing {
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
pub(crate) fn lone_spikes(points: &[(u32, Duration)], threshold: Duration) -> Vec<u32> {
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

/// The open-loop sweep: each rate in turn (stopping after two rates in a row over 10 ms p99),
/// requests rotating over `lots`, spread over `connections` connections.
pub(crate) async fn request_sweep(
    addr: &str,
    lots: &[String],
    horizons: &[u32],
    rates: &[u32],
    seconds_per_rate: f64,
    connections: usize,
) -> Result<Vec<SweepRow>, Error> {
    if lots.is_empty() {
        return Err(Error::NoLots);
    }
    if !(seconds_per_rate.is_finite() && seconds_per_rate > 0.0) {
        return Err(Error::SweepSeconds(seconds_per_rate));
    }
    if rates.contains(&0) {
        return Err(Error::NoRates);
    }
    let clients = connect(addr, connections).await?;
    let requests: Vec<GetAvailabilityRequest> = lots
        .iter()
        .map(|lot_id| GetAvailabilityRequest {
            lot_id: lot_id.clone(),
            horizon_minutes: horizons.to_vec(),
            arrival_time_ms: 0,
            price_per_hour: None,
        })
        .collect();
    let mut rows = Vec::with_capacity(rates.len());
    for &rate in rates {
        let row = one_rate(&clients, &requests, rate, seconds_per_rate).await?;
        tracing::info!(
            rate,
            p99_ms = %millis(row.latency.p99),
            errors = row.errors,
            "rate measured"
        );
        rows.push(row);
        if two_over(&rows, CROSSING_P99) {
            break;
        }
        tokio::time::sleep(SETTLE).await;
    }
    Ok(rows)
}

pub(crate) fn sweep_table(rows: &[SweepRow]) -> comfy_table::Table {
    let mut table = new_table(&[
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
            right(thousands(u64::from(row.rate))),
            right(thousands(row.achieved as u64)),
            right(millis(row.latency.p50)),
            right(millis(row.latency.p90)),
            right(millis(row.latency.p99)),
            right(millis(row.latency.p999)),
            right(millis(row.latency.max)),
            right(millis(row.send_lag_p99)),
            right(format!(
                "{} of {}",
                thousands(row.errors),
                thousands(row.requests)
            )),
        ]);
    }
    table
}

/// A sweep row with the given p99, for tests here and in [`crate::grpc`].
#[cfg(test)]
pub(crate) fn row(rate: u32, p99: Duration) -> SweepRow {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
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
    fn the_sweep_stops_after_two_rates_in_a_row_over() {
        let threshold = ms(10);
        assert!(!two_over(&[row(1, ms(20))], threshold));
        assert!(!two_over(&[row(1, ms(20)), row(2, ms(5))], threshold));
        assert!(two_over(
            &[row(1, ms(1)), row(2, ms(11)), row(3, ms(12))],
            threshold
        ));
    }
}
