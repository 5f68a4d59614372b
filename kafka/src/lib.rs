//! Kafka plumbing shared by the live consumer (`serving`) and the archiver (`archive`).
//!
//! One place knows how parkcast talks to a broker: [`KafkaConfig`] (typed settings, the topic names,
//! a pass-through map for any other librdkafka option), [`create_topics`] (topics are created
//! explicitly with their partition count: brokers that auto-create make one partition, which would
//! silently put every lot on one consumer), [`EmbeddedBroker`] (librdkafka's in-process mock
//! cluster, the broker of `parkcast demo` when none is configured), [`DeadLetterSink`] (messages that
//! cannot be applied, with their reason and source offset, always cut to fit the topic),
//! [`RecoveringProducer`] (a producer replaced when librdkafka declares it fatal) and
//! [`next_offset`] (the one `+ 1` between "the offset I consumed" and "the offset to resume from").
//!
//! ```
//! use parkcast_kafka::{KafkaConfig, TopicNames, next_offset};
//!
//! let config = KafkaConfig {
//!     bootstrap_servers: "127.0.0.1:9092".into(),
//!     topics: TopicNames::with_prefix("test-1234"),
//!     ..KafkaConfig::default()
//! };
//! config.validate()?;
//! assert_eq!(config.topics.sensor, "test-1234.parkcast.sensor.v1");
//! assert_eq!(next_offset(41), 42);
//! # Ok::<(), parkcast_kafka::KafkaConfigError>(())
//! ```

mod config;
mod deadletter;
mod embedded;
pub mod testing;
mod topics;

pub use config::{KafkaConfig, KafkaConfigError, TopicNames, legal_topic_name};
pub use deadletter::{
    BATCH_BYTES, CountingContext, DEADLETTER_SCHEMA_VERSION, DEFAULT_MESSAGE_MAX_BYTES,
    DeadLetterError, DeadLetterSink, DeliveryCounts, MIN_BUDGET, RECORD_MARGIN, RecoveringProducer,
    SizeBudget, SourcePosition, fit_letter, producer_message_limit, send_with_backpressure,
    topic_message_limit,
};
pub use embedded::EmbeddedBroker;
pub use topics::{
    TopicError, create_compacted_topic, create_retained_topic, create_topics, partition_count,
    read_to_end,
};

/// The offset to resume from after consuming `consumed`: Kafka commits name the next message to
/// read, not the last one read.
pub fn next_offset(consumed: i64) -> i64 {
    consumed + 1
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
