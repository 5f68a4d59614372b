//! Warm standbys: every replica keeps every lot's forecast inputs current, so a replica that takes
//! a lot over forecasts it from the history its old owner had.
//!
//! Live slot state moves between replicas with the checkpoint changelog ([`crate::changelog`]),
//! but the forecasts read more than the slots' states: each lot's input log of the last nine days
//! (grid values, session entries and exits), which the scorer builds from what its own ingestion
//! sees. Without this module a replica taking a lot over would forecast it from the warehouse's
//! history only, missing everything since the warehouse's end until its own inputs refilled. Kafka
//! Streams solves the same problem with standby replicas fed from a changelog; here the log is the
//! group's inputs topic (`<group>.inputs`):
//!
//! - **Publishing.** The scorer hands the inputs each round took from this replica's ingestion to
//!   [`InputPublisher`] (an [`InputSink`]): one [`LotInputs`] message per lot and round, keyed by
//!   the lot, queued without blocking. The topic keeps messages for ten days (the scorer's log
//!   keeps nine).
//! - **Following.** [`Follower`] reads the topic from the first message published within the
//!   log's window and hands every other process's inputs to [`Scoring::take_standby`]; the next
//!   scoring round applies them like its own (feature states, live accuracy, the log a model
//!   change replays). Messages are told apart by publisher, a name random per process start, so a
//!   replica restarted under the same id takes back what its previous run published. Start-up
//!   reads the topic to its end before the scorer runs, so the history is in place before this
//!   replica's own ingestion adds to it.
//! - **Counted once.** Grid values are idempotent (a later value of an instant replaces the
//!   earlier). Session events are not: at a handover the new owner replays the partition from
//!   its checkpoint and meets entries and exits the old owner already published; the scorer drops
//!   a session event from one origin at or before the newest applied from the other (see
//!   `LotScoring::admits` in [`crate::scoring`]).
//!
//! Cost: every replica applies and forecasts every lot (forecasting a lot takes microseconds per
//! grid step), and the topic carries one message per lot and round with news: a grid value per
//! lot and step, and the sessions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parkcast_kafka::KafkaConfig;
use parkcast_proto::v1::{LotInput, LotInputs, lot_input::Kind};
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::background::Background;
use crate::live::{FeatureInput, GRID_HISTORY_MS};
use crate::metrics::ReplicaMetrics;
use crate::scoring::{InputSink, Scoring};
use crate::topology::{LotIndex, TopologyIndex};

/// How long the topic keeps a message: the scorer's window and a day to spare.
pub const RETENTION_MS: i64 = GRID_HISTORY_MS + 86_400_000;

/// How long start-up waits to read the topic to its end.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Errors of starting the publisher or the follower.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandbyError {
    /// The topic could not be created or read.
    #[error("inputs topic {topic:?}: {source}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        source: parkcast_kafka::TopicError,
    },
    /// A Kafka client could not be created or assigned.
    #[error("inputs topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The thread could not start.
    #[error("could not start the inputs follower: {0}")]
    Thread(std::io::Error),
}

/// Creates the group's inputs topic (one partition: one order for everything published) if needed.
pub fn create_topic(kafka: &KafkaConfig, topic: &str) -> Result<(), StandbyError> {
    parkcast_kafka::create_retained_topic(kafka, topic, 1, RETENTION_MS, Duration::from_secs(10))
        .map_err(|source| StandbyError::Topic {
            topic: topic.to_owned(),
            source,
        })
}

/// A name for this process's publications: the replica's id, the process id and the start time,
/// so a restarted replica's previous run is another publisher.
pub fn publisher_name(replica_id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{replica_id}/{}/{nanos}", std::process::id())
}

/// One lot's inputs as a message.
pub fn encode(lot_id: &str, publisher: &str, inputs: &[FeatureInput]) -> LotInputs {
    LotInputs {
        lot_id: lot_id.to_owned(),
        publisher: publisher.to_owned(),
        inputs: inputs
            .iter()
            .map(|input| match *input {
                FeatureInput::Grid {
                    instant_ms,
                    occupied,
                    unknown,
                    capacity,
                } => LotInput {
                    kind: Kind::Grid as i32,
                    at_ms: instant_ms,
                    occupied,
                    unknown,
                    capacity,
                },
                FeatureInput::Arrival(at_ms) => LotInput {
                    kind: Kind::Arrival as i32,
                    at_ms,
                    ..LotInput::default()
                },
                FeatureInput::Departure(at_ms) => LotInput {
                    kind: Kind::Departure as i32,
                    at_ms,
                    ..LotInput::default()
                },
            })
            .collect(),
    }
}

/// The inputs of a message, or why they cannot be applied.
pub fn decode_inputs(message: &LotInputs) -> Result<Vec<FeatureInput>, String> {
    message
        .inputs
        .iter()
        .map(|input| match Kind::try_from(input.kind) {
            Ok(Kind::Grid) if input.occupied.saturating_add(input.unknown) <= input.capacity => {
                Ok(FeatureInput::Grid {
                    instant_ms: input.at_ms,
                    occupied: input.occupied,
                    unknown: input.unknown,
                    capacity: input.capacity,
                })
            }
            Ok(Kind::Grid) => Err(format!(
                "grid value at {} counts {} occupied and {} unknown of {} slots",
                input.at_ms, input.occupied, input.unknown, input.capacity
            )),
            Ok(Kind::Arrival) => Ok(FeatureInput::Arrival(input.at_ms)),
            Ok(Kind::Departure) => Ok(FeatureInput::Departure(input.at_ms)),
            Ok(Kind::Unspecified) | Err(_) => Err(format!("input kind {} unknown", input.kind)),
        })
        .collect()
}

/// Counts what the broker failed to take.
struct Delivery {
    lost: Option<Counter>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Err((error, _)) = result {
            tracing::debug!(error = %error, "forecast inputs not delivered");
            if let Some(lost) = &self.lost {
                lost.inc();
            }
        }
    }
}

/// Publishes this replica's forecast inputs to the group's inputs topic.
pub struct InputPublisher {
    topic: String,
    publisher: String,
    topology: Arc<TopologyIndex>,
    producer: ThreadedProducer<Delivery>,
    metrics: Option<ReplicaMetrics>,
}

impl std::fmt::Debug for InputPublisher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InputPublisher")
            .field("topic", &self.topic)
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

impl InputPublisher {
    /// A publisher to `topic` (created beforehand, [`create_topic`]) under the name `publisher`.
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        publisher: &str,
        topology: Arc<TopologyIndex>,
        metrics: Option<ReplicaMetrics>,
    ) -> Result<InputPublisher, StandbyError> {
        let producer = kafka.producer_config().create_with_context(Delivery {
            lost: metrics.as_ref().map(|metrics| metrics.inputs_lost.clone()),
        })?;
        Ok(InputPublisher {
            topic: topic.to_owned(),
            publisher: publisher.to_owned(),
            topology,
            producer,
            metrics,
        })
    }
}

impl InputSink for InputPublisher {
    fn publish(&self, lot: LotIndex, inputs: &[FeatureInput]) {
        let Some(served) = self.topology.lots().get(lot as usize) else {
            return;
        };
        let payload = encode(&served.lot_id, &self.publisher, inputs).encode_to_vec();
        let record = BaseRecord::to(&self.topic)
            .key(served.lot_id.as_bytes())
            .payload(&payload);
        // Never waits: the scorer calls this under its lock. A full queue (the broker gone for a
        // while) loses the message, counted; the other replicas' copies of the lot miss it.
        let queued = self.producer.send(record).is_ok();
        if let Some(metrics) = &self.metrics {
            if queued {
                metrics.inputs_published.inc();
            } else {
                metrics.inputs_lost.inc();
            }
        }
    }
}

impl Drop for InputPublisher {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(2));
    }
}

/// Applies the other replicas' forecast inputs to this one's scorer, on its own thread.
pub struct Follower {
    thread: Background,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Follower").finish_non_exhaustive()
    }
}

/// The follower thread's state.
struct Reader {
    topic: String,
    publisher: String,
    consumer: BaseConsumer,
    scoring: Arc<Scoring>,
    metrics: Option<ReplicaMetrics>,
}

impl Follower {
    /// Reads `topic` from the first message within the scorer's window up to its end (or for
    /// [`CATCH_UP`] at most), hands what others published to `scoring`, then follows the topic on
    /// a thread until [`Follower::stop`]. Blocking: call before the scorer starts its rounds.
    pub fn start(
        kafka: &KafkaConfig,
        topic: &str,
        publisher: &str,
        scoring: Arc<Scoring>,
        metrics: Option<ReplicaMetrics>,
    ) -> Result<Follower, StandbyError> {
        let consumer: BaseConsumer = kafka.reader_config(&format!("{topic}.follower")).create()?;
        let partitions = parkcast_kafka::partition_count(&consumer, topic, Duration::from_secs(10))
            .map_err(|source| StandbyError::Topic {
                topic: topic.to_owned(),
                source,
            })?;
        let from_ms = parkcast_kafka::now_ms() - GRID_HISTORY_MS;
        let mut wanted = TopicPartitionList::new();
        for partition in 0..partitions {
            wanted.add_partition_offset(topic, partition, Offset::Offset(from_ms))?;
        }
        // The first offset published at or after `from_ms`; the beginning when the broker cannot
        // say (retention bounds what that reads).
        let assignment = match consumer.offsets_for_times(wanted, Duration::from_secs(10)) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(error = %error, "could not look up the inputs topic by time; reading it whole");
                let mut whole = TopicPartitionList::new();
                for partition in 0..partitions {
                    whole.add_partition_offset(topic, partition, Offset::Beginning)?;
                }
                whole
            }
        };
        consumer.assign(&assignment)?;
        let mut reader = Reader {
            topic: topic.to_owned(),
            publisher: publisher.to_owned(),
            consumer,
            scoring,
            metrics,
        };
        let started = Instant::now();
        let messages = reader.catch_up(partitions);
        tracing::info!(
            topic,
            messages,
            seconds = started.elapsed().as_secs_f64(),
            "the other replicas' forecast inputs read"
        );
        let thread = Background::spawn("parkcast-standby", move |stop| {
            while !stop.load(Ordering::Relaxed) {
                reader.poll(Duration::from_millis(100));
            }
        })
        .map_err(StandbyError::Thread)?;
        Ok(Follower { thread })
    }

    /// Stops following.
    pub fn stop(self) {
        self.thread.stop();
    }
}

impl Reader {
    /// Reads up to the topic's end as it is now; returns the messages read.
    fn catch_up(&mut self, partitions: i32) -> u64 {
        let mut read = 0;
        let outcome = parkcast_kafka::read_to_end(
            &self.consumer,
            &self.topic,
            partitions,
            CATCH_UP,
            |message| {
                read += 1;
                self.take(message.payload().unwrap_or_default());
            },
        );
        match outcome {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the inputs topic was not read to its end in time; the copies fill in as it is read"
            ),
            Err(error) => tracing::warn!(
                error = %error,
                "reading the inputs topic failed; the copies fill in as it is read"
            ),
        }
        read
    }

    /// Takes one message, if one comes within `timeout`.
    fn poll(&self, timeout: Duration) {
        match self.consumer.poll(timeout) {
            Some(Ok(message)) => self.take(message.payload().unwrap_or_default()),
            Some(Err(error)) => tracing::warn!(error = %error, "reading the inputs topic failed"),
            None => {}
        }
    }

    fn take(&self, payload: &[u8]) {
        let refused = |why: String| {
            tracing::warn!(why, "a message on the inputs topic was not applied");
            if let Some(metrics) = &self.metrics {
                metrics.standby_refused.inc();
            }
        };
        let message = match LotInputs::decode(payload) {
            Ok(message) => message,
            Err(error) => return refused(format!("undecodable: {error}")),
        };
        if message.publisher == self.publisher {
            return;
        }
        let Some(lot) = self.scoring.topology().lot(&message.lot_id) else {
            return refused(format!("lot {:?} is not served here", message.lot_id));
        };
        match decode_inputs(&message) {
            Ok(inputs) => {
                self.scoring.take_standby(lot, inputs);
                if let Some(metrics) = &self.metrics {
                    metrics.standby_applied.inc();
                }
            }
            Err(why) => refused(format!("lot {:?}: {why}", message.lot_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_survive_the_message_and_bad_ones_are_named() {
        let inputs = [
            FeatureInput::Grid {
                instant_ms: 900_000,
                occupied: 7,
                unknown: 1,
                capacity: 10,
            },
            FeatureInput::Arrival(901_000),
            FeatureInput::Departure(902_000),
        ];
        let message = encode("lot-1", "r1/1/2", &inputs);
        let decoded = LotInputs::decode(message.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.lot_id, "lot-1");
        assert_eq!(decoded.publisher, "r1/1/2");
        assert_eq!(decode_inputs(&decoded).expect("valid"), inputs);

        let mut overfull = decoded.clone();
        overfull.inputs[0].occupied = 11;
        let why = decode_inputs(&overfull).expect_err("more occupied than slots");
        assert!(why.contains("11 occupied"), "{why}");
        let mut unknown_kind = decoded;
        unknown_kind.inputs[1].kind = 9;
        let why = decode_inputs(&unknown_kind).expect_err("no such kind");
        assert!(why.contains("kind 9"), "{why}");
    }

    #[test]
    fn publishers_of_two_starts_differ() {
        let first = publisher_name("replica-1");
        std::thread::sleep(Duration::from_millis(2));
        let second = publisher_name("replica-1");
        assert!(first.starts_with("replica-1/"), "{first}");
        assert_ne!(first, second);
    }
}
