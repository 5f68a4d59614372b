//! Creating topics with their partition count, and reading it back.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaConfig;

/// Errors of topic administration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The client could not be created or the request failed.
    #[error("kafka admin request failed: {0}")]
    Kafka(#[from] KafkaError),
    /// The broker refused to create a topic.
    #[error("the broker refused to create topic {topic:?}: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// The topic does not exist (or has no partitions).
    #[error("topic {topic:?} does not exist on the broker")]
    Missing {
        /// The topic.
        topic: String,
    },
}

/// Creates `topics` with `partitions` partitions each (replication 1); topics that exist are left
/// as they are. Blocks until the broker answers (call it from a blocking context).
pub fn create_topics(
    config: &KafkaConfig,
    topics: &[&str],
    partitions: i32,
    timeout: Duration,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics(&new_topics, &options))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(())
}

/// Creates `topic` as a compacted topic of `partitions` partitions (the broker keeps the newest
/// value of each key; a tombstone deletes it) holding values of up to `max_message_bytes`; a topic
/// that exists is left as it is. For state keyed by a name (the replicas' advertisements, the
/// checkpoints' changelog). Blocks until the broker answers.
pub fn create_compacted_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    max_message_bytes: usize,
    timeout: Duration,
) -> Result<(), TopicError> {
    let max_bytes = max_message_bytes.to_string();
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("max.message.bytes", &max_bytes);
    create_one(config, &new_topic, timeout)
}

/// Creates `topic` with `partitions` partitions whose messages the broker deletes `retention_ms`
/// after they were written; a topic that exists is left as it is. For a log read back over a
/// window (the replicas' forecast inputs). Blocks until the broker answers.
pub fn create_retained_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    retention_ms: i64,
    timeout: Duration,
) -> Result<(), TopicError> {
    let retention = retention_ms.to_string();
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "delete")
        .set("retention.ms", &retention);
    create_one(config, &new_topic, timeout)
}

fn create_one(
    config: &KafkaConfig,
    new_topic: &NewTopic<'_>,
    timeout: Duration,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics([new_topic], &options))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(())
}

/// The number of partitions of `topic`, from the broker's metadata (through an existing consumer).
pub fn partition_count<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<i32, TopicError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let count = metadata
        .topics()
        .iter()
        .find(|found| found.name() == topic && found.error().is_none())
        .map_or(0, |found| found.partitions().len());
    if count == 0 {
        return Err(TopicError::Missing {
            topic: topic.to_owned(),
        });
    }
    i32::try_from(count).map_err(|_| TopicError::Missing {
        topic: topic.to_owned(),
    })
}

/// Polls `consumer`, assigned to partitions `0..partitions` of `topic`, until each holds no message
/// it has not handed to `take` among those there when this was called, or `limit` passes: how a
/// replica reads a topic of shared state before acting on it. Ok(false) when `limit` passed first.
pub fn read_to_end<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
    limit: Duration,
    mut take: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<bool, KafkaError> {
    use rdkafka::Message as _;
    let deadline = std::time::Instant::now() + limit;
    let mut ends = std::collections::BTreeMap::new();
    for partition in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, limit)?;
        // Nothing to read there: empty, or everything before `high` deleted or compacted away.
        if high > low {
            ends.insert(partition, high);
        }
    }
    while !ends.is_empty() {
        let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
            return Ok(false);
        };
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Ok(message)) => {
                take(&message);
                if ends
                    .get(&message.partition())
                    .is_some_and(|high| message.offset() + 1 >= *high)
                {
                    ends.remove(&message.partition());
                }
            }
            Some(Err(error)) => return Err(error),
            None => {}
        }
    }
    Ok(true)
}
