//! Checkpoints on a changelog topic, so that state survives the machine it was built on.
//!
//! A checkpoint file on a replica's disk helps only that replica: when its partitions move to
//! another machine (it died, or the group grew), the new owner has no file and would rebuild the
//! partitions by replaying their whole retention. So, as Kafka Streams backs each state store with
//! a changelog topic, every checkpoint written to a file is also written to
//! `ingest.changelog_topic`: one partition per input partition (the same number), key = the
//! partition number, value = the file's bytes (checksummed; [`crate::checkpoint`]). A checkpoint
//! counts as durable, and its offsets are committed, only once both the file and the changelog
//! record are.
//!
//! A new owner needs only the newest record of its partition: the last offset of that changelog
//! partition, read directly (one fetch, whatever the topic's history; compaction keeps the
//! topic itself small). It takes the newer of that record and its own file, by offsets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parkcast_kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::{Mutex, PoisonError};

use crate::checkpoint::{CheckpointError, PartitionCheckpoint, decode};

/// Errors of the changelog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangelogError {
    /// A Kafka client could not be created, or a request failed.
    #[error("changelog {topic}: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// Why.
        source: rdkafka::error::KafkaError,
    },
    /// The topic could not be created or read.
    #[error("changelog topic: {0}")]
    Topic(#[from] parkcast_kafka::TopicError),
    /// No answer in time.
    #[error("changelog {topic} partition {partition}: {what} took longer than {timeout:?}")]
    Timeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What was waited for.
        what: &'static str,
        /// The limit.
        timeout: Duration,
    },
}

/// How long one changelog write or read may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Creates the changelog topic (compacted, `partitions` partitions, records of up to
/// `max_message_bytes`) if it does not exist. Blocks.
pub fn create(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
    max_message_bytes: usize,
) -> Result<(), ChangelogError> {
    parkcast_kafka::create_compacted_topic(kafka, topic, partitions, max_message_bytes, TIMEOUT)?;
    Ok(())
}

/// The outcome of the one record in flight (the writer sends one at a time and waits).
#[derive(Default)]
struct Delivery {
    outcome: Mutex<Option<Result<(), KafkaError>>>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|(error, _)| error.clone());
        *self.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }
}

/// Writes checkpoint records (the checkpoint writer's thread owns one).
pub struct ChangelogWriter {
    topic: String,
    producer: BaseProducer<Delivery>,
}

impl std::fmt::Debug for ChangelogWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ChangelogWriter")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ChangelogWriter {
    /// A writer to `topic`, for records of up to `max_message_bytes`.
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        max_message_bytes: usize,
    ) -> Result<ChangelogWriter, ChangelogError> {
        let mut config = kafka.producer_config();
        config
            .set("message.max.bytes", max_message_bytes.to_string())
            .set("message.timeout.ms", TIMEOUT.as_millis().to_string())
            .set("linger.ms", "0");
        let producer = config
            .create_with_context(Delivery::default())
            .map_err(|source| ChangelogError::Kafka {
                topic: topic.to_owned(),
                source,
            })?;
        Ok(ChangelogWriter {
            topic: topic.to_owned(),
            producer,
        })
    }

    /// Writes `bytes` as the newest checkpoint of `partition` and waits until the broker has it.
    pub fn publish(&self, partition: i32, bytes: &[u8]) -> Result<(), ChangelogError> {
        let kafka = |source| ChangelogError::Kafka {
            topic: self.topic.clone(),
            source,
        };
        let outcome = &self.producer.context().outcome;
        *outcome.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let key = partition.to_string();
        self.producer
            .send(
                BaseRecord::to(&self.topic)
                    .partition(partition)
                    .key(&key)
                    .payload(bytes),
            )
            .map_err(|(source, _)| kafka(source))?;
        // librdkafka gives up on the record after `message.timeout.ms` (TIMEOUT) and reports it;
        // the deadline here only guards against a report that never comes.
        let deadline = Instant::now() + TIMEOUT + Duration::from_secs(5);
        loop {
            self.producer.poll(Duration::from_millis(20));
            if let Some(result) = outcome
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                return result.map_err(kafka);
            }
            if Instant::now() > deadline {
                return Err(ChangelogError::Timeout {
                    topic: self.topic.clone(),
                    partition,
                    what: "delivery",
                    timeout: TIMEOUT,
                });
            }
        }
    }
}

/// Reads the newest checkpoint of a partition (ingestion owns one, for assignments).
pub struct ChangelogReader {
    topic: String,
    consumer: BaseConsumer,
}

impl std::fmt::Debug for ChangelogReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ChangelogReader")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ChangelogReader {
    /// A reader of `topic`, for records of up to `max_message_bytes`.
    pub fn new(
        kafka: &KafkaConfig,
        group_id: &str,
        topic: &str,
        max_message_bytes: usize,
    ) -> Result<ChangelogReader, ChangelogError> {
        let mut config = kafka.reader_config(&format!("{group_id}.changelog-reader"));
        config
            .set("max.partition.fetch.bytes", max_message_bytes.to_string())
            .set("fetch.max.bytes", max_message_bytes.to_string())
            .set(
                "receive.message.max.bytes",
                (max_message_bytes + 1_000_000).to_string(),
            );
        let consumer = config.create().map_err(|source| ChangelogError::Kafka {
            topic: topic.to_owned(),
            source,
        })?;
        Ok(ChangelogReader {
            topic: topic.to_owned(),
            consumer,
        })
    }

    fn kafka(&self, source: rdkafka::error::KafkaError) -> ChangelogError {
        ChangelogError::Kafka {
            topic: self.topic.clone(),
            source,
        }
    }

    /// The newest record of `partition`'s changelog (its last offset), `None` if it has none.
    pub fn latest(&self, partition: i32) -> Result<Option<Vec<u8>>, ChangelogError> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, partition, TIMEOUT)
            .map_err(|source| self.kafka(source))?;
        if high <= low {
            return Ok(None);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, partition, Offset::Offset(high - 1))
            .map_err(|source| self.kafka(source))?;
        self.consumer
            .assign(&assignment)
            .map_err(|source| self.kafka(source))?;
        let deadline = Instant::now() + TIMEOUT;
        let found = loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break Err(ChangelogError::Timeout {
                    topic: self.topic.clone(),
                    partition,
                    what: "reading the newest checkpoint",
                    timeout: TIMEOUT,
                });
            };
            match self.consumer.poll(left.min(Duration::from_millis(200))) {
                Some(Ok(message))
                    if message.partition() == partition && message.offset() >= high - 1 =>
                {
                    break Ok(message.payload().map(<[u8]>::to_vec));
                }
                Some(Ok(_)) | None => {}
                Some(Err(source)) => break Err(self.kafka(source)),
            }
        };
        let _ = self.consumer.unassign();
        found
    }

    /// The newest checkpoint of `partition` from the changelog, decoded and checked like a file.
    pub fn load(&self, partition: i32) -> Result<Option<PartitionCheckpoint>, LoadError> {
        let Some(bytes) = self.latest(partition)? else {
            return Ok(None);
        };
        let origin = PathBuf::from(format!("kafka:{}/{partition}", self.topic));
        Ok(Some(decode(&bytes, partition, Path::new(&origin))?))
    }
}

/// Why a checkpoint could not be read from the changelog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The topic could not be read.
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
    /// The record is no checkpoint of this partition (corrupt, newer version).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}
