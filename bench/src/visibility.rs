//! Produce -> visible: how soon a reading produced to the broker shows in a running server's
//! answers.
//!
//! A background producer sends heartbeats for every slot at a fixed total rate without changing any
//! slot's status, while a prober flips one dedicated slot of a probe lot (occupied <-> free) and
//! polls `GetAvailability` every millisecond until `occupied_now` shows the flip. The delay runs
//! from handing the reading to the producer (the usual producer batching included) to the first
//! answer that shows it. Before measuring, one reading per slot sets every slot to a status this
//! benchmark chose, and the run waits until the server shows it: from then on each probe lot's
//! expected occupied count is known exactly. This overwrites the live picture of the served lots,
//! so run it against a server no other producer feeds.
//!
//! Event times follow the server's clock, not the bench machine's: a server replaying the past
//! (`serve --clock stream`) refuses readings far ahead of the newest it has seen (`far_future`)
//! until several lots agree, so readings stamped with today's wall time lost the first lots'
//! priming and left them unknown. The bench reads the server's `as_of_ms` first and stamps from
//! there, optionally faster than real time ([`EventClock`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use parkcast_kafka::{CountingContext, KafkaConfig, now_ms, send_with_backpressure};
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::{GetAvailabilityRequest, ReadingKind, SensorReading, SlotReport};
use prost::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tonic::transport::Channel;

use crate::client::{connect, status_text};
use crate::measure::{Percentiles, duration_nanos, requests_within};
use crate::table::{millis, new_table, thousands, value_row};

/// The produce -> visible target (p99).
pub(crate) const TARGET_VISIBLE_P99: Duration = Duration::from_millis(100);
/// The event rate [`TARGET_VISIBLE_P99`] applies to.
pub(crate) const TARGET_EVENT_RATE: u32 = 10_000;
/// A probe not visible after this counts as timed out.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a probe polls.
const PROBE_POLL: Duration = Duration::from_millis(1);
/// At most this many lots carry probes (one probe in flight per lot).
const MAX_PROBE_LOTS: usize = 64;
/// How long the server may take to show the priming readings.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The fastest event clock asked for (an hour of stream time per second).
pub(crate) const MAX_CLOCK_RATE: u32 = 3_600;

/// How hard the produce -> visible part pushes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct VisibilityLoad {
    /// Heartbeats per second.
    pub event_rate: u32,
    /// How long probes are started.
    pub duration: Duration,
    /// Probes (flips) started per second.
    pub probes_per_second: u32,
    /// Stream milliseconds per wall millisecond of the readings' event times.
    pub clock_rate: u32,
}

/// The event times the bench stamps: the server's clock when the run started, advancing
/// `rate` times as fast as the wall clock. Against a server on `--clock stream` a rate above 1
/// moves its clock, so its forecasting grid steps (and the scorer's work for the active model, its
/// monitor and any shadow) come that much more often during the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventClock {
    wall_origin_ms: i64,
    server_origin_ms: i64,
    rate: i64,
}

impl EventClock {
    /// A clock from the server's `as_of_ms` (the wall clock when the server has none yet).
    fn from_server(server_now_ms: i64, rate: u32) -> EventClock {
        let wall = now_ms();
        EventClock {
            wall_origin_ms: wall,
            server_origin_ms: if server_now_ms > 0 {
                server_now_ms
            } else {
                wall
            },
            rate: i64::from(rate.max(1)),
        }
    }

    fn now_ms(&self) -> i64 {
        self.at(now_ms())
    }

    fn at(&self, wall_ms: i64) -> i64 {
        self.server_origin_ms.saturating_add(
            wall_ms
                .saturating_sub(self.wall_origin_ms)
                .saturating_mul(self.rate),
        )
    }
}

/// The produce -> visible figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VisibilityRow {
    /// Heartbeats per second asked for.
    pub event_rate: u32,
    /// Stream milliseconds per wall millisecond of the event times.
    pub clock_rate: u32,
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
    clock: EventClock,
    stop: &AtomicBool,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if rate > 0 && !slots.is_empty() {
            let due = requests_within(started.elapsed(), rate);
            let event_time_ms = clock.now_ms();
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
    clock: EventClock,
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
        clock.now_ms(),
    );
    let produced = Instant::now();
    send_reading(&producer, &topic, &message)?;
    loop {
        match client.get_availability(live_picture(&lot.lot_id)).await {
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
            let answer = client.get_availability(live_picture(&lot.lot_id)).await;
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

/// A request for a lot's live picture only (no forecast): what the priming, the probes and the
/// clock reading ask.
fn live_picture(lot_id: &str) -> GetAvailabilityRequest {
    GetAvailabilityRequest {
        lot_id: lot_id.to_owned(),
        horizon_minutes: Vec::new(),
        arrival_time_ms: 0,
        price_per_hour: None,
    }
}

/// The serving clock's now by the server's answer for `lot_id` (0 if it has none).
async fn server_now_ms(client: &mut AvailabilityClient<Channel>, lot_id: &str) -> Result<i64> {
    let answer = client
        .get_availability(live_picture(lot_id))
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the server did not answer for lot {lot_id}: {}",
                status_text(&status)
            )
        })?;
    Ok(answer.get_ref().as_of_ms)
}

/// The stream the produce -> visible part feeds the server: every slot primed, heartbeats flowing
/// from a thread of their own until [`LiveStream::measure`] (or drop) stops them. Started before
/// the request sweep (`bench grpc --sweep-under-load`), the sweep measures a server that ingests
/// and scores while it answers.
pub(crate) struct LiveStream {
    load: VisibilityLoad,
    clock: EventClock,
    producer: SharedProducer,
    topic: Arc<str>,
    counts: Arc<parkcast_kafka::DeliveryCounts>,
    probe_lots: Vec<Arc<Mutex<ProbeLot>>>,
    probe_client: AvailabilityClient<Channel>,
    stop: Arc<AtomicBool>,
    background: Option<std::thread::JoinHandle<Result<(u64, Duration)>>>,
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl LiveStream {
    /// Probes for the load's duration, then stops the heartbeats: the produce -> visible figures.
    pub(crate) async fn measure(mut self) -> Result<VisibilityRow> {
        tracing::info!(
            heartbeats_per_second = self.load.event_rate,
            probes_per_second = self.load.probes_per_second,
            probe_lots = self.probe_lots.len(),
            seconds = self.load.duration.as_secs_f64(),
            "measuring produce -> visible"
        );
        let probing = run_probes(
            &self.probe_lots,
            &self.producer,
            &self.topic,
            &self.probe_client,
            &self.load,
            self.clock,
        )
        .await;
        self.stop.store(true, Ordering::Relaxed);
        let background = self
            .background
            .take()
            .context("the heartbeat thread is joined once")?;
        let (sent, elapsed) = tokio::task::spawn_blocking(move || background.join())
            .await
            .context("the heartbeat join task failed")?
            .map_err(|_| anyhow::anyhow!("the heartbeat thread panicked"))??;
        let probing = probing?;
        // Undelivered heartbeats are counted, not fatal: the flush only bounds the wait.
        let producer = Arc::clone(&self.producer);
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        Ok(VisibilityRow {
            event_rate: self.load.event_rate,
            clock_rate: self.load.clock_rate,
            achieved_event_rate: sent as f64 / elapsed.as_secs_f64().max(1e-9),
            failed_deliveries: self.counts.failed(),
            probe_lots: self.probe_lots.len(),
            ..probing
        })
    }
}

/// Primes every slot, waits until the server shows it, and starts the heartbeats.
pub(crate) async fn start_stream(
    kafka: &KafkaConfig,
    addr: &str,
    lots_and_slots: &[(String, Vec<String>)],
    load: &VisibilityLoad,
) -> Result<LiveStream> {
    let rate = load.event_rate;
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
    let mut clients = connect(addr, 2).await?;
    let probe_client = clients
        .pop()
        .context("connect returns at least one client")?;
    let mut ready_client = clients.pop().context("connect returns two clients")?;
    let first_lot = &lots_and_slots[probe_indices[0]].0;
    let clock = EventClock::from_server(
        server_now_ms(&mut ready_client, first_lot).await?,
        load.clock_rate,
    );
    tracing::info!(
        server_clock_ms = clock.server_origin_ms,
        ahead_of_wall_ms = clock.server_origin_ms - clock.wall_origin_ms,
        clock_rate = load.clock_rate,
        "event times follow the server's clock"
    );

    // Priming: one reading per slot, every probe slot free.
    tracing::info!(
        slots = heartbeat_slots.len() + probe_lots.len(),
        topic = %kafka.topics.sensor,
        "priming every slot"
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
            clock.now_ms(),
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
            let event_time_ms = clock.now_ms();
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
            .spawn(move || heartbeats(&producer, &topic, &slots, rate, first_seq + 1, clock, &stop))
            .context("failed to start the heartbeat thread")?
    };
    Ok(LiveStream {
        load: *load,
        clock,
        producer,
        topic,
        counts,
        probe_lots,
        probe_client,
        stop,
        background: Some(background),
    })
}

/// Starts probes at `probes_per_second` for `duration` (one in flight per lot), then waits for
/// those in flight.
async fn run_probes(
    probe_lots: &[Arc<Mutex<ProbeLot>>],
    producer: &SharedProducer,
    topic: &Arc<str>,
    client: &AvailabilityClient<Channel>,
    load: &VisibilityLoad,
    clock: EventClock,
) -> Result<VisibilityRow> {
    let (probes_per_second, duration) = (load.probes_per_second, load.duration);
    let poll_errors = Arc::new(std::sync::Mutex::new((0u64, None)));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(probes_per_second.max(1)),
    ));
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
            clock,
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
        clock_rate: 1,
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

pub(crate) fn visibility_table(row: &VisibilityRow) -> comfy_table::Table {
    let mut table = new_table(&["produce -> visible", "value"]);
    let rows = [
        (
            "heartbeats asked / achieved",
            format!(
                "{}/s / {}/s",
                thousands(u64::from(row.event_rate)),
                thousands(row.achieved_event_rate as u64)
            ),
        ),
        ("heartbeats not delivered", thousands(row.failed_deliveries)),
        (
            "event clock (server's, from its answer)",
            format!("{} x real time", row.clock_rate),
        ),
        (
            "probes (probe lots)",
            format!("{} ({})", thousands(row.probes), row.probe_lots),
        ),
        (
            "visible / timed out (5 s)",
            format!(
                "{} / {}",
                thousands(row.delay.count as u64),
                thousands(row.timed_out)
            ),
        ),
        (
            "probe ticks skipped (all lots busy)",
            thousands(row.skipped),
        ),
        ("p50", format!("{} ms", millis(row.delay.p50))),
        ("p90", format!("{} ms", millis(row.delay.p90))),
        ("p99", format!("{} ms", millis(row.delay.p99))),
        ("max", format!("{} ms", millis(row.delay.max))),
        (
            "poll errors",
            match &row.first_poll_error {
                Some(error) => format!("{} (first: {error})", thousands(row.poll_errors)),
                None => "0".to_owned(),
            },
        ),
    ];
    for (name, value) in rows {
        value_row(&mut table, name, value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn event_times_start_at_the_servers_clock_and_advance_at_the_rate() {
        // A server replaying last year: readings start at its clock, not the bench machine's.
        let server = now_ms() - 365 * 86_400_000;
        let clock = EventClock::from_server(server, 60);
        assert_eq!(clock.at(clock.wall_origin_ms), server);
        assert_eq!(clock.at(clock.wall_origin_ms + 1_000), server + 60_000);
        assert!(clock.now_ms() >= server && clock.now_ms() < server + 86_400_000);
        // A server without a clock yet (no event seen): the wall clock, at real time for rate 0.
        let fresh = EventClock::from_server(0, 0);
        assert_eq!(fresh.server_origin_ms, fresh.wall_origin_ms);
        assert_eq!(
            fresh.at(fresh.wall_origin_ms + 500),
            fresh.server_origin_ms + 500
        );
    }

    #[test]
    fn the_priming_leaves_two_in_three_slots_occupied() {
        let occupied = (0..9).filter(|&position| primed_occupied(position)).count();
        assert_eq!(occupied, 6);
        assert!(!primed_occupied(0));
    }
}
