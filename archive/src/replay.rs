//! Producing a warehouse's events into Kafka, at their own pace or faster.
//!
//! The events come in event-time order from [`crate::source`]; at `speed` s, an event `t` after the
//! first is sent `t / s` after the start (1 = real time, 60 = an hour per minute, unlimited = as
//! fast as the broker takes them). Messages are keyed by lot id, so one lot's events stay ordered on
//! one partition, and the producer is idempotent, so retries do not duplicate them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parkcast_kafka::{CountingContext, KafkaConfig, send_with_backpressure};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use parkcast_proto::Topic;

use crate::source::{SourceError, WireEvent};

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the broker takes them.
    Unlimited,
    /// Event time runs this many times faster than the wall clock (> 0).
    Factor(f64),
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Reading the events failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The producer failed.
    #[error("kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    /// The broker did not acknowledge every message.
    #[error("{failed} of {sent} messages were not delivered")]
    Undelivered {
        /// Messages that failed.
        failed: u64,
        /// Messages sent.
        sent: u64,
    },
    /// The speed is not a positive number.
    #[error("speed must be a positive number, got {0}")]
    BadSpeed(f64),
    /// The thread of a [`Background`] replay could not start, or panicked.
    #[error("the replay thread {0}")]
    Thread(String),
}

/// What a replay sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplayStats {
    /// Messages per topic, indexed by `Topic as usize` ([`Topic::ALL`]'s order).
    pub messages: [u64; Topic::ALL.len()],
    /// Payload bytes.
    pub bytes: u64,
    /// First and last event time, Unix ms.
    pub event_time_range: Option<(i64, i64)>,
    /// Wall time, including the final flush.
    pub elapsed: Duration,
}

impl ReplayStats {
    /// Messages over all topics.
    pub fn total(&self) -> u64 {
        self.messages.iter().sum()
    }

    /// Messages per second of wall time.
    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Produces `events` into the config's topics; `progress` is called every few thousand messages
/// and at the end with the figures so far.
pub fn replay(
    kafka: &KafkaConfig,
    events: impl IntoIterator<Item = Result<WireEvent, SourceError>>,
    speed: Speed,
    progress: &mut dyn FnMut(&ReplayStats),
) -> Result<ReplayStats, ReplayError> {
    if let Speed::Factor(factor) = speed
        && !(factor.is_finite() && factor > 0.0)
    {
        return Err(ReplayError::BadSpeed(factor));
    }
    let context = CountingContext::default();
    let counts = std::sync::Arc::clone(&context.counts);
    let producer: ThreadedProducer<CountingContext> =
        kafka.producer_config().create_with_context(context)?;
    let started = Instant::now();
    let mut stats = ReplayStats::default();
    for event in events {
        let event = event?;
        let first = match stats.event_time_range {
            Some((first, _)) => first,
            None => event.event_time_ms,
        };
        stats.event_time_range = Some((first, event.event_time_ms.max(first)));
        if let Speed::Factor(factor) = speed {
            let due = Duration::from_secs_f64(
                (event.event_time_ms - first).max(0) as f64 / 1_000.0 / factor,
            );
            let elapsed = started.elapsed();
            if due > elapsed + Duration::from_millis(2) {
                std::thread::sleep(due - elapsed);
            }
        }
        let record = BaseRecord::to(kafka.topics.name(event.topic))
            .key(event.key.as_bytes())
            .payload(event.value.as_slice());
        send_with_backpressure(&producer, record)?;
        stats.messages[event.topic as usize] += 1;
        stats.bytes += event.value.len() as u64;
        if stats.total() % 4_096 == 0 {
            stats.elapsed = started.elapsed();
            progress(&stats);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    stats.elapsed = started.elapsed();
    progress(&stats);
    let failed = counts.failed();
    if failed > 0 {
        return Err(ReplayError::Undelivered {
            failed,
            sent: stats.total(),
        });
    }
    Ok(stats)
}

/// A replay on its own thread, for a caller that does other work meanwhile (the demo draws its live
/// table while the city's day streams in): the messages sent so far, and a stop that ends the
/// replay at its next event.
pub struct Background {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Result<ReplayStats, ReplayError>>,
}

impl Background {
    /// Starts replaying `events` into the config's topics.
    pub fn spawn<I>(kafka: KafkaConfig, events: I, speed: Speed) -> Result<Background, ReplayError>
    where
        I: Iterator<Item = Result<WireEvent, SourceError>> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::Builder::new()
                .name("parkcast-replay".to_owned())
                .spawn(move || {
                    let events = events
                        .take_while(|_| !stop.load(Ordering::Relaxed))
                        .inspect(|_| {
                            sent.fetch_add(1, Ordering::Relaxed);
                        });
                    replay(&kafka, events, speed, &mut |_| {})
                })
                .map_err(|error| ReplayError::Thread(format!("did not start: {error}")))?
        };
        Ok(Background { stop, sent, thread })
    }

    /// Events handed to the producer so far (the final [`ReplayStats`] count what was delivered).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Whether the replay has ended (all events sent, stopped, or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops at the next event and waits up to `patience` for the producer's flush. This blocks the
    /// calling thread. A replay still running after `patience` (a producer stuck on a broker that
    /// stopped answering, or a long wait for the next event at a slow speed) is left behind:
    /// `None`, so a caller's exit is never held by it.
    pub fn stop(self, patience: Duration) -> Option<Result<ReplayStats, ReplayError>> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + patience;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(
            self.thread
                .join()
                .unwrap_or_else(|_| Err(ReplayError::Thread("panicked".to_owned()))),
        )
    }
}
