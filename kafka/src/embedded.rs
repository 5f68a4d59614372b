//! A Kafka broker inside the process, for `parkcast demo` and for runs without a cluster.
//!
//! librdkafka's mock cluster speaks the real protocol on a local port, so the consumer, producer and
//! archiver run unchanged against it, and other processes can connect to its address. It does not
//! answer the CreateTopics admin call, so topics are created through its own API. It keeps about
//! 5 MiB per partition and librdkafka marks it experimental: a demo broker, not a production one.

use rdkafka::error::KafkaError;

use crate::config::KafkaConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// An in-process broker; it stops when dropped.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EmbeddedBroker")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster on a free loopback port.
    pub fn start() -> Result<EmbeddedBroker, KafkaError> {
        Ok(EmbeddedBroker {
            cluster: MockCluster::new(1)?,
        })
    }

    /// `host:port` to connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates topics with `partitions` partitions each.
    pub fn create_topics(&self, topics: &[&str], partitions: i32) -> Result<(), KafkaError> {
        for topic in topics {
            self.cluster.create_topic(topic, partitions, 1)?;
        }
        Ok(())
    }

    /// Starts a broker with every topic of `kafka` (`partitions` each) and points `kafka` at it:
    /// what `parkcast demo` and the benchmarks run against when no broker is given.
    pub fn start_for(
        kafka: &mut KafkaConfig,
        partitions: i32,
    ) -> Result<EmbeddedBroker, KafkaError> {
        let broker = EmbeddedBroker::start()?;
        broker.create_topics(&kafka.topics.all(), partitions)?;
        kafka.bootstrap_servers = broker.bootstrap_servers();
        Ok(broker)
    }
}
