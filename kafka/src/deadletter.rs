//! The dead-letter topic: every message the consumer could not apply, with the reason and where it
//! came from, so nothing is lost and an operator can fix and replay it.
//!
//! Dead letters are delivered at least once: the consumer flushes them before it commits the source
//! offsets, and a crash between the two repeats them. `source_topic`, `source_partition` and
//! `source_offset` identify a message, so readers can drop repeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parkcast_proto::SCHEMA_VERSION;
use parkcast_proto::v1::DeadLetter;
use prost::Message;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaConfig, now_ms};

/// Where a message was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePosition<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset of the message.
    pub offset: i64,
}

/// Errors of the dead-letter sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The producer could not be created or a send failed for good.
    #[error("dead-letter producer: {0}")]
    Kafka(#[from] KafkaError),
    /// Some dead letters were not acknowledged by the broker.
    #[error("{failed} dead letters were not delivered to {topic}")]
    Undelivered {
        /// The topic.
        topic: String,
        /// How many.
        failed: u64,
    },
}

/// Counts acknowledged and failed deliveries.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl DeliveryCounts {
    /// Messages the broker acknowledged.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Messages that failed for good.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// A producer context that counts deliveries (shared with whoever reports them).
#[derive(Debug, Clone, Default)]
pub struct CountingContext {
    /// The counts.
    pub counts: Arc<DeliveryCounts>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self.counts.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                tracing::warn!(error = %error, "kafka delivery failed");
                self.counts.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Sends a record, waiting while librdkafka's queue is full (back-pressure, not an error).
pub fn send_with_backpressure(
    producer: &ThreadedProducer<CountingContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Producer of `parkcast.deadletter.v1`.
pub struct DeadLetterSink {
    producer: ThreadedProducer<CountingContext>,
    counts: Arc<DeliveryCounts>,
    topic: String,
    failed_at_last_flush: u64,
}

impl std::fmt::Debug for DeadLetterSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DeadLetterSink")
            .field("topic", &self.topic)
            .field("delivered", &self.counts.delivered())
            .finish()
    }
}

impl DeadLetterSink {
    /// A sink writing to the config's dead-letter topic.
    pub fn new(config: &KafkaConfig) -> Result<DeadLetterSink, DeadLetterError> {
        let context = CountingContext::default();
        let counts = Arc::clone(&context.counts);
        let producer = config.producer_config().create_with_context(context)?;
        Ok(DeadLetterSink {
            producer,
            counts,
            topic: config.topics.deadletter.clone(),
            failed_at_last_flush: 0,
        })
    }

    /// Queues one dead letter (keyed like its source message, so a lot's dead letters stay in order).
    pub fn send(
        &self,
        source: SourcePosition<'_>,
        key: Option<&[u8]>,
        value: &[u8],
        reason: &str,
        detail: &str,
    ) -> Result<(), DeadLetterError> {
        let letter = DeadLetter {
            schema_version: SCHEMA_VERSION,
            source_topic: source.topic.to_owned(),
            source_partition: source.partition,
            source_offset: source.offset,
            reason: reason.to_owned(),
            detail: detail.to_owned(),
            original_key: key.map(<[u8]>::to_vec).unwrap_or_default(),
            original_value: value.to_vec(),
            dead_lettered_time_ms: now_ms(),
        };
        let bytes = letter.encode_to_vec();
        let mut record = BaseRecord::to(&self.topic).payload(bytes.as_slice());
        if let Some(key) = key {
            record = record.key(key);
        }
        send_with_backpressure(&self.producer, record)?;
        Ok(())
    }

    /// Waits until every queued dead letter is acknowledged; an error if any failed since the last
    /// flush (then the source offsets must not be committed).
    pub fn flush(&mut self, timeout: Duration) -> Result<(), DeadLetterError> {
        self.producer.flush(timeout)?;
        let failed = self.counts.failed();
        if failed > self.failed_at_last_flush {
            let newly = failed - self.failed_at_last_flush;
            self.failed_at_last_flush = failed;
            return Err(DeadLetterError::Undelivered {
                topic: self.topic.clone(),
                failed: newly,
            });
        }
        Ok(())
    }

    /// Dead letters acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.counts.delivered()
    }
}
